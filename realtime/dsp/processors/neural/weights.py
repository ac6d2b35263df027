"""Where the exported models are: the one resolver every neural processor uses.

The ``.onnx`` files live beside their training code in the top-level ``models`` package (one
folder per effect). The runtime must not import that package (it holds training code), so the
folder is located with ``importlib.util.find_spec``, which finds a top-level package without
running it. ``RTAUDIO_MODELS_DIR`` points at another root with the same layout.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def models_root() -> Path:
    """The folder holding ``<effect>/<file>.onnx``: ``$RTAUDIO_MODELS_DIR`` or the ``models`` package."""
    env = os.environ.get("RTAUDIO_MODELS_DIR")
    if env:
        return env_path(env)
    spec = importlib.util.find_spec("models")
    if spec is None or not spec.submodule_search_locations:
        return Path.cwd() / "models"  # not installed: a ModelError will name the missing file
    return Path(next(iter(spec.submodule_search_locations)))


def env_path(value: str) -> Path:
    """A folder named by an environment variable, a leading ``~`` expanded (the shell leaves it as
    it is in quotes: ``RTAUDIO_MODELS_DIR="~/models"``)."""
    return Path(os.path.expanduser(value))


def model_dir(effect: str) -> Path:
    """The folder of ``effect``'s exported models (it may not exist: callers report that)."""
    return models_root() / effect


def model_file(effect: str, filename: str) -> Path:
    """Path of ``filename`` in the folder of ``effect``."""
    return model_dir(effect) / filename
