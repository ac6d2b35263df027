"""Data recipe for the de-limiter: real game music pushed through varied brickwall limiting.

    python -m models.delimiter.data [--out data/delimiter] [--train 2400 --val 160 --seconds 2]

Sources (Debian packages, installed here when missing): wesnoth-1.16-music, supertux-data,
hedgewars-data, all mastered 44.1 kHz stereo ogg. Tracks are split by name (a hash, so the split
never depends on what else is installed): about one in eight is held out for validation and the
benchmark, so evaluation music is never heard in training.

Per segment (as in "Music De-limiter Networks via Sample-wise Gain Inversion"): the original is
loudness-normalised to REF_LUFS, then driven into a limiter until the output reaches a random
target loudness of -8 +- 2 LUFS, with a random ceiling, release and lookahead. Two limiter
implementations: the project's own lookahead limiter (which also reports the exact applied gain
curve) and pedalboard's Limiter (JUCE: two compressor stages and a clipper, per-channel, no
lookahead; its make-up gain is folded into the reference). The drive stops at +24 dB, where the
target loudness is then not always reached. 12 % of the segments stay un-limited (peak -12..-0.5
dBFS, gain 0) so the model learns to leave clean audio alone, and 6 % are replaced by synthetic
sine bursts and drum-like hits. Half of the training segments are resampled to 48 kHz first, so
the model sees both engine rates. Release times in EVAL_RELEASE_BAND are never drawn, so the
benchmark's limiter setting (EVAL_SETTING) is unseen.

Output files (float16 memmaps, never committed): {split}_y.npy (limited, [N, n, 2]),
{split}_x.npy (reference = drive * original, time-aligned with y), {split}_g.npy (log of the
applied linked gain, NaN where the limiter does not report it), {split}_meta.json; and
eval_x.npy: longer held-out originals at REF_LUFS for the benchmark.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from models.reserved import RESERVED_PACKAGES  # noqa: F401 (the recipe's tests check against it)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "data" / "delimiter"
PACKAGES = {
    "wesnoth-1.16-music": "/usr/share/games/wesnoth/1.16/data/core/music",
    "supertux-data": "/usr/share/games/supertux2/music",
    "hedgewars-data": "/usr/share/games/hedgewars/Data/Music",
}
# Never used by this recipe (tests/test_delimiter.py checks it): the benchmark's held-out music and
# limiters, and material reserved for independent checks project-wide.
HELDOUT_PACKAGES = {
    "singularity-music": "/usr/share/games/singularity/music",
    "drascula-music": "/usr/share/scummvm/drascula/audio",
}
HELDOUT_LIMITERS = {  # LV2 plugins hosted through realtime.dsp.processors.lv2
    "swh-fast-lookahead": "http://plugin.org.uk/swh-plugins/fastLookaheadLimiter",
    "swh-hard": "http://plugin.org.uk/swh-plugins/hardLimiter",
    "mda": "http://drobilla.net/plugins/mda/Limiter",
}
TRAIN_LIMITERS = ("project", "pedalboard")  # what apply_limiter implements
SR = 44100
REF_LUFS = -20.0
TARGET_LUFS = (-10.0, -6.0)
CEILING_DB = (-3.0, -0.1)
RELEASE_MS = (10.0, 300.0)
LOOKAHEAD_MS = (0.0, 5.0)
EVAL_RELEASE_BAND = (130.0, 190.0)  # never drawn in training
EVAL_SETTING = {"limiter": "project", "release_ms": 160.0, "lookahead_ms": 2.5, "ceiling_db": -0.5,
                "target_lufs": -8.0}
MIN_LUFS = -45.0  # skip near-silent segments
PEDALBOARD_MAKEUP_DB = 3.75
MAX_DRIVE_DB = 24.0  # beyond this a master is crushed; the target loudness is then not reached
CLEAN_SHARE = 0.12  # segments left un-limited
SYNTH_SHARE = 0.06  # segments replaced by synthetic sine bursts and drum-like hits


def synthetic_hits(rng, n: int, sr: int) -> np.ndarray:
    """Sine bursts and decaying noise/kick hits over a quiet bed, at REF_LUFS-ish level."""
    t = np.arange(n) / sr
    x = 0.003 * rng.standard_normal((n, 2))
    for _ in range(int(rng.integers(3, 10))):
        s = int(rng.integers(0, n - sr // 20))
        dur = int(rng.uniform(0.03, 0.6) * sr)
        e = min(n, s + dur)
        env = np.exp(-np.arange(e - s) / (rng.uniform(0.01, 0.3) * sr))
        if rng.random() < 0.5:
            f0 = rng.uniform(40, 2000)
            sig = np.sin(2 * np.pi * f0 * t[s:e] * (1 + rng.uniform(0, 1) * env))  # kick-like sweep too
        else:
            sig = rng.standard_normal(e - s)
        amp = 10 ** rng.uniform(-1.5, 0)
        x[s:e] += (amp * env * sig)[:, None] * rng.uniform(0.6, 1.0, 2)
    return (0.1 * x / max(float(np.sqrt((x ** 2).mean())), 1e-9)).astype(np.float32)


def is_val(track: Path) -> bool:
    return int(hashlib.sha1(track.stem.encode()).hexdigest(), 16) % 8 == 0


def ensure_packages(need_all: bool = True) -> None:
    """Install the music packages; with ``need_all=False`` (smoke runs) one installed is enough."""
    missing = [p for p, d in PACKAGES.items() if not Path(d).is_dir()]
    if not missing or (not need_all and len(missing) < len(PACKAGES)):
        return
    if not need_all:
        missing = missing[:1]
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SystemExit(f"missing music packages {missing}: apt-get install --no-install-recommends {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True, env=env)


def list_tracks() -> list[Path]:
    tracks = []
    for d in PACKAGES.values():
        tracks += sorted(p for p in Path(d).rglob("*.ogg") if "silence" not in p.stem)
    return tracks


def load_track(path: Path | None) -> np.ndarray | None:
    """Decoded stereo float32 at SR; ``None`` gives 20 s of synthetic hits (smoke runs only)."""
    import soundfile as sf
    import soxr

    if path is None:
        return synthetic_hits(np.random.default_rng(len(str(path))), 20 * SR, SR)

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # a damaged file costs one track, not the recipe
        print(f"skip {path}: {e}", file=sys.stderr)
        return None
    if x.shape[1] == 1:
        x = np.repeat(x, 2, axis=1)
    x = x[:, :2]
    if sr != SR:
        x = soxr.resample(x, sr, SR)
    return np.ascontiguousarray(x, dtype=np.float32)


def lufs(x: np.ndarray, sr: int) -> float:
    import pyloudnorm

    v = pyloudnorm.Meter(sr).integrated_loudness(x.astype(np.float64))
    return float(v) if math.isfinite(v) else -100.0


def apply_limiter(x: np.ndarray, sr: int, kind: str, drive_db: float, ceiling_db: float,
                  release_ms: float, lookahead_ms: float):
    """(y, x_ref, log_gain): x_ref = drive * x aligned with y; log_gain NaN if not reported."""
    drive = 10.0 ** (drive_db / 20.0)
    if kind == "project":
        from realtime.dsp.processors.limiter import limit

        # drive applied here: the limiter's own input-gain knob stops at +24 dB
        y, g = limit(x * drive, sr, ceiling_db=ceiling_db, release_ms=release_ms, lookahead_ms=lookahead_ms)
        L = int(round(lookahead_ms * 1e-3 * sr))
        ref = np.zeros_like(x)
        ref[L:] = x[: len(x) - L] * drive
        return y, ref, np.log(np.maximum(g, 1e-6)).astype(np.float32)
    import pedalboard

    lim = pedalboard.Limiter(threshold_db=ceiling_db, release_ms=release_ms)
    y = lim((x * drive).T.astype(np.float32), sr).T
    # JUCE's limiter ends in a make-up gain of (3.75 dB - threshold) and a clip at 0 dBFS (measured
    # with a quiet sine): the reference includes the make-up, so that only the dynamic part is undone.
    ref = (x * drive * pedalboard_makeup(ceiling_db)).astype(np.float32)
    return np.ascontiguousarray(y, np.float32), ref, np.full(len(x), np.nan, np.float32)


def pedalboard_makeup(ceiling_db: float) -> float:
    return 10.0 ** ((PEDALBOARD_MAKEUP_DB - ceiling_db) / 20.0)


def limit_to_loudness(x: np.ndarray, sr: int, target: float, kind: str, ceiling_db: float,
                      release_ms: float, lookahead_ms: float, iters: int = 6):
    """Find the drive that brings the limited output to ``target`` LUFS (secant steps)."""
    drive = target - REF_LUFS
    out = None
    for _ in range(iters):
        out = apply_limiter(x, sr, kind, drive, ceiling_db, release_ms, lookahead_ms)
        err = target - lufs(out[0], sr)
        if abs(err) < 0.3:
            break
        drive += 2.0 * err  # a limiter turns ~1 dB of drive into well under 1 dB of loudness
        drive = min(max(drive, 0.0), MAX_DRIVE_DB)
    return out, drive


def draw_release(rng) -> float:
    while True:
        r = math.exp(rng.uniform(math.log(RELEASE_MS[0]), math.log(RELEASE_MS[1])))
        if not EVAL_RELEASE_BAND[0] <= r <= EVAL_RELEASE_BAND[1]:
            return r


def make_split(name: str, tracks: list[Path], n: int, seconds: float, out: Path, rng, rate_choices) -> None:
    import soxr

    max_len = int(seconds * max(rate_choices))
    Y = np.lib.format.open_memmap(out / f"{name}_y.npy", "w+", np.float16, (n, max_len, 2))
    X = np.lib.format.open_memmap(out / f"{name}_x.npy", "w+", np.float16, (n, max_len, 2))
    G = np.lib.format.open_memmap(out / f"{name}_g.npy", "w+", np.float16, (n, max_len))
    meta = []
    per_track = math.ceil(n / len(tracks))
    i = 0
    for ti, path in enumerate(tracks):
        if i >= n:
            break
        audio = load_track(path)
        if audio is None or len(audio) < int(seconds * SR) + 1:
            continue
        got = tries = 0
        while got < per_track and i < n and tries < 4 * per_track:
            tries += 1
            start = int(rng.integers(0, len(audio) - int(seconds * SR)))
            x = audio[start:start + int(seconds * SR)]
            loud = lufs(x, SR)
            if loud < MIN_LUFS:
                continue
            x = x * 10.0 ** ((REF_LUFS - loud) / 20.0)
            sr = int(rng.choice(rate_choices))
            if sr != SR:
                x = soxr.resample(x, SR, sr)
            if rng.random() < SYNTH_SHARE:  # bursts and hits: transients music rarely isolates
                x = synthetic_hits(rng, len(x), sr)
            u = rng.random()
            if u < CLEAN_SHARE:  # un-limited input: the model must learn to leave it alone
                peak_db = float(rng.uniform(-12.0, -0.5))
                ref = x * (10.0 ** (peak_db / 20.0) / max(float(np.abs(x).max()), 1e-9))
                Y[i, :len(x)], X[i, :len(x)], G[i, :len(x)] = ref, ref, 0.0
                Y[i, len(x):] = X[i, len(x):] = 0.0
                G[i, len(x):] = np.nan
                meta.append({"limiter": "none", "sr": sr, "peak_db": peak_db, "track": getattr(path, "name", "synthetic"),
                             "start": start, "len": len(x)})
                got += 1
                i += 1
                continue
            kind = "project" if u < CLEAN_SHARE + 0.65 * (1 - CLEAN_SHARE) else "pedalboard"
            setting = {"limiter": kind, "sr": sr, "target_lufs": float(rng.uniform(*TARGET_LUFS)),
                       "ceiling_db": float(rng.uniform(*CEILING_DB)), "release_ms": draw_release(rng),
                       "lookahead_ms": float(rng.uniform(*LOOKAHEAD_MS)) if kind == "project" else 0.0}
            (y, ref, g), drive = limit_to_loudness(x, sr, setting["target_lufs"], kind, setting["ceiling_db"],
                                                   setting["release_ms"], setting["lookahead_ms"])
            m = len(y)
            Y[i, :m], X[i, :m], G[i, :m] = y, ref, g
            Y[i, m:] = X[i, m:] = 0.0
            G[i, m:] = np.nan
            meta.append({**setting, "track": getattr(path, "name", "synthetic"), "start": start, "len": m,
                         "drive_db": drive, "ref_has_makeup": True,
                         "out_lufs": lufs(y, sr)})
            got += 1
            i += 1
        print(f"{name}: {i}/{n} segments ({ti + 1}/{len(tracks)} tracks)", flush=True)
    for a in (Y, X, G):
        a.flush()
    (out / f"{name}_meta.json").write_text(json.dumps({"n": i, "segments": meta}, indent=0))


def make_eval(tracks: list[Path], out: Path, seconds: float = 10.0, per_track: int = 2) -> None:
    """Longer held-out originals at REF_LUFS (44.1 kHz); the benchmark limits them itself."""
    rng = np.random.default_rng(1234)
    segs, names = [], []
    for path in tracks:
        audio = load_track(path)
        if audio is None or len(audio) < int(seconds * SR) + 1:
            continue
        for _ in range(per_track):
            start = int(rng.integers(0, len(audio) - int(seconds * SR)))
            x = audio[start:start + int(seconds * SR)]
            loud = lufs(x, SR)
            if loud < MIN_LUFS:
                continue
            segs.append(x * 10.0 ** ((REF_LUFS - loud) / 20.0))
            names.append(f"{path.name}@{start / SR:.1f}s")
    np.save(out / "eval_x.npy", np.stack(segs).astype(np.float32))
    (out / "eval_meta.json").write_text(json.dumps({"sr": SR, "ref_lufs": REF_LUFS, "segments": names,
                                                    "setting": EVAL_SETTING}, indent=0))


def build(out: Path = DEFAULT_OUT, n_train: int = 2400, n_val: int = 160, seconds: float = 2.0,
          seed: int = 0, max_tracks: int | None = None, eval_segments: bool = True) -> Path:
    """``max_tracks`` (per split) and ``eval_segments=False`` make the tiny smoke-run data set,
    which uses what music is installed, or synthetic hits when none is (a CI machine)."""
    if max_tracks is None:
        ensure_packages()
    out.mkdir(parents=True, exist_ok=True)
    tracks = list_tracks()
    train = [t for t in tracks if not is_val(t)][:max_tracks]
    val = [t for t in tracks if is_val(t)][:max_tracks]
    if max_tracks is not None and not (train and val):
        train, val = [None] * max_tracks, [None]
    if not train or not val:
        raise SystemExit(f"need training and validation tracks, found {len(train)} and {len(val)}")
    print(f"{len(train)} training tracks, {len(val)} held-out tracks", flush=True)
    rng = np.random.default_rng(seed)
    rng.shuffle(train)
    make_split("train", train, n_train, seconds, out, rng, (44100, 48000))
    make_split("val", val, n_val, seconds, out, rng, (44100,))
    if eval_segments:
        make_eval(val, out)
    (out / "DONE").write_text(json.dumps({"n_train": n_train, "n_val": n_val, "seconds": seconds, "seed": seed}))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--train", type=int, default=2400)
    ap.add_argument("--val", type=int, default=160)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    build(a.out, a.train, a.val, a.seconds, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
