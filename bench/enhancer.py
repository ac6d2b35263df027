"""Enhancer benchmark on the held-out validation set: noisy input vs this enhancer vs RNNoise.

    python main.py bench enhancer [--skip 24] [--limit N] [--block 128] [--no-dnsmos] [--json]
    python -m bench.enhancer …

By default the 24 validation clips that training used to pick its checkpoint are left out
(``--skip 0`` to include them).

Prints one JSON line per system with PESQ-WB, STOI, SI-SDR (dB), DNSMOS (SIG/BAK/OVRL, P.808),
algorithmic latency (ms) and real-time factor (CPU time of the one processing thread / audio
time; ``rtf_wall`` is the wall-clock ratio, inflated on a loaded machine), then
a summary line. Needs the runtime plus the metric packages: pesq, pystoi, pyrnnoise, speechmos
(and librosa, which speechmos imports). Torch is not used. ``SELECTION_CLIPS`` comes from the
training recipe (``models.enhancer.data``), so the clips left out are those training chose on; a
benchmark may import training code: it sits outside the runtime.
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

from models.enhancer.data import SELECTION_CLIPS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VAL = ROOT / "data" / "enhancer" / "val"
SR = 48000


def get_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench enhancer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", type=Path, default=DEFAULT_VAL, help="folder with noisy/ and clean/ wavs")
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: the committed one)")
    ap.add_argument("--skip", type=int, default=SELECTION_CLIPS,
                    help=f"leave out the first N clips (default {SELECTION_CLIPS}: training picks its checkpoint on them)")
    ap.add_argument("--limit", type=int, default=0, help="then use only the first N clips (0 = all)")
    ap.add_argument("--block", type=int, default=128, help="host block size for our processor")
    ap.add_argument("--no-dnsmos", action="store_true")
    ap.add_argument("--no-rnnoise", action="store_true")
    ap.add_argument("--json", action="store_true", help="(default) JSON lines on stdout")
    return ap


def si_sdr(ref, est):
    ref = ref.astype(np.float64)
    est = est.astype(np.float64)
    a = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12)
    t = a * ref
    return float(10 * np.log10(np.sum(t**2) / (np.sum((est - t) ** 2) + 1e-12) + 1e-12))


class RNNoiseRunner:
    """RNNoise through pyrnnoise's bundled librnnoise (48 kHz, 480-sample frames)."""

    FRAME = 480

    def __init__(self):
        from pyrnnoise import rnnoise

        self.lib = rnnoise.lib
        self.state = rnnoise.create()
        self.buf = np.zeros(self.FRAME, np.float32)
        self.ptr = self.buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def process(self, x):
        """Whole clip; returns output of the same length (offline shift not removed)."""
        n = len(x) // self.FRAME * self.FRAME
        y = np.zeros(len(x), np.float32)
        for s in range(0, n, self.FRAME):
            self.buf[:] = x[s : s + self.FRAME] * 32768.0
            self.lib.rnnoise_process_frame(self.state, self.ptr, self.ptr)
            y[s : s + self.FRAME] = self.buf / 32768.0
        return y

    def close(self):
        from pyrnnoise import rnnoise

        rnnoise.destroy(self.state)


def _metrics(clean, est, want_dnsmos):
    import soxr
    from pesq import pesq
    from pystoi import stoi

    c16 = soxr.resample(clean, SR, 16000, quality="HQ")
    e16 = soxr.resample(est, SR, 16000, quality="HQ")
    out = {"si_sdr": si_sdr(clean, est), "stoi": float(stoi(c16, e16, 16000, extended=False))}
    try:
        out["pesq_wb"] = float(pesq(16000, c16, e16, "wb"))
    except Exception:  # pesq raises on clips without detectable speech
        out["pesq_wb"] = float("nan")
    if want_dnsmos:
        from speechmos import dnsmos

        # speechmos rejects samples outside [-1, 1] (resampling can overshoot a 0.99 peak)
        d = dnsmos.run(np.clip(e16, -1.0, 1.0).astype(np.float32), sr=16000)
        out.update({"dnsmos_ovrl": float(d["ovrl_mos"]), "dnsmos_sig": float(d["sig_mos"]),
                    "dnsmos_bak": float(d["bak_mos"]), "dnsmos_p808": float(d["p808_mos"])})
    return out


def _find_shift(ref, y, max_lag=2000):
    """Integer lag (0..max_lag) that best aligns y to ref (y[n] ~ ref[n - lag])."""
    best, lag = -1e30, 0
    n = min(len(ref), len(y))
    for k in range(0, max_lag + 1, 1):
        v = float(np.dot(ref[: n - k], y[k:n]))
        if v > best:
            best, lag = v, k
    return lag


def main(argv=None) -> int:
    a = get_parser().parse_args(argv)
    import soundfile as sf

    from realtime.dsp.processors.neural.enhancer import Enhancer

    need = ["pesq", "pystoi", "soxr"] + ([] if a.no_rnnoise else ["pyrnnoise"]) + ([] if a.no_dnsmos else ["speechmos"])
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"bench enhancer needs {missing}: pip install -e '.[eval]'")
    files = sorted((a.val / "noisy").glob("*.wav"))
    if not files:
        raise SystemExit(f"no validation clips in {a.val}/noisy: run `python -m models.enhancer.data` first")
    files = files[a.skip:]
    if a.limit:
        files = files[: a.limit]
    pairs = [(sf.read(f, dtype="float32")[0], sf.read(a.val / "clean" / f.name, dtype="float32")[0]) for f in files]
    total_s = sum(len(n) for n, _ in pairs) / SR

    systems = {"noisy": None, "enhancer": None}
    if not a.no_rnnoise:
        systems["rnnoise"] = None
    results = {}
    for name in systems:
        per = []
        t_proc = t_wall = 0.0
        info = {}
        if name == "enhancer":
            proc = Enhancer(model_path=a.model) if a.model else Enhancer()
            proc.prepare(SR, a.block, 1)
            L = proc.latency
            info = {"latency_ms": round(1000 * L / SR, 2), "latency_samples": L, "block": a.block,
                    "provider": proc.provider, "threads": proc.threads,
                    "model_bytes": proc.model_path.stat().st_size, "model": str(proc.model_path.relative_to(ROOT)
                                                           if proc.model_path.is_relative_to(ROOT) else proc.model_path)}
        elif name == "rnnoise":
            rn = RNNoiseRunner()
            # output lag found by cross-correlation on the first clip (librnnoise: 960 samples =
            # a 480-sample frame buffered + 480 of overlap-add, its documented 20 ms)
            shift = None
            info = {}
        else:
            info = {"latency_ms": 0.0}
        for noisy, clean in pairs:
            if name == "noisy":
                est = noisy
            elif name == "enhancer":
                proc.reset()
                x = np.concatenate([noisy, np.zeros(L + a.block, np.float32)])[:, None].copy()
                t0, w0 = time.thread_time(), time.perf_counter()
                for s in range(0, len(x), a.block):
                    proc.process(x[s : s + a.block])
                t_proc += time.thread_time() - t0
                t_wall += time.perf_counter() - w0
                est = x[L : L + len(noisy), 0]
            else:
                rn.close()
                rn = RNNoiseRunner()
                x = np.concatenate([noisy, np.zeros(960, np.float32)])
                t0, w0 = time.thread_time(), time.perf_counter()
                y = rn.process(x)
                t_proc += time.thread_time() - t0
                t_wall += time.perf_counter() - w0
                if shift is None:
                    shift = _find_shift(noisy, y)
                    info["offline_shift_samples"] = shift
                    info["latency_ms"] = round(1000 * shift / SR, 2)
                est = y[shift : shift + len(noisy)]
            per.append(_metrics(clean, est, not a.no_dnsmos))
        keys = per[0].keys()
        row = {"system": name, "clips": len(pairs), "audio_s": round(total_s, 1)}
        for k in keys:
            v = np.array([p[k] for p in per], dtype=np.float64)
            row[k] = round(float(np.nanmean(v)), 4)
        row.update(info)
        # rtf: CPU time of the (single) processing thread / audio time, so other load on a shared
        # machine does not inflate it; rtf_wall: wall-clock time / audio time
        row["rtf"] = round(t_proc / total_s, 5) if name != "noisy" else 0.0
        row["rtf_wall"] = round(t_wall / total_s, 5) if name != "noisy" else 0.0
        results[name] = row
        print(json.dumps(row), flush=True)
    if "rnnoise" in results:
        e, r = results["enhancer"], results["rnnoise"]
        better = {k: bool(e[k] > r[k]) for k in ("pesq_wb", "stoi", "si_sdr")}
        print(json.dumps({"summary": "enhancer vs rnnoise", "better": better,
                          "target_met": all(better.values()) and e["latency_ms"] <= 10.0,
                          "delta": {k: round(e[k] - r[k], 4) for k in ("pesq_wb", "stoi", "si_sdr")}}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
