"""Batch throughput: audio seconds per wall second for `voice`, `delimit` and the synth, per worker count.

    python main.py bench batch [--files 8] [--seconds 10] [--workers 1,2] [--what voice,voice-streams,...]
                               [--streams-n 1,8,32] [--streams-of enhancer,delimiter,synth] --json

Generated inputs (tones in noise; MIDI phrases for the synth) go through ``run_batch`` with the local
process pool, once per worker count. Two figures per run: ``x_realtime`` end to end (worker start-up
and model loading included, what a user waits for) and ``x_realtime_steady`` (audio over the busiest
worker's time on files, each worker's first file left out: what a long batch approaches).
``scaling_efficiency`` is the steady throughput with N workers over N times that with one.
``voice-streams``, ``delimit-streams`` and ``synth-streams`` are those with 8 files side by side per
worker (one model call for all; four times the files, so that each worker has groups beyond its first).
Then each batched processor alone (``--streams-of``: enhancer, delimiter, synth; rows
``batched-<kind>``): N streams through one model call per hop (``--streams-n``), in audio seconds per
wall second over all streams, on one thread.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.common import emit
from realtime.argtypes import OneLineParser, comma_list, positive

WORKLOADS = {  # name -> (preset, input kind, rate, channels, files side by side per worker)
    "voice": ("voice", "audio", 48000, 1, 1),
    "voice-streams": ("voice", "audio", 48000, 1, 8),
    "delimit": ("delimit", "audio", 44100, 2, 1),
    "delimit-streams": ("delimit", "audio", 44100, 2, 8),
    "synth": ("synth", "midi", 48000, 2, 1),
    "synth-streams": ("synth", "midi", 48000, 2, 8),
}


def get_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="bench batch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=positive(int, most=10000), default=8, help="files per workload")
    ap.add_argument("--seconds", type=positive(most=3600), default=10.0, help="length of each file (at most an hour)")
    ap.add_argument("--workers", type=comma_list(positive(int)), default="1,2",
                    help="worker counts to compare, comma-separated")
    ap.add_argument("--what", type=comma_list(choices=WORKLOADS, empty=True), default=",".join(WORKLOADS),
                    help="workloads, comma-separated ('' for none)")
    ap.add_argument("--streams-n", type=comma_list(positive(int), empty=True), default="1,8,32",
                    help="batched processors: stream counts ('' to skip)")
    ap.add_argument("--streams-of", type=comma_list(choices=STREAM_RUNS, empty=True), default=",".join(STREAM_RUNS),
                    help="batched processors, comma-separated")
    ap.add_argument("--json", action="store_true")
    return ap


def _phrase(i: int, seconds: float):
    """MIDI file ``i``'s phrase: a note per beat at 120 bpm, each held a beat."""
    import mido

    mf = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: a beat is 0.5 s
    tr = mido.MidiTrack()
    mf.tracks.append(tr)
    for k in range(max(1, int(seconds / 0.5))):
        note = 60 + (i * 3 + k * 5) % 19
        tr.append(mido.Message("note_on", note=note, velocity=90, time=0))
        tr.append(mido.Message("note_off", note=note, velocity=0, time=480))
    return mf


def _make_inputs(folder: Path, kind: str, sr: int, ch: int, files: int, seconds: float) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(files):
        if kind == "midi":
            _phrase(i, seconds).save(str(folder / f"f{i}.mid"))
        else:
            t = np.arange(int(sr * seconds)) / sr
            tone = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            x = tone[:, None] + 0.05 * rng.standard_normal((len(t), ch))
            sf.write(folder / f"f{i}.wav", x.astype(np.float32), sr, subtype="PCM_16")


def _steady(log: Path) -> float:
    """Audio seconds per second of the busiest worker, each worker's first file left out (it loads the
    models and warms the chain up); from the resume log's per-file records. NaN (null in the JSON)
    when a worker ran one unit only: counted whole, its model loading made two workers look 20x
    slower than one (a scaling efficiency of 0.05); give more --files per worker."""
    per_pid: dict = {}
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        per_pid.setdefault(rec["pid"], {}).setdefault(rec["finished"], []).append(rec)  # a unit: same finish
    audio, busiest = 0.0, 0.0
    for units in per_pid.values():
        ordered = [units[k] for k in sorted(units)]
        if len(ordered) < 2:  # nothing but the cold first file to time
            return float("nan")
        rest = [r for unit in ordered[1:] for r in unit]
        audio += sum(r["audio_s"] for r in rest)
        busiest = max(busiest, sum(r["wall_s"] for r in rest))
    return audio / busiest if busiest else float("nan")


def _enhancer_streams(n: int, seconds: float) -> tuple[float, float]:
    """N mono streams at 48 kHz, 512-frame blocks: (wall seconds, audio seconds per stream)."""
    from realtime.dsp.processors.neural.batched import BatchedEnhancer

    return _time_streams(BatchedEnhancer(n), 48000, 512, 1, n, seconds)


def _delimiter_streams(n: int, seconds: float) -> tuple[float, float]:
    """N stereo streams at 44.1 kHz, 512-frame blocks: (wall seconds, audio seconds per stream)."""
    from realtime.dsp.processors.neural.batched_delimiter import BatchedDelimiter

    return _time_streams(BatchedDelimiter(n), 44100, 512, 2, n, seconds)


def _time_streams(proc, sr: int, block: int, ch: int, n: int, seconds: float) -> tuple[float, float]:
    """(wall seconds, audio seconds per stream processed: whole blocks only)."""
    import time

    proc.prepare(sr, block, ch)
    x = (0.1 * np.random.default_rng(0).standard_normal((int(sr * seconds), n * ch))).astype(np.float32)
    starts = range(0, x.shape[0] - block + 1, block)
    proc.process(x[:block].copy())  # untimed: the first call's one-off costs (a session's first run)
    proc.reset()
    t0 = time.perf_counter()
    for i in starts:
        proc.process(x[i:i + block])
    return time.perf_counter() - t0, len(starts) * block / sr


def _synth_streams(n: int, seconds: float) -> tuple[float, float]:
    """N songs (the MIDI phrases of the ``synth`` workload) at 48 kHz, 128-frame blocks: (wall seconds,
    audio seconds per stream)."""
    import tempfile
    import time

    from realtime.dsp.processors.synth.batched import BatchedSynth
    from realtime.run.midi_file import midi_file_events
    from realtime.run.offline import EventCursor

    sr, block = 48000, 128
    cursors = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            _phrase(i, seconds).save(f"{tmp}/{i}.mid")
            cursors.append(EventCursor(midi_file_events(f"{tmp}/{i}.mid", sr)))
    synth = BatchedSynth(n)
    synth.prepare(sr, block, 2)

    class Song:  # a cursor's target: one stream of the batched synth
        def __init__(self, k):
            self.k = k

        def handle_midi(self, *msg):
            synth.stream_midi(self.k, *msg)

    songs = [Song(k) for k in range(n)]
    y = np.zeros((block, 2 * n), np.float32)
    starts = range(0, int(sr * seconds) - block + 1, block)
    synth.process(y)  # untimed: the first call's one-off costs (Numba's compiles: seconds)
    synth.reset()
    t0 = time.perf_counter()
    for pos in starts:
        for c, song in zip(cursors, songs):
            c.send(song, pos, block)
        y.fill(0.0)
        synth.process(y)
    return time.perf_counter() - t0, len(starts) * block / sr


STREAM_RUNS = {"enhancer": _enhancer_streams, "delimiter": _delimiter_streams, "synth": _synth_streams}


def _streams(kinds: list[str], counts: list[int], seconds: float, as_json: bool) -> None:
    """Each batched processor alone: N streams through one model call per hop, on one thread."""
    for kind in kinds:
        for n in counts:
            wall, done = STREAM_RUNS[kind](n, seconds)
            if not done:  # no whole block: a throughput of audio never processed
                raise SystemExit(f"bench batch: --seconds {seconds:g} is shorter than one block of the batched "
                                 f"{kind}; give at least 0.05")
            emit({"bench": "batch", "workload": f"batched-{kind}", "streams": n, "audio_s": n * done,
                  "wall_s": wall, "x_realtime": n * done / wall, "x_realtime_per_stream": done / wall}, as_json)


def main(argv=None) -> int:
    ap = get_parser()
    a = ap.parse_args(argv)
    if not a.what and not (a.streams_n and a.streams_of):
        ap.error("nothing to run: --what and --streams-n / --streams-of are all empty")
    from realtime.errors import signals_deferred
    from realtime.run.batch import BatchOptions, run_batch

    tmp = tempfile.mkdtemp(prefix="bench-batch-")
    try:
        for name in a.what:
            preset, kind, sr, ch, streams = WORKLOADS[name]
            src = Path(tmp) / name / "in"
            # side by side, a worker's first group (models loaded, warm-up) is left out: give it more
            files = a.files * (4 if streams > 1 else 1)
            _make_inputs(src, kind, sr, ch, files, a.seconds)
            options = BatchOptions(preset=preset, midi_preset=preset, force=True, streams=streams)
            steady_by_jobs = {}
            for jobs in a.workers:
                out = Path(tmp) / name / f"out{jobs}"
                s = run_batch([src], out, options, jobs=jobs, progress=False)
                if s["interrupted"]:  # run_batch took the Ctrl-C / SIGTERM: its figures are of a cut-short pass
                    from realtime.errors import Interrupted

                    raise Interrupted(s["signal"]) if s["signal"] not in (None, "SIGINT") else KeyboardInterrupt()
                if s["stopped"]:  # (its resume log could not be written) figures of a cut-short pass
                    from realtime.errors import OfflineError

                    raise OfflineError(f"batch stopped: {s['stopped']}")
                steady = _steady(Path(s["log"]))
                steady_by_jobs[jobs] = steady
                emit({"bench": "batch", "workload": name, "workers": jobs, "streams": streams, "files": s["processed"],
                      "failed": s["failed"], "audio_s": s["audio_s"], "wall_s": s["wall_s"],
                      "x_realtime": s["audio_s_per_s"], "x_realtime_steady": steady,
                      "files_per_hour": 3600 * s["files_per_s"]}, a.json)
            base = steady_by_jobs.get(1)
            for jobs, steady in steady_by_jobs.items():
                if base and jobs > 1 and steady == steady:  # (NaN: no steady figure to compare)
                    emit({"bench": "batch", "workload": name, "workers": jobs,
                          "scaling_efficiency": steady / (jobs * base)}, a.json)
    finally:
        with signals_deferred():  # removed to the end, even when Ctrl-C comes again meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    if a.streams_n and a.streams_of:
        _streams(a.streams_of, a.streams_n, a.seconds, a.json)
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
