"""The engine as the GUI drives it: chain structure, start/stop, parameters, MIDI, MIDI learn.

No Qt here (the window calls it; tests and the benchmark call it directly). Two hosts share one
interface (``HostBase``): ``EngineHost`` runs the engine in this process; the window's default,
``gui.remote.RemoteEngineHost``, runs an ``EngineHost`` in a process of its own and talks to it
over shared-memory rings (see there for why). Both drive the engine through the one control API
of ``realtime.engine.control``.

A structural change (add/remove/reorder a slot, a removed slot put back, a new preset) builds a
new Chain from the same Slot objects (no model is loaded twice), which a running engine takes
live (``Engine.swap_chain``: seamless for a zero-latency slot added or removed, else a short fade
out and in; the stream and its JACK connections stay); new audio settings, or an engine that cannot
swap, restart the engine. The final safety slot always stays last.

Threads: the GUI thread and the MIDI input thread both produce into the control and MIDI rings;
they serialise on ``rings.lock`` (producers only: the DSP thread consuming never touches it).
A structural change holds it too, so a controller never addresses a slot of a chain that is
being replaced. A mapped MIDI controller is applied on the MIDI thread (``midi_in``): the window
is only told afterwards, to show the new value.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np

from realtime.dsp.chain import Chain, Slot
from realtime.dsp.presets import build_chain, validate_preset
from realtime.dsp.processors import create, slot_class
from realtime.dsp.processors.safety import CLIPPED
from realtime.engine import callback as cb
from realtime.engine.config import EngineConfig
from realtime.engine.control import CC, CCMap, ControlRings, Record, resting_message
from realtime.engine.engine import Engine
from realtime.engine.ring import ring_pop, ring_readable

FULL_STATS_S = 5.0


class HostBase:
    """What both hosts share: the MIDI controller map and MIDI learn, meter reading.

    Subclasses provide ``chain``, ``set_param``, ``set_bypass``, ``set_mix``, ``set_target``
    and ``send_midi``; ``rings`` is the ``ControlRings`` the engine reads.
    """

    # whether a window may wait for this host's structural calls on a worker thread (gui.actions):
    # an engine in this process works in them itself, and callers expect it done when they return
    threaded_calls = False

    def engine_alive(self) -> bool:
        """Whether the engine can still take changes (an engine process can die; one in this process cannot)."""
        return True

    def engine_hung(self) -> bool:
        """Whether the engine is alive but stopped answering (an engine process can hang)."""
        return False

    def chain_renewed(self) -> bool:
        """Whether ``chain`` was re-read from an engine process since the last call (one that did
        not answer a structural change in time): the window redraws the rack."""
        return False

    def device_lost(self) -> bool:
        """Whether the audio device or server went since the engine last played, so that only a
        new engine process opens a stream again (``RemoteEngineHost``; one in this process cannot)."""
        return False

    def _init_common(self, config: EngineConfig | None, rings: ControlRings) -> None:
        self.config = config or EngineConfig()
        self.rings = rings
        self.cc_map = CCMap()
        self.on_cc = None  # called (target, Record) from the MIDI thread after a mapped controller moved it
        self.on_learned = None  # called (target, cc, channel) from the MIDI thread
        self.on_midi_error = None  # called (message) from the MIDI thread when a controller's change failed
        self._meter_buf = np.zeros((1024, 8), np.float32)
        self._readout_buf = np.zeros(rings.readout.buf.shape, np.float32)
        self._audio_buf = np.zeros(rings.audio.buf.shape, np.float32)
        # set by ``close``: the rings' memory may be gone (an engine process's shared memory is
        # unmapped), so the readers below read nothing more: a late poll would touch freed memory
        self._closed = False
        # held by the readers below while they pop: the window reads the meters while an action on a
        # worker thread may empty the rings (an engine process restarted) or unmap them (closed); a
        # reader's read index written back after that would corrupt the ring
        self._reading = threading.Lock()

    def _move_places(self, slot_id: str, delta: int) -> tuple[int, int]:
        """Where ``move_slot(slot_id, delta)`` takes a processor from and to (the same place when
        it is already at that end); the final safety stage stays last."""
        ids = [s.id for s in self.chain.slots[:-1]]
        if slot_id not in ids:
            raise ValueError(f"{slot_id}: not a movable slot")
        i = ids.index(slot_id)
        return i, max(0, min(len(ids) - 1, i + delta))

    @property
    def midi_map(self) -> dict[tuple[int, int | None], str]:
        """(controller, channel or None) -> target, as mapped now."""
        return self.cc_map.targets

    def _take_preset_meta(self, p: dict) -> None:
        self.name, self.description = p["name"], p["description"]
        self.cc_map = CCMap(p.get("midi", []))

    def _with_midi(self, p: dict) -> dict:
        if self.cc_map.targets:
            p["midi"] = self.cc_map.to_preset()
        return validate_preset(p)

    def _forget_slot(self, slot_id: str) -> None:
        self.cc_map.forget_slot(slot_id)

    def _restore_mappings(self, midi: dict[tuple[int, int | None], str]) -> None:
        """A slot put back gets its controllers' mappings again, but not one of a controller mapped to
        another control since on an overlapping channel (the same, or either on any): as a learn
        replaces its controller's mapping on any channel, the later learn wins, and no controller
        drives two controls."""
        now = self.cc_map.targets
        back = {k: t for k, t in midi.items() if not any(_same_messages(k, held) for held in now)}
        self.cc_map.targets = {**back, **now}

    def value(self, slot_id: str, param_id: str) -> float:
        return self.chain.slot(slot_id).processor.get_param(param_id)

    # MIDI in + learn
    def midi_in(self, status: int, data1: int = 0, data2: int = 0, at_ns: int | None = None) -> None:
        """One incoming MIDI message (MIDI thread; ``at_ns``: when it came, on
        ``time.monotonic_ns()``'s clock, default now). A controller completes a learn and moves
        its mapped target here, then ``on_cc`` tells the window. A mapped controller drives its
        knob only; every other message goes on to the chain (a synth wants the mod wheel and
        sustain while they are not mapped; the mod wheel learnt onto a knob also added vibrato)."""
        if status & 0xF0 == CC:
            ch = status & 0x0F
            target, learned = self.cc_map.controller(ch, data1)
            if learned and self.on_learned:
                self.on_learned(target, data1, ch)
            if learned and (rest := resting_message(status, data1)) is not None:
                self.send_midi(*rest, at_ns)  # the chain hears no more of it: left at rest, not held
            if target is not None:
                try:
                    rec = self.set_target(target, data2 / 127.0)
                except Exception as e:  # e.g. a full queue: the window says so
                    if self.on_midi_error is None:
                        raise
                    self.on_midi_error(f"MIDI CC {data1} -> {target}: {e}")
                else:
                    if self.on_cc:
                        self.on_cc(target, rec)
                return
        self.send_midi(status, data1, data2, at_ns)

    def learn(self, target: str | None) -> None:
        """Map the next controller that moves to ``target`` (None cancels)."""
        self.cc_map.learn(target)

    def forget(self, target: str) -> None:
        self.cc_map.forget(target)

    def mapping_of(self, target: str) -> tuple[int, int | None] | None:
        return self.cc_map.mapping_of(target)

    def read_meters(self) -> np.ndarray | None:
        """Max peak and mean square over every block since the last call (8 values: input peak
        L/R, output peak L/R, input ms L/R, output ms L/R), or None when no block came."""
        buf = self._drain(self.rings.meter, self._meter_buf)
        return None if buf is None else np.concatenate((buf[:, :4].max(axis=0), buf[:, 4:].mean(axis=0)))

    def read_readouts(self) -> np.ndarray | None:
        """The readout records of every block since the last call ((n, READOUT_WIDTH) float32: each
        slot's process time in microseconds, then the readouts; columns in ``chain.describe()``), or
        None when no block came. A view, valid until the next call."""
        return self._drain(self.rings.readout, self._readout_buf)

    def read_audio(self) -> np.ndarray | None:
        """The audio tap's frames since the last call ((n, 4) float32: input left, right, output left,
        right; a mono stream's one channel in both), or None when none came. A view, valid until the
        next call."""
        return self._drain(self.rings.audio, self._audio_buf)

    def _drain(self, ring, buf: np.ndarray) -> np.ndarray | None:
        """What ``ring`` holds (as much as ``buf`` takes), popped into ``buf``: a view of it, or None
        when it is empty or the host closed (its rings' memory may be gone)."""
        with self._reading:
            if self._closed:
                return None
            n = min(int(ring_readable(ring.idx)), buf.shape[0])
            if n == 0:
                return None
            ring_pop(ring.buf, ring.idx, buf, n)
        return buf[:n]


class EngineHost(HostBase):
    """The engine in this process.

    Parameters
    ----------
    preset : dict
        The chain to run (validated first).
    config : EngineConfig, optional
        Stream settings.
    rings : ControlRings, optional
        The rings every engine this host makes reads (the engine process passes shared-memory
        ones written by its client); by default new ones in this process.
    """

    # a running engine takes a new chain live (``_install``); False: it restarts, as before (`bench swap`)
    live_swap = True

    def __init__(self, preset: dict, config: EngineConfig | None = None, rings: ControlRings | None = None):
        self._init_common(config, rings if rings is not None else ControlRings())
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

    def load_preset(self, preset: dict) -> None:
        """Replace the chain (validated and built first: a bad preset changes nothing)."""
        p = validate_preset(preset)
        chain = build_chain(p)
        with self.rings.lock:
            try:
                self._install(chain)
            finally:  # the name and MIDI map go with the chain that is in (a swap that failed kept the old one)
                if self.engine is not None and self.engine.chain is chain:
                    self._take_preset_meta(p)

    def to_preset(self, name: str | None = None, description: str | None = None) -> dict:
        self.apply_pending_control()
        return self._with_midi(self.chain.to_preset(name or self.name,
                                                    self.description if description is None else description))

    def add_slot(self, kind: str, index: int | None = None, uri: str | None = None) -> str:
        """Insert a new processor before the safety stage (or at ``index``); returns its id.
        ``uri``: which plugin, for kinds that host one (``lv2``); its id comes from the plugin's name."""
        proc = slot_class(kind, uri)() if uri else create(kind)
        ids = {s.id for s in self.chain.slots}
        base = _slot_id_from(getattr(proc, "describe_extra", dict)().get("plugin_name", "")) if uri else kind
        sid, k = base, 2
        while sid in ids:
            sid, k = f"{base}{k}", k + 1
        fx = list(self.chain.slots[:-1])
        fx.insert(len(fx) if index is None else max(0, min(index, len(fx))), Slot(proc, sid))
        self._restructure(fx)
        return sid

    def insert_slot(self, entry: dict, index: int, midi: dict | None = None) -> str:
        """Put back a slot as ``entry`` (a ``to_preset`` chain entry: kind, plugin, values, bypass,
        mix, an LV2 plugin's own state) describes it, with its id, at ``index`` (before the safety
        stage), and its controllers' ``midi`` mappings (``midi_map``'s items): an undone remove.
        Returns its id.

        Raises
        ------
        ValueError
            The id is taken.
        PresetError
            ``entry`` is no valid slot.
        """
        slot = _slot_from(entry)
        if slot.id in {s.id for s in self.chain.slots}:
            slot.processor.close()
            raise ValueError(f"{slot.id}: a slot of that id is in the chain")
        fx = list(self.chain.slots[:-1])
        fx.insert(max(0, min(index, len(fx))), slot)
        with self.rings.lock:
            self._restructure(fx)
            self._restore_mappings(midi or {})
        return slot.id

    def remove_slot(self, slot_id: str) -> None:
        fx = [s for s in self.chain.slots[:-1] if s.id != slot_id]
        if len(fx) == len(self.chain.slots) - 1:
            raise ValueError(f"{slot_id}: not a removable slot (the final safety stage stays)")
        with self.rings.lock:
            self._restructure(fx)
            self._forget_slot(slot_id)

    def move_slot(self, slot_id: str, delta: int) -> bool:
        """Move a processor ``delta`` places; False when that changes nothing (◀ on the first slot,
        ▶ on the last): then the chain is not swapped either (a swap is a short dip in the output)."""
        i, j = self._move_places(slot_id, delta)
        if j == i:
            return False
        fx = list(self.chain.slots[:-1])
        fx.insert(j, fx.pop(i))
        self._restructure(fx)
        return True

    def _restructure(self, fx: list[Slot]) -> None:
        self._install(Chain(fx + [self.chain.slots[-1]]))

    def set_config(self, config: EngineConfig) -> None:
        config.validate()
        self.config = config
        self._install(self.chain, live=False)

    def _install(self, chain: Chain, live: bool = True) -> None:
        """Swap in a chain (and config). A running engine takes a new chain live (``live``:
        ``Engine.swap_chain``, the stream and its connections stay); otherwise, or when it cannot:
        stop, apply what was queued for the old chain, rebuild the engine, restart if it was
        running. Producers wait meanwhile (``rings.lock``)."""
        with self.rings.lock:
            if live and self._can_swap() and self._swap(chain):
                return
            was_running = self.running
            self.stop()
            self.apply_pending_control()
            if self.engine is not None and not any(t.is_alive() for t in self.engine._threads):
                # slots dropped for good give back their threads and instances now (not while a stuck
                # DSP thread of the old engine may still run them: that would free them under it)
                _close_all_but(self.engine.chain, chain)
            self.engine = Engine(chain, replace(self.config), rings=self.rings)
            self._used = False
            self._device = None
            if was_running:
                self.start()

    def _can_swap(self) -> bool:
        """Whether the engine itself streams, healthy, so that it can take a new chain live."""
        e = self.engine
        return self.live_swap and e is not None and e.running and e.error is None

    def _swap(self, chain: Chain) -> bool:
        """Hand the running engine ``chain``; then close the processors only the old chain had (the
        DSP thread no longer runs them). False: the DSP thread did not take it (a restart follows)."""
        old = self.engine.chain
        try:
            swapped = self.engine.swap_chain(chain)
        except BaseException:  # a new processor failed to prepare (or Ctrl-C): whichever chain plays on stays
            if self.engine.chain is chain:
                _close_all_but(old, chain)
            else:
                _close_all_but(chain, old)
            raise
        if swapped:
            _close_all_but(old, chain)
        return swapped

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        if not self.running:
            self.apply_pending_control()
            # an engine is started once (its counters are per run): a fresh one each time
            if self._used:
                self.engine = Engine(self.engine.chain, replace(self.config), rings=self.rings)
            self._used = True
            self._device = None  # devices may have come or gone since
            self.engine.start()

    def stop(self) -> None:
        if self.engine is not None and self.engine.running:
            self.engine.stop()

    def close(self) -> None:
        self._closed = True  # as an engine process's host: the readers read nothing from now on
        self.stop()
        if self.engine is not None:
            for s in self.engine.chain.slots:
                s.processor.close()

    def apply_pending_control(self) -> None:
        """While stopped: apply the control queued so far to the chain, and drop queued MIDI
        (notes held while nothing played must not sound at the next start)."""
        if self.engine is not None and not self.engine.running:
            self.engine.apply_pending_control()
            self.rings.midi.clear()

    # ------------------------------------------------------------------ control (GUI and MIDI threads)
    def set_param(self, slot_id: str, param_id: str, value) -> None:
        with self.rings.lock:
            self.engine.set_param(slot_id, param_id, value)

    def set_bypass(self, slot_id: str, bypass: bool) -> None:
        with self.rings.lock:
            self.engine.set_bypass(slot_id, bypass)

    def set_mix(self, slot_id: str, mix: float) -> None:
        with self.rings.lock:
            self.engine.set_mix(slot_id, mix)

    def set_target(self, target: str, unit: float) -> Record:
        """Set ``slot.param`` (or slot.bypass / slot.mix) from a 0..1 controller position."""
        with self.rings.lock:
            rec = self.engine.writer.set_target(target, unit)
            if not self.engine.running:
                self.engine.apply_pending_control()
            return rec

    def send_midi(self, status: int, data1: int = 0, data2: int = 0, at_ns: int | None = None) -> bool:
        return self.engine.send_midi(status, data1, data2, at_ns)

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        """Engine stats + latency + device name + the safety stage's clip count + each hosted
        plugin's bad output and reset counts (``slot_faults``) + the engine's ``notices`` said since
        the last call (each once: the window shows them in its banner). The engine's full stats
        (percentiles over its long timing histories: milliseconds of numpy in the process whose
        DSP thread needs the GIL) are refreshed every FULL_STATS_S; the counters the window shows
        each second are read straight from the callback's stats array."""
        e = self.engine
        now = time.monotonic()
        if (self._full is None or self._full[0] is not e or now - self._full[1] > FULL_STATS_S or not e.running
                or self._full[2]["blocks_processed"] < 2000):  # young histories are cheap: fresh figures early
            self._full = (e, now, e.stats())
        st = dict(self._full[2])
        arr = e.stats_arr
        st.update(callbacks=int(arr[cb.ST_CALLBACKS]), late_blocks=int(arr[cb.ST_LATE_BLOCKS]),
                  server_xruns=int(arr[cb.ST_SERVER_XRUNS]), late_blocks_ours=e.diagnostics.late_blocks_ours,
                  late_blocks_stolen=e.diagnostics.late_blocks_stolen, error=e.error,
                  processor_errors=dict(getattr(e.chain, "failures", {})),
                  late_context=list(e.diagnostics.late_context), **e.dsp_page_faults(),
                  device_lost=bool(getattr(e, "_device_lost", False)),  # (the monitor's finding; not in stats)
                  notices=_take_notices(e))
        st.update(e.latency())
        st["running"] = e.running
        if self._device is None:  # asking PortAudio takes milliseconds: once per configuration
            self._device = _device_name(self.config)
        st["device"] = self._device
        st["jack_client"] = _jack_client() if e.running else None  # whose ports are the stream's (the demo input)
        counters = getattr(self.chain.safety, "counters", None)  # None before the first prepare
        st["safety_clipped"] = int(counters[CLIPPED]) if counters is not None else 0
        st["slot_faults"] = _slot_faults(e.chain)
        return st


def _jack_client() -> str | None:
    """This process's PortAudio JACK client's name (None: PortAudio runs no JACK here)."""
    from realtime.io.jackio import portaudio_client  # (its JACK callbacks' Numba: not for every host)

    return portaudio_client()


def _take_notices(engine) -> list[str]:
    """The engine's ``notices`` said since the last status (the server's period changed): taken, so
    each travels once, as ``run`` says each once."""
    notices = getattr(engine, "notices", [])
    return [notices.pop(0) for _ in range(len(notices))]


def _same_messages(a: tuple[int, int | None], b: tuple[int, int | None]) -> bool:
    """Whether two mappings (controller, channel or None: any) answer some of the same messages."""
    return a[0] == b[0] and (a[1] == b[1] or a[1] is None or b[1] is None)


def _slot_faults(chain) -> dict[str, tuple[int, int]]:
    """slot id -> (output samples replaced by 0, instance resets) for the slots that count them (a
    hosted plugin's ``describe_extra``): the counts live in the engine (another process for the
    panel), so they travel with the status."""
    out = {}
    for s in chain.slots:
        extra = s.processor.describe_extra() if hasattr(s.processor, "describe_extra") else {}
        if "bad_output_samples" in extra:
            out[s.id] = (int(extra["bad_output_samples"]), int(extra.get("instance_resets", 0)))
    return out


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


def _slot_from(entry: dict) -> Slot:
    """The slot a preset's chain ``entry`` describes, built as a preset's are."""
    chain = build_chain({"version": 1, "name": entry["id"], "chain": [entry]})
    return chain.slots[0]  # (the safety stage a chain ends with is dropped)


def _close_all_but(chain: Chain, kept: Chain) -> None:
    """Close the processors of ``chain`` that ``kept`` does not run."""
    keep = {id(s.processor) for s in kept.slots}
    for s in chain.slots:
        if id(s.processor) not in keep:
            s.processor.close()


def _slot_id_from(name: str) -> str:
    """A valid slot id (letters, digits, '_', '-'; not starting with a digit) from a plugin's name."""
    import re

    sid = re.sub(r"[^A-Za-z0-9_-]+", "_", name.strip().lower()).strip("_-")[:24]
    return sid if sid and (sid[0].isalpha() or sid[0] == "_") else f"lv2_{sid}".rstrip("_")
