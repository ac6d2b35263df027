"""A MIDI input port that vanishes while a key is held (keyboard unplugged, its JACK client gone):
every note is released, one line says so, and a port of the same name is reconnected by itself.

Each case runs in a process of its own on a private JACK server: libjack talks to one server per
process, and this one may already hold a client of the session's server. The "keyboard" is a real
JACK client with a MIDI output port, closed and opened again.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("mido")
pytest.importorskip("jack")
pytestmark = pytest.mark.jack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = "rtmidiloss"

KEYBOARD = r"""
import json, sys, threading, time
import jack

class Keyboard:
    "A JACK client 'kbd' with a MIDI output 'out': a key pressed is written in its next period."

    def __init__(self):
        self.client = jack.Client("kbd", use_exact_name=True, no_start_server=True)
        self.port = self.client.midi_outports.register("out")
        self.pending, self.lock = [], threading.Lock()
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames):
        self.port.clear_buffer()
        with self.lock:
            msgs, self.pending = self.pending, []
        for m in msgs:
            self.port.write_midi_event(0, bytes(m))

    def send(self, *m):
        with self.lock:
            self.pending.append(m)

    def close(self):
        self.client.deactivate()
        self.client.close()

def wait_until(done, timeout, step=None):
    t0 = time.monotonic()
    while not done() and time.monotonic() - t0 < timeout:
        (step or (lambda: time.sleep(0.02)))()
    return done()
"""

INPUT = KEYBOARD + r"""
from realtime.io.midi_input import MidiInput

kbd = Keyboard()
got = []
mi = MidiInput(lambda *m: got.append(m[:3]), port="kbd:out")  # (status, data1, data2[, stamp])
time.sleep(0.2)
kbd.send(0x90, 60, 100)
wait_until(lambda: got, 3)
held = list(got)
kbd.close()  # the key is still down
wait_until(lambda: len(got) > len(held), 3)
time.sleep(0.7)  # more than one look at the port list: it is said once
lost = got[len(held):]
kbd = Keyboard()
n = len(got)
for _ in range(20):  # until the input has connected to the new port
    kbd.send(0x90, 64, 100)
    if wait_until(lambda: len(got) > n, 0.25):
        break
back = got[n:]
mi.close()
print(json.dumps({"held": held, "lost": lost, "back": back, "threads": [t.name for t in threading.enumerate()]}))
kbd.close()
"""


def run_script(code: str, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, JACK_DEFAULT_SERVER=SERVER, JACK_NO_START_SERVER="1", PYTHONPATH=ROOT,
               MIDO_BACKEND="mido.backends.rtmidi/UNIX_JACK", QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def server():
    from realtime.io.jackserver import DummyJackServer

    s = DummyJackServer(48000, 256, name=SERVER).start()
    yield s
    s.stop()


def result(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def sounding_after(synth, messages) -> list[int]:
    """The synth's held notes after ``messages`` and 20 blocks."""
    import numpy as np

    for m in messages:
        synth.handle_midi(*m, 0)
    buf = np.zeros((128, 2), np.float32)
    for _ in range(20):
        synth.process(buf)
    return synth.sounding_notes()


def test_a_held_note_is_released_when_its_port_vanishes_and_the_port_is_back_by_itself(server):
    from realtime.dsp.processors.synth.processor import MODEL_DIR, Synth

    r = run_script(INPUT)
    rec = result(r)
    lines = [line for line in r.stderr.splitlines() if "kbd:out" in line]
    assert [("lost" in line, "back" in line) for line in lines] == [(True, False), (False, True)], r.stderr
    assert rec["held"] == [[0x90, 60, 100]]
    synth = Synth(model_dir=MODEL_DIR, instrument="violin")
    synth.prepare(48000, 128, 2)
    assert sounding_after(synth, rec["held"]) == [60]
    assert sounding_after(synth, rec["lost"]) == []  # what the input sent when the port vanished
    assert rec["back"] and rec["back"][0] == [0x90, 64, 100]  # the port plugged in again plays
    assert rec["threads"] == ["MainThread"]  # close() stopped the watcher


CLOSED = KEYBOARD + r"""
from realtime.io.midi_input import MidiInput

kbd = Keyboard()
got = []
mi = MidiInput(lambda *m: got.append(m[:3]), port="kbd:out", queued=True)
time.sleep(0.2)
kbd.send(0xB0, 64, 127)
kbd.send(0x90, 60, 100)
wait_until(lambda: len(got) >= 2, 3)
held = list(got)
mi.close()  # the panel's settings switched to another port, the key and the pedal still down
print(json.dumps({"held": held, "closed": got[len(held):]}))
kbd.close()
"""


def test_closing_an_input_releases_what_it_held(server):
    """A port the program closes (the panel's settings: another MIDI input, or OK at all) left its
    notes and pedal on: the synth rang on, and the new port's notes rang forever."""
    from realtime.dsp.processors.synth.processor import MODEL_DIR, Synth

    rec = result(run_script(CLOSED))
    assert rec["held"] == [[0xB0, 64, 127], [0x90, 60, 100]]
    synth = Synth(model_dir=MODEL_DIR, instrument="violin")
    synth.prepare(48000, 128, 2)
    assert sounding_after(synth, rec["held"]) == [60]
    assert sounding_after(synth, rec["closed"]) == []
    assert sounding_after(synth, [(0x90, 64, 100), (0x80, 64, 0)]) == []  # the pedal is up: no ring
    assert [0xB0, 121, 0] in rec["closed"]  # the controllers at rest too (bend centred)


PANEL = KEYBOARD + r"""
from PyQt6.QtWidgets import QApplication
app = QApplication(sys.argv[:1])
from gui.host import EngineHost
from gui.settings import Settings
from gui.window import MainWindow
from realtime.dsp.presets import load_preset
from realtime.engine.config import EngineConfig

def pump():
    app.processEvents()
    time.sleep(0.02)

kbd = Keyboard()
preset, settings = load_preset("default"), Settings(sys.argv[1])
settings.midi_port = "kbd:out"
host = EngineHost(preset, EngineConfig())
sent = []
host.send_midi = lambda *m: sent.append(m[:3]) or True  # what reaches the engine's MIDI queue (less the stamp)
w = MainWindow(preset, EngineConfig(), settings, host=host)
w.show()
w.toggle_learn("limiter.ceiling_db")  # a learn under way must not take the released notes' controllers
time.sleep(0.2)
kbd.send(0x90, 60, 100)
wait_until(lambda: sent, 3, pump)
kbd.close()
wait_until(lambda: any("lost" in e for e in w.errors), 3, pump)
for _ in range(10):
    pump()
w._poll_status()
lost = {"errors": list(w.errors), "banner": w.banner.isVisible(), "label": w.status_labels["midi"].text(),
        "sent": sent[1:], "learning": host.cc_map.learning, "mapped": len(host.midi_map)}
kbd = Keyboard()
wait_until(lambda: any("back" in e for e in w.errors), 3, pump)
n = len(sent)
for _ in range(20):
    kbd.send(0x90, 64, 100)
    if wait_until(lambda: len(sent) > n, 0.25, pump):
        break
w._poll_status()
back = {"errors": list(w.errors), "label": w.status_labels["midi"].text(), "sent": sent[n:]}
w.shutdown()
print(json.dumps({"lost": lost, "back": back}))
kbd.close()
"""


def test_the_panel_says_the_port_is_lost_in_its_banner_releases_the_notes_and_reconnects(server, tmp_path):
    pytest.importorskip("PyQt6")
    rec = result(run_script(PANEL, str(tmp_path / "settings.ini")))
    lost, back = rec["lost"], rec["back"]
    assert lost["banner"] and len([e for e in lost["errors"] if "kbd:out" in e]) == 1, lost
    assert "lost" in lost["label"], lost
    assert [0xB0, 123, 0] in lost["sent"] and [0xB0, 64, 0] in lost["sent"], lost
    assert (lost["learning"], lost["mapped"]) == ("limiter.ceiling_db", 0)  # the learn still waits
    assert [e for e in back["errors"] if "kbd:out" in e] == [e for e in back["errors"] if "back" in e], back
    assert len(back["errors"]) == 1 and "lost" not in back["label"], back  # the "back" line replaced "lost"
    assert back["sent"][:1] == [[0x90, 64, 100]], back


CLI = KEYBOARD + r"""
import subprocess
import numpy as np

kbd = Keyboard()
rec = jack.Client("rec", no_start_server=True)
rin = rec.inports.register("in")
buf, on = [], [False]

@rec.set_process_callback
def _(frames):
    if on[0]:
        buf.append(rin.get_array().copy())

rec.activate()
p = subprocess.Popen([sys.executable, "main.py", *sys.argv[1:], "--midi-port", "kbd:out", "--seconds", "7", "-b", "256"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
err = []
threading.Thread(target=lambda: err.extend(p.stderr), daemon=True).start()

def rms(seconds):
    buf.clear(); on[0] = True
    time.sleep(seconds)
    on[0] = False
    x = np.concatenate(buf) if buf else np.zeros(1)
    return float(np.sqrt(np.mean(x ** 2)))

wait_until(lambda: any(said in e for e in err for said in ("live on MIDI port", "MIDI in on port")) or p.poll() is not None,
           60)  # (synth --live's line, run's)
outs = [q.name for q in rec.get_ports(is_audio=True, is_output=True) if not q.name.startswith(("system", "rec"))]
rec.connect(outs[0], "rec:in")
time.sleep(0.3)
kbd.send(0x90, 60, 100)
time.sleep(0.5)
held = rms(0.3)
kbd.close()  # the key is still down
wait_until(lambda: any("lost" in e for e in err), 2)
time.sleep(0.8)  # the release and the reverb's tail
after = rms(0.5)
kbd = Keyboard()
wait_until(lambda: any("back" in e for e in err), 2)
time.sleep(0.1)
kbd.send(0x90, 64, 100)
time.sleep(0.5)
again = rms(0.3)
out, _ = p.communicate(timeout=60)
print(json.dumps({"held": held, "after": after, "again": again, "code": p.returncode, "stderr": "".join(err),
                  "stdout": out}))
kbd.close()
"""


def test_synth_live_says_the_port_is_lost_stops_the_note_and_plays_again_when_it_is_back(server):
    rec = result(run_script(CLI, "synth", "--live", timeout=120))
    err = rec["stderr"]
    assert rec["code"] == 0 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "kbd:out" in line and "live on" not in line]
    assert [("lost" in line, "back" in line) for line in lines] == [(True, False), (False, True)], err
    assert rec["held"] > 0.005, rec  # the held note sounded
    assert rec["after"] < 0.1 * rec["held"], rec  # and stopped once its keyboard was gone
    assert rec["again"] > 0.005, rec  # the keyboard plugged in again plays
    assert json.loads(rec["stdout"].strip().splitlines()[-1])["midi_messages"] == 2


SERVER_GOES = r"""
import sys, time
from realtime.io.midi_input import MidiInput

mi = MidiInput(lambda *m: None, virtual=True)
print("open", flush=True)
sys.stdin.readline()  # the server is gone
time.sleep(1.5)
mi.close()
print("closed", flush=True)
"""


def test_libjacks_own_lines_stay_off_the_terminal_when_the_server_goes_away():
    """python-rtmidi brings its own copy of libjack, which wrote "Cannot read socket fd…",
    "JackSocketClientChannel read fail" and "Server is not running" (three times) under the
    command's own line when the JACK server went away; `run` (PortAudio's client) said nothing of the
    kind. A private server of its own: this one is stopped."""
    from realtime.io.jackserver import DummyJackServer

    name = "rtmidigone"
    s = DummyJackServer(48000, 256, name=name).start()
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1", PYTHONPATH=ROOT,
               MIDO_BACKEND="mido.backends.rtmidi/UNIX_JACK")
    p = subprocess.Popen([sys.executable, "-c", SERVER_GOES], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "open"
        s.stop()  # SIGTERM: the server says goodbye to its clients
        out, err = p.communicate("\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        s.stop()
    assert p.returncode == 0 and out.strip() == "closed", err
    assert err == "", err
