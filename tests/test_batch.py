"""`main.py batch`: real files, real worker processes, a real local Ray cluster; outputs compared with
`main.py process` / `main.py synth` on the same inputs."""
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

import main
from realtime.errors import OfflineError, PresetError
from realtime.run.batch import LOG_NAME, BatchOptions, Progress, plan_batch, run_batch
from tests.ray_helpers import free_port, ray_env, start_head, stop_node

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"a.wav": "a.wav", "sub/b.flac": "sub/b.flac", "sub/deep/c.aiff": "sub/deep/c.aiff", "m.mid": "m.wav"}
BROKEN = ("broken.wav", "sub/empty.wav")


def _noise(sr, seconds, ch, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = 0.2 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((len(t), ch))
    return x.astype(np.float32)


def _midi(path):
    mf = mido.MidiFile()
    tr = mido.MidiTrack()
    mf.tracks.append(tr)
    for i, n in enumerate((60, 64, 67)):
        tr.append(mido.Message("note_on", note=n, velocity=90, time=0 if i == 0 else 120))
    for n in (60, 64, 67):
        tr.append(mido.Message("note_off", note=n, velocity=0, time=200))
    mf.save(str(path))


def _mixed_folder(root: Path) -> Path:
    """Good files at three rates and two channel counts, a MIDI file, two broken files, a text file."""
    src = root / "in"
    (src / "sub" / "deep").mkdir(parents=True)
    sf.write(src / "a.wav", _noise(48000, 1.5, 2, 1), 48000, subtype="FLOAT")
    sf.write(src / "sub" / "b.flac", _noise(44100, 1.0, 1, 2), 44100)
    sf.write(src / "sub" / "deep" / "c.aiff", _noise(22050, 1.2, 2, 3), 22050)
    _midi(src / "m.mid")
    (src / "broken.wav").write_bytes(os.urandom(3000))
    sf.write(src / "sub" / "empty.wav", np.zeros((0, 2), np.float32), 48000)
    (src / "notes.txt").write_text("not audio: ignored by the folder scan")
    return src


def _reference(src: Path, name: str, ref: Path, extra=()) -> np.ndarray:
    """What `main.py process` (or `synth` for MIDI) makes of one input, in this process."""
    out = ref / GOOD.get(name, name).replace("/", "_")
    if name.endswith(".mid"):
        assert main.main(["synth", str(src / name), str(out)]) == 0
    else:
        assert main.main(["process", str(src / name), str(out), "--preset", "default", "--no-progress", *extra]) == 0
    return sf.read(out, dtype="float64")


def _assert_same(out: Path, expected) -> None:
    y, sr = sf.read(out, dtype="float64")
    x, sr_x = expected
    assert sr == sr_x and y.shape == x.shape, (out, y.shape, x.shape)
    assert np.abs(y - x).max() <= 1e-6, (out, np.abs(y - x).max())


def _wait_said(proc, words: str, timeout_s: float = 60.0) -> str:
    """Read ``proc``'s stderr (a pipe, below its text layer) until it says ``words``; what it said."""
    import select

    said, fd, end = b"", proc.stderr.fileno(), time.monotonic() + timeout_s
    while words.encode() not in said and time.monotonic() < end:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            said += chunk
    assert words.encode() in said, said.decode(errors="replace")[-2000:]
    return said.decode(errors="replace")


def _no_parts(*folders):
    return [p for f in folders for p in Path(f).rglob("*.part")]


def _output_parts(folder):
    """The temporary files of outputs being written in ``folder``: a file in progress (not the batch's
    own list of claims or log, written through a ``.part`` too: a wait that took that for a file in
    progress signalled the batch before any file started, on a loaded machine)."""
    return [p for p in _no_parts(folder) if not p.name.lstrip(".").startswith("batch-")]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    src = _mixed_folder(root)
    ref = root / "ref"
    ref.mkdir()
    expected = {name: _reference(src, name, ref) for name in GOOD}
    return src, expected


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_mixed_folder_matches_process_then_resumes(mixed, tmp_path, capsys):
    src, expected = mixed
    out = tmp_path / "out"
    argv = ["batch", str(src), "--out", str(out), "--preset", "default", "--jobs", "2", "--no-progress"]
    capsys.readouterr()
    assert main.main(argv) == 1  # failures make the exit status non-zero
    captured = capsys.readouterr()
    s = json.loads(captured.out)
    assert "2 of 6 files failed" in captured.err
    assert (s["files"], s["processed"], s["failed"], s["skipped"], s["backend"]) == (6, 6, 2, 0, "local")
    assert sorted(Path(f["input"]).name for f in s["failures"]) == ["broken.wav", "empty.wav"]
    for name, dst in GOOD.items():
        _assert_same(out / dst, expected[name])
    assert not (out / "broken.wav").exists() and not (out / "sub" / "empty.wav").exists()
    assert not (out / "notes.txt").exists() and not _no_parts(out)
    log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert len(log) == 6 and all(r["input_sha256"] and r["preset_hash"] for r in log)

    # a re-run processes nothing: complete outputs are skipped, unchanged broken files are not retried
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != LOG_NAME}
    assert main.main(argv) == 1  # the batch is still not wholly good
    s = _summary(capsys)
    assert (s["processed"], s["skipped"], s["failed"], s["failed_before"]) == (0, 6, 0, 2)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # touching one input re-processes that one only
    later = time.time() + 5
    os.utime(src / "sub" / "b.flac", (later, later))
    try:
        assert main.main(argv) == 1
        s = _summary(capsys)
        assert (s["processed"], s["skipped"], s["failed"]) == (1, 5, 0)
        changed = [p for p in mtimes if p.stat().st_mtime_ns != mtimes[p]]
        assert changed == [out / "sub" / "b.flac"]
        _assert_same(out / "sub" / "b.flac", expected["sub/b.flac"])
        # another preset makes its outputs stale (the MIDI file has its own preset: still complete)
        assert main.main([*argv[:5], "clean", *argv[6:]]) == 1
        s = _summary(capsys)
        assert (s["processed"], s["skipped"]) == (5, 1)
    finally:
        os.utime(src / "sub" / "b.flac", None)


def test_manifest_rows_carry_outputs_and_overrides(mixed, tmp_path):
    src, expected = mixed
    (tmp_path / "list").mkdir()
    manifest = tmp_path / "list" / "jobs.csv"
    rel = os.path.relpath(src, manifest.parent)
    manifest.write_text("input,output,set\n"
                        f"{rel}/a.wav,quiet/a_quiet.flac,gain.gain_db=-6;limiter.ceiling_db=-3\n"
                        f"{rel}/sub/b.flac,,\n")
    out = tmp_path / "out"
    s = run_batch([manifest], out, BatchOptions(preset="default"), jobs=1, progress=False)
    assert (s["processed"], s["failed"]) == (2, 0)
    _assert_same(out / "b.flac", expected["sub/b.flac"])
    quiet = _reference(src, "a.wav", tmp_path, ["--set", "gain.gain_db=-6", "--set", "limiter.ceiling_db=-3"])
    _assert_same(out / "quiet" / "a_quiet.flac", quiet)

    jsonl = tmp_path / "list" / "jobs.jsonl"
    jsonl.write_text(json.dumps({"input": f"{rel}/a.wav", "set": ["nosuchslot.x=1"]}) + "\n")
    with pytest.raises(PresetError, match="jobs.jsonl row 1.*nosuchslot"):
        plan_batch([jsonl], out, BatchOptions(preset="default"))
    (tmp_path / "twin").mkdir()
    (tmp_path / "twin" / "a.wav").write_bytes((src / "a.wav").read_bytes())  # (the same file twice is taken once)
    with pytest.raises(OfflineError, match="would both write"):
        plan_batch([src / "a.wav", tmp_path / "twin" / "a.wav"], out, BatchOptions())
    with pytest.raises(OfflineError, match="no such file"):
        plan_batch([tmp_path / "missing.wav"], out, BatchOptions())
    # fields of the wrong type, outputs outside --out and extensions that are not: one clear line each
    for row, why in (({"input": 5}, "'input' must be a path"), ({"input": ["a.wav"]}, "'input' must be a path"),
                     ({"input": f"{rel}/a.wav", "output": 5}, "'output' must be a path"),
                     ({"input": f"{rel}/a.wav", "preset": ["voice"]}, "'preset' must be a path"),
                     ({"input": f"{rel}/a.wav", "set": 5}, "'set' must be text or a list"),
                     ({"input": f"{rel}/a.wav", "set": [["a"]]}, "'set' must be text or a list"),
                     ({"input": f"{rel}/a.wav", "output": "../../x.wav"}, "must be a path inside --out"),
                     ({"input": f"{rel}/a.wav", "output": "/tmp/x.wav"}, "must be a path inside --out")):
        jsonl.write_text(json.dumps(row) + "\n")
        with pytest.raises(OfflineError, match=f"jobs.jsonl: row 1.*{re.escape(why)}"):
            plan_batch([jsonl], out, BatchOptions())
    with pytest.raises(OfflineError, match="is a file, not a folder"):
        run_batch([src / "a.wav"], src / "a.wav", BatchOptions(), jobs=1, progress=False)
    with pytest.raises(OfflineError, match="--ext 'x/y': not a file extension"):
        plan_batch([src / "a.wav"], out, BatchOptions(ext="x/y"))
    with pytest.raises(OfflineError, match="--ext 'xyz': unknown output format '.xyz'"):  # every file failed
        plan_batch([src / "a.wav"], out, BatchOptions(ext="xyz"))
    # a preset file named in a manifest is found beside it, as its inputs are
    (tmp_path / "list" / "mine.json").write_text((Path(main.__file__).parent / "realtime" / "dsp" / "presets"
                                                  / "clean.json").read_text())
    jsonl.write_text(json.dumps({"input": f"{rel}/a.wav", "preset": "mine.json"}) + "\n")
    (task,) = plan_batch([jsonl], out, BatchOptions())
    assert task.preset_file == str(tmp_path / "list" / "mine.json")


def test_progress_line_shows_rates_and_eta():
    stream = io.StringIO()
    bar = Progress(4, 3600.0, stream, interval_s=0)
    bar.update({"status": "ok", "audio_s": 1800.0})
    bar.update({"status": "failed", "audio_s": 0.0})
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("[2/4 files, 1 failed]") and "files/s" in line and "audio-h/h" in line and "ETA" in line


def test_progress_draws_nothing_for_a_batch_that_never_started():
    stream = io.StringIO()
    Progress(4, 3600.0, stream, interval_s=0).close()  # e.g. --ray could not start a node
    assert stream.getvalue() == ""


def _signal_when_writing(proc, out: Path, signals: int) -> None:
    """Send SIGTERM ``signals`` times once a worker is in the middle of writing an output."""
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not _output_parts(out):
        time.sleep(0.01)
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)


def _long_files(tmp_path, n: int, seconds: float):
    """``n`` stereo noise files of ``seconds`` in tmp_path/long, and the batch's out folder."""
    src = tmp_path / "long"
    src.mkdir()
    for i in range(n):
        sf.write(src / f"f{i}.wav", _noise(48000, seconds, 2, i), 48000, subtype="PCM_16")
    return src, tmp_path / "out"


def test_a_broken_model_is_each_grouped_files_one_line_not_a_dead_worker(tmp_path):
    """Files run side by side (a preset that starts with the enhancer, MIDI into the synth) with a
    zero-byte model: the worker died with a traceback while building the group, and every file was
    recorded "worker process died on this file (exit code 1)". Each says the model's error, as
    `process` says it, and a re-run retries them (the input is not what failed)."""
    models = tmp_path / "models"
    for f in ("enhancer/enhancer.onnx", "ddsp/violin.onnx"):
        (models / f).parent.mkdir(parents=True, exist_ok=True)
        (models / f).write_bytes(b"")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        sf.write(src / f"a{i}.wav", _noise(48000, 0.5, 2, i), 48000)
        _midi(src / f"m{i}.mid")
    # a process of its own: the models' paths are read once per process
    r = subprocess.run([sys.executable, "main.py", "batch", str(src), "--out", str(tmp_path / "out"), "--preset", "voice",
                        "--jobs", "1", "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "RTAUDIO_MODELS_DIR": str(models), "DDSP_MODEL_DIR": str(models / "ddsp")})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    s = json.loads(r.stdout)
    errors = {Path(f["input"]).name: f["error"] for f in s["failures"]}
    assert sorted(errors) == ["a0.wav", "a1.wav", "m0.mid", "m1.mid"], s
    for name, error in errors.items():
        audio = name.endswith(".wav")
        what, model = ("enhancer", "enhancer/enhancer.onnx") if audio else ("DDSP violin", "ddsp/violin.onnx")
        assert error.startswith(f"{what} model {models / model} is corrupt"), error
    log = [json.loads(line) for line in (tmp_path / "out" / LOG_NAME).read_text().splitlines()]
    assert len(log) == 4 and not any(r["input_fault"] for r in log)


def test_sigterm_finishes_or_abandons_cleanly(tmp_path):
    src, out = _long_files(tmp_path, 8, 20.0)
    cmd = [sys.executable, "main.py", "batch", str(src), "--out", str(out), "--preset", "default", "--jobs", "2",
           "--no-progress"]
    for signals in (1, 2):  # once: the files in flight are finished; twice: they are abandoned
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _signal_when_writing(proc, out, signals)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 143, stderr  # SIGTERM, as every command says it (it said 130, Ctrl-C's)
        s = json.loads(stdout)
        assert s["interrupted"] and s["abandoned"] == (signals == 2) and s["failed"] == 0
        assert not _no_parts(out)
        for p in out.glob("*.wav"):  # every output that exists is whole
            assert sf.info(str(p)).frames == 20 * 48000
    s = run_batch([src], out, BatchOptions(preset="default"), jobs=2, progress=False)
    assert s["failed"] == 0 and s["processed"] + s["skipped"] == 8 and s["processed"] >= 1
    assert len(list(out.glob("*.wav"))) == 8


@pytest.mark.parametrize("sig,code", [(signal.SIGHUP, 129), (signal.SIGQUIT, 131)])
def test_a_hang_up_or_quit_finishes_the_files_in_flight_and_logs_them(tmp_path, sig, code):
    """SIGHUP (the terminal closed) and SIGQUIT (Ctrl-\\) are taken as SIGTERM is: the files in flight
    are finished and logged. They ended the batch at once ("interrupted"), its workers finishing files
    that were never logged, so a re-run with --out inside the input folder refused to start."""
    src, out = _long_files(tmp_path, 3, 20.0)
    cmd = [sys.executable, "main.py", "batch", str(src), "--out", str(out), "--preset", "default", "--jobs", "2",
           "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not _output_parts(out):
        time.sleep(0.01)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    s = json.loads(stdout)
    assert s["interrupted"] and s["signal"] == sig.name and s["failed"] == 0 and s["processed"] >= 1, s
    logged = {Path(json.loads(line)["output"]).name for line in (out / LOG_NAME).read_text().splitlines()}
    assert logged == {p.name for p in out.glob("*.wav")} and len(logged) == s["processed"]
    assert not _no_parts(out)


def test_sigterm_to_the_process_group_finishes_or_abandons_cleanly(tmp_path):
    """systemd's stop and `kill -TERM -- -PGID` signal the workers too: they must leave it to the batch."""
    from realtime.run.batch_pool import ABANDON_GRACE_S

    src = tmp_path / "long"
    src.mkdir()
    for i in range(3):  # a few seconds each in small blocks: still in flight when the signals come
        sf.write(src / f"f{i}.wav", _noise(48000, 60.0, 2, i), 48000, subtype="PCM_16")
    out = tmp_path / "out"
    cmd = [sys.executable, "main.py", "batch", str(src), "--out", str(out), "--preset", "default", "--jobs", "2",
           "--blocksize", "16", "--no-progress"]

    def interrupted(signals: int, extra=(), then=None) -> dict:
        proc = subprocess.Popen([*cmd, *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and not _output_parts(out):
            time.sleep(0.01)
        sent = time.monotonic()
        for _ in range(signals):
            if then is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the batch, its workers and all
            else:
                proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
        if then is not None:
            _wait_said(proc, "finishing the files in progress")  # the batch has taken the signal (two busy
            then(proc)  # workers on two cores could hold it off past a fixed wait: the killed ones counted failed)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 143, stderr
        s = json.loads(stdout)
        s["took_s"] = time.monotonic() - sent
        assert s["interrupted"] and s["failed"] == 0, s
        assert not _no_parts(out)
        for p in out.glob("*.wav"):  # every output that exists is whole
            assert sf.info(str(p)).frames == 60 * 48000
        return s

    s = interrupted(1)  # the files in flight are finished (they used to die with the group: "failed")
    assert not s["abandoned"] and s["processed"] >= 1 and s["processed"] + s["not_started"] == 3
    s = interrupted(2)  # abandoned at once, not after the workers' grace
    assert s["abandoned"] and s["took_s"] < ABANDON_GRACE_S
    # workers that die after the interrupt: their files are left for the re-run, not reported failed
    s = interrupted(1, ["--force"], then=lambda proc: [os.kill(pid, signal.SIGKILL) for pid in _worker_pids(proc.pid)])
    assert not s["abandoned"] and (s["processed"], s["not_started"]) == (0, 3)
    s = run_batch([src], out, BatchOptions(preset="default", blocksize=16), jobs=2, progress=False)
    assert s["failed"] == 0 and s["processed"] + s["skipped"] == 3 and s["processed"] >= 1


def _kill_one_while_writing(out, pids, within_s: float):
    """A started thread that SIGKILLs the first of ``pids()`` once an output in ``out`` is being
    written (a ``.part`` exists), within ``within_s``; returns (thread, [killed pid])."""
    killed = []

    def kill_one():
        deadline = time.time() + within_s
        while time.time() < deadline and not killed:
            busy = pids() if _no_parts(out) else []
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    return killer, killed


def _worker_pids(parent: int | None = None) -> list[int]:
    """The batch workers of ``parent`` (default: this process): spawned children running
    multiprocessing's entry point."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == parent and b"spawn_main" in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def test_a_worker_that_dies_costs_its_file_only(tmp_path):
    src = tmp_path / "long"
    src.mkdir()
    for i in range(4):
        sf.write(src / f"f{i}.wav", _noise(48000, 20.0, 2, i), 48000, subtype="PCM_16")
    out = tmp_path / "out"
    killer, killed = _kill_one_while_writing(out, _worker_pids, 60)  # a crash in native code, to the pool
    s = run_batch([src], out, BatchOptions(preset="default"), jobs=2, progress=False)
    killer.join(5)
    assert killed
    assert (s["processed"], s["failed"]) == (4, 1)
    assert "worker process died" in s["failures"][0]["error"]
    assert not _no_parts(out) and len(list(out.glob("*.wav"))) == 3
    s = run_batch([src], out, BatchOptions(preset="default"), jobs=2, progress=False)  # a crash is retried
    assert (s["processed"], s["failed"], s["skipped"]) == (1, 0, 3)


def test_local_batch_never_imports_ray(tmp_path):
    code = ("import sys; from realtime.run.batch import run_batch, BatchOptions; "
            f"s = run_batch([{str(tmp_path / 'x.wav')!r}], {str(tmp_path / 'o')!r}, BatchOptions('clean'), jobs=1, "
            "progress=False); assert s['processed'] == 1; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))")
    sf.write(tmp_path / "x.wav", _noise(48000, 0.2, 1, 0), 48000)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_batch_that_cannot_start_leaves_no_out_folder_and_blames_no_file(tmp_path, capsys):
    """A bad --preset was said as `error: in/a.wav: unknown preset` and left an empty --out behind."""
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", _noise(16000, 0.1, 1, 0), 16000)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main.main(["batch", str(src), "--out", str(out), "--preset", "nope", "--jobs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown preset 'nope'") and err.count("\n") == 1, err
    assert not out.exists()
    (tmp_path / "jobs.csv").write_text("input,preset\nin/a.wav,nope\n")  # a manifest's row is still named
    with pytest.raises(PresetError, match=r"jobs.csv row 1: unknown preset 'nope'"):
        plan_batch([tmp_path / "jobs.csv"], out, BatchOptions())


def _ray_running() -> bool:
    """Whether a Ray cluster runs on this machine (a GCS server), which `--ray auto` would join."""
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"gcs_server" in (d / "cmdline").read_bytes().split(b"\0")[0]:
                return True
        except OSError:
            pass
    return False


def test_ray_auto_without_a_cluster_is_one_line_in_this_commands_terms(tmp_path):
    pytest.importorskip("ray")
    if _ray_running():
        pytest.skip("a Ray cluster runs on this machine: --ray auto would join it")
    sf.write(tmp_path / "a.wav", _noise(16000, 0.1, 1, 0), 16000)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run([sys.executable, "main.py", "batch", str(tmp_path / "a.wav"), "--out", str(out), "--ray", "auto",
                        "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: --ray auto: no running Ray cluster found") and r.stderr.count("\n") == 1, r.stderr
    assert "--address" not in r.stderr
    assert not out.exists()


def _helper_nodes(mark: str) -> list[int]:
    """Processes running a Ray node that a batch started for itself (``ray_batch._NODE``), of the
    batches whose environment holds ``RTAUDIO_TEST_MARK=mark`` (not another run's on this machine)."""
    return [int(d.name) for d in Path("/proc").iterdir()
            if d.name.isdigit() and b'ray.init(address="local"' in _read(d / "cmdline")
            and f"RTAUDIO_TEST_MARK={mark}".encode() in _read(d / "environ").split(b"\0")]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_ray_sigterm_to_the_process_group_finishes_the_files_in_progress(tmp_path):
    """`--ray` with a node of its own: SIGTERM to the group (systemd's stop) used to kill the node with
    the batch (exit 134, `.part` files left); once finishes the file in progress and starts no other
    (one CPU with `-j 1`, which Ray ignored), twice abandons it; the summary comes either way."""
    pytest.importorskip("ray")
    src, out = _long_files(tmp_path, 3, 30.0)
    cmd = [sys.executable, "main.py", "batch", str(src), "--out", str(out), "--preset", "default", "--blocksize", "16",
           "--no-progress", "--force", "--ray", "-j", "1"]
    for signals in (1, 2):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={**os.environ, "RTAUDIO_TEST_MARK": str(tmp_path)})
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not _output_parts(out):
            time.sleep(0.01)
        for _ in range(signals):
            os.killpg(proc.pid, signal.SIGTERM)  # the batch and all it started in its group
            time.sleep(0.5)  # the batch takes signals between Ray's waits (0.2 s): two within one count once
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 143, stderr[-3000:]
        s = json.loads(stdout)
        assert (s["backend"], s["workers"], s["interrupted"], s["abandoned"], s["failed"]) == \
            ("ray", 1, True, signals == 2, 0), s
        assert (s["processed"], s["not_started"]) == ((1, 2) if signals == 1 else (0, 3)), s
        assert not _no_parts(out)
        for p in out.glob("*.wav"):  # every output that exists is whole
            assert sf.info(str(p)).frames == 30 * 48000
        assert not _helper_nodes(str(tmp_path))  # the batch's node ended with it


def test_ray_cluster_started_elsewhere_gets_the_batchs_own_paths(tmp_path):
    """Relative inputs and --out on a cluster started in another folder: outputs landed in the
    workers' folder (the summary said processed, a re-run redid all) and relative inputs were "no such file"."""
    import shutil
    import tempfile

    pytest.importorskip("ray")
    elsewhere, work = tmp_path / "cluster", tmp_path / "work"
    (work / "in" / "nested").mkdir(parents=True)
    elsewhere.mkdir()
    sf.write(work / "in" / "x.wav", _noise(16000, 0.5, 1, 0), 16000)
    for i in range(2):
        sf.write(work / "in" / "nested" / f"n{i}.wav", _noise(16000, 0.5, 1, i + 1), 16000)
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = ray_env()
    head = start_head(port, 1, temp, cwd=elsewhere)
    try:
        cmd = [sys.executable, str(ROOT / "main.py"), "batch", "in/x.wav", "in/nested", "--out", "out_rel",
               "--preset", "default", "--no-progress", "--ray", f"127.0.0.1:{port}"]
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
        s = json.loads(r.stdout)
        assert (s["processed"], s["failed"]) == (3, 0), s
        assert sorted(p.relative_to(work / "out_rel").as_posix() for p in (work / "out_rel").rglob("*.wav")) == \
            ["n0.wav", "n1.wav", "x.wav"]
        assert not [p for p in elsewhere.rglob("*") if p.suffix == ".wav"]
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=240)  # all done: skipped
        assert r.returncode == 0 and (json.loads(r.stdout)["processed"], json.loads(r.stdout)["skipped"]) == (0, 3)
    finally:
        stop_node(head)
        shutil.rmtree(temp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- Ray

def local_ray(num_cpus: int):
    """A real local Ray cluster of ``num_cpus``, started here; yields its address, then shuts it down."""
    ray = pytest.importorskip("ray")
    # Ray replaces a loopback node address by the host's own one; clients connect through 127.0.0.1.
    ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", include_dashboard=False,
             object_store_memory=80 * 2 ** 20, log_to_driver=False, configure_logging=False)
    port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    yield f"127.0.0.1:{port}"
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster: head started here (2 CPUs), shut down after the module's tests."""
    yield from local_ray(2)


def test_ray_batch_gives_identical_outputs(mixed, tmp_path, ray_cluster, capsys):
    src, expected = mixed
    out = tmp_path / "out"
    capsys.readouterr()
    assert main.main(["batch", str(src), "--out", str(out), "--preset", "default", "--no-progress",
                      "--ray", ray_cluster]) == 1
    s = _summary(capsys)
    assert (s["backend"], s["processed"], s["failed"], s["workers"]) == ("ray", 6, 2, 2)
    for name, dst in GOOD.items():
        _assert_same(out / dst, expected[name])
    assert not _no_parts(out)


def _ray_task_pids() -> list[int]:
    """Ray worker processes in the middle of a batch task (Ray titles them ``ray::<function>``)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(b"ray::_remote_task"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_killing_a_ray_worker_mid_batch_loses_nothing(tmp_path, ray_cluster):
    src = tmp_path / "long"
    src.mkdir()
    for i in range(6):
        sf.write(src / f"f{i}.wav", _noise(48000, 20.0, 2, i), 48000, subtype="PCM_16")
    out = tmp_path / "out"
    killer, killed = _kill_one_while_writing(out, _ray_task_pids, 90)
    # a second driver joins the test's cluster by address, as a user's `--ray HOST:PORT` would
    r = subprocess.run([sys.executable, "main.py", "batch", str(src), "--out", str(out), "--preset", "default",
                        "--no-progress", "--ray", ray_cluster], cwd=ROOT, capture_output=True, text=True, timeout=240)
    killer.join(5)
    assert killed, "no Ray worker was caught mid-task"
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert (s["processed"], s["failed"]) == (6, 0)
    assert not _no_parts(out)
    ref = tmp_path / "ref"
    ref.mkdir()
    for i in range(6):
        assert main.main(["process", str(src / f"f{i}.wav"), str(ref / f"f{i}.wav"), "--preset", "default",
                          "--no-progress"]) == 0
        _assert_same(out / f"f{i}.wav", sf.read(ref / f"f{i}.wav", dtype="float64"))


def test_ray_groups_files_side_by_side_for_every_cpu_of_the_cluster(tmp_path, ray_cluster):
    """Grouped as if Ray had one worker: 4 files were one task of 4 streams on one of the 2 CPUs."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        sf.write(src / f"f{i}.wav", _noise(48000, 1.0, 1, 30 + i), 48000)
    out = tmp_path / "out"
    s = run_batch([src], out, BatchOptions(preset="voice"), ray_address=ray_cluster, progress=False)
    assert (s["backend"], s["workers"], s["processed"], s["failed"]) == ("ray", 2, 4, 0)
    log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert sorted(r["streams"] for r in log) == [2, 2, 2, 2]  # a group of two for each CPU


def test_a_ray_workers_warnings_reach_the_batchs_stderr_and_its_summary(tmp_path, ray_cluster, capsys):
    """A Ray worker's stderr goes to the cluster's logs: a file with NaNs, played as silence, was said
    when run locally and not at all on Ray, and no record counted it."""
    src = tmp_path / "in"
    src.mkdir()
    x = _noise(48000, 0.5, 1, 7)
    x[1000:1200] = np.nan
    sf.write(src / "nan.wav", x, 48000, subtype="FLOAT")
    out = tmp_path / "out"
    capsys.readouterr()
    s = run_batch([src], out, BatchOptions(preset="clean"), ray_address=ray_cluster, progress=False)
    assert (s["backend"], s["processed"], s["nonfinite_inputs"]) == ("ray", 1, 1)
    assert "200 samples of the input were not numbers" in capsys.readouterr().err
    log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert log[0]["nonfinite_input_samples"] == 200 and "warnings" not in log[0]


# ------------------------------------------------------------------------------ streams side by side

def test_batched_enhancer_streams_equal_single_streams():
    from realtime.dsp.processors.neural.batched import BatchedEnhancer
    from realtime.dsp.processors.neural.enhancer import Enhancer

    sr, block, ch, n = 44100, 300, 2, 3  # a rate the model resamples from, an odd block size
    xs = [_noise(sr, 2.4, ch, 10 + s) for s in range(n)]
    xs[1][8000:20000] = 0.0  # a short pause: run through the network
    xs[1][30000:90000] = 0.0  # 1.4 s: past the allowance, held; the gates disagree: frame-by-frame calls
    xs[2][:6000] = 0.0

    def run(proc, x):
        y = x.copy()
        for i in range(0, len(y), block):
            proc.process(y[i:i + block])
        return y

    singles = []
    for x in xs:
        e = Enhancer(atten_limit_db=30)
        e.prepare(sr, block, ch)
        singles.append(run(e, x))
    batched = BatchedEnhancer(n, atten_limit_db=30)
    batched.prepare(sr, block, ch)
    assert batched.latency == e.latency
    y = run(batched, np.concatenate(xs, axis=1))
    for s in range(n):
        assert np.abs(singles[s]).max() > 1e-3
        assert np.abs(y[:, s * ch:(s + 1) * ch] - singles[s]).max() <= 1e-5


def test_files_side_by_side_match_process(tmp_path):
    from realtime.run.batch_plan import group_tasks

    src = tmp_path / "in"
    src.mkdir()
    for i, (sr, seconds, ch) in enumerate([(48000, 1.5, 1), (44100, 1.0, 1), (22050, 0.6, 1), (16000, 1.2, 1),
                                           (48000, 1.1, 2), (32000, 0.9, 2)]):
        x = _noise(sr, seconds, ch, 20 + i)
        if i == 1:
            x[len(x) // 3: 2 * len(x) // 3] = 0.0
        sf.write(src / f"f{i}.wav", x, sr, subtype="PCM_24")
    options = BatchOptions(preset="voice", streams=4)
    units = group_tasks(plan_batch([src], tmp_path / "o", options), 4)
    assert sorted(len(u) for u in units) == [2, 4]  # mono and stereo apart
    two = group_tasks(plan_batch([src], tmp_path / "o", options), 4, workers=2)  # a group for each worker
    assert sorted(len(u) for u in two) == [1, 1, 2, 2]
    out = tmp_path / "out"
    s = run_batch([src], out, options, jobs=1, progress=False)
    assert (s["processed"], s["failed"], s["streams"]) == (6, 0, 4)
    log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert sorted(r["streams"] for r in log) == [2, 2, 4, 4, 4, 4]
    for i in range(6):
        ref = tmp_path / f"ref{i}.wav"
        assert main.main(["process", str(src / f"f{i}.wav"), str(ref), "--preset", "voice", "--no-progress"]) == 0
        _assert_same(out / f"f{i}.wav", sf.read(ref, dtype="float64"))
    assert not _no_parts(out)


def test_files_side_by_side_flush_the_output_resampler_as_process_does(tmp_path):
    """A file the chain resamples (22.05 and 32 kHz into 48 kHz) must end as ``process_file`` ends it:
    side by side, the chain was flushed by its latency alone, so at a small block size the output
    resampler's last ~50 frames were made from silence instead of the chain's ringing."""
    preset = tmp_path / "ring.json"  # a resonant peak after the de-limiter: the chain rings on after the input
    preset.write_text(json.dumps({"version": 1, "name": "ring", "chain": [
        {"id": "delimiter", "processor": "delimiter", "params": {"auto_level": "off"}},
        {"id": "peak", "processor": "biquad", "params": {"type": "peak", "freq_hz": 100, "q": 10, "gain_db": 12}},
        {"id": "safety", "processor": "safety", "params": {"ceiling_db": -0.3}}]}))
    src = tmp_path / "in"
    src.mkdir()
    for i, sr in enumerate((22050, 32000)):
        t = np.arange(sr // 2) / sr
        sf.write(src / f"f{i}.wav", (0.3 * np.sin(2 * np.pi * 100 * t)).astype(np.float32), sr, subtype="FLOAT")
    out = tmp_path / "out"
    s = run_batch([src], out, BatchOptions(preset=str(preset), blocksize=64, streams=2), jobs=1, progress=False)
    assert (s["processed"], s["failed"]) == (2, 0)
    assert [json.loads(line)["streams"] for line in (out / LOG_NAME).read_text().splitlines()] == [2, 2]
    for i in range(2):
        ref = tmp_path / f"ref{i}.wav"
        assert main.main(["process", str(src / f"f{i}.wav"), str(ref), "--preset", str(preset), "--blocksize", "64",
                          "--no-progress"]) == 0
        _assert_same(out / f"f{i}.wav", sf.read(ref, dtype="float64"))


def _run_blocks(proc, x, block):
    y = x.copy()
    for i in range(0, len(y), block):
        proc.process(y[i:i + block])
    return y


def _limited(sr, seconds, ch, seed):
    """A loud tone in noise, hard-clipped: something for the de-limiter to restore."""
    return np.clip(3.0 * _noise(sr, seconds, ch, seed), -0.5, 0.5)


@pytest.mark.parametrize("n, ch, block", [(1, 2, 512), (3, 2, 300), (3, 1, 77)])
def test_batched_delimiter_streams_equal_single_streams(n, ch, block):
    from realtime.dsp.processors.neural.batched_delimiter import BatchedDelimiter
    from realtime.dsp.processors.neural.delimiter import Delimiter

    sr = 44100
    xs = [_limited(sr, 0.7, ch, 30 + s) for s in range(n)]
    if n > 1:
        xs[1][:] = 0.0  # one stream silent throughout
        xs[2][: len(xs[2]) // 2] = 0.0  # one that starts late
    singles = []
    for x in xs:
        d = Delimiter(amount=0.8)
        d.prepare(sr, block, ch)
        singles.append(_run_blocks(d, x, block))
    batched = BatchedDelimiter(n, amount=0.8)
    batched.prepare(sr, block, ch)
    assert batched.latency == d.latency
    y = _run_blocks(batched, np.concatenate(xs, axis=1), block)
    for s in range(n):
        assert (np.abs(singles[s]).max() > 1e-3) == (n == 1 or s != 1)
        assert np.abs(y[:, s * ch:(s + 1) * ch] - singles[s]).max() <= 1e-5


def test_delimiter_state_batch_axes_come_from_the_model():
    from realtime.dsp.processors.neural.batched_delimiter import BatchedDelimiter, batch_axis

    assert batch_axis(["batch", 2, 128], "batch") == 0
    assert batch_axis([1, "batch", 128], "batch") == 1
    assert batch_axis([2, "n", 4, "batch"], "batch") == 3  # named like the frames' batch axis
    assert batch_axis([1, "b", 3], "batch") == 1  # else the one symbolic axis
    assert batch_axis([1, 2], "batch") is None
    b = BatchedDelimiter(5)
    assert b._state_shapes() == {name: tuple(5 if i == b.state_axes[name] else (d if isinstance(d, int) else 1)
                                             for i, d in enumerate(b.session.input_shape(name)))
                                 for name in b.session.input_names if name != "frames"}


def _song(path, k: int):
    """A short MIDI phrase per k; k == 2 switches to the flute (program change) after a note."""
    mf = mido.MidiFile()
    tr = mido.MidiTrack()
    mf.tracks.append(tr)
    for i in range(3 + k):
        note = 60 + (k * 3 + i * 5) % 12
        if k == 2 and i == 1:
            tr.append(mido.Message("program_change", program=73, time=0))
        if k == 1 and i == 2:
            tr.append(mido.Message("pitchwheel", pitch=2000, time=0))
        tr.append(mido.Message("note_on", note=note, velocity=70 + 15 * k, time=0 if i == 0 else 90))
        tr.append(mido.Message("note_off", note=note, velocity=0, time=150 + 40 * k))
    mf.save(str(path))


def test_batched_synth_renders_equal_single_renders(tmp_path):
    from realtime.dsp.processors.synth.batched import BatchedSynth
    from realtime.dsp.processors.synth.processor import Synth
    from realtime.run.midi_file import midi_file_events
    from realtime.run.offline import EventCursor

    sr, block, n = 48000, 128, 3
    events = []
    for k in range(n):
        _song(tmp_path / f"s{k}.mid", k)
        events.append(midi_file_events(tmp_path / f"s{k}.mid", sr))
    length = int(max(ev[:, 0].max() for ev in events)) + sr // 2

    def render(synth, cursors, send):
        y = np.zeros((-(-length // block) * block, synth.channels), np.float32)
        for pos in range(0, length, block):
            for k, c in enumerate(cursors):
                c.send(send(k), pos, block)
            synth.process(y[pos:pos + block])
        return y[:length]

    class To:  # a cursor's target: one stream of the batched synth
        def __init__(self, synth, k):
            self.synth, self.k = synth, k

        def handle_midi(self, *msg):
            self.synth.stream_midi(self.k, *msg)

    singles = []
    for ev in events:
        synth = Synth(polyphony=8)
        synth.prepare(sr, block, 2)
        singles.append(render(synth, [EventCursor(ev)], lambda k, s=synth: s))
    batched = BatchedSynth(n, polyphony=8)
    batched.prepare(sr, block, 2)
    y = render(batched, [EventCursor(ev) for ev in events], lambda k: To(batched, k))
    assert int(batched.songs[2].values[0]) == 1  # the program change picked the flute in song 2 only
    assert int(batched.songs[0].values[0]) == 0
    for k in range(n):
        assert np.abs(singles[k]).max() > 1e-3
        assert np.abs(y[:, 2 * k:2 * k + 2] - singles[k]).max() <= 1e-5
    batched.prepare(sr, block, 2)
    assert int(batched.songs[2].values[0]) == 0  # the next group starts from the knobs as set, not the flute


def test_delimit_and_midi_files_side_by_side_match_process_and_synth(tmp_path):
    from realtime.run.batch_plan import group_tasks

    src = tmp_path / "in"
    src.mkdir()
    for i, (sr, seconds, ch) in enumerate([(44100, 1.0, 2), (48000, 0.7, 2), (22050, 0.8, 2), (44100, 0.5, 1)]):
        x = _limited(sr, seconds, ch, 40 + i)
        if i == 1:
            x[:] = 0.0
        sf.write(src / f"f{i}.wav", x, sr, subtype="PCM_24")
    for k in range(3):
        _song(src / f"m{k}.mid", k)
    options = BatchOptions(preset="delimit", streams=4)
    units = group_tasks(plan_batch([src], tmp_path / "o", options), 4)
    # files run at their own rate where the chain does (44.1 / 48 kHz), so they group by it: the
    # 48 kHz stereo file with the 22.05 kHz one (resampled to 48 kHz), the 44.1 kHz stereo file
    # alone, the mono file alone, the MIDI files
    assert sorted(len(u) for u in units) == [1, 1, 2, 3]
    assert sorted(t.samplerate for t in plan_batch([src], tmp_path / "o", options)) == [44100, 44100] + [48000] * 5
    out = tmp_path / "out"
    s = run_batch([src], out, options, jobs=1, progress=False)
    assert (s["processed"], s["failed"]) == (7, 0)
    log = {Path(r["input"]).name: r for r in map(json.loads, (out / LOG_NAME).read_text().splitlines())}
    assert [log[f"f{i}.wav"].get("streams") for i in range(4)] == [None, 2, 2, None]
    assert [log[f"m{k}.mid"]["streams"] for k in range(3)] == [3, 3, 3]
    for name in sorted(p.name for p in src.iterdir()):
        ref = tmp_path / f"ref_{Path(name).stem}.wav"
        if name.endswith(".mid"):
            assert main.main(["synth", str(src / name), str(ref)]) == 0
        else:
            assert main.main(["process", str(src / name), str(ref), "--preset", "delimit", "--no-progress"]) == 0
        _assert_same(out / f"{Path(name).stem}.wav", sf.read(ref, dtype="float64"))
    assert not _no_parts(out)


def _delimiter_with_extra_state(path):
    """A stand-in de-limiter export with one more state tensor, its batch on axis 1 ([3, batch, 5]):
    knots = mean |frame| + mean of the stream's state; the state decays toward the chunk's level."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def tensor(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    def ints(name, values):
        return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)

    nodes = [
        helper.make_node("Abs", ["frames"], ["a"]),
        helper.make_node("ReduceMean", ["a"], ["m"], axes=[2, 3], keepdims=0),  # [B, T]
        helper.make_node("ReduceMean", ["c"], ["cs"], axes=[0, 2], keepdims=0),  # [B]
        helper.make_node("Unsqueeze", ["cs", "ax1"], ["cs2"]),
        helper.make_node("Add", ["m", "cs2"], ["k0"]),
        helper.make_node("Unsqueeze", ["k0", "ax2"], ["k1"]),
        helper.make_node("Mul", ["k1", "ones"], ["knots"]),
        helper.make_node("ReduceMean", ["m"], ["mt"], axes=[1], keepdims=1),  # [B, 1]
        helper.make_node("Unsqueeze", ["mt", "ax0"], ["mt3"]),  # [1, B, 1]
        helper.make_node("Mul", ["c", "half"], ["ch"]),
        helper.make_node("Add", ["ch", "mt3"], ["c_out"]),
        helper.make_node("Identity", ["e_hist"], ["e_hist_out"]),
        helper.make_node("Identity", ["h"], ["h_out"]),
    ]
    init = [ints("ax0", [0]), ints("ax1", [1]), ints("ax2", [2]),
            helper.make_tensor("ones", TensorProto.FLOAT, [16], [1.0] * 16),
            helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5])]
    graph = helper.make_graph(
        nodes, "delimiter_stand_in",
        [tensor("frames", ["batch", "time", 128, 2]), tensor("e_hist", ["batch", 2, 128]),
         tensor("h", [1, "batch", 128]), tensor("c", [3, "batch", 5])],
        [tensor("knots", ["batch", "time", 16]), tensor("e_hist_out", ["batch", 2, 128]),
         tensor("h_out", [1, "batch", 128]), tensor("c_out", [3, "batch", 5])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in {"hop": "128", "lookahead_frames": "2", "knots": "16"}.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def test_batched_delimiter_takes_its_states_from_the_model(tmp_path):
    """The de-limiter is being retrained: another set of state tensors must need no code change."""
    from realtime.dsp.processors.neural.batched_delimiter import BatchedDelimiter

    path = _delimiter_with_extra_state(tmp_path / "d.onnx")
    sr, block, ch, n = 48000, 200, 2, 3
    xs = [_limited(sr, 0.4, ch, 50 + s) * (s + 1) / 3 for s in range(n)]
    singles = []
    for x in xs:
        one = BatchedDelimiter(1, model_path=path)
        one.prepare(sr, block, ch)
        singles.append(_run_blocks(one, x, block))
    batched = BatchedDelimiter(n, model_path=path)
    assert batched.state_axes == {"e_hist": 0, "h": 1, "c": 1}
    batched.prepare(sr, block, ch)
    assert batched.session.state["c"].shape == (3, n, 5)
    y = _run_blocks(batched, np.concatenate(xs, axis=1), block)
    for s in range(n):
        assert np.abs(y[:, s * ch:(s + 1) * ch] - singles[s]).max() <= 1e-5
    c = batched.session.state["c"]
    assert np.abs(c[:, 0] - c[:, 2]).max() > 1e-3  # each stream's rows of the new state are its own


def test_a_worker_reusing_its_chain_starts_each_midi_file_at_the_presets_knobs(tmp_path):
    """One file at a time in one worker: the song with a program change (to the flute) must not
    leave the next song on the flute; every render equals `main.py synth` of that file alone."""
    src = tmp_path / "in"
    src.mkdir()
    for k in (2, 0):  # m0 sorts after a2: the program change comes first
        _song(src / (f"a{k}.mid" if k == 2 else f"m{k}.mid"), k)
    out = tmp_path / "out"
    s = run_batch([src], out, BatchOptions(preset="synth", midi_preset="synth", streams=1), jobs=1, progress=False)
    assert (s["processed"], s["failed"]) == (2, 0)
    for name in ("a2.mid", "m0.mid"):
        ref = tmp_path / f"ref_{Path(name).stem}.wav"
        assert main.main(["synth", str(src / name), str(ref)]) == 0
        _assert_same(out / f"{Path(name).stem}.wav", sf.read(ref, dtype="float64"))


# ------------------------------------------------------------------------------ re-runs and bad input

def test_a_folder_scan_skips_the_batchs_own_outputs(tmp_path):
    """`batch DIR --out DIR/cleaned`: a re-run took the last run's outputs for inputs (2, 4, 6 files …)."""
    src = tmp_path / "nest"
    (src / "cleaned" / "cleaned").mkdir(parents=True)
    (src / "x").mkdir()
    for name in ("a.wav", "b.wav", "cleaned/a.wav", "cleaned/b.wav", "cleaned/cleaned/a.wav"):
        sf.write(src / name, _noise(16000, 0.1, 1, 0), 16000)
    # what lies in cleaned/ are earlier runs' outputs, as their log says (any other file there is refused)
    (src / "cleaned" / LOG_NAME).write_text("".join(json.dumps({"output": str(src / "cleaned" / name), "status": "ok"})
                                                    + "\n" for name in ("a.wav", "b.wav", "cleaned/a.wav")))
    for out in (src / "cleaned", src / "x" / ".." / "cleaned"):  # the same folder, however written
        tasks = plan_batch([src], out, BatchOptions())
        assert sorted(Path(t.input).relative_to(src).as_posix() for t in tasks) == ["a.wav", "b.wav"]
    # a folder that happens to share its name hides nothing; cleaned/, another batch's outputs (its log
    # says so), stays left out for an --out elsewhere too (a second batch took them for inputs)
    (src / "cleaned2").mkdir()
    sf.write(src / "cleaned2" / "c.wav", _noise(16000, 0.1, 1, 0), 16000)
    assert len(plan_batch([src], tmp_path / "elsewhere", BatchOptions())) == 3
    assert len(plan_batch([src], src / "cleaned", BatchOptions())) == 3
    (src / "cleaned" / LOG_NAME).unlink()  # no log: files of the user's, read as any folder's
    assert len(plan_batch([src], tmp_path / "elsewhere", BatchOptions())) == 6


def test_a_csv_manifest_with_a_byte_order_mark_is_read(tmp_path):
    """Excel saves "CSV UTF-8" with a byte-order mark: the header's first name was '\\ufeffinput'."""
    sf.write(tmp_path / "a.wav", _noise(16000, 0.1, 1, 0), 16000)
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("input,output\na.wav,x/a.flac\n", encoding="utf-8-sig")
    (task,) = plan_batch([manifest], tmp_path / "out", BatchOptions())
    assert (task.input, task.output) == (str(tmp_path / "a.wav"), str(tmp_path / "out" / "x" / "a.flac"))


def test_an_empty_out_is_refused(tmp_path, monkeypatch, capsys):
    """`--out "$UNSET"` wrote every output and the log into the current folder."""
    sf.write(tmp_path / "a.wav", _noise(16000, 0.1, 1, 0), 16000)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    assert main.main(["batch", str(tmp_path / "a.wav"), "--out", "", "--jobs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out is empty" in err
    assert list(cwd.iterdir()) == []
    with pytest.raises(OfflineError, match="--out is empty"):
        plan_batch([tmp_path / "a.wav"], "", BatchOptions())


def test_a_pipe_is_refused_in_one_line_not_read(tmp_path):
    """batch reads every input twice (it hashes it to resume): a FIFO no one wrote to hung the
    batch, and /dev/stdin from a pipe was consumed by the hash, its file then "not readable"."""
    fifo = tmp_path / "take.wav"
    os.mkfifo(fifo)
    for inputs, stdin in (([str(fifo)], None), (["/dev/stdin"], subprocess.PIPE)):
        p = subprocess.Popen([sys.executable, "main.py", "batch", *inputs, "--out", str(tmp_path / "out"),
                              "--no-progress"], cwd=ROOT, stdin=stdin, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(input="RIFF" if stdin else None, timeout=60)
        finally:
            p.kill()
        assert p.returncode == 2 and out == "", err
        assert err == f"error: {inputs[0]}: a pipe or device, not a file; batch needs files " \
                      "(for a pipe use `main.py process`)\n"
    assert not (tmp_path / "out" / LOG_NAME).exists()


def test_output_side_failures_are_retried_input_failures_are_not(tmp_path):
    """A folder in the way of an output (like a full or read-only disk, a missing model) is fixed
    without touching the input: the re-run must retry it, while a broken input stays skipped."""
    from realtime.run.batch_plan import ResumeLog

    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", _noise(16000, 0.5, 1, 0), 16000)
    (src / "broken.wav").write_bytes(os.urandom(3000))
    out = tmp_path / "out"
    (out / "a.wav").mkdir(parents=True)  # the output's path is a folder
    s = run_batch([src], out, BatchOptions(preset="default"), jobs=1, progress=False)
    assert (s["processed"], s["failed"]) == (2, 2)
    errors = {Path(f["input"]).name: f["error"] for f in s["failures"]}
    assert "is a folder" in errors["a.wav"] and "not a readable audio file" in errors["broken.wav"]
    (out / "a.wav").rmdir()
    s = run_batch([src], out, BatchOptions(preset="default"), jobs=1, progress=False)
    assert (s["processed"], s["failed"], s["skipped"], s["failed_before"]) == (1, 0, 1, 1)
    assert sf.info(str(out / "a.wav")).frames == 8000
    # a failure logged before the log said whose it was is retried (the record cannot tell)
    lines = [{k: v for k, v in json.loads(line).items() if k != "input_fault"}
             for line in (out / LOG_NAME).read_text().splitlines()]
    (out / LOG_NAME).write_text("".join(json.dumps(r) + "\n" for r in lines))
    done = {Path(t.input).name: ResumeLog(out).done(t) for t in plan_batch([src], out, BatchOptions(preset="default"))}
    assert done == {"a.wav": "ok", "broken.wav": None}


def test_an_input_replaced_by_an_older_file_is_processed_again(tmp_path):
    """`cp -p other.wav a.wav` keeps other's older mtime: the output was kept, made from the old a.wav."""
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", _noise(16000, 0.5, 1, 0), 16000, subtype="PCM_16")
    out = tmp_path / "out"
    s = run_batch([src], out, BatchOptions(preset="default"), jobs=1, progress=False)
    assert (s["processed"], s["failed"]) == (1, 0)
    before = (src / "a.wav").stat()
    sf.write(src / "a.wav", _noise(16000, 0.5, 1, 1), 16000, subtype="PCM_16")  # other audio, the same size
    old = before.st_mtime_ns - 3600 * 10 ** 9
    os.utime(src / "a.wav", ns=(old, old))
    assert (src / "a.wav").stat().st_size == before.st_size
    s = run_batch([src], out, BatchOptions(preset="default"), jobs=1, progress=False)
    assert (s["processed"], s["skipped"], s["failed"]) == (1, 0, 0)
    ref = tmp_path / "ref.wav"
    assert main.main(["process", str(src / "a.wav"), str(ref), "--preset", "default", "--no-progress"]) == 0
    _assert_same(out / "a.wav", sf.read(ref, dtype="float64"))


def test_a_folder_with_a_name_that_is_not_utf8_is_planned_and_processed(tmp_path):
    """A Latin-1 file name in a folder: the plan's look at the file (soundfile) used to fail on it."""
    src = tmp_path / "in"
    src.mkdir()
    name = os.fsdecode(b"caf\xe9.wav")
    sf.write(os.fsencode(src / name), np.zeros((4800, 2), np.float32), 48000)
    r = subprocess.run([sys.executable, "main.py", "batch", str(src), "--out", str(tmp_path / "out"), "--preset", "clean",
                        "-j", "1", "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert sf.info(os.fsencode(tmp_path / "out" / name)).frames == 4800
