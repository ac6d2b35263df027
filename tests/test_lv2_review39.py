"""LV2 hosting, from review 39: an instance that blows up in one piece of a block longer than 4096
frames (it ran on, broken, through the block's later pieces, its junk counted again in each),
latency ports that do not say the plugin's delay (swh dj_eq, amPitchshift), swh bodeShifterCV (its
control-voltage input took the music; its output is junk in Debian's build), and CV and meter ports
(a plugin built here). Each test skips when its plugin (or, for the plugin built here, a C compiler)
is missing."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from realtime.dsp import processors as P
from realtime.dsp.presets import build_chain, validate_preset
from realtime.errors import PluginError
from realtime.io import lilv, lv2_scan

from .test_lv2 import LV2_C_TYPES, build_plugin
from .test_lv2_ports import _need, _private_cache  # noqa: F401 (an autouse fixture: each test's own scan cache)

SR = 48000
SWH = "http://plugin.org.uk/swh-plugins/"
LOWPASS, LSFILTER, DJ_EQ, DJ_EQ_MONO = SWH + "lowpass_iir", SWH + "lsFilter", SWH + "dj_eq", SWH + "dj_eq_mono"
AM_PITCHSHIFT, BODE_CV = SWH + "amPitchshift", SWH + "bodeShifterCV"

pytestmark = pytest.mark.skipif(not lilv.available(), reason="run scripts/setup.sh (liblilv-0-0)")


def _preset_file(tmp_path, name, uri, **slot) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"version": 1, "name": name, "chain": [
        {"id": "fx", "processor": "lv2", "uri": uri, **slot}]}))
    return str(path)


def _noise(n, channels=2, seed=0):
    return (0.2 * np.random.default_rng(seed).standard_normal((n, channels))).astype(np.float32)


# -- 1: an instance that blows up inside a long block --------------------------------------------------
def test_a_long_block_renders_as_its_4096_frame_pieces_would_when_a_plugin_blows_up(tmp_path, capsys):
    """The report: swh lowpass_iir, a float file with a 3e38 burst (its filter state goes to Inf),
    `process -b 16384`: the instance ran on broken through the block's later pieces, so 16284 samples
    were silenced (the left side silent to the end of the block) where `-b 4096` silenced 3996 and
    played on after the reset. Now the instance is reset before the next piece: the same file and the
    same count at either block size."""
    import main

    _need(LOWPASS)
    x = _noise(SR)
    x[100:110, 0] = 3e38
    src = tmp_path / "burst.wav"
    sf.write(src, x, SR, subtype="FLOAT")
    preset = _preset_file(tmp_path, "lp", LOWPASS)
    renders, counts = [], []
    for block in (4096, 16384):
        out = tmp_path / f"out{block}.wav"
        assert main.main(["process", str(src), str(out), "--preset", preset, "-b", str(block), "--no-progress"]) == 0
        counts.append(json.loads(capsys.readouterr().out)["plugin_junk_samples"])
        renders.append(sf.read(out, dtype="float32")[0])
    assert counts == [3996, 3996]
    np.testing.assert_array_equal(renders[1], renders[0])
    assert np.sqrt(np.mean(renders[1][4096:16384, 0] ** 2)) > 0.1  # music after the reset, not silence


def test_a_live_instance_that_blows_up_is_parked_for_the_rest_of_the_block_and_counted_once():
    """Live, the DSP thread parks the instance at once (the rescue thread resets it): the later pieces
    of the block neither run it broken nor count its junk again (16284 before, for one burst)."""
    _need(LOWPASS)
    p = P.create("lv2", uri=LOWPASS)
    p.live = True
    p.prepare(SR, 16384, 1)
    x = _noise(16384, 1)
    x[100:110] = 3e38
    p.process(x)
    assert p.bad_output_samples == 4096 - 100
    p.close()


def test_prepares_silent_block_counts_a_broken_instance_once_whatever_the_block_size():
    """swh lsFilter at the top of its range at 44.1 kHz puts out NaN even on silence: prepare's silent
    block counted it piece by piece (16384 at a 16384-frame block, 4096 at 4096)."""
    _need(LSFILTER)
    counts = []
    for block in (4096, 16384):
        p = P.create("lv2", uri=LSFILTER, cutoff=22050.0)
        p.prepare(44100, block, 1)
        counts.append(p.bad_output_samples)
        p.close()
    assert counts[0] == counts[1] > 0


# -- 2: latency ports that do not say the delay --------------------------------------------------------
@pytest.mark.parametrize("mix", [1.0, 0.5])
def test_swh_dj_eq_flat_gives_the_file_back_in_place_not_three_samples_early(tmp_path, capsys, mix):
    """dj_eq's latency port says 3 samples ("XXX is this right?" in its source); its filters delay
    nothing. The host compensated 3 samples: the output came 3 samples early, and at 50% mix the dry
    path, delayed 3 samples, combed with the wet. Flat, it now gives the file back where it was."""
    import main

    _need(DJ_EQ)
    x = _noise(SR // 2)
    src, out = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, SR, subtype="FLOAT")
    preset = _preset_file(tmp_path, "eq", DJ_EQ, mix=mix)
    assert main.main(["process", str(src), str(out), "--preset", preset, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["latency_compensated_frames"] == 0
    y = sf.read(out, dtype="float32")[0]
    assert np.max(np.abs(y - x)) < 0.02  # 0 dB bands: as good as flat, and in place (3 early: 1.2)


def test_amPitchshift_is_compensated_by_its_real_delay_and_wet_and_dry_line_up():
    """amPitchshift reports half its delay (256 at its default buffer; an impulse comes out 512 late):
    at 50% mix an impulse came out twice, dry at 256 and wet at 512. The chain now takes 512."""
    _need(AM_PITCHSHIFT)
    chain = build_chain(validate_preset({"version": 1, "name": "t", "chain": [
        {"id": "ps", "processor": "lv2", "uri": AM_PITCHSHIFT, "mix": 0.5}]}))
    chain.prepare(SR, 256, 1)
    assert chain.latency == chain.slot("ps").processor.latency == 512
    x = np.zeros((256 * 16, 1), np.float32)
    x[1000] = 0.5  # after its cross-fade's first steps (it starts half-way, from a fresh instance)
    for i in range(0, len(x), 256):
        chain.process(x[i:i + 256])
    assert list(np.nonzero(np.abs(x[:, 0]) > 0.01)[0]) == [1512]


def test_a_corrected_latency_is_said_in_one_line_and_in_the_listing(monkeypatch, capsys):
    """One line on stderr when the plugin's class is made (once per process), and `plugins --json` says why."""
    import main
    from realtime.dsp.processors import lv2

    _need(DJ_EQ_MONO)
    monkeypatch.setattr(lv2, "_classes", {})
    P.create("lv2", uri=DJ_EQ_MONO)
    P.create("lv2", uri=DJ_EQ_MONO)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"lv2 plugin {DJ_EQ_MONO}: its latency port says 3 samples" in err
    assert main.main(["plugins", "--json", "dj_eq_mono"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["plugins"]
    assert "delay nothing" in entry["latency_misreported"]
    assert main.main(["plugins", "--json", "lookaheadLimiter"]) == 0  # latency ports that say it right
    assert {e["latency_misreported"] for e in json.loads(capsys.readouterr().out)["plugins"]} == {None}


def test_artificial_latency_keeps_the_latency_it_reports():
    """swh artificialLatency reports a latency it does not have by design (a test of compensation):
    taken as it says."""
    _need(SWH + "artificialLatency")
    p = P.create("lv2", uri=SWH + "artificialLatency", delay=10.0)
    p.prepare(SR, 256, 1)
    assert p.latency == 480


# -- 3: bodeShifterCV and CV / meter ports -------------------------------------------------------------
def test_bode_shifter_cv_is_refused_with_one_line_and_its_cv_input_is_not_the_signal_path(monkeypatch, capsys):
    """Debian's bodeShifterCV puts out ~1e28 whatever its settings (lilv's lv2apply too): `process`
    gave silence, a reset every block and a junk warning. It is refused with one line and `plugins`
    marks it. Its second audio input is the shift's control voltage, which got the chain's right
    channel (or the music itself on a mono chain): were it loaded, the CV input gets silence and
    the chain hears its "Mix out"."""
    import main

    _need(BODE_CV)
    with pytest.raises(PluginError, match="known to be broken") as e:
        P.create("lv2", uri=BODE_CV)
    assert "\n" not in str(e.value)
    assert main.main(["plugins", "bodeShifterCV"]) == 0
    assert "[broken: puts out about 1e28" in capsys.readouterr().out
    info = lv2_scan.scan().plugins[BODE_CV]
    assert [p.symbol for p in info.main_inputs] == ["input"] and [p.symbol for p in info.main_outputs] == ["mixout"]
    monkeypatch.setattr(lv2_scan, "KNOWN_BROKEN", {})
    p = P.create("lv2", uri=BODE_CV)
    p.prepare(SR, 256, 2)
    assert p.adaptation == ("dual-mono (two instances), inputs besides the main ones silent, "
                            "outputs besides the main ones unused")
    p.close()


_PREFIX = """@prefix lv2: <http://lv2plug.in/ns/lv2core#> .
@prefix doap: <http://usefulinc.com/ns/doap#> .
"""
_CV_TTL = """<urn:test:cv> a lv2:Plugin ; lv2:binary <cv.so> ; doap:name "CV" ;
  lv2:port [ a lv2:AudioPort , lv2:InputPort ; lv2:index 0 ; lv2:symbol "in" ; lv2:name "In" ] ,
           [ a lv2:CVPort , lv2:InputPort ; lv2:index 1 ; lv2:symbol "mod" ; lv2:name "Mod" ] ,
           [ a lv2:AudioPort , lv2:OutputPort ; lv2:index 2 ; lv2:symbol "out" ; lv2:name "Out" ] ,
           [ a lv2:CVPort , lv2:OutputPort ; lv2:index 3 ; lv2:symbol "env" ; lv2:name "Env" ] ,
           [ a lv2:ControlPort , lv2:OutputPort ; lv2:index 4 ; lv2:symbol "meter" ; lv2:name "Meter" ;
             lv2:minimum 0 ; lv2:maximum 1 ] .
"""
# out = in + mod (a CV input given anything but silence shows); env = 1e9 (a CV output is no audio:
# never heard, never taken for junk); meter = the block's peak. Every port must be connected.
_CV_C = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
""" + LV2_C_TYPES + r"""typedef struct { const float* in; const float* mod; float* out; float* env; float* meter; } Plugin;
static LV2_Handle instantiate(const LV2_Descriptor* d, double rate, const char* path, const LV2_Feature* const* f) {
  return calloc(1, sizeof(Plugin));
}
static void connect_port(LV2_Handle h, uint32_t port, void* data) {
  Plugin* p = h;
  switch (port) { case 0: p->in = data; break; case 1: p->mod = data; break; case 2: p->out = data; break;
                  case 3: p->env = data; break; default: p->meter = data; }
}
static void run(LV2_Handle h, uint32_t n) {
  Plugin* p = h;
  if (!p->in || !p->mod || !p->out || !p->env || !p->meter) abort();
  float peak = 0.0f;
  for (uint32_t i = 0; i < n; ++i) {
    p->out[i] = p->in[i] + p->mod[i]; p->env[i] = 1e9f;
    if (fabsf(p->in[i]) > peak) peak = fabsf(p->in[i]);
  }
  *p->meter = peak;
}
static void cleanup(LV2_Handle h) { free(h); }
static const LV2_Descriptor desc = {"urn:test:cv", instantiate, connect_port, NULL, run, NULL, cleanup, NULL};
__attribute__((visibility("default"))) const LV2_Descriptor* lv2_descriptor(uint32_t i) {
  return i == 0 ? &desc : NULL;
}
"""


def test_cv_ports_are_connected_cv_inputs_silent_and_a_meter_is_a_readout_not_a_knob(tmp_path, monkeypatch):
    """A plugin with a CV input and output and a meter (a control output), as LSP's meters: every port
    connected (it aborts otherwise), the CV input silent (out == in), the CV output neither heard nor
    counted as junk, and the meter a read-only value, not a knob."""
    monkeypatch.setenv("LV2_PATH", str(build_plugin(tmp_path, "cv", _PREFIX + _CV_TTL, _CV_C, ["-lm"])))
    p = P.create("lv2", uri="urn:test:cv")
    assert [r.id for r in p.readouts] == ["meter"] and not p.params
    x = _noise(1024, 1) * 2.0
    y = x.copy()
    p.prepare(SR, 256, 1)
    for i in range(0, len(y), 256):
        p.process(y[i:i + 256])
    np.testing.assert_array_equal(y, x)
    assert p.bad_output_samples == 0
    assert p.readings[0] == pytest.approx(np.abs(x[-256:]).max())
    p.close()
