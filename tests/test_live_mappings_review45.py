"""`run` applies a preset's MIDI controller mappings (learnt in the panel) as the panel does: it
only warned that they did nothing outside the panel."""
import json
import time

import numpy as np
import pytest

from realtime.dsp.presets import build_chain, load_preset
from realtime.engine.config import EngineConfig
from realtime.engine.engine import Engine
from realtime.run.live import MappedMidi


def test_a_mapped_controller_moves_its_knob_and_every_other_message_reaches_the_chain():
    eng = Engine(build_chain(load_preset("default")), EngineConfig())
    sink = MappedMidi(eng, [{"cc": 7, "channel": None, "target": "gain.gain_db"},
                            {"cc": 20, "channel": 2, "target": "limiter.bypass"}])
    sink(0xB5, 7, 0)  # any channel: the gain's lowest
    sink(0xB2, 20, 127)  # channel 3: the limiter bypassed
    sink(0xB0, 20, 127)  # the same controller on channel 1 is not mapped: the chain's
    sink(0x90, 60, 100)
    eng.apply_pending_control()
    assert eng.chain.slot("gain").processor.get_param("gain_db") == -60.0
    assert eng.chain.slot("limiter").bypass
    got = np.zeros((8, eng.rings.midi.width))
    n = eng.rings.midi.pop(got)
    assert n == 2 and got[:n, :3].tolist() == [[0xB0, 20, 127], [0x90, 60, 100]]


def test_a_full_control_queue_is_said_once_and_the_move_dropped():
    eng = Engine(build_chain(load_preset("default")), EngineConfig())
    eng.writer.on_full = None  # a running engine: its DSP thread empties the queue, nobody else does
    said = []
    sink = MappedMidi(eng, [{"cc": 7, "channel": None, "target": "gain.gain_db"}], said.append)
    for _ in range(eng.rings.control.capacity):
        assert sink(0xB0, 7, 64)
    assert not sink(0xB0, 7, 10) and not sink(0xB0, 7, 11)
    assert len(said) == 1 and said[0].startswith("MIDI CC 7 -> gain.gain_db: control queue full")


def test_offline_commands_still_say_the_mappings_do_nothing_there(tmp_path, capsys):
    import soundfile as sf

    import main

    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros(4800), 48000)
    mapped = tmp_path / "mapped.json"
    mapped.write_text(json.dumps({"version": 1, "name": "m", "chain": [{"id": "gain", "processor": "gain"}],
                                  "midi": [{"cc": 7, "channel": None, "target": "gain.gain_db"}]}))
    assert main.main(["process", str(wav), str(tmp_path / "o.wav"), "--preset", str(mapped), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "its 1 MIDI controller mapping(s) work live" in err and "this command does not apply them" in err


@pytest.mark.jack
def test_run_turns_the_synth_down_from_a_mapped_controller(jack_server, tmp_path):
    """A keyboard's slider learnt onto the synth's gain: `run` plays the note, the slider at 0 takes
    it to −40 dB in the take (the limiter before the safety stage cannot bring it back)."""
    import mido
    import soundfile as sf

    from .test_synth import _play_a_note_into

    def note_then_slider_down(out):
        out.send(mido.Message("note_on", note=69, velocity=100))
        time.sleep(0.6)
        out.send(mido.Message("control_change", control=20, value=0))
        time.sleep(0.6)
        out.send(mido.Message("note_off", note=69))

    preset = load_preset("synth")
    preset["midi"] = [{"cc": 20, "channel": None, "target": "synth.gain_db"}]
    path, rec = tmp_path / "mapped.json", tmp_path / "take.wav"
    path.write_text(json.dumps(preset))
    status, _, stderr = _play_a_note_into(["run", "--preset", str(path), "--mode", "output", "--seconds", "4",
                                           "--record", str(rec)], "MIDI in on port", note_then_slider_down)
    assert status == 0, stderr
    assert "(1 controller(s) mapped to knobs)" in stderr.splitlines()[0]
    assert "does not apply them" not in stderr
    y, sr = sf.read(rec)
    y = y[:, 0] if y.ndim > 1 else y
    onset = int(np.argmax(np.abs(y) > 1e-3))
    loud = np.sqrt(np.mean(y[onset + sr // 10: onset + sr * 4 // 10] ** 2))
    soft = np.sqrt(np.mean(y[onset + sr * 8 // 10: onset + sr * 11 // 10] ** 2))
    assert loud > 1e-2 and 20 * np.log10(soft / loud) < -30, (loud, soft)
