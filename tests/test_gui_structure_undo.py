"""Structural undo, the window's splitter and the rates the settings dialog offers, offscreen: a slot
added, removed or moved is an undo step (the slot comes back where it was with its values, bypass,
mix and MIDI mappings; the value steps around it stay valid; in the background the step waits for
the engine like the change did); rack, spectrum and keyboard share a splitter remembered in the
ini; the dialog offers only the rates the chosen devices run (a JACK device: the server's)."""
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import QPointF, Qt  # noqa: E402
from PyQt6.QtGui import QMouseEvent  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication, QToolButton  # noqa: E402

import gui.settings as gui_settings  # noqa: E402
from gui.midi import NONE  # noqa: E402
from gui.settings import Settings, SettingsDialog  # noqa: E402
from realtime.dsp.presets import load_preset  # noqa: E402
from realtime.engine.config import EngineConfig  # noqa: E402

from .qt_panel import wheel  # noqa: E402

CTRL = Qt.KeyboardModifier.ControlModifier
L, N = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton


def ids(w):
    return [s.id for s in w.host.chain.slots]


def undo_key(w, focus):
    """Ctrl+Z with the focus on ``focus``: the window-wide action takes it."""
    focus.setFocus()
    QApplication.processEvents()
    QTest.keyClick(focus, Qt.Key.Key_Z, CTRL)


def click_remove(w, slot_id):
    QTest.mouseClick(w.rack.strips[slot_id].findChild(QToolButton, "remove"), L)


# ---------------------------------------------------------------------------- 1. structural undo
def test_a_removed_slot_comes_back_where_it_was_with_values_bypass_mix_and_mappings(window):
    p = load_preset("default")
    p["midi"] = [{"cc": 20, "channel": None, "target": "limiter.bypass"},
                 {"cc": 21, "channel": 3, "target": "limiter.ceiling_db"},
                 {"cc": 7, "channel": None, "target": "gain.gain_db"}]
    w = window(p)
    before = ids(w)
    lim = w.rack.strips["limiter"]
    ceiling0, gain0 = w.host.value("limiter", "ceiling_db"), w.host.value("gain", "gain_db")
    wheel(lim.controls["ceiling_db"], -3)  # value steps before the remove
    wheel(w.rack.strips["gain"].controls["gain_db"], 2)
    QTest.mouseClick(lim.bypass, L)
    wheel(lim.mix_knob, -2)
    ceiling, gain, mix = w.host.value("limiter", "ceiling_db"), w.host.value("gain", "gain_db"), lim.mix_knob.value()
    assert ceiling != ceiling0 and mix < 100.0 and w.undo_stack.count() == 4
    click_remove(w, "limiter")  # the ✕: a mis-click
    assert "limiter" not in w.rack.strips and "limiter" not in ids(w)
    assert all(not t.startswith("limiter.") for t in w.host.midi_map.values())
    assert w.undo_action.text() == "Undo Remove limiter" and w.undo_stack.count() == 5 and w.modified
    undo_key(w, w.rack.strips["gain"].controls["gain_db"])
    assert ids(w) == before  # the same kind at the same place, with its own id
    slot = w.host.chain.slot("limiter")
    assert slot.kind == "limiter" and slot.bypass and slot.mix == pytest.approx(mix / 100.0)
    assert w.host.value("limiter", "ceiling_db") == ceiling
    strip = w.rack.strips["limiter"]
    assert strip.controls["ceiling_db"].value() == ceiling and strip.bypass.isChecked() and strip.bypassed
    assert w.host.midi_map[(20, None)] == "limiter.bypass" and w.host.midi_map[(21, 3)] == "limiter.ceiling_db"
    assert "CC 20" in strip.bypass.text()  # the mapping shows on its control again
    assert w.redo_action.text() == "Redo Remove limiter" and w.redo_action.isEnabled()
    # the value steps before the remove still address their controls, the restored slot's included
    for _ in range(4):
        w.undo_action.trigger()
    assert w.host.value("limiter", "ceiling_db") == ceiling0 and w.host.value("gain", "gain_db") == gain0
    assert not w.host.chain.slot("limiter").bypass and w.host.chain.slot("limiter").mix == pytest.approx(1.0)
    assert not w.modified and not w.isWindowModified()  # back to the preset as loaded
    for _ in range(5):
        w.redo_action.trigger()
    assert "limiter" not in ids(w) and w.host.value("gain", "gain_db") == gain and w.undo_stack.index() == 5
    w.undo_action.trigger()  # the redone remove kept what it took out: back again as it was
    assert w.host.value("limiter", "ceiling_db") == ceiling and w.host.chain.slot("limiter").bypass
    assert w.errors == []


def test_an_added_slot_undoes_by_going_and_redoes_at_its_place_with_its_id(window):
    w = window()
    start = ids(w)
    sid = w.add_slot("gain")
    assert sid == "gain2" and w.undo_action.text() == "Undo Add gain2"
    knob = w.rack.strips[sid].controls["gain_db"]
    wheel(knob, 3)
    moved = w.host.value(sid, "gain_db")
    w.move_slot(sid, -2)
    placed = ids(w)
    assert placed.index(sid) == len(start) - 3 and w.undo_action.text() == "Undo Move gain2"
    w.move_slot(start[0], -1)  # at the end already: nothing changed, no step
    assert w.undo_stack.count() == 3
    w.undo_action.trigger()  # the move back
    assert ids(w).index(sid) == len(start) - 1
    w.undo_action.trigger()  # the knob
    assert w.host.value(sid, "gain_db") == 0.0
    w.undo_action.trigger()  # the add
    assert ids(w) == start and sid not in w.rack.strips and w.redo_action.text() == "Redo Add gain2"
    assert not w.modified
    for _ in range(3):
        w.redo_action.trigger()
    assert ids(w) == placed and w.host.value(sid, "gain_db") == moved
    assert w.rack.strips[sid].controls["gain_db"].value() == moved
    # a new change after undoing a structural step drops the redo, as any new step does
    w.undo_action.trigger()
    wheel(w.rack.strips["gain"].controls["gain_db"], 1)
    assert not w.undo_stack.canRedo() and w.undo_stack.count() == 3
    w.undo_action.trigger()
    w.undo_action.trigger()
    assert w.host.value(sid, "gain_db") == 0.0
    assert w.errors == []


def test_a_loaded_preset_still_starts_a_new_history(window):
    w = window()
    w.add_slot("gain")
    w.remove_slot("meter")
    assert w.undo_stack.count() == 2
    w.recall_builtin("clean")
    assert w.undo_stack.count() == 0 and not w.undo_action.isEnabled()


def test_a_step_that_fails_leaves_the_stack_where_it_was(window, monkeypatch):
    w = window()
    w.remove_slot("limiter")

    def refused(*a):
        raise RuntimeError("the engine refused")

    monkeypatch.setattr(w.host, "insert_slot", refused)
    w.undo_action.trigger()
    assert "limiter" not in ids(w) and w.undo_stack.index() == 1 and w.undo_stack.count() == 1
    assert w.errors == ["the engine refused"] and w.undo_action.isEnabled()
    monkeypatch.undo()
    w.undo_action.trigger()  # it works now
    assert "limiter" in ids(w) and w.undo_stack.index() == 0


def test_an_lv2_plugin_comes_back_with_its_control_values(window):
    from .qt_panel import need_swh_amp

    amp = need_swh_amp()
    p = load_preset("default")
    p["chain"].insert(1, {"id": "amp", "processor": "lv2", "uri": amp, "params": {"gain": 7.0}})
    w = window(p)
    before = ids(w)
    w.remove_slot("amp")
    w.undo_action.trigger()
    assert ids(w) == before and w.host.value("amp", "gain") == 7.0
    assert w.host.chain.slot("amp").processor.uri == amp and w.errors == []


@pytest.fixture
def hold_plugin(tmp_path, monkeypatch):
    """test_lv2's urn:test:state-hold, built here: a plugin whose own state (the last input it saw)
    is not in its control ports. Returns a preset entry of it holding 0.25."""
    import shutil
    import subprocess

    import numpy as np

    from realtime.dsp.presets import build_chain
    from realtime.io import lilv

    if shutil.which("gcc") is None or not lilv.available():
        pytest.skip("needs a C compiler and liblilv (scripts/setup.sh)")
    from .test_lv2 import _STATE_C, _STATE_TTL, HOLD, _bundle

    monkeypatch.setenv("REALTIME_CACHE_DIR", str(tmp_path / "cache"))
    b = _bundle(tmp_path / "lv2", "state", _STATE_TTL)
    (b / "state.c").write_text(_STATE_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(b / "state.so"), str(b / "state.c")], check=True)
    monkeypatch.setenv("LV2_PATH", f"{tmp_path / 'lv2'}:/usr/lib/lv2")
    entry = {"id": "hold", "processor": "lv2", "uri": HOLD, "params": {"gain": 0.5}}
    chain = build_chain({"version": 1, "name": "t", "chain": [entry]})
    chain.prepare(48000, 128, 1)
    chain.slot("hold").processor.process(np.full((128, 1), 0.25, np.float32))
    return chain.to_preset("t")["chain"][0]


def test_an_lv2_plugins_own_state_comes_back_or_the_step_says_it_did_not(window, hold_plugin):
    from realtime.errors import PluginError

    p = load_preset("default")
    p["chain"].insert(1, hold_plugin)
    w = window(p)
    before = ids(w)

    def state_of(w):
        return next(e for e in w.host.to_preset()["chain"] if e["id"] == "hold").get("state")

    assert "0.25" in state_of(w)
    w.remove_slot("hold")
    assert w.undo_action.text() == "Undo Remove hold"
    w.undo_action.trigger()
    assert ids(w) == before and state_of(w) == hold_plugin["state"] and w.host.value("hold", "gain") == 0.5

    def unsaved(*a, **k):
        raise PluginError("lilv could not save the state")

    w.host.to_preset = unsaved
    w.remove_slot("hold")  # the state does not save: the slot goes all the same, and the step says so
    assert "hold" not in ids(w) and w.undo_action.text() == "Undo Remove hold (plugin state not kept)"
    w.undo_action.trigger()
    del w.host.to_preset
    assert ids(w) == before and w.host.value("hold", "gain") == 0.5 and state_of(w) != hold_plugin["state"]
    assert w.errors == []


@pytest.mark.jack
def test_in_the_background_a_structural_undo_waits_for_the_engine_with_undo_and_redo_off(qtbot, tmp_path,
                                                                                          jack_server):
    """The product's set-up: the engine in a process of its own, playing. The undo is an action like
    the remove: the window stays live, shows it, and takes no other undo or redo meanwhile."""
    from gui.remote import RemoteEngineHost
    from gui.window import MainWindow

    p = load_preset("default")
    config = EngineConfig(samplerate=48000, blocksize=128)
    w = MainWindow(p, config, Settings(tmp_path / "settings.ini"), host=RemoteEngineHost(p, config))
    qtbot.addWidget(w)
    w.show()
    try:
        w.start()
        w.rack.knob("limiter.ceiling_db").setValue(-3.0)
        w.remove_slot("limiter", wait=False)
        qtbot.waitUntil(lambda: not w.busy, timeout=30000)
        assert "limiter" not in ids(w) and w.undo_action.isEnabled()
        w.undo_action.trigger()
        assert w.busy and w.status_labels["state"].text() == "◌ Undoing Remove limiter…"
        assert not w.undo_action.isEnabled() and not w.redo_action.isEnabled()
        qtbot.waitUntil(lambda: not w.busy, timeout=30000)
        assert "limiter" in ids(w) and w.host.running and w.errors == []
        assert w.host.engine_values().slot("limiter").processor.get_param("ceiling_db") == -3.0
        assert w.undo_action.isEnabled() and w.redo_action.text() == "Redo Remove limiter"
        w.redo_action.trigger()
        assert not w.redo_action.isEnabled() and not w.undo_action.isEnabled()
        qtbot.waitUntil(lambda: not w.busy, timeout=30000)
        assert "limiter" not in ids(w) and w.host.running and w.undo_action.isEnabled()
    finally:
        w.shutdown()


# ---------------------------------------------------------------------------- 2. the splitter
def drag(handle, dy: float):
    """Press on a splitter handle, move ``dy`` pixels in steps, release."""
    start = handle.mapToGlobal(QPointF(handle.width() / 2, handle.height() / 2))

    def send(kind, at, button, buttons):  # (the handle moves under the mouse: its local point from the global)
        QApplication.sendEvent(handle, QMouseEvent(kind, handle.mapFromGlobal(at), at, button, buttons,
                                                   Qt.KeyboardModifier.NoModifier))

    send(QMouseEvent.Type.MouseButtonPress, start, L, L)
    for k in range(1, 5):
        send(QMouseEvent.Type.MouseMove, start + QPointF(0, dy * k / 4), N, L)
    send(QMouseEvent.Type.MouseButtonRelease, start + QPointF(0, dy), L, N)
    QApplication.processEvents()


def test_rack_spectrum_and_keyboard_share_a_splitter_remembered_in_the_ini(window, tmp_path):
    w = window()
    w.resize(760, 500)  # (within the offscreen screen, 800x800)
    w.synth_panel.setVisible(True)  # as with a synth slot
    QApplication.processEvents()
    split = w.splitter
    rack, spectrum, keys = split.sizes()
    assert w.rack.parentWidget().parentWidget() is split and w.spectrum.parentWidget() is split
    assert rack > spectrum > 0 and keys > 0
    drag(split.handle(1), -60)  # the spectrum taller, the rack shorter
    r2, s2, k2 = split.sizes()
    assert (r2, s2, k2) == (rack - 60, spectrum + 60, keys) and w.spectrum.height() == s2
    drag(split.handle(2), 400)  # the keyboard dragged shut
    assert split.sizes()[2] == 0 and w.synth_panel.height() == 0
    drag(split.handle(2), -80)  # and open again
    assert split.sizes()[2] > 30 and w.synth_panel.height() > 30
    drag(split.handle(1), 300)  # the spectrum dragged shut: the rack takes the room
    sizes = split.sizes()
    assert sizes[1] == 0 and sizes[0] > r2
    w.spectrum_button.click()
    w.spectrum_button.click()  # hidden and shown again by its button: open at its own height
    QApplication.processEvents()
    assert split.sizes()[1] == spectrum and w.spectrum.height() == spectrum
    drag(split.handle(1), 300)
    assert split.sizes() == sizes
    w.resize(760, 600)  # a taller window: the rack grows, the shut spectrum stays shut
    QApplication.processEvents()
    grown = split.sizes()
    assert grown[0] == sizes[0] + 100 and grown[1:] == sizes[1:]
    w.shutdown()  # remembers it, as closing does
    w2 = window()
    w2.synth_panel.setVisible(True)
    QApplication.processEvents()
    assert w2.size() == w.size() and w2.splitter.sizes() == grown
    drag(w2.splitter.handle(1), -70)  # a collapsed spectrum opens again by dragging
    assert w2.splitter.sizes()[1] >= 60 and w2.spectrum.height() >= 60
    assert Settings(tmp_path / "settings.ini").pane_sizes() == grown  # as w saved them


def test_a_hand_edited_splitter_state_does_not_stop_the_panel(window, tmp_path):
    (tmp_path / "settings.ini").write_text("[window]\npanes=hello, 1e99, -1\n")
    w = window()
    QApplication.processEvents()
    assert w.isVisible() and not w.errors and w.splitter.sizes()[0] > 0


# ---------------------------------------------------------------------------- 3. rates the devices run
@pytest.mark.jack
def test_a_jack_device_offers_only_the_servers_rate(qtbot, jack_server):
    """The dummy server runs at 48 kHz: the dialog offered 44.1, 88.2 and 96 kHz too (refused at OK)."""
    for config in (EngineConfig(samplerate=48000), EngineConfig(samplerate=44100, output_device="system")):
        d = SettingsDialog(config, NONE)
        qtbot.addWidget(d)
        assert [d.samplerate.itemText(i) for i in range(d.samplerate.count())] == ["48000"]
        assert d.samplerate.currentText() == "48000" and d.engine_config().samplerate == 48000
        d.input.setCurrentText("system")  # a device chosen: still only what it runs
        assert [d.samplerate.itemText(i) for i in range(d.samplerate.count())] == ["48000"]
    assert gui_settings.device_rates("system", "system", EngineConfig()) == [48000]
    assert gui_settings.device_rates(None, None, EngineConfig(mode="output")) == [48000]


def test_the_rates_follow_the_devices_chosen_keeping_the_rate_while_it_runs(qtbot, monkeypatch):
    runs = {"Default": (44100, 48000, 88200, 96000), "USB": (44100, 48000), "HDMI": (48000, 96000)}
    asked = []

    def device_rates(i, o, config):
        asked.append((i, o))
        return sorted(set(runs[i or "Default"]) & set(runs[o or "Default"]))

    monkeypatch.setattr(gui_settings, "audio_devices", lambda: dict.fromkeys(("input", "output"), ["USB", "HDMI"]))
    monkeypatch.setattr(gui_settings, "device_rates", device_rates)
    d = SettingsDialog(EngineConfig(samplerate=44100, blocksize=256), NONE)
    qtbot.addWidget(d)

    def offered():
        return [int(d.samplerate.itemText(i)) for i in range(d.samplerate.count())]

    assert offered() == [44100, 48000, 88200, 96000] and d.samplerate.currentText() == "44100"
    d.output.setCurrentText("USB")
    assert asked[-1] == (None, "USB") and offered() == [44100, 48000] and d.samplerate.currentText() == "44100"
    d.input.setCurrentText("HDMI")  # 44.1 kHz is not among its rates: the first it runs with the other
    assert offered() == [48000] and d.samplerate.currentText() == "48000"
    assert d.prefill_ms.text().endswith(f"{1e3 * int(d.prefill.currentText()) * 256 / 48000:.1f} ms of output latency")
    d.output.setCurrentText("HDMI")
    assert offered() == [48000, 96000] and d.samplerate.currentText() == "48000"
    assert d.engine_config().samplerate == 48000
