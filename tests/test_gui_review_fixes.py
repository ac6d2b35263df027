"""Panel fixes from a review, offscreen: drop-down and bypass picks are undo steps of their own, the
wheel over a rack drop-down leaves it alone, the host's own JACK clients are no devices, Enter in
the Add box adds the first match, the load readouts go idle after Stop, the move buttons at the
ends are disabled and the undo menu names controls by their labels."""
import numpy as np
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import Qt  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication, QToolButton  # noqa: E402

from gui import knob as gui_knob  # noqa: E402
from gui import settings as gui_settings  # noqa: E402
from gui.host import EngineHost  # noqa: E402

from .qt_panel import wheel  # noqa: E402

L = Qt.MouseButton.LeftButton


def pause(monkeypatch, seconds: float):
    """Let ``seconds`` pass for the panel's gesture clock (time.monotonic in gui.rack / gui.knob)."""
    import time

    import gui.rack as gui_rack

    now = time.monotonic() + seconds
    clock = type("Clock", (), {"monotonic": staticmethod(lambda: now)})
    monkeypatch.setattr(gui_rack, "time", clock, raising=False)
    monkeypatch.setattr(gui_knob, "time", clock)


def texts(stack):
    return [stack.text(i) for i in range(stack.count())]


# ---------------------------------------------------------------------------- 1. undo steps
def test_drop_down_picks_apart_in_time_are_separate_undo_steps(window, monkeypatch):
    """highpass -> lowpass, 2 s later -> peak: one step, and Ctrl+Z went straight back to highpass."""
    w = window()
    combo = w.rack.strips["hpf"].controls["type"]
    start = combo.currentText()
    combo.setCurrentIndex(combo.findText("lowpass"))
    pause(monkeypatch, 2.0)
    combo.setCurrentIndex(combo.findText("peak"))
    assert w.undo_stack.count() == 2
    w.undo_action.trigger()
    assert combo.currentText() == "lowpass" and w.host.value("hpf", "type") == combo.findText("lowpass")
    w.undo_action.trigger()
    assert combo.currentText() == start


def test_each_pick_from_a_drop_downs_list_is_a_step(window):
    """A pick from the list (``activated``) ends its step at once, however soon the next comes."""
    w = window()
    combo = w.rack.strips["hpf"].controls["type"]
    for name in ("lowpass", "peak"):
        combo.setCurrentIndex(combo.findText(name))
        combo.activated.emit(combo.currentIndex())  # as a pick from the open list does
    assert w.undo_stack.count() == 2
    w.undo_stack.undo()
    assert combo.currentText() == "lowpass"


def test_instrument_picks_apart_in_time_are_separate_steps(window, monkeypatch):
    w = window()
    w.add_slot("synth")
    sid, pid = w.synth_panel.target
    rack_combo = w.rack.strips[sid].controls[pid]
    assert w.instrument.count() >= 3
    start = w.instrument.currentIndex()
    a, b = [i for i in range(w.instrument.count()) if i != start][:2]
    w.instrument.setCurrentIndex(a)
    pause(monkeypatch, 2.0)
    w.instrument.setCurrentIndex(b)
    assert w.undo_stack.count() == 3  # the add, a, b
    w.undo_stack.undo()
    assert w.host.value(sid, pid) == a and w.instrument.currentIndex() == a and rack_combo.currentIndex() == a
    w.instrument.setCurrentIndex(b)  # a pick from the picker's list right after: a step of its own
    w.instrument.activated.emit(b)
    w.instrument.setCurrentIndex(start)
    assert w.undo_stack.count() == 4  # the add, a, b, start
    w.undo_stack.undo()
    assert w.host.value(sid, pid) == b and w.instrument.currentIndex() == b


def test_bypass_on_then_off_later_are_two_steps(window, monkeypatch):
    """On, then off 2 s later: they merged into one step that cancelled itself (nothing to undo)."""
    w = window()
    b = w.rack.strips["gain"].bypass
    QTest.mouseClick(b, L)
    pause(monkeypatch, 2.0)
    QTest.mouseClick(b, L)
    assert w.undo_stack.count() == 2 and w.undo_action.isEnabled()
    w.undo_action.trigger()
    assert b.isChecked() and w.host.chain.slot("gain").bypass


# ---------------------------------------------------------------------------- 2. wheel over a drop-down
def test_the_wheel_over_a_rack_drop_down_leaves_its_value_unless_it_has_the_focus(window):
    w = window()
    combo = w.rack.strips["hpf"].controls["type"]
    before = combo.currentIndex()
    w.rack.setFocus()
    QApplication.processEvents()
    for n in (-1, 1, -1):
        wheel(combo, n)
    assert combo.currentIndex() == before and w.host.value("hpf", "type") == before
    assert not combo.hasFocus() and w.undo_stack.count() == 0
    combo.setFocus()  # clicked or tabbed to: the wheel is the user's way to change it
    QApplication.processEvents()
    if combo.hasFocus():
        wheel(combo, -1)
        assert combo.currentIndex() != before


# ---------------------------------------------------------------------------- 3. own JACK clients
DEVICES = [{"name": n, "inputs": i, "outputs": o} for n, i, o in
           (("system", 2, 2), ("PortAudio", 2, 2), ("PortAudio-01", 2, 2), ("rt-demo", 2, 0),
            ("USB Audio", 2, 2), ("PortAudio Mixer", 2, 0))]


def test_the_settings_dialog_offers_no_own_jack_client_as_a_device(monkeypatch, qtbot):
    """It listed PortAudio (the engine's own client) and rt-demo (the demo player) as devices."""
    import realtime.io.portaudio as pa

    monkeypatch.setattr(pa, "rescan", lambda: None)
    monkeypatch.setattr(pa, "release", lambda: None)
    monkeypatch.setattr(pa, "list_devices", lambda: DEVICES)
    d = gui_settings.SettingsDialog(gui_settings.EngineConfig(), "(none)")
    qtbot.addWidget(d)
    for combo in (d.input, d.output):
        items = [combo.itemText(i) for i in range(combo.count())]
        assert "system" in items and "USB Audio" in items
        assert not any(t in ("PortAudio", "PortAudio-01", "rt-demo") for t in items)


def test_the_own_client_filter_keeps_other_devices():
    assert gui_settings.device_names(DEVICES, "input") == ["system", "USB Audio", "PortAudio Mixer"]
    assert gui_settings.device_names(DEVICES, "output") == ["system", "USB Audio"]


# ---------------------------------------------------------------------------- 4. Enter in the Add box
def test_enter_on_part_of_a_name_adds_the_first_match_and_clears_the_box(window, qtbot):
    w = window()
    box = w.add_box
    slots = list(w.rack.strips)
    picked = []
    box.picked.connect(lambda k, u: picked.append(k))
    edit = box.lineEdit()
    edit.setFocus()
    QTest.keyClicks(edit, "QUAD")  # part of "biquad"
    QTest.keyClick(edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(w.rack.strips) == len(slots) + 1, timeout=5000)
    assert picked == ["biquad"] and w.host.chain.slots[-2].kind == "biquad"
    QApplication.processEvents()
    assert edit.text() == "" and box.currentIndex() == -1
    QTest.keyClicks(edit, "no such thing")  # Enter on text that names nothing adds nothing
    QTest.keyClick(edit, Qt.Key.Key_Return)
    assert picked == ["biquad"]
    edit.clear()
    QTest.keyClicks(edit, "Meter")  # a whole name (the box's own Enter takes it): added once, not twice
    QTest.keyClick(edit, Qt.Key.Key_Return)
    assert picked == ["biquad", "meter"] and edit.text() == ""


def test_enter_on_an_entry_highlighted_in_the_list_adds_that_one_alone(window, qtbot):
    """Arrow down to a suggestion, Enter: the box's own Enter added the first match and cleared the
    text, then the list added the entry at the same row of the unfiltered list too (two slots, one
    of them unasked for: "lim", Down, Enter gave delimiter and biquad)."""
    w = window()
    box = w.add_box
    picked = []
    box.picked.connect(lambda k, u: picked.append(k))
    edit = box.lineEdit()
    edit.setFocus()
    QTest.keyClicks(edit, "lim")
    popup = box.completer().popup()
    qtbot.waitUntil(popup.isVisible, timeout=5000)
    QTest.keyClick(popup, Qt.Key.Key_Down)
    QTest.keyClick(popup, Qt.Key.Key_Down)  # the second suggestion: "limiter", not the first match
    want = popup.currentIndex().data()
    assert want == "limiter"
    QTest.keyClick(popup, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: bool(picked), timeout=5000)
    w.actions.settle()
    QApplication.processEvents()
    assert picked == ["limiter"], picked
    assert w.undo_stack.count() == 1 and w.host.chain.slots[-2].kind == "limiter", texts(w.undo_stack)


def test_a_pick_clears_the_box_whoever_listens(qtbot):
    from gui.add_box import AddBox

    box = AddBox()
    qtbot.addWidget(box)
    picked = []
    box.picked.connect(lambda k, u: picked.append(k))
    i = box.findText("gain")
    box.setCurrentIndex(i)  # a pick from the list: the box shows it, then says so
    box.activated.emit(i)
    QApplication.processEvents()
    assert picked == ["gain"] and box.lineEdit().text() == "" and box.currentIndex() == -1


# ---------------------------------------------------------------------------- 5. load readouts after Stop
def test_the_slots_load_readout_goes_idle_after_stop(window, monkeypatch):
    w = window()
    w._meter_timer.stop()
    strip = w.rack.strips["limiter"]
    idle = strip.load_label.text()
    records = np.zeros((4, 64))
    records[:, strip.load_column] = 13.3
    with monkeypatch.context() as mp:
        mp.setattr(EngineHost, "running", property(lambda self: True))
        mp.setattr(EngineHost, "read_readouts", lambda self: records)
        mp.setattr(EngineHost, "read_meters", lambda self: None)
        w._poll_meters()  # (the first poll after a new rack drops what the ring held before it)
        w._poll_meters()
        assert "13.3" in strip.load_label.text()
    assert not w.host.running
    w._poll_meters()
    assert strip.load_label.text() == idle == "DSP –" and strip.load_us == 0.0


# ---------------------------------------------------------------------------- 6. move buttons, undo text
def test_move_buttons_at_the_ends_are_disabled(window):
    w = window()
    ids = list(w.rack.strips)
    first, last_movable = w.rack.strips[ids[0]], w.rack.strips[ids[-2]]
    assert not first.findChild(QToolButton, "move-1").isEnabled()
    assert first.findChild(QToolButton, "move+1").isEnabled()
    assert not last_movable.findChild(QToolButton, "move+1").isEnabled()
    assert last_movable.findChild(QToolButton, "move-1").isEnabled()
    w.move_slot(ids[0], 1)  # moved: the buttons follow the new places
    assert w.rack.strips[ids[0]].findChild(QToolButton, "move-1").isEnabled()
    assert not w.rack.strips[ids[1]].findChild(QToolButton, "move-1").isEnabled()


def test_the_undo_menu_names_the_control_by_its_label(window):
    w = window()
    knob = w.rack.strips["gain"].controls["gain_db"]
    wheel(knob, 1)
    assert w.undo_action.text() == f"Undo {knob.param.name} on gain"
    assert "gain_db" not in w.undo_action.text()
    QTest.mouseClick(w.rack.strips["gain"].bypass, L)
    assert w.undo_action.text() == "Undo Bypass on gain"
