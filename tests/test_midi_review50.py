"""MIDI and synth, review 50: a re-struck chord written with its note-ons before the old notes'
note-offs (the synth kept one re-strike in mind, so every note but the chord's last was cut), a
song ending on a re-struck key (the release at the end thought it let go: the note rang on to the
render's 30 s cap), and the on-screen keyboard's glide (its notes came at velocity 100 wherever the
pointer was, and it stopped for good once the pointer strayed off the keys). Each test failed before
its fix."""
import struct

import numpy as np
import pytest

from realtime.dsp.processors.synth.processor import MODEL_DIR, Synth
from realtime.run import midi_file

ON, OFF = 0x90, 0x80


def _synth(**params):
    s = Synth(model_dir=MODEL_DIR, instrument="violin", **params)
    s.prepare(48000, 128, 2)
    return s


def _play(s, blocks, messages=()):
    for m in messages:
        s.handle_midi(*m)
    buf = np.zeros((s.max_block, 2), np.float32)
    for _ in range(blocks):
        buf.fill(0)
        s.process(buf)


@pytest.mark.parametrize("channels", [(0, 0), (0, 1)])
def test_a_chord_restruck_before_its_old_note_offs_keeps_every_note(channels):
    """C and E held, then struck again at one instant: both note-ons, then the old notes' note-offs
    (a type 0 file's tick). Only E sounded on; C's new note ended at its old note's note-off."""
    a, b = channels
    s = _synth()
    _play(s, 10, [(ON | a, 60, 100, 0), (ON | b, 64, 100, 0)])
    _play(s, 50, [(ON | a, 60, 100, 5), (ON | b, 64, 100, 5), (OFF | a, 60, 0, 5), (OFF | b, 64, 0, 5)])
    assert s.sounding_notes() == [60, 64]
    _play(s, 5, [(OFF | a, 60, 0, 0), (OFF | b, 64, 0, 0)])  # their own note-offs end them
    assert s.sounding_notes() == []


def test_a_doubled_note_on_still_ends_at_its_one_note_off():
    """A note-on sent twice within the minimum gate (merged sources) is no re-strike."""
    s = _synth()
    _play(s, 5, [(ON, 60, 100, 0), (ON, 60, 100, 0), (OFF, 60, 0, 0)])
    assert s.sounding_notes() == []


def test_release_at_end_lets_go_of_a_key_restruck_at_its_old_note_off():
    ev = np.array([[0, ON, 60, 100], [480, ON, 60, 100], [480, OFF, 60, 0]], np.float64)
    rows = midi_file.release_at_end(ev, 960)[len(ev):].astype(int).tolist()
    assert rows == [[960, 0xB0, 123, 0], [960, OFF, 60, 64]]
    # a note-off first, then the new note-on, at one tick: the new note is down too
    ev2 = np.array([[0, ON, 60, 100], [480, OFF, 60, 0], [480, ON, 60, 100]], np.float64)
    assert midi_file.release_at_end(ev2, 960)[len(ev2):].astype(int).tolist() == rows
    done = np.array([[0, ON, 60, 100], [480, ON, 60, 100], [480, OFF, 60, 0], [960, OFF, 60, 0]], np.float64)
    assert midi_file.release_at_end(done, 960) is done


def test_a_song_ending_on_a_restruck_key_renders_its_own_length(tmp_path):
    """The last note re-strikes its key (note-on before the old note-off) and has no note-off of its
    own: the render ran on to the 30 s cap with the note held; now it ends as the file does."""
    import mido

    from realtime.dsp.presets import apply_overrides, build_chain, load_preset
    from realtime.run.offline import render_midi

    mf = mido.MidiFile(type=0, ticks_per_beat=480)
    mf.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=100),
                                     mido.Message("note_on", note=60, velocity=100, time=480),
                                     mido.Message("note_off", note=60),
                                     mido.MetaMessage("end_of_track", time=480)]))
    mid, out = tmp_path / "restrike.mid", tmp_path / "restrike.wav"
    mf.save(str(mid))
    chain = build_chain(apply_overrides(load_preset("synth"), ["synth.instrument=violin"]))
    report = render_midi(mid, out, chain, 48000, 512)
    assert 1.0 <= report["seconds"] < 3.0  # the file's 1 s, the release and the silence after it


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    while n > 0x7F:
        n >>= 7
        out.insert(0, (n & 0x7F) | 0x80)
    return bytes(out)


def test_a_track_cut_after_a_restrike_lets_the_new_note_go(tmp_path):
    """A partial download cut just after a re-strike: the note struck again was left held."""
    body = b"".join(_vlq(d) + bytes(m) for d, m in [(0, [ON, 60, 100]), (480, [ON, 60, 100]), (0, [OFF, 60, 0]),
                                                   (480, [ON, 64, 100])])[:-2]  # the last message cut
    p = tmp_path / "cut.mid"
    p.write_bytes(b"MThd" + struct.pack(">IHHh", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(body) + 40) + body)
    events, _, damage = midi_file.read_midi_song(p, 48000)
    assert damage is not None and damage.added == 1
    assert events[-1].astype(int).tolist() == [24000, OFF, 60, 64]


# ------------------------------------------------------------------ the on-screen keyboard's glide
def _drag(qtbot):
    pytest.importorskip("PyQt6")
    pytest.importorskip("pytestqt")
    from PyQt6.QtCore import QPointF, Qt
    from PyQt6.QtGui import QMouseEvent
    from PyQt6.QtWidgets import QApplication

    from gui.keyboard import PianoKeyboard

    k = PianoKeyboard(first=48, octaves=2)
    qtbot.addWidget(k)
    k.resize(420, 90)
    k.show()
    played = []
    k.noteOn.connect(lambda n, v: played.append(("on", n, v)))
    k.noteOff.connect(lambda n: played.append(("off", n)))
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton

    def send(kind, note, y, button, buttons):
        p = QPointF(k.key_center(note).x(), y)
        QApplication.sendEvent(k, QMouseEvent(kind, p, k.mapToGlobal(p), button, buttons,
                                              Qt.KeyboardModifier.NoModifier))

    T = QMouseEvent.Type
    return k, played, lambda note, y: send(T.MouseMove, note, y, none, left), \
        lambda note, y: send(T.MouseButtonPress, note, y, left, left), \
        lambda note, y: send(T.MouseButtonRelease, note, y, left, none)


def test_a_glides_notes_are_as_loud_as_where_the_pointer_is(qtbot):
    k, played, move, press, release = _drag(qtbot)
    press(60, 5)  # at the top of C: soft
    move(62, 5)  # on along the top to D
    move(64, 85)  # down to the bottom of E: loud
    release(64, 85)
    vel = [e[2] for e in played if e[0] == "on"]
    assert [e[1] for e in played if e[0] == "on"] == [60, 62, 64]
    assert vel[0] == vel[1] < 50 and vel[2] > 120  # D came at 100 (a jump), E at 100 too
    assert not k.down


def test_a_glide_that_strays_off_the_keys_goes_on_when_it_comes_back(qtbot):
    k, played, move, press, release = _drag(qtbot)
    press(60, 60)
    move(62, -10)  # above the keys: C ends
    move(64, 60)  # back on E: it plays (nothing did)
    assert k.down == {64}
    release(64, 60)
    assert [e[:2] for e in played] == [("on", 60), ("off", 60), ("on", 64), ("off", 64)] and not k.down
    move(65, 60)  # no button: nothing
    assert len(played) == 4
