"""The panel's MIDI input choice (none, a virtual port, or a named port) on top of
realtime.io.midi_input (python-rtmidi, polled: JACK MIDI here, ALSA where present)."""
from __future__ import annotations

VIRTUAL = "Virtual port"
NONE = "(none)"
VIRTUAL_NAME = "rtaudio-host midi in"


def input_ports() -> tuple[list[str], str | None]:
    """(names, error): the named ports for the picker (our own virtual port left out)."""
    from realtime.io.devices import midi_ports

    ins, _, err = midi_ports()
    return [n for n in ins if VIRTUAL_NAME not in n], err


class MidiInput:
    """Open ``port`` (a name, VIRTUAL or NONE) and call ``sink(status, data1, data2, at_ns)`` for
    every channel voice message (sysex, clock and garbage are dropped; ``at_ns``: when it came), on
    a worker thread fed by the input's poll thread (``QueuedSink``: the panel's sink may wait for a
    rebuild; the poll thread must go on reading)."""

    def __init__(self, port: str, sink, on_status=None, release=None):
        from realtime.io.midi_input import MidiInput as _Input

        self.port_name = port
        self._in = None
        if port == VIRTUAL:
            self._in = _Input(sink, virtual=True, name=VIRTUAL_NAME, queued=True, release=release)
        elif port and port != NONE:  # a named port is watched: ``on_status(line)`` when it goes or comes back,
            # its notes released through ``release`` (realtime.io.midi_input.MidiInput), as any port's
            # are when it is closed
            self._in = _Input(sink, port=port, queued=True, on_status=on_status, release=release)

    @property
    def open(self) -> bool:
        return self._in is not None

    @property
    def lost(self) -> bool:
        """The named port is gone (until it reappears and is reconnected)."""
        return bool(self._in is not None and self._in.lost)

    def close(self) -> None:
        if self._in is not None:
            self._in.close()
            self._in = None
