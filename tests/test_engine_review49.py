"""Engine internals (forty-ninth session's engine review)."""
import numpy as np

from realtime.dsp.chain import Chain, Slot
from realtime.dsp.presets import build_chain, validate_preset
from realtime.dsp.processors.biquad import Biquad
from realtime.dsp.processors.gain import Gain
from realtime.engine.config import EngineConfig
from realtime.engine.control import ChainView, ControlWriter, apply_record
from realtime.engine.engine import Engine
from realtime.engine.ring import READ


def test_a_stale_record_never_bypasses_the_safety_stage_nor_sets_a_choice_it_does_not_have():
    """Records of a writer whose view of the chain was out of date landed on whatever slot now had
    their indices: the eq's bypass bypassed the final safety stage (shown bypassed, and the preset
    saved from it could not be loaded), and the gain's 12 dB went to the eq's filter type, a choice
    of 5 (``describe`` and ``to_preset`` raised IndexError from then on)."""
    g, b = Gain(), Biquad()
    old = Chain([Slot(g, "gain"), Slot(Biquad(), "eq")])
    for new, record in ((Chain([Slot(g, "gain")]), lambda w: w.set_bypass("eq", True)),
                        (Chain([Slot(g, "gain")]), lambda w: w.set_mix("eq", 0.25)),
                        (Chain([Slot(b, "eq"), Slot(g, "gain")]), lambda w: w.set_param("gain", "gain_db", 12.0))):
        eng = Engine(new, EngineConfig())
        record(ControlWriter(eng.rings, old))
        before = [list(s.processor.values) for s in new.slots]
        assert eng.apply_pending_control() == 1
        assert eng.stats()["stale_control_records"] == 1
        assert [list(s.processor.values) for s in new.slots] == before
        safety = new.slots[-1]
        assert not safety.bypass and safety.mix == 1.0
        validate_preset(new.to_preset("saved"))  # describes, saves and loads again
        build_chain(new.to_preset("saved"))
        view = ChainView(new.describe())  # a client mirroring the same record leaves it out too
        record(ControlWriter(eng.rings, old))
        rec = eng.rings.control.buf[eng.rings.control.idx[READ] & (eng.rings.control.capacity - 1)]
        assert not apply_record(view, int(rec[0]), int(rec[1]), rec[2], int(rec[3]))
        assert [list(s.processor.values) for s in view.slots] == before and not view.slots[-1].bypass


def test_records_a_writer_made_for_this_chain_still_apply():
    b = Biquad()
    chain = Chain([Slot(b, "eq")])
    eng = Engine(chain, EngineConfig())
    eng.set_param("eq", "type", "highpass")
    eng.set_mix("eq", 0.5)
    eng.set_bypass("eq", True)
    assert eng.stats()["stale_control_records"] == 0
    assert b.params[0].choices[int(b.get_param("type"))] == "highpass"
    assert chain.slot("eq").bypass and chain.slot("eq").mix == 0.5


def test_the_dsp_thread_applies_what_was_queued_when_it_looked_not_what_keeps_coming(monkeypatch):
    """``_apply_queued`` popped until the control ring was empty: a producer that pushes as fast as
    the records are applied (another process needs no GIL to push) kept the DSP thread from its
    block for as long as it went on. What arrives meanwhile waits for the next block."""
    from realtime.engine import engine as engine_module

    chain = Chain([Slot(Gain(), "gain")])
    eng = Engine(chain, EngineConfig())
    applied = []
    real = engine_module.apply_record

    def apply_and_push_another(*args):  # the producer, one record ahead whenever one is applied
        applied.append(args)
        assert len(applied) < 10_000, "the loop never ends while records keep coming"
        eng.writer.set_param("gain", "gain_db", -float(len(applied) % 60))
        return real(*args)

    monkeypatch.setattr(engine_module, "apply_record", apply_and_push_another)
    for k in range(3):
        eng.writer.set_param("gain", "gain_db", -1.0 - k)
    assert eng._apply_queued(np.zeros((1, 4), np.float64)) == 3
    assert eng.rings.control.readable() == 3  # the ones pushed meanwhile: the next block's
    assert eng._apply_queued(np.zeros((1, 4), np.float64)) == 3


class _Breaks(Gain):
    """A gain that raises in ``process`` while ``broken``."""

    kind = "breaks"
    broken = False

    def process(self, block):
        if self.broken:
            raise RuntimeError("broken")
        super().process(block)


def _sine(blocks: int = 1, B: int = 128) -> np.ndarray:
    t = np.arange(blocks * B) / 48000.0
    return np.repeat((0.5 * np.sin(2 * np.pi * 1000.0 * t))[:, None], 2, axis=1).astype(np.float32)


def _peak_after(chain, blocks: int = 20) -> float:
    """The output's peak over the last of ``blocks`` blocks of a 1 kHz sine at 0.5."""
    for _ in range(blocks):
        block = _sine()
        chain.process(block)
    return float(np.abs(block).max())


def test_a_slot_whose_processor_failed_plays_wet_again_once_the_chain_is_prepared_again():
    """``_slot_failed`` set the slot's wet weight and target to 0; preparing the chain again (an
    engine's start: a restart, new settings) cleared the failure but left the target at 0, so the
    slot played dry for good, shown active with no error."""
    p = _Breaks()
    p.set_param("gain_db", -60.0)
    chain = Chain([Slot(p, "g")])
    chain.prepare(48000, 128, 2)
    assert _peak_after(chain) < 0.01  # wet: -60 dB
    p.broken = True
    assert _peak_after(chain) > 0.4 and "g" in chain.failures  # dry
    p.broken = False
    chain.prepare(48000, 128, 2)  # what Engine.start does
    assert not chain.failures
    assert _peak_after(chain) < 0.05  # wet again (0.5 dry)


def test_a_slot_run_dry_by_a_seamless_swap_plays_wet_when_it_comes_back():
    """A live swap runs the slots that leave dry first (``Engine._play_dry`` sets their target to 0);
    the same slot put into a later chain kept that target and played dry for good, unbypassed."""
    gain, eq = Gain(), _Breaks()
    eq.set_param("gain_db", -60.0)
    g, e = Slot(gain, "g"), Slot(eq, "e")
    first = Chain([g, e])
    first.prepare(48000, 128, 2)
    e._wst[1] = 0.0  # as Engine._play_dry, before the swap that drops it
    second = Chain([g, first.slots[-1]])
    second.prepare_beside(first)
    _peak_after(first)
    second.take_over(first)
    third = Chain([g, e, first.slots[-1]])  # the slot comes back
    third.prepare_beside(second)
    third.enter_from_dry(second)
    third.take_over(second)
    assert not e.bypass and e.mix == 1.0
    assert _peak_after(third) < 0.05  # wet after its crossfade from dry (0.5 dry)


def test_a_failed_slot_put_into_a_later_chain_is_prepared_again_and_plays_wet():
    """A live swap to a chain holding a slot that failed in an earlier one prepares its processor
    again (it is not running) but kept it failed: dry, with no failure reported."""
    p = _Breaks()
    p.set_param("gain_db", -60.0)
    s = Slot(p, "g")
    first = Chain([s])
    first.prepare(48000, 128, 2)
    p.broken = True
    _peak_after(first, 1)
    p.broken = False
    second = Chain([first.slots[-1]])  # the failed slot leaves
    second.prepare_beside(first)
    second.take_over(first)
    third = Chain([s, first.slots[-1]])  # and comes back
    third.prepare_beside(second)
    third.take_over(second)
    assert not third.failures
    assert _peak_after(third) < 0.05


def test_the_status_line_sorts_no_block_times(monkeypatch):
    """The headless status line (every 0.5 s while streaming) took four percentiles over 65536 block
    times, a millisecond's sort each with the interpreter held, which the DSP thread needs; it shows
    only counters and the mean load."""
    from realtime.run.live import status_line

    eng = Engine(Chain([Slot(Gain(), "gain")]), EngineConfig())
    d = eng.diagnostics  # block times to sort, as a running stream has (none: no percentile is taken)
    d.dsp_us[:], d.dsp_n = 1000.0, len(d.dsp_us)
    d.cb_us[:], d.cb_n = 50.0, len(d.cb_us)
    full = eng.stats()
    assert "dsp_load" in full and "dsp_us_p99" in full  # a full report keeps them

    def sorted_block_times(*a, **k):
        raise AssertionError("a percentile on the status tick")

    monkeypatch.setattr(np, "percentile", sorted_block_times)
    period_us = 1e6 * eng.config.blocksize / eng.config.samplerate
    assert f"DSP {100 * 1000.0 / period_us:.1f}%" in status_line(eng)
