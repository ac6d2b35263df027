"""LV2 hosting with real plugins (swh-lv2, mda-lv2 through liblilv): scan, descriptors, presets,
sample-exact behaviour, instruments, latency, allocation, bad input. JACK tests at the end."""
from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from realtime.dsp import processors as P
from realtime.dsp.chain import Chain, Slot
from realtime.dsp.presets import (
    apply_overrides,
    build_chain,
    load_preset,
    save_preset,
    validate_preset,
)
from realtime.errors import PluginError, PresetError
from realtime.io import lilv, lv2_host, lv2_scan
from realtime.run.offline import process_file, render_events

SR = 48000
SWH = "http://plugin.org.uk/swh-plugins/"
MDA = "http://drobilla.net/plugins/mda/"
AMP, GVERB, LATENCY = SWH + "amp", SWH + "gverb", SWH + "artificialLatency"
EPIANO, LIMITER, AMBIENCE = MDA + "EPiano", MDA + "Limiter", MDA + "Ambience"


def _installed() -> bool:
    if not lilv.available():
        return False
    plugins = lv2_scan.scan(use_cache=False).plugins  # collection time: no cache folder written
    return all(u in plugins for u in (AMP, GVERB, LATENCY, EPIANO, LIMITER, AMBIENCE))


pytestmark = pytest.mark.skipif(not _installed(), reason="run scripts/setup.sh (liblilv-0-0, swh-lv2, mda-lv2)")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REALTIME_CACHE_DIR", str(tmp_path / "cache"))


def _preset(*slots) -> dict:
    return {"version": 1, "name": "t", "chain": list(slots)}


def _run(proc, x, block=128, sr=SR):
    y = np.array(x, np.float32, copy=True)
    proc.prepare(sr, block, y.shape[1])
    for i in range(0, len(y), block):
        proc.process(y[i:i + block])
    return y


def _f0(x, sr=SR):
    """Strongest spectral peak with parabolic interpolation (Hz)."""
    n = len(x)
    spec = np.abs(np.fft.rfft(x * np.hanning(n), 8 * n))
    k = int(np.argmax(spec[1:])) + 1
    a, b, c = np.log(spec[k - 1: k + 2] + 1e-30)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / (8 * n)


# -- scan --------------------------------------------------------------------------------------
def _lv2info_ports(uri):
    """Port symbol -> (types, min, max, default) as lilv's own lv2info prints them."""
    out = subprocess.run(["lv2info", uri], capture_output=True, text=True, check=True).stdout
    ports, cur = {}, None
    for line in out.splitlines():
        s = line.strip()
        if s.startswith("Port "):
            cur = {"types": []}
        elif cur is not None and s.startswith(("Type:", "http://lv2plug.in")):
            cur["types"].append(s.split()[-1].rsplit("#", 1)[-1])
        elif cur is not None and ":" in s:
            key, _, val = s.partition(":")
            cur[key.strip()] = val.strip()
            if key.strip() == "Symbol":
                ports[val.strip()] = cur
    return ports


def test_plugins_have_their_classes_names():
    """lilv names classes from the LV2 spec bundles (lv2-dev, which set-up installs); without them
    every one of the 345 plugins here read "Plugin"."""
    plugins = lv2_scan.scan().plugins
    assert (plugins[AMP].plugin_class, plugins[EPIANO].plugin_class) == ("Amplifier Plugin", "Instrument Plugin")


@pytest.mark.parametrize("uri", [AMP, GVERB, LATENCY, EPIANO, LIMITER])
def test_scan_finds_the_test_plugins_with_their_ports(uri):
    info = lv2_scan.scan().plugins[uri]
    expect = {AMP: (1, 1, False, ["gain"], None), GVERB: (1, 2, False, None, None),
              LATENCY: (1, 1, False, ["delay"], 3), EPIANO: (0, 2, True, None, None),
              LIMITER: (2, 2, False, None, None)}[uri]
    assert (info.audio_in, info.audio_out, info.midi_in) == expect[:3]
    if expect[3] is not None:
        assert [p.symbol for p in info.controls] == expect[3]
    assert info.latency_port == expect[4]
    if shutil.which("lv2info"):  # cross-check every port with lilv's own tool
        ref = _lv2info_ports(uri)
        assert sorted(ref) == sorted(p.symbol for p in info.ports)
        for p in info.ports:
            r = ref[p.symbol]
            assert {"audio": "AudioPort", "control": "ControlPort", "atom": "AtomPort"}[p.type] in r["types"]
            assert ("InputPort" if p.direction == "in" else "OutputPort") in r["types"]
            for key, val in (("Minimum", p.minimum), ("Maximum", p.maximum), ("Default", p.default)):
                if key in r:
                    assert val == pytest.approx(float(r[key]), rel=1e-6, abs=1e-9), (p.symbol, key)


def test_descriptors_follow_the_port_hints():
    amp = P.slot_class("lv2", AMP)
    assert [(d.id, d.min, d.max, d.default, d.step) for d in amp.params] == [("gain", -70.0, 70.0, 0.0, 0.0)]
    lim = P.slot_class("lv2", LIMITER)
    knee = lim.params[lim.param_index("knee")]
    assert knee.choices == ("Hard", "Soft") and knee.step == 1.0
    ep = P.slot_class("lv2", EPIANO)
    poly = ep.params[ep.param_index("polyphonic")]
    assert (poly.min, poly.max, poly.step, poly.default) == (0.0, 1.0, 1.0, 1.0)  # lv2:toggled
    assert poly.choices == ("off", "on")  # a switch in the panel, not a knob reading "0" or "1"
    amb = P.slot_class("lv2", AMBIENCE)
    assert "mix_" in [d.id for d in amb.params] and "mix" not in [d.id for d in amb.params]  # slot control kept
    assert P.slot_class("lv2", EPIANO).hard_rt and not amp.hard_rt
    assert "lv2" not in P.available_kinds()  # nothing creates it bare


def test_scan_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    monkeypatch.setenv("LV2_PATH", "/usr/lib/lv2")
    first = lv2_scan.scan()
    assert (tmp_path / "cache" / "lv2_scan.json").is_file()
    lv2_scan._scans.clear()
    again = lv2_scan.scan()
    assert again.cached and again.plugins == first.plugins
    extra = tmp_path / "lv2"
    shutil.copytree("/usr/lib/lv2/amp-swh.lv2", extra / "amp-copy.lv2")
    monkeypatch.setenv("LV2_PATH", f"{extra}:/usr/lib/lv2")
    assert lv2_scan.signature(f"{extra}:/usr/lib/lv2") != lv2_scan.signature("/usr/lib/lv2")
    assert not lv2_scan.scan().cached
    # a dangling .so link in a bundle (a half-removed package) and a cache file that is a JSON list:
    # both used to fail every scan (and so every LV2 slot) with a one-line error or a traceback
    (extra / "amp-copy.lv2" / "gone.so").symlink_to(extra / "nowhere.so")
    (tmp_path / "cache" / "lv2_scan.json").write_text("[]")
    lv2_scan._scans.clear()
    res = lv2_scan.scan()
    assert AMP in res.plugins and not res.cached


def test_an_empty_lv2_path_finds_nothing_and_leaves_the_default_scan_alone(tmp_path, monkeypatch):
    """LV2_PATH='' was taken for "the default path" while lilv read it as no folder: its empty
    scan went into the default path's cache entry, and every later scan found no plugin."""
    monkeypatch.delenv("LV2_PATH", raising=False)
    assert AMP in lv2_scan.scan().plugins
    monkeypatch.setenv("LV2_PATH", "")
    lv2_scan._scans.clear()
    assert lv2_scan.scan().plugins == {}
    monkeypatch.delenv("LV2_PATH")
    lv2_scan._scans.clear()
    assert AMP in lv2_scan.scan().plugins
    # `plugins --rescan` repairs a cache gone wrong, not only ignores it
    cache = tmp_path / "cache" / "lv2_scan.json"
    raw = json.loads(cache.read_text())
    cache.write_text(json.dumps({**raw, "plugins": {}}))
    lv2_scan._scans.clear()
    assert lv2_scan.scan().plugins == {}  # a damaged cache with the right signature is believed
    assert AMP in lv2_scan.scan(refresh=True).plugins
    lv2_scan._scans.clear()
    assert lv2_scan.scan().cached and AMP in lv2_scan.scan().plugins


# -- presets ------------------------------------------------------------------------------------
def test_descriptors_round_trip_through_presets(tmp_path):
    p = apply_overrides(_preset({"id": "amp", "processor": "lv2", "uri": AMP},
                                {"id": "lim", "processor": "lv2", "uri": LIMITER, "params": {"knee": "Soft"}}),
                        ["amp.gain=-6", "lim.mix=0.5", "lim.knee=Hard", "lim.thresh=0.25"])
    assert p["chain"][0] == {"id": "amp", "processor": "lv2", "uri": AMP, "bypass": False, "mix": 1.0,
                             "params": {"gain": -6}}
    chain = build_chain(p)
    assert chain.slot("amp").processor.get_param("gain") == -6.0
    assert chain.slot("lim").processor.get_param("knee") == 0.0 and chain.slot("lim").mix == 0.5
    saved = chain.to_preset("t")
    assert saved["chain"][0]["uri"] == AMP and saved["chain"][1]["params"]["knee"] == "Hard"
    chain.prepare(SR, 128, 2)
    d = chain.describe()[0]
    assert (d["kind"], d["uri"], d["plugin_name"], d["hard_rt"]) == ("lv2", AMP, "Simple amplifier", False)
    assert d["adaptation"] == "dual-mono (two instances)" and d["params"][0]["id"] == "gain"
    path = save_preset(saved, tmp_path / "p.json")
    again = build_chain(load_preset(path)).to_preset("t")
    assert again == saved
    assert json.loads(path.read_text())["chain"][1]["uri"] == LIMITER
    with pytest.raises(PresetError, match=r"override 'amp.gain=99'.*chain\[0\]\.params\.gain.*outside"):
        apply_overrides(p, ["amp.gain=99"])
    with pytest.raises(PresetError, match=r"chain\[0\]\.params\.nope: unknown parameter"):
        validate_preset(_preset({"processor": "lv2", "uri": AMP, "params": {"nope": 1}}))
    with pytest.raises(PresetError, match=r"chain\[0\]\.uri: a 'lv2' slot needs"):
        validate_preset(_preset({"processor": "lv2"}))
    with pytest.raises(PresetError, match=r"chain\[0\]\.uri: only \['lv2'\] slots take a uri"):
        validate_preset(_preset({"processor": "gain", "uri": AMP}))
    mapped = validate_preset({**_preset({"id": "amp", "processor": "lv2", "uri": AMP}),
                              "midi": [{"cc": 7, "channel": None, "target": "amp.gain"}]})
    assert mapped["midi"][0]["target"] == "amp.gain"


# -- audio -------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 2])
def test_amp_gain_in_db_sample_by_sample(channels):
    """swh amp: output = input * 10^(gain/20), per sample; on a stereo chain as dual mono."""
    rng = np.random.default_rng(1)
    x = (0.2 * rng.standard_normal((4096, channels))).astype(np.float32)
    if channels == 2:
        x[:, 1] *= -0.5  # the two channels differ: dual mono keeps them apart
    p = P.create("lv2", uri=AMP, gain=-6.0)
    y = _run(p, x)
    assert p.adaptation == ("dual-mono (two instances)" if channels == 2 else "mono")
    np.testing.assert_allclose(y, x * np.float32(10 ** (-6 / 20)), rtol=2e-6, atol=0)
    p.set_param("gain", 12.0)
    y2 = x[:128].copy()
    p.process(y2)  # the next block after a knob move has the new gain
    np.testing.assert_allclose(y2, x[:128] * np.float32(10 ** (12 / 20)), rtol=2e-6, atol=0)


def test_reverb_tail_is_there_and_decays():
    x = np.zeros((SR * 2, 2), np.float32)
    x[100] = 0.5
    p = P.create("lv2", uri=GVERB, revtime=1.0, drylevel=-70.0)
    y = _run(p, x)
    assert "downmixed" in p.adaptation  # mono-in, stereo-out plugin on a stereo chain
    win = [float(np.sqrt(np.mean(y[i:i + 4800] ** 2))) for i in range(4800, 4800 * 18, 4800)]
    assert win[0] > 1e-4 and all(w > 0 for w in win[:8])
    assert all(b < a for a, b in zip(win[:12], win[1:12]))  # decaying, 100 ms by 100 ms
    assert win[11] < 0.1 * win[0]
    assert not np.allclose(y[:, 0], y[:, 1])  # a stereo tail from a mono input
    p.reset()  # LV2's reset (deactivate + activate) clears the tail
    z = np.zeros((1024, 2), np.float32)
    for i in range(0, 1024, 128):
        p.process(z[i:i + 128])
    assert np.abs(z).max() < 1e-6


def test_non_finite_input_never_reaches_a_plugins_state():
    """NaN and Inf reach a hosted plugin as 0, through a channel (amp) and through the downmix
    (gverb, a mono-in reverb on a stereo chain): the reverb still rings out a later impulse,
    which one NaN in its state would have turned into NaN (silenced by the safety stage) for good."""
    p = P.create("lv2", uri=AMP, gain=0.0)
    x = np.full((256, 2), 0.25, np.float32)
    x[[3, 40], 0], x[7, 1], x[9, 1] = np.nan, np.inf, -np.inf
    y = _run(p, x)
    bad = ~np.isfinite(x)
    assert np.all(y[bad] == 0.0) and np.allclose(y[~bad], 0.25)
    p = P.create("lv2", uri=GVERB, revtime=1.0, drylevel=-70.0)
    x = np.zeros((SR, 2), np.float32)
    x[100:228, 0] = np.nan
    x[SR // 2] = 0.5
    y = _run(p, x)
    assert np.all(np.isfinite(y)) and np.sqrt(np.mean(y[SR // 2:SR // 2 + 4800] ** 2)) > 1e-4


def test_bypass_and_mix_are_exact_with_latency_compensated():
    """artificialLatency reports latency (10 ms) without delaying its audio: the chain delays its
    dry path by the reported latency, so bypass gives the input delayed by exactly that much and
    mix 0.5 is dry (delayed) + 0.5 * (wet - dry), sample for sample."""
    rng = np.random.default_rng(2)
    x = (0.1 * rng.standard_normal((SR // 2, 2))).astype(np.float32)

    def through(mix, bypass=False):
        chain = build_chain(_preset({"id": "lat", "processor": "lv2", "uri": LATENCY, "mix": mix,
                                     "bypass": bypass, "params": {"delay": 10.0}}))
        y = x.copy()
        chain.prepare(SR, 128, 2)
        assert chain.latency == 480 and chain.slot("lat").processor.latency == 480
        for i in range(0, len(y), 128):
            chain.process(y[i:i + 128])
        return y

    def safety_only(sig):
        ref = Chain([])
        ref.prepare(SR, 128, 2)
        y = sig.copy()
        for i in range(0, len(y), 128):
            ref.process(y[i:i + 128])
        return y

    dry = np.zeros_like(x)
    dry[480:] = x[:-480]
    np.testing.assert_array_equal(through(1.0, bypass=True), safety_only(dry))
    wet = x  # the plugin passes audio through unchanged
    half = (dry.astype(np.float64) + 0.5 * (wet - dry).astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(through(0.5), safety_only(half))
    np.testing.assert_array_equal(through(1.0), safety_only(wet))


def test_offline_runner_compensates_plugin_latency(tmp_path):
    """process_file drops the chain's latency, the LV2 plugin's included: a bypassed slot then
    gives the input back in place (through the safety stage)."""
    x = (0.1 * np.random.default_rng(3).standard_normal((100 * 128, 2))).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, SR, subtype="FLOAT")
    chain = build_chain(_preset({"id": "lat", "processor": "lv2", "uri": LATENCY, "bypass": True,
                                 "params": {"delay": 5.0}}))
    rep = process_file(tmp_path / "in.wav", tmp_path / "out.wav", chain, samplerate=SR, blocksize=128,
                       progress=False)
    assert rep["latency_compensated_frames"] == 240
    y, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    safety = Chain([])
    safety.prepare(SR, 128, 2)
    want = x.copy()
    for i in range(0, len(want), 128):
        safety.process(want[i:i + 128])
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("note, offset", [(69, 1000), (60, 4321)])
def test_instrument_plays_the_note_at_its_pitch_and_sample(note, offset):
    chain = build_chain(_preset({"id": "ep", "processor": "lv2", "uri": EPIANO,
                                 "params": {"random_tuning": 0.0, "fine_tuning": 0.5, "modulation": 0.0}}))
    ev = np.array([[offset, 0x90, note, 100], [offset + SR // 2, 0x80, note, 0]], np.float64)
    y = render_events(chain, ev, SR, samplerate=SR, blocksize=128)
    loud = np.nonzero(np.abs(y[:, 0]) > 1e-5)[0]
    assert loud[0] == offset  # sample-accurate: not the block start (offset is mid-block)
    assert np.abs(y[:offset]).max() == 0.0
    f0 = _f0(y[offset + 2000: offset + 2000 + 16384, 0].astype(np.float64))
    want = 440.0 * 2 ** ((note - 69) / 12)
    assert f0 == pytest.approx(want, rel=0.003)  # within 5 cents


def test_a_flood_of_midi_in_one_block_is_bounded_not_a_crash():
    """600 messages in one block: the queue (512) drops and counts the rest. The atom buffer holds
    the whole queue (it used to hold 340 events and drop the latest ones uncounted, a note-off too:
    tests/test_lv2_ports.py), so the count is the queue's and nothing else is lost."""
    p = P.create("lv2", uri=EPIANO)
    p.prepare(SR, 128, 2)
    assert p._a8.shape[2] >= 16 + 24 * 512  # sequence header, then 24 bytes per MIDI event
    for k in range(600):
        p.handle_midi(0x90 if k % 2 == 0 else 0x80, 40 + k % 40, 100, k % 128)
    block = np.zeros((128, 2), np.float32)
    p.process(block)
    assert p.dropped_events == 600 - 512
    assert np.all(np.isfinite(block)) and np.abs(block).max() > 0
    p.panic()
    for _ in range(200):
        block[:] = 0
        p.process(block)
    assert np.abs(block).max() < 1e-3  # all notes off


def test_synth_command_renders_a_midi_file_through_an_lv2_instrument(tmp_path):
    import mido

    import main

    mf = mido.MidiFile()
    tr = mido.MidiTrack()
    mf.tracks.append(tr)
    tr += [mido.Message("note_on", note=69, velocity=100, time=0),
           mido.Message("note_off", note=69, velocity=0, time=480)]
    mf.save(tmp_path / "a.mid")
    assert main.main(["synth", str(tmp_path / "a.mid"), str(tmp_path / "a.wav"), "--instrument", f"lv2:{EPIANO}",
                      "--set", "synth.random_tuning=0"]) == 0
    y, sr = sf.read(tmp_path / "a.wav")
    assert sr == SR and np.abs(y).max() > 0.01
    assert _f0(y[2000:2000 + 16384, 0]) == pytest.approx(440.0, rel=0.003)


def test_no_allocation_per_block_with_lv2_slots():
    """The allocation rule of tests/test_processors.py (every knob turning, notes playing),
    for an effect, a reverb and an instrument."""
    from .test_processors import allocated_while_turning

    grown = allocated_while_turning([P.create("lv2", uri=u) for u in (AMP, GVERB, EPIANO)], SR)
    assert grown < 8192, f"{grown} bytes"


# -- bad input --------------------------------------------------------------------------------
def test_unknown_uri_is_a_clear_error(capsys):
    with pytest.raises(PluginError, match="lv2 plugin 'urn:nope' is not installed"):
        P.create("lv2", uri="urn:nope")
    with pytest.raises(PresetError, match=r"chain\[0\]\.uri: lv2 plugin 'urn:nope' is not installed"):
        validate_preset(_preset({"processor": "lv2", "uri": "urn:nope"}))
    with pytest.raises(PluginError, match='needs the plugin\'s "uri"'):
        P.create("lv2")
    import main

    assert main.main(["synth", "x.mid", "y.wav", "--instrument", "lv2:urn:nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not installed" in err
    assert main.main(["synth", "x.mid", "y.wav", "--instrument", f"lv2:{AMP}"]) == 2
    assert "is not an instrument (no MIDI input)" in capsys.readouterr().err


def build_plugin(root, name: str, ttl: str, c_source: str, libs=()):
    """An LV2 bundle ``root/lv2/<name>.lv2`` built here (``manifest.ttl`` and ``<name>.so`` from
    ``c_source``); skips the test without a C compiler. Returns the folder to put on ``LV2_PATH``."""
    if shutil.which("gcc") is None:
        pytest.skip("needs a C compiler to build the test plugin")
    b = root / "lv2" / f"{name}.lv2"
    b.mkdir(parents=True)
    (b / "manifest.ttl").write_text(ttl)
    (b / f"{name}.c").write_text(c_source)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(b / f"{name}.so"), str(b / f"{name}.c"), *libs],
                   check=True)
    return root / "lv2"


_PREFIX = """@prefix lv2: <http://lv2plug.in/ns/lv2core#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix doap: <http://usefulinc.com/ns/doap#> .
"""
_AMP_PORTS = """ doap:name "Test amp" ;
  lv2:port [ a lv2:ControlPort , lv2:InputPort ; lv2:index 0 ; lv2:symbol "gain" ; lv2:name "Gain" ;
             lv2:minimum -70 ; lv2:maximum 70 ; lv2:default 0 ] ,
           [ a lv2:AudioPort , lv2:InputPort ; lv2:index 1 ; lv2:symbol "input" ; lv2:name "In" ] ,
           [ a lv2:AudioPort , lv2:OutputPort ; lv2:index 2 ; lv2:symbol "output" ; lv2:name "Out" ] .
"""


def _bundle(root, name, manifest, data=None):
    b = root / f"{name}.lv2"
    b.mkdir(parents=True)
    (b / "manifest.ttl").write_text(_PREFIX + manifest)
    if data is not None:
        (b / "plugin.ttl").write_text(_PREFIX + data)
    return b


def test_broken_bundles_are_reported_and_skipped(tmp_path, monkeypatch):
    root = tmp_path / "lv2"
    _bundle(root, "broken-manifest", "<urn:test:broken> a lv2:Plugin ; lv2:binary <x.so> ; ;; not turtle {\n")
    _bundle(root, "broken-data", "<urn:test:broken-data> a lv2:Plugin ; lv2:binary <x.so> ; rdfs:seeAlso <plugin.ttl> .\n",
            "<urn:test:broken-data> a lv2:Plugin ; lv2:port [ a lv2:AudioPort ; lv2:index 0 \n")
    monkeypatch.setenv("LV2_PATH", f"{root}:/usr/lib/lv2")
    res = lv2_scan.scan()
    assert AMP in res.plugins and "urn:test:broken" not in res.plugins and "urn:test:broken-data" not in res.plugins
    assert any("broken-manifest.lv2/manifest.ttl" in e for e in res.errors), res.errors
    assert any(e.startswith("urn:test:broken-data: skipped") and "plugin.ttl" in e for e in res.errors), res.errors
    with pytest.raises(PluginError, match=r"^lv2 plugin urn:test:broken-data: skipped \(.*plugin\.ttl"):
        P.create("lv2", uri="urn:test:broken-data")
    out = subprocess.run([sys.executable, "main.py", "plugins", "--json"], capture_output=True, text=True,
                         env={**__import__("os").environ}, check=True)
    listing = json.loads(out.stdout)
    assert AMP in [p["uri"] for p in listing["plugins"]] and any("broken" in e for e in listing["skipped"])


def test_unsupported_feature_and_failed_instantiation_are_clear_errors(tmp_path, monkeypatch):
    root = tmp_path / "lv2"
    so = "file:///usr/lib/lv2/amp-swh.lv2/plugin-linux.so"
    _bundle(root, "needs-feature", f"<urn:test:needs-feature> a lv2:Plugin ; lv2:binary <{so}> ;"
            " lv2:requiredFeature <http://example.org/ns#teleport> ;" + _AMP_PORTS)
    # a real library that does not hold this URI: lilv finds no descriptor, instantiation fails
    _bundle(root, "wrong-uri", f"<urn:test:wrong-uri> a lv2:Plugin ; lv2:binary <{so}> ;" + _AMP_PORTS)
    monkeypatch.setenv("LV2_PATH", f"{root}:/usr/lib/lv2")
    with pytest.raises(PluginError, match="needs host features this host does not provide: "
                                          "http://example.org/ns#teleport"):
        P.create("lv2", uri="urn:test:needs-feature")
    chain = build_chain(_preset({"id": "w", "processor": "lv2", "uri": "urn:test:wrong-uri"}))
    with pytest.raises(PluginError, match=r"lv2 plugin urn:test:wrong-uri: failed to instantiate at 48000 Hz"):
        chain.prepare(SR, 128, 2)
    ok = build_chain(_preset({"processor": "lv2", "uri": AMP}))  # the host goes on
    ok.prepare(SR, 128, 2)


def test_plain_chains_never_load_lilv():
    code = ("import sys; from realtime.dsp.presets import build_chain, load_preset; "
            "build_chain(load_preset('default')).prepare(48000, 128, 2); "
            "print(sorted(m for m in sys.modules if 'lilv' in m or 'lv2' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plugins_command_lists_and_filters(capsys):
    import main

    assert main.main(["plugins", "--json", "mda/EPiano"]) == 0
    got = json.loads(capsys.readouterr().out)["plugins"]
    assert [p["uri"] for p in got] == [EPIANO]
    assert got[0]["midi_in"] and got[0]["audio_out"] == 2 and got[0]["hard_rt"]
    assert main.main(["plugins", "swh-plugins/amp"]) == 0
    assert AMP in capsys.readouterr().out


# -- live (JACK dummy server) --------------------------------------------------------------------
@pytest.mark.jack
def test_offline_output_equals_live_output_with_lv2_slots(jack_server, tmp_path):
    from realtime.engine.config import EngineConfig
    from realtime.engine.engine import Engine
    from realtime.run.live import DEMO_SIGNAL

    from .jack_helpers import Rig, clean_take, lag_of, take_with_glitches

    preset = _preset({"id": "amb", "processor": "lv2", "uri": AMBIENCE},
                     {"id": "amp", "processor": "lv2", "uri": AMP, "params": {"gain": -3.0}},
                     {"id": "lat", "processor": "lv2", "uri": LATENCY, "params": {"delay": 2.0}})
    x, sr = sf.read(str(DEMO_SIGNAL), dtype="float32", always_2d=True, frames=48000)
    x = np.ascontiguousarray(x)
    x[0] = 0.9

    def take():
        with Engine(build_chain(preset), EngineConfig(blocksize=128)) as eng, Rig() as rig:
            live, stats = take_with_glitches(eng, rig, x, tail=8192)
            return (live, eng.latency()["prefill_frames"]), stats

    (live, prefill), stats, glitched = clean_take(take)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, sr, subtype="FLOAT")
    process_file(src, dst, build_chain(preset), samplerate=48000, blocksize=128, progress=False,
                 compensate_latency=False)
    offline, _ = sf.read(dst, dtype="float32", always_2d=True)
    lag = lag_of(offline, live)
    assert lag - prefill in (0, 128, 256)
    np.testing.assert_allclose(live[lag: lag + len(x)], offline, atol=1e-6, rtol=0,
                               err_msg=f"{stats}; glitched takes before: {glitched}")


@pytest.mark.jack
def test_a_knob_move_reaches_the_lv2_plugin_within_two_blocks(jack_server):
    """Moves go through the engine's control ring: the DSP thread applies each before its next
    block, and the plugin's control port holds it from that block on; the audio follows."""
    from realtime.engine.config import EngineConfig
    from realtime.engine.engine import Engine

    from .jack_helpers import Rig, assert_minus_6db_halves_the_level

    chain = build_chain(_preset({"id": "amp", "processor": "lv2", "uri": AMP, "params": {"gain": 0.0}}))
    amp = chain.slot("amp").processor
    block_ms = 128 / SR * 1e3
    delays = []
    with Engine(chain, EngineConfig(blocksize=128)) as eng, Rig() as rig:
        time.sleep(0.3)
        for k in range(20):
            value = -6.0 if k % 2 == 0 else 0.0
            seq = eng.rings.pushed()
            t0 = time.perf_counter_ns()
            eng.set_param("amp", "gain", value)
            while eng.rings.applied_at(seq) is None and time.perf_counter_ns() - t0 < 1e9:
                time.sleep(0.0005)
            delays.append((eng.rings.applied_at(seq) - t0) * 1e-6)
            time.sleep(2 * block_ms / 1e3)
            assert amp._ctl[0, 0] == value and amp._ctl[1, 0] == value  # both dual-mono instances
            time.sleep(0.02)
        assert float(np.median(delays)) < 2 * block_ms, delays
        assert_minus_6db_halves_the_level(eng, rig, "amp", "gain", SR)


# -- worker, URID map and atom MIDI, through a plugin built here ---------------------------------
# the LV2 core types a plugin built in a test needs (lv2/core/lv2.h, without the header package)
LV2_C_TYPES = r"""
typedef void* LV2_Handle;
typedef struct { const char* URI; void* data; } LV2_Feature;
typedef struct LV2_Descriptor {
  const char* URI;
  LV2_Handle (*instantiate)(const struct LV2_Descriptor*, double, const char*, const LV2_Feature* const*);
  void (*connect_port)(LV2_Handle, uint32_t, void*);
  void (*activate)(LV2_Handle);
  void (*run)(LV2_Handle, uint32_t);
  void (*deactivate)(LV2_Handle);
  void (*cleanup)(LV2_Handle);
  const void* (*extension_data)(const char*);
} LV2_Descriptor;
"""
_WORKER_C = r"""
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
""" + LV2_C_TYPES + r"""typedef struct { void* handle; uint32_t (*map)(void*, const char*); } UridMap;
typedef int (*Respond)(void*, uint32_t, const void*);
typedef struct { void* handle; int (*schedule_work)(void*, uint32_t, const void*); } Schedule;
typedef struct {
  int (*work)(LV2_Handle, Respond, void*, uint32_t, const void*);
  int (*work_response)(LV2_Handle, uint32_t, const void*);
  int (*end_run)(LV2_Handle);
} WorkerIface;
typedef struct {  /* LV2_Log_Log, and what lv2/log/logger.h's helpers do with it */
  void* handle;
  int (*printf)(void*, uint32_t, const char*, ...);
  int (*vprintf)(void*, uint32_t, const char*, va_list);
} Log;
static int log_note(Log* log, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  int n = log ? log->vprintf(log->handle, 0, fmt, args) : 0;  /* logger.h calls it unchecked */
  va_end(args);
  return n;
}
typedef struct { uint32_t size, type; } Atom;
typedef struct { int64_t frames; Atom body; } AtomEvent;
typedef struct { Atom atom; uint32_t unit, pad; } AtomSeq;
typedef struct {
  const float* gain; const float* in; float* out; const AtomSeq* midi; float* last_offset; float* end_runs_out;
  Schedule* sched; Log* log; uint32_t midi_event; uint32_t sequence; float mult; int end_runs;
} Plugin;

static LV2_Handle instantiate(const LV2_Descriptor* d, double rate, const char* path, const LV2_Feature* const* f) {
  Plugin* p = calloc(1, sizeof(Plugin));
  UridMap* map = NULL;
  for (int i = 0; f[i]; ++i) {
    if (!strcmp(f[i]->URI, "http://lv2plug.in/ns/ext/urid#map")) map = f[i]->data;
    if (!strcmp(f[i]->URI, "http://lv2plug.in/ns/ext/worker#schedule")) p->sched = f[i]->data;
    if (!strcmp(f[i]->URI, "http://lv2plug.in/ns/ext/log#log")) p->log = f[i]->data;
  }
  if (!map || !p->sched) { free(p); return NULL; }
  p->midi_event = map->map(map->handle, "http://lv2plug.in/ns/ext/midi#MidiEvent");
  p->sequence = map->map(map->handle, "http://lv2plug.in/ns/ext/atom#Sequence");
  return p;
}
static void connect_port(LV2_Handle h, uint32_t port, void* data) {
  Plugin* p = h;
  switch (port) {
    case 0: p->gain = data; break; case 1: p->in = data; break; case 2: p->out = data; break;
    case 3: p->midi = data; break; case 4: p->last_offset = data; break; case 5: p->end_runs_out = data; break;
  }
}
static void activate(LV2_Handle h) { Plugin* p = h; p->mult = 1.0f; p->end_runs = 0; }
static void run(LV2_Handle h, uint32_t n) {
  Plugin* p = h;
  const uint8_t* body = (const uint8_t*)(p->midi + 1);
  uint32_t off = 0, total = p->midi->atom.type == p->sequence ? p->midi->atom.size - 8 : 0;
  while (off < total) {  /* the atom sequence: events by frame, each padded to 8 bytes */
    const AtomEvent* ev = (const AtomEvent*)(body + off);
    const uint8_t* msg = (const uint8_t*)(ev + 1);
    if (ev->body.type == p->midi_event && (msg[0] & 0xF0) == 0x90) {
      uint8_t note = msg[1];
      *p->last_offset = (float)ev->frames;
      p->sched->schedule_work(p->sched->handle, 1, &note);
    }
    off += (sizeof(AtomEvent) + ev->body.size + 7) & ~7u;
  }
  for (uint32_t i = 0; i < n; ++i) p->out[i] = p->in[i] * *p->gain * p->mult;
  *p->end_runs_out = (float)p->end_runs;
}
static int work(LV2_Handle h, Respond respond, void* rh, uint32_t size, const void* data) {
  float m = *(const uint8_t*)data / 100.0f;  /* the "loaded" result: a new multiplier */
  if (*(const uint8_t*)data > 100) usleep((*(const uint8_t*)data - 100) * 10000);  /* notes > 100: a slow load */
  log_note(((Plugin*)h)->log, "loaded note %d as gain %.2f (%s) on thread %ld", *(const uint8_t*)data, m, "worker",
           (long)syscall(SYS_gettid));
  return respond(rh, sizeof m, &m);
}
static int work_response(LV2_Handle h, uint32_t size, const void* data) {
  memcpy(&((Plugin*)h)->mult, data, sizeof(float));
  return 0;
}
static int end_run(LV2_Handle h) { ((Plugin*)h)->end_runs++; return 0; }
static const WorkerIface worker = {work, work_response, end_run};
static const void* extension_data(const char* uri) {
  return strcmp(uri, "http://lv2plug.in/ns/ext/worker#interface") ? NULL : &worker;
}
static void cleanup(LV2_Handle h) { free(h); }
static const LV2_Descriptor desc = {"urn:test:worker-gain", instantiate, connect_port, activate, run, NULL,
                                    cleanup, extension_data};
__attribute__((visibility("default"))) const LV2_Descriptor* lv2_descriptor(uint32_t i) {
  return i == 0 ? &desc : NULL;
}
"""
_WORKER_TTL = """@prefix atom: <http://lv2plug.in/ns/ext/atom#> .
@prefix midi: <http://lv2plug.in/ns/ext/midi#> .
@prefix urid: <http://lv2plug.in/ns/ext/urid#> .
@prefix work: <http://lv2plug.in/ns/ext/worker#> .
<urn:test:worker-gain> a lv2:Plugin ; lv2:binary <worker.so> ; doap:name "Worker gain" ;
  lv2:requiredFeature urid:map , work:schedule ; lv2:extensionData work:interface ;
  lv2:port [ a lv2:ControlPort , lv2:InputPort ; lv2:index 0 ; lv2:symbol "gain" ; lv2:name "Gain" ;
             lv2:minimum 0 ; lv2:maximum 2 ; lv2:default 1 ] ,
           [ a lv2:AudioPort , lv2:InputPort ; lv2:index 1 ; lv2:symbol "in" ; lv2:name "In" ] ,
           [ a lv2:AudioPort , lv2:OutputPort ; lv2:index 2 ; lv2:symbol "out" ; lv2:name "Out" ] ,
           [ a atom:AtomPort , lv2:InputPort ; atom:bufferType atom:Sequence ; atom:supports midi:MidiEvent ;
             lv2:index 3 ; lv2:symbol "midi" ; lv2:name "MIDI in" ] ,
           [ a lv2:ControlPort , lv2:OutputPort ; lv2:index 4 ; lv2:symbol "last_offset" ; lv2:name "Offset" ] ,
           [ a lv2:ControlPort , lv2:OutputPort ; lv2:index 5 ; lv2:symbol "end_runs" ; lv2:name "End runs" ] .
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a C compiler to build the test plugin")
def test_worker_urid_map_and_midi_offsets_through_a_plugin_built_here(tmp_path, monkeypatch, capsys):
    """A plugin that maps URIDs, reads MIDI from its atom sequence and asks its worker for a new
    gain: the note's offset arrives exact, the worker's answer applies from the next block. Its
    worker logs through the log feature's vprintf, as LV2's logger.h does: formatted, not a crash."""
    b = _bundle(tmp_path / "lv2", "worker", _WORKER_TTL)
    (b / "worker.c").write_text(_WORKER_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(b / "worker.so"), str(b / "worker.c")], check=True)
    monkeypatch.setenv("LV2_PATH", str(tmp_path / "lv2"))
    p = P.create("lv2", uri="urn:test:worker-gain")
    assert [d.id for d in p.params] == ["gain"] and callable(p.handle_midi)
    p.prepare(SR, 128, 2)
    assert p.adaptation == "dual-mono (two instances)" and all(i.worker is not None for i in p.instances)
    block = np.ones((128, 2), np.float32)
    p.handle_midi(0x90, 50, 100, 37)
    p.process(block)
    assert np.all(block == 1.0)  # the worker's answer is not there yet during this run
    assert p._ctl[0, 4] == 37.0 and p._ctl[1, 4] == 37.0  # both instances got the note at its offset
    block[:] = 1.0
    p.process(block)
    assert np.all(block == 0.5) and p._ctl[0, 5] == 1.0  # response delivered, end_run called (the port lags a run)
    p.process(block)
    assert p._ctl[0, 5] == 2.0  # LV2: end_run after every run(), not only after one that scheduled work
    # offline, the work is done in line: on the thread that calls process()
    tid = threading.get_native_id()
    assert f"lv2 urn:test:worker-gain: loaded note 50 as gain 0.50 (worker) on thread {tid}" in capsys.readouterr().err
    p.reset()
    block[:] = 1.0
    p.process(block)
    assert np.all(block == 1.0)  # activate() reset the plugin


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a C compiler to build the test plugin")
def test_a_live_chains_lv2_worker_works_beside_the_dsp_thread(tmp_path, monkeypatch, capsys):
    """Live (``Chain.prepare(live=True)``, as the engine prepares), the plugin's work is done on a
    worker thread of its own, never on the thread that runs the plugin; its answer arrives in a
    later block; reset and close stop the thread (none is left behind)."""
    b = _bundle(tmp_path / "lv2", "worker", _WORKER_TTL)
    (b / "worker.c").write_text(_WORKER_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(b / "worker.so"), str(b / "worker.c")], check=True)
    monkeypatch.setenv("LV2_PATH", str(tmp_path / "lv2"))
    chain = Chain([Slot(P.create("lv2", uri="urn:test:worker-gain"), "w")])
    chain.prepare(SR, 128, 2, live=True)
    p = chain.slot("w").processor
    threads = [i._thread for i in p.instances]
    assert all(t is not None and t.is_alive() for t in threads)
    block = np.ones((128, 2), np.float32)
    p.handle_midi(0x90, 25, 100, 0)
    for _ in range(2000):  # blocks go on while the worker works; its answer lands between two of them
        block[:] = 1.0
        p.process(block)
        if np.all(block == 0.25):
            break
        time.sleep(0.001)
    assert np.all(block == 0.25)
    err = capsys.readouterr().err
    workers = {int(m) for m in re.findall(r"loaded note 25 as gain 0.25 \(worker\) on thread (\d+)", err)}
    assert len(workers) == 2 and threading.get_native_id() not in workers, err
    p.reset()  # a new thread after the (de)activation, the old one gone
    assert not any(t.is_alive() for t in threads) and all(i._thread.is_alive() for i in p.instances)

    # work asked for before a reset is answered before it, as offline: the reset plugin plays 1.0
    p.handle_midi(0x90, 25, 100, 0)
    p.process(block)
    p.reset()
    for _ in range(3):
        block[:] = 1.0
        p.process(block)
    assert np.all(block == 1.0)

    # a reset while a slow load (0.3 s) outlasts WORKER_STOP_S leaves that instance alone, and its
    # worker goes on serving afterwards (it used to stop for good, its requests piling up)
    monkeypatch.setattr(lv2_host, "WORKER_STOP_S", 0.05)
    p.handle_midi(0x90, 130, 100, 0)
    p.process(block)
    time.sleep(0.02)
    p.reset()
    p.handle_midi(0x90, 40, 100, 0)
    for _ in range(2000):
        block[:] = 1.0
        p.process(block)
        if np.all(block == 0.4):
            break
        time.sleep(0.001)
    assert np.all(block == 0.4) and all(i._thread.is_alive() for i in p.instances)

    # a worker that cannot keep up: the plugin is told there is no room, nothing grows without bound
    inst = p.instances[0]
    note = ctypes.c_uint8(1)
    inst.pending.extend([b"\x01"] * (lv2_host.MAX_PENDING_WORK - len(inst.pending)))
    assert inst._schedule_work(None, 1, ctypes.addressof(note)) == 2
    inst.pending.clear()

    threads = [i._thread for i in p.instances]
    p.close()  # what a host dropping the slot calls
    assert not any(t.is_alive() for t in threads) and p.instances == []


def test_a_host_dropping_an_lv2_slot_frees_its_plugin_at_once():
    """Removing a slot or loading another preset closes the processors the new chain does not
    keep (an engine's chain outlives its last reference once gc.freeze() has seen it)."""
    from gui.host import EngineHost

    h = EngineHost(_preset({"id": "amp", "processor": "lv2", "uri": AMP}, {"id": "g", "processor": "gain"}))
    p = h.chain.slot("amp").processor
    p.prepare(SR, 128, 2)
    assert p.instances
    h.move_slot("g", -1)  # a rebuild that keeps the plugin keeps it running
    assert p.instances
    h.remove_slot("amp")
    assert p.instances == []
    h.close()


# -- LV2 state extension, through a plugin built here -------------------------------------------
_STATE_C = _WORKER_C[: _WORKER_C.index("typedef int (*Respond)")] + r"""
typedef int (*Store)(void*, uint32_t, const void*, size_t, uint32_t, uint32_t);
typedef const void* (*Retrieve)(void*, uint32_t, size_t*, uint32_t*, uint32_t*);
typedef struct {
  int (*save)(LV2_Handle, Store, void*, uint32_t, const LV2_Feature* const*);
  int (*restore)(LV2_Handle, Retrieve, void*, uint32_t, const LV2_Feature* const*);
} StateIface;
typedef struct {
  const float* gain; const float* in; float* out;
  float held;  /* internal state: the last non-zero input sample ever seen, added to the output */
  uint32_t k_held, k_note, t_float, t_string; char note[32];
} Plugin;

static LV2_Handle instantiate(const LV2_Descriptor* d, double rate, const char* path, const LV2_Feature* const* f) {
  UridMap* map = NULL;
  for (int i = 0; f[i]; ++i)
    if (!strcmp(f[i]->URI, "http://lv2plug.in/ns/ext/urid#map")) map = f[i]->data;
  if (!map) return NULL;
  Plugin* p = calloc(1, sizeof(Plugin));
  p->k_held = map->map(map->handle, "urn:test:state-hold#held");
  p->k_note = map->map(map->handle, "urn:test:state-hold#note");
  p->t_float = map->map(map->handle, "http://lv2plug.in/ns/ext/atom#Float");
  p->t_string = map->map(map->handle, "http://lv2plug.in/ns/ext/atom#String");
  strcpy(p->note, "fresh");
  return p;
}
static void connect_port(LV2_Handle h, uint32_t port, void* data) {
  Plugin* p = h;
  if (port == 0) p->gain = data; else if (port == 1) p->in = data; else if (port == 2) p->out = data;
}
static void run(LV2_Handle h, uint32_t n) {
  Plugin* p = h;
  float held = p->held;
  for (uint32_t i = 0; i < n; ++i) {
    p->out[i] = p->in[i] * *p->gain + held;
    if (p->in[i] != 0.0f) p->held = p->in[i];
  }
  if (p->held != 0.0f) strcpy(p->note, "holding");
}
static int save(LV2_Handle h, Store store, void* sh, uint32_t flags, const LV2_Feature* const* f) {
  Plugin* p = h;
  store(sh, p->k_held, &p->held, sizeof(float), p->t_float, 3);
  return store(sh, p->k_note, p->note, strlen(p->note) + 1, p->t_string, 3);
}
static int restore(LV2_Handle h, Retrieve retrieve, void* sh, uint32_t flags, const LV2_Feature* const* f) {
  Plugin* p = h;
  size_t size; uint32_t type, fl;
  const void* v = retrieve(sh, p->k_held, &size, &type, &fl);
  if (v && type == p->t_float && size == sizeof(float)) p->held = *(const float*)v;
  v = retrieve(sh, p->k_note, &size, &type, &fl);
  if (v && type == p->t_string && size < sizeof p->note) memcpy(p->note, v, size);
  return 0;
}
static const StateIface state = {save, restore};
static const void* extension_data(const char* uri) {
  return strcmp(uri, "http://lv2plug.in/ns/ext/state#interface") ? NULL : &state;
}
static void cleanup(LV2_Handle h) { free(h); }
static const LV2_Descriptor desc = {"urn:test:state-hold", instantiate, connect_port, NULL, run, NULL,
                                    cleanup, extension_data};
__attribute__((visibility("default"))) const LV2_Descriptor* lv2_descriptor(uint32_t i) {
  return i == 0 ? &desc : NULL;
}
"""
_STATE_TTL = """@prefix urid: <http://lv2plug.in/ns/ext/urid#> .
@prefix state: <http://lv2plug.in/ns/ext/state#> .
<urn:test:state-hold> a lv2:Plugin ; lv2:binary <state.so> ; doap:name "State hold" ;
  lv2:requiredFeature urid:map ; lv2:extensionData state:interface ;
  lv2:port [ a lv2:ControlPort , lv2:InputPort ; lv2:index 0 ; lv2:symbol "gain" ; lv2:name "Gain" ;
             lv2:minimum 0 ; lv2:maximum 2 ; lv2:default 1 ] ,
           [ a lv2:AudioPort , lv2:InputPort ; lv2:index 1 ; lv2:symbol "in" ; lv2:name "In" ] ,
           [ a lv2:AudioPort , lv2:OutputPort ; lv2:index 2 ; lv2:symbol "out" ; lv2:name "Out" ] .
"""
HOLD = "urn:test:state-hold"


@pytest.fixture
def state_plugin(tmp_path, monkeypatch):
    """The plugin urn:test:state-hold, built here: its state (the last non-zero input it saw, and a
    note) is not in its control ports."""
    if shutil.which("gcc") is None:
        pytest.skip("needs a C compiler to build the test plugin")
    b = _bundle(tmp_path / "lv2", "state", _STATE_TTL)
    (b / "state.c").write_text(_STATE_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(b / "state.so"), str(b / "state.c")], check=True)
    monkeypatch.setenv("LV2_PATH", f"{tmp_path / 'lv2'}:/usr/lib/lv2")
    return HOLD


def _held(proc, channels):
    """What the hold plugin adds to silence: its internal state."""
    z = np.zeros((128, channels), np.float32)
    proc.process(z)
    return z


def test_plugin_state_survives_preset_save_load_prepare(state_plugin, tmp_path):
    chain = build_chain(_preset({"id": "h", "processor": "lv2", "uri": HOLD, "params": {"gain": 0.5}}))
    assert "state" not in chain.to_preset("t")["chain"][0]  # not prepared, nothing given: no state yet
    chain.prepare(SR, 128, 1)
    hold = chain.slot("h").processor
    assert all(i.has_state for i in hold.instances)
    np.testing.assert_array_equal(_held(hold, 1), 0.0)
    x = np.full((128, 1), 0.25, np.float32)
    hold.process(x)
    assert np.all(x == 0.125)
    np.testing.assert_array_equal(_held(hold, 1), 0.25)  # the plugin remembers
    saved = chain.to_preset("t")
    text = saved["chain"][0]["state"]
    assert "urn:test:state-hold#held" in text and "0.25" in text and '"holding"' in text
    path = save_preset(saved, tmp_path / "p.json")
    loaded = load_preset(path)
    assert loaded["chain"][0]["state"] == text and loaded["chain"][0]["params"] == {"gain": 0.5}
    again = build_chain(loaded)
    assert again.to_preset("t") == saved  # before prepare: the state given is the state saved
    again.prepare(SR, 128, 2)  # dual mono: both instances get the state
    p2 = again.slot("h").processor
    assert len(p2.instances) == 2 and p2.get_param("gain") == 0.5
    np.testing.assert_array_equal(_held(p2, 2), 0.25)
    assert again.to_preset("t")["chain"][0]["state"] == text  # read back from the running plugin
    p2.process(np.full((128, 2), -0.5, np.float32))
    p2.prepare(SR, 256, 2)  # a re-prepare (new instances) keeps the plugin's state
    np.testing.assert_array_equal(_held(p2, 2), -0.5)
    fresh = P.create("lv2", uri=HOLD)
    fresh.prepare(SR, 128, 1)
    np.testing.assert_array_equal(_held(fresh, 1), 0.0)  # a new slot starts without it
    assert '"fresh"' in fresh.plugin_state()


def test_restart_engine_gives_back_the_lv2_state_it_knows_and_names_the_slot_whose_state_it_does_not(state_plugin):
    """The panel's Restart engine: a plugin state that came with the preset goes to the new engine
    process; a slot with the state extension whose state the panel never saw is named (its state
    starts from the plugin's own), one without the extension is not."""
    from gui.remote import RemoteEngineHost
    from realtime.engine.config import EngineConfig

    chain = build_chain(_preset({"id": "h", "processor": "lv2", "uri": HOLD}))
    chain.prepare(SR, 128, 1)
    chain.slot("h").processor.process(np.full((128, 1), 0.25, np.float32))
    text = chain.to_preset("t")["chain"][0]["state"]
    with_state = _preset({"id": "h", "processor": "lv2", "uri": HOLD, "state": text}, {"id": "amp", "processor": "lv2",
                                                                                       "uri": AMP})
    h = RemoteEngineHost(with_state, EngineConfig())
    try:
        h._proc.kill()
        h._proc.join(10)
        assert h.restart_engine() == []  # h's state is known, amp keeps none
        assert h.to_preset("t")["chain"][0]["state"] == text  # what the new engine process holds
        h.load_preset(_preset({"id": "h", "processor": "lv2", "uri": HOLD}))  # a state the panel never saw
        h._proc.kill()
        h._proc.join(10)
        assert h.restart_engine() == ["h"]
    finally:
        h.close()


def test_plugins_without_state_have_no_state_key(state_plugin):
    chain = build_chain(_preset({"id": "amp", "processor": "lv2", "uri": AMP},
                                {"id": "ep", "processor": "lv2", "uri": EPIANO}))
    chain.prepare(SR, 128, 2)
    assert not any(i.has_state for i in chain.slot("amp").processor.instances)
    assert all("state" not in s for s in chain.to_preset("t")["chain"])
    assert chain.slot("amp").processor.plugin_state() is None


def test_a_malformed_state_is_a_clear_one_line_error(state_plugin):
    good = P.create("lv2", uri=HOLD)
    good.prepare(SR, 128, 1)
    text = good.plugin_state()
    other = text.replace(f"<{HOLD}>", f"<{AMP}>")
    bad = {"garbage {{": r"not valid Turtle \(.*bad subject",
           "": "expected Turtle text",
           "<urn:a> <urn:b> <urn:c> .": "expected one pset:Preset subject, found 0",  # lilv alone would crash
           "<urn:a> a nope:Preset .": "unknown prefix 'nope'",
           "<urn:a> a pset:Preset .": "no plugin",
           other: f"it is the state of {AMP}",
           text + "\n<urn:b> a pset:Preset .": "found 2"}
    for value, why in bad.items():
        with pytest.raises(PresetError) as e:
            validate_preset(_preset({"processor": "lv2", "uri": HOLD, "state": value}))
        msg = str(e.value)
        assert msg.startswith(f"chain[0].state: lv2 plugin {HOLD}: the saved state is unusable: "), msg
        assert "\n" not in msg
        assert re.search(why, msg), msg
        with pytest.raises(PluginError, match="the saved state is unusable"):
            P.create("lv2", uri=HOLD).set_plugin_state(value)
    with pytest.raises(PresetError, match=r"chain\[0\]\.state: expected the plugin's saved state as a string, got dict"):
        validate_preset(_preset({"processor": "lv2", "uri": HOLD, "state": {"held": 1}}))
    with pytest.raises(PresetError, match=r"chain\[0\]\.state: only \['lv2'\] slots take a state"):
        validate_preset(_preset({"processor": "gain", "state": text}))
    ok = validate_preset(_preset({"processor": "lv2", "uri": HOLD, "state": text}))
    assert ok["chain"][0]["state"] == text
