"""The built-in processors, review 50. Each test failed before its fix."""
import numpy as np
import pytest

from realtime.dsp.processors import create

SR = 48000


def _eq_with_one_spike(spike: float, seconds: float = 2.0) -> np.ndarray:
    """Quiet noise with one sample of ``spike`` at 0.5 s through a Q 10, +12 dB peak at 100 Hz."""
    p = create("biquad", type="peak", freq_hz=100, q=10, gain_db=12)
    p.prepare(SR, 512, 2)
    x = (np.random.default_rng(0).standard_normal((int(SR * seconds), 2)) * 0.01).astype(np.float32)
    x[SR // 2] = spike
    for i in range(0, len(x), 512):
        p.process(x[i:i + 512])
    return x


@pytest.mark.parametrize("spike", [1e30, -1e20, 1e6])
def test_one_absurd_sample_does_not_ring_the_eq_at_full_scale_for_seconds(spike):
    """A damaged float file's single 1e30 sample stayed in the recursive state: the EQ rang at full
    scale (clipped by the safety stage) for 4 s; it is junk, filtered as 0 like a NaN."""
    y = _eq_with_one_spike(spike)
    assert np.all(np.isfinite(y))
    assert np.abs(y[SR // 2 + 1:]).max() < 0.2  # the noise through the peak, nothing more


def test_loud_audio_under_the_junk_level_is_filtered_as_it_was():
    """+60 dBFS (a hot float chain's level) is still audio: filtered, not dropped."""
    y = _eq_with_one_spike(1000.0, seconds=1.0)
    assert np.abs(y[SR // 2 + 1: SR // 2 + 2000]).max() > 1.0
