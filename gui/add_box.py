"""The rack's "Add" box: every built-in processor and every installed LV2 plugin, searchable.

Type any part of a name (or a plugin's URI) to narrow the list; Enter or a click adds it.
"""
from __future__ import annotations

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import QComboBox, QCompleter

from gui.pick_combo import pick_only
from realtime.dsp.processors import available_kinds

LV2_PREFIX = "LV2: "


def lv2_plugins() -> list[tuple[str, str, bool]]:
    """(name, uri, hard_rt) of every installed LV2 plugin with audio or MIDI ports (empty when lilv
    is missing: the panel then offers the built-ins only)."""
    try:
        from realtime.io.lv2_scan import scan

        plugins = scan().plugins.values()
    except Exception:  # noqa: BLE001 - no lilv, or a broken scan: hosting is simply not offered
        return []
    return sorted(((p.name, p.uri, p.hard_rt) for p in plugins if p.audio_out or p.midi_in),
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
        pick_only(self)  # a wheel turned over it, or an arrow key, added a slot each

    def choices(self) -> list[str]:
        return [self.itemText(i) for i in range(self.count())]

    def pick(self, text: str) -> None:
        """Choose the entry shown as ``text`` (what a click or Enter does)."""
        i = self.findText(text)
        if i < 0:
            raise ValueError(f"{text!r}: no such processor or plugin")
        self._activated(i)

    def _activated(self, i: int) -> None:
        if i < 0:  # Enter on text that names nothing
            return
        uri, kind = self.itemData(i)
        self.picked.emit(kind, uri)

    def clear_choice(self) -> None:
        self.setCurrentIndex(-1)
        self.lineEdit().clear()
