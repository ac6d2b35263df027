"""The enhancer's oracle probe: its asymmetric windows reconstruct perfectly at the shipped latency,
and its ideal gains do what an ideal gain does."""
import numpy as np
import pytest

from models.enhancer.probe import HOP, asymmetric_windows, istft, oracle, stft


@pytest.mark.parametrize("n", [480, 960, 1920])
def test_asymmetric_windows_reconstruct_and_synthesise_only_the_last_two_hops(n):
    x = np.random.default_rng(n).standard_normal(48000)
    a, s = asymmetric_windows(n)
    assert np.allclose(istft(stft(x, a), s, len(x)), x, atol=1e-12)
    # the synthesis window spans the last 2 hops only: an output sample is final 2*hop - 1 samples
    # after it came in, whatever n is (the shipped model's 479 samples)
    assert not s[: n - 2 * HOP].any() and s[n - 2 * HOP + 1 :].all()


def test_the_480_sample_pair_is_the_shipped_window():
    a, s = asymmetric_windows(480)
    k = np.arange(480)
    shipped = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * k / 480))  # periodic sqrt-Hann (model card)
    assert np.allclose(a, shipped) and np.allclose(s, shipped)


def test_oracle_gains_pass_clean_speech_and_take_noise_out():
    rng = np.random.default_rng(1)
    t = np.arange(48000) / 48000
    clean = (0.3 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    noise = (0.05 * rng.standard_normal(len(t))).astype(np.float32)
    for n in (480, 1920):
        for gains in ("erb", "bin"):
            assert np.allclose(oracle(clean, clean, n, gains), clean, atol=1e-5)
            y = oracle(clean + noise, clean, n, gains)
            assert np.sum((y - clean) ** 2) < 0.2 * np.sum(noise ** 2), (n, gains)


def test_a_window_shorter_than_two_hops_is_refused():
    with pytest.raises(ValueError, match="shorter than 2 hops"):
        asymmetric_windows(400)


@pytest.mark.parametrize("args, message", [(["--gains", "foo"], "--gains takes erb and/or bin"),
                                           (["--windows", "100"], "--windows: an analysis window of 100"),
                                           (["--windows", "x"], "--windows: invalid literal")])
def test_the_probe_refuses_bad_options_in_one_line(args, message):
    from models.enhancer.probe import main

    with pytest.raises(SystemExit, match=message):
        main(args)
