"""Preset actions of the main window: the picker (built-ins and the user's saved presets), load and
save files, the dialogs, the unsaved-changes question.

A mix-in for ``MainWindow`` (it uses the window's host, rack, keyboard, settings, picker and title).
"""
from __future__ import annotations

import os
from pathlib import Path

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import QComboBox, QFileDialog, QMessageBox

from realtime.dsp.presets import builtin_presets, is_json_name, load_preset, resolve_preset, save_preset, user_presets
from realtime.engine.control import ChainView

# the picker's items: (BUILTIN, name) or (USER, absolute path); separators hold none
BUILTIN, USER = "builtin", "user"
USER_MARK = " (user)"  # a user's preset named as a built-in: told apart in the picker
FILE_FILTER = "Presets (*.json *.JSON)"


def save_as_name(path: str) -> str:
    """The file a Save As writes for the ``path`` its dialog returned: ``.json`` added unless it ends
    so in any case (``MINE.JSON`` stays as typed).

    Raises
    ------
    RuntimeError
        A name that is blank or starts with "." (a hidden file, never listed): the line names what
        was typed.
    """
    name = Path(path).name
    stem = name[:-len(".json")] if is_json_name(name) else name
    if not stem.strip() or name.startswith("."):
        why = "a name starting with '.' (a hidden file, never listed)" if name.startswith(".") else "a blank name"
        raise RuntimeError(f"not saved: {name!r} is {why}; give the preset a name such as “mine”")
    return path if is_json_name(name) else path + ".json"


def proposed_file_name(name: str) -> str:
    """The file name a Save As proposes for the preset called ``name`` (a file's ``"name"`` may hold
    anything): a "/" made "-" (the dialog took "AC/DC" as a folder "AC" that is not there, and opened
    in the working directory, proposing "DC.json" there), a leading "." left out (a hidden file,
    which ``save_as_name`` refuses), and "preset" when nothing is left."""
    stem = name.replace("\0", "")
    for sep in filter(None, (os.sep, os.altsep)):
        stem = stem.replace(sep, "-")
    stem = stem.strip().lstrip(".").strip() or "preset"
    return stem if is_json_name(stem) else stem + ".json"


class PresetSaveError(OSError, RuntimeError):
    """A preset that could not be written, named by its own path: the atomic writer's error names its
    hidden temporary file (".mine.json.x1y2.tmp") beside it. A RuntimeError too: the banner shows
    the line as it is."""

    def __init__(self, cause: OSError, path):
        super().__init__(f"cannot save the preset {path}: {cause.strerror or cause}")
        self.errno = cause.errno  # (a filename too would make the line "[Errno 2] None: …")


class PresetPicker(QComboBox):
    """The toolbar's preset picker. ``aboutToShow``: its list is about to open (the window lists the
    user's presets afresh then, so a file added by hand appears)."""

    aboutToShow = pyqtSignal()

    def showPopup(self) -> None:
        self.aboutToShow.emit()
        super().showPopup()


class PresetActions:
    # ------------------------------------------------------------------ the picker
    def refresh_presets(self) -> None:
        """List the built-ins, then (below a separator) the user's saved presets by file stem."""
        box, names = self.preset_box, builtin_presets()
        box.clear()
        for name in names:
            box.addItem(name, (BUILTIN, name))
        files = user_presets(self.settings.preset_dir)
        if files:
            box.insertSeparator(box.count())
        for p in files:
            box.addItem(p.stem + (USER_MARK if p.stem in names else ""), (USER, os.path.abspath(p)))
            box.setItemData(box.count() - 1, str(p), Qt.ItemDataRole.ToolTipRole)
        self._show_preset()

    def _show_preset(self) -> None:
        """The picker shows the preset that runs: a built-in, or a file of the user's folder; else
        nothing (a file from elsewhere, a preset that came as a dict)."""
        box = self.preset_box
        want = (BUILTIN, self.host.name) if self.preset_path is None else (USER, os.path.abspath(self.preset_path))
        box.setCurrentIndex(next((i for i in range(box.count()) if box.itemData(i) == want), -1))

    def _pick_item(self, index: int) -> None:
        item = self.preset_box.itemData(index)
        if item:
            self._pick(*item)

    def _pick_builtin(self, name: str) -> None:
        self._pick(BUILTIN, name)

    def _pick(self, kind: str, ref: str) -> None:
        """The picker's choice: loaded once the unsaved changes may go (else the picker shows what
        runs again)."""
        self.rack.close_entries(True)  # a typed value not yet applied is one of the changes asked about
        if self.confirm_discard():
            steps = self._recall_steps(ref) if kind == BUILTIN else self._load_file_steps(ref)
            self._run("Loading the preset…", self._letting_go(steps), False)
        else:
            self._update_title()

    def _letting_go(self, steps):
        """A load the unsaved changes were let go for (saved, or Discard): until it ends they count as
        gone (a Quit meanwhile does not ask about them again); a load that fails gives them back."""
        self._changes_let_go = True
        try:
            return (yield from steps)
        finally:
            self._changes_let_go = False
            self._update_title()

    # ------------------------------------------------------------------ unsaved changes
    def confirm_discard(self) -> bool:
        """Whether unsaved changes may go (asked only when there are some), before a preset is
        loaded over them, as before the window closes: Save (to the preset's file, else through
        Save As), Discard or Cancel. A save cancelled or failed (its line in the banner) keeps them."""
        if not self.modified:
            return True
        b = QMessageBox.StandardButton
        ans = QMessageBox.question(self, "Unsaved changes", f"Save the changes to the preset “{self.host.name}”?",
                                   b.Save | b.Discard | b.Cancel, b.Save)
        if ans == b.Save:
            return bool(self._guard(self._save))
        return ans == b.Discard

    # ``wait``: as the window's other engine actions (``MainWindow._run``)
    def recall_builtin(self, name: str, wait: bool = True) -> None:
        self._run("Loading the preset…", self._recall_steps(name), wait)

    def load_preset_file(self, path: str, wait: bool = True) -> None:
        self._run("Loading the preset…", self._load_file_steps(path), wait)

    def apply_preset(self, preset: dict, path: str | None, wait: bool = True) -> None:
        """Run ``preset`` (validated before anything changes); ``path``: its file, if a user's."""
        self._run("Loading the preset…", self._preset_steps(preset, path), wait)

    # reading a preset is a host call too: validating it imports its processors' modules here the
    # first time (the enhancer's: half a second)
    def _recall_steps(self, name: str):
        preset = yield from self._read_steps(name)
        yield from self._preset_steps(preset, None)
        self.settings.last_preset = name

    def _load_file_steps(self, path: str):
        if resolve_preset(path)[1] == "builtin":  # a built-in's own file: recalled as it, never saved over
            yield from self._recall_steps(Path(path).resolve().stem)
            return
        preset = yield from self._read_steps(Path(path))
        yield from self._preset_steps(preset, str(path))
        self.settings.last_preset = str(path)

    def _read_steps(self, ref):
        try:
            return (yield load_preset, ref)
        except Exception:
            self._update_title()  # nothing changed: the picker shows what runs, not the pick that failed
            raise

    def _preset_steps(self, preset: dict, path: str | None):
        self.keyboard.release_all()
        # no preset's file until the load ends: a Save meanwhile must not write the new chain (or one
        # half-way) under the old preset's path
        old_path, old_name, old_chain = self.preset_path, self.host.name, self._chain_entries()
        self.preset_path = None
        try:
            yield self.host.load_preset, preset
        except Exception:
            if (self.host.name, self._chain_entries()) == (old_name, old_chain):  # nothing changed: still that preset
                self.preset_path = old_path
            # the chain may have changed before the engine's restart failed: the rack shows what
            # the engine holds now, and that is not any saved preset
            self._after_structure_change()
            raise
        self.preset_path = path
        self._rebuild_rack()
        self._sync_start_button()
        self.set_modified(False)
        if self.host.running:
            self.engineStarted.emit()

    def _chain_entries(self) -> list[dict]:
        """The chain the panel shows, as a preset's entries."""
        c = self.host.chain
        view = c if isinstance(c, ChainView) else ChainView(c.describe())
        return view.to_preset(self.host.name)["chain"]

    # ------------------------------------------------------------------ files
    def save_preset(self, path: str, name: str | None = None) -> None:
        self._not_while_changing()
        self.rack.close_entries(True)  # a typed value not yet applied is saved with the rest
        p = self.host.to_preset(name or Path(path).stem)
        try:
            save_preset(p, path)
        except OSError as e:
            raise PresetSaveError(e, path) from None
        self.host.name = p["name"]
        self.preset_path = str(path)
        self.settings.last_preset = str(path)
        self.refresh_presets()  # a new file in the user's folder is in the picker at once
        self.set_modified(False)

    def _not_while_changing(self) -> None:
        """Refuse to save while an action changes the chain: it is in flux, no preset yet (and a preset
        load under way would have it written under the old preset's file)."""
        busy = self.actions.current
        if busy is not None and busy.structural:
            raise RuntimeError(f"not saved: {busy.text.rstrip('…')} is under way; save once it is done")

    def _load_dialog(self) -> None:
        self.rack.close_entries(True)  # a typed value not yet applied is one of the changes asked about
        if not self.confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load preset", str(self.settings.preset_dir), FILE_FILTER)
        if path:
            self._run("Loading the preset…", self._letting_go(self._load_file_steps(path)), False)

    def _save(self) -> bool:
        """Save to the preset's file, else ask for one (Save As); whether it was saved (both refuse
        while the chain changes)."""
        if self.preset_path:
            self.save_preset(self.preset_path, self.host.name)
            return True
        return self._save_dialog()

    def _save_dialog(self) -> bool:
        """Save As; whether it was saved (False: the dialog or the replace question was cancelled)."""
        self._not_while_changing()
        self.rack.close_entries(True)  # (before the dialog: a Cancel there still leaves it applied)
        d = self.settings.preset_dir
        d.mkdir(parents=True, exist_ok=True)
        proposed = str(d / proposed_file_name(self.host.name))
        path, _ = QFileDialog.getSaveFileName(self, "Save preset", proposed, FILE_FILTER)
        if not path:
            return False
        typed, path = path, save_as_name(path)
        if path != typed:
            # the dialog asked about overwriting the name as typed, not with the suffix added here
            if Path(path).exists() and QMessageBox.question(
                    self, "Replace preset", f"{Path(path).name} already exists. Replace it?",
                    QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel) != QMessageBox.StandardButton.Yes:
                return False
        self.save_preset(path)
        return True
