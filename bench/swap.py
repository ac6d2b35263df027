"""Structural changes while the engine plays: how long the output goes silent, and whether it clicks.

    python main.py bench swap [--preset default] [--add gain enhancer …] [--repeats 3] --json
    python -m bench.swap …

The engine runs the preset on a JACK dummy server (a private one when none runs) with a looping
1 kHz sine (−6 dBFS) played into its inputs and a recorder on its outputs, both wired once, as a
user wires a running engine. For each kind in ``--add`` a slot is added (bypassed: it runs, and
an effect that takes a steady tone for noise does not hide the gap), moved one place and
removed while it plays, each change twice: as the panel does it now (``live``: the running
stream takes the new chain, ``Engine.swap_chain``) and as it did before (``restart``: stop, new
engine, start; the benchmark wires the new ports again at once, which a user's own connections
would not be). Per change and mode, medians over ``--repeats``: ``silence_ms`` (the longest run
under −80 dBFS), ``step_ratio`` (the largest sample-to-sample step over the sine's own: above 1
is a click), ``call_ms`` (how long the call took) and whether the connections were kept. The first
add of each kind in the process is a row of its own (``first add``; the ``add`` row is the takes
after it): it loads the kind's code, the rest find it loaded.

``--engine-process`` runs the engine as the panel does, in its own process (``RemoteEngineHost``,
which loads every kind's code before the stream first plays, ``realtime/dsp/processors/warm.py``);
live swaps only. ``late_blocks`` is the median count of late blocks that played during a take, the server's xruns
meanwhile included (either is a gap the listener hears).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from bench.common import block_frames, emit, jack_server_at
from realtime.argtypes import OneLineParser, positive

SINE_HZ, AMP = 1000.0, 0.5


def get_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="bench swap", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--add", nargs="+", default=["gain", "limiter", "enhancer", "delimiter"], help="kinds added, moved and removed")
    ap.add_argument("--repeats", type=positive(int), default=3)
    ap.add_argument("--blocksize", type=block_frames, default=128)
    from realtime.engine.config import PANEL_PREFILL_BLOCKS

    ap.add_argument("--prefill-blocks", type=positive(int), default=PANEL_PREFILL_BLOCKS)
    ap.add_argument("--engine-process", action="store_true",
                    help="the engine in its own process, as the panel runs it (live swaps only)")
    ap.add_argument("--json", action="store_true")
    return ap


def main(argv=None) -> int:
    from gui.host import EngineHost
    from realtime.dsp.presets import load_preset
    from realtime.dsp.processors import URI_KINDS, available_kinds, processor_class
    from realtime.engine.config import EngineConfig
    from realtime.io.jackio import JackPlayer, JackRecorder

    a = get_parser().parse_args(argv)
    for kind in a.add:  # an unknown kind says so before any server starts (a known one is not imported here:
        if kind in URI_KINDS:  # its first add loads it, in this process or the engine's)
            raise SystemExit(f"bench swap: --add {kind}: a hosted plugin needs its URI; swap the processors "
                             f"of {', '.join(k for k in available_kinds() if k not in URI_KINDS)}")
        if kind not in available_kinds():
            processor_class(kind)
    preset = load_preset(a.preset)  # a preset that fails: before a server is started
    sr = 48000
    server = jack_server_at(sr, a.blocksize)
    config = EngineConfig(samplerate=sr, blocksize=a.blocksize, prefill_blocks=a.prefill_blocks)
    try:
        if a.engine_process:
            from gui.remote.client import RemoteEngineHost

            host = RemoteEngineHost(preset, config)
        else:
            host = EngineHost(preset, config)
    except BaseException:
        if server:
            server.stop()
        raise
    n = sr // 10  # a whole number of cycles: the loop is seamless
    sine = (AMP * np.sin(2 * np.pi * SINE_HZ * np.arange(n) / sr - np.pi / 8)).astype(np.float32)
    player, rec = JackPlayer(np.tile(sine, (2, 1)).T.copy(), loop=True), JackRecorder(2 * sr, 2)
    rows = {}
    try:
        host.start()
        player.start([])
        rec.start([])
        player.play()
        _wire(player, rec, a.engine_process)
        time.sleep(0.5)  # the sine's own entry (wired mid-waveform) is out of the engine before the first take
        for kind in a.add:
            for mode in ("live",) if a.engine_process else ("live", "restart"):
                host.live_swap = mode == "live"
                for take in range(a.repeats + (mode == "live")):
                    sid = None

                    def add(kind=kind):
                        nonlocal sid
                        sid = host.insert_slot({"id": f"new_{kind}", "processor": kind, "bypass": True},
                                               len(host.chain.slots) - 1)
                    first = mode == "live" and take == 0  # the kind's code loads in this one, unless warmed
                    for change, fn in (("add", add), ("move", lambda: host.move_slot(sid, -1)),
                                       ("remove", lambda: host.remove_slot(sid))):
                        name = "first add" if first and change == "add" else change
                        if first and change == "move":
                            continue  # the first take only adds and removes
                        rows.setdefault((kind, name, mode), []).append(_take(host, player, rec, fn, sr))
    finally:
        host.close()
        player.close()
        rec.close()
        if server:
            server.stop()
    sine_step = 2 * AMP * np.sin(np.pi * SINE_HZ / sr)
    for (kind, change, mode), takes in rows.items():
        emit({"bench": "swap", "kind": kind, "change": change, "mode": mode, "takes": len(takes),
              "silence_ms": round(statistics.median(t["silence_ms"] for t in takes), 1),
              "silence_ms_max": round(max(t["silence_ms"] for t in takes), 1),
              "step_ratio": round(statistics.median(t["step"] for t in takes) / sine_step, 2),
              "call_ms": round(statistics.median(t["call_ms"] for t in takes), 1),
              "connections_kept": all(t["kept"] for t in takes),
              "late_blocks": statistics.median(t["glitches"] for t in takes),
              "glitched_takes": sum(t["glitches"] > 0 for t in takes),
              "engine": "own process" if a.engine_process else "in process"}, a.json)
    return 0


def _wire(player, rec, own_process: bool = False) -> None:
    """The sine into the engine's inputs, its outputs into the recorder (the PortAudio client's
    ports: this process's, or, for an engine in its own process, the one other client there)."""
    from realtime.io.jackio import _libjack, engine_ports, portaudio_client

    lib = _libjack()
    ins, outs = engine_ports(client=None if own_process else portaudio_client())
    for src, dst in zip(player.port_names(), ins[:2]):
        lib.jack_connect(player._client, src.encode(), dst.encode())
    for src, dst in zip(outs[:2], rec.port_names()):
        lib.jack_connect(rec._client, src.encode(), dst.encode())


def _connected(rec) -> bool:
    import jack

    c = jack.Client("rt-bench-probe", no_start_server=True)
    try:
        return bool(c.get_all_connections(rec.port_names()[0]))
    finally:
        c.close()


def _take(host, player, rec, change, sr: int) -> dict:
    """Record 0.3 s, make the change, record 0.4 s more. No JACK client is opened during a live
    take (opening one reorders the server's graph, a glitch of its own): its connections are
    checked after it. A restart's new ports are wired at once."""
    glitches = _glitch_count(host)
    engine = getattr(host, "engine", None)  # an engine process's host has none here: live swaps only
    rec.rearm(rec.data.shape[0])
    rec.recording = True
    time.sleep(0.3)
    t0 = time.perf_counter()
    change()
    call_ms = (time.perf_counter() - t0) * 1e3
    same = getattr(host, "engine", None) is engine
    kept = True
    if not same:
        kept = _connected(rec)
        _wire(player, rec)
        glitches = 0  # a new engine: its counters start at zero
    time.sleep(0.4)
    rec.recording = False
    kept = kept and _connected(rec)
    out = rec.data[: rec.pos, 0]
    quiet = np.abs(out) < 1e-4
    edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
    longest = int(np.max(edges[1::2] - edges[::2])) if len(edges) else 0
    return {"silence_ms": 1e3 * longest / sr, "step": float(np.abs(np.diff(out)).max()), "call_ms": call_ms,
            "kept": kept, "glitches": max(0, _glitch_count(host) - glitches)}  # (an unseen restart's counters start at 0)


def _glitch_count(host) -> int:
    s = host.status() if not hasattr(host, "engine") else host.engine.stats()
    return s["late_blocks"] + s["server_xruns"]


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
