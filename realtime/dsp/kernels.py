"""Signal kernels shared across the runtime: the one NaN/Inf scrub and clamp, and a fixed biquad
(the enhancer's input DC blocker, run by ``HopInput``).

Every place that must not pass a non-finite or runaway sample on (the PortAudio callback's last
line of defence, the safety stage, the neural processors' inputs) calls ``scrub_value``, so the
rule "NaN/Inf becomes 0, anything beyond the ceiling is clamped to it, and both are counted" is
written once. The kernels are ``@njit(nogil=True)``: callable from other Numba kernels and from
the callback's ``@cfunc``, and they never allocate.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

PASSED, NONFINITE, CLAMPED = 0, 1, 2  # what ``scrub_value`` did to a sample


@njit(nogil=True, cache=True)
def scrub_value(v, ceiling):
    """One sample made safe.

    Parameters
    ----------
    v : float
        The sample.
    ceiling : float
        Largest magnitude let through (positive).

    Returns
    -------
    value : float
        0 for NaN/Inf, ``±ceiling`` beyond it, else ``v``.
    what : int
        ``NONFINITE``, ``CLAMPED`` or ``PASSED``.
    """
    if not math.isfinite(v):
        return 0.0, NONFINITE
    if v > ceiling:
        return ceiling, CLAMPED
    if v < -ceiling:
        return -ceiling, CLAMPED
    return v, PASSED


@njit(nogil=True, cache=True)
def scrub_into(src, n, dst, pos, ceiling, counts, nonfinite_slot, clamped_slot):
    """Copy ``src[:n]`` to ``dst[pos:pos + n]`` through ``scrub_value``, counting what it did.

    ``src`` and ``dst`` are (frames, channels); they may be the same array (in place, pos 0).
    A destination with more channels than the source repeats the source's last channel (mono
    into a stereo buffer); only the source's own values are counted.

    Parameters
    ----------
    src, dst : ndarray
        (frames, channels) float arrays, any strides.
    n, pos : int
        Frames to copy; first destination frame.
    ceiling : float
        Clamp limit (positive).
    counts : ndarray
        int64 counters: ``counts[nonfinite_slot]`` and ``counts[clamped_slot]`` are incremented.
    nonfinite_slot, clamped_slot : int
        Where to count non-finite and clamped values (the same slot is allowed).
    """
    nsrc = src.shape[1]
    for i in range(n):
        for c in range(dst.shape[1]):
            v, what = scrub_value(src[i, c if c < nsrc else nsrc - 1], ceiling)
            dst[pos + i, c] = v
            if c < nsrc:
                if what == NONFINITE:
                    counts[nonfinite_slot] += 1
                elif what == CLAMPED:
                    counts[clamped_slot] += 1


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
