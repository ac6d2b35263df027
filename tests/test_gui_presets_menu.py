"""The main window's preset workflow, offscreen: the user's saved presets in the picker, Save in the
unsaved-changes question (also on close and Quit), and the menu bar's File / Edit / Engine / Help
built on the toolbar's own actions."""
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import Qt  # noqa: E402
from PyQt6.QtGui import QAction, QCloseEvent  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication, QFileDialog, QMessageBox, QWidget  # noqa: E402

from gui.actions import Action  # noqa: E402
from realtime.dsp.presets import builtin_presets, load_preset, save_preset  # noqa: E402

from .qt_panel import wheel  # noqa: E402

B = QMessageBox.StandardButton
CTRL = Qt.KeyboardModifier.ControlModifier


@pytest.fixture
def presets(tmp_path):
    """The user's preset folder of the ``window`` fixture's settings (tmp_path/settings.ini)."""
    d = tmp_path / "presets"
    d.mkdir()
    return d


def user_preset(folder: Path, stem: str, gain_db: float = 0.0) -> Path:
    """A preset saved in ``folder``: the default chain with its gain at ``gain_db``."""
    p = load_preset("default")
    p["name"] = stem
    next(s for s in p["chain"] if s["id"] == "gain")["params"]["gain_db"] = gain_db
    return save_preset(p, folder / f"{stem}.json")


def items(box):
    return [box.itemText(i) for i in range(box.count())]


def index_of(box, text: str) -> int:
    i = box.findText(text, Qt.MatchFlag.MatchExactly)
    assert i >= 0, (text, items(box))
    return i


def is_separator(box, i: int) -> bool:
    return box.itemData(i, Qt.ItemDataRole.AccessibleDescriptionRole) == "separator"


def answer(monkeypatch, button):
    """QMessageBox.question answers ``button``; returns the questions asked (title, text, buttons)."""
    asked = []

    def question(parent, title, text, buttons=B.Yes | B.No, default=B.NoButton):
        asked.append((title, text, buttons))
        return button

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


def save_as_returns(monkeypatch, path):
    """The Save As dialog returns ``path`` ('' : cancelled); returns the calls made."""
    calls = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (calls.append(a), (str(path), ""))[1]))
    return calls


def modify(w, value: float = -7.0):
    w.rack.strips["limiter"].controls["ceiling_db"].setValue(value)
    assert w.modified


def ceiling(path) -> float:
    return {s["id"]: s for s in load_preset(Path(path))["chain"]}["limiter"]["params"]["ceiling_db"]


class UserClose(QCloseEvent):
    """A close by hand (the title bar's ✕): spontaneous, as the window system sends it."""

    def spontaneous(self) -> bool:
        return True


# ---------------------------------------------------------------------------- 1. user presets in the picker
def test_the_picker_lists_the_users_presets_below_the_builtins_sorted_and_apart(window, presets):
    for stem in ("zeta", "Alpha", "voice"):
        user_preset(presets, stem)
    (presets / "bad.json").write_text("{ not json")
    (presets / "notes.txt").write_text("not a preset")
    box = window().preset_box
    names = builtin_presets()
    got = items(box)
    assert got[:len(names)] == names and is_separator(box, len(names))
    assert got[len(names) + 1:] == ["Alpha", "bad", "voice (user)", "zeta"]  # by file stem, sorted
    # the user's "voice" is not the built-in's: another item, another text, its file as its tooltip
    user_voice = index_of(box, "voice (user)")
    assert index_of(box, "voice") < len(names) and box.itemData(user_voice, Qt.ItemDataRole.ToolTipRole) == str(
        presets / "voice.json")


def test_a_preset_added_by_hand_appears_when_the_picker_opens(window, presets):
    w = window()
    assert "mine" not in items(w.preset_box)
    user_preset(presets, "mine")
    w.preset_box.showPopup()
    try:
        assert "mine" in items(w.preset_box) and w.preset_box.currentText() == "default"  # still what runs
    finally:
        w.preset_box.hidePopup()


def test_picking_a_users_preset_loads_its_file_and_the_picker_shows_it(window, presets):
    path = user_preset(presets, "voice", gain_db=-9.0)  # named as a built-in, holding another chain
    w = window()
    box = w.preset_box
    box.activated.emit(index_of(box, "voice (user)"))
    assert w.preset_path == str(path) and w.host.value("gain", "gain_db") == -9.0 and not w.modified
    assert box.currentText() == "voice (user)" and w.errors == []
    box.activated.emit(index_of(box, "voice"))  # the built-in: its own chain
    assert w.preset_path is None and "enhancer" in w.rack.strips and box.currentText() == "voice"


def test_a_users_preset_opened_at_start_or_through_the_dialog_shows_in_the_picker(window, presets, monkeypatch):
    path = user_preset(presets, "mine")
    w = window(load_preset(path), preset_path=str(path))
    assert w.preset_box.currentText() == "mine"
    w.recall_builtin("master")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    w._load_dialog()
    assert w.preset_box.currentText() == "mine"


def test_a_users_preset_is_picked_only_once_the_unsaved_changes_may_go(window, presets, monkeypatch):
    path = user_preset(presets, "mine", gain_db=-9.0)
    w = window()
    modify(w)
    asked = answer(monkeypatch, B.Cancel)
    w.preset_box.activated.emit(index_of(w.preset_box, "mine"))
    assert asked and w.preset_path is None and w.modified and w.preset_box.currentText() == "default"
    answer(monkeypatch, B.Discard)
    w.preset_box.activated.emit(index_of(w.preset_box, "mine"))
    assert w.preset_path == str(path) and not w.modified


def test_a_malformed_users_preset_is_listed_and_picking_it_gives_one_line(window, presets):
    (presets / "bad.json").write_text("{ not json")
    w = window()
    w.preset_box.activated.emit(index_of(w.preset_box, "bad"))
    assert len(w.errors) == 1 and "bad.json" in w.errors[0] and "\n" not in w.errors[0]
    assert "Traceback" not in w.banner.text() and w.banner.isVisible()
    assert w.host.name == "default" and w.preset_path is None
    assert w.preset_box.currentText() == "default"  # the picker shows what runs, not the pick that failed


def test_a_save_as_into_the_folder_is_listed_at_once_and_shown(window, presets, monkeypatch):
    w = window()
    save_as_returns(monkeypatch, presets / "Warm vocal.json")
    w._save_dialog()
    assert w.preset_box.currentText() == "Warm vocal" and "Warm vocal" in items(w.preset_box)
    modify(w)
    w._save()  # a save to the file it has keeps it current
    assert w.preset_box.currentText() == "Warm vocal" and ceiling(presets / "Warm vocal.json") == -7.0


def test_no_user_presets_no_separator(window):
    box = window().preset_box  # its folder does not exist
    assert items(box) == builtin_presets() and not any(is_separator(box, i) for i in range(box.count()))


# ---------------------------------------------------------------------------- 2. Save in the question
def test_the_question_offers_save_discard_and_cancel(window, monkeypatch):
    w = window()
    modify(w)
    asked = answer(monkeypatch, B.Cancel)
    assert not w.confirm_discard()
    (_title, text, buttons), = asked
    assert buttons == B.Save | B.Discard | B.Cancel and "default" in text


def test_save_in_the_question_writes_the_current_file_then_loads(window, presets, monkeypatch):
    path = user_preset(presets, "mine")
    w = window(load_preset(path), preset_path=str(path))
    modify(w, -5.0)
    answer(monkeypatch, B.Save)
    dialogs = save_as_returns(monkeypatch, "")
    w._pick_builtin("master")
    assert ceiling(path) == -5.0 and not dialogs  # written to its file, no dialog
    assert w.host.name == "master" and not w.modified


def test_save_in_the_question_without_a_file_asks_for_one(window, presets, monkeypatch):
    w = window()
    modify(w, -5.0)
    answer(monkeypatch, B.Save)
    save_as_returns(monkeypatch, presets / "kept.json")
    w._pick_builtin("master")
    assert ceiling(presets / "kept.json") == -5.0 and w.host.name == "master"


def test_a_cancelled_save_as_in_the_question_keeps_the_changes(window, monkeypatch):
    w = window()
    modify(w, -5.0)
    answer(monkeypatch, B.Save)
    dialogs = save_as_returns(monkeypatch, "")
    w._pick_builtin("master")
    assert dialogs and w.host.name == "default" and w.modified and w.host.value("limiter", "ceiling_db") == -5.0
    assert w.preset_box.currentText() == "default" and w.errors == []


def test_a_failed_save_in_the_question_keeps_the_changes_and_says_why_in_one_line(window, tmp_path, monkeypatch):
    w = window()
    modify(w, -5.0)
    w.preset_path = str(tmp_path / "gone" / "mine.json")  # its folder removed since
    answer(monkeypatch, B.Save)
    w._pick_builtin("master")
    assert w.host.name == "default" and w.modified and w.host.value("limiter", "ceiling_db") == -5.0
    assert len(w.errors) == 1 and "gone" in w.errors[0] and "\n" not in w.errors[0]


def test_closing_the_window_asks_the_same_question(window, presets, monkeypatch):
    path = user_preset(presets, "mine")
    w = window(load_preset(path), preset_path=str(path))
    modify(w, -5.0)
    asked = answer(monkeypatch, B.Cancel)
    ev = UserClose()
    w.closeEvent(ev)
    assert asked[0][2] == B.Save | B.Discard | B.Cancel and not ev.isAccepted() and ceiling(path) != -5.0
    answer(monkeypatch, B.Save)
    ev = UserClose()
    w.closeEvent(ev)
    assert ev.isAccepted() and ceiling(path) == -5.0


def test_closing_stays_open_when_the_save_as_is_cancelled(window, monkeypatch):
    w = window()
    modify(w)
    answer(monkeypatch, B.Save)
    dialogs = save_as_returns(monkeypatch, "")
    ev = UserClose()
    w.closeEvent(ev)
    assert dialogs and not ev.isAccepted() and w.modified


# ---------------------------------------------------------------------------- 3. the menu bar
def menus(w) -> dict[str, list[QAction]]:
    return {a.text(): a.menu().actions() for a in w.menuBar().actions()}


def menu_action(w, menu: str, text: str) -> QAction:
    (act,) = [a for a in menus(w)[menu] if a.text().replace("&", "") == text]
    return act


def test_the_menus_hold_the_toolbars_own_actions(window):
    w = window()
    m = menus(w)
    assert list(m) == ["&File", "&Edit", "E&ngine", "&Help"]
    assert [a.text() for a in m["&File"] if not a.isSeparator()] == ["&Open Preset…", "&Save", "Save &As…", "&Quit"]
    assert m["&File"][:3] == w._file_actions and m["&Edit"] == [w.undo_action, w.redo_action]
    assert [a.text() for a in m["E&ngine"]] == ["&Start", "&Audio Settings…"]
    assert [a.text() for a in m["&Help"]] == ["&About rtaudio-host"]
    keys = {
        "Open Preset…": "Ctrl+O", "Save": "Ctrl+S", "Save As…": "Ctrl+Shift+S", "Quit": "Ctrl+Q"}
    for text, key in keys.items():
        assert key in [k.toString() for k in menu_action(w, "&File", text).shortcuts()], text


def test_no_shortcut_is_registered_twice(window):
    w = window()
    seen: dict[str, QAction] = {}
    for act in {*w.findChildren(QAction), *QWidget.actions(w)}:  # (w.actions: its action runner)
        for k in act.shortcuts():
            assert k.toString() not in seen or seen[k.toString()] is act, k.toString()
            seen[k.toString()] = act
    assert {"Ctrl+O", "Ctrl+S", "Ctrl+Shift+S", "Ctrl+Q", "Ctrl+Z", "Ctrl+Y"} <= set(seen)


def test_the_menu_actions_are_enabled_as_their_toolbar_twins(window):
    w = window()
    twins = [*w._file_actions, w.start_action, w.settings_action]
    assert all(a.isEnabled() for a in twins) and w.toolbar.isEnabled()
    assert not w.undo_action.isEnabled() and not w.redo_action.isEnabled()
    wheel(w.rack.strips["gain"].controls["gain_db"], 1)
    assert w.undo_action.isEnabled() and menus(w)["&Edit"][0].text() == "Undo Gain on gain"  # the step's name
    w._show_busy(Action("Loading the preset…", iter(()), structural=True))  # as while a preset loads
    try:
        assert not w.toolbar.isEnabled() and not w.start_button.isEnabled()
        assert not any(a.isEnabled() for a in twins) and not w.undo_action.isEnabled()
        assert w.quit_action.isEnabled()  # the window can close meanwhile, as by its ✕
    finally:
        w._show_busy(None)
    assert all(a.isEnabled() for a in twins) and w.undo_action.isEnabled()


def test_file_save_from_the_menu_writes_the_preset_file(window, presets):
    path = user_preset(presets, "mine")
    w = window(load_preset(path), preset_path=str(path))
    modify(w, -4.5)
    menu_action(w, "&File", "Save").trigger()
    assert ceiling(path) == -4.5 and not w.modified and not w.isWindowModified()


def test_ctrl_s_still_fires_with_the_menu_bar_there(window, presets):
    path = user_preset(presets, "mine")
    w = window(load_preset(path), preset_path=str(path))
    modify(w, -4.5)
    w.rack.setFocus()
    QApplication.processEvents()
    QTest.keyClick(w.rack, Qt.Key.Key_S, CTRL)
    assert ceiling(path) == -4.5 and not w.modified


def test_engine_start_stop_follows_the_button_and_settings_opens_the_dialog(window, monkeypatch):
    w = window()
    running = []
    monkeypatch.setattr(w.host, "start", lambda: running.append(True))
    monkeypatch.setattr(w.host, "stop", lambda: running.clear())
    monkeypatch.setattr(type(w.host), "running", property(lambda self: bool(running)))
    menu_action(w, "E&ngine", "Start").trigger()
    assert running and w.start_button.isChecked() and w.start_action.text() == "&Stop"
    menu_action(w, "E&ngine", "Stop").trigger()
    assert not running and not w.start_button.isChecked() and w.start_action.text() == "&Start"
    w.rack.setFocus()  # Ctrl+R starts and stops it from the keyboard, whatever has the focus
    QApplication.processEvents()
    QTest.keyClick(w.rack, Qt.Key.Key_R, CTRL)
    assert running and w.start_action.text() == "&Stop"
    QTest.keyClick(w.rack, Qt.Key.Key_R, CTRL)
    assert not running
    opened = []
    monkeypatch.setattr(w, "_settings_dialog", lambda: opened.append(True))
    menu_action(w, "E&ngine", "Audio Settings…").trigger()
    assert opened


def test_help_about_names_the_version(window, monkeypatch):
    w = window()
    shown = []
    monkeypatch.setattr(QMessageBox, "about", staticmethod(lambda parent, title, text: shown.append(text)))
    menu_action(w, "&Help", "About rtaudio-host").trigger()
    version = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert shown and f"rtaudio-host {version}" in shown[0]


def test_quit_asks_about_unsaved_changes_and_closes(window, monkeypatch):
    w = window()
    modify(w)
    asked = answer(monkeypatch, B.Cancel)
    menu_action(w, "&File", "Quit").trigger()
    assert asked and w.isVisible()
    answer(monkeypatch, B.Discard)
    menu_action(w, "&File", "Quit").trigger()
    assert not w.isVisible()


def test_the_toolbar_buttons_keep_their_short_texts(window):
    from PyQt6.QtWidgets import QToolButton

    texts = [b.text() for b in window().toolbar.findChildren(QToolButton)]
    assert {"Load…", "Save", "Save as…", "Settings…"} <= set(texts)



# ---------------------------------------------------------------------------- review: names the picker lists
def test_a_save_as_in_capitals_keeps_its_name_and_json_in_any_case_is_listed(window, presets, monkeypatch):
    """Save As `UPPER.JSON` wrote `UPPER.JSON.json`, and a `.JSON` file was never listed."""
    user_preset(presets, "Other")
    (presets / "Other.json").rename(presets / "Other.JSON")
    w = window()
    assert "Other" in items(w.preset_box)
    save_as_returns(monkeypatch, presets / "UPPER.JSON")
    assert w._save_dialog()
    assert sorted(p.name for p in presets.iterdir()) == ["Other.JSON", "UPPER.JSON"]
    assert w.preset_path == str(presets / "UPPER.JSON") and w.host.name == "UPPER"
    assert w.preset_box.currentText() == "UPPER"


@pytest.mark.parametrize("typed", [".json", ".hidden.json", " .json", "  "])
def test_a_save_as_with_a_blank_or_hidden_name_is_refused_in_one_line(window, presets, monkeypatch, typed):
    """Save As `.json` / `.hidden.json` saved a dotfile the picker never lists; ` .json` said
    "name: expected a non-empty string, got ' '"."""
    w = window()
    modify(w)
    save_as_returns(monkeypatch, presets / typed)
    assert not w._guard(w._save_dialog)
    assert len(w.errors) == 1 and "\n" not in w.errors[0], w.errors
    assert w.errors[0].startswith("not saved:") and repr(typed) in w.errors[0]
    assert list(presets.iterdir()) == [] and w.preset_path is None and w.modified


def test_the_panels_preset_folder_is_the_one_the_command_line_reads(monkeypatch, tmp_path):
    """The folder lived in gui/ (Qt's config location) only: the runtime could not find the panel's
    saved presets by name."""
    from gui.settings import Settings
    from realtime.dsp.presets import user_preset_dir

    monkeypatch.delenv("RTAUDIO_HOST_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert Settings().preset_dir == user_preset_dir() == tmp_path / "xdg" / "rtaudio-host" / "presets"
    monkeypatch.setenv("RTAUDIO_HOST_CONFIG", str(tmp_path / "cfg" / "my.ini"))
    assert Settings().preset_dir == user_preset_dir() == tmp_path / "cfg" / "presets"
