"""JACK clients that play a signal into the engine and record what it outputs.

Used by the demo (no sound card) and by the tests: real audio through real JACK ports, compared
sample for sample. Player and recorder are separate clients so the JACK graph is a chain
(player → engine → recorder) and adds no period of delay.

Both are opened through libjack directly, with a process callback compiled by Numba (``@cfunc``)
that only copies between a numpy buffer and the port buffers: like the engine's own callback it
never needs the GIL. A Python callback (JACK-Client's) would need it every period (2.7 ms at
128 frames), and any Python thread of the same process computing for longer than that (the
interpreter's switch interval alone is 5 ms) made JACK report xruns for the whole graph.

The control block is shared by Python and the JACK thread: the slot that hands the buffer over
(``C_STATE``) and the ones the callback reports through (position, start frame, cycles) are
written with release stores and read with acquire loads (realtime/engine/atomics.py), as the
engine's rings are, so a weakly ordered CPU (ARM64) cannot show one side's buffer or position
before the store that announces it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import time

import numpy as np
from numba import carray, cfunc, types

from realtime.engine.atomics import address_as_pointer, load_acquire, observe, publish, store_release
from realtime.errors import JackError
from realtime.io.bounded import done_within

# control block layout (int64 slots); the callback's ``arg`` is its address
C_CLIENT, C_CHANNELS, C_BUF, C_FRAMES, C_POS, C_STATE, C_START, C_LOOP, C_CYCLES = range(9)
C_PORTS = 9  # port handles, one per channel
MAX_CHANNELS = 8
CTL_SIZE = C_PORTS + MAX_CHANNELS

IDLE, RUNNING, DONE = 0, 1, 2  # C_STATE

_JACK_NO_START_SERVER = 0x01
_PORT_IS_INPUT, _PORT_IS_OUTPUT = 0x1, 0x2
_AUDIO_TYPE = b"32 bit float mono audio"


def _load_libjack():
    name = ctypes.util.find_library("jack") or "libjack.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise JackError("libjack not found: install the Debian package jackd2 (the set-up script does)") from None
    sigs = {
        "jack_client_open": (ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]),
        "jack_client_close": (ctypes.c_int, [ctypes.c_void_p]),
        "jack_port_register": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                                 ctypes.c_ulong, ctypes.c_ulong]),
        "jack_port_name": (ctypes.c_char_p, [ctypes.c_void_p]),
        "jack_set_process_callback": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]),
        "jack_activate": (ctypes.c_int, [ctypes.c_void_p]),
        "jack_deactivate": (ctypes.c_int, [ctypes.c_void_p]),
        "jack_connect": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]),
        "jack_port_get_buffer": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_uint32]),
        "jack_last_frame_time": (ctypes.c_uint32, [ctypes.c_void_p]),
        "jack_get_buffer_size": (ctypes.c_uint32, [ctypes.c_void_p]),
    }
    for fn, (restype, argtypes) in sigs.items():
        getattr(lib, fn).restype = restype
        getattr(lib, fn).argtypes = argtypes
    return lib


_lib = None
_callbacks = {}


def _libjack():
    global _lib
    if _lib is None:
        _lib = _load_libjack()
    return _lib


def _compile(kind: str):
    """The player's or recorder's process callback (compiled once per process, about a second)."""
    if kind in _callbacks:
        return _callbacks[kind]
    lib = _libjack()
    get_buffer, frame_time = lib.jack_port_get_buffer, lib.jack_last_frame_time

    def play(nframes, arg):
        ctl = carray(arg, (CTL_SIZE,), np.int64)
        n = np.int64(nframes)
        state = load_acquire(ctl, C_STATE)  # first: the slots below are Python's only once it says RUNNING
        total, pos = ctl[C_FRAMES], ctl[C_POS]
        if state == RUNNING and ctl[C_START] < 0:
            store_release(ctl, C_START, frame_time(address_as_pointer(ctl[C_CLIENT])))
        sig = carray(address_as_pointer(ctl[C_BUF]), (total, ctl[C_CHANNELS]), np.float32)
        for c in range(ctl[C_CHANNELS]):
            port = address_as_pointer(ctl[C_PORTS + c])
            out = carray(address_as_pointer(get_buffer(port, nframes)), (n,), np.float32)
            p = pos
            for k in range(n):
                if state == RUNNING and p < total:
                    out[k] = sig[p, c]
                    p += 1
                    if p == total and ctl[C_LOOP] != 0:
                        p = 0
                else:
                    out[k] = 0.0
            if c == ctl[C_CHANNELS] - 1 and state == RUNNING:
                store_release(ctl, C_POS, p)
                if p >= total:
                    store_release(ctl, C_STATE, DONE)
        store_release(ctl, C_CYCLES, ctl[C_CYCLES] + 1)
        return 0

    def record(nframes, arg):
        ctl = carray(arg, (CTL_SIZE,), np.int64)
        n = np.int64(nframes)
        if load_acquire(ctl, C_STATE) == RUNNING:
            total, pos = ctl[C_FRAMES], ctl[C_POS]
            if ctl[C_START] < 0:
                store_release(ctl, C_START, frame_time(address_as_pointer(ctl[C_CLIENT])))
            data = carray(address_as_pointer(ctl[C_BUF]), (total, ctl[C_CHANNELS]), np.float32)
            m = min(n, total - pos)
            for c in range(ctl[C_CHANNELS]):
                port = address_as_pointer(ctl[C_PORTS + c])
                src = carray(address_as_pointer(get_buffer(port, nframes)), (n,), np.float32)
                for k in range(m):
                    data[pos + k, c] = src[k]
            store_release(ctl, C_POS, pos + m)  # after the samples: Python reads them up to here
            if pos + m >= total:
                store_release(ctl, C_STATE, DONE)
        store_release(ctl, C_CYCLES, ctl[C_CYCLES] + 1)
        return 0

    sig = types.int32(types.uint32, types.voidptr)
    _callbacks[kind] = cfunc(sig, nopython=True, cache=False)(play if kind == "play" else record)
    return _callbacks[kind]


def compile_callbacks() -> None:
    """Compile both callbacks now. Compiling holds the GIL for a second or two: call this before
    starting an engine in the same process, whose DSP thread would otherwise deliver late blocks."""
    _compile("play")
    _compile("record")
    scratch = np.zeros(CTL_SIZE, np.int64)  # and the Python side's release/acquire helpers
    publish(scratch, C_STATE, observe(scratch, C_STATE))


def server_period() -> int | None:
    """The running JACK server's period (frames per cycle), asked through a client of its own;
    None when no server answers or libjack is missing."""
    watch = PeriodWatch.open()
    if watch is None:
        return None
    try:
        return watch.period()
    finally:
        watch.close()


class PeriodWatch:
    """The JACK server's period for as long as a stream runs, read without asking the server: a
    client of its own that is never activated (no ports, no part in the graph), whose buffer size
    libjack keeps current in the server's shared memory. So ``period`` costs nothing and never
    waits, also on a paused or dead server (the engine's monitor reads it every few ticks: a
    ``jack_bufsize`` while the stream runs)."""

    CLOSE_WAIT_S = 0.5

    def __init__(self, lib, client):
        self._lib, self._client = lib, client

    @classmethod
    def open(cls) -> "PeriodWatch | None":
        """A watch on the running server; None when no server answers or libjack is missing."""
        try:
            lib = _libjack()
        except JackError:
            return None
        status = ctypes.c_int(0)
        client = lib.jack_client_open(b"rtaudio-period", _JACK_NO_START_SERVER, ctypes.byref(status))
        return cls(lib, client) if client else None

    def period(self) -> int | None:
        """Frames per cycle now (None once closed)."""
        return (int(self._lib.jack_get_buffer_size(self._client)) or None) if self._client else None

    def close(self, wait_s: float | None = None) -> None:
        """Close the client. Closing asks the server, and a paused one answers only once it resumes:
        the close runs in a thread of its own, waited for ``wait_s`` (default ``CLOSE_WAIT_S``),
        then left to finish."""
        client, self._client = self._client, None
        if client:
            done_within(lambda: self._lib.jack_client_close(client), self.CLOSE_WAIT_S if wait_s is None else wait_s,
                        "jack-period-close")


CLIENT_CLOSE_WAIT_S = 2.0  # a player's or recorder's close waits this long for a server that does not answer


class _NativeClient:
    """A JACK client whose ports and buffer are driven by a compiled callback (see module doc)."""

    def __init__(self, name: str, kind: str, channels: int, is_input: bool):
        if not 1 <= channels <= MAX_CHANNELS:
            raise JackError(f"{channels} channels: 1..{MAX_CHANNELS} supported")
        lib = _libjack()
        self._cb = _compile(kind)
        self.ctl = np.zeros(CTL_SIZE, np.int64)
        self.ctl[C_START] = -1
        self._buf = np.zeros((1, channels), np.float32)
        status = ctypes.c_int(0)
        self._client = lib.jack_client_open(name.encode(), _JACK_NO_START_SERVER, ctypes.byref(status))
        if not self._client:
            raise JackError(f"cannot open JACK client {name!r} (status 0x{status.value:x}): is a JACK server running?")
        self._active = False
        self.ports = []
        flag = _PORT_IS_INPUT if is_input else _PORT_IS_OUTPUT
        for c in range(channels):
            port = lib.jack_port_register(self._client, f"{'in' if is_input else 'out'}_{c + 1}".encode(),
                                          _AUDIO_TYPE, flag, 0)
            if not port:
                self.close()
                raise JackError(f"cannot register port {c + 1} of JACK client {name!r}")
            self.ports.append(port)
            self.ctl[C_PORTS + c] = port
        self.ctl[C_CLIENT] = self._client
        self.ctl[C_CHANNELS] = channels
        self._set_buffer(self._buf)
        if lib.jack_set_process_callback(self._client, self._cb.address, self.ctl.ctypes.data):
            self.close()
            raise JackError(f"cannot set the process callback of JACK client {name!r}")

    def port_names(self) -> list[str]:
        return [_libjack().jack_port_name(p).decode() for p in self.ports]

    def _set_buffer(self, buf: np.ndarray) -> None:
        """Point the callback at ``buf``: only while it is not running (see ``_stop``)."""
        self._buf = buf
        self.ctl[C_BUF] = buf.ctypes.data
        self.ctl[C_FRAMES] = buf.shape[0]

    def _run(self) -> None:
        self.ctl[C_POS] = 0
        self.ctl[C_START] = -1
        publish(self.ctl, C_STATE, RUNNING)  # last: the callback reads the slots above only once it sees this

    def _stop(self) -> None:
        """Stop and let a cycle that may already have read RUNNING finish, so the buffer it holds
        can be replaced or freed."""
        publish(self.ctl, C_STATE, IDLE)
        if self._active:
            cycles, deadline = observe(self.ctl, C_CYCLES), time.monotonic() + 0.5
            while observe(self.ctl, C_CYCLES) < cycles + 2 and time.monotonic() < deadline:
                time.sleep(0.001)

    @property
    def pos(self) -> int:
        return int(observe(self.ctl, C_POS))

    @property
    def start_frame(self) -> int:
        """JACK frame time of the first frame played or recorded (-1: none yet)."""
        return int(observe(self.ctl, C_START))

    def _activate(self, pairs: list[tuple[str, str]]) -> None:
        lib = _libjack()
        if lib.jack_activate(self._client):
            raise JackError("cannot activate the JACK client")
        self._active = True
        for src, dst in pairs:
            if lib.jack_connect(self._client, src.encode(), dst.encode()) not in (0, 17):  # 17: EEXIST
                raise JackError(f"cannot connect JACK ports {src} -> {dst}")

    def close(self) -> None:
        if not self._client:
            return
        lib, client, active = _libjack(), self._client, self._active
        self._client, self._active = None, False

        def close_client() -> None:  # (the thread holds self: the callback's arrays live while it may run)
            if active:
                lib.jack_deactivate(client)
            lib.jack_client_close(client)

        done_within(close_client, CLIENT_CLOSE_WAIT_S, "jack-client-close")  # a paused server: left to the thread

    def __del__(self):  # the callback reads this object's arrays: never leave it running without them
        try:
            self.close()
        except Exception:
            pass


class JackPlayer(_NativeClient):
    """Plays ``signal`` (frames × channels) once per ``play()``, or round and round with ``loop``."""

    def __init__(self, signal: np.ndarray, name: str = "rt-player", loop: bool = False):
        signal = _frames_by_channels(signal)
        super().__init__(name, "play", signal.shape[1], is_input=False)
        self.ctl[C_LOOP] = int(loop)
        self._set_buffer(signal)

    def start(self, targets: list[str]) -> None:
        self._activate(list(zip(self.port_names(), targets)))

    def play(self, signal: np.ndarray | None = None) -> None:
        self._stop()
        if signal is not None:
            signal = _frames_by_channels(signal)
            if signal.shape[1] != len(self.ports):
                raise JackError(f"{signal.shape[1]} channels to play through {len(self.ports)} ports")
            self._set_buffer(signal)
        self._run()

    @property
    def playing(self) -> bool:
        return observe(self.ctl, C_STATE) == RUNNING

    def wait(self, timeout: float) -> bool:
        """Wait until the signal has been played out; False on timeout."""
        deadline = time.monotonic() + timeout
        while observe(self.ctl, C_STATE) != DONE:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


class JackRecorder(_NativeClient):
    """Records ``frames`` frames of its inputs while ``recording`` is set."""

    def __init__(self, frames: int, channels: int, name: str = "rt-recorder"):
        super().__init__(name, "record", channels, is_input=True)
        self._set_buffer(np.zeros((frames, channels), np.float32))

    @property
    def data(self) -> np.ndarray:
        return self._buf

    @property
    def recording(self) -> bool:
        return observe(self.ctl, C_STATE) == RUNNING

    @recording.setter
    def recording(self, on: bool) -> None:
        if on and observe(self.ctl, C_STATE) == IDLE:
            self._run()
        elif not on:
            self._stop()  # what was recorded stays readable

    def rearm(self, frames: int) -> None:
        """Start a fresh recording of ``frames`` frames (call while not recording)."""
        self._stop()
        self._set_buffer(np.zeros((frames, len(self.ports)), np.float32))
        self.ctl[C_POS] = 0
        self.ctl[C_START] = -1

    def since(self, start_frame: int) -> np.ndarray:
        """What was recorded, re-based to begin at JACK frame ``start_frame`` (a player's first
        frame; same length). Starting a player and a recorder from Python is not sample-synchronous:
        a JACK cycle may pass between the two calls, which would shift a measured lag by a period."""
        data = self._buf[: self.pos]
        if start_frame < 0 or self.start_frame < 0:
            return data.copy()
        shift = (int(start_frame) - int(self.start_frame) + 2 ** 31) % 2 ** 32 - 2 ** 31  # frame times wrap at 2^32
        out = np.zeros_like(data)
        if shift >= 0:
            out[: max(0, len(data) - shift)] = data[shift:]
        else:
            out[-shift:] = data[: len(data) + shift]
        return out

    def start(self, sources: list[str]) -> None:
        self._activate(list(zip(sources, self.port_names())))


def _frames_by_channels(signal: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(signal if signal.ndim == 2 else signal[:, None], np.float32)


def engine_ports(exclude=("system", "rt-player", "rt-recorder"),
                 client: str | None = None, via=None) -> tuple[list[str], list[str]]:
    """(input port names, output port names) of the engine's PortAudio JACK client: ``client``'s
    (``portaudio_client()`` for an engine in this process), or, without it, those of every client
    not in ``exclude`` (an engine in another process, alone on its server with the test rig).
    ``via``: an open ``jack.Client`` to ask (else one is opened for the question)."""
    import jack

    def ours(port) -> bool:
        owner = port.name.split(":")[0]
        return owner == client if client is not None else owner not in exclude

    c = via if via is not None else jack.Client("rt-probe", no_start_server=True)
    try:
        ins = [p.name for p in c.get_ports(is_audio=True, is_input=True) if ours(p)]
        outs = [p.name for p in c.get_ports(is_audio=True, is_output=True) if ours(p)]
    finally:
        if via is None:
            c.close()
    return ins, outs


def portaudio_client() -> str | None:
    """The JACK client name of this process's PortAudio, whose streams' ports are that client's
    ("PortAudio", or "PortAudio-01" where another process's PortAudio came first); None when
    PortAudio is not initialised here or runs no JACK host API."""
    import sys

    s = sys.modules.get("sounddevice")
    if s is None or not s._initialized:
        return None
    try:
        fn = ctypes.CDLL(s._libname).PaJack_GetClientName  # the library sounddevice loaded
    except (OSError, AttributeError):  # a PortAudio built without JACK
        return None
    fn.argtypes, fn.restype = [ctypes.POINTER(ctypes.c_char_p)], ctypes.c_int
    name = ctypes.c_char_p()
    if fn(ctypes.byref(name)) != 0 or not name.value:
        return None
    return name.value.decode()
