"""Synth voice policy as a player hears it: what voice stealing takes under the sustain pedal, All
Notes Off (CC123) with the pedal down, and notes held through a program change."""
import numpy as np
import pytest

from realtime.dsp.processors.synth import voices as sv
from realtime.dsp.processors.synth.processor import INSTRUMENTS, MODEL_DIR, Synth
from realtime.io.midi_input import RELEASE_ALL

SR, B = 48000, 128
BPS = SR / B  # blocks per second
ON, OFF, CC, PC = 0x90, 0x80, 0xB0, 0xC0


def make(instrument="violin", **params):
    s = Synth(model_dir=MODEL_DIR, instrument=instrument, **params)
    s.prepare(SR, B, 2)
    return s


def run(s, seconds, events=()):
    """Render ``seconds``; events = [(time s, status, d1, d2)] at their exact sample offsets."""
    n = int(round(seconds * BPS))
    at = {}
    for t, st, d1, d2 in events:
        k = int(round(t * SR))
        at.setdefault(k // B, []).append((st, d1, d2, k % B))
    out = np.zeros((n * B, 2), np.float32)
    buf = np.zeros((B, 2), np.float32)
    for i in range(n):
        for st, d1, d2, off in at.get(i, ()):
            s.handle_midi(st, d1, d2, off)
        buf.fill(0)
        s.process(buf)
        out[i * B:(i + 1) * B] = buf
    return out[:, 0].astype(np.float64)


def rms_db(x):
    return 20 * np.log10(max(np.sqrt(np.mean(x ** 2)), 1e-12))


def band_db(x, lo, hi):
    """Level (dB) of the spectrum of x between lo and hi Hz."""
    X = np.abs(np.fft.rfft(x * np.hanning(len(x)))) / len(x)
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return 10 * np.log10(max(np.sum(X[(f >= lo) & (f <= hi)] ** 2), 1e-24))


def sec(x, a, b):
    return x[int(a * SR):int(b * SR)]


def held(s):
    """{note: key down (True) or held by the pedal only (False)} of the voices held (stage ON)."""
    return {int(s.vs[v, sv.V_NOTE]): bool(s.vs[v, sv.V_GATE]) for v in range(sv.MAX_VOICES)
            if s.vs[v, sv.V_STAGE] == sv.ON}


# ------------------------------------------------------------------ stealing under the pedal
def test_a_steal_under_the_pedal_takes_a_pedal_only_note_before_a_key_still_held_down():
    """Voices=4: a bass G3 held down, the pedal down, five short melody notes (their keys up,
    kept by the pedal). The fourth and fifth need a voice: the oldest pedal-only notes go, not the
    held bass, which was the oldest note-on and used to be stolen (the melody rang on, the bass
    the player still holds went silent)."""
    s = make(polyphony=4)
    ev = [(0.0, ON, 55, 100), (0.0, CC, 64, 127)]
    for i, n in enumerate((72, 74, 76, 77, 79)):
        ev += [(0.3 + 0.2 * i, ON, n, 100), (0.4 + 0.2 * i, OFF, n, 0)]
    y = run(s, 1.6, ev)
    assert held(s) == {55: True, 76: False, 77: False, 79: False}  # 72 and 74 were stolen
    assert s.active_voices() == 4
    # by ear: the band of G3's fundamental and 2nd harmonic (the melody's lowest partial is at
    # 523 Hz) keeps its level to the end
    before = band_db(sec(y, 0.1, 0.3), 150, 450)
    after = band_db(sec(y, 1.35, 1.6), 150, 450)
    assert after > before - 6, (before, after)
    assert np.isfinite(y).all()


def test_steal_order_releasing_then_pedal_only_then_held_keys():
    """Voices=3, long release. A released note (its tail) goes first, then pedal-only notes oldest
    first; keys still down go last, oldest first."""
    s = make(polyphony=3, release_ms=3000)
    run(s, 0.2, [(0.0, ON, 60, 100), (0.05, OFF, 60, 0)])  # 60 releasing (pedal up)
    run(s, 0.2, [(0.0, CC, 64, 127), (0.0, ON, 55, 100), (0.05, ON, 72, 100), (0.1, OFF, 72, 0)])
    assert held(s) == {55: True, 72: False} and s.active_voices() == 3  # 60's tail sounds still
    run(s, 0.1, [(0.0, ON, 74, 100)])  # takes the releasing voice
    assert held(s) == {55: True, 72: False, 74: True} and s.active_voices() == 3
    run(s, 0.1, [(0.0, OFF, 74, 0), (0.05, ON, 76, 100)])  # 72 and 74 pedal-only: the oldest, 72, goes
    assert held(s) == {55: True, 74: False, 76: True}
    run(s, 0.1, [(0.0, ON, 77, 100)])  # 74, the last pedal-only note
    assert held(s) == {55: True, 76: True, 77: True}
    run(s, 0.1, [(0.0, ON, 79, 100)])  # only keys down are left: the oldest, the bass
    assert held(s) == {76: True, 77: True, 79: True}


def test_lowering_the_voices_knob_releases_pedal_only_notes_first():
    s = make(polyphony=8)
    run(s, 0.2, [(0.0, ON, 55, 100), (0.0, CC, 64, 127), (0.05, ON, 72, 100), (0.1, OFF, 72, 0),
                 (0.12, ON, 74, 100)])
    s.set_param("polyphony", 2)
    run(s, 0.05)
    assert held(s) == {55: True, 74: True}


# ------------------------------------------------------------------ all notes off and the pedal
def test_all_notes_off_with_the_pedal_down_leaves_the_notes_to_the_pedal():
    """MIDI 1.0: All Notes Off acts as a note-off for every note, so with the sustain pedal down
    the notes sound on until the pedal is up. It used to release them at once (-60 dB in 0.3 s)."""
    s = make(release_ms=50)
    y = run(s, 1.5, [(0.0, CC, 64, 127), (0.0, ON, 60, 100), (0.0, ON, 64, 100), (0.5, CC, 123, 0),
                     (1.0, CC, 64, 0)])
    before = rms_db(sec(y, 0.3, 0.5))
    for a in (0.5, 0.6, 0.7, 0.8, 0.9):  # pedal still down: every 100 ms keeps its level
        assert rms_db(sec(y, a, a + 0.1)) > before - 3, (a, before, rms_db(sec(y, a, a + 0.1)))
    assert rms_db(sec(y, 1.3, 1.5)) < before - 60  # the pedal up released them
    assert held(s) == {} and s.active_voices() == 0
    # without the pedal, all notes off releases at once, as before
    y = run(s, 0.6, [(0.0, ON, 60, 100), (0.3, CC, 123, 0)])
    assert held(s) == {} and rms_db(sec(y, 0.5, 0.6)) < rms_db(sec(y, 0.1, 0.3)) - 60


def test_all_notes_off_keeps_the_pedal_held_notes_in_the_voice_table():
    s = make()
    run(s, 0.1, [(0.0, CC, 64, 127), (0.0, ON, 60, 100), (0.0, ON, 64, 100), (0.05, CC, 123, 0)])
    assert held(s) == {60: False, 64: False}  # kept by the pedal only now
    run(s, 0.1, [(0.0, ON, 60, 100)])  # a key struck again: a new voice, the old one released
    assert held(s) == {60: True, 64: False}
    run(s, 0.1, [(0.0, CC, 64, 0)])
    assert held(s) == {60: True}


def test_the_lost_midi_port_release_and_all_sound_off_still_silence_pedal_held_notes():
    """Callers that mean "stop": a lost MIDI port sends sustain off then all notes off on every
    channel (RELEASE_ALL); panic is all sound off (CC120). Both end pedal-held notes."""
    s = make(release_ms=50)
    run(s, 0.3, [(0.0, CC, 64, 127), (0.0, ON, 60, 100), (0.1, OFF, 60, 0), (0.1, ON, 67, 100)])
    for m in RELEASE_ALL:
        s.handle_midi(*m, 0)
    y = run(s, 0.5)
    assert held(s) == {} and s.active_voices() == 0 and rms_db(y[-B:]) < -100
    run(s, 0.3, [(0.0, CC, 64, 127), (0.0, ON, 60, 100), (0.1, OFF, 60, 0), (0.1, ON, 67, 100)])
    s.panic()
    y = run(s, 0.1)
    assert s.active_voices() == 0 and rms_db(y[-B:]) < -100


# ------------------------------------------------------------------ program change mid-song
PROGRAM = {"violin": 40, "flute": 73, "trumpet": 56}


@pytest.mark.parametrize("new", ["flute", "trumpet"])
def test_notes_held_through_a_program_change_keep_sounding_without_a_click(new):
    """A GM file changes program while notes are held. Freeing every voice cut them to -93 dB
    until their note-offs; they go on in the new timbre, without a hole or a click."""
    s = make("violin")
    t_pc = 0.7
    y = run(s, 1.6, [(0.0, PC, PROGRAM["violin"], 0), (0.0, ON, 60, 100), (0.5, ON, 64, 100),
                     (t_pc, PC, PROGRAM[new], 0), (1.0, OFF, 60, 0), (1.0, OFF, 64, 0)])
    assert s.get_param("instrument") == INSTRUMENTS.index(new) and s.readings[2] == INSTRUMENTS.index(new)
    assert np.isfinite(y).all()
    before = rms_db(sec(y, 0.55, 0.7))
    assert abs(rms_db(sec(y, 0.75, 0.95)) - before) < 4  # the same notes, at about their level
    for k in range(20):  # no hole: every 5 ms of the first 100 ms after the change sounds
        a = t_pc + 0.005 * k
        assert rms_db(sec(y, a, a + 0.005)) > before - 10, (k, before, rms_db(sec(y, a, a + 0.005)))
    # no click: around the change no sample step exceeds the steady sound's own, either side of it
    step = np.abs(np.diff(y))
    p = int(t_pc * SR)
    steady = max(step[p - SR // 10:p - 200].max(), step[p + SR // 20:p + SR // 4].max())
    assert step[p - 200:p + SR // 20].max() <= 1.25 * steady
    # and their note-offs still end them
    assert rms_db(sec(y, 1.45, 1.6)) < before - 60 and s.active_voices() == 0


def test_a_release_tail_through_a_program_change_fades_on():
    """Notes released just before the change: their tails go on decaying in the new timbre, without
    a bump (a deep tail stays on the new decoder's silence state)."""
    s = make("violin", release_ms=300)
    y = run(s, 1.3, [(0.0, ON, 60, 100), (0.0, ON, 64, 100), (0.6, OFF, 60, 0), (0.6, OFF, 64, 0),
                     (0.7, PC, PROGRAM["trumpet"], 0)])
    assert np.isfinite(y).all()
    lv = [rms_db(sec(y, a, a + 0.02)) for a in np.arange(0.62, 1.0, 0.02)]
    assert lv[3] > -60  # it sounded still when the program changed (0.68-0.70 s)
    assert min(lv[:10]) > -80, np.round(lv)  # and goes on after it (freeing the voices cut it to nothing)
    assert all(b < a + 4 for a, b in zip(lv, lv[1:])), np.round(lv)  # decaying, never bumping up
    run(s, 0.5)
    assert s.active_voices() == 0

