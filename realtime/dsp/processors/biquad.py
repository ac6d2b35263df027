"""Biquad filter (RBJ Audio-EQ-Cookbook), per-channel state, smoothed parameters.

Frequency and Q are smoothed per sample in the log domain (perceptually even glides), gain in dB;
coefficients are recomputed from the smoothed values every 16 samples on an absolute sample grid
(so the output does not depend on how the stream is cut into blocks). The filter runs in
transposed direct form II with float64 state, which stays accurate for low cut-offs at 96 kHz.
A change of filter *type* cannot be smoothed through the coefficients, so the old filter keeps
running and is crossfaded (10 ms) into the new one, which starts from zero state: the fade-in
ramp hides its start-up transient. A type change arriving during a fade waits for it to end.
Non-finite input samples are filtered as 0, so a NaN never gets stuck in the recursive state.
Shelves take Q up to SHELF_MAX_Q only (the cookbook's slope S = 1, the steepest shelf that stays
monotonic): above it the RBJ shelf resonates, +43 dB at +24 dB gain and Q 10, far past the gain
knob, where a user turning Q expects a steeper shelf, not a peak.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.kernels import flush_denormal, glide
from realtime.dsp.processor import Param, Processor
from realtime.dsp.processors import register

TYPES = ("highpass", "lowpass", "lowshelf", "highshelf", "peak")
HIGHPASS, LOWPASS, LOWSHELF, HIGHSHELF, PEAK = range(5)
RECOMPUTE_EVERY = 16  # samples between coefficient updates (power of two: masked counter)
TYPE_FADE_MS = 10.0
SHELF_MAX_Q = 1.0 / math.sqrt(2.0)


@njit(nogil=True, cache=True)
def _coeffs(kind, freq, q, gain_db, sample_rate, out, row):
    """Write normalised (b0, b1, b2, a1, a2) into out[row]."""
    f = min(max(freq, 1.0), 0.49 * sample_rate)  # keep w0 < pi: valid at any host rate
    if kind == LOWSHELF or kind == HIGHSHELF:
        q = min(q, SHELF_MAX_Q)
    w0 = 2.0 * math.pi * f / sample_rate
    cw = math.cos(w0)
    alpha = math.sin(w0) / (2.0 * q)
    A = 10.0 ** (gain_db / 40.0)
    if kind == HIGHPASS:
        b0 = (1.0 + cw) / 2.0
        b1 = -(1.0 + cw)
        b2 = b0
        a0 = 1.0 + alpha
        a1 = -2.0 * cw
        a2 = 1.0 - alpha
    elif kind == LOWPASS:
        b0 = (1.0 - cw) / 2.0
        b1 = 1.0 - cw
        b2 = b0
        a0 = 1.0 + alpha
        a1 = -2.0 * cw
        a2 = 1.0 - alpha
    elif kind == LOWSHELF:
        sa = 2.0 * math.sqrt(A) * alpha
        b0 = A * ((A + 1.0) - (A - 1.0) * cw + sa)
        b1 = 2.0 * A * ((A - 1.0) - (A + 1.0) * cw)
        b2 = A * ((A + 1.0) - (A - 1.0) * cw - sa)
        a0 = (A + 1.0) + (A - 1.0) * cw + sa
        a1 = -2.0 * ((A - 1.0) + (A + 1.0) * cw)
        a2 = (A + 1.0) + (A - 1.0) * cw - sa
    elif kind == HIGHSHELF:
        sa = 2.0 * math.sqrt(A) * alpha
        b0 = A * ((A + 1.0) + (A - 1.0) * cw + sa)
        b1 = -2.0 * A * ((A - 1.0) + (A + 1.0) * cw)
        b2 = A * ((A + 1.0) + (A - 1.0) * cw - sa)
        a0 = (A + 1.0) - (A - 1.0) * cw + sa
        a1 = 2.0 * ((A - 1.0) - (A + 1.0) * cw)
        a2 = (A + 1.0) - (A - 1.0) * cw - sa
    else:  # PEAK
        b0 = 1.0 + alpha * A
        b1 = -2.0 * cw
        b2 = 1.0 - alpha * A
        a0 = 1.0 + alpha / A
        a1 = -2.0 * cw
        a2 = 1.0 - alpha / A
    inv = 1.0 / a0
    out[row, 0] = b0 * inv
    out[row, 1] = b1 * inv
    out[row, 2] = b2 * inv
    out[row, 3] = a1 * inv
    out[row, 4] = a2 * inv


def biquad_coefficients(type, freq_hz, q, gain_db, sample_rate):
    """(b, a) arrays for scipy.signal (a[0] == 1); ``type`` is a name from TYPES or its index."""
    kind = TYPES.index(type) if isinstance(type, str) else int(type)
    out = np.zeros((1, 5))
    _coeffs(kind, float(freq_hz), float(q), float(gain_db), float(sample_rate), out, 0)
    return out[0, :3].copy(), np.array([1.0, out[0, 3], out[0, 4]])


@njit(nogil=True, cache=True)
def _biquad_kernel(block, values, sm, coefs, z, k):
    sr = k[0]
    cf = k[1]
    cq = k[2]
    cg = k[3]
    fade_step = k[4]
    ttype = values[0]
    tlf = math.log(values[1])
    tlq = math.log(values[2])
    tg = values[3]
    lf = sm[0]
    lq = sm[1]
    g = sm[2]
    typ = sm[3]
    fade = sm[4]
    cnt = int(sm[5])
    nch = block.shape[1]
    for n in range(block.shape[0]):
        lf = glide(lf, tlf, cf)
        lq = glide(lq, tlq, cq)
        g = glide(g, tg, cg)
        if ttype != typ and fade == 0.0:
            # Type change: current filter becomes the fading-out one; new one starts at rest.
            for i in range(5):
                coefs[1, i] = coefs[0, i]
            for ch in range(nch):
                z[1, ch, 0] = z[0, ch, 0]
                z[1, ch, 1] = z[0, ch, 1]
                z[0, ch, 0] = 0.0
                z[0, ch, 1] = 0.0
            typ = ttype
            fade = 1.0
            _coeffs(int(typ), math.exp(lf), math.exp(lq), g, sr, coefs, 0)
        if cnt == 0:
            _coeffs(int(typ), math.exp(lf), math.exp(lq), g, sr, coefs, 0)
        cnt = (cnt + 1) & (RECOMPUTE_EVERY - 1)
        b0 = coefs[0, 0]
        b1 = coefs[0, 1]
        b2 = coefs[0, 2]
        a1 = coefs[0, 3]
        a2 = coefs[0, 4]
        for ch in range(nch):
            x = np.float64(block[n, ch])
            if not math.isfinite(x):  # one NaN would otherwise poison the state forever
                x = 0.0
            y = b0 * x + z[0, ch, 0]
            z[0, ch, 0] = flush_denormal(b1 * x - a1 * y + z[0, ch, 1])
            z[0, ch, 1] = flush_denormal(b2 * x - a2 * y)
            if fade > 0.0:
                yo = coefs[1, 0] * x + z[1, ch, 0]
                z[1, ch, 0] = flush_denormal(coefs[1, 1] * x - coefs[1, 3] * yo + z[1, ch, 1])
                z[1, ch, 1] = flush_denormal(coefs[1, 2] * x - coefs[1, 4] * yo)
                y = y + fade * (yo - y)
            block[n, ch] = y
        if fade > 0.0:
            fade = max(0.0, fade - fade_step)
    sm[0] = lf
    sm[1] = lq
    sm[2] = g
    sm[3] = typ
    sm[4] = fade
    sm[5] = cnt


@register
class Biquad(Processor):
    kind = "biquad"
    params = (
        Param("type", "Type", 0.0, len(TYPES) - 1.0, float(PEAK), choices=TYPES, step=1.0, smoothing_ms=0.0),
        Param("freq_hz", "Frequency", 20.0, 20000.0, 1000.0, unit="Hz", scale="log", smoothing_ms=30.0),
        Param("q", "Q", 0.1, 10.0, 0.707, scale="log", smoothing_ms=30.0),
        Param("gain_db", "Gain", -24.0, 24.0, 0.0, unit="dB", smoothing_ms=20.0),
    )

    def _prepare(self) -> None:
        sr = self.sample_rate
        p = self.params
        self._k = np.array([sr, p[1].smoothing_coeff(sr), p[2].smoothing_coeff(sr), p[3].smoothing_coeff(sr),
                            1.0 / (TYPE_FADE_MS * 1e-3 * sr)])
        self._sm = np.zeros(6)  # log f, log q, gain dB, active type, fade (old weight), grid counter
        self._coefs = np.zeros((2, 5))  # row 0 active filter, row 1 the one fading out
        self._z = np.zeros((2, self.channels, 2))

    def reset(self) -> None:
        v = self.values
        self._sm[:] = (math.log(v[1]), math.log(v[2]), v[3], v[0], 0.0, 0.0)
        self._z.fill(0.0)
        _coeffs(int(v[0]), v[1], v[2], v[3], self.sample_rate, self._coefs, 0)

    def process(self, block: np.ndarray) -> None:
        _biquad_kernel(block, self.values, self._sm, self._coefs, self._z, self._k)
