"""The engine's output fades in after a start and out before a stop: a stream stopped or started
mid-waveform (Stop/Start, and every structure change the knob panel makes restarts it) clicked."""
import time

import numpy as np
import pytest

from realtime.engine import callback as cb
from realtime.engine.config import EngineConfig
from realtime.engine.engine import Engine
from realtime.io.jackio import JackPlayer, JackRecorder, _libjack, engine_ports, portaudio_client

from .jack_helpers import GlitchTries, Identity

SR, B, FREQ, AMP = 48000, 128, 1000.0, 0.5
SINE_STEP = 2 * AMP * np.sin(np.pi * FREQ / SR)  # the largest sample-to-sample step of the sine itself


def _sine_loop() -> np.ndarray:
    """0.1 s of a 1 kHz sine (a whole number of cycles: it loops seamlessly), stereo. It repeats every
    48 frames, so the 128-frame JACK cycles the stream starts and stops at meet it at three phases
    only; an eighth of a cycle back, none of them is near a zero crossing (a cut there would hide)."""
    x = AMP * np.sin(2 * np.pi * FREQ * np.arange(SR // 10) / SR - np.pi / 8)
    return np.tile(x, (2, 1)).T.astype(np.float32)


def _run_through(monkeypatch) -> tuple[np.ndarray, dict]:
    """Play a looping sine into a fresh engine, wired before its stream starts (so the sine is there
    from the stream's first callback), run it 0.3 s and stop it; (what its output played from before
    the start to after the stop, its stats)."""
    player = JackPlayer(_sine_loop(), loop=True)
    rec = JackRecorder(2 * SR, 2)
    try:
        player.start([])
        rec.start([])
        lib = _libjack()
        wire = Engine._wire_control_block

        def wired(self):  # the stream is open, its ports exist, it has not started: connect the rig
            wire(self)
            ins, outs = engine_ports(client=portaudio_client())
            for src, dst in zip(player.port_names(), ins[:2]):
                assert lib.jack_connect(player._client, src.encode(), dst.encode()) in (0, 17)
            for src, dst in zip(outs[:2], rec.port_names()):
                assert lib.jack_connect(rec._client, src.encode(), dst.encode()) in (0, 17)
            rec.recording = True  # from here (a cold start compiles for seconds before)

        monkeypatch.setattr(Engine, "_wire_control_block", wired)
        player.play()
        eng = Engine(Identity(), EngineConfig(blocksize=B, prefill_blocks=2))
        eng.start()
        time.sleep(0.3)
        eng.stop()
        time.sleep(0.1)
        rec.recording = False
        return rec.data[: rec.pos, 0].copy(), eng.stats()
    finally:
        monkeypatch.undo()
        player.close()
        rec.close()


@pytest.mark.jack
def test_a_sine_through_the_engine_has_no_step_where_the_stream_starts_or_stops(jack_server, monkeypatch):
    glitched, tries = [], GlitchTries(pause_s=0.5)
    for _ in tries:
        out, stats = _run_through(monkeypatch)
        if stats["late_blocks"] or stats["server_xruns"]:  # a glitch mid-sine is a step of its own: again
            glitched.append({k: stats[k] for k in ("late_blocks", "server_xruns")})
            continue
        sounding = np.flatnonzero(np.abs(out) > 1e-6)
        assert len(sounding), "nothing came out of the engine"
        first, last = sounding[0], sounding[-1]
        assert first > 0 and last < len(out) - 1, "the take does not span the start and the stop"
        assert np.abs(out[first:last]).max() == pytest.approx(AMP, abs=0.01)  # the sine played through
        steps = np.abs(np.diff(out))
        worst = int(np.argmax(steps))
        where = "start" if abs(worst - first) < abs(worst - last) else "stop"
        assert steps.max() <= 1.05 * SINE_STEP, (
            f"a step of {steps.max():.3f} at the {where} (frame {worst}; sound from {first} to {last}); "
            f"the sine's own steps are at most {SINE_STEP:.3f}")
        return
    pytest.fail(f"no take without a glitch in {tries.words()}: {glitched}")


# ---------------------------------------------------------------------------- the fade itself
LEN = 8


def _ctl(pos: int, target: int, start: int = 0) -> np.ndarray:
    ctl = np.zeros(cb.CTL_SIZE, np.int64)
    ctl[cb.CTL_FADE_LEN], ctl[cb.CTL_FADE_POS], ctl[cb.CTL_FADE_TARGET] = LEN, pos, target
    ctl[cb.CTL_FADE_FROM] = start
    return ctl


def test_the_fade_in_waits_for_the_first_frame_after_the_prefill_and_rises_as_a_raised_cosine():
    ctl = _ctl(0, LEN, start=20)
    block = np.ones((16, 2), np.float32)
    cb.apply_fade(ctl, block, 16, 0)  # pre-fill: ring frames 0..15
    assert not block.any() and ctl[cb.CTL_FADE_POS] == 0
    block[:] = 1
    cb.apply_fade(ctl, block, 16, 16)  # frames 16..31: the fade begins at 20
    expected = 0.5 - 0.5 * np.cos(np.pi * np.arange(1, LEN + 1) / LEN)
    np.testing.assert_allclose(block[4:12, 0], expected, atol=1e-6)
    assert not block[:4].any() and (block[12:] == 1).all()
    assert ctl[cb.CTL_FADE_POS] == LEN


def test_an_underruns_silence_does_not_use_up_the_fade_in():
    ctl = _ctl(0, LEN)
    block = np.ones((16, 2), np.float32)
    cb.apply_fade(ctl, block, 3, 0)  # 3 frames from the ring, 13 of an underrun's silence
    assert ctl[cb.CTL_FADE_POS] == 3


def test_the_fade_out_reaches_silence_and_says_so_after_a_whole_silent_block():
    ctl = _ctl(LEN, LEN)
    block = np.ones((16, 2), np.float32)
    cb.apply_fade(ctl, block, 16, 0)
    assert (block == 1).all()  # unity: untouched
    ctl[cb.CTL_FADE_TARGET] = 0
    block[:] = 1
    cb.apply_fade(ctl, block, 0, 16)  # fades out even over an underrun (a stop ends whatever comes)
    assert np.all(np.diff(block[:LEN, 0]) < 0) and not block[LEN - 1:].any()
    assert ctl[cb.CTL_FADED] == 0  # this block still faded
    block[:] = 1
    cb.apply_fade(ctl, block, 16, 16)
    assert not block.any() and ctl[cb.CTL_FADED] == 1


def test_a_stop_waits_for_the_fade_out_only_so_long_when_no_callback_plays_it():
    eng = Engine(Identity(), EngineConfig(blocksize=B))
    eng._ctl[cb.CTL_FADE_LEN] = eng._ctl[cb.CTL_FADE_TARGET] = eng._ctl[cb.CTL_FADE_POS] = 240
    eng._fade_out()  # returns (nothing plays it): bounded by the fade and a few periods
    assert eng._ctl[cb.CTL_FADE_TARGET] == 0 and eng._ctl[cb.CTL_FADED] == 0
