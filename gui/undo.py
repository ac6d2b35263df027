"""Undo / redo of the panel's value changes: a knob, a drop-down, bypass, wet/dry mix.

The window records a change its controls made by hand (``ValueChange`` on a QUndoStack) and
applies an undone value by moving the control again, so the engine, the synth panel and the
preset's modified marker follow as for a user's move. Consecutive changes of one control (a
drag, a burst of wheel notches or arrow keys) merge into one step. Changes from elsewhere (a
mapped MIDI controller, a preset load, a keyboard's program change) are not recorded.
"""
from __future__ import annotations

from PyQt6.QtGui import QUndoCommand

# targets beside a parameter id, the slot's bypass and wet/dry (0..1): no identifier (a parameter's id is one),
# so a plugin's own "mix" port stays apart
BYPASS_TARGET, MIX_TARGET = "@bypass", "@mix"
MERGE_ID = 1  # every ValueChange may merge; mergeWith decides by control


class ValueChange(QUndoCommand):
    """``target`` of slot ``slot_id`` went from ``old`` to ``new``; ``apply(slot_id, target,
    value)`` moves the control (without recording the move)."""

    def __init__(self, apply, slot_id: str, target: str, old: float, new: float):
        super().__init__(f"{slot_id} {target}")
        self.apply, self.slot_id, self.target = apply, slot_id, target
        self.old, self.new = old, new
        self._pending_push = True  # recorded after the control moved: the push's redo has nothing to do

    def redo(self) -> None:
        if self._pending_push:
            self._pending_push = False
            return
        self.apply(self.slot_id, self.target, self.new)

    def undo(self) -> None:
        self.apply(self.slot_id, self.target, self.old)

    def id(self) -> int:
        return MERGE_ID

    def mergeWith(self, other: QUndoCommand) -> bool:
        if (other.slot_id, other.target) != (self.slot_id, self.target):  # another control: a step of its own
            return False
        self.new = other.new
        self.setObsolete(self.new == self.old)  # moved back where it was: no step left to undo
        return True
