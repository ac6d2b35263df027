"""`main.py batch`, review 39: files side by side decide RF64 for a WAV past 4 GiB before any work (as
`process`), a dense MIDI file side by side at a large block size renders as `synth` renders it, and a
folder scan takes each folder and file once however links reach it. Each test failed before its fix."""
import json
from pathlib import Path

import mido
import numpy as np
import soundfile as sf

import main
from realtime.run import offline
from realtime.run.batch import LOG_NAME, BatchOptions, plan_batch, run_batch, run_unit
from realtime.run.batch_plan import group_tasks

from .test_batch import _assert_same, _no_parts


def _noise(path: Path, sr: int, seconds: float, seed: int) -> None:
    x = 0.1 * np.random.default_rng(seed).standard_normal((int(sr * seconds), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, subtype="FLOAT")


def _bend_sweep(path: Path, note: int, bends: int = 3000) -> None:
    """A held note under ``bends`` pitch bends in about half a second: thousands of messages in one
    large block, far more than a synth's queue (1024) holds."""
    mf = mido.MidiFile(ticks_per_beat=960)
    tr = mido.MidiTrack()
    mf.tracks.append(tr)
    tr.append(mido.Message("note_on", note=note, velocity=90, time=0))
    for i in range(bends):
        tr.append(mido.Message("pitchwheel", pitch=-8192 + (16383 * i) // bends, time=1 if i % 3 == 0 else 0))
    tr.append(mido.Message("note_off", note=note, velocity=0, time=200))
    path.parent.mkdir(parents=True, exist_ok=True)
    mf.save(str(path))


# ------------------------------------------------------------------------------ 1: a WAV output past 4 GiB

def test_files_side_by_side_write_a_wav_past_4_gib_as_rf64_decided_before_any_work(tmp_path, capsys, monkeypatch):
    """`process` writes such a WAV as RF64, said in one line; side by side the output was a WAV that
    read back 4 GiB of it: refused after all the work. An AIFF is refused before any work, a MIDI
    render's longest length decides it too. The limit is lowered here: 4 GiB of test audio would take
    minutes."""
    src = tmp_path / "in"
    for i in range(2):
        _noise(src / f"f{i}.wav", 16000, 0.5, i)
    refs = []
    for i in range(2):
        ref = tmp_path / f"ref{i}.wav"
        assert main.main(["process", str(src / f"f{i}.wav"), str(ref), "--preset", "voice", "--no-progress"]) == 0
        refs.append(sf.read(ref, dtype="float64"))
    capsys.readouterr()
    monkeypatch.setattr(offline, "RIFF_AUDIO_MAX", 8000 * 4 - 1)  # one byte short of each file's audio
    out = tmp_path / "out"
    units = group_tasks(plan_batch([src], out, BatchOptions(preset="voice", streams=2)), 2)
    assert [len(u) for u in units] == [2]
    results = run_unit(units[0])
    assert [(r["status"], r["error"]) for r in results] == [("ok", None)] * 2
    err = capsys.readouterr().err.splitlines()
    assert sorted(err) == [f"warning: {out / f'f{i}.wav'}: 0.0 GiB of audio is more than a WAV file holds (4 GiB); "
                           "writing it as RF64 (a WAV with 64-bit sizes)" for i in range(2)], err
    for i in range(2):
        info = sf.info(out / f"f{i}.wav")
        assert (info.format, info.subtype, info.frames) == ("RF64", "FLOAT", 8000)
        _assert_same(out / f"f{i}.wav", refs[i])

    aiff = tmp_path / "aiff"
    units = group_tasks(plan_batch([src], aiff, BatchOptions(preset="voice", streams=2, ext="aiff")), 2)
    assert [len(u) for u in units] == [2]
    results = run_unit(units[0])
    assert [r["status"] for r in results] == ["failed"] * 2
    assert all(r["error"].endswith("more than an AIFF file holds (4 GiB); write .rf64, .w64 or .flac")
               for r in results), results
    assert not list(aiff.rglob("*.aif*")) and not _no_parts(aiff)

    for k in range(2):
        _bend_sweep(tmp_path / "midi" / f"s{k}.mid", 60 + 4 * k, bends=10)
    units = group_tasks(plan_batch([tmp_path / "midi"], tmp_path / "renders", BatchOptions(streams=2)), 2)
    assert [len(u) for u in units] == [2]
    assert [r["status"] for r in run_unit(units[0])] == ["ok"] * 2
    assert [sf.info(tmp_path / "renders" / f"s{k}.wav").format for k in range(2)] == ["RF64"] * 2


# ------------------------------------------------------------------------------ 2: dense MIDI, large blocks

def test_dense_midi_side_by_side_at_a_large_block_size_renders_as_synth_does(tmp_path):
    """Side by side a song's events went into the batched synth a whole block at a time: at
    --midi-blocksize 16384 the queue (1024) dropped 1908 of two bend sweeps' 6000 messages, and the
    renders bent unlike `synth`'s. Now a block runs in parts where a queue would overflow, as
    ``ChainRunner`` runs it."""
    src = tmp_path / "in"
    for k in range(2):
        _bend_sweep(src / f"s{k}.mid", 60 + 4 * k)
    out = tmp_path / "out"
    s = run_batch([src], out, BatchOptions(midi_blocksize=16384, streams=2), jobs=1, progress=False)
    assert (s["processed"], s["failed"], s["dropped_midi_events"]) == (2, 0, 0)
    log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert [(r["streams"], r["dropped_midi_events"]) for r in log] == [(2, 0), (2, 0)]  # side by side indeed
    for k in range(2):
        ref = tmp_path / f"ref{k}.wav"
        assert main.main(["synth", str(src / f"s{k}.mid"), str(ref), "--blocksize", "128"]) == 0
        _assert_same(out / f"s{k}.wav", sf.read(ref, dtype="float64"))


# ------------------------------------------------------------------------------ 3: links in a folder scan

def test_a_folder_scan_takes_each_folder_and_file_once_however_links_reach_it(tmp_path, capsys):
    """Two folders that link to each other, a link to the folder itself, a file's link beside it and
    two links to one folder outside: each file was planned once per way to it (A/toB/b.wav beside
    B/b.wav, …), processed again into another output, without a word. Now once, by the way with the
    fewest links (then by name), what was left out said in one line."""
    lib = tmp_path / "lib"
    for name in ("A/a.wav", "B/b.wav", "C/c.wav"):
        _noise(lib / name, 16000, 0.1, 0)
    _noise(tmp_path / "X" / "x.wav", 16000, 0.1, 1)
    (lib / "A" / "toB").symlink_to("../B")
    (lib / "B" / "toA").symlink_to("../A")
    (lib / "self").symlink_to(".")
    (lib / "A" / "alias.wav").symlink_to("a.wav")
    (lib / "C" / "toX").symlink_to(tmp_path / "X")
    (lib / "D").mkdir()
    (lib / "D" / "toX").symlink_to(tmp_path / "X")
    (lib / "out").mkdir()
    (lib / "view").symlink_to("out")  # a second way into --out leaves out outputs alone: not said
    capsys.readouterr()
    tasks = plan_batch([lib], lib / "out", BatchOptions(preset="clean"))
    assert sorted(Path(t.input).relative_to(lib).as_posix() for t in tasks) == [
        "A/a.wav", "B/b.wav", "C/c.wav", "C/toX/x.wav"]
    assert capsys.readouterr().err == (
        f"warning: {lib}: left out 4 folders found again through links ({lib / 'A' / 'toB'}, …) "
        f"and 1 file found again through a link ({lib / 'A' / 'alias.wav'})\n")


def test_links_that_fan_out_are_scanned_once_each_not_once_per_way(tmp_path, capsys):
    """Each folder links twice to the next: 2**11 ways to the last one's file, each planned (2048
    outputs of one file, the scan's time doubling with every level). Now the file once."""
    depth, lib = 12, tmp_path / "lib"
    for d in range(depth):
        (lib / f"d{d}").mkdir(parents=True)
    _noise(lib / f"d{depth - 1}" / "x.wav", 16000, 0.1, 0)
    for d in range(depth - 1):
        for name in ("l1", "l2"):
            (lib / f"d{d}" / name).symlink_to(f"../d{d + 1}")
    tasks = plan_batch([lib / "d0"], tmp_path / "out", BatchOptions(preset="clean"))
    assert [Path(t.input).relative_to(lib / "d0").as_posix() for t in tasks] == [
        "/".join(["l1"] * (depth - 1) + ["x.wav"])]
    assert f"left out {depth - 1} folders found again through links" in capsys.readouterr().err
