"""The control plane: one writer for the engine and its GUI client, the chain view, the MIDI
controller map applied on the MIDI thread (no Qt, no audio server)."""
import threading

import numpy as np
import pytest

from gui.host import EngineHost
from realtime.dsp.presets import build_chain, load_preset
from realtime.dsp.processors import processor_class
from realtime.engine.config import EngineConfig
from realtime.engine.control import (
    BYPASS,
    MIX,
    PARAM,
    CCMap,
    ChainView,
    ControlRings,
    ControlWriter,
    Record,
    apply_record,
)
from realtime.engine.engine import Engine
from realtime.errors import EngineError, ParamError


@pytest.fixture
def chain():
    return build_chain(load_preset("default"))  # hpf, gain, limiter, meter, safety


@pytest.mark.parametrize("view", [False, True])
def test_writer_validates_and_queues_the_same_records_on_a_chain_or_its_view(chain, view):
    target = ChainView(chain.describe()) if view else chain
    rings = ControlRings()
    w = ControlWriter(rings, target)
    assert w.set_param("gain", "gain_db", -6) == Record(1, 0, -6.0, PARAM)
    assert w.set_param("hpf", "type", "lowpass").value == 1.0
    assert w.set_bypass("meter", True) == Record(3, 0, 1.0, BYPASS)
    assert w.set_mix("limiter", 0.25) == Record(2, 0, 0.25, MIX)
    assert w.set_target("gain.gain_db", 1.0).value == processor_class("gain").params[0].max
    assert w.set_target("gain.mix", 0.5) == Record(1, 0, 0.5, MIX)
    assert w.set_target("gain.bypass", 0.9).kind == BYPASS
    assert rings.pushed() == 7
    rec = np.zeros((7, 4))
    assert rings.control.pop(rec) == 7
    for r in rec:  # applied to the view as the DSP thread applies them to the chain
        apply_record(target, int(r[0]), int(r[1]), r[2], int(r[3]))
    assert target.slot("gain").processor.get_param("gain_db") == 24.0
    assert target.slot("hpf").processor.get_param("type") == 1.0
    assert target.slot("meter").bypass and target.slot("limiter").mix == 0.25
    assert target.slot("gain").mix == 0.5 and target.slot("gain").bypass


@pytest.mark.parametrize("producer", ["engine", "view"])
def test_control_values_are_validated_before_queueing(producer):
    """The engine and the GUI's client (a writer on a chain view) refuse the same things."""
    chain = build_chain(load_preset("default"))
    rings = ControlRings()
    eng = Engine(chain, EngineConfig(), rings=rings) if producer == "engine" else \
        ControlWriter(rings, ChainView(chain.describe()))
    with pytest.raises(ValueError, match="gain_db"):
        eng.set_param("gain", "gain_db", 99)
    with pytest.raises(ParamError):
        eng.set_param("gain", "nope", 0)
    with pytest.raises(EngineError, match="unknown slot"):
        eng.set_param("nope", "gain_db", 0)
    with pytest.raises(EngineError, match="safety stage cannot be bypassed"):
        eng.set_bypass("safety", True)
    with pytest.raises(EngineError, match="safety stage cannot be bypassed or mixed"):
        eng.set_mix("safety", 1.0)
    with pytest.raises(EngineError, match="mix"):
        eng.set_mix("gain", 1.5)
    assert rings.pushed() == 0  # nothing invalid was queued
    with pytest.raises(ValueError, match="no such parameter"):
        ControlWriter(rings, chain).set_target("gain.nope", 0.5)


def test_chain_view_has_the_chains_shape_from_describe(chain):
    chain.set_param("gain", "gain_db", -3.0)
    chain.set_bypass("meter", True)
    v = ChainView(chain.describe())
    assert [s.id for s in v.slots] == [s.id for s in chain.slots]
    assert [s.kind for s in v.slots] == [s.kind for s in chain.slots]
    for sv, s in zip(v.slots, chain.slots):
        assert sv.processor.params == s.processor.params  # the same descriptors, rebuilt
        np.testing.assert_array_equal(sv.processor.values, s.processor.values)
        assert (sv.bypass, sv.mix) == (s.bypass, s.mix)
    assert v.latency == chain.latency
    assert v.slot("gain").processor.get_param("gain_db") == -3.0
    with pytest.raises(KeyError, match="no slot"):
        v.slot("nope")


def test_a_full_queue_is_an_error_unless_the_owner_makes_room():
    chain = build_chain(load_preset("default"))
    rings = ControlRings()
    w = ControlWriter(rings, chain)
    for _ in range(rings.control.capacity):
        w.set_param("gain", "gain_db", -1)
    with pytest.raises(EngineError, match="control queue full"):
        w.set_param("gain", "gain_db", -2)
    eng = Engine(chain, EngineConfig(), rings=rings)  # stopped: it applies the backlog when full
    eng.set_param("gain", "gain_db", -2)
    assert chain.slot("gain").processor.get_param("gain_db") == -2.0 and rings.control.readable() == 0


def test_a_stopped_engine_applies_control_at_once_and_stamps_when():
    eng = Engine(build_chain(load_preset("default")), EngineConfig())
    seq = eng.rings.pushed()
    assert eng.rings.applied_at(seq) is None
    eng.set_param("gain", "gain_db", -12)
    eng.set_mix("limiter", 0.5)
    assert eng.chain.slot("gain").processor.get_param("gain_db") == -12.0 and eng.chain.slot("limiter").mix == 0.5
    t0, t1 = eng.rings.applied_at(seq), eng.rings.applied_at(seq + 1)
    assert t0 is not None and t1 >= t0 and eng.rings.applied_at(seq + 2) is None


def test_cc_map_learns_forgets_and_round_trips_a_preset():
    m = CCMap([{"cc": 7, "channel": None, "target": "gain.gain_db"}])
    assert m.controller(3, 7) == ("gain.gain_db", False)  # any channel
    assert m.controller(0, 8) == (None, False)
    m.learn("limiter.ceiling_db")
    assert m.controller(2, 21) == ("limiter.ceiling_db", True)
    assert m.controller(2, 21) == ("limiter.ceiling_db", False)
    m.learn("limiter.ceiling_db")  # learning again moves the mapping
    m.controller(0, 22)
    assert m.mapping_of("limiter.ceiling_db") == (22, 0)
    assert m.to_preset() == [{"cc": 7, "channel": None, "target": "gain.gain_db"},
                             {"cc": 22, "channel": 0, "target": "limiter.ceiling_db"}]
    m.forget_slot("gain")
    assert list(m.targets.values()) == ["limiter.ceiling_db"]
    m.learn("hpf.freq_hz")  # a controller already mapped moves to the knob that learns it
    m.controller(0, 22)
    assert m.mapping_of("limiter.ceiling_db") is None and m.mapping_of("hpf.freq_hz") == (22, 0)
    m.learn("hpf.q")
    m.forget_slot("hpf")  # the slot of the knob waiting to learn goes: the learn is cancelled
    assert m.controller(0, 30) == (None, False) and m.targets == {}


def test_a_mapped_controller_moves_the_engine_from_the_midi_thread_without_qt():
    """The MIDI thread applies the mapping itself: nothing waits for an event loop (none runs
    here); the window is only told afterwards."""
    p = load_preset("default")
    p["midi"] = [{"cc": 74, "channel": 2, "target": "gain.gain_db"}, {"cc": 75, "channel": None, "target": "meter.bypass"}]
    host = EngineHost(p, EngineConfig())
    told = []
    host.on_cc = lambda target, rec: told.append((target, rec.kind, rec.value, threading.current_thread().name))
    midi = threading.Thread(target=lambda: (host.midi_in(0xB0 | 2, 74, 127), host.midi_in(0xB0, 75, 100)),
                            name="midi-in")
    midi.start()
    midi.join()
    assert host.engine.chain.slot("gain").processor.get_param("gain_db") == 24.0
    assert host.engine.chain.slot("meter").bypass
    assert told == [("gain.gain_db", PARAM, 24.0, "midi-in"), ("meter.bypass", BYPASS, 1.0, "midi-in")]
    errors = []
    host.on_midi_error = errors.append
    host.remove_slot("meter")  # the mapping goes with the slot
    host.cc_map.targets[(76, None)] = "limiter.nope"
    host.midi_in(0xB0, 76, 1)
    assert errors and "limiter.nope" in errors[0]
    host.forget("limiter.nope")
    assert host.to_preset()["midi"] == [{"cc": 74, "channel": 2, "target": "gain.gain_db"}]


def test_a_mapped_controller_drives_its_knob_only_and_a_learn_replaces_the_mappings_it_overlaps():
    """A controller mapped to a knob no longer also reaches the chain (the mod wheel learnt onto
    Brightness added vibrato too; CC7 mapped anywhere changed the synth's volume); unmapped ones
    still do. Learning CC20 on channel 2 replaces an any-channel CC20 mapping, which went on
    driving its old target from the other channels and was saved beside the new one."""
    p = load_preset("default")
    p["midi"] = [{"cc": 20, "channel": None, "target": "limiter.ceiling_db"},
                 {"cc": 20, "channel": 3, "target": "hpf.freq_hz"}]
    host = EngineHost(p, EngineConfig())
    sent = []
    host.send_midi = lambda *msg: sent.append(msg[:3]) or True  # what goes on to the chain (less the stamp)
    host.midi_in(0xB0, 1, 100)  # the mod wheel, unmapped
    host.midi_in(0xB0, 20, 64)  # mapped (any channel)
    host.midi_in(0x90, 60, 100)
    assert sent == [(0xB0, 1, 100), (0x90, 60, 100)]
    host.learn("gain.gain_db")
    host.midi_in(0xB0 | 1, 20, 64)
    assert host.cc_map.targets == {(20, 1): "gain.gain_db", (20, 3): "hpf.freq_hz"}  # channel 4's own stays
    assert host.cc_map.mapping_of("limiter.ceiling_db") is None
    assert {m["target"] for m in host.to_preset()["midi"]} == {"gain.gain_db", "hpf.freq_hz"}
