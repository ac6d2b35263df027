"""Undo / redo of the panel's changes: a knob, a drop-down, bypass, wet/dry mix, a slot added,
removed or moved, and a controller learnt or forgotten.

The window records a change its controls made by hand (``ValueChange`` on a QUndoStack) and
applies an undone value by moving the control again, so the engine and the synth panel follow
as for a user's move; the preset's modified marker follows the stack's clean state (set at a save
or a load), so undoing back to what was saved clears it. Consecutive changes of one control merge
into one step until its gesture ends (``end_gesture``: a knob's drag released, a pause in its wheel
or key burst), a change of another control comes, or the step is undone or redone: a second drag
of the same knob is a step of its own. Changes from elsewhere (a mapped MIDI controller, a preset
load, a keyboard's program change) are not recorded.

A slot's add, remove or move (``SlotChange``) rebuilds the engine: the window takes such a step back
or again as the action it was (``MainWindow.undo`` / ``redo``, possibly in the background) and moves
the stack only once the chain changed, so a change that failed leaves the stack where it was.
Slots keep their ids through it (a removed slot comes back with its own), so the value steps
around it still address theirs.
"""
from __future__ import annotations

from PyQt6.QtGui import QUndoCommand, QUndoStack

# targets beside a parameter id, the slot's bypass and wet/dry (0..1): no identifier (a parameter's id is one),
# so a plugin's own "mix" port stays apart
BYPASS_TARGET, MIX_TARGET = "@bypass", "@mix"
MERGE_ID = 1  # every ValueChange may merge; mergeWith decides by control


class ValueChange(QUndoCommand):
    """``target`` of slot ``slot_id`` went from ``old`` to ``new``; ``apply(slot_id, target,
    value)`` moves the control (without recording the move)."""

    def __init__(self, apply, slot_id: str, target: str, old: float, new: float, text: str = ""):
        super().__init__(text or f"{slot_id} {target}")  # text: what the Undo / Redo menu entries name
        self.apply, self.slot_id, self.target = apply, slot_id, target
        self.old, self.new = old, new
        self._pending_push = True  # recorded after the control moved: the push's redo has nothing to do
        self.finished = False  # True once its gesture ended: later changes are new steps

    def redo(self) -> None:
        if self._pending_push:
            self._pending_push = False
            return
        self.finished = True  # a change after a redo is a new gesture
        self.apply(self.slot_id, self.target, self.new)

    def undo(self) -> None:
        self.finished = True
        self.apply(self.slot_id, self.target, self.old)

    def id(self) -> int:
        return MERGE_ID

    def mergeWith(self, other: QUndoCommand) -> bool:
        if self.finished:
            return False
        if (other.slot_id, other.target) != (self.slot_id, self.target):  # another control: a step of its own,
            self.finished = True  # and this one is done (an undo of that one must not reopen it)
            return False
        self.new = other.new
        self.setObsolete(self.new == self.old)  # moved back where it was: no step left to undo
        return True


def end_gesture(stack: QUndoStack, slot_id: str, target: str) -> None:
    """A gesture on ``target`` of ``slot_id`` ended: the step on top, if it is that control's,
    takes no more changes."""
    top = stack.command(stack.index() - 1)
    if isinstance(top, ValueChange) and (top.slot_id, top.target) == (slot_id, target):
        top.finished = True


class SlotChange(QUndoCommand):
    """Slot ``slot_id`` was added (``kind`` "add"), removed ("remove") or moved ("move") at chain
    position ``index`` (a move: to ``to``). ``entry``: the slot as a preset's chain entry (kind,
    plugin, values, bypass, mix, an LV2 plugin's own state) and ``midi`` its controllers'
    mappings, as it was last taken out (what puts it back); ``whole``: False when the plugin's own
    state could not be saved with it (its controls only). ``undo`` / ``redo`` do nothing: the
    window changes the chain first (see the module docstring)."""

    def __init__(self, kind: str, slot_id: str, index: int, to: int | None = None, entry: dict | None = None,
                 midi: dict | None = None, whole: bool = True):
        super().__init__()
        self.kind, self.slot_id, self.index, self.to = kind, slot_id, index, to
        self.keep(entry, midi or {}, whole)

    def keep(self, entry: dict | None, midi: dict, whole: bool) -> None:
        """The slot as it was taken out (its remove, or an undone add)."""
        self.entry, self.midi, self.whole = entry, midi, whole
        self.setText(f"{self.kind.capitalize()} {self.slot_id}" + ("" if whole else " (plugin state not kept)"))

    def goes(self, back: bool) -> bool:
        """Whether the slot leaves the chain when the step is undone (``back``) or redone; a move
        never does."""
        return self.kind != "move" and (self.kind == "add") == back

    def undo(self) -> None:
        pass

    def redo(self) -> None:
        pass


class MappingChange(QUndoCommand):
    """A MIDI learn or forget: the controller mappings went from ``old`` to ``new``, whole tables (a
    learn also takes its controller from the control it drove); ``apply(table)`` sets them."""

    def __init__(self, apply, old: dict, new: dict, text: str):
        super().__init__(text)
        self.apply, self.old, self.new = apply, dict(old), dict(new)
        self._pending_push = True  # recorded after the mapping changed: the push's redo has nothing to do

    def redo(self) -> None:
        if self._pending_push:
            self._pending_push = False
            return
        self.apply(self.new)

    def undo(self) -> None:
        self.apply(self.old)


def end_gestures(stack: QUndoStack) -> None:
    """The step on top takes no more changes (a structural step follows it)."""
    top = stack.command(stack.index() - 1)
    if isinstance(top, ValueChange):
        top.finished = True
