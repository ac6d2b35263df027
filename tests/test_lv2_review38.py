"""LV2 hosting, from review 38: a plugin's main port groups (LSP's crossovers: the bands' outputs were
heard), blocks longer than 4096 frames (LSP's delays and samplers, ZamVerb crashed the process), LFO
effects that depended on the block size (the silent blocks of prepare moved their LFO), sample-rate
ranges' defaults at the stream's rate (swh lsFilter blew up at 22.05 kHz), drop-down choices named
with numbers in ``--set``, and a plugin's printf on stdout (it broke ``--json``). Each test skips
when its plugin (or, for the plugin built here, a C compiler) is missing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from realtime.dsp import processors as P
from realtime.dsp.presets import apply_overrides, build_chain, validate_preset
from realtime.dsp.processor import Param
from realtime.io import lilv, lv2_host, lv2_scan

from .test_lv2 import LV2_C_TYPES, build_plugin
from .test_lv2_ports import _need, _private_cache  # noqa: F401 (an autouse fixture: each test's own scan cache)

SR = 48000
SWH, MDA = "http://plugin.org.uk/swh-plugins/", "http://drobilla.net/plugins/mda/"
LSP = "http://lsp-plug.in/plugins/lv2/"
AMP, BWXOVER, DJFLANGER, LFOPHASER = SWH + "amp", SWH + "bwxover_iir", SWH + "djFlanger", SWH + "lfoPhaser"
LOWPASS, LSFILTER, EPIANO, DELAY = SWH + "lowpass_iir", SWH + "lsFilter", MDA + "EPiano", MDA + "Delay"
CROSSOVER = LSP + "crossover_mono"

pytestmark = pytest.mark.skipif(not lilv.available(), reason="run scripts/setup.sh (liblilv-0-0)")


def _tone(f, n, sr=SR, amp=0.25):
    return (amp * np.sin(2 * np.pi * f * np.arange(n) / sr)).astype(np.float32)


def _blocks(p, x, block):
    y = x.copy()
    for i in range(0, len(y), block):
        p.process(y[i:i + block])
    return y


# -- a plugin built here: main port groups, and printf on stdout ----------------------------------------
_PREFIX = """@prefix lv2: <http://lv2plug.in/ns/lv2core#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix doap: <http://usefulinc.com/ns/doap#> .
@prefix pg: <http://lv2plug.in/ns/ext/port-groups#> .
"""
_GROUPED_TTL = """<urn:test:grouped> a lv2:Plugin ; lv2:binary <grouped.so> ; doap:name "Grouped" ;
  pg:mainInput <urn:test:grouped#in> ; pg:mainOutput <urn:test:grouped#out> ;
  lv2:port [ a lv2:AudioPort , lv2:InputPort ; lv2:index 0 ; lv2:symbol "in" ; lv2:name "In" ;
             pg:group <urn:test:grouped#in> ] ,
           [ a lv2:AudioPort , lv2:OutputPort ; lv2:index 1 ; lv2:symbol "aux" ; lv2:name "Aux" ;
             pg:group <urn:test:grouped#aux> ] ,
           [ a lv2:AudioPort , lv2:OutputPort ; lv2:index 2 ; lv2:symbol "out" ; lv2:name "Out" ;
             pg:group <urn:test:grouped#out> ] .
<urn:test:grouped#in> a pg:MonoGroup , pg:InputGroup ; lv2:symbol "mono_in" .
<urn:test:grouped#out> a pg:MonoGroup , pg:OutputGroup ; lv2:symbol "mono_out" .
<urn:test:grouped#aux> a pg:MonoGroup , pg:OutputGroup ; lv2:symbol "mono_aux" .
"""
# out = in, aux = -in (a band: listed first, as "first two outputs" took it); it prints to stdout,
# unflushed (a pipe: C buffers it), when it is made and activated
_GROUPED_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
""" + LV2_C_TYPES + r"""typedef struct { const float* in; float* aux; float* out; } Plugin;
static LV2_Handle instantiate(const LV2_Descriptor* d, double rate, const char* path, const LV2_Feature* const* f) {
  printf("chatter: made at %g Hz\n", rate);
  return calloc(1, sizeof(Plugin));
}
static void connect_port(LV2_Handle h, uint32_t port, void* data) {
  Plugin* p = h;
  if (port == 0) p->in = data; else if (port == 1) p->aux = data; else p->out = data;
}
static void activate(LV2_Handle h) { printf("chatter: activated\n"); }
static void run(LV2_Handle h, uint32_t n) {
  Plugin* p = h;
  for (uint32_t i = 0; i < n; ++i) { p->out[i] = p->in[i]; p->aux[i] = -p->in[i]; }
}
static void cleanup(LV2_Handle h) { free(h); }
static const LV2_Descriptor desc = {"urn:test:grouped", instantiate, connect_port, activate, run, NULL, cleanup, NULL};
__attribute__((visibility("default"))) const LV2_Descriptor* lv2_descriptor(uint32_t i) {
  return i == 0 ? &desc : NULL;
}
"""


@pytest.fixture
def grouped(tmp_path, monkeypatch):
    """The LV2 path holding the plugin ``urn:test:grouped``, built here (and the system's plugins)."""
    path = f"{build_plugin(tmp_path, 'grouped', _PREFIX + _GROUPED_TTL, _GROUPED_C)}:/usr/lib/lv2"
    monkeypatch.setenv("LV2_PATH", path)
    return path


# -- 1: main port groups -------------------------------------------------------------------------------
def test_a_plugins_main_output_group_is_what_the_chain_hears(grouped):
    """The report: LSP Crossover Mono put out the average of its main output and its first band on
    a mono file, and that band alone on the right of a stereo one ("first two outputs"). Only the
    main group's outputs are heard; the plugin here lists a band (-in) before its main output (in)."""
    info = lv2_scan.plugin_info("urn:test:grouped")
    assert [p.symbol for p in info.main_outputs] == ["out"] and [p.symbol for p in info.main_inputs] == ["in"]
    x = _tone(440, 2048)
    for channels in (1, 2):
        sig = np.stack([x, -0.5 * x], 1)[:, :channels].copy()
        p = P.create("lv2", uri="urn:test:grouped")
        p.prepare(SR, 512, channels)
        y = _blocks(p, sig, 512)
        np.testing.assert_array_equal(y, sig)
        assert p.adaptation == ("dual-mono (two instances)" if channels == 2 else "mono") + \
            ", outputs besides the main ones unused"
        p.close()


def test_the_scan_reads_the_main_groups_and_plugins_without_them_keep_their_ports():
    """mda's plugins declare their stereo ports as main groups; swh's declare none: all their
    outputs stay the signal path (swh bwxover_iir's low and high outputs, downmixed on a mono chain)."""
    _need(DELAY, BWXOVER)
    delay = lv2_scan.plugin_info(DELAY)
    assert all(p.main for p in delay.ports_of("audio", "in") + delay.ports_of("audio", "out"))
    assert [p.symbol for p in delay.main_outputs] == ["left_out", "right_out"]
    xover = lv2_scan.plugin_info(BWXOVER)
    assert not any(p.main for p in xover.ports) and len(xover.main_outputs) == xover.audio_out == 2
    p = P.create("lv2", uri=BWXOVER)
    p.prepare(SR, 256, 1)
    assert p.adaptation == "mono in / stereo out plugin: stereo output downmixed"


def test_lsp_crossover_mono_puts_out_its_main_output_not_a_band():
    """The reviewer's repro: a mono file kept its level (it was halved), a stereo file has both
    sides (the right was band 0 alone)."""
    _need(CROSSOVER)
    x = _tone(440, SR // 2) + _tone(3000, SR // 2)
    for channels in (1, 2):
        sig = np.repeat(x[:, None], channels, 1)
        chain = build_chain(validate_preset({"version": 1, "name": "t", "chain": [
            {"id": "x", "processor": "lv2", "uri": CROSSOVER}]}))
        chain.prepare(SR, 512, channels)
        y = _blocks(chain, sig, 512)
        rms = np.sqrt(np.mean(y[SR // 8:] ** 2, 0))
        np.testing.assert_allclose(rms, np.sqrt(np.mean(x ** 2)), rtol=0.05)


# -- 2: blocks longer than the plugins take --------------------------------------------------------------
def _recording_runs(monkeypatch):
    """Every instance made from now on records its run() lengths and the maxBlockLength it was told."""
    seen = {"runs": [], "max": []}

    class Recording(lv2_host.Instance):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen["max"].append(self._lengths[1])
            real = self.run_fn

            def run(handle, n):
                seen["runs"].append(n)
                real(handle, n)

            self.run_fn = run

    monkeypatch.setattr(lv2_host, "Instance", Recording)
    return seen


def test_a_block_longer_than_4096_frames_runs_the_plugin_in_pieces_of_at_most_4096(monkeypatch):
    """The report: ``process -b 8192`` killed the process inside LSP comp_delay, sampler, ZamVerb
    (they keep 4096-frame buffers). A plugin is told 4096 at most and never run on more; the output
    is the same as with small blocks, sample for sample."""
    _need(AMP)
    seen = _recording_runs(monkeypatch)
    x = np.stack([_tone(440, 20000), _tone(660, 20000)], 1)
    small = P.create("lv2", uri=AMP, gain=-6.0)
    small.prepare(SR, 512, 2)
    ref = _blocks(small, x, 512)
    seen["runs"].clear()
    big = P.create("lv2", uri=AMP, gain=-6.0)
    big.prepare(SR, 10000, 2)
    y = _blocks(big, x, 10000)
    assert seen["max"][-1] == 4096 and max(seen["runs"]) == 4096 == lv2_host.MAX_RUN_FRAMES
    np.testing.assert_array_equal(y, ref)
    assert np.abs(y).max() > 0.1


def test_midi_in_a_long_block_reaches_the_piece_it_falls_in_at_its_frame(monkeypatch):
    """Events of a 12000-frame block go to the 4096-frame piece they fall in, at their frame there:
    mda EPiano's notes at 100, 5000 and 11000 (an offset past the block counts as its last frame)
    sound as with 1000-frame blocks."""
    _need(EPIANO)
    seen = _recording_runs(monkeypatch)
    notes = {100: 60, 5000: 64, 11000: 67, 20000: 72}

    def render(block):
        p = P.create("lv2", uri=EPIANO)
        p.prepare(SR, block, 2)
        y = np.zeros((12000, 2), np.float32)
        for i in range(0, len(y), block):
            for at, note in notes.items():
                if i <= at < i + block or (at >= len(y) and i + block >= len(y)):
                    p.handle_midi(0x90, note, 100, min(at, len(y) - 1) - i)
            p.process(y[i:i + block])
        return y

    ref = render(1000)
    seen["runs"].clear()
    y = render(12000)
    assert max(seen["runs"]) == 4096
    assert np.abs(y[:100]).max() == 0.0 and np.abs(y[100:200]).max() > 1e-3
    np.testing.assert_allclose(y, ref, atol=1e-6)


# -- 3: LFO effects start as a fresh instance ------------------------------------------------------------
def _fresh(uri, values, x):
    """``x`` through a fresh instance of ``uri``, in one run, its control ports at ``values``
    (port index -> value): what any host makes of it."""
    info = lv2_scan.plugin_info(uri)
    inst = lv2_host.Instance(lv2_scan.world(), uri, SR, len(x), info.required_features)
    ctl = np.zeros(len(info.ports), np.float32)
    for k, v in values.items():
        ctl[k] = v
    for p in info.ports_of("control", "in") + info.ports_of("control", "out"):
        inst.connect(p.index, ctl[p.index:].ctypes.data)
    ain, aout = np.ascontiguousarray(x), np.zeros_like(x)
    inst.connect(info.ports_of("audio", "in")[0].index, ain.ctypes.data)
    inst.connect(info.ports_of("audio", "out")[0].index, aout.ctypes.data)
    inst.activate()
    inst.run_fn(inst.handle, len(x))
    inst.close()
    return aout


@pytest.mark.parametrize("uri", [DJFLANGER, LFOPHASER])
def test_an_lfo_effect_renders_the_same_at_any_block_size_and_as_a_fresh_instance(uri):
    """The report: swh djFlanger's render moved with ``-b`` and differed from other hosts: the
    silent blocks of prepare (latency) and of the chain's warm-up moved its LFO, which LV2's
    deactivate + activate does not rewind. A prepared slot starts as a fresh instance."""
    _need(uri)
    x = _tone(440, 4096) + _tone(1234, 4096)
    outs = []
    for block in (64, 1000):
        chain = build_chain(validate_preset({"version": 1, "name": "t", "chain": [
            {"id": "fx", "processor": "lv2", "uri": uri}]}))
        chain.prepare(SR, block, 1)
        outs.append(_blocks(chain, x[:, None], block))
    np.testing.assert_array_equal(outs[0], outs[1])
    # the slot alone, prepared as a chain prepares it (prepare, a warm-up block, reset)
    p = P.create("lv2", uri=uri)
    p.prepare(SR, 1000, 1)
    p.process(np.zeros((1000, 1), np.float32))
    p.reset()
    y = _blocks(p, x[:, None], 1000)[:, 0]
    values = {k: float(p._ctl[0, k]) for k in p._control_ports}
    ref = _fresh(uri, values, x)
    assert np.abs(ref - x).max() > 1e-3  # the effect does something
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_a_plugin_with_its_own_state_keeps_it_through_a_reset():
    """A reset makes anew only instances that have nothing but their control ports: one with a
    state of its own (LSP) is deactivated and activated, as before, and keeps what it holds."""
    uri = LSP + "comp_delay_mono"
    _need(uri)
    p = P.create("lv2", uri=uri)
    p.prepare(SR, 256, 1)
    before = p.instances
    p.process(np.zeros((256, 1), np.float32))
    p.reset()
    assert p.instances == before


def test_a_plugin_without_state_is_made_anew_by_a_reset_after_it_ran(monkeypatch):
    _need(AMP)
    p = P.create("lv2", uri=AMP)
    monkeypatch.setattr(type(p), "keeps_junk", False)  # as another test's junk may have left the class
    p.prepare(SR, 256, 2)
    before = p.instances
    p.reset()  # it has not run since prepare's reset
    assert p.instances == before
    p.process(np.zeros((256, 2), np.float32))
    p.reset()
    after = p.instances
    assert len(after) == 2 and not set(map(id, after)) & set(map(id, before)) and all(i.active for i in after)


def test_a_plugin_whose_memory_starts_as_junk_keeps_the_instance_checked_on_silence(monkeypatch):
    """swh dcRemove starts with whatever its memory held (now and then 1e31): a new instance made by
    a reset would play unchecked, so its instances are never made anew there."""
    uri = SWH + "dcRemove"
    _need(uri)
    assert uri in lv2_scan.UNINITIALISED_MEMORY
    p = P.create("lv2", uri=uri)
    monkeypatch.setattr(type(p), "keeps_junk", False)
    p.prepare(SR, 256, 1)
    before = p.instances
    p.process(np.zeros((256, 1), np.float32))
    p.reset()
    assert p.instances == before


# -- 5: sample-rate ranges' defaults at the stream's rate -------------------------------------------------
@pytest.mark.parametrize("rate", [22050, 96000, 192000])
def test_a_sample_rate_ranges_default_is_the_plugins_fraction_of_the_streams_rate(rate):
    """The report: swh lowpass_iir kept 16201 Hz (0.3375 of 48 kHz) at 96 and 192 kHz; its default is
    0.3375 of the rate. A value set by hand stays; a re-prepare at another rate follows the default."""
    _need(LOWPASS)
    fraction = lv2_scan.plugin_info(LOWPASS).controls[0].default
    p = P.create("lv2", uri=LOWPASS)
    p.prepare(44100, 512, 1)
    p.prepare(rate, 512, 1)
    assert p.values[0] == pytest.approx(fraction * rate, rel=1e-6)
    assert p.params[0].default == pytest.approx(fraction * rate, rel=1e-6)
    q = P.create("lv2", uri=LOWPASS, cutoff=1000.0)
    q.prepare(rate, 512, 1)
    assert q.values[0] == 1000.0


def test_swh_lsfilter_at_22050_hz_filters_instead_of_blowing_up():
    """Its default (0.251 of the rate) was 12048 Hz at every rate: beyond Nyquist at 22.05 kHz, clamped
    there, and the filter blew up: the whole file silenced as junk."""
    _need(LSFILTER)
    p = P.create("lv2", uri=LSFILTER)
    p.prepare(22050, 512, 1)
    y = _blocks(p, _tone(440, 22050, sr=22050)[:, None], 512)
    assert p.bad_output_samples == 0 and np.sqrt(np.mean(y[4096:] ** 2)) > 0.1


# -- 4: drop-down choices named with numbers ---------------------------------------------------------------
class _Numbered:
    params = (Param("fft", "FFT size", 0.0, 3.0, 1.0, choices=("512", "1024", "2048", "4096"), step=1.0),
              Param("dmax", "Max delay", 0.0, 3.0, 0.0, choices=("1", "2", "4", "8"), step=1.0),
              Param("mode", "Mode", 0.0, 2.0, 0.0, choices=("0", "1", "inf"), step=1.0))


def test_set_takes_a_choice_named_with_a_number_by_its_name(monkeypatch):
    """The report: ``--set ir.fft=1024`` was refused ("1024 is not one of ['512', '1024', ...]") and
    ``--set d.dmax=2`` picked index 2 ('4'), while a preset's "2" selects '2'. The name shown wins."""
    from realtime.dsp import presets

    monkeypatch.setattr(P, "slot_class", lambda kind, uri=None: _Numbered)
    slot = {"id": "x", "processor": "lv2", "uri": "urn:test:numbered", "params": {}}
    assert presets._param_value(slot, "fft", "1024") == "1024"
    assert presets._param_value(slot, "dmax", "2") == "2"
    assert presets._param_value(slot, "mode", "inf") == "inf" and presets._param_value(slot, "mode", "1") == "1"
    assert presets._param_value(slot, "dmax", "3") == 3  # not a name: a number, as before


@pytest.mark.parametrize("uri, key, raw", [(LSP + "impulse_responses_mono", "fft", "1024"),
                                           (LSP + "art_delay_mono", "dmax", "2")])
def test_set_on_lsps_numbered_drop_downs_picks_the_named_choice(uri, key, raw):
    _need(uri)
    preset = {"version": 1, "name": "t", "chain": [{"id": "s", "processor": "lv2", "uri": uri, "params": {}}]}
    p = build_chain(apply_overrides(preset, [f"s.{key}={raw}"])).slots[0].processor
    d = p.params[p.param_index(key)]
    assert d.choices[int(p.values[p.param_index(key)])] == raw


# -- 6: a plugin's printf stays off stdout ---------------------------------------------------------------
_CHATTY = """
import json, sys
import numpy as np
from realtime.dsp import processors as P
p = P.create("lv2", uri="urn:test:grouped")
p.prepare(48000, 256, 1)
p.process(np.zeros((256, 1), np.float32))
p.reset()
print(json.dumps({"ok": True}))
"""


def test_a_plugins_printf_goes_to_stderr_not_into_the_json_on_stdout(grouped):
    """The report: Calf Fluidsynth's "Loading ..." lines landed in ``batch``'s JSON lines. What a
    plugin prints while it is made and activated goes to stderr; stdout is the command's alone."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", _CHATTY], cwd=root, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": root, "LV2_PATH": grouped})
    assert r.returncode == 0, r.stderr[-1500:]
    assert [json.loads(line) for line in r.stdout.splitlines()] == [{"ok": True}]
    assert "chatter: made at 48000 Hz" in r.stderr and "chatter: activated" in r.stderr


def test_stdout_is_back_after_the_plugin_is_made(grouped, capfd):
    p = P.create("lv2", uri="urn:test:grouped")
    p.prepare(SR, 64, 1)
    os.write(1, b"ours\n")
    out, err = capfd.readouterr()
    assert out == "ours\n" and "chatter: activated" in err
    p.close()
