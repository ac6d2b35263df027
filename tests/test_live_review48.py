"""The live run's recordings, signals and lines (forty-eighth session's review): a take never
replaces a file or another live take, a signal once the command has ended keeps its status and
cannot make PortAudio assert, the status line fits the terminal and clears what it leaves, a take
cut off by a killed process is kept at any recording into its folder with the usual mode, a huge
device number is one line, a hung-up terminal keeps SIGHUP's 129, the no-screen fallback names the
settings it took and their file."""
import errno
import io
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.engine import callback as cb
from realtime.engine.config import EngineConfig
from realtime.errors import Interrupted
from realtime.io.files import AtomicFile
from realtime.io.recorder import FileRecorder, recover_takes
from tests.test_live_review45 import _killed_take

ROOT = Path(__file__).resolve().parents[1]


def _record(rec: FileRecorder, value: float, frames: int = 4800) -> None:
    rec.ring.push(np.full((frames, 2), value, np.float32))
    deadline = time.monotonic() + 30
    while rec.frames < frames and time.monotonic() < deadline:
        time.sleep(0.01)


class Ran:
    """An engine stand-in that made ``blocks`` blocks (``_tear_down`` keeps the take)."""
    config = EngineConfig()
    tap_dropped_frames = 0

    def __init__(self, blocks: int = 10):
        self.stats_arr = np.zeros(cb.ST_SIZE, np.int64)
        self.stats_arr[cb.ST_CALLBACKS] = blocks
        self.diagnostics = type("D", (), {"dsp_n": blocks})()

    def stop(self):
        pass


# ------------------------------------------------------------------ 1: a take never replaces a file
def test_a_take_to_an_existing_name_goes_to_the_next_free_one_and_says_so(tmp_path, capsys):
    """`run --record x.wav` replaced an earlier x.wav without a word."""
    from realtime.run.live import _tear_down, check_record, open_recorder

    earlier = tmp_path / "x.wav"
    sf.write(earlier, np.full((100, 2), 0.5, np.float32), 48000, subtype="FLOAT")
    (tmp_path / "x-2.wav").write_bytes(b"not mine")
    before = earlier.read_bytes()
    fmt = check_record(str(earlier), 48000)
    rec = open_recorder(str(earlier), fmt, EngineConfig())
    _record(rec, 0.25)
    _tear_down(Ran(), rec, None, str(earlier), 48000)
    err = capsys.readouterr().err
    new = tmp_path / "x-3.wav"
    assert earlier.read_bytes() == before and (tmp_path / "x-2.wav").read_bytes() == b"not mine"
    assert sf.info(str(new)).frames == 4800
    assert f"recording to {new}: {earlier} exists\n" in err
    assert f"recorded 0.1 s to {new}\n" in err


def test_a_write_protected_existing_take_is_left_not_refused(tmp_path):
    from realtime.run.live import check_record

    earlier = tmp_path / "x.wav"
    earlier.write_bytes(b"old")
    earlier.chmod(0o444)
    assert check_record(str(earlier), 48000) is not None  # was: "write-protected …; nothing was written"
    rec = FileRecorder(str(earlier), 48000, 2)
    rec.discard()
    assert rec.path == tmp_path / "x-2.wav"


def test_two_recorders_to_one_name_at_once_keep_both_takes(tmp_path):
    """Both said "recorded … to same.wav"; only one survived."""
    a = FileRecorder(str(tmp_path / "same.wav"), 48000, 2)
    b = FileRecorder(str(tmp_path / "same.wav"), 48000, 2)
    assert a.path == tmp_path / "same.wav" and b.path == tmp_path / "same-2.wav"
    assert b.why == f"another recording to {tmp_path / 'same.wav'} is under way"
    _record(a, 0.25)
    _record(b, 0.5)
    b.close()
    a.close()
    assert np.allclose(sf.read(tmp_path / "same.wav")[0], 0.25)
    assert np.allclose(sf.read(tmp_path / "same-2.wav")[0], 0.5)


def test_a_file_that_appears_while_recording_is_not_replaced(tmp_path, capsys):
    from realtime.run.live import _tear_down

    path = tmp_path / "take.wav"
    rec = FileRecorder(str(path), 48000, 2)
    _record(rec, 0.25)
    path.write_bytes(b"someone else's")  # another program, or another run that finished first
    _tear_down(Ran(), rec, None, str(path), 48000)
    assert path.read_bytes() == b"someone else's"
    assert np.allclose(sf.read(tmp_path / "take-2.wav")[0], 0.25)
    assert not list(tmp_path.glob(".*"))
    err = capsys.readouterr().err
    assert f"recorded 0.1 s to {tmp_path / 'take-2.wav'} ({path} appeared meanwhile)" in err


def test_a_commit_that_must_not_replace_leaves_both_files(tmp_path):
    path = tmp_path / "o.wav"
    f = AtomicFile(path)
    f.tmp.write_bytes(b"new")
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        f.commit(replace=False)
    assert path.read_bytes() == b"old" and f.tmp.read_bytes() == b"new"
    path.unlink()
    assert f.commit(replace=False) == path and path.read_bytes() == b"new" and not f.tmp.exists()


# ------------------------------------------------------------------ 2: signals once the command has ended
def test_a_signal_after_the_command_ended_in_mains_last_steps_keeps_its_status():
    """A signal after the command had returned, in main's own last steps (before the finishing
    handlers), said "interrupted" and exit 130 after a successful "recorded …" line."""
    code = ("import os, signal, sys, time\n"
            "import main\n"
            "from realtime import errors\n"
            "main.COMMANDS['presets'] = lambda args: print('done', flush=True) or 3\n"
            "def last_steps():\n"  # what main does after the command, a signal meanwhile
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(5)\n"
            "errors.forget_pending_interrupt = last_steps\n"
            "sys.argv = ['main.py', 'presets']\n"
            "main.cli()\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stdout == "done\n" and "interrupted" not in r.stderr, r


def test_portaudio_is_released_with_the_interrupt_signals_ignored_at_the_end():
    """A second Ctrl-C while the atexit hooks ran Pa_Terminate cut jack_client_close's system call
    short: `pa_jack.c: Terminate: Assertion 'err == 0' failed`, SIGABRT."""
    code = ("import os, signal, sys\n"
            "import main, sounddevice\n"
            "import realtime.io.portaudio as pa\n"
            "def release():\n"
            "    print('ignored' if all(signal.getsignal(s) is signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM))\n"
            "          else 'caught', flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "pa.release = release\n"
            "main._finish_on_signals(5)\n"
            "main._exit_now(5)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 5 and r.stdout == "ignored\n", r


def test_a_signal_in_the_tear_down_of_an_ended_stream_is_dropped():
    """Deferred while the take was kept, raised after "recorded …": "interrupted" and 130."""
    from realtime.errors import forget_pending_interrupt, signals_deferred

    with signals_deferred(raise_after=False):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
    try:
        with pytest.raises(KeyboardInterrupt):  # still raised where the stream had not ended
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
    finally:
        forget_pending_interrupt()  # (the command line's handler, where a test installed it, noted it)


# ------------------------------------------------------------------ 3: the status line on a terminal
def test_the_redrawn_status_line_fits_the_terminal_and_clears_what_was_longer(monkeypatch):
    """82 characters wrapped on an 80-column terminal; "xruns 30" was left where 3 was drawn."""
    from realtime.run import live

    err = io.StringIO()
    err.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(live, "_columns", lambda: 80, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(live, "time", type("T", (), {"sleep": staticmethod(lambda s: None),
                                                      "monotonic": staticmethod(time.monotonic)}))

    class Engine:
        error = fatal_error = None
        n = 0

    def stop_after_two(engine):
        Engine.n += 1
        if Engine.n > 2:
            raise KeyboardInterrupt
        return next(lines)

    monkeypatch.setattr(live, "status_line", stop_after_two)
    lines = iter(["48000 Hz | 128 frames | latency 8.0 ms (added 5.3) | DSP 12.3% | late 1000 | xruns 30 | x",
                  "48000 Hz | 128 frames | latency 8.0 ms (added 5.3) | DSP 1.2% | late 0 | xruns 3"])
    assert live.stream_until(Engine(), 0) == 0
    drawn = [d.split("\n")[0] for d in err.getvalue().split("\r")[1:]]
    assert len(drawn) == 2
    for d in drawn:
        assert d.endswith("\x1b[K") and len(d) - 3 <= 79, d
    assert "DSP 12.3% | late 1000 | xruns 30" in drawn[0] and "(added" not in drawn[0]
    assert drawn[1].startswith("48000 Hz | 128 frames | latency 8.0 ms | DSP 1.2%")


def test_fit_status_leaves_out_the_least_telling_fields_first():
    from realtime.run.live import fit_status

    line = "48000 Hz | 128 frames | latency 8.0 ms (added 5.3) | DSP 1.2% | late 0 | xruns 3"
    assert fit_status(line, 200) == line
    assert fit_status(line, 70) == "48000 Hz | 128 frames | latency 8.0 ms | DSP 1.2% | late 0 | xruns 3"
    assert fit_status(line, 50) == "latency 8.0 ms | DSP 1.2% | late 0 | xruns 3"
    assert len(fit_status(line, 20)) == 20


# ------------------------------------------------------------------ 4: takes cut off, in the same folder
def test_any_recording_keeps_the_cut_off_takes_of_its_folder_with_the_usual_mode(tmp_path, capsys):
    """Recovered only by a recording to the very same name; kept with the hidden file's 0600."""
    from realtime.run.live import check_record

    _killed_take(tmp_path / "episode1.wav")
    old = os.umask(0o022)
    try:
        assert check_record(str(tmp_path / "episode2.wav"), 48000) is not None
    finally:
        os.umask(old)
    kept = list(tmp_path.glob("episode1.recovered-*.wav"))
    assert len(kept) == 1 and sf.info(str(kept[0])).frames >= 48000
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o644
    err = capsys.readouterr().err
    assert f"a recording to {tmp_path / 'episode1.wav'} was cut off" in err and f"is kept as {kept[0]}" in err
    assert not list(tmp_path.glob(".*"))


def test_a_live_take_of_another_name_in_the_folder_is_left_alone(tmp_path):
    rec = FileRecorder(str(tmp_path / "other.wav"), 48000, 2)
    try:
        assert recover_takes(tmp_path / "mine.wav") == []
        assert len(list(tmp_path.glob(".other.wav.*.recording"))) == 1
    finally:
        rec.discard()


# ------------------------------------------------------------------ 5: a device number past a C int
@pytest.mark.parametrize("device", [2147483648, 99999999999999999999])
def test_a_huge_device_number_is_one_line(device):
    from realtime.errors import AudioDeviceError
    from realtime.io.portaudio import resolve_device

    with pytest.raises(AudioDeviceError, match=f"no output device {device} \\(no such device number\\)"):
        resolve_device(device, "output", 2)


# ------------------------------------------------------------------ 6: a terminal that hung up
class HungUp(io.StringIO):
    def write(self, s):
        raise OSError(errno.EIO, "Input/output error")

    def isatty(self):
        return False


def test_sighup_with_the_terminal_gone_keeps_129_and_the_take(tmp_path, monkeypatch):
    """The prints met EIO: exit 1 and a traceback instead of 129."""
    from realtime.errors import said_status
    from realtime.run import live

    monkeypatch.setattr(sys, "stderr", HungUp())

    class Engine:
        error = fatal_error = None

    def hang_up(s):
        raise Interrupted("SIGHUP")

    monkeypatch.setattr(live, "time", type("T", (), {"sleep": staticmethod(hang_up),
                                                      "monotonic": staticmethod(time.monotonic)}))
    assert live.stream_until(Engine(), 0, status=False) == 129
    path = tmp_path / "take.wav"
    rec = FileRecorder(str(path), 48000, 2)
    _record(rec, 0.25)
    live._tear_down(Ran(), rec, None, str(path), 48000)
    assert sf.info(str(path)).frames == 4800
    assert said_status(Interrupted("SIGHUP")) == 129


# ------------------------------------------------------------------ 7: the no-screen fallback's settings
def test_the_no_screen_fallback_says_which_remembered_settings_it_took_and_from_where(tmp_path, monkeypatch,
                                                                                        capsys):
    import main

    ini = tmp_path / "rtaudio-host.ini"
    ini.write_text("[audio]\nsamplerate=44100\ninput_device=USB Mic\n")
    monkeypatch.setenv("RTAUDIO_HOST_CONFIG", str(ini))
    monkeypatch.setattr(main, "_no_screen", lambda: "no screen (test)")
    monkeypatch.setattr(main, "cmd_run", lambda args: 0)
    assert main.main([]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if "starting the headless engine instead" in x)
    assert "input_device=USB Mic" in line and "samplerate=44100" in line and str(ini) in line, line
    assert main.main(["-r", "48000", "-d", "1"]) == 0  # nothing remembered taken: nothing said of it
    line = next(x for x in capsys.readouterr().err.splitlines() if "starting the headless engine instead" in x)
    assert "remembered" not in line, line
