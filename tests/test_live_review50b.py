"""`run --record` and the audio devices (review 50, second pass): a killed `.au` take is kept with
its audio and a killed MP3 take's length is counted, a take whose folder is deleted says so at once
and does not claim to be left there, a device name that matches several devices is one line saying so."""
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.errors import RecordingError
from realtime.io.recorder import FileRecorder, recover_takes

from .test_live_review45 import _killed_take

ROOT = Path(__file__).resolve().parents[1]


def test_a_killed_au_take_is_kept_with_its_audio(tmp_path):
    """`.au` is a format `--record` writes, but its header was never brought up to date while it
    recorded: a take killed after 2 s was "kept" as a file that read 0 frames (now: up to the
    last once-a-second update)."""
    _killed_take(tmp_path / "take.au", "AU", 48000 * 2)
    said = recover_takes(tmp_path / "take.au")
    assert len(said) == 1 and re.search(r"what it holds \(1\.\d s, last written", said[0]), said
    y, sr = sf.read(next(tmp_path.glob("take.recovered-*.au")), dtype="float32")
    assert sr == 48000 and len(y) >= 48000 and np.all(y == 0.25)


def _record_then_delete_folder(tmp_path: Path) -> FileRecorder:
    folder = tmp_path / "takes"
    folder.mkdir()
    rec = FileRecorder(str(folder / "take.wav"), 48000, 2)
    rec.ring.push(np.full((4800, 2), 0.1, np.float32))
    time.sleep(0.2)
    shutil.rmtree(folder)
    return rec


def test_a_take_whose_folder_is_deleted_says_so_at_once_and_not_that_it_was_left_there(tmp_path):
    """The writes went on into the unlinked file without a word, and the stop said the take "is left
    as .take.wav.….recording in the folder it was recorded in": folder and take were gone."""
    rec = _record_then_delete_folder(tmp_path)
    rec.ring.push(np.full((48000, 2), 0.1, np.float32))  # the next header update finds it
    deadline = time.monotonic() + 10
    while rec.stopped() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "was removed (was its folder deleted?)" in (rec.stopped() or ""), rec.stopped()
    with pytest.raises(RecordingError) as e:
        rec.close()
    assert "nothing was kept" in str(e.value) and "left as" not in str(e.value), str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_deleted_in_the_last_second_of_a_take_is_said_at_the_stop(tmp_path):
    rec = _record_then_delete_folder(tmp_path)
    with pytest.raises(RecordingError, match=r"was removed .*nothing was kept"):
        rec.close()


@pytest.mark.jack
@pytest.mark.skipif(not shutil.which("jackd"), reason="needs jackd (scripts/setup.sh)")
def test_a_device_name_matching_two_devices_is_one_line_saying_so(jack_server):
    """`-d sys` with the devices `system` and `system-twin`: three lines from sounddevice, after
    "no input device 'sys'"."""
    jack = pytest.importorskip("jack")
    twin = jack.Client("system-twin", no_start_server=True)
    twin.inports.register("in_1")
    twin.outports.register("out_1")
    twin.activate()
    try:
        r = subprocess.run([sys.executable, "main.py", "run", "-d", "sys", "--seconds", "1"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    finally:
        twin.deactivate()
        twin.close()
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: input device 'sys' is ambiguous, it matches [0] system, "), r.stderr
    assert "system-twin" in r.stderr, r.stderr


def test_a_killed_mp3_takes_length_is_counted_not_guessed(tmp_path):
    """LAME writes the header that counts an MP3's frames when the file is closed: a killed take's
    length was libsndfile's guess from its size and first frame, "what it holds (0.8 s, …)" of a
    3 s take that holds 2.8 s."""
    from realtime.io import mpg123

    if mpg123.library() is None:
        pytest.skip("needs libmpg123 (Debian libmpg123-0, scripts/setup.sh)")
    _killed_take(tmp_path / "take.mp3", "MP3", 48000 * 3, "MPEG_LAYER_III")
    said = recover_takes(tmp_path / "take.mp3")
    held = float(re.search(r"what it holds \((\d+\.\d) s", said[0]).group(1))
    with mpg123.Mpg123Audio(next(tmp_path.glob("take.recovered-*.mp3"))) as f:
        assert held == round(f.frames / f.samplerate, 1) and held >= 2.5, said


@pytest.mark.jack
def test_a_log_on_a_full_disk_does_not_stop_a_live_run(jack_server, tmp_path):
    """`run … 2>/dev/full` (a service's log on a full disk): the first status line's ENOSPC ended
    the run with status 1 and a take of 5 ms; the lines are dropped as a hung-up terminal's are."""
    take = tmp_path / "take.wav"
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "main.py", "run", "--preset", "clean", "--mode", "output",
                            "--seconds", "1.5", "--record", str(take)], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=full, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    assert sf.info(str(take)).duration > 1.0
