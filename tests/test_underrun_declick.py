"""An underrun mid-playback (the DSP thread late) cut the output from mid-waveform to zero and back:
two clicks per glitch. The silence now begins with a 1 ms ramp from the last frame played and the
sound after it fades in again (``callback.declick_underrun``)."""
import time

import numpy as np
import pytest

from realtime.engine import callback as cb
from realtime.engine.config import EngineConfig
from realtime.engine.engine import Engine
from realtime.io.jackio import JackPlayer, JackRecorder, engine_ports, portaudio_client

from .jack_helpers import GlitchTries, Identity, hold_gil

SR, B, FREQ, AMP = 48000, 128, 1000.0, 0.5
SINE_STEP = 2 * AMP * np.sin(np.pi * FREQ / SR)
LEN = 240


def _ctl(target: int = LEN) -> np.ndarray:
    ctl = np.zeros(cb.CTL_SIZE, np.int64)
    ctl[cb.CTL_RATE] = SR
    ctl[cb.CTL_FADE_LEN], ctl[cb.CTL_FADE_POS], ctl[cb.CTL_FADE_TARGET] = LEN, LEN, target
    return ctl


def test_the_silence_of_an_underrun_begins_with_a_ramp_from_the_last_frame():
    ctl, last = _ctl(), np.zeros(2, np.float32)
    dst = np.zeros((B, 2), np.float32)
    dst[:60] = 0.5  # 60 frames came, 68 did not
    cb.declick_underrun(ctl, dst, 60, last, 1000)
    ramp = dst[59:60 + 48, 0]
    assert ramp[0] == 0.5 and np.all(np.diff(ramp) < 0) and ramp[-1] < 0.001
    assert np.abs(np.diff(dst[:, 0])).max() < 0.02  # no step: the cut from 0.5 to 0 was one
    assert not dst[60 + 48:].any()
    # the sound that comes back fades in from the ring's next frame
    assert ctl[cb.CTL_FADE_POS] == 0 and ctl[cb.CTL_FADE_FROM] == 1000
    assert last[0] == 0.0


def test_a_whole_block_missing_ramps_from_the_previous_blocks_last_frame():
    ctl, last = _ctl(), np.array([-0.4, 0.3], np.float32)
    dst = np.zeros((B, 2), np.float32)
    cb.declick_underrun(ctl, dst, 0, last, 0)
    assert dst[0, 0] == pytest.approx(-0.4, abs=0.01) and dst[0, 1] == pytest.approx(0.3, abs=0.01)
    assert not dst[48:].any()


def test_a_block_played_whole_is_left_alone_and_remembered():
    ctl, last = _ctl(), np.zeros(2, np.float32)
    dst = np.random.default_rng(0).uniform(-1, 1, (B, 2)).astype(np.float32)
    before = dst.copy()
    cb.declick_underrun(ctl, dst, B, last, 0)
    assert (dst == before).all() and (last == before[-1]).all() and ctl[cb.CTL_FADE_POS] == LEN


def test_a_fade_out_under_way_is_not_turned_into_a_fade_in():
    ctl, last = _ctl(target=0), np.zeros(2, np.float32)
    ctl[cb.CTL_FADE_POS] = 100
    dst = np.zeros((B, 2), np.float32)
    cb.declick_underrun(ctl, dst, 10, last, 0)
    assert ctl[cb.CTL_FADE_POS] == 100 and ctl[cb.CTL_FADE_TARGET] == 0


def _sine_loop() -> np.ndarray:
    x = AMP * np.sin(2 * np.pi * FREQ * np.arange(SR // 10) / SR - np.pi / 8)
    return np.tile(x, (2, 1)).T.astype(np.float32)


@pytest.mark.jack
def test_a_late_dsp_thread_mid_sine_leaves_no_click(jack_server):
    """The GIL held for 40 ms mid-sine: the DSP thread misses blocks, the output goes silent for
    a while, and neither the cut nor the return steps further than the sine does itself."""
    player, rec = JackPlayer(_sine_loop(), loop=True), JackRecorder(2 * SR, 2)
    eng = Engine(Identity(), EngineConfig(blocksize=B, prefill_blocks=2))
    try:
        eng.start()
        ins, outs = engine_ports(client=portaudio_client())
        player.start(ins[:2])
        rec.start(outs[:2])
        player.play()
        time.sleep(0.3)
        tries = GlitchTries(budget_s=30.0)
        for _ in tries:
            before = eng.stats()
            rec.rearm(rec.data.shape[0])
            rec.recording = True
            time.sleep(0.2)
            hold_gil(40)
            time.sleep(0.2)
            rec.recording = False
            after = eng.stats()
            out = rec.data[: rec.pos, 0].copy()
            if after["server_xruns"] != before["server_xruns"]:  # the server's own cut: not ours to smooth
                continue
            assert after["late_blocks"] > before["late_blocks"], "the GIL hold did not make a block late"
            assert (np.abs(out) < 1e-4).sum() > B, "no silence where the blocks were late"
            steps = np.abs(np.diff(out))
            assert steps.max() <= 1.1 * SINE_STEP, f"a step of {steps.max():.3f} (the sine's own: {SINE_STEP:.3f})"
            assert np.abs(out[-SR // 20:]).max() == pytest.approx(AMP, abs=0.01)  # the sound came back whole
            return
        pytest.fail(f"every take had a server xrun: {tries.words()}")
    finally:
        eng.stop()
        player.close()
        rec.close()


def test_a_fade_in_still_waiting_for_a_chains_first_sound_keeps_waiting_for_it():
    """A late block while a start's (or a swap's) fade-in waits for the chain's first sound must not
    move its start back: the fade would pass over the latency's silence and the sound start at unity."""
    ctl, last = _ctl(), np.zeros(2, np.float32)
    ctl[cb.CTL_FADE_POS], ctl[cb.CTL_FADE_FROM] = 0, 5000
    dst = np.zeros((B, 2), np.float32)
    cb.declick_underrun(ctl, dst, 0, last, 1000)
    assert ctl[cb.CTL_FADE_FROM] == 5000 and ctl[cb.CTL_FADE_POS] == 0
