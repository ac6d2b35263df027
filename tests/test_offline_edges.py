"""Offline processing at its edges: the input by another path, pipes, hot float sources, truncated
inputs and resuming, tails, tags, output formats. Each test failed before its fix."""
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import main
from realtime.dsp.presets import build_chain, load_preset
from realtime.errors import OfflineError
from realtime.run.batch import LOG_NAME, BatchOptions, plan_batch, run_batch, run_task, run_unit
from realtime.run.offline import output_format, process_file

ROOT = Path(__file__).resolve().parent.parent
TAGS = {"title": "Take 5", "artist": "The Quartet", "album": "Live", "date": "1959", "comment": "first take"}


def _tone(sr, n, amp=0.3, ch=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = amp * np.sin(2 * np.pi * 440 * t)[:, None] + 0.02 * rng.standard_normal((n, ch))
    return x.astype(np.float32)


def _clean():
    return build_chain(load_preset("clean"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still promises the whole file


def _log(out: Path) -> dict:
    """The last record of each output, by input file name."""
    return {Path(r["input"]).name: r for r in map(json.loads, (out / LOG_NAME).read_text().splitlines())}


# ------------------------------------------------------------------------------ 1: the input by another path

def test_a_hard_link_to_the_input_is_refused_as_the_input(tmp_path):
    src = tmp_path / "take.wav"
    sf.write(src, _tone(48000, 4800), 48000, subtype="PCM_24")
    link = tmp_path / "other" / "TAKE.wav"
    link.parent.mkdir()
    os.link(src, link)
    before = src.read_bytes()
    with pytest.raises(OfflineError, match="refusing to overwrite the input"):
        process_file(src, link, _clean(), progress=False)
    assert src.read_bytes() == before and os.path.samefile(src, link)
    assert sorted(p.name for p in link.parent.iterdir()) == ["TAKE.wav"]  # nothing half-written


def test_the_input_seen_through_a_bind_mount_is_not_replaced(tmp_path):
    """`process music/take.wav view/take.wav` with view a bind mount of music replaced the input."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a bind mount needs root")
    music, view = tmp_path / "music", tmp_path / "view"
    music.mkdir()
    view.mkdir()
    src = music / "take.wav"
    sf.write(src, _tone(48000, 4800), 48000, subtype="PCM_24")
    before = src.read_bytes()
    r = subprocess.run(["mount", "--bind", str(music), str(view)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"mount --bind refused: {r.stderr.strip()}")
    try:
        with pytest.raises(OfflineError, match="refusing to overwrite the input"):
            process_file(src, view / "take.wav", _clean(), progress=False)
        assert src.read_bytes() == before
    finally:
        subprocess.run(["umount", str(view)], check=True)


# ------------------------------------------------------------------------------ 2: pipes

@pytest.fixture
def file_size_limit():
    """Files this process writes stop at 256 MiB (Python ignores SIGXFSZ, so the write fails): a
    pipe misread as 6 hours long would otherwise fill the disk before the test could fail."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = 256 << 20 if hard == resource.RLIM_INFINITY else min(256 << 20, hard)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _wav_bytes(x, sr, streaming=False) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    if streaming:  # as `ffmpeg -f wav -` writes it: the sizes not known yet
        data[4:8] = b"\xff" * 4
        i = data.find(b"data")
        data[i + 4:i + 8] = b"\xff" * 4
    return bytes(data)


def _feed(fifo: Path, data: bytes) -> threading.Thread:
    def write():
        try:
            with open(fifo, "wb") as f:
                f.write(data)
        except BrokenPipeError:
            pass
    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


def _release(fifo: Path, writer: threading.Thread) -> None:
    """A writer still waiting for a reader (the run failed before opening the pipe) is let go."""
    if writer.is_alive():
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    writer.join(10)


@pytest.mark.parametrize("streaming", [False, True], ids=["header", "streaming-header"])
def test_a_pipe_is_read_once_and_is_as_long_as_what_it_held(tmp_path, file_size_limit, streaming):
    """A FIFO (or /dev/stdin): the WAV length check opened it a second time and ate 4 KiB of its
    audio (the end padded with silence); a streaming header's 0xFFFFFFFF sizes read as 1073741823
    frames, and the output was padded to 6 hours."""
    x = (0.3 * np.random.default_rng(1).standard_normal((30000, 2))).astype(np.float32)
    ref_in, ref = tmp_path / "ref_in.wav", tmp_path / "ref.wav"
    ref_in.write_bytes(_wav_bytes(x, 48000))
    process_file(ref_in, ref, build_chain(load_preset("default")), progress=False)
    fifo, out = tmp_path / "pipe.wav", tmp_path / "out.wav"
    os.mkfifo(fifo)
    writer = _feed(fifo, _wav_bytes(x, 48000, streaming))
    try:
        report = process_file(fifo, out, build_chain(load_preset("default")), progress=False)
    finally:
        _release(fifo, writer)
    y, expected = sf.read(out, dtype="float64")[0], sf.read(ref, dtype="float64")[0]
    assert y.shape == expected.shape == (30000, 2)
    assert np.array_equal(y, expected)
    assert (report["frames"], report["frames_read"], report["truncated"]) == (30000, 30000, False)


@pytest.mark.parametrize("fmt", ["MP3", "FLAC"])
def test_compressed_audio_through_a_pipe_is_all_there(tmp_path, fmt):
    """MP3 and FLAC decoders seek: read straight from a pipe, a minute of MP3 lost ~3 s (rc 0, not
    truncated) and FLAC was refused ("decoder lost sync"). The pipe is now read whole first."""
    t = np.arange(6 * 48000) / 48000
    x = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)], 1).astype(np.float32)
    ext = fmt.lower()
    src = tmp_path / f"song.{ext}"
    sf.write(src, x, 48000, format=fmt)
    ref = tmp_path / "ref.wav"
    process_file(src, ref, _clean(), progress=False)
    fifo, out = tmp_path / f"pipe.{ext}", tmp_path / "out.wav"
    os.mkfifo(fifo)
    writer = _feed(fifo, src.read_bytes())
    try:
        report = process_file(fifo, out, _clean(), progress=False)
    finally:
        _release(fifo, writer)
    y, expected = sf.read(out, dtype="float64")[0], sf.read(ref, dtype="float64")[0]
    assert y.shape == expected.shape and report["truncated"] is False
    np.testing.assert_array_equal(y, expected)


# ------------------------------------------------------------------------------ 3: clipping

def test_a_float_source_over_full_scale_is_reported_as_clipped(tmp_path, capsys):
    """37 % of a hot float file's samples were pinned to the ceiling, rc 0, not a word."""
    hot, quiet, out = tmp_path / "hot.wav", tmp_path / "quiet.wav", tmp_path / "out.wav"
    sf.write(hot, _tone(48000, 24000, amp=2.0), 48000, subtype="FLOAT")
    sf.write(quiet, _tone(48000, 24000, amp=0.3), 48000, subtype="FLOAT")
    capsys.readouterr()
    report = process_file(hot, out, _clean(), progress=False)
    err = capsys.readouterr().err.splitlines()
    assert report["clipped_samples"] > 0.3 * 24000 * 2
    assert len(err) == 1 and f"{report['clipped_samples']} samples" in err[0] and "limiter" in err[0], err
    report = process_file(quiet, out, _clean(), progress=False)
    assert report["clipped_samples"] == 0 and capsys.readouterr().err == ""
    (task,) = plan_batch([hot], tmp_path / "batch", BatchOptions(preset="clean"))
    result = run_task(task)
    assert result["status"] == "ok" and result["clipped_samples"] > 0.3 * 24000 * 2
    capsys.readouterr()
    assert main.main(["batch", str(hot), str(quiet), "--out", str(tmp_path / "b2"), "--preset", "clean", "-j", "1",
                      "--no-progress"]) == 0
    summary_line = [line for line in capsys.readouterr().err.splitlines() if line.startswith("batch:")]
    assert summary_line == [f"batch: files clipped by the safety stage: 1 (per file in {tmp_path / 'b2' / LOG_NAME})"]


@pytest.mark.parametrize("sr", [8000, 22050])
def test_a_low_rate_file_resampled_back_stays_under_the_safety_ceiling(tmp_path, sr):
    """Below 44.1 kHz a file runs at 48 kHz and is resampled back: the ceiling held at 48 kHz, and the
    resampler back rang past it (a full-scale square at 8 kHz through `clean` came out at 1.096, over
    0 dBFS). Clipped to the ceiling again after the resampler: `process` and files side by side."""
    from realtime.run.batch_plan import group_tasks

    ceiling = 10 ** (-0.3 / 20)  # clean's and voice's safety stage
    t = np.arange(2 * sr) / sr
    square = np.sign(np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(src / name, square, sr, subtype="FLOAT")
    out = tmp_path / "out.wav"
    report = process_file(src / "a.wav", out, _clean(), progress=False)
    assert report["chain_samplerate"] == 48000 and report["clipped_samples"] > 0
    y = sf.read(out)[0]
    assert len(y) == 2 * sr and ceiling * 0.99 < np.abs(y).max() <= ceiling
    # the enhancer letting everything through and no limiter: the square reaches the safety stage whole
    options = BatchOptions(preset="voice", overrides=["enhancer.atten_limit_db=0", "limiter.bypass=true"], streams=2)
    (unit,) = group_tasks(plan_batch([src], tmp_path / "b", options), 2)
    assert len(unit) == 2 and all(r["status"] == "ok" for r in run_unit(unit))
    for name in ("a.wav", "b.wav"):
        assert ceiling * 0.99 < np.abs(sf.read(tmp_path / "b" / name)[0]).max() <= ceiling


# ------------------------------------------------------------------------------ 4: truncated inputs

@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_a_truncated_input_is_reported(tmp_path, capsys, ext):
    """A cut WAV is processed as far as it goes (libsndfile trims its length), a cut FLAC's
    undecodable end is written as silence: either way the report says the input was cut."""
    src, out = tmp_path / f"cut{ext}", tmp_path / "out.wav"
    sf.write(src, _tone(48000, 96000), 48000, subtype="PCM_16")
    whole = process_file(src, out, _clean(), progress=False)
    _truncate(src)
    report = process_file(src, out, _clean(), progress=False)
    assert not whole["truncated"] and report["truncated"] and 0 < report["frames_read"] < 96000
    assert report["frames"] == sf.info(out).frames == (96000 if ext == ".flac" else report["frames_read"])
    assert "warning" in capsys.readouterr().err


def test_a_truncated_input_is_partial_in_batch_and_done_until_it_changes(tmp_path):
    """A cut file was logged "ok": nothing told it apart from a whole one, and it was never retried."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    x = _tone(48000, 24000)
    sf.write(src / "cut.wav", x, 48000, subtype="PCM_16")
    _truncate(src / "cut.wav")
    sf.write(src / "hot.wav", _tone(48000, 24000, amp=2.0), 48000, subtype="FLOAT")
    options = BatchOptions(preset="clean")
    s = run_batch([src], out, options, jobs=1, progress=False)
    assert (s["processed"], s["failed"], s["truncated"], s["clipped"]) == (2, 0, 1, 1)
    log = _log(out)
    assert log["cut.wav"]["status"] == "partial" and 0 < log["cut.wav"]["frames_read"] < 24000
    assert log["hot.wav"]["status"] == "ok" and not log["hot.wav"]["truncated"]
    s = run_batch([src], out, options, jobs=1, progress=False)  # the same input: done
    assert (s["processed"], s["skipped"], s["truncated"], s["truncated_before"]) == (0, 2, 0, 1)
    sf.write(src / "cut.wav", x, 48000, subtype="PCM_16")  # the whole file now
    s = run_batch([src], out, options, jobs=1, progress=False)
    assert (s["processed"], s["skipped"], s["truncated"], s["failed"]) == (1, 1, 0, 0)
    assert _log(out)["cut.wav"]["status"] == "ok" and _log(out)["cut.wav"]["frames_read"] == 24000


# ------------------------------------------------------------------------------ 5: resuming from another folder

def test_resuming_does_not_depend_on_the_current_folder(tmp_path, monkeypatch):
    """The log held paths relative to where the batch started: run from elsewhere, all was redone."""
    (tmp_path / "in").mkdir()
    (tmp_path / "elsewhere").mkdir()
    sf.write(tmp_path / "in" / "a.wav", _tone(48000, 4800), 48000, subtype="PCM_24")
    options = BatchOptions(preset="clean")
    monkeypatch.chdir(tmp_path)
    assert run_batch(["in"], "out", options, jobs=1, progress=False)["processed"] == 1
    monkeypatch.chdir(tmp_path / "elsewhere")
    for inputs, out in ((["../in"], "../out"), ([tmp_path / "in"], tmp_path / "out")):
        s = run_batch(inputs, out, options, jobs=1, progress=False)
        assert (s["processed"], s["skipped"]) == (0, 1)
    rec = _log(tmp_path / "out")["a.wav"]
    assert os.path.isabs(rec["input"]) and os.path.isabs(rec["output"])
    # a log written before (paths relative to its run's folder) still counts from that folder
    log = tmp_path / "out" / LOG_NAME
    old = [{**r, "input": os.path.relpath(r["input"], tmp_path), "output": os.path.relpath(r["output"], tmp_path)}
           for r in map(json.loads, log.read_text().splitlines())]
    log.write_text("".join(json.dumps(r) + "\n" for r in old))
    monkeypatch.chdir(tmp_path)
    s = run_batch(["in"], "out", options, jobs=1, progress=False)
    assert (s["processed"], s["skipped"]) == (0, 1)


def test_an_input_folder_as_the_output_folder_is_refused(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", _tone(48000, 4800), 48000)
    with pytest.raises(OfflineError, match="the output folder is the input folder"):
        plan_batch([src], src / "x" / "..", BatchOptions())
    capsys.readouterr()
    assert main.main(["batch", str(src), "--out", str(src), "--preset", "clean", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the output folder is the input folder" in err
    assert sorted(p.name for p in src.iterdir()) == ["a.wav"]


# ------------------------------------------------------------------------------ 6: tails

MDA_DELAY = "http://drobilla.net/plugins/mda/Delay"


def _delay_chain():
    """A real echo: MDA's delay (LV2), one repeat, all wet, at unity output."""
    from realtime.dsp.presets import build_chain, validate_preset
    from realtime.io import lv2_scan

    if MDA_DELAY not in lv2_scan.scan().plugins:
        pytest.skip("mda-lv2 is not installed")
    return build_chain(validate_preset({"version": 1, "name": "echo", "chain": [
        {"id": "echo", "processor": "lv2", "uri": MDA_DELAY,
         "params": {"l_delay": 0.3, "r_delay": 0.3, "feedback": 0.0, "fx_mix": 1.0, "output": 1.0}}]}))


@pytest.mark.parametrize("file_sr", [48000, 44100])
def test_a_tail_keeps_what_the_chain_makes_after_the_input_ends(tmp_path, file_sr):
    """A delay's echo of a click 100 frames before the end was cut off with the input's length."""
    n = file_sr // 2
    x = np.zeros((n, 1), np.float32)
    x[n - 100] = 0.5
    src, out = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, file_sr, subtype="FLOAT")
    report = process_file(src, out, _delay_chain(), samplerate=48000, progress=False)
    cut = sf.read(out, dtype="float32")[0]
    assert len(cut) == n and report["frames"] == n and np.abs(cut[n - 100:]).max() < 0.05  # the default: no tail
    report = process_file(src, out, _delay_chain(), samplerate=48000, progress=False, tail_s=0.5)
    y = sf.read(out, dtype="float32")[0]
    assert len(y) == report["frames"] == n + round(0.5 * file_sr) and report["tail_frames"] == round(0.5 * file_sr)
    np.testing.assert_allclose(y[:n], cut, atol=1e-6)  # what came before the end is unchanged
    assert np.abs(y[n:]).max() > 0.2  # and the echo is there


def test_the_tail_option_of_process_and_batch(tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, _tone(48000, 4800), 48000, subtype="PCM_24")
    assert main.main(["process", str(src), str(tmp_path / "p.wav"), "--preset", "clean", "--tail", "0.5",
                      "--no-progress"]) == 0
    assert sf.info(tmp_path / "p.wav").frames == 4800 + 24000
    args = main.build_parser().parse_args(["batch", str(src), "--out", "o", "--tail", "0.5"])
    assert args.tail == 0.5
    (task,) = plan_batch([src], tmp_path / "b", BatchOptions(preset="clean", tail_s=0.5))
    (plain,) = plan_batch([src], tmp_path / "b", BatchOptions(preset="clean"))
    assert task.preset_hash != plain.preset_hash  # a log made without the tail does not count
    assert run_task(task)["status"] == "ok"
    assert sf.info(tmp_path / "b" / "in.wav").frames == 4800 + 24000


def test_files_side_by_side_keep_tails_tags_and_say_truncated(tmp_path):
    """The streams path (a preset that starts with the enhancer) gives what ``process_file`` gives."""
    from realtime.run.batch_plan import group_tasks

    src = tmp_path / "in"
    src.mkdir()
    with sf.SoundFile(src / "a.wav", "w", 48000, 1, subtype="PCM_24") as f:
        f.title, f.artist = TAGS["title"], TAGS["artist"]
        f.write(_tone(48000, 30000, ch=1, seed=2))
    sf.write(src / "b.wav", _tone(48000, 36000, ch=1, seed=3), 48000, subtype="PCM_16")
    _truncate(src / "b.wav")
    readable = sf.info(src / "b.wav").frames
    options = BatchOptions(preset="voice", streams=2, tail_s=0.2)
    (unit,) = group_tasks(plan_batch([src], tmp_path / "out", options), 2)
    results = {Path(r["input"]).name: r for r in run_unit(unit)}
    assert (results["a.wav"]["status"], results["b.wav"]["status"]) == ("ok", "partial")
    assert results["b.wav"]["truncated"] and results["b.wav"]["frames_read"] == readable < 36000
    with sf.SoundFile(tmp_path / "out" / "a.wav") as f:
        assert (f.title, f.artist) == (TAGS["title"], TAGS["artist"])
    for name, frames in (("a.wav", 30000), ("b.wav", readable)):
        ref = tmp_path / f"ref_{name}"
        process_file(src / name, ref, build_chain(load_preset("voice")), progress=False, tail_s=0.2)
        y, expected = sf.read(tmp_path / "out" / name)[0], sf.read(ref)[0]
        assert y.shape == expected.shape == (frames + 9600,)
        assert np.abs(y - expected).max() <= 1e-6


# ------------------------------------------------------------------------------ 7: tags

@pytest.mark.parametrize("ext", [".flac", ".wav"])
def test_text_tags_are_copied_to_the_output(tmp_path, ext):
    src, out = tmp_path / "in.flac", tmp_path / f"out{ext}"
    with sf.SoundFile(src, "w", 48000, 2, subtype="PCM_24") as f:
        for name, value in TAGS.items():
            setattr(f, name, value)
        f.write(_tone(48000, 4800))
    process_file(src, out, _clean(), progress=False)
    with sf.SoundFile(out) as f:
        assert {name: getattr(f, name) for name in TAGS} == TAGS


# ------------------------------------------------------------------------------ 8, 9: output formats

@pytest.mark.parametrize("name, given, expected", [
    ("o.caf", "PCM_S8", ("CAF", "PCM_24")), ("o.w64", "PCM_16", ("W64", "PCM_24")),
    ("o.au", "PCM_16", ("AU", "PCM_24")), ("o.rf64", "PCM_U8", ("RF64", "PCM_24")),
    ("o.aifc", "PCM_16", ("AIFF", "PCM_24")), ("o.flac", "PCM_32", ("FLAC", "PCM_24")),
    ("o.wav", "FLOAT", ("WAV", "FLOAT")), ("o.mp3", "PCM_16", ("MP3", "MPEG_LAYER_III"))])  # MP3 holds no 24 bits
def test_an_output_gets_24_bits_in_every_format_that_holds_them(name, given, expected):
    assert output_format(Path(name), given, 48000) == expected


def test_an_8_bit_input_to_caf_and_an_aifc_output(tmp_path):
    src = tmp_path / "in8.aiff"
    sf.write(src, _tone(48000, 4800, ch=1), 48000, subtype="PCM_S8")
    process_file(src, tmp_path / "o.caf", _clean(), progress=False)
    assert sf.info(tmp_path / "o.caf").subtype == "PCM_24"
    process_file(src, tmp_path / "o.aifc", _clean(), progress=False)
    assert (sf.info(tmp_path / "o.aifc").format, sf.info(tmp_path / "o.aifc").frames) == ("AIFF", 4800)


def test_a_wavpack_file_is_not_taken_for_audio(tmp_path):
    """libsndfile cannot read WavPack: a .wv file failed every batch."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.wv").write_bytes(b"wvpk" + os.urandom(200))
    sf.write(tmp_path / "in" / "a.wav", _tone(48000, 480), 48000)
    assert [Path(t.input).name for t in plan_batch([tmp_path / "in"], tmp_path / "out", BatchOptions())] == ["a.wav"]


def test_vorbis_above_192_khz_and_opus_at_other_rates_are_refused():
    with pytest.raises(OfflineError, match=r"at most 192 kHz .*; write \.flac$"):
        output_format(Path("o.ogg"), "PCM_24", 384000)
    assert output_format(Path("o.ogg"), "PCM_24", 192000) == ("OGG", "VORBIS")
    with pytest.raises(OfflineError, match=r"Opus .*44100 Hz; write \.flac$"):
        output_format(Path("o.opus"), "PCM_24", 44100)


def test_a_384_khz_file_to_ogg_fails_with_one_line(tmp_path):
    """libsndfile's Vorbis encoder crashed the process (SIGSEGV, rc 139, a .part left behind)."""
    src = tmp_path / "in.wav"
    sf.write(src, _tone(384000, 3840), 384000, subtype="PCM_24")
    r = subprocess.run([sys.executable, "main.py", "process", str(src), str(tmp_path / "o.ogg"), "--preset", "clean",
                        "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "192 kHz" in r.stderr, (r.returncode, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_an_atomic_file_that_cannot_be_made_names_the_file_asked_for(tmp_path):
    """The error names the destination, not the hidden temporary file beside it (the panel's
    preset save said '.mine.json.x1y2.tmp')."""
    from realtime.io.files import AtomicFile

    dest = tmp_path / "gone" / "mine.json"
    with pytest.raises(FileNotFoundError) as err:
        AtomicFile(dest)
    assert err.value.filename == str(dest) and ".tmp" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_clips_after_resampling_back_are_counted_with_the_safety_stage():
    """The ceiling applied again after the resampler back (above) clipped samples that the report's
    ``clipped_samples`` (and its warning) never counted: a 500 Hz square at 0.9, under the -0.3 dBFS
    ceiling at 48 kHz, rings to ~0.98 once band-limited to an 8 kHz file. Every output sample the
    writer pins at the ceiling is now counted in the stage's own counter."""
    import soxr

    from realtime.dsp.processors.safety import CLIPPED, Safety
    from realtime.run.offline import OutputWriter, clipped_samples

    chain = _clean()
    chain.prepare(48000, 256, 1)
    assert isinstance(chain.safety, Safety) and chain.safety is chain.slots[-1].processor
    t = np.arange(48000) / 48000
    square = (0.9 * np.sign(np.sin(2 * np.pi * 500 * t + 0.1))).astype(np.float32)[:, None]
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=8000, channels=1, format="WAV", subtype="FLOAT") as dst:
        writer = OutputWriter(dst, soxr.ResampleStream(48000, 8000, 1, dtype="float32", quality="HQ"), 8000,
                              safety=chain.safety)
        for i in range(0, len(square), 256):
            writer.write(square[i:i + 256].copy())
        writer.finish()
    buf.seek(0)
    y = sf.read(buf, dtype="float32")[0]
    lim = np.float32(10 ** (-0.3 / 20) * (1.0 - 2.5e-7))
    pinned = int(np.count_nonzero(np.abs(y) >= lim))
    assert np.abs(y).max() <= lim and pinned > 100
    assert chain.safety.counters[CLIPPED] == pinned == clipped_samples(chain)
