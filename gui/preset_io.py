"""Preset actions of the main window: recall a built-in, load and save files, the dialogs.

A mix-in for ``MainWindow`` (it uses the window's host, rack, keyboard, settings and title).
"""
from __future__ import annotations

from pathlib import Path

from PyQt6.QtWidgets import QFileDialog

from gui.settings import user_preset_dir
from realtime.dsp.presets import load_preset, save_preset


class PresetActions:
    def recall_builtin(self, name: str) -> None:
        self.apply_preset(load_preset(name), path=None)
        self.settings.last_preset = name

    def load_preset_file(self, path: str) -> None:
        self.apply_preset(load_preset(Path(path)), path=str(path))
        self.settings.last_preset = str(path)

    def apply_preset(self, preset: dict, path: str | None) -> None:
        """Run ``preset`` (validated before anything changes); ``path``: its file, if a user's."""
        self.keyboard.release_all()
        self.host.load_preset(preset)
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
        path, _ = QFileDialog.getOpenFileName(self, "Load preset", str(user_preset_dir()), "Presets (*.json)")
        if path:
            self.load_preset_file(path)

    def _save(self) -> None:
        if self.preset_path:
            self.save_preset(self.preset_path, self.host.name)
        else:
            self._save_dialog()

    def _save_dialog(self) -> None:
        d = user_preset_dir()
        d.mkdir(parents=True, exist_ok=True)
        path, _ = QFileDialog.getSaveFileName(self, "Save preset", str(d / f"{self.host.name}.json"), "Presets (*.json)")
        if path:
            self.save_preset(path if path.endswith(".json") else path + ".json")
