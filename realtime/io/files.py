"""One atomic writer for every file the program writes (renders, recordings, presets, demos).

A file is written under a hidden temporary name in its destination folder and renamed over the
destination only when complete, so an interrupted write never leaves a half-written file where the
user looks, and never destroys the file it would replace.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import secrets
import shutil
import stat
import struct
from contextlib import contextmanager
from pathlib import Path

PART_STEM_BYTES = 200  # a temporary name adds ~15 characters; file names may have 255 bytes
# A temporary name is ".STEM.TAG.part", TAG 8 characters: ours hex, those of earlier versions mkstemp's
# [a-z0-9_]. Matched exactly: ".a.wav.*.part" also matched ".a.wav.x.wav.TAG.part", another output's.
PART_TAG = re.compile(r"[a-z0-9_]{8}")


def sf_path(path) -> bytes:
    """``path`` as libsndfile (soundfile) must get it: the file system's bytes. soundfile encodes a
    str as strict UTF-8, so a name that is not valid UTF-8 (Latin-1 from an old archive, kept by
    Python as surrogates) failed with a traceback."""
    return os.fsencode(os.fspath(path))


def _part_stem(name: str) -> str:
    """``name`` as the stem of its temporary files: a long one is cut and told apart by a hash."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= PART_STEM_BYTES:
        return name
    cut = raw[:PART_STEM_BYTES - 9].decode("utf-8", "ignore")
    return f"{cut}~{hashlib.sha1(raw).hexdigest()[:8]}"


def through_link(path) -> Path:
    """Where writing ``path`` should land: a symbolic link's target (as ``cp`` writes through a
    link; replacing the link itself left its target unwritten and the link gone), else ``path``."""
    p = Path(path)
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def not_a_file(p) -> str | None:
    """What ``p`` is when it exists and is no regular file (nor a folder), in words ("a pipe (FIFO)",
    "a socket", "a device"), else None."""
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "a pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (False for a stand-in stream without ``isatty``, or a closed one)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


COMMITTED: set[str] = set()  # the files this process put in place (absolute paths): an interrupt's note says so


class AtomicFile:
    """A temporary file beside ``path``; ``commit()`` renames it over ``path``, ``discard()`` removes it.

    The finished file gets the mode the user expects: that of the file it replaces, else the
    usual mode under the process's umask (``mkstemp`` alone would leave it owner-only).
    """

    def __init__(self, path, suffix: str = ".part"):
        self.path = through_link(path)
        while True:  # as mkstemp, with a tag of the shape remove_stale_parts knows
            self.tmp = self.path.parent / f".{_part_stem(self.path.name)}.{secrets.token_hex(4)}{suffix}"
            try:
                os.close(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                break
            except FileExistsError:
                continue
            except OSError as e:  # named by the file the user asked for, not the hidden temporary one
                raise type(e)(e.errno, e.strerror, str(self.path)) from None

    def commit(self, fsync: bool = True, replace: bool = True) -> Path:
        """Put the file in place; ``replace`` False: never over a file that is there (``place``:
        ``FileExistsError``, the temporary file left as it is)."""
        if fsync:
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
        try:
            mode = self.path.stat().st_mode & 0o7777
        except OSError:
            mode = usual_mode()
        os.chmod(self.tmp, mode)
        if replace:
            os.replace(self.tmp, self.path)
        else:
            place(self.tmp, self.path)
        COMMITTED.add(os.path.abspath(self.path))
        return self.path

    def discard(self) -> None:
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def usual_mode() -> int:
    """A new file's mode under the process's umask (0644 under 022): ``mkstemp``'s 0600 is not it."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def place(src, dst) -> None:
    """Rename ``src`` to ``dst`` unless something is there (``FileExistsError``, ``src`` left): a
    hard link then the old name removed, as a rename that never replaces; where the file system has
    no hard links (FAT), a rename after a look (a file that appears in between is replaced)."""
    import errno

    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def hidden_parts(path, suffix: str) -> list[Path]:
    """The hidden temporary files of ``path`` (``.NAME.TAG`` + ``suffix``, as ``AtomicFile`` names
    them), never those of another output whose name starts with this one's (``PART_TAG``)."""
    path = through_link(path)
    stem = _part_stem(path.name)
    return sorted(part for part in path.parent.glob(f".{glob.escape(stem)}.*{suffix}")
                  if PART_TAG.fullmatch(part.name[len(stem) + 2:-len(suffix)]))


def remove_stale_parts(path, older_than_s: float = 0.0) -> int:
    """Remove the temporary files an earlier, killed write of ``path`` left behind.

    Parameters
    ----------
    path : str or Path
        The destination whose ``.NAME.TAG.part`` files to remove (``PART_TAG``: never those of
        another output whose name starts with this one's).
    older_than_s : float
        Only those not touched for this long (another process may be writing the same output
        right now; a caller that knows the earlier attempt died passes 0).

    Returns
    -------
    int
        How many were removed.
    """
    import time

    now, n = time.time(), 0
    for part in hidden_parts(path, ".part"):
        try:
            if now - part.stat().st_mtime >= older_than_s:
                part.unlink()
                n += 1
        except OSError:
            pass
    return n


@contextmanager
def atomic_write(path, suffix: str = ".part"):
    """Yield a temporary path to write ``path`` through; committed on success, removed on any error.

    Parameters
    ----------
    path : str or Path
        The destination; its folder must exist.
    suffix : str
        Suffix of the hidden temporary file.
    """
    f = AtomicFile(path, suffix)
    try:
        yield f.tmp
        f.commit()
    except OSError as e:
        f.discard()
        if e.errno is not None and e.filename in (None, os.fspath(f.tmp)):  # a writer's bare "no space left"
            raise OSError(e.errno, e.strerror, os.fspath(path)) from None  # (onnx, torch): the file the user named
        raise
    except BaseException:
        f.discard()
        raise


def atomic_write_text(path, text: str, suffix: str = ".part") -> None:
    """``text`` (UTF-8) to ``path`` whole or not at all (``atomic_write``): a full disk or a
    Ctrl-C leaves the previous file, never half of a new one."""
    with atomic_write(path, suffix) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def folder_problem(folder) -> str | None:
    """Why files cannot be put in ``folder`` because of what it is ("is a file, not a folder",
    "output directory does not exist"), or None when it is a folder."""
    folder = Path(folder)
    if folder.is_dir():
        return None
    return "is a file, not a folder" if folder.exists() else "output directory does not exist"


def libsndfile_words(e: BaseException) -> str | None:
    """libsndfile's own text of a ``soundfile.LibsndfileError``, without soundfile's prefix ("Error
    opening b'….part': Error : why"), which names the hidden temporary file or a pipe's spool."""
    own = getattr(e, "error_string", None)
    return own.removeprefix("Error : ") if isinstance(own, str) else None


SFE_SYSTEM = 2  # libsndfile's "System error": an OS call failed, its errno says why


def libsndfile_os_reason(e: BaseException) -> str | None:
    """A full disk, an exhausted quota or a file system's size limit behind libsndfile's bare
    "System error" (``SFE_SYSTEM``): the errno its failing call left (cffi keeps it per thread,
    after each C call; soundfile's own error check after the write leaves it alone), or None. Asked in the thread that wrote, before
    anything else calls libsndfile."""
    if getattr(e, "code", None) != SFE_SYSTEM or getattr(e, "error_string", None) is None:
        return None
    import errno

    try:
        from soundfile import _ffi
    except ImportError:
        return None
    from realtime.errors import os_reason

    code = _ffi.errno
    return os_reason(OSError(code, "")) if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else None


def write_failure_reason(folder, e: BaseException) -> str:
    """Why a write into ``folder`` failed midway, in words a user can act on: the OS's reason
    (full disk, read-only, lost mount), libsndfile's bare "System error" as the full disk or quota
    its errno says (``libsndfile_os_reason``), or "no space left on device" when the folder's disk
    is full (ask before the temporary file is removed: that frees its space), else the error's own
    text: for libsndfile's, without soundfile's prefix, which names the hidden temporary file."""
    from realtime.errors import os_reason

    reason = os_reason(e) if isinstance(e, OSError) else libsndfile_os_reason(e)
    if reason is None:
        try:
            if shutil.disk_usage(folder).free < 1 << 20:
                reason = "no space left on device"
        except OSError:
            pass
    return reason or libsndfile_words(e) or str(e) or type(e).__name__


OPUS_LOOKAHEAD_48K = 312  # libopus's look-ahead, the pre-skip libsndfile writes: 6.5 ms at 48 kHz


def opus_end_padding(fmt: str, subtype: str, samplerate: int) -> int:
    """Frames of silence to write after an output's audio when it is Ogg Opus (0 for any other
    format), cut off again once the file is closed (``trim_opus_end``).

    libsndfile's Opus encoder pushes its look-ahead out by encoding its last frame a second time
    rather than silence: the last ~5 ms of audio that does not end in silence decoded garbled
    (0.5 off on a 0.3 sine). With a look-ahead of silence after the audio, what is garbled is
    that silence, which is then trimmed."""
    if (fmt, subtype) != ("OGG", "OPUS"):
        return 0
    return -(-OPUS_LOOKAHEAD_48K * samplerate // 48000)


def pad_opus(dst) -> None:
    """Write ``opus_end_padding``'s silence after an open ``soundfile.SoundFile``'s audio (nothing
    unless it is Ogg Opus); ``end_opus`` cuts it off again once the file is closed."""
    pad = opus_end_padding(dst.format, dst.subtype, dst.samplerate)
    if pad:
        import numpy as np

        dst.write(np.zeros((pad, dst.channels), np.float32))


def end_opus(path, dst, frames: int) -> int:
    """An Opus output (``dst``, closed) ends after its ``frames`` again (``pad_opus``'s silence
    trimmed); returns the frames it holds: ``frames``, or with the silence where it could not be
    trimmed (a file a few ms long rather than none)."""
    pad = opus_end_padding(dst.format, dst.subtype, dst.samplerate)
    return frames if not pad or trim_opus_end(path, frames) else frames + pad


_OGG_CRC: list[int] = []


def ogg_crc(page: bytes) -> int:
    """An Ogg page's checksum (CRC-32, polynomial 0x04C11DB7, not reflected: not zlib's), of the
    page with its checksum field zeroed."""
    if not _OGG_CRC:
        for i in range(256):
            r = i << 24
            for _ in range(8):
                r = (r << 1) ^ 0x04C11DB7 if r & 0x80000000 else r << 1
            _OGG_CRC.append(r & 0xFFFFFFFF)
    crc = 0
    for b in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ b]
    return crc


OGG_PAGE_MAX = 27 + 255 + 255 * 255  # the largest Ogg page: header, segment table, body


def trim_opus_end(path, frames: int) -> bool:
    """Whether the Ogg Opus file at ``path`` (closed) now ends after ``frames`` (at its own rate):
    the granule position of the page holding that end lowered to it (RFC 7845's end trimming; its
    checksum redone), so decoders drop what follows (``opus_end_padding``'s silence). Where the end
    falls in the page before the last (the last one then holds only padding: libsndfile ended a page
    right after the audio), that page becomes the last one and the file is cut after it. False, the
    file untouched, where it is no Opus stream libsndfile wrote or the end falls earlier still."""
    with open(path, "r+b") as fh:
        head = fh.read(64)
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - 3 * OGG_PAGE_MAX))
        base = fh.tell()
        tail = bytearray(fh.read())
        starts = [tail.rfind(b"OggS\x00")]
        while len(starts) < 3 and starts[-1] > 0:
            starts.append(tail.rfind(b"OggS\x00", 0, starts[-1]))
        opus = head[:4] == b"OggS" and head[27 + head[26]:][:8] == b"OpusHead"
        if not opus or len(starts) < 2 or min(starts[:2]) < 0 or not tail[starts[0] + 5] & 0x04:
            return False  # (the last page must say: end of stream)
        body = head[27 + head[26]:]
        pre_skip, rate = struct.unpack("<HI", body[10:16])
        end = pre_skip + frames * 48000 // (rate or 48000)  # granule positions count 48 kHz samples
        granules = [struct.unpack_from("<q", tail, at + 6)[0] if at >= 0 else None for at in starts]
        if granules[1] <= end <= granules[0]:
            at = starts[0]
        elif (len(starts) == 3 and starts[2] >= 0 and granules[2] <= end <= granules[1]
              and tail[starts[1] + 26] and tail[starts[1] + 27 + tail[starts[1] + 26] - 1] < 255):
            at = starts[1]  # it ends its last packet: the page after it holds only padding
        else:
            return False
        lacing = tail[at + 27: at + 27 + tail[at + 26]]
        page = tail[at: at + 27 + len(lacing) + sum(lacing)]
        page[5] |= 0x04
        struct.pack_into("<q", page, 6, end)
        page[22:26] = bytes(4)
        page[22:26] = struct.pack("<I", ogg_crc(page))
        fh.seek(base + at)
        fh.write(page)
        fh.truncate(base + at + len(page))
    return True
