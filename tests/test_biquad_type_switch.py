"""A biquad's type changed live: the new filter catches up on the recent input before the fade."""
from __future__ import annotations

import numpy as np
import pytest

from realtime.dsp import processors as P
from realtime.dsp.processors.biquad import PRIME_MS, PRIME_RATE, TYPE_FADE_MS

SR = 48000


def switch(a, b, f0, q, tone_hz, sizes=(128,), sr=SR, seconds=1.0):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.1 * np.sin(2 * np.pi * tone_hz * t))[:, None].astype(np.float32)
    p = P.create("biquad", type=a, freq_hz=f0, q=q, gain_db=12.0)
    p.prepare(sr, max(sizes), 1)
    at = len(x) // 2
    y = x.copy()
    i = k = 0
    changed = False
    while i < len(y):
        if not changed and i >= at:
            p.set_param("type", b)
            changed, at = True, i
        n = sizes[k % len(sizes)]
        p.process(y[i:i + n])
        i, k = i + n, k + 1
    return y[:, 0], at


@pytest.mark.parametrize("a,b,f0,q", [("lowpass", "peak", 100.0, 10.0), ("peak", "lowpass", 60.0, 4.0),
                                      ("lowshelf", "peak", 60.0, 4.0)])
def test_a_type_changed_live_does_not_dip_below_either_filter(a, b, f0, q):
    """The new filter started from rest and rang in for ~Q / (pi f) seconds, longer than the 10 ms
    fade: a 100 Hz tone through lowpass -> peak (100 Hz, Q 10) fell 8 dB below both filters' levels
    for 93 ms (peak -> lowpass at 60 Hz, Q 4: 5.6 dB for 35 ms). Each output period's peak now stays
    within 2.5 dB of the lower of the two levels: the fade itself mixes two filters whose phases at
    the tone differ (by 90 degrees between a peak and a lowpass at their corner: 3 dB at mid-fade)."""
    y, at = switch(a, b, f0, q, f0)
    before = np.abs(y[at - 4800:at]).max()
    after = np.abs(y[-4800:]).max()
    period = int(SR / f0) + 1
    env = np.array([np.abs(y[k:k + period]).max() for k in range(at, at + SR // 5, 48)])
    assert env.min() >= min(before, after) / 10 ** (2.5 / 20), (20 * np.log10(env.min() / min(before, after)))
    # and the new type plays, once it has caught up and faded in
    done = at + int((PRIME_MS / (PRIME_RATE - 1) + TYPE_FADE_MS) * 1e-3 * SR) + 64
    assert abs(20 * np.log10(np.abs(y[done:done + 4800]).max() / after)) < 0.1


def test_a_type_change_is_the_same_at_any_block_size():
    """Catching up runs on the absolute sample grid: blocks of 1, 3 + 5, 64 or 4096 frames, with the
    change at the same sample (24576, a boundary of each), give the same output to the bit."""
    ref, at = switch("lowpass", "peak", 100.0, 10.0, 130.0, sizes=(128,), seconds=49152 / SR)
    assert at == 24576
    for sizes in ((1,), (3, 5), (64,), (4096,)):
        y, at = switch("lowpass", "peak", 100.0, 10.0, 130.0, sizes=sizes, seconds=49152 / SR)
        assert at == 24576
        np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("sr", [48000, 192000])
def test_catching_up_spreads_its_work_over_the_blocks(sr):
    """Run over a quarter second of history in the one block of the change, a type change cost 0.7 ms at
    192 kHz, a whole 128-frame period. It now reads PRIME_RATE history samples per live sample, so a
    block's extra work is bounded by its own length: counted in history samples read, not timed."""
    from realtime.dsp.processors import biquad

    p = P.create("biquad", type="peak", freq_hz=30.0, q=10.0)
    p.prepare(sr, 128, 2)
    x = np.zeros((128, 2), np.float32)
    p.process(x)
    p.set_param("type", "lowpass")
    blocks = 0
    while p._sm[7] >= 0 or blocks == 0:  # catching up
        p.process(x)
        blocks += 1
        assert blocks < 10_000
    b, a = biquad.biquad_coefficients("lowpass", 30.0, 10.0, 0.0, sr)
    expect = biquad._prime_length(a[1], a[2], int(PRIME_MS * 1e-3 * sr))
    assert blocks == -(-expect // ((PRIME_RATE - 1) * 128)) or blocks == -(-expect // ((PRIME_RATE - 1) * 128)) + 1
    assert p._sm[3] == biquad.LOWPASS and p._sm[4] > 0  # playing, fading in


def test_turning_the_type_back_while_it_catches_up_cancels_the_change():
    p = P.create("biquad", type="peak", freq_hz=30.0, q=10.0, gain_db=6.0)
    p.prepare(SR, 128, 1)
    x = (0.1 * np.random.default_rng(0).standard_normal((SR, 1))).astype(np.float32)
    ref = x.copy()
    q = P.create("biquad", type="peak", freq_hz=30.0, q=10.0, gain_db=6.0)
    q.prepare(SR, 128, 1)
    for i in range(0, SR, 128):
        if i == 128 * 10:
            p.set_param("type", "highpass")
        if i == 128 * 12:
            p.set_param("type", "peak")
        p.process(x[i:i + 128])
        q.process(ref[i:i + 128])
    np.testing.assert_array_equal(x, ref)  # never played the highpass, never faded
