"""How much does this machine itself stretch fixed work?

    python main.py bench jitter [--seconds 60] [--work-ms 0.9] --json
    python -m bench.jitter …

A Numba loop of fixed cost (about one DSP block's worth, 0.9 ms by default) runs once per block
period (128 frames at 48 kHz) at the DSP thread's real-time priority, for N seconds. No Python,
no memory traffic, no I/O in the timed part: every iteration does exactly the same work, so an
iteration that takes several times longer was stretched by the machine (hypervisor, interrupts,
a busy sibling core), not by the work. Compare its outliers with the engine's late blocks:

    {"bench":"jitter","seconds","iterations","work_ms_p50","work_ms_p99","work_ms_max",
     "over_2ms","over_3ms","over_5ms", "cpu_over_3ms", …}

``cpu_*`` count the same thresholds in thread CPU time (on a kernel without IRQ-time accounting,
interrupt work done on this core is charged to the thread; stolen time is not).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from numba import njit

from bench.common import block_frames, cpu_steal_ms, emit
from realtime.argtypes import OneLineParser, positive


@njit(nogil=True, cache=True)
def fixed_work(x, reps):
    s = 0.0
    for _ in range(reps):
        for i in range(x.shape[0]):
            s += x[i] * 1.0000001
    return s


def get_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="bench jitter", description=__doc__.splitlines()[0])
    from main import _samplerate  # the command line's own check: 8000 to 384000 Hz
    ap.add_argument("--seconds", type=positive(most=3600), default=60.0)
    # (outliers are counted over 2, 3 and 5 ms: work near 2 ms counted every iteration as one)
    ap.add_argument("--work-ms", type=positive(most=1.5), default=0.9,
                    help="cost of one iteration on a quiet core (at most 1.5)")
    ap.add_argument("--samplerate", type=_samplerate, default=48000)
    ap.add_argument("--blocksize", type=block_frames, default=128)
    ap.add_argument("--json", action="store_true")
    return ap


def main(argv=None) -> int:
    from realtime.engine.config import EngineConfig
    from realtime.engine.rt_os import set_realtime_priority

    a = get_parser().parse_args(argv)
    x = np.random.default_rng(0).random(4096)
    fixed_work(x, 1)
    t0 = time.perf_counter()
    fixed_work(x, 200)
    reps = max(1, int(a.work_ms * 1e-3 / ((time.perf_counter() - t0) / 200)))
    realtime = set_realtime_priority(EngineConfig().realtime_priority)
    period = a.blocksize / a.samplerate
    n_max = int(a.seconds / period) + 1
    wall = np.zeros(n_max, np.int64)
    cpu = np.zeros(n_max, np.int64)
    perf, thread = time.perf_counter_ns, time.thread_time_ns
    n = 0
    steal0 = cpu_steal_ms()
    due = time.perf_counter()
    end = due + a.seconds
    try:
        while n < n_max and (n == 0 or time.perf_counter() < end):  # one at least: figures of none fail
            w0, c0 = perf(), thread()
            fixed_work(x, reps)
            wall[n], cpu[n] = perf() - w0, thread() - c0
            n += 1
            due += period
            rest = due - time.perf_counter()
            if rest > 0:
                time.sleep(rest)
            else:  # overran a period: start the next one now, like a DSP thread catching up
                due = time.perf_counter()
    finally:
        if realtime:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    w, c = wall[:n] * 1e-6, cpu[:n] * 1e-6
    rec = {"bench": "jitter", "seconds": a.seconds, "realtime": realtime, "period_ms": 1e3 * period,
           "iterations": n, "work_ms_p50": float(np.median(w)), "work_ms_p99": float(np.percentile(w, 99)),
           "work_ms_max": float(w.max()), "cpu_ms_of_max": float(c[np.argmax(w)]),
           "cpu_steal_ms": cpu_steal_ms() - steal0}  # the whole VM's, while it ran: a late period may be that
    for thr in (2, 3, 5):
        rec[f"over_{thr}ms"] = int((w > thr).sum())
        rec[f"cpu_over_{thr}ms"] = int((c > thr).sum())
    emit(rec, a.json)
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
