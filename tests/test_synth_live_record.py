"""`main.py synth --live --record FILE`: a keyboard player keeps the performance as `run --preset
synth --record FILE` keeps it, by the same recorder (the engine's output, audio only; whole up to
the stop, Ctrl-C included), and the synth command line says what it takes and refuses what it would
have ignored. The live cases play a note through a real MIDI port on the JACK dummy server."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.test_robustness import one_line_error
from tests.test_synth import _play_a_note_into

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.jack
def test_synth_live_records_the_performance_as_run_does(jack_server, tmp_path):
    takes = {}
    for command, says in ((["synth", "--live"], "live on MIDI port"),
                          (["run", "--preset", "synth", "--mode", "output"], "MIDI in on port")):
        rec = tmp_path / f"{command[0]}.wav"
        status, stdout, stderr = _play_a_note_into([*command, "--seconds", "4", "--record", str(rec)], says)
        assert status == 0 and "Traceback" not in stderr, stderr
        assert f"to {rec}" in stderr.splitlines()[-1] and "recorded" in stderr.splitlines()[-1], stderr
        takes[command[0]] = (sf.info(rec), *sf.read(rec))
    for name, (info, y, sr) in takes.items():
        # WAVEX: recorded as RF64 that stays a WAV under 4 GiB, whose writer uses the extensible header
        assert (info.format, info.subtype, info.channels, sr) == ("WAVEX", "FLOAT", 2, 48000), (name, info)
        assert 3.5 * sr < len(y) < 5.5 * sr, (name, len(y))  # the whole run, not just the note
        loud = np.flatnonzero(np.abs(y).max(axis=1) > 1e-2)
        # the note held for 0.5 s is in the take whole: `run` said its port before the stream ran, and a
        # note played at once came out as a blip of under 0.1 s
        assert loud.size and (loud[-1] - loud[0]) / sr > 0.4, name
    assert sorted(f.name for f in tmp_path.iterdir()) == ["run.wav", "synth.wav"]  # no .part left


@pytest.mark.jack
def test_ctrl_c_ends_a_live_synth_take_and_keeps_it(jack_server, tmp_path):
    rec = tmp_path / "take.flac"
    p = subprocess.Popen([sys.executable, "main.py", "synth", "--live", "--record", str(rec)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "live on MIDI port" not in (p.stderr.readline() or ""):
            if p.poll() is not None:
                break
        time.sleep(1.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "stopped" in err and "recorded" in err and "Traceback" not in err, err
    assert '"midi_messages": 0' in out
    info = sf.info(rec)
    assert info.format == "FLAC" and info.frames > 48000
    assert [f.name for f in tmp_path.iterdir()] == ["take.flac"]


def test_synth_help_says_what_record_keeps():
    for command in ("synth", "run"):
        r = run(command, "--help")
        assert r.returncode == 0
        text = " ".join(r.stdout.split())
        assert "--record FILE.wav" in text and "the audio only: the MIDI played in is not kept" in text, text


@pytest.mark.parametrize("argv,says", [
    (["--live", "--record", "{tmp}/missing/take.wav"], "{tmp}/missing: output directory does not exist"),
    (["--live", "--record", "{tmp}/take.xyz"], "unknown output format '.xyz'"),
    (["{tmp}/song.mid", "{tmp}/out.wav", "--record", "{tmp}/take.wav"],
     "synth: --record keeps a live performance (--live); a render writes OUT.wav"),
    (["--live", "{tmp}/take.wav"], "synth --live plays from a MIDI port, not a file ({tmp}/take.wav); "
                                   "keep what it plays with --record FILE.wav"),
    (["--live", "--midi-port", "kbd", "--virtual"], "synth --live: --midi-port kbd opens that port, --virtual a port "
                                                    "of its own to connect to; give one"),
])
def test_synth_refuses_what_it_would_have_ignored_before_anything_starts(tmp_path, argv, says):
    """A take named where a render's file goes, --record on a render, a port name beside --virtual
    (the virtual port won): each was silently ignored, and the take the player expected never
    written. A recording that cannot be written is refused before a port or a stream opens."""
    line = one_line_error(run("synth", *[a.format(tmp=tmp_path) for a in argv], timeout=60))
    assert line.startswith("error: ") and says.format(tmp=tmp_path) in line, line
    assert not list(tmp_path.iterdir())
