"""`main.py batch`, third review: outputs that land on originals (an --out inside an input folder, a
manifest's output that is another row's input), manifest fields that were dropped unsaid, two
batches into one folder, MIDI renders in every format `process` writes. Each test failed before its fix."""
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import main
from realtime.errors import OfflineError
from realtime.run.batch import LOG_NAME, BatchOptions, plan_batch, run_batch

from .test_batch import _midi as _midi_file

ROOT = Path(__file__).resolve().parent.parent


def _tone(path: Path, sr=16000, seconds=0.2, freq=440.0, amp=0.3, ch=2):
    t = np.arange(int(sr * seconds)) / sr
    x = np.repeat((amp * np.sin(2 * np.pi * freq * t))[:, None], ch, axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, subtype="PCM_16")


def _midi(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    _midi_file(path)


def _bytes(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys, args) -> str:
    capsys.readouterr()
    assert main.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------ 1: --out inside an input folder

def test_an_out_inside_the_input_folder_that_holds_originals_is_refused(tmp_path, capsys):
    """`batch lib --out lib/sub` replaced lib/sub/song.wav (an original) by the processed lib/song.wav,
    never processed lib/sub/other.wav, and said nothing (exit 0)."""
    lib = tmp_path / "lib"
    _tone(lib / "song.wav", freq=440)
    _tone(lib / "sub" / "song.wav", freq=1000, amp=0.1)
    _tone(lib / "sub" / "other.wav", freq=300)
    before = _bytes(lib)
    err = _one_error_line(capsys, ["batch", str(lib), "--out", str(lib / "sub"), "--preset", "clean", "--jobs", "1",
                                   "--no-progress"])
    assert "--out lies inside the input folder" in err and "other.wav" in err and "a folder of its own" in err
    assert _bytes(lib) == before  # nothing written, not even a log
    with pytest.raises(OfflineError, match="which no earlier batch wrote"):
        plan_batch([lib], lib / "sub", BatchOptions())


def test_a_library_processed_into_a_subfolder_of_itself_resumes(tmp_path):
    """The common wish `batch music --out music/processed` keeps working: what lies there is the
    batch's own recorded outputs, skipped by the scan and by the resume log."""
    music = tmp_path / "music"
    _tone(music / "a.wav")
    _tone(music / "album" / "b.wav", freq=550)
    _midi(music / "album" / "m.mid")
    out = music / "processed"
    options = BatchOptions(preset="clean")
    s = run_batch([music], out, options, jobs=1, progress=False)
    assert (s["files"], s["processed"], s["failed"]) == (3, 3, 0)
    s = run_batch([music], out, options, jobs=1, progress=False)
    assert (s["files"], s["processed"], s["skipped"]) == (3, 0, 3)
    _tone(music / "c.wav", freq=660)  # a new file: processed alone
    s = run_batch([music], out, options, jobs=1, progress=False)
    assert (s["files"], s["processed"], s["skipped"], s["failed"]) == (4, 1, 3, 0)
    s = run_batch([music], out, BatchOptions(preset="clean", force=True), jobs=1, progress=False)
    assert (s["files"], s["processed"], s["failed"]) == (4, 4, 0)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == \
        ["a.wav", "album/b.wav", "album/m.wav", "c.wav"]
    # an original put there since: refused, not skipped and not replaced
    _tone(out / "album" / "mine.wav", freq=880)
    with pytest.raises(OfflineError, match="mine.wav, which no earlier batch wrote"):
        run_batch([music], out, options, jobs=1, progress=False)


# ------------------------------------------------------------------------------ 2: outputs that are inputs

def test_an_output_that_is_another_tasks_input_is_refused(tmp_path, capsys):
    """Manifest rows `a.wav,b.wav` and `b.wav,a.wav` into the manifest's own folder: both originals
    destroyed (one of them processed twice), exit 0."""
    sw = tmp_path / "sw"
    _tone(sw / "a.wav", freq=440)
    _tone(sw / "b.wav", freq=1000)
    (sw / "swap.csv").write_text("input,output\na.wav,b.wav\nb.wav,a.wav\n")
    before = _bytes(sw)
    err = _one_error_line(capsys, ["batch", str(sw / "swap.csv"), "--out", str(sw), "--jobs", "1", "--no-progress"])
    assert "swap.csv row 1 would write" in err and "b.wav, the input of" in err and "swap.csv row 2" in err
    assert _bytes(sw) == before
    # by another path to the same file: a hard link is the input all the same
    os.link(sw / "a.wav", sw / "link.wav")
    (sw / "one.csv").write_text("input,output\nb.wav,x.wav\na.wav,link.wav\n")
    with pytest.raises(OfflineError, match=r"one.csv row 2: its output .*link.wav is the input itself"):
        plan_batch([sw / "one.csv"], sw, BatchOptions())
    (sw / "two.csv").write_text("input,output\nb.wav,link.wav\na.wav,y.wav\n")
    with pytest.raises(OfflineError, match=r"two.csv row 1 would write .*link.wav, the input of .*two.csv row 2"):
        plan_batch([sw / "two.csv"], sw, BatchOptions())
    # a file given with --out its own folder
    with pytest.raises(OfflineError, match="is the input itself"):
        plan_batch([sw / "a.wav"], sw, BatchOptions())
    assert (sw / "a.wav").read_bytes() == before["a.wav"] and (sw / "b.wav").read_bytes() == before["b.wav"]


# ------------------------------------------------------------------------------ 4, 9: manifests

def test_manifest_fields_are_read_with_spaces_and_unknown_ones_refused(tmp_path):
    """A CSV header `input, output, set` and JSONL keys "ouput"/"sets" dropped the output and the
    overrides unsaid; a JSONL error on line 4 said "line 1 column 1"."""
    _tone(tmp_path / "a.wav")
    out = tmp_path / "out"
    plain = plan_batch([tmp_path / "a.wav"], out, BatchOptions())[0]
    csv_ = tmp_path / "sp.csv"
    csv_.write_text("input, output, set\na.wav, renamed.wav, gain.gain_db=-6\n")
    (task,) = plan_batch([csv_], out, BatchOptions())
    assert task.output == str(out / "renamed.wav") and task.preset_hash != plain.preset_hash
    gain = next(s for s in task.preset["chain"] if s["id"] == "gain")
    assert gain["params"]["gain_db"] == -6
    csv_.write_text("input,output,\na.wav,x.wav,\n")  # a trailing comma: an empty, nameless column
    assert plan_batch([csv_], out, BatchOptions())[0].output == str(out / "x.wav")
    csv_.write_text("input,output\na.wav,x.wav,\n")  # on a row alone: an empty value past the header
    assert plan_batch([csv_], out, BatchOptions())[0].output == str(out / "x.wav")
    for text, why in (("input,outptu\na.wav,x.wav\n",
                       r"row 1: unknown field 'outptu' \(a manifest's fields: input, output, set, preset\)"),
                      ("input,set\na.wav,gain.gain_db=-6,limiter.ceiling_db=-3\n",
                       r"row 1 has more fields than the header names \('limiter.ceiling_db=-3' left over\); "
                       "quote a field that holds a comma")):
        csv_.write_text(text)
        with pytest.raises(OfflineError, match=f"sp.csv: {why}"):
            plan_batch([csv_], out, BatchOptions())
    jsonl = tmp_path / "typo.jsonl"
    jsonl.write_text(json.dumps({"input": "a.wav", "ouput": "typo.wav", "sets": ["gain.gain_db=-6"]}) + "\n")
    with pytest.raises(OfflineError, match=r"typo.jsonl: row 1: unknown fields 'ouput', 'sets' \(a manifest's "
                                           r"fields: input, output, set, preset\)"):
        plan_batch([jsonl], out, BatchOptions())
    jsonl.write_text('{"input": "a.wav"}\n\n{"input": "a.wav", "output": "b.wav"}\nnot json\n')
    with pytest.raises(OfflineError, match=r"typo.jsonl: cannot read manifest \(line 4, column 1: Expecting value\)"):
        plan_batch([jsonl], out, BatchOptions())
    assert not out.exists()


# ------------------------------------------------------------------------------ 5: two batches, one folder

def test_a_second_batch_into_the_same_out_is_refused_and_leaves_the_firsts_files(tmp_path, capsys):
    """A second batch into the same --out removed the first one's files in progress (every .part
    file, whatever its age): the first then failed with "the file reads back 0 of N frames"."""
    _tone(tmp_path / "in" / "a.wav")
    out = tmp_path / "out"
    out.mkdir()
    live = out / ".a.wav.12345.part"  # the first batch's output in progress
    live.write_bytes(b"RIFF")
    with open(out / LOG_NAME, "a") as held:  # the first batch, as it holds its folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        err = _one_error_line(capsys, ["batch", str(tmp_path / "in"), "--out", str(out), "--preset", "clean",
                                       "--jobs", "1", "--no-progress"])
        assert f"error: {out}: another batch is writing into this folder" in err
        assert live.exists() and not (out / "a.wav").exists()
    # the first one gone (however it ended: the kernel drops its lock), the folder is free
    s = run_batch([tmp_path / "in"], out, BatchOptions(preset="clean"), jobs=1, progress=False)
    assert (s["processed"], s["failed"]) == (1, 0)
    with open(out / LOG_NAME, "a") as probe:  # and a batch that ended holds it no more
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # a re-run with nothing to do writes nothing, so it needs no lock (a finished batch's folder
        # may be read-only by now: it failed there with "cannot write the batch's log")
        s = run_batch([tmp_path / "in"], out, BatchOptions(preset="clean"), jobs=1, progress=False)
        assert (s["processed"], s["skipped"], s["failed"]) == (0, 1, 0)


def test_two_real_batches_into_one_folder(tmp_path):
    """The reviewer's case: two `batch` commands into one --out; the first is paused while it writes
    (SIGSTOP to its group), so the second certainly starts while the first's files are in progress."""
    src = tmp_path / "long"
    for i in range(3):
        _tone(src / f"f{i}.wav", sr=48000, seconds=20.0, freq=300 + 100 * i)
    out = tmp_path / "out"
    cmd = [sys.executable, "main.py", "batch", str(src), "--out", str(out), "--preset", "default", "--jobs", "1",
           "--no-progress"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None and not list(out.glob(".*.part")):
            time.sleep(0.002)
        os.killpg(first.pid, signal.SIGSTOP)
        parts = list(out.glob(".*.part"))
        assert first.poll() is None and parts
        second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert all(p.exists() for p in parts)  # the first one's files in progress are left alone
        os.killpg(first.pid, signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a test that failed while it was paused
            os.killpg(first.pid, signal.SIGCONT)
        first.kill()
    assert second.returncode == 2 and second.stdout == "", second.stderr
    assert second.stderr == f"error: {out}: another batch is writing into this folder; wait for it to end, " \
                            "or give another --out\n"
    assert first.returncode == 0, stderr
    assert json.loads(stdout)["failed"] == 0
    assert all(sf.info(str(out / f"f{i}.wav")).frames == 20 * 48000 for i in range(3))


# ------------------------------------------------------------------------------ 6: MIDI renders, every format

def test_midi_renders_to_the_formats_process_writes(tmp_path, capsys):
    """`synth x.mid out.ogg` was refused ("write .wav or .flac") though `process` writes .ogg, and
    `batch --ext ogg` accepted the extension, then failed every MIDI input."""
    _midi(tmp_path / "m.mid")
    wav = tmp_path / "ref.wav"
    assert main.main(["synth", str(tmp_path / "m.mid"), str(wav)]) == 0
    ref, sr = sf.read(wav, dtype="float32")
    for ext in ("ogg", "mp3", "opus", "aiff", "caf"):
        out = tmp_path / f"m.{ext}"
        assert main.main(["synth", str(tmp_path / "m.mid"), str(out)]) == 0
        y, sr_y = sf.read(out, dtype="float32")
        assert sr_y == sr and y.shape == ref.shape, (ext, y.shape)
        if ext in ("aiff", "caf"):  # PCM, 24 bits as the .wav
            assert np.array_equal(y, ref), ext
    # a batch of MIDI and audio inputs, one at a time and side by side
    _midi(tmp_path / "in" / "n.mid")
    _tone(tmp_path / "in" / "a.wav")
    (tmp_path / "in" / "m.mid").write_bytes((tmp_path / "m.mid").read_bytes())
    for streams in (1, 8):
        out = tmp_path / f"out{streams}"
        s = run_batch([tmp_path / "in"], out, BatchOptions(preset="clean", ext="ogg", streams=streams), jobs=1,
                      progress=False)
        assert (s["processed"], s["failed"]) == (3, 0), s["failures"]
        assert sf.info(str(out / "m.ogg")).frames == len(ref)
        assert sorted(p.name for p in out.glob("*.ogg")) == ["a.ogg", "m.ogg", "n.ogg"]
    # a format MIDI renders cannot take at their rate: said before any work, not as every file's failure
    err = _one_error_line(capsys, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "opus"), "--ext", "opus",
                                   "-r", "44100", "--no-progress"])
    assert "--ext 'opus' for MIDI inputs: Opus holds only" in err
    assert not (tmp_path / "opus").exists()
