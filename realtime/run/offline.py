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
import stat
import sys
import unicodedata
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.dsp.processor import dropped_midi_events, junk_samples
from realtime.errors import OfflineError, raise_pending_interrupt
from realtime.io.dither import open_output
from realtime.io.files import (
    atomic_write,
    end_opus,
    folder_problem,
    is_terminal,
    not_a_file,
    pad_opus,
    remove_stale_parts,
    sf_path,
    through_link,
)
from realtime.io.tags import carry_tags, will_carry
from realtime.run.audio_input import (
    RIFF_MAX,
    input_path,
    open_input,
    read_input,
    scrub_input,
    text_tags,
    warn_nonfinite,
    warn_short,
)
from realtime.run.midi_file import read_midi_song, release_at_end

READ_FRAMES = 16384  # file I/O granularity; independent of the chain's block size
RESAMPLER_FLUSH = 4096  # chain frames of silence beyond the latency that push a resampler's tail out
DEFAULT_RATE = 48000
NATIVE_RANGE = (44100, 768000)  # lower rates go to 48 kHz as before (EQ corners at 10 kHz and up); DXD 705.6 kHz runs as it is


def chain_rate(processors, file_rate: int, requested: int | None = None) -> int:
    """The rate a file runs through ``processors`` (instances or classes) at: ``requested`` if
    given; else the file's own when every processor runs at it as it is (``native_rates``), so
    nothing is resampled (a clipper's flat runs reach the de-clipper intact) and it is at least
    44.1 kHz; else 48 kHz."""
    if requested:
        return int(requested)
    ok = all(p.native_rates is None or file_rate in p.native_rates for p in processors)
    return int(file_rate) if ok and NATIVE_RANGE[0] <= file_rate <= NATIVE_RANGE[1] else DEFAULT_RATE


_fitted_said: set = set()


def fit_block(blocksize: int, *chains) -> int:
    """``blocksize`` rounded up to a multiple of what the processors of ``chains`` need
    (``Chain.block_multiple``: a hosted plugin that corrupts other runs), said once per process: a
    file's output does not depend on the block size, so it is taken rather than refused."""
    q = math.lcm(1, *(getattr(c, "block_multiple", 1) for c in chains))  # (a stand-in chain has none)
    fitted = -(-blocksize // q) * q
    if fitted != blocksize and (blocksize, fitted) not in _fitted_said:
        _fitted_said.add((blocksize, fitted))
        print(f"block size {blocksize} taken as {fitted} frames: a plugin of the chain needs blocks that are a "
              f"multiple of {q}", file=sys.stderr)
    return fitted



def copy_tags(src: sf.SoundFile, dst: sf.SoundFile, in_p=None, warn: bool = True) -> None:
    """The input's text tags (title, artist, date, …) onto the output, before any audio is written
    (FLAC takes them only then); a tag the output's format cannot hold is left out, and so is
    ``software``: it names what wrote the file (libsndfile adds its own). An MP3's tags (ID3v1,
    read as Latin-1) got the text's UTF-8 bytes, garbled: they take ASCII text only (``mp3_tag``),
    what that changed said in one line, naming ``in_p`` (default: the input's file name)."""
    changed = []
    for name, value in text_tags(src).items():
        if name == "software":
            continue
        if dst.format == "MP3":
            value, how = mp3_tag(value)
            if how:
                changed.append(f"{name} {how}")
            if value is None:
                continue
        try:
            setattr(dst, name, value)
        except (sf.LibsndfileError, RuntimeError):
            pass
    if changed and warn:  # (not where ``tags.carry_tags`` writes them whole afterwards)
        name = in_p if in_p is not None else os.fsdecode(src.name) if isinstance(src.name, (str, bytes)) else "input"
        print(f"warning: {name}: MP3 tags hold ASCII text only; {', '.join(changed)}", file=sys.stderr)


def warn_tags(in_p, why: str | None) -> None:
    if why:
        print(f"warning: {in_p}: {why}", file=sys.stderr)


# typographic punctuation as ASCII has it (NFKD leaves these as they are: "Don’t" was left out whole)
ASCII_PUNCTUATION = str.maketrans({**dict.fromkeys("‘’‚‛′", "'"), **dict.fromkeys("“”„‟″«»", '"'),
                                   **dict.fromkeys("‐‑‒–—―−", "-")})


def mp3_tag(text: str) -> tuple[str | None, str | None]:
    """``text`` as an MP3's tag takes it (ASCII: libsndfile writes its UTF-8 bytes where players
    read Latin-1) and what that changed: its accents dropped and its typographic quotes and dashes
    made plain ("Beyoncé – Don’t": "Beyonce - Don't"), else left out (None: "♪")."""
    if text.isascii():
        return text, None
    mapped = text.translate(ASCII_PUNCTUATION)
    plain = "".join(c for c in unicodedata.normalize("NFKD", mapped) if not unicodedata.combining(c))
    if not plain.isascii():
        return None, "left out (not ASCII text)"
    return plain, "written without its accents" if mapped == text else "written in plain ASCII"


def clipped_samples(chain) -> int:
    """Samples the chain's final safety stage clipped to its ceiling since ``prepare`` (0 for a
    chain without one): a float source over 0 dBFS through a chain without a limiter, and what the
    resampler back to the file's rate rang past the ceiling (``OutputWriter``)."""
    from realtime.dsp.processors.safety import CLIPPED

    safety = final_safety(chain)
    return int(safety.counters[CLIPPED]) if safety is not None else 0


def final_safety(chain):
    """The chain's final safety stage (``Chain.safety``), None for no chain: its ceiling also holds
    after the output is resampled back (``OutputWriter``)."""
    return getattr(chain, "safety", None)


def warn_clipped(in_p, clipped: int) -> None:
    """One line on stderr when the safety stage clipped: rc 0 alone said nothing of it."""
    if clipped:
        print(f"warning: {in_p}: {clipped} samples went over the safety ceiling and were clipped; "
              "lower the gain, or let a limiter that is not bypassed catch the peaks (e.g. --preset default)",
              file=sys.stderr)


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
# ``--bits``: an output's sample format (16 bits and fewer dithered: ``realtime.io.dither``)
BITS = {"16": "PCM_16", "24": "PCM_24", "32": "PCM_32", "float": "FLOAT"}


def output_format(out: Path, subtype_hint: str, samplerate: int | None = None,
                  source: str = "the input", bits: str | None = None) -> tuple[str, str]:
    """(libsndfile format, subtype) for an output named ``out`` of audio at ``samplerate``
    (``source``'s rate, as a refusal names it: "the render" for a MIDI render, which has no input);
    ``bits`` (a key of ``BITS``, ``--bits``): its sample format, else the hint's where the format
    holds it, at least 24 bits where it holds them.

    Raises
    ------
    OfflineError
        An extension not in ``OUTPUT_FORMATS``, or a rate the format cannot hold (Opus, MP3,
        Vorbis above 192 kHz, FLAC above 655 kHz), or ``bits`` it cannot hold (a compressed format,
        FLAC's 32-bit or float): said before any work, not by libsndfile midway.
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
        raise OfflineError(f"{out}: {rates[0]} holds only {khz} kHz audio and {source} is {samplerate} Hz; "
                           "write .flac")
    if ext == "opus":  # Ogg Opus: the container libsndfile names OGG, the codec OPUS
        if bits is not None:
            bits_subtype(out, "OGG", bits)  # (refused: compressed)
        return "OGG", "OPUS"
    if fmt == "OGG" and samplerate is not None and samplerate > VORBIS_MAX_RATE:
        raise OfflineError(f"{out}: Ogg Vorbis holds at most 192 kHz audio and {source} is {samplerate} Hz; "
                           "write .flac")
    if fmt == "FLAC" and samplerate is not None and samplerate > FLAC_MAX_RATE:
        raise OfflineError(f"{out}: FLAC holds at most 655350 Hz audio and {source} is {samplerate} Hz; write .wav")
    if bits is not None:
        return fmt, bits_subtype(out, fmt, bits)
    # keep the input's sample format only when it is plain PCM/float: a compressed input's encoding
    # (MP3, Vorbis, …) may pass check_format for a container it cannot actually be written to
    plain = subtype_hint.startswith(("PCM_", "FLOAT", "DOUBLE"))
    subtype = subtype_hint if plain and sf.check_format(fmt, subtype_hint) else sf.default_subtype(fmt)
    if subtype.startswith("PCM_") and subtype not in ("PCM_24", "PCM_32") and sf.check_format(fmt, "PCM_24"):
        subtype = "PCM_24"  # processed audio deserves more than 8 or 16 bits, in every format that holds 24
    return fmt, subtype


def bits_subtype(out: Path, fmt: str, bits: str) -> str:
    """The subtype ``--bits`` asks of an output in ``fmt``, or one line where it cannot hold it."""
    subtype = BITS[bits]
    if fmt in ("OGG", "MP3"):
        raise OfflineError(f"{out}: --bits {bits} sets the samples of an uncompressed or lossless file; "
                           f"{out.suffix} is compressed (write .wav or .flac)")
    if not sf.check_format(fmt, subtype):
        held = "/".join(b for b, st in BITS.items() if sf.check_format(fmt, st))
        raise OfflineError(f"{out}: {fmt} holds {held}-bit samples, not {bits}{'' if bits == 'float' else '-bit'}; "
                           "write .wav")
    return subtype


RIFF_AUDIO_MAX = RIFF_MAX - (1 << 20)  # a WAV's or AIFF's audio, 1 MiB left for its header and tags
SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def sized_format(out: Path, fmt: str, subtype: str, frames: int, channels: int) -> str:
    """``fmt`` (``output_format``'s) for ``frames`` of audio, decided before any work: a WAV whose
    audio would pass the 4 GiB its 32-bit sizes count is written as RF64 (a WAV with 64-bit sizes,
    in the same sample format), said in one line; libsndfile wrote it as WAV, and ``check_written``
    found only 4 GiB of it after all the work.

    Raises
    ------
    OfflineError
        An AIFF that large (libsndfile reads back what its size wrapped to; no 64-bit form).
    """
    size = frames * channels * SAMPLE_BYTES.get(subtype, 4)
    if fmt not in ("WAV", "AIFF") or size <= RIFF_AUDIO_MAX:
        return fmt
    what = f"{size / (1 << 30):.1f} GiB of audio is more than {'a WAV' if fmt == 'WAV' else 'an AIFF'} file holds (4 GiB)"
    if fmt == "AIFF":
        raise OfflineError(f"{out}: {what}; write .rf64, .w64 or .flac")
    print(f"warning: {out}: {what}; writing it as RF64 (a WAV with 64-bit sizes)", file=sys.stderr)
    return "RF64"


MAX_RENDER_S = 6 * 3600  # a MIDI render longer than this is a broken file, not a song


def check_destination(out_p: Path, in_p: Path | None = None) -> None:
    """Refuse a destination that cannot be written, before any work is done.

    Raises
    ------
    OfflineError
        The output is the input (by any path), a folder, a pipe or a device (the file written
        would replace it, and its reader wait forever), in a missing or read-only folder, or not
        writable.
    """
    if in_p is not None and out_p.exists() and _same_file(out_p, in_p):
        raise OfflineError(f"{out_p}: refusing to overwrite the input file")
    if out_p.is_dir():
        raise OfflineError(f"{out_p}: is a folder; give a file name")
    if (what := not_a_file(out_p)) is not None:  # (through a link: /dev/stdout on a terminal)
        raise OfflineError(f"{out_p}: is {what}, not a file; give a file name (the output is written whole, "
                           "then renamed into place)")
    out_p = through_link(out_p)  # a link is written through: its target's folder must take the file
    parent = out_p.parent if str(out_p.parent) else Path(".")
    if (why := folder_problem(parent)) is not None:
        raise OfflineError(f"{parent}: {why}")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(parent) else "permission denied"
        raise OfflineError(f"{out_p}: cannot write there ({reason})")
    if (why := _not_replaceable(out_p, parent)) is not None:
        raise OfflineError(f"{out_p}: {why}; nothing was written")
    remove_stale_parts(out_p, older_than_s=60.0)  # a write not touched for a minute is a dead one


def _not_replaceable(out_p: Path, parent: Path) -> str | None:
    """Why an existing output may not be replaced although its folder takes files, else None: it is
    write-protected (``chmod 444``: sox and cp refuse; the rename into place went through it), or
    another user's in a sticky folder (/tmp), where the rename fails only after all the work."""
    try:
        st = os.stat(out_p)
    except OSError:
        return None
    if not os.access(out_p, os.W_OK):
        return "write-protected (permission denied); remove it or make it writable to replace it"
    uid = os.geteuid()
    try:
        sticky = os.stat(parent).st_mode & stat.S_ISVTX and os.stat(parent).st_uid != uid
    except OSError:
        return None
    if sticky and uid != 0 and st.st_uid != uid:
        return "another user's file in a folder that only lets owners replace theirs (sticky, as /tmp)"
    return None


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
        if not frames:  # libsndfile writes no FLAC or MP3 header for no audio: a 0-byte file, said to be fine
            raise OfflineError(f"{out_p}: nothing to write (0 s of audio), and no empty {out_p.suffix or 'such'} "
                               "file can be written; nothing was written (an empty .wav can)") from None
        raise _write_failed(out_p, OSError(f"the file does not read back ({frames} frames were written)")) from None
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
        """``y`` (the resampler's own new array) clipped in place to the safety stage's ceiling, and
        counted with its clips (``Safety.limit``)."""
        if self.safety is not None and y.size:
            self.safety.limit(y)
        return y

    def finish(self) -> None:
        ch = self.dst.channels
        if self.rs_out is not None:
            self._keep(self._ceiling(self.rs_out.resample_chunk(np.zeros((0, ch), np.float32), last=True)))
        if self.written < self.total:
            self.dst.write(np.zeros((self.total - self.written, ch), np.float32))
            self.written = self.total
        pad_opus(self.dst)

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

    More messages at one sample than a queue holds (``span``'s ``most``) go in over that sample and
    the next ones, so that a full queue loses none of the messages that end notes (note-offs, the
    sustain pedal up, all notes off) nor of the releases: the queue still thins controllers and then
    note-ons, but a note-off left out of it was a note that never ended (a 1100-note chord's
    note-offs at the tick of a melody's: the melody rang to the 30 s cap).

    Attributes
    ----------
    release_drops : int
        Messages dropped while the releases went in (a song that ends with 10 000 keys down).
    """

    def __init__(self, events: np.ndarray | None = None, released: int = 0, dropped=None):
        ev = np.zeros((0, 4)) if events is None else np.asarray(events, np.float64).reshape(-1, 4)
        self.events = ev[np.argsort(ev[:, 0], kind="stable")]
        self._times = np.ascontiguousarray(self.events[:, 0])  # searched once a send (a sample's may take several)
        self._next = 0
        self._releases = len(self.events) - released  # the first of the releases at the song's end
        self._release_from = self._releases if dropped is not None else len(self.events)
        self._dropped = dropped
        self._most: int | None = None  # the queue the last ``span`` was asked about (None: no limit)
        self.release_drops = 0

    def send(self, target, pos: int, frames: int) -> None:
        """``target.handle_midi`` for every event before ``pos + frames`` not yet sent, at its offset
        in the block that starts at ``pos`` (earlier ones at 0)."""
        i = self._next
        end = max(i, int(np.searchsorted(self._times, pos + frames)))
        if self._most is not None and end - i > self._most:  # more than a queue holds, at one sample
            end = self._fits(i, end, self._most)  # the rest at the next sample, in order
        split = max(i, min(end, self._release_from))
        self._send(target, i, split, pos)
        if split < end:  # the releases at the song's end
            before = self._dropped()
            self._send(target, split, end, pos)
            self.release_drops += self._dropped() - before
        self._next = end

    def span(self, pos: int, frames: int, most: int) -> int:
        """How many of the ``frames`` from ``pos`` one ``send`` may cover with no more than ``most``
        events: the block ends before the event that would overflow a queue of ``most`` (at least one
        frame: more than ``most`` at one sample go in over it and the next ones, ``_fits``); the next
        ``send`` keeps to ``most`` so."""
        self._most = most
        k = self._next + most
        if k >= len(self.events) or self.events[k, 0] >= pos + frames:
            return frames
        return max(1, min(frames, math.floor(self.events[k, 0]) - pos))

    def _fits(self, i: int, end: int, most: int) -> int:
        """The end of the first of ``events[i:end]`` that a queue of ``most`` takes without losing a
        message that ends notes (``_midi_rank`` 2: a full queue drops them only when it holds
        ``most`` of them) or a release (taken while the queue has room): the rest wait a sample. A
        re-struck key's note-on stays with its note-off at that sample (the synth tells that
        note-off from the new note's by their time)."""
        from realtime.dsp.processor import _midi_rank

        ev, ending = self.events, 0
        for k in range(i, end):
            if k >= self._releases:
                if k - i < most:
                    continue
            elif _midi_rank(ev[k, 1], ev[k, 2], ev[k, 3]) < 2:
                continue
            elif ending < most:
                ending += 1
                continue
            return max(i + 1, self._with_its_note_on(i, k))
        return end

    def _with_its_note_on(self, i: int, k: int) -> int:
        """``k``, or, for a note-off whose key was struck at its sample among ``events[i:k]``, that note-on."""
        ev = self.events
        s = int(ev[k, 1])
        if s & 0xF0 not in (0x80, 0x90) or (s & 0xF0 == 0x90 and ev[k, 3] >= 1):
            return k
        for j in range(k - 1, i - 1, -1):
            if ev[j, 0] != ev[k, 0]:
                break
            if int(ev[j, 1]) == 0x90 | (s & 0x0F) and ev[j, 2] == ev[k, 2] and ev[j, 3] >= 1:
                return j
        return k

    def _send(self, target, i: int, end: int, pos: int) -> None:
        ev = self.events
        for k in range(i, end):
            target.handle_midi(int(ev[k, 1]), int(ev[k, 2]), int(ev[k, 3]), int(max(0, ev[k, 0] - pos)))


class ChainRunner:
    """Runs a prepared chain over a stream: fixed blocks, MIDI events at their exact offsets.

    A block whose events would overflow the MIDI queue of a processor (``MidiQueue``: 1024 for the
    synth) runs in parts, each with no more than it holds, so a dense stream (2,000 pitch bends in
    2 s) is not cut short at a large block size: the render stays the same at any block size.

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
        self.queue = self.midi_queue(chain)
        self.multiple = getattr(chain, "block_multiple", 1)  # what a part of a block split below keeps to

    @staticmethod
    def midi_queue(chain, *more) -> int | None:
        """The fewest MIDI messages a processor of ``chain`` (and of ``more``: processors besides it)
        queues for one block (its ``_ev`` rows, ``MidiQueue``), None where none takes MIDI."""
        sizes = [p._ev.shape[0] for p in (*(s.processor for s in getattr(chain, "slots", ())), *more)
                 if isinstance(getattr(p, "_ev", None), np.ndarray)]
        return min(sizes) if sizes else None

    def feed(self, x: np.ndarray):
        """Add input frames; yield every processed block that is ready (views, valid until the next)."""
        self.fifo.add(x)
        B = self.blocksize
        for block in self.fifo.blocks():
            a = 0
            while a < B:  # in parts where a queue would overflow (the class docstring)
                m = B - a if self.queue is None else self.events.span(self.pos, B - a, self.queue)
                if m < B - a:  # (more than a queue takes at one sample goes in over the next ones, as here)
                    m = max(self.multiple, m - m % self.multiple)
                self.events.send(self.chain, self.pos, m)
                self.chain.process(block[a:a + m])
                self.pos += m
                a += m
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
                 progress: bool = True, compensate_latency: bool = True, tail_s: float = 0.0,
                 bits: str | None = None) -> dict:
    """Run ``chain`` over an audio file into another, block by block, faster than real time.

    Parameters
    ----------
    in_path, out_path : str or Path
        Any file soundfile reads (mono or stereo; a pipe such as ``/dev/stdin`` too, as long as
        what it holds); the output format follows its extension (a WAV past 4 GiB: RF64,
        ``sized_format``), the input's text tags copied where the format holds them.
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
    bits : str or None
        The output's samples (``BITS``: "16", "24", "32", "float"; 16 dithered); None: the input's
        where the format holds them, at least 24 bits.

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
    # before the input is opened: a pipe's is read whole by then (`arecord | … process - x.wav` lost it)
    check_destination(out_p, in_p)
    output_format(out_p, "FLOAT", bits=bits)
    src, cut = open_input(in_p)
    try:
        fmt, subtype = output_format(out_p, src.subtype, src.samplerate, bits=bits)
        ch, in_sr, length = src.channels, src.samplerate, src.frames
        tail = round(tail_s * in_sr)
        fmt = sized_format(out_p, fmt, subtype, length + tail, ch)
        samplerate = chain_rate([s.processor for s in getattr(chain, "slots", ())], in_sr, samplerate)
        blocksize = fit_block(blocksize, chain)
        chain.prepare(samplerate, blocksize, ch)
        latency = int(chain.latency) if compensate_latency else 0
        resample = in_sr != samplerate
        rs_in = soxr.ResampleStream(in_sr, samplerate, ch, dtype="float32", quality="HQ") if resample else None
        rs_out = soxr.ResampleStream(samplerate, in_sr, ch, dtype="float32", quality="HQ") if resample else None
        runner = ChainRunner(chain, blocksize, ch)
        junk0 = junk_samples(chain)
        try:
            with atomic_write(out_p) as tmp:
                with open_output(sf_path(tmp), in_sr, ch, fmt, subtype, name=out_p) as dst, \
                        tqdm(total=length, unit="frame", unit_scale=True, leave=False,
                             disable=not progress or not is_terminal(sys.stderr),  # (not into a log)
                             desc=in_p.name) as bar:
                    copy_tags(src, dst, in_p, warn=not will_carry(in_p, fmt, subtype))
                    out = OutputWriter(dst, rs_out, length, skip=latency, tail=tail, safety=final_safety(chain))
                    flush = flush_frames(latency, tail_s, samplerate, resample)
                    frames_read, nonfinite = _stream(src, out, runner, rs_in, flush, bar)
                frames = end_opus(tmp, dst, out.total)
                warn_tags(in_p, carry_tags(in_p, sf_path(tmp), fmt, subtype))
                check_written(tmp, out_p, frames)
        except (OSError, sf.LibsndfileError) as e:
            raise _write_failed(out_p, e) from None
    finally:
        src.close()
    short = warn_short(in_p, frames_read, length)
    warn_nonfinite(in_p, nonfinite)
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
        nonfinite += scrub_input(x)
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
        blocksize = fit_block(blocksize, chain)
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
        """Write what is decided and silence up to the file's length (a runner that stopped short),
        then an Opus output's padding (``pad_opus``), as ``OutputWriter.finish``."""
        self._write_held(min(self.pos, self.end()))
        if self.written < self.length:
            self._put(np.zeros((self.length - self.written, self.dst.channels), np.float32))
        self.held.clear()
        self.done = True
        pad_opus(self.dst)

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


def plan_render(midi_path, out_path, samplerate: int, bits: str | None = None) -> tuple[np.ndarray, int, int, bool, int]:
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
    check_destination(out_p, Path(midi_path))  # first, as `process`: a folder is "a folder", not format ''
    output_format(out_p, "PCM_24", samplerate, "the render", bits)  # the formats `process` writes, refused before any work
    events, n, damage = read_midi_song(midi_path, samplerate)
    if n > MAX_RENDER_S * samplerate:
        raise OfflineError(f"{midi_path}: the song would last {n / samplerate / 3600:.0f} hours; "
                           f"refusing to render more than {MAX_RENDER_S // 3600} hours (a broken delta time?)")
    if damage is not None:
        print(f"warning: {damage.say(midi_path)}; rendering what was read", file=sys.stderr)
    messages = len(events) - (damage.added if damage is not None else 0)
    played = release_at_end(events, n)
    return played, n, messages, damage is not None, len(played) - len(events)


def open_render(tmp, out_p: Path, samplerate: int, frames: int = 0, bits: str | None = None) -> sf.SoundFile:
    """The file a render of at most ``frames`` writes (at ``tmp``): stereo, in the format ``out_p``'s
    extension names (``output_format``; 24-bit where the format is PCM, or ``bits``; RF64 for a WAV
    past 4 GiB: ``sized_format``)."""
    fmt, subtype = output_format(out_p, "PCM_24", samplerate, "the render", bits)
    fmt = sized_format(out_p, fmt, subtype, frames, 2)
    return open_output(sf_path(tmp), samplerate, 2, fmt, subtype, name=out_p)


def warn_unplayed(midi_path, events: np.ndarray, out_p, seconds: float, drums_left_alone: bool) -> None:
    """One line where nothing of the file sounds: it has no note (meta events alone), or its notes
    are all on channel 10 (GM percussion), which the synth leaves alone (``drums_left_alone``: every
    MIDI processor of the chain is the synth, its Channel 10 knob off). A drum track rendered
    silence without a word."""
    on = ((events[:, 1].astype(np.int64) & 0xF0) == 0x90) & (events[:, 3] > 0)
    if not on.any():
        print(f"warning: {midi_path}: no notes to play; {out_p} holds {seconds:.1f} s of silence", file=sys.stderr)
    elif drums_left_alone and np.all((events[on, 1].astype(np.int64) & 0x0F) == 9):
        print(f"warning: {midi_path}: its {int(on.sum())} notes are all on channel 10 (GM percussion), which the "
              f"synth leaves alone: {out_p} holds silence; --set synth.channel10=1 plays them as notes",
              file=sys.stderr)


def render_midi(midi_path, out_path, chain, samplerate: int = 48000, blocksize: int = 128,
                tail_s: float | None = None, bits: str | None = None) -> dict:
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
    bits : str or None
        The output's samples (``process_file``'s); None: 24-bit where the format is PCM.

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
    if not chain.takes_midi:  # (an LV2 plugin of a batch's preset that takes none): a silent file said to be fine
        raise OfflineError("the chain plays no MIDI (no synth or LV2 instrument in it): its render would be silent")
    events, n, messages, truncated, released = plan_render(midi_path, out_p, samplerate, bits)
    blocksize = fit_block(blocksize, chain)
    chain.prepare(samplerate, blocksize, 2)
    dropped0 = dropped_midi_events(chain)  # the processors' counters outlive a render
    junk0 = junk_samples(chain)
    t0 = time.perf_counter()
    try:
        with atomic_write(out_p) as tmp:
            longest = n + round((MIDI_TAIL_MAX_S if tail_s is None else tail_s) * samplerate)  # RenderWriter's limit
            with open_render(tmp, out_p, samplerate, longest, bits) as dst:
                out = RenderWriter(dst, n, samplerate, skip=int(chain.latency), tail_s=tail_s)
                runner = ChainRunner(chain, blocksize, 2, events, released)
                for y in runner.flush(tail=out.most):
                    out.write(y)
                    if out.done:
                        break
                out.finish()
            # Ogg on a full disk comes back empty, without an error
            check_written(tmp, out_p, end_opus(tmp, dst, out.written))
    except (OSError, sf.LibsndfileError) as e:
        raise _write_failed(out_p, e) from None
    took = time.perf_counter() - t0
    # the file's messages dropped: not the releases at its end, which a song ending with 10 000 keys down
    # overflows (its 10 001 messages reported 10 016 dropped)
    dropped = dropped_midi_events(chain) - dropped0 - runner.events.release_drops
    if dropped:
        print(f"warning: {midi_path}: {dropped} MIDI messages were dropped (more than a block's queue holds "
              "at one time; controllers and pitch bend first)", file=sys.stderr)
    midi_takers = [s.processor for s in chain.slots if callable(getattr(s.processor, "handle_midi", None))]
    warn_unplayed(midi_path, events, out_p, out.written / samplerate,
                  all(getattr(p, "kind", "") == "synth" and p.get_param("channel10") == 0 for p in midi_takers))
    junk = warn_junk(midi_path, chain, junk0)
    seconds = out.written / samplerate
    return {"output": str(out_p), "seconds": seconds, "events": messages, "dropped_midi_events": dropped,
            "render_s": took, "realtime_factor": took / seconds if seconds else 0.0, "peak": out.peak,
            "truncated": truncated, "plugin_junk_samples": junk}
