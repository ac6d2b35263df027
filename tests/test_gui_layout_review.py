"""Layout fixes from the review of the knob panel, offscreen: a plugin with dozens of output meters
wraps them into rows (no strip 2,400 px wide), meter scales label compactly and never cut a number,
a short window keeps the rack's first row of knobs (the spectrum gives first, then the keyboard),
labels that do not fit are left out rather than drawn into each other, and the on-screen
keyboard's octave stops where MIDI does."""
import types

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import QPoint, QRectF, Qt  # noqa: E402
from PyQt6.QtGui import QPainter  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

import gui.keyboard  # noqa: E402
import gui.meters  # noqa: E402
import gui.spectrum  # noqa: E402
from gui.keyboard import KEYMAP, PianoKeyboard, note_name  # noqa: E402
from gui.meters import SCALE_DB, LevelMeter  # noqa: E402
from gui.rack import MAX_GRID_WIDTH, SlotStrip  # noqa: E402
from gui.readouts import ReadoutBar  # noqa: E402
from gui.spectrum import SpectrumView  # noqa: E402
from gui.synth_panel import SynthPanel  # noqa: E402
from realtime.dsp.processor import Param, Readout  # noqa: E402

BAR_ROW = 8 * 60  # px: eight readout bars and their spacing, generously


def recorded(monkeypatch, module) -> list:
    """Every text ``module``'s painters draw into a rectangle: (rect, the box the text takes, text)."""
    texts = []

    class Recorder(QPainter):
        def drawText(self, *a):
            if isinstance(a[0], QRectF):
                texts.append((QRectF(a[0]), self.boundingRect(a[0], a[1], a[2]), a[2]))
            super().drawText(*a)

    monkeypatch.setattr(module, "QPainter", Recorder)
    return texts


def paint(widget, w: int, h: int) -> None:
    widget.resize(w, h)
    widget.grab()


def assert_apart(labels) -> None:
    """No label is cut (its text wider or taller than its rectangle) or runs into another."""
    for rect, box, text in labels:
        assert box.width() <= rect.width() + 0.5 and box.height() <= rect.height() + 0.5, (text, rect, box)
    for i, (_, a, ta) in enumerate(labels):
        for _, b, tb in labels[i + 1:]:
            assert not a.intersects(b), (ta, a, tb, b)


# ---------------------------------------------------------------------------- 1. many output meters
def _meters_slot(n_params: int, n_bars: int):
    params = tuple(Param(f"p{i}", f"Band {i}", -24.0, 24.0, 0.0, unit="dB") for i in range(n_params))
    readouts = tuple(Readout(f"r{i}", f"Level {i}", "dB", -60.0, 0.0, kind="level") for i in range(n_bars))
    proc = types.SimpleNamespace(params=params, readouts=readouts, latency=0, get_param=lambda pid: 0.0)
    return types.SimpleNamespace(id="big", kind="big", processor=proc, bypass=False, mix=1.0)


def test_many_readout_bars_wrap_into_rows_beside_the_knobs_few_stay_in_one(qtbot):
    for n_params, n_bars in ((3, 36), (40, 36), (3, 4)):
        strip = SlotStrip(_meters_slot(n_params, n_bars), final=False)
        qtbot.addWidget(strip)
        strip.resize(strip.sizeHint().width(), 600)
        strip.setVisible(True)  # (SlotStrip.show shows a value)
        QApplication.processEvents()
        bars = [w for w in strip.readouts.values() if isinstance(w, ReadoutBar)]
        assert len(bars) == n_bars
        if n_bars <= 8:  # a small plugin as before: one row, beside the knobs
            assert len({b.mapTo(strip, QPoint(0, 0)).y() for b in bars}) == 1
            assert all(b.parentWidget() is strip for b in bars)
            continue
        assert len({b.mapTo(strip, QPoint(0, 0)).x() for b in bars}) <= 8  # rows of at most eight, not one of 36
        assert strip.sizeHint().width() <= MAX_GRID_WIDTH + BAR_ROW + 60
        knob, bypass = strip.controls["p0"], strip.bypass
        assert knob.mapTo(strip, QPoint(0, 0)).y() < bypass.mapTo(strip, QPoint(0, bypass.height())).y() + 40


def test_lsp_multiband_dynamics_with_36_meters_is_no_2400_px_strip(window):
    from realtime.io import lv2_scan

    uri = "http://lsp-plug.in/plugins/lv2/sc_mb_dyna_processor_stereo"
    if uri not in lv2_scan.scan().plugins:
        pytest.skip("LSP plugins not installed")
    w = window()
    w.resize(1280, 720)
    sid = w.add_slot("lv2", uri)
    QApplication.processEvents()
    strip = w.rack.strips[sid]
    width = strip.sizeHint().width()  # (what the rack lays it out at)
    assert sum(isinstance(r, ReadoutBar) for r in strip.readouts.values()) >= 30
    assert width <= MAX_GRID_WIDTH + 40 + BAR_ROW + 60  # (the knob area's scroll bar: 40)
    assert width <= w.rack.viewport().width()  # the whole strip, ◀ ▶ ✕ too, in a 1280 px window


# ---------------------------------------------------------------------------- 2. tick labels
def test_readout_bar_ticks_are_short_and_never_cut(qtbot, monkeypatch):
    texts = recorded(monkeypatch, gui.meters)
    for lo, hi in ((0.0, 384000.0), (0.0, 3981.07), (-60.0, 0.0), (0.0, 1.0), (-24.0, 0.0)):
        bar = ReadoutBar(Readout("f", "Frequency", "Hz", lo, hi, kind="level"))
        qtbot.addWidget(bar)
        for h in (300, 120, 70):  # tall, as built, the least
            texts.clear()
            paint(bar, bar.sizeHint().width(), h)
            ticks = [t for t in texts if t[0].x() > 0]  # (the name and the value span the bar's width)
            assert ticks and all(len(t[2]) <= 5 for t in ticks), (lo, hi, h, [t[2] for t in ticks])
            assert_apart(ticks)


# ---------------------------------------------------------------------------- 3. a short window
def _first_rows_shown(w) -> bool:
    """Every strip's first control lies whole inside the rack's viewport."""
    vp = w.rack.viewport()
    for strip in w.rack.strips.values():
        c = next(iter(strip.controls.values()), strip.mix_knob)
        if c.mapTo(vp, QPoint(0, c.height())).y() > vp.height():
            return False
    return True


def test_a_short_window_keeps_the_racks_first_row_of_knobs(window):
    w = window("synth")
    w.resize(764, 700)
    QApplication.processEvents()
    split = w.splitter
    tall = split.sizes()
    assert tall[1] > 0 and tall[2] > 0 and _first_rows_shown(w)
    w.resize(764, 420)
    QApplication.processEvents()
    rack, spectrum, keys = split.sizes()
    assert _first_rows_shown(w)  # it had ~120 px: the strips' titles only
    assert spectrum < tall[1] and keys == tall[2]  # the spectrum gave first; the keyboard kept its height
    w.resize(764, 300)  # (or the least the window allows)
    QApplication.processEvents()
    sizes = split.sizes()
    assert sizes[1] == 0 and sizes[0] == sum(sizes)  # both gave all: the rack has the whole height
    w.resize(764, 700)  # taller again: both back as they were
    QApplication.processEvents()
    assert split.sizes() == tall and w.spectrum.height() == tall[1]


# ---------------------------------------------------------------------------- 4. labels in a short window
def test_level_meter_scale_labels_never_run_into_each_other(qtbot, monkeypatch):
    texts = recorded(monkeypatch, gui.meters)
    m = LevelMeter("In")
    qtbot.addWidget(m)
    for h in (120, 160, 300):
        texts.clear()
        paint(m, m.sizeHint().width(), h)
        scale = [t for t in texts if t[2] in {f"{db}" for db in SCALE_DB}]
        assert scale and scale[0][2] == "0"
        assert_apart(scale)
        if h >= 300:
            assert len(scale) == len(SCALE_DB)  # tall enough: every label


def test_spectrum_labels_never_run_into_each_other(qtbot, monkeypatch):
    texts = recorded(monkeypatch, gui.spectrum)
    v = SpectrumView()
    qtbot.addWidget(v)
    v.set_sample_rate(48000)
    for h in (60, 80, 112):
        texts.clear()
        paint(v, 600, h)
        db = [t for t in texts if t[2] in {"0", "-20", "-40", "-60", "-80"}]
        hz = [t for t in texts if t[2] in {"50", "100", "200", "500", "1k", "2k", "5k", "10k", "20k"}]
        assert db and hz
        assert_apart(db + hz)
        if h >= 112:
            assert len(db) == 5


def test_keyboard_c_labels_sit_under_the_black_keys_or_not_at_all(qtbot, monkeypatch):
    texts = recorded(monkeypatch, gui.keyboard)
    k = PianoKeyboard()
    qtbot.addWidget(k)
    for w, h in ((480, 40), (480, 60), (480, 90), (600, 90), (300, 90)):
        texts.clear()
        paint(k, w, h)
        black_bottom = next(r for _, r, black in k._rects() if black).bottom()
        whites = {note_name(n): r for n, r, black in k._rects() if not black}
        for rect, box, text in texts:
            assert text.startswith("C") and box.top() >= black_bottom, (w, h, text, box)
            key = whites[text]
            assert key.left() - 0.5 <= box.left() and box.right() <= key.right() + 0.5, (w, h, text, box)  # whole
        assert_apart(texts)
        if h >= 90 and w >= 600:
            assert len(texts) == 5  # C2 … C6, as before


# ---------------------------------------------------------------------------- 5. the top octave
def test_the_keyboards_top_octave_plays_and_shows_only_midi_notes(qtbot):
    panel = SynthPanel()
    qtbot.addWidget(panel)
    kb = panel.keyboard
    sent = []
    kb.noteOn.connect(lambda n, v: sent.append(n))
    for _ in range(8):
        QTest.keyClick(kb, Qt.Key.Key_X)
    assert kb.octave == 9 and panel.octave_label.text() == "keys C9–G9 (Z/X)"
    for key in KEYMAP:
        QTest.keyClick(kb, key)
    assert sent == list(range(120, 128))  # C9 … G9; the keys past G9 send nothing
    QTest.keyClick(kb, Qt.Key.Key_Z)
    assert panel.octave_label.text() == "keys C8–D#9 (Z/X)"
