"""The presets that come with a hosted LV2 plugin (its bundle's pset:Preset resources): listed by
`plugins --presets`, taken by a preset slot's "plugin_preset" and by --set SLOT.plugin_preset=NAME,
and picked from the plugin's strip in the panel (its knobs move, one undo step). Debian's mda-lv2,
installed by the setup script, has them (mda Leslie: Default, Fast, Slow; EPiano: Mellow...)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from realtime.dsp.presets import apply_overrides, build_chain, validate_preset
from realtime.errors import PresetError

from .test_lv2_ports import _need, _private_cache  # noqa: F401 (an autouse fixture: each test's own scan cache)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
LESLIE = "http://drobilla.net/plugins/mda/Leslie"
EPIANO = "http://drobilla.net/plugins/mda/EPiano"


def _slot(**kw):
    return {"version": 1, "name": "p", "chain": [{"id": "les", "processor": "lv2", "uri": LESLIE, **kw}]}


def test_a_slot_starts_from_its_plugins_preset_with_its_own_params_over_it():
    _need(LESLIE)
    p = validate_preset(_slot(plugin_preset="Slow", params={"output": 0.4}))["chain"][0]
    # mda's Leslie.ttl: "Slow" sets hi_depth 0.75, hi_throb 0.57; "mode" by its scale point's name
    assert (p["params"]["hi_depth"], p["params"]["hi_throb"], p["params"]["mode"]) == (0.75, 0.57, "Slow")
    assert p["params"]["output"] == 0.4 and "plugin_preset" not in p  # held as params once read
    chain = build_chain(_slot(plugin_preset="Fast"))
    proc = chain.slot("les").processor
    assert proc.params[proc.param_index("mode")].choices[int(proc.get_param("mode"))] == "Fast"
    # an override applies it over what the slot had, and the overrides after it go over it
    q = apply_overrides(_slot(params={"hi_depth": 0.1, "output": 0.9}), ["les.plugin_preset=Slow", "les.output=0.2"])
    assert (q["chain"][0]["params"]["hi_depth"], q["chain"][0]["params"]["output"]) == (0.75, 0.2)


@pytest.mark.parametrize("value, said", [
    ("Nope", "no preset named 'Nope'; its presets: 'Default', 'Fast', 'Slow'"),
    (3, "expected the name of one of the plugin's presets, got 3"),
])
def test_a_preset_the_plugin_does_not_have_is_one_line_naming_those_it_has(value, said):
    _need(LESLIE)
    with pytest.raises(PresetError, match="^chain\\[0\\]\\.plugin_preset: ") as e:
        validate_preset(_slot(plugin_preset=value))
    assert said in str(e.value)
    with pytest.raises(PresetError, match="only \\['lv2'\\] slots"):
        validate_preset({"version": 1, "name": "p", "chain": [{"id": "g", "processor": "gain", "plugin_preset": "x"}]})


def test_plugins_lists_a_plugins_presets():
    _need(LESLIE, EPIANO)
    r = subprocess.run([sys.executable, "main.py", "plugins", "mda/", "--presets", "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = {p["uri"]: p["presets"] for p in json.loads(r.stdout)["plugins"]}
    assert got[LESLIE] == ["Default", "Fast", "Slow"] and "Mellow" in got[EPIANO]
    r = subprocess.run([sys.executable, "main.py", "plugins", "mda/Leslie", "--presets"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert "    presets: Default, Fast, Slow" in r.stdout.splitlines()


def test_a_preset_picked_on_the_strip_moves_its_knobs_and_the_engine_in_one_undo_step(window):
    pytest.importorskip("PyQt6")
    pytest.importorskip("pytestqt")
    from PyQt6.QtWidgets import QComboBox

    from gui.rack import PLUGIN_PRESETS

    _need(LESLIE)
    w = window()
    sid = w.add_slot("lv2", LESLIE)
    strip = w.rack.strips[sid]
    box = strip.findChild(QComboBox, "plugin_presets")
    assert [box.itemText(i) for i in range(box.count())] == [PLUGIN_PRESETS, "Default", "Fast", "Slow"]
    steps = w.undo_stack.count()
    box.setCurrentIndex(3)
    box.activated.emit(3)  # "Slow", picked from the list
    assert (w.host.value(sid, "hi_depth"), w.host.value(sid, "hi_throb")) == pytest.approx((0.75, 0.57))
    assert strip.controls["hi_depth"].value() == pytest.approx(0.75) and box.currentIndex() == 0
    assert w.undo_stack.count() == steps + 1 and w.undo_action.text() == f"Undo Preset Slow on {sid}"
    box.activated.emit(2)  # "Fast": the mode's drop-down too (the plugin's scale point 1.0 is its third choice)
    assert w.host.value(sid, "mode") == 2.0 and strip.controls["mode"].currentText() == "Fast"
    w.undo_action.trigger()
    w.undo_action.trigger()
    assert (w.host.value(sid, "hi_depth"), w.host.value(sid, "mode")) == pytest.approx((0.6, 1.0))
    assert strip.controls["hi_depth"].value() == pytest.approx(0.6)
    box.activated.emit(1)  # "Default": what the knobs show already, no step
    assert w.undo_stack.index() == steps


def test_a_plugin_preset_is_heard():
    """Not just knobs: mda Leslie's "Fast" rotor against "Slow" changes what comes out."""
    _need(LESLIE)
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)).astype(np.float32)
    outs = []
    for name in ("Slow", "Fast"):
        chain = build_chain(_slot(plugin_preset=name))
        chain.prepare(48000, 512, 2)
        y = np.tile(x[:, None], (1, 2)).copy()
        for i in range(0, len(y), 512):
            chain.process(y[i:i + 512])
        outs.append(y)
    assert np.abs(outs[0] - outs[1]).max() > 0.05


def test_an_override_of_control_values_keeps_the_plugins_saved_state():
    """`--set org.plugin_preset=Clavesque` dropped the slot's saved LV2 state (the preset key and the
    panel kept it): a preset of control values alone leaves it."""
    from realtime.dsp.presets import VERSION

    organ = "http://calf.sourceforge.net/plugins/Organ"
    _need(organ)
    chain = build_chain({"version": VERSION, "name": "t", "chain": [{"id": "org", "processor": "lv2", "uri": organ}]})
    chain.prepare(48000, 128, 2)
    saved = chain.to_preset("t")
    assert "state" in saved["chain"][0]
    out = apply_overrides(saved, ["org.plugin_preset=Clavesque"])["chain"][0]
    assert out["state"] == saved["chain"][0]["state"]
