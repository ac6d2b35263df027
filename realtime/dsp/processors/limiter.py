"""Lookahead peak limiter, stereo-linked, with a provable ceiling.

Gain computer, per sample n (W = lookahead + 1 samples):
  r[n]  = min(1, ceiling / max_ch |drive * x[n]|)        required gain for this sample
  h[n]  = min(r[n-W+1 .. n])                             sliding-window minimum (monotonic deque)
  h2[n] = min(h[n], h2[n-1] + c_rel * (h[n] - h2[n-1]))  instant attack, one-pole release
  g[n]  = mean(h2[n-W+1 .. n])                           box filter = linear attack ramp
  y[n]  = drive * x[n-L] * g[n]                          (L = W - 1 = latency)
Every h2 in the box window covers sample n-L, so g[n] <= r[n-L] and |y[n]| <= ceiling: the
gain has fully ramped down by the time the peak leaves the delay line. With lookahead 0 this is
an instant-attack limiter. Non-finite input is treated as silence. The ceiling is smoothed, but
a lowered one enters r[n] at once (with lookahead): the output clip, L samples on, uses the
smoothed one, so the gain is down before a sample reaches it. A final clip (float rounding; a
ceiling lowered with no lookahead) backs the guarantee.

The lookahead (and so the latency) is applied by ``reset``, also when the knob moves while
streaming (``process`` notices and resets: a gap of the lookahead's length): delay lines are
allocated for the 10 ms maximum at prepare, and the chain sizes its dry-path compensation from
``max_latency``, so nothing is reallocated.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.blocking import pow2_at_least
from realtime.dsp.processor import LookaheadLatency, Param, Processor, Readout
from realtime.dsp.processors import register

MAX_LOOKAHEAD_MS = 10.0
F32_SAFE = 1.0 - 2.5e-7  # clip a little under the ceiling so float32 rounding cannot exceed it

# int state slots
_W_POS, _T, _HEAD, _TAIL, _BOX_I, _L = range(6)
# float state slots
_DRIVE, _CEIL, _H2, _SUM = range(4)


@njit(nogil=True, cache=True)
def _limiter_kernel(block, values, fs, ist, delay, dq_val, dq_t, box, gain_out, k, readings):
    """k = [drive smoothing, ceiling smoothing, sample rate]."""
    drive_t = 10.0 ** (values[0] / 20.0)
    ceil_t = 10.0 ** (values[1] / 20.0)
    c_rel = 1.0 - math.exp(-1.0 / (values[2] * 1e-3 * k[2]))
    cd = k[0]
    cc = k[1]
    drive = fs[_DRIVE]
    ceil = fs[_CEIL]
    h2 = fs[_H2]
    s = fs[_SUM]
    wpos = ist[_W_POS]
    t = ist[_T]
    head = ist[_HEAD]
    tail = ist[_TAIL]
    bi = ist[_BOX_I]
    L = ist[_L]
    W = L + 1
    dmask = delay.shape[0] - 1
    qmask = dq_val.shape[0] - 1
    nch = block.shape[1]
    gmin = 1.0
    for n in range(block.shape[0]):
        drive += cd * (drive_t - drive)
        ceil += cc * (ceil_t - ceil)
        pk = 0.0
        wi = wpos & dmask
        for ch in range(nch):
            v = block[n, ch] * drive
            if not math.isfinite(v):  # keeps the output finite and the ceiling guarantee total
                v = 0.0
            delay[wi, ch] = v
            a = abs(v)
            if a > pk:
                pk = a
        # a lowered ceiling counts at once here: the output clip, L samples on, uses the smoothed
        # one, which has not come down as far yet (at the target it clipped for ~20 ms)
        c = min(ceil, ceil_t) if L > 0 else ceil
        r = 1.0 if pk <= c else c / pk
        # sliding minimum over the last W samples
        while tail > head and dq_val[(tail - 1) & qmask] >= r:
            tail -= 1
        dq_val[tail & qmask] = r
        dq_t[tail & qmask] = t
        tail += 1
        while dq_t[head & qmask] <= t - W:
            head += 1
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
    ist[_W_POS] = wpos
    ist[_T] = t
    ist[_HEAD] = head
    ist[_TAIL] = tail
    ist[_BOX_I] = bi
    readings[0] = 20.0 * math.log10(max(gmin, 1e-6))  # gain reduction over the block, dB


@register
class Limiter(LookaheadLatency, Processor):
    kind = "limiter"
    params = (
        Param("input_gain_db", "Drive", 0.0, 24.0, 0.0, unit="dB", smoothing_ms=20.0),
        Param("ceiling_db", "Ceiling", -24.0, 0.0, -1.0, unit="dB", smoothing_ms=20.0),
        Param("release_ms", "Release", 1.0, 1000.0, 100.0, unit="ms", scale="log", smoothing_ms=0.0),
        Param("lookahead_ms", "Lookahead", 0.0, MAX_LOOKAHEAD_MS, 5.0, unit="ms", smoothing_ms=0.0),
    )
    readouts = (Readout("gr_db", "GR", "dB", -24.0, 0.0, kind="gr"),)

    def _prepare(self) -> None:
        sr = self.sample_rate
        wmax = self._size_lookahead(MAX_LOOKAHEAD_MS) + 1
        self._delay = np.zeros((pow2_at_least(wmax), self.channels), np.float64)
        self._dq_val = np.zeros(pow2_at_least(wmax + 1), np.float64)
        self._dq_t = np.zeros(pow2_at_least(wmax + 1), np.int64)
        self._box = np.zeros(wmax, np.float64)
        self._gain = np.zeros(max(1, self.max_block), np.float64)  # per-sample gain of last block
        self._fs = np.zeros(4, np.float64)
        self._ist = np.zeros(6, np.int64)
        self._k = np.array([self.params[0].smoothing_coeff(sr), self.params[1].smoothing_coeff(sr), sr])
        self.readings = np.zeros(1, np.float32)  # gain reduction (dB, <= 0) of the last block

    def reset(self) -> None:
        # The lookahead is (re)applied here: it sets the latency.
        self._set_lookahead(self.values[3])
        self._delay.fill(0.0)
        self._box.fill(1.0)  # silence before the start needed no gain reduction
        self._fs[:] = (10.0 ** (self.values[0] / 20.0), 10.0 ** (self.values[1] / 20.0), 1.0, self._L + 1.0)
        self._ist.fill(0)
        self._ist[_L] = self._L
        self._gain.fill(1.0)
        self.readings.fill(0.0)

    def process(self, block: np.ndarray) -> None:
        if self._lookahead_moved(self.values[3]):
            self.reset()
        _limiter_kernel(block, self.values, self._fs, self._ist, self._delay, self._dq_val, self._dq_t,
                        self._box, self._gain, self._k, self.readings)

    @property
    def gain(self) -> np.ndarray:
        """Per-sample linked gain applied to the last block (a view; valid until the next block)."""
        return self._gain


def limit(x: np.ndarray, sample_rate: float, ceiling_db: float = -1.0, release_ms: float = 100.0,
          lookahead_ms: float = 5.0, input_gain_db: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Offline limiting with the same kernel as the streaming processor.

    ``x``: (n, ch) or (n,) float audio. Returns ``(y, gain)``: y float32 shaped like x, gain float64
    (n,), the linked gain curve with y ~= delay(x * drive, latency) * gain (equal except where the
    float32 rounding guard clips). Latency = round(lookahead_ms * sample_rate / 1000) samples.
    """
    x = np.asarray(x)
    mono = x.ndim == 1
    y = np.array(x.reshape(-1, 1) if mono else x, dtype=np.float32, order="C", copy=True)
    lim = Limiter(ceiling_db=ceiling_db, release_ms=release_ms, lookahead_ms=lookahead_ms,
                  input_gain_db=input_gain_db)
    lim.prepare(sample_rate, max(1, y.shape[0]), y.shape[1])
    lim.process(y)
    gain = lim.gain[: y.shape[0]].copy()
    return (y[:, 0] if mono else y), gain
