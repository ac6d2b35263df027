"""The synth from the command line: render a MIDI file offline, or play it live from a MIDI port.

    python main.py synth IN.mid OUT.wav --instrument violin [--blocksize 128] [--set synth.reverb_mix=0.2]
    python main.py synth --live --instrument flute [--midi-port NAME | --virtual] [--seconds 30]

Offline rendering uses the same chain and processor as live, block by block, with every MIDI
event applied at its exact sample offset; the output is written atomically.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from realtime.errors import OfflineError
from realtime.io.files import atomic_write


def midi_file_events(path, samplerate: int) -> np.ndarray:
    """(n, 4) float64: sample time, status, data1, data2 of the file's channel messages."""
    import mido

    p = Path(path)
    if not p.is_file():
        raise OfflineError(f"{p}: no such MIDI file")
    try:
        mf = mido.MidiFile(str(p))
        t, rows = 0.0, []
        for msg in mf:  # merged tracks, times in seconds (tempo map applied)
            t += msg.time
            if not msg.is_meta and msg.type not in ("sysex",) and hasattr(msg, "channel"):
                b = msg.bytes()
                rows.append((round(t * samplerate), b[0], b[1] if len(b) > 1 else 0, b[2] if len(b) > 2 else 0))
    except (OSError, ValueError, EOFError, KeyError, IndexError) as e:
        raise OfflineError(f"{p}: not a readable MIDI file ({e})") from None
    return np.asarray(rows, np.float64).reshape(-1, 4)


def synth_chain(instrument: str, overrides=(), preset: str = "synth"):
    from realtime.dsp.presets import apply_overrides, build_chain, load_preset

    p = apply_overrides(load_preset(preset), [f"synth.instrument={instrument}", *overrides])
    return build_chain(p)


def render_events(chain, events: np.ndarray, n_samples: int, samplerate: int = 48000, blocksize: int = 128,
                  channels: int = 2, prepare: bool = True) -> np.ndarray:
    """Run the chain over n_samples with events (sample time, status, d1, d2) at their offsets."""
    if prepare:
        chain.prepare(samplerate, blocksize, channels)
    out = np.zeros((n_samples, channels), np.float32)
    block = np.zeros((blocksize, channels), np.float32)
    order = np.argsort(events[:, 0], kind="stable") if len(events) else np.zeros(0, np.int64)
    ev = events[order]
    i = 0
    for start in range(0, n_samples, blocksize):
        n = min(blocksize, n_samples - start)
        while i < len(ev) and ev[i, 0] < start + n:
            chain.handle_midi(int(ev[i, 1]), int(ev[i, 2]), int(ev[i, 3]), int(max(0, ev[i, 0] - start)))
            i += 1
        b = block[:n]
        b.fill(0.0)
        chain.process(b)
        out[start:start + n] = b
    return out


def render_file(midi_path, out_path, instrument: str, samplerate: int = 48000, blocksize: int = 128,
                tail_s: float = 2.0, overrides=()) -> dict:
    import soundfile as sf

    out_p = Path(out_path)
    if out_p.suffix.lower() not in (".wav", ".flac"):
        raise OfflineError(f"{out_p}: write .wav or .flac")
    if not out_p.parent.is_dir():
        raise OfflineError(f"{out_p.parent}: no such folder")
    events = midi_file_events(midi_path, samplerate)
    n = int((events[:, 0].max() if len(events) else 0) + tail_s * samplerate)
    chain = synth_chain(instrument, overrides)
    t0 = time.perf_counter()
    y = render_events(chain, events, n, samplerate, blocksize)
    took = time.perf_counter() - t0
    with atomic_write(out_p) as tmp:
        sf.write(tmp, y, samplerate, subtype="PCM_24", format="WAV" if out_p.suffix.lower() == ".wav" else "FLAC")
    return {"output": str(out_p), "instrument": instrument, "seconds": n / samplerate, "events": len(events),
            "render_s": took, "realtime_factor": took / (n / samplerate), "peak": float(np.abs(y).max())}


def play_live(instrument: str, port: str | None, virtual: bool, seconds: float, samplerate: int = 48000,
              blocksize: int = 128, overrides=()) -> int:
    from realtime.engine.engine import Engine, EngineConfig
    from realtime.io.midi_input import MidiInput
    from realtime.io.portaudio import rescan

    rescan()
    chain = synth_chain(instrument, overrides)
    engine = Engine(chain, EngineConfig(samplerate=samplerate, blocksize=blocksize, mode="output"))
    engine.start()
    try:
        with MidiInput(engine.send_midi, port, virtual or port is None) as mi:
            print(f"synth: {instrument} on MIDI port {mi.name!r}; Ctrl-C to stop", file=sys.stderr)
            t0 = time.monotonic()
            while not seconds or time.monotonic() - t0 < seconds:
                time.sleep(0.5)
                if engine.error:
                    print(f"error: {engine.error}", file=sys.stderr)
                    return 1
            print(json.dumps({"midi_messages": mi.received, **engine.stats()}))
    except KeyboardInterrupt:
        pass
    finally:
        engine.stop()
    return 0


def main(args) -> int:
    """Entry for `main.py synth` (args from main.py's parser)."""
    from realtime.errors import MidiInputError

    if args.live:
        try:
            return play_live(args.instrument, args.midi_port, args.virtual, args.seconds, args.samplerate,
                             args.blocksize, args.set)
        except MidiInputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if not args.input or not args.output:
        raise OfflineError("synth: give IN.mid OUT.wav (or --live)")
    print(json.dumps(render_file(args.input, args.output, args.instrument, args.samplerate, args.blocksize,
                                 overrides=args.set)))
    return 0
