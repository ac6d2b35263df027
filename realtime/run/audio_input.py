"""Reading the files the offline runner processes: paths and standard input, what libsndfile opens,
and what it does not say: a file cut short or still growing (WAV, RF64, W64, AIFF, AU, Ogg), a WAV
past the 4 GiB its header counts, a decoding error part way (everything before it kept), and
samples that are not numbers (zeroed before any resampler)."""
from __future__ import annotations

import io
import os
import struct
import sys
import weakref
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.errors import OfflineError
from realtime.io.files import libsndfile_words, sf_path

STDIN = Path("/dev/stdin")


def input_path(path) -> Path:
    """``path`` as a Path; ``-`` is standard input (``/dev/stdin``: read once, as any pipe)."""
    return STDIN if str(path) == "-" else Path(path)


# libsndfile's words for an MP3 it cannot decode, although it is a regular file
NOT_A_FILE = "File does not exist or is not a regular file (possibly a pipe?)."


def open_input(path: str | os.PathLike) -> tuple[sf.SoundFile, bool]:
    """The input opened, and whether it is cut (``truncation``: warned about here, once; libsndfile's
    length is then what the file holds)."""
    p = input_path(path)
    if p == STDIN and os.isatty(0):  # reading it would wait for Ctrl-D
        raise OfflineError("standard input is a terminal; pipe the audio in (e.g. `cat IN | … process - OUT`)")
    if not p.exists():
        raise OfflineError(f"{p}: no such file")
    if p.is_dir():
        raise OfflineError(f"{p}: is a directory, not an audio file")
    try:  # a pipe is read whole first: then its length is what it held, whatever its header says
        f = sf.SoundFile(sf_path(p) if p.is_file() else _spooled(p))
    except (sf.LibsndfileError, RuntimeError) as e:  # libsndfile's words alone: soundfile's prefix names a pipe's spool
        words = libsndfile_words(e) or str(e)
        if words == NOT_A_FILE and p.is_file():  # what libsndfile says of an MP3 it cannot decode: untrue here
            raise OfflineError(f"{p}: not a readable audio file") from None
        raise OfflineError(f"{p}: not a readable audio file ({words})") from None
    f, said = whole_wav(p, f) if p.is_file() else (f, None)
    if f.frames == 0:
        f.close()
        if p.is_file() and truncation(p):  # a short Ogg cut in half: libsndfile reads none of it
            raise OfflineError(f"{p}: no audio could be read from it (the file is cut short: its end is missing)")
        raise OfflineError(f"{p}: contains no audio frames")
    if f.channels not in (1, 2):
        f.close()
        raise OfflineError(f"{p}: {f.channels} channels not supported (mono or stereo)")
    why = truncation(p)
    if why:
        said = f"{why} (a truncated or still-growing file); processing what is there"
    if said:
        print(f"warning: {p}: {said}", file=sys.stderr)
    return f, said is not None


RIFF_MAX = 0xFFFFFFFF  # a RIFF (WAV) chunk's 32-bit size: 4 GiB; a streaming header's "unknown" too


def whole_wav(p: Path, f: sf.SoundFile) -> tuple[sf.SoundFile, str | None]:
    """``f``, or where libsndfile reads less of a WAV's audio than the file holds, that audio read
    to the end of the file (``WavAudio``), with words for a warning (None: nothing to say).

    A data chunk whose size says 0 (a recorder that crashed, or is still writing: libsndfile read
    none of it and the file was refused as empty) is read to the end, said as a cut file is; one
    that says 0xFFFFFFFF (unknown: a streaming header) with more than 4 GiB after it (libsndfile
    stopped at 4 GiB, without a word) is read whole. An encoding RAW cannot read (ADPCM) is left
    to libsndfile, its unread audio said.
    """
    little = f.format in ("WAV", "WAVEX") and f.endian in ("FILE", "LITTLE")  # (not RIFX: big-endian)
    data, size = _chunk_at(p, _riff_data) if little else (None, 0)
    if data is None:
        return f, None
    start, length = data
    held = size - start
    if length == 0 and held > 0:
        why = (f"its header gives its audio as 0 bytes long and {held} bytes follow (a truncated or "
               "still-growing file); processing what is there")
    elif length == RIFF_MAX and held > RIFF_MAX:
        why = None
    else:
        return f, None
    if not sf.check_format("RAW", f.subtype):  # (a 0 size: refused as empty, as before)
        return f, None if length == 0 else (f"its audio past the 4 GiB a WAV header counts was not read "
                                            f"({f.subtype}); convert it to .w64 or .flac with ffmpeg or sox")
    try:
        whole = WavAudio(p, start, f)
    except (OSError, RuntimeError):  # (libsndfile's errors are RuntimeErrors) what libsndfile read, as before
        return f, None if length == 0 else "its audio past the 4 GiB a WAV header counts could not be read"
    f.close()
    return whole, why


class _FileTail(io.RawIOBase):
    """A file's bytes from ``start`` on, as a file of their own (``WavAudio``)."""

    def __init__(self, path: Path, start: int):
        super().__init__()
        self._f = open(path, "rb", buffering=0)
        self._start = start
        self._f.seek(start)  # libsndfile reads from where the file is, before any seek

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(pos + self._start if whence == os.SEEK_SET else pos, whence) - self._start

    def tell(self) -> int:
        return self._f.tell() - self._start

    def readinto(self, b) -> int:
        return self._f.readinto(b)

    def close(self) -> None:
        self._f.close()
        super().close()


class WavAudio(sf.SoundFile):
    """A WAV's audio, from its data chunk to the end of the file, read by libsndfile as RAW in the
    header's sample format (``whole_wav``); its text tags are the header's (``copy_tags``)."""

    def __init__(self, path: Path, start: int, header: sf.SoundFile):
        self._tags = header.copy_metadata()
        self._tail = _FileTail(path, start)
        try:
            super().__init__(self._tail, "r", samplerate=header.samplerate, channels=header.channels,
                             subtype=header.subtype, endian="LITTLE", format="RAW")
        except BaseException:
            self._tail.close()
            raise

    def copy_metadata(self) -> dict[str, str]:
        return dict(self._tags)

    def close(self) -> None:
        super().close()
        if hasattr(self, "_tail"):
            self._tail.close()


def _spooled(p: Path):
    """A pipe's or a device's whole content (``/dev/stdin``, a FIFO) in a seekable file: MP3 and
    FLAC decoders seek, and read straight from a pipe lost 3 s of a minute of MP3 (and refused
    FLAC); a streaming WAV header's 0xFFFFFFFF sizes (``ffmpeg -f wav -``), which libsndfile read as
    1073741823 frames from a pipe, give the length it holds. Up to 64 MiB in memory, beyond that in
    an unnamed temporary file the system removes with the last reference to it, whatever happens."""
    import shutil
    import tempfile

    spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)
    try:
        with open(p, "rb") as src:
            shutil.copyfileobj(src, spool, 1 << 20)
    except OSError as e:
        spool.close()
        raise OfflineError(f"{p}: cannot read ({e.strerror or e})") from None
    spool.seek(0)
    return spool


def truncation(path) -> str | None:
    """Why a regular file stops before its end, in words for a warning, or None: a WAV, RF64, W64,
    AIFF or AU whose header promises more bytes of audio than it holds (``_bytes_missing``), an
    Ogg stream without its last page (``_ogg_unended``). libsndfile reads either as a whole,
    shorter file. None for a pipe, which opened a second time would lose the audio read from it."""
    p = Path(path)
    if not p.is_file():
        return None
    missing = _bytes_missing(p)
    if missing:
        return f"the header promises {missing} more bytes of audio than the file holds"
    return "the Ogg stream stops before its end" if _ogg_unended(p) else None


def scrub_input(x: np.ndarray) -> int:
    """How many samples of ``x`` (the input as read) are not finite (NaN/Inf), each set to 0 in
    place: before the input resampler, which spread one NaN over 67 ms of output (the safety stage
    scrubs only what reaches it), and before the chain."""
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return bad


def warn_nonfinite(in_p, n: int) -> None:
    """One line on stderr when the input held samples that are not numbers (``scrub_input``)."""
    if n:
        print(f"warning: {in_p}: {n} samples of the input were not numbers (NaN/Inf) and were replaced by silence",
              file=sys.stderr)


def warn_short(in_p, frames_read: int, length: int) -> bool:
    """Whether decoding stopped before the input's length (a damaged file), said in one line: its
    missing end is written as silence."""
    if frames_read >= length:
        return False
    print(f"warning: {in_p}: the file ended after {frames_read} of {length} frames; "
          "the missing end was written as silence", file=sys.stderr)
    return True


SALVAGE_FRAMES = 256  # after a decoding error, what came before it is read again in pieces this long
_ENDED: weakref.WeakSet = weakref.WeakSet()  # inputs a decoding error ended (``read_input``)


def read_input(src: sf.SoundFile, frames: int) -> np.ndarray:
    """The next ``frames`` of ``src`` (float32, 2-D). A decoding error past the header (a cut or
    damaged FLAC: "decoder lost sync") ends the file there, as a short Ogg or WAV does: what came
    before is processed and the caller warns how much was read. It used to be reported as a failed
    write of the output, the input never named. The read that failed is done again in small pieces
    (``salvage``): up to ``frames`` of good audio before the error were lost with it."""
    if src in _ENDED:
        return np.zeros((0, src.channels), np.float32)
    at = src.tell()
    try:
        return src.read(frames, dtype="float32", always_2d=True)
    except sf.LibsndfileError:
        _ENDED.add(src)
        return salvage(src, at, frames)


def salvage(src: sf.SoundFile, at: int, frames: int) -> np.ndarray:
    """What of ``frames`` from ``at`` on decodes: read again through the input opened anew (a decoding
    error leaves libsndfile's handle unable to seek) in ``SALVAGE_FRAMES`` pieces up to the first that
    fails, then through that piece frame by frame (a read fails whole: single frames throughout
    took seconds)."""
    got = np.zeros((frames, src.channels), np.float32)
    n = 0
    for piece, span in ((SALVAGE_FRAMES, frames), (1, SALVAGE_FRAMES)):
        k, failed = _read_again(src, at + n, got[n:n + span], piece)
        n += k
        if not failed:
            break
    return got[:n]


def _read_again(src: sf.SoundFile, at: int, out: np.ndarray, piece: int) -> tuple[int, bool]:
    """How many frames of ``out`` were read from ``at`` on in ``piece``-frame reads of the input opened
    again, and whether a read (or opening it) failed before ``out`` was full or the file ended."""
    n = 0
    source = src.name
    try:
        if not isinstance(source, (str, bytes, os.PathLike)):
            source.seek(0)  # a pipe's spool (``_spooled``): read again from its start
        with sf.SoundFile(source) as again:
            again.seek(at)
            while n < len(out):
                x = again.read(min(piece, len(out) - n), dtype="float32", always_2d=True)
                if not x.shape[0]:
                    break
                out[n:n + x.shape[0]] = x
                n += x.shape[0]
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
        return n, True
    return n, False


def _bytes_missing(p: Path) -> int:
    """How many bytes of audio a header promises beyond the end of the file (0 if none, or not a
    format read here: ``_audio_end``). libsndfile silently trims the length to what is there."""
    end, size = _chunk_at(p, _audio_end)
    return max(0, end - size) if end is not None else 0


def _chunk_at(p: Path, find) -> tuple:
    """(``find(fh, head, size)`` on ``p`` open, ``head`` its first 16 bytes; its size), the first
    None if it cannot be read."""
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            return find(fh, fh.read(16), size), size
    except (OSError, struct.error):
        return None, 0


W64_RIFF = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"  # Sony Wave64's chunk GUIDs
W64_DATA = b"data\xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a"


def _audio_end(fh, head: bytes, size: int) -> int | None:
    """Where a WAV's, RF64's, W64's, AIFF's or AU's audio ends by its header (bytes from the
    start), None for another format or a size it leaves open (a streaming WAV's or AU's
    0xFFFFFFFF)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        data = _riff_data(fh, head, size)
        return None if data is None or data[1] == RIFF_MAX else sum(data)
    if head[:4] in (b"RF64", b"BW64") and head[8:12] == b"WAVE":  # the data's size in the ds64 chunk
        fh.seek(12)
        cid, _, _, ds64 = struct.unpack("<4sIQQ", fh.read(24))
        data = _riff_data(fh, head, size)
        if cid != b"ds64" or data is None:
            return None
        return data[0] + (ds64 if data[1] == RIFF_MAX else data[1])
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        found = _find_chunk(fh, size, 12, ">4sI", b"SSND")
        return None if found is None else found[0] + 8 + found[1]
    if head == W64_RIFF:
        found = _find_chunk(fh, size, 40, "<16sQ", W64_DATA, align=8, sized_with_header=True)
        return None if found is None else sum(found)
    if head[:4] == b".snd":
        offset, length = struct.unpack(">II", head[4:12])
        return None if length == RIFF_MAX else offset + length
    return None


def _riff_data(fh, head: bytes, size: int) -> tuple[int, int] | None:
    """A RIFF/RF64 WAVE's audio: where its data chunk's bytes start, and the size its header gives them."""
    if head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
        return None
    found = _find_chunk(fh, size, 12, "<4sI", b"data")
    return None if found is None else (found[0] + 8, found[1])


def _find_chunk(fh, size: int, pos: int, layout: str, want: bytes, align: int = 2,
                sized_with_header: bool = False) -> tuple[int, int] | None:
    """(offset, size) of the first chunk ``want`` from ``pos`` on: chunks of an id and a size
    (``layout``), each padded to ``align`` bytes; a W64 chunk's size counts its own header."""
    head = struct.calcsize(layout)
    while pos + head <= size:
        fh.seek(pos)
        cid, length = struct.unpack(layout, fh.read(head))
        if cid == want:
            return pos, length
        step = length if sized_with_header else head + length
        if step < head:  # a broken size: no further chunk can be found
            return None
        pos += step + (-step % align)
    return None


OGG_PAGE_MAX = 27 + 255 + 255 * 255  # the largest Ogg page: header, segment table, body


def _ogg_unended(p: Path) -> bool:
    """Whether an Ogg file (Vorbis, Opus) was cut: its last page lacks the end-of-stream flag (a
    cut at a page boundary) or runs past the end of the file. libsndfile takes an Ogg file's length
    from its last page's position, so a cut one reads as a whole, shorter file. Only the file's
    tail is read: the last page starts within ``OGG_PAGE_MAX`` bytes of its end."""
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            if fh.read(4) != b"OggS":
                return False
            fh.seek(max(0, size - OGG_PAGE_MAX))
            tail = fh.read()
    except OSError:
        return False
    at = tail.rfind(b"OggS\x00")  # capture pattern and stream structure version 0
    if at < 0:
        return False
    head = tail[at: at + 27]
    if len(head) < 27:
        return True  # cut inside the last page's header
    lacing = tail[at + 27: at + 27 + head[26]]
    end = at + 27 + len(lacing) + sum(lacing)
    return not head[5] & 0x04 or len(lacing) < head[26] or end > len(tail)
