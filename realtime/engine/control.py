"""The control plane: how other threads (or another process) reach the DSP thread.

Lock-free rings cross into the DSP thread's world, described here once (``RING_SPECS``):
control records (parameter, bypass and mix changes), MIDI messages and, back out, per block one
meter record, one readout record (each slot's process time and the processors' readouts: the
chain's ``readout_record``) and the block's input and output audio, left and right (the audio tap a
spectrum analyser reads; nobody reading just means pushes are dropped). ``ControlRings`` holds them, either in this process's memory or on buffers
the caller provides (the GUI's engine process puts them in shared memory), plus a table of
when the DSP thread applied each control record.

``ControlWriter`` is the one producer-side API: it looks a slot up by id, validates the value
against the parameter's descriptor, enforces that the final safety stage is never bypassed or
mixed, and pushes the record. The engine (``Engine.set_param`` …) and the GUI's client of the
engine process both use it, on a ``Chain`` or on a ``ChainView`` (the same read-only shape,
built from ``Chain.describe()``). ``CCMap`` maps MIDI controllers to targets and is applied by
the MIDI input thread through a writer: a mapped controller never waits for a window.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Mapping, NamedTuple

import numpy as np
from numba import njit

from realtime.dsp.chain import READOUT_WIDTH, SlotLookup
from realtime.dsp.presets import LAST_LEARNABLE_CC
from realtime.dsp.processor import Param, Readout
from realtime.engine.atomics import load_acquire, store_release
from realtime.engine.ring import WRITE, Ring
from realtime.errors import EngineError, ParamError

PARAM, BYPASS, MIX = 0, 1, 2  # control record kinds: (slot index, param index, value, kind)
CC = 0xB0  # MIDI control change (status high nibble)
IDX_BYTES = 16 * 8  # a ring's index block (see realtime.engine.ring)


@dataclass(frozen=True)
class RingSpec:
    """Shape of one ring: ``capacity`` records of ``width`` values of ``dtype``."""

    capacity: int
    width: int
    dtype: type

    @property
    def nbytes(self) -> int:
        """Bytes of a buffer holding the ring: its index block, then its records."""
        return IDX_BYTES + self.capacity * self.width * np.dtype(self.dtype).itemsize

    def on_buffer(self, buffer) -> Ring:
        """A ring whose indices and records live in ``buffer`` (at least ``nbytes``, zeroed)."""
        ring = Ring.__new__(Ring)
        ring.idx = np.ndarray((16,), np.int64, buffer=buffer, offset=0)
        ring.buf = np.ndarray((self.capacity, self.width), self.dtype, buffer=buffer, offset=IDX_BYTES)
        return ring


RING_SPECS = {
    "control": RingSpec(1024, 4, np.float64),  # (slot, param, value, kind)
    "midi": RingSpec(1024, 4, np.float64),  # (status, data1, data2, arrival CLOCK_MONOTONIC ns)
    "meter": RingSpec(1024, 8, np.float32),  # per block: in peak L/R, out peak L/R, in ms L/R, out ms L/R
    "readout": RingSpec(256, READOUT_WIDTH, np.float32),  # per block: the chain's readout_record
    "audio": RingSpec(16384, 4, np.float32),  # per frame: input L/R, output L/R (the spectrum's tap)
    # per control record (by its sequence number modulo the capacity): sequence + 1, and the
    # CLOCK_MONOTONIC ns at which the DSP thread applied it
    "applied": RingSpec(1024, 2, np.int64),
}


@njit(nogil=True, cache=True)
def stamp_applied(applied, seq, count, now_ns):
    """Record that control records ``seq .. seq + count - 1`` were applied at ``now_ns``."""
    mask = applied.shape[0] - 1
    for s in range(seq, seq + count):
        row = applied[s & mask]
        row[1] = now_ns
        store_release(row, 0, s + 1)


@njit(nogil=True, cache=True)
def _applied_at(applied, seq):
    row = applied[seq & (applied.shape[0] - 1)]
    if load_acquire(row, 0) != seq + 1:
        return -1
    return row[1]


class ControlRings:
    """The control, MIDI, meter, readout and audio rings and the applied-at table, in one place.

    Parameters
    ----------
    buffers : mapping of str to buffer, optional
        One zeroed buffer per ``RING_SPECS`` name, at least ``spec.nbytes`` long (e.g. shared
        memory). Without it the rings live in this process's memory.

    Notes
    -----
    Each ring has one producer and one consumer. Several threads of one process may produce
    (the GUI thread and the MIDI input thread): they serialise on ``lock``, which only
    producers take, so the DSP thread consuming never waits on it.
    """

    def __init__(self, buffers: Mapping[str, object] | None = None):
        if buffers is None:
            buffers = {k: np.zeros(s.nbytes, np.uint8) for k, s in RING_SPECS.items()}
        self.control, self.midi, self.meter, self.readout, self.audio = (
            RING_SPECS[k].on_buffer(buffers[k]) for k in ("control", "midi", "meter", "readout", "audio"))
        a = RING_SPECS["applied"]
        self.applied = np.ndarray((a.capacity, a.width), a.dtype, buffer=buffers["applied"], offset=IDX_BYTES)
        self.lock = threading.RLock()

    def pushed(self) -> int:
        """Control records pushed so far: the next record's sequence number."""
        return int(self.control.idx[WRITE])

    def applied_at(self, seq: int) -> int | None:
        """CLOCK_MONOTONIC ns (``time.perf_counter_ns`` on Linux) at which the DSP thread applied
        control record ``seq``; None if it has not yet (or the table has moved on since)."""
        t = int(_applied_at(self.applied, seq))
        return None if t < 0 else t

    @staticmethod
    def compile() -> None:
        """Compile the producers' and the stamp kernels now, not on the first knob move."""
        Ring.compile_record_push()
        scratch = np.zeros((2, 2), np.int64)
        stamp_applied(scratch, 0, 1, 0)
        _applied_at(scratch, 0)


# ---------------------------------------------------------------------------- chain view
class ProcessorView:
    """A processor as ``Chain.describe()`` shows it: kind, descriptors, values, latency."""

    def __init__(self, desc: dict):
        self.kind = desc["kind"]
        self.params = tuple(Param(p["id"], p["name"], p["min"], p["max"], p["default"], unit=p["unit"],
                                  scale=p["scale"], smoothing_ms=p["smoothing_ms"], choices=tuple(p["choices"]),
                                  step=p["step"]) for p in desc["params"])
        self.values = np.array([p["value"] for p in desc["params"]], np.float64)
        self.readouts = tuple(Readout(r["id"], r["name"], r["unit"], r["min"], r["max"], kind=r["kind"],
                                      choices=tuple(r["choices"])) for r in desc.get("readouts", ()))
        self.readout_columns = tuple(r["column"] for r in desc.get("readouts", ()))
        self.latency = int(desc["latency"])
        self._extra = {k: desc[k] for k in ("uri", "plugin_name", "hard_rt", "adaptation", "has_state",
                                            "bad_output_samples", "instance_resets", "presets", "takes_midi") if k in desc}

    def describe_extra(self) -> dict:
        """What the processor adds to ``describe()`` (a hosted plugin: uri, name, flags); else empty."""
        return dict(self._extra)

    @property
    def uri(self) -> str | None:
        """A hosted plugin's URI (None for the project's own processors), as ``Chain.to_preset`` names it."""
        return self._extra.get("uri")

    def param_index(self, param_id: str) -> int:
        for i, p in enumerate(self.params):
            if p.id == param_id:
                return i
        raise ParamError(f"{self.kind}: unknown parameter {param_id!r}; known: {[p.id for p in self.params]}")

    def get_param(self, param) -> float:
        return float(self.values[param if isinstance(param, int) else self.param_index(param)])


class SlotView:
    """A slot as ``Chain.describe()`` shows it (id, kind, bypass, mix, its processor)."""

    def __init__(self, desc: dict):
        self.id = desc["id"]
        self.processor = ProcessorView(desc)
        self.bypass = bool(desc["bypass"])
        self.mix = float(desc["mix"])
        self.load_column = int(desc.get("load_column", -1))  # its process time in a readout record (-1: none)

    @property
    def kind(self) -> str:
        return self.processor.kind


class ChainView(SlotLookup):
    """A read-only copy of a chain's state with ``Chain``'s shape (``slots``, ``slot(id)``,
    ``latency``), for a client that drives a chain living elsewhere (another process).

    Parameters
    ----------
    slots : list of dict
        ``Chain.describe()``'s output.
    """

    def __init__(self, slots: list[dict]):
        self.slots = tuple(SlotView(d) for d in slots)
        self._by_id = {s.id: s for s in self.slots}


def apply_record(chain, si: int, pi: int, value: float, kind: int) -> bool:
    """Apply one control record to a ``Chain`` (the DSP thread, between blocks) or a
    ``ChainView`` (a client mirroring what it sent). The writer validated it against its chain; one
    whose indices this chain does not have (the writer's view of the chain was out of date) is left
    out, False: it raised on the DSP thread, which stopped for good. So is one such a writer cannot
    have meant for the slot its indices land on: a bypass or mix of the final safety stage (which
    the writer refuses; it showed the safety as bypassed, and a preset saved so could not be
    loaded), or a choice beyond the parameter's choices (``describe`` and ``to_preset`` raised
    IndexError on it, and a processor may index a table by it)."""
    if not 0 <= si < len(chain.slots):
        return False
    slot = chain.slots[si]
    if kind == PARAM:
        if not 0 <= pi < len(slot.processor.values):
            return False
        choices = slot.processor.params[pi].choices
        if choices and not 0.0 <= value <= len(choices) - 1:
            return False
        slot.processor.values[pi] = value
    elif kind in (BYPASS, MIX) and si == len(chain.slots) - 1 and slot.kind == "safety":
        return False
    elif kind == BYPASS:
        slot.bypass = bool(value)
    elif kind == MIX:
        slot.mix = value
    else:
        return False
    return True


# ---------------------------------------------------------------------------- writer
class Record(NamedTuple):
    """One control change as queued: slot index, parameter index (0 for bypass/mix), value, kind."""

    slot: int
    param: int
    value: float
    kind: int


class ControlWriter:
    """Validates control changes against a chain and queues them for the DSP thread.

    Parameters
    ----------
    rings : ControlRings
        Where the records go.
    chain : Chain or ChainView
        What slot ids and parameter ids are resolved against (``self.chain`` may be replaced
        when the chain's structure changes).
    on_full : callable, optional
        Called (no arguments) when the control ring is full, before one retry: an owner that
        can apply the backlog (the engine is stopped) does it there.
    """

    def __init__(self, rings: ControlRings, chain, on_full=None):
        self.rings = rings
        self.chain = chain
        self.on_full = on_full

    def slot_index(self, slot_id: str) -> int:
        """Index of slot ``slot_id``.

        Raises
        ------
        EngineError
            No slot has that id.
        """
        ids = [s.id for s in self.chain.slots]
        if slot_id not in ids:
            raise EngineError(f"unknown slot {slot_id!r}; slots: {ids}")
        return ids.index(slot_id)

    def adjustable_index(self, slot_id: str) -> int:
        """Index of a slot the user may bypass or mix: every slot but the final safety stage.

        Raises
        ------
        EngineError
            Unknown slot, or the final safety stage.
        """
        si = self.slot_index(slot_id)
        slots = self.chain.slots
        if si == len(slots) - 1 and slots[si].kind == "safety":
            raise EngineError(f"{slot_id}: the safety stage cannot be bypassed or mixed")
        return si

    def set_param(self, slot_id: str, param_id: str, value) -> Record:
        """Queue ``slot_id.param_id = value``.

        Returns
        -------
        Record
            What was queued (the value as validated).

        Raises
        ------
        EngineError
            Unknown slot, or the queue is full.
        ParamError
            Unknown parameter, or a value its descriptor rejects.
        """
        si = self.slot_index(slot_id)
        proc = self.chain.slots[si].processor
        pi = proc.param_index(param_id)
        return self.push(Record(si, pi, proc.params[pi].validate(value, where=f"{slot_id}."), PARAM))

    def set_bypass(self, slot_id: str, bypass: bool) -> Record:
        """Queue a bypass change (the record's value: 1.0 bypassed, 0.0 active). Raises
        EngineError for an unknown slot, the safety stage or a full queue."""
        return self.push(Record(self.adjustable_index(slot_id), 0, 1.0 if bypass else 0.0, BYPASS))

    def set_mix(self, slot_id: str, mix: float) -> Record:
        """Queue a wet/dry change (0 dry .. 1 wet). Raises EngineError for a mix outside
        [0, 1], an unknown slot, the safety stage or a full queue."""
        mix = float(mix)
        if not 0.0 <= mix <= 1.0:
            raise EngineError(f"{slot_id}.mix: {mix} outside [0, 1]")
        return self.push(Record(self.adjustable_index(slot_id), 0, mix, MIX))

    def set_target(self, target: str, unit: float) -> Record:
        """Set ``slot.param`` (or ``slot.bypass`` / ``slot.mix``) from a 0..1 controller
        position; a processor parameter wins over the slot's own bypass/mix of the same name.

        Returns
        -------
        Record
            What was queued.

        Raises
        ------
        ValueError
            The slot has no such parameter (and it is not bypass or mix).
        """
        slot_id, _, pid = target.partition(".")
        proc = self.chain.slots[self.slot_index(slot_id)].processor
        if any(d.id == pid for d in proc.params):
            return self.set_param(slot_id, pid, proc.params[proc.param_index(pid)].from_unit(unit))
        if pid == "bypass":
            return self.set_bypass(slot_id, unit >= 0.5)
        if pid == "mix":
            return self.set_mix(slot_id, unit)
        raise ValueError(f"{target}: no such parameter")

    def push(self, record: Record) -> Record:
        """Push one validated record; returns it.

        Raises
        ------
        EngineError
            The control queue is full (and ``on_full`` did not make room).
        """
        if self._try_push(record):
            return record
        if self.on_full is not None:
            self.on_full()
            if self._try_push(record):
                return record
        raise EngineError("control queue full: the DSP thread is not keeping up")

    def _try_push(self, record: Record) -> bool:
        with self.rings.lock:
            return self.rings.control.push_record(*record)


# ---------------------------------------------------------------------------- MIDI controllers
# Controllers whose last value an instrument holds as a state, at rest: the mod wheel, breath, foot,
# expression (full), the sustain, sostenuto, soft and hold pedals. Once a learn maps one to a knob
# the chain hears no more of it, so it gets this value then (``resting_message``): a pedal lifted
# to complete a learn stayed down in the synth for good, and every later note rang on.
RESTING_CC = {1: 0, 2: 0, 4: 0, 11: 127, 64: 0, 66: 0, 67: 0, 69: 0}


def resting_message(status: int, cc: int) -> tuple[int, int, int] | None:
    """The message that puts controller ``cc`` of ``status``'s channel at rest (``RESTING_CC``),
    else None (a controller without a known resting value keeps its last one)."""
    rest = RESTING_CC.get(cc)
    return None if rest is None else (status, cc, rest)


class CCMap:
    """MIDI controllers mapped to control targets, and MIDI learn.

    A mapping is ``(cc, channel) -> "slot.param"`` (channel 0..15, or None for any channel;
    the target may also be ``slot.bypass`` or ``slot.mix``), as in a preset's ``midi`` list.

    Parameters
    ----------
    mappings : list of dict, optional
        A validated preset's ``midi`` entries (``{"cc", "channel", "target"}``).
    """

    def __init__(self, mappings=()):
        self.learning: str | None = None  # target waiting for the next controller that moves
        # the mappings before and after the last learn, taken together as it completed (an undo step's)
        self.last_learn: tuple[dict, dict] = ({}, {})
        self.targets: dict[tuple[int, int | None], str] = {(m["cc"], m["channel"]): m["target"] for m in mappings}

    def to_preset(self) -> list[dict]:
        """The mappings as a preset's ``midi`` list (sorted by controller, then channel)."""
        return [{"cc": cc, "channel": ch, "target": t} for (cc, ch), t in sorted(
            self.targets.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1]))]

    def learn(self, target: str | None) -> None:
        """Map the next controller that moves to ``target`` (None cancels)."""
        self.learning = target

    def forget(self, target: str) -> None:
        self.targets = {k: t for k, t in self.targets.items() if t != target}

    def forget_slot(self, slot_id: str) -> None:
        """A removed slot's mappings go, and a learn waiting for one of its knobs is cancelled
        (it would map a controller to a slot that no longer exists, which no preset can save)."""
        self.targets = {k: t for k, t in self.targets.items() if t.split(".")[0] != slot_id}
        if self.learning is not None and self.learning.split(".")[0] == slot_id:
            self.learning = None

    def mapping_of(self, target: str) -> tuple[int, int | None] | None:
        for k, t in self.targets.items():
            if t == target:
                return k
        return None

    def controller(self, channel: int, cc: int) -> tuple[str | None, bool]:
        """The target controller ``cc`` on ``channel`` drives (None: unmapped), and whether
        this message completed a learn (it maps the controller first)."""
        if cc > LAST_LEARNABLE_CC:  # a channel mode message (all notes off, ...): the chain's, never a knob's
            return None, False
        learned = self.learning is not None
        if learned:  # the controller now drives this target alone: its mappings that also match
            before = dict(self.targets)
            target, self.learning = self.learning, None  # this message (same channel, or any) go
            after = {k: t for k, t in before.items() if t != target and not (k[0] == cc and k[1] in (channel, None))}
            after[(cc, channel)] = target
            self.targets = after  # one rebinding: a reader sees the old table or the new one
            self.last_learn = (before, dict(after))
        return self.targets.get((cc, channel)) or self.targets.get((cc, None)), learned
