"""Command line: live engine, offline processing, devices, benchmarks, training.

    python main.py                      # the desktop knob panel (falls back to `run` without a screen)
    python main.py run --preset default # headless live engine with a status line
    python main.py process IN OUT --preset voice --set limiter.ceiling_db=-2
    python main.py batch episodes/ --out cleaned/ --preset voice --jobs 4   # or --ray auto
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

from realtime.argtypes import OneLineParser, positive_int
from realtime.engine.config import BLOCK_RANGE, HEADLESS_PREFILL_BLOCKS, PANEL_PREFILL_BLOCKS, device_arg

os.environ.setdefault("MIDO_BACKEND", "mido.backends.rtmidi/UNIX_JACK" if sys.platform.startswith("linux") else "")
if not os.environ["MIDO_BACKEND"]:
    del os.environ["MIDO_BACKEND"]
os.environ.setdefault("JACK_NO_START_SERVER", "1")


def _int_in(lo: int, hi: int, unit: str, what: str):
    """An argument type: a positive whole number from ``lo`` to ``hi``, else "V unit: what is lo to hi unit"."""
    def parse(text: str) -> int:
        v = positive_int(text)
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v} {unit}: {what} is {lo} to {hi} {unit}")
        return v

    return parse


_blocksize = _int_in(16, 65536, "frames", "a block")
_live_blocksize = _int_in(*BLOCK_RANGE, "frames", "a live block")  # the range the live engine runs
_samplerate = _int_in(8000, 384000, "Hz", "a sample rate")


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= v < 1e9:
        raise argparse.ArgumentTypeError(f"{text}: seconds must be 0 or more, under 1e9")
    return v


def _chain_args(p: argparse.ArgumentParser, default_preset: str = "default") -> None:
    p.add_argument("--preset", default=default_preset,
                   help=f"a built-in preset's name, a saved one's (the panel's Save As) or a preset file "
                        f"(default {default_preset}; `presets` lists them)")
    p.add_argument("--set", action="append", default=[], metavar="SLOT.PARAM=VALUE",
                   help="override a parameter (also SLOT.bypass=true, SLOT.mix=0.5); repeatable")


def _device(text: str) -> str:
    """A device name or index; an empty one (an unset variable: `-d "$CARD"`) is refused, not taken
    as the default device without a word."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty device name (leave the option out for the default device)")
    return text


def _tail_arg(p: argparse.ArgumentParser, note: str = "") -> None:
    p.add_argument("--tail", type=_seconds, default=0.0, metavar="SECONDS",
                   help=f"run SECONDS of silence through the chain after the input ends and keep them: a delay's "
                        f"or reverb's tail{note} (default 0: the output is as long as the input)")


def _bits_arg(p: argparse.ArgumentParser, note: str = "", default: str = "the input's, at least 24 bits") -> None:
    p.add_argument("--bits", choices=("16", "24", "32", "float"), default=None,
                   help=f"the output's samples{note}: 16 (with TPDF dither), 24, 32 or float; WAV, AIFF, CAF, W64 "
                        f"hold all four, FLAC 16 or 24 (default: {default})")


def _engine_args(p: argparse.ArgumentParser, prefill_blocks: int = HEADLESS_PREFILL_BLOCKS) -> None:
    p.add_argument("--samplerate", "-r", type=_samplerate, default=48000,
                   help="Hz: 44100, 48000, 88200 or 96000 (default 48000)")
    p.add_argument("--blocksize", "-b", type=_live_blocksize, default=128,
                   help=f"frames per period, {BLOCK_RANGE[0]}..{BLOCK_RANGE[1]} (default 128)")
    p.add_argument("--channels", "-c", type=positive_int, default=2, help="1 or 2 (default 2)")
    p.add_argument("--device", "-d", type=_device, default=None, help="device name or index for input and output")
    p.add_argument("--input-device", type=_device, default=None,
                   help="device name or index for input (overrides --device)")
    p.add_argument("--output-device", type=_device, default=None,
                   help="device name or index for output (overrides --device)")
    p.add_argument("--mode", choices=("duplex", "input", "output"), default="duplex",
                   help="duplex: input through the chain to the output; output: an instrument, no input; "
                        "input: analysis only (default duplex)")
    p.add_argument("--prefill-blocks", type=positive_int, default=prefill_blocks,
                   help=f"output pre-fill in blocks: the DSP thread's time budget (default {prefill_blocks})")


def _record_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--record", default=None, metavar="FILE.wav",
                   help="also keep what the chain produced in an audio file (.wav .flac .ogg …, by its extension), "
                        "complete once it stops (Ctrl-C too): every block as it left the chain, not what the device "
                        "played, so a late block's gap (the silence played in its place) is not in it, and the "
                        "frames skipped after it to keep the latency are; the audio only: the MIDI played in is "
                        "not kept")


BATCH_EPILOG = """\
manifest: a .csv with a header row (input[,output][,set][,preset]; set holds overrides joined by ';')
or a .jsonl with one object per line ({"input": …, "output": …, "set": […]}); inputs are relative to
the manifest, outputs to --out. A re-run skips outputs that are complete for the same input (its size and
modification time as recorded) and preset (OUT/.batch-manifest.jsonl); exit status 1 when any file failed, 130 after Ctrl-C, 143 after SIGTERM
(129 / 131 after SIGHUP / SIGQUIT; once: finish the files in progress; twice: abandon them, nothing half-written is left)."""


def build_parser() -> argparse.ArgumentParser:
    prog = "rtaudio" if os.path.basename(sys.argv[0]) == "rtaudio" else "main.py"  # the installed command says its name
    ap = OneLineParser(prog=prog, description="Real-time audio plugin host and streaming processor")
    sub = ap.add_subparsers(dest="command")

    p = sub.add_parser("gui", help="desktop knob panel (default)",
                       description="The engine flags override the remembered settings for this start; the defaults "
                                   "shown are those of a first start.")
    _chain_args(p)
    _engine_args(p, PANEL_PREFILL_BLOCKS)

    p = sub.add_parser("run", help="live engine without GUI (demo through a private JACK server when no device)")
    _chain_args(p)
    _engine_args(p)
    p.add_argument("--seconds", type=_seconds, default=0,
                   help="stop after N seconds (0 = until Ctrl-C; the demo: once through, 6 s)")
    p.add_argument("--demo", action="store_true", help="force the no-sound-card demo")
    p.add_argument("--demo-out", default="demo_out.wav",
                   help="where the demo writes what came out (default demo_out.wav; .wav .flac .ogg …)")
    _record_arg(p)
    p.add_argument("--midi-port", default=None, metavar="NAME",
                   help="a chain that takes MIDI (preset synth, an LV2 instrument), or a preset with MIDI "
                        "controller mappings, plays from this port (default: a virtual port of its own)")

    p = sub.add_parser("process", help="process a file offline with a chain")
    p.add_argument("input")
    p.add_argument("output")
    _chain_args(p)
    p.add_argument("--samplerate", "-r", type=_samplerate, default=None,
                   help="chain rate (file is resampled to it and back; default: the file's own where it is 44.1 kHz "
                        "or more and the chain runs at it as it is, else 48000)")
    p.add_argument("--blocksize", "-b", type=_blocksize, default=512,
                   help="frames per block through the chain (default 512)")
    _tail_arg(p)
    _bits_arg(p)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("batch", help="process many files (folders, manifests, MIDI) on every core or a Ray cluster",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=BATCH_EPILOG)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="audio/MIDI file, folder (recursive) or .csv/.jsonl manifest")
    p.add_argument("--out", "-o", required=True, help="output folder (keeps folder layouts; holds the resume log)")
    _chain_args(p)
    p.add_argument("--midi-preset", default="synth", help="chain for MIDI inputs (default: synth)")
    p.add_argument("--instrument", default=None, help="MIDI inputs: violin | flute | trumpet")
    p.add_argument("--midi-set", action="append", default=[], metavar="SLOT.PARAM=VALUE",
                   help="override for MIDI inputs")
    p.add_argument("--samplerate", "-r", type=_samplerate, default=None,
                   help="chain rate (files are resampled to it and back; default: each file's own where it is "
                        "44.1 kHz or more and the chain runs at it as it is, else 48000; MIDI: 48000)")
    p.add_argument("--blocksize", "-b", type=_blocksize, default=512,
                   help="frames per block through the chain (default 512)")
    p.add_argument("--midi-blocksize", type=_blocksize, default=128,
                   help="frames per block for MIDI renders (default 128)")
    p.add_argument("--ext", default=None, help="output extension (default: the input's; MIDI renders to wav)")
    _tail_arg(p, ", for audio inputs (a MIDI render runs until its sound has died away, as `synth` does)")
    _bits_arg(p, " (every output in a format that has samples to set: MP3 and Ogg outputs are left as they are)")
    p.add_argument("--jobs", "-j", type=positive_int, default=None,
                   help="local worker processes (default: one per core); with --ray, the CPUs of the node it starts")
    p.add_argument("--streams", type=positive_int, default=8,
                   help="files a worker runs side by side through one model call (presets that start with the "
                        "enhancer or the de-limiter, and MIDI files into the synth; default 8; 1: one file at a time)")
    p.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="run on Ray: --ray alone joins the cluster Ray finds or starts a node for this batch; "
                        "--ray auto / HOST:PORT only join one; --ray local always starts a node (needs the cluster "
                        "extra)")
    p.add_argument("--force", action="store_true",
                   help="process everything again, ignoring the resume log, and replace files in --out that no batch "
                        "wrote")
    p.add_argument("--no-progress", action="store_true")

    sub.add_parser("devices", help="list audio devices and MIDI ports")
    sub.add_parser("presets", help="list the built-in presets and the ones saved in the user's folder")
    p = sub.add_parser("plugins", help="list installed LV2 plugins (slot kind lv2, --instrument lv2:URI)")
    p.add_argument("filter", nargs="?", default="", help="only plugins whose URI, name or class contains this")
    p.add_argument("--json", action="store_true", help="one JSON object: plugins and skipped bundles")
    p.add_argument("--rescan", action="store_true", help="scan afresh and rewrite the scan cache")
    p.add_argument("--presets", action="store_true",
                   help="also the presets that come with each plugin (a slot's \"plugin_preset\", "
                        "--set SLOT.plugin_preset=NAME)")

    from bench import describe as describe_benchmarks  # the registry alone: no benchmark is imported

    p = sub.add_parser("bench", help="benchmarks (print figures, JSON lines with --json)",
                       epilog="benchmarks:\n" + describe_benchmarks(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", help="which benchmark (`main.py bench` alone lists them)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="its own options (`main.py bench NAME --help`)")

    p = sub.add_parser("synth", help="DDSP synth: render IN.mid to OUT.wav, or play live from a MIDI port")
    p.add_argument("input", nargs="?", help="MIDI file")
    p.add_argument("output", nargs="?", help="audio file to write (any format process writes: .wav, .flac, .ogg, …)")
    p.add_argument("--instrument", default="violin",
                   help="violin | flute | trumpet | lv2:URI (an LV2 instrument) (default violin)")
    p.add_argument("--samplerate", "-r", type=_samplerate, default=48000, help="Hz (default 48000)")
    p.add_argument("--blocksize", "-b", type=_blocksize, default=128, help="frames per block (default 128)")
    p.add_argument("--set", action="append", default=[], metavar="SLOT.PARAM=VALUE",
                   help="override a parameter of preset synth (synth.channel10=1, SLOT.bypass=true); repeatable")
    p.add_argument("--live", action="store_true",
                   help="play live from a MIDI port instead of rendering a file (engine in output mode)")
    p.add_argument("--midi-port", default=None, metavar="NAME",
                   help="live: play from this MIDI input port (default: a virtual port of its own)")
    p.add_argument("--virtual", action="store_true",
                   help="live: open a virtual MIDI input port to connect to (the default without --midi-port)")
    p.add_argument("--seconds", type=_seconds, default=0, help="live: stop after N seconds (0 = until Ctrl-C)")
    _record_arg(p)
    _bits_arg(p, " (a render)", default="24 bits")

    p = sub.add_parser("train", help="train a model (enhancer | delimiter | ddsp)")
    p.add_argument("model", nargs="?", help="enhancer | delimiter | ddsp")  # none: said by cmd_train in words
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="...", help="its own options (`main.py train MODEL --help`)")
    return ap


def _load_chain(args, live: bool = False):
    """The preset ``args`` names with its overrides, and its chain; ``live``: for ``run``, which
    applies its MIDI controller mappings (an offline command says it does not)."""
    from realtime.dsp.presets import apply_overrides, build_chain, load_preset, say_unapplied_mappings

    preset = apply_overrides(load_preset(args.preset), args.set)
    if not live:
        say_unapplied_mappings(args.preset, preset, "this command")
    return preset, build_chain(preset)


def _engine_config(args):
    from realtime.engine.config import EngineConfig

    return EngineConfig(samplerate=args.samplerate, blocksize=args.blocksize, channels=args.channels,
                        mode=args.mode, input_device=device_arg(args.input_device or args.device),
                        output_device=device_arg(args.output_device or args.device),
                        prefill_blocks=args.prefill_blocks)


def _print_report(report: dict, written: str) -> None:
    """The command's JSON report on stdout, once ``written`` (its output file) is: a stdout that
    cannot take it (a full disk, /dev/full) is named, with the file that was written all the same."""
    from realtime.errors import OfflineError, os_reason

    try:
        print(json.dumps(report), flush=True)
    except BrokenPipeError:  # the reader left (`| head`): said as every command says it
        raise
    except OSError as e:
        raise OfflineError(f"standard output: {os_reason(e) or e.strerror}: the report was not printed "
                           f"({written} was written)") from None


def cmd_process(args) -> int:
    from realtime.run.offline import process_file

    _, chain = _load_chain(args)
    report = process_file(args.input, args.output, chain, samplerate=args.samplerate,
                          blocksize=args.blocksize, progress=not args.no_progress, tail_s=args.tail, bits=args.bits)
    _print_report(report, args.output)
    return 0


def _check_ray_address(ray) -> None:
    """``--ray``'s value is a cluster's address (auto, local, HOST:PORT), not an input it took:
    nargs="?" made `batch --ray music/ --out o` look for a cluster at music/, the input missing."""
    from realtime.errors import OfflineError

    if isinstance(ray, str) and ray not in ("auto", "local") and (os.path.exists(ray) or ":" not in ray):
        raise OfflineError(f"--ray took {ray!r} for a cluster's address (auto, local or HOST:PORT): put the inputs "
                           "before --ray, or write --ray=ADDRESS")


def cmd_batch(args) -> int:
    from realtime.errors import OfflineError
    from realtime.run.batch import BatchOptions, run_batch, say

    instrument = [f"synth.instrument={args.instrument}"] if args.instrument else []
    options = BatchOptions(preset=args.preset, overrides=args.set, midi_preset=args.midi_preset,
                           midi_overrides=[*instrument, *args.midi_set], samplerate=args.samplerate,
                           blocksize=args.blocksize, midi_blocksize=args.midi_blocksize, ext=args.ext, force=args.force,
                           streams=args.streams, tail_s=args.tail, bits=args.bits)
    _check_ray_address(args.ray)
    summary = run_batch(args.inputs, args.out, options, jobs=args.jobs, ray_address=args.ray,
                        progress=not args.no_progress)

    def tell(line: str) -> None:  # a hung-up terminal (SIGHUP): the log has it all, the exit status says the rest
        say(sys.stderr, line + "\n")

    try:
        print(json.dumps(summary), flush=True)
    except BrokenPipeError:  # the reader left (`| head`): said as every command says it
        raise
    except OSError as e:
        import errno

        from realtime.errors import os_reason

        if e.errno != errno.EIO:  # (a hung-up terminal: as above) a full disk is said, as `process` says it
            raise OfflineError(f"standard output: {os_reason(e) or e.strerror}: the summary was not printed "
                               f"(every file's result is in {summary['log']})") from None
    failed = summary["failed"] + summary["failed_before"]
    if failed:
        tell(f"batch: {failed} of {summary['files']} files failed ({summary['failed_before']} of them in an earlier "
             f"run, unchanged since; errors in the summary and {summary['log']})")
    for what, count in (("files that ended before their header said (status partial)",
                         summary["truncated"] + summary["truncated_before"]),
                        ("files clipped by the safety stage", summary["clipped"]),
                        ("files whose input held samples that were not numbers (played as silence)",
                         summary.get("nonfinite_inputs", 0)),
                        ("files in which a plugin's junk output was silenced", summary["plugin_junk"]),
                        ("MIDI messages dropped from full queues", summary["dropped_midi_events"])):
        if count:
            tell(f"batch: {what}: {count} (per file in {summary['log']})")
    if summary["stopped"]:
        tell(f"error: batch stopped: {summary['stopped']} ({summary['not_started']} files not started; "
             "a re-run processes them and the unrecorded ones)")
    if summary["interrupted"]:  # 128 + the signal's number, as every command says it (SIGHUP 129, SIGQUIT 131)
        from realtime.errors import Interrupted, interrupt_status

        sig = summary["signal"]
        return interrupt_status(Interrupted(sig) if sig and sig != "SIGINT" else KeyboardInterrupt())
    return 1 if failed or summary["stopped"] else 0


def cmd_devices(args) -> int:
    from realtime.io.devices import describe_devices

    print(describe_devices())
    return 0


def cmd_presets(args) -> int:
    from realtime.dsp.presets import builtin_descriptions, user_descriptions, user_preset_dir

    builtins = builtin_descriptions()
    for name, description in builtins.items():
        print(f"{name:12s} {description}")
    saved = user_descriptions()
    if saved:  # (none: the list stays the built-ins', one per line)
        print(f"\nsaved presets (user), in {user_preset_dir()}:")
    for path, description in saved:
        # a built-in's name is the built-in's: this one is opened by its path
        mark = f"(user; the built-in of that name wins: --preset {path})" if path.stem in builtins else "(user)"
        print(f"{path.stem:12s} {mark} {description}".rstrip())
    return 0


def cmd_run(args) -> int:
    from realtime.run.live import run_live

    preset, chain = _load_chain(args, live=True)
    return run_live(chain, _engine_config(args), seconds=args.seconds, demo=args.demo, demo_out=args.demo_out,
                    record=getattr(args, "record", None), midi_port=getattr(args, "midi_port", None),
                    midi_map=preset.get("midi", []))


def cmd_gui(args) -> int:
    reason = _no_screen()
    if reason is None:
        try:
            from gui.app import run_gui
        except ImportError as e:  # no GUI toolkit: the headless engine still works
            reason = f"GUI unavailable ({e})"
    if reason is not None:
        args.seconds, args.demo, args.demo_out = 0, False, "demo_out.wav"
        applied = _remembered_audio(args)
        # an error about a remembered device ("USB Mic") did not say where that name came from
        from realtime.dsp.presets import config_path

        print(f"{reason}; starting the headless engine instead"
              + (f", with the panel's remembered {', '.join(applied)} (from {config_path()})" if applied else ""),
              file=sys.stderr)
        return cmd_run(args)
    return run_gui(args)


def _remembered_audio(args) -> list[str]:
    """The panel's remembered audio settings (its ini's [audio]: rate, block, pre-fill, devices) put
    in ``args`` for the flags the command line did not give, as the panel itself does (gui.app's
    ``_cli_config``): the no-screen fallback runs what the panel would. Read without Qt (it may be
    what is missing); a value it cannot use is passed over. Returns those applied, as
    ``key=value`` (the preset's too)."""
    import configparser

    from realtime.dsp.presets import config_path

    ini = configparser.ConfigParser(interpolation=None)
    try:
        ini.read(config_path(), encoding="utf-8")
    except (OSError, UnicodeDecodeError, configparser.Error):
        return []
    applied = _remembered_preset(args, ini)
    if not ini.has_section("audio"):
        return applied
    given = _given_engine_flags(getattr(args, "argv", []))

    def remembered(key, parse):
        raw = _qsettings_text(ini["audio"].get(key, ""))  # QSettings quotes "hw:0,0", escapes a quote
        try:
            return parse(raw) if raw else None
        except (argparse.ArgumentTypeError, ValueError):
            return None

    for key, parse in (("samplerate", _samplerate), ("blocksize", _live_blocksize), ("prefill_blocks", positive_int),
                       ("input_device", str), ("output_device", str)):
        value = remembered(key, parse)
        if value is not None and key not in given and not (key.endswith("_device") and "device" in given):
            setattr(args, key, value)
            applied.append(f"{key}={value}")
    return applied


def _remembered_preset(args, ini) -> list[str]:
    """The preset the panel had last (its ini's [preset] last), as ``args.preset`` when the command
    line named none, and it still loads (else one line says so): the panel opens it, and the
    fallback ran the default preset. Returns ``["preset=NAME"]`` when applied, else []."""
    last = _qsettings_text(ini.get("preset", "last", fallback=""))
    if not last or "preset" in _given_engine_flags(getattr(args, "argv", [])):
        return []
    from realtime.dsp.presets import load_preset

    try:
        load_preset(last)
    except Exception as e:  # gone or broken since: as the panel, the default instead, said
        print(f"the last preset ({last}) could not be loaded, running {args.preset!r} instead: {e}", file=sys.stderr)
        return []
    args.preset = last
    return [f"preset={last}"]


_QT_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _qsettings_text(raw: str) -> str:
    r"""A text value of the panel's ini as QSettings reads it back: its quoted parts unquoted (a comma,
    a leading space), its escapes undone (\" for ", \\ for \, \t, \x1 for a control character: hex
    or octal digits, as many as follow) and a leading "@@" read as "@". Taken as written, the last
    preset "Bob's \"warm\" voice.json" was looked for with its backslashes, and not found."""
    out, i, raw = [], 0, raw.strip()
    while i < len(raw):
        ch, i = raw[i], i + 1
        if ch == '"':
            continue
        if ch != "\\" or i == len(raw):
            out.append(ch)
            continue
        ch, i = raw[i], i + 1
        if ch in "xX01234567":
            digits, base = ("0123456789abcdefABCDEF", 16) if ch in "xX" else ("01234567", 8)
            j = i if base == 16 else i - 1
            while i < len(raw) and raw[i] in digits:
                i += 1
            code = int(raw[j:i] or "0", base)
            out.append(chr(code) if code < 0x110000 else "\ufffd")
        else:
            out.append(_QT_ESCAPES.get(ch, ch))
    text = "".join(out)
    return text[1:] if text.startswith("@@") else text


def _given_engine_flags(argv: list[str]) -> set[str]:
    """The engine options ``argv`` sets itself (a value equal to the default still beats the
    remembered one)."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for flags in (("-r", "--samplerate"), ("-b", "--blocksize"), ("--prefill-blocks",), ("-d", "--device"),
                  ("--input-device",), ("--output-device",), ("--preset",)):
        p.add_argument(*flags)
    return set(vars(p.parse_known_args(argv)[0]))


def _no_screen() -> str | None:
    """Why no window can open here, or None. Checked before Qt is touched: Qt aborts the whole
    process (no exception) when it cannot reach a display. QT_QPA_PLATFORM may list plugins that Qt
    tries in turn ("wayland;xcb", as distributions' guides suggest): a window opens if any can."""
    if sys.platform != "linux":
        return None
    reasons = []
    for name in [n.lower() for n in os.environ.get("QT_QPA_PLATFORM", "").split(";") if n] or [""]:
        reason = _no_platform(name)
        if reason is None:
            return None
        reasons.append(reason)
    return "; ".join(dict.fromkeys(reasons))


def _no_platform(platform: str) -> str | None:
    """Why Qt's platform plugin ``platform`` cannot open a window here, or None ("": Qt's own choice)."""
    if platform.startswith(("offscreen", "minimal", "vnc", "eglfs", "linuxfb")):
        return None
    if platform.startswith("wayland"):
        return _no_wayland() if os.environ.get("WAYLAND_DISPLAY") else "no screen (WAYLAND_DISPLAY is not set)"
    if platform.startswith("xcb"):
        return _no_x_server() if os.environ.get("DISPLAY") else "no screen (DISPLAY is not set)"
    wayland = _no_wayland() if os.environ.get("WAYLAND_DISPLAY") else None
    if os.environ.get("WAYLAND_DISPLAY") and wayland is None:
        return None
    if os.environ.get("DISPLAY"):  # Qt falls back to xcb
        return _no_x_server()
    return wayland or "no screen (neither DISPLAY nor WAYLAND_DISPLAY is set)"


def _no_wayland() -> str | None:
    """Why the compositor in $WAYLAND_DISPLAY cannot be reached, or None: a stale one (a closed
    session's variable) made Qt abort the process, as a stale DISPLAY did."""
    import socket

    name = os.environ["WAYLAND_DISPLAY"]
    path = name if os.path.isabs(name) else os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return f"no screen (cannot connect to the Wayland compositor at {path})"
    return None


# the system libraries Qt's xcb plugin loads (Qt's X11 requirements; scripts/setup.sh installs
# them): one missing made Qt abort the process ("From 6.5.0, xcb-cursor0 … is needed"), status 134
_QT_XCB_LIBS = ("libxcb.so.1", "libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-image.so.0", "libxcb-keysyms.so.1",
                "libxcb-randr.so.0", "libxcb-render-util.so.0", "libxcb-shape.so.0", "libxcb-xkb.so.1",
                "libxkbcommon-x11.so.0")


def _no_x_server() -> str | None:
    """Why the X server in $DISPLAY cannot be reached, or None: a set DISPLAY is not enough (a stale
    one from ssh or a dead Xvfb), and Qt's xcb plugin aborts when it cannot connect. So connect
    first, with the library Qt would use."""
    import ctypes

    display = os.environ["DISPLAY"]
    loaded = []
    for lib in _QT_XCB_LIBS:
        try:
            loaded.append(ctypes.CDLL(lib))
        except OSError:  # then Qt's xcb plugin cannot load either
            return f"no screen ({lib}, needed for DISPLAY={display}, is missing)"
    xcb = loaded[0]  # libxcb itself
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = (ctypes.c_char_p, ctypes.c_void_p)
    xcb.xcb_connection_has_error.argtypes = (ctypes.c_void_p,)
    xcb.xcb_disconnect.argtypes = (ctypes.c_void_p,)
    conn = xcb.xcb_connect(os.fsencode(display), None)  # never NULL: a failed one carries its error
    try:
        failed = xcb.xcb_connection_has_error(conn)
    finally:
        xcb.xcb_disconnect(conn)
    return f"no screen (cannot connect to the X server at DISPLAY={display})" if failed else None


def cmd_bench(args) -> int:
    from bench import run_bench

    return run_bench(args.what, args.rest)


def cmd_plugins(args) -> int:
    from realtime.io.lv2_scan import scan

    res = scan(refresh=args.rescan)
    want = args.filter.lower()
    found = [p.summary() for p in sorted(res.plugins.values(), key=lambda p: p.uri)
             if want in f"{p.uri}\n{p.name}\n{p.plugin_class}".lower()]
    if args.presets:
        from realtime.io import lv2_host
        from realtime.io.lv2_scan import world

        for p in found:
            p["presets"] = list(lv2_host.plugin_presets(world(), p["uri"]))
    if args.json:
        print(json.dumps({"plugins": found, "skipped": res.errors}, indent=1))
        return 0
    for p in found:
        io = f"{p['audio_in']}in/{p['audio_out']}out" + (" +MIDI" if p["midi_in"] else "")
        flags = ("" if p["hard_rt"] else "  [not hard-RT]") + ("  [latency]" if p["latency_port"] is not None else "")
        flags += f"  [broken: {p['broken']}]" if p["broken"] else f"  [not loaded: {p['refused']}]" if p["refused"] else ""
        print(f"{p['uri']}\n    {p['name']} ({p['class']}), {io}, {len(p['controls'])} controls{flags}")
        if p.get("presets"):
            print(f"    presets: {', '.join(p['presets'])}")
    for e in res.errors:
        print(f"warning: {e}", file=sys.stderr)
    print(f"{len(found)} of {len(res.plugins)} LV2 plugins", file=sys.stderr)
    return 0


def _instrument_chain(args):
    """The `synth` preset with the chosen instrument (and --set overrides); ``lv2:URI`` puts that
    LV2 instrument in the synth slot (its own parameters, still addressed as ``synth.PARAM``)."""
    from realtime.dsp.presets import apply_overrides, build_chain, load_preset

    if args.instrument.startswith("lv2:"):
        from realtime.errors import PluginError

        preset = load_preset("synth")
        preset["chain"][0] = {"id": "synth", "processor": "lv2", "uri": args.instrument[4:]}
        chain = build_chain(apply_overrides(preset, args.set))
        proc = chain.slot("synth").processor
        if not getattr(proc, "instrument", False):  # an effect with a MIDI input played silence
            why = "an effect with a MIDI input" if callable(getattr(proc, "handle_midi", None)) else "no MIDI input"
            raise PluginError(f"lv2 plugin {args.instrument[4:]} is not an instrument ({why})")
        return chain
    return build_chain(apply_overrides(load_preset("synth"), [f"synth.instrument={args.instrument}", *args.set]))


def cmd_synth(args) -> int:
    from realtime.errors import OfflineError

    if args.live and args.bits:
        raise OfflineError("synth --live: --bits sets a render's samples; a --record take is written as its "
                           "extension's format holds it")
    if args.live:
        from realtime.engine.config import EngineConfig
        from realtime.run.live import play_midi_live

        if args.input:  # it was ignored: a take named here was never written
            raise OfflineError(f"synth --live plays from a MIDI port, not a file ({args.input}); "
                               "keep what it plays with --record FILE.wav")
        if args.virtual and args.midi_port:  # the virtual port won, the port named was never opened
            raise OfflineError(f"synth --live: --midi-port {args.midi_port} opens that port, --virtual a port "
                               "of its own to connect to; give one")
        config = EngineConfig(samplerate=args.samplerate, blocksize=args.blocksize, mode="output")
        return play_midi_live(_instrument_chain(args), config, args.midi_port, args.virtual, args.seconds,
                              record=args.record)
    if args.record:
        raise OfflineError("synth: --record keeps a live performance (--live); a render writes OUT.wav")
    live_only = [flag for flag, given in (("--seconds", args.seconds), ("--midi-port", args.midi_port),
                                          ("--virtual", args.virtual)) if given]

    if live_only:  # a render ignored them: it plays the whole file, from the file
        raise OfflineError(f"synth: {', '.join(live_only)} {'is' if len(live_only) == 1 else 'are'} for --live; "
                           "a render plays IN.mid through to its end")
    if not args.input or not args.output:
        raise OfflineError("synth: give IN.mid OUT.wav (or --live)")
    from realtime.run.offline import render_midi

    chain = _instrument_chain(args)
    report = render_midi(args.input, args.output, chain, args.samplerate, args.blocksize, bits=args.bits)
    sounded = getattr(chain.slot("synth").processor, "instruments_sounded", lambda: [])()
    # what played: a program change in the file picks another instrument than --instrument
    _print_report({"output": report.pop("output"), "instrument": ", ".join(sounded) or args.instrument, **report},
                  args.output)
    return 0


def cmd_train(args) -> int:
    import importlib

    modules = {"enhancer": "models.enhancer.train", "delimiter": "models.delimiter.train", "ddsp": "models.ddsp.train"}
    if args.model not in modules:
        which = "which model?" if args.model is None else f"unknown model {args.model!r};"
        print(f"error: train {which} one of {', '.join(sorted(modules))}", file=sys.stderr)
        return 2
    from bench import missing_optional

    try:  # torch and the rest: imported at the top of a trainer's module, or first when it runs
        return importlib.import_module(modules[args.model]).main(args.rest) or 0
    except ModuleNotFoundError as e:
        if not missing_optional(e):
            raise
        print(f"error: cannot train {args.model}: {e} (install the training extra: .venv/bin/pip install -e '.[train]')", file=sys.stderr)
        return 2


COMMANDS = {"gui": cmd_gui, "run": cmd_run, "process": cmd_process, "batch": cmd_batch, "devices": cmd_devices,
            "presets": cmd_presets, "bench": cmd_bench, "train": cmd_train,
            "synth": cmd_synth, "plugins": cmd_plugins}


def _finish_on_signals(status: int) -> None:
    """Once a command has ended (its output committed or its error said), a signal during the
    interpreter's shutdown ends the process at once with the command's own status, instead of a
    KeyboardInterrupt that kills it by the signal (status -2) with nothing to say."""
    import signal
    import threading

    from realtime.errors import exit_with, interrupt_signals

    if threading.current_thread() is not threading.main_thread():
        return

    def finish(signum, frame):
        exit_with(status)  # the command's output is committed: nothing more is worth waiting for

    for s in interrupt_signals():
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, finish)


def _interrupted_note(args) -> str:
    import os

    from realtime.io.files import COMMITTED, through_link

    out = getattr(args, "output", None)
    if not out or args.command not in ("process", "synth"):
        return "interrupted"
    if os.path.abspath(through_link(out)) in COMMITTED:  # the signal came after the file was put in place
        return f"interrupted; {out} was written whole before it"
    return f"interrupted; {out} not written"


def main(argv=None, *, last: bool = False) -> int:
    """Run one command; user errors end as one line on stderr and exit status 2, never a traceback.
    ``last``: the process ends with this command (``cli``): once it has ended, a signal ends the
    process with its status (``command_ended``)."""
    from realtime.errors import (
        command_ended,
        forget_pending_interrupt,
        interrupt_on_signals,
        raise_pending_interrupt,
        said_status,
    )

    def ended(status):
        if last:  # before main's own last steps: a signal there said "interrupted" after "recorded"
            command_ended(status)
        return status

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["gui", *argv]
    args = parser.parse_args(argv)
    args.argv = list(argv)  # what was given, not filled in: the panel lets it beat its remembered settings
    from realtime.io.native_stderr import crash_stacks_to_stderr

    crash_stacks_to_stderr()  # a hosted plugin that crashes the process leaves the stack of where it did, not silence
    interrupt_on_signals()
    try:
        return ended(COMMANDS[args.command](args))
    except BaseException as e:  # a trainer's or benchmark's SystemExit("…") is said as every user error
        if not isinstance(e, (KeyboardInterrupt, SystemExit)):
            try:  # an error a Ctrl-C caused (numpy's import cut short says "ImportError") is the Ctrl-C
                raise_pending_interrupt()
            except KeyboardInterrupt as interrupt:
                e = interrupt
        status = said_status(e, _interrupted_note(args))
        if status is None:
            raise
        return ended(status)
    finally:
        forget_pending_interrupt()


def _exit_now(status: int) -> None:
    """End the process with the command's status: wait for its threads and run the atexit handlers
    (Ray's shutdown, multiprocessing's children, temporary folders) as the interpreter would, then
    skip the rest of its teardown. Python puts the signals back to their defaults early in that
    teardown, so a SIGTERM in its last ~200 ms killed a run whose output was already committed
    (status -15)."""
    import atexit
    import threading

    from realtime.errors import exit_with, signals_blocked

    try:
        if hasattr(threading, "_shutdown"):  # what the interpreter does first: join non-daemon threads
            threading._shutdown()
        _release_portaudio()
        with signals_blocked():  # a signal now ends the process (``_finish_on_signals``) between the hooks'
            atexit._run_exitfuncs()  # steps, not inside their system calls
    finally:
        exit_with(status)


def _release_portaudio() -> None:
    """Terminate PortAudio (as sounddevice's atexit hook would) with the interrupt signals ignored:
    its JACK host API closes its client there, and a signal that cut a system call of that short
    made PortAudio assert (``pa_jack.c: Terminate: Assertion 'err == 0' failed``, SIGABRT) after the
    command had ended. Ignored, not caught: any thread may receive a caught one. What comes
    meanwhile is dropped: the command's status stands."""
    import signal

    if "sounddevice" not in sys.modules:
        return
    engine = sys.modules.get("realtime.engine.engine")
    if engine is not None and engine.streams_abandoned():  # a stream left to a server that is gone: Pa_Terminate
        return  # would wait for it forever (the engine took sounddevice's own hook off too)
    from realtime.errors import interrupt_signals
    from realtime.io.portaudio import release

    before = {s: signal.getsignal(s) for s in interrupt_signals()}
    for s in before:
        signal.signal(s, signal.SIG_IGN)
    try:
        release()
    except Exception:  # PortAudio's own error at its end: nothing left to tell
        pass
    finally:
        for s, h in before.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def cli() -> None:
    """The program as a user starts it, ``python main.py`` and the installed ``rtaudio`` alike (the
    entry point called ``main`` alone, so a signal during shutdown ended it by the signal): run the
    command, then end the process with its status."""
    try:
        status = main(last=True)
        _finish_on_signals(status)
    except KeyboardInterrupt:  # Ctrl-C while Python itself was still starting up
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    _exit_now(status)


if __name__ == "__main__":
    cli()
