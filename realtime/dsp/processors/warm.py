"""Load every processor kind's code before the stream plays, so the first one a user adds while it
plays does not stall it.

The first processor of a kind in a process imports its module (the enhancer's: scipy.signal and
ONNX Runtime, ~0.7 s) and loads its Numba kernels from the cache (or compiles them, seconds, on a
fresh install). Much of that holds the GIL in C for 10-40 ms at a time (an extension module's
initialisation, unmarshalling large modules), which the DSP thread needs between blocks: done while
a chain plays, the first enhancer added cost a dozen late blocks. ``warm_up_kinds`` builds a default
instance of each kind once, prepares it at the stream's settings, runs one block of silence through
it and closes it, while nothing plays yet.
"""
from __future__ import annotations

import numpy as np

from realtime.dsp.processors import available_kinds, processor_class


def warm_up_kinds(sample_rate: float, max_block: int, channels: int, kinds=None, stop=None) -> dict[str, str]:
    """Build, prepare, run one silent block through and close one default instance of each of
    ``kinds`` (default: every available kind). Returns kind -> why it could not be warmed (a kind
    whose model or library is broken says so itself when a slot asks for it; nothing is raised).
    ``stop`` (a ``threading.Event``): when set, the kinds not begun yet are left cold."""
    failed = {}
    for kind in available_kinds() if kinds is None else kinds:
        if stop is not None and stop.is_set():
            break
        proc = None
        try:
            proc = processor_class(kind)()
            proc.prepare(sample_rate, max_block, channels)
            proc.process(np.zeros((max_block, channels), np.float32))
        except Exception as e:  # noqa: BLE001 - a warm-up never fails the engine
            failed[kind] = f"{type(e).__name__}: {e}"
        finally:
            if proc is not None:
                try:
                    proc.close()
                except Exception as e:  # noqa: BLE001
                    failed.setdefault(kind, f"{type(e).__name__}: {e}")
    return failed
