"""MIDI learn and controller feedback in the window.

The host maps controllers and applies them on the MIDI thread (``HostBase.midi_in``); this only
shows what happened: a learned mapping on its control (a knob, or a drop-down's or the bypass
button's ``rack.MidiTag``), a mapped controller's new value on its control, an error in the
banner. The host's callbacks arrive on the MIDI thread and are carried to the GUI thread by
queued signals.
"""
from __future__ import annotations

from PyQt6.QtCore import QObject, pyqtSignal

from gui.undo import BYPASS_TARGET, MIX_TARGET, MappingChange, end_gestures
from realtime.engine.control import BYPASS, MIX


class MidiLearn(QObject):
    _cc = pyqtSignal(str, int, float)  # target, record kind, value
    _learned = pyqtSignal(str, int, int)  # target, cc, channel
    _error = pyqtSignal(str)

    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self._cc.connect(self.show_value)
        self._learned.connect(self._show_learned)
        self._error.connect(window.show_error)
        host = window.host
        host.on_cc = lambda target, rec: self._cc.emit(target, rec.kind, rec.value)
        host.on_learned = self._learned.emit
        host.on_midi_error = self._error.emit

    def show_mappings(self) -> None:
        """Label every mapped control, and only those (after the rack was rebuilt, or a learn took a
        controller from another control)."""
        for strip in self.w.rack.strips.values():
            for c in strip.learnables():
                c.learning = False
                if c.mapping:
                    c.mapping = ""
                c.update()
        # a learn under way outlives a rebuilt rack: its new knob shows it, so a second click
        # cancels it (the knob had forgotten it, and the next controller moved was mapped unseen)
        learning = self.w.host.cc_map.learning
        k = self.w.rack.learnable(learning) if learning else None
        if k is not None:
            k.learning = True
        elif learning:  # its slot is gone
            self.w.host.learn(None)
        for target in self.w.host.midi_map.values():
            k = self.w.rack.learnable(target)
            if k is not None:
                cc, ch = self.w.host.mapping_of(target)
                k.mapping = f"CC {cc}" + (f" ch{ch + 1}" if ch is not None else "")
                k.update()

    def toggle(self, target: str) -> None:
        """Start learning ``target`` (the next controller that moves maps to it), or cancel."""
        k = self.w.rack.learnable(target)
        learning = k is not None and not k.learning
        for strip in self.w.rack.strips.values():
            for c in strip.learnables():
                if c.learning:
                    c.learning = False
                    c.update()
        self.w.host.learn(target if learning else None)
        if learning:
            k.learning = True
            k.update()
            if self.w.midi is None:
                self.w.show_error("MIDI learn: no MIDI input is open (Settings… → MIDI input)")

    def forget(self, target: str) -> None:
        before = dict(self.w.host.midi_map)
        self.w.host.forget(target)
        k = self.w.rack.learnable(target)
        if k is not None:
            k.mapping = ""
            k.update()
        self._push(before, f"Forget MIDI of {self._label(target)}")

    def _show_learned(self, target: str, cc: int, ch: int) -> None:
        k = self.w.rack.learnable(target)
        if k is not None:
            k.learning = False
        self.show_mappings()  # the controller may have been another knob's: that label goes
        before, after = self.w.host.cc_map.last_learn  # (both as the learn left them: a slot removed since
        self._push(before, f"MIDI learn of {self._label(target)}", after)  # is a step of its own)

    def _label(self, target: str) -> str:
        slot_id, _, pid = target.partition(".")
        return self.w._undo_text(slot_id, {"bypass": BYPASS_TARGET, "mix": MIX_TARGET}.get(pid, pid))

    def _push(self, before: dict, text: str, after: dict | None = None) -> None:
        """An undo step from the mappings ``before`` to ``after`` (default: now); none when equal."""
        after = dict(self.w.host.midi_map) if after is None else after
        if after != before:
            end_gestures(self.w.undo_stack)
            self.w.undo_stack.push(MappingChange(self._set_mappings, before, after, text))

    def _set_mappings(self, table: dict) -> None:
        """An undone or redone learn or forget: the mappings as they were, shown."""
        slots = {s.id for s in self.w.host.chain.slots}  # (a learn that raced a slot's removal: never a gone slot's)
        self.w.host.cc_map.targets = {k: t for k, t in table.items() if t.partition(".")[0] in slots}
        self.show_mappings()

    def show_value(self, target: str, kind: int, value: float) -> None:
        """The engine has a new value for ``target`` (a mapped controller moved it, or the engine
        chose it itself): show it on the rack and the synth panel, without sending it again."""
        slot_id, _, pid = target.partition(".")
        strip = self.w.rack.strips.get(slot_id)
        if strip is None:
            return
        strip.show(pid, value, "bypass" if kind == BYPASS else "mix" if kind == MIX else "param")
        self.w.synth_panel.show_param(slot_id, pid, value)
        self.w.set_modified(True)
