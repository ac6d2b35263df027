"""LV2 hosting, forty-fifth session's review."""
from realtime.dsp.processors import create

from .test_lv2_ports import _need, _private_cache  # noqa: F401 (an autouse fixture: each test's own scan cache)

LOWPASS = "http://plugin.org.uk/swh-plugins/lowpass_iir"
AMP = "http://plugin.org.uk/swh-plugins/amp"


def test_a_rate_change_and_back_keeps_a_sample_rate_ports_value():
    """The panel's Settings re-prepares the chain at the new rate: a cutoff of 18 kHz clamped to
    22.05 kHz's 9,922.5 Hz stayed there when the rate went back to 48 kHz."""
    _need(LOWPASS)
    p = create("lv2", uri=LOWPASS)
    p.set_param("cutoff", 18000.0)
    p.prepare(48000, 256, 2)
    assert p.get_param("cutoff") == 18000.0
    p.prepare(22050, 256, 2)
    assert p.get_param("cutoff") < 11025.0  # what the plugin can take at that rate
    p.prepare(48000, 256, 2)
    assert p.get_param("cutoff") == 18000.0
    p.prepare(22050, 256, 2)
    p.set_param("cutoff", 5000.0)  # moved meanwhile: the new value stays
    p.prepare(48000, 256, 2)
    assert p.get_param("cutoff") == 5000.0
    p.close()


def test_the_status_line_says_a_plugins_junk_replaced_by_silence():
    """`run` said nothing while a hosted plugin's output was replaced by silence (`process` says it)."""
    import numpy as np

    from realtime.dsp.presets import build_chain
    from realtime.engine.config import EngineConfig
    from realtime.engine.engine import Engine
    from realtime.run.live import status_line

    _need(AMP)
    chain = build_chain({"version": 1, "name": "a", "chain": [
        {"id": "amp", "processor": "lv2", "uri": AMP, "params": {"gain": 70}}]})
    eng = Engine(chain, EngineConfig())
    assert "junk" not in status_line(eng)
    chain.prepare(48000, 128, 2)
    chain.process(np.full((128, 2), 4.0, np.float32))  # +12 dBFS × 70 dB: beyond what any output holds
    assert status_line(eng).endswith("| amp junk silenced: 256")


def test_the_demo_does_not_measure_a_lag_where_the_output_does_not_follow_the_input():
    """Silence out (a plugin's junk silenced) measured "0 frames", a chain's unrelated output 11,862."""
    import numpy as np

    from realtime.run.live import lag_if_it_follows

    rng = np.random.default_rng(0)
    played = rng.standard_normal((48000, 2)).astype(np.float32)
    late = np.concatenate([np.zeros((384, 2), np.float32), 0.1 * played])
    assert lag_if_it_follows(played, late, 24000) == 384
    assert lag_if_it_follows(played, np.zeros_like(late), 24000) is None
    assert lag_if_it_follows(played, rng.standard_normal(late.shape).astype(np.float32), 24000) is None


SAMPLER = "http://lsp-plug.in/plugins/lv2/sampler_mono"
XOVER = "http://calf.sourceforge.net/plugins/XOver2Band"


def test_an_lsp_sampler_plays_a_note_in_the_first_block_of_a_render(tmp_path):
    """Its sample, named in its saved state, is loaded by its worker on its first run: offline, a
    note in the first block came out silent (the same note a second later played)."""
    import numpy as np
    import soundfile as sf

    from realtime.dsp.presets import build_chain
    from realtime.run.offline import render_events

    _need(SAMPLER)
    wav = tmp_path / "sample.wav"
    sf.write(wav, (0.5 * np.sin(2 * np.pi * 220 * np.arange(48000) / 48000)).astype(np.float32), 48000)
    chain = build_chain({"version": 1, "name": "x", "chain": [{"id": "p", "processor": "lv2", "uri": SAMPLER}]})
    chain.prepare(48000, 256, 2)
    state = chain.to_preset("x")["chain"][0]["state"].replace(
        "state:state [", f'state:state [\n\t\t<{SAMPLER}/ports#sf_0> "{wav}"^^atom:Path ;', 1)
    chain.slot("p").processor.close()
    chain = build_chain({"version": 1, "name": "s", "chain": [
        {"id": "synth", "processor": "lv2", "uri": SAMPLER, "state": state}]})
    events = np.array([[0, 0x90, 57, 100], [24000, 0x80, 57, 0], [48000, 0x90, 57, 100], [72000, 0x80, 57, 0]],
                      np.float64)
    try:
        y = render_events(chain, events, 96000, 48000, 256, 2)
    finally:  # now, not whenever the collector gets to it (a plugin freed in a later test's middle)
        chain.slot("synth").processor.close()
    first, second = np.abs(y[:24000]).max(), np.abs(y[48000:72000]).max()
    assert second > 0.1 and first > 0.5 * second, (first, second)


def test_a_plugin_with_more_outputs_than_the_chain_hears_says_so():
    """Calf's 2-band crossover declares no main pair: the chain heard its low band alone, a hidden
    1 kHz low-pass, and the slot said only "stereo"."""
    from realtime.dsp.processors import create

    _need(XOVER)
    p = create("lv2", uri=XOVER)
    p.prepare(48000, 256, 2)
    assert "only the first 2 of its 4 outputs heard" in p.adaptation, p.adaptation
    p.close()
