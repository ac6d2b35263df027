"""Helpers the benchmarks share: how a figure is printed, how the GIL is held on purpose."""
from __future__ import annotations

import ctypes
import json
import math
import os

from realtime.argtypes import positive

# --blocksize of the benchmarks: 1 frame up to main.py's largest block (a buffer of 1e11 frames was a
# MemoryError traceback)
block_frames = positive(int, most=65536)


def jack_server_at(samplerate: int, period: int, rescan: bool = True):
    """A dummy JACK server at ``samplerate`` and ``period`` for a benchmark: a private one, or the one
    already running when it runs at that period (the caller stops a private one). One that runs at
    another period is refused: the figures were its period's, printed as ``--blocksize``'s (a 1024
    server's 53 ms of latency reported for 128 frames)."""
    from realtime.errors import AudioDeviceError
    from realtime.io.jackio import server_period
    from realtime.io.jackserver import ensure_server

    server = ensure_server(samplerate, period, rescan=rescan)
    if server is None:
        running = server_period()
        if running is not None and running != period:
            raise AudioDeviceError(f"a JACK server already runs at a period of {running} frames: --blocksize {period} "
                                   f"would be measured at {running}; stop that server or give --blocksize {running}")
    return server


def emit(obj: dict, as_json: bool) -> None:
    """Print one record: a JSON line, or ``key=value`` pairs for a person.

    Parameters
    ----------
    obj : dict
        The figures of one measurement (JSON-serialisable values).
    as_json : bool
        True for one JSON object per line (what scripts and tests read); False for
        ``key=value`` pairs with floats to four significant digits.
    """
    if as_json:
        print(json_line(obj), flush=True)
    else:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in obj.items()), flush=True)


def json_line(obj) -> str:
    """``obj`` as strict JSON: a figure that is not a number (NaN, ±inf: nothing was measured) is
    null. json.dumps wrote NaN, which JSON readers refuse."""
    return json.dumps(_finite(obj), allow_nan=False)


def _finite(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def cpu_steal_ms() -> float:
    """Milliseconds of CPU time stolen by the hypervisor, all CPUs, since boot (Linux; 0 elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()  # cpu user nice system idle iowait irq softirq steal …
        return 1000.0 * int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def hold_gil(ms: float) -> None:
    """Hold the GIL for ``ms`` milliseconds: a C call made through PyDLL never releases it.

    Parameters
    ----------
    ms : float
        How long to hold it, in milliseconds.
    """
    ctypes.PyDLL(None).usleep(int(ms * 1000))
