"""Spectrum analyser: the chain's input and output overlaid (log frequency, dBFS), smoothed, with
the output's peaks held.

``SpectrumAnalyser`` (no Qt) keeps the newest ``fft_size`` frames of the engine's audio tap
(``HostBase.read_audio``: input and output, left and right) and turns them into two spectra; the
window calls it from its meter timer (~30 fps), in the GUI's process, never on the DSP thread.
``SpectrumView`` draws them.

Channels: each channel is analysed on its own and each side (input, output) shows the louder
channel at each frequency (the max of its channels' spectra, not a mono mix, which cancelled
anti-phase channels and read a one-sided signal 6 dB low): a sine at -20 dBFS in one channel or
in both reads -20 dBFS.

Scale: a sine reads its level (a full-scale one 0 dBFS) at its peak, at any frequency, to within
0.02 dB from 20 Hz up (periodic Hann window, amplitude-normalised; each local maximum is corrected
for the window's scalloping, up to 1.4 dB between two bins, by the exact Hann interpolation from
its larger neighbour: the offset d in bins from their ratio a, d = (2a - 1) / (a + 1), the level
times (1 - d**2) / sinc(d)). On noise a local maximum reads up to 1.4 dB high the same way.
"""
from __future__ import annotations

import math
import time

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from PyQt6.QtWidgets import QSizePolicy, QWidget

from gui.meters import draw_fitting

FFT_SIZE = 4096
HEIGHT = 112  # pixels: the rack keeps room for three rows of knobs at 1280x720
MIN_HEIGHT = 60  # dragged smaller, it collapses
FLOOR_DB = -100.0
F_MIN = 20.0
SMOOTH_S = 0.12  # time constant of the displayed spectra's fall (rises are immediate)
HOLD_S = 2.0  # the output's peak line stays this long, then falls
FALL_DB_S = 20.0


class SpectrumAnalyser:
    """Spectra of the audio tap's input and output (each the louder of its channels per bin).

    Parameters
    ----------
    sample_rate : float
        Hz.
    fft_size : int
        Frames per transform (a power of two); the bin width is ``sample_rate / fft_size``.
    """

    def __init__(self, sample_rate: float, fft_size: int = FFT_SIZE):
        self.sample_rate = float(sample_rate)
        self.fft_size = int(fft_size)
        # periodic Hann: its spectrum is exactly three shifted kernels, which the peak correction assumes
        self.window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(self.fft_size) / self.fft_size)
        self._norm = 2.0 / self.window.sum()  # a full-scale sine -> 1.0 at its bin
        self.freqs = np.fft.rfftfreq(self.fft_size, 1.0 / self.sample_rate)
        self.history = np.zeros((self.fft_size, 4), np.float32)  # newest frames, oldest first
        nb = self.freqs.shape[0]
        self.db = np.full((2, nb), FLOOR_DB)  # smoothed input, output
        self.peak = np.full(nb, FLOOR_DB)  # the output's held peaks
        self._peak_t = np.zeros(nb)
        self._last = None

    def push(self, frames: np.ndarray) -> None:
        """Append tap frames ((n, 4): input left, right, output left, right). A sample that is not
        finite (an upstream client's Inf or NaN in the input) counts as silence: in the transform it
        made every bin NaN, and the smoothed spectra and held peaks, which take the max of old and new,
        kept NaN for good."""
        if not np.isfinite(frames).all():
            frames = np.where(np.isfinite(frames), frames, 0.0).astype(np.float32)
        n = frames.shape[0]
        if n >= self.fft_size:
            self.history[:] = frames[-self.fft_size:]
        elif n:
            self.history[:-n] = self.history[n:]
            self.history[-n:] = frames

    def _channel_spectra(self) -> tuple[np.ndarray, np.ndarray]:
        """Each tap column's magnitude spectrum of the newest ``fft_size`` frames, (4, bins), its local
        maxima corrected to the level of the sine that makes them; and each bin's offset (bins, signed)
        to that sine's frequency (0 where it is no local maximum)."""
        x = self.history.T.astype(np.float64) * self.window
        mag = np.abs(np.fft.rfft(x, axis=-1)) * self._norm
        mid, lo, hi = mag[:, 1:-1], mag[:, :-2], mag[:, 2:]
        peak = (mid > lo) & (mid >= hi)
        a = np.maximum(lo, hi) / np.where(peak, mid, 1.0)  # 0.5 (on a bin) .. 1 (half-way) for a sine
        d = np.where(peak, np.clip((2.0 * a - 1.0) / (a + 1.0), 0.0, 0.5), 0.0)
        offset = np.zeros_like(mag)
        offset[:, 1:-1] = np.where(hi >= lo, d, -d)
        out = mag.copy()  # (mid, lo and hi are overlapping views of mag)
        out[:, 1:-1] = mid * (1.0 - d * d) / np.sinc(d)
        return out, offset

    def raw_db(self) -> np.ndarray:
        """The unsmoothed spectra of the newest ``fft_size`` frames: (2, bins) dBFS (input, output),
        each the louder of its two channels per bin."""
        mag, _ = self._channel_spectra()
        side = mag.reshape(2, 2, -1).max(axis=1)
        return 20.0 * np.log10(np.maximum(side, 10.0 ** (FLOOR_DB / 20.0)))

    def update(self, now: float | None = None) -> np.ndarray:
        """Take the newest spectra into the smoothed ones and the held peaks; returns ``db``."""
        now = time.monotonic() if now is None else now
        dt = 0.0 if self._last is None else min(1.0, now - self._last)
        self._last = now
        raw = self.raw_db()
        keep = math.exp(-dt / SMOOTH_S) if dt > 0 else 0.0
        self.db = np.maximum(raw, keep * self.db + (1.0 - keep) * raw)
        up = raw[1] >= self.peak
        self.peak = np.where(up, raw[1], np.where(now - self._peak_t > HOLD_S,
                                                   np.maximum(raw[1], self.peak - FALL_DB_S * dt), self.peak))
        self._peak_t = np.where(up, now, self._peak_t)
        return self.db

    def peak_frequency(self, column: int = 1) -> float:
        """Frequency (Hz) of the strongest peak of the newest raw spectrum (0: input, 1: output),
        interpolated between bins as its level is."""
        mag, offset = self._channel_spectra()
        ch, k = np.unravel_index(int(np.argmax(mag[2 * column:2 * column + 2])), (2, mag.shape[1]))
        return float((k + offset[2 * column + ch, k]) * self.sample_rate / self.fft_size)


class SpectrumView(QWidget):
    """Draws a ``SpectrumAnalyser``: input (grey) and output (green) curves, the output's held peaks
    (a thin line), log frequency from 20 Hz to Nyquist, dBFS from -100 to 0."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.analyser: SpectrumAnalyser | None = None
        self.setObjectName("spectrum")
        # the height is the window's splitter's (dragged by the user)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("spectrum: input (grey) and output (green) overlaid, output peaks held (line); "
                        "log frequency, dBFS")

    def sizeHint(self) -> QSize:
        return QSize(600, HEIGHT)

    def minimumSizeHint(self) -> QSize:
        return QSize(200, MIN_HEIGHT)

    def set_sample_rate(self, sample_rate: float) -> None:
        if self.analyser is None or self.analyser.sample_rate != float(sample_rate):
            self.analyser = SpectrumAnalyser(sample_rate)

    def feed(self, frames: np.ndarray | None) -> None:
        """New tap frames, then one redraw; None (no audio came: the engine is stopped) redraws nothing."""
        a = self.analyser
        if a is None or frames is None:
            return
        a.push(frames)
        a.update()
        self.update()

    def _x(self, f: np.ndarray, w: float) -> np.ndarray:
        nyq = self.analyser.sample_rate / 2
        return 30.0 + (w - 32.0) * np.log(np.maximum(f, F_MIN) / F_MIN) / math.log(nyq / F_MIN)

    def _y(self, db: np.ndarray, h: float) -> np.ndarray:
        return 7.0 + (h - 21.0) * np.clip(db / FLOOR_DB, 0.0, 1.0)

    def _curve(self, p: QPainter, xs, ys, color: QColor, width: float) -> None:
        # one point per pixel column (the highest bin in it): ~1000 points, not 2048 per curve
        xi = xs.astype(np.int64)
        starts = np.flatnonzero(np.diff(xi, prepend=-1))
        top = np.minimum.reduceat(ys, starts)
        p.setPen(QPen(color, width))
        p.drawPolyline(QPolygonF([QPointF(float(x), float(y)) for x, y in zip(xi[starts], top)]))

    def paintEvent(self, e):
        p = QPainter(self)
        w, h = float(self.width()), float(self.height())
        p.fillRect(QRectF(0, 0, w, h), QColor("#16191d"))
        small = QFont(self.font())
        small.setPointSizeF(max(6.0, small.pointSizeF() * 0.75))
        p.setFont(small)
        a = self.analyser
        if a is None:
            p.end()
            return
        grid, label = QColor("#2c3138"), QColor("#7a8088")
        drawn: list[QRectF] = []  # a short or narrow view drops the labels that would run into others
        for db in (0, -20, -40, -60, -80):
            y = float(self._y(np.array(db, float), h))
            p.setPen(grid)
            p.drawLine(30, int(y), int(w), int(y))
            p.setPen(label)
            draw_fitting(p, QRectF(0, y - 6, 27, 12), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                         f"{db}", drawn)
        for f in (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000):
            if f >= a.sample_rate / 2:
                continue
            x = float(self._x(np.array(f, float), w))
            p.setPen(grid)
            p.drawLine(int(x), 0, int(x), int(h - 14))
            p.setPen(label)
            draw_fitting(p, QRectF(x - 20, h - 13, 40, 12), Qt.AlignmentFlag.AlignCenter,
                         f"{f // 1000}k" if f >= 1000 else f"{f}", drawn)
        sel = a.freqs >= F_MIN
        xs = self._x(a.freqs[sel], w)
        self._curve(p, xs, self._y(a.db[0][sel], h), QColor("#9aa0a8"), 1.0)
        self._curve(p, xs, self._y(a.db[1][sel], h), QColor("#3fbf6a"), 1.5)
        self._curve(p, xs, self._y(a.peak[sel], h), QColor("#d8c23a"), 0.8)
        p.setPen(label)
        p.drawText(QRectF(w - 150, 2, 146, 12), Qt.AlignmentFlag.AlignRight, "in · out · out peak")
        p.end()
