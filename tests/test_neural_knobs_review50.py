"""Review 50: the neural effects' readouts say what the audio measures.

Enhancer: "Noise cut" is the level drop of the speech-free frames (it was a mean of per-frame dB,
20 dB over the measured drop on pink noise, and stayed on show after the limit was turned down);
"Speech" is the network's own judgement of the input, not of the knobs (it read 100 % on pure
noise at a 0 dB limit) and falls in digital silence. De-limiter: "Restored" is the gain the audio
got back, the de-clipper's fills blended by the amount as played (it read a fill's 6 dB at
amount 0, and left the network's gain on a filled peak out).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import realtime.dsp.processors.neural.enhancer as enh
from realtime.dsp.processors.neural.delimiter import Delimiter
from realtime.dsp.processors.neural.enhancer import Enhancer, dc_blocked

from .test_enhancer import _noise as colored_noise

DEMO = Path(__file__).resolve().parents[1] / "realtime" / "assets" / "demo.flac"
SR = 48000
HOP = 240  # the enhancer's hop at 48 kHz: one readout update per block


def _noise(n, seed=3, color=1.0):
    """Coloured noise at an RMS of 0.03 (-30 dBFS)."""
    return (0.03 * colored_noise(n, seed, color)).astype(np.float32)


def _stream(p, x, block, change=None):
    """x (frames, channels) through p in blocks; readings after each block; change = (sample, {id: value})."""
    y, readings = x.copy(), []
    for i in range(0, len(y), block):
        if change and i <= change[0] < i + block:
            for k, v in change[1].items():
                p.set_param(k, v)
        p.process(y[i:i + block])
        readings.append(p.readings.copy())
    return y, np.array(readings)


def _enhance(x, change=None, **values):
    e = Enhancer(**values)
    e.prepare(SR, HOP, 1)
    y, r = _stream(e, x[:, None].astype(np.float32), HOP, change)
    return y[:, 0], r, e.latency


@pytest.mark.parametrize("color", [0.0, 1.0, 2.0])  # white, pink, brown
def test_noise_cut_reads_the_level_drop_measured_on_the_audio(color):
    x = _noise(SR * 4, color=color)
    y, r, lat = _enhance(x)
    # the measured drop, per hop, with the readout's own smoothing of energies
    xin, a, ei, eo, measured = dc_blocked(x), enh.READOUT_ALPHA, 0.0, 0.0, []
    for k in range(len(x) // HOP - 3):
        ei += a * (np.sum(xin[k * HOP:(k + 1) * HOP] ** 2.0) - ei)
        eo += a * (np.sum(y[k * HOP + lat:(k + 1) * HOP + lat] ** 2.0) - eo)
        measured.append(10 * np.log10(ei / eo))
    err = np.abs(r[200:len(measured), 0] - np.array(measured[200:]))
    assert np.median(err) < 2.0, np.median(err)  # was 4-9 dB over it (a mean of per-frame dB)


@pytest.mark.parametrize("limit", [2.0, 0.0])
def test_noise_cut_follows_the_limit_down(limit):
    x = _noise(SR * 5, color=0.0)
    y, r, lat = _enhance(x, change=(2 * SR, {"atten_limit_db": limit}), atten_limit_db=20.0)
    assert r[2 * SR // HOP - 1, 0] == pytest.approx(20.0, abs=0.3)
    drop = 10 * np.log10(np.mean(dc_blocked(x)[4 * SR:-lat] ** 2.0) / np.mean(y[4 * SR + lat:] ** 2.0))
    assert drop == pytest.approx(limit, abs=0.1)
    assert r[-1, 0] == pytest.approx(drop, abs=0.3)  # it stayed at 16-18 dB


def test_a_small_limit_reads_its_cut():
    x = _noise(SR * 3, color=1.0)
    y, r, lat = _enhance(x, atten_limit_db=3.0)
    assert r[-1, 0] == pytest.approx(3.0, abs=0.2)  # read 0 dB: the frames kept half their energy


@pytest.mark.parametrize("values", [{"atten_limit_db": 0.0}, {"atten_limit_db": 3.0}, {"wet": 0.0}])
def test_the_speech_readout_on_pure_noise_does_not_follow_the_knobs(values):
    _, r, _ = _enhance(_noise(SR * 3, color=1.0), **values)
    assert r[SR // HOP:, 1].max() < 10.0  # read 100 / 50 / 100 %


def test_the_speech_readout_on_speech_is_high_and_falls_in_digital_silence(tmp_path):
    exe = shutil.which("espeak-ng")
    if not exe:
        pytest.skip("needs espeak-ng speech (scripts/setup.sh --dev installs it)")
    import soundfile as sf
    import soxr

    wav = tmp_path / "s.wav"
    subprocess.run([exe, "-v", "en", "-s", "150", "-w", str(wav), "Please call Stella. Ask her to bring these things."],
                   check=True, capture_output=True)
    s, sr = sf.read(wav, dtype="float32")
    s = soxr.resample(s, sr, SR).astype(np.float32)
    s = 0.15 * s / np.abs(s).max()
    x = np.concatenate([s, np.zeros(2 * SR, np.float32)])
    _, r, _ = _enhance(x)
    speech = r[: len(s) // HOP, 1]
    assert np.median(speech) > 80.0
    assert r[-1, 1] < 5.0  # the last voice's 100 % stayed on show for good


def _clipped_demo():
    import soundfile as sf

    x, sr = sf.read(DEMO, dtype="float32")
    assert sr == SR
    return np.clip(x * 10 ** (8 / 20), -0.9, 0.9).astype(np.float32)  # 8 dB into a clipper


@pytest.mark.parametrize("values", [{"amount": 0.0}, {"amount": 0.5}, {}, {"threshold_db": 0.0}, {"declip": "off"}])
def test_restored_reads_the_gain_the_audio_got_back(values):
    x = _clipped_demo()
    p = Delimiter(auto_level="off", **values)
    p.prepare(SR, 256, 2)
    y, r = _stream(p, x, 256)
    lat = p.latency
    inp, out = np.abs(x[:-lat]), np.abs(y[lat:])
    loud = inp > 0.05
    measured = 20 * np.log10(np.max(out[loud] / inp[loud]))
    # amount 0 read the fills' 6 dB; with the network's gain on a filled peak it read the fill alone
    assert r[:, 0].max() == pytest.approx(measured, abs=0.25)
