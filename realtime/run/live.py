"""Headless live mode, and the end-to-end demo for machines without a sound card."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from realtime.dsp.processor import junk_samples
from realtime.engine import callback as cb
from realtime.engine.config import EngineConfig
from realtime.engine.control import CC, CCMap
from realtime.engine.engine import Engine
from realtime.errors import (
    ConfigError,
    EngineError,
    MidiInputError,
    raise_pending_interrupt,
    say_stderr,
    signals_deferred,
)
from realtime.io.files import atomic_write, is_terminal

DEMO_SIGNAL = Path(__file__).resolve().parents[1] / "assets" / "demo.flac"
MAX_DEMO_S = 600.0  # what the demo plays and records is held in memory: 10 minutes is ~0.5 GB


STATUS_LOG_S = 60.0  # the status line's period where stderr is not a terminal


def status_line(engine: Engine) -> str:
    """The live status: rate, block, latency, DSP load (the mean block's share of the period: the
    median hid a chain's expensive blocks), late blocks, xruns, failed slots, a stalled device."""
    s, lat = engine.stats(percentiles=False), engine.latency()  # (sorting 65536 block times: the DSP thread waited)
    failed = "".join(f" | {slot} FAILED ({err}), bypassed" for slot, err in s["processor_errors"].items())
    failed += "".join(f" | {slot} junk silenced: {n}" for slot, n in _junk(engine).items() if n)
    stalled = " | STALLED: no callbacks, waiting for the device" if engine.stalled else ""
    return (f"{lat['samplerate']} Hz | {lat['blocksize']} frames | latency {lat['round_trip_ms']:.1f} ms "
            f"(added {lat['added_ms']:.1f}) | DSP {100 * s['dsp_load_mean']:.1f}% | late {s['late_blocks']} "
            f"| xruns {s['server_xruns']}{failed}{stalled}")


def _junk(engine) -> dict[str, int]:
    """Per hosted plugin's slot, its output samples replaced by silence (``junk_samples``: from a
    module the engine has loaded; importing the offline runner on the first status tick held the
    interpreter long enough for `synth --live` to play 7 late blocks)."""
    chain = getattr(engine, "chain", None)
    return junk_samples(chain) if chain is not None else {}


def _below_status_line(line: str) -> None:
    """A line said while the status line runs (the port lost, back): on a line of its own, the
    status line redrawn under it (it was glued onto the status line's end)."""
    say_stderr("\n" + line)


# what the redrawn status line leaves out first where the terminal is too narrow, in this order
SHORTER = (re.compile(r" \(added [^)]*\)"), re.compile(r"^\d+ Hz \| "), re.compile(r"^\d+ frames \| "),
           re.compile(r"^latency [^|]*\| "))


def fit_status(line: str, width: int) -> str:
    """``line`` in ``width`` characters: the least telling fields left out (``SHORTER``), then cut.
    A line as wide as the terminal wrapped, and each redraw then began a new line."""
    for field in SHORTER:
        if len(line) <= width:
            break
        line = field.sub("", line, count=1)
    return line[:max(0, width)]


def _columns() -> int:
    """The width of the terminal stderr shows on (``COLUMNS`` or 80 where it cannot be asked)."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return shutil.get_terminal_size().columns


def _redraw(line: str) -> None:
    """The status line drawn over the last one: one column short of the terminal's width (a full
    one wraps), the rest of the old line cleared ("xruns 30" stayed where 3 was drawn)."""
    say_stderr("\r" + fit_status(line, _columns() - 1) + "\x1b[K", end="")


def stream_until(engine: Engine, seconds: float = 0, status: bool = True, recorder=None) -> int:
    """Keep a started engine streaming, with a status line on stderr, until ``seconds`` have passed
    (0: until Ctrl-C) or the device or server is gone. A ``recorder`` (``FileRecorder``) whose
    writing stopped (a full disk) is said at once, in a line of its own: the engine plays on. So
    are the engine's ``notices`` (the server's period changed), and a device that stopped
    delivering callbacks but may come back (``Engine.stalled``: a paused server, a suspend): its
    error when it begins, that it is back when it ends; the stream goes on meanwhile.

    Returns
    -------
    int
        The exit status: 0, or 1 when the device or server was lost (143 / 129 / 131 after SIGTERM /
        SIGHUP / SIGQUIT). The interrupt is taken here: an error of the tear-down that follows (a
        recording that could not be finished) is said as that error, not as the interrupt.
    """
    t0 = time.monotonic()
    # not a terminal (systemd's journal, a log file): no line rewritten every 0.5 s, one a minute
    redraw = status and is_terminal(sys.stderr)
    next_line = t0 + STATUS_LOG_S
    said_recording = False
    said_slow_disk = False
    said_stall = None
    said_junk: set[str] = set()
    notices = getattr(engine, "notices", [])  # (a stand-in with only ``error`` streams as before)

    def say(line: str) -> None:
        if redraw:
            _below_status_line(line)
        else:
            say_stderr(line)

    try:
        while not seconds or time.monotonic() - t0 < seconds:
            # the last wait only as long as is left: `--seconds 0.1` streamed 0.5 s, 1.2 streamed 1.5
            time.sleep(min(0.5, max(0.0, t0 + seconds - time.monotonic())) if seconds else 0.5)
            raise_pending_interrupt()  # a Ctrl-C whose exception start-up code swallowed
            stopped = recorder.stopped() if recorder is not None and not said_recording else None
            if stopped:
                said_recording = True
                say(f"error: {stopped}")
            if recorder is not None and not said_slow_disk and getattr(engine, "tap_dropped_frames", 0):
                said_slow_disk = True  # (at the stop only, it came too late to do anything about it)
                say(f"warning: the disk cannot keep up with the recording to {recorder.path}: what it misses is "
                    "recorded as silence (the total is said at the stop)")
            while notices:
                say(notices.pop(0))
            for slot, n in _junk(engine).items():  # as `process` says it: the output has gaps
                if n and slot not in said_junk:
                    said_junk.add(slot)
                    say(f"warning: plugin in slot {slot} puts out junk (NaN/Inf or absurd levels): replaced by "
                        "silence (the count is on the status line)")
            error = engine.error  # first: a stall that ends or turns fatal meanwhile is said next time
            fatal = getattr(engine, "fatal_error", error)
            stall = error if fatal is None else None
            changed = stall != said_stall
            if changed:  # a stall begins or ends: said once, below the status line
                if stall:
                    say(f"error: {stall}")
                elif said_stall and fatal is None:
                    say("the audio device is back: playing on")
                said_stall = stall
            if redraw:
                _redraw(status_line(engine))
            elif status and (changed or time.monotonic() >= next_line):  # and when a stall begins or ends
                next_line = time.monotonic() + STATUS_LOG_S
                say_stderr(status_line(engine))
            if fatal:
                say_stderr(f"\nerror: {fatal}")
                return 1
        if redraw:
            say_stderr("")
        return 0
    except KeyboardInterrupt as e:  # Ctrl-C is how a live run is meant to end; SIGTERM / SIGHUP say 143 / 129 as usual
        from realtime.errors import Interrupted, forget_pending_interrupt, interrupt_status

        forget_pending_interrupt()  # taken: main must not turn the tear-down's error into "interrupted"
        say_stderr("\nstopped")
        return interrupt_status(e) if isinstance(e, Interrupted) else 0


class MappedMidi:
    """The MIDI sink of ``run`` for a preset with controller mappings (its ``midi`` list, learnt in
    the panel): a mapped controller moves its knob, as in the panel (``gui.host``'s ``midi_in``),
    and does not reach the chain; every other message goes on to it. Called on the MIDI thread."""

    def __init__(self, engine: Engine, mappings, on_status=None):
        self.engine, self.cc_map = engine, CCMap(mappings)
        self.on_status = on_status or say_stderr
        self._failing: set[str] = set()  # targets whose last change failed: said once, not per message

    def __call__(self, status: int, data1: int = 0, data2: int = 0, at_ns: int | None = None) -> bool:
        if status & 0xF0 == CC:
            target, _ = self.cc_map.controller(status & 0x0F, data1)
            if target is not None:
                try:
                    self.engine.writer.set_target(target, data2 / 127.0)
                except EngineError as e:  # a full control queue: this move is lost, the next may pass
                    if target not in self._failing:
                        self._failing.add(target)
                        self.on_status(f"MIDI CC {data1} -> {target}: {e}")
                    return False
                self._failing.discard(target)
                return True
        return self.engine.send_midi(status, data1, data2, at_ns)


def run_live(chain, config: EngineConfig, seconds: float = 0, demo: bool = False,
             demo_out: str = "demo_out.wav", record: str | None = None, midi_port: str | None = None,
             midi_map=()) -> int:
    """Run ``chain`` live on the audio device (or, with none, the demo through a private JACK
    server) until ``seconds`` pass or Ctrl-C; returns the exit status. A chain that takes MIDI, or
    whose knobs ``midi_map`` maps to controllers (a preset's ``midi`` list), listens on
    ``midi_port`` (a virtual port when None) on the device; the demo plays no MIDI."""
    from realtime.io.devices import has_audio_device
    from realtime.io.jackserver import ensure_server
    from realtime.run.offline import _same_file, check_destination, output_format

    config.validate()  # refused before a server or a recording starts (they would be left behind)
    if midi_port is not None and not (midi_map or chain.takes_midi):
        raise ConfigError(f"--midi-port {midi_port}: no processor of the chain takes MIDI (an instrument: preset "
                          "synth, an LV2 instrument) and the preset maps no controller to a knob")
    rec_format = check_record(record, config.samplerate)  # refused before anything starts, not after the run
    named = config.input_device is not None or config.output_device is not None
    if not demo and not has_audio_device(config.mode, named) and has_audio_device("output"):
        # an output-only card or JACK server: the demo it fell back to failed on PortAudio's own words
        raise ConfigError(f"--mode {config.mode}: the audio device has no input (outputs only): `--mode output` "
                          "plays without one (an instrument: preset synth), or name one with --input-device")
    if demo or not has_audio_device(config.mode, named):
        if midi_port is not None:  # asked for a keyboard: a demo that plays audio instead, without a word, is not it
            raise ConfigError(f"--midi-port {midi_port}: the demo plays audio through the chain, no MIDI"
                              + ("" if demo else " (no audio device found: start a JACK server or connect a sound card)"))
        if config.mode != "duplex":  # its signal goes in and comes back out: one way, it measured nothing
            raise ConfigError(f"--mode {config.mode}: the demo plays its signal through the chain and records "
                              "what comes out, duplex only" + ("" if demo else " (no audio device found)"))
        check_destination(Path(demo_out))  # refusals first: a refused run says one line, nothing else
        output_format(Path(demo_out), "FLOAT", config.samplerate)  # an extension it cannot write, refused now
        if seconds > MAX_DEMO_S:  # the demo keeps what it plays and records in memory (an hour: 3 GB)
            raise ConfigError(f"the demo plays at most {MAX_DEMO_S:g} s (asked: {seconds:g} s); "
                              "on a sound card or JACK server `run` streams for as long as you like")
        if record and _same_file(Path(record), Path(demo_out)):  # one file would silently replace the other
            raise ConfigError(f"--record and --demo-out name the same file ({record}): give each its own")
        asked, demo = demo, True
    listens = not demo and (bool(midi_map) or chain.takes_midi)  # a MIDI port: the demo plays none
    server = recorder = engine = code = None
    midi = contextlib.ExitStack()
    try:
        if demo:
            server = ensure_server(config.samplerate, config.blocksize)
            print(_demo_line(asked, started=server is not None))
        recorder = open_recorder(record, rec_format, config)
        engine = Engine(chain, config, tap=recorder.ring if recorder else None)
        if demo:
            from realtime.io.jackio import compile_callbacks

            with signals_deferred():  # a Ctrl-C inside Numba's compiler was swallowed with a traceback
                compile_callbacks()  # before the engine runs: compiling holds the GIL its DSP thread needs
        raise_pending_interrupt()  # Numba's compiler can swallow the exception a Ctrl-C raised in it
        if listens:  # the port before the stream: opening it holds the interpreter
            from realtime.io.midi_input import MidiInput

            engine.check_devices()  # no device is what is said, not the MIDI port's failure to reach JACK
            sink = MappedMidi(engine, midi_map, _below_status_line) if midi_map else engine.send_midi
            try:
                # a lost or closed port's releases (CC64, CC121, CC123 on every channel) go to the chain,
                # past the mappings: through them, a knob mapped to the pedal fell to its lowest
                port = midi.enter_context(MidiInput(sink, midi_port, midi_port is None, on_status=_below_status_line,
                                                    release=engine.send_midi))
            except MidiInputError as e:
                if chain.takes_midi or midi_port is not None:  # played from it, or asked for: its failure is the run's
                    raise
                # an effects chain whose knobs a keyboard would move: it runs, as before the mappings applied here
                print(f"warning: {e}; the preset's {len(midi_map)} MIDI controller mapping(s) do nothing",
                      file=sys.stderr)
                listens = False
        engine.start()
        raise_pending_interrupt()
        if demo:
            code = _play_demo(engine, demo_out, seconds)
            return code
        if listens:  # said once the stream runs: a note played before that came out as a blip
            mapped = f" ({len(midi_map)} controller(s) mapped to knobs)" if midi_map else ""
            say_stderr(f"MIDI in on port {port.name!r}{mapped}")
        say_stderr(f"Live: Ctrl-C to stop. {status_line(engine)}")
        code = stream_until(engine, seconds, recorder=recorder)
        return code
    finally:
        # a second Ctrl-C here would lose the recording and leave the server; one after the stream
        # ended (``code``) is dropped: "interrupted" after "recorded …" said what did not happen
        with signals_deferred(raise_after=code is None):
            _tear_down(engine, recorder, server, record, config.samplerate, midi)


def _demo_line(asked: bool, started: bool) -> str:
    """What the demo says it runs on: a private server it ``started``, or the one already running."""
    if asked:
        return "Demo mode: private JACK dummy server." if started else "Demo mode: on the JACK server already running."
    return ("No audio device found: " + ("started a private JACK server (dummy driver); " if started else "")
            + "playing the bundled demo signal through the live engine"
            + ("." if started else " on the JACK server already running."))


def check_record(record: str | None, samplerate: int) -> tuple[str, str] | None:
    """``--record FILE``'s (format, subtype) by its extension (32-bit float where the format holds
    it), or None without one; a file that cannot be written there is refused now, before a server,
    an engine or a MIDI port starts (``run`` and ``synth --live`` alike). An existing file of that
    name is never replaced: the take goes to the next free ``NAME-2.EXT`` (``open_recorder`` says
    so). A take that an earlier recording into that folder left when its process died is kept under
    a name of its own (said).

    Raises
    ------
    OfflineError
        An extension it cannot write, a folder, a missing or read-only folder.
    ConfigError
        An empty name.
    """
    if record is None:
        return None
    if not record.strip():  # `--record ""` (an unset variable) ran and recorded nothing, without a word
        raise ConfigError("--record: empty file name")
    from realtime.io.recorder import free_take, recover_takes
    from realtime.run.offline import check_destination, output_format

    check_destination(free_take(record))  # the name it will record to (an existing file is left as it is)
    fmt = output_format(Path(record), "FLOAT", samplerate)
    for line in recover_takes(record):  # a take an earlier run's death left hidden: kept, not replaced
        say_stderr(line)
    return fmt


def open_recorder(record: str | None, rec_format: tuple[str, str] | None, config: EngineConfig):
    """The ``FileRecorder`` that keeps what the engine outputs (its tap; MIDI in is not kept), or None.
    ``_tear_down`` finishes it: the file is written whole at the stop, or not at all if the engine
    never ran."""
    if not record:
        return None
    from realtime.io.recorder import FileRecorder

    recorder = FileRecorder(record, config.samplerate, config.channels, format=rec_format[0], subtype=rec_format[1])
    if recorder.why:  # said before the stream runs, not only in the last line
        say_stderr(f"recording to {recorder.path}: {recorder.why}")
    return recorder


def _tear_down(engine, recorder, server, record, samplerate, midi: contextlib.ExitStack | None = None) -> None:
    """Stop the engine, finish the recording, stop the server, close the MIDI port (``midi``), in
    that order, each whatever the one before it raised."""
    try:
        if engine is not None:
            engine.stop()  # always before the server goes away
        if recorder is not None:
            if engine is None or not _tapped_frames(engine):  # nothing came out (it never ran, or was
                recorder.discard()  # stopped before its first block): no empty file
                return
            recorder.close()
            silent = getattr(recorder, "silence_frames", 0) / samplerate
            lost = engine.tap_dropped_frames / samplerate - silent  # (the gap log full: not placed)
            moved = f" ({recorder.moved})" if recorder.moved else ""
            say_stderr(f"recorded {recorder.frames / samplerate:.1f} s to {recorder.path}{moved}"
                 + (f"; {silent:.2f} s of it silence, where the disk could not keep up" if silent else "")
                 + (f"; {lost:.2f} s lost where the disk could not keep up" if lost >= 0.005 else ""))
    finally:
        try:
            if server:
                server.stop()
        finally:
            if midi is not None:
                midi.close()


def _tapped_frames(engine: Engine) -> int:
    """Frames the engine gave its tap (the recorder): every block processed, less what the full
    ring dropped. 0 when stopped before its first block, though callbacks may have run: Ctrl-C at
    the start left a 0-frame file ("recorded 0.0 s")."""
    if not engine.stats_arr[cb.ST_CALLBACKS]:
        return 0
    return engine.diagnostics.dsp_n * engine.config.blocksize - engine.tap_dropped_frames


def load_demo_signal(samplerate: int, channels: int) -> np.ndarray:
    import soundfile as sf
    import soxr

    x, sr = sf.read(str(DEMO_SIGNAL), dtype="float32", always_2d=True)
    if sr != samplerate:
        x = soxr.resample(x, sr, samplerate).astype(np.float32)
    return np.ascontiguousarray(x[:, :channels] if channels <= x.shape[1] else np.repeat(x[:, :1], channels, 1))


def measure_lag(played: np.ndarray, recorded: np.ndarray, max_lag: int) -> int:
    """Delay of ``recorded`` against ``played`` by cross-correlation (first channel)."""
    a, b = played[:, 0].astype(np.float64), recorded[:, 0].astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    xc = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    return int(np.argmax(xc[: max_lag + 1]))


FOLLOWS = 0.2  # the normalised correlation at the lag under which the output does not follow the input


def lag_if_it_follows(played: np.ndarray, recorded: np.ndarray, max_lag: int) -> int | None:
    """``measure_lag``, or None where what was recorded does not follow what was played (silence, a
    plugin's junk replaced by silence, an unrelated sound): its argmax was a number all the same (0
    frames, or 11,862). A chain that keeps the signal recognisable but changes its shape (a polarity
    inversion, a long reverb) may still give a wrong lag."""
    lag = measure_lag(played, recorded, max_lag)
    a = played[:, 0].astype(np.float64)
    b = recorded[lag:, 0].astype(np.float64)
    n = min(len(a), len(b))
    norm = np.linalg.norm(a[:n]) * np.linalg.norm(b[:n])
    return lag if norm > 0 and float(a[:n] @ b[:n]) / norm >= FOLLOWS else None


def write_audio_atomic(path: str, data: np.ndarray, samplerate: int) -> None:
    """``data`` to ``path`` in the format its extension names (float WAV for .wav), whole or not at all."""
    import soundfile as sf

    from realtime.io.files import sf_path
    from realtime.run.offline import check_written, output_format

    out = Path(path).resolve()
    fmt, subtype = output_format(out, "FLOAT", samplerate)
    with atomic_write(out) as tmp:
        sf.write(sf_path(tmp), data, samplerate, subtype=subtype, format=fmt)
        check_written(tmp, out, len(data))


def demo_latency_text(lag: int | None, lat: dict) -> str:
    """The demo's measured round trip and what it is made of (``lat``: ``Engine.latency()``).

    The demo's signal goes from one JACK client to another (its player, the engine's stream, its
    recorder): it passes the engine's pre-fill and chain, and one block of PortAudio's own, the
    buffer its JACK stream puts on a duplex stream's output (measured: blocks of 32, 64 and 128 on
    a 128-frame server each add their block). The status line's round trip is PortAudio's device
    figures (that block, and the server's own latency: on the dummy driver, its playback's one
    period) plus what the engine adds; a sound card's signal passes through the server's part,
    this one does not."""
    sr, block = lat["samplerate"], lat["blocksize"]
    if lag is None:
        return ("measured round trip through JACK: not measured, what came out does not follow what was played "
                f"(silence, or the chain makes something else of it); the engine adds {lat['added_frames']} frames")
    ms = 1000.0 / sr
    device = round((lat["device_input_ms"] + lat["device_output_ms"]) / ms)
    text = (f"measured round trip through JACK: {lag} frames = {lag * ms:.2f} ms (engine adds "
            f"{lat['added_frames']} frames: {lat['prefill_frames']} pre-fill + {lat['chain_latency_frames']} chain; "
            f"PortAudio's JACK stream {block}: one block, its duplex buffer; in all {lat['added_frames'] + block})")
    if device >= block:
        text += (f"\nthe status line's latency, {lat['round_trip_ms']:.1f} ms, also counts the server's own "
                 f"{device - block} frames ({(device - block) * ms:.2f} ms: PortAudio's device figures, "
                 f"{device} frames, less that block): a sound card's signal passes through them, "
                 f"this client-to-client one does not")
    return text


def _play_demo(engine: Engine, demo_out: str, seconds: float = 0) -> int:
    from realtime.io.jackio import JackPlayer, JackRecorder, engine_ports, portaudio_client

    c = engine.config
    signal = load_demo_signal(c.samplerate, c.channels)
    if seconds:  # the demo signal looped or cut to the length asked for
        signal = np.resize(signal, (max(1, int(seconds * c.samplerate)), c.channels))
    # this engine's own ports: another client's (jack_iodelay, a second demo) may come first
    ins, outs = engine_ports(client=portaudio_client())
    tail = c.samplerate // 2
    rec = JackRecorder(signal.shape[0] + tail, c.channels)
    player = JackPlayer(signal)
    try:
        rec.start(outs[: c.channels])
        player.start(ins[: c.channels])
        time.sleep(0.1)
        rec.recording = True
        player.play()
        print(f"playing {signal.shape[0] / c.samplerate:.1f} s of demo audio through the chain ...")
        deadline = time.monotonic() + signal.shape[0] / c.samplerate + 5
        while not player.wait(0.1) and time.monotonic() < deadline and not engine.fatal_error:
            raise_pending_interrupt()
        if not engine.fatal_error:
            time.sleep(tail / c.samplerate)
        rec.recording = False
    finally:
        player.close()
        rec.close()
    if engine.fatal_error:  # the server died midway: said as `run` says it, and nothing cut is written
        print(f"error: {engine.fatal_error}", file=sys.stderr)
        return 1
    out = rec.since(player.start_frame)
    write_audio_atomic(demo_out, out, c.samplerate)
    lag = lag_if_it_follows(signal, out, tail)
    s, lat = engine.stats(), engine.latency()
    print(f"wrote {demo_out} ({rec.pos / c.samplerate:.1f} s)")
    print(demo_latency_text(lag, lat))
    print(f"DSP load {100 * s['dsp_load_mean']:.1f}% (mean; p99 {s['dsp_us_p99']:.0f} us per {c.blocksize}-frame "
          f"block), callback p99 {s['callback_us_p99']:.0f} us, late blocks {s['late_blocks']}, "
          f"server xruns {s['server_xruns']}")
    return 0


def play_midi_live(chain, config: EngineConfig, port: str | None, virtual: bool, seconds: float = 0,
                   record: str | None = None) -> int:
    """Play an instrument chain live from a MIDI input port (a virtual one when ``port`` is None).

    Prints the MIDI message count and the engine's stats as JSON when it stops; returns the exit
    status (1 when the device or server was lost). ``record``: keep what the engine outputs in
    that audio file, as ``run --record`` does (``check_record``, ``open_recorder``, ``_tear_down``:
    the audio only, whole up to the stop, also after Ctrl-C or a lost server).
    """
    import json

    from realtime.io.midi_input import MidiInput
    from realtime.io.portaudio import rescan

    rec_format = check_record(record, config.samplerate)  # refused before a port or a stream opens
    rescan()
    recorder = engine = code = None
    midi = contextlib.ExitStack()
    try:
        recorder = open_recorder(record, rec_format, config)
        engine = Engine(chain, config, tap=recorder.ring if recorder else None)
        # the port first: opening it holds the interpreter for tens of ms (a JACK client of its own),
        # which a running engine's DSP thread felt as 14-30 late blocks at every start; a missing
        # device is said before that
        engine.check_devices()
        mi = midi.enter_context(MidiInput(engine.send_midi, port, virtual or port is None))
        engine.start()
        say_stderr(f"live on MIDI port {mi.name!r}; Ctrl-C to stop")
        code = stream_until(engine, seconds, status=False, recorder=recorder)
        if code == 0:
            print(json.dumps({"midi_messages": mi.received, **engine.stats()}))
        return code
    finally:
        with signals_deferred(raise_after=code is None):  # a second Ctrl-C here would lose the recording
            _tear_down(engine, recorder, None, record, config.samplerate, midi)
