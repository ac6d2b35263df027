"""Benchmark of the DDSP synth (prints JSON lines with --json; never asserts).

    python main.py bench synth --json [--instruments violin,flute,trumpet] [--seconds 5] [--melodies 6]
    python -m bench.synth …

- rtf (the first of ``--instruments`` only: one decoder plays every voice, the same network shape
  for each): processor wall time / audio time for 1, 8, 16 and 32 held voices (48 kHz, 128-frame
  blocks); rtf_p50 from the median block; rtf_cpu from this thread's CPU time (on a shared
  machine wall time also counts the time other processes held the core)
- note_on_latency (each instrument: its attack is its own): samples from a note-on (at many
  offsets in the block and phases of the frame grid) to the first output sample over 1e-6
  (-120 dBFS); the live engine keeps each message's offset and
  delays it by exactly one block (realtime/engine/engine.py), so the engine-level bound is that
  plus one block
- quality: on held-out melodies (data/ddsp/<inst>/test, Essen collections never used in
  training) the multi-resolution STFT distance (the training loss's formula, both signals at
  24 kHz) between the FluidSynth rendering and (a) this synth, (b) a plain baseline: the same
  oscillator bank, voices and MIDI-to-loudness mapping with a fixed 1/k spectrum and no noise.
  The baseline is scaled to the reference's RMS per melody (in its favour); the synth is
  reported both as is and RMS-matched.

The quality part imports the training recipe (``models.ddsp.data``: the held-out melodies and
their FluidSynth reference renderings). A benchmark may: it sits outside the runtime, which
never imports training code.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.common import block_frames, emit
from realtime.argtypes import OneLineParser, comma_list, positive

FFT_SIZES = (2048, 1024, 512, 256, 128, 64)


def mrstft_distance(y: np.ndarray, ref: np.ndarray) -> float:
    """Mean over FFT sizes of mean|S - R| + mean|log(S+1e-5) - log(R+1e-5)| (hann, hop n/4,
    centred frames): the same formula as models/ddsp/model.MultiResolutionSTFTLoss."""
    from numpy.lib.stride_tricks import sliding_window_view

    n = min(len(y), len(ref))
    total = 0.0
    for nfft in FFT_SIZES:
        win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nfft) / nfft)
        mags = []
        for x in (y[:n], ref[:n]):
            xp = np.pad(x.astype(np.float64), nfft // 2, mode="reflect")
            fr = sliding_window_view(xp, nfft)[:: nfft // 4]
            mags.append(np.abs(np.fft.rfft(fr * win, axis=-1)))
        s, r = mags
        total += np.abs(s - r).mean() + np.abs(np.log(s + 1e-5) - np.log(r + 1e-5)).mean()
    return total / len(FFT_SIZES)


def _synth(instrument: str, sr: int, block: int, **params):
    from realtime.dsp.processors.synth.processor import INSTRUMENTS, Synth

    s = Synth(instrument=INSTRUMENTS.index(instrument), **params)
    s.prepare(sr, block, 2)
    return s


def bench_rtf(instrument: str, sr: int, block: int, seconds: float, as_json: bool) -> None:
    for voices in (1, 8, 16, 32):
        s = _synth(instrument, sr, block, polyphony=voices)
        for v in range(voices):  # spread over the instrument's range
            s.handle_midi(0x90, 48 + (v * 7) % 40, 100, 0)
        buf = np.zeros((block, 2), np.float32)
        for _ in range(200):  # warm-up, attack done
            buf.fill(0)
            s.process(buf)
        n = max(1, int(seconds * sr / block))  # one at least: percentiles of none fail
        times = np.empty(n)
        perf = time.perf_counter_ns
        cpu0 = time.thread_time_ns()  # CPU time of this thread (ONNX Runtime runs in it: 1 thread)
        for i in range(n):
            buf.fill(0)
            t0 = perf()
            s.process(buf)
            times[i] = perf() - t0
        cpu = (time.thread_time_ns() - cpu0) * 1e-9
        us = times * 1e-3
        emit({"bench": "synth_rtf", "instrument": instrument, "voices": voices, "sounding": s.active_voices(),
              "samplerate": sr, "blocksize": block, "rtf": float(times.sum() * 1e-9 / (n * block / sr)),
              "rtf_p50": float(np.percentile(times, 50) * 1e-9 / (block / sr)),
              "rtf_cpu": float(cpu / (n * block / sr)),
              "block_us_p50": float(np.percentile(us, 50)), "block_us_p99": float(np.percentile(us, 99)),
              "block_us_max": float(us.max())}, as_json)


def bench_latency(instrument: str, sr: int, block: int, as_json: bool) -> None:
    s = _synth(instrument, sr, block)
    lat = []
    buf = np.zeros((block, 2), np.float32)
    for k in range(24):
        s.reset()
        pre = k % 3  # blocks before the note: the note lands at different phases of the frame grid
        offset = (k * 37) % block
        for _ in range(pre):
            buf.fill(0)
            s.process(buf)
        s.handle_midi(0x90, 69, 100, offset)
        got = None
        for b in range(20):
            buf.fill(0)
            s.process(buf)
            nz = np.flatnonzero(np.abs(buf[:, 0]) > 1e-6)
            if nz.size:
                got = b * block + int(nz[0]) - offset
                break
        lat.append(-1 if got is None else got)
    lat = np.asarray(lat)
    emit({"bench": "synth_note_on_latency", "instrument": instrument, "samplerate": sr, "blocksize": block,
          "frame_hop": s.hop, "processor_max_samples": int(lat.max()), "processor_mean_samples": float(lat.mean()),
          "live_bound_samples": int(lat.max()) + block, "live_bound_ms": 1000.0 * (lat.max() + block) / sr,
          "target_samples": block + s.hop}, as_json)


class FixedSpectrum:
    """Stands in for a decoder: the same voices and loudness inputs, a fixed 1/k spectrum."""

    def __init__(self, inst):
        self.inst = inst
        k = np.arange(1, inst.n_harm + 1)
        self.spec = (1.0 / k / (1.0 / k).sum()).astype(np.float32)

    def run(self, t: int, n: int) -> None:
        amp = 10.0 ** (self.inst.ld[t][:n] / 20.0)  # (n, t)
        self.inst.harm[t][:n] = amp[..., None] * self.spec
        self.inst.noise[t][:n] = 0.0

    def run_steps(self, m: int) -> None:
        """The one-frame steps of notes and releases between frames (``StepCalls.run``), alike."""
        steps = self.inst.steps
        steps.h[:m] = 10.0 ** (steps.ld[:m, :, None] / 20.0) * self.spec
        steps.nz[:m] = 0.0


def _render(instrument: str, events, n: int, sr: int, block: int, baseline: bool) -> np.ndarray:
    from realtime.dsp.chain import Chain, Slot
    from realtime.dsp.processors.synth.processor import INSTRUMENTS, Synth
    from realtime.run.offline import render_events

    s = Synth(instrument=INSTRUMENTS.index(instrument))
    chain = Chain([Slot(s)])
    chain.prepare(sr, block, 2)
    if baseline:
        for inst in s.instruments.values():
            fixed = FixedSpectrum(inst)
            inst.run, inst.steps.run = fixed.run, fixed.run_steps
    return render_events(chain, events, n, sr, block, prepare=False)[:, 0], s.hop


def bench_quality(instrument: str, sr: int, block: int, melodies: int, as_json: bool) -> None:
    import soxr

    from models.ddsp.data import DATA, render
    from realtime.run.midi_file import midi_file_events

    files = sorted((DATA / instrument / "test").glob("*.mid"))[:melodies]
    if not files:
        emit({"bench": "synth_quality", "instrument": instrument,
              "error": f"no held-out melodies in {DATA / instrument / 'test'}: run python -m models.ddsp.data"}, as_json)
        return
    d_syn, d_syn_rms, d_base = [], [], []
    for f in files:
        ref = render(f, sr)
        events = midi_file_events(f, sr)
        y, hop = _render(instrument, events, len(ref) + 512, sr, block, False)
        b, _ = _render(instrument, events, len(ref) + 512, sr, block, True)
        y, b = y[hop:hop + len(ref)], b[hop:hop + len(ref)]  # the synth's fixed one-frame delay
        r24, y24, b24 = (soxr.resample(x.astype(np.float64), sr, 24000) for x in (ref, y, b))
        rms = lambda x: float(np.sqrt(np.mean(x ** 2)) + 1e-12)  # noqa: E731
        d_syn.append(mrstft_distance(y24, r24))
        d_syn_rms.append(mrstft_distance(y24 * rms(r24) / rms(y24), r24))
        d_base.append(mrstft_distance(b24 * rms(r24) / rms(b24), r24))
    emit({"bench": "synth_quality", "instrument": instrument, "melodies": len(files),
          "mrstft_synth": float(np.mean(d_syn)), "mrstft_synth_rms_matched": float(np.mean(d_syn_rms)),
          "mrstft_baseline_rms_matched": float(np.mean(d_base)),
          "ratio_synth_to_baseline": float(np.mean(d_syn) / np.mean(d_base))}, as_json)


def get_parser() -> argparse.ArgumentParser:
    from main import _samplerate  # the command line's own check: 8000 to 384000 Hz
    from realtime.dsp.processors.synth.processor import INSTRUMENTS

    ap = OneLineParser(prog="bench synth", description=__doc__.splitlines()[0])
    ap.add_argument("--instruments", type=comma_list(choices=INSTRUMENTS), default=",".join(INSTRUMENTS))
    ap.add_argument("--samplerate", type=_samplerate, default=48000)
    ap.add_argument("--blocksize", type=block_frames, default=128)
    ap.add_argument("--seconds", type=positive(most=3600), default=5.0, help="audio seconds per RTF measurement")
    ap.add_argument("--melodies", type=positive(int), default=6)
    ap.add_argument("--skip", type=comma_list(choices=("rtf", "latency", "quality"), empty=True), default="",
                    help="comma list of rtf,latency,quality to skip")
    ap.add_argument("--json", action="store_true")
    return ap


def main(argv=None) -> int:
    a = get_parser().parse_args(argv)
    skip = set(a.skip)
    failed = []
    for k, inst in enumerate(a.instruments):
        try:
            if "rtf" not in skip and k == 0:
                bench_rtf(inst, a.samplerate, a.blocksize, a.seconds, a.json)
            if "latency" not in skip:  # each instrument's: its attack is its own (cheap: 24 notes)
                bench_latency(inst, a.samplerate, a.blocksize, a.json)
            if "quality" not in skip:
                bench_quality(inst, a.samplerate, a.blocksize, a.melodies, a.json)
        except Exception as e:  # a missing model or tool: say so and go on, and fail the command at the end
            emit({"bench": "synth", "instrument": inst, "error": f"{type(e).__name__}: {e}"}, a.json)
            failed.append(f"{inst}: {e}")
    for line in failed:
        print(f"error: bench synth: {line}", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
