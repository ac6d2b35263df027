"""LV2 hosting, with real plugins (swh, calf): a plugin whose activate() keeps its filter memory
(swh dcRemove), sample-rate ranges that follow the stream's rate, side-chain inputs known only by
their names (Calf's Sidechain* plugins). Each test skips when its plugin is not installed."""
from __future__ import annotations

import time

import numpy as np
import pytest

from realtime.dsp import processors as P
from realtime.dsp.chain import Chain, Slot
from realtime.dsp.presets import build_chain, validate_preset
from realtime.dsp.processors.lv2 import SETTLE_LIMIT
from realtime.errors import ParamError
from realtime.io import lilv, lv2_scan

from .test_lv2_ports import _need, _private_cache, rewrite_cache_as  # noqa: F401 (an autouse fixture: each test's own scan cache)

SWH, CALF = "http://plugin.org.uk/swh-plugins/", "http://calf.sourceforge.net/plugins/"
DC_REMOVE, LOWPASS, SINE = SWH + "dcRemove", SWH + "lowpass_iir", SWH + "sinCos"
CALF_SC = [CALF + "Sidechain" + k for k in ("Compressor", "Gate", "Limiter")]

pytestmark = pytest.mark.skipif(not lilv.available(), reason="run scripts/setup.sh (liblilv-0-0)")


def _tone(y, f, sr):
    """Amplitude of the sine at ``f`` Hz in ``y``."""
    t = np.arange(len(y)) / sr
    return 2 * abs(np.dot(y, np.exp(-2j * np.pi * f * t))) / len(y)


def _blocks(p, n, rng, dc=0.3, block=256):
    """``n`` stereo blocks of DC plus noise through ``p``; the output."""
    out = []
    for _ in range(n):
        b = (dc + 0.05 * rng.standard_normal((block, 2))).astype(np.float32)
        p.process(b)
        out.append(b)
    return np.concatenate(out)


# -- a plugin that keeps its memory through activate() ------------------------------------------------
def test_a_reset_runs_a_plugin_that_keeps_its_filter_memory_until_silence_gives_silence(monkeypatch):
    """swh dcRemove's activate() clears nothing: after a DC its memory holds -0.3, which came out
    of a reset as a DC thump on silence. Once the plugin has shown junk on silence (its first
    instance does when its allocation held some: not every time, hence set here), a reset runs every
    instance on silence until it settles. Healthy plugins are reset as any host resets them."""
    _need(DC_REMOVE)
    p = P.create("lv2", uri=DC_REMOVE)
    monkeypatch.setattr(type(p), "keeps_junk", True)
    p.prepare(48000, 256, 2)
    _blocks(p, 20, np.random.default_rng(0))
    p.reset()
    silence = np.zeros((256, 2), np.float32)
    p.process(silence)
    assert np.abs(silence).max() <= SETTLE_LIMIT
    assert (p.bad_output_samples, p.instance_resets) == (0, 0)


def test_fresh_instances_start_settled_and_both_dual_mono_channels_play_from_the_first_block():
    """The report: dcRemove's first instance started with junk (1e31, or 99: a +40 dB thump the
    output limit let through), so that channel was zeroed and reset every block for 1.3 s."""
    _need(DC_REMOVE)
    for seed in range(4):
        p = P.slot_class("lv2", DC_REMOVE)()
        p.prepare(48000, 256, 2)
        y = _blocks(p, 60, np.random.default_rng(seed))
        assert (p.bad_output_samples, p.instance_resets) == (0, 0)
        assert np.all(np.abs(y[:256]).max(0) > 0.2) and np.abs(y).max() < 0.6  # a 0.3 step at most
        p.close()


@pytest.mark.parametrize("live", [False, True])
def test_an_instance_a_reset_cannot_cure_is_made_anew_and_plays_again(live):
    """A DC at the top of the float range overflows dcRemove's memory to Inf, which its activate()
    keeps: that channel was zeroed and reset every block for good. Now the instance is made anew
    (offline at once, live by the rescue thread) and plays again; the other channel never stops."""
    _need(DC_REMOVE)
    p = P.create("lv2", uri=DC_REMOVE)
    p.live = live
    p.prepare(48000, 256, 2)
    b = np.zeros((256, 2), np.float32)
    b[:, 0], b[:, 1] = 3e38, 0.1
    p.process(b)
    assert np.all(b[:, 0] == 0.0) and p.bad_output_samples >= 256
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + 20.0
    while not np.any(_blocks(p, 1, rng)[:, 0]) and time.monotonic() < deadline:  # live: the rescue thread's turn
        time.sleep(0.002)
    y = _blocks(p, 20, rng)
    assert np.all(np.isfinite(y)) and np.all(np.abs(y).max(0) > 0.05) and np.abs(y).max() < 1.0
    assert p.instance_renewals >= 1 and p.instance_resets >= 1
    p.close()


def test_a_generator_is_not_taken_for_junk():
    """swh sinCos plays on silence by design: settling gives up on it (its output does not die
    away), and it plays from the first block, never reset nor made anew."""
    _need(SINE)
    p = P.create("lv2", uri=SINE)
    p.prepare(48000, 1024, 2)
    y = np.zeros((1024, 2), np.float32)
    p.process(y)
    assert 0.3 < np.abs(y).max() <= 1.0
    assert (p.bad_output_samples, p.instance_resets, p.instance_renewals) == (0, 0, 0)


# -- ranges that are fractions of the sample rate ----------------------------------------------------
def test_a_sample_rate_range_follows_the_streams_rate():
    """swh lowpass_iir's cutoff is [0.0001, 0.45] of the rate. The class shows it at 48 kHz (to 21.6
    kHz) but takes 40 kHz (a preset saved at 96 kHz); prepared at 96 kHz the knob goes to 43.2 kHz
    and the plugin gets 40 kHz, so a 30 kHz tone passes; at 48 kHz the value is clamped to 21.6 kHz."""
    _need(LOWPASS)
    sr = 96000
    cls = P.slot_class("lv2", LOWPASS)
    k = cls.param_index("cutoff")
    assert cls.params[k].max == pytest.approx(21600.0)
    x = (0.25 * np.sin(2 * np.pi * 30000 * np.arange(sr // 2) / sr)).astype(np.float32)[:, None]
    passed = {}
    for cutoff in (21600.0, 40000.0):
        chain = build_chain(validate_preset({"version": 1, "name": "t", "chain": [
            {"id": "lp", "processor": "lv2", "uri": LOWPASS, "params": {"cutoff": cutoff}}]}))
        chain.prepare(sr, 256, 1)
        p = chain.slot("lp").processor
        assert chain.describe()[0]["params"][k]["max"] == pytest.approx(43200.0)
        y = x.copy()
        for i in range(0, len(y), 256):
            chain.process(y[i:i + 256])
        assert p._ctl[0, cls.info.controls[k].index] == np.float32(cutoff)
        passed[cutoff] = _tone(y[sr // 4:, 0], 30000, sr)
    assert passed[40000.0] > 0.2 > 0.1 > passed[21600.0]
    p.set_param("cutoff", 43000.0)
    with pytest.raises(ParamError, match="outside"):
        p.set_param("cutoff", 44000.0)
    chain = Chain([Slot(cls(cutoff=40000.0), "lp")])
    chain.prepare(48000, 256, 1)
    assert chain.slot("lp").processor.get_param("cutoff") == pytest.approx(21600.0)
    assert chain.describe()[0]["params"][k]["max"] == pytest.approx(21600.0)


# -- side-chain inputs known by their names -------------------------------------------------------------
@pytest.mark.parametrize("uri", CALF_SC)
def test_calfs_side_chain_inputs_are_known_by_their_names_and_get_silence(uri):
    """Calf's Sidechain* plugins do not mark their "sidechain" / "sidechain2" inputs: they are found
    by name, so the plugin is stereo with a silent key, each channel keeping its own tone."""
    _need(uri)
    info = lv2_scan.scan().plugins[uri]
    assert [p.symbol for p in info.ports_of("audio", "in") if p.sidechain] == ["sidechain", "sidechain2"]
    assert [p.symbol for p in info.main_inputs] == ["in_l", "in_r"]
    p = P.create("lv2", uri=uri)
    assert p.describe_extra()["adaptation"] == "stereo in / stereo out plugin"
    t = np.arange(48000) / 48000
    x = np.stack([0.25 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 1000 * t)], 1).astype(np.float32)
    p.prepare(48000, 256, 2)
    for i in range(0, len(x), 256):
        p.process(x[i:i + 256])
    y = x[24000:]
    assert p.adaptation == "stereo, side-chain input silent"
    assert _tone(y[:, 0], 440, 48000) > 0.1 and _tone(y[:, 1], 1000, 48000) > 0.1
    assert _tone(y[:, 0], 1000, 48000) < 0.01 and _tone(y[:, 1], 440, 48000) < 0.01


def test_a_scan_cache_from_before_side_chains_by_name_is_scanned_afresh(tmp_path, monkeypatch):
    """A cache written before inputs were known by name says Calf's key inputs are signal path; its
    version is part of the signature, so it is not read."""
    _need(CALF_SC[0])
    monkeypatch.setenv("LV2_PATH", "/usr/lib/lv2")
    monkeypatch.setattr(lv2_scan, "_scans", {})  # scans of its own, none left for later tests
    lv2_scan.scan()
    def before_names(raw):
        for port in raw["plugins"][CALF_SC[0]]["ports"]:
            port["sidechain"] = False

    rewrite_cache_as(2, before_names, tmp_path, monkeypatch)
    res = lv2_scan.scan()
    assert not res.cached and [p.symbol for p in res.plugins[CALF_SC[0]].main_inputs] == ["in_l", "in_r"]


def test_a_sample_rate_range_that_goes_negative_or_starts_at_zero_on_a_log_taper_takes_its_own_values():
    # the class's range (at 48 kHz) must accept what any rate's range holds: its own default of a
    # range -0.5..0.5 x rate was refused (the low bound was scaled by the lowest rate), and a log
    # taper from 0 kept the 48 kHz range, so a 96 kHz preset's 40 kHz cutoff would not load
    from realtime.dsp.processors import lv2
    from realtime.io.lv2_scan import PortInfo

    shift = PortInfo(index=0, symbol="shift", name="Shift", type="control", direction="in",
                     default=-0.1, minimum=-0.5, maximum=0.5, sample_rate=True)
    par = lv2._param_of(shift, set())[0]
    assert par.validate(par.default) == par.default == -4800.0
    assert par.validate(-90000.0) == -90000.0  # -0.5 x 180 kHz: a rate in RATE_SPAN
    cutoff = PortInfo(index=0, symbol="cutoff", name="Cutoff", type="control", direction="in",
                      default=0.1, minimum=0.0, maximum=0.5, logarithmic=True, sample_rate=True)
    cls_par, inst_par = lv2._param_of(cutoff, set())[0], lv2._param_of(cutoff, set(), 96000.0)[0]
    assert inst_par.validate(40000.0) == 40000.0
    assert cls_par.validate(40000.0) == 40000.0
    assert cls_par.validate(0.0) == cls_par.min  # still a log taper from its floor


RACE = r"""
import sys, threading, time
from realtime.dsp import processors as P
from realtime.dsp.processors import lv2
p = P.create("lv2", uri=sys.argv[1])
p.prepare(48000, 256, 2)
lv2.Lv2Plugin._settle = lambda self, i, inst: False  # as for an instance no reset cures: each rescue renews it
stop = time.monotonic() + float(sys.argv[2])
def saver():
    while time.monotonic() < stop:
        p.plugin_state()
def rescuer():
    while time.monotonic() < stop:
        p._renewable = [True] * len(p._runs)
        p._renewed_at = [float("-inf")] * len(p._runs)  # nor has it been made anew lately
        for r in p._runs:
            r[3][0] = True  # parked, as the DSP thread parks a blown-up instance
        p._revive_parked()
ts = [threading.Thread(target=saver), threading.Thread(target=rescuer)]
[t.start() for t in ts]; [t.join() for t in ts]
print("renewals", p.instance_renewals)
"""


def test_saving_a_plugins_state_while_the_rescue_thread_renews_it_is_safe():
    # a preset saved from the panel reads the instance's state while the rescue thread may free it
    # (_renew): that segfaulted the engine process
    import os
    import subprocess
    import sys

    uri = "http://lsp-plug.in/plugins/lv2/compressor_mono"
    if uri not in lv2_scan.scan().plugins:
        pytest.skip("lsp-plugins-lv2 not installed")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", RACE, uri, "4"], cwd=root, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": root})
    assert r.returncode == 0, r.stderr[-1500:]
    assert int(r.stdout.split()[-1]) > 10  # it did renew, many times


def test_a_healthy_plugin_is_prepared_and_reset_as_any_host_does_it(monkeypatch):
    """A run on silence moves the internal phase of some plugins (swh's fastLookaheadLimiter then
    limited the same music differently, moving the de-limiter benchmark's unseen-limiter rows): an
    instance that is silent on prepare's silent block is never settled, on prepare or on reset."""
    from realtime.dsp.processors import lv2

    uri = SWH + "fastLookaheadLimiter"
    _need(uri)
    settled = []
    monkeypatch.setattr(lv2.Lv2Plugin, "_settle", lambda self, i, inst: settled.append(i) or True)
    p = P.create("lv2", uri=uri)
    p.prepare(44100, 512, 2)
    p.reset()
    assert settled == [] and not type(p).keeps_junk


def test_files_say_which_plugin_put_out_junk_and_how_much_was_silenced(tmp_path, capsys):
    """process and batch zeroed a plugin's junk and said nothing (rc 0): a hosted plugin that
    misbehaves left gaps in the file unsaid. Now one warning line per plugin, and the count in
    the report and in batch's record."""
    import json

    import soundfile as sf

    import main

    _need(DC_REMOVE)
    x = np.full((48000, 2), 0.1, np.float32)
    x[:256, 0] = 3e38  # overflows dcRemove's memory to Inf (above): its output there is junk
    src = tmp_path / "in" / "a.wav"
    src.parent.mkdir()
    sf.write(src, x, 48000, subtype="FLOAT")
    preset = tmp_path / "dc.json"
    preset.write_text(json.dumps({"version": 1, "name": "dc", "chain": [{"id": "dc", "processor": "lv2",
                                                                          "uri": DC_REMOVE}]}))
    assert main.main(["process", str(src), str(tmp_path / "o.wav"), "--preset", str(preset), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["plugin_junk_samples"] >= 256
    assert err.count("warning:") == 1 and "'DC Offset Remover' (slot dc) put out junk" in err, err
    assert main.main(["batch", str(src.parent), "--out", str(tmp_path / "out"), "--preset", str(preset),
                      "--jobs", "1", "--no-progress"]) == 0
    _, err = capsys.readouterr()
    log = [json.loads(line) for line in (tmp_path / "out" / ".batch-manifest.jsonl").read_text().splitlines()]
    assert log[-1]["plugin_junk_samples"] >= 256 and "a plugin's junk output was silenced: 1" in err
    clean = tmp_path / "in" / "b.wav"  # a file without junk through the same worker's chain: nothing said
    sf.write(clean, np.full((4800, 2), 0.1, np.float32), 48000, subtype="FLOAT")
    assert main.main(["process", str(clean), str(tmp_path / "o2.wav"), "--preset", str(preset), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["plugin_junk_samples"] == 0 and "junk" not in err
