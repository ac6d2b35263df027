"""Benchmark the de-limiter on music it never met in training, against oracle rows.

    python main.py bench delimiter [--json] [--tracks 2] [--seconds 8] [--targets=-6,-8.5,-11]
    python main.py bench delimiter --suite insource     (the same music, limiters seen in training)
    python -m bench.delimiter …

Music: tracks of the packages in ``recipe.HELDOUT_PACKAGES`` (whole packages the recipe never
reads; ``--tracks`` per package, one ``--seconds`` segment from the middle of each,
loudness-normalised to REF_LUFS). Suites:

- ``heldout`` (default, the issue's yardstick): each segment driven into each limiter of
  ``recipe.HELDOUT_LIMITERS`` (LV2 plugins never used in training or checkpoint selection, hosted
  by the runtime's LV2 processor) until it reaches each loudness target;
- ``insource``: the same segments through the training implementations (``limiters.TRAIN_KINDS``,
  one fixed random setting per case): what the model does on limiters it knows.

Then streamed through the real processor. One record per limiter and row: ``row="model"`` (the
committed model, auto-level off), ``row="noncausal"`` (``--noncausal`` ONNX: the same network
trained with a centred context, latency compensated; the ceiling of causality),
``row="oracle_exact"`` (the true per-channel gain curve y/x divided out) and
``row="oracle_smooth_{5,20,100}ms"`` (that gain smoothed by a centred moving average before
dividing it out: the ceiling of a model whose gain cannot move faster). Figures: SI-SDR of the
limited input and of the output against the drive-scaled original, the gain's mean / median /
worst clip and its mean per target, crest factor and loudness range of original / limited /
output; the model row adds latency, RTF, the SI-SDR of un-limited input (each original at
-1 dBFS peak) through the model, which must stay >= 40 dB, and how the gain curve it applied
follows the true one over 10 ms averages (``gain_curve_std_ratio``: 1 = as much movement;
``gain_curve_corr``).
"""
from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from bench.common import block_frames, emit
from models.delimiter import data as recipe
from models.delimiter import limiters
from realtime.argtypes import OneLineParser, comma_list, positive


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
    if est.std() < 1e-6:  # the processor left this excerpt alone (under its threshold): no curve to correlate
        return 0.0, float("nan")
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


# -- held-out tracks x held-out limiters, with oracle rows ------------------------------------
HELDOUT_SETTINGS = {  # fixed settings of the held-out limiters (drive is applied before them)
    "swh-fast-lookahead": {"limit": -0.5, "release": 0.15},
    "swh-hard": {"limit_db": -0.5, "wet_gain": 1.0, "res_gain": 0.0},
    "mda": {"thresh": 0.98, "output": 0.5, "release": 0.5, "attack": 0.0, "knee": 0.0},
}
ORACLE_SMOOTH_MS = (5.0, 20.0, 100.0)
CLEAN_PEAK_DB = -1.0


def heldout_segments(tracks_per_package: int, seconds: float) -> list[tuple[str, np.ndarray]]:
    """(name, stereo segment at REF_LUFS, SR) from the middle of the first tracks of each held-out package."""
    out = []
    n = int(seconds * recipe.SR)
    for pkg, folder in recipe.HELDOUT_PACKAGES.items():
        files = sorted(p for p in Path(folder).glob("*.ogg") if p.is_file())
        if not files:
            raise SystemExit(f"held-out package {pkg} not installed: apt-get install --no-install-recommends {pkg}")
        got = 0
        for f in files:
            if got >= tracks_per_package:
                break
            audio = recipe.load_track(f)
            if audio is None or len(audio) < n + 1:
                continue
            start = (len(audio) - n) // 2
            x = audio[start:start + n]
            loud = recipe.lufs(x, recipe.SR)
            if loud < recipe.MIN_LUFS:
                continue
            out.append((f"{pkg}/{f.name}@{start / recipe.SR:.1f}s", x * np.float32(10.0 ** ((recipe.REF_LUFS - loud) / 20.0))))
            got += 1
    return out


def limiter_set(suite: str, sr: int) -> dict:
    """name -> (limit(x, case) -> y, description) for a suite (see the module doc)."""
    if suite == "heldout":
        out = {}
        for name, uri in recipe.HELDOUT_LIMITERS.items():
            lim = limiters.Lv2Limiter(uri, HELDOUT_SETTINGS[name], sr)
            out[name] = (lambda x, case, lim=lim: lim(x), {"limiter_uri": uri, "setting": HELDOUT_SETTINGS[name]})
        return out
    kinds = limiters.available(limiters.TRAIN_KINDS)

    def run(fn, name):  # one fixed random setting per case (the same for every drive step and run)
        return lambda x, case: fn(x, sr, np.random.default_rng([zlib.crc32(name.encode()), case]))[0]
    return {name: (run(fn, name), {"setting": "random per case (limiters.TRAIN_KINDS)"}) for name, fn in kinds.items()}


def limit_to_target(x: np.ndarray, sr: int, limit, case: int, target: float, iters: int = 8):
    """Drive ``x`` into ``limit`` until its output reaches ``target`` LUFS: (limited, reference, drive dB)."""
    drive = target - recipe.REF_LUFS
    for _ in range(iters):
        g = np.float32(10.0 ** (drive / 20.0))
        y = limit(x * g, case)
        err = target - recipe.lufs(y, sr)
        if abs(err) < 0.3:
            break
        drive = min(max(drive + 2.0 * err, 0.0), recipe.MAX_DRIVE_DB + 6.0)
    return y, x * g, drive


def oracle_gain(y: np.ndarray, ref: np.ndarray, sr: int, window_ms: float = 0.5) -> np.ndarray:
    """The true per-channel gain curve y / ref, read back from the audio (linear, signed: swh's
    fastLookaheadLimiter, driven hard, overshoots into negative gains for a few ms). Where the
    reference is near silence, the stereo-linked least-squares gain over a centred ``window_ms``."""
    w = max(1, int(round(window_ms * 1e-3 * sr)))
    k = np.ones(w)
    num = np.convolve((y * ref).sum(1).astype(np.float64), k, mode="same")
    den = np.convolve((ref.astype(np.float64) ** 2).sum(1), k, mode="same")
    local = np.where(den > 1e-12, num / np.maximum(den, 1e-12), 1.0)[:, None]
    ok = np.abs(ref) > 1e-6
    return np.where(ok, y / np.where(ok, ref, 1.0), local)


def smooth(gain: np.ndarray, ms: float, sr: int) -> np.ndarray:
    """Centred moving average (non-causal) of the gain curve over ``ms``."""
    w = max(1, int(round(ms * 1e-3 * sr)))
    k = np.ones(w) / w
    return np.stack([np.convolve(gain[:, c], k, mode="same") for c in range(gain.shape[1])], 1)


def divide_out(y: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """y / gain, the gain's magnitude floored at -60 dB (its sign kept)."""
    return y / np.where(gain < 0, np.minimum(gain, -1e-3), np.maximum(gain, 1e-3))


def _summary(suite: str, name: str, row: str, rows: list[dict], extra: dict) -> dict:
    gains = np.array([r["out"] - r["in"] for r in rows])
    per_target, lufs_by_target = {}, {}
    for r, gv in zip(rows, gains):
        per_target.setdefault(f"{r['target']:g}", []).append(float(gv))
        lufs_by_target.setdefault(f"{r['target']:g}", []).append(r["lufs"])
    rec = {"bench": "delimiter", "suite": suite, "limiter": name, "row": row, "cases": len(rows),
           "sisdr_in_db": float(np.mean([r["in"] for r in rows])),
           "sisdr_out_db": float(np.mean([r["out"] for r in rows])),
           "sisdr_gain_db": float(gains.mean()), "sisdr_gain_median_db": float(np.median(gains)),
           "sisdr_gain_worst_db": float(gains.min()),
           "sisdr_gain_by_target_db": {k: float(np.mean(v)) for k, v in per_target.items()},
           "lufs_in_by_target": {k: float(np.mean(v)) for k, v in lufs_by_target.items()}}
    for k in ("crest_ref", "crest_in", "crest_out"):
        rec[f"{k}_db"] = float(np.mean([r[k] for r in rows]))
    for k in ("lra_ref", "lra_in", "lra_out"):
        rec[f"{k}_lu"] = float(np.mean([r[k] for r in rows]))
    if "curve_corr" in rows[0]:  # model rows: how the applied gain curve follows the true one
        for k in ("curve_std_ratio", "curve_corr"):
            vals = [r[k] for r in rows if np.isfinite(r[k])]  # NaN: no curve in that excerpt to compare
            rec[f"gain_{k}"] = float(np.mean(vals)) if vals else float("nan")
    rec.update(extra)
    return rec


def evaluate(suite: str = "heldout", tracks_per_package: int = 2, seconds: float = 8.0, targets=(-6.0, -8.5, -11.0),
             blocksize: int = 128, model=None, noncausal=None, threshold_db: float | None = None) -> list[dict]:
    """Held-out tracks x the suite's limiters x loudness targets: model, non-causal and oracle
    records (see the module doc).

    Parameters
    ----------
    suite : {"heldout", "insource"}
        Limiters never used in training (LV2), or the training implementations.
    tracks_per_package : int
        Tracks taken from each package of ``recipe.HELDOUT_PACKAGES`` (first ones by name).
    seconds : float
        Length of the one segment taken from the middle of each track.
    targets : sequence of float
        Loudness targets (LUFS) each segment is driven to, per limiter.
    blocksize : int
        Block size the processor streams in.
    model, noncausal : str or None
        ONNX file to evaluate (None: the committed model); the non-causal model's ONNX, if any.

    Returns
    -------
    list of dict
        Per limiter: one ``row="model"`` record, ``noncausal`` if given, then ``oracle_exact``
        and ``oracle_smooth_*``.

    Raises
    ------
    SystemExit
        A held-out package is not installed.
    """
    from realtime.dsp.processors.neural.delimiter import Delimiter

    sr = recipe.SR
    segs = heldout_segments(tracks_per_package, seconds)
    if not segs:
        raise SystemExit(f"no held-out track is longer than {seconds:g} s and loud enough: try a shorter --seconds")
    knobs = {"auto_level": "off", **({} if threshold_db is None else {"threshold_db": threshold_db})}
    procs = {"model": Delimiter(model_path=model, **knobs) if model else Delimiter(**knobs)}
    if noncausal:
        procs["noncausal"] = Delimiter(model_path=noncausal, **knobs)
    for p in procs.values():
        p.prepare(sr, blocksize, 2)

    def run_model(row, y):
        proc = procs[row]
        L = proc.latency
        proc.reset()
        out, wall, cpu = stream(proc, np.concatenate([y, np.zeros((L, 2), np.float32)]), blocksize)
        return out[L:], wall, cpu

    def stats(y, ref, out, target):
        return {"in": si_sdr(y, ref), "out": si_sdr(out, ref), "target": target, "lufs": recipe.lufs(y, sr),
                "crest_ref": crest_db(ref), "crest_in": crest_db(y), "crest_out": crest_db(out),
                "lra_ref": loudness_range(ref, sr), "lra_in": loudness_range(y, sr), "lra_out": loudness_range(out, sr)}

    clean = {row: [] for row in procs}  # un-limited input through the model(s)
    for _, x in segs:
        ref = x * np.float32(10.0 ** (CLEAN_PEAK_DB / 20.0) / max(float(np.abs(x).max()), 1e-9))
        for row in procs:
            clean[row].append(si_sdr(run_model(row, ref)[0], ref))
    records = []
    for name, (limit, desc) in limiter_set(suite, sr).items():
        rows = {row: [] for row in procs} | {"oracle_exact": []} | {f"oracle_smooth_{ms:g}ms": [] for ms in ORACLE_SMOOTH_MS}
        wall = cpu = audio_s = 0.0
        drives, negative = [], []
        case = 0
        for _, x in segs:
            for target in targets:
                y, ref, drive = limit_to_target(x, sr, limit, case, target)
                case += 1
                drives.append(drive)
                g = oracle_gain(y, ref, sr)
                negative.append(float((g < 0).mean()))
                log_gain = np.log(np.maximum(np.abs(g.mean(1)), 1e-3))  # the true curve, stereo-linked
                for row in procs:
                    out, w, c = run_model(row, y)
                    if row == "model":
                        wall, cpu, audio_s = wall + w, cpu + c, audio_s + len(y) / sr
                    rows[row].append(stats(y, ref, out, target))
                    rows[row][-1]["curve_std_ratio"], rows[row][-1]["curve_corr"] = curve_match(y, out, log_gain, sr)
                rows["oracle_exact"].append(stats(y, ref, divide_out(y, g), target))
                for ms in ORACLE_SMOOTH_MS:
                    rows[f"oracle_smooth_{ms:g}ms"].append(stats(y, ref, divide_out(y, smooth(g, ms, sr)), target))
        common = {**desc, "tracks": [n for n, _ in segs], "seconds_each": seconds, "samplerate": sr,
                  "targets_lufs": list(targets), "lufs_in": float(np.mean([r["lufs"] for r in rows["model"]])),
                  "drive_db": float(np.mean(drives)), "true_gain_negative_share": float(np.mean(negative))}
        for row, rs in rows.items():
            extra = dict(common)
            if row in procs:
                p = procs[row]
                extra.update(blocksize=blocksize, latency_samples=p.latency, latency_ms=1000.0 * p.latency / sr,
                             provider=p.provider, unlimited_sisdr_db=float(np.mean(clean[row])),
                             unlimited_sisdr_worst_db=float(np.min(clean[row])))
                if row == "model":
                    extra.update(rtf_stereo=wall / audio_s, rtf_stereo_cpu=cpu / audio_s)
            records.append(_summary(suite, name, row, rs, extra))
    return records


def get_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="bench delimiter", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--blocksize", type=block_frames, default=128)
    ap.add_argument("--suite", choices=("heldout", "insource", "both"), default="heldout",
                    help="heldout: unseen LV2 limiters (default); insource: the training implementations")
    ap.add_argument("--tracks", type=positive(int), default=2, help="held-out tracks per package")
    ap.add_argument("--seconds", type=positive(most=600), default=8.0, help="segment length (at most 600)")
    ap.add_argument("--targets", type=comma_list(float), default="-6,-8.5,-11",
                    help="loudness targets in LUFS, comma-separated (with '=': --targets=-6,-8.5)")
    ap.add_argument("--model", default=None, help="ONNX file (default: the committed model)")
    ap.add_argument("--noncausal", default=None, help="ONNX of the non-causal model (adds its row)")
    ap.add_argument("--threshold", type=float, default=None, metavar="DB",
                    help="the processor's threshold knob (default: its default), e.g. to check a candidate model "
                         "at the threshold the selection set chose for it")
    return ap


def main(argv=None) -> int:
    ap = get_parser()
    a = ap.parse_args(argv)
    if a.seconds < 0.5:  # pyloudnorm's gating blocks are 400 ms: a shorter segment has no loudness
        ap.error(f"argument --seconds: at least 0.5, got {a.seconds:g}")
    targets = tuple(a.targets)
    for suite in (("heldout", "insource") if a.suite == "both" else (a.suite,)):
        for rec in evaluate(suite, a.tracks, a.seconds, targets, a.blocksize, a.model, a.noncausal, a.threshold):
            emit(rec, a.json)
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
