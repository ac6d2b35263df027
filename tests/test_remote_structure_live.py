"""The panel's engine process changes its chain while it streams (on a JACK dummy server): what
is new is built while the old chain plays, and only the swap fades the output out and in (as the
in-process ``EngineHost`` does); a build that fails leaves the old chain playing, never restarted."""
import threading
import time

import pytest

from gui.remote import RemoteEngineHost
from realtime.dsp.presets import load_preset
from realtime.engine.config import EngineConfig

pytestmark = pytest.mark.jack
SR, BLOCK = 48000, 128
# tests.gui_slowbuild.BUILD_S: that module is the engine process's plugin, never imported here (its
# kinds would be registered in this process too, where tests go through every registered kind)
BUILD_S = 0.8


@pytest.fixture
def host(jack_server):
    h = RemoteEngineHost(load_preset("clean"), EngineConfig(samplerate=SR, blocksize=BLOCK),
                         plugins=("tests.gui_slowbuild",))
    try:
        h.start()
        assert h.running
        yield h
    finally:
        h.close()


def blocks_while(host, action) -> tuple[list[float], object]:
    """Run ``action`` on a thread (as the window's actions do); meanwhile, the times (s after it
    began) at which the engine process's DSP thread delivered blocks (one readout record each,
    read from shared memory, never over the busy pipe). Returns them and the action's result
    (or exception)."""
    while host.read_readouts() is not None:
        pass
    out = {}

    def run():
        try:
            out["r"] = action()
        except Exception as e:  # noqa: BLE001  (handed to the test)
            out["r"] = e

    t0 = time.monotonic()
    th = threading.Thread(target=run)
    th.start()
    at = []
    while th.is_alive():
        rec = host.read_readouts()
        if rec is not None:
            at += [time.monotonic() - t0] * rec.shape[0]
        time.sleep(0.005)
    th.join()
    return at, out["r"]


def test_a_slow_build_plays_the_old_chain_until_the_swap(host):
    time.sleep(0.5)  # streaming steadily
    at, sid = blocks_while(host, lambda: host.add_slot("slowbuild"))
    assert sid == "slowbuild" and [s.id for s in host.chain.slots][-2:] == ["slowbuild", "safety"]
    build = BUILD_S
    during = [t for t in at if 0.1 < t < build - 0.1]
    # the build's middle (0.6 s = 225 blocks of 2.67 ms): blocks kept coming (the stream was stopped
    # for all of it before: none came)
    assert len(during) > 0.5 * (build - 0.2) * SR / BLOCK, (len(during), at[:5])
    assert host.status()["running"]


def test_a_build_that_fails_leaves_the_old_chain_playing(host):
    time.sleep(0.5)
    before = host.status()
    slots = [s.id for s in host.chain.slots]
    at, err = blocks_while(host, lambda: host.add_slot("failbuild"))
    assert isinstance(err, RuntimeError) and "never builds" in str(err)
    after = host.status()
    assert [s.id for s in host.chain.slots] == slots and after["running"]
    # the same engine kept streaming (a restart starts a new one, its counters from zero) ...
    assert after["callbacks"] > before["callbacks"]
    # ... and delivered blocks throughout the failed build
    assert len([t for t in at if 0.05 < t < BUILD_S / 2 - 0.05]) > 30
