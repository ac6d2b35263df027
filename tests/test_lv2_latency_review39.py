"""LV2 plugins that delay the signal but have no latency port, from review 39: Calf Limiter (its
look-ahead, 239 samples at its defaults at 48 kHz), Calf Multiband and Sidechain Limiter (two
look-aheads in series, 382), swh dysonCompress (999 at any rate) and swh satanMaximiser (half its
envelope time, 15). Nothing compensated them: `process` gave the file back shifted by that much,
and a dry/wet mix combed. Their latency now comes from a rule on the control that sets it
(``lv2_scan.LATENCY_MISREPORTED``), followed when the knob moves. Each test skips when its plugin is
missing."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import soundfile as sf

from realtime.dsp import processors as P
from realtime.dsp.presets import build_chain, validate_preset
from realtime.io import lilv, lv2_scan

from .test_lv2_ports import _need, _private_cache  # noqa: F401 (an autouse fixture: each test's own scan cache)

CALF, SWH = "http://calf.sourceforge.net/plugins/", "http://plugin.org.uk/swh-plugins/"
LIMITER, MB_LIMITER, SC_LIMITER = CALF + "Limiter", CALF + "MultibandLimiter", CALF + "SidechainLimiter"
DYSON, SATAN = SWH + "dysonCompress", SWH + "satanMaximiser"
# the multiband limiters' crossovers at their lowest: all but the top band empty, so the signal passes
# as it is but for the look-aheads (the crossover's IIR phase is not a latency)
FLAT_BANDS = {"freq0": 10.0, "freq1": 10.0, "freq2": 10.0}

pytestmark = pytest.mark.skipif(not lilv.available(), reason="run scripts/setup.sh (liblilv-0-0)")


def _lookahead(attack_ms: float, rate: int, stages: int = 1) -> int:
    """Calf's look-ahead limiter's delay, as measured: floor(attack x rate / 1000) - 1 samples each."""
    return stages * (math.floor(attack_ms * rate / 1000) - 1)


# (plugin, settings, its delay at the rate): two settings each, at 44.1 and 48 kHz below
CASES = [
    (LIMITER, {"attack": 5.0}, lambda r: _lookahead(5.0, r)),
    (LIMITER, {"attack": 1.3}, lambda r: _lookahead(1.3, r)),
    (MB_LIMITER, {"attack": 4.0, **FLAT_BANDS}, lambda r: _lookahead(4.0, r, 2)),
    (MB_LIMITER, {"attack": 0.5, **FLAT_BANDS}, lambda r: _lookahead(0.5, r, 2)),
    (SC_LIMITER, {"attack": 4.0, **FLAT_BANDS}, lambda r: _lookahead(4.0, r, 2)),
    (SC_LIMITER, {"attack": 9.0, **FLAT_BANDS}, lambda r: _lookahead(9.0, r, 2)),
    (DYSON, {}, lambda r: 999),
    (DYSON, {"cfrate": 0.0, "crate": 0.0, "peak_limit": -10.0}, lambda r: 999),
    (SATAN, {}, lambda r: 15),  # knee 0 dB: it passes the music as it is, 30 samples / 2 late
    (SATAN, {"env_time_p": 9.0}, lambda r: 4),  # 4.5, ties to even (lrintf)
]


def _noise(n, channels=2, seed=0, level=0.05):
    return (level * np.random.default_rng(seed).standard_normal((n, channels))).astype(np.float32)


def _peak_lag(x, y, span=2000):
    """The lag (y after x, in samples, within +-span) where y's cross-correlation with x peaks, and that
    peak normalised (1: y is x shifted)."""
    a, b = x.astype(np.float64), y.astype(np.float64)
    n = len(a) + len(b)
    cc = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    lags = np.r_[0:span + 1, -span:0]
    vals = cc[lags]
    k = int(np.argmax(np.abs(vals)))
    return int(lags[k]), float(abs(vals[k]) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def _preset_file(tmp_path, uri, params, **slot) -> str:
    path = tmp_path / "fx.json"
    path.write_text(json.dumps({"version": 1, "name": "fx", "chain": [
        {"id": "fx", "processor": "lv2", "uri": uri, "params": params, **slot}]}))
    return str(path)


@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("uri,params,delay", CASES, ids=[f"{c[0].rsplit('/', 1)[1]}-{i % 2}" for i, c in
                                                         enumerate(CASES)])
def test_process_gives_the_file_back_in_place(tmp_path, capsys, rate, uri, params, delay):
    """`process` through the plugin at a setting that passes the music as it is: the output's
    cross-correlation with the input peaks at lag 0, the plugin's delay compensated (it peaked at the
    delay: nothing was)."""
    import main

    _need(uri)
    x = _noise(rate // 2)
    src, out = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, rate, subtype="FLOAT")
    preset = _preset_file(tmp_path, uri, params)
    assert main.main(["process", str(src), str(out), "--preset", preset, "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    y = sf.read(out, dtype="float32")[0]
    lag, corr = _peak_lag(x[:, 0], y[:, 0])
    assert (lag, corr > 0.95) == (0, True)  # it was the delay
    assert report["chain_samplerate"] == rate
    assert report["latency_compensated_frames"] == delay(rate)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_a_dry_wet_mix_lines_up_instead_of_combing(tmp_path, capsys, rate):
    """Calf Limiter at 50% mix, on music it does not limit: dry and wet are the same signal in the same
    place, so the file comes back as it went in (the dry path 219/239 samples early combed it)."""
    import main

    _need(LIMITER)
    x = _noise(rate // 2)
    src, out = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, rate, subtype="FLOAT")
    preset = _preset_file(tmp_path, LIMITER, {"attack": 5.0}, mix=0.5)
    assert main.main(["process", str(src), str(out), "--preset", preset, "--no-progress"]) == 0
    capsys.readouterr()
    y = sf.read(out, dtype="float32")[0]
    settled = slice(rate // 10, None)  # after the limiter's first look-ahead
    err = np.sqrt(np.mean((y[settled] - x[settled]) ** 2) / np.mean(x[settled] ** 2))
    assert err < 0.05  # combed: about 0.7


def test_the_chain_follows_the_attack_knob_while_playing():
    """Moving Calf Limiter's attack (its look-ahead) while a chain plays moves the plugin's latency
    with it, the next block: the dry path of a 50% mix follows, so dry and wet stay lined up."""
    _need(LIMITER)
    rate, block = 48000, 256
    chain = build_chain(validate_preset({"version": 1, "name": "t", "chain": [
        {"id": "lim", "processor": "lv2", "uri": LIMITER, "mix": 0.5, "params": {"attack": 5.0}}]}))
    chain.prepare(rate, block, 2)
    lim = chain.slot("lim").processor
    assert lim.latency == _lookahead(5.0, rate) and lim.max_latency == _lookahead(10.0, rate)
    x = _noise(rate)
    y = x.copy()
    half = rate // 2 // block * block
    for i in range(0, len(y), block):
        if i == half:
            chain.set_param("lim", "attack", 1.0)
        chain.process(y[i:i + block])
        if i == half:
            assert lim.latency == chain.latency == _lookahead(1.0, rate)
    tail = slice(half + rate // 10, None)  # after the plugin's own reset of its look-ahead
    lag, corr = _peak_lag(x[tail, 0], y[tail, 0])
    assert (lag, corr > 0.95) == (chain.latency, True)  # one peak: a comb splits it in two of ~0.7


@pytest.mark.parametrize("rate", [44100, 48000])
def test_calf_bypass_takes_the_latency_away(rate):
    """Calf's own bypass passes the input straight through: no delay, none reported."""
    _need(LIMITER)
    p = P.create("lv2", uri=LIMITER, bypass_=1.0)
    p.prepare(rate, 512, 2)
    x = _noise(rate // 4)
    y = x.copy()
    for i in range(0, len(y), 512):
        p.process(y[i:i + 512])
    assert p.latency == 0 and _peak_lag(x[:, 0], y[:, 0])[0] == 0
    p.set_param("bypass_", 0.0)
    p.process(y[:512])
    assert p.latency == _lookahead(5.0, rate)
    p.close()


def test_a_rule_is_said_in_one_line_and_in_the_listing(monkeypatch, capsys):
    """One line on stderr when the plugin's class is made (once per process), and `plugins --json`
    says why under the key the misreported latency ports use."""
    import main
    from realtime.dsp.processors import lv2

    _need(DYSON)
    monkeypatch.setattr(lv2, "_classes", {})
    P.create("lv2", uri=DYSON)
    P.create("lv2", uri=DYSON)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"lv2 plugin {DYSON}: has no latency port, yet delays the signal 999" in err
    assert main.main(["plugins", "--json", "dysonCompress"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["plugins"]
    assert "999 samples" in entry["latency_misreported"]


def test_a_rule_on_a_control_leaves_a_build_with_a_latency_port_to_it():
    """A build of the plugin that reports its latency (a later Calf) is taken at its word: the rule on
    its attack knob is not used; a rule on the latency port (amPitchshift's) still is."""
    from realtime.dsp.processors import lv2

    _need(LIMITER)
    info = lv2_scan.plugin_info(LIMITER)
    attack = next(p.index for p in info.controls if p.symbol == "attack")
    bypass = next(p.index for p in info.controls if p.symbol == "bypass")
    rule = lv2_scan.LATENCY_MISREPORTED[LIMITER]
    assert lv2._latency_from(info) == (rule, attack, bypass)
    reporting = dataclasses.replace(info, latency_port=len(info.ports) - 1)
    assert lv2._latency_from(reporting) == (None, len(info.ports) - 1, -1)
