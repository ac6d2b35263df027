"""A chain of processor slots, always ending in a Safety stage.

Each slot adds bypass and wet/dry mix. The dry signal is taken from a per-slot delay line and
delayed by the processor's latency, so wet and dry are sample-aligned: mixing never comb-filters
and the chain latency is the same whether a slot is bypassed or not. Bypass is just "mix target
0"; the effective wet weight moves linearly toward its target over 10 ms, so bypass and mix
changes never click. A bypassed processor keeps running: its state stays current (no stale
delay-line audio when it comes back) and the CPU cost is the active cost, which the real-time
budget has to cover anyway.

All methods except ``process`` are for between blocks (the DSP thread applies queued changes
there); ``process`` makes one dry-push kernel call, the processor call and one mix kernel call
per slot, and allocates nothing.

Readouts and load: the chain owns one float32 record (``readout_record``, READOUT_WIDTH values)
that a UI can be sent each block: the microseconds each slot's ``process`` took (the first
MAX_TIMED_SLOTS columns, by slot index), then every processor's readouts, which the processors
write there directly (their ``readings`` are views into it; ``describe`` gives each one's column).
"""
from __future__ import annotations

import math
import numbers
import re
import time

import numpy as np
from numba import njit

from realtime.dsp.blocking import pow2_at_least
from realtime.dsp.processor import Processor
from realtime.dsp.processors.safety import Safety

CROSSFADE_MS = 10.0
READOUT_WIDTH = 128  # float32 values in a readout record: slot timings, then readouts
MAX_TIMED_SLOTS = 32  # slots whose process time is recorded (columns 0..31)
SLOT_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*\Z")  # no dots: overrides say "slot.param=value"


@njit(nogil=True, cache=True)
def _dry_push(block, ring, pos):
    """Append the (unprocessed) block to the slot's dry delay line."""
    mask = ring.shape[0] - 1
    w = pos[0]
    for n in range(block.shape[0]):
        i = (w + n) & mask
        for ch in range(block.shape[1]):
            ring[i, ch] = block[n, ch]
    pos[0] = w + block.shape[0]


@njit(nogil=True, cache=True)
def _dry_mix(block, ring, pos, latency, wst, step, lat, fade_len):
    """block = dry + w * (wet - dry), dry = input delayed by ``latency``; wst = [w, target].

    lat = [delay in use, previous delay, samples left of a crossfade between them]: when the
    processor's latency changes (a look-ahead knob), the dry path fades from its old read position
    to the new one over ``fade_len`` samples, as the processors do, instead of jumping (a click
    when the slot is bypassed or mixed). A change that arrives during a fade waits for its end."""
    if lat[2] == 0 and latency != lat[0]:
        lat[1] = lat[0]
        lat[0] = latency
        lat[2] = fade_len
    w = wst[0]
    target = wst[1]
    if w == 1.0 and target == 1.0:
        lat[2] = max(0, lat[2] - block.shape[0])  # nothing dry is heard; the fade's time passes
        return
    mask = ring.shape[0] - 1
    start = pos[0] - block.shape[0]
    for n in range(block.shape[0]):
        if w < target:
            w = min(target, w + step)
        elif w > target:
            w = max(target, w - step)
        i = (start + n - lat[0]) & mask
        if lat[2] > 0:
            a = lat[2] / fade_len  # the old position's share
            j = (start + n - lat[1]) & mask
            for ch in range(block.shape[1]):
                d = ring[i, ch] + a * (ring[j, ch] - ring[i, ch])
                block[n, ch] = d + w * (block[n, ch] - d)
            lat[2] -= 1
        else:
            for ch in range(block.shape[1]):
                d = ring[i, ch]
                block[n, ch] = d + w * (block[n, ch] - d)
    wst[0] = w


class Slot:
    """A processor in a chain, with an id, bypass and wet/dry mix.

    Parameters
    ----------
    processor : Processor
        What the slot runs.
    id : str, optional
        Unique within the chain (letters, digits, '_' and '-'; no dots); default: the
        processor's kind.
    bypass : bool
        Start bypassed (the processor keeps running; its output is faded out).
    mix : float
        Wet/dry mix, 0 dry .. 1 wet.

    Raises
    ------
    TypeError
        ``processor`` is not a Processor.
    ValueError
        An invalid id or a mix outside [0, 1].
    """

    def __init__(self, processor: Processor, id: str | None = None, bypass: bool = False, mix: float = 1.0):
        if not isinstance(processor, Processor):
            raise TypeError(f"slot {id!r}: {processor!r} is not a Processor")
        self.processor = processor
        self.id = processor.kind if id is None else id
        if not isinstance(self.id, str) or not SLOT_ID_RE.match(self.id):
            raise ValueError(f"slot id {self.id!r} is invalid (letters, digits, '_' and '-'; no dots)")
        self._wst = np.zeros(2, np.float64)  # [current wet weight, target]
        self._failed = False  # its processor raised: dry only (Chain.failures says why)
        self._pos = np.zeros(1, np.int64)  # dry delay-line write counter
        self._lat = np.zeros(3, np.int64)  # dry delay in use, previous one, crossfade left (_dry_mix)
        self._ring = None
        self.bypass = bool(bypass)
        self.mix = mix

    @property
    def kind(self) -> str:
        return self.processor.kind

    @property
    def bypass(self) -> bool:
        return self._bypass

    @bypass.setter
    def bypass(self, value: bool) -> None:
        self._bypass = bool(value)
        self._update_target()

    @property
    def mix(self) -> float:
        return self._mix

    @mix.setter
    def mix(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{self.id}.mix: {value!r} is outside [0, 1]")
        self._mix = float(value)
        self._update_target()

    def _update_target(self) -> None:
        off = getattr(self, "_bypass", False) or getattr(self, "_failed", False)
        self._wst[1] = 0.0 if off else getattr(self, "_mix", 1.0)

    def __repr__(self) -> str:
        return f"Slot({self.kind!r}, id={self.id!r}, bypass={self.bypass}, mix={self.mix:g})"


class SlotLookup:
    """What a chain and a view of one (``realtime.engine.control.ChainView``) share: slots found
    by id and the total latency. Subclasses provide ``slots`` and ``_by_id`` (id -> slot)."""

    def slot(self, slot_id: str):
        """The slot with id ``slot_id``.

        Raises
        ------
        KeyError
            No such slot (the message lists the ids).
        """
        try:
            return self._by_id[slot_id]
        except KeyError:
            raise KeyError(f"no slot {slot_id!r}; slots: {list(self._by_id)}") from None

    @property
    def latency(self) -> int:
        """Total latency in samples (constant under bypass/mix: dry paths are compensated)."""
        return sum(s.processor.latency for s in self.slots)

    @property
    def block_multiple(self) -> int:
        """The frames of every block must be a multiple of this (``Processor.block_multiple``)."""
        return math.lcm(1, *(s.processor.block_multiple for s in self.slots))

    def to_preset(self, name: str, description: str = "") -> dict:
        """The chain's current state as a preset.

        Parameters
        ----------
        name, description : str
            The preset's name and description.

        Returns
        -------
        dict
            A version-1 preset (see realtime.dsp.presets); choices are stored by name, parameters
            whose id starts with "_" (commands) are left out, and an LV2
            plugin with the state extension adds its own state (``"state"``, Turtle; a view of a
            chain has no plugin state to add).

        Raises
        ------
        PluginError
            An LV2 plugin's state could not be saved.
        """
        chain = []
        for s in self.slots:
            p = s.processor
            params = {}
            for d, v in zip(p.params, p.values):
                if d.id.startswith("_"):  # a command (the meter's "_clear_clip"), not a setting to keep
                    continue
                params[d.id] = d.choices[int(round(v))] if d.choices else float(v)
            uri = {"uri": p.uri} if getattr(p, "uri", None) else {}  # a hosted plugin (lv2) names itself
            saved = p.plugin_state() if hasattr(p, "plugin_state") else None  # and keeps its own state (Turtle)
            state = {"state": saved} if saved is not None else {}
            chain.append({"id": s.id, "processor": p.kind, **uri, "bypass": s.bypass, "mix": s.mix, "params": params,
                          **state})
        return {"version": 1, "name": name, "description": description, "chain": chain}


class Chain(SlotLookup):
    """Slots run in order, always ending in a Safety stage (appended if missing).

    Parameters
    ----------
    slots : iterable of Slot
        The slots, in signal order.

    Raises
    ------
    TypeError
        An item is not a Slot.
    ValueError
        Duplicate slot ids, or a final safety stage that is bypassed or mixed.
    """

    def __init__(self, slots):
        slots = list(slots)
        for s in slots:
            if not isinstance(s, Slot):
                raise TypeError(f"{s!r} is not a Slot")
        ids = [s.id for s in slots]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate slot ids: {dup}")
        if not slots or not isinstance(slots[-1].processor, Safety):
            sid, k = "safety", 2
            while sid in ids:
                sid, k = f"safety{k}", k + 1
            slots.append(Slot(Safety(), sid))
        final = slots[-1]
        if final.bypass or final.mix != 1.0:
            raise ValueError(f"{final.id}: the final safety stage cannot be bypassed or mixed")
        self._slots = tuple(slots)
        self._fx = self._slots[:-1]  # slots with dry paths; the final safety has none
        # slot id -> what its processor raised; such a slot plays its dry path until prepared again
        self.failures: dict[str, str] = {}
        self._safety = final.processor
        self._by_id = {s.id: s for s in slots}
        # processors that take MIDI (a synth): the engine's DSP thread forwards events to them
        self._midi = tuple(s.processor for s in slots if callable(getattr(s.processor, "handle_midi", None)))
        self._prepared = False
        self.sample_rate = 0.0
        self.max_block = 0
        self.channels = 0
        self._step = 1.0
        self._fade_len = 1
        # one record per block for UIs: slot process times (us), then readouts (see the module docstring)
        self.readout_record = np.zeros((1, READOUT_WIDTH), np.float32)
        self._readout_offsets = []
        col = MAX_TIMED_SLOTS
        for s in slots:
            n = len(s.processor.readouts)
            fits = n and col + n <= READOUT_WIDTH  # beyond the record: the slot keeps them to itself
            self._readout_offsets.append(col if fits else -1)
            col += n if fits else 0
        # (slot, where its time goes, column): slots past MAX_TIMED_SLOTS write to a scratch cell
        load, scratch = self.readout_record[0, :MAX_TIMED_SLOTS], np.zeros(1, np.float32)
        timed = tuple((load, i) if i < MAX_TIMED_SLOTS else (scratch, 0) for i in range(len(slots)))
        self._timed = tuple((s, *t) for s, t in zip(self._fx, timed))
        self._safety_load = timed[-1]

    # -- structure ------------------------------------------------------------------------
    @property
    def slots(self) -> tuple[Slot, ...]:
        return self._slots

    @property
    def safety(self) -> Safety:
        """The final safety stage's processor (every chain ends in one)."""
        return self._safety

    # -- life cycle ---------------------------------------------------------------------------
    def prepare(self, sample_rate: float, max_block: int, channels: int, live: bool = False) -> None:
        """Allocate everything for this rate, largest block and channel count, warm up every
        kernel on silence, then reset (call before ``process``, never while it runs).

        Parameters
        ----------
        sample_rate : float
            Hz.
        max_block : int
            The largest block ``process`` will get, in frames.
        channels : int
            1 or 2.
        live : bool
            A live engine's chain (``Processor.live``): slow work may move off the DSP thread.

        Raises
        ------
        ModelError
            A neural processor's model cannot be loaded.
        """
        self.sample_rate, self.max_block, self.channels = float(sample_rate), int(max_block), int(channels)
        self.failures.clear()
        rec = self.readout_record[0]
        rec.fill(0.0)
        for s, col in zip(self._slots, self._readout_offsets):
            s._failed = False
            s.processor.live = live
            s.processor.prepare(sample_rate, max_block, channels)
            self._bind_readings(s, col)
        for s in self._fx:
            self._new_dry_path(s)
        self._step = 1.0 / max(1.0, CROSSFADE_MS * 1e-3 * self.sample_rate)
        self._fade_len = max(1, round(CROSSFADE_MS * 1e-3 * self.sample_rate))
        self._prepared = True
        # Warm-up: the first call of each kernel loads (or compiles) it, which can take far
        # longer than a block; do it here, on silence, then forget that block.
        self.process(np.zeros((self.max_block, self.channels), np.float32))
        self.reset()

    def prepare_beside(self, running: Chain) -> None:
        """Prepare this chain to take over from ``running`` while ``running`` plays (the engine's
        live swap, ``Engine.swap_chain``), at its rate, largest block and channel count.

        Processors that ``running`` does not hold are prepared and warmed up on silence as
        ``prepare`` does. Processors the two share keep their state, and their slots keep their dry
        paths: the DSP thread runs them meanwhile, so nothing of theirs is touched here (one that
        failed gets its new chance in ``take_over``, on the DSP thread). ``take_over`` finishes the
        swap.

        Raises
        ------
        ModelError
            A new neural processor's model cannot be loaded (``running`` is left as it was).
        ValueError
            A new processor's latency exceeds its ``max_latency``.
        """
        self.sample_rate, self.max_block, self.channels = running.sample_rate, running.max_block, running.channels
        self._step, self._fade_len = running._step, running._fade_len
        self._held = {id(s.processor) for s in running.slots}  # the DSP thread's: left to take_over
        rec = self.readout_record[0]
        rec.fill(0.0)
        self.failures.clear()
        for s, col in zip(self._slots, self._readout_offsets):
            if id(s.processor) not in self._held:
                s._failed = False  # prepared again, as ``prepare`` gives it: another chance
                self._prepare_slot(s, col)
        for s in self._new_and_gone(running)[0]:  # a slot new to the stream: its own dry path
            self._new_dry_path(s)
            self._reset_path(s)
        self._prepared = True

    def _new_and_gone(self, running: Chain) -> tuple[list[Slot], list[Slot]]:
        """(the slots with dry paths this chain has and ``running`` has not, those ``running`` has and
        this chain has not)."""
        mine, theirs = {id(s) for s in self._slots}, {id(s) for s in running._slots}
        return [s for s in self._fx if id(s) not in theirs], [s for s in running._fx if id(s) not in mine]

    def follows_seamlessly(self, running: Chain) -> bool:
        """Whether this chain, prepared beside ``running``, can take over with no fade of the output:
        both share the final safety stage, the slots they share keep their order, and every slot only
        one of them holds has no latency and none to come (``max_latency`` 0), so the total latency
        and every shared slot's timing stay and the stream goes on sample for sample. A shared slot
        that failed is not: ``take_over`` prepares it again and it comes back wet at once.
        Then the slots that leave crossfade to their dry paths before the swap (``leaving``), and the
        new ones from theirs after it (``enter_from_dry``). Adding or removing a gain, an EQ, a synth or
        a zero-latency LV2 plugin is such a change; moving a slot, or adding one with latency, is not."""
        if self._slots[-1] is not running._slots[-1]:
            return False
        mine, theirs = {id(s) for s in self._slots}, {id(s) for s in running._slots}
        if [id(s) for s in self._slots if id(s) in theirs] != [id(s) for s in running._slots if id(s) in mine]:
            return False
        if any(s._failed for s in running._slots if id(s) in mine):
            return False
        new, gone = self._new_and_gone(running)
        return (all(s.processor.latency == 0 and s.processor.max_latency == 0 for s in new + gone)
                and self.latency == running.latency)

    def leaving(self, running: Chain) -> list[Slot]:
        """The slots of ``running`` this chain drops."""
        return self._new_and_gone(running)[1]

    def enter_from_dry(self, running: Chain) -> None:
        """The slots new beside ``running`` start dry and crossfade to their wet/dry target (the slots'
        10 ms crossfade) with this chain's first block: a seamless swap's entry."""
        for s in self._new_and_gone(running)[0]:
            s._wst[0] = 0.0

    def _prepare_slot(self, s: Slot, col: int) -> None:
        """Prepare one slot's processor for a live swap, warm it up on silence (the first calls of its
        kernels load or compile them) and reset it; one that raises in its warm-up plays dry."""
        p = s.processor
        p.live = True
        p.prepare(self.sample_rate, self.max_block, self.channels)
        self._bind_readings(s, col)
        silence = np.zeros((self.max_block, self.channels), np.float32)
        try:
            for _ in range(3):  # as the engine's warm-up: an ONNX session's first runs are slow too
                silence.fill(0.0)
                p.process(silence)
        except Exception as e:  # noqa: BLE001 - as in process: that slot plays dry
            self._slot_failed(s, silence, e)
        p.reset()

    def take_over(self, running: Chain) -> None:
        """The DSP thread's half of a live swap (after ``prepare_beside``, between two blocks): the
        processors both chains hold write their readouts into this chain's record, and a slot whose
        processor failed in ``running`` is prepared again and plays wet again (another chance, as a
        restart gave it), or stays dry with its new error in ``failures``."""
        for s, col in zip(self._slots, self._readout_offsets):
            p = s.processor
            if id(p) not in self._held:
                continue
            if s._failed:
                try:
                    self._prepare_slot(s, col)  # (a warm-up that raises records its failure itself)
                except Exception as e:  # noqa: BLE001 - it stays dry; the engine reports why
                    self.failures[s.id] = f"{type(e).__name__}: {e}"
                if s in self._fx and s._ring.shape[0] < p.max_latency + self.max_block:
                    self._new_dry_path(s)
                if s.id not in self.failures:
                    s._failed = False
                    s._update_target()
                    s._wst[0] = s._wst[1]
            else:
                self._bind_readings(s, col)

    def _bind_readings(self, s: Slot, col: int) -> None:
        """The slot's processor writes its readouts into this chain's record from column ``col``
        (-1: the record has no room for them; the processor keeps them to itself)."""
        if col >= 0:
            s.processor.bind_readings(self.readout_record[0, col:col + len(s.processor.readouts)])

    def _new_dry_path(self, s: Slot) -> None:
        """A silent dry delay line for the slot: room for its largest latency plus one block (the
        block is written before it is read)."""
        s._ring = np.zeros((pow2_at_least(s.processor.max_latency + self.max_block), self.channels), np.float32)

    def reset(self) -> None:
        """Clear every processor's state and the dry paths (silence in, silence out)."""
        for s in self._slots:
            s.processor.reset()
        self._reset_paths()

    def _reset_paths(self) -> None:
        for s in self._fx:
            self._reset_path(s)

    @staticmethod
    def _reset_path(s: Slot) -> None:
        if s.processor.latency > s.processor.max_latency:
            raise ValueError(f"{s.id}: latency {s.processor.latency} exceeds max_latency")
        s._ring.fill(0.0)
        s._pos[0] = 0
        # the target again as bypass, mix and a failure say: a slot whose processor failed, prepared
        # again (its other chance), or one a live swap ran dry before it left, put in a chain again,
        # played dry for good, unbypassed
        s._update_target()
        s._wst[0] = s._wst[1]  # no fade right after a reset
        s._lat[0], s._lat[2] = s.processor.latency, 0

    def process(self, block: np.ndarray) -> None:
        """Run the chain in place on a block.

        Parameters
        ----------
        block : numpy.ndarray
            float32, C-contiguous, shape (frames <= max_block, channels); overwritten with the
            output.

        Raises
        ------
        RuntimeError
            Before ``prepare``.
        ValueError
            A block of the wrong dtype or shape.
        """
        # Cheap guards: a wrong shape would make the kernels write out of bounds, a wrong dtype
        # would trigger a Numba compile on the audio thread.
        if not self._prepared:
            raise RuntimeError("Chain.process before prepare")
        if block.dtype != np.float32 or block.shape[1] != self.channels or block.shape[0] > self.max_block:
            raise ValueError(f"block {block.dtype}{block.shape} does not fit float32 (<= {self.max_block}, "
                             f"{self.channels})")
        step, fade_len = self._step, self._fade_len
        perf = time.perf_counter_ns
        for s, load, col in self._timed:
            p = s.processor
            _dry_push(block, s._ring, s._pos)
            if not s._failed:
                t0 = perf()
                try:
                    p.process(block)
                except Exception as e:  # noqa: BLE001 - a broken plugin must not stop the stream
                    self._slot_failed(s, block, e)
                load[col] = (perf() - t0) * 1e-3
            _dry_mix(block, s._ring, s._pos, p.latency, s._wst, step, s._lat, fade_len)
        t0 = perf()
        self._safety.process(block)
        load, col = self._safety_load
        load[col] = (perf() - t0) * 1e-3

    def _slot_failed(self, s: Slot, block: np.ndarray, e: Exception) -> None:
        """A processor raised mid-stream: from this block on its slot plays the (latency-aligned)
        dry signal, never what the processor left half-written, and the error is kept in
        ``failures`` for the engine to report. Preparing the chain again gives it another chance."""
        s._failed = True
        s._wst[0] = s._wst[1] = 0.0  # all dry, at once
        block.fill(0.0)  # dry + 0 * (wet - dry) must not meet a NaN the processor left
        self.failures[s.id] = f"{type(e).__name__}: {e}"

    # -- between-block control ---------------------------------------------------------------
    @property
    def takes_midi(self) -> bool:
        """Whether a processor of the chain takes MIDI (the synth, an LV2 instrument or MIDI effect)."""
        return bool(self._midi)

    def handle_midi(self, status: int, data1: int = 0, data2: int = 0, offset: int = 0) -> None:
        """Pass one MIDI message to every processor that takes MIDI.

        Parameters
        ----------
        status, data1, data2 : int
            The message bytes.
        offset : int
            Sample of the next block at which it takes effect.
        """
        for p in self._midi:
            p.handle_midi(status, data1, data2, offset)

    def set_param(self, slot_id: str, param_id: str, value) -> None:
        """Set a parameter's target (the processor smooths toward it).

        Raises
        ------
        KeyError
            No such slot.
        ParamError
            No such parameter, or a value its descriptor rejects.
        """
        self.slot(slot_id).processor.set_param(param_id, value)

    def set_bypass(self, slot_id: str, bypass: bool) -> None:
        """Bypass a slot or bring it back (a 10 ms crossfade; the processor keeps running).

        Raises
        ------
        KeyError
            No such slot.
        ValueError
            Bypassing the final safety stage.
        """
        s = self.slot(slot_id)
        if s is self._slots[-1] and bypass:
            raise ValueError(f"{slot_id}: the final safety stage cannot be bypassed")
        s.bypass = bypass

    def set_mix(self, slot_id: str, mix: float) -> None:
        """Set a slot's wet/dry mix (0 dry .. 1 wet; a 10 ms crossfade).

        Raises
        ------
        KeyError
            No such slot.
        ValueError
            A mix outside [0, 1], or any mix but 1 on the final safety stage.
        """
        s = self.slot(slot_id)
        if s is self._slots[-1] and mix != 1.0:
            raise ValueError(f"{slot_id}: the final safety stage has no wet/dry mix")
        s.mix = mix

    # -- description ---------------------------------------------------------------------------
    def describe(self) -> list[dict]:
        """The chain's state for UIs and clients (``realtime.engine.control.ChainView``).

        Returns
        -------
        list of dict
            Per slot: ``id``, ``kind``, ``bypass``, ``mix``, ``latency``, ``removable``,
            ``params``, a dict per descriptor (its fields, plus ``value`` and ``text``),
            ``readouts``, a dict per readout descriptor (its fields, plus ``column``: where its
            value is in ``readout_record``, -1 when the record has no room) and ``load_column``
            (the column of the slot's process time in microseconds, -1 when not timed).
        """
        out = []
        for i, s in enumerate(self._slots):
            p = s.processor
            params = []
            for d, v in zip(p.params, p.values):
                params.append({
                    "id": d.id, "name": d.name, "min": d.min, "max": d.max, "default": d.default,
                    "unit": d.unit, "scale": d.scale, "smoothing_ms": d.smoothing_ms,
                    "choices": list(d.choices), "step": d.step, "value": float(v), "text": d.format(float(v)),
                })
            extra = p.describe_extra() if hasattr(p, "describe_extra") else {}  # an LV2 plugin: uri, name, flags
            col = self._readout_offsets[i]
            readouts = [{"id": r.id, "name": r.name, "unit": r.unit, "min": r.min, "max": r.max, "kind": r.kind,
                         "choices": list(r.choices), "column": col + k if col >= 0 else -1}
                        for k, r in enumerate(p.readouts)]
            out.append({"id": s.id, "kind": p.kind, **extra, "bypass": s.bypass, "mix": s.mix, "latency": p.latency,
                        "removable": s is not self._slots[-1], "params": params, "readouts": readouts,
                        "load_column": i if i < MAX_TIMED_SLOTS else -1})
        return out

