"""Single-producer/single-consumer lock-free ring of fixed-width records.

One type carries audio frames (width = channels, float32), parameter changes, MIDI events and
meter readings (float64 records). Storage is a (capacity, width) numpy array with a power-of-two
capacity; indices are monotonically increasing int64 counters (never wrap in practice: 2**63
frames is millions of years) masked into the storage. The write index is owned by the producer,
the read index by the consumer; they sit 64 bytes apart to avoid false sharing. See
``realtime.engine.atomics`` for the memory-ordering argument.

The kernels are plain ``@njit`` functions so both Python threads (GIL released inside) and the
compiled PortAudio callback call the same code.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from realtime.engine.atomics import load_acquire, store_release

WRITE = 0  # producer-owned index slot
READ = 8  # consumer-owned index slot (64 bytes later)


@njit(nogil=True, cache=True)
def ring_readable(idx):
    return load_acquire(idx, WRITE) - load_acquire(idx, READ)


@njit(nogil=True, cache=True)
def ring_writable(buf, idx):
    return buf.shape[0] - (load_acquire(idx, WRITE) - load_acquire(idx, READ))


@njit(nogil=True, cache=True)
def ring_push(buf, idx, src, count):
    """Append up to ``count`` records from ``src``; return how many fitted."""
    cap = buf.shape[0]
    mask = cap - 1
    w = idx[WRITE]  # our own index: a plain load is exact
    r = load_acquire(idx, READ)
    n = min(count, cap - (w - r))
    width = buf.shape[1]
    for k in range(n):
        pos = (w + k) & mask
        for c in range(width):
            buf[pos, c] = src[k, c]
    store_release(idx, WRITE, w + n)
    return n


@njit(nogil=True, cache=True)
def ring_push_silence(buf, idx, count):
    """Append up to ``count`` zero records; return how many fitted."""
    cap = buf.shape[0]
    mask = cap - 1
    w = idx[WRITE]
    n = min(count, cap - (w - load_acquire(idx, READ)))
    for k in range(n):
        pos = (w + k) & mask
        for c in range(buf.shape[1]):
            buf[pos, c] = 0.0
    store_release(idx, WRITE, w + n)
    return n


@njit(nogil=True, cache=True)
def ring_pop(buf, idx, dst, count):
    """Remove up to ``count`` records into ``dst``; return how many were read."""
    mask = buf.shape[0] - 1
    r = idx[READ]
    w = load_acquire(idx, WRITE)
    n = min(count, w - r)
    width = buf.shape[1]
    for k in range(n):
        pos = (r + k) & mask
        for c in range(width):
            dst[k, c] = buf[pos, c]
    store_release(idx, READ, r + n)
    return n


@njit(nogil=True, cache=True)
def ring_discard(buf, idx, count):
    """Drop up to ``count`` records without reading them (consumer side)."""
    r = idx[READ]
    n = min(count, load_acquire(idx, WRITE) - r)
    store_release(idx, READ, r + n)
    return n


@njit(nogil=True, cache=True)
def ring_push_value(buf, idx, a, b, c, d):
    """Push one record of up to four scalars (parameter changes, MIDI events)."""
    cap = buf.shape[0]
    w = idx[WRITE]
    if w - load_acquire(idx, READ) >= cap:
        return 0
    pos = w & (cap - 1)
    width = buf.shape[1]
    buf[pos, 0] = a
    if width > 1:
        buf[pos, 1] = b
    if width > 2:
        buf[pos, 2] = c
    if width > 3:
        buf[pos, 3] = d
    store_release(idx, WRITE, w + 1)
    return 1


class TapGaps:
    """Where frames pushed into a ring were dropped for want of room (its reader, a recorder, behind
    a disk that could not keep up): (the ring's write count after the push, frames dropped), added
    by the one pushing thread, taken by the one popping thread, which puts that much silence there:
    the take keeps its timing (it was shorter by what was lost, drifting against other recordings).
    A full log (``CAPACITY`` gaps not yet taken) counts the rest in ``unplaced``."""

    CAPACITY = 8192  # one gap a block: a 5 s stall at 128 frames (48 kHz) is 1,900; 128 KiB

    def __init__(self):
        self.buf = np.zeros((self.CAPACITY, 2), np.int64)
        self.idx = np.zeros(2, np.int64)  # [added, taken]
        self.unplaced = 0

    def add(self, position: int, frames: int) -> None:
        added, taken = int(self.idx[0]), int(self.idx[1])
        if added - taken >= self.CAPACITY:
            self.unplaced += frames
            return
        self.buf[added % self.CAPACITY] = (position, frames)
        self.idx[0] = added + 1  # after the entry: the reader never sees it half written

    def next(self) -> tuple[int, int] | None:
        taken = int(self.idx[1])
        if taken == int(self.idx[0]):
            return None
        position, frames = self.buf[taken % self.CAPACITY]
        return int(position), int(frames)

    def take(self) -> None:
        self.idx[1] += 1


class Ring:
    """A lock-free SPSC ring. Exactly one thread may push and exactly one may pop. ``gaps`` (a
    ``TapGaps``, set by a reader that wants them) logs where a pusher that keeps going dropped
    what found no room."""

    gaps: "TapGaps | None" = None

    def __init__(self, capacity: int, width: int = 1, dtype=np.float32):
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity must be a power of two >= 2, got {capacity}")
        if width < 1:
            raise ValueError("ring width must be >= 1")
        self.buf = np.zeros((capacity, width), dtype=dtype)
        self.idx = np.zeros(16, dtype=np.int64)

    @classmethod
    def for_frames(cls, frames: int, width: int = 1, dtype=np.float32) -> "Ring":
        """Smallest power-of-two ring holding at least ``frames`` records."""
        return cls(1 << max(1, int(frames - 1).bit_length()), width, dtype)

    @property
    def capacity(self) -> int:
        return self.buf.shape[0]

    @property
    def width(self) -> int:
        return self.buf.shape[1]

    def readable(self) -> int:
        return int(ring_readable(self.idx))

    def writable(self) -> int:
        return int(ring_writable(self.buf, self.idx))

    def push(self, src: np.ndarray) -> int:
        return int(ring_push(self.buf, self.idx, src, src.shape[0]))

    def pop(self, dst: np.ndarray) -> int:
        return int(ring_pop(self.buf, self.idx, dst, dst.shape[0]))

    def discard(self, count: int) -> int:
        return int(ring_discard(self.buf, self.idx, count))

    def push_record(self, a=0.0, b=0.0, c=0.0, d=0.0) -> bool:
        # always float scalars: one compiled signature whatever the caller passes (ints, numpy
        # scalars), so the warm-up's compilation is the only one (see compile_record_push)
        return bool(ring_push_value(self.buf, self.idx, float(a), float(b), float(c), float(d)))

    @staticmethod
    def compile_record_push() -> None:
        """Compile push_record now, on a scratch ring: else the first knob move or MIDI note
        after start waits ~0.3 s for Numba (cold cache) and arrives late."""
        Ring(2, 4, np.float64).push_record(0, 0, 0, 0)

    def clear(self) -> None:
        """Consumer-side: drop everything currently readable."""
        self.discard(self.readable())
