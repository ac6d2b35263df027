"""Stereo level meter: RMS bar, peak line with a 1.5 s hold, latching clip light (click clears)."""
from __future__ import annotations

import math
import time

from PyQt6.QtCore import QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QPainter
from PyQt6.QtWidgets import QSizePolicy, QWidget

FLOOR_DB = -60.0
HOLD_S = 1.5
FALL_DB_S = 24.0  # displayed peak falls this fast once the hold ran out
CLIP_LIN = 0.999  # 1 - 2**-10: the safety stage's ceiling is just below 1, a clip is "at full scale"


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
        self.clipped = [False, False]
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)
        self.setToolTip(f"{title} level: bar RMS, line peak (held {HOLD_S:g} s), red light: clip (click to clear)")

    def sizeHint(self) -> QSize:
        return QSize(44, 200)

    def minimumSizeHint(self) -> QSize:
        return QSize(44, 120)

    def set_levels(self, peaks, mean_squares, clip=(False, False), now: float | None = None) -> None:
        """Linear peaks and mean squares (per channel) since the last update; ``clip`` flags a
        clip found elsewhere (the safety stage's ceiling sits below full scale)."""
        now = time.monotonic() if now is None else now
        for c in range(2):
            pk = float(peaks[c])
            db = to_db(pk)
            self.peak_db[c] = db
            self.rms_db[c] = 10.0 * math.log10(float(mean_squares[c])) if mean_squares[c] > 1e-12 else -120.0
            if db >= self.hold_db[c]:
                self.hold_db[c], self._hold_t[c] = db, now
            elif now - self._hold_t[c] > HOLD_S:
                self.hold_db[c] = max(db, self.hold_db[c] - FALL_DB_S * 0.05)
            if pk >= CLIP_LIN or not math.isfinite(pk) or clip[c]:
                self.clipped[c] = True
        self.update()

    def clear_clip(self) -> None:
        self.clipped = [False, False]
        self.update()

    def mousePressEvent(self, e):
        self.clear_clip()

    def _y(self, db: float, top: float, height: float) -> float:
        f = (min(0.0, max(FLOOR_DB, db)) - FLOOR_DB) / -FLOOR_DB
        return top + height * (1.0 - f)

    def paintEvent(self, e):
        p = QPainter(self)
        pal = self.palette()
        w, h = self.width(), self.height()
        p.setPen(pal.windowText().color())
        p.drawText(QRectF(0, h - 16, w, 16), Qt.AlignmentFlag.AlignCenter, self.title)
        top, bottom = 14.0, h - 18.0
        height = bottom - top
        bw = (w - 10) / 2
        for c in range(2):
            x = 4 + c * (bw + 2)
            p.fillRect(QRectF(x, top, bw, height), QColor("#1c1f24"))
            y = self._y(self.rms_db[c], top, height)
            grad = QColor("#3fbf6a") if self.rms_db[c] < -12 else QColor("#d8c23a") if self.rms_db[c] < -3 else QColor("#e05a3a")
            p.fillRect(QRectF(x, y, bw, bottom - y), grad)
            yp = self._y(self.peak_db[c], top, height)
            p.fillRect(QRectF(x, yp, bw, 2), QColor("#cfe8d6"))
            yh = self._y(self.hold_db[c], top, height)
            p.fillRect(QRectF(x, yh, bw, 1), QColor("#ffffff"))
            p.fillRect(QRectF(x, 2, bw, 9), QColor("#ff3030") if self.clipped[c] else QColor("#402020"))
        p.setPen(QColor("#6a7078"))
        for db in (-6, -12, -24, -48):  # scale ticks
            y = self._y(db, top, height)
            p.drawLine(int(4), int(y), int(w - 6), int(y))
        p.end()
