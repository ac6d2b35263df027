"""Every benchmark behind one registry; they print figures (JSON lines with ``--json``) and never assert.

    python main.py bench                 # list them
    python main.py bench NAME [ARGS …]   # run one; ``NAME --help`` for its options
    python -m bench.NAME [ARGS …]        # the same, without main.py

Each benchmark is a module of this package with its own ``get_parser()`` and ``main(argv)``; it
is imported only when it runs, so listing them loads neither the runtime nor Qt nor training code.
Benchmarks may import anything (the GUI, training recipes); the runtime (``realtime/``) never
imports them.
"""
from __future__ import annotations

import importlib
import sys

BENCHMARKS: dict[str, tuple[str, str]] = {
    "processor": ("bench.processor", "per-block cost of each processor alone: RTF, block time percentiles, latency"),
    "engine": ("bench.engine", "the live engine on a JACK dummy server: late blocks, xruns, DSP load, latency"),
    "jitter": ("bench.jitter", "how often this machine itself stretches fixed work: the floor under late blocks"),
    "synth": ("bench.synth", "DDSP synth: RTF per voice count, note-on latency, quality on held-out melodies"),
    "gui": ("bench.gui", "does the knob panel cost audio: late blocks and knob-to-DSP latency, window open"),
    "swap": ("bench.swap", "slots added, moved, removed while playing: silence and clicks, live swap vs restart"),
    "enhancer": ("bench.enhancer", "held-out sources: noisy vs our enhancer vs RNNoise vs DeepFilterNet3 (PESQ, STOI, SI-SDR, DNSMOS)"),
    "delimiter": ("bench.delimiter", "held-out music, unseen LV2 limiters, -6..-11 LUFS: SI-SDR gain vs oracle rows, RTF"),
    "batch": ("bench.batch", "batch throughput (audio s per wall s): voice, delimit, synth; 1 and 2 workers"),
    "loader": ("bench.loader", "enhancer training data: ms per example mixing and pitch search (workers vs trainer)"),
}
"""Benchmark name -> (module that runs it, one line saying what it measures). The module has
``main(argv) -> int``; the names are those ``python main.py bench NAME`` takes."""

ALIASES = {"processors": "processor"}
"""Other spellings accepted for a name (kept from earlier command lines)."""

OWN_PACKAGES = frozenset({"realtime", "gui", "models", "bench", "main", "tests"})
"""This project's own top-level modules: one of them missing is a bug, never an extra not installed."""


def missing_optional(e: ModuleNotFoundError) -> bool:
    """Whether ``e`` says an optional package is not installed (a training or evaluation extra),
    which the user fixes with pip, rather than one of this project's own modules, a bug that keeps
    its traceback.

    Parameters
    ----------
    e : ModuleNotFoundError
        The error an import raised, at the top of a command or deep inside it.

    Returns
    -------
    bool
        False when ``e.name`` is in one of ``OWN_PACKAGES``; True otherwise.
    """
    return (e.name or "").partition(".")[0] not in OWN_PACKAGES


def describe() -> str:
    """The registry as text: one line per benchmark, its name and what it measures.

    Returns
    -------
    str
        Lines ``  NAME  help``, in registry order, joined by newlines.
    """
    width = max(map(len, BENCHMARKS))
    return "\n".join(f"  {name:{width}s}  {help_}" for name, (_, help_) in BENCHMARKS.items())


def run_bench(name: str | None, argv: list[str]) -> int:
    """Run one benchmark by name, importing its module only now.

    Parameters
    ----------
    name : str or None
        A key of ``BENCHMARKS`` (or of ``ALIASES``). None or an empty string lists the
        benchmarks on stdout instead.
    argv : list of str
        The benchmark's own command line, e.g. ``["gain", "--seconds", "1", "--json"]``.

    Returns
    -------
    int
        The benchmark's exit status; 0 after listing; 2 for an unknown name (one line on stderr naming the
        known ones) or for a benchmark whose imports are missing (one line).
    """
    if not name:
        print("benchmarks (python main.py bench NAME --help for options):\n" + describe())
        return 0
    name = ALIASES.get(name, name)
    if name not in BENCHMARKS:
        print(f"error: unknown benchmark {name!r}; one of: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    try:  # an optional dependency is imported at the top of the module, or first when it runs
        return importlib.import_module(BENCHMARKS[name][0]).main(argv) or 0
    except ModuleNotFoundError as e:
        if not missing_optional(e):
            raise
        print(f"bench {name}: not available ({e})", file=sys.stderr)
        return 2
