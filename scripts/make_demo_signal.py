"""Writes realtime/assets/demo.flac: 6 s of synthetic music-like audio (chords, bass, drums, hiss).

Synthesized so the repo ships no third-party audio; reproducible (fixed seed)."""
import numpy as np
import soundfile as sf

SR = 48000
rng = np.random.default_rng(7)
t = np.arange(int(6.0 * SR)) / SR
x = np.zeros((t.size, 2))
chords = [(220.0, 277.18, 329.63), (196.0, 246.94, 293.66), (174.61, 220.0, 261.63), (196.0, 246.94, 311.13)]
for i, chord in enumerate(chords):
    seg = (t >= i * 1.5) & (t < (i + 1) * 1.5)
    tt = t[seg] - i * 1.5
    env = np.minimum(1, tt / 0.02) * np.exp(-tt * 0.8)
    for j, f in enumerate(chord):
        tone = sum(np.sin(2 * np.pi * f * k * tt) / k ** 1.5 for k in range(1, 6))
        x[seg, j % 2] += 0.12 * env * tone
        x[seg, (j + 1) % 2] += 0.06 * env * tone
    x[seg] += (0.2 * env * np.sin(2 * np.pi * chord[0] / 2 * tt))[:, None]
for beat in np.arange(0, 6.0, 0.375):  # kick and hat
    i0 = int(beat * SR)
    n = min(int(0.15 * SR), t.size - i0)
    tt = np.arange(n) / SR
    kick = np.sin(2 * np.pi * (50 + 80 * np.exp(-tt * 30)) * tt) * np.exp(-tt * 25)
    hat = rng.standard_normal(n) * np.exp(-tt * 120) * 0.15
    x[i0:i0 + n] += (0.5 * kick + hat)[:, None]
x += 0.003 * rng.standard_normal(x.shape)
x *= 0.7 / np.abs(x).max()
sf.write("realtime/assets/demo.flac", x.astype(np.float32), SR, subtype="PCM_16")
