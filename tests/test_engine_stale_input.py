"""After a stall of the DSP thread (the GIL held, a page fault, a model loading) the input that piled
up meanwhile was processed only for the callback to discard its output (skip debt): the silence
outlasted the stall by load / (1 - load) (80 % load: a 30-period stall, 112 periods more; 90 %: 549
after 100). The DSP thread now drops it unprocessed and the callback credits it, at the same latency.

Driven through the real compiled callback and the DSP thread's own drop, a period at a time, with a
chain costing ``load`` of a period per block: deterministic, no sound card or server."""
import numpy as np
import pytest
from numba import cfunc

from realtime.engine import callback as cb
from realtime.engine.config import EngineConfig
from realtime.engine.engine import Engine
from realtime.engine.ring import ring_pop, ring_push, ring_readable

from .jack_helpers import Identity

B, P = 128, 2


def _engine() -> Engine:
    """An engine wired as ``start`` wires it, at unity gain (no fade-in), with no stream."""
    e = Engine(Identity(), EngineConfig(blocksize=B, prefill_blocks=P))
    e._warm_up()
    e._stream = None
    e._wire_control_block()
    e.out_ring.push(np.zeros((B * P, e.config.channels), np.float32))
    e._ctl[cb.CTL_FADE_POS] = e._ctl[cb.CTL_FADE_LEN]
    e._ctl[cb.CTL_FADE_FROM] = 0
    return e


@pytest.fixture(scope="module")
def callback():
    if cb._compiled is None:
        cb._compiled = cfunc(cb._SIG, nopython=True, cache=False)(cb._audio_callback)
    return cb._compiled.ctypes


def _run(callback, load: float, stall: int, drop: bool, start=50, total=1200):
    """Periods late after the stall ends, and the round trip (frames) before and after it. The DSP
    side as ``Engine._dsp_blocks`` runs: the drop before each block it pops (a stall that begins
    inside the block loop resumes there: a drop only on a wake missed it, 112 periods late again)."""
    e = _engine()
    C = e.config.channels
    budget, late_after, k, lags = 0.0, 0, 0, []
    for i in range(total):
        x = np.zeros((B, C), np.float32)
        x[:, 0] = np.arange(k, k + B) / 1e6  # each frame says which one it is
        k += B
        y = np.zeros((B, C), np.float32)
        late = e.stats_arr[cb.ST_LATE_BLOCKS]
        callback(x.ctypes.data, y.ctypes.data, B, None, 0, e._ctl.ctypes.data)
        if y[-1, 0] > 0:
            lags.append((i, k - 1 - round(float(y[-1, 0]) * 1e6)))
        late_after += i >= start + stall and e.stats_arr[cb.ST_LATE_BLOCKS] != late
        if start <= i < start + stall:
            continue  # stalled
        budget = min(budget + 1.0 / load, 1.0 / load + 1)  # blocks the chain processes in a period
        while budget >= 1:
            if drop:
                cb.drop_stale_input(e.in_ring.buf, e.in_ring.idx, e.out_ring.idx, e.stats_arr, e._ctl, B)
            if ring_readable(e.in_ring.idx) < B:
                break
            ring_pop(e.in_ring.buf, e.in_ring.idx, e._block, B)
            ring_push(e.out_ring.buf, e.out_ring.idx, e._block, B)
            budget -= 1
    before = {lag for i, lag in lags if i < start}
    after = {lag for i, lag in lags[-100:]}
    return late_after, before, after, int(e.stats_arr[cb.ST_SKIP_DEBT])


@pytest.mark.parametrize("load, stall", [(0.5, 30), (0.8, 30), (0.9, 100), (0.3, 400)])
def test_after_a_stall_the_sound_comes_back_at_once_at_the_same_latency(callback, load, stall):
    late_after, before, after, debt = _run(callback, load, stall, drop=True)
    assert before == after == {B * P}  # the round trip of the pre-fill, before and after
    assert late_after <= 1 and debt == 0
    old_late, _, old_after, _ = _run(callback, load, stall, drop=False)  # processing the backlog
    assert old_after == {B * P} and old_late >= 20  # (at most the input ring: 64 blocks)


def test_no_drop_where_no_output_is_due_to_be_discarded(callback):
    """On time (no debt), or with a debt the output ring already holds: nothing is dropped."""
    e = _engine()
    x = np.zeros((B, e.config.channels), np.float32)
    ring_push(e.in_ring.buf, e.in_ring.idx, x, B)
    assert cb.drop_stale_input(e.in_ring.buf, e.in_ring.idx, e.out_ring.idx, e.stats_arr, e._ctl, B) == 0
    e.stats_arr[cb.ST_SKIP_DEBT] = B * P  # as much as the output ring holds (the pre-fill)
    assert cb.drop_stale_input(e.in_ring.buf, e.in_ring.idx, e.out_ring.idx, e.stats_arr, e._ctl, B) == 0
    e.stats_arr[cb.ST_SKIP_DEBT] = B * P + B  # one block more: its input goes
    assert cb.drop_stale_input(e.in_ring.buf, e.in_ring.idx, e.out_ring.idx, e.stats_arr, e._ctl, B) == B
    assert ring_readable(e.in_ring.idx) == 0
    ring_push(e.in_ring.buf, e.in_ring.idx, x, B)  # not credited yet: no second drop on the same debt
    assert cb.drop_stale_input(e.in_ring.buf, e.in_ring.idx, e.out_ring.idx, e.stats_arr, e._ctl, B) == -1
    cb.credit_stale_input(e._ctl, e.stats_arr)
    assert e.stats_arr[cb.ST_SKIP_DEBT] == B * P
