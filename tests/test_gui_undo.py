"""Undo / redo of the panel's value changes, offscreen: the window-wide keys, one step per gesture
on one control, nothing recorded for MIDI, presets or undo itself, a preset load clearing (a slot's add,
remove or move is a step: tests/test_gui_structure_undo.py)."""
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import QPointF, Qt  # noqa: E402
from PyQt6.QtGui import QMouseEvent  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

from gui.knob import BURST_GAP_S, DRAG_PIXELS  # noqa: E402
from gui.window import FOLLOW_POLLS  # noqa: E402
from realtime.dsp.presets import load_preset  # noqa: E402

from .qt_panel import wheel  # noqa: E402

CTRL, SHIFT = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier
L, N = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton


def drag_in_steps(w, steps: int, dy: float):
    """Press, ``steps`` moves of ``dy`` pixels each, release: one gesture of many value changes."""
    c = QPointF(w.width() / 2, w.height() / 2)
    QApplication.sendEvent(w, QMouseEvent(QMouseEvent.Type.MouseButtonPress, c, w.mapToGlobal(c), L, L,
                                          Qt.KeyboardModifier.NoModifier))
    for _ in range(steps):
        c = c + QPointF(0, dy)
        QApplication.sendEvent(w, QMouseEvent(QMouseEvent.Type.MouseMove, c, w.mapToGlobal(c), N, L,
                                              Qt.KeyboardModifier.NoModifier))
    QApplication.sendEvent(w, QMouseEvent(QMouseEvent.Type.MouseButtonRelease, c, w.mapToGlobal(c), L, N,
                                          Qt.KeyboardModifier.NoModifier))


def undo(focus):
    """Ctrl+Z with the focus on ``focus``: the window-wide action takes it."""
    focus.setFocus()
    QApplication.processEvents()  # the window active: its shortcuts answer
    QTest.keyClick(focus, Qt.Key.Key_Z, CTRL)


def test_a_knob_drag_is_one_step_undone_by_ctrl_z_and_redone_by_ctrl_shift_z_or_ctrl_y(window):
    w = window()
    knob = w.rack.strips["gain"].controls["gain_db"]
    start = w.host.value("gain", "gain_db")
    drag_in_steps(knob, 5, -DRAG_PIXELS / 40)  # five value changes
    moved = knob.value()
    assert moved > start and w.undo_stack.count() == 1
    w.set_modified(False)  # as after a save: the undo must mark the preset again
    undo(knob)
    assert knob.value() == start and w.host.value("gain", "gain_db") == start
    assert w.modified and w.isWindowModified()
    assert w.undo_stack.count() == 1 and w.undo_stack.index() == 0  # the undo recorded nothing
    QTest.keyClick(knob, Qt.Key.Key_Z, CTRL | SHIFT)
    assert knob.value() == moved and w.host.value("gain", "gain_db") == moved
    QTest.keyClick(knob, Qt.Key.Key_Z, CTRL)
    QTest.keyClick(knob, Qt.Key.Key_Y, CTRL)
    assert w.host.value("gain", "gain_db") == moved and w.undo_stack.count() == 1


def test_wheel_and_arrow_bursts_merge_per_control_not_across_controls(window):
    w = window()
    gain, ceiling = w.rack.strips["gain"].controls["gain_db"], w.rack.strips["limiter"].controls["ceiling_db"]
    g0, c0 = gain.value(), ceiling.value()
    for _ in range(3):
        wheel(gain, 1)
    g1 = gain.value()
    ceiling.setFocus()
    for _ in range(4):
        QTest.keyClick(ceiling, Qt.Key.Key_Down)
    c1 = ceiling.value()
    wheel(gain, 1)  # back on gain: a step of its own
    assert w.undo_stack.count() == 3
    w.undo_stack.undo()
    assert gain.value() == g1 and ceiling.value() == c1
    w.undo_stack.undo()
    assert ceiling.value() == c0 and w.host.value("limiter", "ceiling_db") == c0
    w.undo_stack.undo()
    assert gain.value() == g0 and w.host.value("gain", "gain_db") == g0


def test_choice_bypass_and_mix_are_undone_through_their_controls(window):
    w = window()
    hpf, gain = w.rack.strips["hpf"], w.rack.strips["gain"]
    hpf.controls["type"].setCurrentIndex(1)
    QTest.mouseClick(gain.bypass, L)
    wheel(gain.mix_knob, -2)
    mix = w.host.chain.slot("gain").mix
    assert w.undo_stack.count() == 3 and mix < 1.0
    undo(gain.mix_knob)
    assert w.host.chain.slot("gain").mix == pytest.approx(1.0) and gain.mix_knob.value() == pytest.approx(100.0)
    undo(gain.mix_knob)
    assert not w.host.chain.slot("gain").bypass and not gain.bypass.isChecked()
    undo(gain.mix_knob)
    assert w.host.value("hpf", "type") == 0.0 and hpf.controls["type"].currentIndex() == 0
    w.undo_stack.redo()
    w.undo_stack.redo()
    w.undo_stack.redo()
    assert w.host.value("hpf", "type") == 1.0 and w.host.chain.slot("gain").bypass
    assert w.host.chain.slot("gain").mix == pytest.approx(mix) and w.undo_stack.count() == 3


def test_a_control_moved_back_where_it_was_leaves_no_step(window):
    w = window()
    combo = w.rack.strips["hpf"].controls["type"]
    combo.setCurrentIndex(1)
    combo.setCurrentIndex(0)
    assert w.undo_stack.count() == 0 and not w.undo_action.isEnabled()


def test_midi_controllers_presets_and_program_changes_are_not_undo_steps(window):
    p = load_preset("default")
    p["midi"] = [{"cc": 7, "channel": None, "target": "gain.gain_db"}]
    w = window(p)
    knob = w.rack.strips["gain"].controls["gain_db"]
    start = knob.value()
    wheel(knob, 1)  # a step by hand
    w.host.midi_in(0xB0, 7, 127)  # then the mapped controller
    QApplication.processEvents()
    assert knob.value() == 24.0 and w.undo_stack.count() == 1
    undo(knob)  # undoes the hand's step, not the controller's
    assert knob.value() == start and w.host.value("gain", "gain_db") == start
    # a program change from a keyboard: the panel follows the synth's "playing" readout
    w.add_slot("synth")
    (sid, pid) = w.synth_panel.target
    strip = w.rack.strips[sid]
    strip.readout_values["playing"] = 2.0
    for _ in range(FOLLOW_POLLS):
        w._follow_playing()
    assert strip.controls[pid].currentIndex() == 2 and w.undo_stack.count() == 1  # the add only
    w.instrument.setCurrentIndex(1)  # the picker is the panel's hand: a step
    assert w.undo_stack.count() == 2
    undo(w.rack.strips["gain"].controls["gain_db"])
    assert w.host.value(sid, pid) == 2.0 and w.instrument.currentIndex() == 2
    w.recall_builtin("clean")  # a preset load
    assert w.undo_stack.count() == 0


def test_a_preset_load_clears_the_stack_structural_changes_and_saving_do_not(window, tmp_path):
    w = window()
    knob = w.rack.strips["gain"].controls["gain_db"]
    start = knob.value()
    wheel(knob, 1)
    w.save_preset(str(tmp_path / "mine.json"))
    assert not w.modified and w.undo_stack.count() == 1
    undo(knob)
    assert w.host.value("gain", "gain_db") == start and w.modified
    for change in (lambda: w.add_slot("gain"), lambda: w.move_slot("gain2", -1), lambda: w.remove_slot("gain2")):
        wheel(w.rack.strips["gain"].controls["gain_db"], 1)
        count = w.undo_stack.count()
        change()
        assert w.undo_stack.count() == count + 1 and w.undo_action.isEnabled()
    wheel(w.rack.strips["gain"].controls["gain_db"], 1)
    w.load_preset_file(str(tmp_path / "mine.json"))
    assert w.undo_stack.count() == 0 and not w.undo_action.isEnabled()
    moved = w.host.value("gain", "gain_db")
    QTest.keyClick(w.rack.strips["gain"].controls["gain_db"], Qt.Key.Key_Z, CTRL)  # nothing left to undo
    assert w.host.value("gain", "gain_db") == moved and w.errors == []


def test_two_drags_of_one_knob_are_two_steps_and_a_pause_splits_wheel_bursts(window, qtbot):
    """Two drags of the same knob, one after the other, merged into one step: one Ctrl+Z took both back."""
    w = window()
    knob = w.rack.strips["gain"].controls["gain_db"]
    start = knob.value()
    drag_in_steps(knob, 3, -DRAG_PIXELS / 40)
    first = knob.value()
    drag_in_steps(knob, 3, -DRAG_PIXELS / 40)
    assert knob.value() > first > start and w.undo_stack.count() == 2
    undo(knob)
    assert knob.value() == first and w.host.value("gain", "gain_db") == first
    undo(knob)
    assert knob.value() == start
    # wheel notches in a burst are one step; after a pause the next burst is another
    mix = w.rack.strips["gain"].mix_knob
    wheel(mix, -1)
    wheel(mix, -1)
    burst = mix.value()
    qtbot.wait(int(1000 * BURST_GAP_S) + 200)
    wheel(mix, -1)
    assert w.undo_stack.count() == 2  # the redo of the drags went with the new step
    w.undo_stack.undo()
    assert mix.value() == burst
    # a wheel burst right after a drag is a step of its own too
    drag_in_steps(knob, 2, -DRAG_PIXELS / 40)
    dragged = knob.value()
    wheel(knob, 1)
    assert w.undo_stack.count() == 3
    w.undo_stack.undo()
    assert knob.value() == dragged


def test_undoing_back_to_the_saved_preset_clears_the_modified_marker(window, tmp_path):
    p = load_preset("default")
    p["midi"] = [{"cc": 7, "channel": None, "target": "limiter.ceiling_db"}]
    w = window(p)
    knob = w.rack.strips["gain"].controls["gain_db"]
    drag_in_steps(knob, 3, -DRAG_PIXELS / 40)
    assert w.modified and w.isWindowModified()
    undo(knob)  # back to the preset as loaded
    assert not w.modified and not w.isWindowModified()
    w.undo_stack.redo()
    assert w.modified and w.isWindowModified()
    w.save_preset(str(tmp_path / "mine.json"))
    assert not w.isWindowModified()
    drag_in_steps(knob, 3, -DRAG_PIXELS / 40)  # a new step after the save
    assert w.isWindowModified() and w.undo_stack.count() == 2
    undo(knob)  # back to what was saved
    assert not w.modified and not w.isWindowModified()
    undo(knob)  # before the save: modified again
    assert w.modified and w.isWindowModified()
    w.undo_stack.redo()
    assert not w.isWindowModified()
    # changes the stack does not hold keep the marker whatever is undone
    wheel(knob, 1)
    w.host.midi_in(0xB0, 7, 0)  # the mapped controller moves a knob
    QApplication.processEvents()
    undo(knob)
    assert w.modified and w.isWindowModified()
    w.load_preset_file(str(tmp_path / "mine.json"))
    assert not w.isWindowModified()
    w.add_slot("gain")  # a structural change: a step of its own
    assert w.isWindowModified() and w.undo_stack.count() == 1
    w.undo_action.trigger()  # back to what was loaded
    assert not w.isWindowModified()
