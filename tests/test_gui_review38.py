"""Fixes from the 38th review of the knob panel, offscreen: a full control ring with the engine
process hung refuses at once (it waited a minute per move on a pipe call, holding the producers'
lock); Start after the audio server was lost runs in a new engine process; the private JACK server
starts at the remembered rate; the synth panel keeps its height through sessions without a synth;
a change the engine process refused snaps its control back, with no undo step; the banner shows a
line once."""
import os
import signal
import threading
import time

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtWidgets import QApplication  # noqa: E402

from gui.host import EngineHost  # noqa: E402
from gui.remote import RemoteEngineHost  # noqa: E402
from gui.remote.client import START_TIMEOUT_S, EngineProcessError  # noqa: E402
from gui.settings import Settings  # noqa: E402
from realtime.dsp.presets import load_preset  # noqa: E402
from realtime.engine.config import EngineConfig  # noqa: E402


def _fill(h) -> int:
    """Queue gain changes until the control ring refuses one; how many it took."""
    for n in range(4096):
        try:
            h.set_param("gain", "gain_db", -1.0 - (n % 2))
        except Exception:
            return n
    raise AssertionError("the control ring never filled")


def _record_calls(h, monkeypatch, answer=True):
    """``h._call`` recorded as (command, timeout, whether this thread held ``rings.lock``); a "drain"
    is answered by the engine process only when ``answer`` (else refused at once: no minute's wait)."""
    calls, real = [], h._call

    def call(cmd, *args, timeout=START_TIMEOUT_S):
        calls.append((cmd, timeout, h.rings.lock._is_owned()))
        if cmd == "drain" and not answer:
            raise EngineProcessError("the engine process did not answer (test)")
        return real(cmd, *args, timeout=timeout)

    monkeypatch.setattr(h, "_call", call)
    return calls


# ---------------------------------------------------------------------------- 1. a full ring, engine hung
def test_a_full_control_ring_with_the_engine_process_hung_is_refused_at_once(monkeypatch):
    """SIGSTOP'd and known hung: the move that finds the ring full is refused without a pipe call
    (the window froze a minute per knob move and per controller message); so is a mapped controller
    on the MIDI thread, whose error goes to the window's banner."""
    p = load_preset("default")
    p["midi"] = [{"cc": 7, "channel": None, "target": "gain.gain_db"}]
    h = RemoteEngineHost(p, EngineConfig())
    try:
        os.kill(h._proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(EngineProcessError):
                h._call("status", timeout=0.2)
            assert h.engine_hung() and not h.running
            calls = _record_calls(h, monkeypatch, answer=False)
            assert _fill(h) >= 1000  # the ring took the moves, up to its capacity
            with pytest.raises(EngineProcessError, match="not answering"):
                h.set_param("gain", "gain_db", -3.0)
            told = []
            h.on_midi_error = told.append
            midi = threading.Thread(target=h.midi_in, args=(0xB0, 7, 100), name="midi-in")
            midi.start()
            midi.join()
            assert len(told) == 1 and "not answering" in told[0]
            assert not [c for c in calls if c[0] == "drain"]
        finally:
            os.kill(h._proc.pid, signal.SIGCONT)
    finally:
        h.close()


def test_a_full_control_ring_while_stopped_is_drained_briefly_and_outside_the_lock(monkeypatch):
    """Stopped and answering: the engine process applies the backlog, but the call waits a short
    while at most (not the start's minute) and does not hold ``rings.lock`` (a MIDI controller's
    thread waited on it with the GUI thread behind)."""
    h = RemoteEngineHost(load_preset("default"), EngineConfig())
    try:
        calls = _record_calls(h, monkeypatch)
        for n in range(2000):  # past the ring's capacity: each full ring is drained and the move queued
            h.set_param("gain", "gain_db", -1.0 - (n % 2))
        drains = [c for c in calls if c[0] == "drain"]
        assert drains and all(timeout < START_TIMEOUT_S / 10 and not locked for _, timeout, locked in drains)
        assert h.engine_values().slot("gain").processor.get_param("gain_db") == -2.0
    finally:
        h.close()


# ---------------------------------------------------------------------------- 2. Start after a lost server
class _LostHost(EngineHost):
    """An in-process engine that says its device was lost and records restarts and starts."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls, self.lost = [], True

    def device_lost(self) -> bool:
        return self.lost

    def restart_engine(self) -> list[str]:
        self.calls.append("restart_engine")
        self.lost = False
        return []

    def start(self) -> None:
        self.calls.append("start")


def test_start_after_the_device_was_lost_runs_in_a_new_engine_process(window):
    p = load_preset("default")
    w = window(p, host=_LostHost(p, EngineConfig()))
    w.rack.knob("gain.gain_db").setValue(-4.0)
    w.start()
    assert w.host.calls == ["restart_engine", "start"]
    assert w.undo_stack.count() == 1  # the same chain: its steps still apply
    w.start()
    assert w.host.calls == ["restart_engine", "start", "start"]  # (not lost: no new process)


def test_the_engine_process_reports_a_lost_device_and_the_client_keeps_it_until_a_new_process(monkeypatch):
    h = EngineHost(load_preset("default"), EngineConfig())
    assert h.status()["device_lost"] is False and not h.device_lost()
    h.engine._device_lost = True  # (the engine's monitor: no callback for a second)
    assert h.status()["device_lost"] is True

    r = RemoteEngineHost(load_preset("default"), EngineConfig())
    try:
        real = r._call
        answers = iter([{"running": True, "device_lost": True}, {"running": False, "device_lost": False}])
        monkeypatch.setattr(r, "_call", lambda cmd, *a, **k: next(answers) if cmd == "status" else real(cmd, *a, **k))
        r.status()
        r.status()  # stopped, and the next start's engine no longer says it: still known
        assert r.device_lost()
        monkeypatch.undo()
        r.restart_engine()  # a new process (its PortAudio may have looked while no server ran): until a start works
        assert r.status()["device_lost"] is False and r.device_lost()
    finally:
        r.close()


@pytest.mark.jack
def test_start_after_the_jack_server_died_and_came_back_plays_again(window, monkeypatch, tmp_path):
    """The server killed under the playing panel: Start while it is gone says there is no server (it
    said "Insufficient memory"); once it is back, Start plays again (it failed, or the engine process
    aborted in pa_jack.c: the old process's PortAudio still held the dead server's client)."""
    from realtime.io.jackserver import DummyJackServer

    name = "rtgui38lost"  # fixed: JACK reclaims a killed server's registry slot only for its name
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)  # the engine processes spawned here take it
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    server = DummyJackServer(48000, 256, name=name, log_path=str(tmp_path / "jackd.log")).start()
    try:
        p = load_preset("default")
        w = window(p, host=RemoteEngineHost(p, EngineConfig(blocksize=256)))
        w.start()
        assert w.host.running
        deadline = time.monotonic() + 30
        while w.host.status()["callbacks"] < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        deadline = time.monotonic() + 20
        while not (any("lost" in e for e in w.errors) and not w.host.running) and time.monotonic() < deadline:
            w._poll_status()  # (it stops the dead stream)
            QApplication.processEvents()
            time.sleep(0.1)
        assert any("lost" in e for e in w.errors) and not w.host.running
        with pytest.raises(Exception) as gone:
            w.start()
        assert "JACK server" in str(gone.value) and "Insufficient" not in str(gone.value)
        server = DummyJackServer(48000, 256, name=name, log_path=str(tmp_path / "jackd2.log")).start()
        w.start()
        assert w.host.running and w.host.engine_alive() and w.start_button.isChecked()
        assert w.host.status()["callbacks"] > 0 or w.host.running
        w.shutdown()  # the stream closes before the server goes
    finally:
        server.stop()


# ---------------------------------------------------------------------------- 3. the private server's rate
def test_the_private_jack_server_starts_at_the_remembered_rate_and_block(monkeypatch, tmp_path):
    import gui.app
    import main
    import realtime.io.devices
    import realtime.io.jackserver

    class Started(Exception):
        pass

    def ensure_server(samplerate, period, **kw):
        raise Started(samplerate, period)

    monkeypatch.setenv("RTAUDIO_HOST_CONFIG", str(tmp_path / "cfg" / "rtaudio-host.ini"))
    Settings().save_engine_config(EngineConfig(samplerate=44100, blocksize=256))
    monkeypatch.setattr(realtime.io.devices, "has_audio_device", lambda *a, **k: False)
    monkeypatch.setattr(realtime.io.jackserver, "ensure_server", ensure_server)
    argv = ["gui"]
    args = main.build_parser().parse_args(argv)
    args.argv = argv
    with pytest.raises(Started) as started:
        gui.app.run_gui(args)
    assert started.value.args == (44100, 256)  # it started at 48000 / 128, and the engine then refused the rate
    argv = ["gui", "-r", "48000"]  # the command line's still wins
    args = main.build_parser().parse_args(argv)
    args.argv = argv
    with pytest.raises(Started) as started:
        gui.app.run_gui(args)
    assert started.value.args == (48000, 256)


# ---------------------------------------------------------------------------- 4. the synth panel's height
def test_the_synth_panel_keeps_its_height_through_a_session_without_a_synth(window, tmp_path):
    w = window("synth")
    QApplication.processEvents()
    rack, spectrum, keys = w.splitter.sizes()
    assert keys > 0
    w.splitter.setSizes([rack - 40, spectrum, keys + 40])
    QApplication.processEvents()
    tall = w.splitter.sizes()[2]
    w.shutdown()
    plain = window("default")  # no synth: its panel hidden, its height 0 in the splitter
    QApplication.processEvents()
    assert plain.synth_panel.isHidden() and plain.splitter.sizes()[2] == 0
    plain.shutdown()
    assert Settings(tmp_path / "settings.ini").pane_sizes()[2] == tall
    again = window("synth")
    QApplication.processEvents()
    assert again.splitter.sizes()[2] == tall and again.synth_panel.height() == tall
    again.shutdown()
    q = Settings(tmp_path / "settings.ini").q
    q.setValue("window/panes", ["500", "100", "0"])  # as a non-synth session saved it before
    q.sync()
    old = window("synth")
    QApplication.processEvents()
    assert old.synth_panel.height() > 0 and old.splitter.sizes()[2] > 0


# ---------------------------------------------------------------------------- 5. a change the engine refused
def test_a_knob_moved_while_the_engine_process_is_dead_goes_back_and_is_no_undo_step(window):
    p = load_preset("default")
    w = window(p, host=RemoteEngineHost(p, EngineConfig()))
    w.host._proc.kill()
    w.host._proc.join(10)
    knob = w.rack.knob("gain.gain_db")
    before = w.host.value("gain", "gain_db")
    knob.setValue(before - 7.0)
    assert knob.value() == before == w.host.value("gain", "gain_db")
    assert w.undo_stack.count() == 0 and not w.isWindowModified()
    assert any("not running" in e for e in w.errors)
    strip = w.rack.strips["gain"]
    strip.bypass.click()
    assert not strip.bypass.isChecked() and not w.host.chain.slot("gain").bypass and w.undo_stack.count() == 0


# ---------------------------------------------------------------------------- 6. a line once in the banner
def test_the_banner_shows_a_line_once(window):
    w = window()
    for _ in range(5):
        w.toggle_learn("gain.gain_db")  # no MIDI input open: it says so each time
    w.show_error("something else")
    line = "MIDI learn: no MIDI input is open (Settings… → MIDI input)"
    assert w.errors.count(line) == 1 and w.errors[-1] == "something else"
    w.show_error(line)  # again: moved to the end, still once
    assert w.errors == ["something else", line] and w.banner.text() == "\n".join(w.errors)
