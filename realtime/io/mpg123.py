"""An MP3 read to its real end through libmpg123, the decoder libsndfile itself uses.

libsndfile takes libmpg123's length *estimate* for an MP3 without a Xing/Info header (an old
or a streaming encoder's file: the estimate is the file's size over its first frame's) and never
reads past it: a 10 s VBR file came out 3 s long, without a word. Here the same decoder, with
libsndfile's settings (gapless, float, no resampling, one stream per file), scans the frames for
the exact length and reads them all. Offline reading only: the calls go through ctypes.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

MPG123_OK, MPG123_DONE, MPG123_NEW_FORMAT = 0, -12, -11
_ADD_FLAGS, _REMOVE_FLAGS = 2, 13  # enum mpg123_parms
_QUIET, _GAPLESS, _FORCE_FLOAT, _AUTO_RESAMPLE, _NO_FRANKENSTEIN = 0x20, 0x40, 0x400, 0x8000, 0x1000000
_ENC_FLOAT_32 = 0x200

_READ = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_LSEEK = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_int)  # off_t: 64-bit here
_CLEANUP = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

_lib: ctypes.CDLL | None = None
_tried = False


def library() -> ctypes.CDLL | None:
    """libmpg123, its functions declared; None where it is not installed (Debian: libmpg123-0)."""
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    try:
        lib = ctypes.CDLL("libmpg123.so.0")
    except OSError:
        return None
    p, i, L = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    for name, res, args in (
            ("mpg123_init", i, []),
            ("mpg123_new", p, [ctypes.c_char_p, ctypes.POINTER(i)]),
            ("mpg123_delete", None, [p]),
            ("mpg123_param", i, [p, i, L, ctypes.c_double]),
            ("mpg123_replace_reader_handle", i, [p, _READ, _LSEEK, _CLEANUP]),
            ("mpg123_open_handle", i, [p, p]),
            ("mpg123_getformat", i, [p, ctypes.POINTER(L), ctypes.POINTER(i), ctypes.POINTER(i)]),
            ("mpg123_scan", i, [p]),
            ("mpg123_length", L, [p]),
            ("mpg123_read", i, [p, p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]),
            ("mpg123_seek", L, [p, L, i]),
            ("mpg123_close", i, [p]),
            ("mpg123_strerror", ctypes.c_char_p, [p])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    if lib.mpg123_init() != MPG123_OK:
        return None
    _lib = lib
    return lib


def _reader(fh):
    """libmpg123's read callback on ``fh``."""
    def read(_handle, buf, count) -> int:
        try:
            return fh.readinto((ctypes.c_char * count).from_address(buf)) or 0
        except Exception:  # (an exception cannot cross the C frames: a read error ends the stream)
            return -1
    return read


def _seeker(fh):
    """libmpg123's seek callback on ``fh``."""
    def seek(_handle, offset, whence) -> int:
        try:
            return fh.seek(offset, whence)
        except Exception:
            return -1
    return seek


class Mpg123Error(Exception):
    """libmpg123 could not open or decode the stream (its own words)."""


class Mpg123Audio:
    """An MP3 (a path, or an open seekable file: a pipe's spool) decoded by libmpg123, as a SoundFile
    for what the offline runners ask of one. Its length is the frames' own count (``mpg123_scan``);
    ``tags``, ``subtype``: the header's as libsndfile read them. A decoding error mid-stream is
    libmpg123's to resync past, as libsndfile's reads of it do; where the stream ends early, the
    reads end there and the runner warns how much it read."""

    format, endian = "MP3", "FILE"

    def __init__(self, source, tags: dict[str, str] | None = None, subtype: str = "MPEG_LAYER_III"):
        lib = library()
        if lib is None:
            raise Mpg123Error("libmpg123 is not installed")
        self._source, self._tags, self.subtype = source, dict(tags or {}), subtype
        self._own = isinstance(source, (str, bytes, os.PathLike))
        self._fh = open(source, "rb") if self._own else source
        self.name = os.fsdecode(source) if self._own else "input"
        self._h, self.closed = None, False
        # (kept here: libmpg123 calls them until the handle is deleted; they hold the file, not this
        # object, so an instance never closed is freed, and its file closed, as soon as it is dropped)
        self._read_cb, self._seek_cb, self._cleanup_cb = _READ(_reader(self._fh)), _LSEEK(_seeker(self._fh)), _CLEANUP()
        try:
            err = ctypes.c_int(0)
            self._h = lib.mpg123_new(None, ctypes.byref(err))
            if not self._h:
                raise Mpg123Error(f"no decoder handle (error {err.value})")
            lib.mpg123_param(self._h, _REMOVE_FLAGS, _AUTO_RESAMPLE, 0.0)
            lib.mpg123_param(self._h, _ADD_FLAGS, _FORCE_FLOAT | _GAPLESS | _NO_FRANKENSTEIN | _QUIET, 0.0)
            lib.mpg123_replace_reader_handle(self._h, self._read_cb, self._seek_cb, self._cleanup_cb)
            self._fh.seek(0)
            self._check(lib.mpg123_open_handle(self._h, None))
            rate, ch, enc = ctypes.c_long(), ctypes.c_int(), ctypes.c_int()
            self._check(lib.mpg123_getformat(self._h, ctypes.byref(rate), ctypes.byref(ch), ctypes.byref(enc)))
            if enc.value != _ENC_FLOAT_32:
                raise Mpg123Error(f"libmpg123 decodes to encoding {enc.value:#x}, not 32-bit float")
            self.samplerate, self.channels = int(rate.value), int(ch.value)
            self._check(lib.mpg123_scan(self._h))
            self.frames = max(0, int(lib.mpg123_length(self._h)))
            self._check(lib.mpg123_seek(self._h, 0, os.SEEK_SET), negative=True)
        except BaseException:
            self.close()
            raise
        self._pos, self._ended = 0, False

    def _check(self, rc: int, negative: bool = False) -> None:
        if (rc < 0) if negative else (rc not in (MPG123_OK, MPG123_NEW_FORMAT)):
            words = _lib.mpg123_strerror(self._h) if self._h else None
            raise Mpg123Error(words.decode(errors="replace") if words else f"error {rc}")

    def read(self, frames: int = -1, dtype: str = "float64", always_2d: bool = False) -> np.ndarray:
        """Up to ``frames`` frames from where the file is (all that is left for -1); fewer at its end."""
        left = self.frames - self._pos
        frames = left if frames < 0 else min(frames, left)
        out = np.empty((max(frames, 0), self.channels), np.float32)
        n, done = 0, ctypes.c_size_t(0)
        while n < frames and not self._ended:
            rc = _lib.mpg123_read(self._h, out[n:].ctypes.data, (frames - n) * self.channels * 4, ctypes.byref(done))
            n += done.value // (4 * self.channels)
            if rc == MPG123_DONE or (rc not in (MPG123_OK, MPG123_NEW_FORMAT)) or (rc == MPG123_OK and not done.value):
                self._ended = True  # the end, or an error libmpg123 could not resync past
        self._pos += n
        x = out[:n] if dtype == "float32" else out[:n].astype(dtype)
        return x if always_2d or self.channels > 1 else x[:, 0]

    def tell(self) -> int:
        return self._pos

    def seek(self, frames: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET:
            raise ValueError("Mpg123Audio seeks from its start only")
        at = _lib.mpg123_seek(self._h, min(max(frames, 0), self.frames), os.SEEK_SET)
        if at < 0:
            self._check(at, negative=True)
        self._pos, self._ended = int(at), False
        return self._pos

    def seekable(self) -> bool:
        return True

    def copy_metadata(self) -> dict[str, str]:
        return dict(self._tags)

    def reopen(self) -> Mpg123Audio:
        """The same file opened anew, at its start."""
        return Mpg123Audio(self._source, self._tags, self.subtype)

    def close(self) -> None:
        if self._h:
            _lib.mpg123_close(self._h)
            _lib.mpg123_delete(self._h)
            self._h = None
        if self._own and not self._fh.closed:
            self._fh.close()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if not getattr(self, "closed", True):
            self.close()
