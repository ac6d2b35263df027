"""Review 39, the panel: the demo input no longer holds the toolbar, and is rewired (not restarted)
after each start or change of the chain's structure; `presets` reads a large user preset only as
far as its description."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

import main  # noqa: E402
from gui.host import EngineHost  # noqa: E402
from gui.window import MainWindow  # noqa: E402
from realtime.dsp.presets import MAX_PRESET_BYTES, load_preset, save_preset, user_descriptions  # noqa: E402
from realtime.engine.config import EngineConfig  # noqa: E402


# ---------------------------------------------------------------------------- 1. the demo input and the toolbar
class SlowDemo:
    """A demo player whose wiring waits for ``gate`` (a player's first start: seconds)."""

    made: list["SlowDemo"] = []

    def __init__(self):
        self.gate, self.entered, self.closed, self.fail = threading.Event(), threading.Event(), False, None
        SlowDemo.made.append(self)

    def connect(self, engine=None):
        self.entered.set()
        assert self.gate.wait(30)
        if self.fail:
            raise RuntimeError(self.fail)

    def close(self):
        self.closed = True
        self.gate.set()


class QuietServer:
    stopped = False

    def stop(self):
        QuietServer.stopped = True


class StreamlessHost(EngineHost):
    """The engine in this process, opening no device; its calls run on the window's worker thread
    as the engine process's do (``threaded_calls``)."""

    threaded_calls = True
    _on = False

    @property
    def running(self) -> bool:
        return self._on

    def start(self) -> None:
        self._on = True

    def stop(self) -> None:
        self._on = False


@pytest.fixture
def demo_gui(qapp, monkeypatch, tmp_path):
    """gui.app.run_gui with no sound card (its demo mode: a private server and the demo input, both
    stand-ins here); ``body(win, demo)`` runs in place of the event loop, after the Start the panel
    presses itself."""
    import gui.app
    import gui.demo_source
    import gui.window
    import realtime.io.devices
    import realtime.io.jackserver

    class Window(MainWindow):
        def __init__(self, preset, config, settings, **kw):
            super().__init__(preset, config, settings, host=StreamlessHost(preset, config), **kw)
            made.append(self)

    made = []
    SlowDemo.made.clear()
    monkeypatch.setenv("RTAUDIO_HOST_CONFIG", str(tmp_path / "cfg" / "rtaudio-host.ini"))
    monkeypatch.setattr(gui.window, "MainWindow", Window)
    monkeypatch.setattr(gui.demo_source, "DemoSource", SlowDemo)
    monkeypatch.setattr(realtime.io.devices, "has_audio_device", lambda *a, **k: False)
    monkeypatch.setattr(realtime.io.jackserver, "ensure_server", lambda *a, **k: QuietServer())
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # run_gui sets its own: put back after
    monkeypatch.setattr(signal, "signal", lambda sig, handler: None)

    def run(body):
        argv = ["gui", "--preset", "default"]
        monkeypatch.setattr(sys, "argv", ["main.py", *argv])
        monkeypatch.setattr(qapp, "exec", lambda: body(made[-1], SlowDemo.made[-1]) or 0, raising=False)
        assert gui.app.run_gui(main.build_parser().parse_args(argv)) == 0
        return made[-1]

    return run


def _demo_label(win) -> str | None:
    from PyQt6.QtWidgets import QLabel

    label = win.findChild(QLabel, "status:demo")
    return label.text() if label is not None else None


def test_the_toolbar_stays_usable_while_the_demo_input_is_wired(demo_gui, qtbot):
    """Wiring the demo player was a window action: the whole toolbar (Stop, presets, Add, Settings)
    was off until the player answered, 8-12 s on a busy machine after every start and every change
    of the chain's structure. It runs beside the actions now, and the status bar says why the input
    is silent meanwhile."""
    seen = {}

    def body(win, demo):
        try:
            qtbot.waitUntil(lambda: demo.entered.is_set() and not win.busy, timeout=10000)
            seen.update(toolbar=win.toolbar.isEnabled(), busy=win.busy, label=_demo_label(win),
                        start=win.start_button.isChecked())
            win.add_slot("gain", wait=False)  # a structural change while the player still comes up
            qtbot.waitUntil(lambda: "gain2" in win.rack.strips and not win.busy, timeout=10000)
        finally:
            demo.gate.set()
        qtbot.waitUntil(lambda: _demo_label(win) == "demo input: connected", timeout=10000)
        seen["after"] = not [e for e in win.errors if e.startswith("demo input")]

    demo_gui(body)
    assert seen == {"toolbar": True, "busy": False, "label": "demo input: connecting…", "start": True,
                    "after": True}
    assert SlowDemo.made[-1].closed and QuietServer.stopped


def test_a_demo_input_that_fails_says_so_and_the_panel_runs_on(demo_gui, qtbot):
    def body(win, demo):
        demo.fail = "demo input: no engine input ports on the JACK server"
        demo.gate.set()
        qtbot.waitUntil(lambda: _demo_label(win) == "demo input: off", timeout=10000)
        assert win.errors[-1] == "demo input: no engine input ports on the JACK server"
        assert win.toolbar.isEnabled() and win.host.running

    demo_gui(body)


def test_after_a_stop_the_demo_label_no_longer_says_connected(demo_gui, qtbot):
    """The engine's ports go with a Stop: the status bar said "demo input: connected" all the same."""
    seen = {}

    def body(win, demo):
        demo.gate.set()
        qtbot.waitUntil(lambda: _demo_label(win) == "demo input: connected", timeout=10000)
        win.stop()
        qtbot.waitUntil(lambda: not win.busy, timeout=10000)
        seen["stopped"] = _demo_label(win)
        win.start()
        qtbot.waitUntil(lambda: _demo_label(win) == "demo input: connected", timeout=10000)

    demo_gui(body)
    assert seen == {"stopped": "demo input: off (engine stopped)"}


# ---------------------------------------------------------------------------- 2. the swap's silence, demo mode
def _connections() -> dict[str, list[str]]:
    """port -> the ports it is connected to (jack_lsp -c, in a process of its own: a JACK client in
    the test's process, closed after others, crashed it)."""
    out, port = {}, None
    lines = subprocess.run(["jack_lsp", "-c"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    for line in lines:
        if line.startswith((" ", "\t")):
            out[port].append(line.strip())
        else:
            port = line.strip()
            out[port] = []
    return out


def _demo_wired() -> list[str]:
    """The ports the demo player plays into."""
    return sorted(p for port, to in _connections().items() if port.startswith("rt-demo:") for p in to)


@pytest.mark.jack
def test_after_a_change_of_structure_the_running_demo_player_is_rewired_not_restarted(jack_server):
    """New audio settings reopen the engine's stream, and its JACK ports are new. The panel then
    started a new demo player (a Python process that compiles its JACK callback: 2-3 s here, 8-12 s
    on a busy machine), the engine's input silent all that time; now the player it has is wired to
    the new ports. A change of the chain's structure keeps the stream (a live swap): the player
    stays wired through it, and wiring it again changes nothing."""
    from dataclasses import replace

    from gui.demo_source import DemoSource
    from gui.remote import RemoteEngineHost

    h = RemoteEngineHost(load_preset("clean"), EngineConfig())
    demo = DemoSource()
    try:
        h.start()
        demo.connect()
        pid, first = demo.proc.pid, _demo_wired()
        assert len(first) == 2 and not any(p.startswith(("system:", "rt-")) for p in first), first
        h.add_slot("gain")
        assert _demo_wired() == first  # the live swap kept the engine's ports and their connections
        demo.connect()
        assert demo.proc.pid == pid and _demo_wired() == first
        h.set_config(replace(h.config, prefill_blocks=h.config.prefill_blocks + 1))
        assert _demo_wired() == []  # the engine's new ports: nothing plays into them
        demo.connect()
        assert demo.proc.pid == pid  # the same player
        again = _demo_wired()
        assert len(again) == 2 and {p.split(":")[0] for p in again} == {p.split(":")[0] for p in first}
        assert again != first  # (the new stream's ports: PortAudio numbers them on)
        h.read_meters()
        deadline = time.monotonic() + 10
        while not ((m := h.read_meters()) is not None and max(m[0], m[1]) > 1e-4):
            assert time.monotonic() < deadline, "no demo signal at the engine's input"
            time.sleep(0.01)
    finally:
        demo.close()
        h.close()
    assert demo.proc is None


@pytest.mark.jack
def test_the_panels_demo_input_plays_into_its_own_engine_not_the_first_client_on_the_server(jack_server):
    """Another program's client with inputs, registered before the engine's (jack_iodelay): the demo
    player took the first inputs not its own, so it played into that program and the engine heard
    nothing. The panel now names the engine's client (its status' ``jack_client``)."""
    from gui.demo_source import DemoSource
    from gui.remote import RemoteEngineHost

    other = subprocess.Popen(["jack_iodelay"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    h = demo = None
    try:
        deadline = time.monotonic() + 30
        while "jack_delay:in" not in _connections():
            assert time.monotonic() < deadline and other.poll() is None, "jack_iodelay did not come up"
            time.sleep(0.1)
        h = RemoteEngineHost(load_preset("clean"), EngineConfig())
        h.start()
        engine = h.status()["jack_client"]
        assert engine and engine.startswith("PortAudio"), engine
        demo = DemoSource()
        demo.connect(engine)
        wired = _demo_wired()
        assert len(wired) == 2 and all(p.startswith(engine + ":") for p in wired), wired
    finally:
        if demo is not None:
            demo.close()
        if h is not None:
            h.close()
        other.terminate()
        other.wait(timeout=10)


# ---------------------------------------------------------------------------- 3. `presets` and large user presets
def _big_preset(path, description: str, state_bytes: int, chain_first: bool = False) -> None:
    """A saved preset made large by a plugin's state (as an LV2 slot's Turtle makes it)."""
    p = load_preset("default")
    p = {**p, "name": path.stem, "description": description}
    p["chain"][0]["state"] = "x" * state_bytes  # listing never validates: any slot will carry it
    if chain_first:  # written by hand: the chain before the description
        p = {"chain": p["chain"], **{k: v for k, v in p.items() if k != "chain"}}
    path.write_text(json.dumps(p, indent=2))


def test_listing_reads_a_large_user_preset_only_as_far_as_its_description(tmp_path):
    """`presets` read and parsed every user preset whole for its description: a preset holding a
    plugin's state of tens of MiB cost its size in memory (several times over) and a parse each."""
    _big_preset(tmp_path / "big.json", "a big one", 16 << 20)
    save_preset({**load_preset("clean"), "name": "small", "description": "a small one"}, tmp_path / "small.json")
    (tmp_path / "broken.json").write_text('{"version": 1, "name": "b", "description": "cut')
    tracemalloc.start()
    try:
        listed = user_descriptions(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [p.name for p, _ in listed] == ["big.json", "broken.json", "small.json"]
    assert listed[0][1] == "a big one" and listed[2][1] == "a small one"
    assert listed[1][1].startswith("(cannot be read: ")  # a malformed one: said in its line, the rest listed
    assert peak < 2 << 20, peak  # (it was > 16 MiB: the file read whole)


def test_a_description_after_a_large_chain_is_still_found(tmp_path):
    _big_preset(tmp_path / "hand.json", "written by hand", 1 << 20, chain_first=True)
    assert [d for _, d in user_descriptions(tmp_path)] == ["written by hand"]


def test_a_user_preset_over_the_size_limit_is_listed_as_too_large(tmp_path):
    """It was read up to the limit and said "cannot be read: Unterminated string …" (a JSON error
    of the cut, not what is wrong); `presets` lists it in one line, the rest as they are."""
    p = tmp_path / "huge.json"
    with open(p, "wb") as f:
        f.write(b'{"version": 1, "name": "huge", "description": "x", "chain": [], "pad": "')
        f.truncate(MAX_PRESET_BYTES + 10)  # sparse: no disk used
    save_preset({**load_preset("clean"), "name": "ok"}, tmp_path / "ok.json")
    listed = user_descriptions(tmp_path)
    assert [p.name for p, _ in listed] == ["huge.json", "ok.json"]
    assert listed[0][1].startswith("(cannot be read: too large for a preset"), listed[0][1]


def test_presets_command_lists_a_malformed_user_preset_in_one_line(tmp_path):
    folder = tmp_path / "cfg" / "presets"
    folder.mkdir(parents=True)
    (folder / "broken.json").write_bytes(b'{"version": 1, "name": "x", "description": "\xff')
    (folder / "deep.json").write_text("[" * 100000 + "]" * 100000)
    _big_preset(folder / "big.json", "a big one", 1 << 20)
    env = {**os.environ, "RTAUDIO_HOST_CONFIG": str(tmp_path / "cfg" / "rtaudio-host.ini")}
    r = subprocess.run([sys.executable, "main.py", "presets"], cwd=os.path.dirname(os.path.dirname(__file__)),
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[lines.index(next(ln for ln in lines if ln.startswith("saved"))) + 1:]] \
        == ["big", "broken", "deep"]
    assert next(ln for ln in lines if ln.startswith("broken")).split(None, 2)[2].startswith("(cannot be read:")
    # (it said "maximum recursion depth exceeded while decoding a JSON array from a unicode stri", cut)
    assert next(ln for ln in lines if ln.startswith("deep")).split(None, 2)[2] == \
        "(cannot be read: nested too deeply to be a preset)"
