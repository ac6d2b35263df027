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
def window(qtbot, tmp_path):
    """``window(preset="default", **kw)``: a panel window (offscreen) on an engine in this process
    (fast); closed at the end. test_gui_engine has its own, on an engine process and JACK."""
    from gui.host import EngineHost
    from gui.settings import Settings
    from gui.window import MainWindow
    from realtime.dsp.presets import load_preset
    from realtime.engine.config import EngineConfig

    made = []

    def make(preset="default", **kw):
        p = load_preset(preset) if isinstance(preset, str) else preset
        w = MainWindow(p, EngineConfig(), Settings(tmp_path / "settings.ini"), host=EngineHost(p, EngineConfig()), **kw)
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        return w

    yield make
    for w in made:
        w.shutdown()
