"""The engine process and its client, not streaming (no audio server, no Qt): the client's
writer, its chain view, structure over the pipe, and a mapped controller applied on the MIDI
thread reaching the engine process's chain. (One test streams, on a JACK dummy server: refused
settings.)"""
import threading
import time
from dataclasses import asdict

import pytest

from gui.remote import RemoteEngineHost
from realtime.dsp.presets import load_preset
from realtime.engine.config import EngineConfig
from realtime.errors import EngineError, ParamError


@pytest.fixture(scope="module")
def host():
    p = load_preset("default")
    p["midi"] = [{"cc": 74, "channel": None, "target": "limiter.ceiling_db"}]
    h = RemoteEngineHost(p, EngineConfig())
    yield h
    h.close()


def test_client_changes_reach_the_engine_process(host):
    host.set_param("gain", "gain_db", -9)
    host.set_bypass("meter", True)
    host.set_mix("hpf", 0.5)
    assert host.value("gain", "gain_db") == -9.0  # the view shows what was queued
    engine = host.engine_values()  # stopped: the engine process applied the queue
    assert engine.slot("gain").processor.get_param("gain_db") == -9.0
    assert engine.slot("meter").bypass and engine.slot("hpf").mix == 0.5
    with pytest.raises(ParamError, match="gain_db"):
        host.set_param("gain", "gain_db", 99)
    with pytest.raises(EngineError, match="safety stage cannot be bypassed"):
        host.set_bypass("safety", True)
    assert host.to_preset()["midi"] == [{"cc": 74, "channel": None, "target": "limiter.ceiling_db"}]


def test_a_mapped_controller_reaches_the_engine_process_without_qt(host):
    told = []
    host.on_cc = lambda target, rec: told.append((target, rec.value))
    midi = threading.Thread(target=host.midi_in, args=(0xB5, 74, 127), name="midi-in")
    midi.start()
    midi.join()
    top = host.chain.slot("limiter").processor.params[host.chain.slot("limiter").processor.param_index("ceiling_db")].max
    assert told == [("limiter.ceiling_db", top)]
    assert host.engine_values().slot("limiter").processor.get_param("ceiling_db") == top


def test_structure_changes_refresh_the_view(host):
    sid = host.add_slot("gain")
    assert [s.id for s in host.chain.slots] == ["hpf", "gain", "limiter", "meter", sid, "safety"]
    host.set_param(sid, "gain_db", -3)
    host.move_slot(sid, -10)
    assert host.chain.slots[0].id == sid and host.engine_values().slot(sid).processor.get_param("gain_db") == -3.0
    host.remove_slot(sid)
    assert [s.id for s in host.chain.slots] == ["hpf", "gain", "limiter", "meter", "safety"]
    with pytest.raises(ValueError, match="not a removable slot"):
        host.remove_slot("safety")


def test_a_command_that_timed_out_does_not_shift_the_replies():
    """The engine process stalls (SIGSTOP) past a status poll's timeout, then goes on: its late
    reply is dropped, and the next commands get their own answers (before, every later reply went
    to the command after the one it belonged to)."""
    import os
    import signal

    from gui.remote.client import EngineProcessError

    h = RemoteEngineHost(load_preset("default"), EngineConfig())
    try:
        os.kill(h._proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(EngineProcessError, match="did not answer within 5 s"):  # the window's poll gives up
                h.status()
            assert h.engine_hung()
            with pytest.raises(EngineProcessError, match="did not answer within 0.25 s"):  # and then waits briefly
                h.status()
            with pytest.raises(EngineProcessError, match="did not answer within 0.5 s"):
                h._call("status", timeout=0.5)
        finally:
            os.kill(h._proc.pid, signal.SIGCONT)
        assert [s.id for s in h.engine_values().slots] == ["hpf", "gain", "limiter", "meter", "safety"]
        assert h.status()["running"] is False and not h.engine_hung()
    finally:
        h.close()


def test_a_killed_engine_process_refuses_changes_and_a_closed_host_takes_no_midi():
    from gui.remote.client import EngineProcessError

    h = RemoteEngineHost(load_preset("default"), EngineConfig())
    h._proc.kill()
    h._proc.join(10)
    assert not h.engine_alive()
    with pytest.raises(EngineProcessError, match="not running"):
        h.set_param("gain", "gain_db", -3)  # queued into rings nobody reads: it would look applied
    with pytest.raises(EngineProcessError, match="not running"):
        h.status()
    assert h.running is False
    h.close()
    assert h.send_midi(0x90, 60, 100) is False  # the rings' memory is gone: nothing is written there


def test_ctrl_c_in_the_terminal_leaves_the_engine_process_to_the_window():
    """SIGINT reaches the whole process group; the engine process ignores it (the window closes it
    in order), where it used to die with a traceback and take the stream with it."""
    import os
    import signal

    h = RemoteEngineHost(load_preset("default"), EngineConfig())
    try:
        os.kill(h._proc.pid, signal.SIGINT)
        assert h.status()["running"] is False and h.engine_alive()
    finally:
        h.close()


def test_restart_engine_runs_what_the_view_shows():
    """The panel's view of the chain makes the same preset the engine process writes (what a
    restart runs), LV2 plugin included; a restart after the process died runs it stopped, with the
    MIDI mappings; it names only LV2 slots whose own state it does not know (none here)."""
    from realtime.io import lilv

    if not lilv.available():
        pytest.skip("run scripts/setup.sh (liblilv-0-0, swh-lv2)")
    p = load_preset("default")
    p["chain"].insert(0, {"id": "amp", "processor": "lv2", "uri": "http://plugin.org.uk/swh-plugins/amp",
                          "params": {"gain": -4.0}})
    p["midi"] = [{"cc": 7, "channel": 2, "target": "gain.gain_db"}]
    h = RemoteEngineHost(p, EngineConfig())
    try:
        h.set_param("gain", "gain_db", -11)
        h.set_bypass("hpf", True)
        engine_side = h.to_preset("n", "d")
        view_side = h._with_midi(h.chain.to_preset("n", "d"))
        assert view_side == engine_side
        h._proc.kill()
        h._proc.join(10)
        assert h.restart_engine() == []  # swh amp keeps nothing beyond its knobs: nothing to warn about
        assert h.chain.slot("amp").processor.describe_extra()["has_state"] is False
        assert h.engine_alive() and not h.running
        assert h.to_preset("n", "d") == engine_side
        assert h.engine_values().slot("gain").processor.get_param("gain_db") == -11.0
    finally:
        h.close()
    with pytest.raises(Exception, match="closed"):
        h.restart_engine()


def test_a_demo_player_that_never_gets_ready_is_given_up_on_and_stopped(tmp_path, monkeypatch):
    """The panel's demo input waits READY_TIMEOUT_S for the player's 'ready' (on the GUI thread),
    then says so in one line and stops the player; no process is left behind."""
    import sys

    from gui import demo_source

    hang = tmp_path / "python"
    hang.write_text("#!/bin/sh\necho $$ > \"$(dirname \"$0\")/pid\"\nexec cat\n")  # silent until its stdin closes
    hang.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(hang))
    monkeypatch.setattr(demo_source, "READY_TIMEOUT_S", 0.5)
    src = demo_source.DemoSource()
    with pytest.raises(RuntimeError, match=r"^demo input: player not ready within 0.5 s$"):
        src.connect()
    assert src.proc is None
    pid = int((tmp_path / "pid").read_text())
    import os

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_structure_change_keeps_the_name_the_panel_saved_under(host):
    """Save as renames the preset on the panel's side; every structural change used to copy the
    engine process's old name back, so the next Save wrote the old name into the new file."""
    host.name = "mine"
    sid = host.add_slot("gain")
    host.remove_slot(sid)
    assert host.name == "mine" and host.to_preset()["name"] == "mine"


def test_a_move_past_the_end_is_not_sent_to_the_engine_process(host):
    """◀ on the first slot: nothing to move, so no structural command (the engine process would
    fade the output out and in for it: an audible dip)."""
    seq = host._seq
    assert host.move_slot("hpf", -1) is False and host._seq == seq
    assert host.move_slot("hpf", 1) is True and [s.id for s in host.chain.slots][:2] == ["gain", "hpf"]
    host.move_slot("hpf", -1)


@pytest.mark.jack
def test_settings_the_engine_process_refuses_leave_its_stream_playing(jack_server):
    """The engine process checks new settings before it stops the stream for them: settings it
    refuses (here sent past the client's own check) are one line, and it plays on as it was."""
    h = RemoteEngineHost(load_preset("default"), EngineConfig(samplerate=48000, blocksize=128))
    try:
        h.start()
        time.sleep(0.5)
        before = h.status()["callbacks"]  # of this stream: a stop and start counts from 0 again
        bad = {**asdict(h.config), "blocksize": 3}
        with pytest.raises(EngineError, match="blocksize 3 outside") as e:
            h._structural("set_config", bad)
        assert "\n" not in str(e.value)
        st = h.status()
        assert st["running"] and h.running and st["callbacks"] >= before  # (a restart counts from 0)
        deadline = time.monotonic() + 5
        while h.status()["callbacks"] == st["callbacks"]:  # and still counting on: playing, not stuck
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        h.close()
