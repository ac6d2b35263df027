"""Fixes from the second review of the panel's undo, typed values and preset menu, offscreen: Quit or
a close while an action changes the chain never saves a chain in flux (after a Discard the load
under way counts as unsaved-free; with changes to ask about the close waits for the action), and
Save never writes a chain under another preset's file; a typed value not yet applied is applied
before a structural action, Save and Open (a step of its own), dropped by Undo / Redo, never
applied in the middle of an action; a change from a strip whose slot is gone is ignored; an
unedited entry follows the knob; the splitter takes only sizes from its saved state; "Reset to
preset" of a slot Undo put back; a returning slot's MIDI mapping yields to a later learn; a failed
Save names the preset's file."""
import json
import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import Qt  # noqa: E402
from PyQt6.QtGui import QCloseEvent  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication, QFileDialog, QMessageBox, QToolButton  # noqa: E402

from gui.host import EngineHost, HostBase  # noqa: E402
from gui.knob import Knob  # noqa: E402
from gui.preset_io import USER  # noqa: E402
from gui.settings import Settings  # noqa: E402
from realtime.dsp.presets import load_preset, save_preset  # noqa: E402
from realtime.dsp.processor import Param  # noqa: E402
from realtime.engine.config import EngineConfig  # noqa: E402

from .qt_panel import wheel  # noqa: E402

B = QMessageBox.StandardButton
CTRL = Qt.KeyboardModifier.ControlModifier
GAIN = Param("gain_db", "Gain", -60.0, 24.0, 0.0, unit="dB")


def ids(w):
    return [s.id for s in w.host.chain.slots]


def stack(w):
    s = w.undo_stack
    return [s.text(i) for i in range(s.count())], s.index()


def typed(w, slot_id, text, pid="gain_db"):
    """Open a knob's entry (Enter) and type ``text`` into it, not confirmed."""
    for _ in range(50):  # (offscreen, a rebuilt rack can leave the window inactive)
        if w.isActiveWindow():
            break
        w.activateWindow()
        QApplication.processEvents()
    k = w.rack.strips[slot_id].controls[pid]
    k.setFocus()
    QApplication.processEvents()
    QTest.keyClick(k, Qt.Key.Key_Return)
    QTest.keyClicks(k.editor, text)
    assert QApplication.focusWidget() is k.editor
    return k


def answers(monkeypatch, *buttons):
    """QMessageBox.question answers ``buttons`` in turn; returns the texts asked."""
    asked, left = [], list(buttons)

    def question(parent, title, text, *a, **k):
        asked.append(text)
        return left.pop(0)

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


def user_file(path: Path, name: str, gain_db: float = 0.0) -> Path:
    p = load_preset("default")
    p["name"] = name
    next(s for s in p["chain"] if s["id"] == "gain")["params"]["gain_db"] = gain_db
    return save_preset(p, path)


def chain_of(path: Path) -> tuple[str, list[str], float]:
    p = json.loads(Path(path).read_text())
    gain = next((s["params"].get("gain_db") for s in p["chain"] if s["id"] == "gain"), None)
    return p["name"], [s["id"] for s in p["chain"]], gain


class UserClose(QCloseEvent):
    """A close by hand (the title bar's ✕): spontaneous, as the window system sends it."""

    def spontaneous(self) -> bool:
        return True


# ---------------------------------------------------------------------------- a host whose calls wait
class GatedHost(EngineHost):
    """The engine in this process, its structural calls on the window's worker thread as the engine
    process's are (``threaded_calls``); while ``gate`` is shut a load or an add holds its answer
    back after the chain changed (the moment a Save would write the new chain)."""

    threaded_calls = True

    def __init__(self, preset, config=None):
        self.gate = threading.Event()
        self.gate.set()
        self.fail_load = False
        super().__init__(preset, config)

    def _hold(self):
        assert self.gate.wait(30)

    def load_preset(self, preset):
        super().load_preset(preset)
        self._hold()
        if self.fail_load:  # the chain changed, then the engine's restart failed
            raise RuntimeError("the engine did not restart")

    def add_slot(self, kind, index=None, uri=None):
        sid = super().add_slot(kind, index, uri)
        self._hold()
        return sid

    def close(self):
        self.gate.set()  # a call under way ends with the host
        super().close()


@pytest.fixture
def gated(window):
    """``gated(path)``: a window on a GatedHost running the preset file ``path``."""
    hosts = []

    def make(path):
        p = load_preset(Path(path))
        hosts.append(GatedHost(p, EngineConfig()))
        return window(p, host=hosts[-1], preset_path=str(path))

    yield make
    for h in hosts:  # before the windows shut down (``window``'s teardown comes after this one)
        h.gate.set()


# ---------------------------------------------------------------------------- 1. quit / close while busy
def test_quit_during_a_load_the_changes_were_let_go_for_asks_nothing_and_writes_nothing(gated, tmp_path, monkeypatch,
                                                                                       qtbot):
    a = user_file(tmp_path / "a.json", "A")
    b = user_file(tmp_path / "b.json", "B", gain_db=-9.0)
    w = gated(a)
    wheel(w.rack.strips["gain"].controls["gain_db"], 2)
    assert w.modified
    asked = answers(monkeypatch, B.Discard, B.Save)
    w.host.gate.clear()
    w._pick(USER, str(b))  # Discard: B loads in the background
    qtbot.waitUntil(lambda: w.host.name == "B", timeout=10000)  # the engine holds B's chain; the load goes on
    assert w.busy and not w.modified and len(asked) == 1
    assert w.quit_action.isEnabled()
    w.quit_action.trigger()  # Ctrl+Q: nothing to ask about again, and nothing written
    assert len(asked) == 1 and not w.isVisible()
    assert chain_of(a) == ("A", ids_of_default(), 0.0)


def ids_of_default():
    return [s["id"] for s in load_preset("default")["chain"]]


def test_a_close_by_hand_while_an_action_runs_waits_for_it_then_asks_and_saves_the_chain_as_it_ends(
        gated, tmp_path, monkeypatch, qtbot):
    a = user_file(tmp_path / "a.json", "A")
    w = gated(a)
    w.rack.strips["gain"].controls["gain_db"].setValue(-4.0)
    asked = answers(monkeypatch, B.Save)
    w.host.gate.clear()
    w.add_slot("gain", wait=False)
    qtbot.waitUntil(lambda: "gain2" in ids(w), timeout=10000)
    assert w.busy
    ev = UserClose()
    w.closeEvent(ev)  # the ✕ while the add runs: no question yet (a Save would wait for the engine)
    assert not ev.isAccepted() and asked == [] and w.isVisible()
    assert w.status_labels["state"].text() == "◌ Adding gain… (closing after it)"
    assert chain_of(a) == ("A", ids_of_default(), 0.0)
    w.host.gate.set()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10000)  # then asked: Save, and closed
    assert len(asked) == 1 and "“A”" in asked[0]
    name, slots, gain = chain_of(a)
    assert name == "A" and "gain2" in slots and gain == -4.0


def test_save_while_a_load_changes_the_chain_is_refused(gated, tmp_path, qtbot):
    a = user_file(tmp_path / "a.json", "A")
    b = user_file(tmp_path / "b.json", "B", gain_db=-9.0)
    w = gated(a)
    w.host.gate.clear()
    w.load_preset_file(str(b), wait=False)
    qtbot.waitUntil(lambda: w.host.name == "B", timeout=10000)
    assert w._guard(w._save) is None  # (Save is off meanwhile; the question's Save too)
    assert chain_of(a) == ("A", ids_of_default(), 0.0)
    assert len(w.errors) == 1 and "Loading the preset" in w.errors[0]
    w.host.gate.set()
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    assert w.preset_path == str(b)


def test_a_load_that_failed_after_the_chain_changed_leaves_no_file_to_save_it_under(gated, tmp_path, monkeypatch,
                                                                                     qtbot):
    a = user_file(tmp_path / "a.json", "A")
    b = user_file(tmp_path / "b.json", "B", gain_db=-9.0)
    w = gated(a)
    w.host.fail_load = True
    w.load_preset_file(str(b), wait=False)
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    assert w.errors and w.modified and w.preset_path is None  # B's chain runs: it is not A
    dialogs = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (dialogs.append(a), ("", ""))[1]))
    assert w._save() is False and dialogs  # Save asks for a file, not A's
    assert chain_of(a) == ("A", ids_of_default(), 0.0)


def test_a_load_that_failed_before_changing_anything_keeps_the_presets_file(window, tmp_path, monkeypatch):
    a = user_file(tmp_path / "a.json", "A")
    w = window(load_preset(a), preset_path=str(a))

    def refused(preset):
        raise RuntimeError("no")

    monkeypatch.setattr(w.host, "load_preset", refused)
    w._guard(w.recall_builtin, "default")
    assert w.errors == ["no"] and w.preset_path == str(a)


# ---------------------------------------------------------------------------- 2. an entry open as the chain changes
def test_an_entry_open_as_its_slot_is_removed_is_applied_first_as_a_step_of_its_own(window):
    w = window()
    typed(w, "gain", "-6")
    w.rack.strips["gain"].removeRequested.emit("gain")  # the ✕ (it takes no focus from the entry)
    assert "gain" not in ids(w) and w.errors == []
    assert stack(w) == (["Gain on gain", "Remove gain"], 2)
    w.undo_action.trigger()
    assert w.host.value("gain", "gain_db") == -6.0
    w.undo_action.trigger()
    assert w.host.value("gain", "gain_db") == 0.0 and not w.modified


@pytest.mark.parametrize("action", ["move", "preset"])
def test_an_entry_open_as_the_chain_changes_is_applied_before(window, action):
    w = window()
    typed(w, "gain", "-6")
    if action == "move":
        w.move_slot("gain", 1)
        assert stack(w) == (["Gain on gain", "Move gain"], 2) and w.host.value("gain", "gain_db") == -6.0
    else:
        w.recall_builtin("clean")
        assert w.host.name == "clean" and stack(w) == ([], 0)
    assert w.errors == []


def test_undo_of_an_add_drops_the_new_slots_open_entry_and_the_history_stays_whole(window):
    w = window()
    w.add_slot("gain")
    typed(w, "gain2", "-6")
    w.undo_action.trigger()  # from the menu: the entry keeps the focus
    assert "gain2" not in ids(w) and stack(w) == (["Add gain2"], 0) and w.errors == []
    w.redo_action.trigger()
    assert "gain2" in ids(w) and stack(w) == (["Add gain2"], 1) and w.host.value("gain2", "gain_db") == 0.0
    w.undo_action.trigger()
    assert "gain2" not in ids(w) and not w.modified


def test_redo_of_a_remove_drops_the_slots_open_entry(window):
    w = window()
    w.remove_slot("gain")
    w.undo_action.trigger()
    typed(w, "gain", "-6")
    w.redo_action.trigger()
    assert "gain" not in ids(w) and stack(w) == (["Remove gain"], 1) and w.errors == []
    w.undo_action.trigger()
    assert w.host.value("gain", "gain_db") == 0.0 and stack(w) == (["Remove gain"], 0)


def test_an_entry_opened_while_a_structural_action_waits_its_turn_is_dropped_as_it_starts(gated, tmp_path, qtbot):
    w = gated(user_file(tmp_path / "a.json", "A"))
    hold = threading.Event()
    w.call_in_background("Playing the demo…", hold.wait, 30)  # not structural: the rack stays on
    assert w.busy and w.rack.isEnabled()
    QTest.mouseClick(w.rack.strips["hpf"].findChild(QToolButton, "remove"), Qt.MouseButton.LeftButton)  # waits
    k = typed(w, "gain", "-6")
    hold.set()
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    assert "hpf" not in ids(w) and k.editor is None and w.errors == []
    assert stack(w) == (["Remove hpf"], 1) and w.host.value("gain", "gain_db") == 0.0


def test_ctrl_s_with_an_entry_open_saves_its_value(window, tmp_path):
    a = user_file(tmp_path / "a.json", "A")
    w = window(load_preset(a), preset_path=str(a))
    k = typed(w, "gain", "-6")
    QTest.keyClick(k.editor, Qt.Key.Key_S, CTRL)
    assert k.editor is None and chain_of(a)[2] == -6.0 and not w.modified


def test_ctrl_o_with_an_entry_open_asks_about_its_value(window, monkeypatch):
    w = window()
    k = typed(w, "gain", "-6")
    asked = answers(monkeypatch, B.Cancel)
    opened = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **kw: (opened.append(a), ("", ""))[1]))
    QTest.keyClick(k.editor, Qt.Key.Key_O, CTRL)
    assert len(asked) == 1 and not opened and w.host.value("gain", "gain_db") == -6.0 and w.modified


def test_quit_with_an_entry_open_asks_about_its_value(window, monkeypatch):
    w = window()
    typed(w, "gain", "-6")
    asked = answers(monkeypatch, B.Cancel)
    w.quit_action.trigger()
    assert len(asked) == 1 and w.isVisible() and w.host.value("gain", "gain_db") == -6.0


# ---------------------------------------------------------------------------- 3. a strip whose slot is gone
def test_a_change_from_a_strip_whose_slot_is_gone_is_ignored(window):
    w = window()
    old = w.rack.strips["gain"]
    w.remove_slot("gain")
    n = w.undo_stack.count()
    old.controls["gain_db"].setValue(-6.0)  # (its strip waits for its deletion: its signals still come)
    old.bypass.setChecked(True)
    old.mix_knob.setValue(50.0)
    assert w.undo_stack.count() == n and w.errors == [] and "gain" not in ids(w)


def test_a_strip_change_that_fails_goes_to_the_banner(window):
    w = window()
    w.rack.strips["gain"].paramChanged.emit("gain", "no_such_param", 1.0)
    assert len(w.errors) == 1


# ---------------------------------------------------------------------------- 4. the entry follows the knob
def test_an_unedited_entry_follows_the_knob_and_enter_keeps_where_it_went(qtbot):
    k = Knob(GAIN, 0.0)
    qtbot.addWidget(k)
    k.show()
    changes = []
    k.valueChanged.connect(changes.append)
    k.edit_value()
    assert k.editor.text() == "0 dB"
    k.setValue(-12.0, emit=False)  # an undo, a mapped controller
    assert k.editor.text() == "-12 dB" and k.editor.selectedText() == "-12 dB"
    QTest.keyClick(k.editor, Qt.Key.Key_Return)
    assert k.editor is None and k.value() == -12.0 and changes == []


def test_an_edited_entry_keeps_its_text_when_the_knob_moves(qtbot):
    k = Knob(GAIN, 0.0)
    qtbot.addWidget(k)
    k.show()
    k.edit_value()
    QTest.keyClicks(k.editor, "-3")
    k.setValue(-12.0, emit=False)
    assert k.editor.text() == "-3"
    QTest.keyClick(k.editor, Qt.Key.Key_Return)
    assert k.value() == -3.0


def test_enter_on_an_unedited_entry_after_a_mapped_controller_moved_the_knob_changes_nothing(window):
    p = load_preset("default")
    p["midi"] = [{"cc": 7, "channel": None, "target": "gain.gain_db"}]
    w = window(p)
    k = w.rack.strips["gain"].controls["gain_db"]
    k.setFocus()
    QTest.keyClick(k, Qt.Key.Key_Return)
    w.host.midi_in(0xB0, 7, 0)  # the controller turned down while the entry is open
    QApplication.processEvents()
    moved = w.host.value("gain", "gain_db")
    assert moved == GAIN.min and k.value() == moved and k.editor.text() == k.text()
    n = w.undo_stack.count()
    QTest.keyClick(k.editor, Qt.Key.Key_Return)
    assert w.host.value("gain", "gain_db") == moved and w.undo_stack.count() == n


# ---------------------------------------------------------------------------- 5. the panes' saved sizes
@pytest.mark.parametrize("saved", [[600, 0], [0, 600, 600, 600], "hello", [-5, 10, 10], ["a", "b", "c"]])
def test_saved_pane_sizes_that_do_not_fit_leave_the_panes_as_built(window, tmp_path, saved):
    fresh = window()
    QApplication.processEvents()
    built = fresh.splitter.sizes()
    fresh.shutdown()
    q = Settings(tmp_path / "settings.ini").q
    q.setValue("window/panes", saved)  # as a hand edit or another version left it
    q.sync()
    w = window()
    QApplication.processEvents()
    sp = w.splitter
    assert sp.orientation() == Qt.Orientation.Vertical and sp.childrenCollapsible()
    assert not sp.isCollapsible(0) and sp.isCollapsible(1) and sp.isCollapsible(2)
    assert sp.sizes() == built and w.rack.height() > w.spectrum.height() > 0


def test_an_own_splitter_state_still_restores_its_sizes(window, tmp_path):
    w = window()
    QApplication.processEvents()
    sizes = w.splitter.sizes()
    w.splitter.setSizes([sizes[0] - 50, sizes[1] + 50, sizes[2]])
    want = w.splitter.sizes()
    w.shutdown()
    w2 = window()
    QApplication.processEvents()
    assert w2.splitter.sizes() == want


# ---------------------------------------------------------------------------- 6. reset to preset after an undo
def test_a_slot_undo_put_back_resets_to_its_presets_value(window):
    p = load_preset("default")
    next(s for s in p["chain"] if s["id"] == "gain")["params"]["gain_db"] = -3.0
    w = window(p)
    wheel(w.rack.strips["gain"].controls["gain_db"], 5)
    changed = w.host.value("gain", "gain_db")
    w.remove_slot("gain")
    w.undo()
    k = w.rack.strips["gain"].controls["gain_db"]
    assert k.value() == changed and k.preset_value == -3.0
    assert "Reset to preset (-3 dB)" in [a.text() for a in k.context_menu().actions()]


def test_a_new_slot_with_a_removed_slots_id_is_in_no_preset(window):
    p = load_preset("default")
    next(s for s in p["chain"] if s["id"] == "gain")["params"]["gain_db"] = -3.0
    w = window(p)
    w.remove_slot("gain")
    assert w.add_slot("gain") == "gain"
    assert w.rack.strips["gain"].controls["gain_db"].preset_value == 0.0


# ---------------------------------------------------------------------------- 7. a returning slot's MIDI mappings
def test_a_returning_mapping_yields_to_a_controller_learnt_since(window):
    p = load_preset("default")
    p["midi"] = [{"cc": 20, "channel": None, "target": "limiter.ceiling_db"},
                 {"cc": 21, "channel": 3, "target": "limiter.bypass"},
                 {"cc": 22, "channel": 5, "target": "limiter.mix"}]
    w = window(p)
    w.remove_slot("limiter")
    for target, cc, ch in (("gain.gain_db", 20, 0), ("hpf.freq_hz", 21, 3), ("gain.mix", 22, 6)):
        w.host.learn(target)
        w.host.midi_in(0xB0 | ch, cc, 64)
    assert w.undo_stack.count() == 4  # the remove, and each learn a step of its own (since review 43)
    # the host's rule for a slot's mappings put back beside controllers mapped since
    w.host._restore_mappings({(20, None): "limiter.ceiling_db", (21, 3): "limiter.bypass", (22, 5): "limiter.mix"})
    assert w.host.midi_map == {(20, 0): "gain.gain_db", (21, 3): "hpf.freq_hz", (22, 6): "gain.mix",
                               (22, 5): "limiter.mix"}  # (another channel: no conflict)
    assert w.host.cc_map.controller(1, 20)[0] is None  # CC 20 drives one control, on every channel
    for _ in range(4):  # the learns undone, then the remove: every mapping as the preset had it
        w.undo()
    assert w.host.midi_map == {(20, None): "limiter.ceiling_db", (21, 3): "limiter.bypass", (22, 5): "limiter.mix"}


def test_the_engine_process_host_puts_mappings_back_by_the_same_rule():
    from gui.remote import RemoteEngineHost

    assert RemoteEngineHost._restore_mappings is HostBase._restore_mappings


# ---------------------------------------------------------------------------- 8. a failed save names the preset
def test_save_from_the_question_to_a_vanished_folder_names_the_preset(window, tmp_path, monkeypatch):
    w = window()
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    w.save_preset(str(folder / "mine.json"))
    wheel(w.rack.strips["gain"].controls["gain_db"], 2)
    shutil.rmtree(folder)  # (the preset's folder removed since)
    answers(monkeypatch, B.Save)
    assert not w.confirm_discard() and w.modified
    assert len(w.errors) == 1 and str(folder / "mine.json") in w.errors[0] and ".tmp" not in w.errors[0]
