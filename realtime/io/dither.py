"""Output files at 16 bits or fewer get triangular (TPDF) dither before libsndfile rounds them.

Rounded without dither, a fade's last 20 dB or a reverb tail near -90 dBFS turns into distortion
that follows the signal (harmonics, a tail that breaks up into buzz); ±1 LSB of triangular noise
makes the error a steady noise floor instead (0.5 LSB RMS with the rounding: -96 dBFS at 16 bits)
that carries no trace of the signal. 24 bits and more are written as they are: their rounding lies below any converter's
noise. The noise is seeded and drawn frame by frame, so the same input gives the same file however its
writes are cut (a render at any -b, a batch's resumed outputs, a test's expected bytes). The seed
also takes the output's folder and file name (``drums/song.wav``): stems of one song rendered to
other names, or to folders of their own, get independent noise, which adds as noise when they are
mixed (one seed for all made it add coherently: four stems summed put the dither 10.8 dB up, not 6).
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

# full scale in LSBs as libsndfile scales a float sample into each subtype (0x7FFF for 16 bits)
FULL_SCALE = {"PCM_16": 32767.0, "PCM_S8": 127.0, "PCM_U8": 127.0}
SEED = 0x7D1


def open_output(path, samplerate: int, channels: int, fmt: str, subtype: str, name=None) -> sf.SoundFile:
    """An output file opened for writing at ``path``: dithered where ``subtype`` holds 16 bits or
    fewer, seeded by ``name``'s folder and file name (the file the output becomes: ``path`` may be a
    temporary one)."""
    if subtype not in FULL_SCALE:
        return sf.SoundFile(path, "w", samplerate=samplerate, channels=channels, format=fmt, subtype=subtype)
    where = "/".join(Path(os.path.abspath(name if name is not None else path)).parts[-2:])
    seed = (SEED, zlib.crc32(where.encode("utf-8", "surrogateescape")))
    return DitheredFile(path, "w", samplerate=samplerate, channels=channels, format=fmt, subtype=subtype, seed=seed)


class DitheredFile(sf.SoundFile):
    """A SoundFile written at 16 (or 8) bits whose float samples get ±1 LSB of TPDF dither, then are
    rounded here and written as integers: libsndfile's own conversion floors into a WAV (0.6 LSB
    became 0, -0.4 LSB -1: half an LSB of offset) where it rounds into a FLAC, and it wraps a
    sample rounded past full scale to the opposite sign."""

    def __init__(self, *args, seed=SEED, **kw):
        super().__init__(*args, **kw)
        self._scale = FULL_SCALE[self.subtype]
        self._step = 256.0 if self._scale < 32767.0 else 1.0  # 8 bits: the top byte of a short
        self._rng = np.random.default_rng(seed)

    def write(self, data) -> None:
        x = np.asarray(data, np.float32)
        y = x if x.ndim == 2 else x[:, None]
        r = self._rng.random((*y.shape, 2), np.float32)  # (frame by frame: the same noise however writes are cut)
        q = y * np.float32(self._scale) + (r[..., 0] - r[..., 1])
        np.rint(q, out=q)
        np.clip(q, -self._scale, self._scale, out=q)
        q = (q * np.float32(self._step)).astype(np.int16)
        super().write(q if x.ndim == 2 else q[:, 0])
