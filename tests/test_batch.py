"""`main.py batch`: real files, real worker processes, a real local Ray cluster; outputs compared with
`main.py process` / `main.py synth` on the same inputs."""
import io
import json
import os
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


def _no_parts(*folders):
    return [p for f in folders for p in Path(f).rglob("*.part")]


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
    with pytest.raises(OfflineError, match="would both write"):
        plan_batch([src / "a.wav", src / "a.wav"], out, BatchOptions())
    with pytest.raises(OfflineError, match="no such file"):
        plan_batch([tmp_path / "missing.wav"], out, BatchOptions())


def test_progress_line_shows_rates_and_eta():
    stream = io.StringIO()
    bar = Progress(4, 3600.0, stream, interval_s=0)
    bar.update({"status": "ok", "audio_s": 1800.0})
    bar.update({"status": "failed", "audio_s": 0.0})
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("[2/4 files, 1 failed]") and "files/s" in line and "audio-h/h" in line and "ETA" in line


def _signal_when_writing(proc, out: Path, signals: int) -> None:
    """Send SIGTERM ``signals`` times once a worker is in the middle of writing an output."""
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not _no_parts(out):
        time.sleep(0.01)
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)


def test_sigterm_finishes_or_abandons_cleanly(tmp_path):
    src = tmp_path / "long"
    src.mkdir()
    for i in range(8):
        sf.write(src / f"f{i}.wav", _noise(48000, 20.0, 2, i), 48000, subtype="PCM_16")
    out = tmp_path / "out"
    cmd = [sys.executable, "main.py", "batch", str(src), "--out", str(out), "--preset", "default", "--jobs", "2",
           "--no-progress"]
    for signals in (1, 2):  # once: the files in flight are finished; twice: they are abandoned
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _signal_when_writing(proc, out, signals)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr
        s = json.loads(stdout)
        assert s["interrupted"] and s["abandoned"] == (signals == 2) and s["failed"] == 0
        assert not _no_parts(out)
        for p in out.glob("*.wav"):  # every output that exists is whole
            assert sf.info(str(p)).frames == 20 * 48000
    s = run_batch([src], out, BatchOptions(preset="default"), jobs=2, progress=False)
    assert s["failed"] == 0 and s["processed"] + s["skipped"] == 8 and s["processed"] >= 1
    assert len(list(out.glob("*.wav"))) == 8


def _worker_pids() -> list[int]:
    """This process's batch workers (spawned children running multiprocessing's entry point)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == os.getpid() and b"spawn_main" in (d / "cmdline").read_bytes():
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
    killed = []

    def kill_one():  # a crash in native code, as far as the pool can tell
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            parts = _no_parts(out)
            busy = _worker_pids() if parts else []
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
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


# ---------------------------------------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster: head started here (2 CPUs), shut down after the module's tests."""
    ray = pytest.importorskip("ray")
    # Ray replaces a loopback node address by the host's own one; clients connect through 127.0.0.1.
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, object_store_memory=80 * 2 ** 20,
             log_to_driver=False, configure_logging=False)
    port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    yield f"127.0.0.1:{port}"
    ray.shutdown()


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
    killed = []

    def kill_one():
        deadline = time.time() + 90
        while time.time() < deadline and not killed:
            busy = _ray_task_pids() if _no_parts(out) else []  # a task is writing its output
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
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


# ------------------------------------------------------------------------------ streams side by side

def test_batched_enhancer_streams_equal_single_streams():
    from realtime.dsp.processors.neural.batched import BatchedEnhancer
    from realtime.dsp.processors.neural.enhancer import Enhancer

    sr, block, ch, n = 44100, 300, 2, 3  # a rate the model resamples from, an odd block size
    xs = [_noise(sr, 0.8, ch, 10 + s) for s in range(n)]
    xs[1][8000:20000] = 0.0  # the streams' silence gates disagree: frame-by-frame calls
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
