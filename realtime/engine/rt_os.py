"""What the engine asks of the OS for its threads: real-time priority, page-fault counts, and
context switches counted around each DSP block.

Context switches, why: a block whose wall time far exceeds its CPU time was off the CPU. If the thread was
switched out meanwhile (a GIL wait, a preemption), that shows in its context-switch counters; if it
was not, the virtual CPU itself was taken away by the hypervisor (steal time, which a paravirtual
Linux guest keeps out of thread CPU time). ``getrusage(RUSAGE_THREAD)`` writes the counters into
a preallocated buffer, so counting creates no Python objects. (Its CPU times are only updated at
scheduler ticks, too coarse for a block: CPU time comes from ``time.thread_time_ns``.)
"""
from __future__ import annotations

import ctypes
import os
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


def set_realtime_priority(level: int, tid: int = 0) -> bool:
    """Give a thread SCHED_FIFO real-time priority, where permitted.

    Parameters
    ----------
    level : int
        SCHED_FIFO priority (1 lowest).
    tid : int
        Kernel thread id (``threading.get_native_id()``); 0 is the calling thread.

    Returns
    -------
    bool
        Whether it took (not permitted: the thread keeps its normal priority).
    """
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(level))
        return True
    except (AttributeError, PermissionError, OSError):
        return False


def thread_page_faults(tid: int) -> tuple[int, int]:
    """Page faults of a thread of this process so far, from /proc (Linux).

    Parameters
    ----------
    tid : int
        Kernel thread id (``threading.get_native_id()``).

    Returns
    -------
    (int, int)
        (minor, major) faults; (0, 0) if unknown (no such thread, not Linux).
    """
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": comm may hold spaces
    except OSError:
        return 0, 0
    return int(fields[7]), int(fields[9])  # minflt, majflt (fields 10 and 12 of proc(5))
