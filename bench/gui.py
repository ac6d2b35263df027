"""Does the knob panel cost audio?

    python main.py bench gui [--seconds 60] [--no-gui | --in-process] [--add KIND …] --json
    python -m bench.gui …

The live engine runs the chain on a JACK dummy server with the bundled demo looping into its
input, the window open (offscreen unless a display is set), meters animating, and knobs moved
programmatically through the same path a mouse takes (Knob → strip → window → engine). Prints

    {"bench":"gui","seconds","late_blocks","server_xruns","knob_moves","param_latency_ms_p99",…}

``late_blocks`` count callbacks whose output was not ready. Those with no server timing anomaly
(a delayed or bunched callback, an xrun flag) in the same or the prefill + 1 callbacks before are
split: ``late_blocks_stolen`` where the hypervisor took at least a block period of CPU from the
DSP thread in that window (off the CPU without being switched out: see realtime.engine.diagnostics),
``late_blocks_ours`` the rest: the late blocks nothing but our own processing explains.
``server_xruns`` are the server's own hiccups. ``param_latency_ms`` is the time from the knob move until the DSP thread
applied the new target (the DSP thread stamps each control record it applies:
``ControlRings.applied_at``); the processor then smooths toward it from the next block on.
``late_context`` explains the first late blocks not the server's (what the DSP thread did in
their window: blocks started, longest gap, slowest block's wall and CPU time and context
switches, stolen time, and the cause it was put down to); ``dsp_minor_faults`` /
``dsp_major_faults`` count the DSP thread's page faults while the knobs moved; ``cpu_steal_ms``
is the CPU time the hypervisor gave to others meanwhile (a VM's stalls that are not ours).

Modes: by default the product's set-up (the engine in its own process, see gui.remote);
``--in-process`` the window and the engine in one process (what that replaced); ``--no-gui``
the same engine, chain, input and knob moves without Qt, as the baseline. By default the chain
is the preset plus every neural processor whose model loads ("chain" and "skipped" say which).
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import time

import numpy as np

from bench.common import block_frames, jack_server_at
from realtime.argtypes import OneLineParser, positive

NEURAL = ("enhancer", "delimiter", "synth")


def get_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="bench gui", description=__doc__.splitlines()[0])
    from main import _samplerate  # the command line's own check: 8000 to 384000 Hz
    ap.add_argument("--seconds", type=positive(most=86400), default=60.0)
    ap.add_argument("--samplerate", type=_samplerate, default=48000)
    ap.add_argument("--blocksize", type=block_frames, default=128)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--add", nargs="*", default=None,
                    help=f"processors to add before the safety stage (default: the neural ones that load: {NEURAL})")
    from gui import PANEL_PREFILL_BLOCKS

    ap.add_argument("--prefill-blocks", type=positive(int), default=PANEL_PREFILL_BLOCKS,
                    help="output pre-fill: the DSP thread's time budget per block, in blocks (the panel's default)")
    ap.add_argument("--move-hz", type=positive(most=1000), default=20.0, help="knob moves per second")
    ap.add_argument("--no-gui", action="store_true", help="baseline: no window, knobs moved by a thread")
    ap.add_argument("--in-process", action="store_true",
                    help="the window and the engine in one process (the design the engine process replaced)")
    ap.add_argument("--json", action="store_true")
    return ap


class LatencyProbe:
    """Knob → DSP latency: each knob move's control record against the time the DSP thread
    applied it (``ControlRings.applied_at``, which the DSP thread stamps; read here, no thread)."""

    TIMEOUT_NS = 500_000_000  # a record not applied within this is a missed move

    def __init__(self):
        self.ms: list[float] = []
        self.missed = 0
        self._rings = None
        self._pending: list[tuple[int, int]] = []  # (control record sequence number, move time ns)

    def move(self, rings, fn) -> None:
        """Run ``fn`` (a knob move); if it queued a control record on ``rings``, time that record."""
        self._rings = rings
        self.collect()
        seq = rings.pushed()
        t0 = time.perf_counter_ns()  # CLOCK_MONOTONIC, the DSP thread's stamps' clock
        fn()
        if rings.pushed() > seq:
            self._pending.append((seq, t0))

    def collect(self, final: bool = False) -> None:
        if self._rings is None:  # stopped (its rings may be gone: a read of them crashed the process)
            return
        now = time.perf_counter_ns()
        keep = []
        for seq, t0 in self._pending:
            t = self._rings.applied_at(seq)
            if t is not None:
                self.ms.append((t - t0) * 1e-6)
            elif final or now - t0 > self.TIMEOUT_NS:
                self.missed += 1
            else:
                keep.append((seq, t0))
        self._pending = keep

    def stop(self) -> None:
        """Wait for the last moves (up to the timeout); what never arrived is missed. Call it
        while the rings still exist (before the host closes)."""
        deadline = time.perf_counter_ns() + self.TIMEOUT_NS
        while self._pending and time.perf_counter_ns() < deadline:
            self.collect()
            time.sleep(0.01)
        self.collect(final=True)
        self.forget()

    def forget(self) -> None:
        """Leave the rings alone from now on (stopped, or freed by their host): moves and stops
        after this read nothing (what was pending is missed)."""
        self._rings = None
        self.missed += len(self._pending)
        self._pending = []


def _build_preset(a) -> tuple[dict, list[str], dict]:
    from realtime.dsp.presets import load_preset, validate_preset
    from realtime.dsp.processors import available_kinds, create

    preset = load_preset(a.preset)
    wanted = [k for k in NEURAL if k in available_kinds()] if a.add is None else a.add
    added, skipped = [], {}
    chain = preset["chain"][:-1]
    for kind in wanted:
        try:
            create(kind).prepare(a.samplerate, a.blocksize, 2)  # a missing/broken model: reported, not fatal
        except Exception as e:
            if a.add is not None:  # named on the command line, as `bench processor NAME`: the command fails
                raise SystemExit(f"bench gui: --add {kind}: {e}".splitlines()[0]) from None
            skipped[kind] = f"{type(e).__name__}: {e}"
            continue
        chain.append({"processor": kind})
        added.append(kind)
    preset["chain"] = chain + preset["chain"][-1:]
    return validate_preset(preset), added, skipped


def _sweep(n: int, t: float) -> float:
    return 0.5 + 0.4 * math.sin(2 * math.pi * 0.37 * t + n)


def _run_window(a, preset, config, probe, demo):
    """The window (offscreen unless a display is set) with knobs moved by a timer; returns the
    engine's final status and the number of knob moves."""
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication

    from gui.knob import Knob
    from gui.rack import MIX_PARAM
    from gui.settings import Settings
    from gui.window import MainWindow
    from realtime.errors import Interrupted, interrupt_signals, note_interrupt

    app = QApplication.instance() or QApplication([])
    moves = 0
    caught: list[int] = []  # a signal that ended the run early: raised as the command line raises it, after the clean-up
    old: dict = {}
    mover = None
    with tempfile.TemporaryDirectory() as tmp:
        if a.in_process:
            from gui.host import EngineHost

            host = EngineHost(preset, config)
        else:  # the product: the engine in its own process
            from gui.remote import RemoteEngineHost

            host = RemoteEngineHost(preset, config)
        win = MainWindow(preset, config, Settings(os.path.join(tmp, "bench.ini")), host=host)
        try:
            win.show()
            win.start()
            demo.connect()
            first = host.status()
            knobs = [(sid, k) for sid, strip in win.rack.strips.items() for k in strip.controls.values()
                     if isinstance(k, Knob) and k.param is not MIX_PARAM]
            t0 = time.monotonic()

            def move():
                nonlocal moves
                _, k = knobs[moves % len(knobs)]
                u = _sweep(moves % len(knobs), time.monotonic() - t0)
                if k.param.from_unit(u) == k.value():
                    return
                probe.move(host.rings, lambda: k.setUnit(u))  # → strip → window → host.set_param → control ring
                moves += 1

            mover = QTimer(interval=max(1, int(1000 / a.move_hz)), timeout=move)
            mover.start()
            final = {}

            def finish():  # status and probe first: quitting closes the window, the engine and its rings
                mover.stop()
                final.update(host.status())
                probe.stop()
                app.quit()

            def on_signal(signum, frame):
                if not caught:  # finish from the event loop, not inside the slot the handler interrupted
                    QTimer.singleShot(0, finish)
                caught.append(signum)

            # while the event loop runs, a signal finishes the run as its end does (status, then the
            # probe, then quit: a quit closes the window and frees the rings). Raised inside a slot it
            # aborted the process (SIGTERM); a quit from the handler crashed it (Ctrl-C)
            old.update({sig: signal.signal(sig, on_signal) for sig in interrupt_signals()
                        if signal.getsignal(sig) is not signal.SIG_IGN})
            QTimer.singleShot(int(a.seconds * 1000), finish)
            app.exec()
            if not final:  # the window was closed (a display's close button): it freed the rings
                probe.forget()
                raise SystemExit("bench gui: the window was closed before the run ended")
            s = final
        finally:
            if mover is not None:
                mover.stop()  # no knob moves queued while the window shuts down
            probe.stop()  # (whatever ended the run) while the rings still exist: shutdown frees them
            win.shutdown()
            for sig, handler in old.items():
                signal.signal(sig, handler)
    if caught:
        name = signal.Signals(caught[0]).name
        note_interrupt(name)
        raise KeyboardInterrupt() if caught[0] == signal.SIGINT else Interrupted(name)
    return first, s, moves


def main(argv=None) -> int:
    a = get_parser().parse_args(argv)
    if not a.no_gui and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    from bench.common import cpu_steal_ms, emit
    from gui.demo_source import DemoSource
    from realtime.engine.config import EngineConfig

    preset, added, skipped = _build_preset(a)  # an --add that fails: before a server is started
    # PortAudio in this process only when the engine runs here (the engine process opens its own)
    server = jack_server_at(a.samplerate, a.blocksize, rescan=a.no_gui or a.in_process)
    config = EngineConfig(samplerate=a.samplerate, blocksize=a.blocksize, prefill_blocks=a.prefill_blocks)
    probe = LatencyProbe()
    demo = DemoSource()  # its own process: a Python JACK client here would stall the graph
    moves, host = 0, None
    steal0 = cpu_steal_ms()
    try:
        if a.no_gui:
            from gui.host import EngineHost

            host = EngineHost(preset, config)
            host.start()
            demo.connect()
            first = host.status()
            targets = [(s.id, d) for s in host.chain.slots for d in s.processor.params if not d.choices]
            t0 = time.monotonic()
            while (now := time.monotonic()) - t0 < a.seconds:
                sid, d = targets[moves % len(targets)]
                v = d.from_unit(_sweep(moves % len(targets), now - t0))
                probe.move(host.rings, lambda: host.set_param(sid, d.id, v))
                moves += 1
                time.sleep(1.0 / a.move_hz)
            s = host.status()
        else:
            first, s, moves = _run_window(a, preset, config, probe, demo)
    finally:
        probe.stop()
        demo.close()
        if host is not None:
            host.close()  # the stream closes before the server goes
        if server:
            server.stop()
    steal = cpu_steal_ms() - steal0
    ms = np.array(probe.ms)  # none measured (no move, or every one missed): null, never 0 ms
    mode = "no-gui" if a.no_gui else "in-process" if a.in_process else "engine-process"
    emit({"bench": "gui", "gui": not a.no_gui, "mode": mode, "seconds": a.seconds, "samplerate": a.samplerate,
          "blocksize": a.blocksize, "prefill_blocks": a.prefill_blocks, "chain": [sl["id"] for sl in preset["chain"]], "skipped": skipped,
          "callbacks": s["callbacks"], "late_blocks": s["late_blocks"], "late_blocks_ours": s["late_blocks_ours"],
          "late_blocks_stolen": s["late_blocks_stolen"], "server_xruns": s["server_xruns"],
          "delayed_callbacks": s["delayed_callbacks"], "dsp_load": s["dsp_load"], "dsp_us_p99": s["dsp_us_p99"], "dsp_us_max": s["dsp_us_max"],
          "knob_moves": moves, "param_latency_ms_p50": float(np.percentile(ms, 50)) if ms.size else None,
          "param_latency_ms_p99": float(np.percentile(ms, 99)) if ms.size else None,
          "param_latency_ms_max": float(ms.max()) if ms.size else None,
          "param_missed": probe.missed, "block_ms": 1000.0 * a.blocksize / a.samplerate,
          "latency_ms": s["round_trip_ms"],
          # page faults of the DSP thread while the knobs moved (after its start-up), and the time
          # the hypervisor gave this VM's CPUs to someone else: stalls that are not ours to fix
          "dsp_minor_faults": s["dsp_minor_faults"] - first["dsp_minor_faults"],
          "dsp_major_faults": s["dsp_major_faults"] - first["dsp_major_faults"],
          "cpu_steal_ms": steal, "late_context": s["late_context"], "error": s["error"],
          "processor_errors": s.get("processor_errors", {})}, a.json)
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
