"""Per-block cost of each processor on its own, outside the engine: real-time factor and block times.

    python main.py bench processor [NAMES …] [--samplerate 48000 --blocksize 128 --seconds 10] --json
    python main.py bench processor limiter --set limiter.detect=true-peak --json
    python -m bench.processor …

One JSON line per processor kind (``lv2:URI`` for an LV2 plugin, which adds ``host_overhead_us_p50``:
the block time minus the plugin's bare ``run()``): ``rtf`` (processing time / audio time), ``block_us_p50`` /
``block_us_p99`` / ``block_us_max`` and the processor's ``latency_samples``. A kind that cannot be
created (a model file not present) gets a line with ``error`` and the others still run.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.common import block_frames, emit
from realtime.argtypes import OneLineParser, positive

MAX_SECONDS = 3600.0  # audio per processor: an hour's block times are 11 MB (1e9 s asked for 2.8 TB)
POOL_BLOCKS = 1024  # distinct noise blocks, cycled: the input is not held whole


def _seconds(text: str) -> float:
    v = positive()(text)
    if v > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text}: at most {MAX_SECONDS:g} seconds per processor")
    return v


def get_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="bench processor", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="processor kinds, or lv2:URI (default: all built-in and available)")
    from main import _samplerate  # the command line's own check: 8000 to 384000 Hz

    ap.add_argument("--samplerate", type=_samplerate, default=48000)
    ap.add_argument("--blocksize", type=block_frames, default=128)
    ap.add_argument("--channels", type=positive(int), default=2)
    ap.add_argument("--seconds", type=_seconds, default=10.0,
                    help=f"audio seconds per processor (at most {MAX_SECONDS:g})")
    ap.add_argument("--set", action="append", default=[], metavar="KIND.PARAM=VALUE",
                    help="a built-in processor's parameter, as a preset's override names it (repeatable)")
    ap.add_argument("--json", action="store_true")
    return ap


def _values(names: list[str], overrides: list[str]) -> dict:
    """{kind: its parameter values} from the --set overrides, checked as a preset's are."""
    from realtime.dsp.presets import apply_overrides

    kinds = [n for n in names if not n.startswith("lv2:")]
    if not overrides:
        return {}
    preset = {"version": 1, "name": "bench", "chain": [{"id": k, "processor": k} for k in dict.fromkeys(kinds)]}
    return {s["id"]: s.get("params", {}) for s in apply_overrides(preset, overrides)["chain"]}


def main(argv=None) -> int:
    from realtime.dsp.processors import available_kinds, create

    a = get_parser().parse_args(argv)
    names = a.names or available_kinds()
    values = _values(names, a.set)
    rng = np.random.default_rng(0)
    refused = []
    for name in names:
        try:
            proc = create("lv2", uri=name[4:]) if name.startswith("lv2:") else create(name, **values.get(name, {}))
        except Exception as e:  # e.g. a model file not present: say so, continue
            emit({"bench": "processor", "name": name, "error": str(e)}, a.json)
            if a.names:  # asked for by name: the command failed (exit 2), not only its record
                refused.append(f"{name}: {e}")
            continue
        proc.prepare(a.samplerate, a.blocksize, a.channels)
        n_blocks = max(1, int(a.seconds * a.samplerate / a.blocksize))  # one at least: percentiles of none fail
        src = (0.3 * rng.standard_normal((min(n_blocks, POOL_BLOCKS), a.blocksize, a.channels))).astype(np.float32)
        for i in range(min(50, n_blocks)):  # warm-up
            proc.process(src[i % len(src)].copy())
        times = np.empty(n_blocks)
        buf = np.empty_like(src[0])
        perf = time.perf_counter_ns
        for i in range(n_blocks):
            b = buf  # a fresh copy each time: a cycled block processed in place would be processed again
            np.copyto(b, src[i % len(src)])
            t0 = perf()
            proc.process(b)
            times[i] = perf() - t0
        us = times * 1e-3
        extra = {}
        if hasattr(proc, "run_only"):  # an LV2 plugin: its bare run() calls alone isolate our hosting overhead
            bare = np.empty(min(n_blocks, 20000))
            for i in range(bare.shape[0]):
                t0 = perf()
                proc.run_only(a.blocksize)
                bare[i] = perf() - t0
            extra = {"plugin_run_us_p50": float(np.percentile(bare, 50) * 1e-3),
                     "host_overhead_us_p50": float((np.percentile(times, 50) - np.percentile(bare, 50)) * 1e-3),
                     "instances": len(proc.instances), "adaptation": proc.adaptation}
        emit({"bench": "processor", "name": name, **({"params": a.set} if values.get(name) else {}),
              "samplerate": a.samplerate, "blocksize": a.blocksize,
              "channels": a.channels, "rtf": float(times.sum() * 1e-9 / (n_blocks * a.blocksize / a.samplerate)),
              "block_us_p50": float(np.percentile(us, 50)), "block_us_p99": float(np.percentile(us, 99)),
              "block_us_max": float(us.max()), "latency_samples": int(proc.latency), **extra}, a.json)
    for line in refused:
        print(f"error: bench processor: {line}", file=sys.stderr)
    return 2 if refused else 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
