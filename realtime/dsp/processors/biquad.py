"""Biquad filter (RBJ Audio-EQ-Cookbook), per-channel state, smoothed parameters.

Frequency and Q are smoothed per sample in the log domain (perceptually even glides), gain in dB;
coefficients are recomputed from the smoothed values every 16 samples on an absolute sample grid
(so the output does not depend on how the stream is cut into blocks). The filter runs in
transposed direct form II with float64 state, which stays accurate for low cut-offs at 96 kHz.
A change of filter *type* cannot be smoothed through the coefficients, so the old filter keeps
running and is crossfaded (10 ms) into the new one. The new one starts as if it had run all along:
a filter started from rest rings in for about Q / (pi f) seconds, longer than the fade at a high Q
or a low frequency (lowpass -> peak at 100 Hz, Q 10 dipped a 100 Hz tone 8 dB below both filters'
levels for 93 ms). So it is first run over the recent input, eight time constants of its slowest
pole (at most PRIME_MS: a +24 dB peak at Q 10 and 100 Hz, or Q 0.1 at 20 Hz, keep -17 / -27 dB of it), at PRIME_RATE history samples per live sample so that no block does more than
that (at once it was up to 0.7 ms in one 128-frame block at 192 kHz); the fade starts when it has
caught up (at most PRIME_MS / (PRIME_RATE - 1): 36 ms later). A type change arriving during a fade
waits for it to end; one arriving while the new filter catches up restarts it.
Non-finite input samples, and absurd ones beyond JUNK (+80 dBFS, the LV2 host's junk level), are filtered
as 0: a NaN never gets stuck in the recursive state, nor does one 1e30 sample (a damaged float file) ring a
Q 10 peak at full scale for 4 s.
Shelves take Q up to SHELF_MAX_Q only (the cookbook's slope S = 1, the steepest shelf that stays
monotonic): above it the RBJ shelf resonates, +43 dB at +24 dB gain and Q 10, far past the gain
knob, where a user turning Q expects a steeper shelf, not a peak.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.blocking import pow2_at_least
from realtime.dsp.kernels import flush_denormal, glide
from realtime.dsp.processor import Param, Processor
from realtime.dsp.processors import register

TYPES = ("highpass", "lowpass", "lowshelf", "highshelf", "peak")
HIGHPASS, LOWPASS, LOWSHELF, HIGHSHELF, PEAK = range(5)
RECOMPUTE_EVERY = 16  # samples between coefficient updates (power of two: masked counter)
TYPE_FADE_MS = 10.0
PRIME_MS = 250.0  # most input a new filter type is run over before it plays: 8 decay times of Q 10 at 100 Hz
PRIME_RATE = 8  # history samples it runs over per live sample while it catches up
SHELF_MAX_Q = 1.0 / math.sqrt(2.0)
JUNK = 1e4  # +80 dBFS: no audio, even after +24 dB of gain and a +24 dB peak (lv2.OUTPUT_LIMIT)


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


@njit(nogil=True, cache=True, inline="always")
def _tdf2(b0, b1, b2, a1, a2, x, z0, z1):
    """One sample through a biquad in transposed direct form II: (y, new z0, new z1)."""
    y = b0 * x + z0
    return y, flush_denormal(b1 * x - a1 * y + z1), flush_denormal(b2 * x - a2 * y)


@njit(nogil=True, cache=True, inline="always")
def _run(coefs, row, z, hist, start, stop):
    """Run filter ``row`` (coefs and state z) over the history ring's samples start .. stop - 1."""
    mask = hist.shape[0] - 1
    b0, b1, b2, a1, a2 = coefs[row, 0], coefs[row, 1], coefs[row, 2], coefs[row, 3], coefs[row, 4]
    for ch in range(hist.shape[1]):
        z0 = z[row, ch, 0]
        z1 = z[row, ch, 1]
        for i in range(start, stop):
            _, z0, z1 = _tdf2(b0, b1, b2, a1, a2, hist[i & mask, ch], z0, z1)
        z[row, ch, 0] = z0
        z[row, ch, 1] = z1


@njit(nogil=True, cache=True)
def _prime_length(a1, a2, most):
    """Samples of input a new filter (denominator 1 + a1 z^-1 + a2 z^-2) runs over to forget its
    start from rest: eight time constants of its slowest pole (-70 dB), at most ``most``. From the
    poles, not Q: an overdamped filter's real pole (Q 0.1) and a boosted peak's (pole Q = Q * A)
    decay far slower than Q / (pi f) says."""
    disc = a1 * a1 - 4.0 * a2
    if disc < 0.0:
        r = math.sqrt(max(a2, 0.0))
    else:
        root = math.sqrt(disc)
        r = max(abs(-a1 + root), abs(-a1 - root)) / 2.0
    if r >= 1.0:
        return most
    if r <= 1e-12:
        return 32
    return min(most, int(8.0 / -math.log(r)) + 32)


@njit(nogil=True, cache=True)
def _biquad_kernel(block, values, sm, coefs, z, k, hist):
    """sm: smoothed values and counters (see Biquad._prepare); coefs/z rows: 0 the filter playing,
    1 the one fading out, 2 a new type's catching up on the history ring ``hist``."""
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
    hpos = int(sm[6])
    ptype = sm[7]  # the type row 2 catches up for (-1: none)
    pptr = int(sm[8])  # the history sample it reads next
    most = int(k[5])
    hmask = hist.shape[0] - 1
    nch = block.shape[1]
    for n in range(block.shape[0]):
        lf = glide(lf, tlf, cf)
        lq = glide(lq, tlq, cq)
        g = glide(g, tg, cg)
        if ttype != typ and fade == 0.0 and ttype != ptype:
            # Type change: the new filter starts from rest on the recent input (row 2)
            ptype = ttype
            _coeffs(int(ptype), math.exp(lf), math.exp(lq), g, sr, coefs, 2)
            pptr = hpos - _prime_length(coefs[2, 3], coefs[2, 4], most)
            for ch in range(nch):
                z[2, ch, 0] = 0.0
                z[2, ch, 1] = 0.0
        elif ptype >= 0.0 and ttype != ptype:  # turned back (or on) before it caught up
            ptype = -1.0
        if ptype >= 0.0:
            stop = min(pptr + PRIME_RATE, hpos)
            _run(coefs, 2, z, hist, pptr, stop)
            pptr = stop
            if pptr == hpos:
                # caught up: the playing filter becomes the fading-out one, the new one plays
                for i in range(5):
                    coefs[1, i] = coefs[0, i]
                for ch in range(nch):
                    z[1, ch, 0] = z[0, ch, 0]
                    z[1, ch, 1] = z[0, ch, 1]
                    z[0, ch, 0] = z[2, ch, 0]
                    z[0, ch, 1] = z[2, ch, 1]
                typ = ptype
                ptype = -1.0
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
            if not abs(x) <= JUNK:  # NaN, Inf or junk: one would poison (or ring) the state for seconds
                x = 0.0
            hist[hpos & hmask, ch] = x
            y, z[0, ch, 0], z[0, ch, 1] = _tdf2(b0, b1, b2, a1, a2, x, z[0, ch, 0], z[0, ch, 1])
            if fade > 0.0:
                yo, z[1, ch, 0], z[1, ch, 1] = _tdf2(coefs[1, 0], coefs[1, 1], coefs[1, 2], coefs[1, 3], coefs[1, 4],
                                                     x, z[1, ch, 0], z[1, ch, 1])
                y = y + fade * (yo - y)
            block[n, ch] = y
        if fade > 0.0:
            fade = max(0.0, fade - fade_step)
        hpos += 1
    sm[0] = lf
    sm[1] = lq
    sm[2] = g
    sm[3] = typ
    sm[4] = fade
    sm[5] = cnt
    sm[6] = hpos & hmask  # (the ring's position is all that matters: a float keeps it exact)
    sm[7] = ptype
    sm[8] = pptr - (hpos - (hpos & hmask))  # the same position, relative to the wrapped one


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
        most = int(PRIME_MS * 1e-3 * sr)
        self._k = np.array([sr, p[1].smoothing_coeff(sr), p[2].smoothing_coeff(sr), p[3].smoothing_coeff(sr),
                            1.0 / (TYPE_FADE_MS * 1e-3 * sr), most])
        # log f, log q, gain dB, active type, fade (old weight), grid counter, history position, the
        # type catching up (-1: none) and the history position it reads next
        self._sm = np.zeros(9)
        self._coefs = np.zeros((3, 5))  # rows: the active filter, the one fading out, a new type catching up
        self._z = np.zeros((3, self.channels, 2))
        # the recent input, for a new type to catch up on: room for what it reads while it does
        self._hist = np.zeros((pow2_at_least(2 * most), self.channels))

    def reset(self) -> None:
        v = self.values
        self._sm[:] = (math.log(v[1]), math.log(v[2]), v[3], v[0], 0.0, 0.0, 0.0, -1.0, 0.0)
        self._z.fill(0.0)
        self._hist.fill(0.0)
        _coeffs(int(v[0]), v[1], v[2], v[3], self.sample_rate, self._coefs, 0)

    def process(self, block: np.ndarray) -> None:
        _biquad_kernel(block, self.values, self._sm, self._coefs, self._z, self._k, self._hist)
