"""A wheel turn, as the offscreen panel tests send it."""
from PyQt6.QtCore import QPoint, QPointF, Qt
from PyQt6.QtGui import QWheelEvent
from PyQt6.QtWidgets import QApplication


def wheel(w, notches, mods=Qt.KeyboardModifier.NoModifier):
    """One wheel event of ``notches`` (1 = 120 eighths of a degree, a clicky wheel's notch; a
    high-resolution wheel sends fractions)."""
    pos = QPointF(w.width() / 2, w.height() / 2)
    ev = QWheelEvent(pos, w.mapToGlobal(pos), QPoint(), QPoint(0, int(120 * notches)), Qt.MouseButton.NoButton,
                     mods, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(w, ev)
