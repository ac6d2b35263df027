"""LV2 hosting, port by port, with real plugins (swh, lsp, zam, calf, mda): side-chain inputs,
outputs a plugin blows up, sample-rate ranges at other rates, log tapers from 0, the MIDI atom
buffer, what counts as an instrument, a latency that moves. Each test skips when its plugin is
not installed."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from realtime.dsp import processors as P
from realtime.dsp.presets import build_chain, validate_preset
from realtime.dsp.processors.lv2 import OUTPUT_LIMIT, Lv2Instrument
from realtime.io import lilv, lv2_scan

SR = 48000
SWH = "http://plugin.org.uk/swh-plugins/"
LSP = "http://lsp-plug.in/plugins/lv2/"
CALF = "http://calf.sourceforge.net/plugins/"
AMP, SC3, LSF, LOWPASS = SWH + "amp", SWH + "sc3", SWH + "lsFilter", SWH + "lowpass_iir"
ZAMCOMP, LSP_SC_MONO = "urn:zamaudio:ZamComp", LSP + "sc_compressor_mono"
LSP_COMP, LSP_LIMITER, LSP_SAMPLER = LSP + "compressor_stereo", LSP + "limiter_stereo", LSP + "sampler_mono"
EPIANO, CALF_COMP = "http://drobilla.net/plugins/mda/EPiano", CALF + "Compressor"

pytestmark = pytest.mark.skipif(not lilv.available(), reason="run scripts/setup.sh (liblilv-0-0)")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REALTIME_CACHE_DIR", str(tmp_path / "cache"))


def rewrite_cache_as(version: int, edit, tmp_path, monkeypatch) -> dict:
    """The scan cache rewritten as an older ``CACHE_VERSION`` wrote it: ``edit(raw)`` takes out what
    that version lacked, and the signature is that version's. Returns what was written."""
    cache = tmp_path / "cache" / "lv2_scan.json"
    raw = json.loads(cache.read_text())
    edit(raw)
    current = lv2_scan.CACHE_VERSION
    monkeypatch.setattr(lv2_scan, "CACHE_VERSION", version)
    raw["signature"] = lv2_scan.signature("/usr/lib/lv2")
    monkeypatch.setattr(lv2_scan, "CACHE_VERSION", current)
    cache.write_text(json.dumps(raw))
    lv2_scan._scans.clear()
    return raw


def _need(*uris):
    missing = [u for u in uris if u not in lv2_scan.scan().plugins]
    if missing:
        pytest.skip(f"not installed: {missing}")


def _run(proc, x, block=256, sr=SR):
    from .test_lv2 import _run as run_blocks

    return run_blocks(proc, x, block, sr)


def _tone(y, f, sr=SR):
    """Amplitude of the sine at ``f`` Hz in ``y``."""
    t = np.arange(len(y)) / sr
    return 2 * abs(np.dot(y, np.exp(-2j * np.pi * f * t))) / len(y)


def _port(proc, symbol):
    return next(p.index for p in proc.info.ports if p.symbol == symbol)


# -- side-chain inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("uri, key", [(SC3, "sidechain"), (ZAMCOMP, "lv2_sidechain_in"), (LSP_SC_MONO, "sc")])
def test_side_chain_inputs_are_found_and_get_silence_while_each_channel_keeps_its_path(uri, key):
    """sc3 lists its key input first, ZamComp and LSP's mono compressor after their one input: the
    channels go to the signal-path inputs (a mono one plus a key runs dual-mono), the key gets
    silence, so each channel comes out with its own tone and nothing of the other's."""
    _need(uri)
    info = lv2_scan.scan().plugins[uri]
    assert [p.symbol for p in info.ports_of("audio", "in") if p.sidechain] == [key]
    t = np.arange(SR) / SR
    x = np.stack([0.25 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 1000 * t)], 1)
    p = P.create("lv2", uri=uri)
    y = _run(p, x)[SR // 2:]
    assert p.adaptation.endswith("side-chain input silent")
    assert ("dual-mono" in p.adaptation) == (len(info.main_inputs) == 1)
    assert _tone(y[:, 0], 440) > 0.2 and _tone(y[:, 1], 1000) > 0.2
    assert _tone(y[:, 0], 1000) < 0.01 and _tone(y[:, 1], 440) < 0.01


def test_a_scan_cache_from_before_side_chains_is_rebuilt_and_old_entries_read_safely(tmp_path, monkeypatch):
    """A cache written before ``sidechain`` and ``instrument_class`` existed has the old version
    in its signature, so it is scanned afresh; an entry without the fields still loads (defaults)."""
    _need(SC3)
    monkeypatch.setenv("LV2_PATH", "/usr/lib/lv2")
    lv2_scan.scan()
    def before_side_chains(raw):
        for d in raw["plugins"].values():
            del d["instrument_class"]
            for port in d["ports"]:
                del port["sidechain"]

    raw = rewrite_cache_as(1, before_side_chains, tmp_path, monkeypatch)
    res = lv2_scan.scan()
    assert not res.cached and [p.symbol for p in res.plugins[SC3].main_inputs] == ["left_in", "right_in"]
    old = lv2_scan.PluginInfo.from_dict(raw["plugins"][SC3])
    assert not old.instrument_class and not any(p.sidechain for p in old.ports)


# -- outputs a plugin blows up ---------------------------------------------------------------------
def test_output_beyond_the_limit_reaches_the_chain_as_zero_and_is_counted():
    """swh amp at +70 dB (x 3162): a full-scale input comes out as it should; ten times that
    (+90 dBFS out) is beyond OUTPUT_LIMIT and reaches the chain as 0, counted."""
    gain = np.float32(10 ** (70 / 20))
    x = np.ones((256, 1), np.float32)
    x[128:] = 10.0
    p = P.create("lv2", uri=AMP, gain=70.0)
    y = _run(p, x, block=128)
    assert 3000 < float(y[0, 0]) < OUTPUT_LIMIT
    np.testing.assert_allclose(y[:128], gain, rtol=1e-5)
    assert np.all(y[128:] == 0.0)
    assert p.bad_output_samples == 128 and p.describe_extra()["bad_output_samples"] == 128


def _noise_blocks(p, n, rng, block=256):
    out = np.zeros((n * block, 1), np.float32)
    for i in range(n):
        b = (0.3 * rng.standard_normal((block, 1))).astype(np.float32)
        p.process(b)
        out[i * block:(i + 1) * block] = b
    return out


@pytest.mark.parametrize("live", [False, True])
def test_a_plugin_stuck_in_nan_is_reset_and_plays_again(live):
    """swh lsFilter at 44.1 kHz turns NaN at the top of its own range (22 kHz) and stays NaN: the
    chain gets 0 instead, the instance is reset (offline at once; live by the rescue thread, the
    DSP thread only parks it), and once the knob is back the filter plays again."""
    _need(LSF)
    p = P.create("lv2", uri=LSF, cutoff=22050.0)
    p.live = live
    p.prepare(44100, 256, 1)
    rng = np.random.default_rng(0)
    y = _noise_blocks(p, 20, rng)
    assert np.all(y == 0.0) and p.bad_output_samples > 0
    p.set_param("cutoff", 12048.0)
    deadline = time.monotonic() + 20.0
    while not np.any(_noise_blocks(p, 1, rng)) and time.monotonic() < deadline:  # live: the rescue thread's turn
        time.sleep(0.002)
    y = _noise_blocks(p, 40, rng)
    assert p.instance_resets >= 1 and p.describe_extra()["instance_resets"] == p.instance_resets
    assert np.all(np.isfinite(y)) and np.sqrt(np.mean(y[-2560:] ** 2)) > 0.1
    p.close()


# -- ranges that are fractions of the sample rate ------------------------------------------------------
@pytest.mark.parametrize("uri, symbol, knob, rate, sent", [
    (LSF, "cutoff", 24000.0, 44100, 0.5 * 44100),  # the knob's top (0.5 at 48 kHz) is beyond Nyquist here
    (LOWPASS, "cutoff", 21600.0, 22050, 0.45 * 22050),
    (LOWPASS, "cutoff", 21600.0, 96000, 21600.0),  # within 0.45 * 96 kHz: as it is
    (LSF, "cutoff", 96.0, 96000, 0.002 * 96000),  # the knob's bottom is below the plugin's here
])
def test_a_sample_rate_range_is_clamped_at_the_rate_the_stream_runs_at(uri, symbol, knob, rate, sent):
    """The knob shows the range at 48 kHz; the plugin gets the value within its range at the real rate."""
    _need(uri)
    p = P.create("lv2", uri=uri, **{symbol: knob})
    _run(p, 0.1 * np.random.default_rng(1).standard_normal((rate // 4, 1)), sr=rate)
    assert p._ctl[0, _port(p, symbol)] == np.float32(sent)


# -- logarithmic ports from 0 ---------------------------------------------------------------------------
def test_a_log_port_from_zero_gets_a_log_taper_whose_bottom_is_zero():
    """LSP compressor: input gain [0, 1000], default 1, logarithmic. The knob is a log taper from
    1000 * 1e-6 (1 sits mid-travel, not at 0.1%); its bottom gives the plugin exactly 0; 0, as
    presets saved with the linear knob hold it, is still a valid value (the bottom)."""
    _need(LSP_COMP)
    cls = P.slot_class("lv2", LSP_COMP)
    g = cls.params[cls.param_index("g_in")]
    assert (g.scale, g.min, g.max, g.default) == ("log", 1e-3, 1000.0, 1.0)
    assert g.to_unit(g.default) == pytest.approx(0.5) and g.from_unit(0.0) == g.min
    dry = cls.params[cls.param_index("cdr")]  # dry gain [0, 10], default 0
    assert dry.scale == "log" and dry.default == dry.min == 1e-5
    validate_preset({"version": 1, "name": "t", "chain": [
        {"processor": "lv2", "uri": LSP_COMP, "params": {"g_in": 0, "cdr": 0.0}}]})
    p = cls(g_in=0, cdr=0)
    assert p.get_param("g_in") == g.min
    _run(p, np.zeros((512, 2)))
    assert p._ctl[0, _port(p, "g_in")] == 0.0 and p._ctl[0, _port(p, "cdr")] == 0.0
    p.set_param("g_in", 2.0)
    p.process(np.zeros((256, 2), np.float32))
    assert p._ctl[0, _port(p, "g_in")] == 2.0


# -- MIDI --------------------------------------------------------------------------------------------------
def test_the_whole_midi_queue_fits_the_atom_buffer_so_a_late_note_off_is_never_lost():
    """A note, 400 pitch-bend messages (mda EPiano ignores them) and the note-off at sample 900,
    all in one block: more than the old 8 KiB buffer's 340 events. The note-off arrives, so the
    output is the same, sample for sample, as without the bends."""
    _need(EPIANO)

    def play(bends):
        p = P.create("lv2", uri=EPIANO)
        p.prepare(SR, 1024, 2)
        p.handle_midi(0x90, 60, 100, 0)
        for k in range(bends):
            p.handle_midi(0xE0, k & 0x7F, 64, k)
        p.handle_midi(0x80, 60, 0, 900)
        y = np.zeros((60 * 1024, 2), np.float32)
        for i in range(0, len(y), 1024):
            p.process(y[i:i + 1024])
        return y, p.dropped_events

    plain, _ = play(0)
    flood, dropped = play(400)
    assert dropped == 0 and np.abs(plain).max() > 0.01 and np.abs(plain[-4096:]).max() == 0.0
    np.testing.assert_array_equal(flood, plain)


def test_an_effect_with_a_midi_input_takes_midi_but_is_no_instrument():
    """Calf's compressor has a MIDI input (for MIDI learn) and an audio path: the chain still
    forwards MIDI to it, but it is not an instrument; an LSP sampler with an audio input is one by
    its class, mda EPiano by having no audio input."""
    _need(CALF_COMP, EPIANO)
    comp = P.slot_class("lv2", CALF_COMP)
    assert not comp.instrument and not issubclass(comp, Lv2Instrument) and callable(getattr(comp, "handle_midi"))
    ep = P.slot_class("lv2", EPIANO)
    assert ep.instrument and issubclass(ep, Lv2Instrument)
    assert not P.slot_class("lv2", AMP).instrument
    import main

    assert main.main(["synth", "x.mid", "y.wav", "--instrument", f"lv2:{CALF_COMP}"]) == 2  # it wrote silence, rc 0
    if LSP_SAMPLER in lv2_scan.scan().plugins:
        sampler = P.slot_class("lv2", LSP_SAMPLER)
        assert sampler.info.audio_in == 1 and sampler.info.instrument_class and sampler.instrument


# -- latency that moves ---------------------------------------------------------------------------------------
def test_a_latency_change_while_streaming_is_followed_by_the_chains_dry_path():
    """LSP limiter at 50% mix: its look-ahead (5 ms: 240 samples) goes to 20 ms. The plugin says 960
    on its latency port; the chain follows, so an impulse comes out once, at 960, wet and dry
    together (not a dry one at 240 and a wet one at 960)."""
    _need(LSP_LIMITER)
    chain = build_chain(validate_preset({"version": 1, "name": "t", "chain": [
        {"id": "lim", "processor": "lv2", "uri": LSP_LIMITER, "mix": 0.5}]}))
    chain.prepare(SR, 256, 2)
    lim = chain.slot("lim").processor
    assert chain.latency == 240 and lim.max_latency >= SR // 2
    lim.set_param("lk", 20.0)
    for _ in range(40):
        chain.process(np.zeros((256, 2), np.float32))
    assert lim.latency == chain.latency == 960
    x = np.zeros((256 * 40, 2), np.float32)
    x[0] = 0.1
    for i in range(0, len(x), 256):
        chain.process(x[i:i + 256])
    assert list(np.nonzero(np.abs(x[:, 0]) > 0.01)[0]) == [960]


def test_no_allocation_per_block_with_side_chains_and_a_moving_latency():
    """The allocation rule of tests/test_processors.py for plugins with a side-chain input (sc3,
    ZamComp dual-mono) and one whose latency moves with its knobs (LSP limiter)."""
    from .test_processors import allocated_while_turning

    _need(SC3, ZAMCOMP, LSP_LIMITER)
    grown = allocated_while_turning([P.create("lv2", uri=u) for u in (SC3, ZAMCOMP, LSP_LIMITER)], SR)
    assert grown < 8192, f"{grown} bytes"


def test_a_plugin_that_sets_flush_to_zero_does_not_leave_it_in_the_calling_thread():
    """ZamComp sets flush-to-zero when it is instantiated; it stayed set in the thread that prepared
    it (a render's main thread, a test session's: hypothesis then refused to run at all)."""
    _need(ZAMCOMP)

    def subnormals() -> bool:
        return float(np.float64(2.2250738585072014e-308) / np.float64(4.0)) != 0.0

    assert subnormals()
    comp = P.create("lv2", uri=ZAMCOMP)
    _run(comp, np.zeros((1024, 2), np.float32))
    comp.reset()
    assert subnormals()


def test_the_panels_view_of_a_slot_carries_its_bad_output_counts():
    """The engine runs in its own process; the panel knows a slot by its description. The counts of
    zeroed output and instance resets stopped at the engine's side."""
    from realtime.engine.control import ProcessorView

    chain = build_chain(validate_preset({"version": 1, "name": "t", "chain": [
        {"id": "amp", "processor": "lv2", "uri": AMP}]}))
    chain.slot("amp").processor.bad_output_samples = 7
    extra = ProcessorView(chain.describe()[0]).describe_extra()
    assert (extra["bad_output_samples"], extra["instance_resets"]) == (7, 0)
