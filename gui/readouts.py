"""Readout widgets, generated from a processor's ``Readout`` descriptors like knobs from ``Param``.

``level``: a vertical bar growing upward with a scale (dB ticks when the unit is dB), the latest
value as a number under it and a held peak line; ``gr``: a gain-reduction bar growing downward
from 0 dB, with its deepest recent value held; ``number`` / ``text``: a value with its unit (or
the choice's name) in a line of text; a latch (the meter's clip) resets on a click where the
slot can clear it (``make_clearable``).

``combine`` turns the readout records of every block since the last redraw into one value per
readout: the highest for a level, the deepest for a gain reduction, the latest otherwise, so a
short peak between two redraws is never missed.
"""
from __future__ import annotations

import html
import math
import time

import numpy as np
from PyQt6.QtCore import QRectF, QSize, Qt
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import QLabel, QSizePolicy, QWidget

from gui.knob import DIM_OPACITY, fit_label
from gui.meters import draw_fitting, small_painter
from realtime.dsp.processor import Readout

HOLD_S = 1.5  # a bar's peak line stays this long, then follows the value
TICK_STEPS = (1, 2, 3, 5, 6, 10, 12, 20, 25, 50, 100)  # dB-friendly; wider ranges: 1, 2, 2.5, 5 x 10^k


def tick_text(t: float) -> str:
    """A scale label in at most ~5 characters: 384000 -> "384k", 3981.07 -> "3.98k", -12 -> "-12"."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(t) >= scale:
            return f"{t / scale:.3g}{suffix}"
    return f"{t:.3g}"


def combine(records: np.ndarray, readouts, columns) -> list[float]:
    """One value per readout from a run of readout records.

    Parameters
    ----------
    records : ndarray
        (n, width) float32, the blocks since the last redraw (``HostBase.read_readouts``).
    readouts : sequence of Readout
        The descriptors.
    columns : sequence of int
        Each readout's column in a record (-1: not carried; gives NaN).

    Returns
    -------
    list of float
        Max over the blocks for ``level``, min for ``gr``, the last block's value otherwise.
    """
    out = []
    for r, col in zip(readouts, columns):
        if col < 0 or col >= records.shape[1]:
            out.append(math.nan)
        elif r.kind == "level":
            out.append(float(records[:, col].max()))
        elif r.kind == "gr":
            out.append(float(records[:, col].min()))
        else:
            out.append(float(records[-1, col]))
    return out


class ReadoutBar(QWidget):
    """A bar meter for a ``level`` or ``gr`` readout: scale, held peak and the value as text."""

    def __init__(self, readout: Readout, parent=None):
        super().__init__(parent)
        self.readout = readout
        self.value = readout.min if readout.kind == "level" else 0.0
        self.held = self.value
        self._held_t = 0.0
        self.dimmed = False  # drawn faded: its slot is bypassed
        self.setObjectName(f"readout:{readout.id}")
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)
        grows = "downward from 0" if readout.kind == "gr" else "upward"
        self.setToolTip(f"{readout.name} ({readout.unit or 'value'}; {readout.min:g} … {readout.max:g}, grows "
                        f"{grows}; line: held peak)")

    def sizeHint(self) -> QSize:
        return QSize(44, 120)

    def minimumSizeHint(self) -> QSize:
        return QSize(44, 70)

    def set_value(self, v: float, now: float | None = None) -> None:
        """Show a new value (NaN: nothing came) and move the held peak."""
        if not math.isfinite(v):
            return
        now = time.monotonic() if now is None else now
        self.value = v
        deeper = v >= self.held if self.readout.kind == "level" else v <= self.held
        if deeper or now - self._held_t > HOLD_S:
            self.held, self._held_t = v, now
        self.update()

    def fall(self, now: float | None = None) -> None:
        """Nothing comes (the engine is stopped): the bar drops to rest (a level to its bottom, a gain
        reduction to 0), its held line after HOLD_S; idle once there."""
        rest = self.readout.min if self.readout.kind == "level" else 0.0
        if self.value != rest or self.held != rest:
            self.set_value(rest, now)

    def text(self) -> str:
        return self.readout.format(self.value)

    def set_dimmed(self, on: bool) -> None:
        if on != self.dimmed:
            self.dimmed = on
            self.update()

    def _frac(self, v: float) -> float:
        r = self.readout
        if r.kind == "gr":  # 0 at the top, r.min at the bottom
            return min(1.0, max(0.0, v / r.min)) if r.min < 0 else 0.0
        return min(1.0, max(0.0, (v - r.min) / (r.max - r.min)))

    def _ticks(self) -> list[float]:
        r = self.readout
        span = r.max - r.min
        if not 0 < span < math.inf:  # (±1e308: the span overflows, and a tick painted raised in paintEvent)
            return [r.min] if math.isfinite(r.min) else []
        step = next((s for s in TICK_STEPS if span / s <= 4), None)
        if step is None:  # a round step (0, 100k, 200k, 300k for 0..384000 Hz), not span / 4
            mag = 10.0 ** math.floor(math.log10(span / 4))
            step = next(m * mag for m in (1, 2, 2.5, 5, 10) if span / (m * mag) <= 4)
        first = math.ceil(r.min / step) * step
        return [first + k * step for k in range(int((r.max - first) / step) + 1)]

    def paintEvent(self, e):
        p, small = small_painter(self)
        if self.dimmed:
            p.setOpacity(DIM_OPACITY)
        w, h = self.width(), self.height()
        text = self.palette().windowText().color()
        p.drawText(QRectF(0, 0, w, 12), Qt.AlignmentFlag.AlignCenter, fit_label(p, small, self.readout.name, w))
        p.setFont(small)
        top, bottom = 14.0, h - 14.0
        height = bottom - top
        bx, bw = 1.0, 10.0
        p.fillRect(QRectF(bx, top, bw, height), QColor("#1c1f24"))
        f = self._frac(self.value)
        if self.readout.kind == "gr":
            p.fillRect(QRectF(bx, top, bw, f * height), QColor("#e0903a"))
            yh = top + self._frac(self.held) * height
        else:
            p.fillRect(QRectF(bx, bottom - f * height, bw, f * height), QColor("#3fbf6a"))
            yh = bottom - self._frac(self.held) * height
        p.fillRect(QRectF(bx, yh - 1, bw, 2), QColor("#ffffff"))
        p.setPen(QColor("#8a9098"))
        drawn: list[QRectF] = []
        for t in self._ticks():
            y = (top + self._frac(t) * height) if self.readout.kind == "gr" else (bottom - self._frac(t) * height)
            p.drawLine(int(bx + bw), int(y), int(bx + bw + 3), int(y))
            draw_fitting(p, QRectF(bx + bw + 4, y - 6, w - bw - 6, 12), Qt.AlignmentFlag.AlignVCenter, tick_text(t),
                         drawn)
        p.setPen(text)
        p.drawText(QRectF(0, h - 12, w, 12), Qt.AlignmentFlag.AlignCenter, self.text())
        p.end()


class ReadoutText(QLabel):
    """A ``number`` or ``text`` readout: "Name value unit"."""

    def __init__(self, readout: Readout, parent=None):
        super().__init__(parent)
        self.readout = readout
        self.value = math.nan
        self.setObjectName(f"readout:{readout.id}")
        self.setToolTip(readout.name)
        self.clearable = False
        self._on_click = None
        self.set_value(0.0)

    def make_clearable(self, on_click) -> None:
        """A latch (the meter's clip): a click calls ``on_click``, which clears it in the engine."""
        self.clearable, self._on_click = True, on_click
        self.setToolTip(f"{self.readout.name} (latched: click to reset)")
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def mousePressEvent(self, e):
        if self._on_click is not None and e.button() == Qt.MouseButton.LeftButton:
            self._on_click()
        else:
            super().mousePressEvent(e)

    def set_value(self, v: float, now: float | None = None) -> None:
        if math.isfinite(v):
            self.value = v
        # (escaped: a plugin's "L<R" or a choice named "<none>" read as a tag and vanished)
        self.setText(f"{html.escape(self.readout.name)} <b>{html.escape(self.readout.format(self.value))}</b>")


def readout_widget(readout: Readout) -> QWidget:
    """The widget that shows one readout (a bar for level and gr, a line of text otherwise)."""
    return ReadoutBar(readout) if readout.kind in ("level", "gr") else ReadoutText(readout)
