"""Data recipe and on-the-fly mixer for the speech enhancer.

One command builds everything from Debian packages (it apt-gets the missing ones when run as
root; nothing else is downloaded)::

    .venv/bin/python -m models.enhancer.data            # -> data/enhancer/ (gitignored)
    .venv/bin/python -m models.enhancer.data --bench-only   # only select/, confirm/ and bench/ (seconds)
    # packages: fillets-ng-data-cs klettres-data ktuberling-data hedgewars-data
    #           megaglest-data sonic-pi-samples tuxpaint-stamps-default festvox-ru
    #           fillets-ng-data-nl drascula drascula-spanish drascula-italian warzone2100-data
    #           nexuiz-data ufoai-sound scorched3d-data openarena-data openttd-opensfx
    #           extremetuxracer-data 7kaa-data freeciv-data simutrans-pak64 flightgear-data-base
    #           torcs-data wesnoth-1.16-data freedroidrpg-data (DEB_PACKAGES);
    #           held out (never trained on): kajongg gcin-voice bucklespring-data lincity-ng-data

It writes
  data/enhancer/train_speech.npy / train_noise.npy   (int16 pools at 48 kHz) + *.json indexes
  data/enhancer/val/{noisy,clean}/NNN.wav            (fixed held-out mixtures, 48 kHz mono)
  data/enhancer/manifest.json                        (what was used, held out and filtered; written after
                                                      the pools and val/: the trainer takes no folder without it)
  data/enhancer/select/{noisy,clean}/NNN.wav         (72 checkpoint-selection mixtures, held-out packages)
  data/enhancer/confirm/{noisy,clean}/NNN.wav        (72 fresh mixtures of the same files: a candidate
                                                      picked on select/ is confirmed here)
  data/enhancer/bench/{in_source,out_of_source}/     (benchmark sets: noisy/, clean/, meta.json)

Training mixes on the fly from the pools (``Mixer``): SNR -5..20 dB, level -50..-10 dBFS,
speech EQ / bandwidth limits, synthetic room impulse responses (target = direct path +
early reflections), real noise recordings plus synthesized pink/brown/white noise, mains
hum, fans, clicks, babble (summed speech) and music-like tones; microphone EQ, telephone /
16 kHz band limits (input and target alike) and G.711 / low-bit-rate MP3 coding (input only).
The in-source benchmark set keeps using the first recipe's packages (``v1_*_sources``). Validation uses voice
packs / languages and noise recordings that the training pools never contain; checkpoint
selection and the benchmark's out-of-source set use whole packages training never reads
(``HELDOUT_SPEECH_PACKAGES`` / ``HELDOUT_NOISE_PACKAGES``).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.signal as sps
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from models.enhancer.degrade import MP3_SETTINGS, fit_length, g711, mic_eq, mp3_roundtrip
from models.enhancer.sources import (
    DEB_PACKAGES,
    HELDOUT_NOISE_PACKAGES,
    HELDOUT_ROOTS,
    HELDOUT_SPEECH_PACKAGES,
    _bytes,
    _read,
    heldout_noise_sources,
    heldout_speech_sources,
    install_packages,
    noise_sources,
    package_of,
    speech_sources,
    split_description,
    v1_noise_sources,
    v1_speech_sources,
)
from models.reserved import RESERVED_PACKAGES  # noqa: F401 (the recipe's tests check against it)
from realtime.argtypes import OneLineParser

SR = 48000
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "data" / "enhancer"
# the first validation mixtures (000-023) pick the checkpoint during training; the benchmark
# leaves them out by default, so its figures come from clips that influenced nothing
SELECTION_CLIPS = 24
# checkpoint-selection mixtures in select/ (held-out packages): 24 until the tenth session, when
# neighbouring checkpoints' scores swung by ±0.05 on them; the first 24 of the 72 are those 24
# (one RNG stream), and the benchmark's clips come from their own streams, so they are unchanged
SELECT_MIXTURES = 72

def _to48k(x: np.ndarray, sr: int) -> np.ndarray:
    if sr == SR:
        return x.astype(np.float32)
    import soxr

    return soxr.resample(x, sr, SR, quality="HQ").astype(np.float32)


def _trim(x: np.ndarray, thresh_db: float = -45.0) -> np.ndarray:
    """Trim leading/trailing silence (20 ms frames below peak-relative threshold)."""
    n = 960
    if len(x) < 2 * n:
        return x
    fr = x[: len(x) // n * n].reshape(-1, n)
    e = 10 * np.log10(np.mean(fr**2, axis=1) + 1e-12)
    keep = np.nonzero(e > e.max() + thresh_db)[0]
    if len(keep) == 0:
        return x[:0]
    a = max(0, keep[0] - 1) * n
    b = min(len(x), (keep[-1] + 2) * n)
    return x[a:b]


def load_pool(sources, kind: str, log, exclude_hashes=(), int16: bool = False) -> tuple[dict, dict]:
    """Load, dedupe (content hash), resample, trim and filter. Returns pools per split.

    ``exclude_hashes``: MD5s of files that must not be loaded (e.g. the training files, when a
    benchmark set is built on its own). ``int16``: keep clips as int16 (the pools' format; tens of
    hours of float32 would not fit in memory); the benchmark sets are mixed from float32 clips."""
    seen: dict[str, str] = {h: "excluded" for h in exclude_hashes}
    pools = {split: [] for split in dict.fromkeys(sp for _, _, sp in sources)} | {"train": [], "val": []}
    filtered: dict[str, int] = {}

    def drop(why):
        filtered[why] = filtered.get(why, 0) + 1

    for i, (path, group, split) in enumerate(sources):
        try:
            raw = _bytes(path)
        except (OSError, KeyError):
            drop("unreadable")
            continue
        h = hashlib.md5(raw).hexdigest()
        if h in seen:
            drop("duplicate file (same bytes as another source)")
            continue
        seen[h] = path
        try:
            x, sr = _read(path, raw)
        except Exception:
            drop("undecodable")
            continue
        if sr < 8000:
            drop("sample rate < 8 kHz")
            continue
        x = _to48k(x, sr)
        if kind == "speech":
            x = _trim(x)
            if len(x) < int(0.25 * SR):
                drop("speech shorter than 0.25 s after trimming")
                continue
        else:
            if len(x) < int(0.1 * SR):
                drop("noise shorter than 0.1 s")
                continue
        peak = float(np.max(np.abs(x))) if len(x) else 0.0
        rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
        if rms < 10 ** (-60 / 20):
            drop("near-silent (< -60 dBFS RMS)")
            continue
        if kind == "speech" and np.mean(np.abs(x) > 0.999 * max(peak, 1e-9)) > 0.001 and peak > 0.98:
            drop("clipped speech")
            continue
        x = x / max(peak, 1e-6) * 0.9
        pools[split].append((_int16(x) if int16 else x, group, path, sr))
        if (i + 1) % 500 == 0:
            log(f"  {kind}: {i + 1}/{len(sources)} files")
    return pools, filtered


def _int16(x: np.ndarray) -> np.ndarray:
    return x if x.dtype == np.int16 else np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def save_pool(items, path: Path) -> dict:
    lens = [len(x) for x, *_ in items]
    offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    # written in place (no second copy of the pool in memory)
    data = np.lib.format.open_memmap(path.with_suffix(".npy"), mode="w+", dtype=np.int16, shape=(int(offs[-1]),))
    for (x, *_), o in zip(items, offs[:-1]):
        data[o : o + len(x)] = _int16(x)
    data.flush()
    del data
    groups = sorted({g for _, g, *_ in items})
    per_pkg: dict[str, list] = {}
    for (x, g, *_), n in zip(items, lens):
        acc = per_pkg.setdefault(package_of(g), [0, 0])
        acc[0] += 1
        acc[1] += n
    idx = {
        "offsets": offs.tolist(),
        "group": [groups.index(g) for _, g, *_ in items],
        "groups": groups,
        "files": [p for _, _, p, _ in items],
        "native_sr": [s for *_, s in items],
    }
    path.with_suffix(".json").write_text(json.dumps(idx))
    return {"files": len(items), "seconds": round(sum(lens) / SR, 1), "hours": round(sum(lens) / SR / 3600, 3),
            "packages": {k: {"files": v[0], "hours": round(v[1] / SR / 3600, 3)} for k, v in sorted(per_pkg.items())},
            "groups": groups}


# --------------------------------------------------------------------------------------
# Pools and the mixer (used by training, validation building and the smoke test)
# --------------------------------------------------------------------------------------
class Pool:
    """Clips in one array; ``group`` per clip (speaker group / recording set)."""

    def __init__(self, clips: list[np.ndarray], groups: list[int] | None = None,
                 targets: list[np.ndarray] | None = None):
        self.clips = clips
        self.group = np.asarray(groups if groups is not None else [0] * len(clips))
        # teacher targets (models/enhancer/targets.py): each clip through the shipped enhancer
        self.targets = targets

    @classmethod
    def load(cls, stem: Path, teacher: bool = False) -> "Pool":
        data = np.load(stem.with_suffix(".npy"), mmap_mode="r")
        idx = json.loads(stem.with_suffix(".json").read_text())
        o = idx["offsets"]
        clips = [data[o[i] : o[i + 1]] for i in range(len(o) - 1)]
        targets = None
        if teacher:
            from models.enhancer.targets import teacher_path

            tp = teacher_path(stem)
            if not tp.exists():
                raise SystemExit(f"no teacher targets {tp}: run `python -m models.enhancer.targets --data {stem.parent}`")
            t = np.load(tp, mmap_mode="r")
            if t.shape != data.shape:
                raise SystemExit(f"{tp} does not match {stem.with_suffix('.npy')} (rebuilt since?): "
                                 f"run `python -m models.enhancer.targets --data {stem.parent}` again")
            targets = [t[o[i] : o[i + 1]] for i in range(len(o) - 1)]
        return cls(clips, idx["group"], targets)

    @staticmethod
    def _float(c: np.ndarray) -> np.ndarray:
        return c.astype(np.float32) / 32767.0 if c.dtype == np.int16 else np.asarray(c, np.float32)

    def clip(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Clip ``i`` (or its samples start:stop) as float32; only those samples are converted (a
        noise recording can run for minutes, a draw needs 1.5 s of it)."""
        return self._float(self.clips[i][start:stop])

    def target(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The teacher target of clip ``i`` (or of its samples start:stop), as float32."""
        return self._float(self.targets[i][start:stop])

    def __len__(self):
        return len(self.clips)


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def colored_noise(rng, n, exponent):
    """1/f^exponent noise (0 white, 1 pink, 2 brown)."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    spec /= f ** (exponent / 2)
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return (x / (np.std(x) + 1e-12)).astype(np.float32)


def synth_noise(rng, n, speech: Pool | None = None) -> np.ndarray:
    kind = rng.choice(["pink", "brown", "white", "hum", "fan", "clicks", "babble", "music"],
                      p=[0.16, 0.12, 0.06, 0.1, 0.16, 0.1, 0.18, 0.12])
    t = np.arange(n) / SR
    if kind in ("pink", "brown", "white"):
        x = colored_noise(rng, n, {"pink": 1.0, "brown": 2.0, "white": 0.0}[kind] + rng.uniform(-0.3, 0.3))
        if rng.random() < 0.5:  # slow level modulation
            x *= (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 6.3))).astype(np.float32)
    elif kind == "hum":
        f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.99, 1.01)
        x = np.zeros(n)
        for h in range(1, int(rng.integers(3, 20))):
            x += rng.uniform(0, 1) / h**rng.uniform(0.3, 1.5) * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3))
        x += 0.05 * colored_noise(rng, n, 1.0)
    elif kind == "fan":
        b, a = sps.butter(2, rng.uniform(200, 4000) / (SR / 2), btype="low")
        x = sps.lfilter(b, a, rng.standard_normal(n))
        x /= np.std(x) + 1e-12
        bp = rng.uniform(30, 300)
        for h in range(1, 6):
            x += rng.uniform(0, 0.6) / h * np.sin(2 * np.pi * bp * h * t * (1 + 0.002 * np.sin(2 * np.pi * 0.3 * t)))
    elif kind == "clicks":
        x = 0.02 * colored_noise(rng, n, 1.0)
        rate = rng.uniform(2, 15)
        pos = np.cumsum(rng.exponential(SR / rate, size=int(n / SR * rate * 2) + 2)).astype(int)
        for p in pos[pos < n - 500]:
            ln = int(rng.integers(30, 400))
            x[p : p + ln] += rng.uniform(0.2, 1) * rng.standard_normal(ln) * np.exp(-np.arange(ln) / (ln / 4))
    elif kind == "babble" and speech is not None and len(speech) > 0:
        x = np.zeros(n)
        for _ in range(int(rng.integers(3, 9))):
            x += speech_track(rng, speech, n, gap=(0.0, 0.3), same_group=False) * rng.uniform(0.3, 1.0)
    else:  # music-like: random harmonic notes with envelopes
        x = np.zeros(n)
        pos = 0
        while pos < n:
            ln = int(rng.uniform(0.1, 0.8) * SR)
            f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
            seg = np.zeros(min(ln, n - pos))
            tt = np.arange(len(seg)) / SR
            for h in range(1, int(rng.integers(2, 10))):
                if f0 * h < SR / 2:
                    seg += rng.uniform(0, 1) / h * np.sin(2 * np.pi * f0 * h * tt)
            seg *= np.exp(-tt * rng.uniform(1, 10))
            x[pos : pos + len(seg)] += seg
            pos += int(ln * rng.uniform(0.3, 1.0))
    x = np.asarray(x, np.float32)
    return x / (_rms(x) + 1e-9)


def split_floor(c: np.ndarray, max_cut_db: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """(speech, floor) of a recorded utterance, speech + floor == c: the recording's own steady
    background (hiss, hum, room tone), estimated per bin from the 10th percentile of the clip's frame
    powers, is taken out by a smoothed power-subtraction gain (at most ``max_cut_db``). Bins well
    above the floor keep their speech (10 dB above it: -1 dB), so what goes is what a listener hears
    as the recording's noise, not its voice."""
    nper = 1024
    if len(c) < 4 * nper:
        return c, np.zeros_like(c)
    _, _, X = sps.stft(c, nperseg=nper)
    P = np.abs(X) ** 2
    live = P.sum(0) > 1e-12  # digital silence has no floor to estimate
    if live.sum() < 8:
        return c, np.zeros_like(c)
    # a bin's power over noise-only frames is exponentially distributed: its 10th percentile is
    # 0.105 x the mean
    floor = np.percentile(P[:, live], 10, axis=1, keepdims=True) / 0.105
    g = np.sqrt(np.clip(1.0 - 2.0 * floor / (P + 1e-20), 0.0, 1.0))
    # centred in time (offline: a target may look ahead): held over a frame either side, so onsets
    # and decays keep their gain, then smoothed, so the cut leaves no musical noise
    g = uniform_filter1d(maximum_filter1d(g, 3, axis=1), 3, axis=1)
    g = np.maximum(g, 10 ** (-max_cut_db / 20))
    speech = sps.istft(X * g, nperseg=nper)[1][: len(c)].astype(np.float32)
    speech = np.concatenate([speech, np.zeros(len(c) - len(speech), np.float32)])
    return speech, (c - speech).astype(np.float32)


def speech_track(rng, pool: Pool, n, gap=(0.05, 0.6), same_group=True, lead=(0.0, 0.5),
                 floor_track: np.ndarray | None = None, dc_track: np.ndarray | None = None,
                 midword: bool = False) -> np.ndarray:
    """Concatenate utterances (one speaker group) with pauses into n samples. With ``floor_track``
    (n zeros) each utterance's own noise floor goes there and the returned track is the rest
    (``split_floor``; with a pool of teacher targets the rest is the teacher's output and the floor
    what the teacher took out). With ``dc_track`` (n zeros) each utterance's DC offset (its mean: some
    recorders add one, gcin-voice's up to half its RMS) goes there and the returned voice is
    without it; the draws are the same either way. ``midword``: the track starts inside its first
    utterance (10-70 % of the way in), with no lead: a stream that begins in the middle of speech."""
    out = np.zeros(n, np.float32)
    i0 = int(rng.integers(len(pool)))
    cands = np.nonzero(pool.group == pool.group[i0])[0] if same_group else None
    pos = 0 if midword else int(rng.uniform(*lead) * SR)
    first = True
    while pos < n:
        i = i0 if first else int(rng.choice(cands) if cands is not None else rng.integers(len(pool)))
        start, stop = 0, len(pool.clips[i])
        if first and midword:
            start = int(rng.uniform(0.1, 0.7) * stop)
        first = False
        if stop - start > n - pos and pos == 0 and stop - start > n:
            start = int(rng.integers(start, stop - n))
            stop = start + n
        c = pool.clip(i, start, min(stop, start + n - pos))
        g = rng.uniform(0.5, 1.0)
        if dc_track is not None and len(c):
            dc = float(np.mean(c))
            c = c - dc
            dc_track[pos : pos + len(c)] = dc * g
        if floor_track is not None:
            if pool.targets is not None:
                t = pool.target(i, start, start + len(c))
                c, fl = t, c - t
            else:
                c, fl = split_floor(c)
            floor_track[pos : pos + len(c)] = fl * g
        out[pos : pos + len(c)] = c * g
        pos += len(c) + int(rng.uniform(*gap) * SR)
    return out


def noise_track(rng, pool: Pool | None, n, speech: Pool | None = None, p_synth=0.35) -> np.ndarray:
    if pool is None or len(pool) == 0 or rng.random() < p_synth:
        return synth_noise(rng, n, speech)
    i = int(rng.integers(len(pool)))
    if len(pool.clips[i]) >= n:
        s = int(rng.integers(0, len(pool.clips[i]) - n + 1))
        x = pool.clip(i, s, s + n).copy()
    else:
        c = pool.clip(i)  # loop short clips with random gaps (one-shots become sparse events)
        x = np.zeros(n, np.float32)
        pos = int(rng.integers(0, len(c)))
        x[: max(0, len(c) - pos)] = c[pos : pos + n]
        pos = len(c) - pos
        while pos < n:
            pos += int(rng.uniform(0, 0.5) * SR) if len(c) < SR else 0
            seg = c[: n - pos] if pos < n else c[:0]
            x[pos : pos + len(seg)] = seg
            pos += len(c)
    r = _rms(x)
    if r < 1e-5:
        return synth_noise(rng, n, speech)
    return x / r


def random_eq(rng, x, bandlimit=True):
    """Random tilt/peaking EQ and (optionally) a bandwidth limit (telephone .. full band)."""
    y = x
    for _ in range(int(rng.integers(0, 3))):
        f = np.exp(rng.uniform(np.log(100), np.log(12000)))
        g = rng.uniform(-9, 9)
        q = rng.uniform(0.5, 2.0)
        A = 10 ** (g / 40)
        w = 2 * np.pi * f / SR
        al = np.sin(w) / (2 * q)
        b = np.array([1 + al * A, -2 * np.cos(w), 1 - al * A])
        a = np.array([1 + al / A, -2 * np.cos(w), 1 - al / A])
        y = sps.lfilter(b / a[0], a / a[0], y)
    if rng.random() < 0.3:  # high-pass (mic rumble filter)
        b, a = sps.butter(2, rng.uniform(40, 200) / (SR / 2), btype="high")
        y = sps.lfilter(b, a, y)
    if bandlimit and rng.random() < 0.3:
        fc = rng.choice([3800.0, 7000.0, 11000.0, 16000.0])
        b, a = sps.butter(6, fc / (SR / 2), btype="low")
        y = sps.lfilter(b, a, y)
    return np.asarray(y, np.float32)


def synth_rir(rng, early_ms=50.0):
    """Synthetic room impulse response: direct path + sparse early reflections + diffuse
    exponentially decaying tail with frequency-dependent decay. Returns (full, early)."""
    rt60 = rng.uniform(0.15, 0.9)
    n = int(min(rt60 * 1.2, 1.0) * SR)
    t = np.arange(n) / SR
    h = np.zeros(n)
    h[0] = 1.0
    for _ in range(int(rng.integers(3, 12))):  # early reflections
        d = int(rng.uniform(0.002, 0.04) * SR)
        h[d] += rng.uniform(-0.7, 0.7) * np.exp(-6.9 * d / SR / rt60)
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    b, a = sps.butter(1, rng.uniform(2000, 12000) / (SR / 2))
    tail = sps.lfilter(b, a, tail)
    onset = int(rng.uniform(0.003, 0.01) * SR)
    tail[:onset] = 0
    drr = 10 ** (rng.uniform(-3, 12) / 20)  # direct-to-reverberant ratio
    tail *= np.sqrt(1.0 / (np.sum(tail**2) + 1e-12)) / drr
    h = h + tail
    ne = int(early_ms * 1e-3 * SR)
    early = h[:ne].copy()
    early[int(0.6 * ne):] *= np.linspace(1, 0, ne - int(0.6 * ne))
    return h.astype(np.float32), early.astype(np.float32)


def level_step(rng, n) -> np.ndarray:
    """Gain envelope of a noise that changes level abruptly (a fan switched on, a door opening):
    1 on one side of a random sample and 6..60 dB lower (or silent) on the other, 0..20 ms ramp.
    Without it the network learned a noise floor that rises over seconds."""
    t0 = int(rng.uniform(0.05, 0.7) * n)
    low = 0.0 if rng.random() < 0.2 else 10 ** (-rng.uniform(6, 60) / 20)
    ramp = max(1, int(rng.uniform(0, 0.02) * SR))
    env = np.ones(n, np.float32)
    r = np.linspace(low, 1.0, ramp, dtype=np.float32)
    if rng.random() < 0.7:  # louder
        env[:t0] = low
        env[t0 : t0 + ramp] = r[: n - t0]
    else:  # quieter
        env[t0:] = low
        env[t0 : t0 + ramp] = r[::-1][: n - t0]
    return env


class Mixer:
    """Draws (noisy, clean) pairs. Deterministic for a given rng.

    Beyond SNR, level, speech EQ, reverberation, noise level steps and onsets, three degradations
    of the recording chain, each applied with its probability (``p_*``; at 0 it draws no random
    numbers):

    - ``p_mic_eq``: a microphone response (``mic_eq``) on the noisy input and the target alike;
    - ``p_narrow``: telephone / narrow-band: input *and* target through 8 kHz (half of them) or
      16 kHz and back, so the network learns to keep narrow-band speech, not to "restore" it;
    - ``p_codec``: a codec on the noisy input only: G.711 mu-law / A-law at 8 kHz on telephone-band
      mixtures, else low-bit-rate MP3 (``MP3_SETTINGS``), whose band edge the target is limited to
      as well (what the encoder cut cannot come back; its coding noise is what is removed).

    ``level_db``: RMS level of the noisy mixture, -50..-10 dBFS by default (peaks kept below 0.99).
    ``gap``: range of the pauses (s) between utterances.
    ``clean_floor``: targets without the recordings' own noise floor (``split_floor``, or what the
    teacher took out where the speech pool has teacher targets; the input keeps it, through the same
    EQ and room as the voice), so the network learns to remove a voice recording's hiss as noise too.
    ``dc_free``: the voices without their recordings' DC offsets (``speech_track``), input and target.
    ``p_midword``: share of segments that start inside an utterance (``speech_track``'s ``midword``).
    """

    def __init__(self, speech: Pool, noise: Pool | None, seconds: float = 3.0,
                 snr=(-5.0, 20.0), level_db=(-50.0, -10.0), p_reverb=0.4, p_noise2=0.3,
                 p_clean=0.05, p_speechless=0.05, p_level_step=0.0, p_onset=0.0,
                 p_mic_eq=0.5, p_narrow=0.2, p_codec=0.15, gap=(0.05, 0.6), clean_floor=False, dc_free=False,
                 p_midword=0.0):
        self.speech, self.noise = speech, noise
        self.gap, self.clean_floor, self.dc_free = gap, clean_floor, dc_free
        # both default to 0 and then draw no random numbers, so the recipe's fixed validation
        # mixtures stay the same whatever training uses
        self.p_level_step, self.p_onset, self.p_midword = p_level_step, p_onset, p_midword
        self.n = int(seconds * SR)
        self.snr, self.level_db = snr, level_db
        self.p_reverb, self.p_noise2 = p_reverb, p_noise2
        self.p_clean, self.p_speechless = p_clean, p_speechless
        self.p_mic_eq, self.p_narrow, self.p_codec = p_mic_eq, p_narrow, p_codec

    def draw(self, rng) -> tuple[np.ndarray, np.ndarray]:
        n = self.n
        floor = np.zeros(n, np.float32) if self.clean_floor else None
        # dc_free: the voices without their recordings' DC offsets, in input and target alike (the
        # runtime's input DC blocker takes an offset out before the network sees it)
        # p_midword: the segment starts inside an utterance, so a network that starts from its zero
        # state learns to pass a voice already under way (a file cut mid-word lost its first 200 ms)
        midword = bool(self.p_midword and rng.random() < self.p_midword)
        s = speech_track(rng, self.speech, n, gap=self.gap, floor_track=floor,
                         dc_track=np.zeros(n, np.float32) if self.dc_free else None, midword=midword)
        if floor is None:
            s = random_eq(rng, s)
        else:  # the floor is part of the recorded voice: the same EQ and room (the same draws)
            s, floor = random_eq(rng, np.stack([s, floor]))
        if rng.random() < self.p_reverb:
            full, early = synth_rir(rng)
            s_rev = sps.fftconvolve(s, full)[:n].astype(np.float32)
            clean = sps.fftconvolve(s, early)[:n].astype(np.float32)
            if floor is not None:
                floor = sps.fftconvolve(floor, full)[:n].astype(np.float32)
        else:
            s_rev = clean = s
        if rng.random() < self.p_speechless:
            s_rev = s_rev * 0
            clean = clean * 0
            floor = None if floor is None else floor * 0
        noise = noise_track(rng, self.noise, n, self.speech)
        if rng.random() < self.p_noise2:
            noise = noise + noise_track(rng, self.noise, n, self.speech) * rng.uniform(0.2, 1.0)
        noise = random_eq(rng, noise, bandlimit=False)
        if self.p_level_step and rng.random() < self.p_level_step:
            noise = noise * level_step(rng, n)
        # SNR over the active speech portion
        act = np.abs(s_rev) > 1e-4
        ps = _rms(s_rev[act]) if act.sum() > 100 else 0.0
        pn = _rms(noise)
        snr = rng.uniform(*self.snr)
        if rng.random() < self.p_clean:
            g_n = 0.0
        elif ps > 0:
            g_n = ps / (pn + 1e-12) * 10 ** (-snr / 20)
        else:
            g_n = 1.0 / (pn + 1e-12)
        noisy = s_rev + g_n * noise
        if floor is not None and ps > 0:  # the recording's own floor: in the input, not in the target
            noisy = noisy + floor
        if self.p_mic_eq and rng.random() < self.p_mic_eq:
            sos = mic_eq(rng)
            noisy, clean = sps.sosfilt(sos, noisy), sps.sosfilt(sos, clean)
        lvl = 10 ** (rng.uniform(*self.level_db) / 20)
        g = lvl / (_rms(noisy) + 1e-9)
        peak = np.max(np.abs(noisy)) * g
        if peak > 0.99:
            g *= 0.99 / peak
        noisy, clean = (noisy * g).astype(np.float32), (clean * g).astype(np.float32)
        band = 0
        if self.p_narrow and rng.random() < self.p_narrow:
            band = 8000 if rng.random() < 0.5 else 16000
            noisy, clean = band_limit(noisy, band), band_limit(clean, band)
        if self.p_codec and rng.random() < self.p_codec:
            if band == 8000:
                noisy = g711(noisy, "mu" if rng.random() < 0.5 else "alaw")
            else:
                rate, level, edge = MP3_SETTINGS[int(rng.integers(len(MP3_SETTINGS)))]
                noisy = mp3_roundtrip(noisy, rate, level)
                if not band or 2 * edge < band:
                    clean = band_limit(clean, 2 * edge)
            noisy = np.clip(noisy, -1.0, 1.0).astype(np.float32)
        if self.p_onset and rng.random() < self.p_onset:
            # the stream starts out of digital silence at any phase of the 240-sample frame grid
            # (the runtime skips silent frames, so its network then starts from a fresh state
            # on a frame holding 1..240 new samples, exactly as here)
            r = int(rng.integers(0, 240))
            noisy[:r] = 0
            clean[:r] = 0
        return noisy, clean


# --------------------------------------------------------------------------------------
# Tiny synthetic speech-like corpus (smoke training / CI): vowel-like voiced segments
# --------------------------------------------------------------------------------------
def synth_speech_clip(rng, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(90, 250) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    ph = 2 * np.pi * np.cumsum(f0) / SR
    x = np.zeros(n)
    formants = rng.uniform([300, 900, 2300], [900, 2200, 3200])
    for h in range(1, 60):
        fh = f0 * h
        amp = sum(np.exp(-0.5 * ((fh - F) / 120) ** 2) for F in formants) + 0.02
        x += np.where(fh < SR / 2, amp / h**0.5, 0) * np.sin(h * ph)
    env = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)), 0, None) ** 0.5
    x *= env
    return (0.3 * x / (np.max(np.abs(x)) + 1e-9)).astype(np.float32)


def synthetic_pools(seed=0, n_speech=12, n_noise=6) -> tuple[Pool, Pool]:
    rng = np.random.default_rng(seed)
    sp = [synth_speech_clip(rng, rng.uniform(0.6, 2.0)) for _ in range(n_speech)]
    no = [synth_noise(rng, SR * 2) * 0.1 for _ in range(n_noise)]
    return Pool(sp, list(range(n_speech))), Pool(no)


# --------------------------------------------------------------------------------------
# Benchmark and checkpoint-selection mixtures (fixed files, one condition per clip)
# --------------------------------------------------------------------------------------
BENCH_SNRS = (0.0, 5.0, 10.0, 15.0)
BENCH_CONDITIONS = ("wideband", "narrow8k", "narrow16k", "reverb", "low_level")


def band_limit(x: np.ndarray, rate: int) -> np.ndarray:
    """Through ``rate`` Hz and back to 48 kHz: what a narrow-band (telephone / 16 kHz) recording keeps."""
    import soxr

    return fit_length(soxr.resample(soxr.resample(x, SR, rate, quality="HQ"), rate, SR, quality="HQ"), len(x))


def by_source(pool: Pool, names: list[str]) -> list[list[Pool]]:
    """Split a pool into [package][group] sub-pools (``names``: group names, "package/group"), so a
    benchmark draws each package, then each voice / recording set within it, equally often."""
    packages: dict[str, list[Pool]] = {}
    for g, name in enumerate(names):
        idx = np.nonzero(pool.group == g)[0]
        if len(idx):
            packages.setdefault(name.split("/")[0], []).append(Pool([pool.clips[i] for i in idx], [0] * len(idx)))
    return [packages[k] for k in sorted(packages)]


def _pick(rng, sources: list[list[Pool]]) -> Pool:
    groups = sources[int(rng.integers(len(sources)))]
    return groups[int(rng.integers(len(groups)))]


def bench_mixture(rng, speech: Pool, noise: Pool, snr_db: float, condition: str, n: int):
    """One (noisy, clean, info) benchmark mixture: real speech + one real noise recording.

    ``condition``: "wideband" (as recorded), "narrow8k"/"narrow16k" (speech and noise band-limited
    through 8/16 kHz, SNR measured after), "reverb" (synthetic room; the target keeps the direct
    path and 50 ms of early reflections, as in training), "low_level" (-50..-42 dBFS instead of
    -32..-20 dBFS). SNR is over the active speech, as in ``Mixer``. The input keeps each recording's
    DC offset (the recorder's, so it is added after the room); the reference is the voice without
    it, and the SNR is the voice's (an offset is no part of a voice: DNSMOS marks a clean reference
    down by 0.28 for it, and an enhancer that takes it out, as RNNoise does, lost SI-SDR for that)."""
    dc = np.zeros(n, np.float32)
    s = speech_track(rng, speech, n, dc_track=dc)
    nz = noise_track(rng, noise, n, p_synth=0.0)
    if condition == "reverb":
        full, early = synth_rir(rng)
        s_rev = sps.fftconvolve(s, full)[:n].astype(np.float32)
        clean = sps.fftconvolve(s, early)[:n].astype(np.float32)
    else:
        s_rev = clean = s
    if condition in ("narrow8k", "narrow16k"):
        rate = 8000 if condition == "narrow8k" else 16000
        s_rev = clean = band_limit(s, rate)
        nz = band_limit(nz, rate)
    act = np.abs(s_rev) > 1e-4
    ps = _rms(s_rev[act]) if act.sum() > 100 else _rms(s_rev)
    noisy = s_rev + dc + nz * (ps / (_rms(nz) + 1e-12) * 10 ** (-snr_db / 20))
    level = rng.uniform(-50, -42) if condition == "low_level" else rng.uniform(-32, -20)
    g = 10 ** (level / 20) / (_rms(noisy) + 1e-9)
    g = min(g, 0.99 / (float(np.max(np.abs(noisy))) + 1e-9))
    info = {"snr_db": snr_db, "condition": condition, "level_dbfs": round(20 * np.log10(_rms(noisy * g)), 1)}
    return (noisy * g).astype(np.float32), (clean * g).astype(np.float32), info


def write_clip(path: Path, x: np.ndarray) -> None:
    """A 48 kHz float32 WAV with nothing but the samples: libsndfile adds a PEAK chunk with a
    timestamp to float WAVs, so two builds of the same clips differed in every file's checksum;
    these files are byte-identical whenever their audio is (``md5sum`` checks a rebuild)."""
    from scipy.io import wavfile

    wavfile.write(path, SR, np.ascontiguousarray(x, dtype=np.float32))


def write_mixtures(folder: Path, speech: list[list[Pool]], noise: list[list[Pool]], count: int, seconds: float,
                   rng) -> dict:
    """``count`` bench mixtures into folder/{noisy,clean}/NNN.wav + folder/meta.json.

    ``speech`` / ``noise``: sub-pools per package and group (``by_source``); each clip draws a
    package, then a group, uniformly. Clip i has condition ``BENCH_CONDITIONS[i % 5]`` and SNR ``BENCH_SNRS[i // 5 % 4]``, so any
    first 20 clips cover every (SNR band, condition) cell once (``bench enhancer --limit``)."""
    for kind, sources in (("speech", speech), ("noise", noise)):
        if not sources:  # e.g. the held-out packages failed to install: say so instead of numpy's "high <= 0"
            raise SystemExit(f"{folder}: no {kind} recordings for these mixtures (are the recipe's packages installed?)")
    (folder / "meta.json").unlink(missing_ok=True)  # written last: a set without it is not whole (stopped mid-way)
    for d in ("noisy", "clean"):
        (folder / d).mkdir(parents=True, exist_ok=True)
    clips = []
    n = int(seconds * SR)
    for i in range(count):
        cond = BENCH_CONDITIONS[i % len(BENCH_CONDITIONS)]
        snr = BENCH_SNRS[i // len(BENCH_CONDITIONS) % len(BENCH_SNRS)]
        noisy, clean, info = bench_mixture(rng, _pick(rng, speech), _pick(rng, noise), snr, cond, n)
        name = f"{i:03d}.wav"
        write_clip(folder / "noisy" / name, noisy)
        write_clip(folder / "clean" / name, clean)
        clips.append({"file": name, **info})
    meta = {"seconds_each": seconds, "conditions": list(BENCH_CONDITIONS), "snr_db": list(BENCH_SNRS), "clips": clips}
    from realtime.io.files import atomic_write_text

    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=0))
    return meta


def _as_sources(items) -> list[list[Pool]]:
    groups = sorted({g for _, g, *_ in items})
    return by_source(Pool([x for x, *_ in items], [groups.index(g) for _, g, *_ in items]), groups)


def write_selection_sets(out: Path, speech, noise, n: int, seconds: float, seed: int) -> None:
    """out/select/ and out/confirm/: n mixtures each of the same sources, from two RNG streams
    (select/'s is the one it always had, so its clips stay what every score so far was measured on)."""
    write_mixtures(out / "select", speech, noise, n, seconds, np.random.default_rng([seed, 0]))
    write_mixtures(out / "confirm", speech, noise, n, seconds, np.random.default_rng([seed, 3]))


def build_bench(out: Path, seconds: float = 4.0, reps: int = 3, n_select: int = SELECT_MIXTURES, seed: int = 2026,
                log=print, required: bool = True) -> dict | None:
    """Write the checkpoint-selection set and the two benchmark sets.

    - ``out/select/``: ``n_select`` mixtures from the held-out packages' selection files;
    - ``out/confirm/``: ``n_select`` fresh mixtures of the same files (other segments, noises, SNRs
      and conditions). A model picked as the best of many checkpoints on select/ scores there
      above what it is worth (the top of noisy draws); confirm/ scores it, and the model it would
      replace, without that bias before it is shipped;
    - ``out/bench/out_of_source/``: held-out packages (speech and noise training never reads);
    - ``out/bench/in_source/``: the held-out voice groups / noise sets of the training packages
      (files byte-identical to a training file are excluded).
    Each benchmark set has ``reps`` clips per (SNR band, condition) cell. Without the held-out
    packages it raises SystemExit, or (``required=False``, the full recipe) says so and returns None.

    Raises
    ------
    SystemExit
        The held-out packages are not installed and ``required`` is set."""
    ssrc, nsrc = speech_sources(), noise_sources()
    v1_val = {p for p, _, sp in v1_speech_sources() + v1_noise_sources() if sp == "val"}
    hs, hn = heldout_speech_sources(), heldout_noise_sources()
    if not hs or not hn:
        install_packages(log)
        hs, hn = heldout_speech_sources(), heldout_noise_sources()
    if not hs or not hn:
        msg = ("held-out sources missing (no select/ or bench/ sets): apt-get install -y --no-install-recommends "
               + " ".join(HELDOUT_SPEECH_PACKAGES + HELDOUT_NOISE_PACKAGES))
        if required:
            raise SystemExit(msg)
        log(msg)
        return None
    train_files = [p for p, _, sp in ssrc + nsrc if sp == "train"]
    assert not any(p.startswith(HELDOUT_ROOTS) for p in train_files), "a held-out source leaked into training"
    train_hashes = {hashlib.md5(_bytes(p)).hexdigest() for p in train_files}
    count = reps * len(BENCH_SNRS) * len(BENCH_CONDITIONS)
    man = {"seconds_each": seconds, "seed": seed, "held_out_packages": {
        "speech": list(HELDOUT_SPEECH_PACKAGES), "noise": list(HELDOUT_NOISE_PACKAGES)}}
    hsp, _ = load_pool(hs, "speech", log, train_hashes)
    hno, _ = load_pool(hn, "noise", log, train_hashes)
    write_selection_sets(out, _as_sources(hsp["select"]), _as_sources(hno["select"]), n_select, seconds, seed)
    write_mixtures(out / "bench" / "out_of_source", _as_sources(hsp["bench"]), _as_sources(hno["bench"]), count, seconds,
                   np.random.default_rng([seed, 1]))
    if ssrc and nsrc:
        # the first recipe's held-out groups only: the same in-source clips whatever packages training adds
        vsp, _ = load_pool([t for t in ssrc if t[2] == "val" and t[0] in v1_val], "speech", log, train_hashes)
        vno, _ = load_pool([t for t in nsrc if t[2] == "val" and t[0] in v1_val], "noise", log, train_hashes)
        write_mixtures(out / "bench" / "in_source", _as_sources(vsp["val"]), _as_sources(vno["val"]), count, seconds,
                       np.random.default_rng([seed, 2]))
    man["sets"] = {k: {"speech_files": len(a[s]), "noise_files": len(b[s]),
                       "speech_groups": sorted({g for _, g, *_ in a[s]}), "noise_groups": sorted({g for _, g, *_ in b[s]})}
                   for k, s, a, b in (("select", "select", hsp, hno), ("out_of_source", "bench", hsp, hno))
                   + ((("in_source", "val", vsp, vno),) if ssrc and nsrc else ())}
    (out / "bench" / "manifest.json").write_text(json.dumps(man, indent=1))
    log(f"select/, confirm/ ({n_select} each) and bench/ ({count} per set) -> {out}")
    return man


# --------------------------------------------------------------------------------------
MANIFEST = "manifest.json"  # written last: the mark of a finished build (or unpack)


def is_built(out: Path) -> bool:
    """Whether ``out`` holds training pools a build finished (an interrupted one left no manifest)."""
    return (out / MANIFEST).is_file() and all((out / f"{p}.npy").is_file() for p in ("train_speech", "train_noise"))


def write_manifest(out: Path, man: dict) -> None:
    from realtime.io.files import atomic_write_text

    atomic_write_text(out / MANIFEST, json.dumps(man, indent=1))


def build(out: Path, n_val: int = 120, val_seconds: float = 5.0, seed: int = 1234) -> dict:
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a rebuild cut short is no data

    def log(m):
        print(f"[{time.time() - t0:6.1f}s] {m}", flush=True)

    ssrc, nsrc = speech_sources(), noise_sources()
    if not ssrc or not nsrc:
        install_packages(log)
        ssrc, nsrc = speech_sources(), noise_sources()
    if not ssrc or not nsrc:
        raise SystemExit("no source audio found: apt-get install -y --no-install-recommends " + " ".join(DEB_PACKAGES))
    log(f"speech files: {len(ssrc)}, noise files: {len(nsrc)}")
    sp, sp_f = load_pool(ssrc, "speech", log, int16=True)
    no, no_f = load_pool(nsrc, "noise", log, int16=True)
    man = {"sample_rate": SR, "filtered": {"speech": sp_f, "noise": no_f}, "packages": list(DEB_PACKAGES),
           **split_description(),
           "held_out_packages": {"speech": list(HELDOUT_SPEECH_PACKAGES), "noise": list(HELDOUT_NOISE_PACKAGES)}}
    man["train_speech"] = save_pool(sp["train"], out / "train_speech")
    man["train_noise"] = save_pool(no["train"], out / "train_noise")
    man["val_speech"] = save_pool(sp["val"], out / "val_speech")
    man["val_noise"] = save_pool(no["val"], out / "val_noise")
    used = {pk for k in ("train_speech", "train_noise", "val_speech", "val_noise") for pk in man[k]["packages"]}
    man["packages_missing"] = [pk for pk in DEB_PACKAGES if pk not in used]  # not installed: nothing read
    if man["packages_missing"]:
        log(f"packages without any file (not installed?): {' '.join(man['packages_missing'])}")
    log(f"train speech {man['train_speech']['seconds']} s, noise {man['train_noise']['seconds']} s; "
        f"val speech {man['val_speech']['seconds']} s, noise {man['val_noise']['seconds']} s")
    # fixed validation mixtures from held-out voices + held-out noise (and fresh synthetic noise)
    vs = Pool.load(out / "val_speech")
    vn = Pool.load(out / "val_noise")
    mixer = Mixer(vs, vn, seconds=val_seconds, p_clean=0.0, p_speechless=0.0, level_db=(-38, -18))
    rng = np.random.default_rng(seed)
    for d in ("noisy", "clean"):
        (out / "val" / d).mkdir(parents=True, exist_ok=True)
    for i in range(n_val):
        noisy, clean = mixer.draw(rng)
        write_clip(out / "val" / "noisy" / f"{i:03d}.wav", noisy)
        write_clip(out / "val" / "clean" / f"{i:03d}.wav", clean)
    man["val_mixtures"] = {"count": n_val, "seconds_each": val_seconds, "seed": seed,
                           "snr_db": list(mixer.snr), "level_dbfs": list(mixer.level_db)}
    build_bench(out, log=log, required=False)
    man["build_seconds"] = round(time.time() - t0)
    write_manifest(out, man)  # last: the mark of a finished build (``is_built``), select/ included
    log(f"done -> {out}")
    return man


def writable_folder(out: Path) -> None:
    """Make ``out`` and make sure files can be written there, before minutes of reading sources
    (one line, through run_cli, when not: a file of that name, a read-only disk)."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out}: is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:  # the reason for the folder named, not for a temporary name in it
        raise OSError(e.errno, e.strerror, str(out)) from None


def main(argv=None):
    from realtime.argtypes import non_negative_int, positive_int

    ap = OneLineParser(description="build the enhancer train/validation data")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--n-val", type=non_negative_int, default=120)
    ap.add_argument("--bench-only", action="store_true",
                    help="only the checkpoint-selection and benchmark sets (select/, confirm/, bench/), not the pools")
    ap.add_argument("--bench-reps", type=positive_int, default=3, help="benchmark clips per (SNR band, condition) cell")
    a = ap.parse_args(argv)
    writable_folder(a.out)
    if a.bench_only:
        build_bench(a.out, reps=a.bench_reps)
    else:
        build(a.out, n_val=a.n_val)
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main, sys.argv[1:]))
