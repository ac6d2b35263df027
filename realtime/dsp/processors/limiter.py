"""Lookahead peak limiter, stereo-linked, with a provable ceiling.

Gain computer, per sample n (W = lookahead + 1 samples):
  r[n]  = min(1, ceiling / max_ch |drive * x[n]|)        required gain for this sample
  h[n]  = min(r[n-W+1 .. n])                             sliding-window minimum (monotonic deque)
  h2[n] = min(h[n], h2[n-1] + c_rel * (h[n] - h2[n-1]))  instant attack, one-pole release
  g[n]  = mean(h2[n-W+1 .. n])                           box filter = linear attack ramp
  y[n]  = drive * x[n-L] * g[n]                          (L = W - 1 = latency)
Every h2 in the box window covers sample n-L, so g[n] <= r[n-L] and |y[n]| <= ceiling: the
gain has fully ramped down by the time the peak leaves the delay line. With lookahead 0 this is
an instant-attack limiter.

Detect "true-peak": r[n] is held to the waveform between samples as well (inter-sample peaks, 4x
oversampled as in ITU-R BS.1770): the peak of sample s = n-D is the largest of |x[s]| and the three
interpolated points on each side of it (Kaiser-windowed sinc phases of 24 taps, which read up to
x[s+12], so D = 12). The detector runs D samples behind the input and the window shrinks to W =
L - D + 1, so the latency stays the lookahead, which is raised to TP_MIN_LOOKAHEAD_MS if it is less
(a ramp shorter than that makes inter-sample peaks of its own). Measured on the demo track with a
-1 dB ceiling, 4x oversampled: -0.99 dBTP at 1 ms and 5 ms of look-ahead and 6 or 12 dB of drive,
where sample-peak detection gave up to +1.9 dBTP (lookahead 0) and -0.17 (5 ms). 12 taps (as
BS.1770's meter filter) under-read high treble by up to 0.3 dB.

Non-finite input is treated as silence. The ceiling is smoothed, but
a lowered one enters r[n] at once (with lookahead): the output clip, L samples on, uses the
smoothed one, so the gain is down before a sample reaches it. A final clip (float rounding; a
ceiling lowered with no lookahead) backs the guarantee.

The lookahead (and so the latency) is applied by ``reset``; delay lines are allocated for the
10 ms maximum at prepare, and the chain sizes its dry-path compensation from ``max_latency``, so
nothing is reallocated. When the knob moves while streaming (``process`` notices it at the next
block) a second gain computer and delay line (the idle one of two) takes the new lookahead, set up
on the last 2W samples of the running one's delay line as if it had run with it all along
(``_prime``; h2 starts from the running one's), and the output crossfades from the old limiter's to
the new one's over ``FADE_MS`` (raised cosine). Both are under the ceiling, so their mix is too.
The reported latency is the new one at once (the chain's dry path reads it). Resetting instead
dropped the delay line: a click (a jump of 0.17 on a sine whose steps are 0.014) and a gap of the
lookahead's length. A further change waits for the crossfade to end.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.blocking import check_block, pow2_at_least
from realtime.dsp.processor import LookaheadLatency, Param, Processor, Readout
from realtime.dsp.processors import register

MAX_LOOKAHEAD_MS = 10.0
DETECT = ("sample-peak", "true-peak")
TP_TAPS = 24
TP_MIN_LOOKAHEAD_MS = 1.0
TP_DELAY = TP_TAPS // 2  # samples the true-peak detector runs behind the input: its interpolator's half length
FADE_MS = 10.0  # a lookahead change crossfades from the old gain computer to the new one over this
F32_SAFE = 1.0 - 2.5e-7  # clip a little under the ceiling so float32 rounding cannot exceed it

# int state slots
_W_POS, _T, _HEAD, _TAIL, _BOX_I, _L, _D = range(7)
# float state slots
_DRIVE, _CEIL, _H2, _SUM, _ISP = range(5)


@njit(nogil=True, cache=True, inline="always")
def _slide_min(dq_val, dq_t, qmask, head, tail, r, t, W):
    """Sample ``r`` at time ``t`` into the monotonic queue of the sliding minimum over the last W
    samples (values rise from head to tail); the queue's new (head, tail)."""
    while tail > head and dq_val[(tail - 1) & qmask] >= r:
        tail -= 1
    dq_val[tail & qmask] = r
    dq_t[tail & qmask] = t
    tail += 1
    while dq_t[head & qmask] <= t - W:
        head += 1
    return head, tail


def true_peak_fir() -> np.ndarray:
    """The interpolator of the true-peak detector: (3, TP_TAPS) taps, row j-1 giving the point j/4 of
    the way from x[a] to x[a+1] from x[a-11 .. a+12] (Kaiser-windowed sinc, each row summing to 1)."""
    k = np.arange(-(TP_TAPS // 2 - 1), TP_TAPS // 2 + 1, dtype=np.float64)
    half = TP_TAPS / 2.0
    rows = []
    for j in (1, 2, 3):
        t = k - j / 4.0  # the taps' distances from the point: the phases of one 96-tap prototype
        h = np.sinc(t) * np.i0(6.0 * np.sqrt(np.clip(1.0 - (t / half) ** 2, 0.0, None))) / np.i0(6.0)
        rows.append(h / h.sum())
    return np.ascontiguousarray(rows)


@njit(nogil=True, cache=True, inline="always")
def _isp_after(delay, a, fir, dmask, nch):
    """The largest |interpolated point| between samples a and a + 1, over the channels."""
    half = fir.shape[1] // 2
    pk = 0.0
    for j in range(fir.shape[0]):
        for ch in range(nch):
            v = 0.0
            for i in range(fir.shape[1]):
                v += fir[j, i] * delay[(a - half + 1 + i) & dmask, ch]
            v = abs(v)
            if v > pk:
                pk = v
    return pk


@njit(nogil=True, cache=True, inline="always")
def _peak_at(delay, k, D, fir, dmask, nch, before):
    """The detector's peak for sample s = k - D (the delay line holds samples up to k), and the
    inter-sample peak after it: its own |x|, largest over the channels, and when D > 0 the
    inter-sample peaks on both sides of it (``before``: the last call's ``after``)."""
    s = k - D
    pk = 0.0
    for ch in range(nch):
        a = abs(delay[s & dmask, ch])
        if a > pk:
            pk = a
    after = 0.0
    if D > 0:
        after = _isp_after(delay, s, fir, dmask, nch)
        pk = max(pk, before, after)
    return pk, after


@njit(nogil=True, cache=True)
def _limiter_kernel(block, values, fs, ist, delay, dq_val, dq_t, box, gain_out, k, readings, fir):
    """k = [drive smoothing, ceiling smoothing, sample rate]; fir: the true-peak interpolator."""
    drive_t = 10.0 ** (values[0] / 20.0)
    ceil_t = 10.0 ** (values[1] / 20.0)
    c_rel = 1.0 - math.exp(-1.0 / (values[2] * 1e-3 * k[2]))
    cd = k[0]
    cc = k[1]
    drive = fs[_DRIVE]
    ceil = fs[_CEIL]
    h2 = fs[_H2]
    s = fs[_SUM]
    isp = fs[_ISP]
    wpos = ist[_W_POS]
    t = ist[_T]
    head = ist[_HEAD]
    tail = ist[_TAIL]
    bi = ist[_BOX_I]
    L = ist[_L]
    D = ist[_D]
    W = L - D + 1  # the detector runs D behind: the window left between it and the output
    dmask = delay.shape[0] - 1
    qmask = dq_val.shape[0] - 1
    nch = block.shape[1]
    gmin = 1.0
    for n in range(block.shape[0]):
        drive += cd * (drive_t - drive)
        ceil += cc * (ceil_t - ceil)
        wi = wpos & dmask
        for ch in range(nch):
            v = block[n, ch] * drive
            if not math.isfinite(v):  # keeps the output finite and the ceiling guarantee total
                v = 0.0
            delay[wi, ch] = v
        pk, isp = _peak_at(delay, wpos, D, fir, dmask, nch, isp)
        # a lowered ceiling counts at once here: the output clip, L samples on, uses the smoothed
        # one, which has not come down as far yet (at the target it clipped for ~20 ms)
        c = min(ceil, ceil_t) if L > 0 else ceil
        r = 1.0 if pk <= c else c / pk
        head, tail = _slide_min(dq_val, dq_t, qmask, head, tail, r, t, W)
        h = dq_val[head & qmask]
        # instant attack, exponential release
        if h < h2:
            h2 = h
        else:
            h2 += c_rel * (h - h2)
        # box filter (running sum, re-summed exactly once per lap against float drift)
        s += h2 - box[bi]
        box[bi] = h2
        bi += 1
        if bi >= W:
            bi = 0
            s = 0.0
            for i in range(W):
                s += box[i]
        g = s / W
        if g > 1.0:
            g = 1.0
        gain_out[n] = g
        if g < gmin:
            gmin = g
        ri = (wpos - L) & dmask
        lim = ceil * F32_SAFE
        for ch in range(nch):
            y = delay[ri, ch] * g
            if y > lim:
                y = lim
            elif y < -lim:
                y = -lim
            block[n, ch] = y
        wpos += 1
        t += 1
    fs[_DRIVE] = drive
    fs[_CEIL] = ceil
    fs[_H2] = h2
    fs[_SUM] = s
    fs[_ISP] = isp
    ist[_W_POS] = wpos
    ist[_T] = t
    ist[_HEAD] = head
    ist[_TAIL] = tail
    ist[_BOX_I] = bi
    readings[0] = 20.0 * math.log10(max(gmin, 1e-6))  # gain reduction over the block, dB


@njit(nogil=True, cache=True)
def _prime(delay, fs, ist, dq_val, dq_t, box, L, D, ceil_t, c_rel, fir):
    """Set a gain computer of lookahead L and detector delay D (ist/fs: a copy of the running one's,
    same delay line) up on the delay line's last 2W - 1 samples (W = L - D + 1), as if it had run
    with them all along: the sliding minimum holds their required gains, the box the h2 of the last
    W (h2 starting from the running one's, released by c_rel), so each output sample's gain covers
    the sample it reads. The ceiling they are held to is today's (smoothed, or a lowered target).
    Needs a delay line of at least 2W + D + TP_TAPS samples."""
    W = L - D + 1
    dmask = delay.shape[0] - 1
    qmask = dq_val.shape[0] - 1
    nch = delay.shape[1]
    wpos = ist[_W_POS]
    t = ist[_T]
    c = min(fs[_CEIL], ceil_t) if L > 0 else fs[_CEIL]
    h2 = fs[_H2]
    head = 0
    tail = 0
    s = 0.0
    first = wpos - 2 * W + 1
    isp = _isp_after(delay, first - D - 1, fir, dmask, nch) if D > 0 else 0.0
    for k in range(first, wpos):
        tk = t - (wpos - k)
        pk, isp = _peak_at(delay, k, D, fir, dmask, nch, isp)
        r = 1.0 if pk <= c else c / pk
        head, tail = _slide_min(dq_val, dq_t, qmask, head, tail, r, tk, W)
        if k >= wpos - W:
            h = dq_val[head & qmask]
            if h < h2:
                h2 = h
            else:
                h2 += c_rel * (h - h2)
            box[k - (wpos - W)] = h2
            s += h2
    fs[_H2] = h2
    fs[_SUM] = s
    fs[_ISP] = isp
    ist[_HEAD] = head
    ist[_TAIL] = tail
    ist[_BOX_I] = 0
    ist[_L] = L
    ist[_D] = D


@njit(nogil=True, cache=True)
def _crossfade(y, y_new, gain, gain_new, fade, readings):
    """y = the old limiter's output fading (raised cosine) into y_new, the new one's, over fade[1]
    samples (fade[0] of them left); gain likewise (the applied gain), readings[0] its minimum (dB)."""
    left = fade[0]
    total = fade[1]
    gmin = 1.0
    for n in range(y.shape[0]):
        a = 1.0
        if left > 0:
            a = 0.5 - 0.5 * math.cos(math.pi * (total - left + 1) / total)
            left -= 1
        for ch in range(y.shape[1]):
            y[n, ch] += a * (y_new[n, ch] - y[n, ch])
        g = gain[n] + a * (gain_new[n] - gain[n])
        gain[n] = g
        if g < gmin:
            gmin = g
    fade[0] = left
    readings[0] = 20.0 * math.log10(max(gmin, 1e-6))


@register
class Limiter(LookaheadLatency, Processor):
    kind = "limiter"
    params = (
        Param("input_gain_db", "Drive", 0.0, 24.0, 0.0, unit="dB", smoothing_ms=20.0),
        Param("ceiling_db", "Ceiling", -24.0, 0.0, -1.0, unit="dB", smoothing_ms=20.0),
        Param("release_ms", "Release", 1.0, 1000.0, 100.0, unit="ms", scale="log", smoothing_ms=0.0),
        Param("lookahead_ms", "Lookahead", 0.0, MAX_LOOKAHEAD_MS, 5.0, unit="ms", smoothing_ms=0.0),
        Param("detect", "Detect", 0.0, len(DETECT) - 1.0, 0.0, choices=DETECT, step=1.0, smoothing_ms=0.0),
    )
    readouts = (Readout("gr_db", "GR", "dB", -24.0, 0.0, kind="gr"),)

    def _prepare(self) -> None:
        sr = self.sample_rate
        wmax = self._size_lookahead(MAX_LOOKAHEAD_MS) + 1

        def bank():  # a gain computer with its delay line: two, for a crossfade when the lookahead moves
            return (np.zeros(5, np.float64), np.zeros(7, np.int64),  # 2W back and the detector's reach: _prime
                    np.zeros((pow2_at_least(2 * wmax + TP_DELAY + TP_TAPS), self.channels), np.float64),
                    np.zeros(pow2_at_least(wmax + 1), np.float64), np.zeros(pow2_at_least(wmax + 1), np.int64),
                    np.zeros(wmax, np.float64))

        self._banks = (bank(), bank())
        self._cur = 0  # the bank playing; during a crossfade the one faded out
        self._gain = np.zeros(max(1, self.max_block), np.float64)  # per-sample gain of last block
        self._gain_b = np.zeros(max(1, self.max_block), np.float64)  # the incoming bank's, during a crossfade
        self._xb = np.zeros((max(1, self.max_block), self.channels), np.float32)  # its copy of the block
        self._fade = np.zeros(2, np.int64)  # [samples left, length] of a crossfade in progress
        self._fade_len = max(1, int(round(FADE_MS * 1e-3 * sr)))
        self._k = np.array([self.params[0].smoothing_coeff(sr), self.params[1].smoothing_coeff(sr), sr])
        self._fir = true_peak_fir()
        self.readings = np.zeros(1, np.float32)  # gain reduction (dB, <= 0) of the last block
        # a knob's first move while streaming primes and crossfades: their kernels loaded here, not
        # then on the DSP thread (a cache load 10 ms, a compile 0.9 s of a late stream)
        fs, ist, delay, dq_val, dq_t, box = self._banks[1]
        _prime(delay, fs, ist, dq_val, dq_t, box, 0, 0, 1.0, 0.5, self._fir)
        _crossfade(self._xb[:1], self._xb[:1], self._gain[:1], self._gain_b[:1], np.zeros(2, np.int64), self.readings)

    def reset(self) -> None:
        # The lookahead is (re)applied here: it sets the latency.
        self._set_lookahead(self.values[3])
        self._cur = 0
        self._fade.fill(0)
        for fs, ist, delay, _, _, box in self._banks:
            delay.fill(0.0)
            box.fill(1.0)  # silence before the start needed no gain reduction
            fs[:] = (10.0 ** (self.values[0] / 20.0), 10.0 ** (self.values[1] / 20.0), 1.0,
                     self._L - self._D + 1.0, 0.0)
            ist.fill(0)
            ist[_L] = self._L
            ist[_D] = self._D
        self._gain.fill(1.0)
        self.readings.fill(0.0)

    _D = 0  # the detector's delay: TP_DELAY detecting true peaks, else 0

    def _detector_delay(self) -> int:
        return TP_DELAY if self.values[4] >= 0.5 else 0

    def _lookahead_samples(self, ms: float) -> int:
        L = super()._lookahead_samples(ms)
        if not self._detector_delay():
            return L
        # true peaks: the detector's delay, and a ramp after it (see TP_MIN_LOOKAHEAD_MS)
        return max(L, TP_DELAY + 1, super()._lookahead_samples(TP_MIN_LOOKAHEAD_MS))

    def _set_lookahead(self, ms: float) -> int:
        self._D = self._detector_delay()
        return super()._set_lookahead(ms)

    def _lookahead_moved(self, ms: float) -> bool:
        # Detect switched: the detector's delay and window change, the same crossfade takes it
        return super()._lookahead_moved(ms) or self._detector_delay() != self._D

    def _move_lookahead(self) -> None:
        """The knob moved while streaming: the idle bank takes the running one's delay line and
        smoothers and is primed for the new lookahead; the crossfade starts."""
        run, new = self._banks[self._cur], self._banks[1 - self._cur]
        for a, b in zip(run, new):
            b[...] = a
        L = self._set_lookahead(self.values[3])
        c_rel = 1.0 - math.exp(-1.0 / (self.values[2] * 1e-3 * self.sample_rate))
        fs, ist, delay, dq_val, dq_t, box = new
        _prime(delay, fs, ist, dq_val, dq_t, box, L, self._D, 10.0 ** (self.values[1] / 20.0), c_rel, self._fir)
        self._fade[0] = self._fade[1] = self._fade_len

    def process(self, block: np.ndarray) -> None:
        check_block(block.shape[0], self.max_block)  # its gain buffers hold max_block: past them, a segfault
        if not self._fade[0] and self._lookahead_moved(self.values[3]):
            self._move_lookahead()
        fs, ist, delay, dq_val, dq_t, box = self._banks[self._cur]
        if not self._fade[0]:
            _limiter_kernel(block, self.values, fs, ist, delay, dq_val, dq_t, box, self._gain, self._k,
                            self.readings, self._fir)
            return
        n = block.shape[0]
        xb = self._xb[:n]
        xb[...] = block
        _limiter_kernel(block, self.values, fs, ist, delay, dq_val, dq_t, box, self._gain, self._k, self.readings,
                        self._fir)
        fs, ist, delay, dq_val, dq_t, box = self._banks[1 - self._cur]
        _limiter_kernel(xb, self.values, fs, ist, delay, dq_val, dq_t, box, self._gain_b, self._k, self.readings,
                        self._fir)
        _crossfade(block, xb, self._gain, self._gain_b, self._fade, self.readings)
        if not self._fade[0]:  # the new lookahead plays alone from the next block
            self._cur = 1 - self._cur

    @property
    def gain(self) -> np.ndarray:
        """Per-sample linked gain applied to the last block (a view; valid until the next block)."""
        return self._gain


def limit(x: np.ndarray, sample_rate: float, ceiling_db: float = -1.0, release_ms: float = 100.0,
          lookahead_ms: float = 5.0, input_gain_db: float = 0.0,
          true_peak: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Offline limiting with the same kernel as the streaming processor.

    ``x``: (n, ch) or (n,) float audio. Returns ``(y, gain)``: y float32 shaped like x, gain float64
    (n,), the linked gain curve with y ~= delay(x * drive, latency) * gain (equal except where the
    float32 rounding guard clips). Latency = round(lookahead_ms * sample_rate / 1000) samples (at
    least TP_MIN_LOOKAHEAD_MS and TP_DELAY + 1 samples with ``true_peak``, which holds the waveform
    between samples to the ceiling too).
    """
    x = np.asarray(x)
    mono = x.ndim == 1
    y = np.array(x.reshape(-1, 1) if mono else x, dtype=np.float32, order="C", copy=True)
    lim = Limiter(ceiling_db=ceiling_db, release_ms=release_ms, lookahead_ms=lookahead_ms,
                  input_gain_db=input_gain_db, detect=float(bool(true_peak)))
    lim.prepare(sample_rate, max(1, y.shape[0]), y.shape[1])
    lim.process(y)
    gain = lim.gain[: y.shape[0]].copy()
    return (y[:, 0] if mono else y), gain
