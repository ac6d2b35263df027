"""Several files side by side through one model call per hop (``BatchOptions.streams``).

For a preset whose first slot has a batched form (``batch_plan.batchable``: the enhancer or the
de-limiter for audio files, the synth for MIDI files), a worker runs a group of files in lockstep:
each file keeps everything ``process_file`` (or ``render_midi``) gives it — its reader, its
streaming resamplers, its re-blocking, its own copy of the rest of the chain, latency dropped, an
atomic output; a MIDI file its events at their offsets and its length — while the first slot runs
as one batched processor with the group's files as its streams (each with its own model state).
Every step reads one chain block per file, runs the batched processor once for all (in parts where
a song's MIDI would overflow a queue, as ``ChainRunner`` runs it), then each file's rest of the
chain, and writes. A file that ends early feeds silence to its stream until the group is done; a
file that fails is discarded alone. The outputs equal ``process_file``'s and ``render_midi``'s (the
tests compare them).
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.io.dither import open_output
from realtime.io.files import AtomicFile, sf_path
from realtime.run.batch_plan import BatchTask, finished_status, output_stat

GROUP_CACHE_SIZE = 2  # groups of chains kept per worker (each: one batched processor + a rest chain per stream)
_GROUPS: dict[tuple, tuple] = {}


def batched_processor(kind: str, streams: int, params: dict):
    """The batched form of processor ``kind`` (a key of ``batch_plan.BATCHED_KINDS``) for ``streams`` streams."""
    if kind == "enhancer":
        from realtime.dsp.processors.neural.batched import BatchedEnhancer as cls
    elif kind == "delimiter":
        from realtime.dsp.processors.neural.batched_delimiter import BatchedDelimiter as cls
    elif kind == "synth":
        from realtime.dsp.processors.synth.batched import BatchedSynth as cls
    else:
        raise ValueError(f"{kind}: no batched form")
    return cls(streams, **params)


def _group_chains(task: BatchTask, streams: int, channels: int):
    """(batched first processor, [rest of the chain per stream]) for ``task``'s preset, built once per worker."""
    key = (task.preset_hash, streams, channels)
    chains = _GROUPS.pop(key, None)
    if chains is None:
        from realtime.dsp.presets import build_chain

        while len(_GROUPS) >= GROUP_CACHE_SIZE:
            _GROUPS.pop(next(iter(_GROUPS)))
        first, rest = task.preset["chain"][0], {**task.preset, "chain": task.preset["chain"][1:]}
        chains = batched_processor(first["processor"], streams, first["params"]), \
            [build_chain(rest) for _ in range(streams)]
    _GROUPS[key] = chains
    return chains


@contextlib.contextmanager
def _writing(task: BatchTask):
    """A failed write of ``task``'s output (a full disk) said as ``process_file`` and ``render_midi``
    say it (``_write_failed``: "no space left on device while writing OUT"), its reason read while
    the temporary file is still there; a group's file said "LibsndfileError: System error."."""
    try:
        yield
    except (OSError, sf.LibsndfileError) as e:
        from realtime.run.offline import _write_failed

        raise _write_failed(Path(task.output), e) from None


class _FileStream:
    """One file of a group: ``process_file``'s reading, resampling, re-blocking and writing, turned
    inside out so that a driver hands out its blocks and takes them back processed."""

    def __init__(self, task: BatchTask, latency: int, blocksize: int, rest=None):
        import soxr

        from realtime.run.audio_input import open_input
        from realtime.run.offline import (
            OutputWriter,
            Reblocker,
            _write_failed,
            check_destination,
            copy_tags,
            final_safety,
            flush_frames,
            output_format,
            sized_format,
        )

        self.task, self.blocksize, self.rest = task, blocksize, rest  # rest: the chain after the batched slot
        self.junk = _JunkCount(task.input, rest)
        in_p, out_p = Path(task.input), Path(task.output)
        self.src, self.cut = open_input(in_p)  # a cut WAV's or Ogg's length is what is there, as process_file
        try:
            check_destination(out_p, in_p)
            fmt, subtype = output_format(out_p, self.src.subtype, self.src.samplerate, bits=task.bits)
            # as process_file: a WAV past 4 GiB is RF64 from the start, not refused after all the work
            tail = round(task.tail_s * self.src.samplerate)
            fmt = sized_format(out_p, fmt, subtype, self.src.frames + tail, self.src.channels)
            self.format = (fmt, subtype)  # (the tags that libsndfile does not copy: ``finish``)
        except BaseException:
            self.src.close()
            raise
        ch, self.in_sr, self.length = self.src.channels, self.src.samplerate, self.src.frames
        sr = task.samplerate
        resample = self.in_sr != sr
        self.flush = flush_frames(latency, task.tail_s, sr, resample)  # chain-rate silence after the input
        self.rs_in = soxr.ResampleStream(self.in_sr, sr, ch, dtype="float32", quality="HQ") if resample else None
        self.rs_out = soxr.ResampleStream(sr, self.in_sr, ch, dtype="float32", quality="HQ") if resample else None
        self.fifo = Reblocker(blocksize, ch)
        self.eof = False
        self.frames_read = 0
        self.nonfinite = 0
        self.out = AtomicFile(out_p)
        try:
            self.dst = open_output(sf_path(self.out.tmp), self.in_sr, ch, fmt, subtype, name=out_p)
        except BaseException as e:
            self.out.discard()
            self.src.close()
            if isinstance(e, sf.LibsndfileError):  # named by the output, as process_file says it, not the .part file
                raise _write_failed(out_p, e) from None
            raise
        from realtime.io.tags import will_carry

        copy_tags(self.src, self.dst, warn=not will_carry(task.input, *self.format))
        self.writer = OutputWriter(self.dst, self.rs_out, self.length, skip=latency, tail=tail,
                                   safety=final_safety(rest))

    def next_block(self, block: np.ndarray) -> bool:
        """Fill ``block`` with the next chain block; False when the file (and its flush) is done."""
        from realtime.run.audio_input import read_input, scrub_input
        from realtime.run.offline import READ_FRAMES

        ch = self.src.channels
        while self.fifo.fill < self.blocksize and not self.eof:
            x = read_input(self.src, READ_FRAMES)
            if x.shape[0]:
                self.frames_read += x.shape[0]
                self.nonfinite += scrub_input(x)  # zeroed before the resampler, which spreads a NaN
                self.fifo.add(self.rs_in.resample_chunk(x) if self.rs_in is not None else x)
                continue
            self.eof = True  # as process_file: the resampler's tail, then silence to push the latency out
            if self.rs_in is not None:
                self.fifo.add(self.rs_in.resample_chunk(np.zeros((0, ch), np.float32), last=True))
            self.fifo.add(np.zeros((self.fifo.flush_padding(self.flush), ch), np.float32))
        return self.fifo.take(block)

    def span(self, a: int, frames: int) -> int:
        return frames  # no MIDI: a block runs whole

    def send_part(self, a: int, frames: int) -> None:
        pass

    def write(self, y: np.ndarray) -> None:
        """Take one processed block: drop the latency, resample back, write up to the input's length."""
        with _writing(self.task):
            self.writer.write(y)

    def report(self) -> dict:
        """What the file's result records (as ``run_task``'s for ``process_file``)."""
        from realtime.run.audio_input import warn_nonfinite, warn_short
        from realtime.run.offline import clipped_samples, warn_clipped

        short = warn_short(self.task.input, self.frames_read, self.length)  # the undecodable end: silence
        warn_nonfinite(self.task.input, self.nonfinite)
        clipped = clipped_samples(self.rest) if self.rest is not None else 0  # the batched first slot has no safety
        warn_clipped(self.task.input, clipped)
        return {"audio_s": self.writer.total / self.in_sr, "nonfinite_input_samples": self.nonfinite,
                "frames_read": self.frames_read, "truncated": self.cut or short, "clipped_samples": clipped,
                "plugin_junk_samples": self.junk.said()}

    def finish(self) -> None:
        """The resampler's tail, silence for rounding, then the output appears (atomically)."""
        from realtime.io.files import end_opus
        from realtime.io.tags import carry_tags
        from realtime.run.offline import check_written, warn_tags

        with _writing(self.task):
            self.writer.finish()
            self.dst.close()
            frames = end_opus(self.out.tmp, self.dst, self.writer.total)
            warn_tags(self.task.input, carry_tags(self.task.input, sf_path(self.out.tmp), *self.format))
        self.src.close()
        check_written(self.out.tmp, Path(self.task.output), frames)
        self.out.commit()

    def abandon(self) -> None:
        for f in (self.dst, self.src):
            try:
                f.close()
            except Exception:
                pass
        self.out.discard()


class _MidiStream:
    """One MIDI file of a group: ``render_midi``'s events, length and output, block by block.

    ``send`` takes each event at its offset (the batched synth's stream and the file's rest chain);
    ``queue``: the fewest messages those queue for one block (``_midi_queue``; None: no limit)."""

    def __init__(self, task: BatchTask, blocksize: int, send, latency: int = 0, dropped=lambda: 0, rest=None,
                 queue: int | None = None):
        from realtime.run.offline import (
            MIDI_TAIL_MAX_S,
            EventCursor,
            RenderWriter,
            _write_failed,
            open_render,
            plan_render,
        )

        self.task, self.blocksize, self.send, self.queue = task, blocksize, send, queue
        self.dropped, self.dropped0 = dropped, dropped()  # this song's full-queue drops (the counters outlive it)
        self.junk = _JunkCount(task.input, rest)
        out_p = Path(task.output)
        events, length, _, self.truncated, released = plan_render(task.input, out_p, task.samplerate, task.bits)
        self.messages = events  # for what ``finish`` says of a file nothing of which sounds
        self.events = EventCursor(events, released, dropped)  # the releases at its end: not the file's drops
        self.pos = self.start = 0  # chain frames: the next block's start, the current one's
        self.out = AtomicFile(out_p)
        try:  # its longest (RenderWriter's limit) decides RF64 for a WAV past 4 GiB, as render_midi
            self.dst = open_render(self.out.tmp, out_p, task.samplerate,
                                   length + round(MIDI_TAIL_MAX_S * task.samplerate), task.bits)
        except BaseException as e:
            self.out.discard()
            if isinstance(e, sf.LibsndfileError):  # named by the output, as render_midi says it, not the .part file
                raise _write_failed(out_p, e) from None
            raise
        # the chain's latency dropped from the start and the end where the sound has died away, as render_midi
        self.writer = RenderWriter(self.dst, length, task.samplerate, skip=latency)

    def handle_midi(self, status: int, data1: int, data2: int, offset: int) -> None:
        self.send(status, data1, data2, offset)

    def next_block(self, block: np.ndarray) -> bool:
        """Silence for the synth to add to (its events go in by ``send_part``); False when the song is done."""
        if self.writer.done:
            return False
        block.fill(0.0)
        self.start = self.pos
        self.pos += self.blocksize
        return True

    def span(self, a: int, frames: int) -> int:
        """How many of the block's ``frames`` from frame ``a`` one ``send_part`` may cover without
        overflowing a queue (``EventCursor.span``, as ``ChainRunner`` splits a block)."""
        return frames if self.queue is None else self.events.span(self.start + a, frames, self.queue)

    def send_part(self, a: int, frames: int) -> None:
        """The events of the block's ``frames`` from frame ``a``, at their offsets in that part."""
        self.events.send(self, self.start + a, frames)

    def report(self) -> dict:
        return {"audio_s": self.writer.written / self.task.samplerate, "truncated": self.truncated,
                "dropped_midi_events": self.dropped() - self.dropped0 - self.events.release_drops,
                "plugin_junk_samples": self.junk.said()}

    def write(self, y: np.ndarray) -> None:
        with _writing(self.task):
            self.writer.write(y)

    def finish(self) -> None:
        from realtime.io.files import end_opus
        from realtime.run.offline import check_written, warn_unplayed

        with _writing(self.task):
            self.writer.finish()
            self.dst.close()
            frames = end_opus(self.out.tmp, self.dst, self.writer.written)
        check_written(self.out.tmp, Path(self.task.output), frames)  # as render_midi: Ogg on a full disk
        self.out.commit()
        warn_unplayed(self.task.input, self.messages, self.task.output, self.writer.written / self.task.samplerate,
                      _leaves_drums(self.task.preset))

    def abandon(self) -> None:
        try:
            self.dst.close()
        except Exception:
            pass
        self.out.discard()


def _leaves_drums(preset: dict) -> bool:
    """Whether channel 10 goes unplayed through ``preset`` (a group's: the synth alone takes MIDI):
    its synth's Channel 10 knob is off."""
    from realtime.dsp.processors import processor_class

    synths = [s for s in preset["chain"] if s["processor"] == "synth"]
    if not synths:
        return False
    knob = next(d for d in processor_class("synth").params if d.id == "channel10")
    return all(float(knob.validate(s["params"].get("channel10", knob.default))) == 0.0 for s in synths)


def run_group(tasks: tuple[BatchTask, ...], new_result, fail) -> list[dict]:
    """Process files with a batchable preset side by side (see the module docstring).

    Parameters
    ----------
    tasks : tuple of BatchTask
        Same preset, same channel count (``batch_plan.group_tasks``).
    new_result : callable
        ``new_result(task) -> dict``: a result record, input stat and hash filled in (may raise).
    fail : callable
        ``fail(result, exc)``: record an exception as the file's error.

    Returns
    -------
    list of dict
        One result per task, in order.
    """
    t0 = time.perf_counter()
    results, streams = [], []
    for task in tasks:
        try:
            r = new_result(task)
        except Exception as e:
            r = {"input": task.input, "output": task.output, "kind": task.kind, "status": "failed", "error": None,
                 "audio_s": task.audio_s, "preset_hash": task.preset_hash, "pid": os.getpid()}
            fail(r, e)
        results.append(r)
    live = [i for i, r in enumerate(results) if r["error"] is None]
    if live:
        first = tasks[live[0]]
        midi = first.kind == "midi"
        ch = 2 if midi else first.channels
        t_chain = time.perf_counter()
        B, sr = first.blocksize, first.samplerate
        try:
            batched, rests = _group_chains(first, len(live), ch)
            from realtime.run.offline import fit_block

            B = fit_block(B, batched, *rests)
            batched.prepare(sr, B, ch)
            for rest in rests:
                rest.prepare(sr, B, ch)
        except Exception as e:  # a missing or broken model: each file's error, in the line process says (it killed
            for i in live:  # the worker with a traceback, every file "worker process died")
                fail(results[i], e)
            batched, rests, live = None, [], []
        for r in results:
            r["chain_s"] = time.perf_counter() - t_chain
        latency = int(batched.latency + rests[0].latency) if live else 0
        opened = []
        for k, i in enumerate(live):
            try:
                streams.append(_MidiStream(tasks[i], B, _midi_sender(batched, k, rests[k]), latency,
                                           _song_drops(batched, k, rests[k]), rest=rests[k],
                                           queue=_midi_queue(batched, k, rests[k])) if midi
                               else _FileStream(tasks[i], latency, B, rest=rests[k]))
                opened.append((k, i))
            except Exception as e:
                fail(results[i], e)
        try:
            _lockstep(batched, rests, streams, opened, results, fail, B, ch)
        except BaseException:
            for s in streams:
                s.abandon()
            raise
    wall, finished = time.perf_counter() - t0, time.time()
    for r in results:
        r["wall_s"] = wall / len(tasks)  # the group's time, shared
        r["finished"] = finished  # the same for the group: it is one unit of work
        r["streams"] = len(tasks)
    return results


class _JunkCount:
    """A file's hosted plugins' junk silenced in its rest chain, counted from now and said once done
    (``warn_junk``, as ``process_file`` says it)."""

    def __init__(self, what, rest):
        from realtime.run.offline import junk_samples

        self.what, self.rest = what, rest
        self.before = junk_samples(rest) if rest is not None else {}

    def said(self) -> int:
        from realtime.run.offline import warn_junk

        return warn_junk(self.what, self.rest, self.before) if self.rest is not None else 0


def _song_drops(batched, k: int, rest):
    """Song ``k``'s MIDI messages dropped so far: its own synth's and its rest chain's."""
    from realtime.dsp.processor import dropped_midi_events

    def count() -> int:
        songs = getattr(batched, "songs", ())
        own = int(getattr(songs[k], "dropped_events", 0)) if k < len(songs) else 0
        return own + dropped_midi_events(rest)
    return count


def _midi_queue(batched, k: int, rest) -> int | None:
    """The fewest MIDI messages song ``k``'s processors queue for one block: its stream of the
    batched synth's and its rest chain's (``ChainRunner.midi_queue``); None when none takes MIDI."""
    from realtime.run.offline import ChainRunner

    songs = getattr(batched, "songs", ())
    return ChainRunner.midi_queue(rest, *songs[k:k + 1])


def _midi_sender(batched, k: int, rest):
    """Where song ``k``'s events go: its stream of the batched synth, then its rest chain (as
    ``Chain.handle_midi`` passes them to every processor that takes MIDI)."""
    def send(status: int, data1: int, data2: int, offset: int) -> None:
        batched.stream_midi(k, status, data1, data2, offset)
        rest.handle_midi(status, data1, data2, offset)
    return send


def _lockstep(batched, rests, streams, opened, results, fail, B: int, ch: int) -> None:
    """Run the group's streams block by block until every file is done (or failed, alone). A block
    whose MIDI would overflow a song's queue runs in parts, every stream alike (``ChainRunner``'s
    rule): a dense song at a large block size renders as ``render_midi`` renders it."""
    n = len(rests)
    block = np.zeros((B, n * ch), np.float32)
    ys = np.zeros((n, B, ch), np.float32)  # each stream's block through its rest chain
    active = {k: s for (k, _), s in zip(opened, streams)}
    index = {k: i for k, i in opened}

    def drop(k: int, e: Exception) -> None:
        active.pop(k).abandon()
        fail(results[index[k]], e)

    while active:
        block.fill(0.0)  # streams without a file (failed, finished) run on silence
        for k, s in list(active.items()):
            try:
                if s.next_block(ys[k]):
                    block[:, k * ch:(k + 1) * ch] = ys[k]
                    continue
                s.finish()
                report = s.report()
                results[index[k]].update(report)
                results[index[k]].update(output_stat(s.task.output))
                results[index[k]]["status"] = finished_status(report)
            except Exception as e:
                s.abandon()
                fail(results[index[k]], e)
            del active[k]
        if not active:
            break
        a = 0
        while a < B:
            m = min((s.span(a, B - a) for s in active.values()), default=B - a)
            for k, s in list(active.items()):
                try:
                    s.send_part(a, m)
                except Exception as e:
                    drop(k, e)
            batched.process(block[a:a + m])
            for k in list(active):
                try:
                    ys[k, a:a + m] = block[a:a + m, k * ch:(k + 1) * ch]
                    rests[k].process(ys[k, a:a + m])
                except Exception as e:
                    drop(k, e)
            a += m
        for k, s in list(active.items()):
            try:
                s.write(ys[k])
            except Exception as e:
                drop(k, e)
