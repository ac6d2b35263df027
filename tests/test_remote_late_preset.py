"""A preset load the panel's client gave up on (it outlived the 60 s timeout: a big sampler, a
TensorRT build) and the engine process finished after all: the re-read chain was the new preset's,
but the panel kept the old preset's name (a Save wrote the new chain under it) and the old
controller mappings (the new preset's `midi` list was never taken). Each assertion after the
poll failed before the fix."""
import pytest

from realtime.engine.config import EngineConfig

from .test_engine_review46 import _poll_until_it_answers


def test_a_preset_load_answered_late_takes_its_name_and_mappings():
    pytest.importorskip("PyQt6")
    from gui.remote import client as remote
    from gui.remote.client import EngineProcessError, RemoteEngineHost

    old = {"version": 1, "name": "old", "chain": [{"id": "g", "processor": "gain"}],
           "midi": [{"cc": 7, "target": "g.gain_db"}]}
    new = {"version": 1, "name": "slow one", "description": "late",
           "chain": [{"id": "s", "processor": "gain"}, {"id": "eq", "processor": "biquad"}],
           "midi": [{"cc": 9, "target": "eq.freq_hz"}]}
    host = RemoteEngineHost(old, EngineConfig())
    try:
        host.status()
        assert host.name == "old" and set(host.cc_map.targets.values()) == {"g.gain_db"}
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(remote.RemoteEngineHost._call.__kwdefaults__, "timeout", 0.0)  # given up on at once
            with pytest.raises(EngineProcessError, match="did not answer"):
                host.load_preset(new)
        assert host.name == "old"  # not known yet whether it went in
        _poll_until_it_answers(host)
        assert [s.id for s in host.chain.slots] == ["s", "eq", "safety"] and host.chain_renewed()
        assert (host.name, host.description) == ("slow one", "late")
        assert set(host.cc_map.targets.values()) == {"eq.freq_hz"}
        assert host.to_preset()["name"] == "slow one"
    finally:
        host.close()


def test_a_later_preset_that_went_in_keeps_its_own_name():
    """B given up on, C then loaded in time: the re-read matched C's chain by slot ids to B's and
    took B's name and mappings (a Save would have written C's chain as B)."""
    pytest.importorskip("PyQt6")
    from gui.remote import client as remote
    from gui.remote.client import EngineProcessError, RemoteEngineHost

    a = {"version": 1, "name": "A", "chain": [{"id": "g", "processor": "gain"}]}
    b = {"version": 1, "name": "B", "description": "bee", "chain": [{"id": "g", "processor": "gain"}],
         "midi": [{"cc": 9, "target": "g.gain_db"}]}
    c = {"version": 1, "name": "C", "description": "sea",
         "chain": [{"id": "g", "processor": "gain", "params": {"gain_db": 3}}]}
    host = RemoteEngineHost(a, EngineConfig())
    try:
        host.status()
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(remote.RemoteEngineHost._call.__kwdefaults__, "timeout", 0.0)
            with pytest.raises(EngineProcessError, match="did not answer"):
                host.load_preset(b)
        host.load_preset(c)
        _poll_until_it_answers(host)
        assert (host.name, host.description, host.cc_map.targets) == ("C", "sea", {})
        assert host.to_preset()["name"] == "C"
    finally:
        host.close()
