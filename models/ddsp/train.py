"""Train one DDSP instrument and export it to ONNX (+ model card).

    python -m models.ddsp.data                                   # build data/ddsp (once)
    nice python main.py train ddsp --instrument violin           # full run -> models/ddsp/violin.onnx
    python main.py train ddsp --instrument flute --smoke         # CI: synthetic tones, few steps, export

The exported graph takes plain Hz and dB and carries the GRU state explicitly:
  inputs  f0_hz (V, T), loudness_db (V, T), state (1, V, H)       V = voices (batch), T = frames
  outputs harmonics (V, T, 64), noise (V, T, 65), state_out (1, V, H)
Metadata (custom_metadata_map) tells the runtime synth everything else: frame rate, band limit,
noise FIR length, and how MIDI velocity/pitch map to loudness (fitted on the rendered data).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from models.run_folder import check_writable, claim_run_folder
from realtime.argtypes import OneLineParser, non_negative_int, positive_float, positive_int

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DATA = ROOT / "data" / "ddsp"
CKPT = ROOT / "checkpoints" / "ddsp"


def parse(argv):
    from models.ddsp.data import INSTRUMENTS

    ap = OneLineParser(prog="train ddsp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instrument", required=True, choices=sorted(INSTRUMENTS))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--steps", type=positive_int, default=4000)
    ap.add_argument("--max-minutes", type=positive_float, default=15.0, help="stop (and export the best) after this")
    ap.add_argument("--batch", type=positive_int, default=8)
    ap.add_argument("--frames", type=positive_int, default=200, help="segment length in 4 ms frames")
    ap.add_argument("--hidden", type=positive_int, default=96)
    ap.add_argument("--lr", type=positive_float, default=2e-3)
    ap.add_argument("--seed", type=non_negative_int, default=0)
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--val-every", type=positive_int, default=100)
    ap.add_argument("--export", type=Path, default=None, help="ONNX path (default models/ddsp/<inst>.onnx)")
    ap.add_argument("--f0", choices=("midi", "audio"), default="midi",
                    help="f0 labels: the MIDI pitch, or the MIDI pitch refined on the audio (data.refine_f0)")
    ap.add_argument("--smoke", action="store_true", help="synthetic tones, a few steps, export (CI)")
    ap.add_argument("--export-only", action="store_true", help="export the saved best checkpoint")
    ap.add_argument("--ckpt", type=Path, default=None,
                    help="checkpoint folder (default checkpoints/ddsp/<inst>; --smoke: checkpoints/ddsp-smoke/<inst>)")
    a = ap.parse_args(argv)
    ckpt = a.ckpt
    a.ckpt = ckpt or CKPT / a.instrument
    if a.smoke:
        a.steps, a.batch, a.frames, a.val_every, a.max_minutes = 6, 2, 50, 3, 2.0
        a.ckpt = ckpt or ROOT / "checkpoints" / "ddsp-smoke" / a.instrument
        a.export = a.export or a.ckpt / f"{a.instrument}.onnx"
    a.export = a.export or HERE / f"{a.instrument}.onnx"
    check_writable(a.export)
    if not a.export_only:
        check_writable(a.ckpt / "best.pt")
    elif not (a.ckpt / "best.pt").is_file():
        raise SystemExit(f"--export-only: no best.pt in {a.ckpt} (a training run writes it)")
    return a


# ------------------------------------------------------------------------------ data
def synthetic_split(seed: int, seconds: float = 20.0) -> dict:
    """Harmonic tones with vibrato and envelopes (smoke runs: no FluidSynth needed)."""
    from models.ddsp.data import FRAME_RATE, HOP, SR, a_weighted_loudness

    rng = np.random.default_rng(seed)
    n_frames = int(seconds * FRAME_RATE)
    f0 = np.zeros(n_frames, np.float32)
    env = np.zeros(n_frames, np.float32)
    notes, t = [], 0
    while t < n_frames - 50:
        d = int(rng.integers(40, 150))
        p = int(rng.integers(55, 85))
        v = int(rng.integers(30, 127))
        f0[t:] = 440 * 2 ** ((p - 69) / 12)
        e = (v / 127) ** 2 * np.minimum(1, np.arange(d) / 5.0)
        env[t:t + d] = e[: min(d, n_frames - t)]
        notes.append((t / FRAME_RATE, (t + d) / FRAME_RATE, p, v))
        t += d + int(rng.integers(5, 40))
    f0s = np.repeat(f0, HOP)
    es = np.repeat(env, HOP)
    ph = 2 * np.pi * np.cumsum(f0s / SR)
    audio = sum(es * np.sin(k * ph) / k for k in range(1, 12)) * 0.2
    audio = (audio + 0.003 * rng.standard_normal(audio.shape)).astype(np.float32)
    ld = a_weighted_loudness(audio, SR, HOP)[:n_frames]
    return {"audio": audio, "f0_hz": f0, "loudness_db": ld, "notes": np.asarray(notes, np.float64)}


def load_split(a, split: str) -> dict:
    if a.smoke:
        return synthetic_split(a.seed + (split == "val"))
    path = a.data / a.instrument / f"{split}.npz"
    if not path.exists():
        raise SystemExit(f"no data at {path}: run `python -m models.ddsp.data --instrument {a.instrument}` first")
    d = np.load(path)
    out = {k: d[k] for k in ("audio", "f0_hz", "loudness_db", "notes")}
    if a.f0 == "midi":
        out["f0_hz"] = d["f0_midi_hz"]
    return out


def segment_starts(d: dict, frames: int, min_db: float = -60.0) -> np.ndarray:
    """Frame offsets of segments that contain sound (mean loudness above min_db)."""
    ld = d["loudness_db"]
    n = len(ld) - frames
    c = np.concatenate([[0.0], np.cumsum(ld, dtype=np.float64)])
    starts = np.arange(0, n, 5)
    mean = (c[starts + frames] - c[starts]) / frames
    return starts[mean > min_db]


def batch_at(d: dict, starts, frames: int, hop: int):
    import torch

    f0 = np.stack([d["f0_hz"][s:s + frames] for s in starts])
    ld = np.stack([d["loudness_db"][s:s + frames] for s in starts])
    au = np.stack([d["audio"][s * hop:(s + frames) * hop] for s in starts])
    return torch.from_numpy(f0), torch.from_numpy(ld), torch.from_numpy(au)


def fit_loudness_map(notes: np.ndarray, ld: np.ndarray, frame_rate: float) -> dict:
    """Least squares: sustained loudness (dB) ~ c0 + c1 * 40 log10(vel/127) + c2 * (pitch - 60) / 12,
    and the median release slope after note-off (dB/s). The runtime synth turns MIDI into the
    decoder's loudness input with these."""
    rows, ys, slopes = [], [], []
    for on, off, p, v in notes:
        i0, i1 = int((on + 0.08) * frame_rate), int(off * frame_rate)
        if i1 - i0 >= 10:
            rows.append([1.0, 40 * math.log10(max(v, 1) / 127), (p - 60) / 12])
            ys.append(float(np.median(ld[i0:i1])))
            j = int(off * frame_rate)
            if j + 25 < len(ld):
                slopes.append((ld[j + 25] - ld[j]) / 0.1)
    if len(rows) < 3:
        return {"c0": -20.0, "c1": 1.0, "c2": 0.0, "release_db_per_s": -200.0}
    c, *_ = np.linalg.lstsq(np.asarray(rows), np.asarray(ys), rcond=None)
    return {"c0": float(c[0]), "c1": float(c[1]), "c2": float(c[2]),
            "release_db_per_s": float(np.median(slopes)) if slopes else -200.0}


# ------------------------------------------------------------------------------ export
class Exported:
    """Wraps the decoder with the ONNX signature (a plain module so torch.onnx traces it)."""

    @staticmethod
    def module(dec):
        import torch

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.dec = dec

            def forward(self, f0_hz, loudness_db, state):
                return self.dec(f0_hz, loudness_db, state)

        return M().eval()


def export_onnx(dec, path: Path, meta: dict) -> None:
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    m = Exported.module(dec)
    v, t = 3, 4
    args = (torch.full((v, t), 220.0), torch.full((v, t), -30.0), torch.zeros(1, v, dec.hidden))
    from realtime.io.files import atomic_write

    with atomic_write(path, suffix=".onnx.part") as tmp:
        torch.onnx.export(m, args, str(tmp), dynamo=False, opset_version=17,
                          input_names=["f0_hz", "loudness_db", "state"],
                          output_names=["harmonics", "noise", "state_out"],
                          dynamic_axes={"f0_hz": {0: "voices", 1: "frames"}, "loudness_db": {0: "voices", 1: "frames"},
                                        "state": {1: "voices"}, "harmonics": {0: "voices", 1: "frames"},
                                        "noise": {0: "voices", 1: "frames"}, "state_out": {1: "voices"}})
        model = onnx.load(str(tmp))
        for k, val in meta.items():
            p = model.metadata_props.add()
            p.key, p.value = k, val if isinstance(val, str) else json.dumps(val)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
        # check the exported graph against torch before it replaces anything
        from models.export_check import check_parity

        rng = np.random.default_rng(0)
        check_parity(tmp, m, {"f0_hz": rng.uniform(100, 900, (2, 7)).astype(np.float32),
                              "loudness_db": rng.uniform(-90, 0, (2, 7)).astype(np.float32),
                              "state": (0.1 * rng.standard_normal((1, 2, dec.hidden))).astype(np.float32)})


def metadata(a, dec, lmap: dict, val_loss: float, steps: int) -> dict:
    from models.ddsp.data import FRAME_RATE, INSTRUMENTS, SR
    from models.ddsp.model import BAND_LIMIT_HZ, LD_FLOOR, NOISE_TAPS

    return {"instrument": a.instrument, "gm_program": str(INSTRUMENTS[a.instrument][0]),
            "frame_rate": str(FRAME_RATE), "train_sr": str(SR), "band_limit_hz": str(BAND_LIMIT_HZ),
            "noise_taps_at_train_sr": str(NOISE_TAPS), "hidden": str(dec.hidden),
            "loudness_floor_db": str(LD_FLOOR), "loudness_map": json.dumps(lmap),
            "val_mrstft": f"{val_loss:.4f}", "steps": str(steps), "smoke": str(bool(a.smoke)),
            "f0_labels": a.f0}


# ------------------------------------------------------------------------------ train
def main(argv=None) -> int:
    import torch

    from models.ddsp.data import FRAME_RATE, HOP, SR
    from models.ddsp.model import Decoder, MultiResolutionSTFTLoss, synth
    from models.run_folder import save_torch

    a = parse(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.export_only:  # the weights alone: no data needed, and the card is the run's own
        return export_best(a, a.ckpt / "best.pt")
    rng = np.random.default_rng(a.seed)
    train, val = load_split(a, "train"), load_split(a, "val")
    lmap = fit_loudness_map(train["notes"], train["loudness_db"], FRAME_RATE)
    tr_starts = segment_starts(train, a.frames)
    va_starts = segment_starts(val, a.frames)
    if not len(tr_starts) or not len(va_starts):
        raise SystemExit(f"--frames {a.frames}: no segment of the data is that long and has sound")
    va_pick = va_starts[np.linspace(0, len(va_starts) - 1, min(16, len(va_starts))).astype(int)]
    dec = Decoder(a.hidden)
    loss_fn = MultiResolutionSTFTLoss()
    claim_run_folder(a.ckpt)
    best_path = a.ckpt / "best.pt"
    # how the weights were made, kept with them: an --export-only writes its card and metadata from these
    run_facts = {"instrument": a.instrument, "f0": a.f0, "lr": a.lr, "batch": a.batch, "frames": a.frames,
                 "max_minutes": a.max_minutes, "smoke": bool(a.smoke), "train_s": len(train["audio"]) / SR}
    n_params = sum(p.numel() for p in dec.parameters())
    print(f"ddsp {a.instrument}: {n_params} params, {len(tr_starts)} train / {len(va_starts)} val segments, "
          f"loudness map {lmap}", flush=True)

    def validate() -> float:
        dec.eval()
        # same noise every time, from a stream of its own: re-seeding the global one restarted the
        # training's noise at every validation, whatever --seed said
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(123)
            tot = 0.0
            for i in range(0, len(va_pick), 8):
                f0, ld, au = batch_at(val, va_pick[i:i + 8], a.frames, HOP)
                harm, nz, _ = dec(f0, ld, dec.initial_state(f0.shape[0]))
                tot += float(loss_fn(synth(f0, harm, nz, HOP, SR), au)) * f0.shape[0]
        dec.train()
        return tot / len(va_pick)

    best, step, t0 = float("inf"), 0, time.monotonic()
    opt = torch.optim.Adam(dec.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.15, 0.5 ** (s / 1500)))
    run = 0.0
    while step < a.steps and time.monotonic() - t0 < a.max_minutes * 60:
        f0, ld, au = batch_at(train, rng.choice(tr_starts, a.batch), a.frames, HOP)
        harm, nz, _ = dec(f0, ld, dec.initial_state(a.batch))
        loss = loss_fn(synth(f0, harm, nz, HOP, SR), au)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dec.parameters(), 2.0)
        opt.step()
        sched.step()
        step += 1
        run = 0.95 * run + 0.05 * float(loss) if step > 1 else float(loss)
        if step % a.val_every == 0 or step == a.steps:
            v = validate()
            if v < best:
                best = v
                save_torch({"model": dec.state_dict(), "hidden": a.hidden, "step": step, "val": v, "lmap": lmap,
                            "run": {**run_facts, "seconds": time.monotonic() - t0}},
                           best_path)  # atomic: a full disk keeps the previous best
            print(f"step {step} train {run:.4f} val {v:.4f} best {best:.4f} "
                  f"({(time.monotonic() - t0) / step:.2f} s/step)", flush=True)
    if best == float("inf"):  # --max-minutes ran out before a validation: export this run, not an older best.pt
        best = validate()
        save_torch({"model": dec.state_dict(), "hidden": a.hidden, "step": step, "val": best, "lmap": lmap,
                    "run": {**run_facts, "seconds": time.monotonic() - t0}}, best_path)
    return export_best(a, best_path)


def export_best(a, best_path: Path) -> int:
    """Export ``best_path`` to ``a.export``, its metadata and model card (beside it) from how those
    weights were trained (the checkpoint's ``run``), not from this command line: an --export-only
    re-carded a model trained with --f0 audio as --f0 midi, Adam 0.002, with 0 min of training. A
    checkpoint that does not say how (saved before) gets no card."""
    import torch

    from models.ddsp.model import Decoder

    try:  # --export-only reads what may be anything
        ck = torch.load(best_path, weights_only=False)
        dec = Decoder(ck["hidden"])
        dec.load_state_dict(ck["model"])
    except Exception as e:
        raise SystemExit(f"{best_path}: not a DDSP checkpoint ({type(e).__name__})") from None
    run = ck.get("run")
    if run is not None and run["instrument"] != a.instrument:
        raise SystemExit(f"{best_path}: a {run['instrument']} model, not a {a.instrument} one (--instrument)")
    made = argparse.Namespace(**{**vars(a), **(run or {})})
    dec.eval()
    export_onnx(dec, a.export, metadata(made, dec, ck["lmap"], ck["val"], ck["step"]))
    print(f"exported {a.export} (best val {ck['val']:.4f} at step {ck['step']})", flush=True)
    if made.smoke:
        return 0
    if run is None:
        print(f"no model card written: {best_path} does not say how it was trained (saved before it did)",
              file=sys.stderr)
        return 0
    write_card(made, dec, ck, sum(p.numel() for p in dec.parameters()), run["seconds"], run["train_s"])
    return 0


def write_card(a, dec, ck, n_params: int, seconds: float, train_s: float) -> None:
    from models.ddsp.data import INSTRUMENTS
    from realtime.io.files import atomic_write_text

    card = a.export.with_suffix(".md")  # beside its model: only an export to the default path touches the repo's
    prog, lo, hi = INSTRUMENTS[a.instrument]
    text = f"""# DDSP {a.instrument}

Decoder for the real-time DDSP synth (`realtime/dsp/processors/synth/processor.py`), trained by
`python main.py train ddsp --instrument {a.instrument} --f0 {a.f0} --max-minutes {a.max_minutes:g}` on data from
`python -m models.ddsp.data`.

- **Data**: FluidR3_GM (Debian `fluid-soundfont-gm`), GM program {prog + 1}, rendered dry by FluidSynth
  at 24 kHz from generated monophonic MIDI: Essen folk melodies (music21 corpus), scales, arpeggios,
  long notes with expression swells, vibrato and bends; notes {lo}..{hi}. {train_s / 60:.1f} min of
  training audio; validation phrases held out; benchmark melodies from Essen collections never
  used in training.
- **Inputs** per 4 ms frame: f0 (Hz; labels `--f0 {a.f0}`: {"the MIDI pitch" if a.f0 == "midi" else "the MIDI pitch refined on the audio"}),
  A-weighted loudness (dB, measured, 11 ms window).
- **Model**: MLP(2->{dec.hidden}) -> GRU({dec.hidden}) -> MLP -> 64 harmonic amplitudes (band limit
  12 kHz) + 65 noise bands (128-tap FIR at 24 kHz); {n_params} parameters; ONNX with explicit GRU
  state and a voice batch axis.
- **Training**: multi-resolution STFT loss (FFT 2048..64) through the differentiable synth,
  Adam {a.lr:g}, batch {a.batch} x {a.frames * 4} ms, {ck['step']} steps kept (best validation),
  {seconds / 60:.1f} min on 1 CPU thread.
- **Validation MR-STFT loss**: {ck['val']:.4f} (decoder driven by measured loudness).
- **MIDI to loudness** (fitted on the data, used by the runtime synth):
  `{json.dumps(ck['lmap'])}`
- **Latency**: the synth ramps each frame's controls over the following frame: note-on to sound
  at most 1 frame (4 ms) after the block that carries it. See `python main.py bench synth --json`
  for real-time factor, latency and spectral distance against the soundfont on held-out melodies.
"""
    atomic_write_text(card, text, suffix=".md.part")


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
