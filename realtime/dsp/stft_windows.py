"""Analysis/synthesis window pairs of the enhancer's STFT (numpy only): the trainer, the probe and
the runtime processor build them here, so all three frame a signal identically.

Asymmetric pairs (Mauler and Martin 2011; Wang et al. 2022, "STFT-domain neural speech enhancement
with very low algorithmic latency"): an analysis window of ``n`` samples (a long sqrt-Hann rise,
then the falling half of a 2·hop sqrt-Hann) and a synthesis window that is zero except over the
last 2·hop samples. Their product is a 2·hop Hann over the last 2·hop samples, which overlap-adds
to 1 at ``hop``. An output sample is final once the frame that ends at most 2·hop − 1 samples
after it is in, so **the latency is 2·hop − 1 samples whatever n is**, while a longer analysis
window resolves a voice's harmonics (50 Hz bins at 960 samples, 25 Hz at 1920). n = 2·hop is the
plain symmetric periodic sqrt-Hann pair.
"""
from __future__ import annotations

import numpy as np


def hann(m: int) -> np.ndarray:
    """Periodic Hann of m samples (float64)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(m) / m)


def asymmetric_windows(n: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(analysis, synthesis) windows of n samples each (float64); ValueError when n < 2·hop."""
    if n < 2 * hop:
        raise ValueError(f"an analysis window of {n} samples is shorter than 2 hops ({2 * hop})")
    m = 2 * hop
    analysis = np.concatenate([np.sqrt(hann(2 * (n - hop)))[: n - hop], np.sqrt(hann(m))[hop:]])
    synthesis = np.zeros(n)
    synthesis[n - m:] = hann(m) / np.maximum(analysis[n - m:], 1e-12)
    return analysis, synthesis
