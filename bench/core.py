"""Benchmarks: they print figures (JSON lines with --json); they never assert.

    python main.py bench processor [--samplerate 48000 --blocksize 128 --seconds 10] --json
    python main.py bench engine --seconds 10 --blocksize 128 [--preset default] [--gil-hold-ms 200] --json
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import sys
import time

import numpy as np


def emit(obj: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj), flush=True)
    else:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in obj.items()), flush=True)


def bench_processors(argv) -> int:
    from realtime.dsp.processors import available_kinds, create

    ap = argparse.ArgumentParser(prog="bench processor")
    ap.add_argument("names", nargs="*", help="processor kinds (default: all built-in and available)")
    ap.add_argument("--samplerate", type=int, default=48000)
    ap.add_argument("--blocksize", type=int, default=128)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0, help="audio seconds per processor")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    names = a.names or available_kinds()
    rng = np.random.default_rng(0)
    for name in names:
        try:
            proc = create(name)
        except Exception as e:  # e.g. a model file not present: say so, continue
            emit({"bench": "processor", "name": name, "error": str(e)}, a.json)
            continue
        proc.prepare(a.samplerate, a.blocksize, a.channels)
        n_blocks = int(a.seconds * a.samplerate / a.blocksize)
        src = (0.3 * rng.standard_normal((n_blocks, a.blocksize, a.channels))).astype(np.float32)
        for i in range(min(50, n_blocks)):  # warm-up
            proc.process(src[i].copy())
        times = np.empty(n_blocks)
        perf = time.perf_counter_ns
        for i in range(n_blocks):
            b = src[i]
            t0 = perf()
            proc.process(b)
            times[i] = perf() - t0
        us = times * 1e-3
        emit({"bench": "processor", "name": name, "samplerate": a.samplerate, "blocksize": a.blocksize,
              "channels": a.channels, "rtf": float(times.sum() * 1e-9 / (n_blocks * a.blocksize / a.samplerate)),
              "block_us_p50": float(np.percentile(us, 50)), "block_us_p99": float(np.percentile(us, 99)),
              "block_us_max": float(us.max()), "latency_samples": int(proc.latency)}, a.json)
    return 0


def hold_gil(ms: float) -> None:
    """Hold the GIL for ``ms`` milliseconds: a C call made through PyDLL never releases it."""
    ctypes.PyDLL(None).usleep(int(ms * 1000))


def bench_engine(argv) -> int:
    from realtime.dsp.presets import build_chain, load_preset
    from realtime.engine.engine import Engine, EngineConfig
    from realtime.io.jackserver import ensure_server

    ap = argparse.ArgumentParser(prog="bench engine")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--blocksize", type=int, default=128)
    ap.add_argument("--samplerate", type=int, default=48000)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--gil-hold-ms", type=float, default=0.0, help="another thread holds the GIL this long, once a second")
    ap.add_argument("--prefill-blocks", type=int, default=2)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    server = ensure_server(a.samplerate, a.blocksize)
    engine = Engine(build_chain(load_preset(a.preset)),
                    EngineConfig(samplerate=a.samplerate, blocksize=a.blocksize, channels=a.channels,
                                 prefill_blocks=a.prefill_blocks))
    holds = 0
    try:
        engine.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < a.seconds:
            if a.gil_hold_ms:
                hold_gil(a.gil_hold_ms)
                holds += 1
            time.sleep(1.0 if not a.gil_hold_ms else max(0.0, 1.0 - a.gil_hold_ms / 1000))
    finally:
        engine.stop()
        if server:
            server.stop()
    s, lat = engine.stats(), engine.latency()
    emit({"bench": "engine", "seconds": a.seconds, "blocksize": a.blocksize, "preset": a.preset,
          "gil_hold_ms": a.gil_hold_ms, "gil_holds": holds, "callbacks": s["callbacks"],
          "late_blocks": s["late_blocks"], "late_blocks_ours": s["late_blocks_ours"],
          "late_blocks_stolen": s["late_blocks_stolen"], "server_xruns": s["server_xruns"],
          "delayed_callbacks": s["delayed_callbacks"], "callback_us_p99": s["callback_us_p99"],
          "dsp_us_p99": s["dsp_us_p99"], "dsp_load": s["dsp_load"], "latency_ms": lat["round_trip_ms"],
          "added_latency_frames": lat["added_frames"]}, a.json)
    return 0


# benchmarks that live with their models; each module exposes bench(argv)
EXTERNAL = {"enhancer": "bench.enhancer", "delimiter": "bench.delimiter",
            "synth": "bench.synth", "gui": "bench.gui", "jitter": "bench.jitter"}


def run_bench(what: str, argv: list[str]) -> int:
    if what in ("processor", "processors"):
        return bench_processors(argv)
    if what == "engine":
        return bench_engine(argv)
    if what in EXTERNAL:
        try:
            mod = importlib.import_module(EXTERNAL[what])
        except ModuleNotFoundError as e:
            print(f"bench {what}: not available ({e})", file=sys.stderr)
            return 2
        return mod.bench(argv) or 0
    print(f"unknown benchmark {what!r}; one of processor, engine, {', '.join(EXTERNAL)}", file=sys.stderr)
    return 2
