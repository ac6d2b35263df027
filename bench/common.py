"""Helpers the benchmarks share: how a figure is printed, how the GIL is held on purpose."""
from __future__ import annotations

import ctypes
import json
import os


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
        print(json.dumps(obj), flush=True)
    else:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in obj.items()), flush=True)


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
