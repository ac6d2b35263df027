"""The batch runner's cluster backend: the same tasks as the local pool, as Ray tasks.

Install with ``pip install -e '.[cluster]'``; only this module imports Ray, and only when a batch
asks for it (``main.py batch --ray [ADDRESS]``). Each task runs ``realtime.run.batch.run_task`` in
a Ray worker process, which keeps its chains between tasks as a local worker does. A task whose
worker process dies (a killed node, an out-of-memory kill) is retried by Ray on another worker;
its output is still all-or-nothing, because every attempt writes through the atomic writer and
first removes what a killed attempt left behind. Workers read and write the paths they are given:
on a multi-node cluster, inputs and outputs must be on a filesystem every node mounts.
"""
from __future__ import annotations

import socket

from realtime.run.batch import THREAD_ENV, BatchTask, StopFlag

MAX_RETRIES = 3  # attempts after a worker died; a file's own errors are results, never retried
CANCEL_GRACE_S = 10.0


def _remote_task(unit: tuple[BatchTask, ...]) -> list[dict]:
    from realtime.run.batch import run_unit

    return run_unit(unit)


def _failed(task: BatchTask, error: str) -> dict:
    return {"input": task.input, "output": task.output, "kind": task.kind, "status": "failed", "error": error,
            "audio_s": task.audio_s, "preset_hash": task.preset_hash, "input_sha256": None, "output_bytes": None,
            "pid": None, "wall_s": None, "finished": None}


def connect(address: str | None):
    """Join (or, with no address and no ``RAY_ADDRESS``, start) a Ray cluster unless already connected.

    Parameters
    ----------
    address : str or None
        ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"``; None for Ray's own default.

    Returns
    -------
    bool
        Whether this call connected (and so should disconnect at the end).

    Raises
    ------
    OfflineError
        Ray is not installed, or no cluster answers at ``address``.
    """
    from realtime.errors import OfflineError

    try:
        import ray
    except ModuleNotFoundError:
        raise OfflineError("--ray needs Ray: pip install -e '.[cluster]'") from None
    if ray.is_initialized():
        return False
    probe(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": dict(THREAD_ENV)})
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise OfflineError(f"cannot reach a Ray cluster at {address or 'the default address'}: {e}") from None
    return True


def probe(address: str | None, timeout_s: float = 5.0) -> None:
    """A "host:port" address must answer before Ray is asked to join it: with nothing listening,
    ``ray.init`` retries its connection for minutes, logging a warning every 30 s."""
    from realtime.errors import OfflineError

    host, sep, port = (address or "").rpartition(":")
    if not sep or "://" in (address or "") or not port.isdigit():
        return  # "auto", "local", None, ray://…: Ray's own resolution
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()  # [::1]:port
    except OSError as e:
        raise OfflineError(f"cannot reach a Ray cluster at {address}: {e.strerror or e}") from None


def run_tasks_on_ray(units: list[tuple[BatchTask, ...]], on_result, stop: StopFlag,
                     address: str | None = None) -> int:
    """Run ``units`` as Ray tasks; call ``on_result(result)`` here for each file as its unit finishes.

    Parameters
    ----------
    units : list of tuple of BatchTask
        Units of work (``batch_plan.group_tasks``): one Ray task each.
    on_result : callable
        Called with each result dict (see ``realtime.run.batch.run_task``).
    stop : StopFlag
        Level 1: submit nothing more, wait for the submitted tasks; level 2: cancel them (a cancelled
        task's temporary file is removed by the atomic writer).
    address : str, optional
        See ``connect``.

    Returns
    -------
    int
        The cluster's CPUs (the workers the batch could use).
    """
    import contextlib
    import sys

    # Ray's driver prints its notices (a retried task, a dead worker) on stdout: keep stdout for the summary.
    with contextlib.redirect_stdout(sys.stderr):
        return _run(units, on_result, stop, address)


def _run(units: list[tuple[BatchTask, ...]], on_result, stop: StopFlag, address: str | None) -> int:
    connected = connect(address)
    import ray

    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_remote_task)
        window = 2 * cpus  # submitted ahead: every CPU busy, memory and Ctrl-C latency bounded
        queue = list(reversed(units))
        pending: dict = {}
        while queue or pending:
            while queue and stop.level == 0 and len(pending) < window:
                unit = queue.pop()
                pending[remote.remote(unit)] = unit
            if not pending:
                break
            if stop.level >= 2:
                for ref in pending:
                    ray.cancel(ref)
                ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_GRACE_S)
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
            for ref in ready:
                unit = pending.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayError as e:  # retries exhausted, or the task itself broke
                    why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    results = [_failed(task, why) for task in unit]
                for result in results:
                    on_result(result)
        return cpus
    finally:
        if connected:
            ray.shutdown()
