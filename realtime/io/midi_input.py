"""MIDI input for the synth: a named or virtual mido port (python-rtmidi: JACK MIDI here, ALSA
where present), or raw bytes, forwarded as (status, data1, data2) to a sink such as
``Engine.send_midi``.

Only channel voice messages go on; system messages, sysex and realtime bytes are dropped here.
The synth still treats whatever reaches it as untrusted (see realtime/synth_voices.py).

A named port is watched while open: when it disappears (a keyboard unplugged, its JACK client
gone) every note is released and one line says so; when a port of that name is back, it is
connected again.
"""
from __future__ import annotations

import sys
import threading
from typing import Callable

from realtime.errors import MidiInputError

Sink = Callable[[int, int, int], object]
CHANNEL_TYPES = {"note_on", "note_off", "control_change", "pitchwheel", "program_change", "aftertouch",
                 "polytouch"}
# sustain off, then all notes off, on every channel: what a lost keyboard can no longer send
RELEASE_ALL = tuple((0xB0 | ch, cc, 0) for ch in range(16) for cc in (64, 123))
WATCH_S = 0.5  # how often a named port's presence is checked


def forward(msg, sink: Sink) -> bool:
    """Send one mido message to sink if it is a channel voice message."""
    if msg.type not in CHANNEL_TYPES:
        return False
    b = msg.bytes()
    sink(b[0], b[1] if len(b) > 1 else 0, b[2] if len(b) > 2 else 0)
    return True


class ByteFeeder:
    """Raw MIDI bytes (a serial stream, a file dump) -> sink. A small state machine because
    mido's parser does not do running status: data bytes after a channel status reuse it;
    realtime bytes (F8-FF) may appear anywhere and are skipped; sysex (F0 .. F7) and system
    common messages are skipped and cancel running status; stray data bytes are dropped."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.status = 0  # running status (0 = none)
        self.data: list[int] = []
        self.in_sysex = False

    def feed(self, data) -> int:
        """Feed bytes; returns how many channel messages went to the sink."""
        n = 0
        for x in data:
            try:
                b = int(x)
            except (TypeError, ValueError):
                continue
            if not 0 <= b <= 255:
                continue
            if b >= 0xF8:  # realtime: transparent
                continue
            if b >= 0x80:
                self.in_sysex = b == 0xF0
                self.status = b if b < 0xF0 else 0
                self.data = []
                continue
            if self.in_sysex or not self.status:
                continue
            self.data.append(b)
            need = 1 if self.status & 0xF0 in (0xC0, 0xD0) else 2
            if len(self.data) == need:
                d = self.data + [0]
                self.sink(self.status, d[0], d[1])
                self.data = []
                n += 1
        return n


class QueuedSink:
    """A sink that never makes its caller wait: messages go into a queue, and a worker thread hands
    them to ``sink`` in order. rtmidi calls back on JACK's real-time process thread, where a sink
    that takes a lock (the panel's, held through a whole engine rebuild) or waits on a pipe made
    JACK drop the messages that came meanwhile: lost note-offs are stuck notes."""

    def __init__(self, sink: Sink):
        import queue

        self.sink = sink
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="midi-in", daemon=True)
        self._worker.start()

    def __call__(self, status: int, data1: int, data2: int) -> None:
        self._queue.put((status, data1, data2))

    def call(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the worker, after the messages queued before it."""
        self._queue.put(fn)

    def _run(self) -> None:
        while (msg := self._queue.get()) is not None:
            if callable(msg):
                msg()
            else:
                self.sink(*msg)  # the panel's sink reports its own errors (on_midi_error)

    def close(self) -> None:
        """Deliver what is queued, then stop: no call to ``sink`` after this returns."""
        self._queue.put(None)
        self._worker.join()


class MidiInput:
    """Open a MIDI input port and forward its messages (mido calls back on rtmidi's thread,
    which is then the single producer of the engine's MIDI ring). ``queued``: through a
    ``QueuedSink``, for a sink that may wait.

    A named port is watched on a thread of its own (every WATCH_S): when it disappears,
    ``RELEASE_ALL`` goes to ``release`` (default: the sink; through the queue when ``queued``),
    ``lost`` turns True and ``on_status`` gets one line; when a port of the same name is back it is
    opened again and ``on_status`` says so. ``on_status`` (default: print on stderr) and
    ``release`` may be set after the port opened; both are called from the watcher thread."""

    def __init__(self, sink: Sink, port: str | None = None, virtual: bool = False, name: str = "rtaudio-synth",
                 queued: bool = False, on_status: Callable[[str], object] | None = None,
                 release: Sink | None = None):
        import mido

        self.received = 0  # before the port opens: its first message may come at once
        self._queued = QueuedSink(sink) if queued else None
        self.sink = self._queued or sink
        self.on_status = on_status
        self.release = release
        self.lost = False
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        try:
            if virtual:
                self.port = mido.open_input(name, virtual=True, callback=self._on_message)
                self.name = name
            else:
                names = mido.get_input_names()
                match = [n for n in names if port is None or n == port] or [n for n in names if port and port in n]
                if not match:
                    raise MidiInputError(f"no MIDI input port {port!r}; available: {names or 'none'}")
                self.name = match[0]
                self.port = mido.open_input(self.name, callback=self._on_message)
        except Exception as e:  # rtmidi: no JACK server / no ALSA sequencer
            if self._queued is not None:
                self._queued.close()
            if isinstance(e, MidiInputError):
                raise
            raise MidiInputError(f"MIDI input unavailable: {e}") from None
        if not virtual:  # our own virtual port cannot vanish under us
            self._watcher = threading.Thread(target=self._watch, name="midi-watch", daemon=True)
            self._watcher.start()

    def _on_message(self, msg) -> None:
        self.received += forward(msg, self.sink)

    def _port_names(self) -> list[str]:
        import mido

        # the open port's own rtmidi client lists them; mido's list opens (and on JACK activates)
        # two new clients per call, a graph change on the live server every WATCH_S
        rt = getattr(self.port, "_rt", None)
        return rt.get_ports() if rt is not None else mido.get_input_names()

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_S):
            try:
                here = self.name in self._port_names()
            except Exception:  # the server is going away: the engine reports that
                continue
            if not here and not self.lost:
                self.lost = True
                self._release_all()
                self._say(f"MIDI port {self.name!r} lost: its notes released; reconnecting when it reappears")
            elif here and self.lost:
                self._reconnect()

    def _release_all(self) -> None:
        release = self.release
        if release is None:
            release = self._queued.sink if self._queued is not None else self.sink

        def send() -> None:
            for m in RELEASE_ALL:
                release(*m)

        if self._queued is not None:
            self._queued.call(send)  # after the notes already queued, on the thread that sends them
        else:
            send()

    def _reconnect(self) -> None:
        import mido

        try:
            port = mido.open_input(self.name, callback=self._on_message)
        except Exception:  # gone again, or not ready yet: the next look tries again
            return
        # the old port heard the vanished source only: JACK and ALSA drop a connection with its port
        old, self.port = self.port, port
        old.close()
        self.lost = False
        self._say(f"MIDI port {self.name!r} is back: reconnected")

    def _say(self, line: str) -> None:
        if self.on_status is None:
            print(line, file=sys.stderr, flush=True)
        else:
            self.on_status(line)

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()  # before the port closes: it may be replacing the port
        self.port.close()
        if self._queued is not None:
            self._queued.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
