import threading
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from realtime.engine.ring import Ring, ring_pop, ring_push, ring_readable


def test_capacity_must_be_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        Ring(100, 2)
    assert Ring.for_frames(100).capacity == 128


def test_push_stops_when_full_and_pop_when_empty():
    r = Ring(8, 2)
    src = np.arange(20, dtype=np.float32).reshape(10, 2)
    assert r.push(src) == 8
    assert r.writable() == 0 and r.readable() == 8
    dst = np.zeros((10, 2), np.float32)
    assert r.pop(dst) == 8
    np.testing.assert_array_equal(dst[:8], src[:8])
    assert r.pop(dst) == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=60))
def test_matches_a_fifo_model_across_wraparound(log2cap, ops):
    """Any sequence of pushes/pops behaves like a bounded FIFO (records intact, order kept)."""
    r = Ring(1 << log2cap, 3, np.float64)
    model: deque = deque()
    counter = 0
    for is_push, n in ops:
        if is_push:
            src = np.arange(counter, counter + n, dtype=np.float64)[:, None].repeat(3, 1)
            pushed = r.push(src)
            assert pushed == min(n, r.capacity - len(model))
            model.extend(range(counter, counter + pushed))
            counter += n
        else:
            dst = np.full((n, 3), -1.0)
            got = r.pop(dst)
            assert got == min(n, len(model))
            expect = [model.popleft() for _ in range(got)]
            np.testing.assert_array_equal(dst[:got, 0], expect)
            np.testing.assert_array_equal(dst[:got, 2], expect)
        assert r.readable() == len(model)
        assert r.writable() == r.capacity - len(model)


@njit(nogil=True)
def _produce(buf, idx, total, seed):
    np.random.seed(seed)
    chunk = np.zeros((64, buf.shape[1]), buf.dtype)
    sent = 0
    while sent < total:
        n = min(np.random.randint(1, 64), total - sent)
        for k in range(n):
            for c in range(buf.shape[1]):
                chunk[k, c] = sent + k
        sent += ring_push(buf, idx, chunk, n)


@njit(nogil=True)
def _consume(buf, idx, total, seed):
    np.random.seed(seed)
    chunk = np.zeros((64, buf.shape[1]), buf.dtype)
    got = 0
    errors = 0
    while got < total:
        n = ring_pop(buf, idx, chunk, np.random.randint(1, 64))
        for k in range(n):
            for c in range(buf.shape[1]):
                if chunk[k, c] != got + k:
                    errors += 1
        got += n
    return errors


@pytest.mark.parametrize("capacity", [16, 1024])
def test_two_threads_concurrently_lose_and_reorder_nothing(capacity):
    """A producer and a consumer thread, both in GIL-free kernels, stream 2M records."""
    total = 2_000_000
    r = Ring(capacity, 2, np.float64)
    result = {}
    prod = threading.Thread(target=_produce, args=(r.buf, r.idx, total, 1))
    cons = threading.Thread(target=lambda: result.setdefault("errors", _consume(r.buf, r.idx, total, 2)))
    cons.start()
    prod.start()
    prod.join(60)
    cons.join(60)
    assert not prod.is_alive() and not cons.is_alive()
    assert result["errors"] == 0
    assert ring_readable(r.idx) == 0


def test_record_helpers_carry_parameter_changes():
    r = Ring(4, 4, np.float64)
    for i in range(4):
        assert r.push_record(i, 2, 0.5 * i, 0)
    assert not r.push_record(9, 9, 9, 9)  # full: refused, not overwritten
    out = np.zeros((4, 4))
    assert r.pop(out) == 4
    np.testing.assert_array_equal(out[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(out[:, 2], [0, 0.5, 1.0, 1.5])


def test_callbacks_without_input_keep_the_latency_and_play_silence_in_their_place():
    """A duplex stream whose callback gets no input buffer (PortAudio's input underflow) pushes
    silence in its place, as the callback does: the chain stays in step, the latency stays where it
    was and no block is late. (Before, nothing was pushed: each such callback took one block of the
    prefill away for good, and after as many as the prefill held every callback came up short and
    the output stayed silent.)"""
    from realtime.engine import callback as cb
    from realtime.engine.ring import ring_push_silence

    B, C, prefill = 128, 2, 2
    inp = Ring.for_frames(B * 32, C)
    out = Ring.for_frames(inp.capacity + B * (prefill + 1), C)
    stats = np.zeros(cb.ST_SIZE, np.int64)
    out.push(np.zeros((B * prefill, C), np.float32))
    dst, blk = np.zeros((B, C), np.float32), np.zeros((B, C), np.float32)
    missing = (10, 20, 21, 22, 30)  # more in a row than the prefill holds
    for k in range(40):
        if k in missing:
            pushed = ring_push_silence(inp.buf, inp.idx, B)
        else:  # block k carries (k + 1) / 64 (under the output's clamp)
            pushed = inp.push(np.full((B, C), (k + 1) / 64, np.float32))
        if pushed < B:
            cb.count_missing_input(B - pushed, stats, True)
        cb.fill_output(out.buf, out.idx, dst, B, stats, True)
        j = k - prefill  # the same latency throughout: block k - prefill comes out now
        want = 0.0 if j < 0 or j in missing else np.float32((j + 1) / 64)
        assert np.all(dst == want), k
        while inp.readable() >= B:  # the DSP thread
            inp.pop(blk)
            out.push(blk)
    assert stats[cb.ST_LATE_BLOCKS] == 0 and stats[cb.ST_IN_DROPPED] == 0 and stats[cb.ST_SKIP_DEBT] == 0
    # a full input ring takes what fits and says so
    full = Ring(4, C)
    assert ring_push_silence(full.buf, full.idx, 3) == 3 and ring_push_silence(full.buf, full.idx, 3) == 1
    got = np.ones((4, C), np.float32)
    assert full.pop(got) == 4 and not got.any()


def test_an_output_only_stream_plays_again_as_soon_as_a_stall_ends():
    """Output-only (a synth, --mode output): a stall of S periods is S periods of silence and S
    late blocks, and the blocks rendered after it play at once. (The duplex skip debt, applied here
    too, discarded as much again after every stall: ~2S periods of silence, late blocks doubled.)"""
    from realtime.engine import callback as cb

    B, C, prefill = 128, 2, 2
    out = Ring.for_frames(B * (prefill + 4), C)
    stats = np.zeros(cb.ST_SIZE, np.int64)
    dst, blk = np.zeros((B, C), np.float32), np.zeros((B, C), np.float32)
    stall = range(10, 30)
    silent, rendered = 0, 0
    for k in range(60):
        if k not in stall:  # the DSP thread refills up to the pre-fill, as engine.py's loop does
            while out.readable() < prefill * B:
                rendered += 1
                blk[:] = 0.25
                out.push(blk)
        cb.fill_output(out.buf, out.idx, dst, B, stats, False)
        silent += not dst.any()
    covered = prefill - 1  # what the last refill left after its own period: the stall's first periods
    assert silent == len(stall) - covered
    assert stats[cb.ST_LATE_BLOCKS] == len(stall) - covered and stats[cb.ST_SKIP_DEBT] == 0
