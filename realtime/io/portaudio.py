"""Thin access to PortAudio through sounddevice's cffi handle, and device lookup.

sounddevice scans host APIs when PortAudio initialises, so a JACK server started after import is
invisible until ``rescan()`` re-initialises PortAudio.
"""
from __future__ import annotations

from realtime.errors import AudioDeviceError


def sd():
    import sounddevice  # deferred: importing it initialises PortAudio

    if not sounddevice._initialized:  # after release(): initialise again on next use
        sounddevice._initialize()
    return sounddevice


def rescan() -> None:
    """Re-initialise PortAudio so devices that appeared since import are listed (once: a first
    initialisation scans anyway)."""
    import sys

    s = sys.modules.get("sounddevice")
    if s is None or not s._initialized:
        sd()
        return
    s._terminate()
    s._initialize()


def release() -> None:
    """Terminate PortAudio if sounddevice initialised it. Its JACK host API keeps a client open
    until Pa_Terminate, which asserts (aborting Python) if the server has gone first."""
    import sys

    s = sys.modules.get("sounddevice")
    while s is not None and s._initialized:
        s._terminate()


def check(err: int, what: str) -> None:
    if err < 0:
        s = sd()
        text = s._ffi.string(s._lib.Pa_GetErrorText(err)).decode(errors="replace")
        raise AudioDeviceError(f"{what}: {text} (PortAudio error {err})")


def list_devices() -> list[dict]:
    s = sd()
    out = []
    for i, d in enumerate(s.query_devices()):
        api = s.query_hostapis(d["hostapi"])["name"]
        out.append({"index": i, "name": d["name"], "hostapi": api,
                    "inputs": d["max_input_channels"], "outputs": d["max_output_channels"],
                    "default_samplerate": d["default_samplerate"]})
    return out


def resolve_device(device, kind: str, channels: int) -> int:
    """Index of the device for ``kind`` ('input'/'output'): None = default, int, or name substring."""
    s = sd()
    try:
        info = s.query_devices(device, kind)
    except (ValueError, OverflowError, s.PortAudioError) as e:
        # `-d 2147483648`, past a C int: an OverflowError's traceback
        why = "no such device number" if isinstance(e, OverflowError) else e
        names = [f"{d['index']}: {d['name']}" for d in list_devices()]
        if isinstance(e, ValueError) and str(e).startswith("Multiple"):
            # a name that matches several devices: sounddevice's list took a line each, after "no device"
            matches = "; ".join(line.strip() for line in str(e).splitlines()[1:])
            raise AudioDeviceError(f"{kind} device {device!r} is ambiguous, it matches {matches}: give its number "
                                   "or its whole name") from None
        if device is None and not names:  # "no output device None (Error querying device -1)" said nothing
            raise AudioDeviceError(f"no audio {kind} device: no sound card and no JACK server running "
                                   "(`python main.py run --demo` plays through a private one)") from None
        raise AudioDeviceError(f"no {kind} device {device!r} ({why}); devices: {names or 'none'}") from None
    avail = info["max_input_channels" if kind == "input" else "max_output_channels"]
    if avail < channels:
        raise AudioDeviceError(f"{kind} device {info['name']!r} has {avail} channels, {channels} needed")
    return int(info["index"])
