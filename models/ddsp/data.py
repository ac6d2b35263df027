"""Data recipe for the DDSP instruments: monophonic phrases rendered from MIDI by FluidSynth.

One command installs what it needs and builds everything (nothing is downloaded but packages)::

    .venv/bin/python -m models.ddsp.data [--instrument violin] [--minutes 12]

Sources: Debian ``fluid-soundfont-gm`` (FluidR3_GM.sf2, real sampled instruments) rendered with
the ``fluidsynth`` command line; melodies from the music21 corpus (Essen folk songs), scales,
arpeggios and long notes, with velocities, expression swells, pitch bends and vibrato, across
each instrument's range. Because we write the MIDI, each note's pitch is known; f0 per frame is
that pitch refined on the audio (the sampled instruments add their own vibrato and tuning, see
``refine_f0``); loudness per frame is measured on the audio (A-weighted, in dB).

Writes data/ddsp/<instrument>/ (git-ignored):
  train.npz, val.npz   audio (float32, 24 kHz mono), f0_hz (refined), f0_midi_hz and
                       loudness_db per 4 ms frame, notes (onset_s, offset_s, pitch, velocity)
  test/NN.mid          held-out melodies (Essen files never used for training) for the benchmark
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from realtime.argtypes import OneLineParser, non_negative_int

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "ddsp"
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
APT_PACKAGES = ("fluidsynth", "fluid-soundfont-gm")

SR = 24000  # training rate: harmonics and noise up to 12 kHz
FRAME_RATE = 250
HOP = SR // FRAME_RATE  # 96 samples = 4 ms
TICKS_PER_SECOND = 960  # mido file at 120 bpm, 480 ticks per beat
BEND_RANGE = 2.0  # semitones (GM default; FluidSynth honours it)

# name -> (GM program, 0-based; lowest and highest MIDI note used)
INSTRUMENTS = {
    "violin": (40, 55, 93),
    "flute": (73, 60, 96),
    "trumpet": (56, 54, 84),
}
# Essen collections: training melodies vs held-out test melodies (never mixed).
TRAIN_COLLECTIONS = ("altdeu10", "altdeu20", "ballad10", "ballad20", "boehme10", "dva0", "fink0", "kinder0", "erk10")
TEST_COLLECTIONS = ("zuccal0", "lux")


def ensure_tools() -> None:
    """Install FluidSynth and the GM soundfont (Debian) and music21 (pip) when missing."""
    missing = [p for p in APT_PACKAGES
               if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                 text=True).stdout.find("ok installed") < 0]
    if missing:
        print(f"ddsp data: installing {missing}", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, env=env)
    try:
        import music21  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "music21"], check=True)


# ------------------------------------------------------------------------------ melodies
def essen_melodies(collections, limit: int) -> list[list[tuple[int, float]]]:
    """(midi pitch, quarter length) lists; a rest is pitch -1. Tunes are parsed one by one
    (parsing a whole collection as an Opus is ~50x slower)."""
    from music21 import converter, corpus

    paths = {p.stem: p for p in corpus.getComposer("essenFolksong")}
    out = []
    for name in collections:
        if name not in paths:
            continue
        text = paths[name].read_text(encoding="latin-1")
        for tune in text.split("\nX:")[1:]:
            try:
                s = converter.parse("X:" + tune, format="abc")
            except Exception:  # a few corpus tunes do not parse: skip them
                continue
            mel = []
            for n in s.flatten().notesAndRests:
                ql = float(n.quarterLength)
                if ql <= 0:
                    continue
                if n.isRest:
                    mel.append((-1, ql))
                elif n.isNote:
                    mel.append((int(n.pitch.midi), ql))
            if len(mel) >= 8:
                out.append(mel)
            if len(out) >= limit:
                return out
    return out


class Phrase:
    """A monophonic phrase as timed events (seconds) ready for a MIDI file and exact f0."""

    def __init__(self):
        self.notes: list[tuple[float, float, int, int]] = []  # onset, offset, pitch, velocity
        self.bends: list[tuple[float, float]] = []  # time, semitones
        self.cc11: list[tuple[float, int]] = []  # time, expression value

    @property
    def end(self) -> float:
        return max((n[1] for n in self.notes), default=0.0)


def _fit_range(pitches, lo, hi, rng) -> int:
    """Semitone shift that puts a melody inside [lo, hi] (random where there is room)."""
    pmin, pmax = min(pitches), max(pitches)
    span = pmax - pmin
    if span > hi - lo:
        return lo - pmin
    return int(rng.integers(lo - pmin, hi - pmax + 1))


def _add_vibrato(ph: Phrase, t0: float, t1: float, rng, depth_st: float | None = None) -> None:
    rate = rng.uniform(4.0, 7.0)
    depth = depth_st if depth_st is not None else rng.uniform(0.08, 0.35)
    onset = min(t1, t0 + rng.uniform(0.1, 0.4))
    t = onset
    while t < t1:
        ramp = min(1.0, (t - onset) / 0.3)
        ph.bends.append((t, ramp * depth * np.sin(2 * np.pi * rate * (t - onset))))
        t += 0.01
    ph.bends.append((t1, 0.0))


def _velocity_walk(n, rng):
    v = rng.uniform(40, 115)
    out = []
    for _ in range(n):
        v = float(np.clip(v + rng.normal(0, 10), 25, 127))
        out.append(int(v))
    return out


def melody_phrase(mel, lo, hi, rng, max_s: float = 10.0) -> Phrase:
    ph = Phrase()
    shift = _fit_range([p for p, _ in mel if p >= 0], lo, hi, rng)
    beat = 60.0 / rng.uniform(70, 170)
    legato = rng.uniform(0.6, 1.0)
    vels = _velocity_walk(len(mel), rng)
    vib = rng.random() < 0.5
    t = 0.05
    for (p, ql), v in zip(mel, vels):
        dur = ql * beat
        if p >= 0:
            off = t + max(0.06, dur * legato)
            ph.notes.append((t, off, p + shift, v))
            if vib and off - t > 0.35:
                _add_vibrato(ph, t, off, rng)
        t += dur
        if t > max_s:
            break
    return ph


def scale_phrase(lo, hi, rng) -> Phrase:
    ph = Phrase()
    steps = [[2, 2, 1, 2, 2, 2, 1], [2, 1, 2, 2, 1, 2, 2], [1], [3, 4, 5], [4, 3, 5], [2, 2, 3, 2, 3]]
    pat = steps[rng.integers(len(steps))]
    p = int(rng.integers(lo, max(lo + 1, hi - 12)))
    seq = [p]
    i = 0
    while len(seq) < rng.integers(10, 26) and seq[-1] + pat[i % len(pat)] <= hi:
        seq.append(seq[-1] + pat[i % len(pat)])
        i += 1
    if rng.random() < 0.6:
        seq = seq + seq[-2::-1]
    dur = rng.uniform(0.1, 0.45)
    legato = rng.uniform(0.5, 1.0)
    vels = _velocity_walk(len(seq), rng)
    t = 0.05
    for q, v in zip(seq, vels):
        ph.notes.append((t, t + dur * legato, q, v))
        t += dur
    return ph


def long_note_phrase(lo, hi, rng) -> Phrase:
    """Long notes with expression swells (CC11), vibrato and the odd slow bend."""
    ph = Phrase()
    t = 0.05
    for _ in range(int(rng.integers(2, 5))):
        p = int(rng.integers(lo, hi + 1))
        dur = rng.uniform(0.8, 3.0)
        ph.notes.append((t, t + dur, p, int(rng.integers(30, 127))))
        shape = rng.integers(3)
        for k in range(int(dur / 0.02)):
            x = k * 0.02 / dur
            e = {0: 0.3 + 0.7 * x, 1: 1.0 - 0.7 * x, 2: 0.35 + 0.65 * np.sin(np.pi * x)}[int(shape)]
            ph.cc11.append((t + k * 0.02, int(np.clip(127 * e, 1, 127))))
        ph.cc11.append((t + dur, 127))
        r = rng.random()
        if r < 0.5:
            _add_vibrato(ph, t, t + dur, rng)
        elif r < 0.7:  # slow bend up/down within the bend range
            target = rng.uniform(-BEND_RANGE, BEND_RANGE)
            for k in range(40):
                ph.bends.append((t + dur * 0.3 + k * 0.01, target * k / 39))
            ph.bends.append((t + dur, 0.0))
        t += dur + rng.uniform(0.05, 0.5)
    return ph


def build_phrases(inst: str, minutes: float, rng, melodies) -> list[Phrase]:
    _, lo, hi = INSTRUMENTS[inst]
    out, total = [], 0.0
    while total < minutes * 60:
        r = rng.random()
        if r < 0.5 and melodies:
            ph = melody_phrase(melodies[rng.integers(len(melodies))], lo, hi, rng)
        elif r < 0.75:
            ph = scale_phrase(lo, hi, rng)
        else:
            ph = long_note_phrase(lo, hi, rng)
        if ph.notes:
            out.append(ph)
            total += ph.end + 1.0
    return out


# ------------------------------------------------------------------------------ MIDI + render
def write_midi(phrases: list[Phrase], program: int, path: Path, gap: float = 1.0) -> list[float]:
    """All phrases in one file, each followed by ``gap`` s of release/silence; returns starts."""
    import mido

    ev = [(0.0, 0, mido.Message("program_change", program=program, channel=0))]
    # pitch-bend range (RPN 0), so the file states what f0 follows from
    for i, (c, v) in enumerate(((101, 0), (100, 0), (6, int(BEND_RANGE)), (38, 0), (7, 100), (11, 127))):
        ev.append((0.0, i + 1, mido.Message("control_change", control=c, value=v, channel=0)))
    starts, t0, seq = [], 0.5, 100
    for ph in phrases:
        starts.append(t0)
        for on, off, p, v in ph.notes:
            ev.append((t0 + on, seq, mido.Message("note_on", note=p, velocity=v)))
            ev.append((t0 + off, seq - 50, mido.Message("note_off", note=p, velocity=0)))  # off before on
            seq += 1
        for t, st in ph.bends:
            val = int(np.clip(round(st / BEND_RANGE * 8192), -8192, 8191))
            ev.append((t0 + t, seq, mido.Message("pitchwheel", pitch=val)))
            seq += 1
        for t, v in ph.cc11:
            ev.append((t0 + t, seq, mido.Message("control_change", control=11, value=v)))
            seq += 1
        end = t0 + ph.end
        ev.append((end + 0.001, seq, mido.Message("pitchwheel", pitch=0)))
        ev.append((end + 0.001, seq + 1, mido.Message("control_change", control=11, value=127)))
        seq += 2
        t0 = end + gap
    ev.sort(key=lambda e: (round(e[0] * TICKS_PER_SECOND), e[1]))
    mf = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mf.tracks.append(tr)
    last = 0
    for t, _, msg in ev:
        tick = int(round(t * TICKS_PER_SECOND))
        tr.append(msg.copy(time=tick - last))
        last = tick
    tr.append(mido.MetaMessage("end_of_track", time=int(1.5 * TICKS_PER_SECOND)))
    mf.save(str(path))
    return starts


def render(midi_path: Path, sr: int) -> np.ndarray:
    """FluidSynth render, dry (no reverb/chorus), mono float32."""
    import soundfile as sf

    if not shutil.which("fluidsynth"):
        raise RuntimeError("fluidsynth not found: apt-get install fluidsynth fluid-soundfont-gm")
    with tempfile.TemporaryDirectory() as td:
        wav = Path(td) / "out.wav"
        subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(sr),
                        "-F", str(wav), SOUNDFONT, str(midi_path)], check=True, capture_output=True)
        x, _ = sf.read(str(wav), dtype="float32", always_2d=True)
    return x.mean(axis=1)


def midi_controls(midi_path: Path, n_frames: int, frame_rate: float):
    """Exact f0 (Hz) per frame from a monophonic MIDI file (last note held through silence),
    and the note list (onset_s, offset_s, pitch, velocity)."""
    import mido

    on_t, on_p, bend_t, bend_v, notes, open_ = [], [], [0.0], [0.0], [], {}
    t = 0.0
    for msg in mido.MidiFile(str(midi_path)):
        t += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            on_t.append(t)
            on_p.append(msg.note)
            open_[msg.note] = (t, msg.velocity)
        elif msg.type in ("note_off", "note_on") and msg.note in open_:
            s, v = open_.pop(msg.note)
            notes.append((s, t, msg.note, v))
        elif msg.type == "pitchwheel":
            bend_t.append(t)
            bend_v.append(msg.pitch / 8192 * BEND_RANGE)
    times = np.arange(n_frames) / frame_rate
    on_t, on_p = np.asarray(on_t), np.asarray(on_p, np.float64)
    i = np.clip(np.searchsorted(on_t, times, side="right") - 1, 0, len(on_t) - 1)
    j = np.searchsorted(np.asarray(bend_t), times, side="right") - 1
    midi = on_p[i] + np.asarray(bend_v)[j]
    f0 = 440.0 * 2.0 ** ((midi - 69.0) / 12.0)
    return f0.astype(np.float32), np.asarray(notes, np.float64).reshape(-1, 4)


def a_weighted_loudness(x: np.ndarray, sr: int, hop: int, n_fft: int = 256) -> np.ndarray:
    """Per-frame A-weighted loudness in dB (DDSP style: power spectrum weighted by the A curve,
    averaged over bins), frame k centred on sample k*hop; floor -100 dB. The window is short
    (256 samples = 11 ms at 24 kHz): with a long one the feature rises well before the sound
    does, the decoder learns to wait after a loudness step, and a MIDI note-on (a step) then
    sounds late."""
    import librosa

    s = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, center=True, window="hann")) ** 2
    w = 10.0 ** (librosa.A_weighting(librosa.fft_frequencies(sr=sr, n_fft=n_fft)) / 10.0)
    p = (s * w[:, None]).mean(axis=0)
    return np.maximum(10.0 * np.log10(p + 1e-12), -100.0).astype(np.float32)


def refine_f0(audio: np.ndarray, f0: np.ndarray, ld: np.ndarray, sr: int, hop: int, cents: int = 80,
              n_harm: int = 6, min_db: float = -55.0) -> np.ndarray:
    """The MIDI gives each note's pitch, but the sampled instruments add their own vibrato and
    tuning (FluidR3's violin swings by tens of cents with no pitch bend in the file). Search
    +-cents around the MIDI f0 for the peak of the harmonic sum of the spectrum (43 ms window,
    zero-padded 2x, 4-cent grid, parabolic refinement); quiet frames keep the MIDI value."""
    import librosa
    import scipy.ndimage as ndi

    n_fft, win = 2048, 1024
    df = sr / n_fft
    grid = np.arange(-cents, cents + 1, 4.0)
    out = f0.astype(np.float64).copy()
    for a in range(0, len(f0), 4000):
        b = min(len(f0), a + 4000)
        seg = audio[max(0, a * hop - win // 2): b * hop + win // 2]
        pad_left = win // 2 - (a * hop - max(0, a * hop - win // 2))
        seg = np.pad(seg, (pad_left, 0))
        S = np.abs(librosa.stft(seg, n_fft=n_fft, hop_length=hop, win_length=win, center=False))[:, : b - a]
        S = S.T  # (frames, bins)
        if S.shape[0] < b - a:
            S = np.pad(S, ((0, b - a - S.shape[0]), (0, 0)))
        cand = f0[a:b, None] * 2.0 ** (grid[None, :] / 1200.0)  # (frames, C)
        score = np.zeros_like(cand)
        for h in range(1, n_harm + 1):
            x = h * cand / df
            i0 = np.clip(x.astype(np.int64), 0, S.shape[1] - 2)
            fr = np.clip(x - i0, 0.0, 1.0)
            score += (np.take_along_axis(S, i0, 1) * (1 - fr) + np.take_along_axis(S, i0 + 1, 1) * fr)
        k = np.argmax(score, axis=1)
        kk = np.clip(k, 1, len(grid) - 2)
        rows = np.arange(len(k))
        y0, y1, y2 = score[rows, kk - 1], score[rows, kk], score[rows, kk + 1]
        den = y0 - 2 * y1 + y2
        off = np.where(np.abs(den) > 1e-12, 0.5 * (y0 - y2) / den, 0.0)
        c = grid[kk] + np.clip(off, -1, 1) * (grid[1] - grid[0])
        ok = (ld[a:b] > min_db) & (k > 0) & (k < len(grid) - 1)
        out[a:b] = np.where(ok, f0[a:b] * 2.0 ** (c / 1200.0), f0[a:b])
    # a 3-frame median removes single-frame outliers (onsets, note changes)
    return ndi.median_filter(out, size=3, mode="nearest").astype(np.float32)


def build_instrument(inst: str, minutes: float, seed: int, out: Path, melodies, test_melodies) -> None:
    import mido

    rng = np.random.default_rng(seed)
    program = INSTRUMENTS[inst][0]
    out.mkdir(parents=True, exist_ok=True)
    phrases = build_phrases(inst, minutes, rng, melodies)
    n_val = max(2, len(phrases) // 12)
    for split, phs in (("train", phrases[n_val:]), ("val", phrases[:n_val])):
        mid = out / f"{split}.mid"
        write_midi(phs, program, mid)
        audio = render(mid, SR)
        n_frames = len(audio) // HOP
        audio = audio[: n_frames * HOP]
        f0, notes = midi_controls(mid, n_frames, FRAME_RATE)
        ld = a_weighted_loudness(audio, SR, HOP)[:n_frames]
        f0_audio = refine_f0(audio, f0, ld, SR, HOP)
        dev = 1200 * np.abs(np.log2(f0_audio / f0))[ld > -55]
        print(f"ddsp data: {inst} {split}: sampled-instrument f0 off the MIDI pitch by "
              f"{np.median(dev):.1f} cents median, {np.percentile(dev, 95):.1f} cents p95", flush=True)
        np.savez(out / f"{split}.npz", audio=audio, f0_hz=f0_audio, f0_midi_hz=f0, loudness_db=ld, notes=notes,
                 sr=SR, frame_rate=FRAME_RATE)
        print(f"ddsp data: {inst} {split}: {len(phs)} phrases, {len(audio) / SR / 60:.1f} min, "
              f"peak {np.abs(audio).max():.2f}", flush=True)
    # Held-out melodies for the benchmark: plain tunes (velocity walk, some vibrato)
    test = out / "test"
    test.mkdir(exist_ok=True)
    _, lo, hi = INSTRUMENTS[inst]
    trng = np.random.default_rng(seed + 1000)
    for k, mel in enumerate(test_melodies):
        write_midi([melody_phrase(mel, lo, hi, trng, max_s=8.0)], program, test / f"{k:02d}.mid")
    mido.MidiFile(str(test / "00.mid"))  # sanity: readable


def main(argv=None) -> int:
    ap = OneLineParser(prog="models.ddsp.data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instrument", action="append", choices=sorted(INSTRUMENTS),
                    help="default: all instruments")
    ap.add_argument("--minutes", type=float, default=12.0, help="training audio per instrument")
    ap.add_argument("--tests", type=int, default=6, help="held-out melodies per instrument")
    ap.add_argument("--out", type=Path, default=DATA)
    ap.add_argument("--seed", type=non_negative_int, default=0)
    a = ap.parse_args(argv)
    if a.out.exists() and not a.out.is_dir():
        raise SystemExit(f"--out {a.out}: is a file, not a folder")
    ensure_tools()
    melodies = essen_melodies(TRAIN_COLLECTIONS, 400)
    test_melodies = essen_melodies(TEST_COLLECTIONS, a.tests)
    print(f"ddsp data: {len(melodies)} training and {len(test_melodies)} test melodies", flush=True)
    for inst in a.instrument or sorted(INSTRUMENTS):
        # the seed follows the instrument, so building one alone gives the same data
        seed = a.seed + 17 * sorted(INSTRUMENTS).index(inst)
        build_instrument(inst, a.minutes, seed, a.out / inst, melodies, test_melodies)
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
