"""How much of a limiter's gain curve do simple level features tell? A learner-independent probe.

    python -m models.delimiter.probe [--examples 900] [--seed 5]     # ~15 min on 2 cores

Fresh training examples (the recipe's music and training limiters, limited on the fly as the
trainer sees them) are described every FRAME samples by the limited signal's own levels
relative to its running ceiling: linked peak, RMS and the share of samples within 0.3 dB of the
ceiling, over windows of 0.7 ms ... 0.74 s. ``causal`` windows end LOOKAHEAD samples after the
frame (what the product's 8.7 ms latency allows); ``noncausal`` adds windows reaching as far into
the future as into the past. Gradient-boosted trees (scikit-learn, a dependency of librosa in the
``train`` extra) learn the frame's log gain on 80 % of the examples; on the other 20 % the probe
reports, per limiter, the correlation of predicted and true curve *within* each example (the part
SI-SDR rewards; how hard the whole excerpt was driven is a constant gain, which SI-SDR ignores)
and the SI-SDR gain the best linear use of such a curve would bring, -10 log10(1 - r^2).

The point (MODEL_CARD.md, "Know the ceiling"): if level features explain little of the curve and
the future adds little to them, the causal network's shortfall is not the latency.

``--bands`` adds a third view: the causal levels plus 16 bands' levels (each against its own recent
maximum and against itself 4 / 16 / 64 frames earlier, and the quantiles of those over the bands):
a limiter scales every band alike, so bands a drum hit does not reach show its gain on their own.

    python -m models.delimiter.probe --fit CKPT [CKPT ...] [--limiters zoo] [--zoo-pin lookahead_ms=5,...]
    python -m models.delimiter.probe --fit CKPT [CKPT ...] --selection   # unseen music x unseen limiters

``--fit`` asks the same of trained networks instead of trees: on fresh examples (``--examples``,
limited ones only, seed 999 unless told) the curve's error about its own mean next to a constant's
(what the shape loss trains), the within-example correlation per FRAME, and the SI-SDR change of
the restored excerpt (median: the mean is ruled by the few lightly limited excerpts a small error
ruins, which the processor's threshold leaves alone).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter1d

from models.delimiter import data as recipe
from models.delimiter import limiters
from realtime.argtypes import OneLineParser

FRAME = 64
LOOKAHEAD = 256  # samples of future every output sample of the product's model has seen
WINDOWS = (32, 128, 512, 2048, 8192, 32768)
CEILING_S = 1.5
NEAR_CEILING = 10 ** (-0.3 / 20)


def running_max(a: np.ndarray, back: int, ahead: int) -> np.ndarray:
    """max of a over [t - back, t + ahead] for every t (zeros beyond the ends)."""
    size = back + ahead + 1
    pad = np.concatenate([np.zeros(back, a.dtype), a, np.zeros(ahead, a.dtype)])
    return maximum_filter1d(pad, size, mode="constant", origin=-(size // 2))[: len(a)]


def features(y: np.ndarray, sr: int, noncausal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """y [n, 2] limited audio -> (features [frames, k], frame centres)."""
    pk = np.abs(y).max(1).astype(np.float64)
    c = np.arange(FRAME // 2, len(pk) // FRAME * FRAME, FRAME)
    ceil = running_max(pk, int(CEILING_S * sr), LOOKAHEAD)[c] + 1e-5
    lc = np.log(ceil)
    energy = np.concatenate([[0.0], np.cumsum(pk ** 2)])
    sample_ceil = running_max(pk, int(CEILING_S * sr), 0)  # per sample, from the past only
    near = np.concatenate([[0.0], np.cumsum(pk >= NEAR_CEILING * sample_ceil)])
    out = [lc]
    for w in WINDOWS:
        spans = [(w, 0), (w, LOOKAHEAD)] + ([(0, w), (w, w)] if noncausal else [])
        for back, ahead in spans:
            out.append(np.log(running_max(pk, back, ahead)[c] + 1e-5) - lc)
            a, b = np.maximum(c - back, 0), np.minimum(c + ahead + 1, len(pk))
            out.append(np.log(np.sqrt((energy[b] - energy[a]) / (b - a)) + 1e-5) - lc)
            out.append((near[b] - near[a]) / (b - a))
    return np.stack(out, 1).astype(np.float32), c


BAND_WIN = 1024  # samples of the short-time spectrum behind the band features (23 ms at 44.1 kHz)
BAND_EDGES_HZ = np.geomspace(80.0, 16000.0, 17)
BAND_LAGS = (4, 16, 64)  # frames (of FRAME samples) over which each band's level change is taken
BAND_MEMORY_S = 0.37  # each band's level against its own maximum over this much past


def band_features(y: np.ndarray, sr: int, centres: np.ndarray) -> np.ndarray:
    """Per frame: the log energies of 16 bands (stereo power summed) in a BAND_WIN window ending
    LOOKAHEAD samples after the frame (causal, as the product), each against its own recent maximum
    and against itself BAND_LAGS frames earlier, plus the quantiles of those over the bands.

    Why: a limiter's gain multiplies every band alike. A drum hit raises the bands it lives in and
    the limiter pulls all of them down, so the bands the hit does not reach (a pad, the hi-hats, a
    held bass note) show the gain's dip and release on their own; broadband levels mix the two."""
    n = len(y)
    ends = np.minimum(centres + LOOKAHEAD, n)
    idx = ends[:, None] - BAND_WIN + np.arange(BAND_WIN)
    win = np.hanning(BAND_WIN)
    frames = np.where(idx[..., None] >= 0, y[np.clip(idx, 0, n - 1)], 0.0)  # [F, W, 2]
    P = (np.abs(np.fft.rfft(frames * win[None, :, None], axis=1)) ** 2).sum(-1)  # [F, bins]
    hz = np.fft.rfftfreq(BAND_WIN, 1 / sr)
    E = np.stack([P[:, (hz >= lo) & (hz < hi)].sum(1) for lo, hi in zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:])], 1)
    L = np.log(E + 1e-12)
    mem = max(1, int(BAND_MEMORY_S * sr / FRAME))
    rel = L - np.stack([running_max(L[:, b] - L.min(), mem, 0) + L.min() for b in range(L.shape[1])], 1)
    parts = [rel]
    for lag in BAND_LAGS:
        parts.append(L - np.concatenate([np.repeat(L[:1], lag, 0), L[:-lag]]))
    out = list(parts)
    for part in parts:
        out.append(np.quantile(part, [0.1, 0.25, 0.5, 0.75, 0.9], axis=1).T)
    return np.concatenate(out, 1).astype(np.float32)


def frame_log_gain(g: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Per-sample log gain (NaN where unknown) -> mean per frame (NaN where none is known)."""
    gg = g[: len(centres) * FRAME].reshape(-1, FRAME)
    ok = np.isfinite(gg)
    return np.where(ok.any(1), np.where(ok, gg, 0.0).sum(1) / np.maximum(ok.sum(1), 1), np.nan)


def collect(n_examples: int, seed: int, seconds: float = 3.0, kinds: dict | None = None, bands: bool = False) -> dict:
    index = recipe.load_index(recipe.DEFAULT_OUT)
    kinds = kinds or limiters.training_kinds()
    ex = recipe.Examples(index["train"], int(seconds * recipe.SR), kinds, limiters.TRAIN_SHARES)
    rng = np.random.default_rng(seed)
    rows = {"causal": [], "noncausal": [], "target": [], "kind": [], "example": []}
    if bands:
        rows["causal+bands"] = []
    for i in range(n_examples):
        y, _, g, info = ex.next(rng)
        if info["limiter"] == "none":
            continue
        fc, c = features(y, info["sr"])
        fn, _ = features(y, info["sr"], noncausal=True)
        t = -frame_log_gain(g, c)
        ok = np.isfinite(t)
        rows["causal"].append(fc[ok])
        rows["noncausal"].append(fn[ok])
        if bands:
            rows["causal+bands"].append(np.concatenate([fc, band_features(y, info["sr"], c)], 1)[ok])
        rows["target"].append(t[ok])
        rows["kind"] += [info["limiter"]] * int(ok.sum())
        rows["example"] += [i] * int(ok.sum())
    return {k: np.array(v) if k in ("kind", "example") else np.concatenate(v) for k, v in rows.items()}


def within_corr(pred: np.ndarray, true: np.ndarray, example: np.ndarray) -> tuple[float, int]:
    """Mean over examples of the correlation of the two curves inside each example."""
    cs = []
    for e in np.unique(example):
        s = example == e
        if s.sum() > 50 and true[s].std() > 0.02 and pred[s].std() > 1e-6:
            cs.append(float(np.corrcoef(pred[s], true[s])[0, 1]))
    return (float(np.mean(cs)) if cs else float("nan")), len(cs)


def probe(d: dict) -> list[dict]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    ex = d["example"]
    train = ex < np.quantile(np.unique(ex), 0.8)
    out = []
    for view in [v for v in d if v not in ("target", "kind", "example")]:
        X = d[view]
        model = HistGradientBoostingRegressor(max_iter=200, max_leaf_nodes=63, random_state=0)
        model.fit(X[train][::2], d["target"][train][::2])
        pred, true, kind, exh = model.predict(X[~train]), d["target"][~train], d["kind"][~train], ex[~train]
        for k in np.unique(kind):
            s = kind == k
            r, n = within_corr(pred[s], true[s], exh[s])
            out.append({"view": view, "limiter": str(k), "examples": n, "within_corr": round(r, 3),
                        "sisdr_gain_db_linear": round(float(-10 * np.log10(max(1e-9, 1 - r * r))), 2)})
    return out


def fit(paths: list, n_examples: int, seed: int, kinds: dict, frames: int = 384, selection: bool = False) -> list[dict]:
    """How trained networks follow the gain curve on fresh limited examples (module docstring);
    ``selection``: the selection set's music and limiters instead of the training ones."""
    import torch

    from models.delimiter.model import HOP
    from models.delimiter.train import load_weights, model_for, restore, si_sdr

    torch.set_num_threads(1)
    index = recipe.load_index(recipe.DEFAULT_OUT)
    tracks, shares = (index["val"], dict.fromkeys(kinds, 1.0)) if selection else (index["train"], limiters.TRAIN_SHARES)
    ex = recipe.Examples(tracks, frames * HOP, kinds, shares)
    rng = np.random.default_rng(seed)
    examples, names = [], []
    while len(examples) < n_examples:
        y, ref, g, info = ex.next(rng)
        if info["limiter"] != "none":
            examples.append((y, ref, g))
            names.append(info["limiter"])
    const = [float(np.abs(t - t.mean()).mean()) for t in (-g[np.isfinite(g)] for _, _, g in examples)]
    sisdr_in = [si_sdr(y, ref) for y, ref, _ in examples]
    rows = [{"model": "constant", "about_mean_l1": round(float(np.mean(const)), 4),
             "sisdr_in_median": round(float(np.median(sisdr_in)), 2)}]
    for path in paths:
        state, meta = load_weights(path)
        net = model_for(state, meta)
        net.load_state_dict(state)
        net.eval()
        l1, gains, pred, true, exid = [], [], [], [], []
        for i, (y, ref, g) in enumerate(examples):
            with torch.no_grad():
                a, xh = restore(net, torch.from_numpy(y)[None])
            a, ok = a[0].numpy(), np.isfinite(g)
            err = a[ok] + g[ok]
            l1.append(float(np.abs(err - err.mean()).mean()))
            gains.append(si_sdr(xh[0].numpy(), ref) - sisdr_in[i])
            c = np.arange(FRAME // 2, len(a) // FRAME * FRAME, FRAME)
            t = -frame_log_gain(g, c)
            keep = np.isfinite(t)
            pred.append(frame_log_gain(a, c)[keep])
            true.append(t[keep])
            exid.append(np.full(int(keep.sum()), i))
        pred, true, exid = np.concatenate(pred), np.concatenate(true), np.concatenate(exid)
        r, _ = within_corr(pred, true, exid)
        row = {"model": str(path), "about_mean_l1": round(float(np.mean(l1)), 4), "within_corr": round(r, 3),
               "sisdr_gain_median_db": round(float(np.median(gains)), 2),
               "sisdr_gain_mean_db": round(float(np.mean(gains)), 2)}
        if len(set(names)) > 1:  # which implementation the figures come from
            row["by_limiter"] = {}
            for k in sorted(set(names)):
                ids = [i for i, n in enumerate(names) if n == k]
                s = np.isin(exid, ids)
                row["by_limiter"][k] = {"examples": len(ids), "within_corr": round(within_corr(pred[s], true[s], exid[s])[0], 3),
                                        "sisdr_in_median": round(float(np.median([sisdr_in[i] for i in ids])), 2),
                                        "sisdr_gain_median_db": round(float(np.median([gains[i] for i in ids])), 2)}
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m models.delimiter.probe", description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=None, help="fresh examples (trees: 900, --fit: 60)")
    ap.add_argument("--seed", type=int, default=None, help="trees: 5, --fit: 999")
    ap.add_argument("--fit", nargs="+", type=Path, default=None, metavar="CKPT",
                    help="score these trained networks (weights-only checkpoints) instead of the trees")
    ap.add_argument("--limiters", default="", help="training implementations to use (comma-separated; all by default)")
    ap.add_argument("--zoo-pin", type=limiters.parse_zoo_pin, default={},
                    help="pin the zoo limiter's settings (as train's)")
    ap.add_argument("--selection", action="store_true",
                    help="--fit: on the selection set's music and limiters (VAL_PACKAGES x VAL_KINDS, never trained "
                         "on), fresh excerpts and settings")
    ap.add_argument("--bands", action="store_true",
                    help="trees: a third view, the causal levels plus 16 bands' levels and level changes (band_features)")
    a = ap.parse_args(argv)
    if a.selection and not a.fit:
        raise SystemExit("--selection scores trained networks: give --fit CKPT")
    if a.selection and (a.limiters or a.zoo_pin):
        raise SystemExit("--selection uses the selection set's limiters: drop --limiters/--zoo-pin")
    if not (recipe.DEFAULT_OUT / "DONE").exists():
        raise SystemExit("no training data: run `python -m models.delimiter.data` first")
    kinds = limiters.available(limiters.VAL_KINDS) if a.selection else limiters.training_kinds(a.limiters, a.zoo_pin)
    if a.selection and not kinds:
        raise SystemExit("--selection: the Calf and zam LV2 limiters are not installed")
    if a.fit:
        rows = fit(a.fit, a.examples or 60, 999 if a.seed is None else a.seed, kinds, selection=a.selection)
    else:
        rows = probe(collect(a.examples or 900, 5 if a.seed is None else a.seed, kinds=kinds, bands=a.bands))
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
