"""Writes what the engine outputs to a file from a non-real-time thread (drains the tap ring).

The file is written under a temporary name and renamed on ``close`` — also after the device
vanished — so a recording is either complete up to the stop or absent, never half-written garbage.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.engine.ring import Ring
from realtime.io.files import AtomicFile


class FileRecorder:
    def __init__(self, path: str, samplerate: int, channels: int, seconds_buffer: float = 4.0):
        self.path = Path(path)
        if not self.path.parent.exists():
            raise FileNotFoundError(f"{self.path.parent}: output directory does not exist")
        self.ring = Ring.for_frames(int(samplerate * seconds_buffer), channels)
        self._out = AtomicFile(self.path)
        self._file = sf.SoundFile(self._out.tmp, "w", samplerate=samplerate, channels=channels,
                                  format="WAV", subtype="FLOAT")
        self._chunk = np.zeros((4096, channels), np.float32)
        self._stop = threading.Event()
        self.frames = 0
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def _drain(self) -> int:
        n = self.ring.pop(self._chunk)
        if n:
            self._file.write(self._chunk[:n])
            self.frames += n
        return n

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._drain():
                self._stop.wait(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        while self._drain():
            pass
        self._file.close()
        self._out.commit(fsync=False)
