"""Preset actions of the main window: recall a built-in, load and save files, the dialogs.

A mix-in for ``MainWindow`` (it uses the window's host, rack, keyboard, settings and title).
"""
from __future__ import annotations

from pathlib import Path

from PyQt6.QtWidgets import QFileDialog, QMessageBox

from gui.settings import user_preset_dir
from realtime.dsp.presets import load_preset, save_preset


class PresetActions:
    def confirm_discard(self) -> bool:
        """Whether unsaved changes may go (asked only when there are some), before a preset is
        loaded over them, as before the window closes."""
        if not self.modified:
            return True
        ans = QMessageBox.question(self, "Unsaved changes", "Discard the unsaved changes to the preset?",
                                   QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel)
        return ans == QMessageBox.StandardButton.Discard

    def _pick_builtin(self, name: str) -> None:
        """The picker's choice: recalled once the unsaved changes may go (else the picker shows
        what runs again)."""
        if self.confirm_discard():
            self.recall_builtin(name, wait=False)
        else:
            self._update_title()

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
        preset = yield load_preset, name
        yield from self._preset_steps(preset, None)
        self.settings.last_preset = name

    def _load_file_steps(self, path: str):
        preset = yield load_preset, Path(path)
        yield from self._preset_steps(preset, str(path))
        self.settings.last_preset = str(path)

    def _preset_steps(self, preset: dict, path: str | None):
        self.keyboard.release_all()
        try:
            yield self.host.load_preset, preset
        except Exception:
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

    def save_preset(self, path: str, name: str | None = None) -> None:
        p = self.host.to_preset(name or Path(path).stem)
        save_preset(p, path)
        self.host.name = p["name"]
        self.preset_path = str(path)
        self.settings.last_preset = str(path)
        self.set_modified(False)

    def _load_dialog(self) -> None:
        if not self.confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load preset", str(user_preset_dir()), "Presets (*.json)")
        if path:
            self.load_preset_file(path, wait=False)

    def _save(self) -> None:
        if self.preset_path:
            self.save_preset(self.preset_path, self.host.name)
        else:
            self._save_dialog()

    def _save_dialog(self) -> None:
        d = user_preset_dir()
        d.mkdir(parents=True, exist_ok=True)
        path, _ = QFileDialog.getSaveFileName(self, "Save preset", str(d / f"{self.host.name}.json"), "Presets (*.json)")
        if not path:
            return
        if not path.endswith(".json"):
            # the dialog asked about overwriting the name as typed, not with the suffix added here
            path += ".json"
            if Path(path).exists() and QMessageBox.question(
                    self, "Replace preset", f"{Path(path).name} already exists. Replace it?",
                    QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel) != QMessageBox.StandardButton.Yes:
                return
        self.save_preset(path)
