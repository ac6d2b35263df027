"""Ogg Opus through libsndfile, for the data packs a GPU machine gets (``models/*/pack.py``)."""
from __future__ import annotations


def opus_level(kbps: float) -> float:
    """libsndfile's Opus compression level for a bit rate (measured: 0.5 -> 133, 0.75 -> 70,
    0.9 -> 28 kbit/s; linear between 256 kbit/s at 0 and 6 kbit/s at 1)."""
    return min(1.0, max(0.0, (256.0 - kbps) / 250.0))
