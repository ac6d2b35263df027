"""Writes what the engine outputs to a file from a non-real-time thread (drains the tap ring).

The file is written under a hidden temporary name (``.NAME.TAG.recording``) and renamed on
``close`` — also after the device vanished — so a finished recording is complete up to the stop.
A take never replaces a file, nor another live recorder's take: where NAME is held it is kept as
``NAME-2.EXT``, ``NAME-3.EXT`` … (``free_take``), also when NAME appears while it records.
A write that fails midway (a full disk) stops the writing, not the engine: ``close`` keeps what was
written when it reads back as audio, and raises ``RecordingError`` saying so.

A take cannot be recorded again, so one whose process died (SIGKILL, the OOM killer, a plugin's
crash) is not lost: the header is brought up to date after the first chunk and about once a second
after it, so the hidden file reads as what was recorded until then, and the next recording into that
folder keeps it under a visible name (``recover_takes``; a ``.part`` of an offline write is removed as
stale instead). The recorder holds a lock on its take for as long as it lives: a take nobody holds
is a dead process's, however recent (and a live one's, however long its device has stalled, is not). A ``.wav`` is
recorded as RF64 that libsndfile writes as a plain WAV unless the take outgrows the 4 GiB a WAV's
sizes count (3.1 h of stereo float at 48 kHz): past that, a WAV header said less than was recorded.
"""
from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.engine.ring import READ, Ring, TapGaps
from realtime.errors import RecordingError
from realtime.io.files import (
    PART_TAG,
    AtomicFile,
    end_opus,
    folder_problem,
    hidden_parts,
    pad_opus,
    place,
    sf_path,
    through_link,
    usual_mode,
    write_failure_reason,
)
from realtime.io.flac_repair import repair_cut_flac

JOIN_TIMEOUT_S = 5.0  # discard's wait for the thread: it has nothing to write by then
SUFFIX = ".recording"  # the hidden take's suffix: not ".part", which a later write removes as stale
HEADER_EVERY_S = 1.0  # how often the header is brought up to date (what a killed process leaves readable)
SFC_UPDATE_HEADER_NOW, SFC_RF64_AUTO_DOWNGRADE = 0x1060, 0x1210  # libsndfile's sf_command codes
HEADER_FORMATS = ("WAV", "RF64", "AIFF", "CAF", "W64", "WAVEX", "AU")  # formats whose header holds the length
STARTING_S = 60.0  # an empty hidden take younger than this may be a recorder's between its creation and its lock
EMPTY_TAKE_BYTES = 4096  # a hidden take whose header says 0 frames and this small holds no audio


class FileRecorder:
    """A take of what the engine outputs, kept in ``path`` or, where a file or another live take
    holds that name, the next free ``NAME-2.EXT``, ``NAME-3.EXT`` … (``free_take``): a take is
    never recorded over another. ``path`` is the file it is kept in, ``why`` says why that is not
    the name asked for (None when it is), ``moved`` why it changed at the end (a file that appeared
    meanwhile)."""

    def __init__(self, path: str, samplerate: int, channels: int, seconds_buffer: float = 4.0,
                 format: str = "WAV", subtype: str = "FLOAT"):
        self.asked = Path(path)
        if (why := folder_problem(self.asked.parent)) is not None:
            raise RecordingError(f"{self.asked.parent}: {why}")
        self.path = free_take(self.asked)
        self.why = (None if self.path == self.asked else f"{self.asked} exists" if os.path.isfile(self.asked)
                    else f"another recording to {self.asked} is under way")
        self.moved: str | None = None
        self.ring = Ring.for_frames(int(samplerate * seconds_buffer), channels)
        self.ring.gaps = TapGaps()  # what the engine dropped while the disk could not keep up: silence there
        self._chunk = np.zeros((4096, channels), np.float32)
        self._silence = np.zeros((4096, channels), np.float32)
        self.silence_frames = 0  # of ``frames``: put where the engine dropped what found no room
        self._gap_done = 0  # of the gap being filled
        # the ring's Numba code loaded here, on the caller's thread: loaded first in the thread, it
        # waited for an llvmlite lock that a Ctrl-C left held on this one, and discard's join hung.
        # Before the file exists: a signal during the load (half a second) left its .part behind
        self.ring.pop(self._chunk)
        self._stop = threading.Event()
        self.frames = 0
        self.samplerate = samplerate
        self.error: BaseException | None = None  # the write that failed; later frames are drained unwritten
        self.reason: str | None = None  # why, in words (``write_failure_reason``), set before ``error``
        self._out = AtomicFile(self.path, suffix=SUFFIX)
        self._lock = _hold(self._out.tmp)  # this take is alive (``recover_takes``): gone with the process
        self._header_at = None  # frames written when the header was last brought up to date
        try:
            self._file = sf.SoundFile(sf_path(self._out.tmp), "w", samplerate=samplerate, channels=channels,
                                      format="RF64" if format == "WAV" else format, subtype=subtype)
            if format == "WAV" and not _sf_command(self._file, SFC_RF64_AUTO_DOWNGRADE, True):
                raise RuntimeError("libsndfile cannot write an RF64 that stays a WAV under 4 GiB")
        except (OSError, RuntimeError) as e:
            self._release()
            raise RecordingError(f"{write_failure_reason(self.path.parent, e)}: cannot record to {self.path}") from None
        except BaseException:  # a signal meanwhile: no hidden take left
            self._release()
            raise
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def _drain(self) -> int:
        room = len(self._chunk)
        gap = self.ring.gaps.next()
        if gap is not None:
            read = int(self.ring.idx[READ])
            if gap[0] <= read:  # every frame before the gap is written: its silence now
                n = min(gap[1] - self._gap_done, room)
                self._gap_done += n
                if self._gap_done == gap[1]:
                    self.ring.gaps.take()
                    self._gap_done = 0
                self._write(self._silence[:n])
                self.silence_frames += n
                return n
            room = min(room, gap[0] - read)  # up to the gap
        n = self.ring.pop(self._chunk[:room])
        if n:
            self._write(self._chunk[:n])
        return n

    def _write(self, frames: np.ndarray) -> None:
        n = len(frames)
        if n and self.error is None:
            try:
                self._file.write(frames)
                self.frames += n
                if self._header_at is None or self.frames - self._header_at >= HEADER_EVERY_S * self.samplerate:
                    self._header_at = self.frames
                    if self._file.format in HEADER_FORMATS:
                        _sf_command(self._file, SFC_UPDATE_HEADER_NOW)
                    self._check_removed()
            except (OSError, RuntimeError) as e:  # soundfile's errors are RuntimeErrors
                # asked now, in the thread that wrote: libsndfile's errno is this thread's, and the disk
                # is still as full as it was (the temporary file, if removed later, frees its space)
                self.reason = write_failure_reason(self.path.parent, e)
                self.error = e

    def _check_removed(self) -> None:
        """Stop writing once the hidden take is unlinked (its folder deleted): the writes went on
        succeeding into a file nobody could reach, and the stop said the take was left in its folder."""
        if self.error is None and self._lock is not None and os.fstat(self._lock).st_nlink == 0:
            self.reason = "its file was removed (was its folder deleted?)"
            self.error = FileNotFoundError(errno.ENOENT, self.reason, str(self._out.tmp))

    def stopped(self) -> str | None:
        """Once a write has failed (the recording stopped; the engine plays on): what to tell the
        player at once, in one line, else None."""
        if self.error is None:
            return None
        return (f"{self.reason} while recording to {self.path}: the recording stopped after "
                f"{self.frames / self.samplerate:.1f} s (the sound plays on)")

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._drain():
                self._stop.wait(0.02)

    def _release(self) -> None:
        """The hidden take removed and its lock let go."""
        self._out.discard()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def discard(self) -> None:
        """Stop and keep nothing (the engine never ran: no empty file, no hidden take left). The thread
        is given ``JOIN_TIMEOUT_S`` (it writes nothing then: the engine never fed it); one still stuck
        after it is left to die with the process (a daemon), the hidden take removed all the same."""
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT_S)
        if not self._thread.is_alive():  # a file the thread may still be writing is not closed under it
            try:
                self._file.close()
            except (OSError, RuntimeError):
                pass
        self._release()

    def _commit(self) -> None:
        """The finished file put in place; a folder moved, removed or unmounted while recording is one
        line that names the hidden file the take is left in (it was the bare rename's error)."""
        try:
            for _ in range(100):
                try:
                    self._out.commit(fsync=False, replace=False)  # never over a file that appeared meanwhile
                    break
                except FileExistsError:
                    self.moved = f"{self.path} appeared meanwhile"
                    self.path = free_take(self.asked, own=self._out.tmp)
                    self._out.path = through_link(self.path)
            else:
                raise FileExistsError(errno.EEXIST, "no free name left", str(self.path))
            self._unlock()
        except OSError as e:
            raise RecordingError(f"{self.path}: the recording ({self.frames / self.samplerate:.1f} s) could not be put "
                                 f"in place ({e.strerror or e}: was its folder moved, removed or unmounted?); it is "
                                 f"left as {self._out.tmp.name} in the folder it was recorded in") from None

    def close(self) -> None:
        """Finish the file; after a failed write, keep what was written (if it reads back) and
        raise ``RecordingError``."""
        self._stop.set()
        self._thread.join()
        while self._drain():
            pass
        try:
            if self.error is None:
                pad_opus(self._file)
            self._file.close()
            if self.error is None:
                end_opus(self._out.tmp, self._file, self.frames)
            self._check_removed()  # in the last second too
        except (OSError, RuntimeError) as e:
            if self.error is None:
                self.reason = write_failure_reason(self.path.parent, e)
                self.error = e
        if self.error is None:
            self._commit()
            return
        why = self.reason or write_failure_reason(self.path.parent, self.error)
        kept = False
        try:
            if self._file.format == "FLAC":  # cut mid-frame, its length unknown: made readable, in place
                repair_cut_flac(sf_path(self._out.tmp))
            kept = self.frames > 0 and 0 < sf.info(sf_path(self._out.tmp)).frames < 1 << 62  # (2^63-1: unknown)
        except (OSError, RuntimeError):
            pass
        if kept:
            self._commit()
        else:
            self._release()
        raise RecordingError(f"{why} while recording to {self.path}: the recording stopped after "
                             f"{self.frames / self.samplerate:.1f} s; "
                             + ("what was written is kept" if kept else "nothing was kept"))


def _numbered(path: Path):
    """``path``, then ``NAME-2.EXT``, ``NAME-3.EXT`` … beside it: the names a take may be kept under."""
    yield path
    n = 1
    while True:
        n += 1
        yield path.with_name(f"{path.stem}-{n}{path.suffix}")


def _place_free(part: Path, name: Path) -> Path:
    """``part`` renamed ``name``, or ``NAME-2.EXT`` … where a file holds it; where it went."""
    for kept in _numbered(name):
        try:
            place(part, kept)
            return kept
        except FileExistsError:
            continue


def _sf_command(f: sf.SoundFile, code: int, on: bool | None = None) -> int:
    """libsndfile's ``sf_command`` on an open file (soundfile does not expose it): ``on`` for a
    boolean command, None for one without an argument."""
    from soundfile import _ffi, _snd

    return _snd.sf_command(f._file, code, _ffi.NULL, 0 if on is None else int(on))


def _hold(path: Path) -> int | None:
    """A descriptor of ``path`` holding an exclusive lock on it (None where the file system has no
    locks: then a recording cut off is found by the next one only once it is not written any more)."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _live_take(path: Path, own: Path | None = None) -> bool:
    """Whether a recorder alive now (this process's or another's, not ``own``) records to ``path``:
    it holds the lock of a hidden take of that name."""
    for part in hidden_parts(path, SUFFIX):
        if part == own:
            continue
        try:
            held = _hold(part)
        except FileNotFoundError:  # finished meanwhile
            continue
        except OSError:  # (another user's, unreadable): taken to be alive
            return True
        if held is None:
            return True
        os.close(held)
    return False


def _taken(path: Path, own: Path | None = None) -> bool:
    """Whether a file (through a link) or a live recorder's take holds ``path``."""
    return os.path.isfile(path) or _live_take(path, own)


def free_take(path, own: Path | None = None) -> Path:
    """``path``, or the first of ``NAME-2.EXT``, ``NAME-3.EXT`` … beside it that no file and no
    live recorder's take (but ``own``) holds: a new take never replaces an earlier one."""
    return next(free for free in _numbered(Path(path)) if not _taken(free, own))


def _own_name(part: Path) -> Path | None:
    """The file a hidden take (``.NAME.TAG.recording``) was recorded for, or None for another file."""
    name = part.name[1:-len(SUFFIX)] if part.name.startswith(".") and part.name.endswith(SUFFIX) else ""
    stem, _, tag = name.rpartition(".")
    return part.with_name(stem) if stem and PART_TAG.fullmatch(tag) else None


def _mp3_length(part: Path, frames: int, length: float) -> tuple[int, float]:
    """A cut-off MP3 take's (frames, seconds) as libmpg123 counts them: without the header LAME
    writes at the end, libsndfile's length is a guess from the size and the first frame (an 11.8 s
    take said 3.0 s); ``frames``, ``length`` where it cannot be counted."""
    from realtime.io.mpg123 import Mpg123Audio, Mpg123Error

    try:
        with Mpg123Audio(part) as f:
            return f.frames, f.frames / f.samplerate
    except (Mpg123Error, OSError):
        return frames, length


FORMAT_EXTENSIONS = {"RF64": ".wav", "WAVEX": ".wav", "OGG": ".ogg"}  # a cut long name's take lost its own


def recover_takes(path) -> list[str]:
    """Keep the takes that recordings into ``path``'s folder (to any name) left hidden when their
    process died (no recorder holds their lock): each is renamed ``NAME.recovered-YYYYmmdd-HHMMSS.EXT``
    (when it was last written) beside its own name, with a new file's usual mode (not the hidden
    file's 0600); one without a sample (a header alone) is removed. Returns one line per take kept."""
    import time

    folder, said = through_link(Path(path)).parent, []
    try:
        parts = sorted(folder.glob(f".*{SUFFIX}"))
    except OSError:
        return said
    for part in parts:
        path = _own_name(part)
        if path is None:
            continue
        try:
            held = _hold(part)
            if held is None:  # its recorder is alive (or the lock cannot be had: left alone)
                continue
            try:
                st = part.stat()
                when, size = st.st_mtime, st.st_size
                if st.st_nlink > 1:  # put in place already (``place``), its process died before the hidden name went
                    part.unlink()
                    continue
                if size == 0:  # no header yet: a recorder that is starting (not locked yet), or one long dead
                    if time.time() - when > STARTING_S:
                        part.unlink()
                    continue
                try:
                    info = sf.info(sf_path(part))
                    frames, length = info.frames, info.duration
                    if info.format == "FLAC" and frames >= 1 << 62:  # its length unknown: made readable
                        if repair_cut_flac(sf_path(part)):
                            info = sf.info(sf_path(part))
                            frames, length = info.frames, info.duration
                        else:  # not one whole frame (the encoder holds a block until it is full): no sample
                            frames, length, size = 0, None, part.stat().st_size
                    if info.format == "MP3":
                        frames, length = _mp3_length(part, frames, length)
                except (OSError, RuntimeError):  # a header it never finished: kept, as it is, all the same
                    frames, length = -1, None
                if frames == 0 and size < EMPTY_TAKE_BYTES:
                    part.unlink()
                    continue
                ext = path.suffix or (FORMAT_EXTENSIONS.get(info.format, f".{info.format.lower()}") if frames >= 0
                                      else "")
                name = f"{path.stem}.recovered-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}{ext}"
                os.chmod(part, usual_mode())
                kept = _place_free(part, path.with_name(name))
            finally:
                os.close(held)
        except OSError:
            continue
        long = f"{length:.1f} s, " if length is not None and 0 < frames < 1 << 40 else ""
        said.append(f"warning: a recording to {path} was cut off (its process died); what it holds "
                    f"({long}last written {time.strftime('%H:%M:%S', time.localtime(when))}) is kept as {kept}")
    return said
