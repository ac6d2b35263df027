"""`run` with a preset whose knobs are mapped to MIDI controllers (review 50): a keyboard that is
unplugged makes the input release everything (CC64, CC121 and CC123 on every channel); those went
through the mappings, so a knob mapped to the sustain pedal fell to its lowest and stayed there."""
import json

import pytest

from .test_midi_port_loss import KEYBOARD, ROOT, result, run_script, server  # noqa: F401 (the fixture)

pytest.importorskip("mido")
pytest.importorskip("jack")
pytestmark = pytest.mark.jack

MAPPED_RUN = KEYBOARD + r"""
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
p = subprocess.Popen([sys.executable, "main.py", "run", "--preset", sys.argv[1], "--mode", "output",
                      "--midi-port", "kbd:out", "--seconds", "7", "-b", "256"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
err = []
threading.Thread(target=lambda: err.extend(p.stderr), daemon=True).start()

def rms(seconds):
    buf.clear(); on[0] = True
    time.sleep(seconds)
    on[0] = False
    x = np.concatenate(buf) if buf else np.zeros(1)
    return float(np.sqrt(np.mean(x ** 2)))

wait_until(lambda: any("MIDI in on port" in e for e in err) or p.poll() is not None, 60)
outs = [q.name for q in rec.get_ports(is_audio=True, is_output=True) if not q.name.startswith(("system", "rec"))]
rec.connect(outs[0], "rec:in")
time.sleep(0.3)
kbd.send(0x90, 60, 100)
time.sleep(0.5)
held = rms(0.3)
kbd.close()  # unplugged, the key still down
wait_until(lambda: any("lost" in e for e in err), 2)
time.sleep(0.8)
kbd = Keyboard()
wait_until(lambda: any("back" in e for e in err), 2)
time.sleep(0.1)
kbd.send(0x90, 60, 100)
time.sleep(0.5)
again = rms(0.3)
out, _ = p.communicate(timeout=60)
print(json.dumps({"held": held, "again": again, "code": p.returncode, "stderr": "".join(err)}))
kbd.close()
"""


def test_an_unplugged_keyboard_leaves_the_knob_mapped_to_its_pedal_alone(server, tmp_path):  # noqa: F811
    from realtime.dsp.presets import load_preset

    preset = load_preset("synth")
    preset["midi"] = [{"cc": 64, "channel": None, "target": "synth.gain_db"}]  # a pedal learnt onto the gain
    path = tmp_path / "mapped.json"
    path.write_text(json.dumps(preset))
    rec = result(run_script(MAPPED_RUN, str(path), timeout=120))
    err = rec["stderr"]
    assert rec["code"] == 0 and "Traceback" not in err, err
    assert "lost" in err and "back" in err, err
    assert rec["held"] > 0.005, rec
    assert rec["again"] > 0.5 * rec["held"], rec  # the same key, as loud as before the keyboard went
