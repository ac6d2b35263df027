"""Behaviour of the built-in processors: accuracy, smoothing, latency, guarantees, block-size
independence."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from realtime.dsp import processors as P
from realtime.dsp.processors.biquad import TYPES, biquad_coefficients
from realtime.dsp.processors.limiter import limit
from realtime.dsp.processors.meter import CLIP, PEAK, RMS
from realtime.dsp.processors.safety import CLIPPED, SCRUBBED
from realtime.errors import ParamError

SR = 48000


def db(x):
    return 20 * np.log10(x)


def run(proc, x, block=None, sr=SR, sizes=None):
    """Process a copy of x (frames, ch) in blocks of ``block`` (or the cycle ``sizes``)."""
    y = np.array(x, dtype=np.float32, order="C", copy=True)
    if y.ndim == 1:
        y = y[:, None].copy()
    sizes = sizes or [block or len(y)]
    proc.prepare(sr, max(sizes), y.shape[1])
    i = k = 0
    while i < len(y):
        n = sizes[k % len(sizes)]
        proc.process(y[i:i + n])
        i, k = i + n, k + 1
    return y


def noise(n, ch=2, scale=0.3, seed=0):
    return (np.random.default_rng(seed).standard_normal((n, ch)) * scale).astype(np.float32)


def bursty(n, ch=2, seed=0):
    """Quiet noise with loud noise and sine bursts: exercises limiters and smoothers."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ch)) * 0.05
    t = np.arange(n) / SR
    for start in rng.integers(0, max(1, n - 4000), 6):
        ln = int(rng.integers(50, 4000))
        amp = 10 ** (rng.uniform(-6, 20) / 20)
        if rng.random() < 0.5:
            x[start:start + ln] += rng.standard_normal((len(x[start:start + ln]), ch)) * amp
        else:
            x[start:start + ln] += (amp * np.sin(2 * np.pi * rng.uniform(30, 8000) * t[start:start + ln]))[:, None]
    return x.astype(np.float32)


# ---------------------------------------------------------------------------------------- registry
def test_registry_create_and_unknown():
    assert {"gain", "biquad", "limiter", "meter", "safety"} <= set(P.available_kinds())
    g = P.create("gain", gain_db=-6)
    assert g.kind == "gain" and g.get_param("gain_db") == -6
    with pytest.raises(P.UnknownProcessorError) as e:
        P.create("nope")
    assert "nope" in str(e.value) and "limiter" in str(e.value)
    with pytest.raises(ParamError, match="gain_db"):
        P.create("gain", gain_db=100)


def test_lazy_processor_imported_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "lazy_dummy_proc.py").write_text(
        "from realtime.dsp.processor import Processor\n"
        "from realtime.dsp.processors import register\n"
        "@register\n"
        "class Dummy(Processor):\n"
        "    kind = 'lazy_dummy'\n"
        "    def process(self, block):\n"
        "        block *= 0.5\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(P._LAZY, "lazy_dummy", "lazy_dummy_proc")
    monkeypatch.setitem(P._LAZY, "lazy_missing", "no_such_module_xyz")
    try:
        assert "lazy_dummy" in P.available_kinds() and "lazy_missing" not in P.available_kinds()
        assert "lazy_dummy_proc" not in sys.modules
        p = P.create("lazy_dummy")
        assert "lazy_dummy_proc" in sys.modules and P.REGISTRY["lazy_dummy"] is type(p)
        with pytest.raises(P.UnknownProcessorError, match="not installed"):
            P.create("lazy_missing")
    finally:
        P.REGISTRY.pop("lazy_dummy", None)
        sys.modules.pop("lazy_dummy_proc", None)


def test_parameter_named_like_a_slot_control_is_refused():
    from realtime.dsp.processor import Param, Processor

    class Shadowing(Processor):
        kind = "shadowing"
        params = (Param("mix", "Mix", 0.0, 1.0, 1.0),)

    with pytest.raises(TypeError, match="clash"):
        P.register(Shadowing)
    assert "shadowing" not in P.REGISTRY


# -------------------------------------------------------------------------------------------- gain
@pytest.mark.parametrize("gain_db", [-60.0, -20.0, 0.0, 6.0, 24.0])
def test_gain_accuracy(gain_db):
    x = noise(4096)
    y = run(P.create("gain", gain_db=gain_db), x, block=128)
    np.testing.assert_allclose(y, x * 10 ** (gain_db / 20), rtol=2e-6, atol=1e-9)


def test_gain_jump_has_no_zipper():
    """-60 -> +12 dB on DC: the gain envelope moves < 0.005 per sample (one-pole, 20 ms)."""
    g = P.create("gain", gain_db=-60)
    g.prepare(SR, 128, 1)
    y = np.ones((SR // 2, 1), np.float32)
    for i in range(0, len(y), 128):
        if i == 1280:
            g.set_param("gain_db", 12)
        g.process(y[i:i + 128])
    env = y[:, 0].astype(np.float64)
    steps = np.diff(env)
    assert np.abs(steps).max() < 0.005
    assert steps.min() >= 0  # monotonic glide, no overshoot
    assert abs(db(env[-1]) - 12) < 0.01  # and it gets there (well within 0.5 s)


# ------------------------------------------------------------------------------------------ biquad
def impulse_response(proc, n, sr):
    x = np.zeros((n, 1), np.float32)
    x[0] = 1.0
    return run(proc, x, block=256, sr=sr)[:, 0].astype(np.float64)


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
@pytest.mark.parametrize("kind,freq,q,gain", [
    ("highpass", 80, 0.707, 0), ("lowpass", 5000, 2.0, 0), ("lowshelf", 200, 0.707, 6),
    ("highshelf", 8000, 0.5, -9), ("peak", 1000, 4.0, 12), ("peak", 15000, 1.0, -18),
])
def test_biquad_matches_freqz(sr, kind, freq, q, gain):
    b, a = biquad_coefficients(kind, freq, q, gain, sr)
    assert np.all(np.abs(np.roots(a)) < 1)
    n = 1 << 15
    h = impulse_response(P.create("biquad", type=kind, freq_hz=freq, q=q, gain_db=gain), n, sr)
    assert np.all(np.abs(h[-64:]) < 1e-6)  # decayed: the FFT below is the true response
    w = np.linspace(20, 20000, 400)
    _, ref = signal.freqz(b, a, worN=w, fs=sr)
    got = np.interp(w, np.fft.rfftfreq(n, 1 / sr), np.abs(np.fft.rfft(h)))
    np.testing.assert_allclose(db(got), db(np.abs(ref)), atol=0.05)


@pytest.mark.parametrize("sr", [44100, 96000])
def test_biquad_cookbook_properties(sr):
    """Independent checks of the designs themselves (not just kernel == helper)."""
    def mag(kind, f, q, g, at):
        b, a = biquad_coefficients(kind, f, q, g, sr)
        return np.abs(signal.freqz(b, a, worN=[at], fs=sr)[1][0])
    # A Q=1/sqrt(2) RBJ low/high-pass is the bilinear Butterworth.
    for kind, btype in (("lowpass", "low"), ("highpass", "high")):
        b, a = biquad_coefficients(kind, 1000, 1 / np.sqrt(2), 0, sr)
        bb, ab = signal.butter(2, 1000, btype=btype, fs=sr)
        np.testing.assert_allclose(np.r_[b, a], np.r_[bb, ab], atol=1e-10)
    assert abs(db(mag("highpass", 500, 5.0, 0, 500)) - db(5.0)) < 1e-6  # |H(f0)| = Q
    assert abs(db(mag("peak", 2000, 2.0, 9, 2000)) - 9) < 1e-6
    assert abs(db(mag("lowshelf", 300, 0.707, -6, 1)) + 6) < 0.01
    assert abs(db(mag("lowshelf", 300, 0.707, -6, 20000))) < 0.05
    assert abs(db(mag("highshelf", 3000, 0.707, 6, 20000)) - 6) < 0.1
    assert abs(db(mag("highshelf", 3000, 0.707, 6, 1))) < 0.01


@pytest.mark.parametrize("kind", ["lowshelf", "highshelf"])
def test_a_shelf_never_goes_past_its_gain_knob_whatever_its_q(kind):
    """The RBJ shelf with Q 10 resonated to +43 dB at +24 dB gain (and dipped 19 dB under 0 on its
    other side); shelves stop at the steepest monotonic slope (S = 1, Q = 1/sqrt(2))."""
    sr = 48000
    for q in (0.707, 2.0, 10.0):
        for g in (24.0, -24.0):
            b, a = biquad_coefficients(kind, 1000, q, g, sr)
            m = db(np.abs(signal.freqz(b, a, 8192, fs=sr)[1]))
            assert m.max() <= max(g, 0.0) + 0.01 and m.min() >= min(g, 0.0) - 0.01, (q, g, m.max(), m.min())
    steep = [biquad_coefficients(kind, 1000, q, 12, sr) for q in (0.3, 0.707)]
    at = 1000 * (2.0 if kind == "lowshelf" else 0.5)  # an octave into the flat side: the steeper one is closer to 0 dB
    gains = [abs(db(np.abs(signal.freqz(b, a, worN=[at], fs=sr)[1][0]))) for b, a in steep]
    assert gains[1] < gains[0] - 0.5, gains  # below the limit Q still sets the slope


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
def test_biquad_stable_over_parameter_grid(sr):
    for kind in TYPES:
        for f in np.geomspace(20, 20000, 9):
            for q in (0.1, 0.707, 10):
                for g in (-24, 0, 24):
                    _, a = biquad_coefficients(kind, f, q, g, sr)
                    assert np.all(np.abs(np.roots(a)) < 1), (kind, f, q, g)


def _step_after_change(param, value, smooth=True):
    """Max |y[n]-y[n-1]| of a 1 kHz sine through a 100 Hz lowpass after a parameter jump,
    next to the largest step of the settled signals before and after."""
    n, at = SR, 24064
    x = np.sin(2 * np.pi * 1000 * np.arange(n) / SR).astype(np.float32)[:, None].copy()
    p = P.create("biquad", type="lowpass", freq_hz=100, q=0.707)
    p.prepare(SR, 128, 1)
    if not smooth:
        p._k[1:5] = 1.0  # smoothing off, type fade in one sample: what the test must catch
        p._k[5] = 0  # and a new type starting from rest (it catches up on no input)
    for i in range(0, n, 128):
        if i == at:
            p.set_param(param, value)
        p.process(x[i:i + 128])
    d = np.abs(np.diff(x[:, 0].astype(np.float64)))
    settled = max(d[at // 2:at - 1].max(), d[-SR // 4:].max())
    return d[at - 1:].max(), settled


@pytest.mark.parametrize("param,value", [("freq_hz", 5000), ("type", "highpass"), ("gain_db", 0), ("q", 10)])
def test_biquad_parameter_jump_is_click_free(param, value):
    jump, settled = _step_after_change(param, value)
    assert jump <= 1.02 * settled + 1e-4


def test_biquad_click_test_detects_unsmoothed_switch():
    jump, settled = _step_after_change("type", "highpass", smooth=False)
    assert jump > 2 * settled


def test_glides_land_on_their_target_and_never_stall_in_denormals():
    """A one-pole glide towards 0 stalled at ~2e-321 for good (every sample then did denormal
    arithmetic: a biquad moved back to 0 dB cost 2.3x per block); now it lands on the target."""
    from realtime.dsp.kernels import flush_denormal, glide

    x = 6.0
    for _ in range(200_000):
        x = glide(x, 0.0, 1e-3)
    assert x == 0.0
    assert glide(1.0, 2.0, 1.0) == 2.0 and 0.0 < glide(1.0, 0.0, 0.5) < 1.0
    assert flush_denormal(1e-31) == 0.0 and flush_denormal(-1e-31) == 0.0 and flush_denormal(1e-20) == 1e-20
    p = P.create("biquad", type="peak", gain_db=6.0, q=2.0)
    p.prepare(48000, 512, 2)
    block = np.zeros((512, 2), np.float32)
    p.set_param("gain_db", 0.0)
    p.set_param("q", 1.0)  # log Q glides to exactly 0 too
    for _ in range(200):
        p.process(block)
    assert p._sm[1] == 0.0 and p._sm[2] == 0.0, p._sm[:3]


# ----------------------------------------------------------------------------------------- limiter
@pytest.mark.parametrize("lookahead_ms", [0.0, 0.5, 5.0, 10.0])
@pytest.mark.parametrize("release_ms,drive,ceiling", [(1, 0, -1), (50, 12, -6), (1000, 24, -0.1), (100, 6, -24)])
def test_limiter_output_never_exceeds_ceiling(lookahead_ms, release_ms, drive, ceiling):
    x = bursty(SR, seed=int(lookahead_ms * 10 + release_ms))
    y, gain = limit(x, SR, ceiling_db=ceiling, release_ms=release_ms, lookahead_ms=lookahead_ms,
                    input_gain_db=drive)
    c = 10 ** (ceiling / 20)
    assert np.abs(y).max() <= c * (1 + 1e-7)
    # The gain computer itself guarantees it (the final clip is only a rounding guard):
    L = int(round(lookahead_ms * SR / 1000))
    xd = np.zeros_like(x, dtype=np.float64)
    xd[L:] = x[:len(x) - L].astype(np.float64) * 10 ** (drive / 20)
    assert np.abs(xd * gain[:, None]).max() <= c * (1 + 1e-9)
    np.testing.assert_allclose(y, xd * gain[:, None], atol=2e-7 * c + 1e-7)
    assert gain.min() < 0.5  # the bursts really were limited


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
@pytest.mark.parametrize("lookahead_ms", [0.0, 1.0, 5.0, 10.0])
def test_limiter_latency_is_lookahead(sr, lookahead_ms):
    lim = P.create("limiter", lookahead_ms=lookahead_ms)
    x = np.zeros((4096, 2), np.float32)
    x[1000] = (0.5, -0.25)  # below the ceiling: passes untouched, only delayed
    y = run(lim, x, block=64, sr=sr)
    L = int(round(lookahead_ms * sr / 1000))
    assert lim.latency == L
    expect = np.zeros_like(x)
    expect[1000 + L] = x[1000]
    np.testing.assert_array_equal(y, expect)


def test_limiter_lookahead_change_applies_on_reset():
    lim = P.create("limiter", lookahead_ms=5)
    lim.prepare(SR, 128, 2)
    assert lim.latency == 240 and lim.max_latency == 480
    lim.set_param("lookahead_ms", 2)
    assert lim.latency == 240  # not mid-stream: the chain's compensation would be wrong
    lim.reset()
    assert lim.latency == 96


def test_limiter_release_recovers():
    x = np.full((SR, 1), 0.1, np.float32)
    x[1000:2000] = 2.0
    y, gain = limit(x, SR, ceiling_db=-1, release_ms=20, lookahead_ms=5)
    assert gain[2000:2240].max() < 0.5  # held through the burst (plus lookahead)
    assert gain[2240 + 5 * 960:].min() > 0.99  # ~5 release time constants later: back to unity


def test_offline_limit_equals_streaming():
    x = bursty(SR, seed=3)
    y_off, g_off = limit(x, SR, ceiling_db=-3, release_ms=30, lookahead_ms=4, input_gain_db=6)
    lim = P.create("limiter", ceiling_db=-3, release_ms=30, lookahead_ms=4, input_gain_db=6)
    y = np.array(x)
    lim.prepare(SR, 512, 2)
    gains = []
    rng = np.random.default_rng(0)
    i = 0
    while i < len(y):
        n = int(rng.integers(1, 513))
        lim.process(y[i:i + n])
        gains.append(lim.gain[:len(y[i:i + n])].copy())
        i += n
    np.testing.assert_array_equal(y, y_off)
    np.testing.assert_array_equal(np.concatenate(gains), g_off)


def test_limit_mono_shape():
    y, g = limit(np.full(100, 3.0), SR, ceiling_db=-1, lookahead_ms=0)
    assert y.shape == (100,) and g.shape == (100,) and y.dtype == np.float32


# ------------------------------------------------------------------------------------------- meter
def test_meter_sine_readings_and_pass_through():
    t = np.arange(SR * 2) / SR
    x = np.stack([0.5012 * np.sin(2 * np.pi * 1000 * t), 0.1 * np.sin(2 * np.pi * 440 * t)], 1).astype(np.float32)
    m = P.create("meter")
    y = run(m, x, block=128)
    np.testing.assert_array_equal(y, x)
    r = m.readings
    assert r.dtype == np.float32 and r.shape == (2, 3)
    assert abs(r[0, PEAK] + 6.0) < 0.1 and abs(r[0, RMS] + 9.03) < 0.1
    assert abs(r[1, PEAK] + 20.0) < 0.1 and abs(r[1, RMS] + 23.01) < 0.1
    assert r[0, CLIP] == 0 and m.clip_count.sum() == 0


def test_meter_clip_latches_and_peak_falls():
    m = P.create("meter", peak_fall_db_s=12)
    x = np.zeros((SR, 1), np.float32)
    x[0] = 1.0
    run(m, x, block=128)
    assert m.readings[0, CLIP] == 1.0 and m.clip_count[0] == 1
    assert abs(m.readings[0, PEAK] + 12.0) < 0.1  # fell 12 dB in one second
    m.clear_clip()
    assert m.readings[0, CLIP] == 0 and m.clip_count[0] == 0


def test_meter_silence_floor():
    m = P.create("meter")
    run(m, np.zeros((1024, 2)), block=256)
    assert np.all(m.readings[:, :2] == -120.0)


# ------------------------------------------------------------------------------------------ safety
def test_safety_scrubs_and_stays_finite():
    s = P.create("safety", ceiling_db=-0.3)
    x = noise(4096, scale=0.2)
    x[100, 0] = np.nan
    x[200, 1] = np.inf
    x[300:310, 0] = -np.inf
    x[400, 1] = 3e38
    y = run(s, x, block=128)
    c = 10 ** (-0.3 / 20)
    assert np.all(np.isfinite(y)) and np.abs(y).max() <= c
    assert s.counters[SCRUBBED] == 12
    assert np.all(np.isfinite(s._z))
    # after the garbage the stream is back to the DC-blocked input (no lingering blast)
    ref = run(P.create("safety"), noise(4096, scale=0.2), block=128)
    np.testing.assert_allclose(y[1000:], ref[1000:], atol=3e-3)


def test_safety_whole_nan_block_then_recovers():
    s = P.create("safety")
    s.prepare(SR, 128, 2)
    blk = np.full((128, 2), np.nan, np.float32)
    s.process(blk)
    assert np.all(blk == 0) and np.all(np.isfinite(s._z))
    blk = noise(128, scale=0.1)
    s.process(blk)
    assert np.all(np.isfinite(blk)) and np.abs(blk).max() < 0.5


@pytest.mark.parametrize("ceiling_db", [-12.0, -3.0, -0.3, 0.0])
def test_safety_never_exceeds_ceiling(ceiling_db):
    x = noise(SR // 4, scale=3.0, seed=1)
    x[::97] = 1e30
    s = P.create("safety", ceiling_db=ceiling_db)
    y = run(s, x, block=100)
    assert np.abs(y).max() <= 10 ** (ceiling_db / 20)
    assert s.counters[CLIPPED] > 0


def test_safety_blocks_dc():
    y = run(P.create("safety"), np.full((SR * 2, 1), 0.5), block=128)
    assert abs(y[-1000:]).max() < 1e-3
    # but passes audio: a 100 Hz sine keeps its level (1 Hz corner)
    t = np.arange(SR) / SR
    s = (0.5 * np.sin(2 * np.pi * 100 * t))[:, None]
    y = run(P.create("safety"), s, block=128)
    assert abs(np.abs(y[SR // 2:]).max() - 0.5) < 0.01


# -------------------------------------------------------------------------- block-size independence
CONFIGS = {
    "gain": dict(gain_db=-12),
    "biquad": dict(type="peak", freq_hz=300, q=3, gain_db=9),
    "limiter": dict(input_gain_db=12, ceiling_db=-2, release_ms=40, lookahead_ms=3),
    "meter": {},
    "safety": dict(ceiling_db=-1),
}
# second settings, applied part-way through, so the smoothers are exercised too
CHANGES = {
    "gain": ("gain_db", 12), "biquad": ("freq_hz", 4000), "limiter": ("ceiling_db", -6),
    "meter": ("rms_window_ms", 50), "safety": ("ceiling_db", -6),
}


def run_with_change(kind, x, sizes):
    """Process in the cycled block sizes; the parameter change lands at the first block boundary
    at or after sample 3000 (so compare against a one-block run split at the same point)."""
    p = P.create(kind, **CONFIGS[kind])
    y = np.array(x)
    p.prepare(SR, max(sizes), x.shape[1])
    i = k = 0
    changed_at = None
    while i < len(y):
        if changed_at is None and i >= 3000:
            p.set_param(*CHANGES[kind])
            changed_at = i
        n = sizes[k % len(sizes)]
        p.process(y[i:i + n])
        i, k = i + n, k + 1
    return y, changed_at, p


def reference(kind, x, at):
    p = P.create(kind, **CONFIGS[kind])
    y = np.array(x)
    p.prepare(SR, len(y), x.shape[1])
    p.process(y[:at])
    p.set_param(*CHANGES[kind])
    p.process(y[at:])
    return y, p


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("sizes", [[32], [128], [1, 7, 300, 64, 5]])
def test_block_size_independence(kind, sizes):
    x = bursty(12000, seed=5)
    y, at, _ = run_with_change(kind, x, sizes)
    ref, _ = reference(kind, x, at)
    np.testing.assert_array_equal(y, ref)


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 512), min_size=1, max_size=8), kind=st.sampled_from(sorted(CONFIGS)))
def test_block_size_independence_random(sizes, kind):
    x = bursty(8000, seed=7)
    y, at, p = run_with_change(kind, x, sizes)
    ref, pref = reference(kind, x, at)
    np.testing.assert_array_equal(y, ref)
    if kind == "meter":  # the RMS and clip readings as one block's; the peak is the last block's highest,
        rest = [k for k in range(p.readings.shape[1]) if k != PEAK]
        np.testing.assert_allclose(p.readings[:, rest], pref.readings[:, rest], atol=1e-4)
        assert np.all(p.readings[:, PEAK] <= pref.readings[:, PEAK] + 1e-4)  # over a span ending where the ref's does


# ------------------------------------------------------------------------ non-finite input upstream
@pytest.mark.parametrize("kind", ["gain", "biquad", "limiter", "meter"])
def test_nan_input_does_not_poison_state(kind):
    """NaN/Inf reaching a processor before the safety stage must not silence it for good."""
    x = noise(8192, scale=0.1)
    x[1000:1100] = np.nan
    x[2000, 1] = np.inf
    p = P.create(kind, **CONFIGS[kind])
    y = run(p, x, block=128)
    assert np.all(np.isfinite(y[3000:]))
    assert np.abs(y[-2000:]).max() > 0.05  # audio still comes through afterwards
    if kind == "limiter":  # and the ceiling holds even for garbage in
        assert np.all(np.isfinite(y)) and np.abs(y).max() <= 10 ** (-2 / 20)


_SIGNALS = [np.repeat(0.1 * np.sin(np.arange(1024) * 0.01 * (k + 1))[:, None], 2, 1).astype(np.float32)
            for k in range(4)]


def _turn_and_process(p, i, block):
    """One block while every knob moves (and a note plays, for a synth)."""
    for j, prm in enumerate(p.params):
        v = prm.min + (prm.max - prm.min) * ((i * 7 + j) % 10) / 10.0
        p.values[j] = round(v) if prm.step else v
    if hasattr(p, "handle_midi"):
        p.handle_midi(0x90, 60 + i % 12, 100, i * 13 % 1024)
    block[:] = _SIGNALS[i % 4]
    p.process(block)


def allocated_while_turning(procs, sr: int = 48000) -> int:
    """Peak bytes of Python memory that 30 stereo 1024-frame blocks through each of ``procs``, every
    knob turning, allocate after as many blocks of warm-up (the real-time rule's measure)."""
    import tracemalloc

    for p in procs:
        p.prepare(sr, 1024, 2)
    block = np.zeros((1024, 2), np.float32)
    for i in range(30):
        for p in procs:
            _turn_and_process(p, i, block)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(30):
            for p in procs:
                _turn_and_process(p, i, block)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", P.available_kinds())
def test_process_allocates_no_arrays_per_block(kind):
    """The real-time rule, measured: after warm-up, 30 stereo 1024-frame blocks with every knob
    turning allocate less than one block's worth (8 KiB) of Python memory at peak, so no
    processor makes an array per block (what remains is small call objects, e.g. ONNX Runtime's)."""
    grown = allocated_while_turning([P.create(kind)])
    assert grown < 8192, f"{kind}: {grown} bytes"


# ------------------------------------------------------------------------ shared kernels and wrappers
def test_scrub_kernel_zeroes_nonfinite_clamps_and_counts_each():
    from realtime.dsp.kernels import scrub_into

    x = np.array([[0.5, np.nan], [2.0, -np.inf], [-3.0, 0.25]], np.float32)
    counts = np.zeros(4, np.int64)
    scrub_into(x, 3, x, 0, 1.0, counts, 1, 3)  # in place, counted into slots 1 and 3
    assert x.tolist() == [[0.5, 0.0], [1.0, 0.0], [-1.0, 0.25]]
    assert counts.tolist() == [0, 2, 0, 2]
    mono = np.array([[np.nan], [0.5], [9.0]], np.float32)
    stereo = np.full((5, 2), 7.0, np.float32)
    counts = np.zeros(2, np.int64)
    scrub_into(mono, 3, stereo, 1, 4.0, counts, 0, 1)  # mono fills both channels, counted once
    assert stereo.tolist() == [[7, 7], [0, 0], [0.5, 0.5], [4, 4], [7, 7]]
    assert counts.tolist() == [1, 1]


@pytest.mark.parametrize("history,max_hops", [(0, None), (96, 2)])
def test_fixed_hop_any_block_size_hop_minus_one_latency_no_allocation(history, max_hops):
    """The re-blocking wrapper hands its runner whole hops (with their history before them) and
    returns the runner's output hop - 1 samples late for any sequence of block sizes."""
    import tracemalloc

    from realtime.dsp.blocking import FixedHop

    hop, n = 48, 6000
    x = (np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 1.0) / (2 * n)
    calls = []

    def identity(inp, start, hops, out, opos):
        calls.append(hops)
        seen = inp[start + history : start + history + hops * hop]
        before = inp[start : start + history]
        first = int(round(seen[0, 0] * 2 * n - 1)) // 2  # which input sample these hops start at
        want = np.zeros((history, 2), np.float32)  # the samples before it; zeros before the stream
        lo = max(0, first - history)
        want[history - (first - lo) :] = x[lo:first]
        assert np.array_equal(before, want)
        out[opos : opos + hops * hop] = seen
        return hops

    f = FixedHop(hop, 2, 700, history=history, max_hops=max_hops)
    assert f.latency == hop - 1
    y = x.copy()
    rng = np.random.default_rng(0)
    i = 0
    while i < n:
        k = min(int(rng.integers(1, 701)), n - i)
        f.process(y[i : i + k], identity, np.zeros(2, np.int64))
        i += k
    assert not y[: hop - 1].any() and np.array_equal(y[hop - 1 :], x[: n - hop + 1])
    assert max(calls) <= (max_hops or 700 // hop + 1)

    def quiet(inp, start, hops, out, opos):
        out[opos : opos + hops * hop] = inp[start + history : start + history + hops * hop]
        return hops

    blk = np.zeros((700, 2), np.float32)
    counts = np.zeros(2, np.int64)
    f.process(blk, quiet, counts)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(30):
            f.process(blk, quiet, counts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - base < 8192


# -------------------------------------------------------------------------- review of 2026-12-05
def test_limited_low_square_content_stays_under_the_safety_ceiling():
    """The safety stage's DC blocker runs after the limiter: at 5 Hz it tilted a -1 dBFS limited
    25 Hz square 2.3 dB up, past the -0.3 dBFS ceiling, and the safety clip cut a quarter of its
    samples. At 1 Hz the tilt stays inside the margin (past the onset's transient)."""
    t = np.arange(SR * 3) / SR
    sq = 0.9 * np.sign(np.sin(2 * np.pi * 25 * t))[:, None].repeat(2, 1)
    y = run(P.create("limiter", input_gain_db=6.0, ceiling_db=-1.0), sq, block=256)
    y = run(P.create("safety"), y, block=256)
    assert 20 * np.log10(np.abs(y[SR:]).max()) < -0.35  # not pinned at the -0.3 dBFS clip


def test_a_lowered_limiter_ceiling_holds_without_the_final_clip():
    """Lowering the ceiling mid-stream: the gain computer takes the lower target at once, so the
    output is under it by the time a sample arrives and the backstop clip is not what holds it
    (it cut up to 0.13 of full scale off the gain's output for 10-30 ms)."""
    t = np.arange(SR) / SR
    x = (0.95 * np.sin(2 * np.pi * 200 * t))[:, None].repeat(2, 1).astype(np.float32)
    lim = P.create("limiter", ceiling_db=0.0, lookahead_ms=5.0)
    lim.prepare(SR, 256, 2)
    L, cut = lim.latency, 0.0
    delayed = np.concatenate([np.zeros((L, 2), np.float32), x])
    for i in range(0, len(x), 256):
        if i == 94 * 256:  # half-way
            lim.set_param("ceiling_db", -24.0)
        blk = x[i:i + 256].copy()
        lim.process(blk)
        by_gain = delayed[i:i + len(blk), 0] * lim.gain[:len(blk)]  # what the gain alone made
        cut = max(cut, float(np.abs(by_gain - blk[:, 0]).max()))
    assert cut < 1e-5, cut


@pytest.mark.parametrize("kind,knob", [("limiter", "lookahead_ms"), ("declip", "lookahead_ms")])
def test_a_lookahead_turned_while_streaming_changes_the_latency_at_the_next_block(kind, knob):
    """The knob changed the value (and the preset) but not the delay until the next prepare: the
    panel's look-ahead did nothing live. Measured by an impulse after the change."""
    p = P.create(kind, **{knob: 5.0})
    p.prepare(SR, 128, 1)
    assert p.latency == 240
    p.set_param(knob, 2.0)
    blk = np.zeros((128, 1), np.float32)
    p.process(blk)
    assert p.latency == 96
    x = np.zeros((2048, 1), np.float32)
    x[300] = 0.5
    for i in range(0, len(x), 128):
        p.process(x[i:i + 128])
    assert int(np.argmax(np.abs(x[:, 0]))) == 300 + 96


@pytest.mark.parametrize("kind,start,to", [("limiter", 2.0, 10.0), ("limiter", 2.0, 0.0), ("declip", 10.0, 1.0),
                                           ("declip", 10.0, 20.0)])
def test_a_lookahead_turned_while_streaming_neither_clicks_nor_drops_audio(kind, start, to):
    """Turning the look-ahead reset the processor: its delay line cleared, so the output clicked (a
    jump of 0.17 for the limiter's 2 -> 10 ms, 0.24 for the de-clipper's 10 -> 1 ms, on a 0.5 sine
    whose steps are 0.014) and went silent for the new look-ahead (961 samples for 10 -> 20 ms).
    The delay line now keeps its samples and the output crossfades to the new delay over 10 ms;
    the latency is the new one from that block on, and after the fade the output is the input
    delayed by it, untouched."""
    B = 128
    t = np.arange(2 * SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 210 * t))[:, None].astype(np.float32)  # under the ceiling, unclipped
    p = P.create(kind, lookahead_ms=start)
    p.prepare(SR, B, 1)
    at = (SR // B) * B
    y = x.copy()
    for i in range(0, len(y), B):
        if i == at:
            p.set_param("lookahead_ms", to)
        p.process(y[i:i + B])
        if i == at:
            L = p.latency
    assert L == max(round(to * SR / 1000), 40 if kind == "declip" else 0)  # 40: the de-clipper's shortest
    step = np.abs(np.diff(y[:, 0]))
    assert step[at - 10:at + 3000].max() < 1.25 * step[:at - 10].max(), step[at - 10:at + 3000].max()
    quiet = np.abs(y[at - 10:at + 3000, 0]) < 2e-3  # zero crossings only, no gap
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(int), [0]]))))[::2]
    assert runs.max() <= 4, runs.max()
    after = at + 480 + B  # the fade is over
    np.testing.assert_array_equal(y[after:, 0], x[after - L:len(x) - L, 0])


def test_a_limiter_lookahead_turned_under_limiting_keeps_the_ceiling_without_clicks():
    """The new lookahead's gain computer starts on the delay line's recent samples, so every
    output sample's gain covers it from the first block on; the crossfade mixes two outputs under
    the ceiling. Knob moved every 3 blocks over limited material: no jump beyond the material's own."""
    t = np.arange(4 * SR) / SR
    env = 0.3 + 2.0 * np.exp(-((t * 4) % 1) * 12)  # hits 9 dB over the ceiling, four a second
    x = np.stack([0.5 * env * np.sin(2 * np.pi * 110 * t), 0.4 * env * np.sin(2 * np.pi * 110 * t)], 1).astype(np.float32)
    rng = np.random.default_rng(3)
    outs = []
    for turns in (False, True):
        lim = P.create("limiter", ceiling_db=-1.0, lookahead_ms=2.0, release_ms=50.0)
        lim.prepare(SR, 128, 2)
        y = x.copy()
        for k, i in enumerate(range(0, len(y), 128)):
            if turns and k % 3 == 0:
                lim.set_param("lookahead_ms", float(rng.uniform(0.0, 10.0)))
            lim.process(y[i:i + 128])
        outs.append(y)
    c = 10 ** (-1 / 20)
    assert np.abs(outs[1]).max() <= c * (1 + 1e-7) and np.all(np.isfinite(outs[1]))
    jumps = [np.abs(np.diff(y[:, 0])).max() for y in outs]
    assert jumps[1] < 1.1 * jumps[0], jumps  # resets: 0.89 (the ceiling: a hit cut to silence)


def test_the_declipper_fills_runs_at_low_sample_rates_too():
    """At 8-32 kHz a 1 ms look-ahead was all the fit's POST samples: the slot delayed the audio
    and filled nothing. The look-ahead is at least POST + MIN_FILL samples there."""
    from realtime.dsp.declip import POST
    from realtime.dsp.processors.declip import MIN_FILL

    sr = 8000
    t = np.arange(sr * 2) / sr
    x = 1.3 * np.sin(2 * np.pi * 310 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t)) + 0.2 * np.sin(2 * np.pi * 735 * t)
    y = np.clip(x, -0.9, 0.9)[:, None].astype(np.float32)
    p = P.create("declip", lookahead_ms=1.0)
    out = run(p, y, block=128, sr=sr)
    L = p.latency
    assert L == POST + MIN_FILL
    err_db = [10 * np.log10(np.mean((a - x[:-L]) ** 2)) for a in (y[:-L, 0], out[L:, 0])]
    assert err_db[1] < err_db[0] - 1.0, err_db  # measured -17.6 -> -19.1 dB (before: no change)


def test_inf_or_an_absurd_sample_does_not_break_the_meter():
    """One Inf sample made the meter read inf / NaN for good (inf - inf); a 1e30 one read +576 dB
    for 48 s. They are bounded as NaN is: the readings recover with the signal."""
    m = P.create("meter")
    m.prepare(SR, 128, 1)
    for bad in (np.inf, 1e30, np.nan):
        blk = np.zeros((128, 1), np.float32)
        blk[5] = bad
        m.process(blk)
        t = np.arange(SR * 3) / SR
        tone = (0.1 * np.sin(2 * np.pi * 440 * t))[:, None].astype(np.float32)
        for i in range(0, len(tone), 128):
            m.process(tone[i:i + 128])
        peak, rms = m.readings[0, PEAK], m.readings[0, RMS]
        assert np.isfinite(peak) and np.isfinite(rms), bad
        assert abs(peak - 20 * np.log10(0.1)) < 1.0 and abs(rms - 20 * np.log10(0.1 / np.sqrt(2))) < 1.0, (bad, peak, rms)


def test_reset_clears_the_safety_stages_counts_as_a_fresh_one_has_none():
    s = P.create("safety")
    s.prepare(SR, 64, 1)
    blk = np.full((64, 1), 2.0, np.float32)
    blk[0] = np.nan
    s.process(blk)
    assert s.counters[CLIPPED] > 0 and s.counters[SCRUBBED] == 1
    s.reset()
    assert not s.counters.any() and not s.readings.any()


def test_knob_text_never_uses_exponent_notation_and_names_the_larger_unit():
    """A fine drag across 1 kHz read "1e+03 Hz" (999.5 ... 999.99 formatted with three significant
    digits); a thousand milliseconds read "1.00k ms"."""
    from realtime.dsp.processor import Param

    freq = Param("freq_hz", "Frequency", 20.0, 20000.0, 1000.0, unit="Hz", scale="log")
    time_ms = Param("release_ms", "Release", 0.0, 5000.0, 100.0, unit="ms")
    plain = Param("amount", "Amount", 0.0, 1.0, 0.5)
    voices = Param("voices", "Voices", 1, 5000, 16, step=1)
    assert [freq.format(v) for v in (999.97, 440.0, 20000.0)] == ["1.00 kHz", "440 Hz", "20.00 kHz"]
    assert [time_ms.format(v) for v in (999.8, 1500.0, 12.34)] == ["1.00 s", "1.50 s", "12.3 ms"]
    assert [plain.format(v) for v in (1e-5, 0.5, 0.0)] == ["0.0000100", "0.5", "0"]
    assert [voices.format(v) for v in (16, 1600)] == ["16", "1.60k"]
    for p in (freq, time_ms, plain):
        for u in [i / 1000 for i in range(1001)]:
            assert "e" not in p.format(p.from_unit(u)).split()[0], (p.id, u)


def test_knob_text_reads_float_noise_at_zero_as_zero():
    """A preset's or --set's 1e-15 dB (or a sum of steps' leftovers) read "0.000000000000001 dB",
    clipped in the knob; -0.0 read "-0 dB". A value small for its range, not for its own sake, only."""
    from realtime.dsp.processor import Param

    gain = Param("gain_db", "Gain", -24.0, 24.0, 0.0, unit="dB")
    plain = Param("amount", "Amount", 0.0, 1.0, 0.5)
    assert [gain.format(v) for v in (1e-15, -7.1e-15, -0.0, 0.0004)] == ["0 dB", "0 dB", "0 dB", "0.0004 dB"]
    assert plain.format(1e-5) == "0.0000100"
