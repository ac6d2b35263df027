"""The live engine's period watch and start-up, and what the panel says of them (review 39): the watch's
JACK client closed once also under a monitor that outlived stop(), the period-change notices in the
panel's banner, the Settings dialog's latency as the engine raises the pre-fill on a JACK server, the
pre-fill limit both paths share, and a Ctrl-C that lands in a ``__del__`` during start-up's compiles."""
import os
import subprocess
import sys
import threading
import time

import pytest

from realtime.engine.config import EngineConfig
from realtime.engine.engine import Engine

from .jack_helpers import Identity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait_for(what, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.02)
    return what()


# ------------------------------------------------------------------ 1: the period watch closes once, whoever runs
class _SpyLib:
    """libjack as the period watch calls it, with the closes and the reads after a close counted."""

    def __init__(self, lib):
        self._lib, self.closed, self.reads_after_close = lib, [], 0

    def jack_client_close(self, client):
        self.closed.append(client)
        return self._lib.jack_client_close(client)

    def jack_get_buffer_size(self, client):
        self.reads_after_close += client in self.closed  # a closed client's memory is freed: a crash
        return self._lib.jack_get_buffer_size(client)


@pytest.mark.jack
def test_a_monitor_that_outlives_stops_join_still_gets_its_period_watch_closed_once(jack_server):
    eng = Engine(Identity(), EngineConfig())
    eng.start()
    watch = eng._period_watch
    assert watch is not None, "a JACK stream watches the server's period"
    client = watch._client
    spy = watch._lib = _SpyLib(watch._lib)
    hold, held, let_go = threading.Event(), threading.Event(), threading.Event()
    explain = eng.diagnostics.explain_pending

    def slow_explain(*args, **kw):  # the monitor busy past stop()'s 2 s join (a long GIL wait, say)
        if hold.is_set() and threading.current_thread().name == "engine-monitor":
            held.set()
            let_go.wait(30)
        return explain(*args, **kw)

    eng.diagnostics.explain_pending = slow_explain
    monitor = eng._threads[1]
    try:
        hold.set()
        assert held.wait(10)
        eng.stop()
        assert monitor.is_alive()  # the case at hand: it outlived its join
        # closed by stop() all the same (it was left open for good): once, and never read after
        assert _wait_for(lambda: spy.closed), "the period watch's JACK client was left open"
        assert eng._period_watch is None and watch._client is None
    finally:
        let_go.set()
        monitor.join(10)
    assert not monitor.is_alive()
    assert spy.closed == [client] and spy.reads_after_close == 0
    eng._close_period_watch()  # again (a second stop, start's clean-up): nothing more is closed
    assert spy.closed == [client]


# ------------------------------------------------------------------ 2: the period-change notices in the panel
def test_the_panel_shows_the_engines_period_change_notices_once(window):
    w = window()
    eng = w.host.engine
    eng._host_period = 128
    eng._host_period_changed(1024)  # what the monitor calls on `jack_bufsize 1024` (stopped: no stream touched)
    said = list(eng.notices)
    assert len(said) == 1 and "from 128 to 1024 frames" in said[0] and "pre-fill raised to 9 blocks" in said[0]
    w._poll_status()
    assert w.banner.isVisible() and said[0] in w.banner.text()  # the panel said nothing of it
    assert eng.notices == []  # taken: `run` says each once, and so does the panel
    w._poll_status()
    w._poll_status()
    assert w.errors.count(said[0]) == 1 and w.banner.text().count(said[0]) == 1
    eng._host_period_changed(128)  # and back: its own line, below the first
    w._poll_status()
    assert len(w.errors) == 2 and w.errors[0] == said[0] and "from 1024 to 128 frames" in w.errors[1]


# ------------------------------------------------------------------ 3: the Settings dialog's latency, as the engine runs it
def _dialog(qtbot, monkeypatch, config, periods):
    import gui.settings as gui_settings

    monkeypatch.setattr(gui_settings, "audio_devices", lambda: dict.fromkeys(("input", "output"), ["JACK", "USB"]))
    monkeypatch.setattr(gui_settings, "device_rates", lambda i, o, c: [48000])
    monkeypatch.setattr(gui_settings, "jack_period", lambda o, c: periods.get(o), raising=False)
    d = gui_settings.SettingsDialog(config, "(none)")
    qtbot.addWidget(d)
    return d


def test_the_settings_latency_counts_the_prefill_a_longer_jack_period_raises(qtbot, monkeypatch):
    pytest.importorskip("pytestqt")
    periods = {None: 1024, "JACK": 1024}  # the default output and "JACK" on a 1024-frame server; "USB" not
    d = _dialog(qtbot, monkeypatch, EngineConfig(blocksize=128, prefill_blocks=2), periods)
    # the engine starts at 9 blocks there (8 callbacks a cycle, plus the one being made): 24.0 ms, not 5.3
    assert d.prefill_ms.text() == "adds 24.0 ms of output latency (9 blocks: the JACK server's 1024-frame period needs them)"
    d.output.setCurrentText("USB")  # no JACK stream: the pre-fill as chosen
    assert d.prefill_ms.text() == "adds 5.3 ms of output latency"
    d.output.setCurrentText("JACK")
    d.blocksize.setCurrentText("1024")  # the block covers the period: nothing raised
    assert d.prefill_ms.text() == f"adds {1e3 * 2 * 1024 / 48000:.1f} ms of output latency"
    d.blocksize.setCurrentText("256")
    d.prefill.setCurrentText("8")  # more than the 5 the period needs: kept
    assert d.prefill_ms.text() == f"adds {1e3 * 8 * 256 / 48000:.1f} ms of output latency"


@pytest.mark.jack
def test_the_settings_latency_is_the_prefill_the_engine_starts_with(qtbot, jack_server):
    """On the suite's server (128 frames) a 32-frame block runs 5 blocks of pre-fill whatever was chosen."""
    pytest.importorskip("pytestqt")
    from gui.settings import SettingsDialog

    d = SettingsDialog(EngineConfig(blocksize=32, prefill_blocks=2), "(none)")
    qtbot.addWidget(d)
    config = d.engine_config()
    eng = Engine(Identity(), config)
    eng.start()
    try:
        lat = eng.latency()
    finally:
        eng.stop()
    assert eng.config.prefill_blocks == 5
    said = 1e3 * lat["prefill_frames"] / lat["samplerate"]
    assert d.prefill_ms.text().startswith(f"adds {said:.1f} ms of output latency"), d.prefill_ms.text()


# ------------------------------------------------------------------ 4: one pre-fill limit for start-up and a running stream
@pytest.mark.parametrize("blocksize,prefill,ring_blocks", [(32, 2, 32), (128, 3, 32), (128, 9, 32), (256, 1, 4),
                                                            (2048, 1, 32), (64, 100, 8)])
def test_the_prefill_limit_is_what_the_rings_hold_and_start_up_stays_within_it(blocksize, prefill, ring_blocks):
    from realtime.engine.engine import _prefill_limit, prefill_at_start

    c = EngineConfig(blocksize=blocksize, prefill_blocks=prefill, ring_blocks=ring_blocks)
    eng = Engine(Identity(), c)
    rings = (eng.in_ring, eng.out_ring)
    limit = _prefill_limit(c, rings)
    # the running stream's limit as it was worded before (the rings' sizes, inverted)
    assert limit == min(c.max_prefill_blocks, eng.in_ring.capacity // blocksize - ring_blocks,
                        (eng.out_ring.capacity - eng.in_ring.capacity) // blocksize - 1)
    assert prefill <= limit  # the rings always hold the pre-fill they were sized for
    assert _prefill_limit(c) == c.max_prefill_blocks  # a start sizes the rings to the pre-fill
    for period in (None, blocksize, 2 * blocksize, 1024, 8192, 100000):
        start = prefill_at_start(c, period)
        assert start == prefill or prefill < start <= c.max_prefill_blocks
        big = Engine(Identity(), EngineConfig(blocksize=blocksize, prefill_blocks=start, ring_blocks=ring_blocks))
        assert start <= _prefill_limit(big.config, (big.in_ring, big.out_ring))  # what it starts with, its rings hold
    assert prefill_at_start(EngineConfig(blocksize=blocksize, prefill_blocks=prefill, ring_blocks=ring_blocks,
                                         mode="input"), 8192) == prefill


def test_a_period_change_beyond_the_rings_says_their_limit():
    eng = Engine(Identity(), EngineConfig(blocksize=32, prefill_blocks=2))
    eng._host_period = 32
    eng._host_period_changed(2048)  # 65 blocks needed; rings of 2048 / 4096 frames hold 32
    assert eng.config.prefill_blocks == 2
    assert "need a pre-fill of 65 blocks, more than this stream holds (32)" in eng.notices[0]


# ------------------------------------------------------------------ 5: Ctrl-C where Python cannot raise it, during start-up's compiles
CTRL_C_CHILD = r'''
import ctypes, signal, sys, time
import main
from realtime.dsp.chain import Chain

WHERE, THEN = sys.argv[1:]
prepare = Chain.prepare


def ctrl_c():
    signal.raise_signal(signal.SIGINT)  # its handler runs here, inside what cannot raise


class Compiled:  # what Numba's compiler leaves behind: llvmlite objects freed with a __del__
    def __del__(self):
        ctrl_c()


def compiling_prepare(self, *args, **kw):
    if WHERE == "del":
        Compiled()
    else:  # llvmlite's object-cache notification, a ctypes callback
        ctypes.CFUNCTYPE(None)(ctrl_c)()
    if THEN == "fails":  # the compile it cut short fails at once
        raise RuntimeError("Failed in nopython mode pipeline")
    for _ in range(400):  # the compile goes on (seconds with a cold cache)
        time.sleep(0.05)
    print("prepared", flush=True)
    return prepare(self, *args, **kw)


Chain.prepare = compiling_prepare
sys.exit(main.main(["run", "--preset", "clean", "--seconds", "2"]))
'''


@pytest.mark.jack
@pytest.mark.parametrize("where,then", [("del", "goes on"), ("ctypes", "goes on"), ("ctypes", "fails")])
def test_a_ctrl_c_python_cannot_raise_during_start_up_ends_the_run_with_one_line(jack_server, where, then):
    """It printed "Exception ignored in: … KeyboardInterrupt" with a traceback, the compile went on to
    its end and the stream started, and only then did the run stop. (Sent again at once, the
    interrupt was said twice where the cut compile failed meanwhile: "interruptedinterrupted".)"""
    r = subprocess.run([sys.executable, "-c", CTRL_C_CHILD, where, then], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 130, r.stderr
    assert r.stderr == "interrupted\n", r.stderr
    assert "prepared" not in r.stdout  # stopped in the start-up, not after it
