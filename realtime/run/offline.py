"""Offline runner: the live chain, block by block, over files — faster than real time.

One block loop (``ChainRunner``) serves audio files (``process_file``) and MIDI renders
(``render_midi``, ``render_events``): fixed chain blocks from a FIFO, MIDI events at their exact
sample offsets, the chain's latency dropped from the start (the latency it reports once prepared;
see ``process_file``'s ``compensate_latency``). Constant memory (an hour-long file
streams through), streaming resampling to the chain rate and back (python-soxr), and an atomic
write: output goes to a temporary file beside the target and is renamed only when complete, so a
failure leaves no half file and the input is never overwritten.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.dsp.processor import dropped_midi_events
from realtime.errors import OfflineError, raise_pending_interrupt
from realtime.io.files import (
    atomic_write,
    folder_problem,
    libsndfile_words,
    remove_stale_parts,
    sf_path,
    through_link,
)

READ_FRAMES = 16384  # file I/O granularity; independent of the chain's block size
RESAMPLER_FLUSH = 4096  # chain frames of silence beyond the latency that push a resampler's tail out
DEFAULT_RATE = 48000
NATIVE_RANGE = (44100, 384000)  # lower rates go to 48 kHz as before (EQ corners at 10 kHz and up)


def chain_rate(processors, file_rate: int, requested: int | None = None) -> int:
    """The rate a file runs through ``processors`` (instances or classes) at: ``requested`` if
    given; else the file's own when every processor runs at it as it is (``native_rates``), so
    nothing is resampled (a clipper's flat runs reach the de-clipper intact) and it is at least
    44.1 kHz; else 48 kHz."""
    if requested:
        return int(requested)
    ok = all(p.native_rates is None or file_rate in p.native_rates for p in processors)
    return int(file_rate) if ok and NATIVE_RANGE[0] <= file_rate <= NATIVE_RANGE[1] else DEFAULT_RATE



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
        print(f"warning: {p}: {why} (a truncated or still-growing file); processing what is there", file=sys.stderr)
    return f, why is not None


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
    """Why a regular file stops before its end, in words for a warning, or None: a WAV whose header
    promises more bytes than it holds (``_wav_bytes_missing``), an Ogg stream without its last page
    (``_ogg_unended``). libsndfile reads either as a whole, shorter file. None for a pipe, which
    opened a second time would lose the audio read from it."""
    p = Path(path)
    if not p.is_file():
        return None
    missing = _wav_bytes_missing(p)
    if missing:
        return f"the header promises {missing} more bytes of audio than the file holds"
    return "the Ogg stream stops before its end" if _ogg_unended(p) else None


def copy_tags(src: sf.SoundFile, dst: sf.SoundFile) -> None:
    """The input's text tags (title, artist, date, …) onto the output, before any audio is written
    (FLAC takes them only then); a tag the output's format cannot hold is left out, and so is
    ``software``: it names what wrote the file (libsndfile adds its own)."""
    for name, value in src.copy_metadata().items():
        if name == "software":
            continue
        try:
            setattr(dst, name, value)
        except (sf.LibsndfileError, RuntimeError):
            pass


def clipped_samples(chain) -> int:
    """Samples the chain's final safety stage clipped to its ceiling since ``prepare`` (0 for a
    chain without one): a float source over 0 dBFS through a chain without a limiter."""
    from realtime.dsp.processors.safety import CLIPPED

    slots = getattr(chain, "slots", ())
    counters = getattr(slots[-1].processor, "counters", None) if slots else None
    return int(counters[CLIPPED]) if counters is not None else 0


def final_safety(chain):
    """The chain's final safety stage (the processor in its last slot, when that is one), else None:
    its ceiling also holds after the output is resampled back (``OutputWriter``)."""
    slots = getattr(chain, "slots", ())
    proc = slots[-1].processor if slots else None
    return proc if getattr(proc, "kind", None) == "safety" else None


def warn_clipped(in_p, clipped: int) -> None:
    """One line on stderr when the safety stage clipped: rc 0 alone said nothing of it."""
    if clipped:
        print(f"warning: {in_p}: {clipped} samples went over the safety ceiling and were clipped; "
              "lower the gain, or let a limiter that is not bypassed catch the peaks (e.g. --preset default)",
              file=sys.stderr)


def junk_samples(chain) -> dict[str, int]:
    """Per hosted plugin's slot, how many output samples it has had replaced by silence so far (junk:
    NaN/Inf or absurd levels; ``bad_output_samples``, counted since the plugin was built)."""
    return {s.id: int(s.processor.bad_output_samples) for s in getattr(chain, "slots", ())
            if hasattr(s.processor, "bad_output_samples")}


def warn_junk(in_p, chain, before: dict[str, int]) -> int:
    """One line per plugin that put out junk since ``before`` (``junk_samples``), which the host
    silenced: a plugin that misbehaves in this chain left gaps a file's rc 0 said nothing of.
    Returns the samples silenced."""
    total = 0
    for slot, n in junk_samples(chain).items():
        n -= before.get(slot, 0)
        if n > 0:
            total += n
            name = getattr(getattr(chain.slot(slot).processor, "info", None), "name", slot)
            print(f"warning: {in_p}: plugin {name!r} (slot {slot}) put out junk (NaN/Inf or absurd levels); "
                  f"{n} samples were replaced by silence", file=sys.stderr)
    return total


def warn_short(in_p, frames_read: int, length: int) -> bool:
    """Whether decoding stopped before the input's length (a damaged file), said in one line: its
    missing end is written as silence."""
    if frames_read >= length:
        return False
    print(f"warning: {in_p}: the file ended after {frames_read} of {length} frames; "
          "the missing end was written as silence", file=sys.stderr)
    return True


def read_input(src: sf.SoundFile, frames: int) -> np.ndarray:
    """The next ``frames`` of ``src`` (float32, 2-D). A decoding error past the header (a cut or
    damaged FLAC: "decoder lost sync") ends the file there, as a short Ogg or WAV does: what came
    before is processed and the caller warns how much was read. It used to be reported as a failed
    write of the output, the input never named."""
    try:
        return src.read(frames, dtype="float32", always_2d=True)
    except sf.LibsndfileError:
        return np.zeros((0, src.channels), np.float32)


def _wav_bytes_missing(p: Path) -> int:
    """How many bytes of audio a RIFF/WAVE header promises beyond the end of the file (0 if none or
    not a WAV). libsndfile silently trims the length to what is there, so this is read here."""
    import struct

    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return 0
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                cid, length = struct.unpack("<4sI", fh.read(8))
                if cid == b"data":
                    return max(0, pos + 8 + length - size) if length != 0xFFFFFFFF else 0
                pos += 8 + length + (length & 1)
    except OSError:
        return 0
    return 0


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


OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # MPEG-1/2/2.5
VORBIS_MAX_RATE = 192000  # above it libsndfile's Vorbis encoder crashes the process (384 kHz: SIGSEGV)
FLAC_MAX_RATE = 655350
# the formats written, by extension: those a user would want and that read back whole (libsndfile
# also writes raw, VOC, MAT, …, which other programs hardly read, and fails on HTK, SVX, XI, SDS)
OUTPUT_FORMATS = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "oga": "OGG", "opus": "OGG", "mp3": "MP3",
                  "aiff": "AIFF", "aif": "AIFF", "aifc": "AIFF", "caf": "CAF", "w64": "W64", "rf64": "RF64",
                  "au": "AU"}
OUTPUT_EXTENSIONS = ".wav .flac .ogg .opus .mp3 .aiff .caf .w64 .rf64 .au"


def output_format(out: Path, subtype_hint: str, samplerate: int | None = None) -> tuple[str, str]:
    """(libsndfile format, subtype) for an output named ``out`` of audio at ``samplerate``.

    Raises
    ------
    OfflineError
        An extension not in ``OUTPUT_FORMATS``, or a rate the format cannot hold (Opus, MP3,
        Vorbis above 192 kHz, FLAC above 655 kHz): said before any work, not by libsndfile midway.
    """
    if str(out) == "-":  # the report goes to standard output: the audio cannot
        raise OfflineError(f"-: cannot write audio to standard output; give a file name ({OUTPUT_EXTENSIONS})")
    ext = out.suffix.lower().lstrip(".")
    fmt = OUTPUT_FORMATS.get(ext)
    if fmt is None:
        what = "unsupported" if ext.upper() in sf.available_formats() else "unknown"
        raise OfflineError(f"{out}: {what} output format {out.suffix!r}; use one of {OUTPUT_EXTENSIONS}")
    rates = {"opus": ("Opus", OPUS_RATES), "mp3": ("MP3", MP3_RATES)}.get(ext)
    if rates is not None and samplerate is not None and samplerate not in rates[1]:
        khz = "/".join(f"{r / 1000:g}" for r in rates[1])
        raise OfflineError(f"{out}: {rates[0]} holds only {khz} kHz audio and the input is {samplerate} Hz; "
                           "write .flac")
    if ext == "opus":  # Ogg Opus: the container libsndfile names OGG, the codec OPUS
        return "OGG", "OPUS"
    if fmt == "OGG" and samplerate is not None and samplerate > VORBIS_MAX_RATE:
        raise OfflineError(f"{out}: Ogg Vorbis holds at most 192 kHz audio and the input is {samplerate} Hz; "
                           "write .flac")
    if fmt == "FLAC" and samplerate is not None and samplerate > FLAC_MAX_RATE:
        raise OfflineError(f"{out}: FLAC holds at most 655350 Hz audio and the input is {samplerate} Hz; write .wav")
    # keep the input's sample format only when it is plain PCM/float: a compressed input's encoding
    # (MP3, Vorbis, …) may pass check_format for a container it cannot actually be written to
    plain = subtype_hint.startswith(("PCM_", "FLOAT", "DOUBLE"))
    subtype = subtype_hint if plain and sf.check_format(fmt, subtype_hint) else sf.default_subtype(fmt)
    if subtype.startswith("PCM_") and subtype not in ("PCM_24", "PCM_32") and sf.check_format(fmt, "PCM_24"):
        subtype = "PCM_24"  # processed audio deserves more than 8 or 16 bits, in every format that holds 24
    return fmt, subtype


MAX_RENDER_S = 6 * 3600  # a MIDI render longer than this is a broken file, not a song


def check_destination(out_p: Path, in_p: Path | None = None) -> None:
    """Refuse a destination that cannot be written, before any work is done.

    Raises
    ------
    OfflineError
        The output is the input (by any path), a folder, in a missing or read-only folder, or not writable.
    """
    if in_p is not None and out_p.exists() and _same_file(out_p, in_p):
        raise OfflineError(f"{out_p}: refusing to overwrite the input file")
    if out_p.is_dir():
        raise OfflineError(f"{out_p}: is a folder; give a file name")
    out_p = through_link(out_p)  # a link is written through: its target's folder must take the file
    parent = out_p.parent if str(out_p.parent) else Path(".")
    if (why := folder_problem(parent)) is not None:
        raise OfflineError(f"{parent}: {why}")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(parent) else "permission denied"
        raise OfflineError(f"{out_p}: cannot write there ({reason})")
    remove_stale_parts(out_p, older_than_s=60.0)  # a write not touched for a minute is a dead one


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: the same path resolved, or the same device and inode,
    which paths cannot tell (a bind mount, a case-insensitive file system, a hard link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_written(tmp, out_p: Path, frames: int) -> None:
    """The file at ``tmp`` must read back at its full length before it replaces ``out_p``:
    libsndfile does not report every failed write (Ogg Vorbis on a full disk comes back empty,
    without an error)."""
    try:
        got = sf.info(sf_path(tmp)).frames
    except (sf.LibsndfileError, RuntimeError):
        got = 0
    if got != frames:
        raise _write_failed(out_p, OSError(f"the file reads back {got} of {frames} frames"))


def _write_failed(out_p: Path, e: BaseException) -> OfflineError:
    """One clear error for a write that failed midway (full disk, lost mount, …)."""
    from realtime.io.files import write_failure_reason

    return OfflineError(f"{write_failure_reason(out_p.parent, e)} while writing {out_p}; nothing was written")


class Reblocker:
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
        """Yield every full block held (views, valid until the next call), then keep the rest
        (iterate to the end: the rest is moved to the front after the last block)."""
        B = self.blocksize
        start = 0
        while self.fill - start >= B:
            yield self.buf[start: start + B]
            start += B
        self._drop(start)

    def take(self, dst: np.ndarray) -> bool:
        """Copy the next full block into ``dst``; False when less than a block is held."""
        B = self.blocksize
        if self.fill < B:
            return False
        dst[:] = self.buf[:B]
        self._drop(B)
        return True

    def _drop(self, n: int) -> None:
        self.buf[: self.fill - n] = self.buf[n: self.fill]
        self.fill -= n

    def flush_padding(self, tail: int) -> int:
        """Frames of silence that push ``tail`` more frames and the last partial block out."""
        pad = tail + self.blocksize
        return pad + (-(self.fill + pad)) % self.blocksize


class OutputWriter:
    """The output side of a file run: drops the chain's latency from the start, resamples back to
    the file's rate and writes exactly ``total`` frames (the resampler's tail, then silence for
    rounding or a truncated input, on ``finish``).

    Parameters
    ----------
    dst : soundfile.SoundFile
        Open for writing.
    rs_out : soxr.ResampleStream or None
        Chain rate back to the file's rate.
    length : int
        The input's length in frames.
    skip : int
        Chain-rate frames to drop from the start (the latency).
    tail : int
        Frames written after the input's length (a delay's or reverb's tail).
    safety : Processor or None
        The chain's final safety stage (``final_safety``): what is resampled back is clipped to its
        ceiling again, in place. The resampler rings past it (a full-scale square at 8 kHz came
        back at 1.096, over 0 dBFS, from a chain whose ceiling is -0.3 dBFS).

    Attributes
    ----------
    total : int
        Frames to write: ``length + tail``.
    """

    def __init__(self, dst, rs_out, length: int, skip: int = 0, tail: int = 0, safety=None):
        self.dst, self.rs_out, self.skip, self.tail = dst, rs_out, skip, tail
        self.safety = safety if rs_out is not None else None  # not resampled: the chain's own output holds it
        self.total = length + tail
        self.written = 0

    def write(self, y: np.ndarray) -> None:
        if self.skip:
            drop = min(self.skip, y.shape[0])
            self.skip -= drop
            y = y[drop:]
        if y.shape[0] and self.rs_out is not None:
            y = self._ceiling(self.rs_out.resample_chunk(y))
        self._keep(y)

    def _ceiling(self, y: np.ndarray) -> np.ndarray:
        """``y`` (the resampler's own new array) clipped in place to the safety stage's ceiling, as
        the stage computes it."""
        if self.safety is not None and y.size:
            from realtime.dsp.processors.safety import F32_SAFE

            lim = 10.0 ** (float(self.safety.values[0]) / 20.0) * F32_SAFE
            np.clip(y, -lim, lim, out=y)
        return y

    def finish(self) -> None:
        ch = self.dst.channels
        if self.rs_out is not None:
            self._keep(self._ceiling(self.rs_out.resample_chunk(np.zeros((0, ch), np.float32), last=True)))
        if self.written < self.total:
            self.dst.write(np.zeros((self.total - self.written, ch), np.float32))
            self.written = self.total

    def _keep(self, y: np.ndarray) -> None:
        keep = min(y.shape[0], self.total - self.written)
        if keep > 0:
            self.dst.write(y[:keep])
            self.written += keep


class EventCursor:
    """MIDI events handed out block by block, each at its sample offset in its block.

    Parameters
    ----------
    events : ndarray, optional
        (n, 4) rows of chain-rate sample time, status, data1, data2 (any order: sorted here, stably).
    released : int
        How many of ``events``, the last rows, are ``release_at_end``'s (at the song's end, after all
        of the file's messages: the stable sort keeps them last). What full queues drop while they go
        in is no message of the file: counted apart in ``release_drops``, by ``dropped``.
    dropped : callable, optional
        The target's count of dropped MIDI messages (``dropped_midi_events``), read around the releases.

    Attributes
    ----------
    release_drops : int
        Messages dropped while the releases went in (a song that ends with 10 000 keys down).
    """

    def __init__(self, events: np.ndarray | None = None, released: int = 0, dropped=None):
        ev = np.zeros((0, 4)) if events is None else np.asarray(events, np.float64).reshape(-1, 4)
        self.events = ev[np.argsort(ev[:, 0], kind="stable")]
        self._next = 0
        self._release_from = len(self.events) - released if dropped is not None else len(self.events)
        self._dropped = dropped
        self.release_drops = 0

    def send(self, target, pos: int, frames: int) -> None:
        """``target.handle_midi`` for every event before ``pos + frames`` not yet sent, at its offset
        in the block that starts at ``pos`` (earlier ones at 0)."""
        ev, i = self.events, self._next
        end = i
        while end < len(ev) and ev[end, 0] < pos + frames:
            end += 1
        split = max(i, min(end, self._release_from))
        self._send(target, i, split, pos)
        if split < end:  # the releases at the song's end
            before = self._dropped()
            self._send(target, split, end, pos)
            self.release_drops += self._dropped() - before
        self._next = end

    def _send(self, target, i: int, end: int, pos: int) -> None:
        ev = self.events
        for k in range(i, end):
            target.handle_midi(int(ev[k, 1]), int(ev[k, 2]), int(ev[k, 3]), int(max(0, ev[k, 0] - pos)))


class ChainRunner:
    """Runs a prepared chain over a stream: fixed blocks, MIDI events at their exact offsets.

    Parameters
    ----------
    chain : Chain
        Prepared for ``blocksize`` frames and ``channels`` channels.
    blocksize, channels : int
        The chain's block size and channel count.
    events : ndarray, optional
        (n, 4) float64 rows of chain-rate sample time, status, data1, data2.
    released : int
        The last rows of ``events`` that are ``release_at_end``'s (``EventCursor``): what full queues
        drop while they go in is counted in ``self.events.release_drops``, not as the file's.
    """

    def __init__(self, chain, blocksize: int, channels: int, events: np.ndarray | None = None, released: int = 0):
        self.chain = chain
        self.blocksize = blocksize
        self.fifo = Reblocker(blocksize, channels)
        self.events = EventCursor(events, released, (lambda: dropped_midi_events(chain)) if released else None)
        self.pos = 0  # chain-rate frames processed

    def feed(self, x: np.ndarray):
        """Add input frames; yield every processed block that is ready (views, valid until the next)."""
        self.fifo.add(x)
        B = self.blocksize
        for block in self.fifo.blocks():
            self.events.send(self.chain, self.pos, B)
            self.chain.process(block)
            self.pos += B
            yield block

    def flush(self, tail: int = 0):
        """Push silence until ``tail`` more frames and the last partial block are out; yield blocks."""
        pad = self.fifo.flush_padding(tail)
        silence = np.zeros((min(pad, READ_FRAMES), self.fifo.buf.shape[1]), np.float32)
        while pad > 0:  # in chunks: a long render's silence never sits in memory at once
            n = min(pad, silence.shape[0])
            yield from self.feed(silence[:n])
            pad -= n


def flush_frames(latency: int, tail_s: float, samplerate: int, resampled: bool) -> int:
    """Chain frames of silence run through after a file's input: its latency's, its tail's and, when
    the output is resampled back, ``RESAMPLER_FLUSH`` for the chain's last frames to pass the output
    resampler's filter (flushed short, the file's last ~10 ms depended on the block size)."""
    return latency + math.ceil(tail_s * samplerate) + (RESAMPLER_FLUSH if resampled else 0)


def process_file(in_path, out_path, chain, samplerate: int | None = None, blocksize: int = 512,
                 progress: bool = True, compensate_latency: bool = True, tail_s: float = 0.0) -> dict:
    """Run ``chain`` over an audio file into another, block by block, faster than real time.

    Parameters
    ----------
    in_path, out_path : str or Path
        Any file soundfile reads (mono or stereo; a pipe such as ``/dev/stdin`` too, as long as
        what it holds); the output format follows its extension, the input's text tags copied
        where the format holds them.
    chain : Chain
        The chain to run (prepared here).
    samplerate : int or None
        The chain's rate: the file is resampled to it and back. None: ``chain_rate`` (the file's
        own when the chain runs at it, else 48 kHz).
    blocksize : int
        The chain's block size in frames.
    progress : bool
        Show a progress bar.
    compensate_latency : bool
        Drop the chain's latency so output lines up with input sample for sample: the latency it
        reports once prepared (an LV2 plugin's after one silent block), read once, as a DAW's
        offline bounce compensates by the latency at its start. A latency that moves during the
        render (a plugin that changes its own look-ahead) shifts what follows by the change, as it
        does live; the chain's dry paths follow it, so wet and dry stay aligned.
    tail_s : float
        Seconds of silence run through the chain after the input ends and kept (a delay's or a
        reverb's tail); 0: the output is exactly as long as the input.

    Returns
    -------
    dict
        input, output, frames (the output's length: the input's by its header, plus the tail),
        samplerate, chain_samplerate, channels, latency_compensated_frames, nonfinite_input_samples,
        frames_read, truncated (the input ends before its header says: a cut WAV is processed as far
        as it goes, a damaged file's undecodable end written as silence; warned about either way),
        tail_frames, clipped_samples (clipped to the safety stage's ceiling; warned about),
        plugin_junk_samples (a hosted plugin's output replaced by silence; warned about), providers.

    Raises
    ------
    OfflineError
        Unreadable input, unknown output format, missing folder, output == input, or a tail
        longer than ``MAX_RENDER_S``.
    """
    import soxr
    from tqdm import tqdm

    in_p, out_p = input_path(in_path), Path(out_path)
    if not 0 <= tail_s <= MAX_RENDER_S:
        raise OfflineError(f"a tail of {tail_s} s: give 0 to {MAX_RENDER_S // 3600} hours")
    src, cut = open_input(in_p)
    try:
        check_destination(out_p, in_p)
        fmt, subtype = output_format(out_p, src.subtype, src.samplerate)
        ch, in_sr, length = src.channels, src.samplerate, src.frames
        samplerate = chain_rate([s.processor for s in getattr(chain, "slots", ())], in_sr, samplerate)
        chain.prepare(samplerate, blocksize, ch)
        latency = int(chain.latency) if compensate_latency else 0
        tail = round(tail_s * in_sr)
        resample = in_sr != samplerate
        rs_in = soxr.ResampleStream(in_sr, samplerate, ch, dtype="float32", quality="HQ") if resample else None
        rs_out = soxr.ResampleStream(samplerate, in_sr, ch, dtype="float32", quality="HQ") if resample else None
        runner = ChainRunner(chain, blocksize, ch)
        junk0 = junk_samples(chain)
        try:
            with atomic_write(out_p) as tmp:
                with sf.SoundFile(sf_path(tmp), "w", samplerate=in_sr, channels=ch, format=fmt, subtype=subtype) as dst, \
                        tqdm(total=length, unit="frame", unit_scale=True, disable=not progress, leave=False,
                             desc=in_p.name) as bar:
                    copy_tags(src, dst)
                    out = OutputWriter(dst, rs_out, length, skip=latency, tail=tail, safety=final_safety(chain))
                    flush = flush_frames(latency, tail_s, samplerate, resample)
                    frames_read, nonfinite = _stream(src, out, runner, rs_in, flush, bar)
                check_written(tmp, out_p, out.total)
        except (OSError, sf.LibsndfileError) as e:
            raise _write_failed(out_p, e) from None
    finally:
        src.close()
    short = warn_short(in_p, frames_read, length)
    clipped = clipped_samples(chain)
    warn_clipped(in_p, clipped)
    junk = warn_junk(in_p, chain, junk0)
    return {"input": str(in_p), "output": str(out_p), "frames": out.total, "samplerate": in_sr,
            "chain_samplerate": samplerate, "channels": ch, "latency_compensated_frames": latency,
            "nonfinite_input_samples": nonfinite, "frames_read": frames_read, "truncated": cut or short,
            "tail_frames": tail, "clipped_samples": clipped, "plugin_junk_samples": junk,
            "providers": _providers(chain)}


def _stream(src, out: OutputWriter, runner: ChainRunner, rs_in, flush: int, bar) -> tuple[int, int]:
    """Read ``src`` to its end through the resampler and the runner into ``out``, then flush
    ``flush`` more chain frames (``flush_frames``) and finish it; returns (frames read, non-finite
    input samples)."""
    frames_read = nonfinite = 0

    def write(blocks) -> None:
        for y in blocks:
            out.write(y)

    while True:
        raise_pending_interrupt()  # a Ctrl-C whose exception start-up swallowed still stops the file
        x = read_input(src, READ_FRAMES)
        if x.shape[0] == 0:
            break
        frames_read += x.shape[0]
        nonfinite += int(np.count_nonzero(~np.isfinite(x)))
        bar.update(x.shape[0])
        write(runner.feed(rs_in.resample_chunk(x) if rs_in is not None else x))
    if rs_in is not None:
        write(runner.feed(rs_in.resample_chunk(np.zeros((0, src.channels), np.float32), last=True)))
    write(runner.flush(tail=flush))
    out.finish()
    return frames_read, nonfinite


def _providers(chain) -> dict[str, str]:
    """Which execution provider each model of ``chain`` runs on (nothing imported for plain chains)."""
    if "realtime.dsp.processors.neural.onnx" not in sys.modules:
        return {}
    from realtime.dsp.processors.neural.onnx import providers_of

    return providers_of(chain)


def midi_file_events(path, samplerate: int) -> np.ndarray:
    """The channel messages of a MIDI file as (n, 4) float64 rows: sample time, status, data1, data2.

    Times follow the tempo map, or for an SMPTE-timed file (a negative division: frames per second
    and ticks per frame) the fixed ticks per second, which tempo changes do not alter.

    Raises
    ------
    OfflineError
        The file is missing or not a readable MIDI file.
    """
    return midi_file_song(path, samplerate)[0]


def midi_file_song(path, samplerate: int) -> tuple[np.ndarray, int]:
    """A MIDI file's channel messages (``midi_file_events``) and its length in frames: the time of
    its last End of Track (mido's ``length``; a type 2 file's songs one after another), never
    before its last message. A cut or damaged file gives what could be read (``read_midi_song``),
    without a word: a render says it (``plan_render``).

    Raises
    ------
    OfflineError
        The file is missing, not a MIDI file, or has no channel message before its damage.
    """
    events, n, _ = read_midi_song(path, samplerate)
    return events, n


class MidiDamage:
    """What a cut or damaged MIDI file lacked (``read_midi_song``).

    Attributes
    ----------
    track : int or None
        The first track read only in part (None: the tracks read are whole, later ones missing).
    tracks, missing : int
        Tracks the header counts; of them, how many were not in the file at all.
    cut : bool
        The file ends early (a partial download), rather than holding bytes no reader can take.
    why : str
        What the reader met there (mido's words), for a file refused because nothing could be read.
    tick : int
        Of the last message read in ``track``; ``seconds`` is its time in the song.
    added : int
        Releases added where a cut track stops (``_release_held``): not the file's messages.
    """

    def __init__(self, tracks: int):
        self.track, self.tracks, self.missing, self.cut, self.why = None, tracks, 0, True, "it ends too early"
        self.tick, self.seconds, self.added = 0, 0.0, 0

    def say(self, p) -> str:
        """One line: ``PATH is truncated after 12.3 s`` (which track, when there are several)."""
        word = "truncated" if self.cut else "damaged"
        if self.track is None:
            return f"{p} is {word}: {self.missing} of its {self.tracks} tracks are missing"
        where = f" in track {self.track + 1} of {self.tracks}" if self.tracks > 1 else ""
        more = f" ({self.missing} more missing)" if self.missing else ""
        return f"{p} is {word} after {self.seconds:.1f} s{where}{more}"


def read_midi_song(path, samplerate: int) -> tuple[np.ndarray, int, MidiDamage | None]:
    """``midi_file_song``'s events and length, and what the file lacked (None: nothing).

    A file cut short (a partial download: a track chunk whose declared length runs past the end of
    the file, tracks the header counts that never come) or damaged (a byte no MIDI reader can take)
    is read as players read it: each track up to its damage (``_read_midi_tracks``); a track cut
    with keys or pedals down lets them go where it stops. A file that is not MIDI at all, or gives
    no channel message before its damage, is refused as before.

    Raises
    ------
    OfflineError
        The file is missing, not a MIDI file, or has no channel message before its damage.
    """
    import mido

    p = Path(path)
    if not p.is_file():
        raise OfflineError(f"{p}: no such MIDI file")
    try:
        mf, damage = _read_midi_tracks(p)
        tick_s = _smpte_tick_seconds(p, mf.ticks_per_beat)
        # type 0/1: the tracks play together (merged); type 2: each is a song of its own (its own
        # tempo map), played one after another (mido refuses to merge them)
        songs = [mf] if mf.type != 2 else [mido.MidiFile(type=0, ticks_per_beat=mf.ticks_per_beat, tracks=[tr])
                                            for tr in mf.tracks]
        t, ticks, rows = 0.0, 0, []
        for k, song in enumerate(songs):
            if damage is not None and damage.track is not None and k == (damage.track if mf.type == 2 else 0):
                damage.seconds = t + _seconds_at(song, damage.tick, tick_s)  # after the songs before it
            # times in seconds (tempo map applied); SMPTE: mido would divide by the negative
            # division as if it were ticks per beat (every time negative, notes piled into chords)
            for msg in song if tick_s is None else mido.merge_tracks(song.tracks):
                if tick_s is None:
                    t += msg.time
                else:
                    ticks += msg.time
                    t = ticks * tick_s
                if not msg.is_meta and msg.type not in ("sysex",) and hasattr(msg, "channel"):
                    b = msg.bytes()
                    rows.append((round(t * samplerate), b[0], b[1] if len(b) > 1 else 0, b[2] if len(b) > 2 else 0))
    except (OSError, ValueError, EOFError, KeyError, IndexError) as e:
        why = str(e) or ("it ends too early" if isinstance(e, EOFError) else type(e).__name__)
        raise OfflineError(f"{p}: not a readable MIDI file ({why})") from None
    if damage is not None and len(rows) <= damage.added:  # nothing to play before the damage
        raise OfflineError(f"{p}: not a readable MIDI file ({damage.why})")
    events = np.asarray(rows, np.float64).reshape(-1, 4)
    # the merged song ends with the latest End of Track (mido moves it there), so t is its time
    return events, max(round(t * samplerate), int(events[:, 0].max()) if len(events) else 0), damage


def _seconds_at(song, tick: int, tick_s: float | None) -> float:
    """The time in ``song`` (a type 0/1 file) of ``tick``, by its tempo map as mido times it."""
    import mido

    if tick_s is not None:
        return tick * tick_s
    t, now, tempo = 0.0, 0, 500000  # mido's default tempo, 120 BPM
    for msg in mido.merge_tracks(song.tracks):
        if now + msg.time > tick:
            break
        now += msg.time
        t += mido.tick2second(msg.time, song.ticks_per_beat, tempo)
        if msg.type == "set_tempo":
            tempo = msg.tempo
    return t + mido.tick2second(tick - now, song.ticks_per_beat, tempo)


def _read_midi_tracks(p: Path):
    """A MIDI file read as mido reads it, but leniently: (``mido.MidiFile``, ``MidiDamage`` or None).

    Chunk by chunk (mido reads a track until its declared length is used up, and a cut file ended
    that in an ``EOFError`` that refused it whole): a track chunk is read up to the end of the
    file or its first unreadable message (``_read_midi_track``); one that stops before its End of
    Track is damaged, and tracks the file never reaches are missing. A chunk of another kind is
    skipped (the standard's rule: mido refused the file); one whose name is not text ends the
    reading. A file without a MIDI header raises what mido raises (``OSError``, ``EOFError``)."""
    import mido
    from mido.midifiles.meta import meta_charset
    from mido.midifiles.midifiles import read_chunk_header, read_file_header

    size = p.stat().st_size
    tracks: list = []
    damage = None
    with open(p, "rb") as f, meta_charset("latin1"):
        kind, count, division = read_file_header(f)
        while len(tracks) < count:
            start = f.tell()
            try:
                name, length = read_chunk_header(f)
            except EOFError:  # the file ends: the tracks left are missing
                break
            if name != b"MTrk":
                if all(32 <= c < 127 for c in name) and start + 8 + length <= size:
                    f.seek(start + 8 + length)  # an alien chunk, whole: skipped
                    continue
                damage = damage or MidiDamage(count)
                damage.cut, damage.why = False, "no MTrk header at start of track"
                break
            body = f.read(length)
            track, tick, why = _read_midi_track(body)
            tracks.append(track)
            ended = len(track) > 0 and track[-1].type == "end_of_track"  # then nothing of it is missing
            if (why is not None or len(body) < length) and not ended:
                if damage is None:  # the first damaged track is the one said
                    damage = MidiDamage(count)
                    damage.track, damage.tick, damage.cut = len(tracks) - 1, tick, len(body) < length
                    damage.why = why or "it ends too early"
                damage.added += _release_held(track)
    if len(tracks) < count:
        damage = damage or MidiDamage(count)
        damage.missing = count - len(tracks)
    mf = mido.MidiFile(ticks_per_beat=division, tracks=tracks)
    mf.type = kind  # as mido's own reader: whatever the header says (a type beyond 2 plays as type 1)
    return mf, damage


def _read_midi_track(body: bytes):
    """mido's ``read_track`` over one track chunk's bytes, up to the first message it cannot read:
    (the track, the ticks of its messages, None or what stopped it). Data bytes over 127 are read
    as 127 (mido's ``clip``: files from some writers hold them), and a meta event that does not
    decode (a key signature of mode 255) is left out (it carries no sound; mido raised a
    ``KeySignatureError`` that ended the command in a traceback), its delta time kept."""
    import io

    from mido.midifiles.meta import build_meta_message
    from mido.midifiles.midifiles import read_byte, read_bytes, read_message, read_sysex, read_variable_int
    from mido.midifiles.tracks import MidiTrack

    f, track = io.BytesIO(body), MidiTrack()
    tick = carry = 0
    last_status = None
    try:
        while f.tell() < len(body):
            delta = read_variable_int(f) + carry
            status = read_byte(f)
            carry = 0
            if status < 0x80:  # running status
                if last_status is None:
                    raise OSError("running status without last_status")
                peek, status = [status], last_status
            else:
                if status != 0xFF:
                    last_status = status
                peek = []
            if status == 0xFF:
                meta_type = read_byte(f)
                data = read_bytes(f, read_variable_int(f))
                try:
                    msg = build_meta_message(meta_type, data, delta)
                except Exception:  # mido's decoders raise what they meet (KeySignatureError, IndexError, …)
                    carry = delta
                    continue
            elif status in (0xF0, 0xF7):
                msg = read_sysex(f, delta, clip=True)
            else:
                msg = read_message(f, status, peek, delta, clip=True)
            track.append(msg)
            tick += delta
    except (EOFError, OSError, ValueError, KeyError, IndexError) as e:
        return track, tick, str(e) or "it ends too early"
    return track, tick, None


def _release_held(track) -> int:
    """Let go, at the end of a track cut short, of what it holds down: ``release_at_end``'s pedals
    up and note-offs, for this track's own keys (not its all-notes-off, which would end other
    tracks' notes on the channel); returns how many messages it added."""
    import mido

    rows = [(0, *(m.bytes() + [0, 0])[:3]) for m in track if not m.is_meta and hasattr(m, "channel")]
    held = np.asarray(rows, np.float64).reshape(-1, 4)
    added = [mido.Message.from_bytes([int(s), int(a), int(b)]) for _, s, a, b in release_at_end(held, 0)[len(held):]
             if not (int(s) & 0xF0 == 0xB0 and int(a) == 123)]
    track.extend(added)
    return len(added)


def _smpte_tick_seconds(p: Path, division: int) -> float | None:
    """Seconds per tick of an SMPTE-timed file (None for one timed in ticks per beat). mido reads the
    header's division as a signed 16-bit number: -frames per second in its high byte (-24, -25,
    -29 for 29.97 drop-frame, -30), ticks per frame in its low byte.

    Raises
    ------
    OfflineError
        A division of 0, or an SMPTE one with no frames or ticks.
    """
    if division > 0:
        return None
    fps, tpf = -(division >> 8), division & 0xFF
    if division == 0 or fps <= 0 or tpf == 0:
        raise OfflineError(f"{p}: not a readable MIDI file (its header's time division is {division & 0xFFFF:#06x})")
    return 1.0 / ((30000.0 / 1001.0 if fps == 29 else fps) * tpf)


def render_events(chain, events: np.ndarray, n_samples: int, samplerate: int = 48000, blocksize: int = 128,
                  channels: int = 2, prepare: bool = True) -> np.ndarray:
    """Run an instrument chain for ``n_samples`` with MIDI ``events`` at their offsets; return the audio.

    Parameters
    ----------
    chain : Chain
        A chain that takes MIDI (``handle_midi``).
    events : ndarray
        (n, 4) rows of sample time, status, data1, data2.
    n_samples : int
        Length of the render.
    prepare : bool
        Prepare the chain here (False: the caller did).

    Returns
    -------
    ndarray
        (n_samples, channels) float32.
    """
    if prepare:
        chain.prepare(samplerate, blocksize, channels)
    out = np.zeros((n_samples, channels), np.float32)
    pos = 0
    for y in _render(ChainRunner(chain, blocksize, channels, events), n_samples, int(chain.latency)):
        out[pos:pos + y.shape[0]] = y
        pos += y.shape[0]
    return out


def _render(runner: ChainRunner, n: int, skip: int = 0):
    """An instrument's first ``n`` frames after the chain's latency (``skip``: its first frames
    are dropped, as ``process_file`` drops them): the runner fed silence, block by block."""
    pos = -skip
    for y in runner.flush(tail=n + skip - runner.blocksize):
        if pos < 0:
            drop = min(-pos, y.shape[0])
            y, pos = y[drop:], pos + drop
        y = y[: n - pos]
        if not y.shape[0]:
            if pos >= n:
                return
            continue
        pos += y.shape[0]
        yield y


MIDI_TAIL_MAX_S = 30.0  # the most a MIDI render runs on after the file's end (a drone never falls silent)
MIDI_SILENCE_DB = -90.0  # a render's sound has died away once its peak stays below this ...
MIDI_SILENCE_S = 1.0  # ... for this long (a shorter gap, e.g. between a delay's echoes, is part of the tail)
MIDI_CAP_FADE_S = 0.1  # a render that reaches the cap still sounding fades out over its last 0.1 s
# the end after the last sound is rounded up to this grid: a last sample a hair either side of the floor
# (the synth's output differs by ~1e-5 between block sizes) then rarely moves it
MIDI_END_GRID_S = 0.01


def release_at_end(events: np.ndarray, end: int) -> np.ndarray:
    """``events`` with, at ``end``, what a player lifting the keys and the pedals sends: for each
    channel left with keys down or a pedal held, sustain and sostenuto off (CC64, CC66), all notes
    off (CC123) and a note-off for each key still down (for an instrument that ignores CC123).
    A song whose notes all end and whose pedals are up gets nothing."""
    keys: dict[int, set[int]] = {}
    pedals: dict[int, set[int]] = {}  # per channel: the pedal controllers (64, 66) held down
    for _, status, d1, d2 in events:
        kind, ch, d1 = int(status) & 0xF0, int(status) & 0x0F, int(d1)
        if kind == 0x90 and d2 > 0:
            keys.setdefault(ch, set()).add(d1)
        elif kind in (0x80, 0x90):
            keys.get(ch, set()).discard(d1)
        elif kind == 0xB0 and d1 in (64, 66):
            (pedals.setdefault(ch, set()).add if d2 >= 64 else pedals.get(ch, set()).discard)(d1)
        elif kind == 0xB0 and d1 in (120, 123):
            keys.pop(ch, None)
        elif kind == 0xB0 and d1 == 121:  # reset all controllers: the pedals go up
            pedals.pop(ch, None)
    rows = []
    for ch in sorted(set(keys) | set(pedals)):
        if not keys.get(ch) and not pedals.get(ch):
            continue
        rows += [(end, 0xB0 | ch, cc, 0) for cc in sorted(pedals.get(ch, ()))]
        rows.append((end, 0xB0 | ch, 123, 0))
        rows += [(end, 0x80 | ch, key, 64) for key in sorted(keys.get(ch, ()))]
    if not rows:
        return events
    return np.concatenate([events, np.asarray(rows, np.float64)])


class RenderWriter:
    """The output side of a MIDI render (``render_midi``; a batch's side-by-side renders): drops
    the chain's latency from the start, then writes the file's length and, after it, the chain's
    sound until it has died away, decided sample by sample (so not by the block size): the render
    ends after its last sample at or above ``MIDI_SILENCE_DB`` (rounded up to ``MIDI_END_GRID_S``)
    once ``MIDI_SILENCE_S`` have followed it below that; at most ``MIDI_TAIL_MAX_S`` after the
    file's end (a chain that never falls silent: its last ``MIDI_CAP_FADE_S`` faded out). Quiet
    frames that may turn out to be past the end are held back (at most ``MIDI_SILENCE_S`` of them)
    until a later sound or the end decides.

    Parameters
    ----------
    dst : soundfile.SoundFile
        Open for writing.
    length : int
        The file's length in frames: the render is never shorter.
    samplerate : int
    skip : int
        Frames to drop from the start (the chain's latency).
    tail_s : float or None
        None: the end as above. Seconds: exactly that long after the file's end (as ``process_file``'s
        ``tail_s``), whatever sounds.

    Attributes
    ----------
    done : bool
        The render's end is decided and written: feed no more.
    written : int
        Frames written (the render's length once ``done``).
    most : int
        Chain frames a runner must supply at most (the cap plus the latency).
    peak : float
        The largest absolute sample written.
    """

    def __init__(self, dst, length: int, samplerate: int, skip: int = 0, tail_s: float | None = None):
        self.dst, self.length, self.skip = dst, int(length), int(skip)
        self.fixed = tail_s is not None
        self.limit = self.length + round((MIDI_TAIL_MAX_S if tail_s is None else tail_s) * samplerate)
        self.window = max(1, round(MIDI_SILENCE_S * samplerate))
        self.grid = max(1, round(MIDI_END_GRID_S * samplerate))
        self.floor = 10.0 ** (MIDI_SILENCE_DB / 20.0)
        self.fade = 0 if self.fixed else min(round(MIDI_CAP_FADE_S * samplerate), self.limit - self.length)
        self.most = self.limit + self.skip
        self.pos = 0  # output frames taken
        self.sounding = 0  # one past the last sample at or above the floor (that counts)
        self.written = 0
        self.held: list[np.ndarray] = []  # taken, not yet written: frames written+ .. pos
        self.done = False
        self.peak = 0.0

    def end(self) -> int:
        """Frames the render has, as far as its sound so far says."""
        return self.limit if self.fixed else int(min(self.limit, self._after(self.sounding)))

    def _after(self, sounding):
        """The end a sound that stops at ``sounding`` gives: on the grid, never before the file's."""
        return np.maximum(-(-sounding // self.grid) * self.grid, self.length)

    def write(self, y: np.ndarray) -> None:
        """Take the chain's next output block."""
        if self.skip:
            drop = min(self.skip, y.shape[0])
            self.skip -= drop
            y = y[drop:]
        y = y[: max(0, self.limit - self.pos)]
        if self.done or not y.shape[0]:
            return
        start, n = self.pos, y.shape[0]
        if self.fade and start + n > self.limit - self.fade:  # the cap's fade (raised cosine), by position
            x = np.minimum(1.0, (self.limit - np.arange(start, start + n)) / self.fade)
            y = y * (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)[:, None]
        if not self.fixed:
            loud = np.flatnonzero(np.abs(y).max(axis=1) >= self.floor) + start
            if loud.size:
                prev = np.concatenate(([self.sounding], loud[:-1] + 1))
                late = loud >= self._after(prev) + self.window  # after the silence that ended it
                k = int(np.argmax(late)) if late.any() else loud.size
                if k:
                    self.sounding = int(loud[k - 1]) + 1
        self.pos += n
        silent = self.pos >= self.end() + self.window  # (never, with a fixed tail: its end is the limit)
        capped = self.pos >= self.limit
        self.done = silent or capped
        upto = self.limit if capped and not silent else min(self.pos, self.end())
        self._write_held(min(upto, start))
        if upto > start:
            self._put(y[: upto - start])
        if upto - start < n:
            self.held.append(y[max(0, upto - start):].copy())  # y is the runner's buffer, reused

    def finish(self) -> None:
        """Write what is decided and silence up to the file's length (a runner that stopped short)."""
        self._write_held(min(self.pos, self.end()))
        if self.written < self.length:
            self._put(np.zeros((self.length - self.written, self.dst.channels), np.float32))
        self.held.clear()
        self.done = True

    def _write_held(self, upto: int) -> None:
        while self.held and self.written < upto:
            y = self.held[0]
            k = min(y.shape[0], upto - self.written)
            self._put(y[:k])
            if k == y.shape[0]:
                self.held.pop(0)
            else:
                self.held[0] = y[k:]

    def _put(self, y: np.ndarray) -> None:
        if y.shape[0]:
            self.dst.write(y)
            self.written += y.shape[0]
            self.peak = max(self.peak, float(np.abs(y).max()))


def plan_render(midi_path, out_path, samplerate: int) -> tuple[np.ndarray, int, int, bool, int]:
    """A MIDI render's events, the file's length in frames (``midi_file_song``: the render's
    shortest), its number of channel messages, whether it was cut or damaged and how many releases
    end the events, the destination checked first. The events end with the release of what still
    sounds at the file's end (``release_at_end``: that many rows, the last ones). A cut or damaged
    file is rendered as far as it could be read, said in one line on stderr (``read_midi_song``).

    Raises
    ------
    OfflineError
        A destination ``output_format`` or ``check_destination`` refuses, an unreadable MIDI file,
        or a song longer than ``MAX_RENDER_S``.
    """
    out_p = Path(out_path)
    output_format(out_p, "PCM_24", samplerate)  # the formats `process` writes, refused before any work as there
    check_destination(out_p, Path(midi_path))
    events, n, damage = read_midi_song(midi_path, samplerate)
    if n > MAX_RENDER_S * samplerate:
        raise OfflineError(f"{midi_path}: the song would last {n / samplerate / 3600:.0f} hours; "
                           f"refusing to render more than {MAX_RENDER_S // 3600} hours (a broken delta time?)")
    if damage is not None:
        print(f"warning: {damage.say(midi_path)}; rendering what was read", file=sys.stderr)
    messages = len(events) - (damage.added if damage is not None else 0)
    played = release_at_end(events, n)
    return played, n, messages, damage is not None, len(played) - len(events)


def open_render(tmp, out_p: Path, samplerate: int) -> sf.SoundFile:
    """The file a render writes (at ``tmp``): stereo, in the format ``out_p``'s extension names
    (``output_format``; 24-bit where the format is PCM)."""
    fmt, subtype = output_format(out_p, "PCM_24", samplerate)
    return sf.SoundFile(sf_path(tmp), "w", samplerate=samplerate, channels=2, format=fmt, subtype=subtype)


def render_midi(midi_path, out_path, chain, samplerate: int = 48000, blocksize: int = 128,
                tail_s: float | None = None) -> dict:
    """Render a MIDI file through an instrument chain into an audio file, block by block (any
    format ``process`` writes, by the extension).

    The render is never shorter than the file (its last End of Track): at the file's end the notes
    still sounding are released, as a player lifts the keys and the pedals (``release_at_end``),
    and the render runs on until the chain's sound has died away (``RenderWriter``: its peak below
    -90 dBFS for a second; at most ``MIDI_TAIL_MAX_S`` after the end). The same whatever the block
    size. Memory stays constant whatever the song's length; the output is written atomically.

    Parameters
    ----------
    tail_s : float or None
        None: run on until silence, as above. Seconds: keep exactly that long after the file's end.

    Returns
    -------
    dict
        output, seconds (the render's length), events (the file's channel messages),
        dropped_midi_events (the file's messages a full per-block queue dropped, controllers first;
        warned about; not the releases at its end), render_s, realtime_factor, peak, truncated (the MIDI file was cut or damaged: what
        could be read was rendered, warned about; a batch records it ``partial``).

    Raises
    ------
    OfflineError
        Unreadable MIDI file, unsupported output extension or missing folder.
    """
    import time

    out_p = Path(out_path)
    if tail_s is not None and not 0 <= tail_s <= MAX_RENDER_S:
        raise OfflineError(f"a tail of {tail_s} s: give 0 to {MAX_RENDER_S // 3600} hours")
    events, n, messages, truncated, released = plan_render(midi_path, out_p, samplerate)
    chain.prepare(samplerate, blocksize, 2)
    dropped0 = dropped_midi_events(chain)  # the processors' counters outlive a render
    junk0 = junk_samples(chain)
    t0 = time.perf_counter()
    try:
        with atomic_write(out_p) as tmp:
            with open_render(tmp, out_p, samplerate) as dst:
                out = RenderWriter(dst, n, samplerate, skip=int(chain.latency), tail_s=tail_s)
                runner = ChainRunner(chain, blocksize, 2, events, released)
                for y in runner.flush(tail=out.most):
                    out.write(y)
                    if out.done:
                        break
                out.finish()
            check_written(tmp, out_p, out.written)  # Ogg on a full disk comes back empty, without an error
    except (OSError, sf.LibsndfileError) as e:
        raise _write_failed(out_p, e) from None
    took = time.perf_counter() - t0
    # the file's messages dropped: not the releases at its end, which a song ending with 10 000 keys down
    # overflows (its 10 001 messages reported 10 016 dropped)
    dropped = dropped_midi_events(chain) - dropped0 - runner.events.release_drops
    if dropped:
        print(f"warning: {midi_path}: {dropped} MIDI messages were dropped (more than a block's queue holds "
              "at one time; controllers and pitch bend first)", file=sys.stderr)
    if not np.any(((events[:, 1].astype(np.int64) & 0xF0) == 0x90) & (events[:, 3] > 0)):  # meta events alone
        print(f"warning: {midi_path}: no notes to play; {out_p} holds {out.written / samplerate:.1f} s of silence",
              file=sys.stderr)
    junk = warn_junk(midi_path, chain, junk0)
    seconds = out.written / samplerate
    return {"output": str(out_p), "seconds": seconds, "events": messages, "dropped_midi_events": dropped,
            "render_s": took, "realtime_factor": took / seconds if seconds else 0.0, "peak": out.peak,
            "truncated": truncated, "plugin_junk_samples": junk}
