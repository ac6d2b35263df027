"""Writes what the engine outputs to a file from a non-real-time thread (drains the tap ring).

The file is written under a temporary name and renamed on ``close`` — also after the device
vanished — so a recording is either complete up to the stop or absent, never half-written garbage.
A write that fails midway (a full disk) stops the writing, not the engine: ``close`` keeps what was
written when it reads back as audio, and raises ``RecordingError`` saying so.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.engine.ring import Ring
from realtime.errors import RecordingError
from realtime.io.files import AtomicFile, end_opus, folder_problem, pad_opus, sf_path, write_failure_reason

JOIN_TIMEOUT_S = 5.0  # discard's wait for the thread: it has nothing to write by then


class FileRecorder:
    def __init__(self, path: str, samplerate: int, channels: int, seconds_buffer: float = 4.0,
                 format: str = "WAV", subtype: str = "FLOAT"):
        self.path = Path(path)
        if (why := folder_problem(self.path.parent)) is not None:
            raise RecordingError(f"{self.path.parent}: {why}")
        self.ring = Ring.for_frames(int(samplerate * seconds_buffer), channels)
        self._chunk = np.zeros((4096, channels), np.float32)
        # the ring's Numba code loaded here, on the caller's thread: loaded first in the thread, it
        # waited for an llvmlite lock that a Ctrl-C left held on this one, and discard's join hung.
        # Before the file exists: a signal during the load (half a second) left its .part behind
        self.ring.pop(self._chunk)
        self._stop = threading.Event()
        self.frames = 0
        self.samplerate = samplerate
        self.error: BaseException | None = None  # the write that failed; later frames are drained unwritten
        self.reason: str | None = None  # why, in words (``write_failure_reason``), set before ``error``
        self._out = AtomicFile(self.path)
        try:
            self._file = sf.SoundFile(sf_path(self._out.tmp), "w", samplerate=samplerate, channels=channels,
                                      format=format, subtype=subtype)
        except (OSError, RuntimeError) as e:
            self._out.discard()
            raise RecordingError(f"{write_failure_reason(self.path.parent, e)}: cannot record to {self.path}") from None
        except BaseException:  # a signal meanwhile: no .part left
            self._out.discard()
            raise
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def _drain(self) -> int:
        n = self.ring.pop(self._chunk)
        if n and self.error is None:
            try:
                self._file.write(self._chunk[:n])
                self.frames += n
            except (OSError, RuntimeError) as e:  # soundfile's errors are RuntimeErrors
                # asked now, in the thread that wrote: libsndfile's errno is this thread's, and the disk
                # is still as full as it was (the temporary file, if removed later, frees its space)
                self.reason = write_failure_reason(self.path.parent, e)
                self.error = e
        return n

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

    def discard(self) -> None:
        """Stop and keep nothing (the engine never ran: no empty file, no .part left). The thread is
        given ``JOIN_TIMEOUT_S`` (it writes nothing then: the engine never fed it); one still stuck
        after it is left to die with the process (a daemon), the .part removed all the same."""
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT_S)
        if not self._thread.is_alive():  # a file the thread may still be writing is not closed under it
            try:
                self._file.close()
            except (OSError, RuntimeError):
                pass
        self._out.discard()

    def _commit(self) -> None:
        """The finished file put in place; a folder moved, removed or unmounted while recording is one
        line that names the hidden file the take is left in (it was the bare rename's error)."""
        try:
            self._out.commit(fsync=False)
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
            kept = self.frames > 0 and sf.info(sf_path(self._out.tmp)).frames > 0
        except (OSError, RuntimeError):
            pass
        if kept:
            self._commit()
        else:
            self._out.discard()
        raise RecordingError(f"{why} while recording to {self.path}: the recording stopped after "
                             f"{self.frames / self.samplerate:.1f} s; "
                             + ("what was written is kept" if kept else "nothing was kept"))
