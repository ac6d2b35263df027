"""Streaming de-clipper: clipped runs filled in by least-squares autoregressive interpolation.

A clipper (or a limiter's final clip stage) leaves runs of samples pinned at one value. No smooth
gain undoes that (the de-limiter's oracle rows: a 5 ms gain curve loses 0.4 dB on a clipper), but
the waveform around a short run predicts what the clipper cut: fit an all-pole model of order
``ORDER`` to the samples before and after the run, then choose the run's samples that minimise the
model's prediction error over the run (Janssen, Veldhuis & Vries, 1986, "Adaptive interpolation of
discrete-time signals that can be modeled as autoregressive processes"). The normal equations are
banded (bandwidth ``ORDER``) because the error filter is short, so one run of m samples costs
O(m · ORDER²). Consistency with the clipper: a filled sample must keep the run's sign and lie at
or beyond the clip level; samples that do not are pinned there and the rest solved again.

What counts as a clipped run (per channel): at least ``MIN_RUN`` consecutive samples with the same
value to float32 rounding (``TOL``: a clipper that computes its gain in floating point leaves the
last bit or two differing), starting at the channel's recent peak (a peak hold decaying with
``PEAK_TAU_S``, within ``PEAK_TOL``), and at most ``max_run`` long. Un-clipped audio almost never
repeats a sample at its peak, so it passes bit-exact; longer runs (a synthetic square wave, or
clipping too deep to interpolate) are left as they are.

Streaming: samples go in with ``push`` and come out ``delay`` samples later. A run is filled once
``POST`` samples after it have arrived; ``max_run = delay - POST`` guarantees that is before its
first sample leaves. The ring keeps ``PRE`` samples of (already filled) past for the model fit.
Work is bounded by a token bucket: each pushed sample adds ``budget`` operations (multiply-adds)
to it, up to a second's worth; filling a run of m samples costs about
PRE·ORDER + ITERATIONS·m·ORDER² of them, and a run the bucket cannot pay for stays as it is. Music
never empties the bucket (so the output does not depend on the block size); a pathological input
(a full-scale square wave of 2-sample plateaus) is held to ``budget`` operations per sample. Nothing is allocated after ``__init__``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

ORDER = 32  # all-pole model order
PRE = 1024  # samples before a run the model is fitted on
POST = 32  # samples after a run that must have arrived (>= ORDER)
MIN_RUN = 2
TOL = 5e-7  # relative: 4 float32 steps at full scale
PEAK_TOL = 1e-5  # a run starts within this (relative) of the peak hold: a clip is the loudest there is
PEAK_TAU_S = 5.0
WNC = 1e-4  # white-noise correction of the fit (a -40 dB floor): keeps high orders well conditioned
ITERATIONS = 3  # solves with the consistency constraint

BUDGET = 1000.0  # operations per pushed sample (module docstring); ~0.05 of one core at 48 kHz stereo at most

# integer state: [written, scanned]; float state: [tokens]
_WPOS, _SCAN = 0, 1


@njit(nogil=True, cache=True)
def _band_cholesky_solve(B, m, w, rhs):
    """Solve M z = rhs in place for a symmetric positive definite band matrix M given by its lower
    band B[i, k] = M[i, i - k] (k = 0..w), factorised in place; False if M is not positive definite."""
    for i in range(m):
        for k in range(min(i, w), -1, -1):
            j = i - k
            s = B[i, k]
            for q in range(max(i - w, j - w, 0), j):
                s -= B[i, i - q] * B[j, j - q]
            if k == 0:
                if s <= 0.0:
                    return False
                B[i, 0] = math.sqrt(s)
            else:
                B[i, k] = s / B[j, 0]
    for i in range(m):
        s = rhs[i]
        for q in range(max(0, i - w), i):
            s -= B[i, i - q] * rhs[q]
        rhs[i] = s / B[i, 0]
    for i in range(m - 1, -1, -1):
        s = rhs[i]
        for q in range(i + 1, min(m, i + w + 1)):
            s -= B[q, q - i] * rhs[q]
        rhs[i] = s / B[i, 0]
    return True


@njit(nogil=True, cache=True)
def _accumulate_autocorr(ring, ch, mask, start, n, r, p, tmp):
    """r[k] += autocorrelation at lag k of the Hann-windowed ring[ch, start:start + n]."""
    if n <= p:
        return
    for i in range(n):
        tmp[i] = (0.5 - 0.5 * math.cos(2.0 * math.pi * (i + 0.5) / n)) * ring[ch, (start + i) & mask]
    for k in range(p + 1):
        acc = 0.0
        for i in range(n - k):
            acc += tmp[i] * tmp[i + k]
        r[k] += acc


@njit(nogil=True, cache=True)
def _levinson(r, p, a):
    """Prediction-error filter a[0..p] (a[0] = 1) from autocorrelation r; False if r is degenerate."""
    e = r[0] * (1.0 + WNC) + 1e-30
    if r[0] <= 0.0:
        return False
    a[0] = 1.0
    for i in range(1, p + 1):
        a[i] = 0.0
    for i in range(1, p + 1):
        acc = r[i]
        for j in range(1, i):
            acc += a[j] * r[i - j]
        k = -acc / e
        for j in range(1, (i + 1) // 2 + 1):  # symmetric in-place update of a[1..i-1], then a[i] = k
            lo, hi = j, i - j
            if lo < hi:
                alo, ahi = a[lo], a[hi]
                a[lo] = alo + k * ahi
                a[hi] = ahi + k * alo
            elif lo == hi:
                a[lo] = a[lo] + k * a[lo]
        a[i] = k
        e *= 1.0 - k * k
        if e <= 0.0:
            return False
    return True


@njit(nogil=True, cache=True)
def _fill_run(ring, ch, mask, s, e, val, valid_from, work_r, work_a, work_ra, est, fixed, idx, err, B, rhs, tmp):
    """Fill the clipped run ring[ch, s:e] (value ``val``) in place; returns the largest
    |filled| / |val| (1.0: nothing filled)."""
    p = ORDER
    m = e - s
    ps = max(s - PRE, valid_from)
    if s - ps < 2 * p:
        return 1.0
    for k in range(p + 1):
        work_r[k] = 0.0
    _accumulate_autocorr(ring, ch, mask, ps, s - ps, work_r, p, tmp)
    _accumulate_autocorr(ring, ch, mask, e, POST, work_r, p, tmp)
    if not _levinson(work_r, p, work_a):
        return 1.0
    for k in range(p + 1):
        acc = 0.0
        for j in range(p + 1 - k):
            acc += work_a[j] * work_a[j + k]
        work_ra[k] = acc
    ridge = 1e-9 * work_ra[0]
    for i in range(m):
        est[i] = 0.0
        fixed[i] = False
    c = abs(val)
    for _ in range(ITERATIONS):
        mu = 0
        for i in range(m):
            if not fixed[i]:
                idx[mu] = i
                mu += 1
        if mu == 0:
            break
        # prediction error of the known samples (free ones at 0) over the rows the run touches
        for t in range(m + p):
            acc = 0.0
            for j in range(p + 1):
                q = t - j  # position relative to s
                if q < 0 or q >= m:
                    v = ring[ch, (s + q) & mask]
                elif fixed[q]:
                    v = est[q]
                else:
                    continue
                acc += work_a[j] * v
            err[t] = acc
        for u in range(mu):
            i = idx[u]
            acc = 0.0
            for j in range(p + 1):
                acc += work_a[j] * err[i + j]
            rhs[u] = -acc
            for k in range(p + 1):
                B[u, k] = 0.0
            for v in range(max(0, u - p), u + 1):
                d = i - idx[v]
                if d <= p:
                    B[u, u - v] = work_ra[d]
            B[u, 0] += ridge
        if not _band_cholesky_solve(B, mu, p, rhs):
            return 1.0
        bad = False
        for u in range(mu):
            i = idx[u]
            z = rhs[u]
            if (z > 0.0) != (val > 0.0) or abs(z) < c:  # inconsistent with the clip: pin it
                est[i] = val
                fixed[i] = True
                bad = True
            else:
                est[i] = z
        if not bad:
            break
    peak = 1.0
    for i in range(m):
        v = est[i]
        if not math.isfinite(v):
            return 1.0
        if abs(v) / c > peak:
            peak = abs(v) / c
    for i in range(m):
        ring[ch, (s + i) & mask] = est[i]
    return peak


@njit(nogil=True, cache=True)
def declip_push(x, x0, n, ring, ist, runs, fst, tokens, max_run, budget, decay, enabled, work_r, work_a, work_ra,
                est, fixed, idx, err, B, rhs, tmp):
    """Append x[x0:x0 + n] (both channels) to the ring, find the clipped runs that ``POST``
    samples have followed since the last call and fill them (if ``enabled``); returns the largest
    peak restored this call (linear ratio, 1.0: none). ist = [written, scanned];
    runs[ch] = [start] (-1: no open run); fst[ch] = [peak hold, run value]; tokens = [bucket, its cap]."""
    mask = ring.shape[1] - 1
    w = ist[_WPOS]
    for i in range(n):
        for ch in range(2):
            v = x[x0 + i, ch]
            ring[ch, (w + i) & mask] = v if math.isfinite(v) else 0.0  # NaN/Inf: silence
    w += n
    ist[_WPOS] = w
    valid_from = max(w - ring.shape[1], 0)
    tokens[0] = min(tokens[0] + budget * n, tokens[1])
    run_cost = ITERATIONS * ORDER * ORDER
    peak = 1.0
    scan_to = w - POST
    for ch in range(2):
        hold = fst[ch, 0]
        start = runs[ch, 0]
        val = fst[ch, 1]
        for t in range(ist[_SCAN], scan_to):
            v = ring[ch, t & mask]
            a = abs(v)
            if start >= 0 and abs(v - val) <= TOL * abs(val):
                continue
            if start >= 0:  # the run ended at t: fill it if it is a clip and fits
                m = t - start
                cost = PRE * ORDER + m * run_cost
                if enabled and m >= MIN_RUN and m <= max_run and cost <= tokens[0]:
                    tokens[0] -= cost
                    r = _fill_run(ring, ch, mask, start, t, val, valid_from, work_r, work_a, work_ra,
                                  est, fixed, idx, err, B, rhs, tmp)
                    if r > peak:
                        peak = r
                start = -1
            hold = max(a, hold * decay)
            if a > 0.0 and a >= (1.0 - PEAK_TOL) * hold:
                start = t
                val = v
        runs[ch, 0] = start
        fst[ch, 0] = hold
        fst[ch, 1] = val
    if scan_to > ist[_SCAN]:
        ist[_SCAN] = scan_to
    return peak


@njit(nogil=True, cache=True)
def declip_read(ring, ist, delay, n, out):
    """out[:n] = the n samples that are ``delay`` samples older than the newest n."""
    mask = ring.shape[1] - 1
    s = ist[_WPOS] - delay - n
    for i in range(n):
        for ch in range(2):
            out[i, ch] = ring[ch, (s + i) & mask]


class Declipper:
    """Stereo streaming de-clipper with a fixed ``delay`` (module docstring).

    Parameters
    ----------
    delay : int
        Samples between ``push`` and ``read`` of the same sample; runs up to ``delay - POST``
        samples can be filled (none when that is under ``MIN_RUN``).
    max_push : int
        Most samples one ``push`` may add.
    sample_rate : float
        For the peak hold's time constant.
    budget : float
        Operations per pushed sample the fills may spend (module docstring).
    max_delay : int or None
        Largest delay ``reset`` may set later (default: ``delay``); sizes the buffers.
    """

    def __init__(self, delay: int, max_push: int, sample_rate: float, budget: float = BUDGET,
                 max_delay: int | None = None):
        self.delay = int(delay)
        self.max_delay = max(int(max_delay if max_delay is not None else delay), self.delay)
        self.max_run = max(self.delay - POST, 0)
        size = 1 << int(math.ceil(math.log2(PRE + self.max_delay + max_push + POST + 16)))
        self.ring = np.zeros((2, size), np.float64)
        self.ist = np.zeros(2, np.int64)
        self.runs = np.full((2, 1), -1, np.int64)
        self.fst = np.zeros((2, 2), np.float64)
        self.budget = float(budget)
        self.tokens = np.array([0.0, self.budget * float(sample_rate)])  # [bucket, cap: a second's worth]
        self.decay = math.exp(-1.0 / (PEAK_TAU_S * float(sample_rate)))
        m = max(self.max_delay - POST, 1)
        self._work = (np.zeros(ORDER + 1), np.zeros(ORDER + 1), np.zeros(ORDER + 1), np.zeros(m),
                      np.zeros(m, np.bool_), np.zeros(m, np.int64), np.zeros(m + ORDER),
                      np.zeros((m, ORDER + 1)), np.zeros(m), np.zeros(PRE))
        self.reset()

    def reset(self, delay: int | None = None) -> None:
        """Silence in the ring, ``delay`` samples of it already written (a new ``delay`` up to
        ``max_delay`` if given)."""
        if delay is not None:
            self.delay = min(max(int(delay), 0), self.max_delay)
            self.max_run = max(self.delay - POST, 0)
        self.ring.fill(0.0)
        self.ist[_WPOS] = self.delay
        self.ist[_SCAN] = self.delay
        self.runs.fill(-1)
        self.fst.fill(0.0)
        self.tokens[0] = self.tokens[1]

    def push(self, x: np.ndarray, x0: int, n: int, enabled: bool = True) -> float:
        """Add x[x0:x0 + n] ((frames, 2) array); returns the largest restored peak (dB, 0: none)."""
        r = declip_push(x, x0, n, self.ring, self.ist, self.runs, self.fst, self.tokens, self.max_run,
                        self.budget, self.decay, enabled, *self._work)
        return 20.0 * math.log10(r)

    def read(self, n: int, out: np.ndarray) -> None:
        """out[:n] = the samples pushed ``delay`` samples before the newest n."""
        declip_read(self.ring, self.ist, self.delay, n, out)
