"""Command line: live engine, offline processing, devices, benchmarks, training.

    python main.py                      # the desktop knob panel (falls back to `run` without a screen)
    python main.py run --preset default # headless live engine with a status line
    python main.py process IN OUT --preset voice --set limiter.ceiling_db=-2
    python main.py devices
    python main.py bench engine --seconds 10 --json
    python main.py train enhancer --smoke
    python main.py synth IN.mid OUT.wav --instrument violin
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from gui import PANEL_PREFILL_BLOCKS

os.environ.setdefault("MIDO_BACKEND", "mido.backends.rtmidi/UNIX_JACK" if sys.platform.startswith("linux") else "")
if not os.environ["MIDO_BACKEND"]:
    del os.environ["MIDO_BACKEND"]
os.environ.setdefault("JACK_NO_START_SERVER", "1")


def _chain_args(p: argparse.ArgumentParser, default_preset: str = "default") -> None:
    p.add_argument("--preset", default=default_preset, help="built-in preset name or a .json file")
    p.add_argument("--set", action="append", default=[], metavar="SLOT.PARAM=VALUE",
                   help="override a parameter (also SLOT.bypass=true, SLOT.mix=0.5); repeatable")


def _engine_args(p: argparse.ArgumentParser, prefill_blocks: int = 2) -> None:
    p.add_argument("--samplerate", "-r", type=int, default=48000)
    p.add_argument("--blocksize", "-b", type=int, default=128)
    p.add_argument("--channels", "-c", type=int, default=2)
    p.add_argument("--device", "-d", default=None, help="device name or index for input and output")
    p.add_argument("--input-device", default=None)
    p.add_argument("--output-device", default=None)
    p.add_argument("--mode", choices=("duplex", "input", "output"), default="duplex")
    p.add_argument("--prefill-blocks", type=int, default=prefill_blocks,
                   help=f"output pre-fill in blocks: the DSP thread's time budget (default {prefill_blocks})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="main.py", description="Real-time audio plugin host and streaming processor")
    sub = ap.add_subparsers(dest="command")

    p = sub.add_parser("gui", help="desktop knob panel (default)")
    _chain_args(p)
    _engine_args(p, PANEL_PREFILL_BLOCKS)

    p = sub.add_parser("run", help="live engine without GUI (demo through a private JACK server when no device)")
    _chain_args(p)
    _engine_args(p)
    p.add_argument("--seconds", type=float, default=0, help="stop after N seconds (0 = until Ctrl-C)")
    p.add_argument("--demo", action="store_true", help="force the no-sound-card demo")
    p.add_argument("--demo-out", default="demo_out.wav", help="where the demo writes what came out")
    p.add_argument("--record", default=None, metavar="FILE.wav", help="also record the engine's output")

    p = sub.add_parser("process", help="process a file offline with a chain")
    p.add_argument("input")
    p.add_argument("output")
    _chain_args(p)
    p.add_argument("--samplerate", "-r", type=int, default=48000, help="chain rate (file is resampled to it and back)")
    p.add_argument("--blocksize", "-b", type=int, default=512)
    p.add_argument("--no-progress", action="store_true")

    sub.add_parser("devices", help="list audio devices and MIDI ports")
    sub.add_parser("presets", help="list built-in presets")

    p = sub.add_parser("bench", help="benchmarks (print figures, JSON lines with --json)")
    p.add_argument("what", help="processor | engine | enhancer | delimiter | synth | gui")
    p.add_argument("rest", nargs=argparse.REMAINDER)

    p = sub.add_parser("synth", help="DDSP synth: render IN.mid to OUT.wav, or play live from a MIDI port")
    p.add_argument("input", nargs="?", help="MIDI file")
    p.add_argument("output", nargs="?", help="audio file to write (.wav/.flac)")
    p.add_argument("--instrument", default="violin", help="violin | flute | trumpet")
    p.add_argument("--samplerate", "-r", type=int, default=48000)
    p.add_argument("--blocksize", "-b", type=int, default=128)
    p.add_argument("--set", action="append", default=[], metavar="SLOT.PARAM=VALUE")
    p.add_argument("--live", action="store_true", help="play live from MIDI (engine in output mode)")
    p.add_argument("--midi-port", default=None, help="MIDI input port name (default: a virtual port)")
    p.add_argument("--virtual", action="store_true", help="open a virtual MIDI input port to connect to")
    p.add_argument("--seconds", type=float, default=0, help="live: stop after N seconds (0 = until Ctrl-C)")

    p = sub.add_parser("train", help="train a model (enhancer | delimiter | ddsp)")
    p.add_argument("model")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return ap


def _load_chain(args):
    from realtime.dsp.presets import apply_overrides, build_chain, load_preset

    preset = apply_overrides(load_preset(args.preset), args.set)
    return preset, build_chain(preset)


def _engine_config(args):
    from realtime.engine.engine import EngineConfig

    return EngineConfig(samplerate=args.samplerate, blocksize=args.blocksize, channels=args.channels,
                        mode=args.mode, input_device=args.input_device or _dev(args.device),
                        output_device=args.output_device or _dev(args.device),
                        prefill_blocks=args.prefill_blocks)


def _dev(d):
    return int(d) if isinstance(d, str) and d.isdigit() else d


def cmd_process(args) -> int:
    from realtime.run.offline import process_file

    _, chain = _load_chain(args)
    report = process_file(args.input, args.output, chain, samplerate=args.samplerate,
                          blocksize=args.blocksize, progress=not args.no_progress)
    print(json.dumps(report))
    return 0


def cmd_devices(args) -> int:
    from realtime.io.devices import describe_devices

    print(describe_devices())
    return 0


def cmd_presets(args) -> int:
    from realtime.dsp.presets import builtin_descriptions

    for name, description in builtin_descriptions().items():
        print(f"{name:12s} {description}")
    return 0


def cmd_run(args) -> int:
    from realtime.run.live import run_live

    preset, chain = _load_chain(args)
    return run_live(chain, _engine_config(args), seconds=args.seconds, demo=args.demo, demo_out=args.demo_out,
                    record=getattr(args, "record", None))


def cmd_gui(args) -> int:
    try:
        from gui.app import run_gui
    except ImportError as e:  # no GUI toolkit or no display: the headless engine still works
        print(f"GUI unavailable ({e}); starting the headless engine instead", file=sys.stderr)
        args.seconds, args.demo, args.demo_out = 0, False, "demo_out.wav"
        return cmd_run(args)
    return run_gui(args)


def cmd_bench(args) -> int:
    from bench.core import run_bench

    return run_bench(args.what, args.rest)


def cmd_synth(args) -> int:
    from realtime.run.synth_render import main as synth_main

    return synth_main(args)


def cmd_train(args) -> int:
    import importlib

    modules = {"enhancer": "models.enhancer.train", "delimiter": "models.delimiter.train", "ddsp": "models.ddsp.train"}
    if args.model not in modules:
        print(f"unknown model {args.model!r}; one of {sorted(modules)}", file=sys.stderr)
        return 2
    try:
        mod = importlib.import_module(modules[args.model])
    except ModuleNotFoundError as e:
        print(f"cannot train {args.model}: {e} (install the training extra: pip install -e '.[train]')", file=sys.stderr)
        return 2
    return mod.main(args.rest) or 0


COMMANDS = {"gui": cmd_gui, "run": cmd_run, "process": cmd_process, "devices": cmd_devices,
            "presets": cmd_presets, "bench": cmd_bench, "train": cmd_train,
            "synth": cmd_synth}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["gui", *argv]
    args = parser.parse_args(argv)
    from realtime.errors import USER_ERRORS

    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
