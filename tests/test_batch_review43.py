"""Batch and offline inputs, review 43: a chained Ogg of many parts read whole with one part open at a
time (with every part open, a stream recording of 1,100 links ran out of file descriptors and came out
cut short, marked done), the plan's length of joined and chained files, an ETA past a day, and a resume
log that cannot be written stopping the batch in one line. Each test failed before its fix."""
import io
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.run.audio_input import open_input
from realtime.run.batch import BatchOptions, Progress, clock, plan_batch, run_batch

ROOT = Path(__file__).resolve().parents[1]


def _chained(path: Path, parts: int, fmt: str = "OGG", sr: int = 8000, seconds: float = 0.1) -> int:
    """``parts`` short tones joined end to end (a chained Ogg, or MP3 files joined); their frames."""
    blobs, frames = [], 0
    n = int(sr * seconds)
    for i in range(parts):
        x = (0.3 * np.sin(2 * np.pi * (300 + 5 * i) * np.arange(n) / sr)).astype(np.float32)
        buf = io.BytesIO()
        with sf.SoundFile(buf, "w", sr, 1, format=fmt, subtype="VORBIS" if fmt == "OGG" else None) as f:
            f.write(x)
        with sf.SoundFile(io.BytesIO(buf.getvalue())) as f:
            frames += f.frames
        blobs.append(buf.getvalue())
    path.write_bytes(b"".join(blobs))
    return frames


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_chained_file_is_read_with_one_part_open_at_a_time(tmp_path):
    src = tmp_path / "stream.ogg"
    whole = _chained(src, 120)
    before = _open_fds()
    f, cut = open_input(src)
    try:
        assert f.frames == whole and not cut
        most = _open_fds() - before
        got = 0
        while True:
            x = f.read(777, dtype="float32", always_2d=True)
            if not x.shape[0]:
                break
            got += x.shape[0]
            most = max(most, _open_fds() - before)
        assert got == whole
        assert most <= 2, f"{most} file descriptors held while reading a 120-part file"
        f.seek(whole // 2)  # back into an earlier part, as salvage does
        assert f.tell() == whole // 2 and f.read(10).shape[0] == 10
    finally:
        f.close()
    assert _open_fds() == before


def _few_descriptors():
    resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))


def test_a_stream_recording_of_more_parts_than_descriptors_comes_out_whole(tmp_path):
    """200 links under a limit of 96 open files: every part opened at once ran out, and the output
    stopped at the part that failed, said as "a part libsndfile cannot read", and marked done."""
    src, out = tmp_path / "long.ogg", tmp_path / "long.wav"
    whole = _chained(src, 200)
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "process", str(src), str(out), "--preset", "clean",
                        "--no-progress"], capture_output=True, text=True, cwd=ROOT, preexec_fn=_few_descriptors,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert sf.info(str(out)).frames == whole


def test_the_plan_reads_the_length_of_every_part(tmp_path):
    """The progress total and the order of the work: a joined MP3 was planned at its first part's length,
    a chained Ogg at 2^63 frames (an ETA of years)."""
    mp3, ogg = tmp_path / "in" / "joined.mp3", tmp_path / "in" / "chained.ogg"
    mp3.parent.mkdir()
    mp3_frames = _chained(mp3, 4, fmt="MP3", sr=44100, seconds=0.5)
    ogg_frames = _chained(ogg, 5, sr=8000, seconds=0.4)
    tasks = {Path(t.input).name: t for t in plan_batch([tmp_path / "in"], tmp_path / "out", BatchOptions())}
    assert abs(tasks["joined.mp3"].audio_s - mp3_frames / 44100) < 0.01
    assert abs(tasks["chained.ogg"].audio_s - ogg_frames / 8000) < 0.01


def test_the_eta_counts_hours_past_a_day():
    assert clock(99.9 * 3600) == "99:54:00" and clock(59.6) == "0:01:00"
    bar = Progress(1000, 1000 * 3600.0, io.StringIO(), enabled=False)
    bar.t0 = time.perf_counter() - 360  # an hour of audio done in 6 minutes: 10 × real time
    bar.update({"status": "ok", "audio_s": 3600.0})
    assert "ETA 99:54:" in bar.line(), bar.line()


def test_a_resume_log_that_cannot_be_written_stops_the_batch_in_one_line(tmp_path, full_disk):
    """A 64 kB disk the first output fills to the last page: its record cannot be written. The batch
    stopped with "error: no space left on device" (which file? what was done?) and no summary; now it
    starts no more files, and the summary and the exit status say why."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    # 20,465 frames: a 24-bit output of 61,439 bytes, 15 pages; the list of outputs the batch is about
    # to write (.batch-queued.jsonl) takes the sixteenth
    for i in range(3):
        sf.write(inputs / f"f{i}.wav", (0.1 * np.sin(np.arange(20465) * 0.05)).astype(np.float32), 48000,
                 subtype="PCM_16")
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "batch", str(inputs), "--out", str(full_disk / "o"),
                        "--preset", "clean", "--jobs", "1", "--no-progress"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    said = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and ".batch-manifest.jsonl (no space left on device)" in said[0], r.stderr
    assert "2 files not started" in said[0]
    summary = __import__("json").loads(r.stdout)
    assert summary["stopped"] and summary["not_started"] == 2 and not summary["interrupted"]


def test_a_batch_stopped_by_its_log_is_not_an_interrupt(tmp_path, full_disk):
    """The same through ``run_batch``: the summary's ``stopped`` names the log, ``interrupted`` stays
    false (the command would exit as if killed by Ctrl-C)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):
        sf.write(inputs / f"g{i}.wav", (0.1 * np.sin(np.arange(20465) * 0.05)).astype(np.float32), 48000,
                 subtype="PCM_16")
    s = run_batch([inputs], full_disk / "o", BatchOptions(preset="clean"), jobs=1, progress=False)
    assert "resume log" in s["stopped"] and s["not_started"] == 1 and s["processed"] == 1
    assert not s["interrupted"] and s["signal"] is None


def test_a_first_ctrl_c_after_the_batch_stopped_itself_still_finishes_the_files_in_flight():
    """A halt (the resume log) took level 1, so the user's first Ctrl-C went on to abandon the files
    in flight, half-written."""
    import signal

    from realtime.run.batch import StopFlag

    said = io.StringIO()
    stop = StopFlag(said)
    stop.halt("cannot write the resume log")
    stop.escalate(signal.SIGINT)
    assert stop.level == 1 and "finishing the files in progress (again to abandon them)" in said.getvalue()
    stop.escalate(signal.SIGINT)
    assert stop.level == 2
