"""The built-in processors at their edges, review 44: a block longer than prepared (a segfault in
the limiter, garbage from the de-clipper), the meter's peak at a long block's start, and digital
silence after a signal with DC. Each test failed before its fix."""
import numpy as np
import pytest

from realtime.dsp.processors import create


@pytest.mark.parametrize("kind", ["limiter", "declip"])
def test_a_block_longer_than_prepared_is_refused(kind):
    p = create(kind)
    p.prepare(48000, 512, 2)
    with pytest.raises(ValueError, match="a block of 513 frames is longer than the 512"):
        p.process(np.zeros((513, 2), np.float32))


@pytest.mark.parametrize("block", [64, 1024, 4096])
def test_the_meters_peak_is_the_blocks_highest_not_where_its_fall_ended(block):
    """A -6 dBFS transient at a block's start read -16 dB at 4096 frames (120 dB/s of fall)."""
    m = create("meter", peak_fall_db_s=120.0)
    m.prepare(48000, block, 1)
    x = np.zeros((block, 1), np.float32)
    x[0, 0] = 0.5
    m.process(x)
    assert m.readings[0, 0] == pytest.approx(-6.0206, abs=0.01)
    m.process(np.zeros((block, 1), np.float32))  # the next block: the envelope has fallen
    assert m.readings[0, 0] == pytest.approx(-6.0206 - 120.0 * block / 48000, abs=0.05)


def test_silence_after_a_signal_with_dc_is_digital_silence_within_seconds():
    from realtime.dsp.presets import build_chain, load_preset

    chain = build_chain(load_preset("clean"))
    chain.prepare(48000, 512, 1)
    block = np.full((512, 1), 0.5, np.float32)  # DC: the safety stage's blocker takes it away slowly
    for _ in range(100):
        chain.process(block)
    last = 0
    for k in range(48000 * 6 // 512):
        block[:] = 0.0
        chain.process(block)
        if block.any():
            last = k
    assert last * 512 / 48000 < 4.0, f"still not silent after {last * 512 / 48000:.1f} s"
