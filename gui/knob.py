"""A rotary knob for one parameter descriptor (realtime.dsp.processor.Param).

Value and unit drawn under the dial; double-click resets to the default; drag (vertical) and the
mouse wheel move it, Shift (or Ctrl) for 10x finer control; keyboard: arrows step, Page Up/Down
step 10x, Home/End jump to the ends. Right-click: MIDI learn / forget / reset. The knob moves
along the descriptor's taper (lin/log), so its 0..1 position is what a MIDI controller sets.
``gestureEnded`` says where one hand movement ends (a drag's release; a pause of BURST_GAP_S in
wheel notches or arrow keys; a reset), so an undo step holds one gesture, not every move in a row.
"""
from __future__ import annotations

import math
import time

from PyQt6.QtCore import QPointF, QRectF, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QAction, QColor, QFont, QFontMetrics, QPainter, QPen
from PyQt6.QtWidgets import QMenu, QSizePolicy, QWidget

from realtime.dsp.processor import Param

DRAG_PIXELS = 200.0  # full range per this many pixels of drag
WHEEL_STEP = 0.01  # of the range per wheel notch / arrow key
FINE = 0.1  # factor with Shift or Ctrl
BURST_GAP_S = 0.8  # wheel notches / key steps further apart are separate gestures (a held key repeats after ~0.5 s)
ARC_START, ARC_SPAN = 225.0, -270.0  # degrees, Qt convention (0 = 3 o'clock, counter-clockwise)


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
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setMinimumSize(self.sizeHint())  # a squeezed rack scrolls; knobs never shrink
        self.setObjectName(f"knob:{param.id}")
        self.setToolTip(f"{param.name}: {param.format(param.min)} … {param.format(param.max)}"
                        f" (default {param.format(param.default)})\n"
                        "Drag or wheel (Shift: fine) · arrows · double-click: default · right-click: MIDI learn")
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
        self._set(self.param.from_unit(self._u), emit)

    def _set(self, v: float, emit: bool) -> None:
        changed = v != self._value
        self._value = v
        self.update()
        if changed and emit:
            self.valueChanged.emit(v)

    def _end_gesture(self) -> None:
        self._burst_at = None
        self.gestureEnded.emit()

    def _burst_step(self) -> None:
        """A wheel notch or key step: after a pause the previous burst was a gesture of its own."""
        now = time.monotonic()
        if self._burst_at is not None and now - self._burst_at > BURST_GAP_S:
            self._end_gesture()
        self._burst_at = now

    def _reset(self) -> None:
        """Back to the default: a gesture of its own."""
        self._end_gesture()
        self.setValue(self.param.default)
        self._end_gesture()

    def _step(self, notches: float, fine: bool) -> None:
        self._burst_step()
        p = self.param
        if p.step:  # one step per notch, whatever the modifier
            self.setValue(self._value + math.copysign(p.step, notches) * max(1, round(abs(notches))))
            return
        self.setUnit(p.to_unit(self._value) + notches * WHEEL_STEP * (FINE if fine else 1.0))

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
        dy = e.angleDelta().y()
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
        else:
            super().keyPressEvent(e)

    def contextMenuEvent(self, e):
        menu = self.context_menu()
        menu.exec(e.globalPos())

    def context_menu(self) -> QMenu:
        menu = QMenu(self)
        add_learn_actions(menu, self)
        reset = QAction(f"Reset to {self.param.format(self.param.default)}", menu)
        reset.triggered.connect(self._reset)
        menu.addAction(reset)
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
