"""The batch runner's cluster backend: the same tasks as the local pool, as Ray tasks.

Install with ``.venv/bin/pip install -e '.[cluster]'``; only this module imports Ray, and only when a batch
asks for it (``main.py batch --ray [ADDRESS]``). Each task runs ``realtime.run.batch.run_unit`` in
a Ray worker process, which keeps its chains between tasks as a local worker does. A task whose
worker process dies (a killed node, an out-of-memory kill) is retried by Ray on another worker;
its output is still all-or-nothing, because every attempt writes through the atomic writer and
first removes what a killed attempt left behind (and the batch, once the retries are spent). A
group of files run side by side whose retries are spent is run again one file at a time, as the
local pool does: one file that kills its worker fails alone. Workers read and write the paths they are given
(absolute: a worker runs in the cluster's folder): on a multi-node cluster, inputs and outputs must
be on a filesystem every node mounts.

Where Ray would start a node of its own (``--ray`` with no cluster to join, ``--ray local``), the
batch starts it in a session of its own, as the local pool's workers ignore the group's signals:
a Ctrl-C or ``kill -TERM -- -PGID`` reaches the batch alone, which finishes the files in progress.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from realtime.errors import OfflineError, interrupt_signals
from realtime.io.files import remove_stale_parts
from realtime.run.batch import THREAD_ENV, BatchTask, StopFlag

MAX_RETRIES = 3  # attempts after a worker died; a file's own errors are results, never retried
CANCEL_GRACE_S = 10.0
NODE_START_S = 120.0  # a node started for the batch says its address within this, or the batch gives up
NODE_STOP_S = 30.0  # a node started for the batch gets this long to shut down before it is killed
AUTH_HINT = ("; if Ray said \"Unauthenticated\", the cluster wants its token: put it in ~/.ray/auth_token or "
             "RAY_AUTH_TOKEN, and leave RAY_AUTH_MODE unset or set it to token")
WINDOW_REFRESH_S = 2.0  # how often the submission window follows the cluster's CPUs (nodes join and leave)
# What the runtime reads from the environment, for the workers (a joined cluster's have its `ray start`'s):
PATH_ENV = ("RTAUDIO_MODELS_DIR", "DDSP_MODEL_DIR")  # a folder each, made absolute
PATH_LIST_ENV = ("LV2_PATH",)  # folders separated by os.pathsep, each made absolute
VALUE_ENV = ("RT_ENHANCER_PROVIDER", "RT_DELIMITER_PROVIDER")  # passed as they are
# How a task ends when its worker process died (the retries spent): a group's files are each run again alone
WORKER_DIED = ("WorkerCrashedError", "OutOfMemoryError")

# A node for one batch, run by a helper process in a session of its own. It ends when the batch closes
# its stdin (or dies, which closes it too); the node's processes die with the helper (Ray's fate sharing).
# Then the hidden temporary files of the outputs the batch had claimed and not released (it was killed:
# argv[2], ``ResumeLog.claim``'s list) are removed, as the local pool's workers remove theirs.
_NODE = """\
import sys, ray
ray.init(address="local", num_cpus=int(sys.argv[1]) if sys.argv[1] else None, include_dashboard=False,
         log_to_driver=False, configure_logging=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
if sys.argv[2]:
    ray.shutdown()
    from realtime.io.files import remove_stale_parts
    from realtime.run.batch_plan import claimed_outputs
    for output in claimed_outputs(sys.argv[2]):
        try:
            remove_stale_parts(output)
        except (ValueError, OSError):
            pass
"""


def _remote_task(unit: tuple[BatchTask, ...]) -> list[dict]:
    """``run_unit`` on a Ray worker, with what it says on stderr (a file's NaNs replaced, tags left
    out, clipping) in the first result's ``warnings``: a worker's stderr goes to the cluster's logs,
    not to the batch's terminal (``log_to_driver=False``), and the batch prints them."""
    import contextlib
    import io

    from realtime.run.batch import run_unit

    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        results = run_unit(unit)
    lines = [line for line in said.getvalue().splitlines() if line.strip()]
    if lines and results:
        results[0]["warnings"] = lines
    return results


def _failed(task: BatchTask, error: str) -> dict:
    return {"input": task.input, "output": task.output, "kind": task.kind, "status": "failed", "error": error,
            "audio_s": task.audio_s, "preset_hash": task.preset_hash, "input_sha256": None, "output_bytes": None,
            "pid": None, "wall_s": None, "finished": None}


def _absolute(folder: str) -> str:
    return os.path.abspath(os.path.expanduser(folder)) if folder else folder


def worker_env() -> dict:
    """The environment of the batch's Ray workers: one thread per native pool, and this process's
    models, plugins and execution providers where set (``PATH_ENV``, ``PATH_LIST_ENV``,
    ``VALUE_ENV``), folders made absolute (a worker runs in the cluster's folder)."""
    env = dict(THREAD_ENV)
    for name in PATH_ENV + PATH_LIST_ENV + VALUE_ENV:
        value = os.environ.get(name)
        if value is None:
            continue
        if name in PATH_LIST_ENV:  # empty stays empty: no folder at all, as lilv reads it
            value = os.pathsep.join(_absolute(p) for p in value.split(os.pathsep))
        env[name] = _absolute(value) if name in PATH_ENV else value
    return env


def _remove_parts(unit: tuple[BatchTask, ...]) -> None:
    """The temporary files a killed or cancelled attempt at ``unit`` left (the atomic writer's own
    clean-up dies with its process)."""
    for task in unit:
        remove_stale_parts(Path(task.output))


def _starts_node(address: str | None) -> bool:
    """Whether ``ray.init(address)`` would start a node rather than join one (Ray's own resolution:
    ``RAY_ADDRESS``, then the cluster of the last ``ray start`` here). A Ray without that (private)
    helper is left to ``ray.init``, which then starts its node in the batch's process group."""
    if address == "local":
        return True
    if address is not None:
        return False
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:
        return False
    return get_ray_address_from_environment(None, None) is None


@contextlib.contextmanager
def _token_auth():
    """Ray (2.5x on) turns token authentication on for a node it starts, and a driver that joins it by
    address must turn it on too: ``RAY_AUTH_MODE`` for the block, Ray's settings read again (it read
    them when imported) at both ends. A Ray without token authentication is left as it is."""
    try:
        from ray._raylet import Config

        reread = Config.initialize
    except (ImportError, AttributeError):
        yield
        return
    if "RAY_AUTH_MODE" in os.environ:
        yield
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    reread("")
    try:
        yield
    finally:
        del os.environ["RAY_AUTH_MODE"]
        reread("")


def _token_here() -> bool:
    """Whether this machine holds a Ray token (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``): ``ray start``
    then turns token authentication on, but ``ray.init`` only for a cluster it finds itself, not
    for an address it is given (``--ray HOST:PORT``, ``RAY_ADDRESS``). With it on, a cluster without
    it is joined all the same."""
    try:
        from ray._raylet import AuthenticationTokenLoader

        loader = AuthenticationTokenLoader.instance()
        loader.reset_cache()  # one written since it last looked (a node this process started)
        return bool(loader.has_token(ignore_auth_mode=True))
    except (ImportError, AttributeError, TypeError):  # a Ray without token authentication
        return False


def _start_node(cpus: int | None, sweep=None) -> tuple[subprocess.Popen, str]:
    """A helper process running a new node (``_NODE``) in its own session, and the node's address;
    ``sweep``: the batch's list of claimed outputs, whose temporary files it removes once the batch is gone."""
    import select

    proc = subprocess.Popen([sys.executable, "-c", _NODE, str(cpus or ""), os.fspath(sweep or "")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    ready, _, _ = select.select([proc.stdout], [], [], NODE_START_S)
    address = proc.stdout.readline().strip() if ready else ""
    if not address:
        _stop_node(proc)
        raise OfflineError("--ray: could not start a local Ray node (Ray's error is above)" if ready else
                           f"--ray: a local Ray node did not start within {NODE_START_S:g} s")
    return proc, address


def _stop_node(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    try:
        proc.wait(NODE_STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


@contextlib.contextmanager
def _handlers_kept():
    """The interrupt signals' handlers as they were before the block, put back after it (main thread
    only: elsewhere none can be set). Ray changes them both ways: ``ray.init`` puts in its own for
    SIGTERM (which exits the process, files half-done), where the batch's finishes the files in
    progress; ``ray.shutdown`` takes out the C-level failure-signal handlers its core worker put in
    (glog's, SIGTERM among them), which left SIGTERM at its default under the batch's Python handler:
    a second SIGTERM then killed the batch with no summary (-15)."""
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in interrupt_signals()} if main else {}
    try:
        yield
    finally:
        for s, h in handlers.items():
            if h is not None:
                signal.signal(s, h)


def _init(ray, address: str) -> None:
    """``ray.init``, the signal handlers kept (``_handlers_kept``)."""
    auth_error = getattr(ray.exceptions, "AuthenticationError", ConnectionError)  # a Ray without tokens has none
    try:
        with _handlers_kept():
            ray.init(address=address, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": worker_env()})
    except (ConnectionError, RuntimeError, ValueError, auth_error) as e:
        env = os.environ.get("RAY_ADDRESS")  # Ray's choice over None and "auto"
        # Ray's own message for "auto" names an `--address` flag this command does not have
        if isinstance(e, ConnectionError) and address == "auto" and not env:
            raise OfflineError("--ray auto: no running Ray cluster found; start one (`ray start --head`), "
                               "give --ray HOST:PORT or set RAY_ADDRESS, or use --ray alone to start one "
                               "for this batch") from None
        where = env if address in (None, "auto") and env else address or "the last `ray start`'s address"
        # a refused token is a ConnectionError too, Ray's "Unauthenticated" only in its log line above
        hint = AUTH_HINT if isinstance(e, (ConnectionError, auth_error)) else ""
        raise OfflineError(f"--ray: cannot reach a Ray cluster at {where}: {str(e).splitlines()[0]}{hint}") from None


def _shutdown(ray) -> None:
    """``ray.shutdown``, the signal handlers kept (``_handlers_kept``)."""
    with _handlers_kept():
        ray.shutdown()


@contextlib.contextmanager
def ray_cluster(address: str | None = None, cpus: int | None = None, sweep=None):
    """Connected to a Ray cluster for the block (unless already connected); yields its CPUs.

    Parameters
    ----------
    address : str or None
        ``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:PORT"`` or ``"local"``; None for Ray's own
        default (``RAY_ADDRESS``, the last ``ray start`` here, else a new node).
    cpus : int, optional
        CPUs of a node started for the batch (default: Ray's count); a joined cluster has its own.
    sweep : path, optional
        A node started for the batch removes, when it ends, the temporary files of the outputs this
        file lists (``ResumeLog.claim``'s; gone when the batch ended normally): a killed batch's.

    Raises
    ------
    OfflineError
        Ray is not installed, no cluster answers at ``address``, or a node would not start.
    """
    try:
        import ray
    except ModuleNotFoundError:
        raise OfflineError("--ray needs Ray: .venv/bin/pip install -e '.[cluster]'") from None
    # Ray's driver prints its notices (a retried task, a dead worker) on stdout: keep stdout for the summary
    with contextlib.redirect_stdout(sys.stderr), contextlib.ExitStack() as stack:
        if not ray.is_initialized():
            probe_cluster(address)
            starts = _starts_node(address)
            if starts or _token_here():  # a node of its own has it, as Ray's; a cluster joined where a token is
                stack.enter_context(_token_auth())
            if starts:
                proc, address = _start_node(cpus, sweep)
                stack.callback(_stop_node, proc)
            _init(ray, address)
            stack.callback(_shutdown, ray)
        yield cluster_cpus()


def cluster_cpus() -> int:
    """The connected cluster's CPUs now, at least 1: an autoscaling cluster's head often has
    none, and its first task is what makes the autoscaler add a node."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 0)))


def probe(address: str | None, timeout_s: float = 5.0, source: str = "") -> None:
    """A "host:port" address must answer before Ray is asked to join it: with nothing listening,
    ``ray.init`` retries its connection for minutes, logging a warning every 30 s (deaf to Ctrl-C).
    ``source``, where the address came from, goes into the error in brackets."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or "://" in (address or "") or not port.isdigit():
        return  # "auto", "local", None, ray://…: Ray's own resolution
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()  # [::1]:port
    except OSError as e:
        where = f"{address} ({source})" if source else address
        raise OfflineError(f"cannot reach a Ray cluster at {where}: {e.strerror or e}") from None


def probe_cluster(address: str | None, timeout_s: float = 5.0) -> None:
    """``probe`` the cluster ``ray.init(address)`` would join, as Ray resolves None and ``"auto"``
    (``RAY_ADDRESS``, then the address file of the last ``ray start`` here, which a stopped or
    crashed cluster leaves behind). Nothing to probe where Ray starts a node, finds no cluster
    (``ray.init`` says so) or has no such (private) helper."""
    if address not in (None, "auto"):
        probe(address, timeout_s)
        return
    try:
        from ray._private.services import get_ray_address_from_environment

        joined = get_ray_address_from_environment(address, None)
    except (ImportError, ConnectionError):
        return
    if os.environ.get("RAY_ADDRESS"):
        source = "RAY_ADDRESS"
    else:
        try:
            from ray._common.utils import get_ray_address_file
        except ImportError:
            get_ray_address_file = None
        where = f", in {get_ray_address_file(None)}" if get_ray_address_file else ""
        source = f"the last `ray start` here{where}: a cluster since stopped leaves it"
    probe(joined, timeout_s, source)


def run_units_on_ray(units: list[tuple[BatchTask, ...]], on_result, stop: StopFlag, cpus: int) -> None:
    """Run ``units`` as Ray tasks, inside ``ray_cluster``; call ``on_result(result)`` here for each
    file as its unit finishes.

    Parameters
    ----------
    units : list of tuple of BatchTask
        Units of work (``batch_plan.group_tasks``): one Ray task each.
    on_result : callable
        Called with each result dict (see ``realtime.run.batch.run_task``).
    stop : StopFlag
        Level 1: submit nothing more, wait for the submitted tasks; level 2: cancel them (a cancelled
        task's temporary file is removed by the atomic writer).
    cpus : int
        The cluster's CPUs (``ray_cluster``'s): the most tasks submitted at a time, at first; the
        window then follows ``cluster_cpus`` every ``WINDOW_REFRESH_S``, so the nodes an autoscaler
        adds (or a user starts) get work too.
    """
    import time

    import ray

    remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_remote_task)
    died = tuple(getattr(ray.exceptions, name) for name in WORKER_DIED if hasattr(ray.exceptions, name))
    queue = list(reversed(units))
    pending: dict = {}
    refreshed = time.monotonic()
    while queue or pending:
        if time.monotonic() - refreshed >= WINDOW_REFRESH_S:
            cpus, refreshed = cluster_cpus(), time.monotonic()
        # no more than can run at once: a task queued in Ray would still start after the first Ctrl-C
        while queue and stop.level == 0 and len(pending) < cpus:
            unit = queue.pop()
            pending[remote.remote(unit)] = unit
        if not pending:
            break
        if stop.level >= 2:
            _cancel(ray, pending)
            break
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
        for ref in ready:
            unit = pending.pop(ref)
            try:
                results = ray.get(ref)
            except ray.exceptions.RayError as e:  # retries exhausted, or the task itself broke
                _remove_parts(unit)
                if len(unit) > 1 and isinstance(e, died) and stop.level == 0:
                    # side by side, it may have died on any of them: each again alone, next
                    queue.extend((task,) for task in reversed(unit))
                    continue
                why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                results = [_failed(task, why) for task in unit]
            for result in results:
                on_result(result)


def _cancel(ray, pending: dict) -> None:
    """Abandon the tasks in flight: cancelled (the atomic writer removes a temporary file), those
    still running after ``CANCEL_GRACE_S`` (in native code) killed; what either left is removed."""
    for ref in pending:
        ray.cancel(ref)
    _, running = ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_GRACE_S)
    if running:
        for ref in running:
            ray.cancel(ref, force=True)
        ray.wait(running, num_returns=len(running), timeout=CANCEL_GRACE_S)
    for unit in pending.values():
        _remove_parts(unit)
