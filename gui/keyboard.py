"""On-screen piano keyboard: mouse (left button: press, glide, release) and computer keys, octave
shift. Keys with Ctrl, Alt or Meta are commands (Ctrl+S saves), never notes.

Computer keys follow the usual tracker layout: A W S E D F T G Y H U J K O L P = C … D# of the
next octave; Z / X shift the octave down / up. Emits (note, velocity) and note-offs; the window
sends them to the engine as MIDI (channel 1).
"""
from __future__ import annotations

from PyQt6.QtCore import QRectF, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QPainter
from PyQt6.QtWidgets import QSizePolicy, QWidget

from gui.meters import draw_fitting

KEYMAP = {Qt.Key.Key_A: 0, Qt.Key.Key_W: 1, Qt.Key.Key_S: 2, Qt.Key.Key_E: 3, Qt.Key.Key_D: 4,
          Qt.Key.Key_F: 5, Qt.Key.Key_T: 6, Qt.Key.Key_G: 7, Qt.Key.Key_Y: 8, Qt.Key.Key_H: 9,
          Qt.Key.Key_U: 10, Qt.Key.Key_J: 11, Qt.Key.Key_K: 12, Qt.Key.Key_O: 13, Qt.Key.Key_L: 14,
          Qt.Key.Key_P: 15}
BLACK = {1, 3, 6, 8, 10}
COMMAND_MODIFIERS = (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
                     | Qt.KeyboardModifier.MetaModifier)
NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
TOP_NOTE = 127  # MIDI's highest
TOP_OCTAVE = TOP_NOTE // 12 - 1  # 9: the last whose first key (C9 = 120) is a MIDI note
BLACK_HEIGHT = 0.6  # of the keyboard's height


def note_name(n: int) -> str:
    return f"{NAMES[n % 12]}{n // 12 - 1}"


class PianoKeyboard(QWidget):
    noteOn = pyqtSignal(int, int)  # note, velocity
    noteOff = pyqtSignal(int)
    octaveChanged = pyqtSignal(int)

    def __init__(self, first: int = 36, octaves: int = 4, velocity: int = 100, parent=None):
        super().__init__(parent)
        self.first = first - first % 12  # start on a C
        self.octaves = octaves
        self.velocity = velocity
        self.octave = 4  # base octave for computer keys: C4 = 60
        self.down: set[int] = set()  # notes sounding
        self._holders: dict[int, int] = {}  # note -> how many inputs hold it (the mouse, computer keys)
        self._mouse_note: int | None = None
        self._dragging = False  # the left button went down here and is still down
        self._key_notes: dict[int, int] = {}  # Qt key -> note it started (octave may change while held)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        # the height is the window's splitter's (dragged by the user)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Click to play; computer keys A W S E D F T G Y H U J K O L P; Z / X: octave down / up")

    def sizeHint(self) -> QSize:
        return QSize(14 * 7 * self.octaves, 90)

    def minimumSizeHint(self) -> QSize:
        return QSize(14 * 7, 40)  # dragged smaller, the window's splitter collapses it

    # ---------------------------------------------------------------- notes
    def press(self, note: int, velocity: int | None = None) -> None:
        """One more input holds ``note``; the first sounds it."""
        if not 0 <= note <= TOP_NOTE:
            return
        self._holders[note] = self._holders.get(note, 0) + 1
        if note not in self.down:
            self.down.add(note)
            self.noteOn.emit(note, self.velocity if velocity is None else velocity)
            self.update()

    def release(self, note: int) -> None:
        """One input lets ``note`` go; the last ends it (a click on a key a computer key holds, or two
        computer keys on one note an octave shift apart, cut it while the other still held it)."""
        held = self._holders.get(note, 0) - 1
        if held > 0:
            self._holders[note] = held
            return
        self._holders.pop(note, None)
        if note in self.down:
            self.down.discard(note)
            self.noteOff.emit(note)
            self.update()

    def release_all(self) -> None:
        self._holders.clear()
        for n in sorted(self.down):
            self.release(n)

    def set_octave(self, octave: int) -> None:
        self.octave = max(0, min(TOP_OCTAVE, octave))
        self.octaveChanged.emit(self.octave)
        self.update()

    # ---------------------------------------------------------------- geometry
    def _white_notes(self) -> list[int]:
        return [n for n in range(self.first, self.first + 12 * self.octaves + 1) if n % 12 not in BLACK]

    def _rects(self):
        """(note, rect, black) for every key, black keys last (drawn and hit-tested on top)."""
        whites = self._white_notes()
        ww = self.width() / len(whites)
        h = self.height()
        out, blacks = [], []
        for i, n in enumerate(whites):
            out.append((n, QRectF(i * ww, 0, ww, h), False))
            if (n + 1) % 12 in BLACK and n + 1 < whites[-1]:
                blacks.append((n + 1, QRectF((i + 1) * ww - ww * 0.3, 0, ww * 0.6, h * BLACK_HEIGHT), True))
        return out + blacks

    def note_at(self, x: float, y: float) -> int | None:
        for n, r, black in reversed(self._rects()):
            if r.contains(x, y):
                return n
        return None

    def key_center(self, note: int):
        for n, r, _ in self._rects():
            if n == note:
                return r.center() if n % 12 not in BLACK else r.center()
        raise ValueError(f"note {note} is not on this keyboard")

    # ---------------------------------------------------------------- input
    def mousePressEvent(self, e):
        if e.button() != Qt.MouseButton.LeftButton:  # another button's release would leave its note on
            return
        if self._mouse_note is not None:  # a second press before the release reached us: one mouse note
            self.release(self._mouse_note)
            self._mouse_note = None
        self._dragging = True
        n = self.note_at(e.position().x(), e.position().y())
        if n is not None:
            self._mouse_note = n
            self.press(n, self._velocity(e.position().y()))

    def _velocity(self, y: float) -> int:
        """Lower on the key = louder, like a real key's travel (a glide's notes too: they came at
        100, a jump from a click's 44 at the top of the keys)."""
        return int(40 + 87 * min(1.0, max(0.0, y) / max(1, self.height())))

    def mouseMoveEvent(self, e):
        # a glide that strays off the keys goes on when it comes back (it stopped for good)
        if not self._dragging or not e.buttons() & Qt.MouseButton.LeftButton:
            return
        n = self.note_at(e.position().x(), e.position().y())
        if n != self._mouse_note:
            if self._mouse_note is not None:
                self.release(self._mouse_note)
            self._mouse_note = n
            if n is not None:
                self.press(n, self._velocity(e.position().y()))

    def mouseReleaseEvent(self, e):
        if e.button() != Qt.MouseButton.LeftButton:
            return
        self._dragging = False
        if self._mouse_note is not None:
            self.release(self._mouse_note)
            self._mouse_note = None

    def keyPressEvent(self, e):
        if e.isAutoRepeat():
            return
        k = Qt.Key(e.key())
        if e.modifiers() & COMMAND_MODIFIERS:  # Ctrl+S is a command, not a note: pass it on
            super().keyPressEvent(e)
        elif k == Qt.Key.Key_Z:
            self.set_octave(self.octave - 1)
        elif k == Qt.Key.Key_X:
            self.set_octave(self.octave + 1)
        elif k in KEYMAP:
            if k in self._key_notes:  # held already (a press without its release): one hold
                return
            note = 12 * (self.octave + 1) + KEYMAP[k]
            self._key_notes[k] = note
            self.press(note)
        else:
            super().keyPressEvent(e)

    def keyReleaseEvent(self, e):
        if e.isAutoRepeat():
            return
        note = self._key_notes.pop(Qt.Key(e.key()), None)
        if note is not None:
            self.release(note)
        else:
            super().keyReleaseEvent(e)

    def focusOutEvent(self, e):
        self.release_all()  # no stuck notes when the window loses focus
        self._key_notes.clear()
        super().focusOutEvent(e)

    # ---------------------------------------------------------------- drawing
    def paintEvent(self, e):
        p = QPainter(self)
        lo = 12 * (self.octave + 1)
        drawn: list[QRectF] = []
        for n, r, black in self._rects():
            on = n in self.down
            if black:
                p.fillRect(r, QColor("#4a8fd8") if on else QColor("#202226"))
            else:
                p.fillRect(r.adjusted(0, 0, -1, 0), QColor("#9cc7f0") if on else QColor("#f4f4f0"))
                p.setPen(QColor("#70747a"))
                p.drawRect(r.adjusted(0, 0, -1, -1))
                if lo <= n < lo + 16:  # the computer-key range
                    p.fillRect(QRectF(r.x() + 2, r.bottom() - 5, r.width() - 5, 3), QColor("#e0a030"))
                if n % 12 == 0:  # under the black keys only (short keys: none), whole, apart from the others
                    p.setPen(QColor("#555"))
                    draw_fitting(p, r.adjusted(0, r.height() * BLACK_HEIGHT, 0, -8),
                                 Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom, note_name(n), drawn)
        p.end()
