"""MIDI input for the synth: a named or virtual mido port (python-rtmidi: JACK MIDI here, ALSA
where present), or raw bytes, forwarded as (status, data1, data2) to a sink such as
``Engine.send_midi``.

Only channel voice messages go on; system messages, sysex and realtime bytes are dropped here.
The synth still treats whatever reaches it as untrusted (see realtime/synth_voices.py).
"""
from __future__ import annotations

from typing import Callable

from realtime.errors import MidiInputError

Sink = Callable[[int, int, int], object]
CHANNEL_TYPES = {"note_on", "note_off", "control_change", "pitchwheel", "program_change", "aftertouch",
                 "polytouch"}



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
        import threading

        self.sink = sink
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="midi-in", daemon=True)
        self._worker.start()

    def __call__(self, status: int, data1: int, data2: int) -> None:
        self._queue.put((status, data1, data2))

    def _run(self) -> None:
        while (msg := self._queue.get()) is not None:
            self.sink(*msg)  # the panel's sink reports its own errors (on_midi_error)

    def close(self) -> None:
        """Deliver what is queued, then stop: no call to ``sink`` after this returns."""
        self._queue.put(None)
        self._worker.join()


class MidiInput:
    """Open a MIDI input port and forward its messages (mido calls back on rtmidi's thread,
    which is then the single producer of the engine's MIDI ring). ``queued``: through a
    ``QueuedSink``, for a sink that may wait."""

    def __init__(self, sink: Sink, port: str | None = None, virtual: bool = False, name: str = "rtaudio-synth",
                 queued: bool = False):
        import mido

        self.received = 0  # before the port opens: its first message may come at once
        self._queued = QueuedSink(sink) if queued else None
        self.sink = self._queued or sink
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

    def _on_message(self, msg) -> None:
        self.received += forward(msg, self.sink)

    def close(self) -> None:
        self.port.close()
        if self._queued is not None:
            self._queued.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
