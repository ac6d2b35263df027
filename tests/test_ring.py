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
