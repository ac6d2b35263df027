"""Presets at their edges, review 44: a batch's resume hash of what makes the sound (not of how the
preset is written), 256 slots, a hosted plugin's port named like a Python argument, one bad entry
in the user's folder, presets saved before a parameter was renamed or removed, a manifest's
preset file in capitals, slot ids with a newline, the no-screen fallback's preset and MIDI mappings
outside the panel. Each test failed before its fix."""
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from realtime.dsp.presets import apply_overrides, build_chain, load_preset, user_presets, validate_preset
from realtime.errors import PresetError
from realtime.run.batch import BatchOptions, plan_batch


@pytest.fixture
def wav(tmp_path):
    sf.write(tmp_path / "a.wav", (0.1 * np.random.default_rng(0).standard_normal((4800, 2))).astype(np.float32), 48000)
    return tmp_path / "a.wav"


def _hash(wav, out, *sets, preset="default"):
    (task,) = plan_batch([wav], out, BatchOptions(preset=preset, overrides=list(sets)))
    return task.preset_hash


def test_the_resume_hash_is_of_the_sound_not_of_how_the_preset_is_written(wav, tmp_path, monkeypatch):
    out = tmp_path / "out"
    six = _hash(wav, out, "gain.gain_db=6")
    assert _hash(wav, out, "gain.gain_db=6.0") == six == _hash(wav, out, "gain.gain_db=+6")
    assert _hash(wav, out, "gain.gain_db=5") != six
    spelled = load_preset("default")  # every default written out, another name: the same sound
    spelled["name"], spelled["description"] = "mine", "the same"
    for s in spelled["chain"]:
        s.pop("id", None)
    (tmp_path / "mine.json").write_text(json.dumps(spelled))
    assert _hash(wav, out, preset=str(tmp_path / "mine.json")) == _hash(wav, out)
    import dataclasses

    from realtime.dsp.processors.limiter import Limiter  # a new default is a new sound

    before = _hash(wav, out)
    monkeypatch.setattr(Limiter, "params", tuple(dataclasses.replace(p, default=p.default + 1.0)  # (the preset
                                                 if p.id == "input_gain_db" else p for p in Limiter.params))  # sets none)
    assert _hash(wav, out) != before


def test_a_retrained_model_is_a_new_sound(tmp_path, monkeypatch):
    from realtime.dsp.processors.neural.weights import model_dir
    from realtime.run.batch_plan import _model_files

    models = tmp_path / "models"
    shutil.copytree(model_dir("enhancer"), models / "enhancer")
    monkeypatch.setenv("RTAUDIO_MODELS_DIR", str(models))  # (no processor imported meanwhile: they keep their paths)
    before = _model_files([{"processor": "enhancer"}, {"processor": "gain"}])
    assert before and all(name.startswith("enhancer/") for name, _ in before)
    onnx = next((models / "enhancer").glob("*.onnx"))
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    assert _model_files([{"processor": "enhancer"}]) != before


def test_a_chain_of_256_slots_loads_and_builds(tmp_path):
    """256 slots passed the limit, then the appended safety stage made 257, which every later
    validation refused (a panel chain of 256 could not be saved)."""
    p = validate_preset({"version": 1, "name": "s", "chain": [{"processor": "gain"}] * 256})
    assert len(p["chain"]) == 257 and len(build_chain(apply_overrides(p, ["gain.gain_db=-1"])).slots) == 257
    with pytest.raises(PresetError, match="257 slots; at most 256"):
        validate_preset({"version": 1, "name": "s", "chain": [{"processor": "gain"}] * 257})


def test_one_entry_that_cannot_be_looked_at_hides_no_saved_preset(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps({"version": 1, "name": "mine", "chain": []}))
    os.symlink("/tmp/" + "a" * 300 + ".json", tmp_path / "zz-broken.json")  # stat: file name too long
    assert [p.name for p in user_presets(tmp_path)] == ["mine.json"]


@pytest.mark.parametrize("kind, old, new", [("enhancer", "mix", "wet"), ("delimiter", "limit_gate", None)])
def test_a_preset_saved_before_a_parameter_was_renamed_or_removed_loads(capsys, monkeypatch, kind, old, new):
    from realtime.dsp import presets

    monkeypatch.setattr(presets, "_said", set())  # said once a process: said here
    value = 0.5 if new else "on"
    p = validate_preset({"version": 1, "name": "v", "chain": [{"id": "x", "processor": kind, "params": {old: value}}]})
    params = p["chain"][0]["params"]
    assert old not in params and (params.get(new) == 0.5 if new else True)
    err = capsys.readouterr().err
    assert f"chain[0].params.{old}: " in err and ("renamed 'wet'" if new else "left out") in err
    with pytest.raises(PresetError, match="unknown parameter"):
        validate_preset({"version": 1, "name": "v", "chain": [{"processor": kind, "params": {"nosuch": 1}}]})


def test_a_manifests_preset_file_in_capitals_is_read_beside_it(tmp_path, wav):
    (tmp_path / "proj").mkdir()
    shutil.copy(wav, tmp_path / "proj" / "b.wav")
    (tmp_path / "proj" / "LOUD.JSON").write_text(json.dumps({"version": 1, "name": "loud", "chain": []}))
    (tmp_path / "proj" / "list.csv").write_text("input,preset\nb.wav,LOUD.JSON\n")
    os.chdir(tmp_path)
    (task,) = plan_batch([tmp_path / "proj" / "list.csv"], tmp_path / "out", BatchOptions())
    assert task.preset["name"] == "loud"


def test_a_slot_id_ending_in_a_newline_is_refused():
    with pytest.raises(PresetError, match="is not a valid slot id"):
        validate_preset({"version": 1, "name": "s", "chain": [{"id": "gain\n", "processor": "gain"}]})


def test_the_no_screen_fallback_runs_the_preset_the_panel_would_open(tmp_path, monkeypatch, capsys):
    import main

    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"version": 1, "name": "mine", "chain": []}))
    ini = tmp_path / "rtaudio-host.ini"
    ini.write_text(f"[preset]\nlast={mine}\n")
    monkeypatch.setenv("RTAUDIO_HOST_CONFIG", str(ini))
    monkeypatch.setattr(main, "_no_screen", lambda: "no screen")
    ran = []
    monkeypatch.setattr(main, "cmd_run", lambda a: ran.append(a.preset) or 0)
    assert main.main(["gui"]) == 0 and main.main(["gui", "--preset", "voice"]) == 0
    ini.write_text(f"[preset]\nlast={tmp_path / 'gone.json'}\n")
    assert main.main(["gui"]) == 0
    assert ran == [str(mine), "voice", "default"] and "gone.json) could not be loaded" in capsys.readouterr().err


def test_a_presets_midi_mappings_outside_the_panel_are_said(tmp_path, wav, capsys):
    import main

    mapped = tmp_path / "mapped.json"
    mapped.write_text(json.dumps({"version": 1, "name": "m", "chain": [{"id": "gain", "processor": "gain"}],
                                  "midi": [{"cc": 7, "channel": None, "target": "gain.gain_db"}]}))
    assert main.main(["process", str(wav), str(tmp_path / "o.wav"), "--preset", str(mapped), "--no-progress"]) == 0
    assert "its 1 MIDI controller mapping(s) work live" in capsys.readouterr().err


def test_a_mapping_to_a_removed_parameter_is_dropped_not_the_preset(monkeypatch, capsys):
    from realtime.dsp import presets

    monkeypatch.setattr(presets, "_said", set())
    p = validate_preset({"version": 1, "name": "v", "chain": [{"id": "d", "processor": "delimiter"}],
                         "midi": [{"cc": 1, "channel": None, "target": "d.limit_gate"},
                                  {"cc": 2, "channel": None, "target": "d.amount"}]})
    assert p["midi"] == [{"cc": 2, "channel": None, "target": "d.amount"}]
    assert "limit_gate" in capsys.readouterr().err


@pytest.mark.parametrize("symbol", ["kind", "self", "cls"])
def test_a_plugin_port_named_like_a_python_argument_builds(tmp_path, wav, symbol):
    """A hosted plugin's control named ``kind``, ``self`` or ``cls`` clashed with an argument of
    ``create``, ``Processor.__init__`` or ``Lv2Plugin.__new__``: a TypeError traceback."""
    import subprocess
    import sys

    bundle = tmp_path / "lv2" / "amp-swh.lv2"
    shutil.copytree("/usr/lib/lv2/amp-swh.lv2", bundle)
    ttl = bundle / "plugin.ttl"
    ttl.write_text(ttl.read_text().replace(':symbol "gain"', f':symbol "{symbol}"'))
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"version": 1, "name": "p", "chain": [
        {"id": "amp", "processor": "lv2", "uri": "http://plugin.org.uk/swh-plugins/amp", "params": {symbol: -6.0}}]}))
    env = {**os.environ, "LV2_PATH": str(tmp_path / "lv2"), "HOME": str(tmp_path / "home"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "main.py", "process", str(wav), str(tmp_path / "o.wav"), "--preset", str(preset),
                        "--no-progress"], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    y, x = sf.read(tmp_path / "o.wav")[0], sf.read(wav)[0]
    assert np.abs(y).max() == pytest.approx(0.5 * np.abs(x).max(), rel=0.05)  # -6 dB reached the port
