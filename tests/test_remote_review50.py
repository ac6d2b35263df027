"""The panel's engine process (gui/remote), review 50: Ctrl-C, Ctrl-\\ and a closed terminal reach
the whole process group, so the processes the window starts get them too. One that came in the
engine process's first second (its imports, before it ignores them) printed a KeyboardInterrupt
traceback and ended it; a SIGHUP killed the shared-memory tracker, whose successor printed a
KeyError traceback for every segment the window unlinked."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_an_interrupt_during_the_engine_process_start_is_left_to_the_window():
    code = """if True:
        import os, signal, time
        import multiprocessing.context as mpc
        from gui.remote import RemoteEngineHost
        from realtime.dsp.presets import load_preset

        spawn = mpc.SpawnProcess._Popen
        def interrupted(process_obj):  # the group's signals, while the engine process imports
            p = spawn(process_obj)
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
                os.kill(p.pid, sig)
                time.sleep(0.05)
            return p
        mpc.SpawnProcess._Popen = staticmethod(interrupted)
        host = RemoteEngineHost(load_preset("default"))
        try:
            time.sleep(1.0)  # (a signal still pending would act now)
            host.add_slot("gain")  # it answers
            print("answering:", host.engine_alive(), len(host.to_preset()["chain"]))
        finally:
            host.close()
    """
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "answering: True" in r.stdout, (r.stdout, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


def test_a_closed_terminal_leaves_the_shared_memory_tracker_alone():
    code = """if True:
        import os, signal, time
        from multiprocessing import resource_tracker
        from gui.remote import RemoteEngineHost
        from realtime.dsp.presets import load_preset

        host = RemoteEngineHost(load_preset("default"))
        tracker = resource_tracker._resource_tracker._pid
        os.kill(tracker, signal.SIGHUP)
        time.sleep(0.5)
        print("tracker alive:", os.waitpid(tracker, os.WNOHANG) == (0, 0))
        host.close()
        left = [n for n in host._names.values() if os.path.exists("/dev/shm/" + n)]
        print("left:", left)
    """
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tracker alive: True" in r.stdout, (r.stdout, r.stderr[-3000:])
    assert "left: []" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr and "KeyError" not in r.stderr, r.stderr[-3000:]
