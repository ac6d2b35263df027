"""The control plane's rings (``realtime.engine.control.RING_SPECS``) in shared memory, and the
segment of the engine process's crash-site marks (``realtime.io.crash_site``, key ``CRASH_SITE``)."""
from __future__ import annotations

from multiprocessing import shared_memory

import numpy as np

from realtime.engine.control import RING_SPECS, ControlRings
from realtime.io import crash_site

CRASH_SITE = "crash_site"


def create_rings() -> tuple[ControlRings, dict[str, str], list[shared_memory.SharedMemory]]:
    """New zeroed segments: (rings, segment name per ring and for ``CRASH_SITE``, segments). The
    creator unlinks them."""
    shms = {k: shared_memory.SharedMemory(create=True, size=spec.nbytes) for k, spec in RING_SPECS.items()}
    shms[CRASH_SITE] = shared_memory.SharedMemory(create=True, size=crash_site.SIZE)
    zero_rings(shms.values())
    return (ControlRings({k: s.buf for k, s in shms.items() if k in RING_SPECS}), {k: s.name for k, s in shms.items()},
            list(shms.values()))


def zero_rings(shms) -> None:
    """Every ring in these segments empty again (nobody may produce or consume meanwhile)."""
    for shm in shms:
        np.ndarray((shm.size,), np.uint8, buffer=shm.buf)[:] = 0


def attach_rings(names: dict[str, str]) -> tuple[ControlRings, list[shared_memory.SharedMemory]]:
    """The segments another process created: (rings, segments to close)."""
    shms = {k: shared_memory.SharedMemory(name=names[k]) for k in RING_SPECS}
    return ControlRings({k: s.buf for k, s in shms.items()}), list(shms.values())
