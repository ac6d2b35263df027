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


def _frame_header(buf: bytes, at: int) -> int | None:
    """The frame (fixed block size: its number) or first sample (variable) that a valid frame
    header at ``at`` names; None where what is there is not one (a sync pattern inside audio data)."""
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
    i += max(n, 1)
    i += {6: 1, 7: 2}.get(size_code, 0) + {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if i >= len(buf) or _crc8(buf[at:i]) != buf[i]:
        return None
    return value


def repair_cut_flac(path) -> int | None:
    """Cut ``path`` (a FLAC whose writing stopped midway) back to its last whole frame and write its
    length into STREAMINFO (a last frame written whole, as a killed process leaves it, is kept); returns the samples (per channel) kept, or None where it is not such a
    file (not FLAC, a variable block size, no frame header found) and it was left as it was."""
    with open(path, "r+b") as f:
        data = f.read()
        if data[:4] != b"fLaC" or len(data) < 42 or data[4] & 0x7F != 0:  # STREAMINFO comes first
            return None
        block = int.from_bytes(data[8:10], "big")
        if block != int.from_bytes(data[10:12], "big"):  # variable block size: frames are not numbered
            return None
        meta_end, at = 4, 4
        while True:  # the metadata blocks, to where the frames start
            last, length = data[at] & 0x80, int.from_bytes(data[at + 1:at + 4], "big")
            at += 4 + length
            if last or at >= len(data):
                meta_end = at
                break
        cut = data.rfind(b"\xff", meta_end)
        while cut >= meta_end:
            number = _frame_header(data, cut)
            if number is not None:
                break
            cut = data.rfind(b"\xff", meta_end, cut)
        else:
            return None
        whole = len(data) - cut > 2 and _crc16(data[cut:-2]) == int.from_bytes(data[-2:], "big")
        if whole:
            cut = len(data)
        samples = (number + whole) * block  # the whole frames, each of ``block`` samples
        word = int.from_bytes(data[18:26], "big")
        word = (word & ~((1 << 36) - 1)) | (samples & ((1 << 36) - 1))
        f.seek(18)
        f.write(word.to_bytes(8, "big") + bytes(16))  # the length, and "MD5 not computed"
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    return samples
