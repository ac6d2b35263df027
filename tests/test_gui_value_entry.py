"""The rack's controls as a DAW user expects them, offscreen: a value typed into a knob (Enter or
the context menu; units, clamping, choices by name; one undo step), "Reset to preset" beside
"Reset to default", a bypassed strip that looks bypassed, the synth's instrument picker that the
wheel leaves alone in passing, and a plugin with hundreds of controls laid out in bounded rows."""
import types

import numpy as np
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import QEvent, Qt  # noqa: E402
from PyQt6.QtGui import QFocusEvent  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication, QLineEdit  # noqa: E402

from gui.knob import Knob, parse_entry  # noqa: E402
from gui.rack import MAX_COLUMNS, MIX_PARAM, VISIBLE_ROWS, SlotStrip  # noqa: E402
from realtime.dsp.presets import load_preset  # noqa: E402
from realtime.dsp.processor import Param  # noqa: E402

from .qt_panel import wheel  # noqa: E402

GAIN = Param("gain_db", "Gain", -60.0, 24.0, 0.0, unit="dB")
FREQ = Param("freq_hz", "Frequency", 20.0, 20000.0, 1000.0, unit="Hz", scale="log")
TIME = Param("release_ms", "Release", 1.0, 5000.0, 100.0, unit="ms", scale="log")
VOICES = Param("voices", "Voices", 1, 16, 8, step=1)
MODE = Param("mode", "Mode", 0, 2, 0, choices=("Clean", "Warm", "Hot"), step=1)


def menu_actions(knob):
    return {a.text(): a for a in knob.context_menu().actions() if a.text()}


def type_into(knob, text, key=Qt.Key.Key_Return):
    """Open the knob's entry with Enter, type ``text`` over the selection, end with ``key``."""
    QTest.keyClick(knob, Qt.Key.Key_Return)
    ed = knob.editor
    assert isinstance(ed, QLineEdit) and ed.isVisible()
    QTest.keyClicks(ed, text)
    if key is not None:
        QTest.keyClick(ed, key)
    return ed


def leave(editor):
    """The focus goes elsewhere (a click on another control)."""
    QApplication.sendEvent(editor, QFocusEvent(QEvent.Type.FocusOut, Qt.FocusReason.MouseFocusReason))


def brightness(widget) -> float:
    img = widget.grab().toImage().convertToFormat(widget.grab().toImage().Format.Format_RGB32)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    a = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())[:, : 4 * img.width()]
    return float(a.reshape(img.height(), img.width(), 4)[..., :3].mean())


# ---------------------------------------------------------------------------- 1. typing a value
@pytest.mark.parametrize("param, text, value", [
    (GAIN, "-6", -6.0), (GAIN, "-6 dB", -6.0), (GAIN, " -6db ", -6.0), (GAIN, "+3.5", 3.5), (GAIN, "-2,5", -2.5),
    (GAIN, "\u22126 dB", -6.0),  # a typographic minus
    (GAIN, "100", 24.0), (GAIN, "-inf", -60.0),  # beyond the range: clamped
    (FREQ, "1k", 1000.0), (FREQ, "1.5 kHz", 1500.0), (FREQ, "1.5khz", 1500.0), (FREQ, "250 Hz", 250.0),
    (FREQ, "5", 20.0), (FREQ, "0", 20.0),  # a log knob's bottom, not a log of 0
    (TIME, "250 ms", 250.0), (TIME, "0.25 s", 250.0), (TIME, "2s", 2000.0),
    (MIX_PARAM, "50 %", 50.0), (MIX_PARAM, "50%", 50.0), (MIX_PARAM, "50", 50.0),
    (VOICES, "3.6", 4.0), (VOICES, "40", 16.0),
    (MODE, "warm", 1.0), (MODE, "Hot", 2.0), (MODE, "1", 1.0),  # a choice by name or index
])
def test_what_a_user_types_parses_to_the_value_meant(param, text, value):
    assert parse_entry(param, text) == pytest.approx(value)


@pytest.mark.parametrize("param, text", [(GAIN, "loud"), (GAIN, ""), (GAIN, "6 ms"), (GAIN, "1..2"),
                                         (FREQ, "1.5 MHz"), (TIME, "nan"), (MODE, "Cold")])
def test_text_that_is_no_value_is_a_short_message(param, text):
    with pytest.raises(ValueError, match=param.name) as err:
        parse_entry(param, text)
    assert "\n" not in str(err.value) and len(str(err.value)) < 100


def test_enter_types_a_value_that_is_one_undo_step_named_by_the_control(window):
    w = window()
    knob = w.rack.strips["gain"].controls["gain_db"]
    QTest.keyClick(knob, Qt.Key.Key_Return)
    ed = knob.editor
    assert ed is not None and ed.isVisible() and ed.text() == "0 dB" and ed.selectedText() == "0 dB"
    QTest.keyClicks(ed, "-6 dB")
    QTest.keyClick(ed, Qt.Key.Key_Return)
    assert knob.editor is None and not ed.isVisible()
    assert knob.value() == -6.0 and w.host.value("gain", "gain_db") == -6.0 and w.modified
    assert w.undo_stack.count() == 1 and w.undo_action.text() == "Undo Gain on gain"
    type_into(knob, "-12")  # a second typed value right after: a step of its own
    assert w.host.value("gain", "gain_db") == -12.0 and w.undo_stack.count() == 2
    w.undo_action.trigger()
    assert knob.value() == -6.0 and w.host.value("gain", "gain_db") == -6.0
    w.undo_action.trigger()
    assert knob.value() == 0.0 and not w.modified


def test_the_context_menu_types_a_value_too_and_escape_cancels(window):
    w = window()
    knob = w.rack.strips["hpf"].controls["freq_hz"]
    menu_actions(knob)["Type a value…"].trigger()
    assert knob.editor is not None and knob.editor.text() == "40 Hz"
    QTest.keyClicks(knob.editor, "1.5 kHz")
    QTest.keyClick(knob.editor, Qt.Key.Key_Escape)
    assert knob.editor is None and knob.value() == 40.0 and w.undo_stack.count() == 0
    menu_actions(knob)["Type a value…"].trigger()
    QTest.keyClicks(knob.editor, "1.5 kHz")
    leave(knob.editor)  # leaving the entry applies it
    assert knob.editor is None and w.host.value("hpf", "freq_hz") == 1500.0 and w.undo_stack.count() == 1


def test_out_of_range_is_clamped_and_an_untouched_entry_changes_nothing(window):
    w = window()
    knob = w.rack.strips["gain"].controls["gain_db"]
    type_into(knob, "+99 dB")
    assert w.host.value("gain", "gain_db") == 24.0
    knob.setValue(1.23456)  # shown rounded ("1.23 dB"): Enter on the text as shown keeps the exact value
    n = w.undo_stack.count()
    QTest.keyClick(knob, Qt.Key.Key_Return)
    QTest.keyClick(knob.editor, Qt.Key.Key_Return)
    assert knob.editor is None and knob.value() == 1.23456 and w.undo_stack.count() == n


def test_unparseable_text_changes_nothing_and_says_why(window):
    w = window()
    knob = w.rack.strips["gain"].controls["gain_db"]
    ed = type_into(knob, "loud")
    assert knob.editor is ed and ed.isVisible()  # Enter: the entry stays open to put it right
    assert "loud" in knob.entry_error and "Gain" in ed.toolTip() and ed.selectedText() == "loud"
    assert knob.value() == 0.0 and w.host.value("gain", "gain_db") == 0.0 and w.undo_stack.count() == 0
    QTest.keyClicks(ed, "-3")  # put right: applied
    QTest.keyClick(ed, Qt.Key.Key_Return)
    assert knob.editor is None and knob.value() == -3.0 and knob.entry_error == ""
    ed = type_into(knob, "6 ms", key=None)
    leave(ed)  # left with text that is no value: closed, nothing changed, the reason kept
    assert knob.editor is None and knob.value() == -3.0 and "6 ms" in knob.entry_error
    assert w.undo_stack.count() == 1


def test_a_stepped_knob_and_a_choice_knob_take_names_and_round(qtbot):
    k = Knob(MODE)
    qtbot.addWidget(k)
    k.show()
    with qtbot.waitSignal(k.gestureEnded):
        type_into(k, "hot")
    assert k.value() == 2.0 and k.text() == "Hot"
    v = Knob(VOICES)
    qtbot.addWidget(v)
    v.show()
    type_into(v, "11.4")
    assert v.value() == 11.0


# ---------------------------------------------------------------------------- 2. reset to the preset's value
def test_reset_to_preset_beside_reset_to_default(window):
    """The default preset's high-pass sits at 40 Hz, its descriptor default is 1 kHz."""
    w = window()
    knob = w.rack.strips["hpf"].controls["freq_hz"]
    assert knob.preset_value == 40.0
    acts = menu_actions(knob)
    assert "Reset to default (1.00 kHz)" in acts and "Reset to preset (40 Hz)" in acts
    gain = w.rack.strips["gain"].controls["gain_db"]  # the preset holds the default: one reset only
    assert not [t for t in menu_actions(gain) if t.startswith("Reset to preset")]
    assert "Reset to default (0 dB)" in menu_actions(gain)
    knob.setValue(2000.0)
    knob.gestureEnded.emit()
    acts["Reset to preset (40 Hz)"].trigger()
    assert knob.value() == 40.0 and w.host.value("hpf", "freq_hz") == 40.0
    assert w.undo_stack.count() == 2
    menu_actions(knob)["Reset to default (1.00 kHz)"].trigger()
    assert w.host.value("hpf", "freq_hz") == 1000.0 and w.undo_stack.count() == 3


def test_the_preset_values_survive_a_structural_change_and_follow_mark_preset(window):
    p = load_preset("default")
    p["chain"][1]["params"]["gain_db"] = -6.0
    p["chain"][1]["mix"] = 0.5
    w = window(p)
    strip = w.rack.strips["gain"]
    assert strip.controls["gain_db"].preset_value == -6.0 and strip.mix_knob.preset_value == 50.0
    assert "Reset to preset (50 %)" in menu_actions(strip.mix_knob)
    strip.controls["gain_db"].setValue(3.0)
    w.add_slot("gain")  # a structural change: the strips are new, the preset is the same
    knob = w.rack.strips["gain"].controls["gain_db"]
    assert knob.value() == 3.0 and knob.preset_value == -6.0
    assert w.rack.strips["gain2"].controls["gain_db"].preset_value == 0.0  # in no preset: its default
    w.rack.mark_preset()  # as the window does once the preset is saved (see the next test)
    assert knob.preset_value == 3.0 and "Reset to preset (3 dB)" in menu_actions(knob)


def test_saving_and_loading_a_preset_moves_the_preset_values(window, tmp_path):
    w = window()
    knob = w.rack.strips["gain"].controls["gain_db"]
    knob.setValue(-9.0)
    w.save_preset(str(tmp_path / "mine.json"))
    assert w.rack.strips["gain"].controls["gain_db"].preset_value == -9.0
    p = load_preset("default")
    p["chain"][1]["params"]["gain_db"] = -4.0
    w.apply_preset(p, None)
    assert w.rack.strips["gain"].controls["gain_db"].preset_value == -4.0


# ---------------------------------------------------------------------------- 3. a bypassed slot looks bypassed
def test_a_bypassed_strip_says_so_and_draws_its_controls_faded(window, artifacts_dir):
    import os

    w = window()
    w.resize(1280, 720)
    strip = w.rack.strips["limiter"]
    QApplication.processEvents()
    before, width = brightness(strip), w.rack.strips["gain"].width()
    tag = strip.bypassed_tag
    assert not strip.bypassed and not tag.isVisibleTo(strip) and not any(k.dimmed for k in strip.knobs())
    QTest.mouseClick(strip.bypass, Qt.MouseButton.LeftButton)
    QApplication.processEvents()
    assert strip.bypassed and tag.isVisibleTo(strip) and tag.text() == "BYPASSED"
    assert all(k.dimmed for k in strip.knobs()) and all(getattr(r, "dimmed", True) for r in strip.readouts.values())
    after = brightness(strip)
    assert abs(after - before) > 2.0  # the strip's pixels changed visibly, not only a flag
    w.grab().save(os.path.join(artifacts_dir, "gui_bypassed_strip.png"))
    w.undo_action.trigger()  # undo moves the button: the look follows
    assert not strip.bypassed and not tag.isVisibleTo(strip) and not any(k.dimmed for k in strip.knobs())
    strip.show("bypass", 1.0, "bypass")  # a mapped controller's change: shown without re-sending
    assert strip.bypassed and all(k.dimmed for k in strip.knobs())
    hpf = w.rack.strips["hpf"]
    hpf.bypass.setChecked(True)
    assert hpf.controls["type"].parentWidget().graphicsEffect() is not None  # a drop-down fades too
    QTest.mouseClick(w.rack.strips["gain"].bypass, Qt.MouseButton.LeftButton)
    QApplication.processEvents()
    assert w.rack.strips["gain"].width() == width  # the tag's room was kept: the rack does not jump


def test_a_preset_with_a_bypassed_slot_opens_drawn_bypassed(window):
    p = load_preset("default")
    p["chain"][1]["bypass"] = True
    w = window(p)
    assert w.rack.strips["gain"].bypassed and w.rack.strips["gain"].controls["gain_db"].dimmed
    assert not w.rack.strips["hpf"].bypassed and not w.rack.strips["safety"].bypassed


# ---------------------------------------------------------------------------- 4. the instrument picker and the wheel
def test_the_wheel_over_the_instrument_picker_leaves_it_unless_it_has_the_focus(window):
    w = window()
    w.add_slot("synth")
    sid, pid = w.synth_panel.target
    before = w.instrument.currentIndex()
    w.rack.setFocus()
    QApplication.processEvents()
    for n in (-1, -1, 1, -1):  # down, down, up, down: two items on, had it moved
        wheel(w.instrument, n)
    assert w.instrument.currentIndex() == before and w.host.value(sid, pid) == before
    assert not w.instrument.hasFocus() and w.undo_stack.count() == 1  # the add only
    w.instrument.setFocus()  # clicked or tabbed to: the wheel is the user's way to change it
    QApplication.processEvents()
    if w.instrument.hasFocus():
        wheel(w.instrument, -1 if before == 0 else 1)  # down: the next one
        assert w.instrument.currentIndex() != before


# ---------------------------------------------------------------------------- 5. hundreds of controls
def _many_params_slot(n: int):
    params = tuple(Param(f"p{i}", f"Band {i}", -24.0, 24.0, 0.0, unit="dB") for i in range(n))
    proc = types.SimpleNamespace(params=params, readouts=(), latency=0, get_param=lambda pid: 0.0)
    return types.SimpleNamespace(id="big", kind="big", processor=proc, bypass=False, mix=1.0)


@pytest.mark.parametrize("n", [30, 300])
def test_a_strip_with_many_controls_wraps_into_bounded_rows(qtbot, n):
    strip = SlotStrip(_many_params_slot(n), final=False)
    qtbot.addWidget(strip)
    strip.setVisible(True)  # (SlotStrip.show shows a value)
    knobs = [strip.controls[f"p{i}"] for i in range(n)]
    assert len(knobs) == n and strip.mix_knob is not None
    lefts = sorted({k.mapTo(strip, k.rect().topLeft()).x() for k in knobs})
    assert len(lefts) <= MAX_COLUMNS
    assert strip.sizeHint().width() <= MAX_COLUMNS * 90 + 60  # not thousands of pixels wide
    if n > VISIBLE_ROWS * MAX_COLUMNS:  # beyond a few rows the knobs scroll inside the strip, which stays short
        assert strip.knob_area is not None and strip.sizeHint().height() < 700
        assert strip.knob_area.verticalScrollBar().maximum() > 0


def test_lsp_parametric_eq_x16_is_no_5000_px_strip(window):
    from realtime.io import lv2_scan

    uri = "http://lsp-plug.in/plugins/lv2/para_equalizer_x16_lr"
    if uri not in lv2_scan.scan().plugins:
        pytest.skip("LSP plugins not installed")
    w = window()
    w.resize(1280, 720)
    sid = w.add_slot("lv2", uri)
    strip = w.rack.strips[sid]
    assert len(strip.knobs()) > 100
    assert strip.sizeHint().width() <= MAX_COLUMNS * 90 + 120 and strip.knob_area is not None
    assert strip.height() <= w.rack.viewport().height()  # the rack stays one row: no vertical scrolling
