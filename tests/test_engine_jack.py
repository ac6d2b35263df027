"""The live engine on a real JACK server (dummy driver): real ports, real PortAudio stream."""
import gc
import threading
import time

import numpy as np
import pytest

from realtime.dsp.presets import build_chain, load_preset
from realtime.engine.config import EngineConfig
from realtime.engine.engine import Engine
from realtime.engine.ring import Ring, ring_readable
from realtime.errors import AudioDeviceError, EngineError

from .jack_helpers import (
    ClickOnNote,
    GlitchTries,
    Identity,
    Rig,
    assert_minus_6db_halves_the_level,
    clean_take,
    hold_gil,
    lag_of,
    take_with_glitches,
)

pytestmark = pytest.mark.jack
SR, B = 48000, 128


def _test_signal(seconds=0.5, ch=2, seed=0):
    rng = np.random.default_rng(seed)
    x = (0.2 * rng.standard_normal((int(SR * seconds), ch))).astype(np.float32)
    x[:200] = 0
    x[200] = 0.9  # a marker impulse
    return x


def test_duplex_transport_is_bit_exact_and_latency_is_reported(jack_server):
    sig = _test_signal()

    def take():  # glitches counted during the take only: a fresh stream's first cycles cost it nothing
        with Engine(Identity(), EngineConfig(blocksize=B, prefill_blocks=2)) as eng, Rig(sig.shape[1]) as rig:
            got, stats = take_with_glitches(eng, rig, sig)
            return (got, eng.latency()), stats

    (out, lat), stats, glitched = clean_take(take)
    lag = lag_of(sig, out)
    # sample-exact (a late block or xrun during the take would break it: then say so)
    np.testing.assert_array_equal(out[lag: lag + len(sig)], sig, err_msg=f"{stats}; glitched before: {glitched}")
    assert lat["added_frames"] == 2 * B
    # JACK's graph order can add one period on each hop (player -> engine -> recorder) that it
    # schedules after its consumer
    assert lag in (lat["added_frames"], lat["added_frames"] + B, lat["added_frames"] + 2 * B)
    assert stats["callbacks"] > 0 and stats["nonfinite_scrubbed"] == 0



def _gil_held_run(ms=200):
    """Hold the GIL in another thread for ``ms`` while the engine runs: (seconds held, callbacks
    in that time, callbacks expected, the longest gap between callbacks from then on in ms)."""
    with Engine(build_chain(load_preset("default")), EngineConfig(blocksize=B)) as eng:
        time.sleep(0.5)
        eng.stats()
        eng.diagnostics.max_callback_gap_ms = 0.0  # from here on
        n0 = int(eng.stats_arr[0])
        t = threading.Thread(target=hold_gil, args=(ms,))
        t0 = time.monotonic()
        t.start()
        t.join()
        held = time.monotonic() - t0
        during = int(eng.stats_arr[0]) - n0
        time.sleep(0.3)
        gap = eng.stats()["callback_gap_ms_max"]
    return held, during, held * SR / B, gap


def test_callbacks_keep_time_while_another_thread_holds_the_gil(jack_server):
    # A callback that needed the GIL would stall for the whole 200 ms: callbacks missing and one
    # gap of ~200 ms. That fails at once. A callback or two late by a few ms, up to tens of ms, is
    # the shared VM's scheduling (CI saw it), not the GIL: such a run is repeated.
    tried = []
    for _ in range(3):
        held, during, expected, gap = _gil_held_run()
        assert held >= 0.19
        assert gap < 150, f"a {gap:.0f} ms stall while the GIL was held: the callback waited for it"
        if during >= 0.9 * expected and gap < 25:
            return
        tried.append(f"{during} callbacks in {held:.3f} s (expected ~{expected:.0f}), longest gap {gap:.1f} ms")
    pytest.fail(f"callbacks late in every run: {tried}")


class SlowOnce(Identity):
    """Takes 200 ms over one block when asked: the DSP thread misses many deadlines."""

    stall = False

    def process(self, block):
        if self.stall:
            self.stall = False
            time.sleep(0.2)


def _stall_once():
    """One run of the underrun scenario: (lag before, lag after, late blocks, stats at the end, the
    server's own glitches during it: xruns and delayed callbacks after the warm-up)."""
    chain = SlowOnce()
    with Engine(chain, EngineConfig(blocksize=B)) as eng, Rig() as rig:
        sig = _test_signal(0.3)
        # a fresh stream hiccups in its first cycles (a late block there shifts a take by one
        # block: 384 vs 256 samples, seen here 2 runs in 8); the reference lag is the steady one
        time.sleep(0.5)
        st0 = eng.stats()
        lag1 = lag_of(sig, rig.take(sig))
        chain.stall = True
        time.sleep(0.5)
        lag2 = lag_of(sig, rig.take(sig))
        end = eng.stats()
    server = {k: end[k] - st0[k] for k in ("server_xruns", "delayed_callbacks")}
    return lag1, lag2, end["late_blocks"], end, server


def _underrun_faults(lag1, lag2, late, st) -> list[str]:
    """What is wrong with one run of the underrun scenario (empty: nothing)."""
    faults = []
    if late == 0:
        faults.append("no late block counted")
    if st["late_blocks_ours"] <= 0.9 * late:  # the stall is ours, not the server's
        faults.append(f"only {st['late_blocks_ours']} of {late} late blocks charged to the engine")
    if lag2 != lag1:
        faults.append(f"latency {lag1} -> {lag2} samples after the underrun")
    # the stall's late blocks are explained: a 200 ms block in their window, nearly all of it off
    # the CPU (it slept)
    stalled = [c for c in st["late_context"] if (c["slowest_block_ms"] or 0) > 150]
    if not stalled or any(c["slowest_block_cpu_ms"] >= 20 for c in stalled):
        faults.append(f"the stall is not explained: {st['late_context']}")
    return faults


def test_underrun_keeps_latency_constant(jack_server):
    """After the DSP thread is starved for 200 ms, late blocks are counted and the output
    comes back at exactly the same latency (skip policy), not later."""
    # A run is judged only on its own terms while the server keeps time. On a shared VM the dummy
    # driver reports an xrun or a delayed cycle in most runs (1-11 per run here, idle), and where
    # they pile up around the stall the engine rightly charges late blocks near them to the server,
    # and an xrun can move JACK's graph order by a period (about one run in four failed on that).
    # So a failing run with server glitches is repeated; a failing run without any fails at once,
    # and so does failing every time (a real fault does not go away with the server's glitches).
    tried, tries = [], GlitchTries()
    for _ in tries:
        lag1, lag2, late, st, server = _stall_once()
        faults = _underrun_faults(lag1, lag2, late, st)
        if not faults:
            return
        if not any(server.values()):
            pytest.fail(f"{faults} with the server keeping time; earlier runs: {tried}")
        tried.append((faults, server))
    pytest.fail(f"failed in every run, {tries.words()}: {tried}")


def test_parameter_change_reaches_the_audio(jack_server):
    chain = build_chain({"version": 1, "name": "t", "chain": [{"processor": "gain", "params": {"gain_db": 0}}]})
    with Engine(chain, EngineConfig(blocksize=B)) as eng, Rig() as rig:
        assert_minus_6db_halves_the_level(eng, rig, "gain", "gain_db", SR)


def test_input_only_stream_records_through_the_tap(jack_server):
    sig = _test_signal(0.2)

    def take():
        tap = Ring.for_frames(SR, 2)
        with Engine(Identity(), EngineConfig(blocksize=B, mode="input"), tap=tap) as eng, Rig(2) as rig:
            _, stats = take_with_glitches(eng, rig, sig, tail=B * 8)
            time.sleep(0.1)
        got = np.zeros((tap.readable(), 2), np.float32)
        tap.pop(got)
        return got, stats

    got, stats, glitched = clean_take(take)
    lag = lag_of(sig, got, max_lag=len(got) - len(sig))
    np.testing.assert_array_equal(got[lag: lag + len(sig)], sig, err_msg=f"{stats}; glitched before: {glitched}")


def test_output_only_stream_runs_without_late_blocks(jack_server):
    tap = Ring.for_frames(SR, 1)
    with Engine(build_chain(load_preset("default")), EngineConfig(blocksize=B, channels=1, mode="output"),
                tap=tap) as eng:
        # a freshly started stream hiccups in its first cycles; by 2.6 s those are attributed
        time.sleep(2.6)
        ours = [eng.diagnostics.late_blocks_ours]  # then three steady seconds (a shared VM may starve one)
        for _ in range(3):
            time.sleep(1.0)
            ours.append(eng.diagnostics.late_blocks_ours)
        stats = eng.stats()
        frozen = gc.get_freeze_count()
        lat = eng.latency()
    final = eng.stats()  # stopped: every late block has been attributed
    # what is rendered waits behind the pre-fill here too (the figure left it out of output-only streams)
    assert lat["prefill_frames"] == B * EngineConfig().prefill_blocks and lat["added_frames"] >= lat["prefill_frames"]
    assert frozen > 1000  # start() froze what warm-up left, so no collection walks it mid-stream
    assert stats["callbacks"] > 300
    # the DSP thread made the blocks the callback played: every callback took one of them, save the
    # late ones (which played silence), heard or muted (a stop's fade-out that found the ring empty:
    # CI once had one); read after the stop, when neither counter moves any more
    played = final["callbacks"] - final["late_blocks"] - final["late_blocks_muted"]
    assert final["blocks_processed"] >= played > 300, final
    assert final["error"] is None
    # a steady second without a late block of ours (the server's or the hypervisor's may happen)
    per_second = [b - a for a, b in zip(ours, ours[1:])]
    assert 0 in per_second, (per_second, final)


def test_unknown_device_and_unsupported_rate_give_clear_errors(jack_server):
    with pytest.raises(AudioDeviceError, match="no input device 'no-such-card'"):
        Engine(Identity(), EngineConfig(input_device="no-such-card")).start()
    eng = Engine(Identity(), EngineConfig(samplerate=44100))  # the JACK server runs at 48 kHz
    with pytest.raises(AudioDeviceError, match="44100"):
        eng.start()
    assert not eng.running
    with pytest.raises(EngineError, match="blocksize"):
        EngineConfig(blocksize=16).validate()


def test_a_stream_that_will_not_start_leaves_the_engine_stopped_with_nothing_open(jack_server, monkeypatch):
    """A refused device and a stream PortAudio opened but could not start both leave a stopped
    engine: no threads, no stream, no wake pipe (each failed start leaked two descriptors, and one
    whose stream would not start said "running" while its monitor reported a lost device)."""
    import os

    import realtime.engine.engine as engine_module

    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(AudioDeviceError):
            Engine(Identity(), EngineConfig(input_device="no-such-card")).start()
    real = engine_module.check

    def start_fails(err, what):  # PortAudio's start refused (e.g. the server went away between open and start)
        if what == "start stream":
            raise AudioDeviceError("start stream: refused")
        real(err, what)

    monkeypatch.setattr(engine_module, "check", start_fails)
    eng = Engine(Identity(), EngineConfig())
    with pytest.raises(AudioDeviceError, match="refused"):
        eng.start()
    assert not eng.running and eng._stream is None and not any(t.is_alive() for t in eng._threads)
    assert len(os.listdir("/proc/self/fd")) == fds
    monkeypatch.undo()
    eng = Engine(Identity(), EngineConfig())
    eng.start()  # the device is not left half-open
    time.sleep(0.2)
    eng.stop()
    assert eng.stats()["callbacks"] > 10


def test_midi_keeps_its_timing_within_a_block(jack_server):
    """Notes stamped 1000 frames apart (not a multiple of the 128-frame block) come out 1000
    frames apart, not rounded to block edges (which would give 896 or 1024)."""
    chain = ClickOnNote()
    tap = Ring.for_frames(SR * 2, 1)
    spacing = 1000
    with Engine(chain, EngineConfig(blocksize=B, channels=1, mode="output"), tap=tap) as eng:
        time.sleep(0.2)
        base = time.monotonic_ns() + 300_000_000
        for k in range(24):
            assert eng.send_midi(0x90, 60, 100, at_ns=base + round(k * spacing * 1e9 / SR))
        time.sleep(0.3 + 24 * spacing / SR + 0.2)
        n_processed = eng.stats()["blocks_processed"]
    got = np.zeros((tap.readable(), 1), np.float32)
    tap.pop(got)
    clicks = np.flatnonzero(got[:, 0] > 0.5)
    assert len(clicks) == 24, (clicks, n_processed)
    err = np.abs(np.diff(clicks) - spacing)
    assert np.median(err) <= 3, np.diff(clicks)
    assert np.mean(err <= 12) >= 0.8, np.diff(clicks)


def test_midi_with_garbage_timestamps_plays_at_once_and_keeps_order():
    """A NaN or absurdly late stamp must not hold the MIDI queue: it plays in the next block,
    at its start; a stamp just ahead waits for its block."""
    chain = ClickOnNote()
    eng = Engine(chain, EngineConfig(blocksize=B, channels=1, mode="output"))
    got = []
    sink = lambda st, d1, d2, off: got.append((d1, off))  # noqa: E731
    end = 5e9
    for note, stamp in ((60, float("nan")), (61, 1e30), (62, end - 1e9 * 64 / SR), (63, end + 1e6)):
        eng.rings.midi.push_record(0x90, note, 100, stamp)
    rec = np.zeros((1, 4), np.float64)
    held = eng._deliver_midi(sink, rec, False, end)
    assert got == [(60, 0), (61, 0), (62, 64)] and held  # 63 is 1 ms ahead: the next block's
    held = eng._deliver_midi(sink, rec, held, end + 1e9 * B / SR)
    assert got[-1][0] == 63 and not held


def test_nothing_is_compiled_while_streaming(jack_server):
    """Every Numba signature the stream's threads need is compiled (or loaded from the cache)
    before the stream starts. A compile in the DSP thread holds the GIL for ~100 ms: on a fresh
    clone in CI it cost 58 late blocks at start (the MIDI ring's discard, float64, was missed)."""
    from numba.core import event

    class Compiles(event.Listener):
        def __init__(self):
            self.threads = []

        def on_start(self, ev):
            self.threads.append(threading.current_thread().name)

        def on_end(self, ev):
            pass

    # (the engine's readout ring, per-slot timing and audio tap run in every one of them)
    for chain in (Identity(), build_chain(load_preset("default")), build_chain(load_preset("voice")),
                  build_chain(load_preset("synth"))):
        watch = Compiles()
        with Engine(chain, EngineConfig(blocksize=B)) as eng:
            event.register("numba:compiler_lock", watch)
            try:
                for note in (60, 64, 67):  # MIDI through the chain to the synth's voices
                    eng.send_midi(0x90, note, 100)
                    time.sleep(0.1)
                    eng.send_midi(0x80, note, 0)
                time.sleep(0.3)  # DSP thread, monitor and callback all busy
                eng.stats()
                assert ring_readable(eng.rings.readout.idx) > 0 and ring_readable(eng.rings.audio.idx) > 0
            finally:
                event.unregister("numba:compiler_lock", watch)
        assert watch.threads == [], f"{type(chain).__name__}: compiled while streaming in {set(watch.threads)}"


def test_a_processor_that_raises_mid_stream_is_reported_and_the_stream_goes_on(jack_server):
    """The slot goes dry, the DSP thread keeps processing, stats() says which slot failed and why."""
    from realtime.dsp.chain import Chain, Slot
    from realtime.dsp.processor import Processor
    from realtime.dsp.processors import create

    class Breaks(Processor):
        kind, params = "test_breaks", ()

        def __init__(self):
            super().__init__()
            self.blocks = 0

        def reset(self):
            self.blocks = 0

        def process(self, block):
            self.blocks += 1
            if self.blocks >= 200:
                block[:] = np.nan
                raise RuntimeError("plugin crashed")
            block *= 0.5

    chain = Chain([Slot(Breaks(), "broken"), Slot(create("safety"), "safety")])
    with Engine(chain, EngineConfig(blocksize=B)) as eng, Rig() as rig:
        time.sleep(1.0)  # well past block 200
        st = eng.stats()
        assert st["processor_errors"] == {"broken": "RuntimeError: plugin crashed"}
        assert st["error"] is None
        n = st["blocks_processed"]
        sig = _test_signal(0.5)
        out = rig.take(sig)
        assert eng.stats()["blocks_processed"] > n + 100  # still processing
        assert np.isfinite(out).all() and np.abs(out).max() > 0.1  # the dry signal, never garbage
        assert eng.stats()["late_blocks_ours"] <= 2


def test_the_callback_itself_scrubs_what_a_chain_without_safety_lets_through(jack_server):
    """The last line of defence: NaN/Inf from the DSP thread become silence, beyond +-1 is clamped."""

    class Garbage(Identity):
        def process(self, block):
            block[0::3] = np.nan
            block[1::3] = np.inf
            block[2::3] = 4.0

    with Engine(Garbage(), EngineConfig(blocksize=B)) as eng, Rig() as rig:
        out = rig.take(_test_signal(0.3))
        st = eng.stats()
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    assert st["nonfinite_scrubbed"] > 0 and st["clipped"] > 0


def test_a_full_tap_is_counted_and_the_dsp_loop_never_blocks_on_its_wake_pipe(jack_server):
    """Output the tap ring has no room for (a recorder behind) is counted, not silently lost; the
    wake pipe's read end is non-blocking, so a poll that times out (no callbacks) cannot leave the
    DSP loop waiting in read."""
    import os

    tap = Ring(64, 2)  # smaller than one block: every block loses frames, nobody drains it
    with Engine(Identity(), EngineConfig(blocksize=B), tap=tap) as eng:
        assert os.get_blocking(eng._wake_r) is False and os.get_blocking(eng._wake_w) is False
        deadline = time.monotonic() + 10
        while eng.tap_dropped_frames < 4 * B and time.monotonic() < deadline:
            time.sleep(0.05)
    assert eng.tap_dropped_frames >= 4 * B and tap.readable() == 64
