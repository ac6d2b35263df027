"""argparse types the command lines share (main.py, the trainers, the recipes, the benchmarks):
a bad number or name is argparse's one usage line, not a traceback deep inside a run."""
from __future__ import annotations

import argparse
import math


def positive(cast=float, zero: bool = False, most: float | None = None):
    """An argparse ``type``: ``cast(text)`` (int or float), refused unless finite and > 0 (>= 0 with
    ``zero``) and at most ``most``, so a bad number is one usage line, not a traceback deep inside a
    run (a buffer of 1e9 seconds, a timer past its 32-bit milliseconds).

    Parameters
    ----------
    cast : type
        ``int`` or ``float``.
    zero : bool
        Accept 0 too (an "off" value or an offset).
    most : float, optional
        The largest value taken.
    """
    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            kind = "a whole number" if cast is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not (math.isfinite(v) and (v >= 0 if zero else v > 0)):
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if zero else '> 0'}, got {text}")
        if most is not None and v > most:
            raise argparse.ArgumentTypeError(f"must be at most {most:g}, got {text}")
        return v
    return parse


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, ``error: …``, exit status 2, like every
    other user error (the usage is what --help is for). Subcommands' parsers are of this class too
    (``add_subparsers`` makes them of their parent's class)."""

    def error(self, message):
        self.exit(2, f"error: {message}\n")


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


positive_int = positive(int)  # a batch, a step count, an interval
non_negative_int = positive(int, zero=True)  # worker processes, an offset, "0 = off"
positive_float = positive(float)  # a rate, a length, a time
