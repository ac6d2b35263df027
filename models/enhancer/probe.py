"""What can a gain on this STFT reach? Oracle gains from the clean reference, by window, on the selection clips.

    python -m models.enhancer.probe [--clips 72] [--windows 480,960,1920] [--gains erb,bin] [--min-band-hz 200]
                                    [--target reference|teacher] [--keep 0.5]

Each row divides nothing out of the network: it applies the *ideal* gain, computed from the clean
reference, to the noisy mixture, then scores PESQ-WB, SI-SDR and DNSMOS like ``bench enhancer``.
``erb``: one gain per band of the network's 32 ERB bands (the narrowest ``--min-band-hz`` wide,
whole bins; the shipped model's are 200 Hz), sqrt(clean power / noisy power) capped at 1,
interpolated to the bins as the network's gains are; ``bin``: one such gain per bin. ~2 min per row.

Windows are the asymmetric analysis/synthesis pairs of realtime/dsp/stft_windows.py: an N-sample
analysis window, synthesis over its last 2 hops, so **every row has the shipped latency, 479
samples (9.98 ms)**; N = 480 is exactly the shipped pair (``--win`` of the trainer builds them).

Also: the clean references themselves, and RNNoise on the mixtures, for the DNSMOS scale.
The point (MODEL_CARD.md, "Know the ceiling"): if the ideal gain of this signal path scores below
a peer on DNSMOS, no training of that path catches the peer there.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from realtime.argtypes import OneLineParser
from realtime.dsp import stft_windows
from realtime.dsp.erb import MIN_BAND_HZ, NB_ERB, SR, erb_matrices

ROOT = Path(__file__).resolve().parents[2]
HOP = 240


def asymmetric_windows(n: int, hop: int = HOP) -> tuple[np.ndarray, np.ndarray]:
    """(analysis, synthesis) windows of n samples (realtime/dsp/stft_windows.py, as the processor frames)."""
    return stft_windows.asymmetric_windows(n, hop)


def stft(x: np.ndarray, analysis: np.ndarray, hop: int = HOP) -> np.ndarray:
    """[T, n/2+1]; frame t ends at sample (t + 1)·hop of x (zeros before it starts)."""
    n = len(analysis)
    xp = np.concatenate([np.zeros(n - hop), x, np.zeros(hop)])
    t = (len(xp) - n) // hop + 1
    idx = np.arange(t)[:, None] * hop + np.arange(n)[None, :]
    return np.fft.rfft(xp[idx] * analysis, axis=1)


def istft(spec: np.ndarray, synthesis: np.ndarray, length: int, hop: int = HOP) -> np.ndarray:
    """Inverse of ``stft`` (overlap-add of the synthesis-windowed frames), aligned to its input."""
    n = len(synthesis)
    fr = np.fft.irfft(spec, n=n, axis=1) * synthesis
    y = np.zeros((len(fr) - 1) * hop + n)
    for t in range(len(fr)):
        y[t * hop : t * hop + n] += fr[t]
    return y[n - hop : n - hop + length]


def oracle(noisy: np.ndarray, clean: np.ndarray, n: int, gains: str, min_band_hz: float = MIN_BAND_HZ) -> np.ndarray:
    """The noisy mixture with the ideal gain of an n-sample asymmetric STFT (``erb`` or ``bin``)."""
    a, s = asymmetric_windows(n)
    X, C = stft(noisy.astype(np.float64), a), stft(clean.astype(np.float64), a)
    px, pc = np.abs(X) ** 2, np.abs(C) ** 2
    if gains == "bin":
        g = np.sqrt(np.minimum(pc / (px + 1e-20), 1.0))
    else:
        pool, interp = erb_matrices(NB_ERB, n // 2 + 1, SR, min_band_hz)
        g = np.sqrt(np.minimum((pc @ pool) / (px @ pool + 1e-20), 1.0)) @ interp
    return istft(X * g, s, len(noisy)).astype(np.float32)


def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m models.enhancer.probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "enhancer" / "select",
                    help="noisy/ and clean/ clips (default: the selection clips, held-out packages)")
    ap.add_argument("--clips", type=int, default=72)
    ap.add_argument("--windows", default="480,960,1920", help="analysis window lengths (samples at 48 kHz)")
    ap.add_argument("--gains", default="erb,bin")
    ap.add_argument("--min-band-hz", type=float, default=MIN_BAND_HZ, help="the narrowest ERB band (erb gains)")
    ap.add_argument("--target", choices=("reference", "teacher"), default="reference",
                    help="the gains towards the clean reference, or towards the reference through the shipped "
                         "enhancer (the teacher targets of models/enhancer/targets.py); scored against the reference")
    ap.add_argument("--keep", type=float, default=0.0,
                    help="with --target teacher: bins the teacher passes by this gain or more stay whole (targets.py --keep)")
    ap.add_argument("--no-rnnoise", action="store_true")
    a = ap.parse_args(argv)
    from bench.enhancer import RNNoiseRunner, _metrics, load_set

    try:
        windows = [int(w) for w in a.windows.split(",")]
        for w in windows:
            asymmetric_windows(w)
    except ValueError as e:
        raise SystemExit(f"--windows: {e}") from None
    gains = a.gains.split(",")
    if not gains or set(gains) - {"erb", "bin"}:
        raise SystemExit(f"--gains takes erb and/or bin, got {a.gains!r}")
    clips = load_set(a.data, 0, a.clips)
    rows = [("clean reference", lambda x, c: c)]
    aim = lambda c: c  # noqa: E731
    if a.target == "teacher":
        from models.enhancer.targets import BLOCK, teacher_target
        from realtime.dsp.processors.neural.enhancer import Enhancer

        teacher = Enhancer()
        teacher.prepare(48000, BLOCK, 1)
        aim = lambda c: teacher_target(teacher, c, keep=a.keep)  # noqa: E731
        rows.append(("teacher target (the reference through the shipped enhancer, both ways)", lambda x, c: aim(c)))
    if not a.no_rnnoise:
        rnn = RNNoiseRunner()
        rows.append(("RNNoise", lambda x, c: rnn.process(x)))
    rows += [(f"oracle {g} gains, {w}-sample analysis window" + (f", bands >= {a.min_band_hz:g} Hz" if g == "erb" else "")
              + (", towards the teacher target" if a.target == "teacher" else ""),
              lambda x, c, w=w, g=g: oracle(x, aim(c), w, g, a.min_band_hz))
             for w in windows for g in gains]
    for name, fn in rows:
        per = [_metrics(c, fn(x, c), True) for _, x, c, _ in clips]
        out = {"row": name, "clips": len(per)} | {k: round(float(np.mean([p[k] for p in per])), 3)
                                                 for k in ("pesq_wb", "si_sdr", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
