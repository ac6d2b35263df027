"""Batch processing: whole folders through the same chain code as ``main.py process``.

    plan_batch(inputs, out_dir, options)  -> BatchTask per input (files, folders, CSV/JSONL manifests)
    run_batch(inputs, out_dir, options)   -> a JSON-able summary; processes with a local pool or Ray

Each task names its input, output and resolved preset; a worker (``run_task``) builds the chain once
per preset and reuses it for every file that shares it (``Chain.prepare`` resets all state), runs
audio through ``process_file`` and MIDI through ``render_midi``, and returns a result instead of
raising: one bad file never stops the batch. The parent alone writes the resume log
(``OUT/.batch-manifest.jsonl``, one JSON line per finished output: input hash, preset hash, audio
duration, status), so a re-run skips every output that is as it was written, of its input as it was
and the same preset (a truncated input's "partial" output too, until the input changes). Outputs go through
the one atomic writer, so an interrupted file never appears.

With a preset that starts with the enhancer or the de-limiter (audio files) or the synth (MIDI
files), a worker takes groups of files and runs them side by side through one model call per hop
(``realtime.run.batch_streams``; same outputs).

Planning and the resume log live in ``realtime.run.batch_plan``; the local backend
(``realtime.run.batch_pool``) never imports Ray; ``ray_address`` selects ``realtime.run.ray_batch``.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

from realtime.errors import InputAccessError, OfflineError, interrupt_signals, os_reason
from realtime.io.files import is_terminal, remove_stale_parts
from realtime.run.batch_plan import (
    LOG_NAME,
    BatchOptions,
    BatchTask,
    ResumeLog,
    check_out_dir,
    finished_status,
    group_tasks,
    output_stat,
    plan_batch,
)

CHAIN_CACHE_SIZE = 2  # chains kept per worker: memory stays constant whatever the number of presets

# Libraries that would start a thread pool per worker: one thread each, the pool gives the parallelism.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------ the worker

_CHAINS: dict[str, tuple] = {}  # preset hash -> (chain, knob values as built), in this worker (most recent last)


def _chain_for(task: BatchTask):
    """The worker's chain for the task's preset, its knobs back at the preset's values: a MIDI file
    moves knobs (controllers, program changes), and the next file must start where ``process`` would."""
    from realtime.dsp.presets import build_chain

    entry = _CHAINS.pop(task.preset_hash, None)
    if entry is None:
        while len(_CHAINS) >= CHAIN_CACHE_SIZE:
            _CHAINS.pop(next(iter(_CHAINS)))
        chain = build_chain(task.preset)
        entry = (chain, [s.processor.values.copy() for s in chain.slots])
    else:
        for slot, values in zip(entry[0].slots, entry[1]):
            slot.processor.values[:] = values
    _CHAINS[task.preset_hash] = entry
    return entry[0]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def clock(seconds: float) -> str:
    """``seconds`` as H:MM:SS, the hours counted on past a day (a 100-hour batch is not 4 hours away)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _input_fault(result: dict) -> bool:
    """Whether a failed file's input is itself what fails: read again with the runner's own checks
    (unreadable, no frames, a channel count or a MIDI length it refuses). Asked of the input rather
    than of the error, which for a full disk, a folder in the way or a missing model names the
    output or the model: those are fixed without touching the input, and a re-run must retry them."""
    from realtime.run.audio_input import open_input
    from realtime.run.midi_file import midi_file_song
    from realtime.run.offline import DEFAULT_RATE, MAX_RENDER_S

    path = result["input"]
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError:
        return False  # not readable at all (permissions, a lost mount): the environment's, not the content's
    from realtime.io.native_stderr import capture_stderr

    try:  # its warnings were printed by the run itself (libmpg123's notes on a broken MP3 too)
        with contextlib.redirect_stderr(io.StringIO()), capture_stderr():
            if result.get("kind") == "midi":
                return bool(midi_file_song(path, DEFAULT_RATE)[1] > MAX_RENDER_S * DEFAULT_RATE)  # plan_render's refusal (a broken delta time)
            open_input(path)[0].close()
    except InputAccessError:  # (no file descriptor left): the machine's
        return False
    except OfflineError:
        return True
    return False


def _record_error(result: dict, e: BaseException) -> None:
    from realtime.errors import user_message

    # the same line the command line prints; anything else (a bug, a library's error) names its type
    msg = user_message(e)
    result["error"] = msg if msg is not None else f"{type(e).__name__}: {e}"
    result["status"] = "failed"
    result["input_fault"] = _input_fault(result)  # only these would fail again: the resume log skips them


def _start(task: BatchTask) -> dict:
    """A failed-until-done result for ``task`` with the input's stat and hash; the output's folder
    made and any temporary file of a killed earlier attempt removed."""
    result = {"input": task.input, "output": task.output, "kind": task.kind, "status": "failed", "error": None,
              "audio_s": task.audio_s, "preset_hash": task.preset_hash, "input_sha256": None,
              "output_bytes": None, "pid": os.getpid()}
    st = os.stat(task.input)
    result["input_mtime_ns"], result["input_bytes"] = st.st_mtime_ns, st.st_size
    result["input_sha256"] = _sha256(task.input)
    out = Path(task.output)
    made = None  # the top folder this made for it: removed again, once empty, if the file fails (run_batch)
    for folder in out.parents:
        if folder.exists():
            break
        made = folder
    out.parent.mkdir(parents=True, exist_ok=True)
    result["made_folder"] = str(made) if made else None
    remove_stale_parts(out)  # all of them: the folder's lock keeps any other batch out, so they are a dead run's
    return result


def run_task(task: BatchTask) -> dict:
    """Process one file in this process, reusing its chain; never raises for the file's own errors.

    Parameters
    ----------
    task : BatchTask

    Returns
    -------
    dict
        input, output, kind, status ("ok"; "partial": the input ends before its header says,
        see ``finished_status``; or "failed"), error (None or one line), input_fault (failed:
        whether the input itself is what failed, see ``_input_fault``), audio_s, wall_s,
        input_sha256, input_mtime_ns, input_bytes, preset_hash, output_bytes, output_mtime_ns (the
        resume log's check that the output is still the one written), pid, chain_s (time to build
        the chain, 0 when reused), finished (UNIX time); audio files also frames_read, truncated,
        clipped_samples and nonfinite_input_samples (``process_file``'s), MIDI files dropped_midi_events.
    """
    t0 = time.perf_counter()
    result = {"input": task.input, "output": task.output, "kind": task.kind, "status": "failed", "error": None,
              "audio_s": task.audio_s, "preset_hash": task.preset_hash, "input_sha256": None,
              "output_bytes": None, "pid": os.getpid()}
    try:
        result = _start(task)
        out = Path(task.output)
        t_chain = time.perf_counter()
        chain = _chain_for(task)
        result["chain_s"] = time.perf_counter() - t_chain  # models loaded: 0 when the worker had it
        if task.kind == "midi":
            from realtime.run.offline import render_midi

            report = render_midi(task.input, out, chain, task.samplerate, task.blocksize, bits=task.bits)
            result["audio_s"] = report["seconds"]
            result["dropped_midi_events"] = report["dropped_midi_events"]
            result["plugin_junk_samples"] = report["plugin_junk_samples"]
        else:
            from realtime.run.offline import process_file

            report = process_file(task.input, out, chain, samplerate=task.samplerate, blocksize=task.blocksize,
                                  progress=False, tail_s=task.tail_s, bits=task.bits)
            result["audio_s"] = report["frames"] / report["samplerate"]
            result.update({k: report[k] for k in ("frames_read", "truncated", "clipped_samples", "plugin_junk_samples",
                                                  "nonfinite_input_samples")})
        result.update(output_stat(out))
        result["status"] = finished_status(report)
    except Exception as e:
        _record_error(result, e)
    result["wall_s"] = time.perf_counter() - t0
    result["finished"] = time.time()
    return result


def run_unit(unit: tuple[BatchTask, ...]) -> list[dict]:
    """Process a unit of work (``batch_plan.group_tasks``): one file, or a group side by side.

    Returns
    -------
    list of dict
        One result per task (see ``run_task``), in order.
    """
    if len(unit) == 1:
        return [run_task(unit[0])]
    from realtime.run.batch_streams import run_group

    return run_group(unit, _start, _record_error)


# ------------------------------------------------------------------------------------------ the driver

class StopFlag:
    """Ctrl-C / SIGTERM (SIGHUP, SIGQUIT) as levels: 0 run, 1 finish the files in flight and stop, 2 abandon them."""

    def __init__(self, stream=None):
        self.level = 0
        self.signals = 0  # Ctrl-C / SIGTERM taken: the first finishes the files in flight, the second abandons them
        self.stream = stream
        self.signal: str | None = None  # the first signal's name: the exit status says which (130 / 143)
        self.halted: str | None = None  # why the batch stopped itself (``halt``), not a signal

    def halt(self, why: str) -> None:
        """Finish the files in flight and start no more, for ``why`` (said once, on the stream)."""
        if self.halted is None:
            self.halted = why
            self.level = max(self.level, 1)
            self._say(f"\nbatch: {why}; finishing the files in progress\n")

    def escalate(self, signum=None, frame=None):
        if self.signal is None and signum is not None:
            self.signal = signal.Signals(signum).name
        self.signals += 1
        self.level = max(self.level, min(self.signals, 2))  # (a halt's level 1 is not a first Ctrl-C)
        self._say("\nbatch: finishing the files in progress (again to abandon them)\n" if self.level == 1
                  else "\nbatch: abandoning the files in progress (nothing half-written is kept)\n")

    def _say(self, text: str) -> None:
        # a terminal hung up (an SSH session dropped: SIGHUP) fails the write with EIO; raised in the
        # signal handler it tore the pool down and threw away the files it is meant to finish
        self.stream = say(self.stream, text)


class Progress:
    """One line: files done, failures, files/s, audio-hours per hour and ETA (on a terminal it redraws).

    The audio rate counts the files processed, not the failed ones (often refused at once); the ETA
    is the audio left (failed files' too are done) at that rate."""

    def __init__(self, total_files: int, total_audio_s: float, stream=None, enabled: bool = True,
                 interval_s: float | None = None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and is_terminal(self.stream)
        self.interval_s = interval_s if interval_s is not None else 0.5 if self.tty else 10.0  # logs: a line a while
        self.total_files, self.total_audio_s = total_files, total_audio_s
        self.files = self.failed = 0
        self.audio_s = 0.0  # of the files processed
        self.done_audio_s = 0.0  # of every file done, failed ones too
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._drawn = -1  # files done at the last line drawn: the closing one is not drawn twice

    def update(self, result: dict) -> None:
        self.files += 1
        failed = result["status"] == "failed"
        self.failed += failed
        self.done_audio_s += result.get("audio_s") or 0.0
        if not failed:
            self.audio_s += result.get("audio_s") or 0.0
        self.draw()

    def line(self) -> str:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.audio_s / wall
        left = max(self.total_audio_s - self.done_audio_s, 0.0)
        eta = left / rate if rate > 0 else float("nan")
        eta_s = "--:--" if eta != eta else clock(eta)
        done = self.files / self.total_files if self.total_files else 1.0
        bar = ("#" * round(20 * done)).ljust(20, ".")
        return (f"[{self.files}/{self.total_files} files, {self.failed} failed] {bar} {self.files / wall:.2f} files/s, "
                f"{rate:.1f} audio-h/h, ETA {eta_s}")

    def draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < self.interval_s):
            return
        self._last, self._drawn = now, self.files
        text = ("\r\033[K" if self.tty else "") + self.line() + ("" if self.tty else "\n")
        self.enabled = say(self.stream, text) is not None  # a terminal gone (EIO): no more lines, the batch goes on

    def close(self) -> None:
        # a batch that never got going (Ray would not start, nothing to do) has no progress to show
        if self.enabled and (self.files or self._last):
            if self._drawn != self.files:
                self.draw(force=True)
            if self.tty and self.enabled:
                say(self.stream, "\n")


class WorkerStderr:
    """A worker's stderr: writes that fail (a hung-up terminal's EIO) are dropped, not raised, and on
    a terminal each line first clears the line it lands on, where the batch's progress line stands
    (a warning was glued onto its end)."""

    def __init__(self, stream):
        self.stream = stream
        self._tty = is_terminal(stream)
        self._line_start = True

    def write(self, text: str) -> int:
        if self._tty and self._line_start and text:
            text = "\r\033[K" + text
        if text:
            self._line_start = text.endswith("\n")
        try:
            return self.stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name):
        return getattr(self.stream, name)


def say(stream, text: str):
    """Write ``text`` to ``stream`` and flush; the stream, or None once it cannot be written (a hung-up
    terminal's EIO, a closed pipe): what is said there is not worth a batch's files."""
    if stream is None:
        return None
    try:
        stream.write(text)
        stream.flush()
        return stream
    except (OSError, ValueError):
        return None


def default_jobs() -> int:
    """Workers for the local pool: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _lock_out_dir(out_dir: Path):
    """The output folder's log, open and locked for this batch alone; the lock goes with the file's
    closing or this process's end, however it ends. A second batch into the folder is refused: it
    would take the first one's files in progress for a killed run's and remove them.

    Returns
    -------
    file
        Close it to release the folder.
    """
    import fcntl

    from realtime.errors import os_reason

    path = out_dir / LOG_NAME
    try:
        f = open(path, "a", encoding="utf-8")
    except OSError as e:
        raise OfflineError(f"{path}: cannot write the batch's log ({os_reason(e) or e.strerror})") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise OfflineError(f"{out_dir}: another batch is writing into this folder; wait for it to end, "
                           "or give another --out") from None
    except OSError:
        pass  # a file system without locks (some network mounts): unlocked, as before
    return f


def _remove_empty(folders: list[tuple[Path, Path]]) -> None:
    """The folders made for outputs that failed, from each one's own folder up to the top one made
    for it, where nothing else went into them (a failed file left its empty sub-folders behind)."""
    candidates = set()
    for folder, top in folders:
        if folder == top or top in folder.parents:
            candidates.update(p for p in (folder, *folder.parents) if p == top or top in p.parents)
    for folder in sorted(candidates, key=lambda p: len(p.parts), reverse=True):  # the deepest first
        try:
            folder.rmdir()
        except OSError:  # not empty: another file of the batch is in it
            pass


def run_batch(inputs, out_dir, options: BatchOptions | None = None, jobs: int | None = None,
              ray_address: str | bool | None = None, progress: bool = True, stream=None) -> dict:
    """Process every input into ``out_dir``; skip what a previous run completed.

    Parameters
    ----------
    inputs : iterable of str or Path
        See ``plan_batch``.
    out_dir : str or Path
        Output folder (created once the batch can start); also holds the resume log.
    options : BatchOptions, optional
    jobs : int, optional
        Local workers (default: one per core); with Ray, the CPUs of a node started for the batch
        (a joined cluster's CPUs are its own).
    ray_address : str, True or None
        None: the local process pool. True: Ray's default (a running cluster from ``RAY_ADDRESS`` or
        the last ``ray start`` here, else a new local node); a string: ``"auto"``, ``"local"`` (a new
        node) or ``"10.0.0.1:6379"`` (see ``ray_batch.ray_cluster``).
        Workers read inputs and write outputs by their absolute paths: on a cluster, a shared filesystem.
    progress : bool
        Draw the progress line on ``stream`` (default stderr).

    Returns
    -------
    dict
        files, processed, skipped (done before: complete, or failed and unchanged), failed (this run),
        failed_before (skipped because they failed before), truncated (this run's inputs that end
        before their header says: processed as far as they go, status "partial"), truncated_before
        (skipped: such outputs of an earlier run, their inputs unchanged), clipped (this run's files
        whose samples the safety stage clipped), plugin_junk (this run's files in which a hosted
        plugin's junk output was replaced by silence), nonfinite_inputs (this run's files whose input
        held NaN or Inf samples, played as silence), interrupted, abandoned, signal (the first
        one's name, e.g. "SIGTERM", or None), stopped (None, or why the batch stopped itself: its
        resume log could not be written, so later outputs would go unrecorded), not_started,
        audio_s, wall_s, files_per_s, audio_s_per_s (throughput: × real time, = audio-hours per hour),
        backend, workers, log, failures (list of {input, error}, this run's and earlier unchanged ones),
        dropped_midi_events (MIDI messages this run's renders dropped from full per-block queues; each
        MIDI file's own count is in its log record).

    Raises
    ------
    OfflineError, PresetError
        An empty ``out_dir``, an input folder as ``out_dir``, the inputs or presets cannot be
        planned, or another batch is writing into ``out_dir`` (nothing is processed).
    """
    options = options or BatchOptions()
    out_dir = check_out_dir(out_dir)
    if ray_address is not None and ray_address is not False:  # a cluster that does not answer fails at once
        from realtime.run.ray_batch import probe_cluster

        probe_cluster(None if ray_address is True else ray_address)
    if out_dir.exists() and not out_dir.is_dir():
        raise OfflineError(f"{out_dir}: is a file, not a folder (--out takes a folder)")
    if out_dir.is_symlink() and not out_dir.exists():  # mkdir said only "File exists"
        raise OfflineError(f"{out_dir}: a link to a folder that does not exist ({os.readlink(out_dir)})")
    t0 = time.perf_counter()
    tasks = plan_batch(inputs, out_dir, options)
    log = ResumeLog(out_dir)
    before = {} if options.force else {t.output: log.done(t) for t in tasks}
    todo = [t for t in tasks if before.get(t.output) is None]
    failed_before = [{"input": t.input, "error": log.record(t).get("error")}
                     for t in tasks if before.get(t.output) == "failed"]
    truncated_before = sum(status == "partial" for status in before.values())
    bar = Progress(len(todo), sum(t.audio_s for t in todo), stream, enabled=progress)
    stop = StopFlag(stream or sys.stderr)
    failures: list[dict] = []
    processed = dropped_midi = truncated = clipped = junk = nonfinite = 0
    audio_s = 0.0

    made_for_failed: list[tuple[Path, Path]] = []  # (a failed output's folder, the top one its worker made)

    def on_result(result: dict) -> None:
        nonlocal processed, audio_s, dropped_midi, truncated, clipped, junk, nonfinite
        made = result.pop("made_folder", None)
        # what a Ray worker said about its files (its stderr is not ours), as a local worker says it: on a
        # terminal not glued to the progress line, and a hung-up one's EIO is no reason to lose the file
        for line in result.pop("warnings", ()):
            print(line, file=WorkerStderr(sys.stderr), flush=True)
        if made and result["status"] == "failed":
            made_for_failed.append((Path(result["output"]).parent, Path(made)))
        try:
            log.append(result)
        except OSError as e:  # (a full disk) the outputs after it would go unrecorded: stop, and say so
            stop.halt(f"cannot write the resume log {log.path} ({os_reason(e) or e.strerror or e}); "
                      f"{result['output']} and the files after it are not recorded")
        processed += 1
        if result["status"] != "failed":
            audio_s += result["audio_s"] or 0.0
            dropped_midi += result.get("dropped_midi_events") or 0
            truncated += result["status"] == "partial"
            clipped += bool(result.get("clipped_samples"))
            junk += bool(result.get("plugin_junk_samples"))
            nonfinite += bool(result.get("nonfinite_input_samples"))
        else:
            failures.append({"input": result["input"], "error": result["error"]})
        bar.update(result)

    # Signals reach Python's main thread only; run elsewhere, the caller handles them.
    in_main = threading.current_thread() is threading.main_thread()
    # every signal that ends a command (SIGHUP, SIGQUIT too): the files finished after it are logged
    previous = {s: signal.getsignal(s) for s in interrupt_signals()} if in_main else {}
    for s in previous:
        if previous[s] is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(s, stop.escalate)
    use_ray = bool(todo) and ray_address is not None and ray_address is not False
    try:
        with contextlib.ExitStack() as stack:
            # the folder is locked only with work to do (nothing else is written: a finished batch's folder
            # may be read-only by now), before a cluster starts where it exists: a second batch is refused at once
            lock_now = bool(todo) and out_dir.is_dir()
            if lock_now:
                stack.enter_context(_lock_out_dir(out_dir))
            if use_ray:
                from realtime.run.ray_batch import ray_cluster, run_units_on_ray

                address = None if ray_address is True else ray_address
                workers = stack.enter_context(ray_cluster(address, jobs, sweep=log.queued_path))
            else:
                workers = jobs or default_jobs()
            units = group_tasks(todo, options.streams, workers)  # a group for every worker there is
            out_dir.mkdir(parents=True, exist_ok=True)  # only now: a batch that cannot start leaves nothing
            if todo and not lock_now:
                stack.enter_context(_lock_out_dir(out_dir))
            if todo:  # before any is written (plan_batch's check of files in --out); released when the batch ends
                try:
                    log.claim(t.output for t in todo)
                except OSError as e:
                    raise OfflineError(f"{log.queued_path}: cannot write the batch's list of outputs "
                                       f"({os_reason(e) or e.strerror})") from None
                stack.callback(log.release)
            if not todo:
                backend, workers = "none", 0
            elif use_ray:
                backend = "ray"
                run_units_on_ray(units, on_result, stop, workers)
            else:
                from realtime.run.batch_pool import run_tasks_locally

                workers = min(workers, len(units))
                backend = "local"
                run_tasks_locally(units, on_result, stop, workers)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        bar.close()
        _remove_empty(made_for_failed)  # once every worker is done: one may be about to write into it
    wall = time.perf_counter() - t0
    return {"files": len(tasks), "processed": processed, "skipped": len(tasks) - len(todo),
            "failed": len(failures), "failed_before": len(failed_before), "truncated": truncated,
            "truncated_before": truncated_before, "clipped": clipped, "plugin_junk": junk,
            "nonfinite_inputs": nonfinite,
            "interrupted": stop.signal is not None or (stop.level > 0 and stop.halted is None), "abandoned": stop.level > 1,
            "signal": stop.signal, "stopped": stop.halted,
            "not_started": len(todo) - processed, "audio_s": audio_s, "wall_s": wall, "streams": options.streams,
            "files_per_s": processed / wall, "audio_s_per_s": audio_s / wall, "backend": backend, "workers": workers,
            "log": str(log.path), "failures": failures + failed_before, "dropped_midi_events": dropped_midi}


__all__ = ["BatchOptions", "BatchTask", "WorkerStderr", "LOG_NAME", "Progress", "ResumeLog", "StopFlag", "plan_batch", "run_batch",
           "run_task", "run_unit"]
