"""The synth's controllers are per MIDI channel, as MIDI has them, review 44. A GM file's tracks each
play on a channel of their own: one track's All Notes Off, All Sound Off, sustain pedal, Reset All
Controllers, mod wheel or bend range (RPN 0) acted on every channel, and cut, smeared or retuned the
other tracks' notes. Each test failed before its fix."""
import numpy as np
import pytest

from realtime.dsp.processors.synth import voices as sv

from .test_synth import SR, make, measured_f0, run

CH1, CH2 = 0, 1  # MIDI channels 1 and 2 (0-based)


def on(ch, note, block=0):
    return (block, 0x90 | ch, note, 100, 0)


def off(ch, note, block):
    return (block, 0x80 | ch, note, 0, 0)


def cc(ch, number, value, block):
    return (block, 0xB0 | ch, number, value, 0)


@pytest.mark.parametrize("number", [123, 120])
def test_all_notes_or_sound_off_ends_its_own_channels_notes_only(number):
    s = make(release_ms=20)
    run(s, 5, events=[on(CH1, 69), on(CH2, 60), cc(CH2, number, 0, 2)])
    assert s.sounding_notes() == [69]
    y = run(s, 100)[:, 0]
    assert s.sounding_notes() == [69] and np.sqrt(np.mean(y[-SR // 10:] ** 2)) > 1e-3  # still heard


def test_a_channels_sustain_pedal_holds_its_own_notes_only():
    s = make(release_ms=20)
    run(s, 5, events=[cc(CH2, 64, 127, 0), on(CH1, 69, 1), on(CH2, 60, 1), off(CH1, 69, 3), off(CH2, 60, 3)])
    assert s.sounding_notes() == [60]  # the pedal on channel 2 holds channel 2's note
    run(s, 5, events=[cc(CH1, 64, 127, 0), on(CH1, 72, 1), cc(CH2, 121, 0, 3), cc(CH2, 64, 0, 3)])
    assert s.sounding_notes() == [72]  # channel 2's reset and pedal up leave channel 1's pedal alone
    run(s, 5, events=[off(CH1, 72, 0)])
    assert s.sounding_notes() == [72]
    run(s, 5, events=[cc(CH1, 121, 0, 0)])  # Reset All Controllers lifts the channel's pedal
    assert s.sounding_notes() == []


def test_a_channels_mod_wheel_adds_vibrato_to_its_own_notes_only():
    plain = run(make(vibrato_depth_cents=50), 200, events=[on(CH1, 69)])
    other = run(make(vibrato_depth_cents=50), 200, events=[cc(CH2, 1, 127, 0), on(CH1, 69)])
    own = run(make(vibrato_depth_cents=50), 200, events=[cc(CH1, 1, 127, 0), on(CH1, 69)])
    assert np.array_equal(other, plain)
    assert np.abs(own - plain).max() > 0.01


def test_a_channels_bend_range_bends_its_own_notes_only():
    """RPN 0 on channel 2 sets 12 semitones; channel 1 bends by the knob's 2, and its data entry
    does not complete channel 2's selection."""
    s = make(bend_range=2)
    y = run(s, 400, events=[cc(CH2, 101, 0, 0), cc(CH2, 100, 0, 0), cc(CH1, 6, 7, 0), cc(CH2, 6, 12, 0),
                            (0, 0xE0 | CH1, 0x7F, 0x7F, 0), on(CH1, 62)])[:, 0]
    assert s.g[sv.G_RANGE + CH2] == 12 and s.g[sv.G_RANGE + CH1] == -1  # (-1: the knob's)
    want = 440.0 * 2 ** ((62 + 2 * 8191 / 8192 - 69) / 12)
    assert abs(1200 * np.log2(measured_f0(y[SR // 2:], want) / want)) <= 5.0


def test_panic_stops_every_channels_notes():
    s = make()
    run(s, 5, events=[on(CH1, 60), on(CH2, 64), on(15, 67)])
    s.panic()
    run(s, 3)
    assert s.active_voices() == 0
