"""A fixed biquad run in place over a (frames, channels) buffer, and the DC blocker's coefficients
(the enhancer's input filter, which ``HopInput`` runs as samples come in)."""
from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def fixed_biquad(buf, pos, n, coefs, z):
    """Filter ``buf[pos:pos + n]`` ((frames, channels)) in place through one fixed biquad.

    ``coefs``: normalised (b0, b1, b2, a1, a2); ``z``: float64 [channels, 2]
    transposed direct form II state, carried between calls. Allocation-free; the input must be
    finite (callers scrub first)."""
    b0 = coefs[0]
    b1 = coefs[1]
    b2 = coefs[2]
    a1 = coefs[3]
    a2 = coefs[4]
    for i in range(pos, pos + n):
        for ch in range(buf.shape[1]):
            x = np.float64(buf[i, ch])
            y = b0 * x + z[ch, 0]
            z0 = b1 * x - a1 * y + z[ch, 1]
            z1 = b2 * x - a2 * y
            # a tail this far below any audio (-200 dB) ends in exact zeros: digital silence
            # after a signal becomes digital silence again (the enhancer's idle gate keys on it)
            z[ch, 0] = 0.0 if abs(z0) < 1e-10 else z0
            z[ch, 1] = 0.0 if abs(z1) < 1e-10 else z1
            buf[i, ch] = y


def dc_blocker_coefficients(freq_hz: float, sample_rate: float) -> np.ndarray:
    """(b0, b1, b2, a1, a2) of the one-pole DC blocker y[n] = g·(x[n] - x[n-1]) + R·y[n-1]
    (-3 dB at ``freq_hz``, unity gain at Nyquist), the row ``fixed_biquad`` takes. One pole
    shifts the phase of what it passes least: 3° at 100 Hz for a 5 Hz corner."""
    R = math.exp(-2.0 * math.pi * float(freq_hz) / float(sample_rate))
    g = (1.0 + R) / 2.0
    return np.array([g, -g, 0.0, -R, 0.0])
