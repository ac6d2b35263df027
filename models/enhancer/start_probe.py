"""A stream that starts in the middle of speech (a file cut mid-word), from the network's fresh
state, against the same samples heard as part of the whole clip (warm): the level lost per 20 ms
window over the first 300 ms, where the voice is (its clean reference within 20 dB of its top).
And what a start must not cost: the regime the network settles in on a sustained vowel in white
noise (a start state trained with frozen weights kept another one for seconds: model card, item 18).

    python -m models.enhancer.start_probe [--set data/enhancer/select] [--model M.onnx] [--limit 24]

Prints one JSON line: per input kind (the noisy mixture, the clean reference), the clips, the median
of each clip's worst window, of its first 300 ms as a whole, and the median of each window; under
"sustained_vowel", a 150 Hz vowel in white noise from a fresh start: energy at its harmonics over
energy between them (dB, higher: less noise let through) over seconds 1-3 and 3-8, with the pitch
filter off, at 0.5 (the default) and at 1.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SR = 48000
W = 960  # 20 ms
WINDOWS = 15  # 300 ms


def _energy(x: np.ndarray) -> float:
    return float(np.sum(x.astype(np.float64) ** 2)) + 1e-12


def voiced(f0: float, seconds: float, sr: int = SR, harmonics: int = 30) -> np.ndarray:
    """A steady vowel-like tone: ``harmonics`` harmonics of ``f0`` falling as 1/k, peak about 0.1."""
    t = np.arange(int(sr * seconds)) / sr
    return 0.05 * sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, harmonics + 1) if f0 * k < sr / 2)


def harmonic_to_between(y: np.ndarray, f0: float, sr: int = SR) -> float:
    """Energy at the harmonics of ``f0`` over energy halfway between them (0.1-4.4 kHz), dB."""
    n = len(y)
    Y = np.abs(np.fft.rfft(y * np.hanning(n))) ** 2
    fr = np.fft.rfftfreq(n, 1 / sr)
    at = np.zeros(len(fr), bool)
    mid = np.zeros(len(fr), bool)
    for k in range(1, int(4400 / f0)):
        at |= np.abs(fr - f0 * k) < 5
        mid |= np.abs(fr - f0 * (k + 0.5)) < 20
    return float(10 * np.log10(Y[at].sum() / Y[mid].sum()))


def sustained_vowel(model: Path | None = None, f0: float = 150.0, seconds: float = 8.0) -> dict:
    """Harmonic-to-between (dB) of the enhanced vowel in noise over seconds 1-3 and 3-8, per pitch
    filter strength (0, 0.5, 1), each from a fresh start."""
    from realtime.dsp.processors.neural.enhancer import Enhancer

    x = (voiced(f0, seconds) + 0.02 * np.random.default_rng(1).standard_normal(int(seconds * SR))).astype(np.float32)
    out = {}
    for strength in (0.0, 0.5, 1.0):
        proc = Enhancer(model_path=model, pitch_filter=strength)  # (None: the shipped model)
        proc.prepare(SR, 480, 1)
        y = x[:, None].copy()
        for s in range(0, len(y), 480):
            proc.process(y[s:s + 480])
        proc.close()
        out[f"comb_{strength:g}"] = [round(harmonic_to_between(y[SR:3 * SR, 0], f0), 2),
                                     round(harmonic_to_between(y[3 * SR:, 0], f0), 2)]
    return out


def cut_point(clean: np.ndarray) -> int | None:
    """The first 20 ms window after 0.5 s where the voice is within 10 dB of its loud (95th percentile)
    windows, and was within 14 dB the window before: inside a word, not at its onset."""
    fr = np.sqrt(np.mean(clean[: len(clean) // W * W].reshape(-1, W) ** 2, 1))
    top = np.percentile(fr, 95)
    for i in range(int(0.5 * SR / W), len(fr) - WINDOWS - 5):
        if fr[i] > top * 10 ** (-10 / 20) and fr[i - 1] > top * 10 ** (-14 / 20):
            return i * W + W // 2
    return None


def probe(folder: Path, model: Path | None = None, limit: int = 24, block: int = 128) -> dict:
    import soundfile as sf

    from realtime.dsp.processors.neural.enhancer import Enhancer

    proc = Enhancer(model_path=model)  # (None: the shipped model)
    proc.prepare(SR, block, 1)
    L = proc.latency

    def run(x):
        proc.reset()
        xb = np.concatenate([x, np.zeros(L + block, np.float32)])[:, None].copy()
        for s in range(0, len(xb), block):
            proc.process(xb[s:s + block])
        return xb[L:L + len(x), 0]

    rows = {"noisy": [], "clean": []}
    for f in sorted((folder / "noisy").glob("*.wav"))[:limit]:
        noisy = sf.read(f, dtype="float32")[0]
        clean = sf.read(folder / "clean" / f.name, dtype="float32")[0]
        c = cut_point(clean)
        if c is None:
            continue
        top = np.percentile(np.sqrt(np.mean(clean[: len(clean) // W * W].reshape(-1, W) ** 2, 1)), 95)
        ref = clean[c:c + WINDOWS * W]
        for kind, x in (("noisy", noisy), ("clean", clean)):
            warm, cold = run(x)[c:c + WINDOWS * W], run(x[c:])[:WINDOWS * W]
            win = [10 * np.log10(_energy(cold[k * W:(k + 1) * W]) / _energy(warm[k * W:(k + 1) * W]))
                   for k in range(WINDOWS)]
            voiced = [w for k, w in enumerate(win) if np.sqrt(np.mean(ref[k * W:(k + 1) * W] ** 2)) > 0.1 * top]
            rows[kind].append((min(voiced) if voiced else 0.0, 10 * np.log10(_energy(cold) / _energy(warm)), win))
    return {kind: {"clips": len(v),
                   "median_worst_20ms_db": round(float(np.median([r[0] for r in v])), 2) if v else None,
                   "median_first_300ms_db": round(float(np.median([r[1] for r in v])), 2) if v else None,
                   "median_by_20ms_db": [round(float(np.median([r[2][k] for r in v])), 1) for k in range(WINDOWS)]
                   if v else []}
            for kind, v in rows.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", type=Path, default=Path("data/enhancer/select"),
                    help="a folder with noisy/ and clean/ clips (default: the selection clips, held-out packages)")
    ap.add_argument("--model", type=Path, default=None, help="an enhancer .onnx (default: the shipped one)")
    ap.add_argument("--limit", type=int, default=24, help="clips (default 24)")
    a = ap.parse_args(argv)
    if not (a.set / "noisy").is_dir():
        raise SystemExit(f"{a.set}/noisy: no such folder (python -m models.enhancer.data --bench-only builds it)")
    from realtime.errors import ModelError

    try:
        print(json.dumps({**probe(a.set, a.model, a.limit), "sustained_vowel": sustained_vowel(a.model)}))
    except ModelError as e:  # a missing or broken --model: one line
        raise SystemExit(f"start_probe: {e}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
