"""Safety stage, the last slot of every chain: nothing non-finite, DC-heavy or over the ceiling
reaches the speakers.

Per sample: NaN/Inf -> 0 (counted in ``counters[SCRUBBED]``); clamp to +-GUARD (a huge finite
spike would otherwise sit in the DC blocker and hold the output at the ceiling for seconds);
one-pole DC blocker at 1 Hz with float64 state (only ever fed finite, bounded values, so it can
neither go NaN nor blow up); hard clip to the ceiling (counted in ``counters[CLIPPED]``). The
ceiling is applied unsmoothed so the output never exceeds the current setting.

Why 1 Hz: the blocker runs after the limiter, and a high-pass tilts what it passes. At 5 Hz it
lifted a limiter's -1 dBFS output of low, square-like content (a 25 Hz square) by 2.3 dB, past
the -0.3 dBFS ceiling, so the safety clip cut a quarter of its samples; at 1 Hz the same tilt is
0.5 dB, inside the 0.7 dB between the two ceilings, and a DC offset is still gone within a second.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from realtime.dsp.fixed_filter import dc_blocker_coefficients
from realtime.dsp.kernels import CLAMPED, NONFINITE, scrub_value
from realtime.dsp.processor import Param, Processor, Readout
from realtime.dsp.processors import register

SCRUBBED, CLIPPED = 0, 1
GUARD = 4.0  # +12 dBFS: bound on what enters the DC blocker
DC_HZ = 1.0  # see the module docstring
F32_SAFE = 1.0 - 2.5e-7  # float32 rounding cannot carry the output over the ceiling


@njit(nogil=True, cache=True)
def _ceiling(ceiling_db):
    """The largest magnitude let through at ``ceiling_db``, a little under it (``F32_SAFE``)."""
    return 10.0 ** (ceiling_db / 20.0) * F32_SAFE


@njit(nogil=True, cache=True)
def _safety_kernel(block, values, z, R, counters, readings):
    lim = _ceiling(values[0])
    scrubbed = 0
    clipped = 0
    for ch in range(block.shape[1]):
        x1 = z[ch, 0]
        y1 = z[ch, 1]
        for n in range(block.shape[0]):
            x, what = scrub_value(np.float64(block[n, ch]), GUARD)
            if what == NONFINITE:
                scrubbed += 1
            y = x - x1 + R * y1
            x1 = x
            # -200 dB, as fixed_filter's: at 1e-30 the 1 Hz decay took ~11 s to give digital silence again
            y1 = 0.0 if abs(y) < 1e-10 else y
            y, what = scrub_value(y, lim)
            if what == CLAMPED:
                clipped += 1
            block[n, ch] = y
        z[ch, 0] = x1
        z[ch, 1] = y1
    counters[SCRUBBED] += scrubbed
    counters[CLIPPED] += clipped
    readings[0] = counters[CLIPPED]
    readings[1] = counters[SCRUBBED]


@njit(nogil=True, cache=True)
def _limit_kernel(y, ceiling_db, counters):
    lim = _ceiling(ceiling_db)
    clipped = 0
    for n in range(y.shape[0]):
        for ch in range(y.shape[1]):
            v = y[n, ch]
            if v > lim:
                y[n, ch] = lim
                clipped += 1
            elif v < -lim:
                y[n, ch] = -lim
                clipped += 1
    counters[CLIPPED] += clipped


@register
class Safety(Processor):
    """The last slot of every chain (see the module docstring); it cannot be bypassed.

    Parameters
    ----------
    **values
        ``ceiling_db``: the hard ceiling (dBFS, -12..0).

    Attributes
    ----------
    counters : ndarray
        int64 [non-finite samples scrubbed, samples clipped to the ceiling] (set by ``prepare``).
    """

    kind = "safety"
    params = (Param("ceiling_db", "Ceiling", -12.0, 0.0, -0.3, unit="dB", smoothing_ms=0.0),)
    readouts = (Readout("ceiling_hits", "Ceiling hits", "", 0.0, 1e6), Readout("scrubbed", "Non-finite", "", 0.0, 1e6))

    def _prepare(self) -> None:
        self._z = np.zeros((self.channels, 2), np.float64)  # DC blocker x[n-1], y[n-1]
        self._R = -dc_blocker_coefficients(DC_HZ, self.sample_rate)[3]  # the pole (a1 = -R)
        self.counters = np.zeros(2, np.int64)  # [scrubbed non-finite samples, clipped samples]

    def reset(self) -> None:
        self._z.fill(0.0)
        self.counters.fill(0)
        self.readings.fill(0.0)

    def process(self, block: np.ndarray) -> None:
        _safety_kernel(block, self.values, self._z, self._R, self.counters, self.readings)

    def limit(self, y: np.ndarray) -> None:
        """Clip ``y`` ([frames, channels], finite) in place to this stage's ceiling, counted with the
        stage's own clips: for what is made of the chain's output after it (resampled back to a
        file's rate, where the resampler rings past the ceiling). Allocation-free."""
        _limit_kernel(y, float(self.values[0]), self.counters)
