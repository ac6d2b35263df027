"""Whose native code runs now, on which thread: what a crash of the process is put down to.

A hosted plugin that segfaults takes its process with it, and the Python stack it leaves says where
in the host that happened, not which plugin. So each plugin instance takes a row in a small table
here with its label (the plugin's name and URI), and each thread that calls a plugin's code marks
that row in a slot of its own while the call runs, with what it is doing (``DSP``: ``run()``;
``CONTROL``: made, restored, (de)activated, freed; ``WORKER``: its worker's ``work()``). Marks are
plain stores into the thread's slot: no lock, no allocation after a thread's first mark, so the DSP
thread makes them per block; and a mark is one thread's own, so another thread's call never
clears or overwrites it.

The marks live in this process's memory unless ``use`` puts them in a shared-memory segment: the
panel's engine process does, so that the window, which outlives it, reads them after the death
(``read``). The segment also has room for faulthandler's report of the fatal signal
(``report_to``): its "Current thread" line says which thread crashed, so the crash is put down to
that thread's mark, not to another plugin that happened to be playing meanwhile.
"""
from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager

import numpy as np

DSP, CONTROL, WORKER = range(3)
DOING = ("while it processed audio", "while it was made, restored or freed", "in its worker thread")
ROWS = 64  # instances at once that can be named (one more is hosted as well, unnamed)
LABEL_BYTES = 240
SLOTS = 64  # threads at once that can mark (the DSP thread, the command and rescue threads, workers)
_SLOT_BYTES = SLOTS * 3 * 8  # per slot: the thread's ident, what it does, the row (0: none)
REPORT_BYTES = 1 << 18  # (every thread's stack: 100 frames each at most)
REPORT_AT = _SLOT_BYTES + ROWS * LABEL_BYTES
SIZE = REPORT_AT + REPORT_BYTES

_lock = threading.Lock()  # for taking rows and slots; the DSP thread takes it once, at its first mark
_local = threading.local()


def _views(buf):
    mem = np.ndarray((SIZE,), np.uint8, buffer=buf)
    return (mem[:_SLOT_BYTES].view(np.int64).reshape(SLOTS, 3),
            mem[_SLOT_BYTES:REPORT_AT].reshape(ROWS, LABEL_BYTES))


def _flat_view(slots: np.ndarray) -> memoryview:
    """The slots as one memoryview of int64 (thread i's doing and row at 3i + 1, 3i + 2): its items
    are read and written in a third of a numpy scalar's time, and the DSP thread marks twice a block
    per hosted plugin."""
    return memoryview(slots.reshape(-1).view(np.uint8)).cast("q")


_slots, _labels = _views(bytearray(SIZE))
_flat = _flat_view(_slots)
_taken = [False] * ROWS
_generation = 0  # a ``use`` makes every thread take a slot again


def use(buf) -> None:
    """Keep the table and marks in ``buf`` (``SIZE`` bytes, e.g. a shared-memory segment's) from
    now on, or in memory of this process's own (None: the segment may then be closed); cleared.
    Before any instance takes a row (the engine process's start) and after the last is freed."""
    global _slots, _labels, _flat, _generation
    with _lock:
        slots, labels = _views(bytearray(SIZE) if buf is None else buf)
        slots[:] = 0
        labels[:] = 0
        old, _flat = _flat, _flat_view(slots)
        old.release()  # (a segment's memory with a view left on it could not be closed)
        _slots, _labels = slots, labels
        _taken[:] = [False] * ROWS
        _generation += 1


def report_to(path: str) -> object | None:
    """Have faulthandler write its report of a fatal signal (every thread's stack) into the report
    room of the segment that is the file ``path`` (``/dev/shm/NAME``), where ``read`` finds the
    thread that crashed. Returns the open file (keep it), or None where that file cannot be opened."""
    import faulthandler

    try:
        f = open(path, "r+b", buffering=0)
        f.seek(REPORT_AT)
    except OSError:
        return None
    faulthandler.enable(f, all_threads=True)
    return f


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


def _slot() -> int:
    """This thread's slot (taken at its first mark: one whose thread has ended is taken again)."""
    mine = getattr(_local, "slot", None)
    if mine is not None and mine[0] == _generation:
        return mine[1]
    ident = threading.get_ident()
    with _lock:
        alive = {t.ident for t in threading.enumerate()}
        free = [i for i in range(SLOTS) if _slots[i, 0] == ident or _slots[i, 0] not in alive]
        i = free[0] if free else -1
        if i >= 0:
            _slots[i] = (ident, 0, 0)
        _local.slot = (_generation, i)
    return i


def mark(doing: int, row: int) -> tuple[int, int]:
    """Mark ``row``'s code as running on this thread, ``doing`` it (0: none); the mark before."""
    i = _slot()
    if i < 0:
        return 0, 0
    flat, k = _flat, 3 * i
    try:
        before = flat[k + 1], flat[k + 2]
        flat[k + 1] = doing
        flat[k + 2] = row
    except ValueError:  # a ``use`` released this view meanwhile (outside every plugin's life: never meant to)
        return 0, 0
    return before


@contextmanager
def inside(row: int, doing: int = CONTROL):
    """Mark ``row`` on this thread for the block's length (its mark before comes back after)."""
    before = mark(doing, row)
    try:
        yield
    finally:
        mark(*before)


def read(buf) -> tuple[list[tuple[str, str]], bool]:
    """What ran when the process that kept its marks in ``buf`` died: ``(sites, sure)``, sites a
    list of (label, what it was doing). ``sure``: the report of the fatal signal named the thread
    that crashed and it had a mark (the list is that one mark); else every thread's mark."""
    slots, labels = _views(buf)
    found = re.search(r"Current thread (0x[0-9a-fA-F]+)", report_text(buf))
    crashed = int(found.group(1), 16) if found else None

    def named(i: int) -> tuple[str, str]:
        row, doing = int(slots[i, 2]), int(slots[i, 1])
        text = bytes(labels[row - 1]).split(b"\0", 1)[0].decode("utf-8", "replace")
        return text or "a plugin", DOING[doing] if 0 <= doing < len(DOING) else "while it ran"

    marked = [i for i in range(SLOTS) if 1 <= slots[i, 2] <= ROWS]
    mine = [i for i in marked if crashed is not None and int(slots[i, 0]) == crashed]
    if mine:
        return [named(mine[0])], True
    return [named(i) for i in sorted(marked, key=lambda i: int(slots[i, 1]))], False


def report_text(buf) -> str:
    """faulthandler's report in ``buf`` (``report_to``), '' when there is none."""
    mem = np.ndarray((SIZE,), np.uint8, buffer=buf)
    return bytes(mem[REPORT_AT:]).split(b"\0", 1)[0].decode("utf-8", "replace")


def shm_file(name: str) -> str:
    """The file of shared-memory segment ``name`` (Linux: under /dev/shm)."""
    return os.path.join("/dev/shm", name.lstrip("/"))
