"""The panel's engine process (gui/remote), review 49: a /dev/shm without room for the rings is an
error, not a SIGBUS that kills the window; an engine process whose window died while a command kept
it busy (a plugin's build that never ends) goes too, rather than playing on and holding the device.

Also the engine process's plugin module of the second test (``PLUGIN_ENV`` set: a kind whose build
after the warm-up's hangs); imported by pytest without it, it registers nothing."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from realtime.dsp.processor import Processor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_ENV = "RTAUDIO_REVIEW49_HANG"  # the file a hanging build touches when it begins
HANG_S = 120.0


class HangBuild(Processor):
    """Builds at once for the warm-up (the first instance in a process), then never (HANG_S)."""

    kind = "review49hang"
    params = ()
    built = 0

    def __init__(self, **values):
        HangBuild.built += 1
        if HangBuild.built > 1:
            open(os.environ[PLUGIN_ENV], "w").close()
            time.sleep(HANG_S)  # a plugin's instantiate that never returns
        super().__init__(**values)

    def process(self, block):
        pass


if os.environ.get(PLUGIN_ENV):
    from realtime.dsp.processors import REGISTRY, register

    if HangBuild.kind not in REGISTRY:
        register(HangBuild)


def _run_python(code: str, env=None, timeout=240, wrap=()):
    return subprocess.run([*wrap, sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_a_dev_shm_without_room_is_an_error_and_leaves_nothing():
    """A container's small or full /dev/shm: the segments were created sparse and the window's
    zeroing of them died of SIGBUS (status -7, no message); now one line says so, and the segments
    made before the one that did not fit are gone."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("needs root, unshare and mount for a private, small /dev/shm")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=300k tmpfs /dev/shm"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private /dev/shm here: {probe.stderr.strip()}")
    code = """if True:
        import os
        from gui.remote import RemoteEngineHost
        from realtime.dsp.presets import load_preset
        from realtime.errors import EngineError
        try:
            RemoteEngineHost(load_preset("default"))
        except EngineError as e:
            print("refused:", e)
        print("left:", sorted(n for n in os.listdir("/dev/shm") if n.startswith("psm_")))
    """
    inner = f"mount -t tmpfs -o size=300k tmpfs /dev/shm && exec \"$0\" -c '{code}'"
    r = subprocess.run(["unshare", "-m", "sh", "-c", inner, sys.executable], cwd=ROOT, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "refused: no room in shared memory (/dev/shm) for the engine process's rings" in r.stdout, r.stdout
    assert "left: []" in r.stdout


PANEL = """if True:
    import json, threading, time
    from gui.remote import RemoteEngineHost
    from realtime.dsp.presets import load_preset
    h = RemoteEngineHost(load_preset("clean"), plugins=("tests.test_remote_review49",))
    print(json.dumps({"engine": h._proc.pid, "shm": list(h._names.values())}), flush=True)
    threading.Thread(target=h.add_slot, args=("review49hang",), daemon=True).start()
    time.sleep(600)
"""


def test_an_engine_process_busy_when_its_window_dies_goes_too(tmp_path):
    """The window is killed (or crashes) while the engine process is inside a command that does not
    end (a plugin's build): the engine saw the pipe close only after the command, playing on
    meanwhile with the audio device held (HANG_S here; for ever with a plugin that hangs). Now it
    notices its window's death itself and is gone within seconds, its shared memory with it."""
    marker = tmp_path / "building"
    panel = subprocess.Popen([sys.executable, "-c", PANEL], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, PLUGIN_ENV: str(marker)})
    engine = None
    try:
        info = json.loads(panel.stdout.readline())
        engine = info["engine"]
        deadline = time.monotonic() + 120
        while not marker.exists():  # the engine process is inside the build (after its warm-up)
            assert panel.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        panel.kill()
        panel.wait()
        deadline = time.monotonic() + 30  # its grace for an orderly close, and then some; far below HANG_S
        while _alive(engine) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(engine), "the engine process outlived its window"
        while any(os.path.exists(f"/dev/shm/{n}") for n in info["shm"]):  # unlinked once both are gone
            assert time.monotonic() < deadline, "its shared memory was left in /dev/shm"
            time.sleep(0.1)
    finally:
        if panel.poll() is None:
            panel.kill()
            panel.wait()
        if engine is not None and _alive(engine):
            os.kill(engine, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for init to reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
