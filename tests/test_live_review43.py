"""The live path, review 43: the demo's JACK clients' close waits a bounded time for a paused server
(the process could be stopped by SIGKILL alone), a recording whose folder moved is one line
naming where the take is, a signal while a recording starts leaves no temporary file, and a MIDI port
asked of a demo is refused. Each test failed before its fix."""
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

from realtime.errors import RecordingError
from realtime.io.recorder import FileRecorder

ROOT = Path(__file__).resolve().parents[1]


def test_a_midi_port_asked_of_the_demo_is_refused_in_one_line(tmp_path):
    """`run --preset synth --midi-port X` with no sound card fell back to the demo, which plays audio
    (no MIDI) through the synth, and never mentioned the port."""
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "run", "--demo", "--preset", "synth", "--midi-port",
                        "KeyStep", "--seconds", "1", "--demo-out", str(tmp_path / "d.wav")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "error: --midi-port KeyStep: the demo plays audio through the chain, no MIDI"
    assert not (tmp_path / "d.wav").exists()


def test_a_recording_whose_folder_moved_is_one_line_naming_where_the_take_is(tmp_path):
    folder = tmp_path / "takes"
    folder.mkdir()
    rec = FileRecorder(str(folder / "take.wav"), 48000, 2)
    rec.ring.push(np.full((4800, 2), 0.1, np.float32))
    time.sleep(0.2)
    folder.rename(tmp_path / "moved")
    with pytest.raises(RecordingError) as e:
        rec.close()
    said = str(e.value)
    parts = list((tmp_path / "moved").glob(".take.wav.*.recording"))
    assert len(parts) == 1 and parts[0].name in said and "0.1 s" in said and "moved" in said, said
    assert "\n" not in said


def test_a_signal_while_a_recording_starts_leaves_no_temporary_file(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM while the recorder was being made (its ring's Numba code loads for half a
    second after the file was created) left the hidden .part behind: the caller never got the object
    to discard. The load comes first now, and a signal while the file is opened removes it."""
    import realtime.io.recorder as recorder

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(recorder.sf, "SoundFile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        FileRecorder(str(tmp_path / "r.wav"), 48000, 2)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not shutil.which("jackd"), reason="needs jackd (scripts/setup.sh)")
def test_a_paused_jack_server_does_not_hold_the_demo_players_close(tmp_path):
    """A JACK server paused (a suspend, SIGSTOP) while the demo played: its player's close waited for
    it, so the run never tore down (its take stayed a hidden .part) and Ctrl-C and SIGTERM did nothing.
    A server of this test's own name, so that the shared one is never paused."""
    name = f"review43-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_AUDIO_RESERVATION": "1"}
    server = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", "48000", "-p", "256"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, capture_output=True, timeout=20)
        code = ("import time, numpy as np; from realtime.io.jackio import JackPlayer\n"
                "p = JackPlayer(np.zeros((48000, 1), np.float32), loop=True); p.start([])\n"
                "print('open', flush=True)\n"
                "input()\n"
                "t = time.monotonic(); p.close(); print(f'closed {time.monotonic() - t:.1f}', flush=True)\n")
        child = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "open", child.stderr.read()
        os.kill(server.pid, signal.SIGSTOP)
        child.stdin.write("\n")
        child.stdin.flush()
        try:
            out, err = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            pytest.fail("the player's close was still waiting for the paused server after 30 s")
        assert out.strip().startswith("closed") and float(out.split()[-1]) < 5, (out, err)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(10)
