"""Stereo level meter: RMS bar, peak line with a 1.5 s hold, a dBFS scale, the highest peak per
channel as a number, and a latching clip light (a click clears the clip lights and the numbers)."""
from __future__ import annotations

import math
import time

from PyQt6.QtCore import QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QFont, QPainter
from PyQt6.QtWidgets import QSizePolicy, QWidget

FLOOR_DB = -60.0
HOLD_S = 1.5
FALL_DB_S = 24.0  # displayed peak falls this fast once the hold ran out
WIDTH = 66
SCALE_DB = (0, -6, -12, -24, -36, -48)
SILENCE = (0.0, 0.0)
CLIP_LIN = 0.999  # 1 - 2**-10: the safety stage's ceiling is just below 1, a clip is "at full scale"


def small_painter(widget: QWidget) -> tuple[QPainter, QFont]:
    """A painter on ``widget`` with a small version of its font, pen in the text colour (meter scales)."""
    p = QPainter(widget)
    small = QFont(widget.font())
    small.setPointSizeF(max(6.0, small.pointSizeF() * 0.75))
    p.setFont(small)
    p.setPen(widget.palette().windowText().color())
    return p, small


def draw_fitting(p: QPainter, rect: QRectF, flags, text: str, drawn: list[QRectF]) -> bool:
    """Draw a scale label only where it fits ``rect`` whole (never cut mid-number) and clears the
    labels in ``drawn`` (those drawn before it; it is added): a short or narrow widget drops some."""
    box = p.boundingRect(rect, flags, text)
    cut = box.width() > rect.width() + 0.5 or box.height() > rect.height() + 0.5
    if cut or any(box.adjusted(-1, -1, 1, 1).intersects(d) for d in drawn):  # (1 px apart at least)
        return False
    p.drawText(rect, flags, text)
    drawn.append(box)
    return True


def to_db(lin: float) -> float:
    return 20.0 * math.log10(lin) if lin > 1e-6 else -120.0


class LevelMeter(QWidget):
    def __init__(self, title: str, parent=None):
        super().__init__(parent)
        self.title = title
        self.peak_db = [-120.0, -120.0]
        self.rms_db = [-120.0, -120.0]
        self.hold_db = [-120.0, -120.0]
        self._hold_t = [0.0, 0.0]
        self._last_t: float | None = None  # the previous update: the hold line falls by the time since
        self.clipped = [False, False]
        self.max_db = [-120.0, -120.0]  # highest peak since the last click, shown as numbers
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)
        self.setToolTip(f"{title} level (dBFS): bar RMS, line peak (held {HOLD_S:g} s), numbers: highest peak, "
                        "red light: clip (click to reset both)")

    def sizeHint(self) -> QSize:
        return QSize(WIDTH, 200)

    def minimumSizeHint(self) -> QSize:
        return QSize(WIDTH, 120)

    def set_levels(self, peaks, mean_squares, clip=(False, False), now: float | None = None) -> None:
        """Linear peaks and mean squares (per channel) since the last update; ``clip`` flags a
        clip found elsewhere (the safety stage's ceiling sits below full scale)."""
        now = time.monotonic() if now is None else now
        last, self._last_t = self._last_t, now
        for c in range(2):
            pk, ms = float(peaks[c]), float(mean_squares[c])
            finite = math.isfinite(pk) and math.isfinite(ms)
            if not finite:  # (an upstream client's Inf or NaN): full scale and the clip light; an Inf kept
                pk = ms = 1.0  # as the hold line's level never fell again, nor did a click reset it
            db = to_db(pk)
            self.peak_db[c] = db
            self.max_db[c] = max(self.max_db[c], db)
            self.rms_db[c] = 10.0 * math.log10(ms) if ms > 1e-12 else -120.0
            if db >= self.hold_db[c]:
                self.hold_db[c], self._hold_t[c] = db, now
            elif now - self._hold_t[c] > HOLD_S:
                self.hold_db[c] = max(db, self.hold_db[c] - self._fall_db(c, last, now))
            if pk >= CLIP_LIN or not finite or clip[c]:
                self.clipped[c] = True
        self.update()

    def fall(self, now: float | None = None) -> None:
        """Nothing comes (the engine is stopped): the bars drop to the floor and the hold line falls
        as in silence; idle once all is down (no redraws while stopped)."""
        if max(*self.hold_db, *self.peak_db, *self.rms_db) > -120.0:
            self.set_levels(SILENCE, SILENCE, now=now)

    def _fall_db(self, c: int, last: float | None, now: float) -> float:
        """How far channel ``c``'s hold line falls from ``last`` to ``now``: FALL_DB_S per second
        since the hold ran out, whatever the redraw rate (a fixed step per redraw fell 36 dB/s at 30 Hz)."""
        since = self._hold_t[c] + HOLD_S
        return FALL_DB_S * max(0.0, now - (since if last is None else max(last, since)))

    def clear_clip(self) -> None:
        """Clear the clip lights, the highest-peak numbers and the hold lines."""
        self.clipped = [False, False]
        self.max_db = [-120.0, -120.0]
        self.hold_db = list(self.peak_db)
        self.update()

    def peak_text(self, c: int) -> str:
        """The highest peak of channel ``c`` since the last reset, as shown ("-3.2", "-inf")."""
        return "-inf" if self.max_db[c] <= -119.0 else f"{self.max_db[c]:.1f}"

    def mousePressEvent(self, e):
        self.clear_clip()

    def _y(self, db: float, top: float, height: float) -> float:
        f = (min(0.0, max(FLOOR_DB, db)) - FLOOR_DB) / -FLOOR_DB
        return top + height * (1.0 - f)

    def paintEvent(self, e):
        p, small = small_painter(self)
        pal = self.palette()
        w, h = self.width(), self.height()
        p.drawText(QRectF(0, h - 16, w, 16), Qt.AlignmentFlag.AlignCenter, self.title)
        bw = 11.0
        top, bottom = 26.0, h - 18.0
        height = bottom - top
        for c in range(2):
            x = 2 + c * (bw + 2)
            p.fillRect(QRectF(x, 2, bw, 9), QColor("#ff3030") if self.clipped[c] else QColor("#402020"))
        # the highest peaks, one number per channel, over the bars
        for c in range(2):
            p.setPen(QColor("#ff6060") if self.clipped[c] else pal.windowText().color())
            p.drawText(QRectF(0 if c == 0 else w / 2, 12, w / 2, 12), Qt.AlignmentFlag.AlignCenter, self.peak_text(c))
        for c in range(2):
            x = 2 + c * (bw + 2)
            p.fillRect(QRectF(x, top, bw, height), QColor("#1c1f24"))
            y = self._y(self.rms_db[c], top, height)
            grad = QColor("#3fbf6a") if self.rms_db[c] < -12 else QColor("#d8c23a") if self.rms_db[c] < -3 else QColor("#e05a3a")
            p.fillRect(QRectF(x, y, bw, bottom - y), grad)
            yp = self._y(self.peak_db[c], top, height)
            p.fillRect(QRectF(x, yp, bw, 2), QColor("#cfe8d6"))
            yh = self._y(self.hold_db[c], top, height)
            p.fillRect(QRectF(x, yh, bw, 1), QColor("#ffffff"))
        sx = 2 + 2 * (bw + 2)
        drawn: list[QRectF] = []
        for db in SCALE_DB:  # the dBFS scale
            y = self._y(db, top, height)
            p.setPen(QColor("#6a7078"))
            p.drawLine(int(2), int(y), int(sx + 2), int(y))
            p.setPen(pal.windowText().color())
            draw_fitting(p, QRectF(sx + 3, y - 6, w - sx - 3, 12), Qt.AlignmentFlag.AlignVCenter, f"{db}", drawn)
        p.end()
