"""A plugin whose native code crashes the engine process is named in the window's message."""
from __future__ import annotations

import time

import numpy as np
import pytest

from realtime.dsp import processors as P
from realtime.engine.config import EngineConfig
from realtime.io import crash_site, lilv

SWH = "http://plugin.org.uk/swh-plugins/"
DC_REMOVE = SWH + "dcRemove"


def test_each_thread_marks_its_own_slot_and_the_crashed_threads_mark_is_the_one_named():
    """One mark per site, shared by every thread: a plugin crashing while it was made was put down to
    another that played meanwhile (the DSP site listed first), and a worker's mark restored by
    another worker stayed set after both had returned."""
    import threading

    buf = bytearray(crash_site.SIZE)
    crash_site.use(buf)
    try:
        a = crash_site.take("plugin A")
        b = crash_site.take("plugin B " + "é" * 300)  # cut to the row's length, still readable
        assert crash_site.read(buf) == ([], False)
        crash_site.mark(crash_site.DSP, a)  # this thread plays A
        inside_b, done = threading.Event(), threading.Event()
        idents = []

        def worker():
            idents.append(threading.get_ident())
            with crash_site.inside(b, crash_site.WORKER):
                inside_b.set()
                done.wait(10)

        t = threading.Thread(target=worker)
        t.start()
        inside_b.wait(10)
        sites, sure = crash_site.read(buf)
        assert not sure and sites[0] == ("plugin A", "while it processed audio")
        assert sites[1][0].startswith("plugin B é") and sites[1][1] == "in its worker thread"
        # faulthandler's report names the thread that crashed: its mark alone is the one named
        at = crash_site.REPORT_AT
        text = f"Fatal Python error: Segmentation fault\n\nCurrent thread {idents[0]:#018x} (most recent call first):"
        buf[at:at + len(text)] = text.encode()
        assert crash_site.read(buf) == ([(sites[1][0], "in its worker thread")], True)
        buf[at:at + len(text)] = bytes(len(text))
        done.set()
        t.join()
        assert crash_site.read(buf) == ([("plugin A", "while it processed audio")], False)  # B's mark went with it
        crash_site.mark(crash_site.DSP, 0)
        crash_site.give_back(a)
        rows = [crash_site.take(f"p{i}") for i in range(crash_site.ROWS)]
        assert rows.count(0) == 1 and a in rows  # a's row was given back; one more than fit is unnamed
    finally:
        crash_site.use(None)


@pytest.mark.skipif(not lilv.available(), reason="run scripts/setup.sh (liblilv-0-0)")
def test_marks_kept_in_a_segment_leave_it_free_to_close():
    """The engine process closes its segment after ``use(None)``: a view of it kept for the fast
    marks would make that close fail (BufferError), and the marks must land in the segment itself."""
    from multiprocessing import shared_memory

    seg = shared_memory.SharedMemory(create=True, size=crash_site.SIZE)
    try:
        crash_site.use(seg.buf)
        row = crash_site.take("plugin X")
        before = crash_site.mark(crash_site.DSP, row)
        assert crash_site.read(bytes(seg.buf))[0] == [("plugin X", crash_site.DOING[crash_site.DSP])]
        crash_site.mark(*before)
        crash_site.give_back(row)
        crash_site.use(None)
        seg.close()
    finally:
        seg.unlink()


def test_an_lv2_plugin_is_marked_while_its_run_and_its_activation_run():
    from .test_lv2_ports import _need

    _need(DC_REMOVE)
    buf = bytearray(crash_site.SIZE)
    crash_site.use(buf)
    try:
        p = P.create("lv2", uri=DC_REMOVE)
        p.prepare(48000, 128, 2)
        seen = []
        runs = []
        for run, handle, inst, parked in p._runs:  # record the marks where the plugin's run() is called
            def spy(h, n, run=run):
                seen.append(crash_site.read(buf))
                return run(h, n)
            runs.append((spy, handle, inst, parked))
        p._runs = tuple(runs)
        p.process(np.zeros((128, 2), np.float32))
        label = f"LV2 plugin '{p.info.name}' <{DC_REMOVE}>"
        # (this thread's mark: another test's leftover instance may be renewed on another thread meanwhile)
        assert seen and all((label, "while it processed audio") in s[0] for s in seen), seen
        assert (label, "while it processed audio") not in crash_site.read(buf)[0]  # none between blocks
        rows = {inst.crash_row for inst in p.instances}
        assert all(rows)
        p.close()
        assert all(crash_site.take("after") in rows for _ in rows)  # the rows were given back
    finally:
        crash_site.use(None)


def _crashed(host, timeout=20.0):
    from gui.remote.client import EngineProcessError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            host.status()
        except EngineProcessError as e:
            return str(e)
        time.sleep(0.1)
    raise AssertionError("the engine process did not crash")


def test_the_window_names_the_plugin_that_crashed_its_engine_process(jack_server):
    """A plugin that segfaulted the engine process left "the engine process is not running": the user
    had no way to know which slot to leave out. The engine process keeps crash-site marks in shared
    memory that the window reads after the death: the plugin, and whether it played or was being made."""
    pytest.importorskip("PyQt6")
    from gui.remote.client import RemoteEngineHost

    preset = {"version": 1, "name": "t", "chain": [{"id": "g", "processor": "gain"}]}
    host = RemoteEngineHost(preset, EngineConfig(), plugins=("tests.gui_crashing",))
    try:
        host.add_slot("crash_in_run")
        host.start()
        time.sleep(0.3)
        host.set_param("crash_in_run", "crash", 1.0)
        msg = _crashed(host)
        assert msg == ("the engine process crashed (SIGSEGV) in test plugin 'Crash in run' while it processed audio; "
                       "leave it out of the chain (Restart engine brings it back)"), msg
    finally:
        host.close()


@pytest.mark.parametrize("busy", [False, True])
def test_a_plugin_that_crashes_the_engine_process_while_it_is_made_is_named_and_the_restart_plays(jack_server, busy):
    """``busy``: another plugin plays meanwhile, its code marked most of each block; the crash was put
    down to it ("in 'Busy' while it played; leave it out"), not to the plugin that crashed."""
    pytest.importorskip("PyQt6")
    from gui.remote.client import EngineProcessError, RemoteEngineHost

    preset = {"version": 1, "name": "t", "chain": [{"id": "g", "processor": "gain"}]}
    host = RemoteEngineHost(preset, EngineConfig(), plugins=("tests.gui_crashing",))
    try:
        if busy:
            host.add_slot("busy_playing")
        host.start()
        time.sleep(0.3)
        with pytest.raises(EngineProcessError) as e:
            host.add_slot("crash_in_build")
        assert str(e.value) == ("the engine process crashed (SIGSEGV) in test plugin 'Crash in build' while it was "
                                "made, restored or freed; leave it out of the chain (Restart engine brings it back)"), str(e.value)
        if busy:  # (its kind is the engine process's alone: the panel's chain cannot be made here again)
            return
        host.restart_engine()  # a fresh process (its marks cleared) with the chain the add left alone
        assert [s.id for s in host.chain.slots] == ["g", "safety"]
        host.start()
        assert host.status()["running"]
    finally:
        host.close()


def test_the_panel_says_the_engine_crashed_and_names_the_plugin(window):
    pytest.importorskip("PyQt6")
    from gui.remote.client import EngineProcessError, RemoteEngineHost

    preset = {"version": 1, "name": "t", "chain": [{"id": "g", "processor": "gain"}]}
    w = window(preset, host=RemoteEngineHost(preset, EngineConfig(), plugins=("tests.gui_crashing",)))
    with pytest.raises(EngineProcessError):
        w.host.add_slot("crash_in_build")
    w._poll_status()
    assert w.status_labels["state"].text() == "○ engine crashed"
    assert "in test plugin 'Crash in build'" in w.banner.text() and w._restart_action.isVisible()
