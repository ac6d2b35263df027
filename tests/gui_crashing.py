"""Processors that crash the process as a hosted plugin's native code can, imported by the engine
process as a plugin (never in the test process: their kinds would join its registry). Each marks
itself on the crash site as the LV2 host marks a plugin's code (``realtime.io.crash_site``)."""
import ctypes
import time

import numpy as np

from realtime.dsp.processor import Param, Processor
from realtime.dsp.processors import REGISTRY, register
from realtime.io import crash_site


def _segfault() -> None:
    ctypes.string_at(0)  # a read of address 0: SIGSEGV, as a plugin's bad pointer


class CrashInRun(Processor):
    """Plays through; crashes on the DSP thread once its "crash" switch is on."""
    kind = "crash_in_run"
    params = (Param("crash", "Crash", 0.0, 1.0, 0.0, step=1.0, smoothing_ms=0.0),)

    def _prepare(self) -> None:
        self._row = crash_site.take("test plugin 'Crash in run'")

    def process(self, block: np.ndarray) -> None:
        before = crash_site.mark(crash_site.DSP, self._row)
        if self.values[0] >= 0.5:
            _segfault()
        crash_site.mark(*before)


class BusyPlaying(Processor):
    """Plays through, its code marked as running for most of each block (a heavy plugin): a crash
    elsewhere meanwhile must not be put down to it."""
    kind = "busy_playing"
    params = ()

    def _prepare(self) -> None:
        self._row = crash_site.take("test plugin 'Busy'")

    def process(self, block: np.ndarray) -> None:
        before = crash_site.mark(crash_site.DSP, self._row)
        end = time.perf_counter() + 0.0018
        while time.perf_counter() < end:
            pass
        crash_site.mark(*before)


_built = [0]


class CrashInBuild(Processor):
    """Crashes while it is made (as a plugin's instantiate), from the second one on: the engine
    process's warm-up makes the first (it always ends before a slot is added)."""
    kind = "crash_in_build"
    params = ()

    def __init__(self, **values):
        super().__init__(**values)
        _built[0] += 1
        if _built[0] >= 2:
            with crash_site.inside(crash_site.take("test plugin 'Crash in build'")):
                _segfault()

    def process(self, block: np.ndarray) -> None:
        pass


for _cls in (CrashInRun, CrashInBuild, BusyPlaying):
    if _cls.kind not in REGISTRY:
        register(_cls)
