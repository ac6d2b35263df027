"""Batch review of the forty-fifth session: files of the user's in --out, a hung-up terminal, a torn
log line, nothing to process, a dangling --out link, --ray taking the input for its address."""
import json
import os
import pty

import pytest
import soundfile as sf

import main
from realtime.errors import OfflineError
from realtime.run.batch import LOG_NAME, BatchOptions, Progress, ResumeLog, StopFlag, plan_batch, run_batch

from .test_batch_review3 import ROOT, _one_error_line, _tone


def test_a_file_in_out_that_no_batch_wrote_is_refused_not_replaced(tmp_path, capsys):
    """`batch lib/s.wav --out lib --ext flac` replaced lib/s.flac, an original at 96 kHz, and said ok."""
    lib = tmp_path / "lib"
    _tone(lib / "s.wav", sr=44100)
    _tone(lib / "s.flac", sr=96000, seconds=0.5)
    before = (lib / "s.flac").read_bytes()
    err = _one_error_line(capsys, ["batch", str(lib / "s.wav"), "--out", str(lib), "--ext", "flac", "--jobs", "1",
                                   "--no-progress"])
    assert "s.flac, which no earlier batch wrote" in err and "--force" in err
    assert (lib / "s.flac").read_bytes() == before and not (lib / LOG_NAME).exists()
    s = run_batch([lib / "s.wav"], lib, BatchOptions(ext="flac", force=True), jobs=1, progress=False)
    assert s["processed"] == 1 and sf.info(str(lib / "s.flac")).samplerate == 44100  # --force: asked for


def test_the_batchs_own_outputs_are_redone_and_one_left_by_a_killed_batch_is_known(tmp_path):
    lib, out = tmp_path / "lib", tmp_path / "out"
    _tone(lib / "a.wav")
    _tone(lib / "b.wav", freq=300)
    assert run_batch([lib], out, BatchOptions(preset="clean"), jobs=1, progress=False)["processed"] == 2
    # another preset: both redone, not refused as files of the user's
    assert run_batch([lib], out, BatchOptions(preset="default"), jobs=1, progress=False)["processed"] == 2
    # a batch killed after c.wav's output was put in place and before its result was logged: only its claim is there
    _tone(lib / "c.wav", freq=500)
    ResumeLog(out).claim([out / "c.wav"])
    _tone(out / "c.wav", freq=500)
    assert len(plan_batch([lib], out, BatchOptions(preset="default"))) == 3
    s = run_batch([lib], out, BatchOptions(preset="default"), jobs=1, progress=False)
    assert s["processed"] == 1 and s["skipped"] == 2


def test_a_torn_last_line_of_the_log_does_not_swallow_the_next_record(tmp_path):
    """A power cut mid-append left half a line; the next record was glued onto it, unreadable, and
    its file redone at every run."""
    lib, out = tmp_path / "lib", tmp_path / "out"
    _tone(lib / "a.wav")
    _tone(lib / "b.wav", freq=300)
    run_batch([lib], out, BatchOptions(), jobs=1, progress=False)
    log = out / LOG_NAME
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]) + lines[-1][:40])  # the last record (b or a) torn
    ResumeLog(out).claim([out / "a.wav", out / "b.wav"])  # the killed batch's list of what it was writing
    assert run_batch([lib], out, BatchOptions(), jobs=1, progress=False)["processed"] == 1
    assert run_batch([lib], out, BatchOptions(), jobs=1, progress=False)["processed"] == 0
    assert all(json.loads(x) for x in log.read_bytes().splitlines()[len(lines):])


def test_a_folder_with_nothing_to_process_is_said_and_nothing_is_made(tmp_path, capsys):
    lib = tmp_path / "m4a"
    lib.mkdir()
    for name in ("track.m4a", "track2.wv", "track3.wave", "notes.txt"):
        (lib / name).write_bytes(b"x")
    err = _one_error_line(capsys, ["batch", str(lib), "--out", str(tmp_path / "o"), "--no-progress"])
    assert "no audio or MIDI files to process (4 other files left out: .m4a, .txt, .wave, .wv)" in err
    assert not (tmp_path / "o").exists()


def test_a_dangling_link_as_out_is_named(tmp_path, capsys):
    _tone(tmp_path / "lib" / "a.wav")
    (tmp_path / "outlink").symlink_to(tmp_path / "gone" / "x")
    err = _one_error_line(capsys, ["batch", str(tmp_path / "lib"), "--out", str(tmp_path / "outlink"), "--no-progress"])
    assert "a link to a folder that does not exist" in err and "File exists" not in err


@pytest.mark.parametrize("argv", [["--out", "O", "--ray", "LIB"], ["--ray", "LIB", "--out", "O"]])
def test_ray_taking_the_input_for_its_address_is_said(tmp_path, capsys, argv):
    _tone(tmp_path / "lib" / "a.wav")
    argv = [a.replace("LIB", str(tmp_path / "lib")).replace("O", str(tmp_path / "o")) if len(a) <= 3 else a
            for a in argv]
    capsys.readouterr()
    assert main.main(["batch", str(tmp_path / "lib" / "a.wav"), *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--ray took '{tmp_path / 'lib'}' for a cluster's address" in err and err.count("\n") == 1, err


def test_a_hung_up_terminal_does_not_stop_the_batch_from_finishing_its_files():
    """An SSH session dropped: SIGHUP, and every write to the terminal fails with EIO. The signal
    handler's "finishing the files in progress" raised it, which tore the pool down and threw away
    the files it was to finish; the progress line did the same."""
    master, slave = pty.openpty()
    tty = os.fdopen(slave, "w")
    os.close(master)  # hung up
    with pytest.raises(OSError):
        tty.write("x")
        tty.flush()
    stop = StopFlag(tty)
    stop.escalate(1)  # SIGHUP
    assert stop.level == 1 and stop.signal == "SIGHUP"
    bar = Progress(2, 10.0, tty, interval_s=0.0)
    bar.update({"status": "ok", "audio_s": 5.0})
    bar.close()
    assert not bar.enabled


def test_plan_refuses_strangers_only_without_force(tmp_path):
    _tone(tmp_path / "lib" / "a.wav")
    _tone(tmp_path / "out" / "a.wav", freq=900)
    with pytest.raises(OfflineError, match="which no earlier batch wrote"):
        plan_batch([tmp_path / "lib"], tmp_path / "out", BatchOptions())
    assert len(plan_batch([tmp_path / "lib"], tmp_path / "out", BatchOptions(force=True))) == 1


def test_a_killed_batchs_claims_outlive_a_run_that_writes_other_outputs(tmp_path):
    """A run over part of the library rewrote the list of outputs a killed batch had claimed: its
    file was then taken for the user's, and only --force (everything again) got past it."""
    lib, out = tmp_path / "lib", tmp_path / "out"
    _tone(lib / "a.wav")
    _tone(lib / "b.wav", freq=300)
    ResumeLog(out).claim([out / "a.wav", out / "b.wav"])  # killed after b's output was put in place
    _tone(out / "b.wav", freq=300)
    assert run_batch([lib / "a.wav"], out, BatchOptions(), jobs=1, progress=False)["processed"] == 1
    assert run_batch([lib], out, BatchOptions(), jobs=1, progress=False)["processed"] == 1  # b, not refused


def test_an_out_inside_the_input_folder_knows_a_killed_batchs_claims_and_force_replaces(tmp_path):
    lib = tmp_path / "m"
    _tone(lib / "a.wav")
    _tone(lib / "processed" / "a.wav", freq=900)
    ResumeLog(lib / "processed").claim([lib / "processed" / "a.wav"])
    assert len(plan_batch([lib], lib / "processed", BatchOptions())) == 1
    _tone(lib / "processed" / "mine.wav", freq=700)  # a file of the user's there
    with pytest.raises(OfflineError, match="which no earlier batch wrote"):
        plan_batch([lib], lib / "processed", BatchOptions())
    assert len(plan_batch([lib], lib / "processed", BatchOptions(force=True))) == 1


def test_a_summary_that_cannot_be_printed_is_said(tmp_path):
    import subprocess
    import sys

    _tone(tmp_path / "lib" / "a.wav")
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "main.py", "batch", str(tmp_path / "lib"), "--out", str(tmp_path / "o"),
                            "--no-progress", "--jobs", "1"], cwd=ROOT, stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=300)
    assert r.returncode == 2 and "error: standard output: no space left on device: the summary was not printed" \
        in r.stderr, r.stderr
    assert (tmp_path / "o" / "a.wav").exists()


def test_a_workers_warning_to_a_hung_up_terminal_does_not_fail_its_file():
    from realtime.run.batch import WorkerStderr

    master, slave = pty.openpty()
    tty = os.fdopen(slave, "w")
    os.close(master)
    safe = WorkerStderr(tty)
    print("warning: 8939 samples went over the safety ceiling", file=safe, flush=True)  # raised EIO


def _read_until(fd: int, end: str, timeout_s: float = 5.0) -> str:
    """What a pty's other side wrote, read until ``end`` arrives (or ``timeout_s`` passes)."""
    import select
    import time

    got, deadline = "", time.monotonic() + timeout_s
    while end not in got and select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
        got += os.read(fd, 4096).decode()
    return got


def test_a_workers_warning_clears_the_progress_line_it_lands_on():
    """On a terminal the progress line has no newline: a worker's warning was glued onto its end."""
    from realtime.run.batch import WorkerStderr

    master, slave = pty.openpty()
    tty = os.fdopen(slave, "w")
    try:
        tty.write("\r\033[K[6/8 files, 0 failed] ...")
        tty.flush()
        print("warning: short.wav: the header promises more", file=WorkerStderr(tty), flush=True)
        got = _read_until(master, "more")  # (one read may return the progress line's write alone)
    finally:
        tty.close()
        os.close(master)
    assert "...\r\033[Kwarning: short.wav" in got, repr(got)


def test_ray_local_is_an_address_even_beside_a_folder_named_local(tmp_path, monkeypatch):
    (tmp_path / "local").mkdir()
    monkeypatch.chdir(tmp_path)
    main._check_ray_address("local")
    main._check_ray_address("auto")
    main._check_ray_address("10.0.0.2:6379")
    with pytest.raises(OfflineError, match="--ray took 'lib' for a cluster's address"):
        main._check_ray_address("lib")


def test_the_list_of_claims_stays_while_an_output_it_names_is_not_logged(tmp_path):
    """A batch whose log could not be written (a full disk) finishes its files in flight unlogged:
    removing its list at the end made them files of the user's to the next run."""
    out = tmp_path / "out"
    log = ResumeLog(out)
    log.claim([out / "a.wav", out / "b.wav"])
    _tone(out / "a.wav")  # put in place, its record never written
    log.release()
    assert log.queued_path.exists() and log.key(str(out / "a.wav")) in ResumeLog(out).known()
    log.append({"input": str(tmp_path / "in.wav"), "output": str(out / "a.wav"), "status": "ok"})
    log.release()
    assert not log.queued_path.exists()


def test_a_killed_ray_batch_leaves_no_temporary_file(tmp_path):
    """SIGKILL to a batch on a node of its own: its workers' hidden .part files stayed until a re-run
    (the local pool's workers remove theirs). The node's helper removes them when the batch is gone."""
    import subprocess
    import sys
    import time

    import numpy as np

    pytest.importorskip("ray")
    src, out = tmp_path / "long", tmp_path / "out"
    src.mkdir()
    for i in range(2):
        noise = 0.1 * np.random.default_rng(i).standard_normal((48000 * 60, 2))
        sf.write(src / f"f{i}.wav", noise.astype(np.float32), 48000)
    proc = subprocess.Popen([sys.executable, "main.py", "batch", str(src), "--out", str(out), "--preset", "voice",
                             "--jobs", "2", "--streams", "1", "--ray", "local", "--no-progress"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and not list(out.glob(".*.part")):
            time.sleep(0.05)
        assert list(out.glob(".*.part")), "no file was being written"
        time.sleep(1.0)  # both files under way
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline and list(out.glob(".*.part")):
        time.sleep(0.2)
    assert not list(out.glob(".*.part")) and not list(out.glob("f*.wav"))
