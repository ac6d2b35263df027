"""Whose native code runs now: what a crash of the process is put down to.

A hosted plugin that segfaults takes its process with it, and the Python stack it leaves says where
in the host that happened, not which plugin. So each plugin instance takes a row in a small table
here with its label (the plugin's name and URI), and the host marks the row whose code it calls, on
one of three sites: the DSP thread (``run()``), the threads that make, restore, (de)activate and
free instances (``CONTROL``) and the plugins' worker threads (``WORKER``). Marks are plain stores:
no lock, no allocation, so the DSP thread makes them per block. A mark left set when the process
died names the plugin.

The marks live in this process's memory unless ``use`` puts them in a shared-memory segment: the
panel's engine process does, so that the window, which outlives it, reads them after the death
(``read``).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

DSP, CONTROL, WORKER = range(3)
SITE_NAMES = ("while it played", "while it was made, restored or freed", "in its worker thread")
ROWS = 64  # instances at once that can be named (one more is hosted as well, unnamed)
LABEL_BYTES = 240
_HEAD = 8 * 4  # three int64 marks (row + 1; 0: none) and a spare
SIZE = _HEAD + ROWS * LABEL_BYTES

_lock = threading.Lock()  # for taking and giving back rows; never taken by the DSP thread


def _views(buf):
    mem = np.ndarray((SIZE,), np.uint8, buffer=buf)
    return mem[:_HEAD].view(np.int64), mem[_HEAD:].reshape(ROWS, LABEL_BYTES)


_marks, _labels = _views(bytearray(SIZE))
_taken = [False] * ROWS


def use(buf) -> None:
    """Keep the table and marks in ``buf`` (``SIZE`` bytes, e.g. a shared-memory segment's) from
    now on, or in memory of this process's own (None: the segment may then be closed); cleared.
    Before any instance takes a row (the engine process's start) and after the last is freed."""
    global _marks, _labels
    with _lock:
        marks, labels = _views(bytearray(SIZE) if buf is None else buf)
        marks[:] = 0
        labels[:] = 0
        _marks, _labels = marks, labels
        _taken[:] = [False] * ROWS


def take(label: str) -> int:
    """A row named ``label`` for one instance (1-based; 0 when every row is taken)."""
    raw = label.encode("utf-8", "replace")[:LABEL_BYTES - 1]
    with _lock:
        for i, used in enumerate(_taken):
            if not used:
                _taken[i] = True
                _labels[i] = 0
                _labels[i, :len(raw)] = np.frombuffer(raw, np.uint8)
                return i + 1
    return 0


def give_back(row: int) -> None:
    if row:
        with _lock:
            _taken[row - 1] = False


def mark(site: int, row: int) -> int:
    """Mark ``row``'s code as running on ``site`` (0: none); the mark before."""
    before = int(_marks[site])
    _marks[site] = row
    return before


@contextmanager
def inside(row: int, site: int = CONTROL):
    """Mark ``row`` on ``site`` for the block's length (the mark before comes back after)."""
    before = mark(site, row)
    try:
        yield
    finally:
        _marks[site] = before


def read(buf) -> list[tuple[str, str]]:
    """What ran when the process that kept its marks in ``buf`` died: (label, what it was doing)
    for each site marked, the DSP thread first."""
    marks, labels = _views(buf)
    out = []
    for site in (DSP, CONTROL, WORKER):
        row = int(marks[site])
        if 1 <= row <= ROWS:
            text = bytes(labels[row - 1]).split(b"\0", 1)[0].decode("utf-8", "replace")
            out.append((text or "a plugin", SITE_NAMES[site]))
    return out
