"""Control records addressed by an out-of-date view of the chain (forty-sixth session's engine
review): the DSP thread stopped for good on one, and the panel's client went on addressing knobs by
a chain the engine process no longer ran once a structural command had outlived its timeout."""
import time

import pytest

from realtime.dsp.chain import Chain, Slot
from realtime.dsp.processors.biquad import Biquad
from realtime.dsp.processors.gain import Gain
from realtime.engine.config import EngineConfig
from realtime.engine.control import ControlWriter
from realtime.engine.engine import Engine

# tests.gui_slowbuild.BUILD_S: that module is the engine process's plugin, never imported here (its
# processors would join this process's registry, which other tests build every kind of)
SLOW_BUILD_S = 0.8


def test_a_record_for_a_slot_the_chain_no_longer_has_is_left_out_not_fatal():
    """(slot 1, param 1) of a chain whose eq was removed: IndexError on the DSP thread, which ended
    ("the DSP thread stopped"), and silence until a restart."""
    old = Chain([Slot(Gain(), "gain"), Slot(Biquad(), "eq")])
    new = Chain([Slot(Gain(), "gain")])
    eng = Engine(new, EngineConfig())
    stale = ControlWriter(eng.rings, old)
    stale.set_param("eq", "freq_hz", 2000.0)
    stale.set_param("gain", "gain_db", -6.0)  # one its chain has: taken
    assert eng.apply_pending_control() == 2
    assert new.slot("gain").processor.get_param("gain_db") == -6.0
    assert eng.stats()["stale_control_records"] == 1 and eng.error is None


def _poll_until_it_answers(host, within_s: float = 60.0) -> None:
    """The window's status poll, once a second (each one asked is answered in turn), until one is."""
    from gui.remote.client import EngineProcessError

    deadline = time.monotonic() + within_s
    while True:
        try:
            host.status()
            return
        except EngineProcessError:
            assert time.monotonic() < deadline
            time.sleep(1.0)


def test_the_panel_re_reads_the_chain_after_a_change_it_gave_up_on(monkeypatch):
    """An add that outlived the client's timeout (60 s: a big sampler, a TensorRT build) finished in
    the engine process after all; the client kept its old view, and the next knob move set the
    new first slot's value ("g"'s gain went to the slot added before it)."""
    pytest.importorskip("PyQt6")
    from gui.remote import client as remote
    from gui.remote.client import EngineProcessError, RemoteEngineHost

    preset = {"version": 1, "name": "t", "chain": [{"id": "g", "processor": "gain"}, {"id": "eq", "processor": "biquad"}]}
    host = RemoteEngineHost(preset, EngineConfig(), plugins=("tests.gui_slowbuild",))
    try:
        host.status()
        monkeypatch.setitem(remote.RemoteEngineHost._call.__kwdefaults__, "timeout", SLOW_BUILD_S / 4)
        with pytest.raises(EngineProcessError, match="did not answer"):
            host.add_slot("slowbuild", index=0)
        monkeypatch.undo()
        with pytest.raises(EngineProcessError, match="has not answered the last change"):
            host.set_param("g", "gain_db", -40.0)  # addressed by a chain it may no longer run: refused
        _poll_until_it_answers(host)
        assert [s.id for s in host.chain.slots] == ["slowbuild", "g", "eq", "safety"]
        assert host.chain_renewed() and not host.chain_renewed()  # the window redraws once
        host.set_param("g", "gain_db", -40.0)
        values = {s.id: list(s.processor.values) for s in host.engine_values().slots}
        assert values["g"][0] == -40.0
        # a removal it answers late: the slot's controller mappings go with it, as with one in time
        host.cc_map.targets = {(7, None): "eq.freq_hz", (8, None): "g.gain_db"}
        monkeypatch.setitem(remote.RemoteEngineHost._call.__kwdefaults__, "timeout", 0.0)
        with pytest.raises(EngineProcessError, match="did not answer"):
            host.remove_slot("eq")
        monkeypatch.undo()
        _poll_until_it_answers(host)
        assert "eq" not in [s.id for s in host.chain.slots] and host.chain_renewed()
        assert host.cc_map.targets == {(8, None): "g.gain_db"}
    finally:
        host.close()


def _healthy_server(period: int, host_period_known: bool, block=128, sr=48000, late_every=500, cycles=400):
    """Timing records of a server keeping time whose period runs ``period // block`` callbacks back
    to back per cycle, every ``late_every``-th block late through the DSP thread's own fault."""
    import numpy as np

    from realtime.engine import callback as cb
    from realtime.engine.diagnostics import Diagnostics

    d = Diagnostics(sr, block, -(-period // block) + 1)
    if host_period_known:
        d.host_period = period
    recs, t, n = [], 10 ** 12, 0
    for _ in range(cycles):
        for k in range(period // block):
            recs.append((t + k * 5000, 20000, block, cb.LATE_FLAG if n % late_every == late_every - 1 else 0))
            n += 1
        t += int(period * 1e9 / sr)
    d.add_callbacks(np.array(recs, np.int64))
    return d, sum(1 for r in recs if r[3] & cb.LATE_FLAG)


def test_late_blocks_under_a_longer_server_period_are_not_all_blamed_on_the_server():
    """At a JACK period of 1024 frames (8 callbacks of 128 back to back a cycle) every late block was
    the server's ("late_blocks_ours" read 0 whatever the DSP thread did) and "delayed_callbacks" grew
    by ~47 a second on a server keeping time: gaps were judged against the block's period."""
    d, late = _healthy_server(1024, host_period_known=True)
    assert late > 0 and len(d.late_pending) == late and d.delayed_callbacks == 0
    d, late = _healthy_server(128, host_period_known=True)  # one callback a cycle: as before
    assert len(d.late_pending) == late and d.delayed_callbacks == 0
    d, late = _healthy_server(1024, host_period_known=False)  # the period not known: what it did
    assert len(d.late_pending) == 0 and d.delayed_callbacks > 0
