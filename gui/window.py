"""The main window: menu bar (File, Edit, Engine, Help), toolbar (start/stop, presets, add slot,
settings), input meter, rack, output meter, spectrum analyser, synth panel (only with a synth
slot; the three share a splitter), engine status bar, and an error banner.

Load / Save / Save as have the platform's shortcuts (Ctrl+O, Ctrl+S, Ctrl+Shift+S), window-wide; so
have Undo / Redo (Ctrl+Z; Ctrl+Shift+Z or Ctrl+Y) of the controls' values and of slots added,
removed or moved (gui.undo) and Quit (Ctrl+Q). The menus hold the toolbar's own actions (one
QAction, one shortcut: two actions on one key are ambiguous to Qt, and neither fires).
Every user action runs through ``_guard``: an exception (bad preset, device missing, model that
fails to load) becomes a message in the banner, never a crash; a click dismisses the banner's
lines (the status poll shows one again only when it changed, or after a start or a new chain).
Meters, the strips' readouts and per-slot load, and the spectrum redraw at 30 Hz from the
engine's meter, readout and audio-tap rings (stopped, the bars fall to rest); the status line
once a second (engine stats cost milliseconds of numpy).
The engine itself runs in a process of its own (gui.remote): the window never holds the GIL
the DSP thread needs. Actions that wait for it (start, stop, structure, presets, audio settings)
run in the background there (gui.actions): the window keeps running, shows it is busy, and
disables what must wait meanwhile. Preset actions are in gui.preset_io, MIDI learn in gui.midi_learn, the
synth panel in gui.synth_panel. A typed value left open in a knob's entry is applied before such an
action (a step of its own; Undo / Redo drop it), never in its middle; a close asked for while one
runs, with unsaved changes to ask about, waits for its end (the chain is in flux until then).
"""
from __future__ import annotations

import functools
import math
import threading
import time

from PyQt6.QtCore import QEvent, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QKeySequence, QUndoStack
from PyQt6.QtWidgets import (
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStatusBar,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui.actions import ActionRunner
from gui.add_box import AddBox
from gui.meters import LevelMeter
from gui.midi import NONE, MidiInput
from gui.midi_learn import MidiLearn
from gui.pick_combo import pick_only
from gui.preset_io import PresetActions, PresetPicker
from gui.rack import CLEAR_PARAM, MIX_PARAM, Rack, SlotStrip
from gui.remote import RemoteEngineHost
from gui.settings import APP, Settings, SettingsDialog
from gui.spectrum import SpectrumView
from gui.synth_panel import SynthPanel
from gui.undo import BYPASS_TARGET, MIX_TARGET, SlotChange, ValueChange, end_gesture, end_gestures
from realtime.dsp.presets import load_preset
from realtime.engine.config import EngineConfig
from realtime.engine.control import PARAM

NOTE_ON, NOTE_OFF = 0x90, 0x80
FOLLOW_POLLS = 10  # redraws (33 ms apart) an engine-side choice must persist before the panel takes it
METER_QUIET_S = 0.15  # while an action runs, no meter record for this long (and 3 blocks): the meters fall
# preset actions: (toolbar text, menu text, method, standard key, the keys where a platform binds none:
# Windows has no Save As)
FILE_ACTIONS = (("Load…", "&Open Preset…", "_load_dialog", QKeySequence.StandardKey.Open, "Ctrl+O"),
                ("Save", "&Save", "_save", QKeySequence.StandardKey.Save, "Ctrl+S"),
                ("Save as…", "Save &As…", "_save_dialog", QKeySequence.StandardKey.SaveAs, "Ctrl+Shift+S"))
# undo / redo: (the stack's action factory, standard key, keys added to the platform's where it lacks them)
EDIT_ACTIONS = (("createUndoAction", QKeySequence.StandardKey.Undo, ("Ctrl+Z",)),
                ("createRedoAction", QKeySequence.StandardKey.Redo, ("Ctrl+Shift+Z", "Ctrl+Y")))
SYNTH_PANE = 2  # the splitter's panes: rack, spectrum, synth panel
CLOSE_WAIT_S = 2.0  # a close waiting for an action (``_may_close``) asks what to do once it has waited this long
RESUME_AFTER_S = 10.0  # a restart starts the stream again only if it had played this long before the engine died


def _from_strip(change):
    """A strip's signal handler: a change for a slot no longer in the chain (a strip of a chain just
    replaced: e.g. its entry applied as the rack rebuilt) is ignored, and an error goes to the banner,
    never out of the Qt slot."""
    @functools.wraps(change)
    def handler(self, slot_id: str, *args) -> None:
        if slot_id in self._slot_ids():
            self._guard(change, self, slot_id, *args)

    return handler


class Panes(QSplitter):
    """Rack, spectrum and synth panel, one above the other. A window made shorter leaves the rack
    ``keep()`` pixels (its strips' first row of knobs): the spectrum gives them first (shut once its
    minimum is still too much), then the keyboard; made taller again, the window gives them back
    (the keyboard first) while the rack keeps its row. A drag on a handle stands: the debt is
    forgotten."""

    def __init__(self, keep):
        super().__init__(Qt.Orientation.Vertical)
        self._keep = keep
        self._taken: dict[int, int] = {}  # pane -> its height before the rack took from it
        self._hidden_at: dict[int, int] = {}  # hidden pane -> its height when shown (``heights``)
        self.splitterMoved.connect(lambda _pos, _i: self._taken.clear())

    def addWidget(self, pane) -> None:
        super().addWidget(pane)
        pane.installEventFilter(self)  # its hiding: see eventFilter

    def eventFilter(self, obj, e) -> bool:
        if e.type() == QEvent.Type.HideToParent and (i := self.indexOf(obj)) >= 0 and self.sizes()[i] > 0:
            self._hidden_at[i] = self.sizes()[i]  # (the splitter has not yet laid it out at 0)
        return super().eventFilter(obj, e)

    def setSizes(self, sizes) -> None:
        for i, n in enumerate(sizes[:self.count()]):
            if n > 0 and self.widget(i).isHidden():  # what it opens at
                self._hidden_at[i] = n
        super().setSizes(sizes)

    def hidden_height(self, i: int) -> int:
        """Pane ``i``'s height while hidden: as it last showed (or was given), else its own."""
        return self._hidden_at.get(i) or self.widget(i).sizeHint().height()

    def heights(self) -> list[int]:
        """The panes' heights to remember: ``sizes()``, but a hidden pane's (0 there: restored, it would
        open shut, as the keyboard did after a session without a synth) is ``hidden_height``."""
        return [self.hidden_height(i) if self.widget(i).isHidden() else n for i, n in enumerate(self.sizes())]

    def resizeEvent(self, e):
        super().resizeEvent(e)
        if e.oldSize().isValid() and e.size().height() != e.oldSize().height():
            self._fit()

    def _fit(self) -> None:
        sizes, keep = self.sizes(), self._keep()
        shown = [not self.widget(i).isHidden() for i in range(self.count())]
        least = [self.widget(i).minimumSizeHint().height() for i in range(self.count())]
        for i in (2, 1):  # taller: back as they were, the keyboard first
            if i in self._taken and shown[i]:
                back = min(self._taken[i] - sizes[i], sizes[0] - keep)
                if back > 0 and (sizes[i] or back >= least[i]):  # (a shut pane opens at its minimum or more)
                    sizes[i] += back
                    sizes[0] -= back
                if sizes[i] >= self._taken[i]:
                    del self._taken[i]
        for i in (1, 2):  # shorter: the spectrum gives first, then the keyboard
            short = keep - sizes[0]
            if short > 0 and sizes[i] > 0 and shown[i]:
                self._taken.setdefault(i, sizes[i])
                take = short if sizes[i] - short >= least[i] else sizes[i]
                sizes[i] -= take
                sizes[0] += take
        if sizes != self.sizes():
            # a hidden pane reads 0, which would shut it for good: it keeps its height
            self.setSizes([n if shown[i] else self.hidden_height(i) for i, n in enumerate(sizes)])


class MainWindow(PresetActions, QMainWindow):
    # after every (re)start and structural change: the engine's ports may be new (the demo input re-wires)
    engineStarted = pyqtSignal()
    engineStopped = pyqtSignal()  # after a Stop: the engine's ports are gone
    _midiStatus = pyqtSignal(object, str, bool)  # (input, line, lost), from the MIDI input's watcher thread
    _asideDone = pyqtSignal(object, object)  # (callback, error or None), from a thread of ``run_aside``

    def __init__(self, preset: dict | None = None, config: EngineConfig | None = None,
                 settings: Settings | None = None, autostart: bool = False, preset_path: str | None = None,
                 host=None):
        """``host``: an EngineHost (engine in this process) or a RemoteEngineHost; by default the
        engine runs in a process of its own (see gui.remote)."""
        super().__init__()
        self.settings = settings or Settings()
        self.errors: list[str] = []
        self._dismissed: set[str] = set()  # lines a click took away: the status poll does not bring them back
        # changes to the preset the undo stack does not hold (a mapped controller moved a control): the
        # preset is modified while there are some, or while the stack is off its clean (saved or loaded) state
        self._changed_off_stack = False
        self.preset_path: str | None = preset_path  # a user file: "Save" writes there
        self.midi: MidiInput | None = None
        self._midi_lost: str | None = None  # the banner's line while the MIDI port is gone
        self._safety_clips = 0
        self._readouts_stale = False  # readout records read during a structural change (``_poll_meters``)
        self._last_meter_at = 0.0  # when the last meter record came (monotonic)
        self._last_status: dict = {}
        self._resume_after_restart = False
        self._playing_differs = 0  # redraws the synth's playing instrument has disagreed with the panel
        self._started_at = 0.0  # when the stream last started (monotonic)
        self._replaying = False  # an undo / redo moves a control: that move is no new step
        self._busy_action = None  # the action under way (``_show_busy``)
        self._changes_let_go = False  # the unsaved changes were let go for a load under way: they count as gone
        self._close_when_idle = False  # a close asked for while an action changed the chain: asked once it ends
        self._asking_close = False  # ``_close_while_busy``'s question is open

        if host is None:
            host = RemoteEngineHost(preset or load_preset("default"), config or self.settings.engine_config())
        self.host = host
        self._build()
        self.actions = ActionRunner(self, self._show_busy, self._show_exception)
        # after the Edit actions' own connections: a step that must wait for the action under way stays off
        for sig in (self.undo_stack.indexChanged, self.undo_stack.canUndoChanged, self.undo_stack.canRedoChanged):
            sig.connect(self._sync_edit_actions)
        self._busy_cursor = False
        self.learn = MidiLearn(self)
        self._midiStatus.connect(self._midi_status)
        self._asideDone.connect(lambda done, error: self._guard(done, error))
        self._rebuild_rack()
        self._update_title()
        if self.settings.problem:
            self.show_error(self.settings.problem)
        geo = self.settings.geometry()
        if geo is not None:
            self.restoreGeometry(geo)
        self._restore_panes(self.settings.pane_sizes())
        self._meter_timer = QTimer(self, interval=33, timeout=self._poll_meters)
        self._status_timer = QTimer(self, interval=1000, timeout=self._poll_status)
        self._meter_timer.start()
        self._status_timer.start()
        self._guard(self._open_midi, self.settings.midi_port)
        if autostart:
            self._guard(self.start)
        self._poll_status()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.resize(1280, 720)
        self.toolbar = tb = QToolBar("Main")
        tb.setMovable(False)
        self.addToolBar(tb)
        self.start_button = QPushButton("Start")
        self.start_button.setCheckable(True)
        self.start_button.setObjectName("start")
        self.start_button.toggled.connect(lambda on: self._guard(self.start if on else self.stop, False))
        tb.addWidget(self.start_button)
        self.restart_button = QPushButton("Restart engine")  # shown only once the engine process has died
        self.restart_button.setObjectName("restart-engine")
        self.restart_button.setToolTip("Start a new engine process with this chain, its knobs and MIDI mappings")
        self.restart_button.clicked.connect(lambda: self._guard(self.restart_engine, False))
        self._restart_action = tb.addWidget(self.restart_button)
        self._restart_action.setVisible(False)
        tb.addSeparator()
        tb.addWidget(QLabel(" Preset "))
        self.preset_box = PresetPicker()
        self.preset_box.setObjectName("presets")
        self.preset_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)  # a longer name saved
        self.preset_box.aboutToShow.connect(lambda: self._guard(self.refresh_presets))  # a file added by hand
        self.preset_box.activated.connect(lambda i: self._guard(self._pick_item, i))
        pick_only(self.preset_box)  # a wheel or an arrow key loaded another preset, unasked
        self.refresh_presets()
        tb.addWidget(self.preset_box)
        self._file_actions = [self._file_action(*action) for action in FILE_ACTIONS]
        for act in self._file_actions:
            b = QToolButton(text=act.iconText())
            b.setToolTip(f"{act.iconText()} ({act.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})")
            b.clicked.connect(act.trigger)
            tb.addWidget(b)
        self.undo_stack = QUndoStack(self)
        self.undo_stack.cleanChanged.connect(self._clean_changed)  # e.g. undone back to what was saved
        self.undo_action, self.redo_action = (self._edit_action(*a) for a in EDIT_ACTIONS)
        for act, step in ((self.undo_action, self.undo), (self.redo_action, self.redo)):
            act.triggered.disconnect()  # the stack's own undo / redo: a slot's step is an action (``undo``)
            act.triggered.connect(lambda _=False, step=step: self._guard(step, False))
        tb.addSeparator()
        tb.addWidget(QLabel(" Add "))
        self.add_box = AddBox()
        self.add_box.picked.connect(lambda kind, uri: self._guard(self.add_slot, kind, uri or None, False))
        tb.addWidget(self.add_box)
        tb.addSeparator()
        self.settings_action = QAction("&Audio Settings…", self)
        self.settings_action.triggered.connect(lambda _=False: self._guard(self._settings_dialog))
        b = QToolButton(text="Settings…")
        b.clicked.connect(self.settings_action.trigger)
        tb.addWidget(b)
        self.spectrum_button = QToolButton(text="Spectrum")
        self.spectrum_button.setObjectName("spectrum-toggle")
        self.spectrum_button.setCheckable(True)
        self.spectrum_button.setChecked(True)
        self.spectrum_button.toggled.connect(self._show_spectrum)
        tb.addWidget(self.spectrum_button)

        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(6, 4, 6, 4)
        self.banner = QLabel()
        self.banner.setObjectName("errors")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background:#5a1e1e; color:#ffe0e0; padding:6px; border-radius:4px")
        self.banner.setVisible(False)
        self.banner.setToolTip("click to dismiss")
        self.banner.mousePressEvent = lambda e: self.clear_errors()
        outer.addWidget(self.banner)
        rack_row = QWidget()
        row = QHBoxLayout(rack_row)
        row.setContentsMargins(0, 0, 0, 0)
        self.in_meter = LevelMeter("In")
        self.out_meter = LevelMeter("Out")
        self.rack = Rack()
        row.addWidget(self.in_meter)
        row.addWidget(self.rack, 1)
        row.addWidget(self.out_meter)
        self.spectrum = SpectrumView()

        self.synth_panel = SynthPanel()
        self.instrument, self.keyboard = self.synth_panel.instrument, self.synth_panel.keyboard
        self.synth_panel.instrumentChosen.connect(lambda sid, pid, v: self.rack.strips[sid].set_value(pid, v, emit=True))
        # a pick from the instrument list is an undo step of its own, as one from the rack's drop-down
        self.instrument.activated.connect(
            lambda _i: self.synth_panel.target and end_gesture(self.undo_stack, *self.synth_panel.target))
        self.keyboard.noteOn.connect(lambda n, v: self._guard(self.host.send_midi, NOTE_ON, n, v))
        self.keyboard.noteOff.connect(lambda n: self._guard(self.host.send_midi, NOTE_OFF, n, 0))
        # rack, spectrum and keyboard share the height as the user drags it (remembered: see shutdown);
        # a taller window gives the rack the room first, a shorter one keeps its first row of knobs
        # (Panes), and only the rack cannot be dragged shut
        self.splitter = Panes(self.rack.first_row_height)
        self.splitter.setObjectName("panes")
        for pane in (rack_row, self.spectrum, self.synth_panel):
            self.splitter.addWidget(pane)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setCollapsible(0, False)
        # each pane's height to start from, the hidden synth panel's too (the split saved while it was
        # hidden then holds its height, not 0)
        self.splitter.setSizes([self.height(), self.spectrum.sizeHint().height(), self.synth_panel.sizeHint().height()])
        outer.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

        sb = QStatusBar()
        self.setStatusBar(sb)
        self.status_labels: dict[str, QLabel] = {}
        for key in ("state", "device", "samplerate", "blocksize", "latency", "load", "late", "xruns", "midi"):
            lab = QLabel()
            lab.setObjectName(f"status:{key}")
            self.status_labels[key] = lab
            sb.addWidget(lab)
        self._build_menus()

    def _restore_panes(self, sizes: list[int] | None) -> None:
        """The split as remembered, if it has as many panes. (Sizes only: a whole ``saveState``
        also carried the orientation, and a foreign one turned the panes sideways for good.) The synth
        panel's 0 was saved while it was hidden (a chain without a synth; before ``Panes.heights``):
        it opens at its own height, not shut."""
        if sizes is not None and len(sizes) == self.splitter.count():
            if sizes[SYNTH_PANE] == 0:
                sizes = [*sizes[:SYNTH_PANE], self.synth_panel.sizeHint().height(), *sizes[SYNTH_PANE + 1:]]
            self.splitter.setSizes(sizes)

    def _show_spectrum(self, on: bool) -> None:
        """The "Spectrum" button: shown or hidden; shown after it was dragged shut, at its own height."""
        self.spectrum.setVisible(on)
        sizes = self.splitter.sizes()
        if on and sizes[1] == 0:
            sizes[1] = self.spectrum.sizeHint().height()
            sizes[0] = max(0, sizes[0] - sizes[1])
            self.splitter.setSizes(sizes)

    def _build_menus(self) -> None:
        """File, Edit, Engine, Help. They hold the toolbar's actions themselves: a second QAction on
        Ctrl+S would make the key ambiguous (Qt then fires neither)."""
        bar = self.menuBar()
        file = bar.addMenu("&File")
        file.addActions(self._file_actions)
        file.addSeparator()
        self.quit_action = self._file_action("Quit", "&Quit", "_quit", QKeySequence.StandardKey.Quit, "Ctrl+Q")
        file.addAction(self.quit_action)
        bar.addMenu("&Edit").addActions([self.undo_action, self.redo_action])
        self.start_action = QAction("&Start", self)  # the Start / Stop button's twin: its text follows
        self.start_action.setShortcut(QKeySequence("Ctrl+R"))  # start / stop from the keyboard, whatever has focus
        self.start_action.triggered.connect(lambda _=False: self.start_button.click())
        bar.addMenu("E&ngine").addActions([self.start_action, self.settings_action])
        self.about_action = QAction(f"&About {APP}", self)
        self.about_action.triggered.connect(lambda _=False: self._guard(self._about))
        bar.addMenu("&Help").addAction(self.about_action)

    def _file_action(self, button: str, text: str, name: str, key: QKeySequence.StandardKey, fallback: str) -> QAction:
        """A File action (the method ``name``; ``button``: its toolbar text) with the platform's
        shortcut for ``key`` (else ``fallback``), window-wide: Ctrl+S works whatever has the focus."""
        act = QAction(text, self)
        act.setIconText(button)
        act.setShortcuts(QKeySequence.keyBindings(key) or [QKeySequence(fallback)])
        act.triggered.connect(lambda _=False: self._guard(getattr(self, name)))
        self.addAction(act)
        return act

    def _quit(self) -> None:
        """File → Quit: asked about unsaved changes as a close by hand is (``closeEvent`` asks only then)."""
        if self._may_close():
            self.close()

    def _may_close(self) -> bool:
        """Whether a person's close may go on now: a typed value not yet applied is applied (one of the
        changes asked about), then the unsaved changes are asked about. While an action runs, the chain
        is in flux (a Save would write the new chain under the old preset's file, and wait for the
        engine): with changes to ask about, the close waits for the action's end (``_show_busy``), and
        asks what to do after CLOSE_WAIT_S or at a second close (``_close_while_busy``)."""
        self.rack.close_entries(True)
        if self.busy and self.modified:
            if self._close_when_idle:  # asked again while it waits: what to do is asked now
                return self._close_while_busy()
            self._close_when_idle = True
            self._show_busy_line()
            QTimer.singleShot(round(CLOSE_WAIT_S * 1000), self._close_still_waiting)
            return False
        return self.confirm_discard()

    def _close_still_waiting(self) -> None:
        """A close has waited CLOSE_WAIT_S for an action (an engine not answering waited 60 s for its
        timeout, and the window took no other close meanwhile): what to do is asked now."""
        if self._close_when_idle and self.busy and not self._asking_close and self._close_while_busy():
            self.close()  # (from code: not asked again)

    def _close_while_busy(self) -> bool:
        """Whether the window closes now without its changes, while an action runs: they cannot be
        saved then (the chain is in flux, and a Save waits for the engine). Wait: the close waits on
        for the action's end, then asks about them as ever; Cancel: no close."""
        b = QMessageBox.StandardButton
        box = QMessageBox(QMessageBox.Icon.Question, "Unsaved changes",
                          f"“{self._busy_action.text.rstrip('…')}” has not finished, so the changes to the preset "
                          f"“{self.host.name}” cannot be saved now. Close without saving them?",
                          b.Discard | b.Retry | b.Cancel, self)
        box.button(b.Discard).setText("Close without saving")
        box.button(b.Retry).setText("Wait")
        box.setDefaultButton(b.Retry)
        self._asking_close = True
        try:
            box.exec()
        finally:
            self._asking_close = False
        if box.clickedButton() is box.button(b.Discard):
            self._close_when_idle = False
            return True
        if box.clickedButton() is not box.button(b.Retry):  # Cancel (Escape, the dialog's own close)
            self._close_when_idle = False
        if self.busy:
            self._show_busy_line()
        elif self._close_when_idle:
            QTimer.singleShot(0, self._close_after_action)
        return False

    def _close_after_action(self) -> None:
        """The close that waited for an action (``_may_close``), unless the window was shut down or
        another action started meanwhile (its end comes here again), or what to do is being asked."""
        if self._close_when_idle and not self.busy and not self._asking_close:
            self._close_when_idle = False
            self._guard(self._quit)

    def _about(self) -> None:
        from gui.app import version

        QMessageBox.about(self, f"About {APP}", f"{APP} {version()}\n\nReal-time audio plugin host: "
                          "the knob panel on the live engine.")

    def _edit_action(self, make: str, key: QKeySequence.StandardKey, extra: tuple[str, ...]) -> QAction:
        """The undo stack's undo or redo action (``make``: its factory), enabled while there is a
        step to take, with the platform's keys for ``key`` and ``extra``, window-wide."""
        act = getattr(self.undo_stack, make)(self)
        keys = QKeySequence.keyBindings(key)
        act.setShortcuts(keys + [QKeySequence(k) for k in extra if QKeySequence(k) not in keys])
        self.addAction(act)
        return act

    def _rebuild_rack(self, new_history: bool = True) -> None:
        """The rack for the host's chain. ``new_history``: a preset, a restarted engine or a failed
        change is no undo step: the steps before it go, so no undo addresses a slot that is gone
        or elsewhere; what they changed stays changed (the cleared stack is "clean"). A slot added,
        removed or moved is a step (``SlotChange``): the history stays."""
        self._dismissed.clear()  # another chain (or engine): its errors are news again
        self._readouts_stale = True  # the ring's records so far are laid out for the chain before (``_poll_meters``)
        if new_history:
            self._changed_off_stack |= not self.undo_stack.isClean()
            self.undo_stack.clear()
        self.rack.rebuild(self.host.chain, self._connect_strip)
        self.learn.show_mappings()
        self.synth_panel.setup(self.host.chain)

    def _connect_strip(self, strip: SlotStrip) -> None:
        strip.paramChanged.connect(self._param_changed)
        strip.bypassChanged.connect(self._bypass_changed)
        strip.mixChanged.connect(self._mix_changed)
        strip.removeRequested.connect(lambda s: self._guard(self.remove_slot, s, False))
        strip.moveRequested.connect(lambda s, d: self._guard(self.move_slot, s, d, False))
        strip.learnRequested.connect(self.toggle_learn)
        strip.forgetRequested.connect(self.forget)
        strip.clearRequested.connect(lambda s: self._guard(self.clear_latches, s))
        strip.gestureEnded.connect(lambda s, t: end_gesture(self.undo_stack, s, t))
        strip.presetPicked.connect(lambda s, label: self._guard(self.apply_plugin_preset, s, label))

    # ------------------------------------------------------------------ actions
    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # shown in the window: the panel keeps running
            self._show_exception(e)
            return None

    def _show_exception(self, e: Exception) -> None:
        self.show_error(f"{type(e).__name__}: {e}" if not isinstance(e, (ValueError, RuntimeError)) else str(e))

    def show_error(self, text: str) -> None:
        """Add a line to the banner (its last four show); a line it holds already moves to the end
        rather than showing twice (a learn clicked again, a controller's every message refused)."""
        if text in self.errors:
            self.errors.remove(text)
        self.errors.append(text)
        self.banner.setText("\n".join(self.errors[-4:]))
        self.banner.setVisible(True)

    def clear_errors(self) -> None:
        self._dismissed.update(self.errors)
        self.errors = []
        self.banner.setVisible(False)

    def _report(self, msg: str) -> None:
        """A line the status poll finds each second: shown once, and not again after a click dismissed
        it (until a start or a structural change forgets the dismissed ones)."""
        if msg not in self.errors and msg not in self._dismissed:
            self.show_error(msg)

    # ------------------------------------------------------------------ actions that wait for the engine
    def _run(self, text: str, steps, wait: bool, structural: bool = True):
        """Run an action (a generator of host calls, see gui.actions). ``wait``: here and now, its
        result returned and its error raised (tests, scripts). Else in the background where the host
        allows it (an engine process: this process only waits for its answer), its error in the
        banner. ``text``: the status line meanwhile; ``structural``: it replaces the chain (a typed
        value not yet applied is applied first, a step of its own before the action's)."""
        if structural:
            self.rack.close_entries(True)
        return self.actions.run(text, steps, not wait and self.host.threaded_calls, structural)

    def call_in_background(self, text: str, fn, *args) -> None:
        """``fn(*args)`` (a blocking call that must wait its turn among the actions, unlike ``run_aside``)
        as a non-structural action of its own, after the one under way (here and now with a host in
        this process, as every action). No caller in the panel since the demo player's wiring moved to
        ``run_aside``; kept as the queue's one non-structural entry point (tests use it)."""
        def steps():
            yield (fn, *args)

        self._run(text, steps(), wait=False, structural=False)

    def run_aside(self, fn, done) -> None:
        """``fn()`` (a blocking call that needs neither the engine's pipe nor a still chain: the demo
        player's wiring) on a thread of its own, beside the actions: they do not wait for it, and
        the toolbar stays usable; ``done(error or None)`` on this thread once it returned."""
        def work():
            try:
                fn()
                error = None
            except Exception as e:  # noqa: BLE001 - handed to ``done``
                error = e
            try:
                self._asideDone.emit(done, error)
            except RuntimeError:  # the window is gone
                pass

        threading.Thread(target=work, name="aside", daemon=True).start()

    @property
    def busy(self) -> bool:
        """Whether an action runs in the background (or waits its turn)."""
        return self.actions.current is not None

    def _show_busy(self, action) -> None:
        """``action`` runs now (None: none): the status line says so, the cursor waits, and every other
        action waits for it. While it replaces the chain, the chain's controls and the keyboard are
        off too: the host holds their changes back meanwhile (they would address the old chain), and
        on this thread that wait would freeze the window."""
        busy, structural = action is not None, action is not None and action.structural
        self._busy_action = action
        if structural:
            self.keyboard.release_all()  # before the host holds MIDI back: no note hangs
            # an entry opened since the action was asked for: dropped (the rack's focus leaving it
            # would apply it in the middle of the change; ``_run`` applied those open before)
            self.rack.close_entries(False)
        self.toolbar.setEnabled(not busy)
        for act in (*self._file_actions, self.start_action, self.settings_action):  # the toolbar's twins
            act.setEnabled(not busy)
        self.rack.setEnabled(not structural)
        self.synth_panel.setEnabled(not structural)
        self._sync_edit_actions()
        if busy:
            self._show_busy_line()
        elif self._close_when_idle:  # the close asked for meanwhile: asked about the changes now
            QTimer.singleShot(0, self._close_after_action)
        if busy != self._busy_cursor:
            self._busy_cursor = busy
            if busy:
                QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            else:
                QApplication.restoreOverrideCursor()
        if not busy and self._status_timer.isActive():  # not after shutdown
            self._poll_status()

    def _show_busy_line(self) -> None:
        closing = " (closing after it)" if self._close_when_idle else ""
        self.status_labels["state"].setText(f"◌ {self._busy_action.text}{closing}")

    # ``wait`` (the actions that wait for the engine): see ``_run``
    def start(self, wait: bool = True) -> None:
        """Start the stream. After the audio server or device was lost, in a new engine process (its
        PortAudio then sees the server as it is now: the old one's failed to open a stream, or
        aborted); that replaces the engine, so the chain's controls wait meanwhile."""
        if self.host.device_lost():
            self._run("Starting…", self._respawn_start_steps(), wait)
        else:
            self._run("Starting…", self._start_steps(), wait, structural=False)

    def _respawn_start_steps(self):
        try:
            yield from self._respawn_steps(new_history=False)  # the same chain: its undo steps still apply
        finally:
            self._sync_start_button()
        yield from self._start_steps()

    def _start_steps(self):
        self._dismissed.clear()  # a new run: its errors are news again
        try:
            yield (self.host.start,)
            self._started_at = time.monotonic()
        finally:
            self._sync_start_button()
        self._poll_status()
        self.engineStarted.emit()

    def restart_engine(self, wait: bool = True) -> None:
        """A new engine process with the chain the panel shows (``RemoteEngineHost.restart_engine``);
        the stream starts again when it had played for RESUME_AFTER_S as the old process died."""
        self._run("Restarting the engine…", self._restart_steps(), wait)

    def _restart_steps(self):
        yield from self._respawn_steps()
        if self._resume_after_restart:
            yield from self._start_steps()
        else:
            self._sync_start_button()
            self._poll_status()

    def _respawn_steps(self, new_history: bool = True):
        """A new engine process running the chain the panel shows, stopped."""
        self.keyboard.release_all()
        lv2 = yield (self.host.restart_engine,)
        self.clear_errors()  # the old engine's: it is gone
        self._restart_action.setVisible(False)
        self._rebuild_rack(new_history)
        if lv2:
            self.show_error(f"engine restarted; {', '.join(lv2)}: plugin state beyond the knobs starts from the "
                            "plugin's defaults")

    def stop(self, wait: bool = True) -> None:
        self._run("Stopping…", self._stop_steps(), wait, structural=False)

    def _stop_steps(self):
        self.keyboard.release_all()
        yield (self.host.stop,)
        self._sync_start_button()
        self._poll_status()
        if not self.host.running:
            self.engineStopped.emit()

    def _sync_start_button(self) -> None:
        self.start_button.blockSignals(True)
        self.start_button.setChecked(self.host.running)
        self.start_button.setText("Stop" if self.host.running else "Start")
        self.start_button.blockSignals(False)
        self.start_action.setText("&Stop" if self.host.running else "&Start")

    # a control moved (by hand, or replayed by undo / redo): the value before it is what the host holds
    @_from_strip
    def _param_changed(self, slot_id: str, param_id: str, value: float) -> None:
        send = functools.partial(self.host.set_param, slot_id, param_id)
        took = self._changed(send, slot_id, param_id, self.host.value(slot_id, param_id), value)
        self.synth_panel.show_param(slot_id, param_id, value if took else self.host.value(slot_id, param_id))

    @_from_strip
    def _bypass_changed(self, slot_id: str, on: bool) -> None:
        send = functools.partial(self.host.set_bypass, slot_id)
        self._changed(send, slot_id, BYPASS_TARGET, self.host.chain.slot(slot_id).bypass, on)

    @_from_strip
    def _mix_changed(self, slot_id: str, mix: float) -> None:
        send = functools.partial(self.host.set_mix, slot_id)
        self._changed(send, slot_id, MIX_TARGET, self.host.chain.slot(slot_id).mix, mix)

    def apply_plugin_preset(self, slot_id: str, label: str) -> None:
        """One of the presets that come with a hosted plugin (its strip's drop-down): its controls
        move to the preset's values as a hand would move them (the engine follows), one undo step."""
        strip = self.rack.strips[slot_id]
        params = {d.id: d for d in self.host.chain.slot(slot_id).processor.params}
        moves = []
        for pid, value in strip.plugin_presets[label].items():
            d = params.get(pid)
            if d is None or pid not in strip.controls:
                continue
            v = float(d.choices.index(value)) if d.choices else float(value)
            if v != self.host.value(slot_id, pid):
                moves.append((pid, v))
        if not moves:  # it is what the knobs show already: no step
            return
        self.undo_stack.beginMacro(f"Preset {label} on {slot_id}")
        try:
            for pid, v in moves:
                strip.set_value(pid, v, emit=True)
                end_gesture(self.undo_stack, slot_id, pid)
        finally:
            self.undo_stack.endMacro()
            step = self.undo_stack.command(self.undo_stack.index() - 1)
            if step is not None and step.childCount() == 0:  # every move refused (an engine not answering):
                step.setObsolete(True)  # no step, and no unsaved change (undoing an obsolete step drops it)
                self.undo_stack.undo()

    def _record(self, slot_id: str, target: str, old: float, new: float) -> None:
        """A change made in the panel becomes an undo step (merged into the last one while the same
        control keeps moving); a change replayed by undo / redo does not."""
        if not self._replaying:
            self.undo_stack.push(ValueChange(lambda *a: self._guard(self._replay, *a), slot_id, target, old, new,
                                             text=self._undo_text(slot_id, target)))

    def _undo_text(self, slot_id: str, target: str) -> str:
        """What the Undo / Redo menu entries name: the control's label and its slot ("Gain on gain"),
        not the internal ids."""
        if target == BYPASS_TARGET:
            name = "Bypass"
        elif target == MIX_TARGET:
            name = MIX_PARAM.name
        else:
            try:
                params = self.host.chain.slot(slot_id).processor.params
            except Exception:  # noqa: BLE001 - a label only: the id will do
                params = ()
            name = next((d.name for d in params if d.id == target), target)
        return f"{name} on {slot_id}"

    def _replay(self, slot_id: str, target: str, value: float) -> None:
        """Move a control to ``value`` as a hand would: its signal takes the value to the engine,
        the synth panel and the modified marker."""
        strip = self.rack.strips[slot_id]
        self._replaying = True
        try:
            if target == BYPASS_TARGET:
                strip.bypass.setChecked(bool(value))
            elif target == MIX_TARGET:
                strip.mix_knob.setValue(100.0 * value)
            else:
                strip.set_value(target, value, emit=True)
        finally:
            self._replaying = False

    def _changed(self, send, slot_id: str, target: str, old: float, new: float) -> bool:
        """A control's change: ``send(new)`` to the host, and a step on the undo stack (``_record``),
        whose clean state marks the preset. One the host refused (the engine process gone or hung, a
        full queue) is in the banner, and the control goes back to the value the engine has: no step,
        and no knob showing a value that Save and Restart engine would not keep. Whether it took it."""
        try:
            send(new)
        except Exception as e:  # noqa: BLE001 - the banner says why
            self._show_exception(e)
            what = {BYPASS_TARGET: "bypass", MIX_TARGET: "mix"}.get(target, "param")
            self.rack.strips[slot_id].show(target, old, what)
            return False
        self._record(slot_id, target, old, new)
        self.setWindowModified(self.modified)  # (name and file unchanged: no title or picker to redo)
        return True

    def _clean_changed(self, _clean: bool) -> None:
        self.setWindowModified(self.modified)

    @property
    def modified(self) -> bool:
        """Whether the preset differs from what was last saved or loaded (not while a load the user let
        them go for runs: a Quit meanwhile asks nothing again)."""
        return not self._changes_let_go and (self._changed_off_stack or not self.undo_stack.isClean())

    def set_modified(self, on: bool) -> None:
        """True: a change the undo stack does not hold; False: the preset as it is now was saved or
        loaded (undoing or redoing back to here clears the marker again)."""
        self._changed_off_stack = on
        if not on:
            self.undo_stack.setClean()
            self.rack.mark_preset()  # "Reset to preset" offers what was saved or loaded last
        self._update_title()

    def _update_title(self) -> None:
        self._show_preset()
        self.setWindowTitle(f"rtaudio-host — {self.host.name}[*]")
        self.setWindowModified(self.modified)

    # a slot added, removed or moved: an undo step (gui.undo.SlotChange)
    def add_slot(self, kind: str, uri: str | None = None, wait: bool = True) -> str | None:
        """The new slot's id (None in the background)."""
        self.add_box.clear_choice()
        return self._run(f"Adding {kind}…", self._structure_steps(self._add_steps(kind, uri)), wait)

    def remove_slot(self, slot_id: str, wait: bool = True) -> None:
        self._run(f"Removing {slot_id}…", self._structure_steps(self._remove_steps(slot_id)), wait)

    def move_slot(self, slot_id: str, delta: int, wait: bool = True) -> None:
        self._run(f"Moving {slot_id}…", self._structure_steps(self._move_steps(slot_id, delta)), wait)

    def _add_steps(self, kind: str, uri: str | None):
        sid = yield (self.host.add_slot, kind, None, uri)
        self.rack.forget_preset(sid)  # (a removed slot's id, taken again: that slot's preset values are not its)
        self._push_step(SlotChange("add", sid, self._place(sid)))
        return sid

    def _remove_steps(self, slot_id: str):
        index = self._place(slot_id)
        taken = yield from self._take_out_steps(slot_id)
        self._push_step(SlotChange("remove", slot_id, index, None, *taken))

    def _move_steps(self, slot_id: str, delta: int):
        index = self._place(slot_id)
        moved = yield (self.host.move_slot, slot_id, delta)
        if moved is not False:
            self._push_step(SlotChange("move", slot_id, index, self._place(slot_id)))
        return moved

    def _take_out_steps(self, slot_id: str):
        """Remove ``slot_id``; return what puts it back (``SlotChange.keep``'s arguments): the slot as the
        panel shows it (a preset entry: every value this window set, also one the engine has not
        applied yet), a hosted plugin's own state with it unless that did not save (then its
        controls only), and its MIDI mappings."""
        entry = next((e for e in self._chain_entries() if e["id"] == slot_id), None)
        midi = {k: t for k, t in self.host.midi_map.items() if t.partition(".")[0] == slot_id}
        whole = True
        if entry is not None and "uri" in entry:  # a hosted plugin: its own state lives in the engine
            try:
                saved = yield (self.host.to_preset,)
                entry.update(next(({"state": e["state"]} for e in saved["chain"] if e["id"] == slot_id
                                   and "state" in e), {}))
            except Exception:  # noqa: BLE001 - e.g. lilv could not save it: the controls at least
                whole = False
        yield (self.host.remove_slot, slot_id)
        return entry, midi, whole

    def _push_step(self, step: SlotChange) -> None:
        end_gestures(self.undo_stack)  # a control's step before it is closed: undone back to, it takes no more
        self.undo_stack.push(step)

    def _slot_ids(self) -> list[str]:
        return [s.id for s in self.host.chain.slots]

    def _place(self, slot_id: str) -> int:
        """Where ``slot_id`` is in the chain (-1: nowhere; the host's change then says so)."""
        ids = self._slot_ids()
        return ids.index(slot_id) if slot_id in ids else -1

    def undo(self, wait: bool = True) -> None:
        """Edit → Undo: a value step at once; a slot's add, remove or move as the action it was
        (``wait``: see ``_run``), the stack moved once the chain changed. A typed value not yet
        applied is dropped first (it is no step: applied, it took the step's place, or the redo's)."""
        self._step(back=True, wait=wait)

    def redo(self, wait: bool = True) -> None:
        self._step(back=False, wait=wait)

    def _step(self, back: bool, wait: bool) -> None:
        self.rack.close_entries(False)
        stack = self.undo_stack
        step = stack.command(stack.index() - 1 if back else stack.index())
        if not isinstance(step, SlotChange):
            stack.undo() if back else stack.redo()
            return
        what = "Undoing" if back else "Redoing"
        self._run(f"{what} {step.text()}…", self._structure_steps(self._slot_step(step, back)), wait)

    def _slot_step(self, step: SlotChange, back: bool):
        stack = self.undo_stack
        if step.kind == "move":
            yield (self.host.move_slot, step.slot_id, (step.index - step.to) if back else (step.to - step.index))
        elif step.goes(back):
            step.keep(*(yield from self._take_out_steps(step.slot_id)))
        else:
            yield (self.host.insert_slot, step.entry, step.index, step.midi)
        if stack.command(stack.index() - 1 if back else stack.index()) is step:  # (nothing else moved it meanwhile)
            stack.undo() if back else stack.redo()

    def _sync_edit_actions(self, *_) -> None:
        """Undo / Redo are on while there is a step to take and it need not wait: nothing while an
        action replaces the chain (its controls are off), and a slot's step (an action itself) not
        while any action runs."""
        busy, stack = self._busy_action, self.undo_stack
        for act, can, i in ((self.undo_action, stack.canUndo(), stack.index() - 1),
                            (self.redo_action, stack.canRedo(), stack.index())):
            waits = busy is not None and (busy.structural or isinstance(stack.command(i), SlotChange))
            act.setEnabled(can and not waits)

    def _structure_steps(self, steps):
        """Run ``steps`` (a structural change as host calls; its result False: it changed nothing,
        as a move past the rack's end) and return its result. The rack shows the engine's chain
        afterwards, also when the change failed half-way (the chain changed, then the engine's
        restart failed: the rack showed the old chain, and its knobs addressed slots that were
        gone); such a failure starts a new history (its steps may address slots gone or elsewhere)."""
        before, changed, done = self._slot_ids(), True, False
        try:
            result = yield from steps
            changed, done = result is not False, True
            return result
        finally:
            if changed:
                self._after_structure_change(new_history=not done and self._slot_ids() != before)

    def _after_structure_change(self, new_history: bool = True) -> None:
        """The rack for the changed chain; ``new_history``: the change is no undo step (see ``_rebuild_rack``)."""
        self._rebuild_rack(new_history)
        self._sync_start_button()
        if new_history:
            self.set_modified(True)
        else:
            self._update_title()  # the stack's clean state marks the preset
        if self.host.running:
            self.engineStarted.emit()

    # settings and MIDI
    def _settings_dialog(self) -> None:
        dlg = SettingsDialog(self.host.config, self.settings.midi_port, self)
        try:
            if dlg.exec():
                self.apply_settings(dlg.engine_config(), dlg.midi_port(), wait=False)
        finally:
            dlg.deleteLater()  # (each one opened stayed, hidden, a child of the window for good)

    def apply_settings(self, config: EngineConfig, midi_port: str, wait: bool = True) -> None:
        """The dialog's choices. The engine restarts only for new audio settings (a restart is an
        audible dropout), which are remembered once the engine took them; the MIDI input opens
        whether or not they worked."""
        self._run("Applying the audio settings…", self._settings_steps(config, midi_port), wait)

    def _settings_steps(self, config: EngineConfig, midi_port: str):
        self.settings.midi_port = midi_port
        try:
            if config != self.host.config:
                yield from self._audio_steps(config)
        finally:
            self._guard(self._open_midi, midi_port)

    def _audio_steps(self, config: EngineConfig):
        old, was_running = self.host.config, self.host.running
        try:
            yield self.host.set_config, config
        except Exception as refused:
            # refused (e.g. a rate the device does not run): the host kept the refused config and a
            # stopped engine, and a good config applied next restarted nothing. Back on the settings
            # that worked, playing if it played; the refusal is the banner's line.
            try:
                yield from self._restore_audio_steps(old, was_running)
            except Exception as e:
                self._show_exception(e)
            raise refused
        finally:
            self._sync_start_button()
        self.settings.save_engine_config(config)  # it worked: the next launch starts with it
        if self.host.running:
            self.engineStarted.emit()

    def _restore_audio_steps(self, config: EngineConfig, play: bool):
        yield self.host.set_config, config
        if play and not self.host.running:
            yield (self.host.start,)
            self._started_at = time.monotonic()
        if self.host.running:
            self.engineStarted.emit()

    def _open_midi(self, port: str) -> None:
        if self.midi is not None:
            if self.busy:  # its releases wait for the action's hold on the engine's queues: not the window
                threading.Thread(target=self.midi.close, name="midi-close", daemon=True).start()
            else:
                self.midi.close()
            self.midi = None
        self._midi_status(None, "", False)  # the closed port's "lost" line leaves the banner
        if port and port != NONE:
            # a lost port's all-notes-off skips midi_in: a learn under way would take its CC123
            self.midi = m = MidiInput(port, self.host.midi_in, release=self.host.send_midi,
                                      on_status=lambda line: self._midiStatus.emit(m, line, m.lost))

    def _midi_status(self, midi, line: str, lost: bool) -> None:
        """The MIDI port was lost or is back: the line replaces the last one in the banner."""
        if midi is not self.midi:  # from an input closed since
            return
        if self._midi_lost in self.errors:
            self.errors.remove(self._midi_lost)
            if not self.errors:
                self.clear_errors()
        self._midi_lost = line if lost else None
        if line:
            self.show_error(line)

    def clear_latches(self, slot_id: str) -> None:
        """A latched readout was clicked: count the slot's CLEAR_PARAM on (any change clears the latch
        in the engine, through the control ring like a knob). Not a preset change: nothing to save."""
        proc = self.host.chain.slot(slot_id).processor
        d = proc.params[proc.param_index(CLEAR_PARAM)]
        v = proc.get_param(CLEAR_PARAM)
        self.host.set_param(slot_id, CLEAR_PARAM, d.min if v >= d.max else v + 1.0)
        self.rack.strips[slot_id].clear_latches()

    def toggle_learn(self, target: str) -> None:
        self.learn.toggle(target)

    def forget(self, target: str) -> None:
        self.learn.forget(target)

    # ------------------------------------------------------------------ polling
    def _poll_meters(self) -> None:
        c = self.host.config
        records = self.host.read_readouts()
        structural = self.actions.current is not None and self.actions.current.structural
        if structural:
            # the chain is being replaced: its readout records are laid out for the chain that leaves,
            # then for the one that comes, so the strips' bars fall until the new rack stands, and the
            # records read meanwhile are dropped; In/Out and the spectrum go on (a live swap plays on)
            self._readouts_stale = True
            self.rack.fall()
            records = None
        elif self._readouts_stale:  # the records read after a new rack that were laid out before it: dropped
            self._readouts_stale = False
            records = None
        if records is not None:
            self.rack.show_readouts(records, 1e6 * c.blocksize / c.samplerate)
        if self.spectrum.isVisible() and self.spectrum.height() > 0:  # (shown, not dragged shut)
            if not structural:  # (new settings take the host's config before the engine's stream has them)
                self.spectrum.set_sample_rate(c.samplerate)
            self.spectrum.feed(self.host.read_audio())
        else:
            self.host.read_audio()  # keep the tap fresh for when it is shown again
        if records is not None:
            self._follow_playing()
        m = self.host.read_meters()
        now = time.monotonic()
        if m is None:
            # stopped (maybe for the change), or nothing for longer than a few blocks while a change
            # runs: the last levels must not freeze; a poll between two long blocks holds them
            quiet = now - self._last_meter_at > max(METER_QUIET_S, 3 * c.blocksize / c.samplerate)
            if not self.host.running or (self.busy and quiet):
                self._meters_fall()
            return
        self._last_meter_at = now
        clips = self._last_status.get("safety_clipped", 0)  # the safety stage clipped since the last look
        clipped = clips > self._safety_clips
        self._safety_clips = clips
        self.in_meter.set_levels(m[0:2], m[4:6])
        self.out_meter.set_levels(m[2:4], m[6:8], clip=(clipped, clipped))

    def _meters_fall(self) -> None:
        """The engine is stopped: the In/Out meters and the strips' bars fall to rest."""
        self.in_meter.fall()
        self.out_meter.fall()
        self.rack.fall()

    def _follow_playing(self) -> None:
        """The synth's instrument as the engine plays it (its "playing" readout): a program change
        from a MIDI keyboard, or a choice whose model is not installed, changes it in the engine.
        Once the readout has disagreed with the panel for FOLLOW_POLLS redraws (a choice made here
        reaches the engine within a block or two), the panel and its view of the chain take the
        engine's: the picker, the rack's control, what Save and Restart engine write."""
        target = self.synth_panel.target
        strip = self.rack.strips.get(target[0]) if target else None
        playing = strip.readout_values.get("playing") if strip else None
        if playing is None or not math.isfinite(playing):
            return
        slot_id, pid = target
        proc = self.host.chain.slot(slot_id).processor
        i = proc.param_index(pid)
        r = float(round(playing))
        if proc.values[i] == r and self.synth_panel.instrument.currentIndex() == int(r):
            self._playing_differs = 0
            return
        self._playing_differs += 1
        if self._playing_differs < FOLLOW_POLLS:
            return
        self._playing_differs = 0
        proc.values[i] = r  # the view (an engine process's chain) or, in this process, what the engine wrote
        self.learn.show_value(f"{slot_id}.{pid}", PARAM, r)

    def _poll_status(self) -> None:
        if self.actions.calling:  # the engine's pipe is taken; the action's end polls
            return
        try:
            s = self._last_status = self.host.status()
        except Exception as e:  # e.g. the engine process died: say so once, keep the window
            self._report(f"engine status unavailable: {e}")
            dead = not self.host.engine_alive()
            if dead or self.host.engine_hung():
                if not self._restart_action.isVisible():  # first seen: a restart resumes what played, unless
                    # it died within seconds of its start (a plugin that crashes it would crash it again)
                    played = time.monotonic() - self._started_at
                    self._resume_after_restart = self.start_button.isChecked() and played >= RESUME_AFTER_S
                self.host.running = False
                gone = "○ engine crashed" if "crashed" in str(e) else "○ engine exited"  # (a plugin's code: named)
                self.status_labels["state"].setText(gone if dead else "○ engine not answering")
                self._restart_action.setVisible(True)
            self._sync_start_button()
            return
        self._restart_action.setVisible(False)  # a stalled engine that answers again
        if self.host.chain_renewed():  # a change it did not answer in time ended after all (or failed)
            self._rebuild_rack()
            self._update_title()  # (a late preset load's name)
        L = self.status_labels
        L["state"].setText("● running" if s["running"] else "○ stopped")
        L["device"].setText(f"device: {s['device']}")
        L["samplerate"].setText(f"{s['samplerate']} Hz")
        L["blocksize"].setText(f"{s['blocksize']} frames")
        L["latency"].setText(f"latency {s['round_trip_ms']:.1f} ms (added {s['added_ms']:.1f})")
        L["load"].setText(f"DSP {100 * s['dsp_load']:.1f}%")
        L["late"].setText(f"late blocks {s['late_blocks']}")
        late_server = s["late_blocks"] - s["late_blocks_ours"] - s["late_blocks_stolen"]
        L["late"].setToolTip(f"callbacks whose output was not ready: {s['late_blocks_ours']} our processing, "
                             f"{s['late_blocks_stolen']} CPU taken by the hypervisor, {max(0, late_server)} "
                             "the audio server's timing")
        L["xruns"].setText(f"xruns {s['server_xruns']}")
        L["midi"].setText(f"MIDI: {self.midi.port_name if self.midi else 'off'}{' (lost)' if self._midi_lost else ''}")
        self.rack.show_faults(s.get("slot_faults", {}))
        if s["error"]:
            self._report(s["error"])
        for line in s.get("notices", ()):  # each comes once (the server's period changed): news, also when
            self.show_error(line)  # a like one was dismissed before
        for slot, err in s.get("processor_errors", {}).items():  # the slot plays dry; the stream goes on
            self._report(f"{slot} failed and is bypassed: {err}")
        if s["error"] and s["running"]:
            self._guard(self.host.stop)  # the stream is dead: release it (the engine abandons it safely)
        self._sync_start_button()

    # ------------------------------------------------------------------ close
    def closeEvent(self, e):
        # ask only when a person closes the window (a quit from code must never block on a dialog)
        if e.spontaneous() and not self._may_close():
            e.ignore()
            return
        self.shutdown()
        e.accept()

    def shutdown(self) -> None:
        """Stop timers, MIDI and the engine; remember the geometry and the split (idempotent)."""
        self._close_when_idle = False  # (the action settled below must not ask it again)
        self._meter_timer.stop()
        self._status_timer.stop()
        # the window's destruction clears the stack: its signals then must not reach a half-deleted window
        stack = self.undo_stack
        for sig, slot in ((stack.cleanChanged, self._clean_changed), (stack.indexChanged, self._sync_edit_actions),
                          (stack.canUndoChanged, self._sync_edit_actions),
                          (stack.canRedoChanged, self._sync_edit_actions)):
            try:
                sig.disconnect(slot)
            except TypeError:  # shut down before
                pass
        self.actions.drop_waiting()
        self.keyboard.release_all()
        self.host.close()  # a host call under way ends with it (an engine busy past CLOSE_ANSWER_S is killed)
        if self.midi is not None:  # after: its close sends its releases past the lock a hung call held
            self.midi.close()
            self.midi = None
        self.actions.settle()  # and the action under way with it, here
        self.settings.save_geometry(self.saveGeometry())
        self.settings.save_pane_sizes(self.splitter.heights())
