"""A structural change (a slot added, removed, moved, a preset loaded) while the engine runs swaps the
chain inside the running stream (``Engine.swap_chain``): the engine keeps its JACK ports and the
connections a user made to them, the output dips for a few milliseconds (a fade out and in) instead
of the 70-150 ms of silence a stream restart cost, or, for a slot without latency added or removed,
does not dip at all (its own crossfade), and what both chains share keeps its state."""
import threading
import time

import jack
import numpy as np
import pytest

from gui.host import EngineHost
from realtime.dsp.chain import Chain, Slot
from realtime.dsp.processor import Processor
from realtime.dsp.processors import REGISTRY
from realtime.engine.config import EngineConfig
from realtime.errors import ModelError
from realtime.io.jackio import JackPlayer, JackRecorder, engine_ports, portaudio_client

from .jack_helpers import GlitchTries, hold_gil, run_delay_s

pytestmark = pytest.mark.jack

SR, B, FREQ, AMP = 48000, 128, 1000.0, 0.5
SINE_STEP = 2 * AMP * np.sin(np.pi * FREQ / SR)  # the largest sample-to-sample step of the sine itself
GAIN = {"version": 1, "name": "t", "chain": [{"processor": "gain", "id": "gain"}]}


def _sine_loop() -> np.ndarray:
    """0.1 s of a 1 kHz sine, a whole number of cycles (it loops seamlessly), a quarter cycle off zero."""
    x = AMP * np.sin(2 * np.pi * FREQ * np.arange(SR // 10) / SR - np.pi / 8)
    return np.tile(x, (2, 1)).T.astype(np.float32)


class Rig:
    """A looping sine into the running engine's inputs and a recorder on its outputs, wired once."""

    def __init__(self):
        self.player = JackPlayer(_sine_loop(), loop=True)
        self.rec = JackRecorder(4 * SR, 2)
        ins, outs = engine_ports(client=portaudio_client())
        self.ins, self.outs = ins[:2], outs[:2]
        self.player.start(self.ins)
        self.rec.start(self.outs)
        self.player.play()
        time.sleep(0.3)

    def around(self, change) -> np.ndarray:
        """Record 0.3 s, run ``change()``, record 0.3 s more: the left channel."""
        self.rec.rearm(self.rec.data.shape[0])
        self.rec.recording = True
        time.sleep(0.3)
        change()
        time.sleep(0.3)
        self.rec.recording = False
        return self.rec.data[: self.rec.pos, 0].copy()

    def wired(self) -> bool:
        """Whether the player still feeds the engine and the engine still feeds the recorder."""
        c = jack.Client("rt-swap-probe", no_start_server=True)
        try:
            to_engine = [p.name for p in c.get_all_connections(self.player.port_names()[0])]
            to_rec = [p.name for p in c.get_all_connections(self.rec.port_names()[0])]
        finally:
            c.close()
        return to_engine == [self.ins[0]] and to_rec == [self.outs[0]]

    def close(self):
        self.player.close()
        self.rec.close()


@pytest.fixture
def running(jack_server):
    host = EngineHost(GAIN, EngineConfig(blocksize=B, prefill_blocks=2))
    host.start()
    rig = Rig()
    try:
        yield host, rig
    finally:
        rig.close()
        host.close()


def _silent_run(out: np.ndarray) -> int:
    """The longest run of frames under -80 dBFS (the dip of a swap; a restart's silence)."""
    quiet = np.abs(out) < 1e-4
    best = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        best = max(best, run)
    return best


def _glitches(host) -> tuple[int, int]:
    s = host.engine.stats()
    return s["late_blocks"], s["server_xruns"]


def test_adding_moving_and_removing_slots_keeps_the_stream_its_ports_and_their_connections(running):
    host, rig = running
    engine = host.engine
    takes = []
    for change in (lambda: host.add_slot("gain"), lambda: host.move_slot("gain2", -1),
                   lambda: host.remove_slot("gain2")):
        before, waited = _glitches(host), run_delay_s()
        out = rig.around(change)
        waited = run_delay_s() - waited  # the change runs here: the time the machine kept it off a CPU
        assert host.engine is engine and host.running, "the engine was replaced: the stream restarted"
        assert rig.wired(), "the connections made to the engine's ports are gone"
        takes.append((out, waited, *(a - b for a, b in zip(_glitches(host), before))))
    assert [s.id for s in host.chain.slots][:-1] == ["gain"]
    for out, waited, late, xruns in takes:
        sounding = np.flatnonzero(np.abs(out) > 1e-4)
        assert len(sounding) and sounding[-1] > len(out) - 2 * B, "no sound after the change"
        assert np.abs(out[-SR // 10:]).max() == pytest.approx(AMP, abs=0.01)
        if xruns:  # the server's own cut: nothing to say about the swap's
            continue
        if not late:  # (a late block is a silence of its own, declicked: the steps still count)
            # a dip, not the restart's silence (125-146 ms, bench swap): the fades and the pre-fill
            # (~16 ms), the new slots' preparation and a garbage collection, which a process holding many
            # objects (a test session) stretches: 33 ms seen beside the engine-process tests; plus the time
            # a loaded machine kept the changing thread waiting for a CPU
            assert _silent_run(out) < (0.06 + waited) * SR, \
                f"{_silent_run(out) / SR * 1000:.0f} ms of silence ({waited * 1000:.0f} ms waiting for a CPU)"
        steps = np.abs(np.diff(out))
        assert steps.max() <= 1.05 * SINE_STEP, f"a step of {steps.max():.3f} (the sine's own: {SINE_STEP:.3f})"


def test_a_slot_added_live_is_heard_and_its_knobs_reach_it(running):
    host, rig = running
    sid = host.add_slot("gain")
    host.set_param(sid, "gain_db", -6.0206)
    time.sleep(0.1)
    out = rig.around(lambda: None)
    assert np.abs(out[-SR // 10:]).max() == pytest.approx(AMP / 2, abs=0.01)
    assert host.engine.chain.slot(sid).processor.get_param("gain_db") == pytest.approx(-6.0206)


class Counter(Processor):
    """Counts its blocks: its state must survive a swap that keeps it."""
    kind = "counter"
    params = ()

    def __init__(self):
        super().__init__()
        self.blocks = 0

    def _prepare(self):
        pass

    def reset(self):
        self.blocks = 0

    def process(self, block):
        self.blocks += 1


class FailsToPrepare(Counter):
    kind = "fails_to_prepare"
    closed = False

    def _prepare(self):
        raise ModelError("fails_to_prepare: no such model")

    def close(self):
        self.closed = True


def test_a_processor_both_chains_run_keeps_its_state_and_a_failing_new_one_leaves_the_old_chain(running):
    host, rig = running
    kept = Counter()
    host._install(Chain([Slot(kept, "kept")]))
    time.sleep(0.2)
    counted = kept.blocks
    assert counted > 10
    host.add_slot("gain")
    assert kept.blocks >= counted, "the swap reset a processor both chains run"
    old = host.engine.chain
    broken = FailsToPrepare()
    with pytest.raises(ModelError, match="no such model"):
        host._install(Chain(list(old.slots[:-1]) + [Slot(broken, "broken"), old.slots[-1]]))
    assert host.engine.chain is old and host.running and broken.closed
    out = rig.around(lambda: None)  # faded in again
    assert np.abs(out[-SR // 10:]).max() == pytest.approx(AMP, abs=0.01)


class Blocks(Counter):
    """Holds the DSP thread inside its process until ``go`` is set."""
    kind = "blocks"

    def __init__(self):
        super().__init__()
        self.go = threading.Event()
        self.inside = threading.Event()

    def process(self, block):
        if self.blocks == 20:
            self.inside.set()
            self.go.wait(5)
        self.blocks += 1


def test_a_swap_the_dsp_thread_does_not_take_in_time_is_called_off(running):
    host, _ = running
    stuck = Blocks()
    host._install(Chain([Slot(stuck, "stuck")]))
    assert stuck.inside.wait(3)
    old = host.engine.chain
    new = Chain([Slot(Counter(), "other"), old.slots[-1]])
    t0 = time.monotonic()
    assert host.engine.swap_chain(new, timeout_s=0.3) is False
    assert time.monotonic() - t0 < 2.0
    stuck.go.set()
    time.sleep(0.2)  # the DSP thread runs on: it must not take the chain called off
    assert host.engine.chain is old and host.engine.writer.chain is old


class FailsOnce(Counter):
    """Raises in one block, once (a reset does not re-arm it): its slot plays dry until it is
    prepared again."""
    kind = "fails_once"
    failed = False

    def process(self, block):
        self.blocks += 1
        if self.blocks == 5 and self.live and not self.failed:
            self.failed = True
            raise RuntimeError("boom")


def _install_failing(host, proc, sid: str) -> None:
    """Run a chain of ``proc`` alone, until it has failed (its slot plays dry)."""
    host._install(Chain([Slot(proc, sid)]))
    deadline = time.monotonic() + 3
    while sid not in host.engine.chain.failures and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "boom" in host.engine.chain.failures[sid]


def test_a_slot_that_failed_gets_another_chance_at_a_live_swap(running):
    host, _ = running
    _install_failing(host, FailsOnce(), "flaky")
    engine = host.engine
    host.add_slot("gain")
    assert host.engine is engine
    assert host.engine.chain.failures == {} and not host.engine.chain.slot("flaky")._failed


def test_new_audio_settings_still_restart_the_engine(running):
    from dataclasses import replace

    host, _ = running
    engine = host.engine
    host.set_config(replace(host.config, prefill_blocks=3))
    assert host.engine is not engine and host.running and host.engine.config.prefill_blocks >= 3


class SlowToBuild(Counter):
    """Holds the GIL for 150 ms while it is made, as the first load of a kind's kernels does."""
    kind = "slow_to_build"

    def __init__(self):
        super().__init__()
        hold_gil(150)


def test_the_old_chain_plays_on_while_a_slot_is_built_and_late_blocks_do_not_click(running, monkeypatch):
    """A build that holds the GIL makes the DSP thread late while the old chain still sounds: the
    late blocks are counted (they are heard: short silences), and each silence ramps in and out."""
    host, rig = running
    monkeypatch.setitem(REGISTRY, SlowToBuild.kind, SlowToBuild)
    time.sleep(0.3)
    before = host.engine.stats()
    out = rig.around(lambda: host.add_slot(SlowToBuild.kind))
    after = host.engine.stats()
    assert after["late_blocks"] > before["late_blocks"], "the build held the GIL: blocks were late"
    assert np.abs(out[-SR // 10:]).max() == pytest.approx(AMP, abs=0.01)
    if after["server_xruns"] == before["server_xruns"]:
        assert np.abs(np.diff(out)).max() <= 1.1 * SINE_STEP  # silences, not clicks


def test_a_build_that_fails_leaves_the_old_chain_playing(running, monkeypatch):
    host, rig = running

    class Unbuildable(Counter):
        kind = "unbuildable"

        def __init__(self):
            raise ModelError("unbuildable: no weights")

    monkeypatch.setitem(REGISTRY, Unbuildable.kind, Unbuildable)
    engine = host.engine
    with pytest.raises(ModelError, match="no weights"):
        host.add_slot(Unbuildable.kind)
    assert host.engine is engine and host.running
    out = rig.around(lambda: None)
    assert np.abs(out[-SR // 10:]).max() == pytest.approx(AMP, abs=0.01)


def test_a_swap_no_callback_fades_out_for_is_called_off(running, monkeypatch):
    """A stalling device (callbacks missing, not yet called lost) plays no fade-out: the swap would
    join the chains at full gain when it resumes, so it is called off and the host restarts."""
    host, _ = running
    engine, old = host.engine, host.engine.chain
    monkeypatch.setattr(type(engine), "_fade_out", lambda self: False)
    new = Chain([Slot(Counter(), "other")])  # a safety stage of its own: no seamless swap, a fade
    assert engine.swap_chain(new) is False
    assert engine.chain is old and engine.writer.chain is old and engine._swap_to is None
    from realtime.engine import callback as cb

    assert engine._ctl[cb.CTL_FADE_TARGET] == engine._ctl[cb.CTL_FADE_LEN]  # sounding again


class InterruptedWait(threading.Event):
    def wait(self, timeout=None):
        raise KeyboardInterrupt


def test_an_interrupted_handover_is_called_off(running):
    """Ctrl-C while the caller waits for the DSP thread: the chain handed over is called off, so the
    DSP thread never takes a chain whose processors the host closes (the old one plays on)."""
    host, _ = running
    stuck = Blocks()
    host._install(Chain([Slot(stuck, "stuck")]))
    assert stuck.inside.wait(3)  # the DSP thread is inside a block: it cannot take the chain first
    engine, old = host.engine, host.engine.chain
    engine._swapped = InterruptedWait()
    with pytest.raises(KeyboardInterrupt):
        engine.swap_chain(Chain([Slot(Counter(), "other"), old.slots[-1]]))
    stuck.go.set()
    time.sleep(0.2)
    assert engine._swap_to is None and engine.chain is old and engine.writer.chain is old


def test_late_blocks_count_as_glitches_while_the_output_sounds(running):
    host, _ = running
    time.sleep(0.3)
    before = host.engine.stats()
    hold_gil(150)
    time.sleep(0.2)
    after = host.engine.stats()
    assert after["late_blocks"] > before["late_blocks"]
    assert after["late_blocks_muted"] == before["late_blocks_muted"]


def test_bench_swap_compares_the_live_swap_with_the_restart(jack_server, capsys):
    import json

    from bench import swap

    assert swap.main(["--add", "gain", "--repeats", "1", "--json"]) == 0
    rows = {(r["change"], r["mode"]): r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == {(c, m) for c in ("add", "move", "remove") for m in ("live", "restart")} | {("first add", "live")}
    assert rows["remove", "live"]["takes"] == 2 and rows["add", "live"]["takes"] == 1  # the first take adds apart
    for change in ("add", "move", "remove"):
        live, restart = rows[change, "live"], rows[change, "restart"]
        assert live["connections_kept"] and not restart["connections_kept"]
        assert live["silence_ms"] < restart["silence_ms"]


def test_bench_swap_runs_the_engine_in_its_own_process_as_the_panel_does(jack_server, capsys):
    import json

    from bench import swap

    assert swap.main(["--engine-process", "--add", "gain", "--repeats", "1", "--json"]) == 0
    rows = [json.loads(r) for r in capsys.readouterr().out.splitlines()]
    assert {(r["change"], r["mode"], r["engine"]) for r in rows} == {
        (c, "live", "own process") for c in ("first add", "add", "move", "remove")}
    for r in rows:  # the sine reached the recorder through the engine process, and stayed wired
        assert r["connections_kept"] and r["silence_ms"] < 200, r
    by = {r["change"]: r for r in rows}
    for change in ("add", "remove"):  # a gain: seamless (a late block is a silence of its own)
        assert by[change]["silence_ms"] == 0 or by[change]["glitched_takes"], by[change]
    assert by["move"]["silence_ms"] > 5  # a move changes the order: the dip


def _level_steps(out: np.ndarray) -> np.ndarray:
    """The sine's peak level per 1 ms (48 frames; the sine's period)."""
    n = len(out) // 48 * 48
    return np.abs(out[:n]).reshape(-1, 48).max(axis=1)


def test_a_zero_latency_slot_comes_and_goes_without_a_dip(running):
    """Adding or removing a slot with no latency keeps the stream sample for sample: the slot
    crossfades in from its dry path (and out to it), so there is no silence and no step at all, only
    the level moving (here a -6 dB gain) over the slots' 10 ms crossfade."""
    host, rig = running
    engine = host.engine
    clean, tries = 0, GlitchTries(least=6, pause_s=0.2)
    changes = ((lambda: host.insert_slot({"id": "half", "processor": "gain", "params": {"gain_db": -6.0206}}, 1),
                AMP, AMP / 2),
               (lambda: host.remove_slot("half"), AMP / 2, AMP))
    for n in tries:
        if n >= 6 and clean >= 2:
            break
        change, before, after = changes[n % 2]
        late = _glitches(host)
        out = rig.around(change)
        assert host.engine is engine and host.engine._swap_faded is False
        if _glitches(host) != late:  # a late block is a declicked silence of its own: nothing to say
            continue
        clean += 1
        assert _silent_run(out) == 0, f"{_silent_run(out) / SR * 1000:.1f} ms of silence"
        steps = np.abs(np.diff(out))
        assert steps.max() <= 1.05 * SINE_STEP, f"a step of {steps.max():.3f} (the sine's own: {SINE_STEP:.3f})"
        lv = _level_steps(out)
        assert lv[:100].min() == pytest.approx(before, abs=0.01) and lv[-100:].max() == pytest.approx(after, abs=0.01)
        moving = np.flatnonzero(np.abs(lv - before) > 0.01)
        assert len(moving) and np.all(np.abs(lv[moving[0] + 12:] - after) < 0.01)  # within 12 ms, and stays
    assert clean >= 2, f"too few takes without a late block to say anything: {clean} in {tries.words()}"


def test_a_change_of_latency_or_order_still_fades(running):
    """A slot with latency changes the stream's timing, a move the order of the slots' states: the
    output fades out and in (the dip) rather than jump."""
    host, rig = running
    clean, tries = 0, GlitchTries(least=6, pause_s=0.2)
    changes = (lambda: host.add_slot("limiter", 1), lambda: host.move_slot("limiter", -1),
               lambda: host.remove_slot("limiter"))
    for n in tries:
        if n >= 6 and clean >= 2 and n % 3 == 0:
            break
        change = changes[n % 3]
        late, waited = _glitches(host), run_delay_s()
        out = rig.around(change)
        waited = run_delay_s() - waited
        assert host.engine._swap_faded is True
        if _glitches(host) == late:
            clean += 1
            assert 0 < _silent_run(out) < (0.06 + waited) * SR
            assert np.abs(np.diff(out)).max() <= 1.05 * SINE_STEP
    assert clean >= 2, f"too few takes without a late block to say anything: {clean} in {tries.words()}"


def test_which_changes_are_seamless():
    from realtime.dsp.processors import create

    gain, meter = Slot(create("gain"), "gain"), Slot(create("meter"), "meter")
    old = Chain([gain, meter])
    old.prepare(SR, B, 2)
    safety = old.slots[-1]

    def seamless(slots) -> bool:
        new = Chain(slots)
        new.prepare_beside(old)
        return new.follows_seamlessly(old)

    assert seamless([gain, Slot(create("gain"), "g2"), meter, safety])  # a gain added
    assert seamless([gain, safety])  # the meter removed
    assert seamless([Slot(create("biquad"), "eq"), gain, meter, safety])  # an EQ first
    assert seamless([gain, Slot(create("gain"), "off", bypass=True), Slot(create("gain"), "half", mix=0.5),
                     meter, safety])  # bypassed or mixed: they crossfade to what they say
    assert not seamless([gain, Slot(create("limiter"), "lim"), meter, safety])  # look-ahead: latency
    # none now (look-ahead 0) but up to 10 ms from its knob, which would move the stream unfaded
    assert not seamless([gain, Slot(create("limiter", lookahead_ms=0.0), "lim0"), meter, safety])
    assert not seamless([meter, gain, safety])  # the order changed
    assert not seamless([gain, meter])  # a safety stage of its own
    gain._failed = True  # a failed slot comes back wet at once when it is prepared again
    try:
        assert not seamless([gain, Slot(create("gain"), "g2"), meter, safety])
    finally:
        gain._failed = False
    with_lim = Chain([gain, Slot(create("limiter"), "lim"), meter, safety])
    with_lim.prepare_beside(old)
    with_lim.take_over(old)
    without = Chain([gain, meter, safety])
    without.prepare_beside(with_lim)
    assert not without.follows_seamlessly(with_lim)  # a slot with latency removed


class Halves(FailsOnce):
    """Halves the signal, and raises once in its 5th live block (a heard effect that fails)."""
    kind = "halves"

    def process(self, block):
        super().process(block)
        block *= 0.5


def test_a_failed_slot_that_comes_back_fades_rather_than_jumps(running):
    """A slot that failed plays dry; the next swap prepares it again and it plays wet from then on:
    that jump is heard, so such a swap fades even when what it adds has no latency."""
    host, rig = running
    _install_failing(host, Halves(), "halves")
    time.sleep(0.1)
    late = _glitches(host)
    out = rig.around(lambda: host.add_slot("gain"))
    assert host.engine._swap_faded is True and not host.engine.chain.slot("halves")._failed
    if _glitches(host) == late:
        assert np.abs(np.diff(out)).max() <= 1.05 * SINE_STEP
    assert np.abs(out[-SR // 10:]).max() == pytest.approx(AMP / 2, abs=0.01)


def test_bench_swap_refuses_an_unknown_kind_before_it_starts_anything(capsys):
    from bench import swap
    from realtime.errors import UnknownProcessorError

    with pytest.raises(UnknownProcessorError, match="nosuch"):
        swap.main(["--add", "nosuch"])
