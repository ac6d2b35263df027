"""MIDI edge cases of the synth and its file renders: the GM drum channel, SMPTE-timed files, a full
per-block event queue, zero-length notes. Files go through ``render_midi`` with the chain
``main.py synth IN.mid OUT.wav`` builds."""
import json
import struct
import tracemalloc
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from realtime.dsp.presets import apply_overrides, build_chain, load_preset
from realtime.dsp.processors.synth import voices as sv
from realtime.dsp.processors.synth.processor import MODEL_DIR, Synth
from realtime.errors import OfflineError
from realtime.run.midi_file import midi_file_events
from realtime.run.offline import render_midi

SR, B = 48000, 128


def synth_chain():
    """The chain `main.py synth IN.mid OUT.wav` renders through (_instrument_chain, violin)."""
    return build_chain(apply_overrides(load_preset("synth"), ["synth.instrument=violin"]))


def save(path, msgs, ticks_per_beat=480):
    mf = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
    mf.tracks.append(mido.MidiTrack(msgs))
    mf.save(str(path))
    return path


def render(tmp_path, mid):
    out = tmp_path / (mid.stem + ".wav")
    report = render_midi(mid, out, synth_chain(), SR, B)
    y, _ = sf.read(str(out))
    return report, y.mean(axis=1)


def rms(x):
    return float(np.sqrt(np.mean(x ** 2)))


def make_synth(**params):
    s = Synth(model_dir=MODEL_DIR, instrument="violin", **params)
    s.prepare(SR, B, 2)
    return s


def run(s, n_blocks):
    buf = np.zeros((B, 2), np.float32)
    for _ in range(n_blocks):
        buf.fill(0.0)
        s.process(buf)


# ---------------------------------------------------------------------------- channel 10
def test_the_gm_drum_channel_is_not_played_as_pitched_notes(tmp_path):
    """A drum pattern on channel 10 only (kick 36, hi-hat 42) rendered as violin notes (RMS 0.02)."""
    def pattern(channel):
        msgs = []
        for i in range(8):
            n = 36 if i % 2 == 0 else 42
            msgs += [mido.Message("note_on", channel=channel, note=n, velocity=100, time=0 if i == 0 else 120),
                     mido.Message("note_off", channel=channel, note=n, velocity=0, time=120)]
        return msgs

    _, drums = render(tmp_path, save(tmp_path / "drums.mid", pattern(9)))
    _, melodic = render(tmp_path, save(tmp_path / "melodic.mid", pattern(0)))
    assert rms(melodic) > 1e-3  # the same notes on channel 1 do sound
    assert np.abs(drums).max() == 0.0


def test_the_drum_channel_moves_no_controller_of_the_synth():
    s = make_synth()
    s.handle_midi(0x99, 60, 100, 0)  # live, as from a pad controller on channel 10
    s.handle_midi(0xB9, 7, 10, 0)  # the drum track's volume
    s.handle_midi(0xE9, 0, 0x7F, 0)  # and a pitch bend
    run(s, 2)
    assert s.sounding_notes() == [] and s.g[sv.G_VOL + 9] == pytest.approx(100 / 127) and s.g[sv.G_BEND + 9] == 0.0
    s.handle_midi(0x98, 60, 100, 0)  # channel 9 is a melodic one
    run(s, 2)
    assert s.sounding_notes() == [60]


def test_channel_10_is_played_like_any_other_when_its_knob_says_so():
    """A pad or keyboard set to send on channel 10 live: the "Channel 10" knob plays its notes,
    bend and program changes as any channel's (knob back: ignored again)."""
    from realtime.dsp.processors.synth.processor import INSTRUMENTS

    s = make_synth(channel10=1)
    s.handle_midi(0x99, 60, 100, 0)
    s.handle_midi(0xE9, 0, 0x7F, 0)
    run(s, 2)
    assert s.sounding_notes() == [60] and s.g[sv.G_BEND + 9] > 0.9
    flute = s.instruments[INSTRUMENTS.index("flute")].program
    s.handle_midi(0xC9, flute, 0, 0)  # its program change chooses the instrument, as on channel 1
    run(s, 2)
    assert INSTRUMENTS[int(s.values[sv.K_INSTR])] == "flute"
    s.handle_midi(0x89, 60, 0, 0)
    s.set_param("channel10", 0)
    s.handle_midi(0x99, 62, 100, 0)
    run(s, 2)
    assert 62 not in s.sounding_notes()


# ---------------------------------------------------------------------------- SMPTE time
def smpte_file(path, division):
    """Four notes 1000 ticks long each, written with the header's division set to ``division``."""
    msgs = []
    for n in (60, 62, 64, 65):
        msgs += [mido.Message("note_on", note=n, velocity=100, time=0),
                 mido.Message("note_off", note=n, velocity=0, time=1000)]
    msgs.insert(1, mido.MetaMessage("set_tempo", tempo=250000, time=0))  # no effect on SMPTE time
    save(path, msgs)
    raw = bytearray(path.read_bytes())
    raw[12:14] = struct.pack(">H", division)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("division, fps", [(0xE728, 25.0), (0xE250, 30.0), (0xE364, 30000 / 1001)])
def test_smpte_timed_files_are_timed_by_frames_and_ticks_per_frame(tmp_path, division, fps):
    """0xE728: 25 fps x 40 ticks = 1000 ticks a second; 0xE250: 30 x 80; 0xE364: 29.97 (drop-frame) x 100."""
    tps = fps * (division & 0xFF)
    ev = midi_file_events(smpte_file(tmp_path / "smpte.mid", division), SR)
    on = ev[(ev[:, 1] == 0x90) & (ev[:, 3] > 0)]
    np.testing.assert_allclose(on[:, 0], [round(k * 1000 / tps * SR) for k in range(4)], atol=1)
    assert ev[-1, 0] == pytest.approx(4000 / tps * SR, abs=1)


def test_an_smpte_file_renders_at_its_length(tmp_path):
    report, y = render(tmp_path, smpte_file(tmp_path / "smpte.mid", 0xE728))
    assert 4.0 < report["seconds"] < 5.0  # the song, then its last note's release (300 ms) down to silence
    for k in range(4):  # one note a second, each of them sounding
        assert rms(y[int((k + 0.3) * SR): int((k + 0.8) * SR)]) > 1e-3


def test_a_zero_time_division_is_refused(tmp_path):
    with pytest.raises(OfflineError, match="time division"):
        midi_file_events(smpte_file(tmp_path / "zero.mid", 0x0000), SR)


# ---------------------------------------------------------------------------- a full event queue
def test_a_controller_burst_never_drops_a_note_off():
    """1100 CC1 in one block between a note's on and off: the note-off was the message dropped."""
    s = make_synth(release_ms=20)
    s.handle_midi(0x90, 60, 100, 0)
    for i in range(1100):
        s.handle_midi(0xB0, 1, i % 128, 5)
    s.handle_midi(0x80, 60, 0, 5)
    assert s._n_ev == sv.MAX_EVENTS and s.dropped_events == 1102 - sv.MAX_EVENTS
    run(s, 1)
    assert s.sounding_notes() == []
    run(s, 100)
    assert s.active_voices() == 0


def test_a_full_queue_keeps_note_offs_over_note_ons_in_order():
    s = make_synth()
    for k in range(sv.MAX_EVENTS):  # a queue of note-ons and note-offs only
        s.handle_midi(0x90 if k % 2 == 0 else 0x80, 20 + k % 64, 100, 0)
    s.handle_midi(0xB0, 1, 64, 0)  # a controller does not fit
    s.handle_midi(0x90, 100, 100, 0)  # nor a note-on
    s.handle_midi(0x80, 100, 0, 0)  # a note-off takes the oldest note-on's place, behind the rest
    assert s.dropped_events == 3 and s._n_ev == sv.MAX_EVENTS
    assert list(s._ev[0, 1:3]) == [0x80, 21] and list(s._ev[-1, 1:3]) == [0x80, 100]
    assert list(s._ev[-2, 1:3]) == [0x80, 20 + (sv.MAX_EVENTS - 1) % 64]


def test_making_room_in_a_full_queue_allocates_nothing():
    s = make_synth()
    for _ in range(sv.MAX_EVENTS):
        s.handle_midi(0xB0, 1, 64, 0)
    s.handle_midi(0x80, 60, 0, 0)  # warm: the first call may create cached objects
    tracemalloc.start()
    try:
        s.handle_midi(0x80, 61, 0, 0)  # moves 1022 rows down: a temporary copy would be 32 KB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096 and s._ev[-1, 2] == 61 and s._ev[-2, 2] == 60


def test_a_render_reports_dropped_midi_events(tmp_path, capsys):
    msgs = [mido.Message("note_on", note=60, velocity=100, time=0)]
    msgs += [mido.Message("control_change", control=1, value=i % 128, time=480 if i == 0 else 0) for i in range(1100)]
    msgs.append(mido.Message("note_off", note=60, velocity=0, time=0))
    report, y = render(tmp_path, save(tmp_path / "burst.mid", msgs))
    # the note-on came in an earlier block: 1101 messages in the note-off's block
    assert report["events"] == 1102 and report["dropped_midi_events"] == 1101 - sv.MAX_EVENTS
    assert "77 MIDI messages were dropped" in capsys.readouterr().err
    off = int(0.5 * SR)
    assert rms(y[off - SR // 4: off]) > 1e-3 and np.abs(y[-SR // 100:]).max() < 1e-4  # the note ended,
    assert len(y) < off + SR  # and the render soon after it


@pytest.mark.parametrize("streams", [1, 2])
def test_a_batch_reports_each_midi_files_dropped_events(tmp_path, streams):
    """`batch` renders MIDI one file per worker (streams 1) or songs side by side (streams 2); each
    file's record carries its own dropped count (the burst's 77, the calm song's 0) and the summary
    their sum. Batched songs reported none at all."""
    from realtime.run.batch import LOG_NAME, BatchOptions, run_batch

    src = tmp_path / "in"
    src.mkdir()
    burst = [mido.Message("note_on", note=60, velocity=100, time=0)]
    burst += [mido.Message("control_change", control=1, value=i % 128, time=480 if i == 0 else 0) for i in range(1100)]
    burst.append(mido.Message("note_off", note=60, velocity=0, time=0))
    save(src / "burst.mid", burst)
    save(src / "calm.mid", [mido.Message("note_on", note=64, velocity=90, time=0),
                            mido.Message("note_off", note=64, velocity=0, time=480)])
    out = tmp_path / "out"
    summary = run_batch([src], out, BatchOptions(streams=streams), jobs=1, progress=False)
    log = {Path(r["input"]).name: r for r in map(json.loads, (out / LOG_NAME).read_text().splitlines())}
    assert summary["processed"] == 2 and summary["failed"] == 0
    assert [log[n].get("streams", 1) for n in ("burst.mid", "calm.mid")] == [streams, streams]
    assert (log["burst.mid"]["dropped_midi_events"], log["calm.mid"]["dropped_midi_events"]) == (1101 - sv.MAX_EVENTS, 0)
    assert summary["dropped_midi_events"] == 1101 - sv.MAX_EVENTS


def test_a_flood_into_a_full_queue_is_dropped_at_once():
    """100k pitch bends at one tick took 86 s to render 1.3 s: each one scanned the whole full queue
    (0.4-0.9 ms a message) for something of lower rank to replace. A queue of note-ons takes a flood
    of note-ons or controllers in no time, and a note-off still finds the oldest note-on."""
    import realtime.dsp.processor as proc_mod

    s = make_synth()
    for k in range(sv.MAX_EVENTS):
        s.handle_midi(0x90, 20 + k % 64, 100, 0)
    ranked = [0]  # the work a message costs: how many queued messages it ranks (not a timing)
    rank = proc_mod._midi_rank

    def counting_rank(*a):
        ranked[0] += 1
        return rank(*a)

    proc_mod._midi_rank = counting_rank
    try:
        for i in range(20000):
            s.handle_midi(0xE0, i % 128, 64, 0)  # pitch bend: the lowest rank, never makes room
            s.handle_midi(0x91, 30 + i % 64, 100, 0)  # a note-on: no controller queued to replace
    finally:
        proc_mod._midi_rank = rank
    assert ranked[0] <= 2 * 40000, ranked[0]  # the old scan ranked the whole full queue for each
    assert s.dropped_events == 40000 and s._n_ev == sv.MAX_EVENTS
    s.handle_midi(0x80, 100, 0, 0)  # a note-off takes the oldest note-on's place
    assert s.dropped_events == 40001 and list(s._ev[-1, 1:3]) == [0x80, 100] and list(s._ev[0, 1:3]) == [0x90, 21]
    run(s, 1)  # the next block's queue starts empty, its counts with it
    s.handle_midi(0xB0, 1, 64, 0)
    for k in range(sv.MAX_EVENTS - 1):
        s.handle_midi(0x90, 20 + k % 64, 100, 0)
    s.handle_midi(0x90, 90, 100, 0)  # full: takes the controller's place
    assert s.dropped_events == 40002 and list(s._ev[-1, 1:3]) == [0x90, 90] and list(s._ev[0, 1:3]) == [0x90, 20]


@pytest.mark.parametrize("streams", [None, 2])
def test_a_song_ending_with_more_keys_down_than_a_queue_holds_counts_only_its_own_drops(tmp_path, streams):
    """2000 keys pressed at once and never let go: 976 of them do not fit the queue. At the end the
    render lets go of all 2000 (all notes off and a note-off per key: 2016 messages), which overflow
    the queue too; those were counted as the file's dropped messages (midi/10k_notes.mid, 10 001
    messages, said 10 016 dropped)."""
    from realtime.run.batch import LOG_NAME, BatchOptions, run_batch

    msgs = [mido.Message("note_on", channel=k // 125, note=k % 125, velocity=90, time=0) for k in range(2000)]
    msgs.append(mido.MetaMessage("end_of_track", time=480))
    mid = save(tmp_path / "keys.mid", msgs)
    if streams is None:
        report, _ = render(tmp_path, mid)
        dropped = report["dropped_midi_events"]
        assert report["events"] == 2000
    else:
        (tmp_path / "in").mkdir()
        save(tmp_path / "in" / "calm.mid", [mido.Message("note_on", note=64, velocity=90, time=0),
                                            mido.Message("note_off", note=64, velocity=0, time=480)])
        (tmp_path / "in" / "keys.mid").write_bytes(mid.read_bytes())
        run_batch([tmp_path / "in"], tmp_path / "out", BatchOptions(streams=streams), jobs=1, progress=False)
        log = {Path(r["input"]).name: r
               for r in map(json.loads, (tmp_path / "out" / LOG_NAME).read_text().splitlines())}
        assert log["keys.mid"]["streams"] == 2 and log["calm.mid"]["dropped_midi_events"] == 0
        dropped = log["keys.mid"]["dropped_midi_events"]
    assert dropped == 2000 - sv.MAX_EVENTS


def test_engine_stats_report_dropped_midi_events():
    from realtime.engine.config import EngineConfig
    from realtime.engine.engine import Engine

    chain = synth_chain()
    chain.prepare(SR, B, 2)
    eng = Engine(chain, EngineConfig(samplerate=SR, blocksize=B, mode="output"))
    assert eng.stats()["dropped_midi_events"] == 0
    for _ in range(sv.MAX_EVENTS + 5):
        chain.handle_midi(0xB0, 1, 64, 0)
    assert eng.stats()["dropped_midi_events"] == 5


# ---------------------------------------------------------------------------- per-channel controllers
def play(*msgs, blocks=150):
    """A fresh synth's output for ``msgs`` (status, data1, data2) sent at sample 0, then ``blocks`` blocks."""
    s = make_synth()
    for m in msgs:
        s.handle_midi(*m, 0)
    out = np.zeros((blocks * B, 2), np.float32)
    for i in range(blocks):
        s.process(out[i * B:(i + 1) * B])
    return s, out[:, 0]


def test_volume_expression_and_pitch_bend_move_only_their_own_channels_notes():
    """A GM file's quiet channel-2 track (CC7 5) made the channel-1 melody 11 dB quieter: volume,
    expression and pitch bend were omni. Each channel's own now."""
    _, alone = play((0x90, 69, 100))
    s, beside = play((0xB1, 7, 5), (0xB1, 11, 20), (0xE1, 0, 127), (0x90, 69, 100))
    assert rms(alone[-50 * B:]) > 1e-3 and np.abs(beside - alone).max() < 1e-6
    s.handle_midi(0xE0, 0, 127, 0)  # channel 1's bend up, then channel 2 resets its controllers
    s.handle_midi(0xB1, 121, 0, 0)
    run(s, 1)
    assert s.g[sv.G_BEND] > 0.9 and s.g[sv.G_BEND + 1] == 0.0 and s.g[sv.G_EXPR + 1] == 1.0
    _, quiet = play((0xB0, 7, 5), (0x90, 69, 100))  # a channel's own volume still sets its level:
    assert rms(quiet[-50 * B:]) == pytest.approx(rms(alone[-50 * B:]) * (5 / 100) ** 2, rel=0.01)  # 40 log10
    _, both = play((0xB1, 7, 5), (0x90, 69, 100), (0x91, 76, 100))  # a quiet channel-2 note beside it
    _, other = play((0x91, 76, 100))
    _, other_quiet = play((0xB1, 7, 5), (0x91, 76, 100))
    assert rms(other_quiet[-50 * B:]) < 0.01 * rms(other[-50 * B:])
    assert np.abs(both - alone - other_quiet).max() < 1e-4


# ---------------------------------------------------------------------------- very short notes
def test_zero_length_and_one_tick_notes_are_heard(tmp_path):
    """Note-on and note-off on one tick was silent (the release began at the attack's -100 dB); one
    tick (1 ms) came out 19 dB down. With the 10 ms minimum gate both sound as a 10 ms note does."""
    def file(dur):
        msgs = []
        for i in range(4):
            msgs += [mido.Message("note_on", note=72, velocity=110, time=0 if i == 0 else 480 - dur),
                     mido.Message("note_off", note=72, velocity=0, time=dur)]
        return save(tmp_path / f"notes{dur}.mid", msgs)

    ref = rms(render(tmp_path, file(10))[1][: 2 * SR])  # 10 ticks: 10.4 ms, longer than the gate
    assert ref > 1e-3
    for dur in (0, 1):
        got = rms(render(tmp_path, file(dur))[1][: 2 * SR])
        assert got == pytest.approx(ref, rel=0.1), dur


def test_the_minimum_gate_leaves_longer_notes_and_the_envelope_alone():
    s = make_synth(release_ms=100)
    s.handle_midi(0x90, 60, 100, 0)
    s.handle_midi(0x80, 60, 0, 0)
    run(s, 1)
    v = 0
    assert s.vs[v, sv.V_STAGE] == sv.RELEASED and s.sounding_notes() == []  # the key is up at once
    gate = sv.MIN_GATE_MS * 1e-3 * SR
    assert s.vs[v, sv.V_OFF_T] == s.vs[v, sv.V_ON_T] + gate  # the release waits for the gate
    s2 = make_synth(release_ms=100)
    s2.handle_midi(0x90, 60, 100, 0)
    run(s2, 5)
    s2.handle_midi(0x80, 60, 0, 7)
    run(s2, 1)
    assert s2.vs[v, sv.V_OFF_T] == 5 * B + 7  # a longer note releases when its note-off says
