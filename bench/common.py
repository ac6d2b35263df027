"""Helpers the benchmarks share: how a figure is printed, how the GIL is held on purpose, how numbers
and lists on their command lines are checked."""
from __future__ import annotations

import argparse
import ctypes
import json
import math


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


def hold_gil(ms: float) -> None:
    """Hold the GIL for ``ms`` milliseconds: a C call made through PyDLL never releases it.

    Parameters
    ----------
    ms : float
        How long to hold it, in milliseconds.
    """
    ctypes.PyDLL(None).usleep(int(ms * 1000))


def positive(cast=float, zero: bool = False):
    """An argparse ``type``: ``cast(text)`` (int or float), refused unless finite and > 0 (>= 0 with
    ``zero``), so a bad number is one usage line, not a traceback deep in the benchmark.

    Parameters
    ----------
    cast : type
        ``int`` or ``float``.
    zero : bool
        Accept 0 too (an "off" value or an offset).
    """
    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            kind = "a whole number" if cast is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not (math.isfinite(v) and (v >= 0 if zero else v > 0)):
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if zero else '> 0'}, got {text}")
        return v
    return parse


def comma_list(item=str, choices=None, empty: bool = False):
    """An argparse ``type``: a comma-separated list, each part ``item(part)`` (e.g. ``positive(int)``,
    ``float``) and, with ``choices``, one of them; a list that names nothing is refused unless ``empty``.

    Returns
    -------
    callable
        text -> list (empty parts, as in ``a,,b`` or a trailing comma, are left out).
    """
    def parse(text: str) -> list:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts and not empty:
            raise argparse.ArgumentTypeError(f"names nothing: {text!r}")
        out = []
        for p in parts:
            if choices is not None and p not in choices:
                raise argparse.ArgumentTypeError(f"unknown {p!r}; one of: {', '.join(choices)}")
            try:
                v = item(p)
            except ValueError:  # a plain int / float; positive() says its own
                raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {p!r}") from None
            if isinstance(v, float) and not math.isfinite(v):
                raise argparse.ArgumentTypeError(f"expected finite numbers, got {p!r}")
            out.append(v)
        return out
    return parse
