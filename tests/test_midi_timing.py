"""MIDI input timing: no Python on JACK's real-time thread, and stamps that say when a message came.

The JACK case runs two processes on a private JACK server (libjack talks to one server per
process): a "keyboard" client that plays notes at known JACK frames, and the input, whose main
thread holds the GIL while the notes come. mido's rtmidi callback needed the GIL on JACK's
process thread, so those notes waited (and the JACK cycle with them) and were stamped when the
GIL came back, all at once.
"""
import json
import os
import subprocess
import sys

import pytest

from realtime.io.midi_input import Stamper, channel_message

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = "rtmiditiming"
MS = 1_000_000


def test_stamps_keep_the_spacing_of_messages_read_late():
    s = Stamper()
    s.idle(1_000 * MS)
    assert s.stamps([0.0], 1_001 * MS) == [1_001 * MS]  # the first message ever: it came by now
    s.idle(1_002 * MS)
    # three notes 30 ms apart, read 200 ms after the first came (the poll thread was held up)
    assert s.stamps([0.098, 0.030, 0.030], 1_300 * MS) == [1_099 * MS, 1_129 * MS, 1_159 * MS]


def test_a_stamp_is_never_later_than_now_nor_earlier_than_the_last_empty_look():
    s = Stamper()
    s.stamps([0.0], 1_000 * MS)
    s.idle(2_000 * MS)
    # JACK's clock ran slow against ours: its delta says 900 ms, but the queue was empty at 2,000 ms
    assert s.stamps([0.9], 2_001 * MS) == [2_000 * MS]
    # ... or fast: 50 ms after the last stamp is later than now
    assert s.stamps([0.05], 2_010 * MS) == [2_010 * MS]
    # messages of one batch stay in order whatever the deltas say
    assert s.stamps([0.0, 0.0], 2_020 * MS) == [2_010 * MS, 2_010 * MS]


def test_the_first_messages_ever_end_now():
    s = Stamper()
    assert s.stamps([0.0, 0.010, 0.020], 5_000 * MS) == [4_970 * MS, 4_980 * MS, 5_000 * MS]


def test_only_well_formed_channel_messages_go_on():
    assert channel_message([0x90, 60, 100]) == (0x90, 60, 100)
    assert channel_message([0xC3, 5]) == (0xC3, 5, 0)
    assert channel_message([0xF8]) is None  # clock
    assert channel_message([0xF0, 1, 2, 0xF7]) is None  # sysex
    assert channel_message([0x90, 60]) is None  # cut short
    assert channel_message([0x90, 200, 100]) is None  # a status byte where data belongs
    assert channel_message([]) is None


KEYBOARD = r"""
import json, sys, threading, time
import jack

PERIODS = 6  # between notes: 32 ms at 48 kHz / 256
client = jack.Client("kbd", use_exact_name=True, no_start_server=True)
port = client.midi_outports.register("out")
plan, sent, lock = [], [], threading.Lock()
count = [0]

@client.set_process_callback
def process(frames):
    port.clear_buffer()
    count[0] += 1
    with lock:
        if plan and plan[0][0] <= count[0]:
            _, msg = plan.pop(0)
            port.write_midi_event(0, bytes(msg))
            sent.append(client.last_frame_time)

client.activate()
print("ready", flush=True)
for line in sys.stdin:
    with lock:
        if line.strip() == "prime":
            plan.append((count[0] + 1, (0xB0, 7, 100)))
        elif line.strip() == "go":
            plan.extend((count[0] + 1 + PERIODS * i, (0x90, 60 + i, 100)) for i in range(8))
        else:
            break
time.sleep(0.2)
print(json.dumps({"frames": sent[1:], "rate": client.samplerate}), flush=True)
client.deactivate()
client.close()
"""

INPUT = r"""
import json, subprocess, sys, time
from realtime.io.midi_input import MidiInput

kbd = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert kbd.stdout.readline().strip() == "ready"
got = []
def sink(*m):  # a message without a stamp is stamped on arrival, as Engine.send_midi does
    now = time.monotonic_ns()
    got.append((m[:3], m[3] if len(m) > 3 else now, now))

mi = MidiInput(sink, port="kbd:out")
time.sleep(0.3)
kbd.stdin.write("prime\n"); kbd.stdin.flush()
t0 = time.monotonic()
while not got and time.monotonic() - t0 < 5:
    time.sleep(0.01)
# no other Python thread runs until this one lets go; set, then a sleep that lets every thread
# waiting for the GIL take it, since a wait begun under the old 5 ms interval asks this thread to
# let go 5 ms into the hold (the input's poll thread wakes every 2 ms: a note read mid-hold, CI)
sys.setswitchinterval(10.0)
time.sleep(0.05)
kbd.stdin.write("go\n"); kbd.stdin.flush()
start = time.monotonic_ns()
while time.monotonic_ns() - start < 600_000_000:  # the GIL held 0.6 s: every note comes meanwhile
    pass
end = time.monotonic_ns()
sys.setswitchinterval(0.005)
time.sleep(0.3)
out, _ = kbd.communicate("stop\n", timeout=20)
kept = got[:]  # (the close's releases left out)
mi.close()
print(json.dumps({"kbd": json.loads(out.strip().splitlines()[-1]), "got": kept[1:], "hold": [start, end]}))
"""


@pytest.fixture(scope="module")
def server():
    from realtime.io.jackserver import DummyJackServer

    s = DummyJackServer(48000, 256, name=SERVER).start()
    yield s
    s.stop()


@pytest.mark.jack
def test_notes_that_come_while_the_gil_is_held_keep_their_times(server):
    pytest.importorskip("jack")
    env = dict(os.environ, JACK_DEFAULT_SERVER=SERVER, JACK_NO_START_SERVER="1", PYTHONPATH=ROOT,
               MIDO_BACKEND="mido.backends.rtmidi/UNIX_JACK")
    r = subprocess.run([sys.executable, "-c", INPUT, KEYBOARD], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=90)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    frames, rate = rec["kbd"]["frames"], rec["kbd"]["rate"]
    got, (start, end) = rec["got"], rec["hold"]
    assert [m for m, _, _ in got] == [[0x90, 60 + i, 100] for i in range(8)], got
    assert frames[-1] - frames[0] == 7 * 6 * 256  # the keyboard kept its schedule
    # every note reached the input while the GIL was held: read after, stamped within
    assert all(start < t < end <= read for _, t, read in got), (start, end, got)
    sent_ms = [(f - frames[0]) * 1e3 / rate for f in frames]
    stamped_ms = [(t - got[0][1]) / 1e6 for _, t, _ in got]
    err = max(abs(a - b) for a, b in zip(sent_ms, stamped_ms))
    print(f"largest stamp error {err:.2f} ms")
    assert err < 8.0, (sent_ms, stamped_ms)
