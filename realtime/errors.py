"""Every error that is the user's to fix: the CLI prints it as one clear line, no traceback.

A leaf module: it imports nothing of the project, so any part can raise these without pulling in
the engine, PortAudio or a model.
"""


class ParamError(ValueError):
    """A parameter value or name was rejected; the message names the parameter."""


class PresetError(ValueError):
    """Invalid preset; the message starts with the field path (e.g. ``chain[1].params.q``)."""


class UnknownProcessorError(ValueError):
    """No processor of that kind is registered or importable."""


class ModelError(RuntimeError):
    """A model file is missing, unreadable or has the wrong shape."""


class EngineError(RuntimeError):
    """The live engine cannot do what was asked (bad configuration, unknown slot, full queue)."""


class AudioDeviceError(RuntimeError):
    """PortAudio refused a device or stream (missing device, unsupported format)."""


class JackError(RuntimeError):
    """A JACK server could not be started or reached."""


class MidiInputError(RuntimeError):
    """A MIDI port could not be opened."""


class OfflineError(RuntimeError):
    """A file could not be read, converted or written by the offline runner."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ParamError, PresetError, UnknownProcessorError, OfflineError, EngineError, AudioDeviceError,
    JackError, MidiInputError, ModelError, FileNotFoundError, PermissionError, IsADirectoryError)
