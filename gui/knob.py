"""A rotary knob for one parameter descriptor (realtime.dsp.processor.Param).

Value and unit drawn under the dial; double-click resets to the default; drag (vertical) and the
mouse wheel move it (with natural scrolling as Qt's own dials: following the fingers; a sideways swipe
goes on to the rack, which scrolls sideways), Shift (or Ctrl) for 10x finer control; keyboard: arrows step, Page Up/Down
step 10x, Home/End jump to the ends, Enter types a value. Right-click: MIDI learn / forget, type a
value, reset to the default or to the preset's value. The knob moves along the descriptor's taper
(lin/log), so its 0..1 position is what a MIDI controller sets. ``gestureEnded`` says where one
hand movement ends (a drag's release; a pause of BURST_GAP_S in wheel notches or arrow keys; a
reset; a typed value), so an undo step holds one gesture, not every move in a row.

A typed value (``parse_entry``) is a number with or without the parameter's unit, its larger unit
or a "k" ("-6", "-6 dB", "1k", "1.5 kHz", "2 s" on a ms knob), or a choice's name; clamped to the
range. Text that is none of these changes nothing and says why in the entry's tooltip.
"""
from __future__ import annotations

import math
import re
import time

from PyQt6.QtCore import QEvent, QPoint, QPointF, QRectF, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QAction, QColor, QFont, QFontMetrics, QPainter, QPen
from PyQt6.QtWidgets import QLineEdit, QMenu, QSizePolicy, QToolTip, QWidget

from realtime.dsp.processor import LARGER_UNITS, Param

DRAG_PIXELS = 200.0  # full range per this many pixels of drag
WHEEL_STEP = 0.01  # of the range per wheel notch / arrow key
FINE = 0.1  # factor with Shift or Ctrl
BURST_GAP_S = 0.8  # wheel notches / key steps further apart are separate gestures (a held key repeats after ~0.5 s)
ARC_START, ARC_SPAN = 225.0, -270.0  # degrees, Qt convention (0 = 3 o'clock, counter-clockwise)
DIM_OPACITY = 0.35  # a bypassed slot's controls: drawn faded, still usable
_ENTRY = re.compile(r"\s*([+-]?(?:inf|\d+(?:[.,]\d*)?(?:e[+-]?\d+)?|[.,]\d+(?:e[+-]?\d+)?))\s*(.*?)\s*$",
                    re.IGNORECASE)
_ENTER_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter)


def fine_modifier(mods) -> bool:
    return bool(mods & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier))


def fit_label(painter: QPainter, font: QFont, text: str, width: float) -> str:
    """``text`` in ``font`` shrunk (down to 80 %) to fit ``width``, elided beyond that; sets the painter's
    font. Long names ("Noise/harmonic") never spill into the next knob."""
    f = QFont(font)
    for _ in range(4):
        if QFontMetrics(f).horizontalAdvance(text) <= width or f.pointSizeF() <= font.pointSizeF() * 0.8:
            break
        f.setPointSizeF(f.pointSizeF() * 0.93)
    painter.setFont(f)
    return QFontMetrics(f).elidedText(text, Qt.TextElideMode.ElideRight, int(width))


def _unit_factor(param: Param, suffix: str) -> float | None:
    """What a number typed with ``suffix`` after it is multiplied by in ``param``'s unit (None: a
    suffix that is no unit of it). Case and spaces do not count ("1.5khz", "250 MS")."""
    s = suffix.replace(" ", "").lower()
    unit = param.unit.replace(" ", "").lower()
    bigger = LARGER_UNITS.get(param.unit, "").lower()
    if s in ("", unit):
        return 1.0
    if (bigger and s == bigger) or (s.startswith("k") and s[1:] in ("", unit)):
        return 1000.0  # "1.5 kHz", "2 s" on a ms knob, "1k" (as format writes a thousand of a unit)
    return None


def _tidy(param: Param, v: float) -> float:
    """``v``, the value at a knob position, without the float noise of the way there: 12 digits of the
    span on a linear knob (0 is 0), 12 significant digits on a log one. Up a step and down again read
    "-0.00000000000000711 dB" at 0 dB, and left an undo step and the unsaved marker for no change."""
    span = param.max - param.min
    if param.step or not span > 0:
        return v
    v = float(f"{v:.12g}") if param.scale == "log" else round(v, 12 - math.ceil(math.log10(span))) + 0.0  # (no -0)
    return min(param.max, max(param.min, v))


def parse_entry(param: Param, text: str) -> float:
    """The value ``text`` (what a user typed) means for ``param``, clamped to its range and rounded
    to its step; a choice by its name (any case) or index.

    Raises
    ------
    ValueError
        A short message for the user: the text is no value of ``param``.
    """
    t = text.strip().replace("\u2212", "-")  # a typographic minus, as pasted from elsewhere
    if param.choices:
        names = [c.lower() for c in param.choices]
        if t.lower() in names:
            return float(names.index(t.lower()))
    m = _ENTRY.fullmatch(t)
    factor = _unit_factor(param, m.group(2)) if m else None
    if factor is None:
        example = f"one of {', '.join(param.choices)}" if param.choices else f"e.g. {param.format(param.default)}"
        raise ValueError(f"{t!r} is not a {param.name} value ({example})")
    v = float(m.group(1).replace(",", ".")) * factor
    return param.validate(min(param.max, max(param.min, v)))


class ValueEditor(QLineEdit):
    """A knob's inline entry: Enter applies, Escape cancels, leaving it (the focus goes elsewhere)
    applies. ``done`` says which ("enter", "escape", "left"); the knob closes it."""

    done = pyqtSignal(str)

    def event(self, e):
        # Enter and Escape are the entry's own, not a window shortcut's
        if e.type() == QEvent.Type.ShortcutOverride and e.key() in (*_ENTER_KEYS, Qt.Key.Key_Escape):
            e.accept()
            return True
        return super().event(e)

    def keyPressEvent(self, e):
        if e.key() in _ENTER_KEYS:
            self.done.emit("enter")
        elif e.key() == Qt.Key.Key_Escape:
            self.done.emit("escape")
        else:
            super().keyPressEvent(e)

    def focusOutEvent(self, e):
        super().focusOutEvent(e)
        if e.reason() != Qt.FocusReason.PopupFocusReason:  # its own context menu keeps it open
            self.done.emit("left")


def add_learn_actions(menu: QMenu, control) -> None:
    """MIDI learn (or cancel it) and forget the mapping, for a control with ``learning``,
    ``mapping`` and the signals ``learnRequested`` / ``forgetRequested`` (a Knob, a rack.MidiTag)."""
    learn = QAction("Cancel MIDI learn" if control.learning else "MIDI learn", menu)
    learn.triggered.connect(control.learnRequested.emit)
    menu.addAction(learn)
    forget = QAction(f"Forget {control.mapping}" if control.mapping else "Forget MIDI mapping", menu)
    forget.setEnabled(bool(control.mapping))
    forget.triggered.connect(control.forgetRequested.emit)
    menu.addAction(forget)


class Knob(QWidget):
    valueChanged = pyqtSignal(float)  # in parameter units; only for changes (user or setValue)
    learnRequested = pyqtSignal()
    forgetRequested = pyqtSignal()
    gestureEnded = pyqtSignal()  # the changes since the last one were one gesture (an undo step)

    def __init__(self, param: Param, value: float | None = None, label: str | None = None, parent=None):
        super().__init__(parent)
        self.param = param
        self.label = label or param.name
        self._value = param.default if value is None else param.validate(value)
        self._u = param.to_unit(self._value)  # unquantised position while dragging a stepped knob
        self._drag_y: float | None = None
        self._wheel_acc = 0  # wheel angle (1/8 degree) short of a whole notch, for stepped knobs
        self._burst_at: float | None = None  # the last wheel / key step of a burst still open (monotonic)
        self.learning = False
        self.mapping = ""  # e.g. "CC 74", drawn small when a controller is mapped
        self.preset_value: float | None = None  # the value the preset loaded or saved last holds (None: unknown)
        self.dimmed = False  # drawn faded: its slot is bypassed
        self.editor: ValueEditor | None = None  # the typed-value entry while it is open
        self._entry_text = ""  # the text the entry opened with (or followed the knob to): unedited, it changes nothing
        self.entry_error = ""  # why the last typed text was no value (shown in a tooltip)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setMinimumSize(self.sizeHint())  # a squeezed rack scrolls; knobs never shrink
        self.setObjectName(f"knob:{param.id}")
        self.setToolTip(f"{param.name}: {param.format(param.min)} … {param.format(param.max)}"
                        f" (default {param.format(param.default)})\n"
                        "Drag or wheel (Shift: fine) · arrows · Enter: type a value · double-click: default"
                        " · right-click: MIDI learn")
        self.setAccessibleName(param.name)

    # ---------------------------------------------------------------- value
    def value(self) -> float:
        return self._value

    def text(self) -> str:
        return self.param.format(self._value)

    def setValue(self, value: float, emit: bool = True) -> None:
        p = self.param
        v = p.validate(min(p.max, max(p.min, float(value))))
        self._u = p.to_unit(v)
        self._set(v, emit)

    def setUnit(self, u: float, emit: bool = True) -> None:
        """Set from a 0..1 position along the taper (drag, wheel, MIDI)."""
        self._u = min(1.0, max(0.0, u))
        self._set(_tidy(self.param, self.param.from_unit(self._u)), emit)

    def _set(self, v: float, emit: bool) -> None:
        changed = v != self._value
        self._value = v
        self.update()
        if changed:
            self._follow_entry()
        if changed and emit:
            self.valueChanged.emit(v)

    def _follow_entry(self) -> None:
        """The knob moved while its entry is open (an undo, a MIDI controller, the wheel): an entry
        still holding the text it opened with shows the new value (Enter then keeps it)."""
        ed = self.editor
        if ed is not None and ed.text() == self._entry_text:
            self._entry_text = self.text()
            ed.setText(self._entry_text)
            ed.selectAll()

    def _end_gesture(self) -> None:
        self._burst_at = None
        self.gestureEnded.emit()

    def _burst_step(self) -> None:
        """A wheel notch or key step: after a pause the previous burst was a gesture of its own."""
        now = time.monotonic()
        if self._burst_at is not None and now - self._burst_at > BURST_GAP_S:
            self._end_gesture()
        self._burst_at = now

    def _jump(self, value: float) -> None:
        """To ``value`` at once (a reset, a typed value): a gesture of its own, one undo step."""
        self._end_gesture()
        self.setValue(value)
        self._end_gesture()

    def _reset(self) -> None:
        self._jump(self.param.default)

    def set_dimmed(self, on: bool) -> None:
        if on != self.dimmed:
            self.dimmed = on
            self.update()

    # ---------------------------------------------------------------- typed value
    def edit_value(self) -> None:
        """Open the entry over the value text, holding the value as shown, selected."""
        if self.editor is not None:
            return
        ed = ValueEditor(self)
        ed.setObjectName("value-entry")
        ed.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._entry_text = self.text()
        ed.setText(self._entry_text)
        ed.setGeometry(0, self.height() - 26, self.width(), 24)
        ed.selectAll()
        ed.done.connect(self._entry_done)
        self.editor = ed
        ed.show()
        ed.setFocus(Qt.FocusReason.OtherFocusReason)

    def _entry_done(self, how: str) -> None:
        ed = self.editor
        if ed is None:
            return
        text = ed.text()
        value = self._value
        # untouched (the text it opened with): the shown, rounded value must not replace the value, nor
        # an older one the knob has left since
        if how != "escape" and text.strip() != self._entry_text:
            try:
                value = parse_entry(self.param, text)
            except ValueError as err:
                self.entry_error = str(err)
                if how == "enter":  # the entry stays open to put it right (or Escape)
                    ed.setToolTip(self.entry_error)
                    ed.setStyleSheet("border: 1px solid #d04040")
                    ed.selectAll()
                    QToolTip.showText(ed.mapToGlobal(QPoint(0, ed.height())), self.entry_error, ed)
                    return
                self._close_editor(False)  # focus went elsewhere: nothing changes, and it says why
                QToolTip.showText(self.mapToGlobal(QPoint(0, self.height())), self.entry_error, self)
                return
        self.entry_error = ""
        self._close_editor(how != "left")
        if value != self._value:
            self._jump(value)

    def close_entry(self, apply: bool) -> None:
        """Close an open entry before the chain changes under it: its text applied (as leaving it
        does; a step of its own) or dropped. Left open, the focus leaving it as the rack is disabled
        or rebuilt applied it in the middle of that change."""
        if self.editor is None:
            return
        if apply:
            self._entry_done("left")
        else:
            self._close_editor(False)

    def _close_editor(self, refocus: bool) -> None:
        ed, self.editor = self.editor, None
        ed.done.disconnect()
        if refocus:  # Enter or Escape: the keys go on to the knob
            self.setFocus(Qt.FocusReason.OtherFocusReason)
        ed.hide()
        ed.deleteLater()

    def _step(self, notches: float, fine: bool) -> None:
        self._burst_step()
        p = self.param
        if p.step:  # one step per notch, whatever the modifier
            self.setValue(self._value + math.copysign(p.step, notches) * max(1, round(abs(notches))))
            return
        self.setUnit(self._u + notches * WHEEL_STEP * (FINE if fine else 1.0))  # (the value is rounded: not from it)

    # ---------------------------------------------------------------- input
    def mousePressEvent(self, e):
        if e.button() == Qt.MouseButton.LeftButton:
            self._end_gesture()  # a drag is a new gesture, whatever moved the knob just before
            self._drag_y = e.position().y()
            self._u = self.param.to_unit(self._value)
            e.accept()

    def mouseMoveEvent(self, e):
        if self._drag_y is None:
            return
        y = e.position().y()
        du = (self._drag_y - y) / DRAG_PIXELS * (FINE if fine_modifier(e.modifiers()) else 1.0)
        self._drag_y = y
        self.setUnit(self._u + du)

    def mouseReleaseEvent(self, e):
        if self._drag_y is not None:
            self._drag_y = None
            self._end_gesture()

    def mouseDoubleClickEvent(self, e):
        self._reset()

    def wheelEvent(self, e):
        d = e.angleDelta()
        if abs(d.x()) > abs(d.y()):  # a sideways swipe: the rack's (it scrolls sideways), not a turn
            e.ignore()
            return
        # natural scrolling reports the wheel turned back (inverted): the knob follows the fingers, as Qt's dials do
        dy = -d.y() if e.inverted() else d.y()
        if self.param.step:
            # a step per whole notch (120): high-resolution wheels and touchpads send a notch in
            # parts, and each part would move a whole step
            if self._wheel_acc * dy < 0:  # turned back: the part scrolled the other way is dropped
                self._wheel_acc = 0
            self._wheel_acc += dy
            notches = int(self._wheel_acc / 120)  # toward zero
            self._wheel_acc -= notches * 120
        else:
            notches = dy / 120.0  # a part of a notch moves that part of a notch's way
        if notches:
            self._step(notches, fine_modifier(e.modifiers()))
        e.accept()

    def keyPressEvent(self, e):
        k, fine = e.key(), fine_modifier(e.modifiers())
        if k in (Qt.Key.Key_Up, Qt.Key.Key_Right):
            self._step(1, fine)
        elif k in (Qt.Key.Key_Down, Qt.Key.Key_Left):
            self._step(-1, fine)
        elif k == Qt.Key.Key_PageUp:
            self._step(10, False)
        elif k == Qt.Key.Key_PageDown:
            self._step(-10, False)
        elif k == Qt.Key.Key_Home:
            self._burst_step()
            self.setValue(self.param.min)
        elif k == Qt.Key.Key_End:
            self._burst_step()
            self.setValue(self.param.max)
        elif k in _ENTER_KEYS:
            self.edit_value()
        else:
            super().keyPressEvent(e)

    def contextMenuEvent(self, e):
        menu = self.context_menu()
        menu.exec(e.globalPos())

    def context_menu(self) -> QMenu:
        menu = QMenu(self)
        add_learn_actions(menu, self)
        menu.addSeparator()
        typed = QAction("Type a value…", menu)
        typed.triggered.connect(self.edit_value)
        menu.addAction(typed)
        p = self.param
        reset = QAction(f"Reset to default ({p.format(p.default)})", menu)
        reset.triggered.connect(self._reset)
        menu.addAction(reset)
        v = self.preset_value
        if v is not None and v != p.default and p.format(v) != p.format(p.default):
            to_preset = QAction(f"Reset to preset ({p.format(v)})", menu)
            to_preset.triggered.connect(lambda: self._jump(v))
            menu.addAction(to_preset)
        return menu

    # ---------------------------------------------------------------- drawing
    def sizeHint(self) -> QSize:
        return QSize(74, 92)

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def paintEvent(self, e):
        pal = self.palette()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.dimmed:
            p.setOpacity(DIM_OPACITY)
        w, h = self.width(), self.height()
        small = QFont(self.font())
        small.setPointSizeF(max(6.5, small.pointSizeF() * 0.85))
        p.setFont(small)
        text = pal.windowText().color()
        p.setPen(text)
        p.drawText(QRectF(0, 0, w, 16), Qt.AlignmentFlag.AlignCenter, fit_label(p, small, self.label, w - 2))
        p.setFont(small)
        d = min(w - 16, h - 40)
        dial = QRectF((w - d) / 2, 18, d, d)
        accent = QColor("#e0a030") if self.learning else pal.highlight().color()
        track = QColor(pal.mid().color())
        p.setPen(QPen(track, 4, cap=Qt.PenCapStyle.RoundCap))
        p.drawArc(dial, int(ARC_START * 16), int(ARC_SPAN * 16))
        u = self.param.to_unit(self._value)
        # bipolar ranges (e.g. -24..+24 dB) fill from the centre, others from the start
        origin = self.param.to_unit(0.0) if self.param.min < 0 < self.param.max and self.param.scale == "lin" else 0.0
        a0 = ARC_START + ARC_SPAN * origin
        p.setPen(QPen(accent, 4, cap=Qt.PenCapStyle.RoundCap))
        p.drawArc(dial, int(a0 * 16), int(ARC_SPAN * (u - origin) * 16))
        # body and pointer
        body = dial.adjusted(7, 7, -7, -7)
        p.setPen(QPen(pal.dark().color(), 1))
        p.setBrush(pal.button().color())
        p.drawEllipse(body)
        ang = math.radians(ARC_START + ARC_SPAN * u)
        c, r = body.center(), body.width() / 2 - 3
        p.setPen(QPen(text, 2, cap=Qt.PenCapStyle.RoundCap))
        p.drawLine(c + QPointF(0.35 * r * math.cos(ang), -0.35 * r * math.sin(ang)),
                   c + QPointF(r * math.cos(ang), -r * math.sin(ang)))
        if self.hasFocus():
            p.setPen(QPen(accent, 1, Qt.PenStyle.DotLine))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRoundedRect(QRectF(1, 1, w - 2, h - 2), 4, 4)
        p.setPen(text)
        p.drawText(QRectF(0, h - 22, w, 14), Qt.AlignmentFlag.AlignCenter, self.text())
        if self.mapping or self.learning:
            p.setPen(accent)
            p.drawText(QRectF(0, h - 10, w, 10), Qt.AlignmentFlag.AlignCenter,
                       "learn…" if self.learning else self.mapping)
        p.end()
