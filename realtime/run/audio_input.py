"""Reading the files the offline runner processes: paths and standard input, what libsndfile opens,
and what it does not say: a file cut short or still growing (WAV, RF64, W64, AIFF, AU, CAF, Ogg), a WAV
past the 4 GiB its header counts, joined MP3 files and chained Ogg streams (read part after part),
a header that does not give the length (a FLAC written to a pipe: counted by decoding), a decoding
error part way (everything before it kept), and samples that are not numbers (zeroed
before any resampler)."""
from __future__ import annotations

import io
import os
import struct
import sys
import weakref
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.errors import InputAccessError, OfflineError, os_reason
from realtime.io import mpg123
from realtime.io.files import libsndfile_words, not_a_file, sf_path

STDIN = Path("/dev/stdin")


def input_path(path) -> Path:
    """``path`` as a Path; ``-`` is standard input (``/dev/stdin``: read once, as any pipe)."""
    return STDIN if str(path) == "-" else Path(path)


MIN_INPUT_RATE = 1000  # Hz: below it a file is no audio (and its reads would resample ×48 or more)
# libsndfile's words for an MP3 it cannot decode, although it is a regular file
NOT_A_FILE = "File does not exist or is not a regular file (possibly a pipe?)."


def open_input(path: str | os.PathLike) -> tuple[sf.SoundFile, bool]:
    """The input opened, and whether it is cut (``truncation``: warned about here, once; libsndfile's
    length is then what the file holds), or goes on past what can be read (``joined``)."""
    p = input_path(path)
    if p == STDIN and os.isatty(0):  # reading it would wait for Ctrl-D
        raise OfflineError("standard input is a terminal; pipe the audio in (e.g. `cat IN | … process - OUT`)")
    if not p.exists():
        raise OfflineError(f"{p}: no such file")
    if p.is_dir():
        raise OfflineError(f"{p}: is a directory, not an audio file")
    if p != STDIN and not_a_file(p) == "a device":  # /dev/zero: spooled until the disk was full
        raise OfflineError(f"{p}: is a device, not an audio file (`-` reads standard input)")
    if p.is_file():
        try:
            with open(p, "rb"):  # libsndfile says "System error." of a file it may not read
                pass
        except OSError as e:
            raise InputAccessError(f"{p}: cannot read it ({os_reason(e) or e.strerror or e})") from None
    # a pipe is read whole first: then its length is what it held, whatever its header says (a
    # spool that fails is said as what it is, not as a file that is no audio)
    source = sf_path(p) if p.is_file() else _spooled(p)
    try:
        f = sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError) as e:  # libsndfile's words alone: soundfile's prefix names a pipe's spool
        words = libsndfile_words(e) or str(e)
        if words == NOT_A_FILE and p.is_file():  # what libsndfile says of an MP3 it cannot decode: untrue here
            raise OfflineError(f"{p}: not a readable audio file") from None
        raise OfflineError(f"{p}: not a readable audio file ({words})") from None
    f, said = whole_wav(p, f) if p.is_file() else (f, None)
    f, rest = joined(p if p.is_file() else f.name, f)
    f, guessed = whole_mp3(p if p.is_file() else f.name, f)
    f, unsure = known_length(f.name, f)  # (as opened: a path's bytes, a name not in UTF-8 too, or the spool)
    if f.frames == 0:
        f.close()
        if p.is_file() and truncation(p):  # a short Ogg cut in half: libsndfile reads none of it
            raise OfflineError(f"{p}: no audio could be read from it (the file is cut short: its end is missing)")
        raise OfflineError(f"{p}: contains no audio frames")
    if f.channels not in (1, 2):
        f.close()
        raise OfflineError(f"{p}: {f.channels} channels not supported (mono or stereo)")
    if f.samplerate < MIN_INPUT_RATE:  # (1 Hz: each read resampled to 48 kHz at once, gigabytes)
        f.close()
        raise OfflineError(f"{p}: a sample rate of {f.samplerate} Hz is no audio rate; {MIN_INPUT_RATE} Hz at least")
    why = truncation(p)
    if why:
        said = f"{why} (a truncated or still-growing file); processing what is there"
    for words in (said, rest, guessed, unsure):
        if words:
            print(f"warning: {p}: {words}", file=sys.stderr)
    return f, said is not None or rest is not None or unsure is not None


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
    """A file's bytes from ``start`` on (up to ``end``: None, its end), as a file of their own
    (``WavAudio``, ``JoinedAudio``). ``source`` is a path (opened here) or an open file (a pipe's
    spool, which several may share: each seeks to its own place before it reads). An error
    reading (EIO from a failing disk) ends the bytes there, as libsndfile's own read errors end a
    file (``salvage``, ``warn_short``): raised, it went to stderr as a traceback from soundfile's
    callback, once per read."""

    def __init__(self, source, start: int, end: int | None = None):
        super().__init__()
        self._own = _is_path(source)
        self._f = open(source, "rb", buffering=0) if self._own else source
        self._start, self._end, self._pos = start, end, 0  # libsndfile reads from 0, before any seek

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            pos += self._size()
        elif whence == os.SEEK_CUR:
            pos += self._pos
        self._pos = max(0, pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _size(self) -> int:
        end = self._f.seek(0, os.SEEK_END)
        return (end if self._end is None else min(end, self._end)) - self._start

    def readinto(self, b) -> int:
        want = len(b) if self._end is None else max(0, min(len(b), self._end - self._start - self._pos))
        try:
            self._f.seek(self._start + self._pos)
            n = self._f.readinto(memoryview(b)[:want]) or 0
        except OSError:
            return 0
        self._pos += n
        return n

    def close(self) -> None:
        if self._own:
            self._f.close()
        super().close()


class WavAudio(sf.SoundFile):
    """A WAV's audio, from its data chunk to the end of the file, read by libsndfile as RAW in the
    header's sample format (``whole_wav``); its text tags are the header's (``copy_tags``)."""

    def __init__(self, path: Path, start: int, header: sf.SoundFile):
        self._tags = text_tags(header)
        self._path, self._start = path, start
        self._tail = _FileTail(path, start)
        try:
            super().__init__(self._tail, "r", samplerate=header.samplerate, channels=header.channels,
                             subtype=header.subtype, endian="LITTLE", format="RAW")
        except BaseException:
            self._tail.close()
            raise

    def copy_metadata(self) -> dict[str, str]:
        return dict(self._tags)

    def reopen(self) -> WavAudio:
        """The same audio opened anew, at its start (``salvage``)."""
        return WavAudio(self._path, self._start, self)

    def close(self) -> None:
        super().close()
        if hasattr(self, "_tail"):
            self._tail.close()


class JoinedAudio:
    """The parts of one file that libsndfile reads only as files of their own, read one after the
    other (``joined``): MP3 files joined end to end (``cat a.mp3 b.mp3``) and the links of a
    chained Ogg file (a stream recording, or ``cat a.ogg b.ogg``), of which libsndfile read the
    first alone, without a word. As a SoundFile for what the runners ask of one: its length is
    the parts' together, its format and text tags the first part's. One part is open at a time
    (a stream recording may hold thousands: each open part costs a file descriptor and ~170 KB,
    and a batch runs several such files side by side).

    Parameters
    ----------
    source : Path or file
        The file, or a pipe's spool (``_spooled``).
    bounds : list of (int, int)
        Each part's bytes: where it starts and ends.
    tags : dict
        The first part's text tags (``copy_metadata``).
    lengths : list of int
        Each part's length in frames (``_joined`` opened each part once to find it).
    """

    def __init__(self, source, bounds: list[tuple[int, int]], tags: dict[str, str], lengths: list[int]):
        self._source, self._bounds, self._tags, self._lengths = source, bounds, tags, lengths
        try:
            self._part = _open_part(source, *bounds[0])  # the part being read (None: past the last)
        except OSError as e:
            raise _part_error(source, 0, len(bounds), e) from None
        self._k, self._closed = 0, False
        first = self._part
        self.samplerate, self.channels = first.samplerate, first.channels
        self.format, self.subtype, self.endian = first.format, first.subtype, first.endian
        self.frames = sum(lengths)
        self.name = _source_name(source)

    def _go_to(self, k: int) -> None:
        """Part ``k`` open at its start (the one open before closed); past the last part: none."""
        if self._part is not None:
            _close_part(self._part)
            self._part = None
        self._k = k
        if k < len(self._bounds):
            try:
                self._part = _open_part(self._source, *self._bounds[k])
            except OSError as e:  # (no file descriptor left): the file fails, never passes as a shorter one
                raise _part_error(self._source, k, len(self._bounds), e) from None

    def read(self, frames: int = -1, dtype: str = "float64", always_2d: bool = False) -> np.ndarray:
        if frames < 0:
            frames = max(0, self.frames - self.tell())
        got = []
        while frames > 0 and self._part is not None:
            x = self._part.read(frames, dtype=dtype, always_2d=True)
            got.append(x)
            frames -= x.shape[0]
            if frames > 0:  # this part has ended
                self._go_to(self._k + 1)
        x = got[0] if len(got) == 1 else np.concatenate(got) if got else np.zeros((0, self.channels), dtype)
        return x if always_2d or self.channels > 1 else x[:, 0]

    def tell(self) -> int:
        return sum(self._lengths[:self._k]) + (self._part.tell() if self._part is not None else 0)

    def seek(self, frames: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET:
            raise ValueError("JoinedAudio seeks from its start only")
        k, at = 0, frames
        while k < len(self._lengths) - 1 and at >= self._lengths[k]:
            at -= self._lengths[k]
            k += 1
        if k != self._k or self._part is None:
            self._go_to(k)
        self._part.seek(at)
        return frames

    def seekable(self) -> bool:
        return True

    def copy_metadata(self) -> dict[str, str]:
        return dict(self._tags)

    def reopen(self) -> JoinedAudio:
        """The same parts opened anew, at the start (``salvage``)."""
        return JoinedAudio(self._source, self._bounds, self._tags, self._lengths)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._part is not None:
            _close_part(self._part)
            self._part = None
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_part(source, start: int, end: int) -> sf.SoundFile:
    """The bytes of ``source`` from ``start`` to ``end``, opened by libsndfile as a file of their own."""
    tail = _FileTail(source, start, end)
    try:
        return _ReadOnward(tail)
    except BaseException:
        tail.close()
        raise


def _close_part(part: sf.SoundFile) -> None:
    part.close()
    part.name.close()  # its _FileTail


PART_CHANNELS = {1: "a mono part", 2: "a stereo part"}


def _source_name(source) -> str:
    """``source`` as a message names it: its path, or "input" for a pipe's spool."""
    return os.fsdecode(source) if _is_path(source) else "input"


def _is_path(source) -> bool:
    """Whether ``source`` names a file (else it is an open one: a pipe's spool, ``_spooled``)."""
    return isinstance(source, (str, bytes, os.PathLike))


def joined(source, f: sf.SoundFile) -> tuple:
    """``f`` (an MP3 or Ogg file, opened from ``source``: its path, or a pipe's spool), or where
    it is the first of several parts that libsndfile reads only apart (``_mp3_parts``,
    ``_ogg_links``), every part that it reads in the first's rate and channels, one after the
    other (``JoinedAudio``); with words for a warning where the file goes on past what is read
    (None: nothing to say). libsndfile read such a file's first part and stopped, without a word."""
    if f.format not in ("MP3", "OGG"):
        return f, None
    with _peeking(source) as fh:
        try:
            return _joined(source, f, fh)
        except OfflineError:
            f.close()
            raise


@contextmanager
def _peeking(source):
    """``source`` open for reading its bytes: a path opened (and closed after), or an open file (a
    pipe's spool: ``f``'s own file) put back after where libsndfile left it, whatever was read."""
    fh = open(source, "rb") if _is_path(source) else source
    was = fh.tell()
    try:
        yield fh
    finally:
        if fh is source:
            fh.seek(was)
        else:
            fh.close()


def _joined(source, f: sf.SoundFile, fh) -> tuple:
    """``joined``'s work, ``fh`` open on ``source`` (its position is put back by the caller)."""
    try:
        size = fh.seek(0, os.SEEK_END)
        starts = _ogg_links(fh, size) if f.format == "OGG" else _mp3_parts(fh, size)
    except (OSError, struct.error):
        starts = []
    if not starts:
        return f, None
    bounds = list(zip([0, *starts], [*starts, size]))
    lengths, tags, why = [], {}, None
    for i, (start, end) in enumerate(bounds):  # each part opened once, alone, for its length and format
        try:
            part = _open_part(source, start, end)
        except OSError as e:  # this machine's trouble (no file descriptor left, a read error), not the file's
            raise _part_error(source, i, len(bounds), e) from None
        except (sf.LibsndfileError, RuntimeError):
            if i == 0:
                return f, None
            why = "a part libsndfile cannot read"
            break
        try:
            why = _unlike(part, f) if i else None
            if why is None:
                lengths.append(part.frames)
                tags = text_tags(part) if i == 0 else tags
        finally:
            _close_part(part)
        if why is not None:
            break
    rest = None
    if why is not None:
        secs = sum(lengths) / f.samplerate
        rest = (f"the file goes on past its first {secs:.1f} s ({bounds[len(lengths)][0]} of {size} bytes) "
                f"with {why}; that rest is not processed")
    if len(lengths) == 1:
        return f, rest
    # the first part's tags: the whole file's held the last part's ID3v1
    whole = JoinedAudio(source, bounds[:len(lengths)], tags, lengths)
    f.close()
    return whole, rest


def whole_mp3(source, f) -> tuple:
    """``f``, or where it is an MP3 whose length libsndfile guessed (no Xing/Info header counts its
    frames: libsndfile takes libmpg123's estimate from the file's size and never reads past it,
    and a 10 s VBR file came out 3 s long, without a word), the MP3 read through libmpg123 to its
    real end (``Mpg123Audio``); with words for a warning where that cannot be done (None: nothing
    to say). A joined file's parts (``JoinedAudio``) are left as they are."""
    if f.format != "MP3" or not isinstance(f, sf.SoundFile):
        return f, None
    with _peeking(source) as fh:
        try:
            first = _mp3_frame(fh, _after_id3v2(fh, 0))
        except (OSError, struct.error):
            first = None
    if first is not None and first[1] is not None:  # its header counts the frames: libsndfile reads them all
        return f, None
    if mpg123.library() is None:
        return f, ("no header gives its length, and libmpg123 (Debian: libmpg123-0) is not installed to count "
                   f"it: read as libsndfile's estimate, {f.frames / f.samplerate:.1f} s, which may cut it short")
    try:
        whole = mpg123.Mpg123Audio(source, text_tags(f), f.subtype)
    except (mpg123.Mpg123Error, OSError) as e:
        return f, f"its length could not be counted ({e}): read as libsndfile's estimate, {f.frames / f.samplerate:.1f} s"
    if (whole.frames, whole.samplerate, whole.channels) == (f.frames, f.samplerate, f.channels):
        whole.close()  # the estimate was right (a CBR file): libsndfile reads it as it is
        return f, None
    f.close()
    return whole, None


UNKNOWN_FRAMES = 1 << 62  # libsndfile's length (2^63 - 1) for a header that does not give it


def known_length(source, f: sf.SoundFile) -> tuple:
    """``f``, or where its header does not give its length (a FLAC written to a pipe by ``flac -``
    or ``ffmpeg -f flac -``, or one whose writer stopped on a full disk: libsndfile says 2^63
    frames, and a run sized its output by that and failed), the file read with its length counted
    (``UnsizedAudio``); with words for a warning where decoding stopped on an error before the
    end (None: nothing to say)."""
    if f.frames < UNKNOWN_FRAMES:
        return f, None
    f.close()
    if not _is_path(source):
        source.seek(0)
    whole = UnsizedAudio(source)
    if whole.error is None:
        return whole, None
    return whole, (f"decoding stopped after {whole.frames / whole.samplerate:.1f} s ({whole.error}): a damaged "
                   "or cut file; processing what is there")


class UnsizedAudio(sf.SoundFile):
    """A file whose header does not give its length, its length counted by decoding it once.

    libsndfile cannot seek such a file to its end, and soundfile seeks after each read of a file it
    can seek: the read that reached the end failed, and its audio was lost. Reads here never seek
    (``seekable`` False to soundfile), the position is kept here, and a seek to the end (a
    ``salvage``) is kept here too. ``error``: libsndfile's words where decoding stopped before the
    end, else None."""

    def __init__(self, source, frames: int | None = None):
        self._source, self._pos, self.error = source, 0, None
        super().__init__(source)
        self._frames = self._count() if frames is None else frames

    def _count(self) -> int:
        """The frames that decode, read through once: in long reads, then after a decoding error (a
        cut file; a read fails whole) from where that read started in ``SALVAGE_FRAMES`` pieces, then
        frame by frame through the piece that failed, as ``salvage`` reads them. After an error the
        file is opened anew and read up to there again: seeking near the damage fails too."""
        n, buf = 0, np.empty((1 << 16, self.channels), np.float32)
        for piece in (buf.shape[0], SALVAGE_FRAMES, 1):
            try:
                self._skip(n, buf)
                while got := super().read(piece, dtype="float32", always_2d=True, out=buf[:piece]).shape[0]:
                    n += got
                    if piece == 1 and n % SALVAGE_FRAMES == 0:  # through the piece that failed: stop there
                        break
                else:  # the end of the file
                    self.error = None
            except (sf.LibsndfileError, RuntimeError) as e:  # (soundfile's read errors are RuntimeErrors)
                self.error = libsndfile_words(e) or str(e)
                self._reset()
                continue
            break
        self._reset()
        return n

    def _skip(self, n: int, buf: np.ndarray) -> None:
        """``n`` frames read from where the file is (its start), in ``buf``'s length."""
        while n > 0 and (got := super().read(min(n, len(buf)), dtype="float32", always_2d=True, out=buf[:n]).shape[0]):
            n -= got

    def _reset(self) -> None:
        """Back at the start, opened anew: a decoding error leaves the handle unable to seek."""
        super().close()
        if not _is_path(self._source):
            self._source.seek(0)
        super().__init__(self._source)

    frames = property(lambda self: self._frames)

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, frames: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET:
            raise ValueError("UnsizedAudio seeks from its start only")
        self._pos = min(max(frames, 0), self._frames)
        if self._pos < self._frames:
            super().seek(self._pos)
        return self._pos

    def read(self, frames: int = -1, dtype: str = "float64", always_2d: bool = False, **kw) -> np.ndarray:
        left = self._frames - self._pos
        x = super().read(left if frames < 0 else min(frames, left), dtype=dtype, always_2d=always_2d, **kw)
        self._pos += x.shape[0]
        return x

    def reopen(self) -> UnsizedAudio:
        """The same file opened anew, at its start (``salvage``), its length as counted."""
        if not _is_path(self._source):
            self._source.seek(0)
        return UnsizedAudio(self._source, self._frames)


def _part_error(source, k: int, n: int, e: OSError) -> InputAccessError:
    """The one line for part ``k`` of ``n`` that could not be opened (``e``: the system's reason)."""
    return InputAccessError(f"{_source_name(source)}: cannot open its part {k + 1} of {n} ({e.strerror or e})")


def _unlike(part: sf.SoundFile, first: sf.SoundFile) -> str | None:
    """How ``part`` differs from the ``first`` part in what a run takes from it, in words, else None."""
    if part.format != first.format:
        return f"a part in another format ({part.format})"
    if part.samplerate != first.samplerate:
        return f"a part at {part.samplerate} Hz"
    if part.channels != first.channels:
        return PART_CHANNELS.get(part.channels, f"a part with {part.channels} channels")
    return None


def _spooled(p: Path):
    """A pipe's or a device's whole content (``/dev/stdin``, a FIFO) in a seekable file: MP3 and
    FLAC decoders seek, and read straight from a pipe lost 3 s of a minute of MP3 (and refused
    FLAC); a streaming WAV header's 0xFFFFFFFF sizes (``ffmpeg -f wav -``), which libsndfile read as
    1073741823 frames from a pipe, give the length it holds. Up to 64 MiB in memory, beyond that in
    an unnamed temporary file the system removes with the last reference to it, whatever happens."""
    import tempfile

    spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)
    try:
        src = open(p, "rb")
    except OSError as e:
        spool.close()
        raise OfflineError(f"{p}: cannot read ({os_reason(e) or e.strerror or e})") from None
    with src:
        while True:
            try:
                chunk = src.read(1 << 20)
            except OSError as e:
                spool.close()
                raise OfflineError(f"{p}: cannot read ({os_reason(e) or e.strerror or e})") from None
            if not chunk:
                break
            try:
                spool.write(chunk)
            except OSError as e:  # the temporary folder, not the input, is the trouble
                spool.close()
                raise OfflineError(f"{p}: cannot keep what it sends in the temporary folder {tempfile.gettempdir()} "
                                   f"({os_reason(e) or e.strerror or e}); set TMPDIR to a folder with room") from None
    spool.seek(0)
    return spool


def truncation(path) -> str | None:
    """Why a regular file stops before its end, in words for a warning, or None: a WAV, RF64, W64,
    AIFF, AU or CAF whose header promises more bytes of audio than it holds (``_bytes_missing``), an
    Ogg stream without its last page (``_ogg_unended``). libsndfile reads either as a whole,
    shorter file. None for a pipe, which opened a second time would lose the audio read from it."""
    p = Path(path)
    if not p.is_file():
        return None
    missing = _bytes_missing(p)
    if missing:
        return f"the header promises {missing} more bytes of audio than the file holds"
    return "the Ogg stream stops before its end" if _ogg_unended(p) else None


def text_tags(f) -> dict[str, str]:
    """``f``'s text tags (title, artist, …): UTF-8 where they are, else in the encoding their
    writers used (``_tag_text``): a WAV's INFO written by Windows software, an AIFF's by a Mac's,
    an old tagger's FLAC. soundfile decoded such bytes as UTF-8 with U+FFFD for each accented
    letter, and the output got "Caf\ufffd" for "Café" (an MP3, nothing). The readers that wrap a
    file (``WavAudio``, ``JoinedAudio``, ``Mpg123Audio``): the tags they were given."""
    if type(f).copy_metadata is not sf.SoundFile.copy_metadata:
        return f.copy_metadata()
    legacy = "mac_roman" if f.format == "AIFF" else "cp1252"
    tags = {}
    for name, sid in sf._str_types.items():
        data = sf._snd.sf_get_string(f._file, sid)
        if data:
            tags[name] = _tag_text(sf._ffi.string(data), legacy)
    return tags


def _tag_text(raw: bytes, legacy: str) -> str:
    """A tag's bytes as text: UTF-8, else ``legacy`` (Windows-1252, Mac Roman), else Latin-1 (a
    byte Windows-1252 leaves unused)."""
    for encoding in ("utf-8", legacy):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")


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
    try:
        with _reopened(src) as again:
            again.seek(at)
            while n < len(out):
                x = again.read(min(piece, len(out) - n), dtype="float32", always_2d=True)
                if not x.shape[0]:
                    break
                out[n:n + x.shape[0]] = x
                n += x.shape[0]
    except InputAccessError:
        raise
    except OSError as e:  # opening it again failed (no file descriptor left): not where the audio ends
        raise InputAccessError(f"{getattr(src, 'name', 'input')}: cannot open it again to read up to a decoding "
                               f"error ({e.strerror or e})") from None
    except (sf.LibsndfileError, RuntimeError, ValueError):
        return n, True
    return n, False


def _reopened(src):
    """``src`` opened anew, at its start: as it was opened (a ``WavAudio``'s RAW audio, a
    ``JoinedAudio``'s parts), else from its path, or a pipe's spool read again from its start."""
    if isinstance(src, (WavAudio, JoinedAudio, UnsizedAudio)):
        return src.reopen()
    source = src.name
    if not _is_path(source):
        source.seek(0)
    return _ReadOnward(source)


class _ReadOnward(sf.SoundFile):
    """A file read onward without the seek soundfile makes after each read of a file it can seek:
    at a damaged file's last good frame that seek fails, and the frame read with it was lost."""

    def seekable(self) -> bool:
        return False


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
    """Where a WAV's, RF64's, W64's, AIFF's, AU's or CAF's audio ends by its header (bytes from the
    start), None for another format or a size it leaves open (a streaming WAV's or AU's
    0xFFFFFFFF, a CAF's -1)."""
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
    if head[:4] == b"caff":  # a data size of -1: up to the end of the file (a recorder still writing)
        found = _find_chunk(fh, size, 8, ">4sq", b"data", align=1)
        return None if found is None or found[1] < 0 else found[0] + 12 + found[1]
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


def _ogg_links(fh, size: int) -> list[int]:
    """Where each link of a chained Ogg file after the first starts (its first page: a
    beginning-of-stream page after another stream's pages); [] for a file of one stream. Read page
    by page only where the last page's stream is not the first's (each link has its own)."""
    fh.seek(0)
    first = fh.read(27)
    fh.seek(max(0, size - OGG_PAGE_MAX))
    tail = fh.read()
    at = tail.rfind(b"OggS\x00")
    if first[:5] != b"OggS\x00" or at < 0 or tail[at + 14: at + 18] == first[14:18]:
        return []
    starts, pos, data = [], 0, False
    while pos + 27 <= size:
        fh.seek(pos)
        head = fh.read(27)
        if head[:5] != b"OggS\x00":
            break
        lacing = fh.read(head[26])
        bos = bool(head[5] & 0x02)
        if bos and data:
            starts.append(pos)
        data = not bos
        pos += 27 + len(lacing) + sum(lacing)
    return starts


MP3_KBPS = {  # (MPEG-1, layer bits: 3 = I, 2 = II, 1 = III): kbit/s by the header's index
    (True, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
MP3_RESYNC = 1 << 16  # how far past a part's end the next part's first frame is looked for


def _mp3_parts(fh, size: int) -> list[int]:
    """Where each part of an MP3 file after the first starts: MP3 files joined end to end (``cat``).
    libsndfile (libmpg123) stops a part after the frames its Xing/Info header counts; what
    follows, past any ID3v1/APE tag, is the next part (``_mp3_next``)."""
    starts, start = [], 0
    while (end := _mp3_part_end(fh, start, size)) is not None and (nxt := _mp3_next(fh, end, size)) is not None:
        starts.append(nxt)
        start = nxt
    return starts


def _mp3_part_end(fh, start: int, size: int) -> int | None:
    """Where libsndfile stops reading an MP3 (part) that starts at ``start``: after the frames its
    Xing/Info header counts; None where it reads on to the end (no count, or the bytes the header
    counts reach the end: the file alone, an ID3v1 tag after it)."""
    pos = _after_id3v2(fh, start)
    first = _mp3_frame(fh, pos)
    if first is None or first[1] is None:
        return None
    length, count, nbytes = first
    if nbytes is not None and pos + nbytes >= size - 128:
        return None
    pos += length
    for _ in range(count):
        frame = _mp3_frame(fh, pos)
        if frame is None or frame[1] is not None:  # a tag, or the next part's own Xing/Info frame
            break
        pos += frame[0]
    return pos


def _mp3_next(fh, pos: int, size: int) -> int | None:
    """Where an MP3 part starts at or after ``pos`` (past ID3v1 and APE tags): an ID3v2 tag, or a
    frame another frame follows, within ``MP3_RESYNC`` bytes; None if none."""
    pos = _after_tags(fh, pos, size)
    fh.seek(pos)
    window = fh.read(MP3_RESYNC)
    i = 0
    while True:
        hits = [k for k in (window.find(b"\xff", i), window.find(b"ID3", i)) if k >= 0]
        if not hits:
            return None
        i = min(hits)
        if window[i:i + 3] == b"ID3":
            return pos + i
        frame = _mp3_frame(fh, pos + i)
        if frame is not None and _mp3_frame(fh, pos + i + frame[0]) is not None:
            return pos + i
        i += 1


def _after_id3v2(fh, pos: int) -> int:
    """``pos``, or past the ID3v2 tag there."""
    fh.seek(pos)
    head = fh.read(10)
    if len(head) < 10 or head[:3] != b"ID3":
        return pos
    size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
    return pos + 10 + size + (10 if head[5] & 0x10 else 0)  # (a footer)


def _after_tags(fh, pos: int, size: int) -> int:
    """``pos``, or past the ID3v1 and APE tags there (an MP3's, after its frames)."""
    while pos < size:
        fh.seek(pos)
        head = fh.read(32)
        if head[:3] == b"TAG":
            pos += 128
        elif head[:8] == b"APETAGEX" and len(head) == 32:
            length, flags = struct.unpack("<I4xI", head[12:24])
            pos += length + (32 if flags & 1 << 29 else 0)  # a header before the items: not counted
        else:
            break
    return pos


def _mp3_frame(fh, pos: int) -> tuple[int, int | None, int | None] | None:
    """(length in bytes, the frames and bytes its Xing/Info header counts, None each if it has none)
    of the MPEG audio frame at ``pos``, None if none starts there."""
    fh.seek(pos)
    h = fh.read(4)
    if len(h) < 4 or h[0] != 0xFF or h[1] & 0xE0 != 0xE0:
        return None
    version, layer, kbps_i, rate_i = h[1] >> 3 & 3, h[1] >> 1 & 3, h[2] >> 4, h[2] >> 2 & 3
    if version == 1 or layer == 0 or kbps_i in (0, 15) or rate_i == 3:  # reserved, free format or bad
        return None
    mpeg1 = version == 3
    bps = MP3_KBPS[mpeg1, layer][kbps_i] * 1000
    rate = (44100, 48000, 32000)[rate_i] >> (0 if mpeg1 else 1 if version == 2 else 2)
    pad = h[2] >> 1 & 1
    if layer == 3:
        length = (12 * bps // rate + pad) * 4
    else:
        length = (144 if mpeg1 or layer == 2 else 72) * bps // rate + pad
    count = nbytes = None
    if layer == 1:  # Layer III: an Xing/Info header after the side information
        mono = h[3] >> 6 == 3
        fh.seek(pos + 4 + ((17 if mono else 32) if mpeg1 else (9 if mono else 17)))
        tag = fh.read(16)
        if tag[:4] in (b"Xing", b"Info") and len(tag) == 16:
            flags, fields = struct.unpack(">I", tag[4:8])[0], tag[8:16]
            if flags & 1:
                count, fields = struct.unpack(">I", fields[:4])[0], fields[4:]
            if flags & 2:
                nbytes = struct.unpack(">I", fields[:4])[0]
    return length, count, nbytes
