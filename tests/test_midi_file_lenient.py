"""A cut or slightly damaged MIDI file (a partial download: the file ends inside a track, a track
chunk's declared length runs past the end of the file) is rendered as far as it can be read, with
one warning line, by `main.py synth` and `batch` alike, as fluidsynth and timidity play it; a file
that is not MIDI at all, or gives nothing to play before its damage, is still refused in one line.

The files are real ones: written by mido, then cut or patched byte by byte."""
import json
import struct
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

import main
from realtime.run.midi_file import midi_file_events, read_midi_song

SR = 48000
TPB = 480


def note_track(notes, start_rest=0, program=None, channel=0, tempo=None, name=None):
    """A track: ``notes`` (key, beats held) one after another, each followed by a quarter of rest."""
    tr = mido.MidiTrack()
    if name:
        tr.append(mido.MetaMessage("track_name", name=name))
    if tempo:
        tr.append(mido.MetaMessage("set_tempo", tempo=tempo))
    if program is not None:
        tr.append(mido.Message("program_change", program=program, channel=channel))
    rest = start_rest
    for key, beats in notes:
        tr.append(mido.Message("note_on", note=key, velocity=90, channel=channel, time=rest))
        tr.append(mido.Message("note_off", note=key, velocity=0, channel=channel, time=round(beats * TPB)))
        rest = TPB // 4
    tr.append(mido.MetaMessage("end_of_track", time=0))
    return tr


def save(path, tracks, kind=1):
    mf = mido.MidiFile(type=kind, ticks_per_beat=TPB)
    mf.tracks.extend(tracks)
    mf.save(path)
    return path


def chunks(data: bytes):
    """(offset, name, declared length) of each chunk after the header."""
    out, pos = [], 14
    while pos + 8 <= len(data):
        name, length = struct.unpack(">4sL", data[pos:pos + 8])
        out.append((pos, name, length))
        pos += 8 + length
    return out


def cut(src, dst, at: int):
    dst.write_bytes(src.read_bytes()[:at])
    return dst


def synth(capsys, *argv):
    """`main.py synth ARGV`: (status, its JSON report or None, stderr lines)."""
    status = main.main(["synth", *map(str, argv)])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return status, (json.loads(out.strip().splitlines()[-1]) if status == 0 else None), lines


def note_ons(events):
    return [(int(t), int(d1)) for t, s, d1, d2 in events if int(s) & 0xF0 == 0x90 and d2 > 0]


def ends(track) -> list[int]:
    """Where each message of ``track`` ends in its chunk's bytes, as mido writes it (these tracks
    never repeat a status byte, so no running status)."""
    from mido.midifiles.meta import encode_variable_int

    at, out = 0, []
    for msg in track:
        at += len(encode_variable_int(msg.time)) + len(msg.bytes())
        out.append(at)
    return out


@pytest.fixture
def scale(tmp_path):
    """A type 0 song at 100 BPM: a tempo, then 16 notes of a beat (0.6 s), a quarter beat apart (0.75 s
    from note to note)."""
    return save(tmp_path / "scale.mid", [note_track([(60 + k, 1) for k in range(16)], tempo=600000)], kind=0)


def test_a_file_cut_inside_a_message_renders_what_was_read_with_one_warning(tmp_path, scale, capsys):
    data = scale.read_bytes()
    (pos, _, length), = chunks(data)
    track = mido.MidiFile(str(scale)).tracks[0]
    # two bytes into the 9th note-on (message 17: the tempo, then 8 notes on and off before it)
    partial = cut(scale, tmp_path / "partial.mid", pos + 8 + ends(track)[16] + 2)
    with pytest.raises(EOFError):  # what refused it whole: mido's reader
        mido.MidiFile(str(partial))

    out = tmp_path / "partial.wav"
    status, report, err = synth(capsys, partial, out)
    assert status == 0, err
    whole, got = note_ons(midi_file_events(scale, SR)), note_ons(midi_file_events(partial, SR))
    assert len(got) == 8 and got == whole[:8]  # the notes before the cut, at their times
    stop = got[-1][0] / SR + 0.6  # the 8th note's note-off: the last message read
    assert stop == pytest.approx(7 * 0.75 + 0.6)
    assert err == [f"warning: {partial} is truncated after {stop:.1f} s; rendering what was read"]
    assert report["truncated"] is True and report["events"] == 16
    y, sr = sf.read(out)
    assert sr == SR and stop <= len(y) / SR < stop + 5  # up to the cut, then the last note's release
    assert np.abs(y[: int(stop * SR)]).max() > 1e-2

    # the intact file still renders without a word, and says it is whole
    status, report, err = synth(capsys, scale, tmp_path / "whole.wav")
    assert status == 0 and err == [] and report["truncated"] is False


def test_a_track_whose_declared_length_runs_past_the_end_of_the_file(tmp_path, scale, capsys):
    """Cut just after a whole message: nothing is half read, but the chunk says there is more. The
    key down at the cut is let go there, where the song now ends, not held on."""
    (pos, _, length), = chunks(scale.read_bytes())
    at = ends(mido.MidiFile(str(scale)).tracks[0])[11]  # after the 6th note-on
    partial = cut(scale, tmp_path / "held.mid", pos + 8 + at)
    assert length > at
    events, n, damage = read_midi_song(partial, SR)
    assert damage is not None and damage.cut and (damage.track, damage.tracks, damage.missing) == (0, 1, 0)
    ons = note_ons(events)
    assert [key for _, key in ons] == [60, 61, 62, 63, 64, 65]
    offs = [(int(t), int(d1)) for t, s, d1, d2 in events if int(s) & 0xF0 == 0x80 and int(d1) == 65]
    assert offs == [(ons[-1][0], 65)] and n == ons[-1][0]
    assert damage.seconds == pytest.approx(5 * 0.75)
    status, report, err = synth(capsys, partial, tmp_path / "held.wav")
    assert status == 0 and err == [f"warning: {partial} is truncated after {5 * 0.75:.1f} s; rendering what was read"]
    assert report["events"] == 11  # the file's own messages, not the release added


def test_a_type_1_file_cut_in_a_later_track_keeps_the_tracks_before_it(tmp_path, capsys):
    """Conductor, melody, bass, drums: cut inside the bass. The melody plays whole; the bass up to
    the cut, its held key let go there; the drums were never downloaded."""
    src = save(tmp_path / "band.mid", [
        note_track([], tempo=500000, name="conductor"),
        note_track([(72 + k % 5, 1) for k in range(12)], channel=0, name="melody"),
        note_track([(48 + k % 3, 2) for k in range(6)], channel=1, name="bass"),
        note_track([(36, 0.5)] * 8, channel=9, name="drums"),
    ])
    data = src.read_bytes()
    (_, _, _), (_, _, _), (bass, _, length), (_, _, _) = chunks(data)
    partial = cut(src, tmp_path / "band_partial.mid", bass + 8 + length // 2)
    events, n, damage = read_midi_song(partial, SR)
    whole = midi_file_events(src, SR)
    melody = [e for e in note_ons(whole) if e[1] >= 72]
    bass_whole = [e for e in note_ons(whole) if e[1] < 60 and e[1] != 36]
    got = note_ons(events)
    assert [e for e in got if e[1] >= 72] == melody  # the tracks before the cut are whole
    bass_got = [e for e in got if e[1] < 60 and e[1] != 36]
    assert 1 <= len(bass_got) < len(bass_whole) and bass_got == bass_whole[:len(bass_got)]
    assert not [e for e in got if e[1] == 36]  # the drums' track never came
    assert (damage.track, damage.tracks, damage.missing) == (2, 4, 1)

    status, report, err = synth(capsys, partial, tmp_path / "band.wav")
    assert status == 0, err
    assert err == [f"warning: {partial} is truncated after {damage.seconds:.1f} s in track 3 of 4 (1 more missing); "
                   "rendering what was read"]
    assert report["truncated"] is True

    # cut exactly between two tracks: no track read in part, the rest missing
    (_, _, _), (_, _, _), (_, _, _), (drums, _, _) = chunks(data)
    status, _, err = synth(capsys, cut(src, tmp_path / "band_3.mid", drums), tmp_path / "band_3.wav")
    assert status == 0 and err == [f"warning: {tmp_path / 'band_3.mid'} is truncated: 1 of its 4 tracks are missing; "
                                   "rendering what was read"]


def test_a_type_2_file_says_the_time_in_the_songs_one_after_another(tmp_path):
    src = save(tmp_path / "two.mid", [note_track([(60, 1)] * 4, tempo=500000), note_track([(67, 1)] * 8)], kind=2)
    (_, _, _), (second, _, length) = chunks(src.read_bytes())
    events, n, damage = read_midi_song(cut(src, tmp_path / "two_cut.mid", second + 8 + length // 2), SR)
    first = 4 * 0.5 + 3 * 0.125  # the first song's length
    assert damage.track == 1 and first < damage.seconds < first + 8 * 0.625
    assert damage.seconds == pytest.approx(events[:, 0].max() / SR, abs=1e-4)  # its last message read


@pytest.mark.parametrize("streams", [1, 2])  # one file at a time, and songs rendered side by side
def test_batch_renders_a_cut_file_as_far_as_it_goes_and_records_it_partial(tmp_path, scale, capfd, streams):
    from realtime.run.batch import run_batch
    from realtime.run.batch_plan import BatchOptions

    src = tmp_path / "in"
    src.mkdir()
    data = scale.read_bytes()
    partial = cut(scale, src / "partial.mid", len(data) * 2 // 3)
    whole = src / "whole.mid"
    whole.write_bytes(data)
    summary = run_batch([partial, whole], tmp_path / "out", BatchOptions(streams=streams), jobs=1, progress=False)
    assert (summary["failed"], summary["truncated"], summary["processed"]) == (0, 1, 2), summary
    err = [ln for ln in capfd.readouterr().err.splitlines() if "truncated" in ln]
    assert len(err) == 1 and err[0].startswith(f"warning: {partial} is truncated after "), err  # the worker's
    log = [json.loads(ln) for ln in (tmp_path / "out" / ".batch-manifest.jsonl").read_text().splitlines()]
    assert sorted((Path(r["input"]).name, r["status"]) for r in log) == [("partial.mid", "partial"),
                                                                          ("whole.mid", "ok")]
    got, _ = sf.read(tmp_path / "out" / "partial.wav")
    status = main.main(["synth", str(partial), str(tmp_path / "ref.wav")])
    ref, _ = sf.read(tmp_path / "ref.wav")
    assert status == 0 and np.array_equal(got, ref)  # the same render as `synth`


@pytest.mark.parametrize("what", ["text", "wav", "empty", "header only", "cut in the first event"])
def test_what_is_not_midi_or_gives_nothing_before_its_damage_is_still_refused_in_one_line(tmp_path, scale, what,
                                                                                          capsys):
    p = tmp_path / "bad.mid"
    if what == "text":
        p.write_text("not a MIDI file at all\n" * 10)
    elif what == "wav":
        sf.write(p, np.zeros((4800, 2), np.float32), SR, format="WAV")
    elif what == "empty":
        p.write_bytes(b"")
    elif what == "header only":
        p.write_bytes(scale.read_bytes()[:14])
    else:
        (pos, _, _), = chunks(scale.read_bytes())
        cut(scale, p, pos + 8 + 4)  # inside the tempo meta event, before any note
    status, _, err = synth(capsys, p, tmp_path / "o.wav")
    assert status == 2 and len(err) == 1, err
    says = "MThd not found. Probably not a MIDI file" if what in ("text", "wav") else "it ends too early"
    assert err[0] == f"error: {p}: not a readable MIDI file ({says})", err
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(["bad.mid", "scale.mid"])


def test_slightly_damaged_bytes_that_players_take_are_read(tmp_path, capsys):
    """A key signature of mode 255 (some writers' files: mido's KeySignatureError ended the command in
    a traceback) is left out; a data byte over 127 is read as 127 (mido's ``clip``); an unknown chunk
    between the tracks is skipped, as the standard says. None of them is damage worth a warning."""
    track = bytes([0x00, 0xFF, 0x59, 0x02, 0xFD, 0xFF,  # key signature: 3 flats, mode 255
                   0x00, 0x90, 60, 0xC8,  # note-on, velocity byte 200
                   0x60, 0x80, 60, 0x00,
                   0x00, 0xFF, 0x2F, 0x00])
    alien = b"XFIH" + (4).to_bytes(4, "big") + b"junk"
    p = tmp_path / "odd.mid"
    p.write_bytes(b"MThd" + struct.pack(">LHHH", 6, 1, 1, 96) + alien + b"MTrk" + struct.pack(">L", len(track)) + track)
    events, n, damage = read_midi_song(p, SR)
    assert damage is None
    assert [(int(s), int(d1), int(d2)) for _, s, d1, d2 in events] == [(0x90, 60, 127), (0x80, 60, 0)]
    status, report, err = synth(capsys, p, tmp_path / "odd.wav")
    assert status == 0 and err == [] and report["truncated"] is False, err
