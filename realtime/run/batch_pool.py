"""The batch runner's local backend: worker processes that each take one unit of work at a time.

A unit is one file, or a group of files run side by side (``batch_plan.group_tasks``). A small pool
of our own rather than ``concurrent.futures``: the parent knows which unit every worker holds, so a
worker that dies on a file (a crash in a native library) costs that file alone — recorded as failed
(after an interrupt: left not started); a group's files, any of which it may have died on, are
each done again alone — and a fresh worker takes its place; an abandoned batch stops exactly the
workers that hold files. Workers are spawned (no fork of a parent holding threads) and ignore
Ctrl-C and SIGTERM, from their first instruction: those reach every process of the group (a
terminal's Ctrl-C, ``kill -TERM -- -PGID``) or of the service (systemd's stop), and the parent
alone decides what they mean (the first finishes the files in progress). The parent stops a worker
with ``STOP_SIGNAL``, which it turns into ``SystemExit`` so the atomic writer removes the temporary
file of the output in progress; a worker gets it too when the parent dies (killed), and stops.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from contextlib import contextmanager
from multiprocessing import resource_tracker
from multiprocessing.connection import wait
from pathlib import Path

from realtime.errors import interrupt_signals
from realtime.io.files import remove_stale_parts
from realtime.run.batch import THREAD_ENV, BatchTask, StopFlag

ABANDON_GRACE_S = 10.0  # a worker told to stop gets this long to clean up before it is killed
STOP_SIGNAL = signal.SIGUSR1  # the parent's "stop now": SIGTERM is the group's, and a worker ignores it
GROUP_SIGNALS = set(interrupt_signals())  # the parent's to act on; blocked in a worker until it ignores them
PR_SET_PDEATHSIG = 1


def _exit_on_stop(*_):
    # once: a second stop signal (the batch's own, beside its death's) would cut the clean-up short
    signal.signal(STOP_SIGNAL, signal.SIG_IGN)
    raise SystemExit(143)


def _stop_with_parent(parent: int) -> None:
    """``STOP_SIGNAL`` to this worker when its parent dies (Linux), so a killed batch's workers stop
    at once, their files in progress removed, instead of running on to a broken pipe. (The kernel
    sends it when the parent's thread that started the worker ends: the pool starts them from the
    batch's main thread.)"""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(STOP_SIGNAL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent is looked for between files
        pass
    if os.getppid() != parent:  # it died before that
        raise SystemExit(143)


def _worker_main(conn, parent: int) -> None:
    for s in interrupt_signals():  # a terminal's hang-up and Ctrl-\ reach the whole group too
        signal.signal(s, signal.SIG_IGN)
    signal.signal(STOP_SIGNAL, _exit_on_stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)  # one that came while starting is dropped
    _stop_with_parent(parent)
    from realtime.run.batch import WorkerStderr, run_unit

    # a file's warnings after its output is in place (clipped samples) met a hung-up terminal's EIO,
    # and the file was logged failed with its output written: what cannot be said is dropped
    sys.stderr = WorkerStderr(sys.stderr)

    while True:
        try:
            unit = conn.recv()
        except (EOFError, OSError):
            return
        if unit is None or os.getppid() != parent:
            return
        results = run_unit(unit)
        try:
            conn.send(results)
        except OSError:  # the parent is gone (BrokenPipeError): nothing to tell
            return


@contextmanager
def _thread_env():
    """Spawned workers inherit the environment: one thread per native pool unless the user chose."""
    added = {k: v for k, v in THREAD_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid()), daemon=True, name="batch-worker")
        # the worker starts with the group's signals blocked (a Ctrl-C while it imports is no traceback);
        # here they wait for the unblocking. The tracker first: its start unblocks them in this thread
        resource_tracker.ensure_running()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
        try:
            with _thread_env():
                self.proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child.close()
        self.task: tuple[BatchTask, ...] | None = None  # the unit it holds

    def give(self, unit: tuple[BatchTask, ...]) -> bool:
        try:
            self.conn.send(unit)
        except (BrokenPipeError, OSError):
            return False
        self.task = unit
        return True

    def stop(self) -> None:
        """Tell the worker to stop now (``STOP_SIGNAL``: its output in progress is discarded)."""
        if self.proc.is_alive():  # not a pid that was reaped (and could be another process's by now)
            try:
                os.kill(self.proc.pid, STOP_SIGNAL)
            except ProcessLookupError:
                pass

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.stop()
            self.proc.join(timeout)
        if self.proc.is_alive():  # stuck in native code
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _died(task: BatchTask, exitcode) -> dict:
    return {"input": task.input, "output": task.output, "kind": task.kind, "status": "failed",
            "error": f"worker process died on this file (exit code {exitcode})", "audio_s": task.audio_s,
            "preset_hash": task.preset_hash, "input_sha256": None, "output_bytes": None, "pid": None,
            "wall_s": None, "finished": None}


def _abandon(busy: list[_Worker]) -> None:
    for w in busy:
        w.stop()
    for w in busy:
        w.proc.join(ABANDON_GRACE_S)
        if w.proc.is_alive():  # stuck in native code: kill it and remove its temporary file ourselves
            w.proc.kill()
            w.proc.join()
        for task in w.task:
            remove_stale_parts(Path(task.output))
        w.task = None


def run_tasks_locally(units: list[tuple[BatchTask, ...]], on_result, stop: StopFlag, workers: int) -> None:
    """Run ``units`` on ``workers`` local processes; call ``on_result(result)`` in this process.

    Parameters
    ----------
    units : list of tuple of BatchTask
        Units of work (``batch_plan.group_tasks``), in the order they should start.
    on_result : callable
        Called with each result dict (see ``realtime.run.batch.run_task``) as it arrives.
    stop : StopFlag
        Level 1: hand out nothing more and wait for the files in flight; level 2: stop those too.
    workers : int
        Number of processes.
    """
    ctx = mp.get_context("spawn")
    queue = deque(units)
    pool = [_Worker(ctx) for _ in range(max(1, workers))]
    try:
        while True:
            if stop.level == 0:
                for i, w in enumerate(pool):
                    while w.task is None and queue:
                        if not w.proc.is_alive():  # died on its last file, or idle: a fresh one takes its place
                            w.close(0.1)
                            pool[i] = w = _Worker(ctx)
                        unit = queue.popleft()
                        if not w.give(unit):
                            queue.appendleft(unit)
                            w.proc.kill()
                            w.proc.join()
            busy = [w for w in pool if w.task is not None]
            if not busy:
                return
            if stop.level >= 2:
                _abandon(busy)
                return
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=0.2))
            for w in busy:
                if w.conn in ready or w.proc.sentinel in ready:
                    result = None
                    try:
                        if w.conn.poll():
                            result = w.conn.recv()
                    except (EOFError, OSError):
                        result = None
                    if result is not None:
                        w.task = None
                        for r in result:
                            on_result(r)
                    elif not w.proc.is_alive():
                        unit, w.task = w.task, None
                        w.proc.join(1.0)
                        for task in unit:
                            remove_stale_parts(Path(task.output))
                        if stop.level > 0:  # after an interrupt it may be what ended the worker: left not started
                            continue
                        if len(unit) > 1:  # side by side, it may have died on any of them: each again alone
                            queue.extendleft((task,) for task in reversed(unit))
                        else:
                            on_result(_died(unit[0], w.proc.exitcode))
    finally:
        for w in pool:
            w.close()
