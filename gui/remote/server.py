"""The engine process: an ``EngineHost`` on the shared-memory rings, serving its client's
structural commands and status polls over a pipe (see ``gui.remote``)."""
from __future__ import annotations

import gc
import importlib
import os
import signal
import sys
import threading
import time
from multiprocessing import parent_process, shared_memory
from multiprocessing.connection import wait

from gui.host import EngineHost
from gui.remote.shm import CRASH_SITE, attach_rings
from realtime.dsp.processors.warm import warm_up_kinds
from realtime.engine.config import EngineConfig
from realtime.engine.rt_os import set_realtime_priority
from realtime.errors import interrupt_signals
from realtime.io import crash_site

# the window's process died (killed, crashed): this long for the command under way to end and this
# process to close in order (the pipe's end is seen between commands), then it exits as it is
PARENT_GONE_EXIT_S = 5.0


def serve(conn, names: dict[str, str], preset: dict, config: dict, plugins: tuple[str, ...]) -> None:
    """Run the engine process until the client says "close" or goes away.

    Parameters
    ----------
    conn : multiprocessing.connection.Connection
        The pipe to the client: it sends ``(seq, command, args)``, gets ``("ok", result, seq)`` or
        ``("err", exception class name, message, seq)``: the client drops a reply whose ``seq`` is
        not the one it waits for (a command it gave up on answered late). The first reply (the
        start) has seq 0.
    names : dict
        Shared-memory segment per ring (``gui.remote.shm.create_rings``).
    preset, config : dict
        The validated preset and ``EngineConfig`` fields to start with.
    plugins : tuple of str
        Modules to import first (processors registered outside realtime.dsp.processors).
    """
    from realtime.io.native_stderr import crash_stacks_to_stderr

    crash_stacks_to_stderr()  # a hosted plugin that crashes this process leaves the stack of where it did
    # Ctrl-C, Ctrl-\ and a closed terminal reach the whole process group: the window handles them
    # and closes this process in order (a KeyboardInterrupt here printed a traceback and dropped the
    # stream; SIGHUP killed it under the window, SIGQUIT dumped its core). SIGTERM is the window's
    # own way to end it and stays.
    ignored = {s for s in interrupt_signals() if s != signal.SIGTERM}
    for sig in ignored:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, ignored)  # held by the window from our start (client)
    rings, shms = attach_rings(names)
    # which plugin's code runs on which thread, and the report of a fatal signal, in memory the
    # window reads if a plugin crashes this process (it prints the report on its own stderr)
    marks = shared_memory.SharedMemory(name=names[CRASH_SITE])
    crash_site.use(marks.buf)
    report = crash_site.report_to(crash_site.shm_file(marks.name))  # noqa: F841 (open while this process lives)
    for m in plugins:
        importlib.import_module(m)
    try:
        host = EngineHost(preset, EngineConfig(**config), rings=rings)
    except Exception as e:
        conn.send(("err", type(e).__name__, str(e), 0))
        crash_site.use(None)
        marks.close()
        return
    # Every processor kind's code loaded before the stream first plays (warm.py): the panel adds
    # slots while it plays, and a kind's first load stalled the DSP thread. Beside the first reply,
    # so the window is not kept waiting; the commands that build or start wait for it.
    stop_warming = threading.Event()

    def warm(c: EngineConfig) -> None:
        for kind, why in warm_up_kinds(c.samplerate, c.blocksize, c.channels, stop=stop_warming).items():
            print(f"engine: {kind} not loaded ahead ({why}); its first slot may stall the stream",
                  file=sys.stderr, flush=True)

    warming = threading.Thread(target=warm, args=(host.config,), name="warm-up-kinds", daemon=True)
    warming.start()
    window_gone = _watch_window(stop_warming)

    def prioritise_threads() -> None:
        # Every other thread here that takes the GIL (this command loop, the engine's monitor)
        # runs at real-time priority 1, below the DSP thread: a normal-priority thread preempted
        # by some other process while it holds the GIL would stall the DSP thread for a whole
        # time slice (priority inversion). LV2 worker threads stay normal: their work is slow by
        # design (a plugin loading files) and takes the GIL only for a moment per answer.
        for t in threading.enumerate():
            if t.name not in ("dsp", "lv2-worker") and t.native_id is not None:
                set_realtime_priority(1, t.native_id)

    def start_engine() -> bool:
        host.start()
        prioritise_threads()
        return host.running

    def stop() -> bool:
        host.stop()
        host.apply_pending_control()
        return False

    def structural(fn):
        # The host constructs and prepares what is new (an LV2 plugin's lookup, a model loaded) while
        # the old chain plays, then hands the stream the new chain (EngineHost._install,
        # Engine.swap_chain: seamless for a zero-latency slot added or removed, else a fade out and in;
        # the stream and its connections stay); new audio settings restart the engine instead. A
        # construction that fails leaves the old chain playing. No automatic garbage collection
        # meanwhile: the build's new objects (the LV2 scan's, a model's) set off full ones that held
        # the GIL from the DSP thread for 0.1-0.2 s; the swap freezes them (a faded one, or a new
        # engine's start, collects first while the output is silent; a seamless one the young only).
        was = host.running
        collecting = gc.isenabled()
        gc.disable()
        try:
            return fn()
        finally:
            if collecting:
                if not host.running:  # stopped: collect a failed build's leftovers now, not under audio later
                    gc.collect()
                gc.enable()
            if was and not host.running:  # the swap's restart failed: one more try, as a start would
                start_engine()
            elif host.running:  # the new engine's threads (its monitor) below the DSP thread too
                prioritise_threads()

    def set_config(config: EngineConfig) -> None:
        # other settings restart the stream anyway: stopped first, the kinds' code for the new rate and
        # channels (its own Numba kernels: the resamplers at 44.1 kHz, mono arrays) loads in the gap,
        # not under the next chain's first live add; ``structural`` starts it again
        config.validate()
        host.stop()
        warm(config)
        host.set_config(config)

    loads = [0]  # preset loads that went in: a client that gave up on one knows from it that it did

    def load_preset(p: dict) -> None:
        host.load_preset(p)
        loads[0] += 1

    def snapshot() -> dict:
        host.apply_pending_control()  # stopped: what the client queued is the chain's state
        return {"slots": host.chain.describe(), "running": host.running, "name": host.name,
                "description": host.description, "loads": loads[0]}

    def to_preset(name: str, description: str) -> dict:  # the client adds its MIDI mappings
        host.apply_pending_control()
        return host.chain.to_preset(name, description)

    commands = {
        "snapshot": snapshot,
        "load_preset": lambda p: (structural(lambda: load_preset(p)), snapshot())[1],
        "add_slot": lambda kind, index=None, uri=None: (structural(lambda: host.add_slot(kind, index, uri)),
                                                        snapshot()),
        "insert_slot": lambda entry, index: (structural(lambda: host.insert_slot(entry, index)), snapshot()),
        "remove_slot": lambda sid: (structural(lambda: host.remove_slot(sid)), snapshot())[1],
        "move_slot": lambda sid, d: (structural(lambda: host.move_slot(sid, d)), snapshot())[1],
        "set_config": lambda c: (structural(lambda: set_config(EngineConfig(**c))), snapshot())[1],
        "start": start_engine, "stop": stop, "status": host.status,
        "to_preset": to_preset,
        "drain": host.apply_pending_control,
    }
    seq = 0
    try:
        conn.send(("ok", snapshot(), 0))  # in here: a client gone already still ends the warm-up in order
        while True:
            try:
                seq, cmd, args = conn.recv()
            except (EOFError, OSError):  # the client went away: stop cleanly
                break
            if cmd == "close":
                try:  # taken: the client now waits for the exit, no longer for an answer
                    conn.send(("ok", None, seq))
                except (OSError, ValueError):
                    pass
                break
            if cmd not in ("status", "snapshot", "drain"):  # these read; the rest build, start or change
                warming.join()
            if window_gone.is_set():  # nobody to answer: no stream opened, no chain built for it
                break
            try:
                conn.send(("ok", commands[cmd](*args), seq))
            except Exception as e:  # the error goes to the window; this process keeps serving
                conn.send(("err", type(e).__name__, str(e), seq))
    finally:
        stop_warming.set()  # closing while it warms: the kind under way finishes (no thread left in an import)
        warming.join()
        host.close()  # the stream closes before anything else goes
        try:
            conn.send(("ok", None, seq))
        except (OSError, ValueError):
            pass
        for s in shms:
            s.close()
        crash_site.use(None)  # (every instance is freed: no mark is made any more)
        marks.close()


def _watch_window(stop_warming: threading.Event) -> threading.Event:
    """Set when the window's process is gone. The command loop sees the pipe's end only between
    commands: one that does not end (a plugin's build that hangs) kept this process playing, the
    audio device held, with no window left to close it. Gone, the warm-up stops at the kind under
    way, and a process still here PARENT_GONE_EXIT_S later exits as it is (the device is released
    with it)."""
    gone = threading.Event()
    parent = parent_process()
    if parent is None:  # (not a child process)
        return gone

    def watch() -> None:
        wait([parent.sentinel])
        gone.set()
        stop_warming.set()
        time.sleep(PARENT_GONE_EXIT_S)
        os._exit(1)

    threading.Thread(target=watch, name="window-watch", daemon=True).start()
    return gone
