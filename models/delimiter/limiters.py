"""The limiters the de-limiter trains on, applied on the fly, and the ones it must never see.

Every limiter here is a function ``(x [n, 2] float32, sr, rng) -> (y, setting)`` whose output is
time-aligned with ``x`` (its latency removed) and carries no make-up gain the reference lacks, so
``y ~ g(t) * x`` with g <= 1 wherever the limiter works.

Training implementations (``TRAIN_KINDS``), each with randomised settings:

- ``zoo``: this module's own Numba limiter with the variety real products have: lookahead 0-10 ms,
  attack shape (linear ramp, exponential with overshoot then clip, S-curve), release 5-1000 ms,
  program-dependent (dual-envelope) release, soft knee, stereo link on/off, inter-sample peak
  detection, a hard or soft final clip. It also reports the exact gain curve it applied (linked).
- ``pedalboard``: JUCE's Limiter (two compressor stages and a clip; its make-up gain removed).
- ``alimiter``: ffmpeg's ``alimiter`` filter (attack, release, auto-release), run in-process through
  PyAV's filter graph (an ffmpeg process per example spent ~0.1 s starting up).
- ``lsp``: LSP's stereo limiter (LV2), hosted by the project's own LV2 processor, random mode,
  oversampling, lookahead, attack and release.
- ``clip_limit``: a hard or soft clipper driving a ``zoo`` limiter (a common mastering chain).
- ``clipper``: a hard or tanh clipper alone (with ``clip_limit`` the only kinds whose flat runs
  the processor's de-clipper fills).
- ``multiband``: three bands (Linkwitz-Riley-like splits), each ``zoo``-limited, then a final one.

Validation (checkpoint selection) uses ``VAL_KINDS``: Calf's Limiter and zam's ZaMaximX2, never
trained on and not the benchmark's. The benchmark's limiters (``BENCH_LV2``: swh fastLookahead,
swh hardLimiter, mda Limiter) appear nowhere in training or selection (tests/test_delimiter.py).
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
from numba import njit

LSP_URI = "http://lsp-plug.in/plugins/lv2/limiter_stereo"
CALF_URI = "http://calf.sourceforge.net/plugins/Limiter"
ZAM_URI = "urn:zamaudio:ZaMaximX2"
BENCH_LV2 = {  # the benchmark's held-out limiters: never trained on, never used for selection
    "swh-fast-lookahead": "http://plugin.org.uk/swh-plugins/fastLookaheadLimiter",
    "swh-hard": "http://plugin.org.uk/swh-plugins/hardLimiter",
    "mda": "http://drobilla.net/plugins/mda/Limiter",
}
PEDALBOARD_MAKEUP_DB = 3.75


# ----------------------------------------------------------------------------------------------
# The zoo limiter (Numba)
# ----------------------------------------------------------------------------------------------
@njit(cache=True)
def _box(h, W):
    """Moving average over the last W samples (1 before the start)."""
    out = np.empty_like(h)
    s = float(W)
    for i in range(len(h)):
        s += h[i] - (h[i - W] if i >= W else 1.0)
        out[i] = s / W
    return out


@njit(cache=True)
def _zoo(x, sr, ceil, la, shape, rel_ms, rel2_ms, knee_db, link, truepeak, soft_clip):
    """x [n, C] -> y [n, C], delayed by ``la`` samples.
    shape: 0 linear ramp (box), 1 exponential attack, 2 S-curve (two boxes)."""
    n, C = x.shape
    groups = 1 if link else C
    y = np.zeros_like(x)
    W = la + 1
    c_rel = 1.0 - math.exp(-1.0 / max(rel_ms * 1e-3 * sr, 1.0))
    c_rel2 = 1.0 - math.exp(-1.0 / max(rel2_ms * 1e-3 * sr, 1.0))
    c_slow_att = 1.0 - math.exp(-1.0 / (0.05 * sr))
    c_att = 1.0 - math.exp(-3.0 / max(W, 1))
    thr_db = 20.0 * math.log10(ceil) - 0.5 * knee_db
    for gi in range(groups):
        c0 = 0 if link else gi
        c1 = C if link else gi + 1
        r = np.ones(n)
        for i in range(n):
            pk = 0.0
            for c in range(c0, c1):
                a = abs(x[i, c])
                if truepeak and i >= 2 and i < n - 1:  # Catmull-Rom midpoint between i-1 and i
                    p0, p1, p2, p3 = x[i - 2, c], x[i - 1, c], x[i, c], x[i + 1, c]
                    mid = (-p0 + 9.0 * p1 + 9.0 * p2 - p3) / 16.0
                    a = max(a, abs(mid))
                pk = max(pk, a)
            if pk > 1e-9:
                lvl = 20.0 * math.log10(pk)
                over = lvl - thr_db
                if knee_db > 0.0 and abs(over) < 0.5 * knee_db:
                    gr = (over + 0.5 * knee_db) ** 2 / (2.0 * knee_db)
                else:
                    gr = max(over, 0.0)
                # a brickwall: never let the peak above the ceiling whatever the knee
                r[i] = min(10.0 ** (-gr / 20.0), ceil / pk if pk > ceil else 1.0)
        # sliding minimum over the last W samples: a monotonic queue of indices, O(n) for any W
        h = np.empty(n)
        q = np.empty(n, np.int64)
        head = 0
        tail = 0
        for i in range(n):
            while tail > head and r[q[tail - 1]] >= r[i]:
                tail -= 1
            q[tail] = i
            tail += 1
            if q[head] <= i - W:
                head += 1
            h[i] = min(r[q[head]], 1.0)
        # release (instant attack on h): fast envelope, and a slow one that only sustained reduction moves
        fast = 1.0
        slow = 1.0
        h2 = np.empty(n)
        for i in range(n):
            fast = h[i] if h[i] < fast else fast + c_rel * (h[i] - fast)
            if rel2_ms > 0.0:
                slow = slow + (c_slow_att if h[i] < slow else c_rel2) * (h[i] - slow)
                h2[i] = min(fast, max(slow, h[i]))
            else:
                h2[i] = fast
        # attack shape over the lookahead window
        g = np.empty(n)
        if shape == 1:
            e = 1.0
            for i in range(n):
                e = h2[i] if h2[i] > e else e + c_att * (h2[i] - e)
                g[i] = min(e, 1.0)  # lags the target: peaks overshoot, the final clip catches them
        elif shape == 0:
            g[:] = _box(h2, W)  # linear ramp over the lookahead
        else:
            g[:] = _box(_box(h2, max(1, W // 2)), max(1, W - W // 2))  # S-curve
        for i in range(n):
            gi_ = min(g[i], 1.0)
            for c in range(c0, c1):
                v = (x[i - la, c] if i >= la else 0.0) * gi_
                if soft_clip:
                    if abs(v) > 0.7 * ceil:  # tanh knee over the last 3 dB
                        k = 0.3 * ceil
                        sgn = 1.0 if v > 0 else -1.0
                        v = sgn * (0.7 * ceil + k * math.tanh((abs(v) - 0.7 * ceil) / k))
                else:
                    v = min(max(v, -ceil), ceil)
                y[i, c] = v
    return y


def zoo(x: np.ndarray, sr: int, rng, **over):
    """The zoo limiter with random settings (``over`` pins some); y aligned with x."""
    s = {"ceiling_db": float(rng.uniform(-3.0, -0.1)), "lookahead_ms": float(rng.choice([0.0, rng.uniform(0.0, 10.0)], p=[0.2, 0.8])),
         "shape": int(rng.integers(0, 3)), "release_ms": float(math.exp(rng.uniform(math.log(5.0), math.log(1000.0)))),
         "auto_release": bool(rng.random() < 0.35), "knee_db": float(rng.choice([0.0, rng.uniform(0.5, 6.0)])),
         "link": bool(rng.random() < 0.8), "truepeak": bool(rng.random() < 0.3), "soft_clip": bool(rng.random() < 0.3)}
    s.update({k: _draw(rng, k, v) if isinstance(v, tuple) else v for k, v in over.items()})
    la = int(round(s["lookahead_ms"] * 1e-3 * sr))
    rel2 = s["release_ms"] * float(rng.uniform(3.0, 10.0)) if s["auto_release"] else 0.0
    xx = np.ascontiguousarray(x, np.float64)
    y = _zoo(np.concatenate([xx, np.zeros((la, xx.shape[1]))]), float(sr), 10.0 ** (s["ceiling_db"] / 20.0), la,
             s["shape"], s["release_ms"], rel2, s["knee_db"], s["link"], s["truepeak"], s["soft_clip"])
    return np.ascontiguousarray(y[la:], np.float32), s


def pedalboard_limit(x, sr, rng):
    import pedalboard

    s = {"ceiling_db": float(rng.uniform(-3.0, -0.1)), "release_ms": float(math.exp(rng.uniform(math.log(5.0), math.log(1000.0))))}
    y = pedalboard.Limiter(threshold_db=s["ceiling_db"], release_ms=s["release_ms"])(x.T.astype(np.float32), sr).T
    makeup = 10.0 ** ((PEDALBOARD_MAKEUP_DB - s["ceiling_db"]) / 20.0)  # JUCE's make-up, measured
    return np.ascontiguousarray(y / makeup, np.float32), s


def alimiter(x, sr, rng):
    """ffmpeg's alimiter (level=0: no auto make-up; latency=1: compensated, flushed at the end)."""
    import av
    from av.filter import Graph

    s = {"limit": float(10.0 ** (rng.uniform(-3.0, -0.1) / 20.0)), "attack_ms": float(math.exp(rng.uniform(math.log(0.1), math.log(80.0)))),
         "release_ms": float(math.exp(rng.uniform(math.log(5.0), math.log(1000.0)))), "asc": int(rng.random() < 0.4)}
    graph = Graph()
    src = graph.add_abuffer(format="flt", sample_rate=sr, layout="stereo", time_base=Fraction(1, sr))
    lim = graph.add("alimiter", f"limit={s['limit']:.5f}:attack={s['attack_ms']:.3f}:release={s['release_ms']:.3f}"
                                f":asc={s['asc']}:level=0:latency=1")
    sink = graph.add("abuffersink")
    src.link_to(lim)
    lim.link_to(sink)
    graph.configure()
    out = []

    def drain():
        while True:
            try:
                out.append(graph.pull().to_ndarray().reshape(-1, 2))
            except (av.BlockingIOError, av.EOFError):
                return

    x = np.ascontiguousarray(x, np.float32)
    for start in range(0, len(x), 8192):
        frame = av.AudioFrame.from_ndarray(x[start:start + 8192].reshape(1, -1), format="flt", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
        graph.push(frame)
        drain()
    graph.push(None)  # flush: with latency=1 the last lookahead's worth comes out only now
    drain()
    y = np.concatenate(out) if out else np.zeros((0, 2), np.float32)
    res = np.zeros_like(x)
    m = min(len(y), len(x))
    res[:m] = y[:m]
    return res, s


class Lv2Limiter:
    """An LV2 limiter run offline through the project's own host, its (measured) latency removed.

    A fresh instance per call: some plugins (swh's) keep state across deactivate/activate."""

    def __init__(self, uri: str, values: dict, sr: int, block: int = 512):
        from realtime.dsp.processors.lv2 import Lv2Plugin

        self.uri, self.values, self.sr, self.block = uri, dict(values), sr, block
        self.cls = Lv2Plugin.for_uri(uri)
        self.latency = 0

    def _instance(self):
        proc = self.cls(**self.values)
        proc.prepare(self.sr, self.block, 2)
        return proc

    def _run(self, proc, x: np.ndarray) -> np.ndarray:
        y = np.ascontiguousarray(x, np.float32).copy()
        for s in range(0, len(y), self.block):
            proc.process(y[s:s + self.block])
        return y

    def measured_latency(self) -> float:
        """The delay of quiet noise (below any threshold), by cross-correlation: some plugins
        (Calf) report no latency, and some drop an isolated click. With its fraction: an
        oversampling limiter (LSP's ovs, Calf's oversampling) delays by whole samples and a part of
        one, which left as it was put the output half a sample off its input (-3 dB of residual
        where a gain fit needs -60: every such pair's target gain curve was wrong). The fraction is
        where the cross-correlation below 0.6 of Nyquist, interpolated (its spectrum's phase turned), peaks."""
        probe = (0.01 * np.random.default_rng(0).standard_normal((16384, 2))).astype(np.float32)
        y = self._run(self._instance(), np.concatenate([probe, np.zeros((4096, 2), np.float32)]))
        n = 2 * len(y)  # zero-padded: the FFT's product is the linear cross-correlation
        cross = np.conj(np.fft.rfft(probe[:, 0], n)) * np.fft.rfft(y[:, 0], n)
        lag = int(np.argmax(np.fft.irfft(cross, n)[:4096]))
        w = 2.0 * np.pi * np.arange(len(cross)) / n
        taus = lag + np.linspace(-1.0, 1.0, 201)
        music = cross * (w < 0.6 * np.pi)  # where music's energy is: above, oversampling filters bend the phase
        near = [float(np.real(music @ np.exp(1j * w * t))) for t in taus]  # c(tau) between the samples
        return float(taus[int(np.argmax(near))])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        proc = self._instance()
        # measured, not the reported figure: LSP's oversampling adds delay its port leaves out
        L = self.latency = self.measured_latency()
        whole = int(np.floor(L))
        pad = whole + 2
        y = self._run(proc, np.concatenate([x, np.zeros((pad, 2), np.float32)]))[whole:]
        if L != whole:  # the fraction: advanced in the frequency domain (the padding holds what wraps)
            m = 1 << int(np.ceil(np.log2(len(y) + 64)))
            w = 2.0 * np.pi * np.arange(m // 2 + 1) / m
            y = np.fft.irfft(np.fft.rfft(y, m, axis=0) * np.exp(1j * w * (L - whole))[:, None], m, axis=0)[:len(y)]
        return np.ascontiguousarray(y[:len(x)], np.float32)


def _param_names(uri: str) -> set:
    from realtime.dsp.processors.lv2 import Lv2Plugin

    return {p.id for p in Lv2Plugin.for_uri(uri).params}


def _run_lv2(uri, cand: dict, x, sr):
    """Run ``uri`` with the candidate values its ports have (clamped to their ranges); the setting
    returned holds them and the latency taken out (``aligned_latency``, samples with their fraction:
    a selection set built before the fraction was taken out has none, and is refused)."""
    from realtime.dsp.processors.lv2 import Lv2Plugin

    ranges = {p.id: (p.min, p.max) for p in Lv2Plugin.for_uri(uri).params}
    values = {k: float(min(max(v, ranges[k][0]), ranges[k][1])) for k, v in cand.items() if k in ranges}
    lim = Lv2Limiter(uri, values, sr)
    y = lim(x)
    return y, {**values, "aligned_latency": round(lim.latency, 3)}


def lsp(x, sr, rng):
    ceil_db = float(rng.uniform(-3.0, -0.1))
    y, v = _run_lv2(LSP_URI, {"th": 10.0 ** (ceil_db / 20.0), "mode": float(rng.integers(0, 12)),
                              "ovs": float(rng.integers(0, 21)), "lk": float(rng.uniform(0.1, 10.0)),
                              "at": float(rng.uniform(0.25, 10.0)), "rt": _log_uniform(rng, 5.0, 1000.0),
                              "boost": 0.0, "alr": float(rng.random() < 0.3), "slink": float(rng.choice([100.0, rng.uniform(0, 100)]))},
                    x, sr)
    return y, {"ceiling_db": ceil_db, **v}


def calf(x, sr, rng):
    ceil_db = float(rng.uniform(-3.0, -0.1))
    y, v = _run_lv2(CALF_URI, {"limit": 10.0 ** (ceil_db / 20.0), "attack": float(rng.uniform(1.0, 10.0)),
                               "release": _log_uniform(rng, 5.0, 1000.0), "asc": float(rng.random() < 0.4),
                               "auto_level": 0.0, "oversampling": float(rng.integers(1, 5))}, x, sr)
    return y, {"ceiling_db": ceil_db, **v}


def zam(x, sr, rng):
    ceil_db = float(rng.uniform(-3.0, -0.1))
    y, v = _run_lv2(ZAM_URI, {"rel": _log_uniform(rng, 5.0, 500.0), "ceil": ceil_db, "thresh": 0.0}, x, sr)
    return y, {"ceiling_db": ceil_db, **v}


def _log_uniform(rng, lo, hi) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def clip_limit(x, sr, rng):
    """A clipper (hard or tanh) 1-6 dB into a zoo limiter: the clipper shaves the fastest peaks."""
    cl = float(rng.uniform(1.0, 6.0))
    peak = float(np.abs(x).max()) + 1e-9
    t = peak * 10.0 ** (-cl / 20.0)
    c = np.clip(x, -t, t) if rng.random() < 0.5 else t * np.tanh(x / t)
    y, s = zoo(c.astype(np.float32), sr, rng)
    return y, {"clip_db": cl, **s}


def clipper(x, sr, rng):
    """A clipper alone at a ceiling of -3..-0.1 dBFS: hard (3 in 4) or tanh-shaped (the loudness
    comes from the drive). The de-limiter's de-clipper fills what a hard one cut; the network learns
    to leave that alone (train.py ``--declip``)."""
    ceil_db = float(rng.uniform(-3.0, -0.1))
    t = 10.0 ** (ceil_db / 20.0)
    hard = bool(rng.random() < 0.75)
    y = np.clip(x, -t, t) if hard else t * np.tanh(x / t)
    return y.astype(np.float32), {"ceiling_db": ceil_db, "hard": hard}


def multiband(x, sr, rng):
    """Three bands (Linkwitz-Riley-like: the bands sum back to x), each limited 0-6 dB below its own
    peak by a zoo limiter, then a final zoo limiter on the sum."""
    import scipy.signal as sps

    f1, f2 = float(rng.uniform(80.0, 300.0)), float(rng.uniform(1500.0, 6000.0))
    lo = sps.butter(2, f1, "low", fs=sr, output="sos")
    mid_lo = sps.butter(2, f2, "low", fs=sr, output="sos")
    low = sps.sosfilt(lo, sps.sosfilt(lo, x, axis=0), axis=0)
    rest = x - low
    mid = sps.sosfilt(mid_lo, sps.sosfilt(mid_lo, rest, axis=0), axis=0)
    high = rest - mid
    out = np.zeros_like(x, dtype=np.float64)
    for band in (low, mid, high):
        ceil = 20 * np.log10(np.abs(band).max() + 1e-9) - float(rng.uniform(0.0, 6.0))
        yb, _ = zoo(band.astype(np.float32), sr, rng, ceiling_db=ceil, lookahead_ms=float(rng.uniform(0.0, 5.0)), soft_clip=False)
        out += yb
    y, s = zoo(out.astype(np.float32), sr, rng)
    return y, {"split_hz": [f1, f2], **s}


TRAIN_KINDS = {"zoo": zoo, "pedalboard": pedalboard_limit, "alimiter": alimiter, "lsp": lsp,
               "clip_limit": clip_limit, "multiband": multiband, "clipper": clipper}
TRAIN_SHARES = {"zoo": 0.3, "pedalboard": 0.12, "alimiter": 0.15, "lsp": 0.18, "clip_limit": 0.13, "multiband": 0.12,
                "clipper": 0.1}
VAL_KINDS = {"calf": calf, "zam": zam}


LOG_DRAWN = ("release_ms",)  # drawn log-uniformly within a pinned range, as the zoo's own draw


def _draw(rng, key: str, lo_hi: tuple) -> float:
    """A value of ``key`` within a pinned range (``parse_zoo_pin``'s LO:HI)."""
    lo, hi = lo_hi
    return _log_uniform(rng, lo, hi) if key in LOG_DRAWN else float(rng.uniform(lo, hi))


ZOO_SETTINGS = {"ceiling_db": float, "lookahead_ms": float, "shape": int, "release_ms": float, "auto_release": bool,
                "knee_db": float, "link": bool, "truepeak": bool, "soft_clip": bool}


def parse_zoo_pin(text: str) -> dict:
    """"lookahead_ms=5,release_ms=20:500" -> {"lookahead_ms": 5.0, "release_ms": (20.0, 500.0)}: a
    curriculum's stages, one limiter setting first so the network can learn its curve, then ranges
    (LO:HI, a float setting drawn per example; release log-uniformly) widening towards the variety."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, val = item.partition("=")
        if key not in ZOO_SETTINGS or not val:
            raise SystemExit(f"--zoo-pin: {item!r} is not KEY=VALUE with KEY one of {', '.join(ZOO_SETTINGS)}")
        kind = ZOO_SETTINGS[key]
        try:
            if ":" in val:
                lo, hi = (float(v) for v in val.split(":"))
                if kind is not float or not lo < hi or (key in LOG_DRAWN and lo <= 0):
                    raise SystemExit(f"--zoo-pin: {key}={val} is not a range LO:HI with LO < HI "
                                     f"(ranges for {', '.join(k for k, t in ZOO_SETTINGS.items() if t is float)})")
                out[key] = (lo, hi)
            else:
                out[key] = val.lower() in ("1", "true", "yes", "on") if kind is bool else kind(val)
        except ValueError:
            raise SystemExit(f"--zoo-pin: {key} needs a number or LO:HI, not {val!r}") from None
    return out


def training_kinds(names: str | None = None, zoo_pin: dict | None = None) -> dict:
    """The training implementations this machine runs, only ``names`` (comma-separated) when given,
    the zoo limiter's settings pinned by ``zoo_pin`` (``parse_zoo_pin``)."""
    wanted = [n.strip() for n in (names or "").split(",") if n.strip()]
    unknown = [n for n in wanted if n not in TRAIN_KINDS]
    if unknown:
        raise SystemExit(f"--limiters: {', '.join(unknown)} not among {', '.join(TRAIN_KINDS)}")
    kinds = {k: f for k, f in available(TRAIN_KINDS).items() if not wanted or k in wanted}
    if wanted and not kinds:
        raise SystemExit(f"--limiters: none of {', '.join(wanted)} runs on this machine")
    if zoo_pin and "zoo" in kinds:
        kinds["zoo"] = functools.partial(zoo, **zoo_pin)
    return kinds


def available(kinds: dict) -> dict:
    """The kinds that run on this machine (PyAV, pedalboard and the LV2 plugins are optional)."""
    ok = {}
    for name, fn in kinds.items():
        try:
            if name == "alimiter":
                import av  # noqa: F401
            if name == "pedalboard":
                import pedalboard  # noqa: F401
            if name in ("lsp", "calf", "zam"):
                _param_names({"lsp": LSP_URI, "calf": CALF_URI, "zam": ZAM_URI}[name])
            ok[name] = fn
        except Exception:
            continue
    return ok
