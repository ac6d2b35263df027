"""`run` with a preset whose knobs are mapped to MIDI controllers (review 50): a keyboard that is
unplugged makes the input release everything (CC64, CC121 and CC123 on every channel); those went
through the mappings, so a knob mapped to the sustain pedal fell to its lowest and stayed there."""
import json

import pytest

from .test_midi_port_loss import CLI, result, run_script, server  # noqa: F401 (the fixture)

pytest.importorskip("mido")
pytest.importorskip("jack")
pytestmark = pytest.mark.jack


def test_an_unplugged_keyboard_leaves_the_knob_mapped_to_its_pedal_alone(server, tmp_path):  # noqa: F811
    from realtime.dsp.presets import load_preset

    preset = load_preset("synth")
    preset["midi"] = [{"cc": 64, "channel": None, "target": "synth.gain_db"}]  # a pedal learnt onto the gain
    path = tmp_path / "mapped.json"
    path.write_text(json.dumps(preset))
    rec = result(run_script(CLI, "run", "--preset", str(path), "--mode", "output", timeout=120))
    err = rec["stderr"]
    assert rec["code"] == 0 and "Traceback" not in err, err
    assert "lost" in err and "back" in err, err
    assert rec["held"] > 0.005, rec
    assert rec["again"] > 0.5 * rec["held"], rec  # the keyboard plugged in again plays as loud as before
