"""The engine in a process of its own; the window is a client over shared memory.

Why: the DSP thread needs the GIL for a few Python calls per block. In the GUI's process it
competes with Qt's thread (painting, events, timers), and on a busy machine the OS can preempt
the GUI thread while it holds the GIL, so the DSP thread waits a whole time slice: late blocks.
Measured with `python main.py bench gui --seconds 600` (default chain + enhancer + delimiter +
synth, demo input, 20 knob moves/s, on a 2-core machine shared with other jobs at load 4-7):
window in the engine's process 915 late blocks; engine in its own process 20 (see README). In
its own process the engine's only Python neighbours are its monitor, the command loop below and
(bench only) a probe, all idle nearly all the time and raised to real-time priority 1 so none
of them can be preempted while holding the GIL the DSP thread (priority 5) needs.

Real-time traffic never crosses a pipe: the engine's own control ring (parameter, bypass and mix
records), MIDI ring and meter ring are placed in shared memory (``Ring`` storage is plain numpy,
its acquire/release indices work across processes as across threads), so a knob move is one
lock-free push from the GUI process that the DSP thread pops at its next block. Structure
(presets, add/remove/move, devices, start/stop) and the once-a-second status go over a pipe.

The GUI side keeps a shadow of the chain (slot ids, descriptors, values) for the rack.
"""
from __future__ import annotations

import multiprocessing as mp
import threading
import time
from dataclasses import asdict
from multiprocessing import shared_memory

import numpy as np

from gui.host import HostBase
from realtime.dsp.presets import validate_preset
from realtime.dsp.processors import processor_class
from realtime.engine.engine import BYPASS, MIX, PARAM, EngineConfig, set_realtime_priority
from realtime.engine.ring import Ring, ring_pop, ring_readable
from realtime.errors import EngineError

# name -> (capacity, width, dtype): the engine's rings (same shapes as Engine makes) + a probe ring
RINGS = {"control": (1024, 4, np.float64), "midi": (1024, 4, np.float64), "meter": (1024, 8, np.float32),
         "probe": (1024, 4, np.float64)}
IDX_BYTES = 16 * 8
START_TIMEOUT_S = 60.0


def _ring_on(shm: shared_memory.SharedMemory, cap: int, width: int, dtype) -> Ring:
    r = Ring.__new__(Ring)
    r.idx = np.ndarray((16,), np.int64, buffer=shm.buf, offset=0)
    r.buf = np.ndarray((cap, width), dtype, buffer=shm.buf, offset=IDX_BYTES)
    return r


def _make_rings(names: dict[str, str] | None = None):
    """Create (names=None) or attach shared-memory rings; returns (rings, shms)."""
    rings, shms = {}, []
    for key, (cap, width, dtype) in RINGS.items():
        size = IDX_BYTES + cap * width * np.dtype(dtype).itemsize
        shm = (shared_memory.SharedMemory(create=True, size=size) if names is None
               else shared_memory.SharedMemory(name=names[key]))
        if names is None:
            np.ndarray((size,), np.uint8, buffer=shm.buf)[:] = 0
        shms.append(shm)
        rings[key] = _ring_on(shm, cap, width, dtype)
    return rings, shms


# ============================================================================ engine process
def _serve(conn, names: dict[str, str], preset: dict, config: dict, plugins: tuple[str, ...], probe) -> None:
    import importlib

    from gui.host import EngineHost

    rings, shms = _make_rings(names)
    for m in plugins:
        importlib.import_module(m)

    def wire(engine) -> None:  # before the engine starts: its rings are the shared ones
        for attr, key in (("control", "control"), ("midi", "midi"), ("meter_ring", "meter")):
            ring = getattr(engine, attr)
            ring.buf, ring.idx = rings[key].buf, rings[key].idx

    rec = np.zeros((1, 4), np.float64)

    def drain() -> None:
        """Apply queued control records while no DSP thread runs (the ring's one consumer)."""
        ctl = rings["control"]
        while ring_pop(ctl.buf, ctl.idx, rec, 1):
            host.engine._apply_control(int(rec[0, 0]), int(rec[0, 1]), rec[0, 2], int(rec[0, 3]))
        rings["midi"].discard(rings["midi"].readable())

    def start_engine() -> None:
        host.start()
        # Every other thread here that takes the GIL (this command loop, the engine's monitor,
        # the probe) runs at real-time priority 1, below the DSP thread: a normal-priority thread
        # preempted by some other process while it holds the GIL would stall the DSP thread for
        # a whole time slice (priority inversion).
        for t in threading.enumerate():
            if t.name != "dsp" and t.native_id is not None:
                set_realtime_priority(1, t.native_id)

    def structural(fn):
        was = host.running
        host.stop()
        drain()
        try:
            return fn()
        finally:
            if was:
                start_engine()

    def snapshot() -> dict:
        return {"slots": host.chain.describe(), "running": host.running, "name": host.name,
                "description": host.description}

    latencies: list[float] = []

    def probe_loop() -> None:  # bench only: when did the DSP thread apply a queued target?
        pr, prec = rings["probe"], np.zeros((1, 4), np.float64)
        set_realtime_priority(1)  # below the DSP thread; else the probe's own wake-up delay is measured
        while True:
            if not ring_pop(pr.buf, pr.idx, prec, 1):
                probe.wait(1.0)  # set by the GUI after each probe record: no polling while idle
                probe.clear()
                continue
            si, pi, v, t0 = int(prec[0, 0]), int(prec[0, 1]), prec[0, 2], prec[0, 3]
            try:
                values = host.chain.slots[si].processor.values
            except IndexError:
                continue
            while values[pi] != v and time.perf_counter() - t0 < 0.5:
                time.sleep(0.0002)
            if values[pi] == v:
                latencies.append(1000.0 * (time.perf_counter() - t0))

    def start():
        drain()
        start_engine()
        return host.running

    def stop():
        host.stop()
        drain()
        return False

    def to_preset(name, description):
        if not host.running:
            drain()
        return host.chain.to_preset(name, description)

    def status():
        st = host.status()
        st["probe_ms"] = latencies[:]  # only what is new since the last poll: small replies
        del latencies[: len(st["probe_ms"])]
        return st

    try:
        host = EngineHost(preset, EngineConfig(**config), on_engine=wire)
    except Exception as e:
        conn.send(("err", type(e).__name__, str(e)))
        return
    if probe is not None:
        threading.Thread(target=probe_loop, name="param-probe", daemon=True).start()
    commands = {
        "snapshot": snapshot,
        "load_preset": lambda p: (structural(lambda: host.load_preset(p)), snapshot())[1],
        "add_slot": lambda kind, index=None: (structural(lambda: host.add_slot(kind, index)), snapshot()),
        "remove_slot": lambda sid: (structural(lambda: host.remove_slot(sid)), snapshot())[1],
        "move_slot": lambda sid, d: (structural(lambda: host.move_slot(sid, d)), snapshot())[1],
        "set_config": lambda c: (structural(lambda: host.set_config(EngineConfig(**c))), snapshot())[1],
        "start": start, "stop": stop, "status": status, "to_preset": to_preset,
        "drain": lambda: drain() if not host.running else None,
    }
    conn.send(("ok", snapshot()))
    try:
        while True:
            try:
                cmd, args = conn.recv()
            except (EOFError, OSError):  # the GUI went away: stop cleanly
                break
            if cmd == "close":
                break
            try:
                conn.send(("ok", commands[cmd](*args)))
            except Exception as e:  # the error goes to the window; this process keeps serving
                conn.send(("err", type(e).__name__, str(e)))
    finally:
        host.close()  # the stream closes before anything else goes
        try:
            conn.send(("ok", None))
        except (OSError, ValueError):
            pass
        for s in shms:
            s.close()


# ============================================================================ GUI side
class _ShadowProcessor:
    def __init__(self, desc: dict):
        self._cls = processor_class(desc["kind"])
        self.kind = desc["kind"]
        self.params = self._cls.params
        self.values = np.array([p["value"] for p in desc["params"]], np.float64)
        self.latency = int(desc["latency"])

    def param_index(self, param_id: str) -> int:
        return self._cls.param_index(param_id)

    def get_param(self, param) -> float:
        return float(self.values[param if isinstance(param, int) else self.param_index(param)])


class _ShadowSlot:
    def __init__(self, desc: dict):
        self.id = desc["id"]
        self.processor = _ShadowProcessor(desc)
        self.bypass = bool(desc["bypass"])
        self.mix = float(desc["mix"])

    @property
    def kind(self) -> str:
        return self.processor.kind


class _ShadowChain:
    def __init__(self, slots: list[dict]):
        self.slots = tuple(_ShadowSlot(d) for d in slots)
        self._by_id = {s.id: s for s in self.slots}

    def slot(self, slot_id: str) -> _ShadowSlot:
        try:
            return self._by_id[slot_id]
        except KeyError:
            raise KeyError(f"no slot {slot_id!r}; slots: {list(self._by_id)}") from None

    @property
    def latency(self) -> int:
        return sum(s.processor.latency for s in self.slots)


class EngineProcessError(RuntimeError):
    pass


class RemoteEngineHost(HostBase):
    """HostBase over an engine process. ``plugins``: modules the engine process imports first
    (processors registered outside realtime.dsp.processors); ``probe``: measure, in the engine
    process, when each queued parameter target was applied (``bench gui``)."""

    def __init__(self, preset: dict, config: EngineConfig | None = None, plugins: tuple[str, ...] = (),
                 probe: bool = False):
        self._init_common(config)
        p = validate_preset(preset)  # a bad preset: a clear error before any process starts
        self._rings, self._shms = _make_rings()
        self._meter_ring = self._rings["meter"]
        Ring.compile_record_push()  # the knob/MIDI push, before the first move
        self._pipe = threading.Lock()
        self._proc = None
        ctx = mp.get_context("spawn")  # never fork a process that runs Qt
        self._probe = ctx.Event() if probe else None
        self.probe_ms: list[float] = []  # with probe=True: ms from each set_param to the DSP thread applying it
        self.running = False
        self._conn, child = ctx.Pipe()
        names = {k: s.name for k, s in zip(RINGS, self._shms)}
        self._proc = ctx.Process(target=_serve, args=(child, names, p, asdict(self.config), tuple(plugins),
                                                      self._probe),
                                 name="rtaudio-engine", daemon=True)
        self._proc.start()
        child.close()
        try:
            snap = self._reply(START_TIMEOUT_S)
        except Exception:
            self._shutdown_process()
            raise
        self._take_preset_meta(p)
        self._apply(snap)

    # ---------------------------------------------------------------- pipe
    def _reply(self, timeout: float):
        if not self._conn.poll(timeout):
            raise EngineProcessError(f"the engine process did not answer within {timeout:g} s")
        try:
            msg = self._conn.recv()
        except (EOFError, OSError):
            raise EngineProcessError("the engine process exited") from None
        if msg[0] == "err":
            raise _error(msg[1], msg[2])
        return msg[1]

    def _call(self, cmd: str, *args, timeout: float = START_TIMEOUT_S):
        with self._pipe:
            if self._proc is None or not self._proc.is_alive():
                raise EngineProcessError("the engine process is not running (restart the panel)")
            try:
                self._conn.send((cmd, args))
            except (OSError, ValueError):
                raise EngineProcessError("the engine process exited") from None
            return self._reply(timeout)

    def _apply(self, snap: dict) -> None:
        self.chain = _ShadowChain(snap["slots"])
        self.running = snap["running"]
        self.name, self.description = snap["name"], snap["description"]

    def _structural(self, cmd: str, *args):
        """A structural command; on failure (e.g. the restart after it failed) re-read the engine
        process's chain and state, so the window never shows a chain the engine does not run."""
        try:
            return self._call(cmd, *args)
        except EngineProcessError:
            raise
        except Exception:
            try:
                self._apply(self._call("snapshot"))
            except Exception:
                pass
            raise

    # ---------------------------------------------------------------- structure
    def load_preset(self, preset: dict) -> None:
        p = validate_preset(preset)
        self._apply(self._structural("load_preset", p))
        self._take_preset_meta(p)

    def to_preset(self, name: str | None = None, description: str | None = None) -> dict:
        p = self._call("to_preset", name or self.name, self.description if description is None else description)
        return self._with_midi(p)

    def add_slot(self, kind: str, index: int | None = None) -> str:
        sid, snap = self._structural("add_slot", kind, index)
        self._apply(snap)
        return sid

    def remove_slot(self, slot_id: str) -> None:
        self._apply(self._structural("remove_slot", slot_id))
        self._forget_slot(slot_id)

    def move_slot(self, slot_id: str, delta: int) -> None:
        self._apply(self._structural("move_slot", slot_id, delta))

    def set_config(self, config: EngineConfig) -> None:
        config.validate()
        self.config = config  # the engine process takes it even when the restart then fails
        self._apply(self._structural("set_config", asdict(config)))

    # ---------------------------------------------------------------- life cycle
    def start(self) -> None:
        try:
            self.running = self._call("start")
        except Exception:
            self.running = False
            raise

    def stop(self) -> None:
        self.running = self._call("stop")

    def status(self) -> dict:
        st = self._call("status")
        self.running = st["running"]
        self.probe_ms.extend(st.pop("probe_ms"))
        return st

    def engine_values(self) -> _ShadowChain:
        """The values the engine process holds now (what the DSP thread applied)."""
        return _ShadowChain(self._call("snapshot")["slots"])

    def close(self) -> None:
        self._shutdown_process()

    def _shutdown_process(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                try:
                    with self._pipe:
                        self._conn.send(("close", ()))
                        self._conn.poll(10) and self._conn.recv()
                except (OSError, EOFError, ValueError):
                    pass
                self._proc.join(10)
                if self._proc.is_alive():
                    self._proc.kill()
                    self._proc.join(5)
            self._proc = None
            self._conn.close()
        self.running = False
        for s in getattr(self, "_shms", []):
            s.close()
            try:
                s.unlink()
            except FileNotFoundError:
                pass
        self._shms = []

    # ---------------------------------------------------------------- real-time control (shared memory)
    def _push(self, ring: str, a: float, b: float, c: float, d: float) -> bool:
        return self._rings[ring].push_record(a, b, c, d)

    def _control(self, si: int, pi: int, value: float, kind: int) -> None:
        with self._produce:
            if self._push("control", si, pi, value, kind):
                return
        if not self.running:
            self._call("drain")  # stopped: the engine process applies the backlog now
            with self._produce:
                if self._push("control", si, pi, value, kind):
                    return
        raise EngineError("control queue full: the DSP thread is not keeping up")

    def _index(self, slot_id: str) -> int:
        ids = [s.id for s in self.chain.slots]
        if slot_id not in ids:
            raise EngineError(f"unknown slot {slot_id!r}; slots: {ids}")
        return ids.index(slot_id)

    def set_param(self, slot_id: str, param_id: str, value) -> None:
        si = self._index(slot_id)
        proc = self.chain.slots[si].processor
        pi = proc.param_index(param_id)
        v = proc.params[pi].validate(value, where=f"{slot_id}.")
        self._control(si, pi, v, PARAM)
        proc.values[pi] = v
        if self._probe is not None:
            self._push("probe", si, pi, v, time.perf_counter())
            self._probe.set()

    def _user_slot(self, slot_id: str) -> int:
        si = self._index(slot_id)
        if si == len(self.chain.slots) - 1:
            raise EngineError(f"{slot_id}: the safety stage cannot be bypassed or mixed")
        return si

    def set_bypass(self, slot_id: str, bypass: bool) -> None:
        si = self._user_slot(slot_id)
        self._control(si, 0, 1.0 if bypass else 0.0, BYPASS)
        self.chain.slots[si].bypass = bool(bypass)

    def set_mix(self, slot_id: str, mix: float) -> None:
        mix = float(mix)
        if not 0.0 <= mix <= 1.0:
            raise EngineError(f"{slot_id}.mix: {mix} outside [0, 1]")
        si = self._user_slot(slot_id)
        self._control(si, 0, mix, MIX)
        self.chain.slots[si].mix = mix

    def send_midi(self, status: int, data1: int = 0, data2: int = 0) -> bool:
        with self._produce:
            # stamped here (CLOCK_MONOTONIC is system-wide) so the engine keeps its timing within a block
            return self._push("midi", float(status), float(data1), float(data2), float(time.monotonic_ns()))

    def midi_ring_pending(self) -> int:
        return int(ring_readable(self._rings["midi"].idx))


def _error(kind: str, text: str) -> Exception:
    """Rebuild the engine process's error as the same kind of exception where we know it."""
    from realtime.errors import USER_ERRORS

    for cls in USER_ERRORS + (ValueError, RuntimeError, KeyError, TypeError):
        if cls.__name__ == kind:
            try:
                return cls(text)
            except TypeError:
                break
    return RuntimeError(f"{kind}: {text}")
