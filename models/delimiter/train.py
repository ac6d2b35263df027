"""Train the de-limiter and export it to ONNX.

    python main.py train delimiter [--minutes 50] [--batch 16] [--frames 384]
    python main.py train delimiter --smoke        # a few steps on a tiny data set, then export (CI)

Builds the data set first when ``data/delimiter`` is missing (models/delimiter/data.py). Loss per
segment: L1 between predicted and true log gain (where the limiter reports it) plus the L1 of the
restored waveform relative to the segment's mean level (every limiter, including pedalboard's,
which reports no gain curve). One torch thread, bounded wall time; the best checkpoint by
validation SI-SDR gain is exported to models/delimiter/delimiter.onnx.
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
from models.delimiter.model import HOP, LOOKAHEAD_FRAMES, Delimiter, interpolate

ROOT = Path(__file__).resolve().parents[2]
MODEL_PATH = Path(__file__).resolve().parent / "delimiter.onnx"
CKPT_DIR = ROOT / "checkpoints" / "delimiter"
# SI-SDR (what the benchmark measures) drives the shape of the curve; the gain term (nepers, where
# known) anchors its offset, so un-limited input keeps a ~ 0. Both ~1 in size after weighting.
WAVE_WEIGHT = 0.1
GAIN_WEIGHT = 0.5


class Segments:
    """Memory-mapped split: random crops of whole frames, aligned so frame 0 starts a segment."""

    def __init__(self, root: Path, split: str):
        self.y = np.load(root / f"{split}_y.npy", mmap_mode="r")
        self.x = np.load(root / f"{split}_x.npy", mmap_mode="r")
        self.g = np.load(root / f"{split}_g.npy", mmap_mode="r")
        meta = json.loads((root / f"{split}_meta.json").read_text())
        self.n = meta["n"]
        self.lens = np.array([s["len"] for s in meta["segments"]])
        self.limited = np.array([s["limiter"] != "none" for s in meta["segments"]])
        # data built before the recipe folded pedalboard's make-up gain into the reference
        self.ref_scale = np.array([recipe.pedalboard_makeup(s["ceiling_db"]) if s["limiter"] == "pedalboard"
                                   and not s.get("ref_has_makeup") else 1.0 for s in meta["segments"]], np.float32)

    def batch(self, idx, frames: int, rng=None):
        n = frames * HOP
        Y = np.zeros((len(idx), n, 2), np.float32)
        X = np.zeros_like(Y)
        G = np.full((len(idx), n), np.nan, np.float32)
        for b, i in enumerate(idx):
            m = min(n, self.lens[i])
            s = 0 if rng is None or self.lens[i] <= n else int(rng.integers(0, self.lens[i] - n))
            Y[b, :m] = self.y[i, s:s + m]
            X[b, :m] = self.x[i, s:s + m] * self.ref_scale[i]
            G[b, :m] = self.g[i, s:s + m]
        return torch.from_numpy(Y), torch.from_numpy(X), torch.from_numpy(G)


def restore(model, y: torch.Tensor):
    """y [B, n, 2] (n a multiple of HOP) -> (log inverse gain [B, n], restored [B, n, 2]), both
    aligned with y (the first LOOKAHEAD_FRAMES frames of future are fed as zeros at the end)."""
    B, n, _ = y.shape
    pad = torch.zeros(B, LOOKAHEAD_FRAMES * HOP, 2)
    frames = torch.cat([y, pad], 1).reshape(B, -1, HOP, 2)
    knots, _, _ = model(frames, *model.initial_state(B))
    a = interpolate(knots[:, LOOKAHEAD_FRAMES:])
    return a, y * torch.exp(a).unsqueeze(-1)


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


def losses(model, Y, X, G):
    """(gain L1 where the limiter reports its gain, -SI-SDR of the restored waveform)."""
    a, xh = restore(model, Y)
    mask = torch.isfinite(G)
    gl = (a + torch.where(mask, G, torch.zeros_like(G))).abs()  # target a = -log g
    gain_l1 = (gl * mask).sum() / mask.sum().clamp(min=1)
    return gain_l1, neg_si_sdr(xh, X)


@torch.no_grad()
def validate(model, val: Segments, frames: int) -> dict:
    model.eval()
    model.clamp_output = True  # measure what the exported model will do
    gains, clean, l1 = [], [], []
    for s in range(0, val.n, 16):
        idx = list(range(s, min(val.n, s + 16)))
        Y, X, G = val.batch(idx, frames)
        gl, _ = losses(model, Y, X, G)
        l1.append(float(gl))
        _, xh = restore(model, Y)
        for b, i in enumerate(idx):
            m = min(frames * HOP, val.lens[i])
            ref = X[b, :m].numpy()
            if val.limited[i]:
                # capped: a barely touched segment (input SI-SDR ~ 150 dB) must not swamp the mean
                gains.append(min(60.0, si_sdr(xh[b, :m].numpy(), ref)) - min(60.0, si_sdr(Y[b, :m].numpy(), ref)))
            else:  # un-limited input: how close the output stays to it (input SI-SDR is infinite)
                clean.append(si_sdr(xh[b, :m].numpy(), ref))
    model.clamp_output = False
    model.train()
    return {"val_sisdr_gain_db": float(np.mean(gains)) if gains else 0.0, "val_clean_sisdr_db": float(np.mean(clean or [np.nan])),
            "val_gain_l1": float(np.mean(l1))}


def export(model, path: Path, meta: dict) -> None:
    """ONNX with explicit streaming state; written to a temp file, then renamed (atomic)."""
    import onnx

    from realtime.io.files import atomic_write

    model.eval()
    model.clamp_output = True
    frames = torch.zeros(1, 2, HOP, 2)
    e, h = model.initial_state(1)
    with atomic_write(path, suffix=".onnx.part") as tmp:
        torch.onnx.export(model, (frames, e, h), str(tmp), dynamo=False, opset_version=17,
                          input_names=["frames", "e_hist", "h"], output_names=["knots", "e_hist_out", "h_out"],
                          dynamic_axes={"frames": {0: "batch", 1: "time"}, "e_hist": {0: "batch"}, "h": {1: "batch"},
                                        "knots": {0: "batch", 1: "time"}, "e_hist_out": {0: "batch"},
                                        "h_out": {1: "batch"}})
        m = onnx.load(str(tmp))
        for k, v in {"hop": HOP, "lookahead_frames": LOOKAHEAD_FRAMES, "knots": model.head[-1].out_features,
                     **meta}.items():
            p = m.metadata_props.add()
            p.key, p.value = str(k), str(v)
        onnx.save(m, str(tmp))
    model.clamp_output = False
    model.train()


def train(data_root: Path, out: Path, ckpt_dir: Path, minutes: float, batch: int, frames: int,
          max_steps: int | None, val_every: int, lr: float, seed: int, init: Path | None = None) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tr, va = Segments(data_root, "train"), Segments(data_root, "val")
    model = Delimiter()
    if init is not None:  # warm start from an earlier run's weights
        model.load_state_dict(torch.load(init))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}, train {tr.n}, val {va.n}", flush=True)
    t0 = time.monotonic()
    budget = minutes * 60.0
    best = {"val_sisdr_gain_db": -math.inf}
    step = 0
    log = []
    while True:
        elapsed = time.monotonic() - t0
        if elapsed > budget or (max_steps is not None and step >= max_steps):
            break
        for gparam in opt.param_groups:  # cosine decay over the wall-time budget
            gparam["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget))))
        Y, X, G = tr.batch(rng.integers(0, tr.n, batch), frames, rng)
        sign = float(rng.choice([1.0, -1.0]))  # polarity: the gain must not depend on it
        Y, X = Y * sign, X * sign
        gl, wl = losses(model, Y, X, G)
        loss = GAIN_WEIGHT * gl + WAVE_WEIGHT * wl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            print(f"step {step} t={elapsed:.0f}s gain_l1={float(gl):.4f} neg_sisdr={float(wl):.2f}", flush=True)
        if step % val_every == 0 or (max_steps is not None and step >= max_steps) or \
                time.monotonic() - t0 > budget:
            v = validate(model, va, frames=min(va.lens.max() // HOP, 800))
            v.update(step=step, minutes=(time.monotonic() - t0) / 60)
            log.append(v)
            print(json.dumps(v), flush=True)
            torch.save(model.state_dict(), ckpt_dir / "last.pt")
            if v["val_sisdr_gain_db"] > best["val_sisdr_gain_db"]:
                best = v
                torch.save(model.state_dict(), ckpt_dir / "best.pt")
                export(model, out, {"val_sisdr_gain_db": f"{v['val_sisdr_gain_db']:.2f}", "step": step})
    if not (ckpt_dir / "best.pt").exists() or best["val_sisdr_gain_db"] == -math.inf:
        torch.save(model.state_dict(), ckpt_dir / "best.pt")  # no validation ran: keep the last state
        export(model, out, {"step": step})
    (ckpt_dir / "train_log.json").write_text(json.dumps({"params": n_params, "log": log, "best": best}, indent=1))
    return {"params": n_params, "steps": step, "best": best}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="train delimiter")
    ap.add_argument("--smoke", action="store_true", help="tiny data, a few steps, export to checkpoints/")
    ap.add_argument("--minutes", type=float, default=50.0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=384, help="frames of %d samples per training crop" % HOP)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=recipe.DEFAULT_OUT)
    ap.add_argument("--out", type=Path, default=None, help="ONNX path (default: the committed model)")
    ap.add_argument("--ckpt", type=Path, default=None, help="checkpoint folder")
    ap.add_argument("--init", type=Path, default=None, help="start from these weights (a .pt state dict)")
    a = ap.parse_args(argv)
    if a.smoke:
        smoke_dir = a.ckpt or ROOT / "checkpoints" / "delimiter-smoke"
        data_root = smoke_dir / "data"
        if not (data_root / "DONE").exists():
            recipe.build(data_root, n_train=8, n_val=2, seconds=1.0, max_tracks=4, eval_segments=False)
        res = train(data_root, a.out or smoke_dir / "delimiter.onnx", smoke_dir, minutes=5.0, batch=2,
                    frames=32, max_steps=a.steps or 3, val_every=10**9, lr=a.lr, seed=a.seed)
    else:
        if not (a.data / "DONE").exists():
            recipe.build(a.data)
        res = train(a.data, a.out or MODEL_PATH, a.ckpt or CKPT_DIR, a.minutes, a.batch, a.frames, a.steps,
                    a.val_every, a.lr, a.seed, a.init)
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
