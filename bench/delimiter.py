"""Benchmark the de-limiter on held-out music with a limiter setting never used in training.

    python main.py bench delimiter [--json] [--blocksize 128] [--segments 0] [--limiter project|pedalboard|both]
    python -m bench.delimiter …

The held-out originals (data/delimiter/eval_x.npy, tracks never seen in training) are limited
here to -8 LUFS with EVAL_SETTING (release 160 ms lies in the band the training recipe never
draws), then streamed block by block through the real processor (ONNX Runtime, one thread).
Figures, each a mean over segments: SI-SDR against the drive-scaled, time-aligned original of
the limited input and of the output (auto-level off, so only the estimated gain is measured),
their difference, crest factor and loudness range (EBU Tech 3342 style, 3 s windows) of the
original / limited / restored audio, latency and the real-time factor of ``process``; for the
project's limiter (which reports its gain curve) also how the applied gain curve compares with
the true one (``gain_curve_std_ratio``: 1 = as much movement; ``gain_curve_corr``).

The limiting comes from the training recipe (``models.delimiter.data``), so that the benchmark
limits exactly as training did; a benchmark may import it: it sits outside the runtime.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import emit
from models.delimiter import data as recipe


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    est, ref = est.reshape(-1).astype(np.float64), ref.reshape(-1).astype(np.float64)
    alpha = np.dot(est, ref) / max(np.dot(ref, ref), 1e-12)
    t = alpha * ref
    return float(10 * np.log10(max(np.dot(t, t), 1e-20) / max(np.dot(est - t, est - t), 1e-20)))


def crest_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.abs(x).max() / max(np.sqrt(np.mean(x.astype(np.float64) ** 2)), 1e-12)))


def loudness_range(x: np.ndarray, sr: int, win_s: float = 3.0, hop_s: float = 0.5) -> float:
    """LRA in LU: 95th - 10th percentile of gated 3 s short-term loudness."""
    import pyloudnorm

    meter = pyloudnorm.Meter(sr, block_size=win_s)
    w, h = int(win_s * sr), int(hop_s * sr)
    st = []
    for s in range(0, len(x) - w + 1, h):
        v = meter.integrated_loudness(x[s:s + w].astype(np.float64))
        if np.isfinite(v) and v > -70.0:
            st.append(v)
    if len(st) < 2:
        return 0.0
    st = np.array(st)
    rel = 10 * np.log10(np.mean(10 ** (st / 10))) - 20.0
    st = st[st > rel]
    return float(np.percentile(st, 95) - np.percentile(st, 10))


def curve_match(y: np.ndarray, out: np.ndarray, log_gain: np.ndarray, sr: int) -> tuple[float, float]:
    """How the gain curve the processor applied compares with the one the limiter applied, over
    10 ms averages: (std of the applied log inverse gain / std of the true one, correlation).
    The applied curve is read back from the audio, |out| / |y| (stereo-linked); samples near
    silence, where that ratio means nothing, are left out. Both are centred, so a constant
    output scale does not count."""
    mag = np.abs(y).sum(1)
    ok = mag > 1e-3 * max(float(mag.max()), 1e-12)
    a_out = np.where(ok, np.log(np.maximum(np.abs(out).sum(1), 1e-12) / np.maximum(mag, 1e-12)), 0.0)
    w = sr // 100
    n = len(mag) // w * w
    cnt = ok[:n].reshape(-1, w).sum(1)
    use = cnt > w // 2
    est = (a_out[:n].reshape(-1, w).sum(1) / np.maximum(cnt, 1))[use]
    true = (np.where(ok, -log_gain, 0.0)[:n].reshape(-1, w).sum(1) / np.maximum(cnt, 1))[use]
    if est.size < 3 or true.std() < 1e-6:
        return float("nan"), float("nan")
    return float(est.std() / true.std()), float(np.corrcoef(est, true)[0, 1])


def stream(proc, x: np.ndarray, block: int) -> tuple[np.ndarray, float, float]:
    """Run x through proc block by block: (output, wall seconds and this thread's CPU seconds in
    process()). ONNX Runtime runs a one-thread session on the calling thread, so the CPU time is
    the cost on one core even when other jobs share the machine."""
    y = np.empty_like(x)
    wall = cpu = 0.0
    b = np.empty((block, x.shape[1]), np.float32)
    for s in range(0, len(x), block):
        n = min(block, len(x) - s)
        v = b[:n]
        v[:] = x[s:s + n]
        t0, c0 = time.perf_counter(), time.thread_time()
        proc.process(v)
        wall += time.perf_counter() - t0
        cpu += time.thread_time() - c0
        y[s:s + n] = v
    return y, wall, cpu


def evaluate(limiter: str = "project", blocksize: int = 128, segments: int = 0, model=None,
             data_root: Path = recipe.DEFAULT_OUT) -> dict:
    from realtime.dsp.processors.neural.delimiter import Delimiter

    path = data_root / "eval_x.npy"
    if not path.is_file():
        raise SystemExit(f"no evaluation data at {path}: build it with `python -m models.delimiter.data`")
    xs = np.load(path)
    if segments:
        xs = xs[:segments]
    sr = recipe.SR
    st = dict(recipe.EVAL_SETTING, limiter=limiter)
    if limiter == "pedalboard":
        st["lookahead_ms"] = 0.0  # JUCE's limiter has no lookahead
    proc = Delimiter(model_path=model, auto_level="off") if model else Delimiter(auto_level="off")
    proc.prepare(sr, blocksize, 2)
    L = proc.latency
    rows = []
    spent = cpu = audio_s = 0.0
    for x in xs:
        (y, ref, log_gain), drive = recipe.limit_to_loudness(x, sr, st["target_lufs"], limiter, st["ceiling_db"],
                                                      st["release_ms"], st["lookahead_ms"])
        proc.reset()
        # flush the latency with the stream's own tail: pad, then drop the first L samples
        out, sec, csec = stream(proc, np.concatenate([y, np.zeros((L, 2), np.float32)]), blocksize)
        out = out[L:]
        spent += sec
        cpu += csec
        audio_s += len(out) / sr
        rows.append({"sisdr_in": si_sdr(y, ref), "sisdr_out": si_sdr(out, ref),
                     "crest_ref": crest_db(ref), "crest_in": crest_db(y), "crest_out": crest_db(out),
                     "lra_ref": loudness_range(ref, sr), "lra_in": loudness_range(y, sr),
                     "lra_out": loudness_range(out, sr), "drive_db": drive,
                     "lufs_in": recipe.lufs(y, sr)})
        if limiter == "project":  # the only limiter that reports its gain curve
            rows[-1]["curve_std_ratio"], rows[-1]["curve_corr"] = curve_match(y, out, log_gain, sr)
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
    curve = {"gain_curve_std_ratio": mean["curve_std_ratio"], "gain_curve_corr": mean["curve_corr"]} \
        if "curve_corr" in mean else {}
    return {"bench": "delimiter", "limiter": limiter, "setting": {k: v for k, v in st.items() if k != "limiter"},
            "segments": len(rows), "seconds_each": float(xs.shape[1] / sr), "samplerate": sr,
            "blocksize": blocksize, "sisdr_in_db": mean["sisdr_in"], "sisdr_out_db": mean["sisdr_out"],
            "sisdr_gain_db": mean["sisdr_out"] - mean["sisdr_in"],
            "sisdr_gain_median_db": float(np.median([r["sisdr_out"] - r["sisdr_in"] for r in rows])),
            "crest_ref_db": mean["crest_ref"], "crest_in_db": mean["crest_in"], "crest_out_db": mean["crest_out"],
            "lra_ref_lu": mean["lra_ref"], "lra_in_lu": mean["lra_in"], "lra_out_lu": mean["lra_out"],
            "lufs_in": mean["lufs_in"], "drive_db": mean["drive_db"], "latency_samples": L,
            "latency_ms": 1000.0 * L / sr, "rtf_stereo": spent / audio_s, "rtf_stereo_cpu": cpu / audio_s, "provider": proc.provider,
            **curve}


def get_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench delimiter", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--blocksize", type=int, default=128)
    ap.add_argument("--segments", type=int, default=0, help="0 = all held-out segments")
    ap.add_argument("--limiter", choices=("project", "pedalboard", "both"), default="both")
    ap.add_argument("--model", default=None, help="ONNX file (default: the committed model)")
    ap.add_argument("--data", type=Path, default=recipe.DEFAULT_OUT)
    return ap


def main(argv=None) -> int:
    a = get_parser().parse_args(argv)
    kinds = ("project", "pedalboard") if a.limiter == "both" else (a.limiter,)
    for kind in kinds:
        if kind == "pedalboard":
            try:
                import pedalboard  # noqa: F401  (training extra)
            except ImportError:
                emit({"bench": "delimiter", "limiter": kind, "error": "pedalboard not installed"}, a.json)
                continue
        emit(evaluate(kind, a.blocksize, a.segments, a.model, a.data), a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
