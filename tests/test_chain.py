"""Chain: final safety stage, latency-aligned wet/dry and bypass, click-free crossfades."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.dsp.chain import Chain, Slot
from realtime.dsp.presets import build_chain, builtin_presets, load_preset
from realtime.dsp.processor import Processor
from realtime.dsp.processors import create
from realtime.dsp.processors.safety import Safety

SR = 48000
BLOCK = 128


def noise(n, ch=2, scale=0.3, seed=0):
    return (np.random.default_rng(seed).standard_normal((n, ch)) * scale).astype(np.float32)


def stream(chain, x, block=BLOCK, at=None, action=None):
    """Process a copy of x through the chain in blocks; call action(chain) before the block that
    starts at sample ``at``."""
    y = np.array(x, np.float32)
    for i in range(0, len(y), block):
        if at is not None and i == at:
            action(chain)
        chain.process(y[i:i + block])
    return y


def delayed(x, n):
    out = np.zeros_like(x)
    out[n:] = x[:len(x) - n]
    return out


def safety_only(x):
    """What the final safety stage alone does to x (for exact expectations)."""
    s = Safety()
    s.prepare(SR, len(x), x.shape[1])
    y = np.array(x, np.float32)
    s.process(y)
    return y


def limiter_chain(mix=1.0, bypass=False):
    # +12 dB drive on a quiet signal, ceiling 0 dB: the limiter never limits, so wet = 4 * dry,
    # delayed by the 5 ms lookahead. Any misalignment of the dry path would comb-filter.
    lim = create("limiter", input_gain_db=12.0412, ceiling_db=0, lookahead_ms=5)
    c = Chain([Slot(lim, "lim", bypass=bypass, mix=mix)])
    c.prepare(SR, BLOCK, 2)
    return c


# ------------------------------------------------------------------------------------ structure
def test_safety_added_and_not_removable():
    c = Chain([Slot(create("gain"), "g")])
    assert [s.kind for s in c.slots] == ["gain", "safety"] and c.slots[-1].id == "safety"
    with pytest.raises(ValueError, match="cannot be bypassed"):
        c.set_bypass("safety", True)
    with pytest.raises(ValueError, match="mix"):
        c.set_mix("safety", 0.5)
    c.set_param("safety", "ceiling_db", -1)  # its parameters are adjustable
    assert Chain([]).slots[-1].kind == "safety"
    # an explicit final safety is kept, not doubled; a user slot called "safety" is respected
    assert [s.id for s in Chain([Slot(create("safety"), "s")]).slots] == ["s"]
    assert [s.id for s in Chain([Slot(create("gain"), "safety")]).slots] == ["safety", "safety2"]


def test_slot_validation():
    with pytest.raises(ValueError, match="duplicate"):
        Chain([Slot(create("gain"), "a"), Slot(create("gain"), "a")])
    with pytest.raises(ValueError, match="slot id"):
        Slot(create("gain"), "a.b")
    with pytest.raises(ValueError, match="mix"):
        Slot(create("gain"), "a", mix=1.5)
    c = Chain([Slot(create("gain"), "a")])
    with pytest.raises(KeyError, match="no slot 'zz'"):
        c.set_param("zz", "gain_db", 0)


def test_process_guards():
    c = Chain([Slot(create("gain"), "g")])
    with pytest.raises(RuntimeError):
        c.process(np.zeros((BLOCK, 2), np.float32))
    c.prepare(SR, BLOCK, 2)
    for bad in (np.zeros((BLOCK, 2)), np.zeros((BLOCK, 1), np.float32), np.zeros((BLOCK + 1, 2), np.float32)):
        with pytest.raises(ValueError):
            c.process(bad)


# -------------------------------------------------------------------------------------- latency
def test_latency_is_sum_and_constant_under_bypass():
    c = Chain([Slot(create("limiter", lookahead_ms=5), "a"), Slot(create("limiter", lookahead_ms=2), "b")])
    c.prepare(SR, BLOCK, 2)
    assert c.latency == 240 + 96
    c.set_bypass("a", True)
    assert c.latency == 240 + 96


@pytest.mark.parametrize("mix", [0.0, 0.25, 0.5, 1.0])
def test_wet_dry_is_latency_aligned(mix):
    x = noise(SR // 2, scale=0.01)  # peaks ~ -28 dBFS: +12 dB keeps it below the 0 dB ceiling
    c = limiter_chain(mix=mix)
    y = stream(c, x)
    L = c.latency
    assert L == 240
    gain = 4.0 * mix + (1 - mix)  # wet = 4 x, sample-aligned with dry: they add, no comb
    expect = safety_only(delayed(x, L) * (10 ** (12.0412 / 20) * mix + (1 - mix)))
    np.testing.assert_allclose(y, expect, atol=2e-6)
    # flat magnitude response against the (safety-stage filtered) delayed input: no comb notches
    X = np.abs(np.fft.rfft(safety_only(delayed(x, L))[:, 0].astype(np.float64)))
    Y = np.abs(np.fft.rfft(y[:, 0].astype(np.float64)))
    band = slice(len(X) // 100, len(X) // 2)  # 240 Hz .. 12 kHz
    ratio = Y[band] / X[band]
    assert np.all(np.abs(ratio / gain - 1) < 0.01)


def test_bypassed_slot_passes_delayed_dry():
    x = noise(SR // 4, scale=0.01)
    c = limiter_chain(bypass=True)
    y = stream(c, x)
    np.testing.assert_allclose(y, safety_only(delayed(x, 240)), atol=1e-7)


# ----------------------------------------------------------------------------------- crossfades
def max_step(y):
    return np.abs(np.diff(y.astype(np.float64), axis=0)).max()


@pytest.mark.parametrize("action", ["bypass_on", "bypass_off", "mix"])
def test_bypass_and_mix_crossfades_are_click_free(action):
    t = np.arange(3 * SR) / SR
    x = np.repeat((0.2 * np.sin(2 * np.pi * 220 * t))[:, None], 2, 1).astype(np.float32)
    # +12 dB gain: wet and dry differ by 0.6 peak, so a hard switch would jump by up to 0.6
    c = Chain([Slot(create("gain", gain_db=12.0412), "g", bypass=(action == "bypass_off"))])
    c.prepare(SR, BLOCK, 2)
    do = {"bypass_on": lambda ch: ch.set_bypass("g", True), "bypass_off": lambda ch: ch.set_bypass("g", False),
          "mix": lambda ch: ch.set_mix("g", 0.0)}[action]
    at = 200 * BLOCK + 0
    y = stream(c, x, at=at, action=do)
    wet_step = max_step(x * 4)
    # during the 10 ms fade the output moves by at most the wet signal's own step plus
    # |wet - dry| / 480 per sample
    assert max_step(y[at - 10:at + 600]) <= wet_step + 0.6 / 480 + 1e-4
    # and it completes: afterwards the output is purely the new state (compared once the 1 Hz DC
    # blocker in the safety stage has forgotten the switch, 2 s later)
    target = x if action != "bypass_off" else x * 4
    np.testing.assert_allclose(y[at + 2 * SR:], safety_only(target)[at + 2 * SR:], atol=1e-5)


@pytest.mark.parametrize("bypass, mix", [(True, 1.0), (False, 0.5)])
def test_a_latency_change_fades_the_dry_path_too(bypass, mix):
    """A bypassed or half-mixed limiter whose lookahead knob moves: the dry path read the input at
    the new latency from the next sample on, a jump of up to 0.24 in a 0.3 sine at 200 Hz (its own
    steps are under 0.008). It now crossfades from the old read position to the new one over 10 ms,
    as the limiter does, and afterwards reads exactly at the new latency."""
    t = np.arange(SR) / SR
    x = np.repeat((0.3 * np.sin(2 * np.pi * 200 * t))[:, None], 2, 1).astype(np.float32)
    c = Chain([Slot(create("limiter", lookahead_ms=5.0), "lim", bypass=bypass, mix=mix)])
    c.prepare(SR, BLOCK, 2)
    y = np.array(x)
    for i in range(0, SR, BLOCK):
        if i in (100 * BLOCK, 200 * BLOCK):  # 5 -> 0.5 ms, then 0.5 -> 8 ms
            c.set_param("lim", "lookahead_ms", 0.5 if i == 100 * BLOCK else 8.0)
        c.process(y[i:i + BLOCK])
    own = max_step(x)
    assert max_step(y[90 * BLOCK:]) <= 1.05 * own, (max_step(y[90 * BLOCK:]), own)
    if bypass:  # the dry path alone: the input delayed by the 8 ms lookahead once the fade is done
        np.testing.assert_allclose(y[250 * BLOCK:], safety_only(delayed(x, 384))[250 * BLOCK:], atol=3e-3)


def test_abrupt_switch_would_fail_the_click_bound():
    """Sanity check of the bound above: the same switch without a fade exceeds it."""
    t = np.arange(SR) / SR
    x = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float64)
    at = 200 * BLOCK
    hard = np.where(np.arange(SR) < at, 4 * x, x)
    assert max_step(hard[at - 10:at + 600]) > max_step(4 * x) + 0.6 / 480 + 1e-4


# ------------------------------------------------------------------------------------- whole chain
@settings(max_examples=10, deadline=None)
@given(sizes=st.lists(st.integers(1, 256), min_size=1, max_size=6))
def test_default_chain_block_size_independent(sizes):
    x = noise(6000, scale=0.8, seed=3)
    ref = build_chain(load_preset("default"))
    ref.prepare(SR, len(x), 2)
    y_ref = np.array(x)
    ref.process(y_ref)
    c = build_chain(load_preset("default"))
    c.prepare(SR, max(sizes), 2)
    y = np.array(x)
    i = k = 0
    while i < len(y):
        n = sizes[k % len(sizes)]
        c.process(y[i:i + n])
        i, k = i + n, k + 1
    np.testing.assert_array_equal(y, y_ref)
    assert np.abs(y).max() <= 10 ** (-0.3 / 20)


def test_reset_clears_state():
    c = limiter_chain(mix=0.5)
    x = noise(4096, scale=0.01)
    y1 = stream(c, x)
    c.reset()
    y2 = stream(c, x)
    np.testing.assert_array_equal(y1, y2)


def test_describe_and_to_preset():
    c = build_chain(load_preset("default"))
    c.prepare(SR, BLOCK, 2)
    c.set_param("hpf", "freq_hz", 60)
    c.set_mix("gain", 0.5)
    d = c.describe()
    assert [s["id"] for s in d] == ["hpf", "gain", "limiter", "meter", "safety"]
    assert d[-1]["removable"] is False and d[0]["removable"] is True
    assert d[2]["latency"] == 240
    hpf = {p["id"]: p for p in d[0]["params"]}
    assert hpf["type"]["choices"][int(hpf["type"]["value"])] == "highpass" and hpf["type"]["text"] == "highpass"
    assert hpf["freq_hz"]["value"] == 60 and hpf["freq_hz"]["unit"] == "Hz" and hpf["freq_hz"]["scale"] == "log"
    p = c.to_preset("mine", "test")
    assert p["name"] == "mine" and p["chain"][0]["params"]["type"] == "highpass"
    c2 = build_chain(p)
    assert [s.id for s in c2.slots] == [s.id for s in c.slots]
    assert c2.slot("hpf").processor.get_param("freq_hz") == 60 and c2.slot("gain").mix == 0.5


def test_nan_at_chain_input_is_scrubbed_and_audio_recovers():
    t = np.arange(SR // 2) / SR
    x = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t))[:, None], 2, 1).astype(np.float32)
    x[1000:1100] = np.nan
    x[5000, 0] = -np.inf
    c = build_chain(load_preset("default"))
    c.prepare(SR, BLOCK, 2)
    y = stream(c, x)
    assert np.all(np.isfinite(y)) and np.abs(y).max() <= 10 ** (-0.3 / 20)
    assert np.abs(y[-4000:]).max() > 0.25  # nothing upstream was left stuck at NaN


@pytest.mark.parametrize("name", builtin_presets())
def test_builtin_chains_allocate_no_arrays_per_block(name):
    """Whole built-in chains (dry paths, mix ramps, MIDI) under the same 8 KiB budget per
    30 stereo 1024-frame blocks as single processors (tests/test_processors.py)."""
    import tracemalloc

    chain = build_chain(load_preset(name))
    chain.prepare(48000, 1024, 2)
    block = np.zeros((1024, 2), np.float32)
    for i in range(60):
        if i == 30:
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
        block.fill(0.1)
        chain.handle_midi(0x90, 60 + i % 5, 90, 100)
        chain.set_mix(chain.slots[0].id, 0.5 + 0.5 * (i % 2)) if len(chain.slots) > 1 else None
        chain.process(block)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak - base < 8192, f"{name}: {peak - base} bytes"


class _Breaks(Processor):
    """A gain of 0.5 that writes NaN and raises on its ``fail_at``-th block (a broken plugin)."""

    kind = "test_breaks"
    params = ()

    def __init__(self, fail_at: int = 5, latency: int = 0):
        super().__init__()
        self.fail_at, self.blocks, self._lat = fail_at, 0, latency

    @property
    def latency(self) -> int:
        return self._lat

    def reset(self):
        self.blocks = 0

    def process(self, block):
        self.blocks += 1
        if self.blocks == self.fail_at:
            block[:] = np.nan
            raise RuntimeError("plugin crashed")
        block *= 0.5


def test_a_processor_that_raises_mid_stream_leaves_its_slot_dry_and_is_reported():
    chain = Chain([Slot(_Breaks(fail_at=5), "broken"), Slot(create("gain", gain_db=-6.0206), "after"),
                   Slot(Safety(ceiling_db=0.0), "safety")])
    chain.prepare(48000, 64, 2)
    x = (0.4 * np.sin(np.arange(64 * 12) * 0.05)).astype(np.float32)
    outs = []
    for k in range(12):
        b = np.repeat(x[k * 64:(k + 1) * 64, None], 2, 1).copy()
        chain.process(b)  # never raises
        outs.append(b.copy())
    y = np.concatenate(outs)
    assert np.isfinite(y).all()
    assert chain.failures == {"broken": "RuntimeError: plugin crashed"}
    # before the failing (5th) block: 0.5 then 0.5 again; from it on: the dry signal, then 0.5
    pre = np.where(np.arange(x.size) < 4 * 64, 0.25, 0.5) * x
    safety = Safety(ceiling_db=0.0)
    safety.prepare(48000, 64, 2)
    safety.process(np.zeros((64, 2), np.float32))  # the chain's warm-up block
    safety.reset()
    ref = []
    for k in range(12):
        b = np.repeat(pre[k * 64:(k + 1) * 64, None], 2, 1).astype(np.float32)
        safety.process(b)
        ref.append(b)
    assert np.allclose(y, np.concatenate(ref), atol=1e-5)
    chain.prepare(48000, 64, 2)  # a new start gives the processor another chance
    assert chain.failures == {}
