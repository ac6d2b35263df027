"""The live engine on a JACK dummy server for N seconds: late blocks, xruns, DSP load, latency.

    python main.py bench engine --seconds 10 --blocksize 128 [--preset default] [--gil-hold-ms 200] --json
    python -m bench.engine …

Starts a private dummy JACK server when none runs (stopped again at the end). ``--gil-hold-ms``
makes this thread hold the GIL that long once a second, to show the DSP path does not need it.
"""
from __future__ import annotations

import argparse
import sys
import time

from bench.common import block_frames, emit, hold_gil, jack_server_at
from realtime.argtypes import OneLineParser, positive


def get_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="bench engine", description=__doc__.splitlines()[0])
    from main import _samplerate  # the command line's own check: 8000 to 384000 Hz
    ap.add_argument("--seconds", type=positive(most=86400), default=10.0)
    ap.add_argument("--blocksize", type=block_frames, default=128)
    ap.add_argument("--samplerate", type=_samplerate, default=48000)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--gil-hold-ms", type=positive(zero=True), default=0.0,
                    help="another thread holds the GIL this long, once a second")
    ap.add_argument("--prefill-blocks", type=positive(int), default=2)
    ap.add_argument("--channels", type=positive(int), default=2)
    ap.add_argument("--json", action="store_true")
    return ap


def main(argv=None) -> int:
    from realtime.dsp.presets import build_chain, load_preset
    from realtime.engine.config import EngineConfig
    from realtime.engine.engine import Engine

    a = get_parser().parse_args(argv)
    chain = build_chain(load_preset(a.preset))  # a preset that fails: before a server is started
    server = jack_server_at(a.samplerate, a.blocksize)
    engine = None
    holds = 0
    try:
        engine = Engine(chain, EngineConfig(samplerate=a.samplerate, blocksize=a.blocksize, channels=a.channels,
                                            prefill_blocks=a.prefill_blocks))
        engine.start()
        t0 = time.monotonic()
        while (left := a.seconds - (time.monotonic() - t0)) > 0:
            if a.gil_hold_ms:
                hold_gil(a.gil_hold_ms)
                holds += 1
            time.sleep(max(0.0, min(1.0, left) - a.gil_hold_ms / 1000))
        ran = time.monotonic() - t0  # what ran (a whole second a loop: 0.1 s asked ran 1 s)
    finally:
        if engine is not None:
            engine.stop()
        if server:
            server.stop()
    s, lat = engine.stats(), engine.latency()
    emit({"bench": "engine", "tap_us_per_block": _tap_us_per_block(a.blocksize), "seconds": round(ran, 3), "blocksize": a.blocksize, "preset": a.preset,
          "gil_hold_ms": a.gil_hold_ms, "gil_holds": holds, "callbacks": s["callbacks"],
          "late_blocks": s["late_blocks"], "late_blocks_ours": s["late_blocks_ours"],
          "late_blocks_stolen": s["late_blocks_stolen"], "server_xruns": s["server_xruns"],
          "delayed_callbacks": s["delayed_callbacks"], "callback_us_p99": s["callback_us_p99"],
          "dsp_us_p99": s["dsp_us_p99"], "dsp_load": s["dsp_load"], "latency_ms": lat["round_trip_ms"],
          "added_latency_frames": lat["added_frames"], "blocks_processed": s["blocks_processed"],
          "error": s["error"], "processor_errors": s["processor_errors"]}, a.json)
    return 0


def _tap_us_per_block(blocksize: int, n: int = 2000, repeats: int = 5) -> float:
    """The DSP thread's work per block for the panel's audio tap (input and output, left and right: two
    copies into one 4-column record per frame, one ring push;
    the pop is the panel's, counted too so the ring never fills): median of ``repeats`` runs."""
    import numpy as np

    from realtime.engine.control import ControlRings
    from realtime.engine.engine import _tap_into
    from realtime.engine.ring import ring_pop, ring_push

    rings = ControlRings()
    block = np.random.default_rng(0).standard_normal((blocksize, 2)).astype(np.float32)
    tap = np.zeros((blocksize, 4), np.float32)
    runs = []
    for r in range(repeats + 1):  # the first run compiles and warms up
        t0 = time.perf_counter_ns()
        for _ in range(n):
            _tap_into(block, tap, 0)
            _tap_into(block, tap, 2)
            ring_push(rings.audio.buf, rings.audio.idx, tap, blocksize)
            ring_pop(rings.audio.buf, rings.audio.idx, tap, blocksize)
        if r:
            runs.append((time.perf_counter_ns() - t0) / n / 1e3)
    return round(float(np.median(runs)), 2)


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
