"""The live run's recordings and options (forty-fifth session's review): a take whose process died
is kept, a long WAV take's header holds all of it, a file system's size limit is named, `--seconds`
is what it says, an output-only device is said as such, empty names are refused."""
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.io.recorder import FileRecorder, recover_takes

ROOT = Path(__file__).resolve().parents[1]

KILLED_TAKE = """
import os, sys, time
import numpy as np
from realtime.io.recorder import FileRecorder
path, fmt, frames, subtype = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rec = FileRecorder(path, 48000, 2, format=fmt, subtype=subtype)
rec.ring.push(np.full((frames, 2), 0.25, np.float32)[:rec.ring.writable()])
while rec.frames < frames:
    time.sleep(0.01)
time.sleep(0.3)
os._exit(9)  # as SIGKILL or the OOM killer: nothing closes the file
"""


def _killed_take(path: Path, fmt: str = "WAV", frames: int = 48000 * 2, subtype: str = "FLOAT") -> Path:
    """The hidden take a recorder of ``frames`` left when its process was killed."""
    r = subprocess.run([sys.executable, "-c", KILLED_TAKE, str(path), fmt, str(frames), subtype], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 9, r.stderr
    parts = list(path.parent.glob(f".{path.name}.*.recording"))
    assert len(parts) == 1, list(path.parent.iterdir())
    return parts[0]


def test_a_take_whose_process_died_reads_back_and_the_next_recording_keeps_it(tmp_path, capsys):
    """A SIGKILLed `run --record` left its take in a hidden file whose header said 0 frames, and the
    next recording to that name removed it as a stale .part."""
    from realtime.run.live import check_record

    take = tmp_path / "take.wav"
    part = _killed_take(take)
    assert sf.info(str(part)).frames >= 48000  # the header was brought up to date while it recorded
    assert check_record(str(take), 48000) is not None  # at once: no recorder holds it
    kept = list(tmp_path.iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("take.recovered-") and kept[0].suffix == ".wav", kept
    y, sr = sf.read(kept[0])
    assert sr == 48000 and len(y) >= 48000 and np.allclose(y, 0.25)
    err = capsys.readouterr().err
    assert f"is kept as {kept[0]}" in err and "cut off (its process died)" in err and err.count("\n") == 1


def test_a_live_recorders_take_is_left_alone_however_long_its_device_stalled(tmp_path):
    rec = FileRecorder(str(tmp_path / "take.wav"), 48000, 2)
    rec.ring.push(np.full((4800, 2), 0.1, np.float32))
    time.sleep(0.2)
    part = next(tmp_path.glob(".take.wav.*.recording"))
    old = time.time() - 3600  # not written for an hour: a stalled device, not a dead process
    os.utime(part, (old, old))
    assert recover_takes(tmp_path / "take.wav") == [] and part.exists()
    rec.close()
    assert sf.info(str(tmp_path / "take.wav")).frames == 4800


def test_an_aiff_take_killed_in_its_first_second_is_kept(tmp_path):
    """Its header said 0 frames until the first once-a-second update: such a take was removed as empty."""
    _killed_take(tmp_path / "early.aiff", "AIFF", 24000)
    assert len(recover_takes(tmp_path / "early.aiff")) == 1
    kept = next(tmp_path.glob("early.recovered-*.aiff"))
    assert sf.info(str(kept)).frames >= 4096


def test_a_hidden_take_without_a_sample_is_removed_and_another_outputs_is_kept_under_its_own_name(tmp_path):
    empty = FileRecorder(str(tmp_path / "a.wav"), 48000, 2)
    empty._file.close()  # as a process killed before its first write (its lock let go below)
    os.close(empty._lock)
    other = tmp_path / ".ab.wav.0123abcd.recording"  # another output's (ab.wav) take, dead too
    other.write_bytes(b"x")
    said = recover_takes(tmp_path / "a.wav")  # (review 48: any recording keeps its folder's cut-off takes)
    assert len(said) == 1 and f"a recording to {tmp_path / 'ab.wav'} was cut off" in said[0]
    assert [p.name[:13] for p in tmp_path.iterdir()] == ["ab.recovered-"]


def test_a_wav_take_is_recorded_as_rf64_that_stays_a_wav_under_4_gib(tmp_path):
    """A WAV's 32-bit sizes stop at 4 GiB (3.1 h of stereo float at 48 kHz): the header of a longer
    take said less than was recorded. Under 4 GiB the file is a plain RIFF WAV as before."""
    rec = FileRecorder(str(tmp_path / "t.wav"), 48000, 2)
    assert rec._file.format == "RF64"
    rec.ring.push(np.full((4800, 2), 0.5, np.float32))
    time.sleep(0.1)
    rec.close()
    assert (tmp_path / "t.wav").read_bytes()[:4] == b"RIFF" and sf.info(str(tmp_path / "t.wav")).frames == 4800


def test_a_file_system_size_limit_is_named(tmp_path):
    """A USB stick's FAT32 stops a file at 4 GiB: the recording said only libsndfile's "System error"."""
    code = ("import resource, sys, time, numpy as np\n"
            "from realtime.io.recorder import FileRecorder\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (200000, 200000))\n"
            "rec = FileRecorder(sys.argv[1], 48000, 2)\n"
            "rec.ring.push(np.full((48000, 2), 0.1, np.float32))\n"
            "time.sleep(0.5)\n"
            "print(rec.stopped())\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.wav")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert "file too large (a size limit of its file system" in r.stdout, (r.stdout, r.stderr)


def test_seconds_stops_when_asked_not_at_the_next_half_second():
    from realtime.run.live import stream_until

    class Engine:
        error = None

    t = time.monotonic()
    assert stream_until(Engine(), seconds=0.1, status=False) == 0
    assert time.monotonic() - t < 0.45  # it slept 0.5 s before looking at the clock


@pytest.mark.parametrize("argv", [["--record", ""], ["-d", " "], ["--output-device", ""]])
def test_an_empty_file_or_device_name_is_refused(argv, tmp_path):
    r = subprocess.run([sys.executable, "main.py", "run", "--seconds", "1", *argv], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "empty" in r.stderr and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr.count("\n") <= 2  # argparse's usage line and its error, or our one line


@pytest.mark.skipif(not shutil.which("jackd"), reason="needs jackd (scripts/setup.sh)")
def test_an_output_only_device_is_said_not_taken_for_no_device(tmp_path):
    """A JACK server (or card) with outputs only: `run` said "no audio device found", started the demo
    and failed with PortAudio's "no input device None (Error querying device -1)"."""
    name = f"review45-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_AUDIO_RESERVATION": "1"}
    server = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", "48000", "-p", "256", "-C", "0", "-P", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, capture_output=True, timeout=20)
        r = subprocess.run([sys.executable, "main.py", "run", "--seconds", "1"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
        assert r.stderr.startswith("error: --mode duplex: the audio device has no input") and "--mode output" in r.stderr
        assert r.stderr.count("\n") == 1, r.stderr
        r = subprocess.run([sys.executable, "main.py", "run", "--seconds", "1", "--mode", "output"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
