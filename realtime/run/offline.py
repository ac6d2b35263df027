"""Offline runner: the live chain, block by block, over files — faster than real time.

Constant memory (an hour-long file streams through), streaming resampling to the chain rate and
back (python-soxr), latency compensated so output lines up with input sample for sample, and an
atomic write: output goes to a temporary file beside the target and is renamed only when complete,
so a failure leaves no half file and the input is never overwritten.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.errors import OfflineError
from realtime.io.files import atomic_write

READ_FRAMES = 16384  # file I/O granularity; independent of the chain's block size



def open_input(path: str | os.PathLike) -> sf.SoundFile:
    p = Path(path)
    if not p.exists():
        raise OfflineError(f"{p}: no such file")
    if p.is_dir():
        raise OfflineError(f"{p}: is a directory, not an audio file")
    try:
        f = sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise OfflineError(f"{p}: not a readable audio file ({e})") from None
    if f.frames == 0:
        f.close()
        raise OfflineError(f"{p}: contains no audio frames")
    if f.channels not in (1, 2):
        f.close()
        raise OfflineError(f"{p}: {f.channels} channels not supported (mono or stereo)")
    return f


def _output_format(out: Path, subtype_hint: str) -> tuple[str, str]:
    ext = out.suffix.lower().lstrip(".")
    formats = {k.lower(): k for k in sf.available_formats()}
    fmt = formats.get({"aif": "aiff", "oga": "ogg"}.get(ext, ext))
    if fmt is None:
        raise OfflineError(f"{out}: unknown output format {out.suffix!r}; use one of .wav .flac .ogg .aiff")
    subtype = subtype_hint if sf.check_format(fmt, subtype_hint) else sf.default_subtype(fmt)
    if fmt in ("WAV", "AIFF", "FLAC") and subtype.startswith("PCM_") and subtype not in ("PCM_24", "PCM_32"):
        subtype = "PCM_24"  # processed audio deserves more than 16 bits
    return fmt, subtype


class _Reblocker:
    """Collects variable-size chunks and hands out fixed chain blocks (preallocated FIFO)."""

    def __init__(self, blocksize: int, channels: int):
        self.buf = np.zeros((blocksize * 4 + READ_FRAMES * 4, channels), np.float32)
        self.fill = 0
        self.blocksize = blocksize

    def add(self, x: np.ndarray) -> None:
        n = x.shape[0]
        if self.fill + n > self.buf.shape[0]:
            grown = np.zeros((max(self.buf.shape[0] * 2, self.fill + n), self.buf.shape[1]), np.float32)
            grown[: self.fill] = self.buf[: self.fill]
            self.buf = grown
        self.buf[self.fill: self.fill + n] = x
        self.fill += n

    def blocks(self):
        B = self.blocksize
        start = 0
        while self.fill - start >= B:
            yield self.buf[start: start + B]
            start += B
        self.buf[: self.fill - start] = self.buf[start: self.fill]
        self.fill -= start


def process_file(in_path, out_path, chain, samplerate: int = 48000, blocksize: int = 512,
                 progress: bool = True, compensate_latency: bool = True) -> dict:
    """Run ``chain`` over ``in_path`` into ``out_path``; return a small report."""
    import soxr
    from tqdm import tqdm

    in_p, out_p = Path(in_path), Path(out_path)
    src = open_input(in_p)
    try:
        if out_p.exists() and out_p.resolve() == in_p.resolve():
            raise OfflineError(f"{out_p}: refusing to overwrite the input file")
        if not out_p.parent.exists():
            raise OfflineError(f"{out_p.parent}: output directory does not exist")
        fmt, subtype = _output_format(out_p, src.subtype)
        ch, in_sr, total = src.channels, src.samplerate, src.frames
        chain.prepare(samplerate, blocksize, ch)
        latency = int(chain.latency) if compensate_latency else 0
        resample = in_sr != samplerate
        rs_in = soxr.ResampleStream(in_sr, samplerate, ch, dtype="float32", quality="HQ") if resample else None
        rs_out = soxr.ResampleStream(samplerate, in_sr, ch, dtype="float32", quality="HQ") if resample else None
        fifo = _Reblocker(blocksize, ch)
        to_skip = latency  # chain-rate frames of latency to drop from the start
        written = 0
        nonfinite = 0
        with atomic_write(out_p) as tmp:
            with sf.SoundFile(tmp, "w", samplerate=in_sr, channels=ch, format=fmt, subtype=subtype) as dst, \
                    tqdm(total=total, unit="frame", unit_scale=True, disable=not progress, leave=False,
                         desc=in_p.name) as bar:

                def emit(y: np.ndarray) -> None:
                    nonlocal to_skip, written
                    if to_skip:
                        drop = min(to_skip, y.shape[0])
                        y, to_skip = y[drop:], to_skip - drop
                    if rs_out is not None:
                        y = rs_out.resample_chunk(y)
                    keep = min(y.shape[0], total - written)
                    if keep > 0:
                        dst.write(y[:keep])
                        written += keep

                def run_blocks() -> None:
                    for block in fifo.blocks():
                        chain.process(block)
                        emit(block)

                while True:
                    x = src.read(READ_FRAMES, dtype="float32", always_2d=True)
                    if x.shape[0] == 0:
                        break
                    nonfinite += int(np.count_nonzero(~np.isfinite(x)))
                    bar.update(x.shape[0])
                    fifo.add(rs_in.resample_chunk(x) if rs_in is not None else x)
                    run_blocks()
                if rs_in is not None:
                    fifo.add(rs_in.resample_chunk(np.zeros((0, ch), np.float32), last=True))
                # flush: push silence until the latency tail and the last partial block are out
                pad = latency + blocksize
                pad += (-(fifo.fill + pad)) % blocksize
                fifo.add(np.zeros((pad, ch), np.float32))
                run_blocks()
                if rs_out is not None:
                    tail = rs_out.resample_chunk(np.zeros((0, ch), np.float32), last=True)
                    keep = min(tail.shape[0], total - written)
                    if keep > 0:
                        dst.write(tail[:keep])
                        written += keep
                if written < total:  # resampler rounding: pad the last few frames with silence
                    dst.write(np.zeros((total - written, ch), np.float32))
                    written = total
    finally:
        src.close()
    return {"input": str(in_p), "output": str(out_p), "frames": total, "samplerate": in_sr,
            "chain_samplerate": samplerate, "channels": ch, "latency_compensated_frames": latency,
            "nonfinite_input_samples": nonfinite}
