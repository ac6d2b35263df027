"""What can a gain on this STFT reach? Oracle gains from the clean reference, by window, on the selection clips.

    python -m models.enhancer.probe [--clips 72] [--windows 480,960,1920] [--gains erb,bin]  # ~2 min per row

Each row divides nothing out of the network: it applies the *ideal* gain, computed from the clean
reference, to the noisy mixture, then scores PESQ-WB, SI-SDR and DNSMOS like ``bench enhancer``.
``erb``: one gain per band of the network's 32 ERB bands, sqrt(clean power / noisy power) capped
at 1, interpolated to the bins as the network's gains are; ``bin``: one such gain per bin.

Windows are **asymmetric** analysis/synthesis pairs (Mauler and Martin 2011; Wang et al. 2022,
"STFT-domain neural speech enhancement with very low algorithmic latency"): an analysis window of
``N`` samples (a long sqrt-Hann rise, then the falling half of a 2·hop sqrt-Hann) and a synthesis
window that spans only the last 2·hop samples. An output sample is final once the frame that ends
at most 2·hop − 1 samples after it is in, so **every window here has the shipped model's latency,
479 samples (9.98 ms)**; N = 480 is exactly the shipped symmetric sqrt-Hann pair. A longer analysis
window resolves a voice's harmonics (50 Hz bins at 960, 25 Hz at 1920) at no cost in latency.

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

from realtime.dsp.erb import NB_ERB, SR, erb_matrices

ROOT = Path(__file__).resolve().parents[2]
HOP = 240


def _hann(m: int) -> np.ndarray:
    """Periodic Hann of m samples (the shipped window is its square root)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(m) / m)


def asymmetric_windows(n: int, hop: int = HOP) -> tuple[np.ndarray, np.ndarray]:
    """(analysis, synthesis) windows of n samples; the product of the two is a 2·hop Hann over the
    last 2·hop samples (zero before), which overlap-adds to 1 at ``hop``."""
    if n < 2 * hop:
        raise ValueError(f"an analysis window of {n} samples is shorter than 2 hops ({2 * hop})")
    m = 2 * hop
    analysis = np.concatenate([np.sqrt(_hann(2 * (n - hop)))[: n - hop], np.sqrt(_hann(m))[hop:]])
    synthesis = np.zeros(n)
    synthesis[n - m:] = _hann(m) / np.maximum(analysis[n - m:], 1e-12)
    return analysis, synthesis


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


def oracle(noisy: np.ndarray, clean: np.ndarray, n: int, gains: str) -> np.ndarray:
    """The noisy mixture with the ideal gain of an n-sample asymmetric STFT (``erb`` or ``bin``)."""
    a, s = asymmetric_windows(n)
    X, C = stft(noisy.astype(np.float64), a), stft(clean.astype(np.float64), a)
    px, pc = np.abs(X) ** 2, np.abs(C) ** 2
    if gains == "bin":
        g = np.sqrt(np.minimum(pc / (px + 1e-20), 1.0))
    else:
        pool, interp = erb_matrices(NB_ERB, n // 2 + 1, SR)
        g = np.sqrt(np.minimum((pc @ pool) / (px @ pool + 1e-20), 1.0)) @ interp
    return istft(X * g, s, len(noisy)).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.enhancer.probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "enhancer" / "select",
                    help="noisy/ and clean/ clips (default: the selection clips, held-out packages)")
    ap.add_argument("--clips", type=int, default=72)
    ap.add_argument("--windows", default="480,960,1920", help="analysis window lengths (samples at 48 kHz)")
    ap.add_argument("--gains", default="erb,bin")
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
    if not a.no_rnnoise:
        rnn = RNNoiseRunner()
        rows.append(("RNNoise", lambda x, c: rnn.process(x)))
    rows += [(f"oracle {g} gains, {w}-sample analysis window", lambda x, c, w=w, g=g: oracle(x, c, w, g))
             for w in windows for g in gains]
    for name, fn in rows:
        per = [_metrics(c, fn(x, c), True) for _, x, c, _ in clips]
        out = {"row": name, "clips": len(per)} | {k: round(float(np.mean([p[k] for p in per])), 3)
                                                 for k in ("pesq_wb", "si_sdr", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
