"""Recording-chain degradations for the enhancer's mixer: microphone response, low-bit-rate MP3 and
G.711 telephone companding. All work on 48 kHz float32 mono and return arrays aligned with the input.
"""
from __future__ import annotations

import numpy as np
import scipy.signal as sps

SR = 48000


def mic_eq(rng) -> np.ndarray:
    """Second-order sections of a random microphone / preamp response: bass cut or proximity boost,
    presence peak, a resonance, high-frequency roll-off. Applied to the noisy input and the target
    alike (the enhancer keeps the voice as the microphone heard it; it does not undo the mic)."""
    secs = []

    def peak(f, g, q):
        A, w = 10 ** (g / 40), 2 * np.pi * f / SR
        al = np.sin(w) / (2 * q)
        b = np.array([1 + al * A, -2 * np.cos(w), 1 - al * A])
        a = np.array([1 + al / A, -2 * np.cos(w), 1 - al / A])
        return np.concatenate([b / a[0], a / a[0]])[None]

    if rng.random() < 0.5:  # bass cut (small capsule, rumble filter)
        secs.append(sps.butter(2, rng.uniform(60, 300) / (SR / 2), btype="high", output="sos"))
    elif rng.random() < 0.5:  # proximity effect: close-talking directional mic
        secs.append(peak(rng.uniform(100, 250), rng.uniform(2, 8), rng.uniform(0.5, 1.0)))
    if rng.random() < 0.6:  # presence peak
        secs.append(peak(rng.uniform(2000, 6000), rng.uniform(2, 8), rng.uniform(0.7, 2.0)))
    if rng.random() < 0.4:  # cheap capsule / enclosure resonance or dip
        secs.append(peak(rng.uniform(400, 4000), rng.uniform(-8, 8), rng.uniform(1.0, 4.0)))
    if rng.random() < 0.4:  # high-frequency roll-off
        secs.append(sps.butter(2, rng.uniform(6000, 16000) / (SR / 2), btype="low", output="sos"))
    return np.concatenate(secs) if secs else np.array([[1.0, 0, 0, 1.0, 0, 0]])


# (sample rate, soundfile compression level, effective upper band edge in Hz measured on white noise
# through libsndfile 1.2.2's LAME): 8..60 kbit/s MP3 of the kinds web voice clips and calls use
MP3_SETTINGS = ((16000, 0.8, 7200), (16000, 0.9, 5800), (22050, 0.8, 9900), (22050, 0.9, 5900),
                (24000, 0.9, 6000), (32000, 0.95, 11000), (48000, 0.9, 16500), (48000, 0.95, 11300),
                (48000, 0.99, 8200))
MP3_DELAY = 1105  # LAME's encoder + decoder delay when the file carries no gapless (LAME tag) info


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` cut or zero-padded to ``n`` samples, float32 (resampling round trips are off by a few)."""
    out = np.zeros(n, np.float32)
    out[: min(n, len(y))] = y[:n]
    return out


def mp3_roundtrip(x: np.ndarray, rate: int, level: float) -> np.ndarray:
    """Encode 48 kHz ``x`` as MP3 at ``rate`` Hz (``level``: soundfile compression level, 0 best) and
    decode it back to 48 kHz, sample-aligned with ``x``."""
    import io

    import soundfile as sf
    import soxr

    y = soxr.resample(x, SR, rate, quality="HQ") if rate != SR else x
    buf = io.BytesIO()
    sf.write(buf, y, rate, format="MP3", subtype="MPEG_LAYER_III", compression_level=level,
             bitrate_mode="CONSTANT")
    buf.seek(0)
    d, _ = sf.read(buf, dtype="float32")
    # gapless files decode to exactly the input length; without the tag the codec delay is in front
    d = d[MP3_DELAY:] if len(d) != len(y) else d
    d = soxr.resample(d, rate, SR, quality="HQ") if rate != SR else d
    return fit_length(d, len(x))


def g711(x: np.ndarray, law: str = "mu") -> np.ndarray:
    """Telephone companding: 48 kHz ``x`` (already limited to the 8 kHz band) through 8 kHz, 8-bit
    mu-law or A-law quantisation and back (the quantisation noise stays in the telephone band)."""
    import soxr

    y = np.clip(soxr.resample(x, SR, 8000, quality="HQ"), -1, 1)
    if law == "mu":
        mu = 255.0
        c = np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu)
        c = np.round(c * 127) / 127  # 8 bits: sign + 127 magnitudes (zero kept, as G.711's +-0)
        y = np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu
    else:
        A = 87.6
        a = np.abs(y)
        c = np.where(a < 1 / A, A * a, 1 + np.log(np.maximum(A * a, 1.0))) / (1 + np.log(A))
        c = (np.floor(c * 128) + 0.5) / 128  # 128 levels per sign
        e = c * (1 + np.log(A))
        y = np.sign(y) * np.where(e < 1, e / A, np.exp(e - 1) / A)
    z = soxr.resample(y.astype(np.float32), 8000, SR, quality="HQ")
    return fit_length(z, len(x))
