"""The DSP thread's context-switch counter: real getrusage(RUSAGE_THREAD) counts."""
import threading
import time

import numpy as np
import pytest

from realtime.engine.rt_os import SwitchCounter


@pytest.mark.skipif(not SwitchCounter().available, reason="getrusage(RUSAGE_THREAD) is Linux-only")
def test_a_sleep_inside_the_block_is_a_context_switch():
    sc, out = SwitchCounter(), np.full(3, 99, np.int64)
    sc.before()
    time.sleep(0.005)  # the thread gives up the CPU: a voluntary switch
    sc.after()
    sc.store(1, out)
    assert out[1] >= 1 and out[0] == 99 and out[2] == 99


def test_counts_are_per_thread_and_unknown_is_minus_one():
    """Another thread sleeping does not count in this one; without the counters, -1 (unknown)."""
    sc, out = SwitchCounter(), np.zeros(2, np.int64)
    sleeper = threading.Thread(target=lambda: [time.sleep(0.001) for _ in range(20)])
    sc.before()
    sleeper.start()
    sleeper.join()  # this thread blocks once or so here; the sleeper's 20 sleeps are not counted
    sc.after()
    sc.store(0, out)
    assert out[0] < 20 if sc.available else out[0] == -1
    sc._fn, sc.available = None, False
    sc.before()
    sc.after()
    sc.store(1, out)
    assert out[1] == -1
