"""Thin access to PortAudio through sounddevice's cffi handle, and device lookup.

sounddevice scans host APIs when PortAudio initialises, so a JACK server started after import is
invisible until ``rescan()`` re-initialises PortAudio.
"""
from __future__ import annotations

import os
import socket

from realtime.errors import AudioDeviceError

# The JACK server whose client PortAudio's JACK host API opened (it keeps one from initialisation to
# Pa_Terminate): its socket's identity then, None where PortAudio holds no JACK client (``_guard``).
_jack_server: tuple[str, int, int] | None = None


def sd():
    import sounddevice  # deferred: importing it initialises PortAudio

    _guard(sounddevice)
    if not sounddevice._initialized:  # after release(): initialise again on next use
        sounddevice._initialize()
    return sounddevice


def _guard(s) -> None:
    """Once: PortAudio's terminate (``release``, ``rescan``, sounddevice's exit handler) is skipped
    while its JACK client's server is gone, as the JACK host API's close of that client asserts then
    (``pa_jack.c: Terminate: Assertion 'err == 0' failed``: SIGABRT, status 134, after a command had
    ended, or in the panel's engine process, which the window then reported as a crash). The
    client is left as it is; PortAudio sees no new server until the process starts again."""
    if getattr(s, "_rtaudio_guarded", False):
        return
    initialize, terminate = s._initialize, s._terminate

    def guarded_initialize():
        initialize()
        _note_jack_server(s)

    def guarded_terminate():
        global _jack_server
        if _jack_server is not None and not _server_alive(_jack_server):
            s._initialized -= 1
            return
        terminate()
        if not s._initialized:
            _jack_server = None

    s._initialize, s._terminate, s._rtaudio_guarded = guarded_initialize, guarded_terminate, True
    if s._initialized:  # the import's own initialisation
        _note_jack_server(s)


def _note_jack_server(s) -> None:
    """Remember the JACK server PortAudio's client talks to, when it has one (a JACK host API)."""
    global _jack_server
    lib = s._lib
    if not any(lib.Pa_GetHostApiInfo(i).type == lib.paJACK for i in range(lib.Pa_GetHostApiCount())):
        return
    path = _jack_socket()
    try:
        st = os.stat(path)
    except OSError:  # (a server this cannot find: terminated as before)
        return
    _jack_server = (path, st.st_dev, st.st_ino)


def _jack_socket() -> str:
    """The server socket of the JACK server clients here reach (jack2: in /dev/shm, by name and user)."""
    return f"/dev/shm/jack_{os.environ.get('JACK_DEFAULT_SERVER') or 'default'}_{os.getuid()}_0"


def _server_alive(server: tuple[str, int, int]) -> bool:
    """Whether that server still runs: its socket is the same file (not a later server's) and takes a
    connection (a killed server leaves its socket behind)."""
    path, dev, ino = server
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) != (dev, ino):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(path)
    except OSError:
        return False
    return True


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
