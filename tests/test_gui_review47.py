"""The panel, review 47: a wheel or an arrow key over a plugin's preset drop-down set all its knobs,
Ctrl+Z just after an add from the Add box did nothing (the box's text field took the keys), a
plugin preset the engine refused left an empty undo step and an unsaved-changes mark, and one Inf
from upstream pinned the In meter's hold line at the top for good. Each test failed before its fix."""
import pytest

from .test_lv2_plugin_presets import LESLIE
from .test_lv2_ports import _need, _private_cache  # noqa: F401 (an autouse fixture: each test's own scan cache)

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")


def test_a_wheel_or_an_arrow_key_over_a_plugins_presets_sets_nothing(window, qtbot):
    from PyQt6.QtCore import Qt
    from PyQt6.QtTest import QTest
    from PyQt6.QtWidgets import QComboBox

    from .qt_panel import wheel

    _need(LESLIE)
    w = window()
    sid = w.add_slot("lv2", LESLIE)
    strip = w.rack.strips[sid]
    box = strip.findChild(QComboBox, "plugin_presets")
    w.apply_plugin_preset(sid, "Fast")
    strip.controls["hi_depth"].setValue(0.9)
    before, steps = (w.host.value(sid, "mode"), w.host.value(sid, "hi_depth")), w.undo_stack.count()
    box.setFocus()
    wheel(box, -1)  # the mouse resting over the box the user just picked from: "Default" was applied
    QTest.keyClick(box, Qt.Key.Key_Down)  # opens the list: a choice is made there
    assert box.view().isVisible()
    box.hidePopup()
    assert (w.host.value(sid, "mode"), w.host.value(sid, "hi_depth")) == pytest.approx(before)
    assert w.undo_stack.count() == steps


def test_undo_right_after_an_add_from_the_add_box_undoes_the_add(window, qtbot):
    from PyQt6.QtCore import Qt
    from PyQt6.QtTest import QTest
    from PyQt6.QtWidgets import QApplication

    w = window()
    with qtbot.waitActive(w):
        w.activateWindow()
    ids = lambda: [s.id for s in w.host.chain.slots]  # noqa: E731
    before = ids()
    edit = w.add_box.lineEdit()
    edit.setFocus()
    QTest.keyClicks(edit, "gain")
    QTest.keyClick(edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(ids()) == len(before) + 1)
    assert QApplication.focusWidget() in (w.add_box, edit)  # the box keeps the focus for the next add
    QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: ids() == before)
    QTest.keyClicks(edit, "lim")  # its own typing is still its own to undo
    QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert edit.text() == "" and ids() == before


def test_a_plugin_preset_the_engine_refuses_leaves_no_step_and_no_change(window):
    _need(LESLIE)
    w = window()
    sid = w.add_slot("lv2", LESLIE)
    w.set_modified(False)
    steps = w.undo_stack.count()

    def refuse(*a, **kw):
        raise RuntimeError("the engine process is not running (Restart engine brings it back)")

    w.host.set_param = refuse
    w.apply_plugin_preset(sid, "Slow")
    assert w.undo_stack.count() == steps and not w.modified
    assert w.undo_action.text() == f"Undo Add {sid}"
    assert any("not running" in e for e in w.errors)


def test_an_inf_from_upstream_does_not_pin_the_meters_hold_line(qtbot):
    from gui.meters import LevelMeter

    m = LevelMeter("In")
    qtbot.addWidget(m)
    m.set_levels((float("inf"), 0.1), (float("inf"), 0.01), now=100.0)
    assert m.clipped == [True, False] and m.hold_db[0] == pytest.approx(0.0) and m.rms_db[0] == pytest.approx(0.0)
    m.clear_clip()  # a click on the meter
    for k in range(1, 300):  # 10 s at -20 dBFS
        m.set_levels((0.1, 0.1), (0.005, 0.005), now=100.0 + k / 30)
    assert m.hold_db == pytest.approx([-20.0, -20.0])


@pytest.mark.parametrize("answer", ["Close without saving", "Wait"])
def test_a_close_with_changes_over_an_engine_that_stopped_answering_asks_within_seconds(tmp_path, qtbot, monkeypatch,
                                                                                        answer):
    """Unsaved changes, an Add the engine process never answers (stopped: a plugin stuck in its
    instantiate), then Quit: the close waited for the Add's 60 s timeout, taking no other close
    meanwhile, and only then asked. It asks after CLOSE_WAIT_S now; "Close without saving" closes
    (the stuck process killed), "Wait" keeps waiting for the action."""
    import os
    import signal
    import time

    from PyQt6.QtWidgets import QMessageBox

    from gui import window as gw
    from gui.remote.client import RemoteEngineHost
    from gui.settings import Settings
    from gui.window import MainWindow
    from realtime.dsp.presets import load_preset
    from realtime.engine.config import EngineConfig

    asked = []

    def exec_(box):
        asked.append((time.monotonic(), box.text()))
        pick = next(b for b in box.buttons() if b.text() == answer)
        pick.click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    p = load_preset("default")
    host = RemoteEngineHost(p, EngineConfig())
    w = MainWindow(p, EngineConfig(), Settings(tmp_path / "settings.ini"), host=host)
    qtbot.addWidget(w)
    w.show()
    pid = host._proc.pid
    try:
        w.rack.strips["gain"].controls["gain_db"].setValue(-6.0)  # an unsaved change
        os.kill(pid, signal.SIGSTOP)
        w.add_slot("gain", wait=False)
        t0 = time.monotonic()
        w._quit()
        assert w.isVisible() and "(closing after it)" in w.status_labels["state"].text()
        qtbot.waitUntil(lambda: bool(asked), timeout=10_000)
        assert gw.CLOSE_WAIT_S - 0.5 < asked[0][0] - t0 < gw.CLOSE_WAIT_S + 3
        assert "“Adding gain” has not finished" in asked[0][1]
        if answer == "Wait":
            assert w.isVisible() and "(closing after it)" in w.status_labels["state"].text()
            w._quit()  # a second close asks again at once
            assert len(asked) == 2 and w.isVisible()
        else:
            qtbot.waitUntil(lambda: not w.isVisible(), timeout=10_000)
            assert time.monotonic() - t0 < 10
            qtbot.waitUntil(lambda: host._proc is None or not host._proc.is_alive(), timeout=10_000)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        w.shutdown()


def test_an_lv2_instrument_gets_the_on_screen_keyboard(window):
    """mda EPiano added to a chain without a synth: there was no way to play it without a hardware
    keyboard (the panel showed only for a synth slot)."""
    from .test_lv2_plugin_presets import EPIANO

    _need(EPIANO)
    _need(LESLIE)
    w = window()
    assert not w.synth_panel.isVisible()
    w.add_slot("lv2", LESLIE)  # an effect without a MIDI input: still no keyboard
    assert not w.synth_panel.isVisible()
    sid = w.add_slot("lv2", EPIANO)
    assert w.synth_panel.isVisible() and w.keyboard.isVisible()
    assert not w.instrument.isVisible()  # the picker is the synth's: not an LV2 plugin's first drop-down
    sent = []
    w.host.send_midi = lambda *m: sent.append(m[:3]) or True
    w.keyboard.press(60)
    w.keyboard.release(60)
    assert [m[0] & 0xF0 for m in sent] == [0x90, 0x80] and sent[0][1] == 60
    w.remove_slot(sid)
    assert not w.synth_panel.isVisible()
