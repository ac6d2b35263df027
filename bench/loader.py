"""What one enhancer training example costs the data pipeline: mixing, and the pitch features by
the workers (Numba, per example) or by the trainer (torch, per batch; on CUDA when present).

    python main.py bench loader [--examples 100] [--seconds 1.5] [--batch 64] [--workers 14] [--json]

Why: on the first GPU run the trainer waited for its loader 65-80 % of the time; the figures say
how many examples per second a number of workers can make, with and without the pitch search in
them. Medians over the examples (or batches); the mixtures come from ``data/enhancer`` when the
recipe has built it, else from the synthetic smoke corpus (said in the output).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import emit
from realtime.argtypes import OneLineParser, positive


def _example_seconds(text: str) -> float:
    """An example's length: at least one analysis window's worth (0.05 s), at most a minute."""
    v = positive(most=60)(text)
    if v < 0.05:
        raise argparse.ArgumentTypeError(f"must be at least 0.05 (an analysis window), got {text}")
    return v


def get_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="bench loader", description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=positive(int), default=100, help="examples mixed and analysed one by one")
    ap.add_argument("--seconds", type=_example_seconds, default=1.5, help="example length (the GPU recipe's)")
    ap.add_argument("--batch", type=positive(int), default=64, help="batch of the trainer's search (the GPU recipe's)")
    ap.add_argument("--workers", type=positive(int), default=14, help="workers the projected examples/s are for")
    ap.add_argument("--json", action="store_true")
    return ap


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def main(argv=None) -> int:
    a = get_parser().parse_args(argv)
    import torch

    from models.enhancer.data import Mixer, Pool, synthetic_pools
    from models.enhancer.model import HOP, SR, WIN, windows
    from models.enhancer.pitch_batch import BatchPitch
    from models.enhancer.train import DEFAULT_DATA, pitch_features_of
    from realtime.dsp.erb import MIN_BAND_HZ

    torch.set_num_threads(1)
    real = (DEFAULT_DATA / "train_speech.npy").exists()
    speech, noise = ((Pool.load(DEFAULT_DATA / "train_speech"), Pool.load(DEFAULT_DATA / "train_noise")) if real
                     else synthetic_pools(seed=0))
    mixer = Mixer(speech, noise, seconds=a.seconds, snr=(-5.0, 20.0), p_level_step=0.3, p_onset=0.15, p_clean=0.1,
                  dc_free=True)  # the trainer's defaults
    rng = np.random.default_rng(0)
    for _ in range(5):  # first calls load kernels and caches
        mixer.draw(rng)
    mix_ms = _median_ms(lambda: mixer.draw(rng), a.examples)
    xs = [mixer.draw(rng)[0] for _ in range(a.examples)]
    win = windows(WIN)[0]
    pitch_features_of(xs[0][None], WIN)
    it = iter(xs * 2)
    numba_ms = _median_ms(lambda: pitch_features_of(next(it)[None], WIN, MIN_BAND_HZ), a.examples)
    rows = {"bench": "loader", "data": "data/enhancer" if real else "synthetic", "seconds": a.seconds,
            "mix_ms": round(mix_ms, 2), "pitch_numba_ms": round(numba_ms, 2)}
    batch = torch.from_numpy(np.stack([xs[i % len(xs)] for i in range(a.batch)]))
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        search = BatchPitch(SR, win, HOP, MIN_BAND_HZ, dev)
        xb = batch.to(dev)
        search(xb)

        def one():
            search(xb)
            if dev == "cuda":
                torch.cuda.synchronize()

        rows[f"pitch_batch_{dev}_ms_per_example"] = round(_median_ms(one, 3) / a.batch, 2)
    rows["workers"] = a.workers
    rows["examples_per_s_mixing_and_pitch"] = round(a.workers * 1e3 / (mix_ms + numba_ms))
    rows["examples_per_s_mixing_only"] = round(a.workers * 1e3 / mix_ms)
    emit(rows, a.json)
    return 0


if __name__ == "__main__":
    import sys

    from realtime.errors import run_cli

    sys.exit(run_cli(main))
