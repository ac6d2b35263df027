"""Knob panel widgets and window logic, offscreen (no audio server needed)."""
import json
import os

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import QPointF, Qt  # noqa: E402
from PyQt6.QtGui import QMouseEvent  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication, QComboBox, QLabel, QToolButton  # noqa: E402

from gui.host import EngineHost  # noqa: E402
from gui.keyboard import PianoKeyboard  # noqa: E402
from gui.knob import DRAG_PIXELS, Knob  # noqa: E402
from gui.meters import LevelMeter  # noqa: E402
from gui.rack import MIX_PARAM  # noqa: E402
from gui.settings import Settings, config_path  # noqa: E402
from realtime.dsp.presets import build_chain, load_preset  # noqa: E402
from realtime.dsp.processor import Param  # noqa: E402
from realtime.dsp.processors import available_kinds, create  # noqa: E402
from realtime.engine.config import EngineConfig  # noqa: E402
from realtime.errors import PresetError  # noqa: E402

from .qt_panel import wheel  # noqa: E402

GAIN = Param("gain_db", "Gain", -60.0, 24.0, 0.0, unit="dB")
FREQ = Param("freq_hz", "Frequency", 20.0, 20000.0, 1000.0, unit="Hz", scale="log")
VOICES = Param("voices", "Voices", 1, 16, 8, step=1)


def drag(w, dy, mods=Qt.KeyboardModifier.NoModifier):
    c = QPointF(w.width() / 2, w.height() / 2)
    L, N = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    QApplication.sendEvent(w, QMouseEvent(QMouseEvent.Type.MouseButtonPress, c, w.mapToGlobal(c), L, L, mods))
    end = c + QPointF(0, dy)
    QApplication.sendEvent(w, QMouseEvent(QMouseEvent.Type.MouseMove, end, w.mapToGlobal(end), N, L, mods))
    QApplication.sendEvent(w, QMouseEvent(QMouseEvent.Type.MouseButtonRelease, end, w.mapToGlobal(end), L, N, mods))


# ---------------------------------------------------------------------------- knob
def test_knob_shows_value_unit_and_resets_on_double_click(qtbot):
    k = Knob(GAIN, 6.0)
    qtbot.addWidget(k)
    k.show()
    assert k.text() == "6 dB"
    assert "Gain" in k.toolTip() and "-60 dB" in k.toolTip() and "MIDI learn" in k.toolTip()
    with qtbot.waitSignal(k.valueChanged) as sig:
        QTest.mouseDClick(k, Qt.MouseButton.LeftButton)
    assert k.value() == 0.0 and sig.args == [0.0]


def test_knob_wheel_and_drag_with_fine_modifier(qtbot):
    k = Knob(GAIN, 0.0)
    qtbot.addWidget(k)
    k.show()
    span = GAIN.max - GAIN.min
    wheel(k, 1)
    coarse = k.value()
    assert coarse == pytest.approx(0.01 * span)
    k.setValue(0.0)
    wheel(k, 1, Qt.KeyboardModifier.ShiftModifier)
    assert k.value() == pytest.approx(0.001 * span)  # 10x finer
    k.setValue(0.0)
    drag(k, -DRAG_PIXELS / 4)  # a quarter of the full drag distance upwards
    assert k.value() == pytest.approx(0.25 * span, abs=1e-9)
    k.setValue(0.0)
    drag(k, -DRAG_PIXELS / 4, Qt.KeyboardModifier.ShiftModifier)
    assert k.value() == pytest.approx(0.025 * span, abs=1e-9)
    drag(k, 10 * DRAG_PIXELS)  # far past the end: clamped
    assert k.value() == GAIN.min


def test_knob_keyboard_focus_arrows_and_log_taper(qtbot):
    k = Knob(FREQ)
    qtbot.addWidget(k)
    k.show()
    assert k.focusPolicy() == Qt.FocusPolicy.StrongFocus
    k.setFocus()
    QTest.keyClick(k, Qt.Key.Key_Up)
    # log taper: one step multiplies the frequency by the same ratio everywhere
    assert k.value() == pytest.approx(1000.0 * 1000.0 ** 0.01, rel=1e-9)
    QTest.keyClick(k, Qt.Key.Key_End)
    assert k.value() == FREQ.max and k.text() == "20.00 kHz"
    QTest.keyClick(k, Qt.Key.Key_Home)
    assert k.value() == FREQ.min


def test_stepped_knob_moves_one_step_per_notch(qtbot):
    k = Knob(VOICES)
    qtbot.addWidget(k)
    wheel(k, 1)
    assert k.value() == 9
    wheel(k, -3)
    assert k.value() == 6
    drag(k, -DRAG_PIXELS)
    assert k.value() == 16


def test_knob_context_menu_offers_learn_and_forget(qtbot):
    k = Knob(GAIN)
    qtbot.addWidget(k)
    menu = k.context_menu()
    texts = [a.text() for a in menu.actions()]
    assert texts[0] == "MIDI learn" and not menu.actions()[1].isEnabled()
    with qtbot.waitSignal(k.learnRequested):
        menu.actions()[0].trigger()


# ---------------------------------------------------------------------------- rack
def test_a_control_exists_for_every_descriptor_of_every_processor(window):
    """Generated from the descriptors: every available kind, neural ones included (their models
    are committed: each must load), gets one control per Param without any GUI code of its own."""
    kinds = available_kinds()
    assert {"enhancer", "delimiter", "synth"} <= set(kinds)
    for k in kinds:
        create(k)  # raises (failing the test) if a processor or its model cannot load
    preset = {"version": 1, "name": "all", "chain": [{"processor": k} for k in kinds if k != "safety"]}
    w = window(preset)
    strips = w.rack.strips
    assert list(strips) == [s.id for s in w.host.chain.slots]
    for slot in w.host.chain.slots:
        strip = strips[slot.id]
        for d in slot.processor.params:
            if d.id.startswith("_"):  # a command the panel sends itself (the meter's "_clear_clip"): no control
                assert d.id not in strip.controls
                continue
            ctl = strip.controls[d.id]
            if d.choices:
                assert isinstance(ctl, QComboBox) and [ctl.itemText(i) for i in range(ctl.count())] == list(d.choices)
            else:
                assert isinstance(ctl, Knob) and ctl.param is d
                assert ctl.value() == pytest.approx(slot.processor.get_param(d.id))
        final = slot is w.host.chain.slots[-1]
        assert (strip.mix_knob is None) == final and strip.bypass.isEnabled() != final
        if not final:
            assert strip.mix_knob.param is MIX_PARAM and strip.mix_knob.value() == 100.0


def test_knob_moves_reach_the_chain_and_mark_the_preset_modified(window):
    w = window()
    assert not w.modified and not w.isWindowModified()
    knob = w.rack.strips["gain"].controls["gain_db"]
    knob.setValue(-12.0)
    assert w.host.chain.slot("gain").processor.get_param("gain_db") == -12.0
    assert w.modified and w.isWindowModified() and w.windowTitle().endswith("default[*]")
    w.rack.strips["hpf"].controls["type"].setCurrentIndex(1)  # lowpass
    assert w.host.value("hpf", "type") == 1.0
    w.rack.strips["gain"].bypass.setChecked(True)
    assert w.host.chain.slot("gain").bypass
    w.rack.strips["gain"].mix_knob.setValue(25.0)
    assert w.host.chain.slot("gain").mix == 0.25


def test_add_remove_reorder_slots_keeps_safety_last(window):
    w = window()
    w.rack.strips["gain"].controls["gain_db"].setValue(-6.0)
    sid = w.add_slot("gain")
    assert sid == "gain2"
    ids = [s.id for s in w.host.chain.slots]
    assert ids == ["hpf", "gain", "limiter", "meter", "gain2", "safety"]
    w.move_slot("gain2", -10)  # clamps at the front
    assert [s.id for s in w.host.chain.slots][0] == "gain2"
    QTest.mouseClick(w.rack.strips["gain2"].findChild(QToolButton, "move+1"), Qt.MouseButton.LeftButton)
    assert [s.id for s in w.host.chain.slots][:2] == ["hpf", "gain2"]
    QTest.mouseClick(w.rack.strips["limiter"].findChild(QToolButton, "remove"), Qt.MouseButton.LeftButton)
    assert [s.id for s in w.host.chain.slots] == ["hpf", "gain2", "gain", "meter", "safety"]
    assert w.host.value("gain", "gain_db") == -6.0  # the same processors, settings kept
    assert list(w.rack.strips) == ["hpf", "gain2", "gain", "meter", "safety"]
    assert w.rack.strips["safety"].findChild(QToolButton, "remove") is None
    with pytest.raises(ValueError):
        w.host.remove_slot("safety")


# ---------------------------------------------------------------------------- presets
def test_preset_round_trip_with_midi_mapping(window, tmp_path):
    w = window()
    w.rack.strips["limiter"].controls["ceiling_db"].setValue(-3.0)
    w.rack.strips["hpf"].controls["type"].setCurrentIndex(1)
    w.rack.strips["meter"].bypass.setChecked(True)
    w.host.midi_in(0xB0 | 2, 74, 64)  # not learning: no mapping
    assert w.host.midi_map == {}
    w.toggle_learn("gain.gain_db")
    assert w.rack.knob("gain.gain_db").learning
    w.host.midi_in(0xB0 | 2, 74, 64)  # the controller that moves next is mapped (channel 3)
    QApplication.processEvents()
    assert w.host.midi_map == {(74, 2): "gain.gain_db"}
    assert w.rack.knob("gain.gain_db").mapping == "CC 74 ch3" and not w.rack.knob("gain.gain_db").learning
    path = tmp_path / "mine.json"
    w.save_preset(str(path))
    assert not w.modified
    saved = json.loads(path.read_text())
    assert saved["name"] == "mine" and saved["midi"] == [{"cc": 74, "channel": 2, "target": "gain.gain_db"}]

    w2 = window("clean")
    w2.load_preset_file(str(path))
    assert not w2.modified and w2.windowTitle() == "rtaudio-host — mine[*]"
    assert w2.host.value("limiter", "ceiling_db") == -3.0 and w2.host.value("hpf", "type") == 1.0
    assert w2.rack.strips["meter"].bypass.isChecked() and w2.host.chain.slot("meter").bypass
    assert w2.rack.strips["limiter"].controls["ceiling_db"].value() == -3.0
    assert w2.rack.knob("gain.gain_db").mapping == "CC 74 ch3"
    # the mapped controller now moves the knob (and through it the chain)
    w2.host.midi_in(0xB0 | 2, 74, 127)
    QApplication.processEvents()
    assert w2.rack.knob("gain.gain_db").value() == 24.0 and w2.host.value("gain", "gain_db") == 24.0
    w2.forget("gain.gain_db")
    assert w2.host.midi_map == {} and w2.modified


def test_a_mapped_controller_is_shown_in_the_window_not_sent_again(window):
    """The host applies a mapped controller on the MIDI thread; the window only shows it."""
    p = load_preset("default")
    p["midi"] = [{"cc": 1, "channel": None, "target": "meter.bypass"}, {"cc": 2, "channel": None, "target": "gain.mix"},
                 {"cc": 3, "channel": None, "target": "hpf.type"}]
    w = window(p)
    before = w.host.rings.pushed()
    for cc, value in ((1, 127), (2, 64), (3, 127)):
        w.host.midi_in(0xB0, cc, value)
    QApplication.processEvents()
    assert w.host.rings.pushed() - before == 3  # one record per controller message: none re-sent by a widget
    assert w.host.chain.slot("meter").bypass and w.rack.strips["meter"].bypass.isChecked()
    assert w.host.chain.slot("gain").mix == pytest.approx(64 / 127)
    assert w.rack.strips["gain"].mix_knob.value() == pytest.approx(100 * 64 / 127)
    top = len(w.host.chain.slot("hpf").processor.params[w.host.chain.slot("hpf").processor.param_index("type")].choices) - 1
    assert w.host.value("hpf", "type") == top and w.rack.strips["hpf"].controls["type"].currentIndex() == top
    assert w.modified


def test_builtin_presets_recall(window):
    w = window()
    for name in ("master", "clean", "default"):
        w.recall_builtin(name)
        assert w.host.to_preset()["chain"] == build_chain(load_preset(name)).to_preset(name)["chain"]
        assert w.preset_box.currentText() == name and not w.modified
        assert list(w.rack.strips) == [s["id"] for s in load_preset(name)["chain"]]


def test_bad_preset_is_shown_in_the_window_and_changes_nothing(window, tmp_path):
    w = window()
    before = w.host.to_preset()
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "name": "x", "chain": [{"processor": "gain", "params": {"gain_db": 99}}]}')
    w._guard(w.load_preset_file, str(bad))
    assert w.banner.isVisible() and "gain_db" in w.banner.text() and "outside" in w.banner.text()
    assert w.host.to_preset() == before
    (tmp_path / "junk.json").write_text("{not json")
    w._guard(w.load_preset_file, str(tmp_path / "junk.json"))
    assert "invalid JSON" in w.banner.text()
    base = {"version": 1, "name": "m", "chain": [{"id": "g", "processor": "gain"}]}
    for midi, msg in (([{"cc": 300, "target": "g.gain_db"}], "midi[0].cc"),
                      ([{"cc": 7, "channel": 16, "target": "g.gain_db"}], "midi[0].channel"),
                      ([{"cc": 7, "target": "g.nope"}], "'nope' is not one of"),
                      ([{"cc": 7, "target": "safety.mix"}], "is not one of"),
                      ([{"cc": 7, "target": "g.gain_db"}, {"cc": 7, "target": "g.mix"}], "mapped twice"),
                      ({"cc": 7}, "expected a list")):
        with pytest.raises(PresetError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            w.host.load_preset({**base, "midi": midi})
    assert w.host.to_preset() == before
    w.clear_errors()
    assert not w.banner.isVisible()


def test_engine_start_failure_is_shown_not_raised(window):
    w = window()
    w.host.set_config(EngineConfig(output_device="no such device", input_device="no such device"))
    w.start_button.setChecked(True)  # as a click would
    assert w.banner.isVisible() and "no such device" in w.banner.text()
    assert not w.host.running and not w.start_button.isChecked()


# ---------------------------------------------------------------------------- synth panel, keyboard
def test_synth_panel_only_with_a_synth_slot(window, artifacts_dir):
    w = window()
    assert w.synth_panel.isHidden()
    w.add_slot("synth")
    assert not w.synth_panel.isHidden()
    d = w.host.chain.slot("synth").processor.params[0]
    assert [w.instrument.itemText(i) for i in range(w.instrument.count())] == list(d.choices)
    w.instrument.setCurrentIndex(1)
    assert w.host.value("synth", d.id) == 1.0
    assert w.rack.strips["synth"].controls[d.id].currentIndex() == 1
    w.remove_slot("meter")
    w.keyboard.press(64)  # shown held in the screenshot
    QApplication.processEvents()
    assert w.grab().save(os.path.join(artifacts_dir, "gui_synth_panel.png"))
    w.keyboard.release_all()


def test_keyboard_mouse_keys_and_octave_shift(qtbot):
    kb = PianoKeyboard(first=48, octaves=2)
    qtbot.addWidget(kb)
    kb.resize(420, 90)
    kb.show()
    got = []
    kb.noteOn.connect(lambda n, v: got.append(("on", n, v)))
    kb.noteOff.connect(lambda n: got.append(("off", n)))
    c = kb.key_center(50).toPoint()  # D3 (white)
    QTest.mousePress(kb, Qt.MouseButton.LeftButton, pos=c)
    QTest.mouseRelease(kb, Qt.MouseButton.LeftButton, pos=c)
    assert [g[:2] for g in got] == [("on", 50), ("off", 50)] and 1 <= got[0][2] <= 127
    assert kb.note_at(*[kb.key_center(49).x(), kb.key_center(49).y()]) == 49  # black key on top
    got.clear()
    kb.setFocus()
    QTest.keyPress(kb, Qt.Key.Key_A)  # C4 at the default octave
    QTest.keyRelease(kb, Qt.Key.Key_A)
    QTest.keyClick(kb, Qt.Key.Key_X)  # octave up
    QTest.keyPress(kb, Qt.Key.Key_W)  # C#5
    QTest.keyClick(kb, Qt.Key.Key_Z)  # octave down while held: the note-off still matches
    QTest.keyRelease(kb, Qt.Key.Key_W)
    assert got == [("on", 60, 100), ("off", 60), ("on", 73, 100), ("off", 73)]
    assert kb.down == set()


def test_level_meter_holds_clips_until_clicked(qtbot):
    m = LevelMeter("Out")
    qtbot.addWidget(m)
    m.set_levels([0.5, 0.1], [0.1, 0.01])
    assert m.peak_db[0] == pytest.approx(-6.02, abs=0.01) and m.rms_db[1] == pytest.approx(-20.0)
    assert m.clipped == [False, False]
    m.set_levels([1.0, 0.1], [0.1, 0.01])
    m.set_levels([0.01, 0.01], [0.0, 0.0])
    assert m.clipped == [True, False] and m.hold_db[0] == pytest.approx(0.0)
    m.set_levels([0.1, 0.1], [0.0, 0.0], clip=(False, True))  # e.g. the safety stage clipped
    assert m.clipped == [True, True]
    QTest.mouseClick(m, Qt.MouseButton.LeftButton)
    assert m.clipped == [False, False]


# ---------------------------------------------------------------------------- settings
def test_settings_remembered_in_the_platform_config_dir(monkeypatch, tmp_path, qapp):
    monkeypatch.delenv("RTAUDIO_HOST_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = config_path()
    assert path == tmp_path / "xdg" / "rtaudio-host" / "rtaudio-host.ini"
    s = Settings()
    s.save_engine_config(EngineConfig(samplerate=44100, blocksize=256, input_device="system", output_device=None,
                                      prefill_blocks=5))
    s.midi_port = "Virtual port"
    s.last_preset = "master"
    again = Settings()
    c = again.engine_config()
    assert (c.samplerate, c.blocksize, c.input_device, c.output_device) == (44100, 256, "system", None)
    assert c.prefill_blocks == 5
    assert again.midi_port == "Virtual port" and again.last_preset == "master"
    assert path.is_file()
    # garbage in the file falls back to defaults
    again.q.setValue("audio/blocksize", "huge")
    again.q.setValue("audio/prefill_blocks", "-3")
    c = Settings().engine_config(EngineConfig(prefill_blocks=3))
    assert c.blocksize == 128 and c.prefill_blocks == 3


def test_window_screenshot(window, artifacts_dir):
    w = window("master")
    w.resize(1180, 560)
    QApplication.processEvents()
    path = os.path.join(artifacts_dir, "gui_main_window_stopped.png")
    assert w.grab().save(path)
    assert os.path.getsize(path) > 10_000


def test_a_processor_whose_model_fails_to_load_is_shown_and_the_chain_stays(window, monkeypatch, tmp_path):
    import realtime.dsp.processors.neural.delimiter as delimiter

    w = window(load_preset("default"))
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    monkeypatch.setattr(delimiter.Delimiter, "default_model", tmp_path / "broken.onnx")
    before = [s.id for s in w.host.chain.slots]
    w._guard(w.add_slot, "delimiter")
    assert w.banner.isVisible() and "corrupt" in w.banner.text()
    assert [s.id for s in w.host.chain.slots] == before


def _toolbar_button(w, text: str):
    from PyQt6.QtWidgets import QToolButton

    (b,) = [b for b in w.findChildren(QToolButton) if b.text() == text]
    return b


def test_save_as_load_and_a_failed_save_through_the_buttons(window, monkeypatch, tmp_path):
    from PyQt6.QtWidgets import QFileDialog

    w = window("default")
    w.host.set_param("gain", "gain_db", -3.0)
    target = tmp_path / "mine"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    _toolbar_button(w, "Save as…").click()
    saved = load_preset(tmp_path / "mine.json")  # ".json" added
    assert {s["id"]: s for s in saved["chain"]}["gain"]["params"]["gain_db"] == -3.0
    w.recall_builtin("clean")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(tmp_path / "mine.json"), ""))
    _toolbar_button(w, "Load…").click()
    assert w.host.value("gain", "gain_db") == -3.0 and w.preset_path == str(tmp_path / "mine.json")
    # "Save" writes to the loaded file; a folder that vanished is an error in the banner, nothing raised
    w.preset_path = str(tmp_path / "gone" / "mine.json")
    _toolbar_button(w, "Save").click()
    assert w.banner.isVisible() and "gone" in w.banner.text()
    assert not (tmp_path / "gone").exists()


def test_lv2_plugins_are_in_the_searchable_add_box_and_their_strip_says_what_they_are(window):
    from gui.add_box import LV2_PREFIX

    w = window("default")
    box = w.add_box
    names = [t for t in box.choices() if t.startswith(LV2_PREFIX)]
    if not names:
        pytest.skip("no LV2 plugins installed (the set-up installs swh-lv2 and mda-lv2)")
    amp = [t for t in names if "Simple amplifier" in t]
    assert amp and "gain" in box.choices()
    # searching: typing part of a name narrows the completer's list to matches, case-insensitively
    box.completer().setCompletionPrefix("simple AMP")
    found = [box.completer().completionModel().index(i, 0).data()
             for i in range(box.completer().completionCount())]
    assert found and all("simple amp" in f.lower() for f in found)
    box.pick(amp[0])
    sid = w.host.chain.slots[-2].id
    assert sid == "simple_amplifier" and w.host.chain.slots[-2].kind == "lv2"
    sub = w.rack.strips[sid].findChild(QLabel, "subtitle").text()
    assert "LV2: Simple amplifier" in sub and "mono in / mono out" in sub and "not hard-RT" in sub
    assert "gain" in w.rack.strips[sid].controls  # its control port is a knob like any other
    assert box.currentIndex() == -1 and box.currentText() == ""
    assert w.host.chain.slot(sid).processor.get_param("gain") == 0.0


# ---------------------------------------------------------------------------- unsaved work, structure
def test_wheel_and_arrow_keys_over_the_preset_picker_and_add_box_change_nothing(window, qtbot):
    """Qt's combo box emits 'activated' for a wheel turned over it and for the arrow keys: one notch
    over the picker loaded another preset (unsaved changes gone, unasked), over the Add box each
    notch added a slot."""
    w = window()
    w.rack.strips["gain"].controls["gain_db"].setValue(-12.0)
    slots = list(w.rack.strips)
    for box in (w.preset_box, w.add_box):
        wheel(box, -1)
        wheel(box, 1)
        box.setFocus()
        QTest.keyClick(box, Qt.Key.Key_Down)
        QApplication.processEvents()
        box.hidePopup()
    assert w.host.name == "default" and w.modified and list(w.rack.strips) == slots
    assert w.host.value("gain", "gain_db") == -12.0
    edit = w.add_box.lineEdit()  # the Add box's search field keeps Home/End for its text
    edit.setFocus()
    QTest.keyClicks(edit, "gain")
    QTest.keyClick(edit, Qt.Key.Key_Home)
    assert edit.cursorPosition() == 0 and not w.add_box.view().isVisible()


def test_loading_over_unsaved_changes_asks_first(window, monkeypatch):
    """A preset picked (or Load…) over unsaved changes: asked, as on close; Cancel keeps them."""
    from PyQt6.QtWidgets import QMessageBox

    w = window()
    w.rack.strips["gain"].controls["gain_db"].setValue(-12.0)
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Cancel)
    w._pick_builtin("clean")
    assert asked and w.host.name == "default" and w.host.value("gain", "gain_db") == -12.0
    assert w.preset_box.currentText() == "default"  # the picker shows what runs again
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Discard)
    w._pick_builtin("clean")
    assert w.host.name == "clean" and not w.modified


def test_save_as_asks_before_replacing_a_file_named_without_its_suffix(window, tmp_path, monkeypatch):
    """The dialog returns 'mine' (typed without .json; it asked nothing: 'mine' does not exist);
    the .json added afterwards replaced mine.json unasked."""
    from PyQt6.QtWidgets import QFileDialog, QMessageBox

    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(load_preset("voice")))
    w = window()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "mine"), ""))
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Cancel)
    w._save_dialog()
    assert load_preset(mine)["name"] == "voice"
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    w._save_dialog()
    assert load_preset(mine)["name"] == "mine" and w.preset_path == str(mine)


def test_a_change_whose_engine_restart_fails_leaves_the_rack_showing_the_engines_chain(window, monkeypatch):
    """The chain changed, then the engine's restart failed (a device unplugged): the rack kept the
    old chain (a new slot never shown, knobs addressing slots that were gone)."""
    from realtime.errors import AudioDeviceError

    w = window()

    def failing_start(self):
        raise AudioDeviceError("no output device 'USB Audio' (unplugged)")

    monkeypatch.setattr(EngineHost, "running", property(lambda self: True))  # playing: a change restarts it
    monkeypatch.setattr(EngineHost, "start", failing_start)
    w._guard(w.add_slot, "gain")
    assert "unplugged" in w.banner.text()
    assert list(w.rack.strips) == [s.id for s in w.host.chain.slots] and "gain2" in w.rack.strips
    w._guard(w.recall_builtin, "clean")
    assert list(w.rack.strips) == [s.id for s in w.host.chain.slots] and w.modified


def test_a_learn_under_way_survives_a_rebuilt_rack_visibly(window):
    """Learning gain, then a slot added: the new knob forgot the learn while the host still
    learned (a second click re-armed it; the next controller moved was mapped unseen)."""
    w = window()
    w.toggle_learn("gain.gain_db")
    w.add_slot("biquad")
    assert w.rack.knob("gain.gain_db").learning
    w.toggle_learn("gain.gain_db")  # the second click cancels
    assert w.host.cc_map.learning is None and not w.rack.knob("gain.gain_db").learning
    w.toggle_learn("gain.gain_db")
    w.remove_slot("gain")  # its slot gone: the learn ends with it
    assert w.host.cc_map.learning is None


def test_a_plugins_bad_output_and_resets_show_on_its_strip_only_once_there_are_some(window):
    """The engine counted the samples a hosted plugin made that were replaced by silence and the
    resets of its instance; the strip never said so."""
    import numpy as np

    from .qt_panel import need_swh_amp

    amp = need_swh_amp()
    p = load_preset("default")
    p["chain"].insert(0, {"id": "amp", "processor": "lv2", "uri": amp, "params": {"gain": 70.0}})
    w = window(p)
    faults = w.rack.strips["amp"].findChild(QLabel, "faults")
    w._poll_status()
    assert not faults.isVisible() and not w.rack.strips["gain"].findChild(QLabel, "faults").isVisible()
    proc = w.host.chain.slot("amp").processor
    proc.prepare(48000, 128, 2)
    proc.process(np.full((128, 2), 10.0, np.float32))  # x 3162: beyond the output limit, zeroed and counted
    assert (proc.bad_output_samples, proc.instance_resets) == (256, 2)  # a mono plugin: an instance per channel
    w._poll_status()  # the status poll, as each second
    assert faults.isVisible() and faults.text() == "⚠ 256 bad samples, 2 resets"
