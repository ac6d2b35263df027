"""The synth panel under the rack: instrument picker, octave hint and on-screen keyboard.

Shown while the chain has an instrument: a synth slot, or a hosted plugin that takes MIDI (an LV2
instrument: its keyboard only, the picker hidden). The instrument picker mirrors the synth's first
enumerated parameter (one named like "instrument" if there is one); choosing there moves the
rack's control, which queues the change like any other. As the rack's drop-downs, the wheel
changes it only while it has the keyboard focus.
"""
from __future__ import annotations

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

from gui.keyboard import TOP_NOTE, PianoKeyboard, note_name
from gui.pick_combo import wheel_needs_focus

SYNTH = "synth"


def synth_slot(chain):
    """The chain's first synth slot, or None."""
    return next((s for s in chain.slots if s.kind == SYNTH), None)


def plays_midi(slot) -> bool:
    """Whether the slot takes MIDI: the synth, or a hosted plugin with a MIDI input."""
    extra = slot.processor.describe_extra() if hasattr(slot.processor, "describe_extra") else {}
    return slot.kind == SYNTH or bool(extra.get("takes_midi"))


def instrument_param(slot):
    """The synth's instrument choice descriptor, or None."""
    choice = [d for d in slot.processor.params if d.choices]
    named = [d for d in choice if "instrument" in d.id]
    return (named or choice or [None])[0]


class SynthPanel(QWidget):
    instrumentChosen = pyqtSignal(str, str, float)  # slot id, param id, choice index

    def __init__(self, parent=None):
        super().__init__(parent)
        self._target: tuple[str, str] | None = None  # (slot id, param id) the picker shows
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.instrument_label = QLabel("Instrument")
        lay.addWidget(self.instrument_label)
        self.instrument = QComboBox()
        self.instrument.setObjectName("instrument")
        self.instrument.currentIndexChanged.connect(self._chosen)
        wheel_needs_focus(self.instrument)  # as the rack's drop-downs: a wheel turned in passing changed it
        lay.addWidget(self.instrument)
        self.octave_label = QLabel()
        lay.addWidget(self.octave_label)
        self.keyboard = PianoKeyboard()
        self.keyboard.octaveChanged.connect(self._show_octave)
        lay.addWidget(self.keyboard, 1)
        self._show_octave(self.keyboard.octave)

    def setup(self, chain) -> None:
        """Show (or hide) the panel for ``chain`` and fill the picker from its synth (without one,
        the keyboard alone plays the chain's MIDI instruments)."""
        slot = synth_slot(chain)
        self.setVisible(any(plays_midi(s) for s in chain.slots))
        self.instrument_label.setVisible(slot is not None)
        self.instrument.setVisible(slot is not None)
        d = instrument_param(slot) if slot else None
        self._target = (slot.id, d.id) if d is not None else None
        self.instrument.blockSignals(True)
        self.instrument.clear()
        if d is not None:
            self.instrument.addItems(list(d.choices))
            self.instrument.setCurrentIndex(int(round(slot.processor.get_param(d.id))))
        self.instrument.setEnabled(d is not None)
        self.instrument.blockSignals(False)

    @property
    def target(self) -> tuple[str, str] | None:
        """(slot id, parameter id) of the instrument choice the picker mirrors, or None."""
        return self._target

    def show_param(self, slot_id: str, param_id: str, value: float) -> None:
        """Follow a change made elsewhere (the rack, a MIDI controller) without re-sending it."""
        if self._target == (slot_id, param_id) and self.instrument.currentIndex() != int(value):
            self.instrument.blockSignals(True)
            self.instrument.setCurrentIndex(int(value))
            self.instrument.blockSignals(False)

    def _chosen(self, i: int) -> None:
        if self._target is not None and i >= 0:
            self.instrumentChosen.emit(*self._target, float(i))

    def _show_octave(self, octave: int) -> None:
        lo = 12 * (octave + 1)  # the computer keys' 16 notes, as far as MIDI goes (C9–G9 at the top)
        self.octave_label.setText(f"keys {note_name(lo)}–{note_name(min(lo + 15, TOP_NOTE))} (Z/X)")
