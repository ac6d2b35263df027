"""An audio server that pauses for longer than the device-lost timeout and comes back (a suspend,
a paused VM): the engine says so while it is gone, plays on when it returns, and stops normally."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.jack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = r"""
import json, sys, time
from realtime.dsp.presets import build_chain, load_preset
from realtime.engine import callback as cb
from realtime.engine.config import EngineConfig
from realtime.engine.engine import Engine
eng = Engine(build_chain(load_preset("clean")), EngineConfig(blocksize=256, mode="output"))
eng.start()
t0 = time.monotonic()
while eng.stats_arr[cb.ST_CALLBACKS] < 50 and time.monotonic() - t0 < 30:
    time.sleep(0.02)
print("ready", flush=True)
sys.stdin.readline()  # the server was paused past the timeout
during = eng.error
print("read", flush=True)  # before it resumes: the monitor clears the error once callbacks come again
sys.stdin.readline()  # ... and has been running again for a while
after = eng.error
eng.stop()
n = int(eng.stats_arr[cb.ST_CALLBACKS]); time.sleep(0.5)
print(json.dumps({"during": during, "after": after, "callbacks_after_stop": int(eng.stats_arr[cb.ST_CALLBACKS]) - n}),
      flush=True)
"""


def test_a_server_that_pauses_and_returns_plays_on_and_stops_cleanly():
    from realtime.io.jackserver import DummyJackServer

    name = "rtstall"
    server = DummyJackServer(48000, 256, name=name).start()
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stdout.readline().strip()
        if line != "ready":
            p.kill()
            pytest.fail(f"engine did not start: {line!r} {p.stderr.read()[-3000:]}")
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.8)  # past the monitor's 1 s
            p.stdin.write("paused\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "read"  # (a slow child read it after the server was back)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        time.sleep(1.0)
        out, err = p.communicate("back\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        server.stop()
    assert p.returncode == 0, err[-3000:]
    rec = json.loads(out.strip().splitlines()[-1])
    assert "stopped delivering callbacks" in (rec["during"] or ""), rec
    assert rec["after"] is None, rec  # it came back: no stale "device lost"
    assert rec["callbacks_after_stop"] == 0, rec  # stopped and closed, not abandoned running
