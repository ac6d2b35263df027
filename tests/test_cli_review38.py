"""The command line review's findings (review 38): start-up tear-down, rtaudio = main.py, the
no-screen fallback's settings, refusals, progress and status output."""
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent


def run(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_the_recorder_loads_its_ring_code_on_the_callers_thread(tmp_path, monkeypatch):
    """The first ring pop, Numba's code load, ran in the recorder thread and waited there for a lock
    a Ctrl-C left held on the main thread: discard's join hung for good."""
    from realtime.engine.ring import Ring
    from realtime.io.recorder import FileRecorder

    threads = []
    pop = Ring.pop
    monkeypatch.setattr(Ring, "pop", lambda self, dst: threads.append(threading.current_thread()) or pop(self, dst))
    rec = FileRecorder(str(tmp_path / "r.wav"), 48000, 2)
    rec.discard()
    assert threads and threads[0] is threading.main_thread()


def test_discard_gives_up_on_a_stuck_recorder_thread_and_leaves_no_part_file(tmp_path, monkeypatch):
    import realtime.io.recorder as recorder

    stuck = threading.Event()
    monkeypatch.setattr(recorder.FileRecorder, "_run", lambda self: stuck.wait(3))
    monkeypatch.setattr(recorder, "JOIN_TIMEOUT_S", 0.2, raising=False)
    rec = recorder.FileRecorder(str(tmp_path / "r.wav"), 48000, 2)
    try:
        rec.discard()
        assert rec._thread.is_alive()  # not waited for to its end
        assert list(tmp_path.iterdir()) == []
    finally:
        stuck.set()


def test_the_installed_command_ends_as_main_py_does_on_a_signal_at_shutdown():
    """pyproject's ``rtaudio`` called ``main`` alone, skipping main.py's ``__main__`` block: a SIGTERM
    once the command was done came as an Interrupted traceback (or a kill by the signal, 143)."""
    import tomllib

    module, func = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["rtaudio"].split(":")
    code = ("import atexit, os, signal, sys, time\n"
            "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.5)))\n"
            "sys.argv = ['rtaudio', 'presets']\n"
            f"from {module} import {func} as entry\n"
            "sys.exit(entry())\n")  # as the console script pip writes does
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr and "Interrupted" not in r.stderr, r.stderr
    assert "default" in r.stdout


def test_the_no_screen_fallback_runs_with_the_remembered_audio_settings(tmp_path, monkeypatch):
    import main

    ini = tmp_path / "rtaudio-host.ini"
    ini.write_text('[audio]\nsamplerate=44100\nblocksize=256\nprefill_blocks=5\ninput_device="hw:0,0"\n'
                   "output_device=\n")
    monkeypatch.setenv("RTAUDIO_HOST_CONFIG", str(ini))
    monkeypatch.setattr(main, "_no_screen", lambda: "no screen (test)")
    ran = []
    monkeypatch.setattr(main, "cmd_run", lambda args: ran.append(args) or 0)
    assert main.main(["-b", "128"]) == 0  # given, though the default: it beats the remembered 256
    a = ran[0]
    assert (a.samplerate, a.blocksize, a.prefill_blocks, a.input_device, a.output_device) == \
        (44100, 128, 5, "hw:0,0", None)
    ran.clear()
    assert main.main(["-d", "2"]) == 0  # a device named on the command line beats both remembered ones
    assert (ran[0].blocksize, ran[0].input_device, ran[0].device) == (256, None, "2")


@pytest.mark.parametrize("mode", ["input", "output"])
def test_the_demo_refuses_a_one_way_mode_before_anything_starts(tmp_path, monkeypatch, mode):
    import realtime.io.jackserver as jackserver
    from realtime.dsp.presets import build_chain, load_preset
    from realtime.engine.config import EngineConfig
    from realtime.errors import ConfigError
    from realtime.run.live import run_live

    monkeypatch.setattr(jackserver, "ensure_server", lambda *a: pytest.fail("a server was started"))
    with pytest.raises(ConfigError, match=f"--mode {mode}.*duplex"):
        run_live(build_chain(load_preset("default")), EngineConfig(mode=mode), demo=True,
                 demo_out=str(tmp_path / "d.wav"))
    assert list(tmp_path.iterdir()) == []


def test_the_status_line_is_not_redrawn_every_half_second_where_stderr_is_no_terminal(monkeypatch, capsys):
    from types import SimpleNamespace

    from realtime.run import live

    clock = [0.0]
    eng = SimpleNamespace(notices=[], error=None, fatal_error=None, stalled=False)
    monkeypatch.setattr(live, "time", SimpleNamespace(sleep=lambda s: clock.__setitem__(0, clock[0] + s),
                                                      monotonic=lambda: clock[0]))
    monkeypatch.setattr(live, "status_line", lambda e: "STATUS")
    assert live.stream_until(eng, 150) == 0  # 300 half-seconds
    err = capsys.readouterr().err
    assert "\r" not in err and 1 <= err.count("STATUS") <= 3, err[:200]


def test_no_home_and_no_passwd_entry_is_no_user_folder_not_a_traceback(monkeypatch):
    import pwd
    import tempfile

    from realtime.dsp.presets import config_path

    for name in ("HOME", "XDG_CONFIG_HOME", "RTAUDIO_HOST_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))  # docker --user 1234
    assert config_path().is_relative_to(tempfile.gettempdir())


@pytest.mark.parametrize("flags", [["--seconds", "3"], ["--midi-port", "x"], ["--virtual"]])
def test_a_synth_render_refuses_the_live_only_flags(tmp_path, flags):
    import mido

    mid = tmp_path / "n.mid"
    f = mido.MidiFile()
    f.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, time=0), mido.Message("note_off", note=60, time=96)]))
    f.save(mid)
    r = run("synth", str(mid), str(tmp_path / "o.wav"), *flags)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and flags[0] in r.stderr, r.stderr
    assert not (tmp_path / "o.wav").exists()


def test_setup_sh_says_its_progress_on_stderr():
    """`./run.sh plugins --json > p.json` on a first run: setup's lines went into the JSON."""
    text = (ROOT / "scripts" / "setup.sh").read_text()
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("echo ") and ">&2" not in ln]
    assert lines == []
    assert "apt_get 1 " not in text  # apt-get's own output (update) to stdout


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_process_to_a_full_stdout_names_stdout_and_says_the_file_was_written(tmp_path):
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, np.zeros((4800, 1), np.float32), 48000)
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "main.py", "process", str(src), str(dst), "--no-progress"], cwd=ROOT,
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 2 and "standard output" in r.stderr and f"{dst} was written" in r.stderr, r.stderr
    assert dst.exists()


@pytest.mark.parametrize("flags,message", [(["--seconds", "1e9"], "--seconds"), (["--samplerate", "1"], "--samplerate")])
def test_bench_processor_refuses_what_it_cannot_run_in_one_line(flags, message):
    r = run("bench", "processor", "gain", *flags)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
