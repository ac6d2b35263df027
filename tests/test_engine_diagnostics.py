"""Late-block attribution and the DSP thread's OS counters, fed records as the engine writes
them (no audio server needed)."""
import mmap
import threading

import numpy as np
import pytest

from realtime.engine import callback as cb
from realtime.engine.diagnostics import Diagnostics
from realtime.engine.rt_os import thread_page_faults

SR, B = 48000, 128


def test_late_blocks_after_a_server_stall_are_not_counted_as_ours():
    """The attribution itself, fed timing records as the callback writes them: a late block
    with regular callbacks before it is ours; one within prefill + 1 callbacks of a delayed
    (or bunched, or xrun-flagged) callback is the server's."""
    diag = Diagnostics(SR, B, prefill_blocks=2)
    period = round(1e9 * B / SR)
    t, recs = 10**9, []

    def rec(gap=1.0, late=False, flags=0):
        nonlocal t
        t += round(gap * period)
        recs.append((t, 20_000, B, flags | (cb.LATE_FLAG if late else 0)))

    for _ in range(10):
        rec()
    rec(late=True)  # 1: ours
    for _ in range(10):
        rec()
    rec(gap=3.0)  # the server stalled for two periods ...
    rec(gap=0.1)  # ... and catches up
    rec(late=True)  # 2: the server's (1 after the bunched one)
    rec(late=True)  # 3: the server's (window 4 = prefill 2 + 2 reaches the stall)
    for _ in range(10):
        rec()
    rec(late=True, flags=4)  # 4: output underflow flagged by PortAudio: the server's
    for _ in range(10):
        rec()
    rec(late=True)  # 5: ours
    half = len(recs) // 2  # two monitor passes: the window spans the boundary
    for chunk in (recs[:half], recs[half:]):
        diag.add_callbacks(np.array(chunk, np.int64))
    diag.explain_pending(force=True)  # no DSP blocks recorded: nothing was stolen
    assert diag.late_blocks_ours == 2 and diag.late_blocks_stolen == 0
    assert diag.delayed_callbacks == 1


def _record_blocks(diag, blocks):
    """Write (start ns, wall µs, CPU µs, context switches) per block as the DSP thread does."""
    for i, (t0, wall, cpu, switches) in enumerate(blocks):
        diag.dsp_t0[i], diag.dsp_us[i], diag.dsp_cpu_us[i], diag.dsp_switches[i] = t0, wall, cpu, switches
    diag.dsp_n = len(blocks)


@pytest.mark.parametrize("cpu_us, switches, cause", [
    (900, 0, "stolen"),     # 20 ms of wall, under 1 ms of CPU, never switched out: the hypervisor's
    (900, 1, "ours"),       # switched out (a GIL wait, a preemption): ours, we cannot tell which
    (19_500, 0, "ours"),    # on the CPU all along: our work
    (900, -1, "ours"),      # switch counts unknown on this platform: ours
])
def test_a_late_block_is_put_down_to_the_hypervisor_only_with_evidence(cpu_us, switches, cause):
    diag = Diagnostics(SR, B, prefill_blocks=2)
    period = round(1e9 * B / SR)
    t = 10**9
    blocks = [(t + k * period, 800.0, 790.0, 0) for k in range(10)]
    stall0 = t + 10 * period
    blocks.append((stall0, 20_000.0, cpu_us, switches))  # one block of 20 ms
    blocks += [(stall0 + 20_000_000 + k * 200_000, 800.0, 790.0, 0) for k in range(5)]  # catching up
    _record_blocks(diag, blocks)
    diag.late_pending = [stall0 + 12_000_000,  # during the stalled block
                         stall0 + 200_000_000]  # long after it, regular blocks only: ours
    diag.explain_pending(force=True)
    during, after = diag.late_context
    assert during["cause"] == cause and after["cause"] == "ours"
    assert (diag.late_blocks_stolen, diag.late_blocks_ours) == ((1, 1) if cause == "stolen" else (0, 2))
    assert during["slowest_block_ms"] == pytest.approx(20.0) and during["slowest_block_switches"] == switches
    if cause == "stolen":  # of its 19.1 ms off the CPU, 8 ms may lie after the callback: 11.1 before
        assert during["stolen_ms"] == pytest.approx(11.1, abs=0.01)


def test_thread_page_faults_count_this_threads_first_touches():
    tid = threading.get_native_id()
    minor0, major0 = thread_page_faults(tid)
    fresh = mmap.mmap(-1, 8 << 20)  # 8 MiB of fresh anonymous pages (malloc might reuse touched ones)
    buf = np.frombuffer(fresh, np.uint8)
    buf[:] = 1  # each page touched once
    minor1, major1 = thread_page_faults(tid)
    assert minor1 - minor0 >= 0.9 * buf.nbytes / 4096 / 512  # even with 2 MiB huge pages
    assert major1 >= major0 >= 0
    other = threading.Thread(target=lambda: np.frombuffer(mmap.mmap(-1, 8 << 20), np.uint8).fill(1))
    other.start()
    other.join()
    assert thread_page_faults(tid)[0] - minor1 < 64  # another thread's touches are not ours
    assert thread_page_faults(2**22 + 12345) == (0, 0)  # no such thread: unknown, not an error
