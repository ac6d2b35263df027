"""Panel fixes, offscreen (no audio server): meters while stopped, the banner's dismissal, the
meter's clip latch, the on-screen keyboard's buttons and modifiers, the preset shortcuts, the
settings dialog's restarts, MIDI learn on drop-downs and bypass, closing a hung engine process."""
import os
import signal
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import Qt  # noqa: E402
from PyQt6.QtGui import QMouseEvent  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication, QLabel  # noqa: E402

from gui.host import EngineHost  # noqa: E402
from gui.meters import FALL_DB_S, HOLD_S, LevelMeter  # noqa: E402
from gui.settings import Settings  # noqa: E402
from realtime.dsp.presets import load_preset, save_preset  # noqa: E402
from realtime.dsp.processors import create  # noqa: E402

L, R, N = Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton, Qt.MouseButton.NoButton
HOT = {"version": 1, "name": "hot", "chain": [{"id": "gain", "processor": "gain", "params": {"gain_db": 18}},
                                             {"id": "meter", "processor": "meter"},
                                             {"id": "safety", "processor": "safety"}]}


# ---------------------------------------------------------------------------- 1. meters
@pytest.mark.parametrize("rate", [30, 60])
def test_the_hold_line_falls_at_its_rate_whatever_the_redraw_rate(qtbot, rate):
    """It fell FALL_DB_S * 0.05 per redraw: 36 dB/s at 30 Hz, 72 at 60, instead of 24."""
    m = LevelMeter("Out")
    qtbot.addWidget(m)
    t = 0.0
    m.set_levels([1.0, 1.0], [0.1, 0.1], now=t)  # a 0 dBFS peak
    for _ in range(int((HOLD_S + 1.0) * rate)):  # then silence, redrawn at `rate`
        t += 1.0 / rate
        m.set_levels([1e-4, 1e-4], [1e-9, 1e-9], now=t)
    assert m.hold_db[0] == pytest.approx(-FALL_DB_S * (t - HOLD_S), abs=0.01)
    m.fall(now=t + 10.0)  # nothing comes (stopped): it reaches the floor
    assert m.hold_db == [-120.0, -120.0] and m.rms_db == [-120.0, -120.0]


def test_meters_and_readout_bars_fall_to_rest_while_stopped_not_while_running(window, monkeypatch):
    """After Stop no meter block comes: the bars, the peaks and the strips' readout bars froze at
    the last levels played."""
    w = window()
    w._meter_timer.stop()
    gr, peak = w.rack.strips["limiter"].readouts["gr_db"], w.rack.strips["meter"].readouts["peak_l"]
    for m in (w.in_meter, w.out_meter):  # what played last
        m.set_levels([0.5, 0.5], [0.05, 0.05])
    gr.set_value(-6.0)
    peak.set_value(-5.0)
    with monkeypatch.context() as mp:
        mp.setattr(EngineHost, "running", property(lambda self: True))
        w._poll_meters()  # running, no block since the last redraw: nothing to say yet
        assert w.out_meter.rms_db[0] > -14.0 and gr.value == -6.0
    assert not w.host.running
    w._poll_meters()
    for m in (w.in_meter, w.out_meter):
        assert m.rms_db == [-120.0, -120.0] and m.peak_db == [-120.0, -120.0]
    assert gr.value == 0.0 and peak.value == peak.readout.min


# ---------------------------------------------------------------------------- 2. banner
def test_a_dismissed_error_stays_away_until_it_changes_or_the_chain_does(window, monkeypatch):
    """The status poll put processor errors and the engine's error back every second after a
    click had dismissed them."""
    w = window()
    base = w.host.status()
    errs = {"gain": "RuntimeError: boom"}
    monkeypatch.setattr(w.host, "status", lambda: {**base, "error": "device gone", "processor_errors": dict(errs)})
    w._poll_status()
    assert w.banner.isVisible() and "gain failed and is bypassed: RuntimeError: boom" in w.banner.text()
    assert "device gone" in w.banner.text()
    QTest.mouseClick(w.banner, L)
    assert not w.banner.isVisible()
    w._poll_status()
    assert not w.banner.isVisible() and w.errors == []
    errs["gain"] = "RuntimeError: boom again"  # changed: news
    w._poll_status()
    assert w.banner.isVisible() and w.errors == ["gain failed and is bypassed: RuntimeError: boom again"]
    QTest.mouseClick(w.banner, L)
    w.remove_slot("hpf")  # another chain: its errors are news again
    w._poll_status()
    assert w.banner.isVisible() and "device gone" in w.banner.text()


# ---------------------------------------------------------------------------- 3. clip latch
def test_the_meters_clip_latch_clears_when_its_command_parameter_changes():
    m = create("meter", _clear_clip=7)  # a preset holding any value: nothing happens on its own
    m.prepare(48000, 128, 2)
    hot, quiet = np.full((128, 2), 1.5, np.float32), np.zeros((128, 2), np.float32)
    m.process(hot)
    m.process(quiet)
    assert list(m.readings[:, 2]) == [1.0, 1.0]  # latched
    m.set_param("_clear_clip", 8)
    m.process(quiet)
    assert list(m.readings[:, 2]) == [0.0, 0.0] and list(m.clip_count) == [0, 0]
    m.process(hot)
    assert list(m.readings[:, 2]) == [1.0, 1.0]  # and latches again


def test_clicking_a_clip_readout_clears_the_latch_in_the_engine(window):
    """"Clip L: CLIP" stayed for good: nothing called the processor's clear_clip."""
    w = window(HOT)
    strip = w.rack.strips["meter"]
    assert "_clear_clip" not in strip.controls  # a command, not a knob
    meter = w.host.chain.slot("meter").processor
    meter.prepare(48000, 128, 2)  # as a start does (the engine is stopped here)
    meter.process(np.full((128, 2), 1.5, np.float32))
    for r in ("clip_l", "clip_r"):
        strip.readouts[r].set_value(1.0)  # what the redraw showed
    assert "CLIP" in strip.readouts["clip_l"].text()
    QTest.mouseClick(strip.readouts["clip_l"], L)
    QTest.mouseClick(strip.readouts["clip_r"], L)  # a second click before the engine's next block
    assert "ok" in strip.readouts["clip_l"].text() and "ok" in strip.readouts["clip_r"].text()
    assert not w.modified and w.errors == []  # not a change to the preset
    w.host.apply_pending_control()  # the control ring, as the DSP thread takes it
    meter.process(np.zeros((128, 2), np.float32))
    assert list(meter.readings[:, 2]) == [0.0, 0.0]


# ---------------------------------------------------------------------------- 4. keyboard
def _mouse(k, kind, note, button, buttons):
    c = k.key_center(note)
    QApplication.sendEvent(k, QMouseEvent(kind, c, k.mapToGlobal(c), button, buttons, Qt.KeyboardModifier.NoModifier))


def test_a_second_mouse_button_leaves_no_stuck_note(keyboard):
    k, T = keyboard, QMouseEvent.Type
    _mouse(k, T.MouseButtonPress, 60, L, L)
    _mouse(k, T.MouseButtonPress, 64, R, L | R)  # right button too: no note
    _mouse(k, T.MouseMove, 65, N, L | R)  # a glide with the left one
    _mouse(k, T.MouseButtonRelease, 65, R, L)
    _mouse(k, T.MouseButtonRelease, 65, L, N)
    assert k.events == [("on", 60), ("off", 60), ("on", 65), ("off", 65)] and not k.down


def test_a_second_left_press_releases_the_first_note(keyboard):
    k, T = keyboard, QMouseEvent.Type
    _mouse(k, T.MouseButtonPress, 60, L, L)
    _mouse(k, T.MouseButtonPress, 64, L, L)  # its release never reached us (e.g. outside the window)
    _mouse(k, T.MouseButtonRelease, 64, L, N)
    assert k.events == [("on", 60), ("off", 60), ("on", 64), ("off", 64)] and not k.down


@pytest.mark.parametrize("mod", [Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.AltModifier,
                                 Qt.KeyboardModifier.MetaModifier])
def test_keys_with_command_modifiers_play_no_note(keyboard, mod):
    QTest.keyClick(keyboard, Qt.Key.Key_S, mod)  # Ctrl+S played D
    assert keyboard.events == []
    QTest.keyClick(keyboard, Qt.Key.Key_S)
    assert keyboard.events == [("on", 62), ("off", 62)]


# ---------------------------------------------------------------------------- 5. shortcuts
def test_ctrl_o_ctrl_s_and_ctrl_shift_s_reach_the_preset_actions(window, qtbot, tmp_path, monkeypatch):
    import gui.preset_io

    w = window()
    mine, other = tmp_path / "mine.json", tmp_path / "other.json"
    save_preset(load_preset("voice"), mine)
    monkeypatch.setattr(gui.preset_io.QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(mine), "")))
    monkeypatch.setattr(gui.preset_io.QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(other), "")))
    w.synth_panel.setVisible(True)
    w.keyboard.setFocus()  # the focus on the keyboard: Ctrl+S played a note there
    QApplication.processEvents()
    ctrl = Qt.KeyboardModifier.ControlModifier
    QTest.keyClick(w.keyboard, Qt.Key.Key_O, ctrl)
    assert w.preset_path == str(mine) and "enhancer" in w.rack.strips
    w.rack.strips["limiter"].controls["ceiling_db"].setValue(-4.0)
    QTest.keyClick(w.keyboard, Qt.Key.Key_S, ctrl)
    saved = {e["id"]: e for e in load_preset(mine)["chain"]}
    assert not w.modified and saved["limiter"]["params"]["ceiling_db"] == -4.0
    QTest.keyClick(w.keyboard, Qt.Key.Key_S, ctrl | Qt.KeyboardModifier.ShiftModifier)
    assert other.exists() and w.preset_path == str(other)
    assert w.keyboard.down == set() and w.errors == []


# ---------------------------------------------------------------------------- 7. settings
def test_settings_restart_the_engine_only_for_new_audio_remembered_once_it_worked(window, monkeypatch):
    """OK with only the MIDI port changed restarted the stream (a dropout); a rate the device
    refused was remembered for the next launch; the MIDI port was not opened after it failed."""
    w = window()
    opened, tried = [], []
    monkeypatch.setattr(w, "_open_midi", opened.append)
    set_config = w.host.set_config
    monkeypatch.setattr(w.host, "set_config", lambda c: (tried.append(c), set_config(c)))
    w.apply_settings(replace(w.host.config), "port A")
    assert tried == [] and opened == ["port A"] and w.settings.midi_port == "port A"

    def refuse(c):
        raise RuntimeError("44100 Hz: Invalid sample rate")

    monkeypatch.setattr(w.host, "set_config", refuse)
    w._guard(w.apply_settings, replace(w.host.config, samplerate=44100), "port B")
    assert "Invalid sample rate" in w.banner.text() and opened[-1] == "port B"
    assert Settings(w.settings.path).engine_config().samplerate == 48000
    monkeypatch.setattr(w.host, "set_config", set_config)
    w.apply_settings(replace(w.host.config, samplerate=96000), "port B")
    assert w.host.config.samplerate == 96000 and Settings(w.settings.path).engine_config().samplerate == 96000


def test_the_dialog_untouched_gives_the_config_the_engine_runs(qtbot, monkeypatch):
    import gui.settings as gui_settings
    from realtime.engine.config import EngineConfig

    monkeypatch.setattr(gui_settings, "audio_devices", lambda: dict.fromkeys(("input", "output"), ["dev"]))
    c = EngineConfig(input_device="dev", prefill_blocks=3, ring_blocks=16)
    d = gui_settings.SettingsDialog(c, "(none)")
    qtbot.addWidget(d)
    assert d.engine_config() == c  # equal: OK restarts nothing


# ---------------------------------------------------------------------------- 8. MIDI learn
def test_drop_downs_and_bypass_learn_show_and_forget_mappings_like_knobs(window):
    p = load_preset("default")
    p["midi"] = [{"cc": 20, "channel": None, "target": "limiter.bypass"},
                 {"cc": 21, "channel": None, "target": "hpf.type"}]
    w = window(p)
    hpf, lim = w.rack.strips["hpf"], w.rack.strips["limiter"]
    combo_tag = w.rack.learnable("hpf.type")
    assert combo_tag is hpf.tags["type"] and w.rack.learnable("limiter.bypass") is lim.bypass_tag
    assert combo_tag.mapping == "CC 21" and lim.bypass.text() == "Bypass · CC 20"
    assert w.rack.strips["safety"].bypass_tag is None  # always on: nothing to map
    for widget in (hpf.controls["type"], lim.bypass):
        assert widget.contextMenuPolicy() == Qt.ContextMenuPolicy.CustomContextMenu
    learn, forget = combo_tag.context_menu().actions()
    assert (learn.text(), forget.text()) == ("MIDI learn", "Forget CC 21")
    forget.trigger()
    assert w.host.midi_map == {(20, None): "limiter.bypass"} and combo_tag.mapping == ""
    combo_tag.context_menu().actions()[0].trigger()  # MIDI learn
    label = hpf.controls["type"].parent().findChild(QLabel)
    assert w.host.cc_map.learning == "hpf.type" and label.text() == "Type · learn…"
    w.host.midi_in(0xB0, 22, 127)  # the controller moved next is mapped, and moves the drop-down
    QApplication.processEvents()
    assert combo_tag.mapping == "CC 22 ch1" and label.text() == "Type · CC 22 ch1"
    assert hpf.controls["type"].currentIndex() == len(hpf.controls["type"]) - 1
    w.host.midi_in(0xB0, 20, 127)
    QApplication.processEvents()
    assert lim.bypass.isChecked() and w.host.chain.slot("limiter").bypass


# ---------------------------------------------------------------------------- 9. closing a hung engine
def test_closing_a_hung_engine_process_waits_briefly_then_kills_it(monkeypatch):
    """An engine process that stopped answering held the window's close for 20 s (10 s for the
    answer, 10 for the exit). The waits before the kill add up to about a second now."""
    from multiprocessing.connection import Connection

    from gui.remote import RemoteEngineHost
    from realtime.engine.config import EngineConfig

    h = RemoteEngineHost(load_preset("default"), EngineConfig())
    proc, waits = h._proc, []
    for cls, name in ((Connection, "poll"), (type(proc), "join")):
        orig = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda self, timeout=None, o=orig, n=name: (waits.append((n, timeout)),
                                                                                     o(self, timeout))[1])
    kill = proc.kill
    monkeypatch.setattr(proc, "kill", lambda: (waits.append(("kill", None)), kill()))
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        h.close()
    finally:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
    assert ("kill", None) in waits and not proc.is_alive()
    before_kill = waits[:waits.index(("kill", None))]
    assert sum(t for _, t in before_kill) <= 2.0, waits


def test_closing_a_healthy_engine_process_lets_it_close_in_order():
    from gui.remote import RemoteEngineHost
    from realtime.engine.config import EngineConfig

    h = RemoteEngineHost(load_preset("default"), EngineConfig())
    proc = h._proc
    h.close()
    assert proc.exitcode == 0  # exited by itself: not killed
