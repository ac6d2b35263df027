"""Train the de-limiter on music limited on the fly, select on unseen music x unseen limiters.

    python main.py train delimiter [--steps 200000] [--minutes 120] [--workers 2] [--resume | --force]
    python main.py train delimiter --smoke        # a few steps on tiny data, then export (CI)

Builds the index first when ``data/delimiter`` is missing (models/delimiter/data.py; another
``--data`` folder must be built, or unpacked, beforehand). Loader
workers (``--workers`` processes) cut random excerpts and limit each with a random implementation
and setting, so no two steps see the same pair. Loss per example: L1 between predicted and
measured log gain (where the reference is not silent) plus -SI-SDR of the restored waveform. The
gain restores what the processor multiplies: the input through its de-clipper (``--declip``, on by
default), so the network learns to leave alone what the de-clipper already restored.
Every ``--val-every`` steps the model is scored on the fixed selection set (music packages and
limiter implementations training never uses; ``sel_*.npy``); the best score is exported to
``checkpoints/delimiter/delimiter.onnx`` and its weights to ``checkpoints/delimiter/checkpoint.pt``
(small: copy it to ``models/delimiter/checkpoint.pt`` to commit it; the next session continues
from it with ``--init``). The shipped ``models/delimiter/delimiter.onnx`` is replaced by hand,
only after ``python main.py bench delimiter`` says the new one is better (``--out`` writes
elsewhere). ``--resume`` continues the run in ``checkpoints/delimiter`` (model, optimiser, step;
saved every SAVE_EVERY_S, at each validation and on Ctrl-C); a fresh run there needs ``--force``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.delimiter import data as recipe
from models.delimiter import limiters, tcn
from models.delimiter.model import EMB, HOP, LOOKAHEAD_FRAMES, Delimiter, interpolate
from models.device import DEVICE_HELP, pick_device
from models.run_folder import check_run_folder, check_writable, claim_run_folder, save_torch
from realtime.argtypes import OneLineParser, comma_list, non_negative_int, positive, positive_float, positive_int
from realtime.dsp.declip import declip
from realtime.dsp.processors.neural.delimiter import DB_PER_NEPER, DEFAULT_THRESHOLD_DB, MAX_LOOKAHEAD

ROOT = Path(__file__).resolve().parents[2]
COMMITTED_CKPT = Path(__file__).resolve().parent / "checkpoint.pt"  # what --init usually starts from
CKPT_DIR = ROOT / "checkpoints" / "delimiter"
# SI-SDR (what the benchmark measures) drives the shape of the curve; the gain term (nepers)
# anchors its offset, so un-limited input keeps a ~ 0. Both ~1 in size after weighting.
WAVE_WEIGHT = 0.1
GAIN_WEIGHT = 0.5
SHAPE_OFFSET_WEIGHT = 0.2
MAX_LOOKAHEAD_FRAMES = MAX_LOOKAHEAD // HOP  # future frames: as many as the processor plays (more ran out of memory)
SAVE_EVERY_S = 60.0  # last.pt at least this often: a GPU pack has no selection set, whose scoring saved it


class Stream(torch.utils.data.IterableDataset):
    """Endless limited examples from ``recipe.Examples``; each worker has its own random stream,
    drawn from ``seed`` (a run's --seed and the step it starts at: the same command sees the same
    examples, a resumed run new ones) and the worker's number. Each is (input, what the gain
    multiplies: the input de-clipped when ``declip_delay`` is given, reference, log gain target)."""

    def __init__(self, tracks, n, seed, kinds=None, zoo_pin=None, targets=recipe.TARGET_LUFS, declip_delay=None):
        self.tracks, self.n, self.seed, self.kinds, self.zoo_pin = tracks, n, seed, kinds, zoo_pin or {}
        self.targets, self.declip_delay = targets, declip_delay

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        torch.set_num_threads(1)
        kinds = limiters.training_kinds(self.kinds, self.zoo_pin)
        ex = recipe.Examples(self.tracks, self.n, kinds, limiters.TRAIN_SHARES, targets=self.targets,
                             declip_delay=self.declip_delay)
        rng = np.random.default_rng([*np.atleast_1d(self.seed), wid])
        while True:
            y, ref, g, info = ex.next(rng)
            yield tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in (y, info.get("declipped", y), ref, g))


def restore(model, y: torch.Tensor, dry: torch.Tensor | None = None, curve=None):
    """y [B, n, 2] (n a multiple of HOP) -> (log inverse gain [B, n], restored [B, n, 2]), both
    aligned with y (the first ``model.lookahead`` frames of future are fed as zeros at the end).
    The gain multiplies ``dry`` when given (the processor's de-clipped input), else y; ``curve``
    maps the log gain to the one applied (default: as it is)."""
    B, n, _ = y.shape
    pad = torch.zeros(B, model.lookahead * HOP, 2, device=y.device)
    frames = torch.cat([y, pad], 1).reshape(B, -1, HOP, 2)
    knots = model(frames, *model.initial_state(B))[0]
    a = interpolate(knots[:, model.lookahead:])
    return a, (y if dry is None else dry) * torch.exp(a if curve is None else curve(a)).unsqueeze(-1)


def applied_log_gain(a: torch.Tensor, offset: float, threshold_db: float) -> torch.Tensor:
    """The log gain the processor applies for estimate ``a``: its level offset out, estimates
    under the threshold left alone (realtime/dsp/processors/neural/delimiter.py, ``_restore``)."""
    return (a - offset - threshold_db / DB_PER_NEPER).clamp(min=0.0)


def declip_delay(model) -> int:
    """The processor's de-clipper delay for this network: its look-ahead (realtime/dsp/processors/neural/delimiter.py)."""
    return model.lookahead * HOP


def declip_selection(sel_y: np.ndarray, delay: int, sr: int = recipe.SR) -> np.ndarray:
    """Every selection segment through the de-clipper, as the processor restores it."""
    return np.stack([declip(y, sr, delay) for y in sel_y])


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    est, ref = est.reshape(-1).astype(np.float64), ref.reshape(-1).astype(np.float64)
    alpha = np.dot(est, ref) / max(np.dot(ref, ref), 1e-12)
    t = alpha * ref
    return float(10 * np.log10(max(np.dot(t, t), 1e-12) / max(np.dot(est - t, est - t), 1e-12)))


def neg_si_sdr(est: torch.Tensor, ref: torch.Tensor, cap_db: float = 40.0) -> torch.Tensor:
    """Mean over the batch of -SI-SDR (dB); segments already above ``cap_db`` stop pulling."""
    est, ref = est.reshape(est.shape[0], -1), ref.reshape(ref.shape[0], -1)
    alpha = (est * ref).sum(1, keepdim=True) / (ref * ref).sum(1, keepdim=True).clamp(min=1e-8)
    t = alpha * ref
    sdr = 10 * torch.log10((t * t).sum(1).clamp(min=1e-8) / ((est - t) ** 2).sum(1).clamp(min=1e-8))
    return -sdr.clamp(max=cap_db).mean()


def losses(model, Y, X, G, mode: str = "l1", D=None, played=None, context: int = 0):
    """(gain L1 where the gain is known, -SI-SDR of the restored waveform); the gain multiplies
    ``D`` (the de-clipped input) when given, else Y. ``played`` (e.g. ``PlayedCurve``) maps the
    curve to what the processor plays for the waveform term; the gain term sees the raw curve.
    The first ``context`` samples are heard, not scored (``--context``): the network's past there
    is warm, as it always is in a stream.

    ``mode``: "l1" per sample; "offset" only each example's mean log gain, leaving the shape of
    the curve to the SI-SDR term (a per-sample L1 can settle on the conditional median, a
    constant, while the input's cues are still faint); "shape" the curve about each example's
    mean, plus a light pull of the mean towards the truth (SHAPE_OFFSET_WEIGHT)."""
    a, xh = restore(model, Y, D, None if played is None else (lambda c: played(c, G)))
    if context:
        a, xh, X, G = a[:, context:], xh[:, context:], X[:, context:], G[:, context:]
        if played is not None:
            played.last = played.last[:, context:]
    mask = torch.isfinite(G)
    err = (a - torch.where(mask, -G, torch.zeros_like(G))) * mask  # target a = -log g
    n_known = mask.sum().clamp(min=1)
    offset = err.sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)  # each example's mean error
    if mode == "offset":
        gain_l1 = offset.abs().mean()
    elif mode == "shape":
        # each example's curve about its own mean: how much the limiter drove the whole excerpt is
        # ambiguous (and SI-SDR ignores it); where in the excerpt it pulled harder is what restores
        gain_l1 = ((err - offset).abs() * mask).sum() / n_known + SHAPE_OFFSET_WEIGHT * offset.abs().mean()
    else:
        gain_l1 = err.abs().sum() / n_known
    return gain_l1, neg_si_sdr(xh, X)


class PlayedCurve:
    """The curve as the processor plays it (``--wave-threshold``): max(a - offset - threshold, 0).
    The offset is what ``level_offset`` measures at export, followed here as a running mean of the
    network's own estimate on the batch's un-limited examples (gain target exactly 0). The waveform
    term then costs only what a listener hears: wobble under the threshold is free, a wrong
    estimate above it is not."""

    def __init__(self, threshold_db: float, momentum: float = 0.98):
        self.threshold_db, self.momentum, self.offset, self.last = threshold_db, momentum, None, None

    def __call__(self, a: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean = (G == 0).all(1)
            if bool(clean.any()):
                m = float(a[clean].mean())
                self.offset = m if self.offset is None else self.momentum * self.offset + (1 - self.momentum) * m
        self.last = applied_log_gain(a, self.offset or 0.0, self.threshold_db)
        return self.last

    def false_restoration(self, G: torch.Tensor) -> torch.Tensor:
        """Mean gain (nepers) the last curve played where the limiter took less than the threshold
        (``--false-weight``). The waveform term cannot see it on un-limited and lightly limited
        examples: their SI-SDR sits above its 40 dB cap even with a wrong curve, so small false
        restorations there were free, and the thirtieth session's selection set showed its lightly
        limited band drifting down as training went on."""
        below = torch.isfinite(G) & (-G < self.threshold_db / DB_PER_NEPER)
        return (self.last * below).sum() / below.sum().clamp(min=1)


UNLIMITED_PEAKS_DB = (-1.0, -6.0, -12.0)  # un-limited music at these peaks measures the level offset
UNTOUCHED_DB = 50.0  # a selection segment whose input is this close to the reference was not limited
# how hard a segment was limited, by its input's SI-SDR: heavy < 15 dB <= medium < 30 dB <= light.
# One wrong curve on a light segment costs 20 dB and rules a mean (twenty-second session)
SEL_BANDS = (("heavy", -math.inf, 15.0), ("medium", 15.0, 30.0), ("light", 30.0, UNTOUCHED_DB))
CLEAN_FLOOR_DB = 40.0  # what un-limited audio must keep (issue 14)


@torch.no_grad()
def validate(model, sel_y: np.ndarray, sel_x: np.ndarray, meta: list[dict],
             threshold_db: float | None = DEFAULT_THRESHOLD_DB, sel_d: np.ndarray | None = None) -> dict:
    """Selection score: per segment the SI-SDR gain (limited input) or, where the limiter did not
    act (input within UNTOUCHED_DB of the reference), the shortfall of the output under
    CLEAN_FLOOR_DB (0 when it stays above): restoring limited audio must not cost untouched audio.
    Also per limiter, per SEL_BANDS band (mean gain) and the worst segment's gain.

    The curve is applied as the processor applies it (``threshold_db``, default the knob's): its
    level offset on un-limited music out, estimates under the threshold left alone. A network's
    wobble the threshold hides does not count against it, as it does not in the product
    (``None``: the raw curve, as before the twenty-second session). The gain multiplies ``sel_d``
    when given (``declip_selection``: the processor's de-clipped input). The offset is returned
    (``level_offset``, nepers) for the export of the same state."""
    offset = None if threshold_db is None else level_offset(model, sel_x)
    model.eval()
    model.clamp_output = True  # measure what the exported model will do
    n = sel_y.shape[1] // HOP * HOP
    score, gains, untouched, per, band = [], [], [], {}, {}
    for s in range(0, len(sel_y), 8):
        Y = sel_y[s:s + 8, :n]
        Yt = torch.from_numpy(Y).to(model_device(model))
        a = restore(model, Yt)[0]
        if offset is not None:
            a = applied_log_gain(a, offset, threshold_db)
        dry = Y if sel_d is None else sel_d[s:s + 8, :n]
        xh = dry * torch.exp(a).unsqueeze(-1).cpu().numpy()
        for b in range(len(Y)):
            ref = sel_x[s + b, :n]
            sin, sout = si_sdr(Y[b], ref), min(60.0, si_sdr(xh[b], ref))
            if sin >= UNTOUCHED_DB:
                untouched.append(sout)
                score.append(min(0.0, sout - CLEAN_FLOOR_DB))
            else:
                gains.append(sout - sin)
                score.append(gains[-1])
                per.setdefault(meta[s + b]["limiter"], []).append(gains[-1])
                name = next(nm for nm, lo, hi in SEL_BANDS if lo <= sin < hi)
                band.setdefault(name, []).append(gains[-1])
    model.clamp_output = False
    model.train()
    return {"sel_score": float(np.mean(score)), "sel_sisdr_gain_db": float(np.mean(gains)) if gains else 0.0,
            "sel_untouched_sisdr_db": float(np.mean(untouched)) if untouched else None,  # JSON has no NaN
            "sel_worst_db": float(min(gains)) if gains else 0.0,
            **({} if offset is None else {"level_offset": offset}),
            **{f"sel_{k}_db": float(np.mean(v)) for k, v in per.items()},
            **{f"sel_{k}_db": float(np.mean(v)) for k, v in band.items()}}


@torch.no_grad()
def level_offset(model, sel_x: np.ndarray, peaks_db=UNLIMITED_PEAKS_DB) -> float:
    """The log inverse gain the network predicts, on average, for music no limiter touched: the
    median over the selection tracks (un-limited, at peaks of ``peaks_db`` in turn) of each one's
    mean. The processor subtracts it, so un-limited input keeps its level; a constant changes no
    SI-SDR, only the level."""
    clamp, training = model.clamp_output, model.training
    model.eval()
    model.clamp_output = True
    n = sel_x.shape[1] // HOP * HOP
    means = []
    for i, x in enumerate(sel_x[::2]):  # each excerpt appears once per selection limiter
        peak = 10.0 ** (peaks_db[i % len(peaks_db)] / 20.0) / max(float(np.abs(x).max()), 1e-9)
        x = torch.from_numpy(np.ascontiguousarray(x[:n] * np.float32(peak)))[None].to(model_device(model))
        a, _ = restore(model, x)
        means.append(float(a.mean()))
    model.clamp_output = clamp
    model.train(training)
    return float(np.median(means))


def export(model, path: Path, meta: dict, sel_x: np.ndarray | None = None, offset: float | None = None) -> None:
    """ONNX with explicit streaming state; written to a temp file, then renamed (atomic). The
    model's level offset goes into its metadata: ``offset`` when already measured (``validate``),
    else measured on the selection set's un-limited tracks (``sel_x``) when given."""
    import copy

    import onnx

    from realtime.io.files import atomic_write

    model = copy.deepcopy(model).cpu()  # traced on the CPU, wherever it trains; the caller's copy stays put
    if offset is None and sel_x is not None:
        offset = level_offset(model, sel_x)
    if offset is not None:
        meta = {**meta, "level_offset": f"{offset:.5f}"}
    model.eval()
    model.clamp_output = True
    frames = torch.zeros(1, 2, HOP, 2)
    states = model.initial_state(1)
    names = list(model.state_names)
    axes = {"frames": {0: "batch", 1: "time"}, "knots": {0: "batch", 1: "time"}}
    for name, one, two in zip(names, states, model.initial_state(2)):  # each state's batch axis
        b = next(i for i, (p, q) in enumerate(zip(one.shape, two.shape)) if p != q)
        axes[name] = axes[f"{name}_out"] = {b: "batch"}
    with atomic_write(path, suffix=".onnx.part") as tmp:
        torch.onnx.export(model, (frames, *states), str(tmp), dynamo=False, opset_version=17,
                          input_names=["frames", *names], output_names=["knots", *(f"{k}_out" for k in names)],
                          dynamic_axes=axes)
        m = onnx.load(str(tmp))
        for k, v in {"hop": HOP, "lookahead_frames": model.lookahead, "knots": model.knots, "arch": model.arch,
                     **meta}.items():
            p = m.metadata_props.add()
            p.key, p.value = str(k), str(v)
        onnx.save(m, str(tmp))
        from models.export_check import check_parity

        rng = np.random.default_rng(0)  # a few frames of music-like noise from the start state
        check_parity(tmp, model, {"frames": (0.3 * rng.standard_normal((1, 6, HOP, 2))).astype(np.float32)}
                     | {k: v.detach().numpy() for k, v in zip(names, states)})


def model_device(model):
    return next(model.parameters()).device


def save_small(model, path: Path, meta: dict) -> None:
    """The weights alone, float32, with their selection score (a few MB: committed)."""
    meta = {**meta, "lookahead": model.lookahead}  # the TCN's look-ahead is not in its weights' shapes
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "meta": meta}, path)


def load_weights(path: Path) -> tuple[dict, dict]:
    """(state dict, meta) of a weights-only checkpoint (``save_small``'s) or a bare state dict;
    a file that is neither is a clear one-line error."""
    try:
        st = torch.load(path, map_location="cpu")
        state, meta = (st["model"], st.get("meta", {})) if "model" in st else (st, {})
        if "lookahead" in st:  # a run's last.pt keeps it beside the weights
            meta = {**meta, "lookahead": st["lookahead"]}
        model_for(state, meta).load_state_dict(state)  # other networks' weights (the enhancer's) fail here
    except FileNotFoundError:
        raise SystemExit(f"{path}: no such file")
    except Exception as e:  # torch's unpickling errors, a dict of something else
        raise SystemExit(f"{path}: not a de-limiter checkpoint ({type(e).__name__})")
    return state, meta


def load_last(path: Path, lookahead: int):
    """(everything ``save_last`` wrote, the network with its weights in) of a run's last.pt; any
    other file (an enhancer run's, weights alone, a broken one) is a clear one-line error."""
    try:
        st = torch.load(path, map_location="cpu")
        model = model_for(st["model"], {"lookahead": st.get("lookahead", lookahead)})
        model.load_state_dict(st["model"])
        st["opt"], st["step"], st["best"], st["log"]  # what --resume continues from
    except Exception as e:  # torch's unpickling errors, a dict of something else
        raise SystemExit(f"{path}: not a de-limiter run's last.pt ({type(e).__name__})") from None
    return st, model


def export_weights(weights: Path, out: Path, data: Path | None = None) -> None:
    """ONNX from a weights-only checkpoint (``save_small``'s, e.g. the committed one); the
    look-ahead is read from the frame mixer's width, so a non-causal checkpoint exports as one.
    The level offset is measured on ``data``'s selection set when it has one."""
    state, meta = load_weights(weights)
    sel_x = np.load(data / "sel_x.npy") if data is not None and (data / "sel_x.npy").is_file() else None
    model = model_for(state, meta)
    model.load_state_dict(state)
    meta = {k: str(v) for k, v in meta.items() if k in ("step", "sel_score", "sel_sisdr_gain_db")}
    out.parent.mkdir(parents=True, exist_ok=True)
    export(model, out, {**meta, "from": Path(weights).name}, sel_x)


def load_selection(data: Path):
    """(limited segments, references, their metadata) of ``data``'s selection set, or None
    (a data pack on a GPU machine has none). A set built before the LV2 limiters were aligned to a
    part of a sample (its LV2 segments say no ``aligned_latency``: an oversampling limiter left them
    half a sample off their references, capping what any state could score there) is refused:
    its scores would not compare with a rebuilt set's."""
    if not (data / "sel_y.npy").is_file():
        return None
    meta = json.loads((data / "sel_meta.json").read_text())
    if any(m.get("limiter") in limiters.VAL_KINDS and "aligned_latency" not in m for m in meta):
        raise SystemExit(f"{data}: its selection set was built before the LV2 limiters were aligned to a part of a "
                         f"sample; rebuild it: python -m models.delimiter.data --selection-only --out {data}")
    return np.load(data / "sel_y.npy"), np.load(data / "sel_x.npy"), meta


def score_states(paths, data: Path, thresholds) -> list[dict]:
    """Selection-set scores of weights-only states at several processor thresholds (``validate``
    as the product plays the curve, de-clipped input): the records the pick of a state and its
    threshold is made from (model card, "A loss that hears the threshold")."""
    sel = load_selection(data)
    if sel is None:
        raise SystemExit(f"{data}: no selection set (python -m models.delimiter.data builds it)")
    sel_y, sel_x, meta = sel
    recs, sel_d = [], {}
    for path in paths:
        state, m = load_weights(path)
        model = model_for(state, m)
        model.load_state_dict(state)
        delay = declip_delay(model)
        if delay not in sel_d:
            sel_d[delay] = declip_selection(sel_y, delay)
        for thr in thresholds:
            v = validate(model, sel_y, sel_x, meta, threshold_db=thr, sel_d=sel_d[delay])
            recs.append({"state": str(path), "threshold_db": thr, **{k: round(x, 4) for k, x in v.items()}})
    return recs


def arch_of(state: dict) -> str:
    return "tcn" if "inp.weight" in state else "gru"


def build(arch: str, lookahead: int, front: str = "linear", **tcn_shape):
    """A fresh network: the GRU (with its front end) or the TCN (``ch``, ``layers`` if not the defaults)."""
    if arch == "tcn":
        return tcn.DelimiterTCN(lookahead_frames=lookahead, **tcn_shape)
    return Delimiter(lookahead_frames=lookahead, front=front)


def model_for(state: dict, meta: dict | None = None):
    """An untrained network of the shape of these weights (GRU: look-ahead from the frame mixer's
    width; TCN: from the checkpoint's meta)."""
    if arch_of(state) == "tcn":
        return build("tcn", int((meta or {}).get("lookahead", LOOKAHEAD_FRAMES)), ch=state["inp.weight"].shape[0],
                     layers=sum(1 for k in state if k.startswith("convs.") and k.endswith(".weight")),
                     bands=bands_of(state))
    return build("gru", state["mix.0.weight"].shape[1] // EMB - 1, front_of(state))


# --tcn-bands without a TCN (main, before any data is built; train, for --init weights)
NOT_A_TCN = "--tcn-bands: band levels are inputs of the TCN (--arch tcn, or --init of TCN weights)"


def bands_of(state: dict) -> int:
    """A TCN's band-level inputs: what its input layer takes beyond the block levels."""
    return state["inp.weight"].shape[1] - tcn.N_FEAT


def add_band_inputs(state: dict, bands: int) -> dict:
    """A band-less TCN's weights with ``bands`` band-level inputs added at zero weight: the network
    starts as the same function and learns what the bands add."""
    w = state["inp.weight"]
    return {**state, "inp.weight": torch.cat([w, w.new_zeros(w.shape[0], bands, *w.shape[2:])], 1)}


def front_of(state: dict) -> str:
    return "conv" if any(k.startswith("conv.") for k in state) else "linear"


def add_conv_front(state: dict, model: Delimiter) -> dict:
    """Weights of a linear-front network fitted into a conv-front ``model``: the embedding's
    columns for the new conv features start at zero, so the network begins as the same function
    and the detector's weights start from ``model``'s own initialisation."""
    if model.front != "conv" or front_of(state) == "conv":
        return state
    w = state["embed.0.weight"]
    want = model.embed[0].weight
    wide = torch.zeros(want.shape, dtype=w.dtype)
    wide[:, want.shape[1] - w.shape[1]:] = w  # the conv features come first
    own = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("conv.")}
    return {**state, **own, "embed.0.weight": wide}


def widen_lookahead(state: dict, model: Delimiter) -> dict:
    """Weights of a network with less look-ahead, fitted into ``model``: the frame mixer's blocks
    for the frames it already saw keep their weights, the extra future frames start at zero, so
    the widened network begins as exactly the same function (the non-causal row's fair start)."""
    w = state["mix.0.weight"]
    want = model.mix[0].weight.shape
    if w.shape == want:
        return state
    if w.shape[0] != want[0] or w.shape[1] > want[1]:
        raise SystemExit(f"--init: frame mixer {tuple(w.shape)} does not fit {tuple(want)}")
    wide = torch.zeros(want, dtype=w.dtype)
    wide[:, : w.shape[1]] = w
    return {**state, "mix.0.weight": wide}


def train(a) -> dict:
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    index = recipe.load_index(a.data)
    frames_n = a.frames * HOP
    context_n = int(round(a.context * recipe.SR / HOP)) * HOP
    sel = load_selection(a.data)
    device = pick_device(a.device)
    ckpt_dir = a.ckpt
    step, best, log, seen_s = 0, {"sel_score": -math.inf}, [], 0.0
    st, init = None, None
    if a.resume:  # main checked it is there (check_run_folder), and loaded it before building any data
        st, model = getattr(a, "resumed", None) or load_last(ckpt_dir / "last.pt", a.lookahead)
    elif a.init is not None:
        init = load_weights(a.init)[0]
    # on the CPU until its weights are in
    if a.tcn_bands and st is None and init is not None:  # without --init, main() checked --arch
        if arch_of(init) != "tcn":
            raise SystemExit(NOT_A_TCN)
        if bands_of(init) not in (0, a.tcn_bands):
            raise SystemExit(f"--tcn-bands {a.tcn_bands}: {a.init} has {bands_of(init)} bands already")
        init = add_band_inputs(init, a.tcn_bands) if not bands_of(init) else init
    # a resumed run keeps its own network (load_last's), whatever the command line says
    if st is None and init is not None and arch_of(init) == "tcn":  # its look-ahead only shifts the target
        model = model_for(init, {"lookahead": a.lookahead})
    elif st is None and init is not None:  # conv weights need the conv front; linear ones fit either
        model = build("gru", a.lookahead, "conv" if front_of(init) == "conv" else a.front)
    elif st is None:
        model = build(a.arch, a.lookahead, a.front, **({"bands": a.tcn_bands} if a.arch == "tcn" else {}))
    if st is not None:
        step, best, log, seen_s = st["step"], st["best"], st["log"], st.get("seen_s", 0.0)
        if "sel_score" not in best:  # a run started before the selection score existed
            best = {"sel_score": -math.inf}
        print(f"resumed at step {step}", flush=True)
    elif init is not None:  # warm start from a committed checkpoint (a GRU's widened to this run's shape)
        model.load_state_dict(init if model.arch == "tcn" else add_conv_front(widen_lookahead(init, model), model))
        print(f"initialised from {a.init}", flush=True)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    if st is not None:
        try:
            opt.load_state_dict(st["opt"])  # its moments land on the parameters' device
        except Exception as e:
            raise SystemExit(f"{ckpt_dir / 'last.pt'}: not a de-limiter run's last.pt ({type(e).__name__})") from None
    claim_run_folder(ckpt_dir)  # only now: a run refused above leaves no folder behind
    n_params = sum(p.numel() for p in model.parameters())
    kinds = a.limiters or None
    print(f"params {n_params} on {device}, {index['hours']['train']:.1f} h of training music, "
          f"{len(sel[0]) if sel else 0} selection segments, limiters "
          f"{','.join(limiters.training_kinds(kinds, a.zoo_pin))}", flush=True)  # those this machine runs
    delay = declip_delay(model) if a.declip else None
    sel_d = declip_selection(sel[0], delay) if sel is not None and delay is not None else None
    loader = torch.utils.data.DataLoader(Stream(index["train"], frames_n + context_n, (a.seed, step), kinds, a.zoo_pin, a.target_lufs,
                                                delay), batch_size=a.batch,
                                         num_workers=a.workers, prefetch_factor=4 if a.workers else None,
                                         persistent_workers=bool(a.workers), pin_memory=device.type == "cuda")

    def save_last():  # everything --resume needs, written atomically (a kill mid-save keeps the old one)
        nonlocal t_saved
        save_torch({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                    "log": log, "seen_s": seen_s, "lookahead": model.lookahead}, ckpt_dir / "last.pt")
        t_saved = time.monotonic()

    played = None if a.wave_threshold is None else PlayedCurve(a.wave_threshold)
    t0 = t_saved = time.monotonic()
    t_wait = 0.0
    it = iter(loader)
    start_step = step
    polarity = np.random.default_rng([a.seed, step])  # seeded as the loader is: one command, one run
    try:
        while step < a.steps and time.monotonic() - t0 < a.minutes * 60.0:
            frac = step / max(a.steps, 1)
            warm = min(1.0, (step + 1) / 300)
            for gparam in opt.param_groups:  # warm-up, then cosine decay over --steps
                gparam["lr"] = a.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
            tw = time.monotonic()
            Y, D, X, G = (t.to(device, non_blocking=True) for t in next(it))
            t_wait += time.monotonic() - tw
            sign = float(polarity.choice([1.0, -1.0]))  # polarity: the gain must not depend on it
            gl, wl = losses(model, Y * sign, X * sign, G, a.gain_loss, D * sign, played, context_n)
            loss = GAIN_WEIGHT * gl + WAVE_WEIGHT * wl
            if a.false_weight:
                fl = played.false_restoration(G[:, context_n:])
                loss = loss + a.false_weight * fl
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            seen_s += Y.shape[0] * Y.shape[1] / 46050.0  # mean of the two rates
            if step % 25 == 0:
                el = time.monotonic() - t0
                print(f"step {step} t={el:.0f}s {(step - start_step) / el:.2f} steps/s wait={t_wait / el:.0%} "
                      f"seen={seen_s / 3600:.2f} h gain_l1={float(gl.detach()):.4f} neg_sisdr={float(wl.detach()):.2f}"
                      + (f" false={float(fl.detach()):.4f}" if a.false_weight else ""), flush=True)
            if sel is None and a.keep_all and step % a.val_every == 0:  # a GPU machine has no selection set:
                save_small(model, ckpt_dir / "steps" / f"step{step:06d}.pt", {"step": step})  # select them here
            if sel is not None and (step % a.val_every == 0 or step >= a.steps):
                v = validate(model, *sel, sel_d=sel_d)
                offset = v.pop("level_offset")  # for the export below; the weights' meta stays as it was
                v.update(step=step, minutes=(time.monotonic() - t0) / 60, seen_hours=seen_s / 3600)
                log.append(v)
                print(json.dumps(v), flush=True)
                if a.keep_all:  # every scored state, to benchmark more than the selection's pick
                    save_small(model, ckpt_dir / "steps" / f"step{step:06d}.pt", {**v})
                if v["sel_score"] > best["sel_score"]:
                    meta = {"sel_score": f"{v['sel_score']:.2f}", "sel_sisdr_gain_db": f"{v['sel_sisdr_gain_db']:.2f}",
                            "step": step}
                    export(model, a.out, meta, offset=offset)  # measured by validate on this very state
                    save_small(model, a.small, {**v})
                    best = v  # once both are written: a Ctrl-C in between keeps the best they hold
                save_last()
            if time.monotonic() - t_saved >= SAVE_EVERY_S:  # a Ctrl-C or a lost machine costs a minute at most
                save_last()
    except KeyboardInterrupt:  # keep what this run learnt since the last save, then stop as asked
        save_last()
        raise
    if sel is None:  # data without a selection set: keep the last state
        export(model, a.out, {"step": step})
        save_small(model, a.small, {"step": step})
    save_last()
    from realtime.io.files import atomic_write_text

    atomic_write_text(ckpt_dir / "train_log.json", json.dumps({"params": n_params, "log": log, "best": best}, indent=1),
                      suffix=".json.part")
    return {"params": n_params, "steps": step, "seen_hours": seen_s / 3600, "best": best}


def lufs_range(text: str) -> tuple[float, float]:
    """"-16,-5" -> (-16.0, -5.0); a clear one-line error otherwise."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in LUFS, e.g. -16,-5; got {text!r}") from None
    if not -40.0 <= lo < hi <= 0.0:
        raise argparse.ArgumentTypeError(f"need -40 <= LO < HI <= 0 LUFS; got {text!r}")
    return lo, hi


def main(argv=None) -> int:
    ap = OneLineParser(prog="train delimiter")
    ap.add_argument("--smoke", action="store_true", help="tiny data, a few steps, export to checkpoints/")
    ap.add_argument("--minutes", type=positive_float, default=120.0, help="wall-time budget of this run")
    ap.add_argument("--steps", type=positive_int, default=60000, help="length of the LR schedule (and the run)")
    ap.add_argument("--batch", type=positive_int, default=16)
    ap.add_argument("--frames", type=positive_int, default=384, help="frames of %d samples per example" % HOP)
    ap.add_argument("--lr", type=positive_float, default=1e-3)
    ap.add_argument("--context", type=float, default=0.0, metavar="S",
                    help="seconds of each example the network hears before the --frames the loss scores "
                         "(a stream's past is never empty; the TCN looks 1.5 s back)")
    ap.add_argument("--workers", type=non_negative_int, default=2, help="loader processes")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch threads of the trainer")
    ap.add_argument("--device", default="auto", help=DEVICE_HELP)
    ap.add_argument("--val-every", type=positive_int, default=250)
    ap.add_argument("--seed", type=non_negative_int, default=0,
                    help="the run's examples, polarity flips and fresh weights follow from it")
    ap.add_argument("--data", type=Path, default=recipe.DEFAULT_OUT)
    ap.add_argument("--out", type=Path, default=None, help="ONNX path (default: in the checkpoint folder)")
    ap.add_argument("--small", type=Path, default=None, help="weights-only checkpoint (default: in the checkpoint folder)")
    ap.add_argument("--ckpt", type=Path, default=None, help="checkpoint folder (--resume continues from it)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--force", action="store_true",
                    help="start afresh in a checkpoint folder that holds an earlier run (its last.pt is replaced)")
    ap.add_argument("--gain-loss", choices=("l1", "offset", "shape"), default="l1",
                    help="per-sample L1 of the log gain, only each example's mean, or the curve about it (see losses)")
    ap.add_argument("--wave-threshold", type=positive(float, zero=True), default=None, metavar="DB",
                    help="the waveform loss hears the curve as the processor plays it at this threshold "
                         "(level offset out, estimates under it left alone); default: the raw curve")
    ap.add_argument("--false-weight", type=positive(float, zero=True), default=0.0, metavar="W",
                    help="with --wave-threshold: weight of the gain played where the limiter took less than "
                         "the threshold (nepers; see PlayedCurve.false_restoration)")
    ap.add_argument("--declip", action=argparse.BooleanOptionalAction, default=True,
                    help="the gain restores the input through the processor's de-clipper, as the product does "
                         "(--no-declip: the input as it came, as before the twenty-eighth session)")
    ap.add_argument("--limiters", default="", help="train on these of %s only (a curriculum's first stage)"
                    % ",".join(limiters.TRAIN_KINDS))
    ap.add_argument("--zoo-pin", type=limiters.parse_zoo_pin, default={},
                    help="pin settings of the zoo limiter, or a float one to a range LO:HI, e.g. "
                         "lookahead_ms=5,shape=0,release_ms=20:500 (keys: %s)"
                    % ",".join(limiters.ZOO_SETTINGS))
    ap.add_argument("--target-lufs", type=lufs_range, default=recipe.TARGET_LUFS, metavar="LO,HI",
                    help="loudness range the examples are driven towards (default %g,%g; a lower LO "
                         "adds lightly limited examples)" % recipe.TARGET_LUFS)
    ap.add_argument("--lookahead", type=positive(int, zero=True, most=MAX_LOOKAHEAD_FRAMES), default=LOOKAHEAD_FRAMES,
                    help="future frames the network sees (the default is the product's; more = the non-causal row)")
    ap.add_argument("--arch", choices=("gru", "tcn"), default="gru",
                    help="the network: GRU over 128-sample frames (model.py) or causal dilated convolutions "
                         "over 32-sample block envelopes (tcn.py); --init and --resume keep their checkpoint's")
    ap.add_argument("--tcn-bands", type=non_negative_int, default=0, metavar="N",
                    help="TCN: also feed the levels of N bands (150 Hz-16 kHz) per block (tcn.band_levels); --init "
                         "of a TCN without them starts them at zero weight")
    ap.add_argument("--front", choices=("linear", "conv"), default="linear",
                    help="frame front end: the linear embedding alone, or with a small conv detector "
                         "(--init of a linear checkpoint starts it as the same function)")
    ap.add_argument("--init", type=Path, default=None,
                    help=f"start from these weights (e.g. {COMMITTED_CKPT.relative_to(ROOT)})")
    ap.add_argument("--keep-all", action="store_true",
                    help="keep the weights of every validation in CKPT/steps/ (small files); without a selection "
                         "set (a data pack on a GPU machine), every --val-every steps")
    ap.add_argument("--export-only", action="store_true",
                    help="write --out (ONNX) from the --init weights and stop (e.g. to benchmark a committed checkpoint)")
    ap.add_argument("--score", type=Path, nargs="+", default=None, metavar="WEIGHTS",
                    help="score these weights-only states (e.g. a run's steps/*.pt) on the selection set at each "
                         "of --thresholds, one JSON line each, and stop: how a state and its threshold are picked")
    ap.add_argument("--thresholds", type=comma_list(float), default="1.5,2,2.5,3",
                    help="with --score: processor thresholds (dB)")
    a = ap.parse_args(argv)
    pick_device(a.device)  # a device that is not there fails before any data is built
    if a.score:
        for rec in score_states(a.score, a.data, a.thresholds):
            print(json.dumps(rec), flush=True)
        return 0
    if a.export_only:
        if a.init is None or a.out is None:
            raise SystemExit("--export-only needs --init WEIGHTS and --out FILE.onnx")
        check_writable(a.out)
        export_weights(a.init, a.out, a.data)
        print(f"exported {a.init} -> {a.out}", flush=True)
        return 0
    limiters.training_kinds(a.limiters)  # unknown --limiters names fail here, not in a loader worker
    if not 0.0 <= a.context <= 60.0:
        raise SystemExit(f"--context {a.context:g}: seconds from 0 to 60")
    if a.false_weight and a.wave_threshold is None:
        raise SystemExit("--false-weight needs --wave-threshold DB (the curve as the processor plays it)")
    if a.tcn_bands and a.init is None and a.arch != "tcn" and not a.resume:  # before any data is built
        raise SystemExit(NOT_A_TCN)
    if a.smoke:
        if a.ckpt is None:  # its own folder: CI's smoke run replaces the previous one there
            a.ckpt, a.force = ROOT / "checkpoints" / "delimiter-smoke", True
        a.data = a.ckpt / "data"
        a.out = a.out or a.ckpt / "delimiter.onnx"
        a.small = a.small or a.ckpt / "checkpoint.pt"
        a.steps, a.batch, a.frames, a.workers = min(a.steps, 3), 2, 32, 0
    else:
        a.ckpt = a.ckpt or CKPT_DIR
        a.out, a.small = a.out or a.ckpt / "delimiter.onnx", a.small or a.ckpt / "checkpoint.pt"
    # every input checked before anything is written: an earlier run, where the files go, --init
    check_run_folder(a.ckpt, a.resume, a.force)
    for path in (a.ckpt / "last.pt", a.out, a.small):
        check_writable(path)
    if a.init is not None and not a.resume:
        load_weights(a.init)
    # a last.pt of another run (an enhancer's, a broken file) is refused before the data step: without
    # data that is the 20 h recipe
    a.resumed = load_last(a.ckpt / "last.pt", a.lookahead) if a.resume else None
    if not (a.data / "DONE").exists():
        if a.smoke:
            recipe.build(a.data, smoke=True)
        elif a.data.resolve() == recipe.DEFAULT_OUT.resolve():
            recipe.build(a.data)
        else:  # a mistyped --data would start a 20 h recipe there
            raise SystemExit(f"no data in {a.data}: build it with python -m models.delimiter.data --out {a.data}")
    print(json.dumps(train(a), default=float), flush=True)
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
