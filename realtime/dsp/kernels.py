"""Signal kernels shared across the runtime: the one NaN/Inf scrub and clamp, the denormal
flush and the parameter glide.

Every place that must not pass a non-finite or runaway sample on (the PortAudio callback's last
line of defence, the safety stage, the neural processors' inputs) calls ``scrub_value``, so the
rule "NaN/Inf becomes 0, anything beyond the ceiling is clamped to it, and both are counted" is
written once. The kernels are ``@njit(nogil=True)``: callable from other Numba kernels and from
the callback's ``@cfunc``, and they never allocate.
"""
from __future__ import annotations

import math

from numba import njit

PASSED, NONFINITE, CLAMPED = 0, 1, 2  # what ``scrub_value`` did to a sample
GLIDE_SNAP = 1e-9  # a glide this close to its target lands on it


@njit(nogil=True, cache=True)
def flush_denormal(v):
    """0 for |v| < 1e-30: decaying state (IIR, feedback delays) would otherwise sink into
    denormals, which cost several times the CPU per operation, during silence."""
    return 0.0 if abs(v) < 1e-30 else v


@njit(nogil=True, cache=True)
def glide(x, target, c):
    """One step of a one-pole glide of ``x`` towards ``target`` (coefficient ``c``), landing on the
    target once within GLIDE_SNAP: a glide towards 0 would otherwise stall in denormals for good."""
    x += c * (target - x)
    return target if abs(target - x) < GLIDE_SNAP else x


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
