"""Teacher targets: the training voices through the shipped enhancer, for ``train --teacher-targets``.

    python -m models.enhancer.targets [--data data/enhancer] [--model models/enhancer/enhancer.onnx]

Writes ``train_speech_teacher.npy`` beside ``train_speech.npy`` (same clips, same offsets, int16):
each training utterance (its DC offset taken out) through the real-time processor with its
default knobs, aligned by the processor's latency, forwards and backwards in time (a causal
teacher cuts onsets), its voice at the recording's level (``teacher_target``). ~25 min per 10 h of
speech on one core.

Why (MODEL_CARD.md, "Teacher targets"): the "clean" voices are recordings with their own room tone,
hiss and reverberation, and a network trained to return them keeps what DNSMOS hears as background.
Ideal gains towards these targets score DNSMOS OVRL 2.55 on the selection clips against 2.40 towards
the recordings, at the same PESQ-WB against the recordings (3.38 vs 3.37).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from realtime.argtypes import OneLineParser

ROOT = Path(__file__).resolve().parents[2]
BLOCK = 480
SUFFIX = "_teacher"


def teacher_path(stem: Path) -> Path:
    """Where the teacher targets of a pool ``stem`` (…/train_speech) live."""
    return stem.with_name(stem.name + SUFFIX + ".npy")


def through(proc, x: np.ndarray) -> np.ndarray:
    """x [n] float32 through a prepared processor from a fresh state, aligned (its latency removed)."""
    L = proc.latency
    proc.reset()
    xb = np.zeros((len(x) + L + BLOCK, 1), np.float32)
    xb[: len(x), 0] = x
    for s in range(0, len(xb), BLOCK):
        proc.process(xb[s : s + BLOCK])
    return xb[L : L + len(x), 0].copy()


def loud_level_gain(x: np.ndarray, y: np.ndarray, frame: int = 480) -> float:
    """The gain (1 … 2) that gives y the level of x over x's loudest fifth of frames, where the voice
    dominates: a mask-based enhancer leaves a voice 0.6 dB low there (median of the training voices),
    and a student would learn that loss."""
    n = len(x) // frame * frame
    if n < 5 * frame:
        return 1.0
    ex = np.sum(x[:n].astype(np.float64).reshape(-1, frame) ** 2, axis=1)
    ey = np.sum(y[:n].astype(np.float64).reshape(-1, frame) ** 2, axis=1)
    loud = ex >= np.percentile(ex, 80)
    if ey[loud].sum() <= 0:
        return 1.0
    return float(np.clip(np.sqrt(ex[loud].sum() / ey[loud].sum()), 1.0, 2.0))


def _one_way(proc, c: np.ndarray) -> np.ndarray:
    """c through the processor from a state warmed up on up to 1 s of c played backwards (a fresh
    state cuts the first 50 ms by 10-70 dB)."""
    w = min(len(c), 48000)
    return through(proc, np.concatenate([c[:w][::-1], c]))[w:]


def keep_voice(g: np.ndarray, keep: float) -> np.ndarray:
    """Teacher gains g with every bin the teacher passes by ``keep`` or more set to 1, those below
    keep/2 left as they are and a linear ramp between: the target loses what the teacher calls noise
    and keeps the voice exactly as recorded (keep 0: the teacher's gains unchanged)."""
    if keep <= 0:
        return g
    ramp = np.clip((g - keep / 2) / (keep / 2), 0.0, 1.0)
    return g + (1.0 - g) * ramp


def teacher_target(proc, c: np.ndarray, nfft: int = 960, keep: float = 0.0) -> np.ndarray:
    """One utterance's target: c (its mean taken out) through the processor forwards and backwards
    in time, keeping per STFT bin the larger of the two outputs' magnitudes (at most the input's), at
    the level of its voice (``loud_level_gain``); with ``keep`` the bins the teacher passes are kept
    whole (``keep_voice``).

    Why both ways: a causal enhancer needs a few frames to hear that a sound is a voice, so it cuts
    the first 25-50 ms after a pause by 15-25 dB (espeak "Please" after 50 ms of hiss). Played
    backwards, that onset is the end of a word, which it keeps. The union of the two keeps every
    onset and still drops what both directions call noise."""
    import scipy.signal as sps

    c = (c - np.float32(np.mean(c))).astype(np.float32)
    if len(c) < nfft:
        return c
    fwd = _one_way(proc, c)
    bwd = _one_way(proc, c[::-1].copy())[::-1]
    _, _, X = sps.stft(c, nperseg=nfft)
    _, _, F = sps.stft(fwd, nperseg=nfft)
    _, _, B = sps.stft(bwd, nperseg=nfft)
    ax = np.abs(X)
    g = np.minimum(np.maximum(np.abs(F), np.abs(B)) / np.maximum(ax, 1e-12), 1.0)
    g = keep_voice(g, keep)
    g[ax < 1e-9] = 0.0  # digital silence stays silent
    y = sps.istft(X * g, nperseg=nfft)[1][: len(c)].astype(np.float32)
    y = np.concatenate([y, np.zeros(len(c) - len(y), np.float32)])
    return (y * loud_level_gain(c, y)).astype(np.float32)


def _write_share(src_path: Path, part: Path, offsets: list[int], model: Path | None, job: int, jobs: int,
                 log, keep: float = 0.0) -> None:
    """Clips job, job + jobs, ... of the pool into the (already created) part file."""
    from realtime.dsp.processors.neural.enhancer import Enhancer

    src = np.load(src_path, mmap_mode="r")
    dst = np.load(part, mmap_mode="r+")
    proc = Enhancer(model_path=model) if model else Enhancer()
    proc.prepare(48000, BLOCK, 1)
    t0, done, n = time.monotonic(), 0, len(offsets) - 1
    for k, i in enumerate(range(job, n, jobs)):
        a, b = offsets[i], offsets[i + 1]
        c = src[a:b].astype(np.float32) / 32767.0 if src.dtype == np.int16 else np.asarray(src[a:b], np.float32)
        y = teacher_target(proc, c, keep=keep) if len(c) else c
        dst[a:b] = np.clip(np.round(y * 32767.0), -32767, 32767).astype(np.int16)
        done += b - a
        if log and job == 0 and k % 500 == 0:
            log(f"[teacher] {i + 1}/{n} clips, {jobs * done / 48000 / 3600:.2f} h, "
                f"RTF {(time.monotonic() - t0) / max(done / 48000, 1e-9):.3f} per job")
    dst.flush()


def write_teacher(stem: Path, model: Path | None = None, log=print, jobs: int = 1, keep: float = 0.0) -> Path:
    """Run every clip of the pool ``stem`` through the teacher (``jobs`` processes); returns the
    written .npy path. Written to a .part file and renamed, so an interrupted run leaves no
    half-written targets."""
    from concurrent.futures import ProcessPoolExecutor

    from realtime.dsp.processors.neural.enhancer import DEFAULT_MODEL
    from realtime.io.files import atomic_write_text

    src_path = stem.with_suffix(".npy")
    src = np.load(src_path, mmap_mode="r")
    offsets = json.loads(stem.with_suffix(".json").read_text())["offsets"]
    out_path = teacher_path(stem)
    part = out_path.with_name(f".{out_path.name}.{os.getpid()}.part")
    try:
        blank = np.lib.format.open_memmap(part, mode="w+", dtype=np.int16, shape=src.shape)
        del blank  # the jobs open it themselves
        if jobs <= 1:
            _write_share(src_path, part, offsets, model, 0, 1, log, keep)
        else:
            with ProcessPoolExecutor(jobs) as ex:
                for f in [ex.submit(_write_share, src_path, part, offsets, model, j, jobs, log, keep) for j in range(jobs)]:
                    f.result()
        os.replace(part, out_path)
    finally:
        part.unlink(missing_ok=True)
    model_file = Path(model or DEFAULT_MODEL)
    atomic_write_text(out_path.with_suffix(".json"), json.dumps({
        "source": src_path.name, "model": str(model_file), "directions": "forward and backward, per-bin max",
        "keep": keep, "model_md5": hashlib.md5(model_file.read_bytes()).hexdigest()}, indent=1))
    return out_path


def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m models.enhancer.targets", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "enhancer")
    ap.add_argument("--model", type=Path, default=None, help="teacher model (default: the shipped enhancer)")
    ap.add_argument("--jobs", type=int, default=1, help="processes")
    ap.add_argument("--keep", type=float, default=0.0,
                    help="bins the teacher passes by this gain or more stay whole (0: off; e.g. 0.5)")
    a = ap.parse_args(argv)
    if not 0.0 <= a.keep <= 1.0:
        raise SystemExit(f"--keep {a.keep}: a gain between 0 and 1")
    stem = a.data / "train_speech"
    if not stem.with_suffix(".npy").exists():
        raise SystemExit(f"no training voices in {a.data}: run `python -m models.enhancer.data --out {a.data}` first")
    from realtime.dsp.processors.neural.enhancer import Enhancer
    from realtime.errors import ModelError

    if a.model is not None:
        try:
            Enhancer(model_path=a.model).prepare(48000, BLOCK, 1)  # here: a one-line error, not a job's traceback
        except ModelError as e:
            raise SystemExit(str(e)) from None
    try:
        print(write_teacher(stem, a.model, jobs=max(1, a.jobs), keep=a.keep))
    except KeyboardInterrupt:
        raise SystemExit("interrupted; no teacher targets written") from None
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
