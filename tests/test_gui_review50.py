"""The knob under a user's hands, offscreen: a step up and back down is where it was (no float noise
shown, no undo step, no unsaved marker), natural scrolling turns it the way Qt's own dial turns, and a
sideways swipe over it scrolls the rack instead of being swallowed."""
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PyQt6.QtGui import QMouseEvent, QWheelEvent  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication, QDial  # noqa: E402

from gui.knob import Knob  # noqa: E402
from realtime.dsp.processor import Param  # noqa: E402

GAIN = Param("gain_db", "Gain", -60.0, 24.0, 0.0, unit="dB")
BIPOLAR = Param("gain_db", "Gain", -24.0, 24.0, 0.0, unit="dB")
FREQ = Param("freq_hz", "Frequency", 20.0, 20000.0, 40.0, unit="Hz", scale="log")
VOICES = Param("voices", "Voices", 1, 16, 8, step=1)
L, N = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
NONE = Qt.KeyboardModifier.NoModifier


def wheel_event(w, dx: int, dy: int, inverted: bool = False, pos: QPointF | None = None) -> QWheelEvent:
    pos = QPointF(w.width() / 2, w.height() / 2) if pos is None else pos
    return QWheelEvent(pos, w.mapToGlobal(pos), QPoint(), QPoint(dx, dy), N, NONE, Qt.ScrollPhase.NoScrollPhase,
                       inverted)


def wheel_as_qt_delivers(w, dx: int, dy: int):
    """A wheel event from the window system over ``w``: ``w`` first, then, while it is not accepted,
    each widget under it (QApplication passes a spontaneous wheel event on so; one sent by a test, not)."""
    pos = QPointF(w.width() / 2, w.height() / 2)
    while w is not None:
        ev = wheel_event(w, dx, dy, pos=pos)
        QApplication.sendEvent(w, ev)
        if ev.isAccepted():
            return w
        pos = w.mapToParent(pos)
        w = None if w.isWindow() else w.parentWidget()
    return None


def drag_moves(w, dys):
    c = QPointF(w.width() / 2, w.height() / 2)
    QApplication.sendEvent(w, QMouseEvent(QMouseEvent.Type.MouseButtonPress, c, w.mapToGlobal(c), L, L, NONE))
    for dy in dys:
        c = c + QPointF(0, dy)
        QApplication.sendEvent(w, QMouseEvent(QMouseEvent.Type.MouseMove, c, w.mapToGlobal(c), N, L, NONE))
    QApplication.sendEvent(w, QMouseEvent(QMouseEvent.Type.MouseButtonRelease, c, w.mapToGlobal(c), L, N, NONE))


# ---------------------------------------------------------------------------- 1. there and back
UP, DOWN, PAGE_UP = Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_PageUp


@pytest.mark.parametrize("param, start, keys", [
    (GAIN, 0.0, (PAGE_UP,) + (DOWN,) * 10),  # was 4.2e-16: "0.000000000000000416 dB"
    (BIPOLAR, 0.0, (PAGE_UP,) + (DOWN,) * 10),
    (FREQ, 40.0, (DOWN,) * 3 + (UP,) * 3),  # was 40.00000000000001
    (FREQ, 300.0, (UP, DOWN)),  # was 300.00000000000006
    (GAIN, -6.0, (UP, DOWN)),
])
def test_keys_up_and_back_down_leave_the_knob_exactly_where_it_was(qtbot, param, start, keys):
    k = Knob(param, start)
    qtbot.addWidget(k)
    k.show()
    for key in keys:
        QTest.keyClick(k, key)
    assert k.value() == start
    assert k.text() == param.format(start)


def test_a_drag_away_and_back_to_the_same_pixel_reads_zero_not_float_noise(qtbot):
    k = Knob(BIPOLAR, 0.0)
    qtbot.addWidget(k)
    k.show()
    drag_moves(k, [2, 3, 3, -8])  # down 8 px, back up to the pixel it started from
    assert k.value() == 0.0 and k.text() == "0 dB"  # was -3.55e-15: "-0.00000000000000355 dB"


def test_a_step_up_and_back_leaves_no_undo_step_and_no_unsaved_marker(window):
    w = window()
    for slot, pid in (("hpf", "freq_hz"), ("gain", "gain_db"), ("hpf", "q")):
        knob = w.rack.strips[slot].controls[pid]
        before = w.host.value(slot, pid)
        knob.setFocus()
        QTest.keyClick(knob, Qt.Key.Key_Up)
        assert w.host.value(slot, pid) != before
        QTest.keyClick(knob, Qt.Key.Key_Down)
        assert w.host.value(slot, pid) == before
        assert w.undo_stack.count() == 0, f"{slot}.{pid}"  # a step that changes nothing was left
        assert not w.modified and not w.isWindowModified()


# ---------------------------------------------------------------------------- 2. natural scrolling
@pytest.mark.parametrize("param, start", [(GAIN, 0.0), (VOICES, 8)])
def test_natural_scrolling_turns_a_knob_the_way_qts_own_dial_turns(qtbot, param, start):
    dial, knob = QDial(), Knob(param, start)
    dial.setRange(0, 100)
    dial.setValue(50)
    for x in (dial, knob):
        qtbot.addWidget(x)
        x.show()
    for inverted, dy in ((True, -120), (True, 120), (False, 120)):
        d0, k0 = dial.value(), knob.value()
        QApplication.sendEvent(dial, wheel_event(dial, 0, dy, inverted))
        QApplication.sendEvent(knob, wheel_event(knob, 0, dy, inverted))
        assert (dial.value() > d0) == (knob.value() > k0) and knob.value() != k0, (inverted, dy)


# ---------------------------------------------------------------------------- 3. a sideways swipe
def test_a_sideways_swipe_over_a_knob_scrolls_the_rack_and_leaves_the_knob(window):
    w = window("master")
    w.resize(500, 600)
    QApplication.processEvents()
    bar = w.rack.horizontalScrollBar()
    assert bar.maximum() > 0 and bar.value() == 0  # the rack is wider than the window
    knob = next(iter(w.rack.strips.values())).knobs()[0]
    before = knob.value()
    taker = wheel_as_qt_delivers(knob, -120, 0)  # fingers to the left: the view moves on to the right
    assert knob.value() == before and w.undo_stack.count() == 0
    assert bar.value() > 0 and taker is not knob  # was taken (and dropped) by the knob: the rack stood still
    # the wheel turned up and down over it still turns the knob, and only it
    assert wheel_as_qt_delivers(knob, 0, 120) is knob and knob.value() != before
