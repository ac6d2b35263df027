"""MIDI input for the synth: a named or virtual python-rtmidi port (JACK MIDI here, ALSA where
present, the API mido is told to use by ``MIDO_BACKEND``), or raw bytes, forwarded as
(status, data1, data2[, at_ns]) to a sink such as ``Engine.send_midi``.

No Python runs on the MIDI API's thread. RtMidi's JACK backend reads its port on JACK's
real-time process thread; with a callback (what mido always installs) that thread took the GIL
for every message, so a busy Python thread in the process stalled the whole JACK graph (xruns)
and stamped notes late. Here rtmidi queues messages in C++ with their JACK-clock delta times and
a thread of ours polls the queue every 2 ms, stamping each message with when it came
(``Stamper``), not when it was read.

Only channel voice messages go on; system messages, sysex and realtime bytes are dropped here.
The synth still treats whatever reaches it as untrusted (see realtime/synth_voices.py).

A named port is watched while open: when it disappears (a keyboard unplugged, its JACK client
gone) every note is released and one line says so; when a port of that name is back, it is
connected again.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable

from realtime.errors import MidiInputError

Sink = Callable[..., object]  # sink(status, data1, data2) or, from a port, sink(status, data1, data2, at_ns)
# what a port that goes (or that is closed) leaves behind, on every channel: the pedal up, the
# controllers at rest (CC121: bend centred, the mod wheel down; a cable pulled mid-bend left the
# synth detuned), all notes off
RELEASE_ALL = tuple((0xB0 | ch, cc, 0) for ch in range(16) for cc in (64, 121, 123))
WATCH_S = 0.5  # how often a named port's presence is checked
POLL_S = 0.002  # the poll thread's sleep when rtmidi's queue is empty (idle: 1 ms cost 2 % of a core, 2 ms 0.3 %)
QUEUE_LIMIT = 8192  # messages rtmidi keeps while the poll thread is held up (its default: 1024)
DRAIN_MAX = 512  # messages read before they are stamped and forwarded


def channel_message(data) -> tuple[int, int, int] | None:
    """(status, data1, data2) of a channel voice message's bytes, else None (system messages,
    sysex, truncated or malformed ones)."""
    if not data or not 0x80 <= data[0] < 0xF0:
        return None
    need = 2 if data[0] & 0xF0 in (0xC0, 0xD0) else 3
    if len(data) < need or any(not 0 <= b < 0x80 for b in data[1:need]):
        return None
    return data[0], data[1], data[2] if need == 3 else 0


def rtmidi_api() -> int:
    """The rtmidi API ``MIDO_BACKEND`` names (``mido.backends.rtmidi/UNIX_JACK``), so ports open
    where mido lists them (realtime.io.devices); unspecified otherwise. The libjack python-rtmidi
    brings is silenced first (``native_stderr.quiet_libjack_beside``): when the server went away,
    its lines reached the terminal under the command's own."""
    import rtmidi

    from realtime.io.native_stderr import quiet_libjack_beside

    quiet_libjack_beside(rtmidi)

    backend = os.environ.get("MIDO_BACKEND", "")
    name = backend.split("/", 1)[1] if "rtmidi" in backend and "/" in backend else ""
    return getattr(rtmidi, "API_" + name.upper(), rtmidi.API_UNSPECIFIED) if name else rtmidi.API_UNSPECIFIED


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
    them to ``sink`` in order. The panel's sink takes a lock held through a whole engine rebuild;
    the poll thread goes on reading rtmidi's bounded queue meanwhile, so nothing overflows it
    (lost note-offs are stuck notes)."""

    def __init__(self, sink: Sink):
        import queue

        self.sink = sink
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="midi-in", daemon=True)
        self._worker.start()

    def __call__(self, *msg) -> None:
        self._queue.put(msg)

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


class Stamper:
    """rtmidi's delta times -> ``time.monotonic_ns()`` stamps for the engine.

    RtMidi's JACK thread notes the JACK clock of each message as it queues it and hands out only
    the time since the message before. The poll thread that reads them may run late (the GIL, a
    busy process), so "now" is not when a message came; the previous stamp plus the delta is.
    Two bounds keep the sum honest over hours whatever clock JACK keeps: a stamp is never later
    than now, and never earlier than the last poll that found the queue empty (it came after
    that) or the stamp before it. The very first messages have no stamp before them: they are
    placed so that the last of them came now.
    """

    def __init__(self):
        self.last: int | None = None  # the previous message's stamp
        self.floor = 0  # nothing still to be stamped came before this

    def idle(self, now_ns: int) -> None:
        """A poll at ``now_ns`` found nothing queued."""
        self.floor = max(self.floor, now_ns)

    def stamps(self, deltas_s, now_ns: int) -> list[int]:
        """Stamps of the messages read at ``now_ns``, given their delta times."""
        offs, off = [], 0
        for d in deltas_s:
            off += round(d * 1e9)
            offs.append(off)
        base = self.last if self.last is not None else now_ns - off
        out = []
        for off in offs:
            t = min(max(base + off, self.floor), now_ns)
            out.append(t)
            self.floor = t
        self.last = out[-1] if out else self.last
        return out


class MidiInput:
    """Open a MIDI input port and forward its channel messages, stamped, from a poll thread of
    ours (``midi-poll``, the single producer of the engine's MIDI ring). ``queued``: through a
    ``QueuedSink``, for a sink that may wait.

    A named port is watched by the same thread (every WATCH_S): when it disappears, what it sent
    before goes on, then ``RELEASE_ALL`` goes to ``release`` (default: the sink; through the queue
    when ``queued``), ``lost`` turns True and ``on_status`` gets one line; when a port of the same
    name is back it is opened again and ``on_status`` says so. ``on_status`` (default: print on
    stderr) and ``release`` may be set after the port opened; both are called from that thread."""

    def __init__(self, sink: Sink, port: str | None = None, virtual: bool = False, name: str = "rtaudio-synth",
                 queued: bool = False, on_status: Callable[[str], object] | None = None,
                 release: Sink | None = None):
        self.received = 0
        self._queued = QueuedSink(sink) if queued else None
        self.sink = self._queued or sink
        self.on_status = on_status
        self.release = release
        self.lost = False
        self.virtual = virtual
        self._stamper = Stamper()
        self._stop = threading.Event()
        self._client = name  # the MIDI client's name (JACK numbers a second one: "rtaudio-synth-01")
        try:
            if virtual:
                self._rt, self.name = self._open_virtual(name)
            else:
                names = self._list()
                match = [n for n in names if port is None or n == port] or [n for n in names if port and port in n]
                if not match:
                    raise MidiInputError(f"no MIDI input port {port!r}; available: {names or 'none'}")
                self.name = match[0]
                self._rt = self._open(self.name, client=name)
        except Exception as e:  # rtmidi: no JACK server / no ALSA sequencer
            if self._queued is not None:
                self._queued.close()
            if isinstance(e, MidiInputError):
                raise
            raise MidiInputError(f"MIDI input unavailable: {e}") from None
        self._thread = threading.Thread(target=self._run, name="midi-poll", daemon=True)
        self._thread.start()

    @staticmethod
    def _list() -> list[str]:
        import rtmidi

        rt = rtmidi.MidiIn(rtmidi_api())
        try:
            return rt.get_ports()
        finally:
            rt.delete()

    @classmethod
    def _open_virtual(cls, name: str):
        """Our own port ``name`` on a client of that name: (the rtmidi input, the port's full name
        as other programs list it, "rtaudio-synth:rtaudio-synth"). The full name is told by the
        ports a MIDI output lists before and after it opens: a second instance's client is
        renamed by JACK ("rtaudio-synth-01"), and its short name alone named the first one's."""
        import rtmidi

        out = rtmidi.MidiOut(rtmidi_api(), name=f"{name}-probe")
        try:
            before = set(out.get_ports())
            rt = cls._open(name, virtual=True, client=name)
            new = [p for p in out.get_ports() if p not in before and name in p]
        finally:
            out.delete()
        return rt, new[0] if len(new) == 1 else name

    @staticmethod
    def _open(name: str, virtual: bool = False, client: str = "rtaudio-synth"):
        """An rtmidi input on ``name`` (a port of that name, or our own virtual one), no callback:
        rtmidi keeps what comes in its own queue, with delta times, for ``get_message``. Its MIDI
        client is named ``client`` (rtmidi's default, "RtMidiIn Client", said nothing)."""
        import rtmidi

        rt = rtmidi.MidiIn(rtmidi_api(), name=client, queue_size_limit=QUEUE_LIMIT)
        try:
            rt.ignore_types(sysex=False, timing=False, active_sense=False)  # every message's delta counts
            if virtual:
                rt.open_virtual_port(name)
            else:
                ports = rt.get_ports()
                if name not in ports:
                    raise MidiInputError(f"no MIDI input port {name!r}; available: {ports or 'none'}")
                rt.open_port(ports.index(name))
        except BaseException:
            rt.delete()
            raise
        return rt

    def _run(self) -> None:
        next_look = time.monotonic() + WATCH_S
        while not self._stop.is_set():
            if not self._drain():
                self._stop.wait(POLL_S)
            if not self.virtual and time.monotonic() >= next_look:  # our own virtual port cannot vanish
                next_look = time.monotonic() + WATCH_S
                self._watch()
        self._drain()

    def _drain(self) -> int:
        """Forward what rtmidi has queued; how many messages there were (system ones too)."""
        got, get = [], self._rt.get_message
        before = time.monotonic_ns()
        while len(got) < DRAIN_MAX and (m := get()) is not None:
            got.append(m)
        if not got:
            self._stamper.idle(before)  # what comes next came after this look
            return 0
        now = time.monotonic_ns()
        # every message's delta counts, system ones too: the next delta is measured from them
        for (data, _), t in zip(got, self._stamper.stamps([d for _, d in got], now)):
            msg = channel_message(data)
            if msg is not None:
                self.sink(*msg, t)
                self.received += 1
        return len(got)

    def _watch(self) -> None:
        try:
            here = self.name in self._rt.get_ports()
        except Exception:  # the server is going away: the engine reports that
            return
        if not here and not self.lost:
            self._drain()  # what the keyboard sent before it went
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
            try:
                for m in RELEASE_ALL:
                    release(*m)
            except Exception:  # a chain or engine already gone holds nothing
                pass

        if self._queued is not None:
            self._queued.call(send)  # after the notes already queued, on the thread that sends them
        else:
            send()

    def _reconnect(self) -> None:
        try:
            rt = self._open(self.name, client=self._client)
        except Exception:  # gone again, or not ready yet: the next look tries again
            return
        # the old input heard the vanished source only: JACK and ALSA drop a connection with its port
        old, self._rt = self._rt, rt
        old.close_port()
        old.delete()
        self._stamper = Stamper()  # the new client's first delta is 0, not the time since the old one's last
        self.lost = False
        self._say(f"MIDI port {self.name!r} is back: reconnected")

    def _say(self, line: str) -> None:
        if self.on_status is None:
            print(line, file=sys.stderr, flush=True)
        else:
            self.on_status(line)

    def close(self) -> None:
        """Forward what is queued, stop the poll thread, close the port, release what it left held
        (``RELEASE_ALL``, as when a port is lost: a port switched in the panel's settings left its
        notes and pedal on, and the new port's notes rang forever), close the queue's worker."""
        self._stop.set()
        self._thread.join()
        self._rt.close_port()
        self._rt.delete()
        if not self.lost:
            self._release_all()
        if self._queued is not None:
            self._queued.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
