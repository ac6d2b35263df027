"""De-limiter: the committed ONNX model run by the real processor (ONNX Runtime), the project's
own limiter as the thing to undo. Streaming == whole-file, un-limited input passes, limited
transients get their peaks back, mono/stereo, NaN containment, auto-level, errors, preset,
and a training smoke run whose export the processor loads."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realtime.dsp.processors.limiter import limit
from realtime.dsp.processors.neural.delimiter import DEFAULT_MODEL, Delimiter
from realtime.errors import ModelError

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="run `python main.py train delimiter`")
SR = 48000
GRU_CKPT = Path(__file__).resolve().parents[1] / "models" / "delimiter" / "gru_checkpoint.pt"  # shipped until the 28th session


def _run(proc, x, block=None, rng=None):
    """Stream x through proc in fixed or random block sizes (<= proc.max_block)."""
    y = np.empty_like(x)
    i = 0
    while i < len(x):
        n = block or int(rng.integers(1, proc.max_block + 1))
        n = min(n, len(x) - i)
        b = x[i:i + n].copy()
        proc.process(b)
        y[i:i + n] = b
        i += n
    return y


def _hits(seconds=2.0, sr=SR, seed=0):
    """Drum-like decaying hits and a sine burst over a quiet tonal bed (stereo, peak 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.05 * np.sin(2 * np.pi * 220 * t) + 0.03 * np.sin(2 * np.pi * 331 * t)
    for start in np.arange(0.2, seconds - 0.3, 0.4):
        s = int(start * sr)
        n = int(0.25 * sr)
        env = np.exp(-np.arange(n) / (0.04 * sr))
        x[s:s + n] += env * (0.6 * np.sin(2 * np.pi * 60 * t[:n] * (1 + 2 * env)) + 0.4 * rng.standard_normal(n))
    s = int(0.95 * seconds * sr) - int(0.1 * sr)
    x[s:s + int(0.1 * sr)] += 0.8 * np.sin(2 * np.pi * 1000 * t[: int(0.1 * sr)])  # sine burst
    x = np.stack([x, 0.9 * x + 0.01 * rng.standard_normal(len(x))], 1)
    return (x / np.abs(x).max()).astype(np.float32)


def _limited(x, drive_db=12.0, sr=SR):
    """(limited, reference aligned with it) by the project's lookahead limiter."""
    y, _ = limit(x * 10 ** (drive_db / 20), sr, ceiling_db=-1.0, release_ms=80.0, lookahead_ms=3.0)
    L = int(round(3.0e-3 * sr))
    ref = np.zeros_like(x)
    ref[L:] = x[:-L] * 10 ** (drive_db / 20)
    return y, ref


def _sisdr(est, ref):
    est, ref = est.ravel().astype(np.float64), ref.ravel().astype(np.float64)
    t = ref * np.dot(est, ref) / np.dot(ref, ref)
    return 10 * np.log10(np.dot(t, t) / np.dot(est - t, est - t))


def _crest(x):
    return 20 * np.log10(np.abs(x).max() / np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_streaming_equals_whole_file_any_block_size():
    y, _ = _limited(_hits(1.5))
    whole = Delimiter(auto_level="on")
    whole.prepare(SR, len(y), 2)
    a = y.copy()
    whole.process(a)
    for block in (None, 1, 128, 1000):
        p = Delimiter(auto_level="on")
        p.prepare(SR, 1024, 2)
        b = _run(p, y, block=block, rng=np.random.default_rng(3))
        assert np.max(np.abs(a - b)) < 1e-5, block
    assert p.latency == whole.latency and p.latency_ms <= 10.0


def test_auto_level_ceiling_moves_glide_instead_of_stepping():
    """Lowering the auto-level ceiling by 11 dB, or switching auto-level on, under a loud steady tone
    (which the model leaves alone: tests below) glides the output level down within ~0.3 s; before,
    the output stepped by the whole 11 dB from one sample to the next."""
    t = np.arange(SR * 2) / SR
    x = np.repeat((0.9 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[:, None], 2, 1)
    for first, then in (({"ceiling_db": -1.0}, {"ceiling_db": -12.0}), ({"auto_level": "off"}, {"auto_level": "on",
                                                                                             "ceiling_db": -12.0})):
        p = Delimiter(**first)
        p.prepare(SR, 256, 2)
        y, at = x.copy(), SR // 2 // 256 * 256
        for i in range(0, len(y), 256):
            if i == at:
                for k, v in then.items():
                    p.set_param(k, v)
            p.process(y[i:i + 256])
        lat = p.latency
        ratio = np.abs(y[lat:, 0]) / np.maximum(np.abs(x[:-lat, 0]), 1e-9)
        ok = np.abs(x[:-lat, 0]) > 0.3  # the level where the tone is well above zero
        gain_db = 20 * np.log10(np.maximum(ratio[ok], 1e-9))
        steps = np.abs(np.diff(gain_db))
        assert steps.max() < 2.0, (then, steps.max())  # glides (a new step at each peak of the tone)
        late = y[at + lat + SR // 3:, 0]
        assert np.abs(late).max() < 10 ** (-12 / 20) * 1.001, then  # and gets there within a third of a second
        assert np.abs(late).max() > 10 ** (-12.5 / 20), then


def test_reset_restarts_the_stream_identically():
    y, _ = _limited(_hits(1.0))
    p = Delimiter()
    p.prepare(SR, 256, 2)
    a = _run(p, y, block=256)
    p.reset()
    b = _run(p, y, block=256)
    assert np.array_equal(a, b)


def test_unlimited_input_passes_nearly_unchanged():
    x = 0.25 * _hits(2.0, seed=1)  # peaks at -12 dBFS, nothing was limited
    outs = {}
    for thr in (0.0, 1.0):
        p = Delimiter(auto_level="off", threshold_db=thr)
        p.prepare(SR, 512, 2)
        outs[thr] = out = _run(p, x, block=512)
        L = p.latency
        assert _sisdr(out[L:], x[:-L]) > 25.0
        assert abs(20 * np.log10(np.abs(out).max() / np.abs(x).max())) < 1.5
    # with the default threshold the model's small estimates leave it bit-exact (at 0 they don't)
    assert np.array_equal(outs[1.0][L:], x[:-L]) and not np.array_equal(outs[0.0][L:], x[:-L])


def test_the_threshold_leaves_light_limiting_alone_and_moves_without_a_step(tmp_path):
    x = 0.5 * _hits(2.0, seed=4)
    y, ref = _limited(x, drive_db=6.0)  # the limiter just touches the loudest hits (0.8 dB of crest)
    L = Delimiter().latency
    outs = {}
    for thr in (0.0, 1.0):
        p = Delimiter(auto_level="off", threshold_db=thr)
        p.prepare(SR, 256, 2)
        outs[thr] = _run(p, y, block=256)[L:]
    assert not np.array_equal(outs[0.0], y[:-L])  # at 0 dB the model's small estimates act
    assert _sisdr(outs[1.0], ref[:-L]) > _sisdr(y[:-L], ref[:-L]) - 0.1
    # a threshold change is smoothed like amount: turned up where the most gain is being restored,
    # the restored gain falls over tens of ms, not in one step (the model without its level
    # offset, so there is gain to take away)
    model = _with_metadata(DEFAULT_MODEL, tmp_path / "raw.onnx", level_offset=0.0)
    y, _ = _limited(_hits(1.0), drive_db=18.0)
    change, outs = None, []
    for _ in range(2):
        p = Delimiter(model_path=model, auto_level="off", threshold_db=0.0)
        p.prepare(SR, 128, 2)
        out, restored = np.empty_like(y), []
        for s in range(0, len(y), 128):
            if s == change:
                p.set_param("threshold_db", 6.0)
            b = y[s:s + 128].copy()
            p.process(b)
            out[s:s + 128] = b
            restored.append(float(p.readings[0]))
        outs.append(out[:, 0])
        change = 128 * int(np.argmax(restored))
    ref, moved = outs
    loud = np.flatnonzero(np.abs(ref) > 0.05)
    lowered = 20 * np.log10(np.abs(moved[loud]) / np.abs(ref[loud]))
    assert max(restored) > 2.0 and lowered.min() < -2.0  # the threshold did take restored gain away
    assert np.abs(np.diff(lowered))[np.diff(loud) == 1].max() < 1.0  # (unsmoothed: 2+ dB in one sample)


def _with_metadata(src, dst, **values):
    onnx = pytest.importorskip("onnx", reason="training extra not installed")
    m = onnx.load(str(src))
    for prop in [q for q in m.metadata_props if q.key in values]:
        m.metadata_props.remove(prop)
    for k, v in values.items():
        prop = m.metadata_props.add()
        prop.key, prop.value = k, str(v)
    onnx.save(m, str(dst))
    return dst


def test_the_models_level_offset_comes_out_of_the_gain_and_bad_values_are_refused(tmp_path):
    y, _ = _limited(_hits(1.0), drive_db=18.0)
    outs = {}
    for off in (0.0, 0.2):
        p = Delimiter(model_path=_with_metadata(DEFAULT_MODEL, tmp_path / f"m{off}.onnx", level_offset=off),
                      auto_level="off", threshold_db=0.0)
        p.prepare(SR, 256, 2)
        outs[off] = _run(p, y, block=256)
    # where the model restores more than the offset the output is exp(-offset) lower; elsewhere untouched
    ratio = np.abs(outs[0.2]) / np.maximum(np.abs(outs[0.0]), 1e-9)
    loud = np.abs(outs[0.0]) > 0.05
    assert np.all(ratio[loud] <= 1.0 + 1e-5) and np.median(ratio[loud]) == pytest.approx(np.exp(-0.2), rel=0.02)
    for bad in ("abc", "nan", "-0.5", "9"):
        with pytest.raises(ModelError, match="level_offset"):
            Delimiter(model_path=_with_metadata(DEFAULT_MODEL, tmp_path / "bad.onnx", level_offset=bad))


@pytest.mark.xfail(strict=True, reason="issue 14 open: the shipped model (2.5 dB threshold) restores 0.3 of "
                   "the 7 dB of crest this loses; the first attempt restored 3 here but made unseen limiters 5 dB "
                   "worse. Strict: a model that passes must take this mark off")
def test_limited_transients_get_their_peaks_back():
    x = _hits(2.0, seed=2)
    y, ref = _limited(x, drive_db=18.0)
    p = Delimiter(auto_level="off")
    p.prepare(SR, 256, 2)
    out = _run(p, y, block=256)[p.latency:]
    y, ref = y[: len(out)], ref[: len(out)]
    # part of the crest factor lost to the limiter comes back, and the waveform gets closer to
    # the original (the shipped model's figures on this signal: the model card, Limits)
    lost = _crest(ref) - _crest(y)
    assert lost > 6.0
    assert _crest(out) - _crest(y) > 0.3 * lost
    assert _sisdr(out, ref) > _sisdr(y, ref) + 0.8


def test_amount_zero_is_the_delayed_input():
    y, _ = _limited(_hits(1.0))
    p = Delimiter(amount=0.0, auto_level="off")
    p.prepare(44100, 300, 2)
    out = _run(p, y, block=300)
    L = p.latency
    assert np.max(np.abs(out[L:] - y[:-L])) < 1e-6 and not out[:L].any()


def test_clipped_music_gets_its_peaks_filled_in_and_the_switch_and_amount_take_it_out():
    t = np.arange(2 * SR) / SR
    x = sum(np.sin(2 * np.pi * f * t + f) / k for k, f in enumerate((55.0, 110.0, 165.0, 277.0, 440.0), 1))
    x = np.stack([x, np.roll(x, 100)], 1)
    x = (x / np.abs(x).max()).astype(np.float32)
    y = np.clip(x, -0.7, 0.7)  # 3 dB into a clipper: pinned runs no smooth gain can undo
    outs, restored = {}, {}
    for name, kw in {"on": {}, "off": {"declip": 0.0}, "amount 0": {"amount": 0.0}}.items():
        p = Delimiter(auto_level="off", **kw)
        p.prepare(SR, 256, 2)
        out = y.copy()
        restored[name] = 0.0
        for i in range(0, len(out), 256):
            p.process(out[i:i + 256])
            restored[name] = max(restored[name], float(p.readings[0]))  # the meter's largest reading
        outs[name] = out[p.latency:]
    n = len(outs["on"])
    gain = _sisdr(outs["on"], x[:n]) - _sisdr(outs["off"], x[:n])
    assert gain > 3.0, gain  # measured 6.8 dB (the de-clipper alone on this signal: 19.9 dB)
    assert restored["on"] > 1.0 and restored["on"] > restored["off"]  # the readout shows the filled peaks
    assert np.array_equal(outs["amount 0"], y[:n])
    # un-clipped music: the de-clipper finds nothing, both settings give the same samples
    same = []
    for kw in ({}, {"declip": 0.0}):
        p = Delimiter(auto_level="off", **kw)
        p.prepare(SR, 256, 2)
        same.append(_run(p, 0.9 * x, block=256))
    assert np.array_equal(same[0], same[1])


def test_mono_equals_stereo_with_equal_channels():
    y, _ = _limited(_hits(1.0))
    m = y[:, :1].copy()
    pm, ps = Delimiter(), Delimiter()
    pm.prepare(SR, 512, 1)
    ps.prepare(SR, 512, 2)
    om = _run(pm, m, block=512)
    os_ = _run(ps, np.repeat(m, 2, 1), block=512)
    assert om.shape == m.shape
    assert np.max(np.abs(om[:, 0] - os_[:, 0])) < 1e-6


def test_auto_level_keeps_peaks_under_the_ceiling_and_reports_the_scale(tmp_path):
    y, _ = _limited(_hits(2.0), drive_db=15.0)
    # the model without its level offset and no threshold: it restores a few dB everywhere
    model = _with_metadata(DEFAULT_MODEL, tmp_path / "raw.onnx", level_offset=0.0)
    p = Delimiter(model_path=model, auto_level="on", ceiling_db=-1.0, threshold_db=0.0)
    p.prepare(SR, 128, 2)
    scale, restored = [], []
    out = np.empty_like(y)
    for s in range(0, len(y), 128):
        b = y[s:s + 128].copy()
        p.process(b)
        out[s:s + 128] = b
        restored.append(float(p.readings[0]))
        scale.append(float(p.readings[1]))
    assert np.abs(out).max() <= 10 ** (-1.0 / 20) + 1e-6
    assert max(restored) > 1.0  # dB of gain put back, reported per block
    assert min(scale) < -1.0  # the restored peaks needed scaling, and the processor says so


def test_nan_and_inf_are_contained_through_the_preset():
    from realtime.dsp.presets import build_chain, load_preset

    chain = build_chain(load_preset("delimit"))
    chain.prepare(SR, 256, 2)
    y, _ = _limited(_hits(1.0))
    y[1000:1100] = np.nan
    y[5000, 1] = np.inf
    out = _run(chain, y, block=256)
    assert np.all(np.isfinite(out)) and np.abs(out).max() <= 10 ** (-0.3 / 20)
    assert chain.slot("delimiter").processor.nonfinite_count == 201  # values (samples x channels)
    # and the stream recovers: the tail is not silent
    assert np.abs(out[-SR // 4:]).max() > 0.05


def test_bad_model_files_and_rates_give_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Delimiter(model_path=tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="corrupt"):
        Delimiter(model_path=bad)
    with pytest.raises(ValueError, match="44.1/48 kHz"):
        Delimiter().prepare(96000, 128, 2)


def test_benchmark_reads_the_applied_gain_curve_back_from_the_audio():
    from bench.delimiter import curve_match

    y, gain = limit(_hits() * 4.0, SR, ceiling_db=-1.0, release_ms=80.0, lookahead_ms=3.0)
    log_gain = np.log(gain)
    full = y * np.exp(-log_gain)[:, None]
    ratio, corr = curve_match(y, 0.5 * full, log_gain, SR)  # exact inversion, any output scale
    assert ratio == pytest.approx(1.0, abs=0.02) and corr > 0.999
    ratio, corr = curve_match(y, y * np.exp(-0.5 * log_gain)[:, None], log_gain, SR)  # half of it
    assert ratio == pytest.approx(0.5, abs=0.02) and corr > 0.999
    ratio, corr = curve_match(y, y * np.exp(np.roll(-log_gain, SR // 4))[:, None], log_gain, SR)
    assert corr < 0.9  # the right amount of movement at the wrong times is not a match
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an excerpt left alone reads as no movement, without numpy's warnings
        ratio, corr = curve_match(y, 0.7 * y, log_gain, SR)
    assert ratio == 0.0 and np.isnan(corr)


def test_model_card_and_metadata_exist():
    card = DEFAULT_MODEL.with_name("MODEL_CARD.md")
    assert card.is_file() and "SI-SDR" in card.read_text()
    assert DEFAULT_MODEL.stat().st_size < 4_000_000


@pytest.mark.slow
def test_training_smoke_exports_a_loadable_model(tmp_path):
    pytest.importorskip("torch", reason="training extra (torch==2.13.0) not installed")
    from models.delimiter.train import main

    out = tmp_path / "smoke.onnx"
    assert main(["--smoke", "--keep-all", "--ckpt", str(tmp_path / "ck"), "--out", str(out)]) == 0
    assert out.is_file() and not (tmp_path / "smoke.onnx.data").exists()
    def not_json(constant):  # Python writes NaN where JSON has none: a reader other than Python refuses it
        raise AssertionError(f"{constant} in the training log")

    log = json.loads((tmp_path / "ck" / "train_log.json").read_text(), parse_constant=not_json)
    assert log["log"] and np.isfinite(log["best"]["sel_score"]) and "sel_worst_db" in log["best"]
    assert (tmp_path / "ck" / "checkpoint.pt").is_file()
    kept = sorted((tmp_path / "ck" / "steps").glob("step*.pt"))  # --keep-all: each scored state
    import onnx

    assert "level_offset" in {p.key for p in onnx.load(str(out)).metadata_props}  # measured during selection
    assert [p.name for p in kept] == ["step%06d.pt" % v["step"] for v in log["log"]]
    y, _ = _limited(_hits(0.5))
    a = Delimiter(model_path=out)
    a.prepare(SR, len(y), 2)
    whole = y.copy()
    a.process(whole)
    b = Delimiter(model_path=out)
    b.prepare(SR, 200, 2)
    assert np.max(np.abs(whole - _run(b, y, rng=np.random.default_rng(1)))) < 1e-5


def test_training_recipe_never_uses_the_benchmarks_tracks_or_limiters():
    """The held-out packages and LV2 limiters of the benchmark, and the project-wide reserved
    material, appear nowhere in what the recipe reads or runs; selection uses its own packages
    and limiters, neither trained on nor benchmarked."""
    import inspect
    from pathlib import Path

    from models.delimiter import data as recipe
    from models.delimiter import limiters, train

    heldout = set(recipe.HELDOUT_PACKAGES)
    used = set(recipe.PACKAGES) | set(recipe.VAL_PACKAGES) | set(recipe.MIDI_PACKAGES)
    assert len(heldout) >= 2 and len(recipe.HELDOUT_LIMITERS) >= 2
    assert not used & heldout and not set(recipe.PACKAGES) & set(recipe.VAL_PACKAGES)
    for pkg in used:
        assert not any(pkg.startswith(r.split()[0].rstrip("*")) for r in recipe.RESERVED_PACKAGES), pkg
    assert "x42" not in inspect.getsource(limiters) and "x42" not in inspect.getsource(recipe)
    # >= 5 training implementations; selection and benchmark limiters are disjoint from them
    assert len(recipe.TRAIN_LIMITERS) >= 5
    assert not set(limiters.TRAIN_KINDS) & set(limiters.VAL_KINDS)
    train_code = "".join(inspect.getsource(f) for f in limiters.TRAIN_KINDS.values())
    train_code += inspect.getsource(recipe.Examples) + inspect.getsource(train)
    for uri in (*recipe.HELDOUT_LIMITERS.values(), limiters.CALF_URI, limiters.ZAM_URI):
        assert uri not in train_code
    assert not any(w in train_code for w in ("swh", "mda", "calf", "zam", "Calf", "ZaMaxim"))
    # whatever is installed here: no indexed track lies in a held-out package's folder
    heldout_dirs = [Path(d) for d in recipe.HELDOUT_PACKAGES.values()]
    for pkg in recipe.PACKAGES + recipe.VAL_PACKAGES:
        for f in recipe._files_of(pkg):
            assert not any(h in Path(f).parents for h in heldout_dirs), f


def test_benchmark_oracle_divides_the_true_gain_out_exactly():
    from bench.delimiter import divide_out, oracle_gain, si_sdr, smooth

    x = _hits() * 4.0
    y, gain = limit(x, SR, ceiling_db=-1.0, release_ms=80.0, lookahead_ms=0.0)
    ref = x.astype(np.float32)
    g = oracle_gain(y, ref, SR)
    assert np.allclose(g, gain[:, None], atol=1e-4, rtol=1e-3)  # the limiter's own curve, read back
    assert si_sdr(divide_out(y, g), ref) > 60.0
    s5, s100 = (si_sdr(divide_out(y, smooth(g, ms, SR)), ref) for ms in (5.0, 100.0))
    assert si_sdr(y, ref) < s100 < s5  # smoothing costs, and still beats doing nothing


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_zoo_limiter_passes_quiet_audio_and_holds_its_ceiling(shape):
    from models.delimiter import limiters

    rng = np.random.default_rng(3)
    x = 0.3 * _hits(1.0, sr=44100)
    quiet, _ = limiters.zoo(x, 44100, rng, ceiling_db=0.0, lookahead_ms=5.0, shape=shape, knee_db=0.0,
                            soft_clip=False, truepeak=False)
    assert np.max(np.abs(quiet - x)) < 1e-6  # aligned, untouched below the threshold
    loud, _ = limiters.zoo(4.0 * x, 44100, rng, ceiling_db=-1.0, lookahead_ms=5.0, shape=shape, knee_db=3.0,
                           soft_clip=False)
    assert np.abs(loud).max() <= 10 ** (-1.0 / 20) + 1e-6
    g = (loud * 4.0 * x).sum(1) / np.maximum((4.0 * x * 4.0 * x).sum(1), 1e-12)
    assert 0.2 < np.median(g[np.abs(x).max(1) > 0.05]) <= 1.0 + 1e-6  # a gain, not a distortion


def test_training_limiters_return_audio_aligned_with_their_input():
    """Every implementation this machine has: output lined up with the input (lag 0), as the
    gain targets and the SI-SDR loss assume; LV2 latency is measured, not taken from the port.
    In a child process: some LV2 plugins switch the FPU to flush-to-zero for the whole process,
    which later tests (hypothesis's subnormal floats) refuse to run under."""
    import subprocess
    import sys

    code = """
import json, numpy as np
from models.delimiter import limiters
from tests.test_delimiter import _hits
kinds = {**limiters.available(limiters.TRAIN_KINDS), **limiters.available(limiters.VAL_KINDS)}
x = (2.0 * _hits(1.0, sr=44100)).astype(np.float32)


def lag(y):  # index of the best alignment: 0 = aligned, 1..63 = late, 64..126 = early
    c = [float(np.dot(x[: len(x) - k, 0], y[k:, 0])) for k in range(0, 64)]
    c += [float(np.dot(y[: len(y) - k, 0], x[k:, 0])) for k in range(1, 64)]
    return int(np.argmax(c))


lags = {}
for name, fn in kinds.items():
    y, _ = fn(x, 44100, np.random.default_rng(1))
    assert y.shape == x.shape, name
    lags[name] = lag(y)
try:  # a plugin with a real delay (5 ms lookahead): the measured latency must take it out
    limiters._param_names(limiters.BENCH_LV2["swh-fast-lookahead"])
except Exception:
    pass
else:
    lim = limiters.Lv2Limiter(limiters.BENCH_LV2["swh-fast-lookahead"], {}, 44100)
    lags["swh-fast-lookahead"] = lag(lim(x))
    lags["swh-fast-lookahead latency"] = lim.latency
print(json.dumps(lags))
"""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lags = json.loads(r.stdout.strip().splitlines()[-1])
    assert "zoo" in lags and "clip_limit" in lags
    if "swh-fast-lookahead latency" in lags:  # 5 ms at 44.1 kHz, give or take the plugin's rounding
        assert 200 <= lags.pop("swh-fast-lookahead latency") <= 240, lags
    assert all(lag == 0 for lag in lags.values()), lags


def test_wave_threshold_hears_the_curve_as_the_processor_plays_it():
    """--wave-threshold: the offset follows the network's estimate on un-limited examples (gain
    target exactly 0), estimates under offset + threshold play as unity and cost the waveform term
    nothing, those above it are applied less the offset and threshold."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train
    from models.delimiter.tcn import DelimiterTCN

    thr = 1.5 / train.DB_PER_NEPER
    play = train.PlayedCurve(1.5, momentum=0.5)
    a = torch.tensor([[0.2, 0.2, 0.2], [0.1, 0.6, 0.3]])
    G = torch.tensor([[0.0, 0.0, 0.0], [-0.1, float("nan"), -0.5]])  # an un-limited row, a limited one
    out = play(a, G)
    assert play.offset == pytest.approx(0.2)  # the un-limited row's mean; the limited row does not count
    want = (a - 0.2 - thr).clamp(min=0.0)
    assert torch.allclose(out, want) and out[0].abs().max() == 0 and out[1, 1] > 0
    play(torch.full((1, 3), 0.4), torch.zeros(1, 3))  # a running mean: half way towards 0.4
    assert play.offset == pytest.approx(0.3)
    play(a, G[1:].expand(2, 3))  # no un-limited example in the batch: the offset stays
    assert play.offset == pytest.approx(0.3)

    torch.manual_seed(0)
    net = DelimiterTCN()
    Y = 0.3 * torch.randn(2, 64 * train.HOP, 2)
    G = torch.zeros(2, Y.shape[1])  # un-limited: every estimate of a fresh network is sub-threshold noise
    _, wl = train.losses(net, Y, Y, G, "shape", played=train.PlayedCurve(6.0))
    wl.backward()
    assert float(wl) == pytest.approx(-40.0)  # the input plays bit-exact: SI-SDR at its cap
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in net.parameters())


def test_false_restoration_counts_only_gain_played_where_the_limiter_took_less_than_the_threshold():
    """--false-weight: the played curve is paid for where the true gain reduction is under the
    threshold (a wrong restoration the waveform term's SI-SDR cap hides) and nowhere else; unknown
    gain (NaN) does not count. It pulls the network's estimate down there (a gradient that is not
    zero), and the trainer refuses it without --wave-threshold."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train

    thr = 1.5 / train.DB_PER_NEPER
    play = train.PlayedCurve(1.5, momentum=0.5)
    a = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.1, 0.1 + thr + 0.4, 0.1 + thr + 0.2, 0.1 + thr + 0.3]],
                     requires_grad=True)
    # row 0 un-limited (sets the offset 0); row 1: limited by 0.05 (under), NaN, 1.0 and 0.1 nepers
    G = torch.tensor([[0.0, 0.0, 0.0, 0.0], [-0.05, float("nan"), -1.0, -0.1]])
    play(a, G)
    fl = play.false_restoration(G)
    # six samples under the threshold: row 0's four and row 1's first (all played 0) and last (played 0.4)
    assert float(fl) == pytest.approx(0.4 / 6, abs=1e-6)
    fl.backward()
    assert float(a.grad[1, 3]) > 0 and float(a.grad[1, 2]) == 0.0 and float(a.grad[1, 1]) == 0.0
    with pytest.raises(SystemExit, match="--false-weight needs --wave-threshold"):
        train.main(["--false-weight", "1", "--steps", "1"])


def test_context_is_heard_but_not_scored():
    """--context: the network hears the first samples (its past is warm there, as in a stream), the
    losses score only what follows. An error confined to the context costs nothing; the same error
    after it does; the played curve the false-restoration term reads is the scored part; a negative
    or absurd --context is refused."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train
    from models.delimiter.tcn import DelimiterTCN

    torch.manual_seed(0)
    net = DelimiterTCN(ch=8, layers=3)
    ctx, n = 16 * train.HOP, 48 * train.HOP
    Y = 0.3 * torch.randn(2, n, 2)
    a = train.restore(net, Y)[0].detach()
    G = -a.clone()  # the network's own curve: a perfect estimate
    G[:, :ctx] += 0.5  # wrong only in the context
    gl, wl = train.losses(net, Y, Y * torch.exp(-G[:, :, None]), G, "l1", context=ctx)
    assert float(gl) < 1e-5 and float(wl) < -39.0
    gl_all, _ = train.losses(net, Y, Y, G, "l1")
    assert float(gl_all) > 0.1
    G2 = -a.clone()
    G2[:, ctx:] += 0.5
    assert float(train.losses(net, Y, Y, G2, "l1", context=ctx)[0]) == pytest.approx(0.5, abs=1e-4)
    play = train.PlayedCurve(1.5)
    train.losses(net, Y, Y, torch.zeros(2, n), "shape", played=play, context=ctx)
    assert play.last.shape == (2, n - ctx)
    for bad in ("-1", "100"):
        with pytest.raises(SystemExit, match="--context"):
            train.main(["--context", bad, "--steps", "1"])


def test_shape_gain_loss_ignores_the_excerpts_offset_and_widened_lookahead_keeps_the_function():
    """--gain-loss shape: a curve right up to a constant costs only the light offset term, a flat
    curve costs its missing movement; --init of a causal checkpoint into --lookahead N starts the
    non-causal network as the same function (after the GRU's first frames)."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train
    from models.delimiter.model import HOP
    from models.delimiter.model import Delimiter as Net

    torch.manual_seed(0)
    net = Net()
    Y = 0.3 * torch.randn(2, 40 * HOP, 2)
    a, _ = train.restore(net, Y)
    a = a.detach()
    for shift, want in ((0.0, 0.0), (0.5, train.SHAPE_OFFSET_WEIGHT * 0.5)):
        G = -(a + shift)  # the target log gain a prediction `a` misses by a constant `shift`
        gl, _ = train.losses(net, Y, Y, G, "shape")
        assert abs(float(gl) - want) < 1e-4, shift
    G = -(a + 0.3 * torch.sin(torch.arange(a.shape[1]) / 500.0))
    assert float(train.losses(net, Y, Y, G, "shape")[0]) > 0.1

    wide = Net(lookahead_frames=8)
    wide.load_state_dict(train.widen_lookahead(net.state_dict(), wide))
    Y = 0.3 * torch.randn(2, 120 * HOP, 2)
    d = (train.restore(net, Y)[0] - train.restore(wide, Y)[0]).abs().reshape(2, -1, HOP).amax((0, 2))
    assert float(d[30:].max()) < 1e-2 * max(1.0, float(train.restore(net, Y)[0].abs().max()))
    with pytest.raises(SystemExit):
        train.widen_lookahead(wide.state_dict(), Net())


def test_probe_features_see_no_further_than_the_products_lookahead():
    """The causal view of models/delimiter/probe.py: changing audio more than LOOKAHEAD samples
    after a frame's centre leaves that frame's features alone; the non-causal view sees it."""
    from models.delimiter import probe

    rng = np.random.default_rng(0)
    y = (0.3 * rng.standard_normal((44100, 2))).astype(np.float32)
    f0, c = probe.features(y, 44100)
    cut = 20000
    y2 = y.copy()
    y2[cut + probe.LOOKAHEAD + 1:] *= 3.0
    f1, _ = probe.features(y2, 44100)
    before = c <= cut
    assert np.array_equal(f0[before], f1[before])
    assert not np.array_equal(f0[~before], f1[~before])
    n0, _ = probe.features(y, 44100, noncausal=True)
    n1, _ = probe.features(y2, 44100, noncausal=True)
    assert not np.array_equal(n0[before], n1[before])


def test_probe_selection_refuses_what_it_cannot_honour():
    """--selection scores networks on the selection set's own music and limiters: without --fit, or
    with training limiters named, it says so in one line before touching any data."""
    from models.delimiter import probe

    for argv in (["--selection"], ["--fit", "x.pt", "--selection", "--limiters", "zoo"],
                 ["--fit", "x.pt", "--selection", "--zoo-pin", "release_ms=50"]):
        with pytest.raises(SystemExit) as e:
            probe.main(argv)
        assert "--selection" in str(e.value) and "\n" not in str(e.value)


def _assert_onnx_streams_like(net, onnx_path):
    """The processor streaming ``onnx_path`` (256-sample blocks, threshold 0) gives what the torch
    network's gain does to the same limited hits, less the export's level offset."""
    import torch

    from models.delimiter import train
    from models.delimiter.model import HOP

    y, _ = _limited(_hits(1.0, sr=44100), sr=44100)
    y = y[: len(y) // HOP * HOP]
    p = Delimiter(model_path=onnx_path, auto_level="off", threshold_db=0.0)
    p.prepare(44100, 256, 2)
    got = _run(p, np.concatenate([y, np.zeros((p.latency + 256, 2), np.float32)]), block=256)[p.latency:][: len(y)]
    net.clamp_output = True
    with torch.no_grad():
        a = train.restore(net, torch.from_numpy(y)[None])[0][0].numpy()
    want = y * np.exp(np.maximum(a - p.level_offset, 0.0))[:, None]  # the processor takes the offset out
    assert np.max(np.abs(got - want)) < 1e-3 * np.abs(want).max()


def _export_stream_and_train_on(net, tmp_path):
    """Weights of ``net`` saved as a checkpoint -> `--export-only` ONNX that streams like ``net``;
    then a smoke run `--init` from them: (state, meta) of the checkpoint it writes."""
    from models.delimiter import train

    ck = tmp_path / "net.pt"
    train.save_small(net, ck, {"step": 1})
    out = tmp_path / "net.onnx"
    assert train.main(["--export-only", "--init", str(ck), "--out", str(out)]) == 0
    _assert_onnx_streams_like(net, out)
    assert train.main(["--smoke", "--init", str(ck), "--ckpt", str(tmp_path / "on")]) == 0
    return train.load_weights(tmp_path / "on" / "checkpoint.pt")


@pytest.mark.parametrize("name", ["checkpoint.pt", "gru_checkpoint.pt", "tcn_checkpoint.pt", "curriculum_checkpoint.pt"])
def test_committed_checkpoint_exports_and_streams_like_torch(tmp_path, name):
    """`train delimiter --export-only --init models/delimiter/<name> --out F`: the committed weights
    (the shipped network's; the GRU shipped until the twenty-eighth session; the convolutional runs',
    to continue from) become an ONNX file the processor
    streams; its output equals the torch network's."""
    pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train

    ck = train.COMMITTED_CKPT.parent / name
    out = tmp_path / "ck.onnx"
    assert train.main(["--export-only", "--init", str(ck), "--out", str(out)]) == 0
    state, meta = train.load_weights(ck)
    net = train.model_for(state, meta)
    net.load_state_dict(state)
    _assert_onnx_streams_like(net, out)
    with pytest.raises(SystemExit):
        train.main(["--export-only", "--out", str(out)])


def test_conv_front_starts_as_the_linear_network_and_streams_like_torch(tmp_path):
    """--front conv --init <linear checkpoint>: the same function at the start; once its detector
    weighs in (here: random embedding columns) the exported ONNX still streams like the torch net,
    and --init of the conv checkpoint trains on as a conv network without --front conv."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train
    from models.delimiter.model import HOP
    from models.delimiter.model import Delimiter as Net

    torch.manual_seed(0)
    lin = Net()
    lin.load_state_dict(torch.load(GRU_CKPT)["model"])
    conv = Net(front="conv")
    conv.load_state_dict(train.add_conv_front(lin.state_dict(), conv))
    y, _ = _limited(_hits(1.0, sr=44100), sr=44100)
    Y = torch.from_numpy(y[: len(y) // HOP * HOP])[None]
    with torch.no_grad():
        assert torch.allclose(train.restore(lin, Y)[0], train.restore(conv, Y)[0], atol=1e-5)
        conv.embed[0].weight[:, :48] += 0.05 * torch.randn(conv.embed[0].weight.shape[0], 48)
        changed = train.restore(conv, Y)[0]
    assert float((changed - train.restore(lin, Y)[0].detach()).abs().max()) > 1e-3  # the detector is wired in
    assert train.front_of(_export_stream_and_train_on(conv, tmp_path)[0]) == "conv"


@pytest.mark.parametrize("bands", [0, 12])
def test_tcn_streams_like_torch_whatever_the_call_size_and_trains_on_from_its_checkpoint(tmp_path, bands):
    """--arch tcn: the causal dilated-convolution network (models/delimiter/tcn.py) run frame by
    frame equals the whole excerpt at once (its per-layer histories, and with band levels the last
    samples of the band analysis window, are the whole state), the exported ONNX streams like the
    torch net through the processor (4 knots a frame), and --init of its checkpoint trains on as a
    TCN with its look-ahead and bands."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train
    from models.delimiter.model import HOP
    from models.delimiter.tcn import DelimiterTCN

    torch.manual_seed(0)
    net = DelimiterTCN(ch=16, layers=6, bands=bands)
    with torch.no_grad():
        net.out.bias += 0.3  # a gain the threshold-0 processor applies (trained nets sit near 0 on this)
    y, _ = _limited(_hits(1.0, sr=44100), sr=44100)
    frames = torch.from_numpy(y[: len(y) // HOP * HOP]).reshape(1, -1, HOP, 2)
    with torch.no_grad():
        whole = net(frames, *net.initial_state(1))[0]
        state, parts, t = net.initial_state(1), [], 0
        for n in (1, 3, 2, 7, frames.shape[1]):  # uneven calls, as the processor makes them
            out = net(frames[:, t:t + n], *state)
            parts.append(out[0])
            state, t = out[1:], t + n
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-5)
    assert float(whole.std()) > 1e-3  # the curve moves: the comparison means something
    state, meta = _export_stream_and_train_on(net, tmp_path)
    assert train.arch_of(state) == "tcn" and meta["lookahead"] == net.lookahead
    assert train.model_for(state, meta).dilations == net.dilations and train.model_for(state, meta).bands == bands
    torch.save({"model": net.state_dict(), "step": 3, "lookahead": 32}, tmp_path / "last.pt")  # a run's own
    assert train.model_for(*train.load_weights(tmp_path / "last.pt")).lookahead == 32


def test_band_inputs_added_to_a_tcn_start_as_the_same_function(tmp_path):
    """--init of a band-less TCN with --tcn-bands: the new inputs start at zero weight, so the
    network computes what it did; the band levels are wired in (weights on them move the curve)."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train
    from models.delimiter.model import HOP
    from models.delimiter.tcn import DelimiterTCN

    torch.manual_seed(1)
    net = DelimiterTCN(ch=16, layers=6)
    wide = train.model_for(train.add_band_inputs(net.state_dict(), 12))
    wide.load_state_dict(train.add_band_inputs(net.state_dict(), 12))
    assert wide.bands == 12
    y, _ = _limited(_hits(1.0, sr=44100), sr=44100)
    frames = torch.from_numpy(y[: len(y) // HOP * HOP]).reshape(1, -1, HOP, 2)
    with torch.no_grad():
        before = net(frames, *net.initial_state(1))[0]
        assert torch.allclose(wide(frames, *wide.initial_state(1))[0], before, atol=1e-6)
        wide.inp.weight[:, -12:] += 0.1
        assert float((wide(frames, *wide.initial_state(1))[0] - before).abs().max()) > 1e-3
    with pytest.raises(SystemExit) as e:  # the GRU has no band inputs: one line, nothing built
        train.main(["--tcn-bands", "12", "--ckpt", str(tmp_path / "run")])
    assert "--tcn-bands" in str(e.value) and "\n" not in str(e.value) and not (tmp_path / "run").exists()
    train.save_small(DelimiterTCN(ch=8, layers=3, bands=8), tmp_path / "b8.pt", {"step": 1})
    with pytest.raises(SystemExit) as e:  # other bands than the weights have: refused, not reshaped
        train.main(["--smoke", "--tcn-bands", "12", "--init", str(tmp_path / "b8.pt"), "--ckpt", str(tmp_path / "b")])
    assert "8 bands already" in str(e.value) and "\n" not in str(e.value)


def test_trainer_refuses_a_broken_checkpoint_in_one_line(tmp_path):
    pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for argv in (["--export-only", "--init", str(bad), "--out", str(tmp_path / "x.onnx")],
                 ["--export-only", "--init", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.onnx")]):
        with pytest.raises(SystemExit) as e:
            train.main(argv)
        assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.glob("x.onnx*"))


def test_zoo_pin_fixes_the_limiters_setting_and_refuses_unknown_keys():
    """--zoo-pin (a curriculum's first stage) pins what it names and leaves the rest random."""
    from models.delimiter import limiters

    pin = limiters.parse_zoo_pin("lookahead_ms=5, shape=0,link=1,soft_clip=false,release_ms=100")
    assert pin == {"lookahead_ms": 5.0, "shape": 0, "link": True, "soft_clip": False, "release_ms": 100.0}
    fn = limiters.training_kinds("zoo", pin)["zoo"]
    x = 2.0 * _hits(0.5, sr=44100)
    settings = [fn(x, 44100, np.random.default_rng(s))[1] for s in range(4)]
    assert all({k: st[k] for k in pin} == pin for st in settings)
    assert len({st["ceiling_db"] for st in settings}) == 4  # what is not pinned still varies
    ranged = limiters.parse_zoo_pin("release_ms=20:500,lookahead_ms=2:8,link=1")  # a later stage: ranges
    assert ranged == {"release_ms": (20.0, 500.0), "lookahead_ms": (2.0, 8.0), "link": True}
    fn = limiters.training_kinds("zoo", ranged)["zoo"]
    settings = [fn(x, 44100, np.random.default_rng(s))[1] for s in range(6)]
    assert all(20.0 <= st["release_ms"] <= 500.0 and 2.0 <= st["lookahead_ms"] <= 8.0 and st["link"] for st in settings)
    assert len({st["release_ms"] for st in settings}) == 6  # drawn per example within the range
    for bad in ("lookahead=5", "shape=", "release_ms=fast", "release_ms=500:20", "release_ms=0:20", "shape=0:2"):
        with pytest.raises(SystemExit) as e:
            limiters.parse_zoo_pin(bad)
        assert "--zoo-pin" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:  # a misspelt name fails at once, not inside a loader worker
        limiters.training_kinds("zoo,pedalbord")
    assert "pedalbord" in str(e.value) and "\n" not in str(e.value)


def test_export_measures_the_level_offset_on_unlimited_music_and_the_processor_removes_it(tmp_path):
    """The committed GRU predicts ~2.5 dB of gain on music no limiter touched; the export
    measures that on the selection set's un-limited tracks and the processor takes it out."""
    pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train

    sel_x = np.stack([_hits(2.0, seed=s) * g for s in (5, 6) for g in (1.0, 1.0)])  # pairs, as the set has
    np.save(tmp_path / "sel_x.npy", sel_x)
    plain, calibrated = tmp_path / "plain.onnx", tmp_path / "cal.onnx"
    train.export_weights(GRU_CKPT, plain)  # no data: no offset
    train.export_weights(GRU_CKPT, calibrated, data=tmp_path)
    x = 0.25 * _hits(2.0, seed=1)
    level = {}
    for f in (plain, calibrated):
        p = Delimiter(model_path=f, auto_level="off", threshold_db=0.0)
        p.prepare(SR, 512, 2)
        out = _run(p, x, block=512)[p.latency:]
        level[f] = 20 * np.log10(np.sqrt(np.mean(out ** 2) / np.mean(x[:-p.latency] ** 2)))
        offset = p.level_offset
    assert 0.1 < offset < 1.0  # nepers
    assert level[plain] > 1.5 and abs(level[calibrated]) < 0.5


def test_selection_score_breaks_down_by_how_hard_a_segment_was_limited():
    """validate() reports the mean gain per band of input SI-SDR and the worst segment: a network
    that applies one constant gain changes nothing (SI-SDR ignores scale), one whose curve wobbles
    costs the lightly limited segments far more than the heavily limited ones."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train
    from models.delimiter.model import HOP

    class Toy(torch.nn.Module):  # the network contract: frames in, knots out, explicit (here no) state
        lookahead, clamp_output = 0, False

        def __init__(self, wobble):
            super().__init__()
            self.w, self.wobble = torch.nn.Parameter(torch.zeros(1)), wobble

        def initial_state(self, batch):
            return ()

        def forward(self, frames):
            t = torch.arange(frames.shape[1] * 4, dtype=torch.float32).reshape(1, -1, 4)
            return (0.3 + self.wobble * torch.sin(t / 7.0) + 0 * self.w).expand(frames.shape[0], -1, -1),

    n = 60 * HOP
    x = 0.5 * _hits(n / SR, seed=3)[:n].astype(np.float32)
    env = np.abs(x).max(1)
    sel_x, sel_y, meta = [], [], []
    for depth in (0.8, 0.8, 0.05, 0.05):  # two heavily, two lightly limited segments
        g = 1.0 - depth * env / env.max()
        sel_x.append(x)
        sel_y.append(x * g[:, None].astype(np.float32))
        meta.append({"limiter": "toy"})
    sel_y, sel_x = np.stack(sel_y), np.stack(sel_x)
    sin = [train.si_sdr(y, r) for y, r in zip(sel_y, sel_x)]
    assert sin[0] < 15 and 30 <= sin[2] < train.UNTOUCHED_DB
    flat = train.validate(Toy(0.0), sel_y, sel_x, meta, threshold_db=None)
    assert max(abs(flat[k]) for k in ("sel_heavy_db", "sel_light_db", "sel_worst_db")) < 0.05  # float rounding
    wob = train.validate(Toy(0.05), sel_y, sel_x, meta, threshold_db=None)  # the raw curve: 0.4 dB of wobble
    assert wob["sel_light_db"] < wob["sel_heavy_db"] - 5 and wob["sel_worst_db"] == pytest.approx(wob["sel_light_db"], abs=0.5)
    assert "sel_medium_db" not in wob and wob["sel_toy_db"] == pytest.approx(
        (wob["sel_light_db"] + wob["sel_heavy_db"]) / 2, abs=1e-6)
    # as the processor applies it (offset out, 1 dB threshold): that wobble leaves the audio alone,
    # a 4 dB one still costs
    product = train.validate(Toy(0.05), sel_y, sel_x, meta)
    assert max(abs(product[k]) for k in ("sel_score", "sel_heavy_db", "sel_light_db")) < 1e-6
    assert product["level_offset"] == pytest.approx(0.3, abs=0.01)  # handed to the export of that state
    big = train.validate(Toy(0.5), sel_y, sel_x, meta)
    assert big["sel_light_db"] < -5 and big["sel_worst_db"] < -5


def test_target_lufs_sets_how_hard_training_examples_are_limited(tmp_path):
    """--target-lufs LO,HI: examples driven towards a lower loudness come out quieter and less
    limited (higher SI-SDR against their reference); a malformed range is refused in one line."""
    pytest.importorskip("torch", reason="training extra not installed")
    import argparse

    from models.delimiter import data as recipe
    from models.delimiter import limiters, train

    tracks = recipe.synthetic_tracks(tmp_path)
    kinds = {"zoo": limiters.zoo}
    loud, sdr = {}, {}
    for targets in ((-16.0, -15.0), (-6.0, -5.0)):
        ex = recipe.Examples(tracks, 44100, kinds, {"zoo": 1.0}, targets=targets)
        rng = np.random.default_rng(4)
        got = [ex.next(rng) for _ in range(12)]
        got = [(y, ref, info) for y, ref, _, info in got if info["limiter"] != "none"]
        loud[targets] = np.median([recipe.fast_lufs(y, info["sr"]) for y, _, info in got])
        sdr[targets] = np.median([train.si_sdr(y, ref) for y, ref, _ in got])
    assert loud[(-16.0, -15.0)] < loud[(-6.0, -5.0)] - 4 and sdr[(-16.0, -15.0)] > sdr[(-6.0, -5.0)] + 3
    assert train.lufs_range("-16,-5") == (-16.0, -5.0)
    for bad in ("-5,-16", "-16", "loud,-5", "-50,-5"):
        with pytest.raises(argparse.ArgumentTypeError) as e:
            train.lufs_range(bad)
        assert "\n" not in str(e.value)


def test_training_restores_the_declipped_input_and_leaves_what_the_declipper_filled(tmp_path):
    """With the processor's de-clipper in the recipe (train.py --declip): a clipper's example
    carries its de-clipped input, which differs from the input only where a run was pinned, and its
    gain target is measured on it (closer to no gain than on the clipped input); un-clipped
    examples carry their input unchanged; the loss and the selection multiply the de-clipped input."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import data as recipe
    from models.delimiter import limiters, train
    from models.delimiter.model import HOP
    from models.delimiter.model import Delimiter as Net

    tracks = recipe.synthetic_tracks(tmp_path)
    ex = recipe.Examples(tracks, 44100, {"clipper": limiters.clipper}, {"clipper": 1.0}, declip_delay=256)
    plain = recipe.Examples(tracks, 44100, {"clipper": limiters.clipper}, {"clipper": 1.0})
    filled = 0
    for seed in range(8):
        y, ref, g, info = ex.next(np.random.default_rng(seed))
        y0, _, g0, _ = plain.next(np.random.default_rng(seed))
        d = info["declipped"]
        assert d.shape == y.shape and np.array_equal(y, y0)  # the same example, de-clipped on the side
        if info["limiter"] == "none" or not info["hard"]:
            assert np.array_equal(d, y)
            continue
        changed = d != y
        if changed.any():
            filled += 1
            assert np.all(np.abs(y[changed]) >= np.abs(y).max() * 0.999)  # only pinned samples move
            assert np.all(np.abs(d[changed]) > np.abs(y[changed]))
            known = np.isfinite(g) & np.isfinite(g0)
            assert np.abs(g[known]).mean() < np.abs(g0[known]).mean()  # less left for the gain
    assert filled >= 2
    net = Net()
    Y = 0.3 * torch.randn(2, 20 * HOP, 2)
    D = 1.5 * Y
    a, xh = train.restore(net, Y, D)
    assert torch.allclose(a, train.restore(net, Y)[0]) and torch.allclose(xh, D * torch.exp(a).unsqueeze(-1))
    # the selection scores what multiplies: a perfect de-clip with no gain scores the reference's 60 dB
    sel_x = (0.5 * _hits(1.0, seed=1)[SR // 5:SR // 5 + 20 * HOP]).astype(np.float32)[None]  # a hit
    sel_y = np.clip(sel_x, -0.2, 0.2)
    meta = [{"limiter": "toy"}]
    as_came = train.validate(net, sel_y, sel_x, meta, threshold_db=6.0)
    declipped = train.validate(net, sel_y, sel_x, meta, threshold_db=6.0, sel_d=sel_x)
    assert declipped["sel_sisdr_gain_db"] > as_came["sel_sisdr_gain_db"] + 10


def test_steady_tones_are_among_the_unlimited_examples(tmp_path):
    """A share of the un-limited examples are steady tones (a loud sine looks like a hard-limited
    master): input and reference alike, no gain to restore, at the drawn peak; the tone generator
    gives stereo at peak 1, half of it with a slow tremolo of at most 3 dB."""
    from models.delimiter import data as recipe
    from models.delimiter import limiters

    tracks = recipe.synthetic_tracks(tmp_path)
    ex = recipe.Examples(tracks, 44100, {"zoo": limiters.zoo}, {"zoo": 1.0})
    rng = np.random.default_rng(11)
    steady = [e for e in (ex.next(rng) for _ in range(300)) if e[3].get("steady")]
    assert 2 <= len(steady) <= 30  # ~ CLEAN_SHARE * STEADY_SHARE of 300
    for y, ref, g, info in steady:
        assert np.array_equal(y, ref) and not g.any()
        assert 20 * np.log10(np.abs(y).max()) == pytest.approx(info["peak_db"], abs=0.5)
    sr = 44100
    for seed in range(6):
        x = recipe.steady_tone(np.random.default_rng(seed), 2 * sr, sr)
        assert x.shape == (2 * sr, 2) and np.abs(x).max() == pytest.approx(1.0)
        assert np.all(np.abs(x[:, 1]) <= np.abs(x[:, 0]) + 1e-6)


@pytest.mark.parametrize("sr", [44100, 48000])
def test_steady_tones_pass_the_shipped_model_unchanged(sr):
    """A loud sine has the crest factor of a hard-limited master: the shipped model must still
    leave test tones as they are (networks trained on music alone raised them by 2-8 dB)."""
    t = np.arange(2 * sr) / sr
    for amp_db in (-6.0, -1.0):
        for f in (40.0, 200.0, 1000.0, 2000.0):
            x = (10 ** (amp_db / 20) * np.sin(2 * np.pi * f * t)).astype(np.float32)
            x = np.stack([x, x], 1)
            p = Delimiter(auto_level="off")
            p.prepare(sr, 128, 2)
            out = _run(p, x, block=128)
            L = p.latency
            assert np.array_equal(out[L + sr // 2:], x[sr // 2:len(x) - L]), (amp_db, f)


def test_score_prints_each_state_at_each_threshold(tmp_path, capsys):
    """`train delimiter --score STATES --thresholds …`: the selection records a state and its
    threshold are picked from, one JSON line per (state, threshold); no selection set is one line."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    import json

    from models.delimiter import train
    from models.delimiter.tcn import DelimiterTCN

    torch.manual_seed(0)
    weights = tmp_path / "state.pt"
    train.save_small(DelimiterTCN(), weights, {"step": 1})
    x = (0.5 * _hits(1.0, seed=1)[: 40 * train.HOP]).astype(np.float32)
    sel_x = np.stack([x, x])
    sel_y = np.stack([x, np.clip(x, -0.2, 0.2)])  # un-limited, clipped
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "sel_x.npy", sel_x)
    np.save(data / "sel_y.npy", sel_y)
    (data / "sel_meta.json").write_text(json.dumps([{"limiter": "none"}, {"limiter": "toy"}]))
    assert train.main(["--score", str(weights), "--data", str(data), "--thresholds", "1,6", "--device", "cpu"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["state"], r["threshold_db"]) for r in recs] == [(str(weights), 1.0), (str(weights), 6.0)]
    assert all({"sel_score", "sel_worst_db", "level_offset"} <= set(r) for r in recs)
    assert recs[1]["sel_untouched_sisdr_db"] == 60.0  # at 6 dB the un-limited excerpt passes untouched
    with pytest.raises(SystemExit, match="no selection set"):
        train.main(["--score", str(weights), "--data", str(tmp_path), "--device", "cpu"])


@pytest.mark.parametrize("kind,values", [
    ("lsp", {"th": 0.9, "mode": 0.0, "ovs": 1.0, "lk": 5.0, "at": 1.0, "rt": 20.0, "boost": 0.0, "alr": 0.0,
             "slink": 100.0}),
    ("calf", {"limit": 0.9, "attack": 5.0, "release": 50.0, "asc": 0.0, "auto_level": 0.0, "oversampling": 2.0}),
])
def test_an_oversampling_lv2_limiter_is_aligned_to_its_input_to_a_part_of_a_sample(kind, values):
    """LSP's and Calf's oversampling delay by whole samples and a part of one; aligned by the whole
    samples only, quiet music through them (no gain reduction at all) left -3 to -5 dB of residual
    against its input, where a gain fit needs -60: the training pair's target gain was wrong. Aligned
    to the fraction it is the filters' colouring that is left (-20 dB and less)."""
    from scipy.signal import butter, sosfiltfilt

    from models.delimiter import limiters

    uri = limiters.LSP_URI if kind == "lsp" else limiters.CALF_URI
    try:
        limiters._param_names(uri)
    except Exception:
        pytest.skip(f"{uri} not installed")
    sr = 44100
    x = 0.001 * np.random.default_rng(0).standard_normal((sr, 2))
    x = sosfiltfilt(butter(8, 15000, fs=sr, output="sos"), x, axis=0).astype(np.float32)  # music's band
    lim = limiters.Lv2Limiter(uri, values, sr)
    y = lim(x)
    assert y.shape == x.shape and lim.latency != int(lim.latency)
    a, b = y[5000:40000, 0].astype(np.float64), x[5000:40000, 0].astype(np.float64)
    residual_db = 10 * np.log10(((a - (a @ b / (b @ b)) * b) ** 2).sum() / (a ** 2).sum())
    assert residual_db < -18.0, residual_db
