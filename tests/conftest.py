"""Shared fixtures: a real JACK server with the dummy driver, started once per session."""
import os

os.environ.setdefault("JACK_NO_START_SERVER", "1")
os.environ.setdefault("MIDO_BACKEND", "mido.backends.rtmidi/UNIX_JACK")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "artifacts")


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory):
    """The default JACK server (dummy driver, 48 kHz, 128 frames); started if none runs."""
    from realtime.io.jackio import compile_callbacks
    from realtime.io.jackserver import ensure_server

    server = ensure_server(48000, 128, log_path=str(tmp_path_factory.mktemp("jack") / "jackd.log"))
    compile_callbacks()  # the test rig's; compiled while no engine's DSP thread waits for the GIL
    yield server
    if server:
        server.stop()


@pytest.fixture
def artifacts_dir():
    os.makedirs(ARTIFACTS, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def keyboard(qtbot):
    """The panel's on-screen keyboard (offscreen), recording what it plays in ``events``."""
    from gui.keyboard import PianoKeyboard

    k = PianoKeyboard()
    qtbot.addWidget(k)
    k.resize(600, 90)
    k.show()
    k.events = []
    k.noteOn.connect(lambda n, v: k.events.append(("on", n)))
    k.noteOff.connect(lambda n: k.events.append(("off", n)))
    return k


@pytest.fixture
def window(qtbot, tmp_path):
    """``window(preset="default", **kw)``: a panel window (offscreen) on an engine in this process
    (fast); closed at the end. test_gui_engine has its own, on an engine process and JACK."""
    from gui.host import EngineHost
    from gui.settings import Settings
    from gui.window import MainWindow
    from realtime.dsp.presets import load_preset
    from realtime.engine.config import EngineConfig

    made = []

    def make(preset="default", host=None, **kw):
        p = load_preset(preset) if isinstance(preset, str) else preset
        host = host or EngineHost(p, EngineConfig())
        w = MainWindow(p, EngineConfig(), Settings(tmp_path / "settings.ini"), host=host, **kw)
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        return w

    yield make
    for w in made:
        w.shutdown()


# ---------------------------------------------------------------------------- small disks (root only)
def _tmpfs(where, options: str):
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs")
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)])


@pytest.fixture
def small_disk(tmp_path):
    """A 96 kB disk: room for a few blocks of audio, then full."""
    yield from _tmpfs(tmp_path / "small", "size=96k")


@pytest.fixture
def three_mb_disk(tmp_path):
    """A 3 MB disk: a file of some seconds fills it, and what it wrote, once removed, leaves more
    than a megabyte free (a full disk must be told by the write that failed, not by the space left)."""
    yield from _tmpfs(tmp_path / "three_mb", "size=3m")


@pytest.fixture
def full_disk(tmp_path):
    """A 64 kB disk: full after a few small files."""
    yield from _tmpfs(tmp_path / "full", "size=64k")


@pytest.fixture
def read_only_dir(tmp_path):
    yield from _tmpfs(tmp_path / "ro", "ro,size=64k")
