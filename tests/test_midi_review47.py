"""MIDI and synth, review 47: a mono key list that went stale across a switch to poly (a note with no
key down), a learn completed by the sustain pedal coming up (the pedal stayed down in the synth for
good), and all sound off in the same block as a note-on (the note never sounded at large block
sizes, so a render depended on -b). Each test failed before its fix."""
import numpy as np
import pytest

from realtime.dsp.processors.synth import voices as sv
from realtime.dsp.processors.synth.processor import MODEL_DIR, Synth

ON, OFF, CC = 0x90, 0x80, 0xB0


def _synth(block=128, **params):
    s = Synth(model_dir=MODEL_DIR, instrument="violin", **params)
    s.prepare(48000, block, 2)
    return s


def _play(s, blocks, messages=()):
    for m in messages:
        s.handle_midi(*m, 0)
    buf = np.zeros((s.max_block, 2), np.float32)
    for _ in range(blocks):
        buf.fill(0)
        s.process(buf)
    return buf


def _db(x) -> float:
    return 20 * np.log10(max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), 1e-12))


def test_keys_let_go_in_poly_leave_monos_list():
    """Mono: C4 and E4 held; the Mode knob to poly; both keys let go; back to mono, G4 played and
    let go: E4 sounded on with no key down (mono falls back to the last key still held)."""
    s = _synth(mode=1)
    _play(s, 4, [(ON, 60, 100), (ON, 64, 100)])
    s.set_param("mode", 0)
    _play(s, 100, [(OFF, 64, 0), (OFF, 60, 0)])
    s.set_param("mode", 1)
    _play(s, 10, [(ON, 67, 100)])
    _play(s, 200, [(OFF, 67, 0)])
    assert s.sounding_notes() == [] and _db(_play(s, 50)) < -120
    # the fall-back itself still works: a key held in mono sounds again when the later one goes
    _play(s, 10, [(ON, 60, 100), (ON, 67, 100)])
    _play(s, 10, [(OFF, 67, 0)])
    assert s.sounding_notes() == [60]


def _render(block: int, events, length=48000) -> np.ndarray:
    s = _synth(block=block)
    out, i = np.zeros((length, 2), np.float32), 0
    for pos in range(0, length, block):
        n = min(block, length - pos)
        while i < len(events) and events[i][0] < pos + n:
            s.handle_midi(*events[i][1:], events[i][0] - pos)
            i += 1
        buf = np.zeros((n, 2), np.float32)
        s.process(buf)
        out[pos:pos + n] = buf
    return out[:, 0]


def test_all_sound_off_in_a_notes_block_lets_it_sound_until_then_at_any_block_size():
    """A note-on 400 samples before CC120: at -b 1024 both fell in one block and the note was never
    heard (-83 dB against -49 dB at -b 64), and every later sample differed (the noise generator)."""
    events = [(1100, ON, 60, 100), (1500, CC, 120, 0), (4800, ON, 67, 100)]
    small, large = _render(64, events), _render(1024, events)
    assert _db(large[1100:1500]) > -60 and abs(_db(large[1100:1500]) - _db(small[1100:1500])) < 0.5
    assert np.abs(large - small).max() < 1e-6
    assert _db(large[2100:4800]) < -100  # silent within ~10 ms of the CC120 (its fade), as before


def test_a_learn_completed_by_a_pedal_leaves_the_chains_pedal_up():
    """The pedal down while playing, a learn asked for, the foot lifted: the pedal-up completed the
    learn and moved the knob only; the synth kept the pedal down, and every later note rang on."""
    pytest.importorskip("PyQt6")
    from gui.host import EngineHost
    from realtime.dsp.presets import load_preset
    from realtime.engine.config import EngineConfig

    s = _synth()
    host = EngineHost(load_preset("default"), EngineConfig())
    try:
        host.send_midi = lambda st, d1=0, d2=0, at_ns=None: s.handle_midi(st, d1, d2, 0) or True
        host.midi_in(CC, 64, 127)
        host.midi_in(ON, 60, 100)
        _play(s, 10)
        host.learn("limiter.ceiling_db")
        host.midi_in(CC, 64, 0)  # the foot comes up: the learn takes CC64
        assert host.mapping_of("limiter.ceiling_db") == (64, 0)
        _play(s, 1)
        assert s.g[sv.G_SUST] == 0.0
        host.midi_in(OFF, 60, 0)
        _play(s, 1000)
        assert s.sounding_notes() == []
        host.learn("limiter.release_ms")
        host.midi_in(CC, 74, 30)  # a controller without a known resting value: nothing more is sent
        assert host.mapping_of("limiter.release_ms") == (74, 0)
    finally:
        host.close()
