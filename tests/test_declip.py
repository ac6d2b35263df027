"""De-clipper (realtime/dsp/declip.py): clipped runs filled from the waveform around them, in the
de-limiter's look-ahead; un-clipped audio bit-exact; any block size the same; work bounded."""
from __future__ import annotations

import time

import numpy as np
import pytest

from realtime.dsp.declip import MIN_RUN, Declipper

SR = 44100
DELAY = 256


def _tones(seconds=3.0, seed=0):
    """Stereo music-like test signal: a bass line and decaying harmonic notes, peak 1."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = np.zeros(n)
    for start in np.arange(0.0, seconds, 0.25):
        s = int(start * SR)
        f0 = rng.choice([110.0, 146.8, 164.8, 196.0, 220.0])
        m = n - s
        env = np.exp(-t[:m] / rng.uniform(0.2, 0.6))
        for h in range(1, 6):
            x[s:] += env * np.sin(2 * np.pi * f0 * h * t[:m] + rng.uniform(0, 2 * np.pi)) / h
    x += 0.8 * np.sin(2 * np.pi * 55.0 * t)
    x = np.stack([x, 0.8 * x + 0.2 * np.roll(x, 300)], 1)
    return (x / np.abs(x).max()).astype(np.float32)


def _stream(x, block=128, budget=None, enabled=True):
    """x through a Declipper in blocks; returns the output aligned with x (delay removed)."""
    d = Declipper(DELAY, 4096, SR) if budget is None else Declipper(DELAY, 4096, SR, budget=budget)
    xx = np.concatenate([x, np.zeros((DELAY, 2), np.float32)])
    out = np.zeros_like(xx)
    peak = 0.0
    for s in range(0, len(xx), block):
        n = min(block, len(xx) - s)
        peak = max(peak, d.push(xx, s, n, enabled))
        d.read(n, out[s:s + n])
    return out[DELAY:], peak


def _sisdr(est, ref):
    est, ref = est.ravel().astype(np.float64), ref.ravel().astype(np.float64)
    t = ref * np.dot(est, ref) / np.dot(ref, ref)
    return 10 * np.log10(np.dot(t, t) / np.dot(est - t, est - t))


def _float_clip(x, c):
    """A clipper that computes a gain in float32, as plugins do: the pinned samples differ in
    their last bits."""
    g = np.minimum(np.float32(1.0), np.float32(c) / np.maximum(np.abs(x), np.float32(1e-9)))
    return (x * g).astype(np.float32)


@pytest.mark.parametrize("clipper", [lambda x, c: np.clip(x, -c, c), _float_clip])
def test_clipped_runs_are_filled_in_and_stay_consistent_with_the_clip(clipper):
    x = _tones()
    c = np.float32(0.7)  # 3 dB into the clipper
    y = clipper(x, c)
    out, peak = _stream(y)
    gain = _sisdr(out, x) - _sisdr(y, x)
    assert gain > 8.0, gain  # measured 16.3 dB on this signal (input 28.2 dB, 1.1 % pinned)
    assert peak > 1.0  # the readout: restored peak over the clip level, dB
    pinned = np.abs(y) >= c * (1 - 1e-6)
    changed = out != y
    assert changed.any() and not (changed & ~pinned).any()  # only pinned samples move
    filled = changed & pinned
    assert np.all(np.sign(out[filled]) == np.sign(y[filled]))
    assert np.all(np.abs(out[filled]) >= np.abs(y[filled]) * (1 - 1e-6))  # at or beyond the clip level


def test_output_is_the_same_for_any_block_size_and_off_is_the_delayed_input():
    x = _tones(2.0, seed=1)
    y = np.clip(x, -0.6, 0.6)
    ref, _ = _stream(y, 128)
    for block in (1, 77, 1000, 4096):
        assert np.array_equal(_stream(y, block)[0], ref), block
    off, peak = _stream(y, 128, enabled=False)
    assert np.array_equal(off, y) and peak == 0.0


def test_unclipped_audio_passes_bit_exact():
    x = _tones(2.0, seed=2)
    rng = np.random.default_rng(5)
    for sig in (0.89 * x, 0.5 * rng.standard_normal((SR, 2)).astype(np.float32), np.zeros((SR, 2), np.float32)):
        out, peak = _stream(sig.astype(np.float32))
        assert np.array_equal(out, sig.astype(np.float32)) and peak == 0.0


def test_long_runs_and_quiet_plateaus_are_left_alone():
    # a square wave's plateaus are longer than what the look-ahead can fill; a plateau well under
    # the recent peak is no clip; a single pinned sample is no run
    sq = np.repeat(np.tile([0.9, -0.9], 40), 400).astype(np.float32)
    quiet = _tones(1.0, seed=3)[:, 0] * 0.9
    quiet[20000:20010] = 0.3  # a flat stretch at a third of the peak
    single = np.sin(2 * np.pi * 100 * np.arange(SR) / SR).astype(np.float32)
    assert MIN_RUN >= 2
    for sig in (sq, quiet.astype(np.float32), single):
        x = np.stack([sig, sig], 1)
        assert np.array_equal(_stream(x)[0], x)


def test_work_per_sample_is_bounded_on_pathological_input():
    # two-sample plateaus at full scale: a run every other sample; the budget caps the fills
    x = np.tile(np.array([0.9, 0.9, -0.9, -0.9], np.float32), SR // 4)
    x = np.stack([x, x], 1)
    t0 = time.thread_time()
    _stream(x, budget=500.0)
    bounded = time.thread_time() - t0
    t0 = time.thread_time()
    _stream(x, budget=1e12)
    unbounded = time.thread_time() - t0
    assert bounded < 0.5 * unbounded, (bounded, unbounded)  # measured 0.05x; a ratio, not a time
