"""Built-in presets (review 50): what their names and descriptions promise, measured on audio."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from realtime.dsp.presets import build_chain, load_preset

SR = 48000
DEMO = Path(__file__).resolve().parents[1] / "realtime" / "assets" / "demo.flac"


def true_peak_db(y: np.ndarray) -> float:
    """dBTP, 4x oversampled (scipy's polyphase filter, not the limiter's own detector)."""
    up = resample_poly(np.asarray(y, np.float64), 4, 1, axis=0)
    return float(20 * np.log10(np.abs(up[64:-64]).max()))


def test_master_holds_its_true_peak_ceiling_on_music_with_a_dc_offset(tmp_path, capsys):
    """The limiter held -1 dBTP, then the safety stage's 1 Hz DC blocker took the offset out behind
    it and moved every peak by it: music 0.04 under zero came out at -0.53 dBTP (a real track, DC
    0.041, at -0.29 dBTP with 17 samples cut by the safety clip and a warning advising another
    preset). A 20 Hz high-pass ahead of the limiter takes the offset (and any rumble) out before it."""
    import main

    x, sr = sf.read(DEMO, dtype="float32", always_2d=True, frames=3 * SR)
    src, dst = tmp_path / "dc.wav", tmp_path / "out.wav"
    sf.write(src, x - np.float32(0.04), sr, subtype="FLOAT")
    assert main.main(["process", str(src), str(dst), "--preset", "master", "--no-progress"]) == 0
    y, _ = sf.read(dst, dtype="float64", always_2d=True)
    assert true_peak_db(y) <= -1.0 + 0.05  # measured -1.01 (was -0.53)
    assert "safety ceiling" not in capsys.readouterr().err
    assert abs(float(y.mean())) < 1e-3  # the offset is gone from the output as before


def test_master_filters_below_the_audio_band_and_keeps_the_bass():
    """The high-pass is subsonic: 40 Hz (a kick's fundamental) loses a fraction of a dB to it."""
    chain = build_chain(load_preset("master"))
    chain.prepare(SR, 4096, 1)
    hp = chain.slot("hpf").processor
    t = np.arange(2 * SR) / SR
    level = {}
    for f in (5.0, 40.0):
        x = (0.1 * np.sin(2 * np.pi * f * t)).astype(np.float32)[:, None]
        for i in range(0, len(x), 4096):
            hp.process(x[i:i + 4096])
        level[f] = 20 * np.log10(np.abs(x[SR:]).max() / 0.1)
    assert level[5.0] < -20.0 and level[40.0] > -0.5, level



def test_the_synth_presets_limiter_adds_a_millisecond_not_five():
    """An instrument is played: its chain's latency is what a player feels on top of the device's.
    The limiter never acted at 5 ms of look-ahead (a 16-note chord at full velocity peaks at
    -2 dBFS); 1 ms still catches a peak, at a fifth of the delay."""
    from realtime.dsp.presets import build_chain, load_preset

    chain = build_chain(load_preset("synth"))
    chain.prepare(48000, 128, 2)
    assert chain.latency == 48
