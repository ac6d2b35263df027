"""Real Ray nodes for the batch tests: ``ray start --block`` processes on the loopback."""
import os
import signal
import socket
import subprocess
import sys
import time

from realtime.errors import OfflineError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict:
    """The environment of a node and of a batch joining it: no inherited cluster, no token."""
    return {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "disabled"}


def start_node(args: list[str], temp: str, cwd=None) -> subprocess.Popen:
    """A ``ray start --block`` node in a session of its own (as a cluster's nodes run); ``temp`` is
    its own temporary folder, so the machine's "last cluster" is left alone."""
    return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--block", *args,
                             "--node-ip-address", "127.0.0.1", "--temp-dir", temp, "--disable-usage-stats",
                             "--object-store-memory", str(80 * 2 ** 20)],
                            cwd=cwd, env=ray_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def start_head(port: int, cpus: int, temp: str, cwd=None) -> subprocess.Popen:
    """A head node with ``cpus`` CPUs, once it answers on ``port``."""
    from realtime.run.ray_batch import probe

    head = start_node(["--head", "--num-cpus", str(cpus), "--port", str(port), "--include-dashboard", "false"],
                      temp, cwd)
    deadline = time.time() + 60
    while True:
        try:
            probe(f"127.0.0.1:{port}", timeout_s=1)
            return head
        except OfflineError:
            if time.time() > deadline or head.poll() is not None:
                stop_node(head)
                raise AssertionError("the Ray head did not start") from None
            time.sleep(0.5)


def stop_node(node: subprocess.Popen) -> None:
    node.send_signal(signal.SIGTERM)  # `ray start --block` takes its node's processes down with it
    try:
        node.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()
