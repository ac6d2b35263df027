"""The JACK player and recorder (demo and test rig): compiled callbacks that need no GIL, so a
Python thread holding it cannot make them miss a cycle; looping; clear errors."""
import threading
import time

import numpy as np
import pytest

from realtime.errors import JackError
from realtime.io.jackio import JackPlayer, JackRecorder
from realtime.run.live import measure_lag

from .jack_helpers import GlitchTries, hold_gil

pytestmark = pytest.mark.jack
SR = 48000



def _take_while_the_gil_is_held(signal, hold_ms):
    """Play ``signal`` from a player straight into a recorder while another thread holds the GIL
    for ``hold_ms`` in the middle: (what was recorded, aligned to the player's first frame)."""
    rec = JackRecorder(len(signal) + SR // 2, signal.shape[1], name="rt-test-rec")
    player = JackPlayer(signal, name="rt-test-play")
    try:
        rec.start([])
        player.start(rec.port_names())
        time.sleep(0.1)
        rec.recording = True
        player.play()
        time.sleep(0.2)
        t = threading.Thread(target=hold_gil, args=(hold_ms,))
        t.start()
        t.join()
        assert player.wait(len(signal) / SR + 5), "the player did not finish"
        deadline = time.monotonic() + 5
        while rec.recording and time.monotonic() < deadline:
            time.sleep(0.01)
        return rec.since(player.start_frame)
    finally:
        player.close()
        rec.close()


def test_player_and_recorder_keep_every_sample_while_another_thread_holds_the_gil(jack_server):
    # A callback that needed the GIL would miss ~110 cycles of the 300 ms hold: the recording would
    # have a hole (or the server would skip cycles). A starved machine can still cost a cycle now
    # and then, so a take is repeated, up to three times; every one failing fails the test.
    rng = np.random.default_rng(4)
    sig = rng.uniform(-0.5, 0.5, (SR, 2)).astype(np.float32)
    # A machine's bad spell lasts seconds (GlitchTries): at least 3 takes a second apart, more while
    # it lasts; a hole of the hold's length (a callback that waited for the GIL) fails at once.
    errors, tries = [], GlitchTries(least=3, budget_s=60.0, pause_s=1.0)
    for _ in tries:
        got = _take_while_the_gil_is_held(sig, hold_ms=300)
        lag = measure_lag(sig, got, 1024)
        if lag in (0, 128) and np.array_equal(got[lag: lag + len(sig)], sig):
            return
        differ = np.flatnonzero(np.any(got[lag: lag + len(sig)] != sig, axis=1))
        errors.append(f"lag {lag}, {len(differ)} frames differ")
        if len(differ) and differ[-1] - differ[0] >= int(0.05 * SR) and len(differ) >= int(0.05 * SR):
            pytest.fail(f"a hole of {len(differ) / SR * 1000:.0f} ms: a callback waited for the GIL ({errors})")
    pytest.fail(f"no exact take, {tries.words()}: {errors}")


def test_a_looping_player_starts_over(jack_server):
    sig = np.linspace(0.1, 0.9, 1000, dtype=np.float32)[:, None]
    for _ in range(3):  # a server xrun of a loaded machine can cost a take a cycle
        loops = _loop_take(sig)
        if np.array_equal(loops, np.concatenate([sig[:, 0], sig[:, 0]])):
            return
    np.testing.assert_array_equal(loops, np.concatenate([sig[:, 0], sig[:, 0]]))


def _loop_take(sig):
    rec = JackRecorder(3500, 1, name="rt-test-rec")
    player = JackPlayer(sig, name="rt-test-play", loop=True)
    try:
        rec.start([])
        player.start(rec.port_names())
        rec.recording = True
        player.play()
        deadline = time.monotonic() + 5
        while rec.recording and time.monotonic() < deadline:
            time.sleep(0.01)
        assert player.playing  # a loop never finishes
        got = rec.since(player.start_frame)[:, 0]
    finally:
        player.close()
        rec.close()
    lag = int(np.argmax(np.isclose(got, sig[0, 0])))
    return got[lag: lag + 2000]


def test_too_many_channels_is_a_clear_error(jack_server):
    with pytest.raises(JackError, match="channels"):
        JackPlayer(np.zeros((10, 9), np.float32))


def test_no_server_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "rt-no-such-server")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with pytest.raises(JackError, match="is a JACK server running"):
        JackRecorder(100, 2, name="rt-test-rec")
