"""The rack: one strip per chain slot, generated from the processors' Param and Readout descriptors.

A strip shows the slot id and kind, the slot's DSP load (microseconds per block and share of
the block period), for a hosted plugin a warning once it made bad output (samples replaced by
silence, instance resets; from the engine's status each second), bypass, wet/dry mix, one
control per parameter (a Knob; a drop-down for enumerations), one widget per readout (bars
beside the knobs, numbers under the bypass button; gui.readouts) and move/remove buttons (not on the final safety stage). Every control (a knob, a
drop-down, bypass) has MIDI learn on its context menu. A parameter whose id starts with "_" is a
command the panel sends itself (CLEAR_PARAM: a click on a latched readout), not a control. No
processor-specific code: a new processor shows up with its own knobs and readouts.

A bypassed strip says so beside its kind ("BYPASSED") and draws its controls faded (still usable). A
processor with many controls (a hosted plugin with hundreds) gets rows of at most MAX_COLUMNS, and
past VISIBLE_ROWS rows its knobs scroll inside the strip: the rack stays one row of strips, none
thousands of pixels wide; more than MAX_BAR_COLUMNS readout bars wrap into rows that scroll beside
them. The rack remembers each knob's value in the preset loaded or saved last
(``Rack.mark_preset``), for its "Reset to preset" entry; a removed slot's too, for when Undo puts it back.
"""
from __future__ import annotations

import time

from PyQt6.QtCore import QObject, QPoint, Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QComboBox,
    QFrame,
    QGraphicsOpacityEffect,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui.knob import BURST_GAP_S, DIM_OPACITY, Knob, add_learn_actions
from gui.pick_combo import pick_only, wheel_needs_focus
from gui.readouts import ReadoutBar, ReadoutText, combine, readout_widget
from gui.undo import BYPASS_TARGET, MIX_TARGET
from realtime.dsp.processor import Param
from realtime.engine.control import ChainView

CLEAR_PARAM = "_clear_clip"  # a command: any change of it clears the slot's latched readouts (the meter's clip)
MIX_PARAM = Param("mix", "Mix", 0.0, 100.0, 100.0, unit="%", smoothing_ms=10.0)  # slot mix x 100
COLUMNS = 2
WRAP_AT = 16  # more controls than this: rows of at most MAX_COLUMNS (and MAX_GRID_WIDTH px)
MAX_COLUMNS = 8  # a plugin with hundreds of controls: rows of at most this many, not a strip 5,000 px wide
MAX_GRID_WIDTH = 640  # px: eight knobs; wider drop-downs make fewer columns
VISIBLE_ROWS = 4  # past this many rows the controls scroll inside the strip (the window stays usable at 1280x720)
MIN_VISIBLE_ROWS = 2  # the least of them the strip's scroll area shows
MAX_BAR_COLUMNS = 8  # more readout bars than this: rows of this many, scrolling beside the knobs (LSP x8: 36)
BYPASSED_STYLE = "color: white; background: #b0602a; border-radius: 3px; padding: 0 4px; font-weight: bold"
PLUGIN_PRESETS = "Plugin presets…"  # the first entry of a hosted plugin's preset drop-down
IDLE_LOAD = "DSP –"  # a strip's load readout while the engine is stopped (nothing measured)


class MidiTag(QObject):
    """MIDI learn on a control that draws no mapping itself (a choice's drop-down, the bypass
    button): a knob's learn / forget menu on a right-click, the mapping (or "learn…") handed to
    ``show``. ``learning``, ``mapping`` and ``update()`` as on a Knob: MidiLearn treats both alike."""

    learnRequested = pyqtSignal()
    forgetRequested = pyqtSignal()

    def __init__(self, widget: QWidget, show):
        super().__init__(widget)
        self.widget, self._show = widget, show
        self.learning = False
        self.mapping = ""
        widget.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        widget.customContextMenuRequested.connect(lambda pos: self.context_menu().exec(widget.mapToGlobal(pos)))

    def context_menu(self) -> QMenu:
        menu = QMenu(self.widget)
        add_learn_actions(menu, self)
        return menu

    def update(self) -> None:
        self._show("learn…" if self.learning else self.mapping)


def _vertical_scroller(inner: QWidget, name: str) -> QScrollArea:
    """``inner`` in a frameless scroll area that scrolls up and down only (a strip's own width stays)."""
    area = QScrollArea()
    area.setObjectName(name)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidgetResizable(True)
    area.setWidget(inner)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    return area


class SlotStrip(QFrame):
    paramChanged = pyqtSignal(str, str, float)  # slot id, param id, value
    bypassChanged = pyqtSignal(str, bool)
    mixChanged = pyqtSignal(str, float)
    removeRequested = pyqtSignal(str)
    moveRequested = pyqtSignal(str, int)
    learnRequested = pyqtSignal(str)  # target "slot.param"
    forgetRequested = pyqtSignal(str)
    clearRequested = pyqtSignal(str)  # slot id: a latched readout was clicked
    gestureEnded = pyqtSignal(str, str)  # slot id, param id (or gui.undo.MIX_TARGET): a knob's gesture ended
    presetPicked = pyqtSignal(str, str)  # slot id, the label of one of its plugin's own presets

    def __init__(self, slot, final: bool, parent=None, columns: tuple[int, tuple[int, ...]] = (-1, ())):
        """``columns``: where the slot's load and each of its readouts are in a readout record."""
        super().__init__(parent)
        self.slot_id = slot.id
        self.kind = slot.kind
        self.final = final
        self.controls: dict[str, QWidget] = {}  # param id -> Knob or QComboBox
        self.readouts: dict[str, QWidget] = {}  # readout id -> ReadoutBar or ReadoutText
        self.readout_values: dict[str, float] = {}  # readout id -> the value shown last
        self.mix_knob: Knob | None = None  # the slot's wet/dry (not on the final safety stage)
        self.tags: dict[str, MidiTag] = {}  # param id -> MIDI learn of its drop-down
        self._choice_at: dict[str, float] = {}  # param id -> when its drop-down last changed (monotonic)
        self.bypass_tag: MidiTag | None = None  # MIDI learn of the bypass button (not on the final safety stage)
        self.bypassed = False  # drawn as bypassed: the tag shown, the controls faded
        self._faded: list[QWidget] = []  # drawn by Qt (a drop-down, a number readout): faded by an effect
        self.knob_area: QScrollArea | None = None  # the controls' own scroll area, when they are too many rows
        self.meter_area: QScrollArea | None = None  # the readout bars' own, when they are more than MAX_BAR_COLUMNS
        self.setObjectName(f"strip:{slot.id}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        proc = slot.processor
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.setSpacing(4)

        head = QHBoxLayout()
        title = QLabel(f"<b>{slot.id}</b>")
        title.setToolTip(f"{slot.kind} · latency {proc.latency} samples")
        head.addWidget(title)
        head.addStretch(1)
        if not final:
            for text, delta, tip in (("◀", -1, "move earlier in the chain"), ("▶", 1, "move later in the chain")):
                b = QToolButton(text=text)
                b.setToolTip(tip)
                b.setObjectName(f"move{delta:+d}")
                b.clicked.connect(lambda _=False, d=delta: self.moveRequested.emit(self.slot_id, d))
                head.addWidget(b)
            rm = QToolButton(text="✕")
            rm.setObjectName("remove")
            rm.setToolTip("remove this slot (Undo puts it back)")
            rm.clicked.connect(lambda: self.removeRequested.emit(self.slot_id))
            head.addWidget(rm)
        lay.addLayout(head)
        sub = QLabel(_subtitle(slot.kind, proc))
        sub.setObjectName("subtitle")
        sub.setStyleSheet("color: gray")
        sub.setWordWrap(True)
        # the tag beside the (wrapping) kind: its room kept while hidden, so it widens no strip and
        # bypassing never makes the rack jump sideways
        self.bypassed_tag = QLabel("BYPASSED")
        self.bypassed_tag.setObjectName("bypassed")
        self.bypassed_tag.setStyleSheet(BYPASSED_STYLE)
        self.bypassed_tag.setToolTip("this slot is bypassed: its input passes through unprocessed")
        keep = self.bypassed_tag.sizePolicy()
        keep.setRetainSizeWhenHidden(True)
        self.bypassed_tag.setSizePolicy(keep)
        self.bypassed_tag.setVisible(False)
        kind_row = QHBoxLayout()
        kind_row.addWidget(sub, 1)
        kind_row.addWidget(self.bypassed_tag, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(kind_row)
        # a hosted plugin's own presets (label -> params): a pick moves the knobs (MainWindow, one undo step)
        self.plugin_presets: dict[str, dict] = dict(proc.describe_extra().get("presets") or {}) \
            if hasattr(proc, "describe_extra") else {}
        if self.plugin_presets:
            box = QComboBox()
            box.setObjectName("plugin_presets")
            box.addItem(PLUGIN_PRESETS)
            box.addItems(list(self.plugin_presets))
            box.setToolTip("the presets that come with the plugin: a pick sets its controls (Undo takes it back)")
            box.activated.connect(lambda i: self._preset_picked(box, i))
            pick_only(box)  # a pick sets every control: never a wheel turned or an arrow key
            lay.addWidget(box)
        self.load_column = columns[0]
        self.load_us = 0.0
        self.load_label = QLabel(IDLE_LOAD)
        self.load_label.setObjectName("load")
        self.load_label.setStyleSheet("color: gray")
        self.load_label.setToolTip("this slot's processing time per block (mean since the last redraw) "
                                   "and its share of the block period")
        lay.addWidget(self.load_label)
        self.faults_label = QLabel()  # a hosted plugin's bad output: shown once there is some
        self.faults_label.setObjectName("faults")
        self.faults_label.setStyleSheet("color: #e0903a")
        self.faults_label.setWordWrap(True)
        self.faults_label.setToolTip("output samples the plugin made that were not finite or far beyond full scale, "
                                     "replaced by silence, and the resets (deactivate + activate) of the plugin "
                                     "instance that made them")
        self.faults_label.setVisible(False)
        lay.addWidget(self.faults_label)

        self.bypass = QPushButton("Bypass")
        self.bypass.setCheckable(True)
        self.bypass.setChecked(slot.bypass)
        self.bypass.setObjectName("bypass")
        if final:
            self.bypass.setText("Always on")
            self.bypass.setEnabled(False)
            self.bypass.setToolTip("the safety stage ends every chain and cannot be bypassed")
        else:
            self.bypass.setToolTip("bypass (the processor keeps running; its dry path stays latency-aligned)")
            self.bypass.toggled.connect(lambda on: self.bypassChanged.emit(self.slot_id, on))
            self.bypass.toggled.connect(self._show_bypassed)
            # a click is a gesture of its own: on, then off later, are two undo steps (they merged into none)
            self.bypass.clicked.connect(lambda: self.gestureEnded.emit(self.slot_id, BYPASS_TARGET))
            self.bypass_tag = self._tag(self.bypass, "bypass", lambda t: self.bypass.setText(_tagged("Bypass", t)))
        lay.addWidget(self.bypass)
        self._readout_descs = tuple(getattr(proc, "readouts", ()))
        self._readout_cols = tuple(columns[1]) or (-1,) * len(self._readout_descs)
        bars, texts = [], QGridLayout()
        texts.setHorizontalSpacing(8)
        texts.setVerticalSpacing(0)
        clearable = any(d.id == CLEAR_PARAM for d in proc.params)
        for r in self._readout_descs:
            w = readout_widget(r)
            self.readouts[r.id] = w
            if isinstance(w, ReadoutBar):
                bars.append(w)
            else:  # numbers two to a row: a strip stays short
                n = texts.count()
                texts.addWidget(w, n // 2, n % 2)
                self._faded.append(w)
                if clearable:
                    w.make_clearable(lambda: self.clearRequested.emit(self.slot_id))

        grid = QGridLayout()
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(4)
        params = [d for d in proc.params if not d.id.startswith("_")]  # "_": a command the panel sends, no knob
        controls = [self._control(d, proc.get_param(d.id)) for d in params]
        if not final:
            controls.append(self._control(MIX_PARAM, 100.0 * slot.mix))
        self.first_control = controls[0] if controls else None  # (the rack keeps its row in sight: first_row_height)
        cols = grid_columns([w.sizeHint().width() for w in controls], grid.horizontalSpacing())
        for i, w in enumerate(controls):
            grid.addWidget(w, i // cols, i % cols)
        body = QHBoxLayout()
        if grid.rowCount() > VISIBLE_ROWS:
            body.addWidget(self._scrolling(texts, grid))
        else:
            lay.addLayout(texts)
            body.addLayout(grid)
        if len(bars) > MAX_BAR_COLUMNS:  # many: rows in an area of their own, not a strip thousands of px wide
            body.setAlignment(grid, Qt.AlignmentFlag.AlignTop)  # (the knobs stay up beside the taller area)
            body.addWidget(self._meter_area(bars))
        else:
            for b in bars:  # meters beside the knobs: the strip grows wider, not taller
                body.addWidget(b)
        if self.knob_area is None and self.meter_area is None:
            lay.addLayout(body)
            lay.addStretch(1)
        else:  # the scroll areas take the height the rack gives
            lay.addLayout(body, 1)
        self._show_bypassed(slot.bypass and not final)

    def _scrolling(self, texts: QGridLayout, grid: QGridLayout) -> QScrollArea:
        """The number readouts and the controls in a scroll area of their own, as wide as they are and
        as high as the rack lets it be (at least MIN_VISIBLE_ROWS rows): the strip stays in the window."""
        inner = QWidget()
        v = QVBoxLayout(inner)
        v.setContentsMargins(0, 0, 0, 0)
        v.addLayout(texts)
        v.addLayout(grid)
        v.addStretch(1)
        area = _vertical_scroller(inner, "knob-area")
        size = inner.sizeHint()
        row = grid.sizeHint().height() / grid.rowCount()
        area.setFixedWidth(size.width() + area.verticalScrollBar().sizeHint().width())
        area.setMinimumHeight(int(row * MIN_VISIBLE_ROWS))
        area.setMaximumHeight(size.height())
        area.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)
        self.knob_area = area
        return area

    def _meter_area(self, bars: list[ReadoutBar]) -> QScrollArea:
        """The readout bars in rows of MAX_BAR_COLUMNS in a scroll area of their own (beside the knobs,
        which may scroll apart): as wide as a row, as high as the rack lets it be (at least one row)."""
        inner = QWidget()
        grid = QGridLayout(inner)
        grid.setContentsMargins(0, 0, 0, 0)
        for i, b in enumerate(bars):
            grid.addWidget(b, i // MAX_BAR_COLUMNS, i % MAX_BAR_COLUMNS)
        area = _vertical_scroller(inner, "meter-area")
        area.setFixedWidth(inner.sizeHint().width() + area.verticalScrollBar().sizeHint().width())
        area.setMinimumHeight(bars[0].minimumSizeHint().height())
        area.setMaximumHeight(inner.sizeHint().height())
        area.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)
        self.meter_area = area
        return area

    def _show_bypassed(self, on: bool) -> None:
        """Draw the strip as bypassed (or not): the tag shown, the controls and readouts faded."""
        if on == self.bypassed:
            return
        self.bypassed = on
        self.bypassed_tag.setVisible(on)
        for k in self.knobs():
            k.set_dimmed(on)
        for w in self.readouts.values():
            if isinstance(w, ReadoutBar):
                w.set_dimmed(on)
        for w in self._faded:
            w.setGraphicsEffect(_faded_effect(w) if on else None)

    def show_readouts(self, records, period_us: float) -> None:
        """Show the readouts and this slot's load from the readout records of the blocks since the
        last redraw (``HostBase.read_readouts``); ``period_us``: the block period."""
        if self._readout_descs:
            for r, v in zip(self._readout_descs, combine(records, self._readout_descs, self._readout_cols)):
                self.readouts[r.id].set_value(v)
                self.readout_values[r.id] = v
        if 0 <= self.load_column < records.shape[1]:
            self.load_us = float(records[:, self.load_column].mean())
            self.load_label.setText(f"DSP {self.load_us:.1f} µs · {100.0 * self.load_us / max(period_us, 1e-9):.1f} %")

    def show_faults(self, bad_samples: int, resets: int) -> None:
        """A hosted plugin's bad output so far (``EngineHost.status``'s ``slot_faults``); nothing shown
        while there is none."""
        parts = [f"{n} {what}{'' if n == 1 else 's'}" for n, what in ((bad_samples, "bad sample"), (resets, "reset"))
                 if n]
        self.faults_label.setText("⚠ " + ", ".join(parts))
        self.faults_label.setVisible(bool(parts))

    def clear_latches(self) -> None:
        """Show the latched readouts cleared now (the engine clears them at its next block; stopped,
        at its next start)."""
        for w in self.readouts.values():
            if isinstance(w, ReadoutText) and w.clearable:
                w.set_value(0.0)
                self.readout_values[w.readout.id] = 0.0

    def fall(self) -> None:
        """The engine is stopped: the readout bars drop to rest (numbers keep what they said last),
        the load readout shows that nothing is measured."""
        self.load_us = 0.0
        self.load_label.setText(IDLE_LOAD)
        for w in self.readouts.values():
            if isinstance(w, ReadoutBar):
                w.fall()

    def _control(self, d: Param, value: float) -> QWidget:
        if d.choices:
            box = QWidget()
            v = QVBoxLayout(box)
            v.setContentsMargins(2, 2, 2, 2)
            label = QLabel(d.name)
            v.addWidget(label, alignment=Qt.AlignmentFlag.AlignHCenter)
            combo = QComboBox()
            combo.addItems(list(d.choices))
            combo.setCurrentIndex(int(round(value)))
            combo.setObjectName(f"choice:{d.id}")
            combo.setToolTip(f"{d.name}: {', '.join(d.choices)}")
            combo.currentIndexChanged.connect(lambda i, pid=d.id: self._choice_changed(pid, i))
            # a pick from the list (or a key on the focused box) is an undo step of its own
            combo.activated.connect(lambda _i, pid=d.id: self._end_choice_gesture(pid))
            wheel_needs_focus(combo)  # a wheel turned while scrolling the rack changed the choice
            v.addWidget(combo)
            v.addStretch(1)
            self._faded.append(box)
            self.controls[d.id] = combo
            self.tags[d.id] = self._tag(combo, d.id, lambda t, n=d.name: label.setText(_tagged(n, t)))
            return box
        knob = Knob(d, value)
        target = f"{self.slot_id}.{d.id}"
        if d is MIX_PARAM:
            knob.valueChanged.connect(lambda v: self.mixChanged.emit(self.slot_id, v / 100.0))
            self.mix_knob = knob
        else:
            knob.valueChanged.connect(lambda v, pid=d.id: self.paramChanged.emit(self.slot_id, pid, v))
            self.controls[d.id] = knob
        undo_target = MIX_TARGET if d is MIX_PARAM else d.id
        knob.gestureEnded.connect(lambda t=undo_target: self.gestureEnded.emit(self.slot_id, t))
        knob.learnRequested.connect(lambda t=target: self.learnRequested.emit(t))
        knob.forgetRequested.connect(lambda t=target: self.forgetRequested.emit(t))
        return knob

    def _preset_picked(self, box: QComboBox, i: int) -> None:
        label = box.itemText(i)
        box.setCurrentIndex(0)  # a list to pick from, not a state: the knobs show what it set
        if i > 0:
            self.presetPicked.emit(self.slot_id, label)

    def _choice_changed(self, pid: str, i: int) -> None:
        """A drop-down's change; one after a pause of BURST_GAP_S (as a knob's wheel burst) starts a
        new undo step, so picks far apart in time never merge into one."""
        now = time.monotonic()
        last = self._choice_at.get(pid)
        if last is not None and now - last > BURST_GAP_S:
            self.gestureEnded.emit(self.slot_id, pid)
        self._choice_at[pid] = now
        self.paramChanged.emit(self.slot_id, pid, float(i))

    def _end_choice_gesture(self, pid: str) -> None:
        self._choice_at.pop(pid, None)
        self.gestureEnded.emit(self.slot_id, pid)

    def _tag(self, widget: QWidget, pid: str, show) -> MidiTag:
        tag = MidiTag(widget, show)
        target = f"{self.slot_id}.{pid}"
        tag.learnRequested.connect(lambda: self.learnRequested.emit(target))
        tag.forgetRequested.connect(lambda: self.forgetRequested.emit(target))
        return tag

    def knobs(self) -> list[Knob]:
        return [w for w in self.controls.values() if isinstance(w, Knob)] + ([self.mix_knob] if self.mix_knob else [])

    def knob_values(self) -> dict[str, float]:
        """Every knob's value now, by parameter id (the mix: MIX_TARGET, apart from a plugin's own "mix")."""
        out = {pid: w.value() for pid, w in self.controls.items() if isinstance(w, Knob)}
        if self.mix_knob is not None:
            out[MIX_TARGET] = self.mix_knob.value()
        return out

    def set_preset_values(self, values: dict[str, float]) -> None:
        """The values (as ``knob_values`` gives them) a knob's "Reset to preset" goes back to."""
        for pid, w in self.controls.items():
            if isinstance(w, Knob):
                w.preset_value = values.get(pid)
        if self.mix_knob is not None:
            self.mix_knob.preset_value = values.get(MIX_TARGET)

    def learnables(self) -> list:
        """Every control MIDI learn can map: the knobs, the drop-downs' and the bypass button's tags."""
        return self.knobs() + list(self.tags.values()) + ([self.bypass_tag] if self.bypass_tag else [])

    def set_value(self, param_id: str, value: float, emit: bool = False) -> None:
        """Move a control (e.g. from a MIDI controller) without (or with) re-sending it."""
        w = self.controls[param_id]
        if isinstance(w, QComboBox):
            w.blockSignals(not emit)
            w.setCurrentIndex(int(round(value)))
            w.blockSignals(False)
        else:
            w.setValue(value, emit=emit)

    def show(self, param_id: str, value: float, what: str = "param") -> None:
        """Show a value the engine already has (set elsewhere, e.g. by a MIDI controller),
        without sending it again. ``what``: "param" (a processor parameter), "mix" (0..1) or
        "bypass"."""
        if what == "bypass":
            self.bypass.blockSignals(True)
            self.bypass.setChecked(bool(value))
            self.bypass.blockSignals(False)
            self._show_bypassed(bool(value) and not self.final)
        elif what == "mix":
            if self.mix_knob is not None:
                self.mix_knob.setValue(100.0 * value, emit=False)
        elif param_id in self.controls:
            self.set_value(param_id, value)


class Rack(QScrollArea):
    """Strips side by side, scrolling sideways; rebuilt whenever the chain's structure changes."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.strips: dict[str, SlotStrip] = {}
        # slot id -> its knob values in the preset loaded or saved last (a slot removed since: kept till the next)
        self._preset: dict[str, dict[str, float]] = {}
        self._inner = QWidget()
        self._row = QHBoxLayout(self._inner)
        self._row.setContentsMargins(4, 4, 4, 4)
        self.setWidget(self._inner)

    def rebuild(self, chain, connect) -> None:
        """New strips for ``chain``; ``connect(strip)`` wires each one to the window."""
        while self._row.count():
            item = self._row.takeAt(0)
            w = item.widget()
            if w is not None:
                w.setParent(None)  # gone from the window now, not at the next event loop turn
                w.deleteLater()
        self.strips = {}
        # where each slot's load and readouts are in a readout record: a Chain says so in its description
        view = chain if isinstance(chain, ChainView) else ChainView(chain.describe())
        slots = chain.slots
        # a structural change keeps what the preset held for the slots that stay, and for those that
        # left (an undo may put one back) until the next preset; a new slot was in no preset: its
        # values now (the defaults) stand in
        for i, s in enumerate(slots):
            v = view.slots[i]
            strip = SlotStrip(s, final=i == len(slots) - 1, columns=(v.load_column, v.processor.readout_columns))
            connect(strip)
            for name, can in (("move-1", i > 0), ("move+1", i < len(slots) - 2)):  # the ends: the move does nothing
                b = strip.findChild(QToolButton, name)
                if b is not None:
                    b.setEnabled(can)
            self.strips[s.id] = strip
            self._preset[s.id] = self._preset.get(s.id) or strip.knob_values()
            strip.set_preset_values(self._preset[s.id])
            self._row.addWidget(strip)
            if i < len(slots) - 1:
                arrow = QLabel("→")
                arrow.setStyleSheet("color: gray; font-size: 16px")
                self._row.addWidget(arrow)
        self._row.addStretch(1)

    def first_row_height(self) -> int:
        """The height that shows every strip down to its first row of controls (scroll bar included):
        what the window keeps for the rack when it gets short (gui.window.Panes)."""
        bottom = 0
        for strip in self.strips.values():
            c = strip.first_control
            if c is not None:
                y = c.mapTo(self._inner, QPoint(0, c.height())).y()
                if strip.knob_area is not None:  # (as if its knobs were not scrolled)
                    y += strip.knob_area.verticalScrollBar().value()
                bottom = max(bottom, y)
        if not bottom:
            return 0
        return (bottom + self._row.contentsMargins().bottom() + 2 * self.frameWidth()
                + self.horizontalScrollBar().sizeHint().height())

    def mark_preset(self) -> None:
        """The knobs' values now are the preset's (it was just loaded or saved): their "Reset to
        preset" goes back to these."""
        self._preset = {sid: strip.knob_values() for sid, strip in self.strips.items()}
        for sid, strip in self.strips.items():
            strip.set_preset_values(self._preset[sid])

    def forget_preset(self, slot_id: str) -> None:
        """``slot_id`` names a new slot (an id a removed one had): the removed one's preset values are not its."""
        self._preset.pop(slot_id, None)

    def close_entries(self, apply: bool) -> None:
        """Close the knobs' open typed-value entries (``Knob.close_entry``): before the chain changes."""
        for strip in self.strips.values():
            for k in strip.knobs():
                k.close_entry(apply)

    def show_readouts(self, records, period_us: float) -> None:
        """Every strip's readouts and load from the records since the last redraw."""
        for strip in self.strips.values():
            strip.show_readouts(records, period_us)

    def show_faults(self, faults: dict) -> None:
        """slot id -> (bad output samples, instance resets), from the engine's status."""
        for sid, strip in self.strips.items():
            strip.show_faults(*faults.get(sid, (0, 0)))

    def fall(self) -> None:
        """The engine is stopped: every strip's readout bars drop to rest, its load readout to idle."""
        for strip in self.strips.values():
            strip.fall()

    def knob(self, target: str) -> Knob | None:
        """The knob for "slot.param" (a processor parameter first, then the slot's "mix")."""
        slot_id, _, pid = target.partition(".")
        strip = self.strips.get(slot_id)
        if strip is None:
            return None
        w = strip.controls.get(pid)
        if w is None and pid == "mix":
            w = strip.mix_knob
        return w if isinstance(w, Knob) else None

    def learnable(self, target: str) -> Knob | MidiTag | None:
        """What shows MIDI learn for "slot.param" (a knob, or a drop-down's tag), else for the slot's
        "mix" or "bypass": the same lookup as the engine's ``set_target``."""
        k = self.knob(target)
        slot_id, _, pid = target.partition(".")
        strip = self.strips.get(slot_id)
        if k is not None or strip is None:
            return k
        return strip.tags.get(pid) or (strip.bypass_tag if pid == "bypass" else None)


def grid_columns(widths: list[int], spacing: int) -> int:
    """How many columns controls of these widths take, in order: few, two; up to WRAP_AT, at most
    three rows (wider, not taller: the window must stay usable at 1280x720); more, rows of at most
    MAX_COLUMNS and MAX_GRID_WIDTH pixels."""
    n = len(widths)
    cols = COLUMNS if n < 8 else COLUMNS + 1 if n < 12 else -(-n // 3)
    if n <= WRAP_AT:
        return cols
    cols = min(cols, MAX_COLUMNS)
    while cols > COLUMNS and sum(max(widths[c::cols]) for c in range(cols)) + spacing * (cols - 1) > MAX_GRID_WIDTH:
        cols -= 1
    return cols


def _faded_effect(widget: QWidget) -> QGraphicsOpacityEffect:
    effect = QGraphicsOpacityEffect(widget)
    effect.setOpacity(DIM_OPACITY)
    return effect


def _tagged(text: str, tag: str) -> str:
    """A control's label with its MIDI mapping (or "learn…") after it."""
    return f"{text} · {tag}" if tag else text


def _subtitle(kind: str, proc) -> str:
    """The line under a strip's title: the kind, or for a hosted plugin its name, how its channels
    were adapted, and a warning when it does not promise real-time safety."""
    extra = proc.describe_extra() if hasattr(proc, "describe_extra") else {}
    if "plugin_name" not in extra:
        return kind
    parts = [f"LV2: {extra['plugin_name']}"]
    if extra.get("adaptation"):
        parts.append(extra["adaptation"])
    if not extra.get("hard_rt", True):
        parts.append("⚠ not hard-RT capable")
    return " · ".join(parts)
