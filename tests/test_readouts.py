"""Processor readouts, per-slot load, the audio tap and the spectrum analyser (issue 18).

The values are checked on a chain run offline, through the real engine over JACK (``jack``
tests), and in the panel (offscreen; screenshots of the presets fed by a chain the way the engine
feeds the window go to artifacts/)."""
import os
import time

import numpy as np
import pytest

from realtime.dsp.chain import MAX_TIMED_SLOTS, READOUT_WIDTH, Chain, Slot
from realtime.dsp.presets import build_chain, load_preset
from realtime.dsp.processor import Readout
from realtime.dsp.processors import available_kinds, create
from realtime.engine.control import RING_SPECS, ChainView, ControlRings
from realtime.engine.ring import ring_pop, ring_push, ring_readable
from tests.test_gui_xvfb import xvfb  # noqa: F401  (the fixture: an Xvfb display)

SR, B = 48000, 128


def sine(freq=1000.0, peak=1.0, seconds=1.0, channels=2):
    t = np.arange(int(SR * seconds)) / SR
    return np.tile(peak * np.sin(2 * np.pi * freq * t)[:, None], (1, channels)).astype(np.float32)


def run_chain(chain: Chain, x: np.ndarray, on_block=None) -> np.ndarray:
    """Process ``x`` in blocks of B; ``on_block(chain, block_in, block_out)`` after each block."""
    y = np.empty_like(x)
    for i in range(0, x.shape[0] - B + 1, B):
        blk = np.ascontiguousarray(x[i:i + B])
        before = blk.copy()
        chain.process(blk)
        y[i:i + B] = blk
        if on_block is not None:
            on_block(chain, before, blk)
    return y


def column(chain, slot_id: str, readout_id: str) -> int:
    (d,) = [s for s in chain.describe() if s["id"] == slot_id]
    (r,) = [r for r in d["readouts"] if r["id"] == readout_id]
    return r["column"]


def value(chain, slot_id: str, readout_id: str) -> float:
    return float(chain.readout_record[0, column(chain, slot_id, readout_id)])


# ---------------------------------------------------------------------------- descriptors
def test_every_processor_declares_readouts_it_can_fill():
    for kind in available_kinds():
        if kind == "lv2":
            continue
        p = create(kind)
        p.prepare(SR, B, 2)
        assert p.readings.dtype == np.float32 and p.readings.size == len(p.readouts), kind
        assert len({r.id for r in p.readouts}) == len(p.readouts), kind
    assert [r.kind for r in create("limiter").readouts] == ["gr"]
    assert {r.id for r in create("synth").readouts} == {"held", "voices", "playing"}
    with pytest.raises(ValueError):
        Readout("x", "X", kind="dial")


def test_readout_format():
    assert Readout("g", "GR", "dB", -24, 0, kind="gr").format(-6.04) == "-6.0 dB"
    assert Readout("n", "Voices").format(3.0) == "3"
    assert Readout("c", "Clip", kind="text", choices=("ok", "CLIP")).format(1.0) == "CLIP"
    assert Readout("l", "Peak", "dB", kind="level").format(-130.0) == "-inf dB"
    # a thousand and more as a knob reads it: "192000 Hz" was cut in a meter bar's 44 px
    assert Readout("f", "Frequency", "Hz").format(192000.0) == "192 kHz"
    assert Readout("f", "Frequency", "Hz").format(1500.0) == "1.5 kHz"
    assert Readout("r", "Reduction").format(3981.07) == "4.0k"
    assert Readout("d", "Delay", "ms").format(-2500.0) == "-2.5 s"
    assert Readout("n", "Voices").format(999.0) == "999"


def test_chain_record_layout_and_views():
    chain = build_chain(load_preset("default"))
    desc = chain.describe()
    cols = [r["column"] for d in desc for r in d["readouts"]]
    assert cols == list(range(MAX_TIMED_SLOTS, MAX_TIMED_SLOTS + len(cols)))  # packed after the timings
    assert [d["load_column"] for d in desc] == list(range(len(desc)))
    chain.prepare(SR, B, 2)
    for s, d in zip(chain.slots, desc):  # the processors write straight into the record
        if d["readouts"]:
            c0 = d["readouts"][0]["column"]
            assert np.shares_memory(s.processor.readings, chain.readout_record[0, c0:c0 + len(d["readouts"])])
    view = ChainView(desc)  # what the GUI's client sees
    assert view.slot("limiter").processor.readout_columns == (column(chain, "limiter", "gr_db"),)
    assert view.slot("limiter").load_column == 2


def test_a_chain_with_more_readouts_than_the_record_keeps_the_rest_to_itself():
    n = (READOUT_WIDTH - MAX_TIMED_SLOTS) // 6 + 2
    chain = Chain([Slot(create("meter"), f"m{i}") for i in range(n)])
    chain.prepare(SR, B, 2)
    cols = [d["readouts"][0]["column"] for d in chain.describe()[:-1]]
    assert cols[-1] == -1 and cols[0] == MAX_TIMED_SLOTS
    run_chain(chain, sine(seconds=0.1))
    assert chain.slots[n - 1].processor.readings[0, 0] > -10  # still measured, just not carried


# ---------------------------------------------------------------------------- values (offline chain)
def test_limiter_driven_6_db_over_its_ceiling_reports_6_db_of_gain_reduction():
    chain = Chain([Slot(create("limiter", ceiling_db=-7.0, release_ms=50, lookahead_ms=5))])
    chain.prepare(SR, B, 2)
    gr = []
    run_chain(chain, sine(peak=10 ** (-1 / 20)), lambda c, a, b: gr.append(value(c, "limiter", "gr_db")))
    assert np.median(gr[100:]) == pytest.approx(-6.0, abs=0.1)


def test_meter_slot_reports_a_sines_level_within_a_tenth_of_a_db():
    chain = Chain([Slot(create("meter"))])
    chain.prepare(SR, B, 2)
    run_chain(chain, sine(peak=10 ** (-12 / 20), seconds=3.0))  # the RMS window (300 ms) has settled
    assert value(chain, "meter", "peak_l") == pytest.approx(-12.0, abs=0.1)
    assert value(chain, "meter", "rms_r") == pytest.approx(-15.01, abs=0.1)
    assert value(chain, "meter", "clip_l") == 0.0


def test_synth_reports_held_notes():
    chain = build_chain(load_preset("synth"))
    chain.prepare(SR, B, 2)
    for note in (60, 64, 67):
        chain.handle_midi(0x90, note, 100)
    run_chain(chain, np.zeros((B * 20, 2), np.float32))
    assert value(chain, "synth", "held") == 3 and value(chain, "synth", "voices") == 3
    chain.handle_midi(0x80, 64, 0)
    run_chain(chain, np.zeros((B * 4, 2), np.float32))
    assert value(chain, "synth", "held") == 2 and value(chain, "synth", "voices") == 3  # one releasing


def test_safety_counts_ceiling_hits():
    chain = build_chain(load_preset("clean"))
    chain.prepare(SR, B, 2)
    run_chain(chain, sine(peak=2.0, seconds=0.1))
    assert value(chain, "safety", "ceiling_hits") > 100


def test_enhancer_reports_noise_reduction_on_white_noise():
    chain = build_chain(load_preset("voice"))
    chain.prepare(SR, B, 2)
    noise = (0.05 * np.random.default_rng(1).standard_normal((SR, 2))).astype(np.float32)
    run_chain(chain, noise)
    assert value(chain, "enhancer", "noise_reduction_db") > 10
    assert value(chain, "enhancer", "speech_pct") < 50


def test_per_slot_load_is_timed_in_microseconds():
    chain = build_chain(load_preset("default"))
    chain.prepare(SR, B, 2)
    run_chain(chain, sine(seconds=0.2))
    load = chain.readout_record[0, :len(chain.slots)]
    assert np.all(load > 0) and np.all(load < 1e4)  # microseconds for a 2.7 ms block


def test_lv2_output_control_ports_become_readouts(tmp_path, monkeypatch):
    from realtime.io import lilv, lv2_scan

    uri = "http://plugin.org.uk/swh-plugins/fastLookaheadLimiter"
    monkeypatch.setenv("REALTIME_CACHE_DIR", str(tmp_path / "cache"))
    if not lilv.available() or uri not in lv2_scan.scan(use_cache=False).plugins:
        pytest.skip("run scripts/setup.sh (liblilv-0-0, swh-lv2)")
    proc = create("lv2", uri=uri)
    proc.set_param("limit", -6.0)
    assert [(r.id, r.kind) for r in proc.readouts] == [("attenuation", "level")]
    chain = Chain([Slot(proc, "fll")])
    chain.prepare(SR, B, 2)
    run_chain(chain, sine(peak=1.0, seconds=0.5))
    assert value(chain, "fll", "attenuation") == pytest.approx(6.0, abs=0.1)


# ---------------------------------------------------------------------------- spectrum
def test_spectrum_of_a_1khz_sine_peaks_at_1khz_within_a_bin():
    from gui.spectrum import SpectrumAnalyser

    a = SpectrumAnalyser(SR)
    a.push(np.tile(sine(peak=0.5, seconds=0.2)[:, :1], (1, 4)))
    f = a.peak_frequency()
    assert abs(f - 1000.0) <= SR / a.fft_size
    db = a.update(now=0.0)
    assert db[1].max() == pytest.approx(-6.02, abs=0.1)  # a -6 dBFS sine reads -6 dBFS


def tap_frames(inp: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The audio tap's frames for stereo input and output blocks: (n, 4) in L, in R, out L, out R."""
    return np.concatenate([inp, out], axis=1).astype(np.float32)


def test_spectrum_reads_a_sines_level_within_a_tenth_of_a_db_at_any_frequency():
    """A steady sine reads its level at its peak wherever it falls between two bins (a 1 kHz sine
    read 0.6 dB low, half-way between bins 1.4 dB: the Hann window's scalloping), in one channel
    or both, and its frequency to a small part of a bin."""
    from gui.spectrum import SpectrumAnalyser

    a = SpectrumAnalyser(SR)
    rng = np.random.default_rng(7)
    t = np.arange(a.fft_size) / SR
    bin_hz = SR / a.fft_size
    for f in np.concatenate([[1000.0, 5000.0, 20.0, 50.0, 1000.0 + bin_hz / 2, 23900.0], rng.uniform(20.0, 23000.0, 60)]):
        level = rng.uniform(-60.0, -1.0)
        x = (10 ** (level / 20) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)))[:, None]
        zero = np.zeros_like(x)
        for out in (np.hstack([x, zero]), np.hstack([zero, x]), np.hstack([x, x])):
            a.push(tap_frames(np.hstack([x, zero]), out))
            raw = a.raw_db()
            assert raw[1].max() == pytest.approx(level, abs=0.1), (f, level)
            assert raw[0].max() == pytest.approx(level, abs=0.1), (f, level)
            assert a.peak_frequency() == pytest.approx(f, abs=0.1 * bin_hz)


def test_spectrum_shows_each_channel_anti_phase_and_one_sided_alike():
    """The tap carries both channels and the analyser shows the louder one per bin: anti-phase
    stereo at -20 dBFS reads -20 dBFS (a mono mix cancelled it to the floor), a sine in one channel
    reads its level (a mono mix read it 6 dB low), -20 / -40 reads -20."""
    from gui.spectrum import SpectrumAnalyser

    s = sine(1000.0, 0.1, 0.2)[:, :1]
    a = SpectrumAnalyser(SR)
    for left, right in ((s, s), (s, -s), (s, 0 * s), (0 * s, s), (s, 0.1 * s)):
        x = np.hstack([left, right])
        a.push(tap_frames(x, x))
        raw = a.raw_db()
        assert raw[0].max() == pytest.approx(-20.0, abs=0.1) and raw[1].max() == pytest.approx(-20.0, abs=0.1)


def test_spectrum_overlay_shows_the_enhancer_removing_white_noise():
    from gui.spectrum import SpectrumAnalyser

    chain = build_chain(load_preset("voice"))
    chain.prepare(SR, B, 2)
    noise = (0.05 * np.random.default_rng(2).standard_normal((SR, 2))).astype(np.float32)
    a = SpectrumAnalyser(SR)

    def feed(c, before, after):
        a.push(tap_frames(before, after))

    run_chain(chain, noise, feed)
    raw = a.raw_db()
    band = (a.freqs > 200) & (a.freqs < 8000)
    assert raw[0][band].mean() - raw[1][band].mean() > 10  # output well below input across the band


# ---------------------------------------------------------------------------- rings
def test_readout_and_audio_rings_are_in_the_specs_and_shared_memory():
    assert {"readout", "audio"} <= set(RING_SPECS)
    from gui.remote.shm import attach_rings, create_rings

    rings, names, shms = create_rings()
    try:
        other, oshms = attach_rings(names)
        rec = np.arange(READOUT_WIDTH, dtype=np.float32)[None]
        assert ring_push(rings.readout.buf, rings.readout.idx, rec, 1) == 1
        got = np.zeros((1, READOUT_WIDTH), np.float32)
        assert ring_pop(other.readout.buf, other.readout.idx, got, 1) == 1
        np.testing.assert_array_equal(got, rec)
        assert ring_readable(other.audio.idx) == 0
        for s in oshms:
            s.close()
    finally:
        for s in shms:
            s.close()
            s.unlink()


def test_audio_tap_kernel_keeps_each_channel_and_round_trips_the_ring():
    """The DSP thread's tap work per block: input and output, left and right, each in its own column
    (a mono block's one channel in both), one ring push; the panel pops exactly that. (Its cost is a
    benchmark figure: ``python main.py bench engine`` prints ``tap_us_per_block``.)"""
    import tracemalloc

    from realtime.engine.engine import _tap_into

    rings = ControlRings()
    assert rings.audio.buf.shape[1] == 4
    block = np.stack([sine(seconds=B / SR)[:, 0], np.linspace(-1, 1, B, dtype=np.float32)], 1)
    out = -0.5 * block
    tap = np.zeros((B, 4), np.float32)
    _tap_into(block, tap, 0)
    _tap_into(out, tap, 2)
    assert np.array_equal(tap, np.hstack([block, out]))
    ring_push(rings.audio.buf, rings.audio.idx, tap, B)
    got = np.zeros_like(tap)
    ring_pop(rings.audio.buf, rings.audio.idx, got, B)
    assert np.array_equal(got, tap)
    mono = np.ascontiguousarray(block[:, :1])
    _tap_into(mono, tap, 2)
    assert np.array_equal(tap[:, 2], mono[:, 0]) and np.array_equal(tap[:, 3], mono[:, 0])
    tracemalloc.start()
    for _ in range(100):
        _tap_into(block, tap, 0)
        _tap_into(mono, tap, 2)
    assert tracemalloc.get_traced_memory()[1] < 1024  # nothing allocated per block
    tracemalloc.stop()


# ---------------------------------------------------------------------------- panel
pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")


def feed_window(w, seconds=0.5, signal=None, midi=()):
    """Run the host's chain offline and push what the engine's DSP thread would (meter, readout and
    audio-tap records) into the host's rings, then let the window poll them."""
    from realtime.engine.engine import _peak, _tap_into

    host = w.host
    # the window polls by hand here: its own timer would find the host stopped (nothing feeds the
    # rings between polls in a real stopped engine) and put the strips' load readouts to idle
    w._meter_timer.stop()
    chain = host.chain
    chain.prepare(SR, B, 2)
    for m in midi:
        chain.handle_midi(*m)
    x = signal if signal is not None else sine(440.0, 0.3, seconds)
    meters = np.zeros(8, np.float32)
    tap = np.zeros((B, 4), np.float32)
    r = host.rings
    for i in range(0, x.shape[0] - B + 1, B):
        blk = np.ascontiguousarray(x[i:i + B])
        _peak(blk, meters, 0)
        _tap_into(blk, tap, 0)
        chain.process(blk)
        _peak(blk, meters, 2)
        _tap_into(blk, tap, 2)
        ring_push(r.meter.buf, r.meter.idx, meters.reshape(1, -1), 1)
        ring_push(r.readout.buf, r.readout.idx, chain.readout_record, 1)
        ring_push(r.audio.buf, r.audio.idx, tap, B)
        if (i // B) % 40 == 39:
            w._poll_meters()
    w._poll_meters()


def test_strips_show_readouts_and_load(window):
    w = window("default")
    feed_window(w, signal=sine(1000.0, 10 ** (-1 / 20), 0.5) * np.float32(10 ** (6 / 20)))
    lim = w.rack.strips["limiter"]
    assert lim.readouts["gr_db"].value == pytest.approx(-6.0, abs=0.3)  # +5 dBFS into a -1 dB ceiling
    assert "µs" in lim.load_label.text() and "%" in lim.load_label.text() and lim.load_us > 0
    assert w.rack.strips["meter"].readouts["peak_l"].value == pytest.approx(-1.0, abs=0.2)
    assert w.out_meter.peak_text(0) != "-inf"
    w.out_meter.mousePressEvent(None)  # a click resets the peak numbers
    assert w.out_meter.peak_text(0) == "-inf"


def test_knob_labels_fit_their_knob(qtbot):
    from PyQt6.QtGui import QFont, QImage, QPainter

    from gui.knob import fit_label

    img = QImage(10, 10, QImage.Format.Format_ARGB32)
    p = QPainter(img)
    text = fit_label(p, QFont(), "Noise/harmonic balance of the voice", 72)
    from PyQt6.QtGui import QFontMetrics

    assert QFontMetrics(p.font()).horizontalAdvance(text) <= 72
    p.end()


@pytest.mark.parametrize("preset", ["default", "voice", "delimit", "synth"])
def test_screenshots_of_presets_with_readouts_and_spectrum(window, preset, artifacts_dir):
    from PyQt6.QtWidgets import QApplication

    w = window(preset)
    signal, midi = preset_signal(preset)
    feed_window(w, signal=signal, midi=midi)
    QApplication.processEvents()
    assert w.width() <= 1280 and w.height() <= 720
    path = os.path.join(artifacts_dir, f"gui_readouts_{preset}.png")
    assert w.grab().save(path)
    assert all("µs" in s.load_label.text() for s in w.rack.strips.values())


XVFB_SCRIPT = r"""
import json, sys
import numpy as np
from PyQt6.QtWidgets import QApplication
from PyQt6.QtTest import QTest
app = QApplication(sys.argv[:1])
from gui.host import EngineHost
from gui.settings import Settings
from gui.window import MainWindow
from realtime.dsp.presets import load_preset
from tests.test_readouts import feed_window, preset_signal
out = {}
for name in sys.argv[3:]:
    p = load_preset(name)
    w = MainWindow(p, settings=Settings(sys.argv[1]), host=EngineHost(p))
    w.resize(1280, 720)
    w.show()
    exposed = QTest.qWaitForWindowExposed(w, 10000)
    signal, midi = preset_signal(name)
    feed_window(w, signal=signal, midi=midi)
    QTest.qWait(200)
    shot = w.screen().grabWindow(w.winId())  # pixels read back from the X server
    out[name] = {"exposed": exposed, "saved": shot.save(f"{sys.argv[2]}/gui_readouts_{name}_xvfb.png"),
                 "size": [shot.width(), shot.height()], "platform": app.platformName()}
    w.shutdown()
print(json.dumps(out))
"""


def preset_signal(preset: str):
    """What the screenshots feed a preset: held notes for the synth, a tone in noise otherwise."""
    if preset == "synth":
        return np.zeros((SR // 2, 2), np.float32), [(0x90, 60, 100), (0x90, 67, 90)]
    rng = np.random.default_rng(3)
    return sine(440.0, 0.3, 0.5) + (0.03 * rng.standard_normal((SR // 2, 2))).astype(np.float32), []


def test_screenshots_of_presets_under_xvfb(xvfb, tmp_path, artifacts_dir):  # noqa: F811 (the imported fixture)
    """The same four presets on a real X server (Qt's xcb platform), pixels read back from it."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, DISPLAY=xvfb, QT_QPA_PLATFORM="xcb", PYTHONPATH=root, JACK_NO_START_SERVER="1")
    env.pop("WAYLAND_DISPLAY", None)
    presets = ["default", "voice", "delimit", "synth"]
    r = subprocess.run([sys.executable, "-c", XVFB_SCRIPT, str(tmp_path / "s.ini"), artifacts_dir, *presets],
                       cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for name in presets:
        assert out[name]["platform"] == "xcb" and out[name]["exposed"] and out[name]["saved"], out
        assert out[name]["size"][0] <= 1280 and out[name]["size"][1] <= 720


# ---------------------------------------------------------------------------- through the engine (JACK)
def _drain(rings):
    n = int(ring_readable(rings.readout.idx))
    recs = np.zeros((max(n, 1), READOUT_WIDTH), np.float32)
    ring_pop(rings.readout.buf, rings.readout.idx, recs, n)
    return recs[:n]


def _collect_while(rings, seconds):
    """Every readout record the engine pushes during ``seconds`` (drained as it goes)."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
        out.append(_drain(rings))
    return np.concatenate(out)


@pytest.mark.jack
def test_readouts_through_the_engine_limiter_gr_and_meter_level(jack_server):
    import threading

    from realtime.engine.config import EngineConfig
    from realtime.engine.engine import Engine
    from tests.jack_helpers import Rig

    chain = Chain([Slot(create("meter")), Slot(create("limiter", ceiling_db=-7.0, release_ms=50, lookahead_ms=5))])
    with Engine(chain, EngineConfig(blocksize=B)) as eng, Rig() as rig:
        _drain(eng.rings)
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("recs", _collect_while(eng.rings, 1.6)))
        t.start()
        rig.take(sine(1000.0, 10 ** (-1 / 20), 1.5))
        t.join()
        recs = got["recs"]
        gr = recs[:, column(chain, "limiter", "gr_db")]
        peak = recs[:, column(chain, "meter", "peak_l")]
        loud = peak > -3
        assert loud.sum() > 100
        assert np.median(gr[loud][50:]) == pytest.approx(-6.0, abs=0.15)
        assert np.median(peak[loud][50:]) == pytest.approx(-1.0, abs=0.1)
        assert recs[:, 0].mean() > 0 and recs[:, 1].mean() > 0  # each slot's process time came too


@pytest.mark.jack
def test_engine_tap_carries_anti_phase_and_one_sided_stereo_to_the_spectrum(jack_server):
    """Through the real engine: the audio ring carries the input and output channels as they are,
    so the spectrum reads anti-phase stereo and a sine in one channel at their level (-20 dBFS),
    where a mono tap read the first at the floor (-100 dB) and the second 6 dB low."""
    import threading

    from gui.spectrum import SpectrumAnalyser
    from realtime.engine.config import EngineConfig
    from realtime.engine.engine import Engine
    from tests.jack_helpers import Rig

    s = sine(1000.0, 0.1, 1.5)[:, :1]
    chain = Chain([Slot(create("gain"))])
    with Engine(chain, EngineConfig(blocksize=B)) as eng, Rig() as rig:
        for name, x in (("anti-phase", np.hstack([s, -s])), ("left only", np.hstack([s, 0 * s]))):
            while ring_readable(eng.rings.audio.idx):  # what came before
                _drain_audio(eng.rings)
            got = {}
            t = threading.Thread(target=lambda: got.setdefault("tap", _collect_audio_while(eng.rings, 1.3)))
            t.start()
            rig.take(x)
            t.join()
            tap = got["tap"]
            loud = np.flatnonzero(np.abs(tap[:, tap.shape[1] // 2]) > 0.05)  # (the output's first column)
            a = SpectrumAnalyser(SR)
            a.push(tap[loud[0] + SR // 10:loud[-1] - SR // 10])  # a steady stretch of the take
            raw = a.raw_db()
            assert raw[0].max() == pytest.approx(-20.0, abs=0.1), name
            assert raw[1].max() == pytest.approx(-20.0, abs=0.1), name


def _drain_audio(rings):
    n = int(ring_readable(rings.audio.idx))
    frames = np.zeros((max(n, 1), rings.audio.buf.shape[1]), np.float32)
    ring_pop(rings.audio.buf, rings.audio.idx, frames, n)
    return frames[:n]


def _collect_audio_while(rings, seconds):
    """Every audio-tap frame the engine pushes during ``seconds`` (drained as it goes: the ring holds
    0.34 s)."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.03)
        out.append(_drain_audio(rings))
    return np.concatenate(out)


@pytest.mark.jack
def test_readouts_through_the_engine_synth_held_notes(jack_server):
    from realtime.engine.config import EngineConfig
    from realtime.engine.engine import Engine

    chain = build_chain(load_preset("synth"))
    with Engine(chain, EngineConfig(blocksize=B, mode="output")) as eng:
        for note in (60, 64, 67, 72):
            eng.send_midi(0x90, note, 100)
        time.sleep(0.3)
        recs = _drain(eng.rings)
        assert recs.shape[0] > 0
        assert recs[-1, column(chain, "synth", "held")] == 4
        eng.send_midi(0x80, 72, 0)
        time.sleep(0.3)
        recs = _drain(eng.rings)
        assert recs[-1, column(chain, "synth", "held")] == 3


@pytest.mark.jack
def test_running_window_shows_engine_readouts_over_shared_memory(qtbot, tmp_path, jack_server, artifacts_dir):
    """The product's set-up (engine process, rings in shared memory): a sine 6 dB over the limiter's
    ceiling shows ~6 dB of gain reduction on its strip, each strip its load, the spectrum its peak."""
    import threading

    from gui.remote import RemoteEngineHost
    from gui.settings import Settings
    from gui.window import MainWindow
    from realtime.engine.config import EngineConfig
    from tests.jack_helpers import Rig

    p = load_preset("default")
    # no high-pass before the limiter: a glitch in the take (a busy machine's xrun) would ring through it
    # and overshoot the sine's peak, which the limiter would rightly report as deeper reduction
    p["chain"] = [s for s in p["chain"] if s["id"] != "hpf"]
    (lim_slot,) = [s for s in p["chain"] if s["id"] == "limiter"]
    lim_slot["params"]["ceiling_db"] = -7.0
    config = EngineConfig(samplerate=SR, blocksize=B)
    w = MainWindow(p, config, Settings(tmp_path / "settings.ini"), host=RemoteEngineHost(p, config))
    qtbot.addWidget(w)
    w.resize(1280, 720)
    w.show()
    try:
        w.start()
        with Rig() as rig:
            t = threading.Thread(target=lambda: rig.take(sine(1000.0, 10 ** (-1 / 20), 2.0)), daemon=True)
            t.start()
            lim = w.rack.strips["limiter"]
            seen = []
            for _ in range(15):
                qtbot.wait(100)  # the window polls at 30 Hz meanwhile
                seen.append(round(lim.readouts["gr_db"].value, 2))
            # the most common reading: onsets (the sine's start, a glitch in the take) dip a little deeper
            assert np.median(seen) == pytest.approx(-6.0, abs=0.15), seen
            assert all(s.load_us > 0 for s in w.rack.strips.values())
            assert abs(w.spectrum.analyser.peak_frequency() - 1000.0) <= SR / w.spectrum.analyser.fft_size
            assert w.grab().save(os.path.join(artifacts_dir, "gui_readouts_running_default.png"))
            t.join(10)
    finally:
        w.shutdown()


def test_records_laid_out_for_the_chain_before_a_change_never_reach_the_new_rack(window):
    """Readout records wait in the ring until the next poll; after a structural change made here and
    now (an engine in this process; ``wait=True``), those were laid out for the chain before it:
    its columns shifted, they showed under the wrong strips. The first poll after a new rack drops them."""
    w = window("default")
    w._meter_timer.stop()
    r = w.host.rings
    rec = np.full((1, r.readout.buf.shape[1]), 77.0, np.float32)  # every column, in the layout before
    level = np.full((1, 8), 0.1, np.float32)  # a meter record with each: blocks came (else the strips fall)
    for _ in range(8):
        ring_push(r.readout.buf, r.readout.idx, rec, 1)
        ring_push(r.meter.buf, r.meter.idx, level, 1)
    w.add_slot("gain")
    strips = w.rack.strips
    w._poll_meters()
    assert all(s.load_us == 0.0 for s in strips.values()), {k: s.load_us for k, s in strips.items()}
    rec[:] = 0
    rec[0, strips["limiter"].load_column] = 12.5
    ring_push(r.readout.buf, r.readout.idx, rec, 1)
    ring_push(r.meter.buf, r.meter.idx, level, 1)
    w._poll_meters()
    assert strips["limiter"].load_us == pytest.approx(12.5)
