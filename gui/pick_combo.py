"""Combo boxes whose every choice acts (load a preset, add a slot): only a deliberate pick counts.

Qt's QComboBox emits ``activated`` for a mouse wheel turned over it and for the arrow keys, not
only for a choice from its list: scrolling past the preset picker loaded another preset (the
unsaved changes gone), scrolling past the Add box added slots, and a wheel over a plugin's preset
drop-down set all its knobs. ``pick_only`` swallows the wheel,
and turns the arrow keys into opening the list, where a choice is made on purpose.
``wheel_needs_focus`` (the rack's drop-downs): the wheel changes the choice only while the box has
the keyboard focus (or its list is open); else it goes on to what holds the box (the rack scrolls).
"""
from __future__ import annotations

from PyQt6.QtCore import QEvent, QObject, Qt
from PyQt6.QtWidgets import QComboBox

_STEP_KEYS = (Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_PageUp, Qt.Key.Key_PageDown, Qt.Key.Key_Home,
              Qt.Key.Key_End)
_EDIT_STEP_KEYS = (Qt.Key.Key_Up, Qt.Key.Key_Down)  # a search field keeps Home/End/PageUp/PageDown for its text


class _PickOnly(QObject):
    def eventFilter(self, obj, e) -> bool:
        if e.type() == QEvent.Type.Wheel:
            e.ignore()  # the choice does not change; what holds the box gets the wheel (the rack scrolls)
            return True
        if e.type() == QEvent.Type.KeyPress and e.key() in (_STEP_KEYS if isinstance(obj, QComboBox) else _EDIT_STEP_KEYS):
            combo = obj if isinstance(obj, QComboBox) else obj.parent()
            if isinstance(combo, QComboBox) and not combo.view().isVisible():
                combo.showPopup()
                return True
        return False


def pick_only(combo: QComboBox) -> QComboBox:
    """Make ``combo`` act only on a choice from its list (see the module's doc); returns it."""
    f = _PickOnly(combo)
    combo.installEventFilter(f)
    if combo.lineEdit() is not None:  # an editable box: its line edit gets the keys and the wheel
        combo.lineEdit().installEventFilter(f)
    return combo


class _WheelNeedsFocus(QObject):
    def eventFilter(self, obj, e) -> bool:
        if e.type() == QEvent.Type.Wheel and isinstance(obj, QComboBox):
            if not (obj.hasFocus() or obj.view().isVisible()):
                e.ignore()  # not taken: the parent (the rack's scroll area) gets the wheel
                return True
        return False


def wheel_needs_focus(combo: QComboBox) -> QComboBox:
    """Let the wheel change ``combo`` only while it has the keyboard focus or its list is open (a
    wheel does not give it the focus); returns it."""
    if combo.focusPolicy() == Qt.FocusPolicy.WheelFocus:
        combo.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
    combo.installEventFilter(_WheelNeedsFocus(combo))
    return combo
