"""Data for the de-limiter: ~20 h of music from Debian packages, limited on the fly.

    python -m models.delimiter.data [--out data/delimiter]     # index + selection set, ~5 min

Music (``PACKAGES``): every track of at least 30 s at 32 kHz or more in the listed packages
(found with ``dpkg -L``; zip archives such as ufoai's ``.pk3`` are unpacked into the data folder),
plus MIDI songs (freedoom's WADs) rendered with fluidsynth through three General MIDI soundfonts.
Nothing is decoded up front: the index lists tracks, and the training loader (``Examples``) reads
random excerpts, so 20 h of music cost no disk beyond the renders.

Per example (as in "Music De-limiter Networks via Sample-wise Gain Inversion", but generated in
the loader workers so that no two epochs see the same pair): a random excerpt, half of them
resampled to 48 kHz, random EQ, normalised to REF_LUFS, then driven into a random limiter
implementation with random settings (``limiters.TRAIN_KINDS``) towards a random loudness of
-12 ... -5 LUFS. 15 % stay un-limited (peak -12 ... -0.5 dBFS) so the model learns to leave clean
audio alone; a quarter of those are steady tones (``steady_tone``), which it must not raise. The target is the drive-scaled original; the gain target is the stereo-linked
least-squares gain y/x per 8-sample segment (NaN where the original is near silence). With
``declip_delay`` the limited excerpt also goes through the processor's de-clipper
(``realtime.dsp.declip``, from the excerpt's lead-in on, as a stream would) and the gain target
is the one that restores what the processor multiplies: the de-clipped audio.

Held out, by whole package:
- ``VAL_PACKAGES``: tracks for checkpoint selection, limited by ``limiters.VAL_KINDS`` (Calf,
  ZaMaximX2), implementations that training never uses: ``sel_*.npy``, built once, fixed.
- ``HELDOUT_PACKAGES`` and ``HELDOUT_LIMITERS``: the benchmark's music and limiters (bench/delimiter.py);
  nothing here reads or runs them (tests/test_delimiter.py checks it).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from models.delimiter import limiters
from models.reserved import RESERVED_PACKAGES  # noqa: F401 (the recipe's tests check against it)
from realtime.argtypes import OneLineParser
from realtime.dsp.declip import declip

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "data" / "delimiter"
PACKAGES = ("wesnoth-1.16-music", "supertux-data", "hedgewars-data", "warzone2100-music", "ufoai-music",
            "nexuiz-music", "blobwars-data", "colobot-common-sounds", "freedroidrpg-data", "unknown-horizons",
            "pushover-data", "starfighter-data", "hyperrogue-music", "wizznic-data", "openclonk-data")
VAL_PACKAGES = ("marsshooter-data", "freecol")
MIDI_PACKAGES = ("freedoom",)
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2",
              "/usr/share/sounds/sf3/MuseScore_General.sf3")
# The benchmark's music (bench/delimiter.py reads it; this recipe never does) and limiters.
HELDOUT_PACKAGES = {
    "singularity-music": "/usr/share/games/singularity/music",
    "drascula-music": "/usr/share/scummvm/drascula/audio",
}
HELDOUT_LIMITERS = limiters.BENCH_LV2
TRAIN_LIMITERS = tuple(limiters.TRAIN_KINDS)
SR = 44100
RATES = (44100, 48000)
REF_LUFS = -20.0
TARGET_LUFS = (-12.0, -5.0)
MIN_LUFS = -45.0  # skip near-silent excerpts
MAX_DRIVE_DB = 24.0
MIN_TRACK_S = 30.0
MIN_RATE = 32000  # band-limited (11/22 kHz) music is left out
CLEAN_SHARE = 0.15
# of the un-limited examples, this share are steady tones (``steady_tone``): a loud sine has the
# crest factor of a hard-limited master, and networks trained on music alone raised test tones
# by 2-8 dB (twenty-eighth session). A limiter changes a steady tone only by a constant, which
# no SI-SDR sees, so teaching "leave it" costs the restoration nothing.
STEADY_SHARE = 0.25
SEG = 8  # gain-target resolution (samples)
SEL_SECONDS = 6.0
SEL_TARGETS = (-6.0, -9.0, -12.0)


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------
def ensure_packages(packages) -> None:
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SystemExit(f"missing packages: apt-get install --no-install-recommends {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True, env=env)


def _files_of(pkg: str) -> list[str]:
    r = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True)
    return sorted(f for f in r.stdout.split() if os.path.isfile(f))


AUDIO_MAGIC = (b"OggS", b"RIFF", b"fLaC")


def scan_package(pkg: str, unpack_dir: Path) -> list[dict]:
    """Tracks (>= MIN_TRACK_S, >= MIN_RATE) of an installed package; zip members are unpacked."""
    import soundfile as sf

    out = []

    def consider(path: str):
        try:
            info = sf.info(path)
        except Exception:
            return
        if info.duration >= MIN_TRACK_S and info.samplerate >= MIN_RATE:
            out.append({"path": path, "package": pkg, "sr": info.samplerate, "frames": info.frames,
                        "channels": info.channels})

    for f in _files_of(pkg):
        if os.path.getsize(f) < 100_000:
            continue
        with open(f, "rb") as fh:
            head = fh.read(4)
        if head in AUDIO_MAGIC:
            consider(f)
        elif head[:2] == b"PK":  # .pk3 / .wz: zip archives of game data
            try:
                z = zipfile.ZipFile(f)
            except zipfile.BadZipFile:
                continue
            for zi in z.infolist():
                if zi.file_size < 100_000 or z.open(zi).read(4) not in AUDIO_MAGIC:
                    continue
                dest = unpack_dir / pkg / Path(f).name / zi.filename
                if not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(z.read(zi))
                consider(str(dest))
    return out


def wad_midis(path: str) -> list[tuple[str, bytes]]:
    """The standard MIDI songs inside a Doom WAD (lumps that start with ``MThd``)."""
    data = Path(path).read_bytes()
    if data[:4] not in (b"IWAD", b"PWAD"):
        return []
    n, off = int.from_bytes(data[4:8], "little"), int.from_bytes(data[8:12], "little")
    songs = []
    for i in range(n):
        e = off + 16 * i
        pos, size = int.from_bytes(data[e:e + 4], "little"), int.from_bytes(data[e + 4:e + 8], "little")
        name = data[e + 8:e + 16].rstrip(b"\0").decode("ascii", "replace")
        if size > 0 and data[pos:pos + 4] == b"MThd":
            songs.append((name, data[pos:pos + size]))
    return songs


def render_midis(out: Path, seed: int = 0) -> list[dict]:
    """Each MIDI song of MIDI_PACKAGES rendered with one soundfont (cycling), 44.1 kHz FLAC."""
    import soundfile as sf

    fonts = [f for f in SOUNDFONTS if os.path.isfile(f)]
    if not fonts or shutil.which("fluidsynth") is None:
        return []
    seen, tracks = set(), []
    rdir = out / "renders"
    rdir.mkdir(parents=True, exist_ok=True)
    k = seed
    for pkg in MIDI_PACKAGES:
        for f in _files_of(pkg):
            if not f.endswith(".wad"):
                continue
            for name, midi in wad_midis(f):
                if midi in seen:
                    continue
                seen.add(midi)
                font = fonts[k % len(fonts)]
                k += 1
                dest = rdir / f"{Path(f).stem}-{name}-{Path(font).stem}.flac"
                if not dest.exists():
                    mid = rdir / f"{name}.mid"
                    mid.write_bytes(midi)
                    wav = dest.with_suffix(".wav")
                    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-F", str(wav), "-r", str(SR), font, str(mid)],
                                   capture_output=True, check=False)
                    mid.unlink()
                    if not wav.exists():
                        continue
                    x, sr = sf.read(str(wav), dtype="float32", always_2d=True)
                    wav.unlink()
                    nz = np.nonzero(np.abs(x).max(1) > 1e-4)[0]
                    if len(nz) < MIN_TRACK_S * sr:
                        continue
                    x = x[nz[0]:nz[-1] + 1]
                    sf.write(str(dest), x / max(float(np.abs(x).max()), 1e-9) * 0.9, sr, subtype="PCM_16")
                info = sf.info(str(dest))
                tracks.append({"path": str(dest), "package": pkg, "sr": info.samplerate, "frames": info.frames,
                               "channels": info.channels, "font": Path(font).name})
    return tracks


def read_excerpt(track: dict, start: int, n: int) -> np.ndarray:
    """n frames from ``start`` of a track at its own rate, stereo float32."""
    import soundfile as sf

    with sf.SoundFile(track["path"]) as f:
        f.seek(start)
        x = f.read(n, dtype="float32", always_2d=True)
    if x.shape[1] == 1:
        x = np.repeat(x, 2, 1)
    return np.ascontiguousarray(x[:, :2])


def random_excerpt(track: dict, rng, sr: int, n: int) -> np.ndarray | None:
    """n frames from a random place in ``track``, resampled to ``sr``; None if it is too short."""
    import soxr

    m = int(math.ceil(n * track["sr"] / sr)) + 16
    if track["frames"] <= m:
        return None
    x = read_excerpt(track, int(rng.integers(0, track["frames"] - m)), m)
    if track["sr"] != sr:
        x = soxr.resample(x, track["sr"], sr)
    return x[:n] if len(x) >= n else None


def load_track(path) -> np.ndarray | None:
    """A whole track, stereo float32 at SR (the benchmark's held-out music)."""
    import soundfile as sf
    import soxr

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # a damaged file costs one track
        print(f"skip {path}: {e}", file=sys.stderr)
        return None
    x = np.repeat(x, 2, 1) if x.shape[1] == 1 else x[:, :2]
    if sr != SR:
        x = soxr.resample(x, sr, SR)
    return np.ascontiguousarray(x, np.float32)


# ----------------------------------------------------------------------------------------------
# Loudness
# ----------------------------------------------------------------------------------------------
def lufs(x: np.ndarray, sr: int) -> float:
    """Integrated loudness (ITU-R BS.1770 with gating, pyloudnorm)."""
    import pyloudnorm

    v = pyloudnorm.Meter(sr).integrated_loudness(x.astype(np.float64))
    return float(v) if math.isfinite(v) else -100.0


_KW = {}


def fast_lufs(x: np.ndarray, sr: int) -> float:
    """Ungated K-weighted loudness: within ~1 LU of ``lufs`` on music excerpts, 20x faster."""
    import scipy.signal as sps

    if sr not in _KW:  # BS.1770 pre-filter (high shelf) and RLB high-pass, as biquads at this rate
        import pyloudnorm

        m = pyloudnorm.Meter(sr)
        _KW[sr] = np.vstack([np.r_[f.b, f.a] for f in m._filters.values()])
    y = sps.sosfilt(_KW[sr], x, axis=0)
    ms = float((y.astype(np.float64) ** 2).mean(0).sum())
    return -0.691 + 10.0 * math.log10(max(ms, 1e-12))


# ----------------------------------------------------------------------------------------------
# Examples
# ----------------------------------------------------------------------------------------------
def random_eq(rng, x: np.ndarray, sr: int) -> np.ndarray:
    """Gentle tilt: low and high shelves of +-4 dB (a different master of the same music)."""
    import scipy.signal as sps

    y = x
    for kind, f in (("low", rng.uniform(80, 300)), ("high", rng.uniform(2000, 8000))):
        g = 10.0 ** (rng.uniform(-4.0, 4.0) / 20.0)
        sos = sps.butter(1, f, kind, fs=sr, output="sos")
        y = y + (g - 1.0) * sps.sosfilt(sos, y, axis=0)
    return y.astype(np.float32)


def gain_target(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """log of the stereo-linked least-squares gain y/ref per SEG samples, per sample; NaN where
    the reference is near silence or the gain is not in (0, 1.05]."""
    n = len(y) // SEG * SEG
    num = (y[:n] * ref[:n]).reshape(-1, SEG, 2).sum((1, 2))
    den = (ref[:n] ** 2).reshape(-1, SEG, 2).sum((1, 2))
    g = np.where(den > 1e-7 * SEG, num / np.maximum(den, 1e-12), np.nan)
    g = np.where((g > 1e-3) & (g <= 1.05), np.minimum(g, 1.0), np.nan)
    out = np.full(len(y), np.nan, np.float32)
    out[:n] = np.repeat(np.log(g), SEG)
    return out


def limit_example(x: np.ndarray, sr: int, fn, rng, target: float):
    """Drive ``x`` (at REF_LUFS) into limiter ``fn`` towards ``target`` LUFS: one probe pass, one
    corrected pass. Returns (y, ref, setting)."""
    drive = (target - REF_LUFS) * float(rng.uniform(1.0, 1.3))
    seed = int(rng.integers(1 << 62))  # the same limiter settings for both passes
    for attempt in range(2):
        drive = min(max(drive, 0.0), MAX_DRIVE_DB)
        g = np.float32(10.0 ** (drive / 20.0))
        y, setting = fn(x * g, sr, np.random.default_rng(seed))
        err = target - fast_lufs(y, sr)
        if abs(err) < 0.7:
            break
        drive += 1.6 * err
    return y, x * g, {**setting, "drive_db": float(drive), "target_lufs": float(target)}


class Examples:
    """Random limited excerpts from a track index: ``next(rng) -> (y, ref, log_gain, info)``.

    Parameters
    ----------
    tracks : list of dict
        From ``build``'s index (path, sr, frames, channels).
    n : int
        Samples per example at the chosen rate.
    kinds : dict
        Limiter name -> function (``limiters.TRAIN_KINDS`` filtered by ``limiters.available``).
    shares : dict
        Limiter name -> relative frequency.
    targets : (float, float)
        Range of the loudness (LUFS) each example is driven towards; lower = lighter limiting.
    declip_delay : int or None
        When given, ``info["declipped"]`` is the limited excerpt through a de-clipper of this delay
        (the processor's look-ahead) and the log gain restores it rather than the input.
    """

    def __init__(self, tracks: list[dict], n: int, kinds: dict, shares: dict, pre_s: float = 0.5,
                 targets: tuple[float, float] = TARGET_LUFS, declip_delay: int | None = None):
        self.tracks, self.n, self.kinds, self.pre_s, self.targets = tracks, n, kinds, pre_s, targets
        self.declip_delay = declip_delay
        w = np.array([t["frames"] / t["sr"] for t in tracks])
        self.weights = w / w.sum()
        names = list(kinds)
        p = np.array([shares.get(k, 0.0) for k in names])
        self.kind_names, self.kind_p = names, p / p.sum()

    def next(self, rng):
        sr = int(rng.choice(RATES))
        pre = int(self.pre_s * sr)
        while True:
            x = random_excerpt(self.tracks[int(rng.choice(len(self.tracks), p=self.weights))], rng, sr, pre + self.n)
            if x is None:
                continue
            loud = fast_lufs(x[pre:], sr)
            if loud > MIN_LUFS:
                break
        if rng.random() < 0.5:
            x = random_eq(rng, x, sr)
            loud = fast_lufs(x[pre:], sr)
        x = (x * np.float32(10.0 ** ((REF_LUFS - loud) / 20.0))).astype(np.float32)
        if rng.random() < 0.5:
            x = x[:, ::-1].copy()  # swap channels
        if rng.random() < CLEAN_SHARE:
            steady = bool(rng.random() < STEADY_SHARE)
            if steady:
                x = steady_tone(rng, len(x), sr)
            peak_db = float(rng.uniform(-12.0, -0.5))
            ref = x * np.float32(10.0 ** (peak_db / 20.0) / max(float(np.abs(x[pre:]).max()), 1e-9))
            ref = ref[pre:]
            info = {"limiter": "none", "sr": sr, "peak_db": peak_db, "steady": steady}
            if self.declip_delay is not None:
                info["declipped"] = ref  # un-clipped audio passes the de-clipper bit-exact
            return ref, ref, np.zeros(len(ref), np.float32), info
        kind = self.kind_names[int(rng.choice(len(self.kind_names), p=self.kind_p))]
        y, ref, setting = limit_example(x, sr, self.kinds[kind], rng, float(rng.uniform(*self.targets)))
        info = {"limiter": kind, "sr": sr, **setting}
        # the de-clipper runs over the lead-in too, as a stream would
        dry = y if self.declip_delay is None else declip(y, sr, self.declip_delay)
        y, ref, dry = y[pre:], ref[pre:], dry[pre:]
        if self.declip_delay is not None:
            info["declipped"] = dry
        return y, ref, gain_target(dry, ref), info


# ----------------------------------------------------------------------------------------------
# Build: index and the fixed selection set
# ----------------------------------------------------------------------------------------------
def build_selection(out: Path, tracks: list[dict], per_track: int = 2, seed: int = 7, kinds: dict | None = None) -> int:
    """Fixed checkpoint-selection set: VAL_PACKAGES music x VAL_KINDS limiters x SEL_TARGETS
    (``kinds`` replaces VAL_KINDS in smoke runs only)."""
    kinds = kinds or limiters.available(limiters.VAL_KINDS)
    if not kinds:
        raise SystemExit("selection limiters missing: apt-get install --no-install-recommends calf-plugins zam-plugins")
    rng = np.random.default_rng(seed)
    n = int(SEL_SECONDS * SR)
    Y, X, meta = [], [], []
    for t in tracks:
        for _ in range(per_track):
            if t["frames"] <= n * t["sr"] / SR + 100:
                continue
            x = random_excerpt(t, rng, SR, n)
            if x is None:
                continue
            loud = fast_lufs(x, SR)
            if loud < MIN_LUFS:
                continue
            x = (x * np.float32(10.0 ** ((REF_LUFS - loud) / 20.0))).astype(np.float32)
            for kind in kinds:
                target = float(SEL_TARGETS[len(Y) % len(SEL_TARGETS)])
                y, ref, st = limit_example(x, SR, kinds[kind], rng, target)
                Y.append(y)
                X.append(ref)
                meta.append({"track": Path(t["path"]).name, "package": t["package"], "limiter": kind, **st})
    np.save(out / "sel_y.npy", np.stack(Y).astype(np.float32))
    np.save(out / "sel_x.npy", np.stack(X).astype(np.float32))
    (out / "sel_meta.json").write_text(json.dumps(meta, indent=0, default=float))
    return len(Y)


def build(out: Path = DEFAULT_OUT, smoke: bool = False) -> Path:
    """Index the music (and render the MIDI songs), then write the selection set.

    ``smoke``: two synthetic tracks of hits and bursts and a one-excerpt-per-track selection set
    limited by the zoo limiter (a CI machine has no music and no selection limiters)."""
    out.mkdir(parents=True, exist_ok=True)
    if smoke:
        train = val = synthetic_tracks(out)
    else:
        ensure_packages(PACKAGES + VAL_PACKAGES + MIDI_PACKAGES + ("fluidsynth", "fluid-soundfont-gm", "timgm6mb-soundfont",
                                                                   "musescore-general-soundfont",
                                                                   "lsp-plugins-lv2", "calf-plugins", "zam-plugins"))
        train, val = [], []
        for pkg in PACKAGES:
            got = scan_package(pkg, out / "unpacked")
            train += got
            print(f"{pkg}: {len(got)} tracks, {sum(t['frames'] / t['sr'] for t in got) / 60:.1f} min", flush=True)
        for pkg in VAL_PACKAGES:
            val += scan_package(pkg, out / "unpacked")
        renders = render_midis(out)
        print(f"MIDI renders: {len(renders)} songs, {sum(t['frames'] / t['sr'] for t in renders) / 60:.1f} min", flush=True)
        train += renders
    hours = {k: sum(t["frames"] / t["sr"] for t in v) / 3600 for k, v in (("train", train), ("val", val))}
    (out / "index.json").write_text(json.dumps({"train": train, "val": val, "hours": hours}, indent=0))
    n = build_selection(out, val, per_track=1, kinds={"zoo": limiters.zoo}) if smoke else build_selection(out, val)
    print(f"train {hours['train']:.1f} h ({len(train)} tracks), selection {hours['val']:.1f} h -> {n} segments",
          flush=True)
    (out / "DONE").write_text(json.dumps({"hours": hours, "selection_segments": n}))
    return out


def steady_tone(rng, n: int, sr: int) -> np.ndarray:
    """A test-signal-like steady tone, stereo [n, 2], peak 1: one to three sines (30 Hz-8 kHz,
    log-uniform), half of them with a slow (0.1-2 Hz, up to 3 dB) tremolo; both channels alike
    or one a little quieter."""
    t = np.arange(n) / sr
    x = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        f = math.exp(rng.uniform(math.log(30.0), math.log(8000.0)))
        x += 10 ** rng.uniform(-1.0, 0.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.5:
        depth = 1.0 - 10 ** (-rng.uniform(0.0, 3.0) / 20.0)
        x *= 1.0 - depth * 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(0.1, 2.0) * t))
    x = np.stack([x, x * (1.0 if rng.random() < 0.5 else rng.uniform(0.7, 1.0))], 1)
    return (x / np.abs(x).max()).astype(np.float32)


def synthetic_hits(rng, n: int, sr: int) -> np.ndarray:
    """Sine bursts and decaying noise/kick hits over a quiet bed (smoke runs without music)."""
    t = np.arange(n) / sr
    x = 0.003 * rng.standard_normal((n, 2))
    for _ in range(int(rng.integers(3, 10)) * max(1, n // sr)):
        s = int(rng.integers(0, n - sr // 20))
        e = min(n, s + int(rng.uniform(0.03, 0.6) * sr))
        env = np.exp(-np.arange(e - s) / (rng.uniform(0.01, 0.3) * sr))
        sig = np.sin(2 * np.pi * rng.uniform(40, 2000) * t[s:e]) if rng.random() < 0.5 else rng.standard_normal(e - s)
        x[s:e] += (10 ** rng.uniform(-1.5, 0) * env * sig)[:, None] * rng.uniform(0.6, 1.0, 2)
    return (0.1 * x / max(float(np.sqrt((x ** 2).mean())), 1e-9)).astype(np.float32)


def synthetic_tracks(out: Path) -> list[dict]:
    import soundfile as sf

    rng = np.random.default_rng(0)
    tracks = []
    for i in range(2):
        p = out / f"synthetic-{i}.wav"
        sf.write(str(p), synthetic_hits(rng, 40 * SR, SR), SR, subtype="FLOAT")
        tracks.append({"path": str(p), "package": "synthetic", "sr": SR, "frames": 40 * SR, "channels": 2})
    return tracks


def load_index(root: Path) -> dict:
    return json.loads((root / "index.json").read_text())


def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--selection-only", action="store_true", help="rebuild only the selection set")
    a = ap.parse_args(argv)
    if a.out.exists() and not a.out.is_dir():
        raise SystemExit(f"--out {a.out}: is a file, not a folder")
    if a.selection_only:
        if not (a.out / "index.json").is_file():
            raise SystemExit(f"--selection-only: no index.json in {a.out} (build it with "
                             f"python -m models.delimiter.data --out {a.out})")
        print(build_selection(a.out, load_index(a.out)["val"]), "segments")
    else:
        build(a.out)
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))

