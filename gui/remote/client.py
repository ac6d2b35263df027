"""The window's side of the engine process: ``RemoteEngineHost`` (see ``gui.remote``)."""
from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import threading
import time
from dataclasses import asdict
from multiprocessing import resource_tracker

from gui.host import HostBase
from gui.remote.shm import CRASH_SITE, create_rings, zero_rings
from realtime.dsp.presets import validate_preset
from realtime.engine.config import EngineConfig
from realtime.engine.control import (
    ChainView,
    ControlRings,
    ControlWriter,
    Record,
    apply_record,
)
from realtime.errors import EngineError, interrupt_signals, signals_blocked
from realtime.io import crash_site

START_TIMEOUT_S = 60.0
STATUS_TIMEOUT_S = 5.0  # the window polls every second: an engine that stalls must not freeze it for long
HUNG_STATUS_TIMEOUT_S = 0.25  # polls after one timed out
DRAIN_TIMEOUT_S = 2.0  # a full control ring while stopped: a knob move or a MIDI controller waits this long at most
CLOSE_ANSWER_S = 1.5  # an engine process that does not take "close" within this is killed (a window closing waits)
CLOSE_EXIT_S = 10.0  # one that took it has this long to close its stream and plugins
# signals that mean the process crashed (a plugin's code, most likely), not that it was ended
CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT)


class EngineProcessError(RuntimeError):
    """The engine process did not answer, or is gone."""


class _RingFull(Exception):
    """The control ring is full while the engine is stopped: ``_queue`` has the backlog applied
    (outside ``rings.lock``) and tries again."""


class RemoteEngineHost(HostBase):
    """``HostBase`` over an engine process.

    ``chain`` is a ``ChainView`` of the engine process's chain, refreshed after every structural
    change and updated with every change this client queues.

    Parameters
    ----------
    preset : dict
        The chain to run (validated here first: a bad preset fails before any process starts).
    config : EngineConfig, optional
        Stream settings.
    plugins : tuple of str
        Modules the engine process imports first (processors registered outside
        realtime.dsp.processors; register them in this process too, for preset validation).

    Raises
    ------
    EngineProcessError
        The engine process did not come up.
    """

    threaded_calls = True  # they only wait for the engine process; they serialise on ``_pipe``

    def __init__(self, preset: dict, config: EngineConfig | None = None, plugins: tuple[str, ...] = ()):
        p = validate_preset(preset)
        with _group_signals_held():
            resource_tracker.ensure_running()  # (started by the first segment otherwise: without the hold)
            rings, self._names, self._shms = create_rings()
        self._init_common(config, rings)
        self._writer = ControlWriter(rings, ChainView([]), on_full=self._full_while_stopped)
        ControlRings.compile()  # the knob/MIDI push, before the first move
        # the engine process, its pipe and the commands on it; reentrant: a restart closes the old
        # process and starts the new one under it (a window closing meanwhile waits, or kills)
        self._pipe = threading.RLock()
        self._proc = None
        self._plugins = tuple(plugins)
        self._hung = False  # the last command timed out: the process may be alive but stuck
        # a structural command timed out: the engine process may have changed its chain after all, so
        # ``chain`` (what knob moves are addressed by) is not to be trusted until re-read (``status``)
        self._view_stale = False
        # a preset whose load was given up on (``load_preset``) and the engine process's count of loads
        # then (``_loads``: from its snapshots), until a snapshot says whether it went in
        self._late_preset: tuple[dict, int] | None = None
        self._loads = 0
        self._view_renewed = False  # ... and was re-read since the window last asked (``chain_renewed``)
        self._lost = False  # the audio server or device went while it played, and nothing played since
        self._crash_said = None  # the engine process whose crash report was printed
        self._lv2_states: dict[str, str] = {}  # LV2 slots' own state, from the last preset that had it
        self.running = False
        try:
            self._spawn(p)
        except Exception:
            self._shutdown_process()
            raise
        self._take_preset_meta(p)

    def _take_preset_meta(self, p: dict) -> None:
        super()._take_preset_meta(p)
        self._keep_states(p, replace=True)

    def _keep_states(self, p: dict, replace: bool = False) -> None:
        """Remember the LV2 plugin states a preset carries (what a restart gives back)."""
        if replace:
            self._lv2_states = {}
        self._lv2_states.update({e["id"]: e["state"] for e in p["chain"] if "state" in e})

    def _view_preset(self, name: str, description: str) -> dict:
        """The preset of the chain the panel shows (``chain``: every knob, bypass and mix this client
        set), with the MIDI mappings and the LV2 states known here."""
        p = self.chain.to_preset(name, description)
        for e in p["chain"]:
            if e["id"] in self._lv2_states:
                e["state"] = self._lv2_states[e["id"]]
        return self._with_midi(p)

    def _spawn(self, p: dict) -> None:
        """Start an engine process on the rings, running preset ``p``, and take its first snapshot."""
        ctx = mp.get_context("spawn")  # never fork a process that runs Qt
        self._conn, child = ctx.Pipe()
        from gui.remote.server import serve

        self._seq = 0  # of the last command sent (the start's reply is 0)
        self._hung = self._view_stale = False  # a new process runs the chain the panel shows
        self._late_preset = None
        if self._closed:  # closed from another thread during a restart
            raise EngineProcessError("the panel's engine connection is closed")
        proc = ctx.Process(target=serve, args=(child, self._names, p, asdict(self.config), self._plugins),
                           name="rtaudio-engine", daemon=True)
        with _group_signals_held():  # the engine unblocks them once it ignores them (``serve``)
            proc.start()
        self._proc = proc  # started: one that can be killed
        child.close()
        self._apply(self._reply(START_TIMEOUT_S))

    def restart_engine(self) -> list[str]:
        """A fresh engine process, stopped, running the chain the panel shows: every slot, knob,
        bypass, mix and MIDI mapping as this client last set them (after the old process died or
        hung; a live one is closed first). Returns the ids of hosted LV2 slots: what such a plugin
        keeps beyond its controls (its state extension) starts again from the plugin's own.

        Raises
        ------
        EngineProcessError
            The host is closed, or the new process did not come up (then no engine runs).
        """
        if self._closed:
            raise EngineProcessError("the panel's engine connection is closed")
        with self.rings.lock, self._pipe:  # no knob, MIDI push or learn meanwhile; no command
            p = self._view_preset(self.name, self.description)
            self._stop_process()
            with self._reading:  # nobody produces now, and the window's meter poll waits: every ring starts empty
                zero_rings(self._shms)
            try:
                self._spawn(p)
            except Exception:
                self._stop_process()
                raise
        return [s.id for s in self.chain.slots if s.processor.uri and s.id not in self._lv2_states
                and s.processor.describe_extra().get("has_state")]

    # ---------------------------------------------------------------- pipe
    def _reply(self, timeout: float):
        """The reply to command ``self._seq``; replies to commands given up on (timed out) are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._conn.poll(max(0.0, deadline - time.monotonic())):
                self._hung = True
                raise EngineProcessError(f"the engine process did not answer within {timeout:g} s")
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                raise self._not_running() from None
            if msg[-1] == self._seq:
                break
        self._hung = False
        if msg[0] == "err":
            raise _error(msg[1], msg[2])
        return msg[1]

    def engine_alive(self) -> bool:
        proc = self._proc  # once: ``close`` (another thread) may set it to None between two reads
        return proc is not None and proc.is_alive()

    def engine_hung(self) -> bool:
        """Alive, but its last command timed out (a restart kills it at once)."""
        return self._hung and self.engine_alive()

    def _not_running(self) -> EngineProcessError:
        self.running = False
        return EngineProcessError(f"{self._gone()} (Restart engine brings it back)")

    def _gone(self) -> str:
        """Why the engine process is gone: a crash (a plugin's code crashing it: the plugin named by
        the marks it left, ``crash_site``), a kill (the system's out-of-memory killer), or an exit."""
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.join(0.5)  # a pipe found closed before the process ended: its exit status comes a moment later
        code = None if proc is None else proc.exitcode
        if code is None or code >= 0:
            return "the engine process is not running" + ("" if code is None else f" (it exited, status {code})")
        try:
            sig = signal.Signals(-code)
        except ValueError:
            return f"the engine process is not running (signal {-code} ended it)"
        if sig not in CRASH_SIGNALS:
            return f"the engine process is not running ({sig.name} ended it" + (
                ": killed, or the system ran out of memory)" if sig == signal.SIGKILL else ")")
        where = [s for s in self._shms if s.name == self._names.get(CRASH_SITE)]
        sites, sure = crash_site.read(where[0].buf) if where else ([], False)
        if where and proc is not self._crash_said:  # the stacks of the crash, once, where the window's go
            self._crash_said = proc
            text = crash_site.report_text(where[0].buf)
            if text:
                print(f"engine process: {text.rstrip()}", file=sys.stderr)
        if sure:
            label, doing = sites[0]
            return f"the engine process crashed ({sig.name}) in {label} {doing}; leave it out of the chain"
        if sites:  # the crash came on a thread with no mark (a plugin's own): those plugins' code ran then
            running = "; ".join(f"{label} {doing}" for label, doing in sites)
            return f"the engine process crashed ({sig.name}); plugin code running then: {running}"
        return f"the engine process crashed ({sig.name})"

    def _call(self, cmd: str, *args, timeout: float = START_TIMEOUT_S):
        with self._pipe:
            if not self.engine_alive():
                raise self._not_running()
            self._seq += 1
            try:
                self._conn.send((self._seq, cmd, args))
            except (OSError, ValueError):
                raise self._not_running() from None
            return self._reply(timeout)

    def _apply(self, snap: dict) -> None:
        # the chain and its state; the preset's name is this side's (``_take_preset_meta``, Save
        # renames it here): copying the engine process's back after every change undid a Save as
        self.chain = self._writer.chain = ChainView(snap["slots"])
        self.running = snap["running"]
        self._loads = snap.get("loads", 0)
        # the engine process takes commands in order: the first snapshot since a load given up on
        # says whether it went in after all (then its name, description, mappings and states are
        # the chain's: matching the slots' ids took another preset's name, with the same ids, for it)
        late, self._late_preset = self._late_preset, None
        if late is not None and self._loads > late[1]:
            self._take_preset_meta(late[0])

    def _structural(self, cmd: str, *args):
        """A structural command, with producers held off meanwhile (``rings.lock``); on failure
        (e.g. the restart after it failed) re-read the engine process's chain and state, so the
        window never shows a chain the engine does not run."""
        with self.rings.lock:
            try:
                return self._call(cmd, *args)
            except EngineProcessError:
                self._view_stale = self._view_stale or self._hung  # given up on: it may finish all the same
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
        with self.rings.lock:
            try:
                snap = self._structural("load_preset", p)
            except EngineProcessError:
                if self._view_stale:  # given up on: the next snapshot says whether it went in after all
                    self._late_preset = (p, self._loads)
                raise
            self._apply(snap)
            self._take_preset_meta(p)

    def to_preset(self, name: str | None = None, description: str | None = None) -> dict:
        name, description = name or self.name, self.description if description is None else description
        if not self.engine_alive() or self._hung:  # Save still works: what the panel shows, the states known here
            return self._view_preset(name, description)
        p = self._call("to_preset", name, description)
        self._keep_states(p)
        return self._with_midi(p)

    def add_slot(self, kind: str, index: int | None = None, uri: str | None = None) -> str:
        with self.rings.lock:
            sid, snap = self._structural("add_slot", kind, index, uri)
            self._apply(snap)
        return sid

    def insert_slot(self, entry: dict, index: int, midi: dict | None = None) -> str:
        """As ``EngineHost.insert_slot`` (the engine process builds the slot)."""
        with self.rings.lock:
            sid, snap = self._structural("insert_slot", entry, index)
            self._apply(snap)
            self._keep_states({"chain": [entry]})
            self._restore_mappings(midi or {})
        return sid

    def remove_slot(self, slot_id: str) -> None:
        with self.rings.lock:
            self._apply(self._structural("remove_slot", slot_id))
            self._forget_slot(slot_id)
            self._lv2_states.pop(slot_id, None)

    def move_slot(self, slot_id: str, delta: int) -> bool:
        """As ``EngineHost.move_slot``: a move that changes nothing is not sent (the engine process
        would fade the output out and in for it)."""
        i, j = self._move_places(slot_id, delta)
        if i == j:
            return False
        with self.rings.lock:
            self._apply(self._structural("move_slot", slot_id, delta))
        return True

    def set_config(self, config: EngineConfig) -> None:
        config.validate()
        self.config = config  # the engine process takes it even when the restart then fails
        with self.rings.lock:
            self._apply(self._structural("set_config", asdict(config)))

    # ---------------------------------------------------------------- life cycle
    def start(self) -> None:
        try:
            self.running = self._call("start")
        except Exception:
            self.running = False
            raise
        self._lost = False

    def stop(self) -> None:
        self.running = self._call("stop")

    def status(self) -> dict:
        # once a poll timed out, later polls wait only briefly: the window must not freeze each second
        st = self._call("status", timeout=HUNG_STATUS_TIMEOUT_S if self._hung else STATUS_TIMEOUT_S)
        if self._view_stale:  # it answers again: its chain as it is now, which the window redraws
            with self.rings.lock:
                before = {s.id for s in self.chain.slots}
                self._apply(self._call("snapshot"))
                for gone in before - {s.id for s in self.chain.slots}:  # (a late removal or preset's)
                    self._forget_slot(gone)
                    self._lv2_states.pop(gone, None)
                self._view_stale, self._view_renewed = False, True
        self.running = st["running"]
        # a loss stays known once stopped (the next start's engine no longer says it); a stream that
        # came back (a server paused, then resumed) forgets it
        self._lost = st.get("device_lost", False) or (self._lost and not self.running)
        return st

    def chain_renewed(self) -> bool:
        """Whether ``chain`` was re-read from the engine process since the last call (a structural
        command it did not answer in time finished after all, or failed): the window redraws it."""
        renewed, self._view_renewed = self._view_renewed, False
        return renewed

    def device_lost(self) -> bool:
        """The audio server or device went while the engine played, and no start worked since: the
        engine process's PortAudio still holds the old server's client (a start then failed with
        "Insufficient memory", or aborted the process), or one started meanwhile looked while no
        server ran (PortAudio lists a JACK server only if it ran then), so only a new process opens
        a stream again (``restart_engine``)."""
        return self._lost

    def engine_values(self) -> ChainView:
        """The values the engine process holds now (what the DSP thread applied; while stopped,
        everything queued)."""
        return ChainView(self._call("snapshot")["slots"])

    def close(self) -> None:
        self._shutdown_process()

    def _shutdown_process(self) -> None:
        with self._reading:  # no meter read is under way, and none follows
            self._closed = True  # no push from now on, and a restart under way on another thread stops short
        self._stop_process()
        with self.rings.lock:  # no knob or MIDI push is under way, and none follows: the rings' memory goes
            for s in getattr(self, "_shms", []):
                s.close()
                try:
                    s.unlink()
                except FileNotFoundError:
                    pass
            self._shms = []

    def _stop_process(self) -> None:
        """Close the engine process and its pipe. One that stopped answering is killed: at once when a
        command timed out or its audio server died (``device_lost``), else when it does not take the
        "close" within CLOSE_ANSWER_S (closing the window waited 20 s for it); one that took it, when
        it has not exited within CLOSE_EXIT_S.
        A command another thread waits for (the window's action) has CLOSE_ANSWER_S to end first;
        then its process is killed, which ends it."""
        while not self._pipe.acquire(timeout=CLOSE_ANSWER_S):
            proc = self._proc
            if proc is not None:
                proc.kill()
        try:
            if self._proc is not None:
                # (one whose audio server died: its PortAudio would abort, or hang, at its exit)
                if self._proc.is_alive() and not self._hung and not self._lost and self._ask_close():
                    self._proc.join(CLOSE_EXIT_S)
                if self._proc.is_alive():
                    self._proc.kill()  # also ends a stopped (SIGSTOP) process
                    self._proc.join(5)
                self._proc = None
                self._conn.close()
            self.running = False
        finally:
            self._pipe.release()

    def _ask_close(self) -> bool:
        """Send "close"; whether the engine process took it (it answers before it closes its stream)."""
        try:
            self._seq += 1
            self._conn.send((self._seq, "close", ()))
            return self._conn.poll(CLOSE_ANSWER_S)
        except (OSError, EOFError, ValueError):
            return False

    # ---------------------------------------------------------------- real-time control (shared memory)
    def _full_while_stopped(self) -> None:
        """The writer's ``on_full`` (under ``rings.lock``): stopped, the backlog can be applied, but
        not from here: the pipe call would hold the other producer (GUI or MIDI thread) on the lock."""
        if not self.running:
            raise _RingFull

    def _apply_backlog(self) -> None:
        """Stopped with a full control ring: the engine process applies what was queued. Refused at
        once when it is known to hang (each knob move or controller message waited a minute for it,
        the window frozen), and waited for briefly otherwise."""
        if self.engine_hung():
            raise EngineProcessError("the engine process is not answering (Restart engine brings it back)")
        if not self._pipe.acquire(timeout=DRAIN_TIMEOUT_S):  # another command under way (a start, a change)
            raise EngineError("control queue full: the engine process is busy with another command")
        try:
            self._call("drain", timeout=DRAIN_TIMEOUT_S)
        finally:
            self._pipe.release()

    def _queue(self, op: str, *args) -> Record:
        """Queue a change through the writer and show it in ``chain`` (GUI and MIDI threads)."""
        try:
            return self._push(op, *args)
        except _RingFull:
            pass
        self._apply_backlog()
        try:
            return self._push(op, *args)
        except _RingFull:
            raise EngineError("control queue full: the engine process did not take the backlog") from None

    def _push(self, op: str, *args) -> Record:
        with self.rings.lock:
            if self._closed or not self.engine_alive():  # nobody would ever apply it
                raise self._not_running()
            if self._view_stale:  # addressed by a chain the engine process may no longer run: the wrong knob
                raise EngineProcessError("the engine process has not answered the last change of the chain: "
                                         "the controls wait until it does (or Restart engine)")
            rec = getattr(self._writer, op)(*args)
            apply_record(self.chain, *rec)
            return rec

    def set_param(self, slot_id: str, param_id: str, value) -> None:
        self._queue("set_param", slot_id, param_id, value)

    def set_bypass(self, slot_id: str, bypass: bool) -> None:
        self._queue("set_bypass", slot_id, bypass)

    def set_mix(self, slot_id: str, mix: float) -> None:
        self._queue("set_mix", slot_id, mix)

    def set_target(self, target: str, unit: float) -> Record:
        """Set ``slot.param`` (or slot.bypass / slot.mix) from a 0..1 controller position."""
        return self._queue("set_target", target, unit)

    def send_midi(self, status: int, data1: int = 0, data2: int = 0, at_ns: int | None = None) -> bool:
        """Queue a MIDI message for the engine process; ``at_ns``: when it came (default now)."""
        t = time.monotonic_ns() if at_ns is None else at_ns  # CLOCK_MONOTONIC is system-wide: the engine's clock
        with self.rings.lock:
            if self._closed:
                return False
            return self.rings.midi.push_record(float(status), float(data1), float(data2), float(t))


def _group_signals_held():
    """Ctrl-C, Ctrl-\\ and a closed terminal reach the whole process group, and a process started
    here inherits them blocked, pending until it has said how it takes them. The engine process
    ignores them (the window closes it in order): one in its first second of imports printed a
    KeyboardInterrupt traceback. The shared-memory tracker never unblocks them: SIGHUP killed it, and
    its successor printed a KeyError traceback per segment the window then unlinked."""
    return signals_blocked(s for s in interrupt_signals() if s != signal.SIGTERM)  # SIGTERM: how the window ends it


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
