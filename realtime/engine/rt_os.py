"""Context switches of the calling thread, counted around each DSP block.

Why: a block whose wall time far exceeds its CPU time was off the CPU. If the thread was
switched out meanwhile (a GIL wait, a preemption), that shows in its context-switch counters; if it
was not, the virtual CPU itself was taken away by the hypervisor (steal time, which a paravirtual
Linux guest keeps out of thread CPU time). ``getrusage(RUSAGE_THREAD)`` writes the counters into
a preallocated buffer, so counting creates no Python objects. (Its CPU times are only updated at
scheduler ticks, too coarse for a block: CPU time comes from ``time.thread_time_ns``.)
"""
from __future__ import annotations

import ctypes
import sys

import numpy as np
from numba import njit

RUSAGE_THREAD = 1  # Linux
# struct rusage on 64-bit Linux: two timevals (utime, stime), then 14 longs
_NVCSW, _NIVCSW = 16, 17
_WORDS = 18


def _getrusage():
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_long) != 8:
        return None
    try:
        fn = ctypes.PyDLL(None).getrusage  # PyDLL: keeps the GIL (no hand-over around a fast call)
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_void_p)
    fn.restype = ctypes.c_int
    return fn


class SwitchCounter:
    """``before()`` / ``after()`` around a block, then ``store(i, switches)`` writes the block's
    context switches (voluntary + involuntary; -1 where unknown) to ``switches[i]``."""

    def __init__(self):
        self._fn = _getrusage()
        self.available = self._fn is not None
        self._a = np.zeros(_WORDS, np.int64)
        self._b = np.zeros(_WORDS, np.int64)
        self._pa, self._pb = self._a.ctypes.data, self._b.ctypes.data

    def before(self) -> None:
        if self._fn is not None:
            self._fn(RUSAGE_THREAD, self._pa)

    def after(self) -> None:
        if self._fn is not None:
            self._fn(RUSAGE_THREAD, self._pb)

    def store(self, i: int, switches: np.ndarray) -> None:
        store_switches(self._a, self._b, self.available, i, switches)


@njit(cache=True)  # keeps the GIL: releasing it for a few ns of work would only invite a hand-over
def store_switches(a, b, available, i, switches):
    switches[i] = b[_NVCSW] - a[_NVCSW] + b[_NIVCSW] - a[_NIVCSW] if available else -1
