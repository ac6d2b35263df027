"""Review 39 of the Ray backend: a dead cluster address from Ray's own resolution, the workers'
environment on a joined cluster, a killed worker's temporary files and side-by-side groups, and
the progress line."""
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.run.batch import LOG_NAME, BatchOptions, Progress, run_batch
from tests.ray_helpers import free_port

from .test_batch import _kill_one_while_writing, _no_parts

ROOT = Path(__file__).resolve().parent.parent
MARK = f"review39-{uuid.uuid4().hex[:8]}"  # in the environment of this module's Ray workers


def _tone(path: Path, seconds: float, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(48000 * seconds)) / 48000
    x = 0.2 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((len(t), 1))
    sf.write(path, x.astype(np.float32), 48000)


# ------------------------------------------------------------------------------ 5: the progress line

def test_progress_audio_rate_leaves_out_failed_files():
    """A failed file's audio (from its header: it was refused at once) counted as processed audio."""
    stream = io.StringIO()
    bar = Progress(2, 7200.0, stream, interval_s=0)
    bar.update({"status": "failed", "audio_s": 3600.0})
    assert " 0.0 audio-h/h, ETA --:--" in stream.getvalue().splitlines()[-1], stream.getvalue()
    bar.update({"status": "ok", "audio_s": 3600.0})
    assert "ETA 0:00:00" in stream.getvalue().splitlines()[-1]  # the failed file's audio is done all the same


def test_progress_final_line_is_not_printed_twice_on_a_log():
    stream = io.StringIO()  # not a terminal: a line every 10 s, the first at once
    bar = Progress(1, 10.0, stream)
    bar.update({"status": "ok", "audio_s": 10.0})
    bar.close()
    assert len(stream.getvalue().splitlines()) == 1, stream.getvalue()
    bar = Progress(2, 10.0, stream := io.StringIO())
    bar.update({"status": "ok", "audio_s": 5.0})
    bar.update({"status": "ok", "audio_s": 5.0})  # within 10 s: drawn by close alone
    bar.close()
    assert [line[:15] for line in stream.getvalue().splitlines()] == ["[1/2 files, 0 f", "[2/2 files, 0 f"]


# ------------------------------------------------------------------------------ 1: a dead resolved address

@pytest.mark.parametrize("via", ["RAY_ADDRESS", "address file"])
def test_ray_alone_with_a_dead_cluster_address_fails_at_once(tmp_path, via):
    """`--ray` with RAY_ADDRESS (or a stopped cluster's /tmp/ray/ray_current_cluster) naming a dead
    address retried for 10+ minutes, deaf to Ctrl-C; `--ray HOST:PORT` failed at once."""
    pytest.importorskip("ray")
    _tone(tmp_path / "a.wav", 0.1)
    dead = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "TMPDIR")}
    env["RAY_TMPDIR"] = str(tmp_path / "raytmp")  # Ray's folder for the address file: the machine's is left alone
    (tmp_path / "raytmp" / "ray").mkdir(parents=True)
    if via == "RAY_ADDRESS":
        env["RAY_ADDRESS"] = dead
    else:
        (tmp_path / "raytmp" / "ray" / "ray_current_cluster").write_text(dead)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "batch", str(tmp_path / "a.wav"), "--out", str(out),
                        "--ray", "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith(f"error: cannot reach a Ray cluster at {dead} (") and r.stderr.count("\n") == 1, r.stderr
    assert ("RAY_ADDRESS" in r.stderr) == (via == "RAY_ADDRESS") and ("ray_current_cluster" in r.stderr) != \
        (via == "RAY_ADDRESS"), r.stderr
    assert not out.exists()


def test_worker_env_makes_the_runtimes_folders_absolute(tmp_path, monkeypatch):
    from realtime.run import ray_batch

    monkeypatch.chdir(tmp_path)
    for name in ("DDSP_MODEL_DIR", "RT_DELIMITER_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RTAUDIO_MODELS_DIR", "models")
    monkeypatch.setenv("LV2_PATH", f"lv2{os.pathsep}/usr/lib/lv2")
    monkeypatch.setenv("RT_ENHANCER_PROVIDER", "cpu")
    env = ray_batch.worker_env()
    assert env["RTAUDIO_MODELS_DIR"] == str(tmp_path / "models")
    assert env["LV2_PATH"] == f"{tmp_path / 'lv2'}{os.pathsep}/usr/lib/lv2"
    assert env["RT_ENHANCER_PROVIDER"] == "cpu" and env["OMP_NUM_THREADS"] == "1"
    assert "DDSP_MODEL_DIR" not in env and "RT_DELIMITER_PROVIDER" not in env
    monkeypatch.setenv("LV2_PATH", "")  # no folder at all: stays so
    assert ray_batch.worker_env()["LV2_PATH"] == ""


# ------------------------------------------------------------------------------ a real cluster (1 CPU)

@pytest.fixture(scope="module")
def cluster():
    """A real local Ray cluster of 1 CPU, its workers marked (``MARK``) to be told from other clusters'."""
    ray = pytest.importorskip("ray")
    from ray._raylet import Config

    if ray.is_initialized():
        ray.shutdown()
    # one authentication mode for the node and this driver: Ray reads it when imported, and an earlier
    # module's ``RAY_AUTH_MODE=disabled`` (test_ray_autoscale) left this process's copy disabled while
    # a token on the machine turned it on for the new node's GCS ("InvalidAuthToken")
    mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    Config.initialize("")
    os.environ["RTAUDIO_TEST_MARK"] = MARK
    try:
        ray.init(num_cpus=1, _node_ip_address="127.0.0.1", include_dashboard=False, object_store_memory=80 * 2 ** 20,
                 log_to_driver=False, configure_logging=False)
    finally:
        del os.environ["RTAUDIO_TEST_MARK"]
    try:
        yield f"127.0.0.1:{ray.get_runtime_context().gcs_address.rsplit(':', 1)[1]}"
    finally:
        ray.shutdown()
        if mode is None:
            del os.environ["RAY_AUTH_MODE"]
        else:
            os.environ["RAY_AUTH_MODE"] = mode
        Config.initialize("")


def test_a_joined_clusters_workers_use_the_batchs_models(tmp_path, cluster):
    """RTAUDIO_MODELS_DIR (DDSP_MODEL_DIR, LV2_PATH) never reached a joined cluster's workers: the
    default model was used silently, where the local pool says the model is missing."""
    _tone(tmp_path / "in" / "a.wav", 0.5)
    (tmp_path / "emptymodels").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RTAUDIO_MODELS_DIR"] = "emptymodels"  # relative: to the batch's folder, not the workers'
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "batch", "in", "--out", "out", "--preset", "voice",
                        "--no-progress", "--ray", cluster], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 1, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert (s["processed"], s["failed"]) == (1, 1), s
    assert s["failures"][0]["error"].startswith(
        f"enhancer model not found: {tmp_path / 'emptymodels' / 'enhancer' / 'enhancer.onnx'}"), s


def _marked_task_pids() -> list[int]:
    """This module's Ray workers in the middle of a batch task (Ray titles them ``ray::<function>``)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::_remote_task") and \
                    f"RTAUDIO_TEST_MARK={MARK}".encode() in (d / "environ").read_bytes().split(b"\0"):
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def _run_killing_a_worker(tmp_path, cluster, monkeypatch, files: int) -> tuple[dict, Path]:
    """``files`` tones through preset ``voice`` on the cluster, with no retries, while one Ray worker
    is killed (SIGKILL) as it writes a file, as a killed node or the kernel's out-of-memory killer
    would; (the batch's summary, its --out)."""
    from realtime.run import ray_batch

    monkeypatch.setattr(ray_batch, "MAX_RETRIES", 0)  # the first death spends them
    for i in range(files):
        _tone(tmp_path / "in" / f"f{i}.wav", 6.0, i)
    out = tmp_path / "out"
    thread, killed = _kill_one_while_writing(out, _marked_task_pids, 120)
    s = run_batch([tmp_path / "in"], out, BatchOptions(preset="voice"), ray_address=cluster, progress=False)
    thread.join(5)
    assert len(killed) == 1, "no Ray worker was caught mid-task"
    return s, out


def test_a_killed_group_runs_again_file_by_file(tmp_path, cluster, monkeypatch):
    """A group side by side whose worker died (the retries spent) failed all its files, where the local
    pool runs each again alone; its temporary files stayed in --out."""
    s, out = _run_killing_a_worker(tmp_path, cluster, monkeypatch, 2)
    assert (s["processed"], s["failed"]) == (2, 0), s
    log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert [r.get("streams", 1) for r in log] == [1, 1]  # each again alone (a group's records say its streams)
    assert not _no_parts(out)


def test_a_worker_death_that_spends_the_retries_leaves_no_temporary_file(tmp_path, cluster, monkeypatch):
    s, out = _run_killing_a_worker(tmp_path, cluster, monkeypatch, 1)
    assert (s["processed"], s["failed"]) == (1, 1), s
    assert s["failures"][0]["error"].startswith("WorkerCrashedError"), s
    assert not _no_parts(out)
