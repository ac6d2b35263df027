"""The panel, review 49: one Inf or NaN from upstream in the audio tap left the spectrum's input
curve NaN for good. Each test failed before its fix."""
import numpy as np
import pytest

pytest.importorskip("PyQt6")


def test_an_inf_in_the_tap_does_not_leave_the_spectrum_nan_for_good():
    from gui.spectrum import FFT_SIZE, SpectrumAnalyser

    a = SpectrumAnalyser(48000)
    t = np.arange(FFT_SIZE) / 48000
    sine = (0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    frames = np.stack([sine] * 4, 1)
    a.push(frames)
    a.update(now=0.0)
    bad = frames[:128].copy()
    bad[5, 0], bad[6, 1] = np.inf, np.nan  # an upstream client's bad samples in the input
    a.push(bad)
    a.update(now=0.05)
    for i in range(1, 40):  # the bad samples leave the history; the curves must come back
        a.push(frames)
        a.update(now=0.05 + 0.05 * i)
    assert np.isfinite(a.db).all() and np.isfinite(a.peak).all()
    assert a.db[0].max() == pytest.approx(-20.0, abs=0.1)


def test_a_number_readout_shows_a_name_or_choice_with_angle_brackets(qtbot):
    from PyQt6.QtGui import QTextDocument

    from gui.readouts import ReadoutText
    from realtime.dsp.processor import Readout

    def shown(w):
        doc = QTextDocument()
        doc.setHtml(w.text())
        return doc.toPlainText()

    level = ReadoutText(Readout("bal", "L<R", "dB", kind="number"))  # a plugin's control output
    qtbot.addWidget(level)
    level.set_value(3.0)
    assert shown(level) == "L<R 3 dB"
    mode = ReadoutText(Readout("mode", "Mode", kind="text", choices=("<none>", "A&B")))  # LV2 scale points
    qtbot.addWidget(mode)
    mode.set_value(0.0)
    assert shown(mode) == "Mode <none>"
    mode.set_value(1.0)
    assert shown(mode) == "Mode A&B"


def test_each_settings_dialog_goes_once_closed(window, qtbot, monkeypatch):
    from PyQt6.QtCore import QCoreApplication, QEvent

    import gui.settings as gui_settings
    from gui.settings import SettingsDialog

    monkeypatch.setattr(gui_settings, "audio_devices", lambda: dict.fromkeys(("input", "output"), ["dev zero"]))
    monkeypatch.setattr(SettingsDialog, "exec", lambda self: 0)  # opened, then Cancel
    w = window()
    for _ in range(3):
        w.settings_action.trigger()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    assert not w.errors
    assert w.findChildren(SettingsDialog) == []  # (each one opened stayed a hidden child of the window)
