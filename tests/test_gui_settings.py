"""Remembered settings, the command line's say over them, and small panel behaviours, offscreen
(no audio server needed, except where a test is marked ``jack``: a device that refuses a rate)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")


import gui.settings as gui_settings  # noqa: E402
import main  # noqa: E402
from gui.host import EngineHost  # noqa: E402
from gui.knob import Knob  # noqa: E402
from gui.settings import Settings, SettingsDialog  # noqa: E402
from gui.window import MainWindow  # noqa: E402
from realtime.dsp.presets import load_preset, save_preset  # noqa: E402
from realtime.dsp.processor import Param  # noqa: E402
from realtime.engine.config import EngineConfig  # noqa: E402

from .qt_panel import wheel  # noqa: E402

GAIN = Param("gain_db", "Gain", -60.0, 24.0, 0.0, unit="dB")
VOICES = Param("voices", "Voices", 1, 16, 8, step=1)


# ---------------------------------------------------------------------------- hand-edited ini
@pytest.mark.parametrize("line", ["geometry=hello", "geometry="])
def test_a_hand_edited_window_geometry_does_not_stop_the_panel(window, tmp_path, line):
    (tmp_path / "settings.ini").write_text(f"[window]\n{line}\n")
    w = window()  # raised TypeError in restoreGeometry
    assert w.isVisible() and not w.errors
    assert Settings(tmp_path / "settings.ini").geometry() is None


def test_a_saved_window_geometry_is_restored(window, tmp_path):
    w = window()
    w.resize(w.minimumWidth() + 17, w.minimumHeight() + 23)  # within the offscreen screen (800x800)
    size = w.size()
    Settings(tmp_path / "settings.ini").save_geometry(w.saveGeometry())
    assert window().size() == size


def test_an_unquoted_comma_in_a_hand_edited_ini_keeps_the_value(qapp, tmp_path):
    """QSettings reads `a,b` as a list; ALSA device names hold commas (hw:0,0)."""
    ini = tmp_path / "settings.ini"
    ini.write_text("[audio]\ninput_device=HDA Intel PCH: ALC892 Analog (hw:0,0)\nsamplerate=44100, 48000\n"
                   "[midi]\nport=Port A,1\n")
    s = Settings(ini)
    c = s.engine_config()
    assert c.input_device == "HDA Intel PCH: ALC892 Analog (hw:0,0)"  # was "['HDA … (hw:0', '0)']"
    assert c.samplerate == EngineConfig().samplerate  # not a rate: the default
    assert s.midi_port == "Port A,1"


# ---------------------------------------------------------------------------- device numbers
def test_a_device_number_stays_a_number_through_the_dialog_and_the_ini(qtbot, monkeypatch, tmp_path):
    """`-d 3` is PortAudio's device 3; the string "3" would be searched for as a name."""
    monkeypatch.setattr(gui_settings, "audio_devices", lambda: dict.fromkeys(("input", "output"), ["dev zero", "USB Audio 3"]))
    d = SettingsDialog(EngineConfig(input_device=3, output_device=0), "(none)")
    qtbot.addWidget(d)
    assert d.input.currentText() == "3"
    c = d.engine_config()
    assert c.input_device == 3 and c.output_device == 0
    d.output.setCurrentText("USB Audio 3")
    assert d.engine_config().output_device == "USB Audio 3"
    s = Settings(tmp_path / "settings.ini")
    s.save_engine_config(c)
    back = Settings(tmp_path / "settings.ini").engine_config()
    assert back.input_device == 3 and back.output_device == 0  # device 0 is not "the default"


# ---------------------------------------------------------------------------- a refused rate
@pytest.mark.jack
def test_a_refused_sample_rate_leaves_the_engine_playing_on_the_settings_that_worked(window, jack_server):
    """The JACK server runs at 48 kHz: 44.1 kHz is refused. The engine stayed stopped on the refused
    settings, and a good rate applied next did not start it either."""
    from dataclasses import replace

    w = window()
    w.start()
    assert w.host.running
    w._guard(w.apply_settings, replace(w.host.config, samplerate=44100), "(none)")  # as the dialog's OK
    assert len(w.errors) == 1 and "44100" in w.errors[0] and "\n" not in w.errors[0]
    assert w.host.running and w.host.config.samplerate == 48000 and w.start_button.isChecked()
    assert Settings(w.settings.path).engine_config().samplerate == 48000  # the refused rate is not remembered
    w.apply_settings(replace(w.host.config, blocksize=256), "(none)")  # a good change next plays on
    w._poll_status()
    assert w.host.running and w.host.config.blocksize == 256 and w.status_labels["state"].text() == "● running"


@pytest.mark.jack
def test_the_dialog_scans_the_devices_once_and_leaves_portaudio_released(qtbot, jack_server, monkeypatch):
    """Each PortAudio start opens a JACK client (~50 ms): opening the dialog took five, one scan per
    device list, each started twice, and one more for the rates. Now one scan and one rate check."""
    from realtime.io import portaudio

    sd = portaudio.sd()
    portaudio.release()
    starts = []
    initialize = sd._initialize
    monkeypatch.setattr(sd, "_initialize", lambda: (starts.append(1), initialize())[1])
    d = SettingsDialog(EngineConfig(), "(none)")
    qtbot.addWidget(d)
    assert "system" in [d.output.itemText(i) for i in range(d.output.count())]
    assert len(starts) == 2 and not sd._initialized


# ---------------------------------------------------------------------------- command line
def test_command_line_values_equal_to_the_defaults_beat_the_ini(qapp, tmp_path):
    from gui.app import _cli_config

    s = Settings(tmp_path / "settings.ini")
    s.save_engine_config(EngineConfig(samplerate=44100, blocksize=512, prefill_blocks=5))
    argv = ["gui", "-r", "48000", "--blocksize=128", "--prefill-blocks", "2"]
    c = _cli_config(main.build_parser().parse_args(argv), s, argv)
    assert (c.samplerate, c.blocksize, c.prefill_blocks) == (48000, 128, 2)
    c = _cli_config(main.build_parser().parse_args(["gui"]), s, ["gui"])  # not given: the ini's
    assert (c.samplerate, c.blocksize, c.prefill_blocks) == (44100, 512, 5)
    argv = ["gui", "-r44100", "-b", "64"]  # other values count without argv as before
    c = _cli_config(main.build_parser().parse_args(argv), s)
    assert (c.samplerate, c.blocksize) == (44100, 64)


@pytest.fixture
def run_gui(qapp, monkeypatch, tmp_path):
    """gui.app.run_gui on an in-process engine that opens no device; ``body(win)`` runs in place of
    the event loop. Returns the window's config."""
    import gui.app
    import gui.window
    import realtime.io.devices

    class Window(MainWindow):
        def __init__(self, preset, config, settings, **kw):
            host = EngineHost(preset, config)
            host.start = lambda: None  # the Start button: nothing to open here
            super().__init__(preset, config, settings, host=host, **kw)
            made.append(self)

    made = []
    monkeypatch.setenv("RTAUDIO_HOST_CONFIG", str(tmp_path / "cfg" / "rtaudio-host.ini"))
    monkeypatch.setattr(gui.window, "MainWindow", Window)
    monkeypatch.setattr(realtime.io.devices, "has_audio_device", lambda *a, **k: True)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # run_gui sets its own: put back after
    handlers, ignored = {}, set()  # the handlers run_gui sets; signals the "caller" ignored (nohup)
    getsignal = signal.getsignal
    monkeypatch.setattr(signal, "signal", lambda sig, handler: handlers.__setitem__(sig, handler))
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.SIG_IGN if sig in ignored else getsignal(sig))

    def run(argv, body):
        monkeypatch.setattr(sys, "argv", ["main.py", *argv])
        monkeypatch.setattr(qapp, "exec", lambda: body(made[-1]) or 0, raising=False)
        assert gui.app.run_gui(main.build_parser().parse_args(argv)) == 0
        return made[-1]

    run.handlers, run.ignored = handlers, ignored
    return run


def test_save_writes_back_to_the_preset_file_given_on_the_command_line(run_gui, monkeypatch, tmp_path):
    import gui.preset_io

    mine = tmp_path / "mine.json"
    save_preset(load_preset("default"), mine)
    dialogs = []
    monkeypatch.setattr(gui.preset_io.QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (dialogs.append(a), ("", ""))[1]))

    def body(win):
        win.rack.strips["gain"].controls["gain_db"].setValue(-6.0)
        win._save()  # asked for a file name (and wrote nothing) when started with --preset FILE

    run_gui(["gui", "--preset", str(mine)], body)
    assert not dialogs
    saved = {s["id"]: s for s in json.loads(mine.read_text())["chain"]}
    assert saved["gain"]["params"]["gain_db"] == -6.0


def test_the_panel_takes_what_its_own_command_line_set(run_gui):
    Settings().save_engine_config(EngineConfig(samplerate=44100))
    win = run_gui(["gui", "-r", "48000", "--preset", "default"], lambda win: None)
    assert win.host.config.samplerate == 48000  # found in sys.argv
    assert win.preset_path is None  # a built-in preset is no file to save to


def test_the_panel_opens_the_preset_it_had_last_unless_told_otherwise(run_gui, tmp_path):
    """``last_preset`` was remembered and never read: every launch opened the default."""
    mine = tmp_path / "mine.json"
    save_preset({**load_preset("voice"), "name": "mine"}, mine)
    run_gui(["gui"], lambda win: win.load_preset_file(str(mine)))
    win = run_gui(["gui"], lambda win: None)
    assert win.host.name == "mine" and win.preset_path == str(mine) and not win.banner.isVisible()
    assert "enhancer" in win.rack.strips
    win = run_gui(["gui", "--preset", "default"], lambda win: None)  # the command line's beats it
    assert win.host.name == "default" and Settings().last_preset == str(mine)


@pytest.mark.parametrize("damage", ["gone", "corrupt", "does not build"])
def test_a_remembered_preset_that_no_longer_loads_gives_the_default_and_one_line(run_gui, tmp_path, monkeypatch,
                                                                                damage):
    import gui.window

    mine = tmp_path / "mine.json"
    save_preset({**load_preset("voice"), "name": "mine"}, mine)
    Settings().last_preset = str(mine)
    if damage == "gone":
        mine.unlink()
    elif damage == "corrupt":
        mine.write_text("{")
    else:  # loads, but its chain cannot be built any more (e.g. a plugin uninstalled)
        base = gui.window.MainWindow

        class Refusing(base):
            def __init__(self, preset, *a, **kw):
                if preset["name"] == "mine":
                    raise RuntimeError("plugin gone")
                super().__init__(preset, *a, **kw)

        monkeypatch.setattr(gui.window, "MainWindow", Refusing)
    win = run_gui(["gui"], lambda win: None)
    assert win.host.name == "default" and win.preset_path is None
    assert len(win.errors) == 1 and "last preset" in win.errors[0] and "mine.json" in win.errors[0]


def test_a_closed_terminal_quits_the_panel_as_ctrl_c_does_unless_nohup_ignored_it(run_gui, qapp, monkeypatch):
    """SIGHUP (the terminal closed) leaves the event loop like Ctrl-C and SIGTERM, so the engine
    closes in order; it raised an "internal error" inside a slot and the window stayed up over a
    dead engine. Under nohup (SIGHUP ignored) it stays ignored."""
    quits = []
    monkeypatch.setattr(qapp, "quit", lambda: quits.append(1), raising=False)
    run_gui(["gui"], lambda win: None)
    assert {signal.SIGINT, signal.SIGTERM, signal.SIGHUP} <= set(run_gui.handlers)
    run_gui.handlers[signal.SIGHUP](signal.SIGHUP, None)
    assert quits == []  # not inside whatever code the signal interrupted (a meter poll: a segfault)
    qapp.processEvents()
    assert quits == [1]  # but as soon as the event loop runs
    run_gui.handlers.clear()
    run_gui.ignored.add(signal.SIGHUP)
    run_gui(["gui"], lambda win: None)
    assert signal.SIGHUP not in run_gui.handlers and signal.SIGTERM in run_gui.handlers


# ---------------------------------------------------------------------------- no screen
def _no_x_at(display: str) -> bool:
    return not os.path.exists(f"/tmp/.X11-unix/X{display.lstrip(':')}")


@pytest.fixture
def x_env(monkeypatch):
    """The environment in which Qt would pick xcb."""
    if not sys.platform.startswith("linux"):
        pytest.skip("X11 only")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return monkeypatch


def test_an_unreachable_display_falls_back_to_the_headless_engine(x_env, monkeypatch, capsys):
    """A set DISPLAY with no X server behind it: Qt would abort the process (exit 134)."""
    import gui.app

    if not _no_x_at(":99"):
        pytest.skip("an X server runs at :99")
    x_env.setenv("DISPLAY", ":99")
    assert "no screen" in main._no_screen()
    ran = []
    monkeypatch.setattr(gui.app, "run_gui", lambda args: ran.append("gui") or 0)
    monkeypatch.setattr(main, "cmd_run", lambda args: ran.append("run") or 0)
    assert main.cmd_gui(main.build_parser().parse_args(["gui"])) == 0
    assert ran == ["run"]
    err = capsys.readouterr().err
    assert "no screen" in err and "starting the headless engine instead" in err
    x_env.setenv("QT_QPA_PLATFORM", "xcb")
    assert "no screen" in main._no_screen()


def test_a_display_without_libxcb_is_no_screen(x_env):
    import ctypes

    def cdll(name, *a, **k):
        raise OSError(f"{name}: cannot open shared object file")

    x_env.setenv("DISPLAY", ":0")
    x_env.setattr(ctypes, "CDLL", cdll)
    assert "no screen" in main._no_screen()


def test_a_stale_wayland_display_is_no_screen_and_a_live_one_is(x_env, tmp_path):
    """WAYLAND_DISPLAY left from a closed session: Qt aborted the process (exit 134)."""
    import socket

    x_env.delenv("DISPLAY", raising=False)
    x_env.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    x_env.setenv("WAYLAND_DISPLAY", "wayland-9")
    assert "cannot connect to the Wayland compositor" in main._no_screen()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as compositor:  # something listening there
        compositor.bind(str(tmp_path / "wayland-9"))
        compositor.listen(1)
        assert main._no_screen() is None
        x_env.setenv("QT_QPA_PLATFORM", "wayland")
        assert main._no_screen() is None
    x_env.setenv("WAYLAND_DISPLAY", str(tmp_path / "gone"))
    assert "no screen" in main._no_screen()


def test_a_reachable_display_is_a_screen(x_env, tmp_path):
    xvfb = shutil.which("Xvfb")
    free = next((d for d in range(150, 200) if _no_x_at(f":{d}")), None)
    if xvfb is None or free is None:
        pytest.skip("needs Xvfb")
    p = subprocess.Popen([xvfb, f":{free}", "-nolisten", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while _no_x_at(f":{free}") and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if _no_x_at(f":{free}"):
            pytest.skip("Xvfb did not start")
        x_env.setenv("DISPLAY", f":{free}")
        assert main._no_screen() is None
    finally:
        p.terminate()
        p.wait(10)


# ---------------------------------------------------------------------------- knob wheel
def test_a_stepped_knob_moves_one_step_per_notch_of_a_high_resolution_wheel(qtbot):
    k = Knob(VOICES, 8)
    qtbot.addWidget(k)
    k.show()
    for _ in range(4):
        wheel(k, 15 / 120)  # half a notch: no step yet
    assert k.value() == 8
    for _ in range(4):
        wheel(k, 15 / 120)
    assert k.value() == 9  # was 16: a step per event
    wheel(k, 90 / 120)
    wheel(k, -60 / 120)  # turned back: what was scrolled up is dropped
    assert k.value() == 9
    wheel(k, -60 / 120)
    assert k.value() == 8
    wheel(k, 240 / 120)  # a fast clicky wheel: two notches in one event
    assert k.value() == 10


def test_a_continuous_knob_moves_a_notch_per_notch_in_parts(qtbot):
    fine, coarse = Knob(GAIN, 0.0), Knob(GAIN, 0.0)
    for k in (fine, coarse):
        qtbot.addWidget(k)
        k.show()
    for _ in range(8):
        wheel(fine, 15 / 120)
    wheel(coarse, 120 / 120)
    assert fine.value() == pytest.approx(coarse.value()) and coarse.value() > 0


# ---------------------------------------------------------------------------- moves
def test_a_move_past_the_end_changes_nothing_and_keeps_the_engine():
    p = load_preset("default")
    host = EngineHost(p, EngineConfig())
    ids = [s.id for s in host.chain.slots]
    engine = host.engine
    assert host.move_slot(ids[0], -1) is False
    assert host.move_slot(ids[-2], +1) is False  # the last movable one (the safety stage stays last)
    assert host.engine is engine and [s.id for s in host.chain.slots] == ids  # not rebuilt
    assert host.move_slot(ids[0], +1) is True
    assert [s.id for s in host.chain.slots] == [ids[1], ids[0], *ids[2:]] and host.engine is not engine
    with pytest.raises(ValueError):
        host.move_slot(ids[-1], -1)
    host.close()


# ---------------------------------------------------------------------------- presets
def test_a_preset_file_with_a_utf8_byte_order_mark_loads(tmp_path):
    """Notepad's "UTF-8" starts the file with a BOM."""
    plain = tmp_path / "plain.json"
    save_preset(load_preset("default"), plain)
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert load_preset(bom) == load_preset(plain)
    assert load_preset(str(bom))["name"] == load_preset("default")["name"]


def test_a_saved_preset_named_on_the_command_line_opens_as_its_file(run_gui, tmp_path):
    """`--preset mine` (saved by the panel in its folder) said "unknown preset"."""
    folder = tmp_path / "cfg" / "presets"  # beside $RTAUDIO_HOST_CONFIG (the fixture's)
    folder.mkdir(parents=True)
    mine = save_preset({**load_preset("default"), "name": "mine"}, folder / "mine.json")
    win = run_gui(["gui", "--preset", "mine"], lambda win: None)
    assert win.host.name == "mine" and win.preset_path == str(mine) and not win.banner.isVisible()
    assert win.preset_box.currentText() == "mine"
