"""The knob panel driving the live engine on a real JACK dummy server: knobs change the audio
(measured through JACK ports), devices come from the server, the on-screen keyboard and a real
JACK MIDI port reach the chain, MIDI learn, and screenshots of the running window."""
import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import Qt  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402

from gui.midi import NONE, VIRTUAL, VIRTUAL_NAME  # noqa: E402
from gui.remote import RemoteEngineHost  # noqa: E402
from gui.settings import Settings, SettingsDialog  # noqa: E402
from gui.window import MainWindow  # noqa: E402
from realtime.dsp.presets import load_preset  # noqa: E402
from realtime.engine.config import EngineConfig  # noqa: E402

from . import gui_midiprobe  # noqa: E402,F401  (registers "midiprobe" here too, for preset validation)

pytestmark = pytest.mark.jack
SR, BLOCK = 48000, 128


@pytest.fixture
def window(qtbot, tmp_path, jack_server):
    made = []

    def make(preset="default", midi_port=NONE):
        settings = Settings(tmp_path / "settings.ini")
        settings.midi_port = midi_port
        p = load_preset(preset) if isinstance(preset, str) else preset
        config = EngineConfig(samplerate=SR, blocksize=BLOCK)
        # the product's set-up: the engine in a process of its own
        host = RemoteEngineHost(p, config, plugins=("tests.gui_midiprobe",))
        w = MainWindow(p, config, settings, host=host)
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        return w

    yield make
    for w in made:
        w.shutdown()  # streams close before the session's JACK server goes


def take_in_background(rig, signal):
    """Run a Rig take on a thread so the Qt event loop (meters, knob moves) keeps running."""
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("rec", rig.take(signal)), daemon=True)
    t.start()
    return t, out


def rms_db(x, window: int = 480):
    """Level of a steady signal: the median over 10 ms windows of their RMS, so a period lost to
    a server xrun on a starved machine (zeros) does not move it."""
    x = np.asarray(x, np.float64)
    x = x[: len(x) // window * window].reshape(-1, window)
    return 10 * np.log10(np.median(np.mean(x ** 2, axis=1)) + 1e-20)


def test_turning_a_knob_changes_the_running_engine_and_the_audio(window, qtbot, artifacts_dir):
    from .jack_helpers import Rig, lag_of

    w = window()
    w.start_button.click()  # the engine starts in the background: the window keeps running
    qtbot.waitUntil(lambda: not w.busy, timeout=30000)
    assert w.host.running and w.start_button.text() == "Stop"
    t = np.arange(int(3.5 * SR)) / SR  # room for a slow machine: the levels are read while it plays
    sine = np.repeat((0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[:, None], 2, 1)
    sine[:2400] = np.random.default_rng(1).uniform(-0.1, 0.1, (2400, 1))  # 50 ms of noise: a lag mark
    knob = w.rack.strips["gain"].controls["gain_db"]

    def engine_gain():  # what the engine process holds (the DSP thread applied it)
        return w.host.engine_values().slot("gain").processor.get_param("gain_db")

    with Rig(2) as rig:
        th, out = take_in_background(rig, sine)
        qtbot.waitUntil(lambda: rig.player.pos >= int(0.7 * SR), timeout=10000)
        knob.setFocus()
        for _ in range(12):  # -10 dB with the keyboard, as a person would (one arrow = 1 % of 84 dB)
            QTest.keyClick(knob, Qt.Key.Key_Down, Qt.KeyboardModifier.NoModifier)
        target = knob.value()
        qtbot.waitUntil(lambda: engine_gain() == target, timeout=2000)
        applied = rig.player.pos  # frames played by the time the engine held the new value
        qtbot.wait(300)  # meters animate while the sine plays
        # the levels while it plays (the hold line's fall after the take depends on when it ended)
        levels = w.in_meter.peak_db[0], w.out_meter.peak_db[0], w.out_meter.hold_db[0]
        w.grab().save(os.path.join(artifacts_dir, "gui_main_window_running.png"))
        qtbot.waitUntil(lambda: not th.is_alive(), timeout=15000)
    rec = out["rec"]
    assert target == pytest.approx(-0.12 * 84.0)
    mark = np.zeros((6400, 2), np.float32)
    mark[:2400] = sine[:2400]
    lag = lag_of(mark, rec[:6400])
    assert 0 < lag < 4000
    before = rec[lag + int(0.3 * SR): lag + int(0.6 * SR), 0]
    assert applied < len(sine) - int(0.6 * SR), \
        f"the knob reached the engine only {applied / SR:.2f} s into a {len(sine) / SR:g} s take"
    after = rec[lag + applied + int(0.25 * SR): lag + applied + int(0.55 * SR), 0]
    assert rms_db(before) == pytest.approx(-23.0, abs=0.3)  # 0.1 amplitude sine
    assert rms_db(before) - rms_db(after) == pytest.approx(-target, abs=0.3)
    # smoothed, no step: after the move, many 1 ms windows lie between the old and the new level
    # (how fast a move arrives is a figure of `bench gui`, not a unit-test assertion)
    env = np.array([np.sqrt(np.mean(rec[i:i + 48, 0] ** 2)) for i in range(lag, len(rec) - 48, 48)])
    ref = np.median(env[int(0.1 * SR) // 48: int(0.5 * SR) // 48])
    new = 10 ** (target / 20) * ref
    gliding = np.count_nonzero((env < 0.9 * ref) & (env > 1.1 * new))
    assert gliding >= 10, gliding
    # the status bar reports the live engine
    w._poll_status()
    assert w.status_labels["state"].text() == "● running"
    assert "48000 Hz" == w.status_labels["samplerate"].text()
    assert w.status_labels["late"].text().startswith("late blocks ")
    tip = w.status_labels["late"].toolTip()  # the split: ours, the hypervisor's, the server's
    assert "our processing" in tip and "hypervisor" in tip and "server" in tip, tip
    assert levels[0] == pytest.approx(-20.0, abs=0.5) and levels[1] == pytest.approx(-20.0 + target, abs=0.5)
    assert levels[2] >= levels[1]  # the held peak is never under the peak
    # a structural change while running swaps the chain in the running engine, settings kept
    w.remove_slot("meter")
    assert w.host.running and "meter" not in w.rack.strips
    assert w.host.value("gain", "gain_db") == target == engine_gain()
    w.stop()
    assert not w.host.running and w.start_button.text() == "Start"


def test_device_list_comes_from_the_jack_server(window, qtbot):
    w = window()
    dlg = SettingsDialog(w.host.config, NONE, w)
    qtbot.addWidget(dlg)
    ins = [dlg.input.itemText(i) for i in range(dlg.input.count())]
    outs = [dlg.output.itemText(i) for i in range(dlg.output.count())]
    assert ins[0] == "Default" and "system" in ins and "system" in outs
    midi = [dlg.midi.itemText(i) for i in range(dlg.midi.count())]
    assert midi[:2] == [NONE, VIRTUAL]
    dlg.output.setCurrentText("system")
    dlg.blocksize.setCurrentText("256")
    dlg.prefill.setCurrentText("2")
    assert dlg.prefill_ms.text() == "adds 10.7 ms of output latency"  # 2 x 256 frames at 48 kHz
    w.start()
    w.apply_settings(dlg.engine_config(), NONE)  # restarts the running engine with them
    assert w.host.running and w.host.config.output_device == "system"
    assert w.host.config.blocksize == 256 and w.settings.engine_config().blocksize == 256
    assert w.host.config.prefill_blocks == 2 and w.settings.engine_config().prefill_blocks == 2
    qtbot.waitUntil(lambda: w.host.status()["callbacks"] > 10, timeout=5000)
    st = w.host.status()
    assert st["blocksize"] == 256 and st["device"] == "system"
    assert st["prefill_frames"] == 2 * 256  # the engine process runs with the chosen safety buffer


def probe_values(w):
    """(on note, on velocity, off note, count) as the engine process's probe slot holds them."""
    return tuple(int(v) for v in w.host.engine_values().slot("midiprobe").processor.values)


def test_on_screen_keyboard_reaches_the_chain(window, qtbot):
    w = window({"version": 1, "name": "probe", "chain": [{"processor": "midiprobe"}]})
    w.start()
    kb = w.keyboard
    kb.setFocus()
    QTest.keyPress(kb, Qt.Key.Key_A)  # C4
    qtbot.waitUntil(lambda: probe_values(w)[3] == 1, timeout=3000)
    assert probe_values(w)[:2] == (60, 100)
    QTest.keyRelease(kb, Qt.Key.Key_A)
    qtbot.waitUntil(lambda: probe_values(w) == (60, 100, 60, 2), timeout=3000)
    e = kb.first + 12 + 4
    QTest.mousePress(kb, Qt.MouseButton.LeftButton, pos=kb.key_center(e).toPoint())
    qtbot.waitUntil(lambda: probe_values(w)[3] == 3, timeout=3000)
    on, vel, _, _ = probe_values(w)
    assert on == e and 1 <= vel <= 127
    QTest.mouseRelease(kb, Qt.MouseButton.LeftButton, pos=kb.key_center(e).toPoint())
    qtbot.waitUntil(lambda: probe_values(w)[2:] == (e, 4), timeout=3000)


def test_midi_learn_and_notes_over_a_real_jack_midi_port(window, qtbot):
    mido = pytest.importorskip("mido")
    preset = load_preset("default")
    preset["chain"].insert(0, {"processor": "midiprobe"})
    w = window(preset, midi_port=VIRTUAL)
    assert w.midi is not None and w.midi.open
    w.start()
    names = [n for n in mido.get_output_names() if VIRTUAL_NAME in n]
    assert names, mido.get_output_names()
    with mido.open_output(names[0]) as port:
        def send_until(msg, done, timeout=10.0):
            """Send ``msg`` every 0.25 s until ``done()``, as a player wiggles a control: a message
            sent while the JACK MIDI connection is still being made is lost, by JACK's design."""
            for _ in range(int(timeout / 0.25)):
                port.send(msg)
                try:
                    qtbot.waitUntil(done, timeout=250)
                    return
                except qtbot.TimeoutError:
                    pass
            assert done(), f"{msg} had no effect in {timeout} s"

        w.toggle_learn("limiter.ceiling_db")
        send_until(mido.Message("control_change", channel=0, control=21, value=10),
                   lambda: w.host.midi_map.get((21, 0)) == "limiter.ceiling_db")
        qtbot.waitUntil(lambda: w.rack.knob("limiter.ceiling_db").mapping == "CC 21 ch1", timeout=1000)
        top = w.rack.knob("limiter.ceiling_db").param.max
        send_until(mido.Message("control_change", channel=0, control=21, value=127),
                   lambda: w.host.engine_values().slot("limiter").processor.get_param("ceiling_db") == top)
        # the MIDI thread moved the engine; the knob follows when the window hears of it
        qtbot.waitUntil(lambda: w.rack.knob("limiter.ceiling_db").value() == top, timeout=3000)
        port.send(mido.Message("sysex", data=[1, 2, 3]))  # dropped, harmless
        send_until(mido.Message("note_on", channel=0, note=64, velocity=90), lambda: probe_values(w)[:2] == (64, 90))
    assert w.modified
    assert w.host.to_preset()["midi"] == [{"cc": 21, "channel": 0, "target": "limiter.ceiling_db"}]


def test_a_mapped_controller_moves_the_running_engine_while_the_window_is_busy(window):
    """A controller is applied on the MIDI thread: the engine process has the new value while the
    GUI thread is blocked (no Qt event runs here until the end)."""
    import time

    w = window()
    w.start()
    w.host.cc_map.targets[(30, None)] = "gain.gain_db"
    midi = threading.Thread(target=w.host.midi_in, args=(0xB0, 30, 0), name="midi-in")
    midi.start()
    midi.join()
    bottom = w.rack.knob("gain.gain_db").param.min
    deadline = time.monotonic() + 3
    while w.host.engine_values().slot("gain").processor.get_param("gain_db") != bottom:
        assert time.monotonic() < deadline, "the engine did not get the controller's value"
        time.sleep(0.01)
    assert w.rack.knob("gain.gain_db").value() != bottom  # the window has not been told yet


def test_a_dead_engine_process_is_shown_and_restart_brings_back_the_chain_knobs_and_mappings(window, qtbot):
    """The engine process is killed under a running window: the status line says so, the Start
    button is released, a Restart engine button appears; pressing it starts a new process with the
    chain, the knob values and the MIDI mappings the panel showed, and the stream plays again (it
    had played for a while: an engine that dies right after its start is restarted stopped)."""
    import time

    w = window()
    w.start()
    w._started_at = time.monotonic() - 60  # as if it had played for a minute
    w.rack.knob("gain.gain_db").setValue(-7.0)  # through the knob, as a person turns it
    w.host.cc_map.targets[(30, None)] = "limiter.ceiling_db"
    qtbot.waitUntil(lambda: w.host.engine_values().slot("gain").processor.get_param("gain_db") == -7.0, timeout=3000)
    restart = w.findChild(type(w.start_button), "restart-engine")
    assert not w._restart_action.isVisible()
    old = w.host._proc.pid
    w.host._proc.kill()
    w.host._proc.join(10)
    w._poll_status()
    assert w.status_labels["state"].text() == "○ engine exited"
    assert w._restart_action.isVisible() and not w.start_button.isChecked()
    assert "not running" in w.banner.text() or "exited" in w.banner.text()
    qtbot.mouseClick(restart, Qt.MouseButton.LeftButton)  # in the background
    qtbot.waitUntil(lambda: not w.busy, timeout=30000)
    assert w.host.engine_alive() and w.host._proc.pid != old
    assert not w._restart_action.isVisible() and not w.banner.isVisible()
    assert w.host.running and w.start_button.isChecked()  # it was playing: it plays again
    assert w.host.engine_values().slot("gain").processor.get_param("gain_db") == pytest.approx(-7.0)
    assert w.rack.knob("gain.gain_db").value() == pytest.approx(-7.0)
    assert w.host.midi_map == {(30, None): "limiter.ceiling_db"}
    qtbot.waitUntil(lambda: w.host.status()["callbacks"] > 10, timeout=5000)
    w._poll_status()
    assert w.status_labels["state"].text() == "● running"


def test_learning_a_controller_another_knob_had_clears_that_knobs_label(window, qtbot):
    w = window()
    w.toggle_learn("gain.gain_db")
    w.host.midi_in(0xB0, 21, 64)  # the MIDI thread's call: CC 21 on channel 1 learns gain
    qtbot.waitUntil(lambda: w.rack.knob("gain.gain_db").mapping == "CC 21 ch1", timeout=2000)
    w.toggle_learn("limiter.ceiling_db")
    w.host.midi_in(0xB0, 21, 64)  # the same controller now learns the ceiling
    qtbot.waitUntil(lambda: w.rack.knob("limiter.ceiling_db").mapping == "CC 21 ch1", timeout=2000)
    assert w.rack.knob("gain.gain_db").mapping == ""
    assert w.host.midi_map == {(21, 0): "limiter.ceiling_db"}


def test_a_hung_engine_is_shown_and_restarted_and_one_that_died_at_once_restarts_stopped(window, qtbot):
    """An engine process that stops answering (SIGSTOP) is shown as such after one timed-out poll,
    later polls wait briefly; Restart kills it at once and starts a new one. It had just started
    playing, so the new one is left stopped (a plugin that crashes the engine would crash it again).
    While the engine is gone, Save writes the chain the panel shows."""
    import os
    import signal

    w = window()
    w.start()
    w.rack.knob("gain.gain_db").setValue(-5.0)
    qtbot.waitUntil(lambda: w.host.engine_values().slot("gain").processor.get_param("gain_db") == -5.0, timeout=3000)
    old = w.host._proc.pid
    os.kill(old, signal.SIGSTOP)
    try:
        w._poll_status()
        assert w.status_labels["state"].text() == "○ engine not answering" and w._restart_action.isVisible()
        assert w.host.engine_hung() and w.host.engine_alive()
        t0 = time.monotonic()
        saved = w.host.to_preset()  # Save meanwhile: the panel's view at once, not a 60 s wait on the engine
        assert time.monotonic() - t0 < 2.0
        assert next(e for e in saved["chain"] if e["id"] == "gain")["params"]["gain_db"] == -5.0
        t0 = time.monotonic()
        w._poll_status()  # the next poll gives up after 0.25 s, not the first poll's 5 s: no frozen window
        assert time.monotonic() - t0 < 2.5
        t0 = time.monotonic()
        w.restart_engine()
        assert time.monotonic() - t0 < 8  # killed at once, not 10 s of waiting for a close
    finally:
        try:
            os.kill(old, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert w.host.engine_alive() and w.host._proc.pid != old and not w.host.engine_hung()
    assert not w.host.running and not w.start_button.isChecked()  # played under 10 s: left stopped
    assert w.host.engine_values().slot("gain").processor.get_param("gain_db") == -5.0
    w.host._proc.kill()
    w.host._proc.join(10)
    p = w.host.to_preset()  # the engine is gone: the panel's own view
    assert next(e for e in p["chain"] if e["id"] == "gain")["params"]["gain_db"] == -5.0


def test_a_program_change_from_the_keyboard_moves_the_panels_instrument(window, qtbot):
    """A MIDI program change picks the synth's instrument in the engine process; the picker, the
    rack's control and the panel's view of the chain follow the synth's "playing" readout, so Save
    and Restart engine keep the instrument that plays (the view kept the old one)."""
    from realtime.dsp.processors.synth.processor import INSTRUMENTS

    w = window("synth")
    w.start()
    assert w.synth_panel.instrument.currentText() == "violin"
    w.host.midi_in(0xC0, 56)  # GM trumpet
    want = INSTRUMENTS.index("trumpet")
    qtbot.waitUntil(lambda: w.synth_panel.instrument.currentText() == "trumpet", timeout=5000)
    assert w.host.chain.slot("synth").processor.get_param("instrument") == want
    assert w.rack.strips["synth"].controls["instrument"].currentIndex() == want and w.modified
    assert w.host.engine_values().slot("synth").processor.get_param("instrument") == want
    w.synth_panel.instrument.setCurrentIndex(INSTRUMENTS.index("flute"))  # a choice made here is not undone
    qtbot.wait(800)
    assert w.synth_panel.instrument.currentText() == "flute"
    assert w.host.engine_values().slot("synth").processor.get_param("instrument") == INSTRUMENTS.index("flute")
