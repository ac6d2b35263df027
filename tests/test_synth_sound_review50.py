"""The synth's sound as measured on rendered audio, review 50: what comes out at low sample rates
(noise bands above Nyquist, notes above it) and in mono mode. Each test failed before its fix."""
import numpy as np
from scipy.signal import welch

from realtime.dsp.processors.synth.processor import MODEL_DIR, Synth


def render(sr, seconds, events, block=128, **params):
    """A fresh violin synth at ``sr``: channel 0 of ``seconds`` rendered, events = [(time_s, status, d1, d2)]."""
    s = Synth(model_dir=MODEL_DIR, instrument="violin", **params)
    s.prepare(sr, block, 2)
    n = int(seconds * sr)
    out = np.zeros((n + block, 2), np.float32)
    ev = sorted(((int(round(t * sr)), st, a, b) for t, st, a, b in events), key=lambda e: e[0])
    k = 0
    for i in range(0, n, block):
        while k < len(ev) and ev[k][0] < i + block:
            s.handle_midi(ev[k][1], ev[k][2], ev[k][3], ev[k][0] - i)
            k += 1
        s.process(out[i:i + block])
    return out[:n, 0].astype(np.float64)


def band_db(y, sr, lo, hi):
    f, p = welch(y, sr, nperseg=1024)
    return 10 * np.log10(p[(f >= lo) & (f < hi)].mean())


def test_noise_bands_above_nyquist_are_not_folded_back_at_low_rates():
    """The decoder's noise bands reach 12 kHz; at 8 kHz those above 4 kHz folded into the band
    below and raised the noise there by 4-6 dB. Noise alone (Noise/harmonic +1): the same band
    levels at 8 kHz as at 48 kHz."""
    note = [(0.0, 0x90, 64, 127)]
    lo = render(8000, 1.5, note, balance=1.0)[2400:]
    hi = render(48000, 1.5, note, balance=1.0)[14400:]
    for a, b in ((500, 1000), (1000, 2000), (2000, 3000), (3000, 3800)):
        d = band_db(lo, 8000, a, b) - band_db(hi, 48000, a, b)
        assert abs(d) < 1.5, (a, b, d)


def test_notes_up_to_nyquist_keep_their_pitch_and_those_above_it_are_silent():
    """f0 was held at 0.45 of the rate: at 16 kHz notes 118-126 all played 7.2 kHz, a wrong note
    at full level. Now a note below Nyquist is in tune and one above it has no harmonics (as note
    127, above the decoders' 12 kHz band limit, at 48 kHz)."""
    sr = 16000
    for note in (118, 119):
        y = render(sr, 0.6, [(0.0, 0x90, note, 100)], balance=-1.0)[4800:]
        nominal = 440.0 * 2 ** ((note - 69) / 12)
        n = 1 << 20
        X = np.abs(np.fft.rfft(y * np.hanning(len(y)), n))
        i = int(np.argmax(X))
        a, b, c = np.log(X[i - 1:i + 2])
        f = (i + 0.5 * (a - c) / (a - 2 * b + c)) * sr / n
        assert abs(1200 * np.log2(f / nominal)) < 5.0, (note, f)
    for note in (120, 124):
        y = render(sr, 0.6, [(0.0, 0x90, note, 100)], balance=-1.0)
        assert np.abs(y).max() < 1e-5, note


def test_a_mono_note_played_in_the_last_ones_release_leaves_no_hole():
    """Mono mode, slow attack, long release, detached notes: the next note started its attack from
    silence on the one voice, so the last note's release fell 20 dB within 5 ms and the new note
    swelled in from nothing (poly mode lets the release ring on). Its attack now goes on from the
    release's level."""
    sr = 48000
    y = render(sr, 1.0, [(0.0, 0x90, 60, 100), (0.6, 0x80, 60, 0), (0.65, 0x90, 62, 100)],
               mode=1, attack_ms=300, release_ms=1000)
    w = sr // 200  # 5 ms
    env = 10 * np.log10(np.mean(y[:len(y) // w * w].reshape(-1, w) ** 2, axis=1))
    before = env[int(0.62 * 200):int(0.65 * 200)].mean()
    after = env[int(0.65 * 200):int(0.8 * 200)].min()
    assert after > before - 6.0, (before, after)
