"""`main.py batch`, fourth review: another output's file in progress removed, resuming through links,
a cluster with token authentication, inputs with a future mtime, what a folder scan leaves out,
workers of a killed batch, a crash in a group, a broken MP3. Each test failed before its fix."""
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import tests.ray_helpers as ray_helpers
from realtime.errors import OfflineError
from realtime.io.files import AtomicFile, remove_stale_parts
from realtime.run.batch import BatchOptions, plan_batch, run_batch, run_task

from .test_batch import _no_parts, _output_parts, _worker_pids

ROOT = Path(__file__).resolve().parent.parent


def _tone(path: Path, sr=16000, seconds=0.2, freq=440.0, ch=1):
    t = np.arange(int(sr * seconds)) / sr
    x = np.repeat((0.3 * np.sin(2 * np.pi * freq * t))[:, None], ch, axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, subtype="PCM_16")


def _counts(s: dict) -> tuple:
    return s["processed"], s["skipped"], s["failed"]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no one reaps, once its parent is gone, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------------------ 1: another output's .part

def test_starting_an_output_leaves_another_outputs_file_in_progress(tmp_path):
    """Starting a.wav removed `.a.wav.*.part`, which also matched `.a.wav.x.wav.TAG.part`: the file
    in progress of output a.wav.x.wav, which then failed with "reads back 0 of N frames"."""
    src = tmp_path / "in"
    _tone(src / "a.wav")
    _tone(src / "a.wav.x.wav")
    out = tmp_path / "out"
    tasks = {Path(t.input).name: t for t in plan_batch([src], out, BatchOptions(preset="clean"))}
    out.mkdir()
    other = AtomicFile(out / "a.wav.x.wav")  # the other worker's output, being written
    stale = out / ".a.wav.abc_1234.part"  # a killed run's, of a.wav (named as mkstemp named them)
    stale.write_bytes(b"RIFF")
    r = run_task(tasks["a.wav"])
    assert r["status"] == "ok", r["error"]
    assert other.tmp.exists() and not stale.exists()
    assert remove_stale_parts(out / "a.wav.x.wav") == 1 and not other.tmp.exists()


# ------------------------------------------------------------------------------ 2: links to --out and inputs

def test_a_batch_resumes_through_links_to_its_folders(tmp_path):
    """--out reached through a link redid every file (the log's keys were the paths as spelled), and
    `batch link --out link/processed` after `batch lib --out lib/processed` was refused (its own
    outputs taken for originals)."""
    lib = tmp_path / "lib"
    for i in range(2):
        _tone(lib / f"t{i}.wav", freq=300 + 100 * i)
    (tmp_path / "real_out").mkdir()
    (tmp_path / "link_out").symlink_to("real_out")
    (tmp_path / "link_lib").symlink_to("lib")
    opts = BatchOptions(preset="clean")
    assert _counts(run_batch([lib], tmp_path / "link_out", opts, jobs=1, progress=False)) == (2, 0, 0)
    assert _counts(run_batch([lib], tmp_path / "real_out", opts, jobs=1, progress=False)) == (0, 2, 0)
    assert _counts(run_batch([lib], lib / "processed", opts, jobs=1, progress=False)) == (2, 0, 0)
    (lib / "view").symlink_to("processed")  # the outputs are left out of the scan however it reaches them
    link = tmp_path / "link_lib"
    assert _counts(run_batch([link], link / "processed", opts, jobs=1, progress=False)) == (0, 2, 0)
    _tone(lib / "processed" / "mine.wav")  # an original there is still refused, by either path
    with pytest.raises(OfflineError, match="which no earlier batch wrote"):
        plan_batch([link], link / "processed", opts)


# ------------------------------------------------------------------------------ 3: token authentication

def test_joining_by_address_fails_in_words_that_name_it_and_the_token(monkeypatch):
    """RAY_ADDRESS with --ray said "cannot reach a Ray cluster at None", and nothing of the token
    that a cluster with authentication refused."""
    from realtime.run import ray_batch

    def refuse(**kw):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.9:6379")

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    with pytest.raises(OfflineError) as e:
        ray_batch._init(types.SimpleNamespace(init=refuse, exceptions=types.SimpleNamespace()), None)
    msg = str(e.value)
    assert msg.startswith("--ray: cannot reach a Ray cluster at 10.0.0.9:6379: Failed to connect") and "None" not in msg
    assert "RAY_AUTH_MODE" in msg and "~/.ray/auth_token" in msg and "\n" not in msg


def test_a_cluster_with_token_authentication_is_joined_by_its_address(tmp_path, monkeypatch):
    """`ray start --head` turns token authentication on where ~/.ray/auth_token exists; ray.init does
    for a cluster it finds itself, not for one given by address: `--ray HOST:PORT` and RAY_ADDRESS
    with `--ray` were refused ("Unauthenticated", then "cannot reach … at None")."""
    pytest.importorskip("ray")
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("0f" * 16)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                                                            "RAY_AUTH_TOKEN_PATH")}
    env["HOME"] = str(home)
    monkeypatch.setattr(ray_helpers, "ray_env", lambda: env)  # as `ray start` runs there: the token, mode unset
    _tone(tmp_path / "in" / "a.wav")
    port = ray_helpers.free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    head = ray_helpers.start_head(port, 1, temp)
    try:
        address = f"127.0.0.1:{port}"
        for ray_args, extra in ((["--ray", address], {}), (["--ray"], {"RAY_ADDRESS": address})):
            out = tmp_path / f"out{len(extra)}"
            r = subprocess.run([sys.executable, "main.py", "batch", str(tmp_path / "in"), "--out", str(out),
                                "--preset", "clean", "--no-progress", *ray_args], cwd=ROOT, env={**env, **extra},
                               capture_output=True, text=True, timeout=180)
            assert r.returncode == 0, r.stderr[-2000:]
            s = json.loads(r.stdout)
            assert (s["backend"], s["processed"], s["failed"]) == ("ray", 1, 0), s
    finally:
        ray_helpers.stop_node(head)


# ------------------------------------------------------------------------------ 4: a future mtime

def test_an_input_or_preset_with_a_future_mtime_is_done_once(tmp_path):
    """An input (or preset file) dated in the future was processed again on every run: the output
    had to be newer than it. An output replaced by another file is no longer taken as done, nor
    replaced unasked (an edit of the user's, review 48): refused, and redone with --force."""
    src = tmp_path / "in"
    _tone(src / "future.wav")
    _tone(src / "now.wav")
    preset = tmp_path / "mine.json"
    preset.write_text((ROOT / "realtime" / "dsp" / "presets" / "clean.json").read_text())
    future = time.time_ns() + 3 * 365 * 86400 * 10 ** 9
    for p in (src / "future.wav", preset):
        os.utime(p, ns=(future, future))
    out = tmp_path / "out"
    opts = BatchOptions(preset=str(preset))
    assert _counts(run_batch([src], out, opts, jobs=1, progress=False)) == (2, 0, 0)
    assert _counts(run_batch([src], out, opts, jobs=1, progress=False)) == (0, 2, 0)
    # another file put in the output's place (the same size; `cp -p` of an older one keeps its mtime)
    data = (out / "now.wav").read_bytes()
    (out / "now.wav").write_bytes(data[:-4] + b"\0\0\0\0")
    old = (src / "now.wav").stat().st_mtime_ns - 10 ** 9
    os.utime(out / "now.wav", ns=(old, old))
    with pytest.raises(OfflineError, match="now.wav changed since an earlier batch wrote it"):
        run_batch([src], out, opts, jobs=1, progress=False)
    forced = BatchOptions(preset=str(preset), force=True)
    assert _counts(run_batch([src], out, forced, jobs=1, progress=False)) == (2, 0, 0)
    assert (out / "now.wav").read_bytes() == data


# ------------------------------------------------------------------------------ 5: what a scan leaves out

def test_a_folder_scan_follows_links_skips_hidden_names_and_says_what_it_could_not_read(tmp_path, monkeypatch,
                                                                                       capsys):
    """Files under a linked folder were skipped, those in a hidden folder processed (a hidden file
    not), and an unreadable folder or a link to nothing passed over without a word."""
    src = tmp_path / "scan"
    for name in ("a.wav", "real/b.wav", ".hidden/c.wav", ".d.wav", "real/.e.wav", "locked/f.wav"):
        _tone(src / name)
    _tone(tmp_path / "outside" / "o.wav")
    (src / "link_to_dir").symlink_to("real")
    (src / "link_outside").symlink_to(tmp_path / "outside")
    (src / "real" / "loop").symlink_to("..")  # a folder that holds itself: not followed round
    (src / "dangling.wav").symlink_to("missing.wav")
    locked = str(src / "locked")
    scandir = os.scandir

    def denied(path="."):  # root reads any folder whatever its mode: the denial is made here
        if os.fspath(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    capsys.readouterr()
    tasks = plan_batch([src], tmp_path / "out", BatchOptions(preset="clean"))
    # real/b.wav once (review 39: link_to_dir/b.wav, the same file, was processed again into a second output)
    assert sorted(Path(t.input).relative_to(src).as_posix() for t in tasks) == [
        "a.wav", "link_outside/o.wav", "real/b.wav"]
    err = capsys.readouterr().err
    assert err == f"warning: {src}: left out 1 unreadable folder ({locked}: permission denied), " \
                  f"1 link to nothing ({src / 'dangling.wav'}) and 2 folders found again through links " \
                  f"({src / 'link_to_dir'}, …)\n"


# ------------------------------------------------------------------------------ 6: the batch killed

def test_workers_of_a_killed_batch_stop_quietly_and_leave_no_part(tmp_path):
    """SIGKILL to the batch: its workers ran on to the end of their files, then each printed a
    BrokenPipeError traceback."""
    src = tmp_path / "long"
    _tone(src / "f.wav", sr=48000, seconds=60.0, ch=2)
    out = tmp_path / "out"
    err = tmp_path / "err.txt"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "main.py", "batch", str(src), "--out", str(out), "--preset", "default",
                                 "--jobs", "1", "--blocksize", "16", "--no-progress"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    workers = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not _output_parts(out):
            time.sleep(0.01)
        workers = _worker_pids(proc.pid)
        assert workers and _output_parts(out)
        proc.kill()
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers)
    finally:
        proc.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    text = err.read_text()
    assert "Traceback" not in text and "BrokenPipe" not in text, text
    assert not _no_parts(out) and not (out / "f.wav").exists()


# ------------------------------------------------------------------------------ 7: a crash in a group

def test_a_worker_that_dies_on_a_group_costs_one_file_only(tmp_path):
    """Files run side by side: a worker that died recorded every file of its group as "worker process
    died on this file". Each is done again alone, and only the one its worker dies on fails."""
    src = tmp_path / "in"
    for i, name in enumerate(("a.wav", "b.wav", "c.wav")):
        _tone(src / name, sr=48000, seconds=10.0, freq=300 + 100 * i)
    out = tmp_path / "out"
    kills = []

    def crash_on_a():  # a.wav crashes its worker (as a native library's crash would), every time
        deadline = time.time() + 120
        while time.time() < deadline and len(kills) < 2:
            if list(out.glob(".a.wav.*.part")):
                for pid in _worker_pids():
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                while list(out.glob(".a.wav.*.part")):  # the pool removes it
                    time.sleep(0.002)
            time.sleep(0.002)

    killer = threading.Thread(target=crash_on_a, daemon=True)
    killer.start()
    s = run_batch([src], out, BatchOptions(preset="voice", streams=3), jobs=1, progress=False)
    killer.join(5)
    assert len(kills) == 2  # the group, then a.wav alone
    assert (s["processed"], s["failed"]) == (3, 1), s["failures"]
    (failure,) = s["failures"]
    assert Path(failure["input"]).name == "a.wav" and "worker process died" in failure["error"]
    assert sorted(p.name for p in out.glob("*.wav")) == ["b.wav", "c.wav"] and not _no_parts(out)


# ------------------------------------------------------------------------------ 8: a broken MP3, a Ctrl-C

def test_a_broken_mp3_is_said_once_in_words_that_fit(tmp_path):
    """Random bytes named .mp3: libmpg123's notes three times (plan, worker, the input's check), and
    libsndfile's "File does not exist or is not a regular file" for a regular file."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.mp3").write_bytes(np.random.default_rng(0).bytes(5000))
    r = subprocess.run([sys.executable, "main.py", "batch", str(src), "--out", str(tmp_path / "out"), "--preset",
                        "clean", "--jobs", "1", "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1
    assert json.loads(r.stdout)["failures"] == [{"input": str(src / "x.mp3"),
                                                 "error": f"{src / 'x.mp3'}: not a readable audio file"}]
    assert r.stderr.count("Illegal Audio-MPEG-Header") <= 1, r.stderr
    # `process` reads it through the same open_input: the same words
    r = subprocess.run([sys.executable, "main.py", "process", str(src / "x.mp3"), str(tmp_path / "o.wav")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"error: {src / 'x.mp3'}: not a readable audio file"


def _importing(pid: int) -> bool:
    """Whether process ``pid`` is a Python that has its Ctrl-C handler (KeyboardInterrupt) and does not
    ignore Ctrl-C yet: a worker still importing (for a second), not one only just forked."""
    try:
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":\t" in line)
    except OSError:
        return False
    bit = 1 << (signal.SIGINT - 1)
    return bool(int(status["SigCgt"], 16) & bit) and not int(status["SigIgn"], 16) & bit


def test_a_ctrl_c_while_workers_start_is_no_traceback(tmp_path):
    """A Ctrl-C (to the whole group, as a terminal sends it) while a worker was still importing
    printed that worker's KeyboardInterrupt traceback."""
    src = tmp_path / "in"
    _tone(src / "a.wav")
    proc = subprocess.Popen([sys.executable, "main.py", "batch", str(src), "--out", str(tmp_path / "out"), "--preset",
                             "default", "--jobs", "1", "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and not any(map(_importing, _worker_pids(proc.pid))):
            time.sleep(0.002)
        assert any(map(_importing, _worker_pids(proc.pid)))
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
