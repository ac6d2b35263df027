"""`python main.py` / `python main.py gui`: the knob panel on the live engine.

Without a sound card it starts a private JACK server (dummy driver) and loops the bundled demo
signal into the engine, so the meters and knobs have something to act on.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from dataclasses import replace
from pathlib import Path


def version() -> str:
    """The host's version (Help → About): pyproject.toml's in a checkout run in place, else the
    installed package's, else "unknown"."""
    import tomllib
    from importlib import metadata

    from gui.settings import APP

    try:
        with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
            project = tomllib.load(f).get("project", {})
        if project.get("name") == APP:  # ours, not another package's file beside an installed copy
            return str(project["version"])
    except (OSError, KeyError, ValueError):  # tomllib.TOMLDecodeError is a ValueError
        pass
    try:
        return metadata.version(APP)
    except metadata.PackageNotFoundError:
        return "unknown"


def _given(argv: list[str]) -> set[str]:
    """The engine options ``argv`` sets itself. argparse fills in defaults, and a value equal to
    one (`-r 48000`) must still beat the remembered settings."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for flags in (("-r", "--samplerate"), ("-b", "--blocksize"), ("--prefill-blocks",), ("--preset",)):
        p.add_argument(*flags)
    return set(vars(p.parse_known_args(argv)[0]))


def _cli_config(args, settings, argv=()):
    """Remembered settings, overridden by what the command line set explicitly: a value other than
    the default, or any option ``argv`` (the command line ``args`` came from) holds."""
    from gui import PANEL_PREFILL_BLOCKS
    from realtime.engine.config import EngineConfig, device_arg

    c = settings.engine_config(EngineConfig(channels=args.channels, mode=args.mode,
                                            prefill_blocks=args.prefill_blocks))
    given = _given(list(argv))
    if args.samplerate != 48000 or "samplerate" in given:
        c.samplerate = args.samplerate
    if args.blocksize != 128 or "blocksize" in given:
        c.blocksize = args.blocksize
    if args.prefill_blocks != PANEL_PREFILL_BLOCKS or "prefill_blocks" in given:
        c.prefill_blocks = args.prefill_blocks
    if args.input_device or args.device:
        c.input_device = device_arg(args.input_device or args.device)
    if args.output_device or args.device:
        c.output_device = device_arg(args.output_device or args.device)
    return c


def _startup_preset(args, settings, argv) -> tuple[dict, str, str | None]:
    """(preset, its reference, a note for the banner): ``--preset`` when given, else the one the
    panel had last (``Settings.last_preset``) if it still loads, else ``args.preset`` (the default),
    with a line saying why the remembered one was not opened."""
    from realtime.dsp.presets import apply_overrides, load_preset

    last = settings.last_preset
    if last and "preset" not in _given(list(argv)):
        try:
            return apply_overrides(load_preset(last), args.set), last, None
        except Exception as e:  # gone or broken since: the panel still opens
            return _fallback(args, last, e)
    return apply_overrides(load_preset(args.preset), args.set), args.preset, None


def _fallback(args, last: str, e: Exception) -> tuple[dict, str, str]:
    from realtime.dsp.presets import apply_overrides, load_preset

    note = f"the last preset ({last}) could not be loaded, opened {args.preset!r} instead: {e}"
    return apply_overrides(load_preset(args.preset), args.set), args.preset, note


def _wire_demo(win, demo) -> None:
    """Wire the demo player (``demo``: a gui.demo_source.DemoSource) to the engine's inputs after
    every start, new audio settings and structural change (a start's ports are new; a structural
    change keeps them unless its live swap fell back to a restart, and wiring ports wired already
    changes nothing), beside the window's actions (``run_aside``): the player's first start takes
    seconds (a process that compiles its JACK callback), and as an action that wait held the
    toolbar. A label in the status bar says where the demo input is (off after a Stop: the
    engine's ports are gone); a wiring asked for while one runs follows it, so the last one wires
    the ports that are there now."""
    from PyQt6.QtWidgets import QLabel

    label = QLabel()
    label.setObjectName("status:demo")
    win.statusBar().addPermanentWidget(label)
    state = {"wiring": False, "again": False}

    def wire() -> None:
        label.setText("demo input: connecting…")
        if state["wiring"]:
            state["again"] = True
            return
        state["wiring"] = True
        engine = win._last_status.get("jack_client")  # (the start polled it; a change keeps the client)
        win.run_aside(lambda: demo.connect(engine), done)

    def done(error) -> None:
        state["wiring"] = False
        if state["again"]:  # the engine restarted or changed meanwhile: wire what is there now
            state["again"] = False
            return wire()
        if not win.host.running:  # stopped meanwhile: no ports to wire, and nothing to say
            return stopped()
        label.setText("demo input: off" if error else "demo input: connected")
        if error:
            win._show_exception(error)

    def stopped() -> None:
        label.setText("demo input: off (engine stopped)")

    win.engineStarted.connect(wire)
    win.engineStopped.connect(stopped)


def run_gui(args) -> int:
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication

    from gui.demo_source import DemoSource
    from gui.settings import APP, Settings
    from gui.window import MainWindow
    from realtime.dsp.presets import resolve_preset
    from realtime.errors import Interrupted, interrupt_signals
    from realtime.io.devices import has_audio_device
    from realtime.io.jackserver import ensure_server
    from realtime.io.portaudio import release

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName(APP)
    app.setApplicationVersion(version())
    settings = Settings()
    server, demo = None, None
    argv = getattr(args, "argv", sys.argv[1:])
    config = _cli_config(args, settings, argv)  # the private server runs what the engine will (a remembered rate)
    if not has_audio_device(args.mode, bool(args.device or args.input_device or args.output_device)):
        server = ensure_server(config.samplerate, config.blocksize, rescan=False)
    release()  # the engine process opens PortAudio itself (see settings.audio_devices for why not here)
    win = None
    try:
        preset, ref, note = _startup_preset(args, settings, argv)

        def window(preset: dict, ref: str):  # a user's file (not a built-in name): Save writes back there
            path, kind = resolve_preset(ref)  # (a saved preset given by name: its file in the user's folder)
            return MainWindow(preset, replace(config), settings,
                              preset_path=os.path.abspath(path) if kind != "builtin" else None)

        try:
            win = window(preset, ref)
        except Exception as e:  # the remembered chain no longer builds (a plugin gone): the default does
            if ref == args.preset:
                raise
            preset, ref, note = _fallback(args, ref, e)
            win = window(preset, ref)
        if note:
            win.show_error(note)

        def excepthook(kind, value, tb):  # an unexpected error in a slot: show it, keep running
            traceback.print_exception(kind, value, tb)
            win.show_error(f"internal error: {kind.__name__}: {value}")

        sys.excepthook = excepthook
        # Ctrl-C / kill / a closed terminal: leave the event loop, so the stream closes before any
        # server goes away (the meter timer gives the interpreter a chance to run the handler). The
        # handler runs between two bytecodes of the Python code Qt runs, a meter poll mostly: a quit
        # there closed the window and freed the shared memory under that poll (a segfault), so the
        # quit waits for the event loop. A SIGHUP the caller ignored (nohup) stays ignored.
        signalled: list[int] = []

        def on_signal(signum, frame):
            if not signalled:
                QTimer.singleShot(0, app.quit)
            signalled.append(signum)

        for sig in interrupt_signals():  # Ctrl-C, kill, a closed terminal, Ctrl-\ (SIGQUIT)
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, on_signal)
        if server is not None:
            win.show_error("No sound card: running on a private JACK server (dummy driver) with the bundled "
                           "demo looping into the input. Click to dismiss.")
            demo = DemoSource()
            _wire_demo(win, demo)
        win.show()
        win.start_button.setChecked(True)  # start the engine
        status = app.exec()
        if signalled:  # said after the clean-up below as every command says it (130 / 143 / 129), not 0
            sig = signal.Signals(signalled[0])
            raise KeyboardInterrupt() if sig == signal.SIGINT else Interrupted(sig.name)
        return status
    finally:
        if win is not None:
            win.shutdown()  # MIDI, timers, then the engine: the stream closes before the server goes away
        if demo is not None:
            demo.close()
        if server is not None:
            server.stop()
