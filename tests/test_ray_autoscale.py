"""A Ray batch on a cluster that grows while it runs (an autoscaler's, whose head has no CPUs).

Its own module: the cluster here is several real local nodes (``ray start`` processes), and
``test_batch``'s module-wide single-node cluster must not be connected while it runs.
"""
import json
import shutil
import tempfile
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from realtime.run.batch import LOG_NAME, BatchOptions, run_batch
from tests.ray_helpers import free_port, start_head, start_node, stop_node

# enough work that the batch outlasts the window's 2 s refresh after the node joins: with 6 files,
# a fast machine finished them one at a time before the window saw the node's second CPU
FILES = 16


def _most_at_once(log: list[dict]) -> int:
    """The most files any moment had in progress, from each file's finish time and wall time."""
    edges = sorted([(r["finished"] - r["wall_s"], 1) for r in log] + [(r["finished"], -1) for r in log])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_ray_batch_gives_work_to_nodes_that_join_after_it_started(tmp_path, monkeypatch):
    """The window of submitted tasks was the cluster's CPUs at the start: 1 where the head had none,
    so the node the first task brought up ran one file at a time for the whole batch."""
    pytest.importorskip("ray")
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(7)
    for i in range(FILES):
        sf.write(src / f"f{i}.wav", (0.1 * rng.standard_normal((48000 * 12, 2))).astype(np.float32), 48000,
                 subtype="PCM_16")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    address = f"127.0.0.1:{port}"
    nodes = [start_head(port, 0, temp)]
    try:
        def scale_up():  # what an autoscaler does when a task waits for a CPU: a worker node joins
            time.sleep(2.0)
            nodes.append(start_node(["--address", address, "--num-cpus", "2"], temp))

        joiner = threading.Thread(target=scale_up)
        joiner.start()
        out = tmp_path / "out"
        s = run_batch([src], out, BatchOptions(preset="default", streams=1), ray_address=address, progress=False)
        joiner.join(60)
        assert (s["backend"], s["processed"], s["failed"]) == ("ray", FILES, 0), s
        log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
        assert _most_at_once(log) == 2, log  # both of the new node's CPUs busy, not one file at a time
    finally:
        for node in reversed(nodes):
            stop_node(node)
        shutil.rmtree(temp, ignore_errors=True)
