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


SWH_AMP = "http://plugin.org.uk/swh-plugins/amp"


def need_swh_amp() -> str:
    """swh's amp LV2 plugin's URI; the test is skipped where it is not installed."""
    import pytest

    from realtime.io import lilv, lv2_scan

    if not lilv.available() or SWH_AMP not in lv2_scan.scan().plugins:
        pytest.skip("swh amp not installed (the set-up installs swh-lv2)")
    return SWH_AMP
