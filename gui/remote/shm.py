"""The control plane's rings (``realtime.engine.control.RING_SPECS``) in shared memory, and the
segment of the engine process's crash-site marks (``realtime.io.crash_site``, key ``CRASH_SITE``)."""
from __future__ import annotations

import errno
import os
from multiprocessing import shared_memory

import numpy as np

from realtime.engine.control import RING_SPECS, ControlRings
from realtime.errors import EngineError
from realtime.io import crash_site

CRASH_SITE = "crash_site"


def create_rings() -> tuple[ControlRings, dict[str, str], list[shared_memory.SharedMemory]]:
    """New zeroed segments: (rings, segment name per ring and for ``CRASH_SITE``, segments). The
    creator unlinks them.

    Raises
    ------
    EngineError
        No room for them in shared memory (``/dev/shm`` full, or small as a container's can be):
        none is left behind.
    """
    sizes = {**{k: spec.nbytes for k, spec in RING_SPECS.items()}, CRASH_SITE: crash_site.SIZE}
    total = sum(sizes.values())
    shms: dict[str, shared_memory.SharedMemory] = {}
    try:
        for k, size in sizes.items():
            shms[k] = shared_memory.SharedMemory(create=True, size=size)
            _reserve(shms[k], total)
    except BaseException:
        for s in shms.values():
            s.close()
            s.unlink()
        raise
    zero_rings(shms.values())
    return (ControlRings({k: s.buf for k, s in shms.items() if k in RING_SPECS}), {k: s.name for k, s in shms.items()},
            list(shms.values()))


def _reserve(shm: shared_memory.SharedMemory, total: int) -> None:
    """Give ``shm`` its memory now: a segment is created sparse, and a page that a full ``/dev/shm``
    cannot back kills the first process that touches it (SIGBUS: the window, zeroing it)."""
    path = crash_site.shm_file(shm.name)
    if not hasattr(os, "posix_fallocate") or not os.path.exists(path):  # (no /dev/shm to ask: as before)
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, shm.size)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.ENOMEM):  # (a file system that cannot say: as before)
            return
        raise EngineError(f"no room in shared memory (/dev/shm) for the engine process's rings "
                          f"({-(-total // 1024)} kB): {e.strerror}") from None
    finally:
        os.close(fd)


def zero_rings(shms) -> None:
    """Every ring in these segments empty again (nobody may produce or consume meanwhile)."""
    for shm in shms:
        np.ndarray((shm.size,), np.uint8, buffer=shm.buf)[:] = 0


def attach_rings(names: dict[str, str]) -> tuple[ControlRings, list[shared_memory.SharedMemory]]:
    """The segments another process created: (rings, segments to close)."""
    shms = {k: shared_memory.SharedMemory(name=names[k]) for k in RING_SPECS}
    return ControlRings({k: s.buf for k, s in shms.items()}), list(shms.values())
