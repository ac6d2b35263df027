"""A FLAC file cut short (a full disk mid-recording) made readable again, in place.

libsndfile writes a FLAC's length into its STREAMINFO only when the file is closed in order: cut
short (a full disk, or a process killed), the file says "length unknown" (libsndfile then reports
2^63 - 1 frames and ``sf.read`` fails) and may end in part of a frame (its decoder loses sync
there). ``repair_cut_flac`` finds the last frame (by its header's sync code and CRC-8), drops it
unless it is whole (its CRC-16 footer checks) and writes the length of what is left into
STREAMINFO: no byte more than the file had is written, so it works on the full disk that cut it.
"""
from __future__ import annotations

import os

_SYNC = (b"\xff\xf8", b"\xff\xf9")  # a frame header's 14 sync bits, then reserved 0 and the blocking strategy


def _crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    """A FLAC frame footer's CRC-16 (polynomial 0x8005, MSB first)."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _frame_header(buf: bytes, at: int) -> tuple[int, int] | None:
    """(the frame (fixed block size: its number) or first sample (variable) that a valid frame
    header at ``at`` names, the samples the frame holds); None where what is there is not one (a
    sync pattern inside audio data)."""
    if buf[at:at + 2] not in _SYNC or at + 6 > len(buf):
        return None
    size_code, rate_code = buf[at + 2] >> 4, buf[at + 2] & 0x0F
    if size_code == 0 or rate_code == 0x0F or buf[at + 3] & 0x01 or (buf[at + 3] >> 4) > 10:
        return None
    i = at + 4
    first = buf[i]
    n = 0 if first < 0x80 else next((k for k in range(2, 8) if first >> (7 - k) == (1 << k) - 2), None)
    if n is None:
        return None
    value = first if n == 0 else first & (0xFF >> (n + 1))
    for k in range(1, n):  # UTF-8-like continuation bytes
        if i + k >= len(buf) or buf[i + k] >> 6 != 0b10:
            return None
        value = (value << 6) | (buf[i + k] & 0x3F)
    at_size = i + max(n, 1)  # the block size - 1, after the number (codes 6, 7: 8 or 16 bits)
    extra = {6: 1, 7: 2}.get(size_code, 0)
    i = at_size + extra + {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if i >= len(buf) or _crc8(buf[at:i]) != buf[i]:
        return None
    size = (192 if size_code == 1 else 576 << (size_code - 2) if size_code <= 5 else
            int.from_bytes(buf[at_size:at_size + extra], "big") + 1 if size_code <= 7 else 256 << (size_code - 8))
    return value, size


TAIL_BYTES = 1 << 22  # what is searched for the last frame header: far more than a frame (libsndfile's: ~25 kB)


def repair_cut_flac(path) -> int | None:
    """Cut ``path`` (a FLAC whose writing stopped midway) back to its last whole frame and write its
    length into STREAMINFO (a last frame written whole, as a killed process leaves it, is kept);
    returns the samples (per channel) kept, or None where it is not such a file (not FLAC, a
    variable block size, no frame header found) and it was left as it was. Reads the header and the
    file's last ``TAIL_BYTES`` only: a take of hours is gigabytes."""
    with open(path, "r+b") as f:
        head = f.read(42)
        if head[:4] != b"fLaC" or len(head) < 42 or head[4] & 0x7F != 0:  # STREAMINFO comes first
            return None
        block = int.from_bytes(head[8:10], "big")
        if block != int.from_bytes(head[10:12], "big"):  # variable block size: frames are not numbered
            return None
        size, at = f.seek(0, os.SEEK_END), 4
        while True:  # the metadata blocks' headers, to where the frames start
            f.seek(at)
            h = f.read(4)
            if len(h) < 4:
                return None
            at += 4 + int.from_bytes(h[1:4], "big")
            if h[0] & 0x80 or at >= size:
                break
        start = max(at, size - TAIL_BYTES)
        f.seek(start)
        data = f.read()
        cut = data.rfind(b"\xff")
        while cut >= 0:
            header = _frame_header(data, cut)
            if header is not None:
                number, last_samples = header
                break
            cut = data.rfind(b"\xff", 0, cut)
        else:
            return None
        whole = len(data) - cut > 2 and _crc16(data[cut:-2]) == int.from_bytes(data[-2:], "big")
        # the frames before the last, each of ``block`` samples, and the last where it is whole (the
        # shorter final one of a file that was closed: counted as ``block`` samples, the length said
        # more than the file held and it could not be read)
        samples = number * block + (last_samples if whole else 0)
        word = int.from_bytes(head[18:26], "big")
        word = (word & ~((1 << 36) - 1)) | (samples & ((1 << 36) - 1))
        f.seek(18)
        f.write(word.to_bytes(8, "big") + bytes(16))  # the length, and "MD5 not computed"
        f.truncate(size if whole else start + cut)
        f.flush()
        os.fsync(f.fileno())
    return samples
