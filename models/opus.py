"""Ogg Opus through libsndfile, for the data packs a GPU machine gets (``models/*/pack.py``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def opus_level(kbps: float) -> float:
    """libsndfile's Opus compression level for a bit rate per channel (measured on mono: 0.5 -> 133,
    0.75 -> 70, 0.9 -> 28 kbit/s; linear between 256 kbit/s at 0 and 6 kbit/s at 1)."""
    return min(1.0, max(0.0, (256.0 - kbps) / 250.0))


def write_opus(path: Path, x: np.ndarray, sr: int, kbps: float) -> None:
    """``x`` ([n] or [n, channels]) as Ogg Opus at about ``kbps`` in all (libsndfile's level sets
    the rate per channel). ``path`` is written directly: callers wrap it in ``atomic_write``."""
    import soundfile as sf

    channels = 1 if x.ndim == 1 else x.shape[1]
    sf.write(path, x, sr, format="OGG", subtype="OPUS", compression_level=opus_level(kbps / channels))


def read_opus(path: Path, sr: int) -> np.ndarray:
    """A pack's Opus file as float32 at ``sr`` (what it was written at); one clear line when the
    copy is cut off or not Ogg Opus at all, or at another rate."""
    import soundfile as sf

    try:
        audio, got = sf.read(path, dtype="float32")
    except (sf.LibsndfileError, RuntimeError) as e:
        raise SystemExit(f"{path}: cannot be decoded ({e}); copy the part again") from None
    if got != sr:
        raise SystemExit(f"{path}: {got} Hz, the pack is {sr} Hz")
    return audio
