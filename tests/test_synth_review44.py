"""The synth's controllers are per MIDI channel, as MIDI has them, review 44. A GM file's tracks each
play on a channel of their own: one track's All Notes Off, All Sound Off, sustain pedal, Reset All
Controllers, mod wheel or bend range (RPN 0) acted on every channel, and cut, smeared or retuned the
other tracks' notes. Each test failed before its fix."""
from pathlib import Path

import numpy as np
import pytest

from realtime.dsp.processors.synth import voices as sv

from .test_synth import SR, make, measured_f0, run

CH1, CH2 = 0, 1  # MIDI channels 1 and 2 (0-based)


def on(ch, note, block=0):
    return (block, 0x90 | ch, note, 100, 0)


def off(ch, note, block):
    return (block, 0x80 | ch, note, 0, 0)


def cc(ch, number, value, block):
    return (block, 0xB0 | ch, number, value, 0)


@pytest.mark.parametrize("number", [123, 120])
def test_all_notes_or_sound_off_ends_its_own_channels_notes_only(number):
    s = make(release_ms=20)
    run(s, 5, events=[on(CH1, 69), on(CH2, 60), cc(CH2, number, 0, 2)])
    assert s.sounding_notes() == [69]
    y = run(s, 100)[:, 0]
    assert s.sounding_notes() == [69] and np.sqrt(np.mean(y[-SR // 10:] ** 2)) > 1e-3  # still heard


def test_a_channels_sustain_pedal_holds_its_own_notes_only():
    s = make(release_ms=20)
    run(s, 5, events=[cc(CH2, 64, 127, 0), on(CH1, 69, 1), on(CH2, 60, 1), off(CH1, 69, 3), off(CH2, 60, 3)])
    assert s.sounding_notes() == [60]  # the pedal on channel 2 holds channel 2's note
    run(s, 5, events=[cc(CH1, 64, 127, 0), on(CH1, 72, 1), cc(CH2, 121, 0, 3), cc(CH2, 64, 0, 3)])
    assert s.sounding_notes() == [72]  # channel 2's reset and pedal up leave channel 1's pedal alone
    run(s, 5, events=[off(CH1, 72, 0)])
    assert s.sounding_notes() == [72]
    run(s, 5, events=[cc(CH1, 121, 0, 0)])  # Reset All Controllers lifts the channel's pedal
    assert s.sounding_notes() == []


def test_a_channels_mod_wheel_adds_vibrato_to_its_own_notes_only():
    plain = run(make(vibrato_depth_cents=50), 200, events=[on(CH1, 69)])
    other = run(make(vibrato_depth_cents=50), 200, events=[cc(CH2, 1, 127, 0), on(CH1, 69)])
    own = run(make(vibrato_depth_cents=50), 200, events=[cc(CH1, 1, 127, 0), on(CH1, 69)])
    assert np.array_equal(other, plain)
    assert np.abs(own - plain).max() > 0.01


def test_a_channels_bend_range_bends_its_own_notes_only():
    """RPN 0 on channel 2 sets 12 semitones; channel 1 bends by the knob's 2, and its data entry
    does not complete channel 2's selection."""
    s = make(bend_range=2)
    y = run(s, 400, events=[cc(CH2, 101, 0, 0), cc(CH2, 100, 0, 0), cc(CH1, 6, 7, 0), cc(CH2, 6, 12, 0),
                            (0, 0xE0 | CH1, 0x7F, 0x7F, 0), on(CH1, 62)])[:, 0]
    assert s.g[sv.G_RANGE + CH2] == 12 and s.g[sv.G_RANGE + CH1] == -1  # (-1: the knob's)
    want = 440.0 * 2 ** ((62 + 2 * 8191 / 8192 - 69) / 12)
    assert abs(1200 * np.log2(measured_f0(y[SR // 2:], want) / want)) <= 5.0


def test_panic_stops_every_channels_notes():
    s = make()
    run(s, 5, events=[on(CH1, 60), on(CH2, 64), on(15, 67)])
    s.panic()
    run(s, 3)
    assert s.active_voices() == 0


# ------------------------------------------------------------------ MIDI files: batch and synth at their edges
def _tune(path, notes=((60, 480),)):
    import mido

    track = mido.MidiTrack()
    for note, ticks in notes:
        track += [mido.Message("note_on", note=note, velocity=100), mido.Message("note_off", note=note, time=ticks)]
    mf = mido.MidiFile()
    mf.tracks.append(track)
    mf.save(path)
    return path


def test_batch_refuses_a_midi_preset_that_plays_no_midi(tmp_path):
    """--midi-preset default (an effects chain) rendered every MIDI file as silence, each "ok" (and
    skipped by a re-run)."""
    from realtime.errors import PresetError
    from realtime.run.batch import BatchOptions, plan_batch

    (tmp_path / "in").mkdir()
    _tune(tmp_path / "in" / "tune.mid")
    with pytest.raises(PresetError, match="preset 'default' plays no MIDI .* --midi-preset synth"):
        plan_batch([tmp_path / "in"], tmp_path / "out", BatchOptions(midi_preset="default"))
    assert not (tmp_path / "out").exists()


def test_a_render_through_a_chain_that_plays_no_midi_is_refused(tmp_path):
    from realtime.dsp.presets import build_chain, load_preset
    from realtime.errors import OfflineError
    from realtime.run.offline import render_midi

    with pytest.raises(OfflineError, match="plays no MIDI"):
        render_midi(_tune(tmp_path / "t.mid"), tmp_path / "t.wav", build_chain(load_preset("default")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.mid"]


@pytest.mark.parametrize("ext", ["flac", "mp3"])
def test_a_render_of_no_audio_to_a_format_that_cannot_be_empty_writes_nothing(tmp_path, ext):
    """A conductor track alone (0 s, no notes) left a 0-byte .flac or .mp3, unreadable, reported as
    written (and a batch marked it done)."""
    import mido

    from realtime.errors import OfflineError
    from realtime.run.offline import render_midi

    from .test_synth_render_end import synth_chain

    mf = mido.MidiFile(type=1)
    mf.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000)]))
    mf.save(tmp_path / "t.mid")
    with pytest.raises(OfflineError, match=rf"t\.{ext}: nothing to write \(0 s of audio\)"):
        render_midi(tmp_path / "t.mid", tmp_path / f"t.{ext}", synth_chain())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.mid"]


def test_karaoke_smf_and_riff_midi_files_are_midi(tmp_path):
    """.kar and .smf files were skipped by a folder's scan (or refused as audio), and a RIFF MIDI
    file (.rmi, a standard MIDI file in a "data" chunk) said "MThd not found"."""
    import struct

    import soundfile as sf

    from realtime.run.batch import BatchOptions, plan_batch, run_batch
    from realtime.run.midi_file import midi_file_events

    (tmp_path / "in").mkdir()
    smf = _tune(tmp_path / "in" / "a.mid").read_bytes()
    (tmp_path / "in" / "a.mid").rename(tmp_path / "in" / "a.kar")
    (tmp_path / "in" / "b.smf").write_bytes(smf)
    body = b"RMID" + b"data" + struct.pack("<I", len(smf)) + smf + b"\0" * (len(smf) & 1)
    body += b"LIST" + struct.pack("<I", 4) + b"INFO"
    (tmp_path / "in" / "c.rmi").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    want = midi_file_events(tmp_path / "in" / "b.smf", 48000)
    assert np.array_equal(midi_file_events(tmp_path / "in" / "c.rmi", 48000), want) and len(want) == 2
    tasks = plan_batch([tmp_path / "in"], tmp_path / "out", BatchOptions())
    assert sorted((t.kind, Path(t.output).name) for t in tasks) == [("midi", "a.wav"), ("midi", "b.wav"),
                                                                     ("midi", "c.wav")]
    summary = run_batch([tmp_path / "in"], tmp_path / "out", jobs=1, progress=False)
    assert summary["failed"] == 0 and summary["processed"] == 3
    assert all(np.abs(sf.read(tmp_path / "out" / f"{n}.wav")[0]).max() > 0.01 for n in "abc")


def test_a_folder_or_a_pipe_given_as_the_midi_file_is_said_as_such(tmp_path):
    import os

    from realtime.errors import OfflineError
    from realtime.run.midi_file import midi_file_events

    (tmp_path / "song.mid").mkdir()
    with pytest.raises(OfflineError, match=r"song\.mid: is a folder, not a MIDI file"):
        midi_file_events(tmp_path / "song.mid", 48000)
    os.mkfifo(tmp_path / "pipe.mid")
    with pytest.raises(OfflineError, match=r"pipe\.mid: a pipe or device, not a file"):
        midi_file_events(tmp_path / "pipe.mid", 48000)


def _drums(path):
    import mido

    track = mido.MidiTrack()
    for _ in range(4):
        track += [mido.Message("note_on", channel=9, note=36, velocity=100),
                  mido.Message("note_off", channel=9, note=36, time=240)]
    mf = mido.MidiFile()
    mf.tracks.append(track)
    mf.save(path)
    return path


def test_a_drum_track_the_synth_leaves_alone_is_said(tmp_path, capsys):
    """Notes on channel 10 alone rendered silence without a word (the file has notes)."""
    from realtime.run.offline import render_midi

    from .test_synth_render_end import synth_chain

    render_midi(_drums(tmp_path / "d.mid"), tmp_path / "d.wav", synth_chain())
    assert "its 4 notes are all on channel 10 (GM percussion)" in capsys.readouterr().err
    render_midi(tmp_path / "d.mid", tmp_path / "d2.wav", synth_chain("synth.channel10=1"))
    assert capsys.readouterr().err == ""


def test_files_rendered_side_by_side_say_what_does_not_sound(tmp_path, capfd):
    """A group (the batched synth) never said "no notes to play"; the same file alone did."""
    import mido

    from realtime.run.batch import run_batch

    (tmp_path / "in").mkdir()
    _drums(tmp_path / "in" / "d.mid")
    _tune(tmp_path / "in" / "tune.mid")
    mf = mido.MidiFile()
    mf.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="empty")]))
    mf.save(tmp_path / "in" / "empty.mid")
    summary = run_batch([tmp_path / "in"], tmp_path / "out", jobs=1, progress=False)
    err = capfd.readouterr().err  # (said by the worker process)
    assert summary["failed"] == 0 and "empty.mid: no notes to play" in err and "d.mid: its 4 notes are all on" in err
    assert "tune.mid" not in err


def test_notes_begun_on_channel_10_while_it_played_end_after_it_is_switched_off():
    """panic() (All Sound Off on each channel) and a lost port's releases did not reach channel 10
    once its knob was off: its note sounded on."""
    s = make(channel10="played as notes")
    run(s, 3, events=[on(9, 60)])
    s.set_param("channel10", "GM drums: ignored")
    s.panic()
    run(s, 3)
    assert s.active_voices() == 0
    run(s, 3, events=[on(9, 62)])  # drums are left alone again
    assert s.active_voices() == 0


def test_all_notes_off_on_one_channel_takes_its_keys_out_of_the_mono_key_stack():
    """Mono legato fell back to a key of a channel whose notes had all ended: it sounded on for good."""
    s = make(mode="mono", release_ms=20)
    run(s, 5, events=[on(CH1, 60), on(CH2, 64, 2)])
    run(s, 5, events=[cc(CH1, 123, 0, 0)])
    run(s, 5, events=[off(CH2, 64, 0)])
    assert s.sounding_notes() == []
    run(s, 5, events=[on(CH1, 60), on(CH2, 64, 2), off(CH2, 64, 4)])
    assert s.sounding_notes() == [60]  # the other channel's key still down: legato back to it


def test_all_sound_off_on_another_channel_keeps_a_release_step_of_this_one():
    """A CC120 on channel 2 dropped the release step of a channel-1 note freed earlier in the block."""
    from .test_synth_onsets import render

    B = 4096
    t = 2 * B + 101
    notes = [(t, 0x90, 69, 100), (t + 600, 0x80, 69, 0)]
    plain = render(notes, 4 * B, block=B, release_ms=10)
    assert np.array_equal(render(notes + [(t + 3000, 0xB1, 120, 0)], 4 * B, block=B, release_ms=10), plain)
