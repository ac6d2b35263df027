"""Speech-quality figures shared by the benchmark and the trainer's checkpoint selection."""
from __future__ import annotations

import numpy as np


def pesq_wb(clean16: np.ndarray, est16: np.ndarray) -> float:
    """PESQ-WB of 16 kHz signals; NaN where PESQ finds no speech to score (it raises there)."""
    from pesq import pesq

    try:
        return float(pesq(16000, clean16, est16, "wb"))
    except Exception:  # pesq raises on clips without detectable speech
        return float("nan")
