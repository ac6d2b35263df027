"""PortAudio's JACK host API keeps a client open from initialisation to Pa_Terminate, and closing
that client asserts once its server has gone (``pa_jack.c: Terminate: Assertion 'err == 0'
failed``): a process that had listed devices aborted at its exit (SIGABRT, status 134) when the
JACK server stopped meanwhile, the panel's engine process included (the window took it for a
crash). Each case runs in a process of its own, on a private server of its own name."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.jack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import os, sys
from realtime.io.jackserver import DummyJackServer

os.environ["JACK_DEFAULT_SERVER"] = sys.argv[1]
server = DummyJackServer(name=sys.argv[1]).start()
from realtime.io import portaudio

print("devices:", [d["name"] for d in portaudio.list_devices()], flush=True)
how = sys.argv[2]
if how == "alive":
    portaudio.release()
    print("released:", portaudio.sd()._initialized == 1, flush=True)  # initialised afresh
    portaudio.rescan()
    print("again:", [d["name"] for d in portaudio.list_devices()], flush=True)
    server.stop()
    sys.exit(0)
(server.proc.kill if how == "kill" else server.proc.terminate)()
server.proc.wait()
if sys.argv[3] == "release":
    portaudio.release()
    print("released", flush=True)
print("exiting", flush=True)  # sounddevice's exit handler terminates PortAudio
"""


def _run(*args):
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.parametrize("how", ["terminate", "kill"])
@pytest.mark.parametrize("then", ["release", "exit"])
def test_a_process_whose_jack_server_went_away_exits_without_portaudios_abort(how, then):
    r = _run(f"pagone{how[0]}{then[0]}", how, then)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "Assertion" not in r.stderr and "exiting" in r.stdout, r.stderr[-2000:]
    assert "devices: ['system']" in r.stdout


def test_a_server_that_still_runs_is_let_go_and_found_again():
    r = _run("paalive", "alive", "-")
    assert r.returncode == 0, (r.stdout, r.stderr[-2000:])
    assert "released: True" in r.stdout and "again: ['system']" in r.stdout, r.stdout
