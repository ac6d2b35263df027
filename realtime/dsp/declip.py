"""Streaming de-clipper: clipped runs filled in by least-squares autoregressive interpolation.

A clipper (or a limiter's final clip stage) leaves runs of samples pinned at one value. No smooth
gain undoes that (the de-limiter's oracle rows: a 5 ms gain curve loses 0.4 dB on a clipper), but
the waveform around a short run predicts what the clipper cut: fit an all-pole model of order
``ORDER`` to the samples before the run, then choose the run's samples that minimise the model's
prediction error over the run and the ``ORDER`` samples after it (Janssen, Veldhuis & Vries, 1986,
"Adaptive interpolation of discrete-time signals that can be modeled as autoregressive
processes"). A run within ``REFIT`` samples of the last fit reuses that model. The normal
equations are banded (bandwidth ``ORDER``) because the error filter is short, so one run of m
samples costs O(m · ORDER²). Consistency with the clipper: a filled sample must keep the run's sign and lie at
or beyond the clip level; samples that do not are pinned there and the rest solved again.

What counts as a clipped run (per channel): at least ``MIN_RUN`` consecutive samples with the same
value to float32 rounding (``TOL``: a clipper that computes its gain in floating point leaves the
last bit or two differing), starting at the channel's recent peak (a peak hold decaying with
``PEAK_TAU_S``, within ``PEAK_TOL``), at most ``max_run`` long, and at a level an earlier run
already sat at (a clipper pins its runs at one level; a 16-bit recording repeats a sample at a
new peak now and then, but not the same peak value in separate places). Integer PCM clipped at full
scale has two levels, -1 and 1 - 1 LSB: any two at or above ``FULL_SCALE`` count as one. A fill is kept only if it
rises over the clip level by more than ``MIN_RISE`` (a plateau of a quantised but un-clipped peak
fills to within a step of itself) and by less than ``MAX_RISE`` times. Un-clipped audio passes
bit-exact; longer runs (a synthetic square wave, or clipping too deep to interpolate) are left as
they are.

Streaming: samples go in with ``push`` and come out ``delay`` samples later. A run is filled once
``POST`` samples after it have arrived; ``max_run = delay - POST`` guarantees that is before its
first sample leaves. The model is fitted on the ``PRE`` samples (already filled) before the run.

Bounded work: a token bucket per channel gains ``budget / 2`` operations (multiply-adds) per
scanned sample, up to ``BUCKET_S`` of them or the cost of the longest run, whichever is more;
filling a run of m samples costs about PRE·ORDER (the fit, when one is made) + ITERATIONS·m·ORDER²,
and a run the bucket cannot pay for stays as it is. The tokens follow the samples, not the calls, so the output does
not depend on the block size even when the bucket runs dry (deeply clipped music); a pathological
input (a full-scale square wave of 2-sample plateaus) is held to ``budget`` operations per sample,
and one push never spends more than the cap plus its own samples' worth. Mono scans one channel.
Nothing is allocated after ``__init__``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.blocking import pow2_at_least

ORDER = 32  # all-pole model order
PRE = 1024  # samples before a run the model is fitted on
POST = 32  # samples after a run that must have arrived (>= ORDER)
MIN_RUN = 2
TOL = 5e-7  # relative: 4 float32 steps at full scale
PEAK_TOL = 1e-5  # a run starts within this (relative) of the peak hold: a clip is the loudest there is
PEAK_TAU_S = 5.0
# integer PCM clips at -1 and 1 - 1 LSB (16 bit: 32767/32768; 8 bit: 127/128): at or above this both
# rails are one clip level, and either starts a run however the peak hold stands
FULL_SCALE = 1.0 - 2.0 ** -7
IN_CLIP = 4.0  # +12 dBFS: what callers let in (one absurd sample would hold the peak hold up for minutes)
WNC = 1e-4  # white-noise correction of the fit (a -40 dB floor): keeps high orders well conditioned
ITERATIONS = 3  # solves with the consistency constraint
MIN_RISE = 1e-3  # a fill must rise over the clip level by more than this (relative; 0.009 dB)
MAX_RISE = 4.0  # ... and by less than this factor (12 dB): anything more is a failed fit
REFIT = 128  # a run this close after the last fit reuses its model (bursts of short runs)
BUCKET_S = 0.1  # the token bucket holds this many seconds of budget (or the longest run's cost)

BUDGET = 2000.0  # operations per pushed sample (module docstring); the worst input costs ~0.02 of a core, stereo

# integer state: [written, scanned]; per channel: runs[ch] = [open run's start (-1: none), runs
# seen at the current level, where the model was last fitted]; fst[ch] = [peak hold, open run's value, current level, tokens]
_WPOS, _SCAN = 0, 1
_HOLD, _VAL, _LEVEL, _TOKENS = 0, 1, 2, 3


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
def _fill_run(ring, ch, mask, s, e, val, valid_from, refit, work_r, fit_a, fit_ra, est, fixed, idx, err, B,
              rhs, tmp):
    """Fill the clipped run ring[ch, s:e] (value ``val``) in place; returns the largest
    |filled| / |val| (1.0: nothing filled, 0.0: the model could not be fitted). ``refit``: fit
    the model anew into fit_a[ch] / fit_ra[ch], else use the one there (fitted a few ms ago)."""
    m = e - s
    work_a = fit_a[ch]
    work_ra = fit_ra[ch]
    if refit and not _fit(ring, ch, mask, s, valid_from, work_r, work_a, work_ra, tmp):
        return 0.0
    return _solve_run(ring, ch, mask, s, m, val, work_a, work_ra, est, fixed, idx, err, B, rhs)


@njit(nogil=True, cache=True)
def _fit(ring, ch, mask, s, valid_from, work_r, work_a, work_ra, tmp):
    """The all-pole model of the PRE samples before s: its error filter work_a and that filter's
    autocorrelation work_ra; False if there is too little history or the fit is degenerate."""
    p = ORDER
    ps = max(s - PRE, valid_from)
    if s - ps < 2 * p:
        return False
    for k in range(p + 1):
        work_r[k] = 0.0
    # the fit sees the past only: a 32-sample stretch after the run, windowed on its own, adds
    # a short window's smeared spectrum that wrecks the fit of a low tone (tested); those samples
    # enter through the prediction error below instead
    _accumulate_autocorr(ring, ch, mask, ps, s - ps, work_r, p, tmp)
    if not _levinson(work_r, p, work_a):
        return False
    for k in range(p + 1):
        acc = 0.0
        for j in range(p + 1 - k):
            acc += work_a[j] * work_a[j + k]
        work_ra[k] = acc
    return True


@njit(nogil=True, cache=True)
def _solve_run(ring, ch, mask, s, m, val, work_a, work_ra, est, fixed, idx, err, B, rhs):
    """The run's samples that minimise the model's prediction error, consistent with the clip,
    written into the ring unless the fill is implausible; returns the largest |filled| / |val|."""
    p = ORDER
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
    if peak <= 1.0 + MIN_RISE or peak >= MAX_RISE:  # a quantised plateau, or a failed fit: as it was
        return 1.0
    for i in range(m):
        ring[ch, (s + i) & mask] = est[i]
    return peak


@njit(nogil=True, cache=True)
def declip_push(x, x0, n, nch, ring, ist, runs, fst, cap, max_run, budget, decay, enabled, work_r, fit_a, fit_ra,
                est, fixed, idx, err, B, rhs, tmp):
    """Append x[x0:x0 + n] (its first ``nch`` channels) to the ring, find the clipped runs that
    ``POST`` samples have followed since the last call and fill them (if ``enabled``); returns the
    largest peak restored this call (linear ratio, 1.0: none). State: see the module constants."""
    mask = ring.shape[1] - 1
    w = ist[_WPOS]
    for i in range(n):
        for ch in range(nch):
            v = x[x0 + i, ch]
            ring[ch, (w + i) & mask] = v if math.isfinite(v) else 0.0  # NaN/Inf: silence
    w += n
    ist[_WPOS] = w
    valid_from = max(w - ring.shape[1], 0)
    run_cost = ITERATIONS * ORDER * ORDER
    per_sample = budget / 2.0
    peak = 1.0
    scan_to = w - POST
    for ch in range(nch):
        hold = fst[ch, _HOLD]
        val = fst[ch, _VAL]
        level = fst[ch, _LEVEL]
        tokens = fst[ch, _TOKENS]
        start = runs[ch, 0]
        seen = runs[ch, 1]
        for t in range(ist[_SCAN], scan_to):
            tokens = min(tokens + per_sample, cap)  # per sample, so no call boundary matters
            v = ring[ch, t & mask]
            a = abs(v)
            if start >= 0 and abs(v - val) <= TOL * abs(val):
                continue
            if start >= 0:  # the run ended at t
                m = t - start
                if m >= MIN_RUN:
                    if abs(abs(val) - level) <= TOL * level or min(abs(val), level) >= FULL_SCALE:
                        seen += 1
                    else:
                        level = abs(val)
                        seen = 1
                    refit = start - runs[ch, 2] > REFIT
                    cost = (PRE * ORDER if refit else 0) + m * run_cost
                    if enabled and seen >= 2 and m <= max_run and cost <= tokens:
                        tokens -= cost
                        r = _fill_run(ring, ch, mask, start, t, val, valid_from, refit, work_r, fit_a, fit_ra,
                                      est, fixed, idx, err, B, rhs, tmp)
                        if refit:
                            runs[ch, 2] = start if r > 0.0 else -REFIT - 1  # a failed fit is redone
                        if r > peak:
                            peak = r
                start = -1
            hold = max(a, hold * decay)
            if a > 0.0 and (a >= (1.0 - PEAK_TOL) * hold or a >= FULL_SCALE):
                start = t
                val = v
        runs[ch, 0] = start
        runs[ch, 1] = seen
        fst[ch, _HOLD] = hold
        fst[ch, _VAL] = val
        fst[ch, _LEVEL] = level
        fst[ch, _TOKENS] = tokens
    if scan_to > ist[_SCAN]:
        ist[_SCAN] = scan_to
    return peak


@njit(nogil=True, cache=True)
def declip_read(ring, ist, delay, n, nch, out):
    """out[:n] = the n samples that are ``delay`` samples older than the newest n (mono: channel 0
    in both of out's columns when it has two)."""
    mask = ring.shape[1] - 1
    s = ist[_WPOS] - delay - n
    for i in range(n):
        for ch in range(out.shape[1]):
            out[i, ch] = ring[min(ch, nch - 1), (s + i) & mask]


@njit(nogil=True, cache=True)
def declip_read_fade(ring, ist, delay, fade, n, nch, out):
    """``declip_read`` while the delay moves: out[i] crossfades (raised cosine) from the tap of the
    old delay ``fade[0]`` to the tap of ``delay`` over ``fade[2]`` samples, ``fade[1]`` of them left."""
    mask = ring.shape[1] - 1
    w = ist[_WPOS]
    s_new = w - delay - n
    s_old = w - fade[0] - n
    left = fade[1]
    total = fade[2]
    for i in range(n):
        if left > 0:
            a = 0.5 - 0.5 * math.cos(math.pi * (total - left + 1) / total)  # the new tap's weight, up to 1
            left -= 1
            for ch in range(out.shape[1]):
                c = min(ch, nch - 1)
                out[i, ch] = ring[c, (s_old + i) & mask] + a * (ring[c, (s_new + i) & mask] - ring[c, (s_old + i) & mask])
        else:
            for ch in range(out.shape[1]):
                out[i, ch] = ring[min(ch, nch - 1), (s_new + i) & mask]
    fade[1] = left


class Declipper:
    """Streaming de-clipper for one or two channels with a fixed ``delay`` (module docstring).

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
    channels : int
        1 or 2: the channels of what is pushed (a mono read fills both columns of a 2-column out).
    """

    def __init__(self, delay: int, max_push: int, sample_rate: float, budget: float = BUDGET,
                 max_delay: int | None = None, channels: int = 2):
        self.delay = int(delay)
        self.max_delay = max(int(max_delay if max_delay is not None else delay), self.delay)
        self.max_run = max(self.delay - POST, 0)
        size = pow2_at_least(PRE + self.max_delay + max_push + POST + 16)
        self.ring = np.zeros((2, size), np.float64)
        self.ist = np.zeros(2, np.int64)
        self.channels = int(channels)
        if self.channels not in (1, 2):
            raise ValueError(f"channels: {channels} (1 or 2)")
        self.runs = np.zeros((2, 3), np.int64)
        self.fst = np.zeros((2, 4), np.float64)
        self.budget = float(budget)
        longest = PRE * ORDER + max(self.max_delay - POST, 0) * ITERATIONS * ORDER * ORDER
        self.cap = max(self.budget / 2.0 * BUCKET_S * float(sample_rate), float(longest))
        self.decay = math.exp(-1.0 / (PEAK_TAU_S * float(sample_rate)))
        self._fade = np.zeros(3, np.int64)  # a delay change in progress: [old delay, samples left, length]
        m = max(self.max_delay - POST, 1)
        self._work = (np.zeros(ORDER + 1), np.zeros((2, ORDER + 1)), np.zeros((2, ORDER + 1)), np.zeros(m),
                      np.zeros(m, np.bool_), np.zeros(m, np.int64), np.zeros(m + ORDER),
                      np.zeros((m, ORDER + 1)), np.zeros(m), np.zeros(PRE))
        self.reset()
        # a look-ahead's first move while streaming reads with a fade: its kernel loaded here, not then
        # on the DSP thread (a cache load ~10 ms, a compile most of a second)
        declip_read_fade(self.ring, self.ist, self.delay, np.array([self.delay, 1, 1], np.int64), 0, self.channels,
                         np.zeros((1, self.channels), np.float32))

    def reset(self, delay: int | None = None) -> None:
        """Silence in the ring, ``delay`` samples of it already written (a new ``delay`` up to
        ``max_delay`` if given)."""
        if delay is not None:
            self.delay = min(max(int(delay), 0), self.max_delay)
            self.max_run = max(self.delay - POST, 0)
        self.ring.fill(0.0)
        self.ist[_WPOS] = self.delay
        self.ist[_SCAN] = self.delay
        self.runs[:, 0] = -1
        self.runs[:, 1] = 0
        self.runs[:, 2] = -REFIT - 1
        self.fst.fill(0.0)
        self.fst[:, _TOKENS] = self.cap
        self._fade.fill(0)

    @property
    def moving(self) -> bool:
        """Whether a ``move_delay`` crossfade is still in progress."""
        return bool(self._fade[1])

    def move_delay(self, delay: int, fade: int) -> None:
        """A new ``delay`` (up to ``max_delay``) while streaming: the ring keeps what it holds and
        ``read`` crossfades from the old delay's samples to the new one's over ``fade`` samples (no
        gap and no click: ``reset`` with a delay starts on silence). Meanwhile runs are filled up to
        what the shorter of the two delays allows, so both taps read filled runs. Call it when not
        ``moving``."""
        delay = min(max(int(delay), 0), self.max_delay)
        if delay == self.delay:
            return
        self._fade[0], self._fade[1], self._fade[2] = self.delay, max(int(fade), 1), max(int(fade), 1)
        self.max_run = max(min(self.delay, delay) - POST, 0)
        self.delay = delay

    def push(self, x: np.ndarray, x0: int, n: int, enabled: bool = True) -> float:
        """Add x[x0:x0 + n] ((frames, >= channels) array); returns the largest restored peak
        (dB, 0: none)."""
        r = declip_push(x, x0, n, self.channels, self.ring, self.ist, self.runs, self.fst, self.cap, self.max_run,
                        self.budget, self.decay, enabled, *self._work)
        return 20.0 * math.log10(r)

    def read(self, n: int, out: np.ndarray) -> None:
        """out[:n] = the samples pushed ``delay`` samples before the newest n (crossfading from the
        old delay's while a ``move_delay`` is in progress)."""
        if not self._fade[1]:
            declip_read(self.ring, self.ist, self.delay, n, self.channels, out)
            return
        declip_read_fade(self.ring, self.ist, self.delay, self._fade, n, self.channels, out)
        if not self._fade[1]:  # done: runs as long as the new delay allows
            self.max_run = max(self.delay - POST, 0)


def declip(x: np.ndarray, sample_rate: float, delay: int) -> np.ndarray:
    """A whole signal ([n, channels] float) through a fresh ``Declipper`` of ``delay``, aligned
    with x: what a streaming user of that delay (the de-limiter) restores, for offline use."""
    x = np.ascontiguousarray(x, np.float32)
    n, nch = x.shape
    chunk = 4096
    d = Declipper(delay, chunk, sample_rate, channels=nch)
    padded = np.concatenate([x, np.zeros((delay, nch), np.float32)])
    out = np.zeros((n + delay, nch), np.float32)
    for s in range(0, n + delay, chunk):
        m = min(chunk, n + delay - s)
        d.push(padded, s, m)
        d.read(m, out[s:])
    return out[delay:]
