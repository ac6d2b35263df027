"""Batch (review 48): other batches' outputs, unread audio kinds, options refused once, inputs given
twice, and a log append cut by a full disk."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.errors import OfflineError, PresetError
from realtime.run import batch_plan
from realtime.run.batch import BatchOptions, plan_batch, run_batch


def _tone(path: Path, sr=16000, seconds=0.2):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    return path


def test_a_second_batch_into_another_folder_inside_the_library_leaves_the_first_ones_outputs_alone(tmp_path, capsys):
    """`batch lib --out lib/processed` then `batch lib --out lib/master`: the second took
    processed/*.wav for inputs (4 files for 2), and each later run added a layer."""
    lib = tmp_path / "lib"
    _tone(lib / "a.wav")
    _tone(lib / "b.wav")
    s = run_batch([lib], lib / "processed", BatchOptions(preset="clean"), jobs=1, progress=False)
    assert s["processed"] == 2
    capsys.readouterr()
    tasks = plan_batch([lib], lib / "master", BatchOptions(preset="clean"))
    assert sorted(Path(t.input).name for t in tasks) == ["a.wav", "b.wav"]
    err = capsys.readouterr().err
    assert "left out 1 folder of another batch's outputs" in err and "processed" in err
    # a batch over that folder itself, as asked, reads it
    assert len(plan_batch([lib / "processed"], tmp_path / "again", BatchOptions(preset="clean"))) == 2


def test_audio_of_kinds_it_cannot_read_is_said_not_passed_over(tmp_path, capsys):
    lib = tmp_path / "lib"
    _tone(lib / "one.wav")
    for name in ("a.m4a", "b.m4a", "c.wma", "cover.jpg", "notes.txt"):
        (lib / name).write_bytes(b"\0" * 64)
    assert len(plan_batch([lib], tmp_path / "out", BatchOptions())) == 1
    err = capsys.readouterr().err
    assert "left out 3 audio files of kinds this host does not read (.m4a ×2, .wma ×1)" in err
    assert ".jpg" not in err


def test_options_no_file_can_take_are_refused_once_before_any_work(tmp_path):
    lib = tmp_path / "lib"
    _tone(lib / "a.wav")
    _tone(lib / "b.wav")
    with pytest.raises(OfflineError, match=r"a tail of 99999.0 s: give 0 to 6 hours"):
        plan_batch([lib], tmp_path / "out", BatchOptions(tail_s=99999.0))
    with pytest.raises(PresetError, match=r"delimiter: runs at 40-50 kHz only, not 96000 Hz"):
        plan_batch([lib], tmp_path / "out", BatchOptions(preset="delimit", samplerate=96000))
    assert not (tmp_path / "out").exists()


def test_an_input_given_twice_is_processed_once(tmp_path, capsys):
    """`batch lib lib/a --out o` wrote o/a/x.wav and o/x.wav from one file."""
    lib = tmp_path / "lib"
    _tone(lib / "sub" / "x.wav")
    _tone(lib / "y.wav")
    tasks = plan_batch([lib, lib / "sub", lib / "y.wav"], tmp_path / "o", BatchOptions())
    assert sorted(os.path.relpath(t.output, tmp_path / "o") for t in tasks) == ["sub/x.wav", "y.wav"]
    assert "left out 2 inputs given twice" in capsys.readouterr().err


def test_a_log_append_cut_by_a_full_disk_is_cut_back_and_the_next_record_kept(tmp_path, monkeypatch):
    """A full disk mid-append left half a line; the next record, appended once space came back,
    was glued to it and lost on disk, while the run counted it written (then dropped its queued
    list, and the next run refused the whole batch for an output "no earlier batch wrote")."""
    log = batch_plan.ResumeLog(tmp_path)
    log.append({"input": "/x/a.wav", "output": str(tmp_path / "a.wav"), "status": "ok"})
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch_plan.os, "write", half_then_full)
    with pytest.raises(OSError):
        log.append({"input": "/x/b.wav", "output": str(tmp_path / "b.wav"), "status": "failed", "pad": "q" * 3000})
    monkeypatch.undo()
    log.append({"input": "/x/c.wav", "output": str(tmp_path / "c.wav"), "status": "ok"})
    on_disk = batch_plan.ResumeLog(tmp_path).records
    assert sorted(Path(k).name for k in on_disk) == sorted(Path(k).name for k in log.records) == ["a.wav", "c.wav"]


def test_a_midi_file_beside_an_audio_file_of_its_name_renders_to_a_name_of_its_own(tmp_path, capsys):
    """song.mid beside song.wav: both would write song.wav, and the batch was refused whole."""
    import mido

    lib = tmp_path / "lib"
    _tone(lib / "song.wav")
    mid = mido.MidiFile()
    track = mido.MidiTrack()
    track += [mido.Message("note_on", note=60, velocity=90, time=0), mido.Message("note_off", note=60, time=240)]
    mid.tracks.append(track)
    mid.save(lib / "song.mid")
    tasks = plan_batch([lib], tmp_path / "o", BatchOptions())
    assert sorted(Path(t.output).name for t in tasks) == ["song.mid.wav", "song.wav"]
    assert "1 MIDI render named after the MIDI file" in capsys.readouterr().err


def test_an_output_edited_since_a_batch_wrote_it_is_not_replaced_unasked(tmp_path):
    """An edit saved over an output was processed over again at the next run (a file added to the
    library), said as "processed": the edit was lost."""
    lib = tmp_path / "lib"
    _tone(lib / "a.wav")
    out = tmp_path / "out"
    assert run_batch([lib], out, BatchOptions(preset="clean"), jobs=1, progress=False)["processed"] == 1
    edited = out / "a.wav"
    sf.write(edited, np.zeros(800, np.float32), 16000)  # the user's fix, saved over it
    _tone(lib / "b.wav")
    with pytest.raises(OfflineError, match=r"a.wav changed since an earlier batch wrote it.*--force"):
        plan_batch([lib], out, BatchOptions(preset="clean"))
    s = run_batch([lib], out, BatchOptions(preset="clean", force=True), jobs=1, progress=False)
    assert s["processed"] == 2


def test_a_batch_killed_after_it_replaced_an_output_resumes_its_own_output(tmp_path):
    """Killed after it put a new output in place and before it logged it, a batch left a file whose
    record was the older run's: the next run took it for an edit of the user's and refused the whole
    batch. Its claim says it is the batch's own."""
    import subprocess
    import sys

    lib = tmp_path / "lib"
    _tone(lib / "a.wav")
    out = tmp_path / "out"
    assert run_batch([lib], out, BatchOptions(preset="clean"), jobs=1, progress=False)["processed"] == 1
    _tone(lib / "a.wav", seconds=0.3)  # the input changes: processed again
    code = ("import os\nfrom realtime.run import batch_plan\n"
            "batch_plan.ResumeLog.append = lambda self, r: os._exit(137)  # killed before the result is logged\n"
            "from realtime.run.batch import BatchOptions, run_batch\n"
            f"run_batch([{str(lib)!r}], {str(out)!r}, BatchOptions(preset='clean'), jobs=1, progress=False)\n")
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, timeout=120).returncode == 137
    assert sf.info(out / "a.wav").duration == pytest.approx(0.3)  # the new output is in place, unlogged
    s = run_batch([lib], out, BatchOptions(preset="clean"), jobs=1, progress=False)
    assert (s["processed"], s["failed"]) == (1, 0)
