"""MIDI review 39: offline renders never lose a note-off to a full per-block queue.

More messages at one sample than a queue holds (a 1100-note chord's note-offs, the releases at a
song's end behind them) went into one block: the queue dropped the note-offs past its size, and a
melody note whose note-off shared that tick sounded on to the render's 30 s cap. The cursor now
passes such a sample's messages in over that sample and the next ones; controllers are thinned
as before."""
import json
from pathlib import Path
from types import SimpleNamespace

import mido
import numpy as np
import pytest
import soundfile as sf

from realtime.dsp.presets import apply_overrides, build_chain, load_preset
from realtime.dsp.processor import MidiQueue
from realtime.dsp.processors.synth import voices as sv
from realtime.run.offline import ChainRunner, render_midi

SR, B = 48000, 128


class SmallQueue(MidiQueue):
    """A processor with a 4-message queue that notes every message a block hands it, at its
    absolute sample."""

    def __init__(self, size: int = 4):
        self._ev = np.zeros((size, 4), np.float64)
        self._n_ev = 0
        self.dropped_events = 0
        self.pos = 0
        self.got = []

    def process(self, block):
        for t, st, d1, d2 in self._ev[:self._n_ev]:
            self.got.append((self.pos + int(t), int(st), int(d1), int(d2)))
        self._n_ev = 0
        self.pos += block.shape[0]


def run(events, released=0, blocksize=16, frames=64):
    p = SmallQueue()
    chain = SimpleNamespace(slots=[SimpleNamespace(processor=p)], handle_midi=p.handle_midi, process=p.process)
    runner = ChainRunner(chain, blocksize, 1, np.asarray(events, np.float64), released)
    for _ in runner.feed(np.zeros((frames, 1), np.float32)):
        pass
    return p, runner


def test_note_offs_at_one_sample_beyond_the_queue_go_in_at_the_next_samples_in_order():
    ev = [(5, 0x80, k, 0) for k in range(6)] + [(5, 0xB0, 1, k) for k in range(3)] + [(5, 0x80, 6, 0)]
    p, _ = run(ev)
    offs = [g for g in p.got if g[1] == 0x80]
    assert [g[2] for g in offs] == list(range(7))  # every note-off, in the file's order
    assert [g[0] for g in offs] == [5, 5, 5, 5, 6, 6, 6]  # no more than the queue holds a sample
    assert p.dropped_events == 2  # two of the controllers among them are thinned as before


def test_a_re_struck_keys_note_on_stays_with_its_note_off():
    """The synth tells a re-struck key's note-off (the old note's) from the new note by their time:
    a note-off put a sample after its note-on ended the new note."""
    ev = [(5, 0x80, k, 0) for k in range(4)] + [(5, 0x90, 60, 100), (5, 0x80, 60, 0)]
    p, _ = run(ev)
    assert p.got == [(5, 0x80, k, 0) for k in range(4)] + [(6, 0x90, 60, 100), (6, 0x80, 60, 0)]
    assert p.dropped_events == 0


def test_the_releases_at_the_end_are_never_dropped_behind_a_full_queue():
    ev = [(5, 0xB0, 1, k) for k in range(6)] + [(5, 0xB0, 66, 0), (5, 0xB0, 123, 0), (5, 0x80, 60, 64)]
    p, runner = run(ev, released=3)
    assert [(g[1], g[2]) for g in p.got[-3:]] == [(0xB0, 66), (0xB0, 123), (0x80, 60)]  # sostenuto up too
    assert runner.events.release_drops == 0 and p.dropped_events == 2


def cluster_song(path, melody_off: bool):
    """A black-MIDI cluster of 1100 notes from 0 to 1 s on track 1; on track 2 a loud melody note
    from 0.5 s, let go at 1 s with the cluster, or held to the end (1 s): its release is the render's."""
    mf = mido.MidiFile(type=1, ticks_per_beat=480)
    t1 = [mido.Message("note_on", channel=k // 110, note=10 + k % 110, velocity=1, time=0) for k in range(1100)]
    t1 += [mido.Message("note_off", channel=k // 110, note=10 + k % 110, velocity=0, time=960 if k == 0 else 0)
           for k in range(1100)]
    t2 = [mido.Message("note_on", channel=10, note=72, velocity=120, time=480)]
    if melody_off:
        t2.append(mido.Message("note_off", channel=10, note=72, velocity=0, time=480))
    mf.tracks += [mido.MidiTrack(t1), mido.MidiTrack(t2)]
    mf.save(str(path))
    return path


@pytest.mark.parametrize("melody_off", [True, False], ids=["its-own-note-off", "the-release-at-the-end"])
def test_a_melody_note_ends_with_1100_note_offs_at_its_tick(tmp_path, melody_off):
    """It sounded on to the 30 s cap (a 31 s render of a 1 s song)."""
    mid = cluster_song(tmp_path / "cluster.mid", melody_off)
    chain = build_chain(apply_overrides(load_preset("synth"), ["synth.instrument=violin"]))
    report = render_midi(mid, tmp_path / "out.wav", chain, SR, B)
    y, _ = sf.read(str(tmp_path / "out.wav"))
    assert np.abs(y[int(0.7 * SR):SR]).max() > 0.01  # the melody sounded
    assert report["seconds"] < 3.0 and np.abs(y[int(2 * SR):]).max(initial=0.0) < 1e-4, report
    assert report["dropped_midi_events"] == 1100 - sv.MAX_EVENTS  # the cluster's note-ons past the queue, alone


def test_a_batch_of_songs_side_by_side_ends_the_melody_too(tmp_path):
    from realtime.run.batch import LOG_NAME, BatchOptions, run_batch

    src = tmp_path / "in"
    src.mkdir()
    cluster_song(src / "cluster.mid", True)
    mf = mido.MidiFile(type=0, ticks_per_beat=480)
    mf.tracks.append(mido.MidiTrack([mido.Message("note_on", note=64, velocity=90, time=0),
                                     mido.Message("note_off", note=64, velocity=0, time=480)]))
    mf.save(str(src / "calm.mid"))
    run_batch([src], tmp_path / "out", BatchOptions(streams=2), jobs=1, progress=False)
    log = {Path(r["input"]).name: r for r in map(json.loads, (tmp_path / "out" / LOG_NAME).read_text().splitlines())}
    assert log["cluster.mid"]["streams"] == 2 and log["cluster.mid"]["audio_s"] < 3.0, log["cluster.mid"]
