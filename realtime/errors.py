"""Errors that are the user's to fix: the CLI prints them as one clear line, no traceback."""
from .engine import EngineError
from .jackserver import JackError
from .offline import OfflineError
from .portaudio import AudioDeviceError
from .processor import ParamError


class ModelError(RuntimeError):
    """A model file is missing, unreadable or has the wrong shape."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from .presets import PresetError
    from .processors import UnknownProcessorError

    return (ParamError, PresetError, UnknownProcessorError, OfflineError, EngineError, AudioDeviceError,
            JackError, ModelError, FileNotFoundError, PermissionError, IsADirectoryError)


USER_ERRORS = _user_errors()
