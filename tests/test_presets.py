"""Presets: built-ins load and build, malformed presets name the field, overrides, save/load."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from realtime.dsp.presets import (
    PresetError,
    apply_overrides,
    build_chain,
    builtin_presets,
    load_preset,
    parse_preset,
    save_preset,
    validate_preset,
)

SR = 48000


def base():
    return {
        "version": 1, "name": "t", "description": "",
        "chain": [
            {"id": "hpf", "processor": "biquad", "params": {"type": "highpass", "freq_hz": 80}},
            {"id": "gain", "processor": "gain", "params": {"gain_db": -3}},
            {"id": "limiter", "processor": "limiter", "params": {"ceiling_db": -1}},
            {"id": "safety", "processor": "safety"},
        ],
    }


def test_builtins_load_build_and_run():
    names = builtin_presets()
    assert {"default", "clean", "master"} <= set(names)
    for name in names:
        p = load_preset(name)
        assert p["name"] == name and p["chain"][-1]["processor"] == "safety"
        c = build_chain(p)
        c.prepare(SR, 256, 2)
        x = (np.random.default_rng(0).standard_normal((256, 2)) * 2).astype(np.float32)
        c.process(x)
        assert np.all(np.isfinite(x)) and np.abs(x).max() <= 1.0


def test_builtin_contents():
    d = load_preset("default")
    assert [s["processor"] for s in d["chain"]] == ["biquad", "gain", "limiter", "meter", "safety"]
    assert d["chain"][0]["params"] == {"type": "highpass", "freq_hz": 40, "q": 0.707}
    assert [s["processor"] for s in load_preset("clean")["chain"]] == ["safety"]
    m = load_preset("master")
    assert [s["params"].get("type") for s in m["chain"][:3]] == ["highpass", "lowshelf", "highshelf"]
    assert m["chain"][3]["params"]["ceiling_db"] == -1
    c = build_chain(d)
    assert c.slot("hpf").processor.get_param("freq_hz") == 40
    c.prepare(SR, 128, 2)
    assert c.latency == 240


def _set(path, value):
    """Return a copy of base() with the dotted/indexed path set (value=DELETE removes it)."""
    p = base()
    obj = p
    keys = path.split("/")
    for k in keys[:-1]:
        obj = obj[int(k)] if isinstance(obj, list) else obj[k]
    last = keys[-1]
    if isinstance(obj, list):
        last = int(last)
    if value is DELETE:
        del obj[last]
    else:
        obj[last] = value
    return p


DELETE = object()

MALFORMED = [
    ("foo", 1, "foo: unknown top-level key"),
    ("version", 2, "version: 2 is not supported"),
    ("version", DELETE, "version: missing"),
    ("name", "", "name: expected a non-empty string"),
    ("description", 3, "description: expected a string"),
    ("chain", {}, "chain: expected a list"),
    ("chain/1", "gain", "chain[1]: expected an object"),
    ("chain/1/processor", "foo", "chain[1].processor: unknown processor 'foo'; known: ["),
    ("chain/1/processor", DELETE, "chain[1].processor: missing"),
    ("chain/1/wet", 1, "chain[1].wet: unknown key"),
    ("chain/2/params/ceiling_db", 3, "chain[2].params.ceiling_db: 3 is outside [-24, 0] dB"),
    ("chain/2/params/ceiling_db", "-3", "chain[2].params.ceiling_db: expected a number"),
    ("chain/2/params/ceiling_db", float("nan"), "chain[2].params.ceiling_db: nan is not finite"),
    ("chain/2/params/bogus", 1, "chain[2].params.bogus: unknown parameter for 'limiter'"),
    ("chain/0/params/type", "bandpass", "chain[0].params.type: 'bandpass' is not one of"),
    ("chain/0/params/type", float("nan"), "chain[0].params.type: nan is not one of"),
    ("chain/0/params/type", float("inf"), "chain[0].params.type: inf is not one of"),
    ("chain/0/params/freq_hz", 5, "chain[0].params.freq_hz: 5 is outside [20, 20000] Hz"),
    ("chain/0/params", [], "chain[0].params: expected an object"),
    ("chain/1/mix", 1.5, "chain[1].mix: 1.5 is outside [0, 1]"),
    ("chain/1/mix", "half", "chain[1].mix"),
    ("chain/1/bypass", "yes", "chain[1].bypass: expected true or false"),
    ("chain/1/id", "hpf", "chain[1].id: duplicate slot id 'hpf'"),
    ("chain/1/id", "a.b", "chain[1].id: 'a.b' is not a valid slot id"),
    ("chain/3/bypass", True, "chain[3].bypass: the final safety stage cannot be bypassed"),
]


@pytest.mark.parametrize("path,value,message", MALFORMED, ids=[m[0] + ":" + repr(m[1])[:12] for m in MALFORMED])
def test_malformed_preset_names_the_field(path, value, message):
    with pytest.raises(PresetError) as e:
        validate_preset(_set(path, value))
    assert message in str(e.value)


def test_not_an_object():
    with pytest.raises(PresetError, match="preset: expected a JSON object"):
        validate_preset([1, 2])


def test_invalid_json_reports_line_and_column(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{\n  "version": 1,\n  "name": "x",,\n  "chain": []\n}\n')
    with pytest.raises(PresetError) as e:
        load_preset(f)
    assert "bad.json" in str(e.value) and "line 3, column 15" in str(e.value)
    with pytest.raises(PresetError, match="duplicate key 'name'"):
        parse_preset('{"version": 1, "name": "a", "name": "b", "chain": []}')


def test_file_errors_name_the_file(tmp_path):
    f = tmp_path / "p.json"
    p = base()
    p["chain"][2]["params"]["ceiling_db"] = 3
    f.write_text(json.dumps(p))
    with pytest.raises(PresetError, match=r"p\.json: chain\[2\]\.params\.ceiling_db"):
        load_preset(str(f))
    with pytest.raises(PresetError, match="file not found"):
        load_preset(tmp_path / "missing.json")
    with pytest.raises(PresetError, match=r"unknown preset 'nope'; built-in: \[.*'default'"):
        load_preset("nope")


def test_default_ids_and_safety_appended():
    p = validate_preset({"version": 1, "name": "x", "chain": [
        {"processor": "biquad"}, {"processor": "biquad"}, {"id": "biquad3", "processor": "gain"},
        {"processor": "biquad"}]})
    assert [s["id"] for s in p["chain"]] == ["biquad", "biquad2", "biquad3", "biquad4", "safety"]
    assert p["chain"][-1] == {"id": "safety", "processor": "safety", "bypass": False, "mix": 1.0, "params": {}}
    assert p["description"] == ""
    # choice given as an index is normalised to its name
    q = validate_preset({"version": 1, "name": "x", "chain": [{"processor": "biquad", "params": {"type": 1}}]})
    assert q["chain"][0]["params"]["type"] == "lowpass"


def test_validate_does_not_mutate_input():
    p = base()
    before = copy.deepcopy(p)
    validate_preset(p)
    apply_overrides(p, ["hpf.freq_hz=100"])
    assert p == before


def test_overrides():
    p = apply_overrides(base(), ["hpf.freq_hz=120", "hpf.type=lowpass", "gain.bypass=true", "limiter.mix=0.5",
                                 "safety.ceiling_db=-1", " gain.gain_db = 6 "])
    s = {x["id"]: x for x in p["chain"]}
    assert s["hpf"]["params"] == {"type": "lowpass", "freq_hz": 120}
    assert s["gain"]["bypass"] is True and s["gain"]["params"]["gain_db"] == 6
    assert s["limiter"]["mix"] == 0.5 and s["safety"]["params"]["ceiling_db"] == -1
    c = build_chain(p)
    assert c.slot("gain").bypass and c.slot("limiter").mix == 0.5
    assert c.slot("hpf").processor.get_param("type") == 1.0  # lowpass
    assert apply_overrides(base(), ["gain.bypass=off"])["chain"][1]["bypass"] is False
    # the auto-added safety of a preset without one is addressable too
    q = apply_overrides({"version": 1, "name": "x", "chain": []}, ["safety.ceiling_db=-2"])
    assert q["chain"][0]["params"]["ceiling_db"] == -2


@pytest.mark.parametrize("override,message", [
    ("hpf.freq_hz", "override 'hpf.freq_hz': expected SLOT.PARAM=VALUE"),
    ("freq_hz=3", "override 'freq_hz=3': expected SLOT.PARAM=VALUE"),
    ("eq.freq_hz=3", "override 'eq.freq_hz=3': no slot 'eq'; slots: ['hpf', 'gain', 'limiter', 'safety']"),
    ("hpf.freq_hz=3", "override 'hpf.freq_hz=3': chain[0].params.freq_hz: 3 is outside [20, 20000] Hz"),
    ("hpf.freq=300", "override 'hpf.freq=300': chain[0].params.freq: unknown parameter for 'biquad'"),
    ("hpf.type=notch", "override 'hpf.type=notch': chain[0].params.type: 'notch' is not one of"),
    ("gain.bypass=maybe", "override 'gain.bypass=maybe': chain[1].bypass: expected true or false"),
    ("gain.mix=2", "override 'gain.mix=2': chain[1].mix: 2 is outside [0, 1]"),
    ("gain.gain_db=loud", "override 'gain.gain_db=loud': chain[1].params.gain_db: expected a number"),
    ("safety.bypass=true", "override 'safety.bypass=true': chain[3].bypass: the final safety stage cannot"),
    ("gain.mix=nan", "override 'gain.mix=nan': chain[1].mix: nan is not finite"),
    ("gain.gain_db=nan", "override 'gain.gain_db=nan': chain[1].params.gain_db: nan is not finite"),
    ("gain.gain_db=NaN", "override 'gain.gain_db=NaN': chain[1].params.gain_db: nan is not finite"),
    ("gain.gain_db=inf", "override 'gain.gain_db=inf': chain[1].params.gain_db: inf is not finite"),
])
def test_override_errors_name_the_override(override, message):
    with pytest.raises(PresetError) as e:
        apply_overrides(base(), [override])
    assert message in str(e.value)


@pytest.mark.parametrize("digits", [400, 5000])
def test_an_absurdly_long_number_is_a_one_line_error(digits, tmp_path):
    """400 digits overflowed float() (OverflowError), 5000 passed Python's int-parsing limit
    (ValueError): both were tracebacks. The line quotes a short head of the value, not all of it."""
    big = "9" * digits
    with pytest.raises(PresetError) as e:
        apply_overrides(base(), [f"gain.gain_db={big}"])
    assert "gain_db" in str(e.value) and len(str(e.value)) < 300
    path = tmp_path / "big.json"
    path.write_text('{"version": 1, "name": "big", "chain": [{"processor": "gain", "params": {"gain_db": %s}}]}' % big)
    with pytest.raises(PresetError) as e:
        load_preset(path)
    assert "big.json" in str(e.value) and len(str(e.value)) < 300


def test_save_load_round_trip(tmp_path):
    p = apply_overrides(base(), ["hpf.freq_hz=123.5", "gain.mix=0.25"])
    path = save_preset(p, tmp_path / "mine.json")
    assert load_preset(path) == p == load_preset(str(path))
    assert [f.name for f in tmp_path.iterdir()] == ["mine.json"]  # no temp file left behind
    # a chain's own snapshot round-trips too
    c = build_chain(p)
    snap = c.to_preset("snap")
    save_preset(snap, tmp_path / "snap.json")
    again = build_chain(load_preset(tmp_path / "snap.json"))
    assert again.describe() == c.describe()


def test_save_invalid_leaves_existing_file(tmp_path):
    path = tmp_path / "keep.json"
    save_preset(base(), path)
    before = path.read_text()
    bad = base()
    bad["version"] = 9
    with pytest.raises(PresetError):
        save_preset(bad, path)
    assert path.read_text() == before
    assert [f.name for f in tmp_path.iterdir()] == ["keep.json"]


def test_a_command_parameter_is_not_saved_in_a_preset():
    """The meter's "_clear_clip" is a command the panel counts up to clear the clip latch; a saved
    preset held it (and every later load set it)."""
    c = build_chain(validate_preset({"version": 1, "name": "m", "chain": [{"id": "meter", "processor": "meter"}]}))
    c.slot("meter").processor.set_param("_clear_clip", 3)
    params = c.to_preset("m")["chain"][0]["params"]
    assert "_clear_clip" not in params and "rms_window_ms" in params


@pytest.mark.parametrize("typed,value", [("gain.mix=.5", 0.5), ("gain.gain_db=-.5", -0.5), ("gain.gain_db=+5", 5.0),
                                         ("hpf.freq_hz=1_000", 1000.0)])
def test_numbers_as_people_type_them_are_numbers(typed, value):
    """`--set gain.mix=.5` said "'.5' is outside [0, 1]" and "+5" "expected a number, got str"."""
    p = apply_overrides(base(), [typed])
    slot = next(s for s in p["chain"] if s["id"] == typed.split(".")[0])
    key = typed.split(".")[1].split("=")[0]
    assert (slot["mix"] if key == "mix" else slot["params"][key]) == value


# ---------------------------------------------------------------------------- review: presets fixes
def _user_folder(monkeypatch, tmp_path):
    """The user's preset folder, as the panel and the command line find it ($XDG_CONFIG_HOME)."""
    monkeypatch.delenv("RTAUDIO_HOST_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    folder = tmp_path / "xdg" / "rtaudio-host" / "presets"
    folder.mkdir(parents=True)
    return folder


def test_a_preset_as_large_as_a_plugins_state_saves_and_loads_again(tmp_path, monkeypatch):
    """LSP Multisampler x48's state made a 1 MB preset that save_preset wrote and load_preset then
    refused (more than 1 MiB): one limit for both, and a save over it refused, the earlier file kept."""
    import realtime.dsp.presets as presets

    big = base()
    big["description"] = "x" * (3 << 20)  # as a plugin's Turtle state would
    path = save_preset(big, tmp_path / "big.json")
    assert load_preset(path)["description"] == big["description"]
    keep = save_preset(base(), tmp_path / "keep.json")
    before = keep.read_text()
    monkeypatch.setattr(presets, "MAX_PRESET_BYTES", 1 << 20)
    with pytest.raises(PresetError) as e:
        save_preset(big, keep)
    assert "keep.json: not saved" in str(e.value) and str(1 << 20) in str(e.value) and "\n" not in str(e.value)
    assert keep.read_text() == before and sorted(f.name for f in tmp_path.iterdir()) == ["big.json", "keep.json"]


def _switches(params):
    return validate_preset({"version": 1, "name": "t", "chain": [{"processor": "delimiter", "params": params}]})


def test_a_switch_takes_true_and_false():
    """An on/off switch (LV2 toggled ports, delimiter.declip / auto_level) refused JSON true/false and
    `--set x=true` ("True is not one of ['off', 'on']") while 1/on/off passed."""
    from realtime.dsp.processor import Param

    p = _switches({"declip": False, "auto_level": True})
    assert p["chain"][0]["params"] == {"declip": "off", "auto_level": "on"}
    for typed, want in [("true", "on"), ("false", "off"), ("TRUE", "on"), ("yes", "on"), ("No", "off"),
                        ("on", "on"), ("0", "off")]:
        q = apply_overrides(p, [f"delimiter.declip={typed}"])
        assert q["chain"][0]["params"]["declip"] == want, typed
    with pytest.raises(PresetError, match=r"declip: 'maybe' is not one of \['off', 'on'\]"):
        apply_overrides(p, ["delimiter.declip=maybe"])
    # a choice of two that is no switch still wants a name or an index
    mode = Param("mode", "Mode", 0, 1, 0, choices=("poly", "mono"), step=1)
    assert Param("s", "S", 0, 1, 0, choices=("Off", "On"), step=1).choice_of(True) == 1 and not mode.toggle
    with pytest.raises(Exception, match="True is not one of"):
        mode.choice_of(True)
    with pytest.raises(PresetError, match="True is not one of"):
        validate_preset({"version": 1, "name": "t", "chain": [{"processor": "biquad", "params": {"type": True}}]})


def test_an_lv2_toggle_takes_true_and_false():
    from realtime.errors import PluginError
    from realtime.io import lilv

    if not lilv.available():
        pytest.skip("run scripts/setup.sh (liblilv-0-0)")
    slot = {"id": "p", "processor": "lv2", "uri": "http://calf.sourceforge.net/plugins/Compressor"}
    try:
        p = validate_preset({"version": 1, "name": "t", "chain": [{**slot, "params": {"bypass_": True}}]})
    except PresetError as e:
        if "not installed" in str(e) or isinstance(e.__cause__, PluginError):
            pytest.skip("calf-plugins not installed")
        raise
    assert p["chain"][0]["params"]["bypass_"] == "on"
    assert apply_overrides(p, ["p.bypass_=false"])["chain"][0]["params"]["bypass_"] == "off"


def test_user_presets_load_by_name_after_the_builtins(tmp_path, monkeypatch):
    """A preset the panel saved (in its user folder) was "unknown preset" by name on the command line."""
    from realtime.dsp.presets import is_preset_file, resolve_preset, user_preset_dir, user_presets

    folder = _user_folder(monkeypatch, tmp_path)
    assert user_preset_dir() == folder
    mine = base()
    mine["name"] = "mine"
    save_preset(mine, folder / "mine.json")
    theirs = base()
    theirs["name"] = "default"
    save_preset(theirs, folder / "default.json")  # named as a built-in: the built-in wins
    save_preset(mine, folder / "LOUD.JSON")
    assert load_preset("mine") == validate_preset(mine) and load_preset("LOUD")["name"] == "mine"
    assert resolve_preset("mine") == (folder / "mine.json", "user") and is_preset_file("mine")
    assert load_preset("default")["name"] == "default" and resolve_preset("default")[1] == "builtin"
    assert not is_preset_file("default")
    assert [p.name for p in user_presets()] == ["default.json", "LOUD.JSON", "mine.json"]
    with pytest.raises(PresetError) as e:
        load_preset("nope")
    assert f"unknown preset 'nope'; built-in: {builtin_presets()}" in str(e.value) and str(folder) in str(e.value)
    assert "'mine'" in str(e.value)
    monkeypatch.setenv("RTAUDIO_HOST_CONFIG", str(tmp_path / "elsewhere" / "x.ini"))  # beside the panel's ini
    assert user_preset_dir() == tmp_path / "elsewhere" / "presets"


def test_preset_files_are_found_whatever_the_case_of_json_or_their_name(tmp_path, monkeypatch):
    """`--preset X.JSON` (an existing file) said "unknown preset"; so did a file named mine.preset."""
    monkeypatch.chdir(tmp_path)
    _user_folder(monkeypatch, tmp_path)
    save_preset(base(), tmp_path / "X.JSON")
    save_preset(base(), tmp_path / "mypreset.preset")
    assert load_preset("X.JSON")["name"] == "t" and load_preset("mypreset.preset")["name"] == "t"
    with pytest.raises(PresetError, match="file not found"):
        load_preset("Y.JSON")


@pytest.mark.parametrize("path,value,message", [
    ("chain/1/mix", "0.5", "chain[1].mix: expected a number, got str '0.5'"),
    ("chain/1/mix", True, "chain[1].mix: expected a number, got bool True"),
    ("chain/1/mix", float("nan"), "chain[1].mix: nan is not finite"),
    ("version", 2, "version: 2 is not supported: this preset was written by a newer release"),
])
def test_preset_errors_say_what_is_wrong(path, value, message):
    with pytest.raises(PresetError) as e:
        validate_preset(_set(path, value))
    assert message in str(e.value)


def test_a_number_past_pythons_digit_limit_is_too_long_not_a_python_setting():
    with pytest.raises(PresetError) as e:
        parse_preset('{"version": 1, "name": "t", "chain": [{"processor": "gain", "params": {"gain_db": %s}}]}'
                     % ("1" * 5000), source="big.json")
    assert "big.json" in str(e.value) and "too long" in str(e.value)
    assert "set_int_max_str_digits" not in str(e.value)
