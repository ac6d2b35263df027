"""The engine as the GUI drives it: chain structure, start/stop, parameters, MIDI, MIDI learn.

No Qt here (the window calls it; tests and the benchmark call it directly). Two hosts share one
interface (``HostBase``): ``EngineHost`` runs the engine in this process; the window's default,
``gui.engine_process.RemoteEngineHost``, runs an ``EngineHost`` in a process of its own and
talks to it over shared-memory rings (see there for why).

The engine runs a fixed chain, so a structural change (add/remove/reorder a slot, a new preset,
new audio settings) builds a new Chain from the same Slot objects (no model is loaded twice) and
restarts the engine. The final safety slot always stays last.

Threads: the engine's control and MIDI rings are single-producer. The GUI thread and the MIDI
input thread both produce, so every push goes through ``_produce`` (a lock on the producer side
only; the DSP thread consuming the rings never touches it).
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np

from realtime.dsp.chain import Chain, Slot
from realtime.dsp.presets import build_chain, validate_preset
from realtime.dsp.processors import create
from realtime.dsp.processors.safety import CLIPPED
from realtime.engine import callback as cb
from realtime.engine.engine import Engine, EngineConfig
from realtime.engine.ring import ring_pop, ring_readable

CC = 0xB0
FULL_STATS_S = 5.0


class HostBase:
    """What both hosts share: MIDI learn and mappings, controller targets, meter reading.
    Subclasses provide ``chain``, ``set_param``, ``set_bypass``, ``set_mix``, ``send_midi`` and
    ``_meter_ring`` (the ring the engine pushes one 8-value meter record per block into)."""

    def _init_common(self, config: EngineConfig | None) -> None:
        self.config = config or EngineConfig()
        self._produce = threading.Lock()
        self.learning: str | None = None  # target ("slot.param") waiting for a controller
        self.on_cc = None  # called (target, value 0..127) from the MIDI thread for mapped controllers
        self.on_learned = None  # called (target, cc, channel) from the MIDI thread
        self.midi_map: dict[tuple[int, int | None], str] = {}
        self._meter_buf = np.zeros((1024, 8), np.float32)

    def _take_preset_meta(self, p: dict) -> None:
        self.name, self.description = p["name"], p["description"]
        self.midi_map = {(m["cc"], m["channel"]): m["target"] for m in p.get("midi", [])}

    def _with_midi(self, p: dict) -> dict:
        if self.midi_map:
            p["midi"] = [{"cc": cc, "channel": ch, "target": t} for (cc, ch), t in sorted(
                self.midi_map.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1]))]
        return validate_preset(p)

    def _forget_slot(self, slot_id: str) -> None:
        self.midi_map = {k: t for k, t in self.midi_map.items() if t.split(".")[0] != slot_id}

    def value(self, slot_id: str, param_id: str) -> float:
        return self.chain.slot(slot_id).processor.get_param(param_id)

    def set_target(self, target: str, unit: float) -> None:
        """Set ``slot.param`` (or slot.bypass / slot.mix) from a 0..1 controller position; a
        processor parameter wins over the slot's own bypass/mix of the same name."""
        slot_id, _, pid = target.partition(".")
        proc = self.chain.slot(slot_id).processor
        if any(d.id == pid for d in proc.params):
            self.set_param(slot_id, pid, proc.params[proc.param_index(pid)].from_unit(unit))
        elif pid == "bypass":
            self.set_bypass(slot_id, unit >= 0.5)
        elif pid == "mix":
            self.set_mix(slot_id, unit)
        else:
            raise ValueError(f"{target}: no such parameter")

    # MIDI in + learn
    def midi_in(self, status: int, data1: int = 0, data2: int = 0) -> None:
        """One incoming MIDI message (MIDI thread). Controllers feed learn/mappings; everything
        goes on to the chain (a synth wants the mod wheel and sustain)."""
        if status & 0xF0 == CC:
            ch = status & 0x0F
            if self.learning is not None:
                target, self.learning = self.learning, None
                self.midi_map = {k: t for k, t in self.midi_map.items() if t != target}
                self.midi_map[(data1, ch)] = target
                if self.on_learned:
                    self.on_learned(target, data1, ch)
            target = self.midi_map.get((data1, ch)) or self.midi_map.get((data1, None))
            if target is not None and self.on_cc:
                self.on_cc(target, data2)
        self.send_midi(status, data1, data2)

    def learn(self, target: str | None) -> None:
        """Map the next controller that moves to ``target`` (None cancels)."""
        self.learning = target

    def forget(self, target: str) -> None:
        self.midi_map = {k: t for k, t in self.midi_map.items() if t != target}

    def mapping_of(self, target: str) -> tuple[int, int | None] | None:
        for k, t in self.midi_map.items():
            if t == target:
                return k
        return None

    def read_meters(self) -> np.ndarray | None:
        """Max peak and mean square over every block since the last call (8 values: input peak
        L/R, output peak L/R, input ms L/R, output ms L/R), or None when no block came."""
        ring = self._meter_ring
        n = min(int(ring_readable(ring.idx)), self._meter_buf.shape[0])
        if n == 0:
            return None
        buf = self._meter_buf[:n]
        ring_pop(ring.buf, ring.idx, buf, n)
        return np.concatenate((buf[:, :4].max(axis=0), buf[:, 4:].mean(axis=0)))


class EngineHost(HostBase):
    """The engine in this process."""

    def __init__(self, preset: dict, config: EngineConfig | None = None, on_engine=None):
        self._init_common(config)
        self.on_engine = on_engine  # called with every new Engine before it starts (wiring)
        self.engine: Engine | None = None
        self._full = None  # (engine, time, its last full stats)
        self.load_preset(preset)

    # ------------------------------------------------------------------ structure
    @property
    def chain(self) -> Chain:
        return self.engine.chain

    @property
    def running(self) -> bool:
        return self.engine is not None and self.engine.running

    @property
    def _meter_ring(self):
        return self.engine.meter_ring

    def load_preset(self, preset: dict) -> None:
        """Replace the chain (validated and built first: a bad preset changes nothing)."""
        p = validate_preset(preset)
        chain = build_chain(p)
        self._take_preset_meta(p)
        self._install(chain)

    def to_preset(self, name: str | None = None, description: str | None = None) -> dict:
        return self._with_midi(self.chain.to_preset(name or self.name,
                                                    self.description if description is None else description))

    def add_slot(self, kind: str, index: int | None = None) -> str:
        """Insert a new processor before the safety stage (or at ``index``); returns its id."""
        proc = create(kind)
        ids = {s.id for s in self.chain.slots}
        sid, k = kind, 2
        while sid in ids:
            sid, k = f"{kind}{k}", k + 1
        fx = list(self.chain.slots[:-1])
        fx.insert(len(fx) if index is None else max(0, min(index, len(fx))), Slot(proc, sid))
        self._restructure(fx)
        return sid

    def remove_slot(self, slot_id: str) -> None:
        fx = [s for s in self.chain.slots[:-1] if s.id != slot_id]
        if len(fx) == len(self.chain.slots) - 1:
            raise ValueError(f"{slot_id}: not a removable slot (the final safety stage stays)")
        self._restructure(fx)
        self._forget_slot(slot_id)

    def move_slot(self, slot_id: str, delta: int) -> None:
        fx = list(self.chain.slots[:-1])
        ids = [s.id for s in fx]
        if slot_id not in ids:
            raise ValueError(f"{slot_id}: not a movable slot")
        i = ids.index(slot_id)
        j = max(0, min(len(fx) - 1, i + delta))
        fx.insert(j, fx.pop(i))
        self._restructure(fx)

    def _restructure(self, fx: list[Slot]) -> None:
        self._install(Chain(fx + [self.chain.slots[-1]]))

    def set_config(self, config: EngineConfig) -> None:
        config.validate()
        self.config = config
        self._install(self.chain)

    def _new_engine(self, chain: Chain) -> None:
        self.engine = Engine(chain, replace(self.config))
        if self.on_engine:
            self.on_engine(self.engine)

    def _install(self, chain: Chain) -> None:
        """Swap in a chain (and config): stop, rebuild the engine, restart if it was running."""
        was_running = self.running
        self.stop()
        self._new_engine(chain)
        self._used = False
        self._device = None
        if was_running:
            self.start()

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        if not self.running:
            # an engine is started once (its rings and counters are per run): a fresh one each time
            if self._used:
                self._new_engine(self.engine.chain)
            self._used = True
            self._device = None  # devices may have come or gone since
            self.engine.start()

    def stop(self) -> None:
        if self.engine is not None and self.engine.running:
            self.engine.stop()

    def close(self) -> None:
        self.stop()

    # ------------------------------------------------------------------ control (GUI and MIDI threads)
    def set_param(self, slot_id: str, param_id: str, value) -> None:
        with self._produce:
            self.engine.set_param(slot_id, param_id, value)

    def set_bypass(self, slot_id: str, bypass: bool) -> None:
        with self._produce:
            self.engine.set_bypass(slot_id, bypass)

    def set_mix(self, slot_id: str, mix: float) -> None:
        with self._produce:
            self.engine.set_mix(slot_id, mix)

    def send_midi(self, status: int, data1: int = 0, data2: int = 0) -> bool:
        with self._produce:
            return self.engine.send_midi(status, data1, data2)

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        """Engine stats + latency + device name + the safety stage's clip count. The engine's
        full stats (percentiles over its 65k-entry timing histories: milliseconds of numpy in the
        process whose DSP thread needs the GIL) are refreshed every FULL_STATS_S; the counters the
        window shows each second are read straight from the callback's stats array."""
        e = self.engine
        now = time.monotonic()
        if (self._full is None or self._full[0] is not e or now - self._full[1] > FULL_STATS_S or not e.running
                or self._full[2]["blocks_processed"] < 2000):  # young histories are cheap: fresh figures early
            self._full = (e, now, e.stats())
        st = dict(self._full[2])
        arr = e.stats_arr
        st.update(callbacks=int(arr[cb.ST_CALLBACKS]), late_blocks=int(arr[cb.ST_LATE_BLOCKS]),
                  server_xruns=int(arr[cb.ST_SERVER_XRUNS]), late_blocks_ours=e.late_blocks_ours,
                  late_blocks_stolen=e.late_blocks_stolen, error=e.error,
                  late_context=list(e.late_context), **e.dsp_page_faults())
        st.update(e.latency())
        st["running"] = e.running
        if self._device is None:  # asking PortAudio costs ~2 ms: once per configuration
            self._device = _device_name(self.config)
        st["device"] = self._device
        counters = getattr(self.chain.slots[-1].processor, "counters", None)
        st["safety_clipped"] = int(counters[CLIPPED]) if counters is not None else 0
        return st


def _device_name(config: EngineConfig) -> str:
    from realtime.io.portaudio import sd

    def name(dev, kind):
        try:
            return sd().query_devices(dev, kind)["name"]
        except Exception:  # no device: say so, never raise from a status poll
            return "none"

    i = name(config.input_device, "input") if config.mode != "output" else "-"
    o = name(config.output_device, "output") if config.mode != "input" else "-"
    return i if i == o else f"{i} / {o}"
