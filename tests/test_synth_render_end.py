"""Where a MIDI render ends (``main.py synth``, ``batch`` for MIDI inputs): never before the file's
End of Track; there the notes still down are released, pedals too (no cut at full level); then on
until the chain's sound has died away (a long release in full), at most ``MIDI_TAIL_MAX_S`` after
the file's end (a chain that never falls silent, faded out there); the same for any block size."""
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

import main
from realtime.dsp.chain import Chain, Slot
from realtime.dsp.presets import apply_overrides, build_chain, load_preset
from realtime.dsp.processor import Processor
from realtime.run import midi_file, offline
from realtime.run.offline import render_midi

SR = 48000


def synth_chain(*sets):
    """The chain `main.py synth IN.mid OUT.wav` renders through, with ``--set`` overrides."""
    return build_chain(apply_overrides(load_preset("synth"), ["synth.instrument=violin", *sets]))


def song(path, notes, end_beats, tempo=500000):
    """A type 1 file: a tempo track, and a track of ``notes`` (beat, message) whose End of Track
    comes at ``end_beats`` (480 ticks a beat, 0.5 s at the default tempo)."""
    mf = mido.MidiFile(type=1, ticks_per_beat=480)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    tr, last = mido.MidiTrack(), 0
    for beat, msg in sorted(notes, key=lambda n: n[0]):
        tick = round(beat * 480)
        tr.append(msg.copy(time=tick - last))
        last = tick
    tr.append(mido.MetaMessage("end_of_track", time=round(end_beats * 480) - last))
    mf.tracks += [meta, tr]
    mf.save(str(path))
    return Path(path)


def on(note, ch=0):
    return mido.Message("note_on", note=note, velocity=100, channel=ch)


def off(note, ch=0):
    return mido.Message("note_off", note=note, velocity=0, channel=ch)


def cc(control, value, ch=0):
    return mido.Message("control_change", control=control, value=value, channel=ch)


def render(mid, tmp_path, *sets, blocksize=128, chain=None, name=None):
    out = tmp_path / f"{name or mid.stem}_{blocksize}.wav"
    report = render_midi(mid, out, chain or synth_chain(*sets), SR, blocksize)
    y, sr = sf.read(str(out), dtype="float64")
    assert sr == SR and report["seconds"] == len(y) / SR
    return y


def dbfs(x):
    return 20 * np.log10(max(float(np.abs(x).max()), 1e-12))


def assert_ends_in_silence(y):
    assert dbfs(y[-100:]) < -80  # a release tail down to silence, not a cut
    assert np.abs(np.diff(y[-2000:], axis=0)).max() < 1e-3  # no step at the end


def held(tmp_path):
    """One key never let go, one let go under a sustain pedal never lifted; the file ends at 2 s."""
    return song(tmp_path / "held.mid", [(0, on(69)), (0, cc(64, 127)), (1, on(76)), (2, off(76))], end_beats=4)


def test_notes_still_down_at_the_end_of_the_file_are_released_not_cut(tmp_path):
    y = render(held(tmp_path), tmp_path)
    end = 2 * SR
    assert len(y) > end
    assert dbfs(y[end - 2400:end]) > -40  # both sounding up to the file's end
    after = y[end + SR // 10: end + SR // 5]
    assert -70 < dbfs(after) < dbfs(y[end - 2400:end]) - 3  # released there: a tail, quieter and quieter
    assert len(y) < end + 2 * SR  # and over once it has died away (release 300 ms)
    assert_ends_in_silence(y)


def test_a_long_release_is_rendered_in_full(tmp_path):
    mid = song(tmp_path / "rel.mid", [(0, on(69)), (1, off(69))], end_beats=1)
    y = render(mid, tmp_path, "synth.release_ms=5000")
    off_at = SR // 2
    assert dbfs(y[off_at + int(2.5 * SR): off_at + int(2.6 * SR)]) > -70  # still heard 2.5 s into it
    assert len(y) > off_at + 4 * SR  # -60 dB in 5 s: about 5 s down to -90 dBFS
    assert_ends_in_silence(y)


def test_a_render_lasts_at_least_until_the_files_end_of_track(tmp_path):
    """A stem whose last note ends early keeps the song's length (as fluidsynth and DAWs do)."""
    mid = song(tmp_path / "eot.mid", [(0, on(69)), (1, off(69))], end_beats=12)
    assert mido.MidiFile(str(mid)).length == pytest.approx(6.0)
    y = render(mid, tmp_path)
    assert len(y) == 6 * SR  # the sound died away long before: exactly the file's length
    assert dbfs(y[SR // 4: SR // 2]) > -40 and dbfs(y[-SR:]) < -90


class Drone(Processor):
    """A chain that never falls silent: a -40 dBFS tone added to every block."""

    kind = "drone"

    def _prepare(self):
        self.t = 0

    def process(self, block):
        n = block.shape[0]
        block += (0.01 * np.sin(2 * np.pi * 220.0 * np.arange(self.t, self.t + n) / SR))[:, None].astype(np.float32)
        self.t += n


def test_a_chain_that_never_falls_silent_stops_at_the_cap_faded_out(tmp_path):
    from realtime.dsp.processors.synth.processor import MODEL_DIR, Synth

    mid = song(tmp_path / "drone.mid", [(0, on(69)), (1, off(69))], end_beats=2)
    chain = Chain([Slot(Synth(model_dir=MODEL_DIR), "synth"), Slot(Drone(), "drone")])
    y = render(mid, tmp_path, chain=chain)
    assert offline.MIDI_TAIL_MAX_S == 30.0
    assert len(y) == SR + round(offline.MIDI_TAIL_MAX_S * SR)  # the file's second, then the cap
    assert dbfs(y[-SR: -SR // 2]) > -45  # sounding up to the cap ...
    assert_ends_in_silence(y)  # ... faded out there, not cut


@pytest.mark.parametrize("blocksize", [64, 1024])
def test_the_end_does_not_depend_on_the_block_size(tmp_path, blocksize):
    """The preset's reverb on: its tail too is rendered to silence, at the same sample."""
    mid = held(tmp_path)
    ref = render(mid, tmp_path, "synth.reverb_mix=0.4", blocksize=128)
    y = render(mid, tmp_path, "synth.reverb_mix=0.4", blocksize=blocksize)
    assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-4
    assert_ends_in_silence(y)


def test_the_end_is_decided_sample_by_sample_whatever_the_blocks():
    """RenderWriter alone: a decaying tone, a gap shorter than the silence window (kept), then a
    click after a gap longer than it (past the end: left out), cut into blocks of any size."""
    sound = np.zeros((8 * SR, 2), np.float32)
    t = np.arange(SR)
    sound[:SR] = (0.5 * np.exp(-t / 3000.0) * np.sin(0.05 * t))[:, None]  # below -90 dBFS after ~0.5 s
    sound[SR + SR // 2] = 0.1  # after 0.5 s of quiet: part of the song's tail
    sound[SR + SR // 2 + round(offline.MIDI_SILENCE_S * SR) + 2400] = 0.1  # after the silence: not
    length, skip = SR // 4, 240

    class Dst:
        channels, samplerate, format, subtype = 2, SR, "WAV", "PCM_24"

        def __init__(self):
            self.parts = []

        def write(self, y):
            self.parts.append(np.array(y))

    outs = []
    for sizes in ([64], [1024], [1, 7, 128, 4096, 333]):
        dst = Dst()
        w = offline.RenderWriter(dst, length, SR, skip=skip)
        feed = np.concatenate([np.zeros((skip, 2), np.float32), sound])
        pos, k = 0, 0
        while not w.done:
            n = sizes[k % len(sizes)]
            w.write(feed[pos:pos + n].copy())
            pos, k = pos + n, k + 1
        w.finish()
        out = np.concatenate(dst.parts)
        assert len(out) == w.written and pos <= skip + len(sound)
        outs.append(out)
    grid = round(offline.MIDI_END_GRID_S * SR)
    assert len(outs[0]) == -(-(SR + SR // 2 + 1) // grid) * grid  # the kept click, rounded up to the grid
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])
    np.testing.assert_array_equal(outs[0], sound[:len(outs[0])])


def test_release_at_end_lifts_what_is_still_down():
    ev = np.array([[0, 0x90, 60, 100], [0, 0x91, 64, 100], [10, 0xB1, 64, 127], [20, 0x81, 64, 0],
                   [30, 0x92, 67, 100], [40, 0x82, 67, 0], [50, 0xB3, 66, 100]], np.float64)
    rows = midi_file.release_at_end(ev, 100)[len(ev):].astype(int).tolist()
    assert rows == [[100, 0xB0, 123, 0], [100, 0x80, 60, 64],  # a key still down on channel 1
                    [100, 0xB1, 64, 0], [100, 0xB1, 123, 0],  # a key let go under the pedal on channel 2
                    [100, 0xB3, 66, 0], [100, 0xB3, 123, 0]]  # sostenuto down on channel 4
    done = np.array([[0, 0x90, 60, 100], [5, 0xB0, 64, 127], [20, 0x90, 60, 0], [40, 0xB0, 64, 0]], np.float64)
    assert midi_file.release_at_end(done, 100) is done  # every key up, the pedal too: nothing added


def test_a_fixed_tail_keeps_exactly_that_long_after_the_files_end(tmp_path):
    mid = song(tmp_path / "fixed.mid", [(0, on(69)), (1, off(69))], end_beats=4)
    out = tmp_path / "fixed.wav"
    report = render_midi(mid, out, synth_chain(), SR, 128, tail_s=0.5)
    assert sf.info(str(out)).frames == round(2.5 * SR) and report["seconds"] == 2.5


@pytest.mark.parametrize("streams", [1, 2])
def test_batch_renders_end_where_synth_renders_do(tmp_path, streams):
    import json

    from realtime.run.batch import LOG_NAME, BatchOptions, run_batch

    src = tmp_path / "in"
    src.mkdir()
    held(src)
    song(src / "eot.mid", [(0, on(69)), (0.5, off(69))], end_beats=6)
    out = tmp_path / "out"
    s = run_batch([src], out, BatchOptions(midi_preset="synth", streams=streams), jobs=1, progress=False)
    assert (s["processed"], s["failed"]) == (2, 0)
    log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert [r.get("streams", 1) for r in log] == [streams] * 2  # 2: side by side (batch_streams)
    for name in ("held", "eot"):
        ref = tmp_path / f"ref_{name}.wav"
        assert main.main(["synth", str(src / f"{name}.mid"), str(ref)]) == 0
        got, want = sf.read(out / f"{name}.wav")[0], sf.read(ref)[0]
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-6
        assert_ends_in_silence(got)


def test_a_file_without_notes_is_said(tmp_path, capsys):
    """A file of meta events alone rendered silence with no word (two seconds of it, before)."""
    mf = mido.MidiFile()
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name="empty"))
    mf.tracks.append(track)
    mf.save(tmp_path / "empty.mid")
    offline.render_midi(tmp_path / "empty.mid", tmp_path / "empty.wav", synth_chain())
    assert "no notes to play" in capsys.readouterr().err
