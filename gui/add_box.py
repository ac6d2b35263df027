"""The rack's "Add" box: every built-in processor and every installed LV2 plugin, searchable.

Type any part of a name (or a plugin's URI) to narrow the list; Enter or a click adds it (Enter on
text that is no whole name: the first entry that contains it). The box is cleared after each pick.
"""
from __future__ import annotations

from PyQt6.QtCore import QEvent, QObject, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QKeySequence
from PyQt6.QtWidgets import QComboBox, QCompleter

from gui.pick_combo import pick_only
from realtime.dsp.processors import available_kinds

LV2_PREFIX = "LV2: "


def lv2_plugins() -> list[tuple[str, str, bool]]:
    """(name, uri, hard_rt) of every installed LV2 plugin with audio or MIDI ports that this host
    loads (not one known to be broken, nor one requiring a feature it does not provide: a pick of
    one only failed when it was added; ``main.py plugins`` lists them, marked); empty when lilv is
    missing: the panel then offers the built-ins only."""
    try:
        from realtime.io.lv2_scan import scan

        plugins = scan().plugins.values()
    except Exception:  # noqa: BLE001 - no lilv, or a broken scan: hosting is simply not offered
        return []
    return sorted(((p.name, p.uri, p.hard_rt) for p in plugins if (p.audio_out or p.midi_in) and not p.refusal()),
                  key=lambda t: t[0].lower())


class AddBox(QComboBox):
    """Emits ``picked(kind, uri)`` (uri empty for a built-in) when the user chooses an entry."""

    picked = pyqtSignal(str, str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("add")
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.setMinimumContentsLength(18)
        for kind in available_kinds():
            if kind != "safety":
                self.addItem(kind, ("", kind))
        for name, uri, hard_rt in lv2_plugins():
            self.addItem(LV2_PREFIX + name + ("" if hard_rt else " ⚠"), (uri, "lv2"))
            self.setItemData(self.count() - 1, f"{uri}" + ("" if hard_rt else " (not hard-RT capable)"),
                             Qt.ItemDataRole.ToolTipRole)
        done = QCompleter(self.model(), self)
        done.setFilterMode(Qt.MatchFlag.MatchContains)
        done.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setCompleter(done)
        self.lineEdit().setPlaceholderText("add processor or plugin…")
        self.clear_choice()
        self.activated.connect(self._activated)
        # after the box's own Enter (which adds only a whole name): Enter on part of a name adds the first match
        self.lineEdit().returnPressed.connect(self._enter)
        pick_only(self)  # a wheel turned over it, or an arrow key, added a slot each
        # Undo/Redo with nothing of its own text to undo are the window's (Ctrl+Z just after an add
        # did nothing: the box kept the focus, and its text field took the keys)
        self._undo_keys = _UndoKeysToWindow(self)
        self.installEventFilter(self._undo_keys)  # (the box hands its keys to its text field past any filter)
        self.lineEdit().installEventFilter(self._undo_keys)

    def choices(self) -> list[str]:
        return [self.itemText(i) for i in range(self.count())]

    def pick(self, text: str) -> None:
        """Choose the entry shown as ``text`` (what a click or Enter does)."""
        i = self.findText(text)
        if i < 0:
            raise ValueError(f"{text!r}: no such processor or plugin")
        self._activated(i)

    def first_match(self, text: str) -> int:
        """The entry Enter on ``text`` adds: the one named so, else the first whose name (or URI)
        contains it, ignoring case; -1 when none does."""
        text = text.strip()
        if not text:
            return -1
        i = self.findText(text)
        if i >= 0:
            return i
        low = text.lower()
        for i in range(self.count()):
            if low in self.itemText(i).lower() or low in (self.itemData(i)[0] or "").lower():
                return i
        return -1

    def _enter(self) -> None:
        """Enter in the box: text the box itself did not take (no whole name) adds its first match.
        An entry highlighted in the list of matches is the list's to add: Enter reaches the box
        first, and a pick made here cleared the text under the list, whose own pick then took the
        entry at the same row of the whole, unfiltered list (one Enter, two slots)."""
        popup = self.completer().popup()
        if popup.isVisible() and popup.currentIndex().isValid():
            return
        if self.lineEdit().text().strip():  # a pick clears the box: nothing left once one was made
            self._activated(self.first_match(self.lineEdit().text()))

    def _activated(self, i: int) -> None:
        if i < 0:  # Enter on text that names nothing
            return
        uri, kind = self.itemData(i)
        self.clear_choice()  # ready for the next one (it kept showing the pick)
        QTimer.singleShot(0, self.clear_choice)  # and after a completer's pick sets its text
        self.picked.emit(kind, uri)

    def clear_choice(self) -> None:
        self.setCurrentIndex(-1)
        self.lineEdit().setText("")  # (not clear(): its own undo would bring the pick's text back)


class _UndoKeysToWindow(QObject):
    """A line edit's Undo and Redo keys left to the window's actions while it has nothing to undo
    or redo (a key a widget does not take as its own goes to the window's shortcuts)."""

    def eventFilter(self, obj, e) -> bool:
        if e.type() == QEvent.Type.ShortcutOverride:
            edit = obj.lineEdit() if isinstance(obj, QComboBox) else obj
            if (e.matches(QKeySequence.StandardKey.Undo) and not edit.isUndoAvailable()) or \
                    (e.matches(QKeySequence.StandardKey.Redo) and not edit.isRedoAvailable()):
                e.ignore()
                return True
        return False
