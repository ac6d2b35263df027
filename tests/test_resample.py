"""The streaming resampler: an independent reference (scipy's upfirdn), any chunking, band edges."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import upfirdn

from realtime.dsp.resample import StreamResampler

PAIRS = [(44100, 48000), (48000, 44100), (96000, 48000), (48000, 96000), (88200, 48000)]


def _stream(r: StreamResampler, x: np.ndarray, sizes) -> np.ndarray:
    """x: [C, n] through r in chunks of the given sizes (cycled)."""
    out = np.zeros((x.shape[0], r.max_out * (x.shape[1] // min(sizes) + 2)), np.float32)
    pos = i = k = 0
    while i < x.shape[1]:
        n = min(sizes[k % len(sizes)], x.shape[1] - i)
        pos += r.process(x[:, i: i + n], n, out, pos)
        i, k = i + n, k + 1
    return out[:, :pos]


@pytest.mark.parametrize("rate_in,rate_out", PAIRS)
def test_matches_scipy_upfirdn_with_the_same_filter(rate_in, rate_out):
    r = StreamResampler(rate_in, rate_out, 2, 512)
    x = np.random.default_rng(1).standard_normal((2, 3000)).astype(np.float32)
    y = _stream(r, x, [512, 7, 128, 300])
    h = r.taps[:, ::-1].T.reshape(-1).astype(np.float64)  # back to the prototype's tap order
    ref = upfirdn(h, x.astype(np.float64), r.L, r.M, axis=1)[:, : y.shape[1]]
    assert y.shape[1] >= 3000 * rate_out // rate_in - 1
    np.testing.assert_allclose(y, ref, atol=2e-5)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 256), min_size=1, max_size=8))
def test_any_chunking_gives_the_same_samples(sizes):
    x = np.random.default_rng(2).standard_normal((1, 2000)).astype(np.float32)
    whole = _stream(StreamResampler(44100, 48000, 1, 2000), x, [2000])
    parts = _stream(StreamResampler(44100, 48000, 1, 2000), x, sizes)
    np.testing.assert_array_equal(parts, whole)


@pytest.mark.parametrize("rate_in,rate_out", [(44100, 48000), (48000, 44100)])
def test_pass_band_is_flat_and_aliases_are_60_db_down(rate_in, rate_out):
    n = rate_in
    for f in (1000.0, 10000.0, 20000.0):
        r = StreamResampler(rate_in, rate_out, 1, 256)
        x = np.sin(2 * np.pi * f * np.arange(n) / rate_in).astype(np.float32)[None]
        y = _stream(r, x, [256])[0, 2000:-2000]
        assert abs(20 * np.log10(np.sqrt(2 * np.mean(y ** 2)))) < 0.02, f
        spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        freqs = np.fft.rfftfreq(len(y), 1 / rate_out)
        k = int(np.argmin(np.abs(freqs - f)))
        spurs = spec.copy()
        spurs[k - 20: k + 21] = 0
        assert 20 * np.log10(spurs.max() / spec[k]) < -60, f


def test_delay_is_reported():
    r = StreamResampler(44100, 48000, 1, 512)
    x = np.zeros((1, 2000), np.float32)
    x[0, 500] = 1.0
    y = _stream(r, x, [128])[0]
    assert abs(int(np.argmax(y)) - (500 * 48000 / 44100 + r.delay_out)) <= 1


def test_rejects_oversized_chunks_and_bad_rates():
    r = StreamResampler(44100, 48000, 1, 64)
    with pytest.raises(ValueError, match="max_in"):
        r.process(np.zeros((1, 65), np.float32), 65, np.zeros((1, 200), np.float32))
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 48000, 1, 64)
