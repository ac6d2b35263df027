"""Play signals into the running engine over JACK and record what comes out."""
import ctypes
import gc
import time

import numpy as np

from realtime.io.jackio import JackPlayer, JackRecorder, engine_ports
from realtime.run.live import measure_lag


class Identity:
    """A chain that leaves audio untouched: isolates the transport (callback + rings) for
    bit-exact checks; the real Chain always ends in a safety stage with a DC blocker."""

    slots = ()
    latency = 0

    def prepare(self, *args, **kwargs):
        pass

    def reset(self):
        pass

    def process(self, block):
        pass


class LogMidi(Identity):
    """Logs (block number, note, offset) of every MIDI message it is handed."""

    def __init__(self):
        super().__init__()
        self.block, self.log = 0, []

    def handle_midi(self, status, d1=0, d2=0, offset=0):
        self.log.append((self.block, d1, offset))

    def process(self, block):
        self.block += 1


class ClickOnNote(Identity):
    """Writes a unit click at the sample offset of each note-on it is handed."""

    def __init__(self):
        self.pending = []

    def handle_midi(self, status, data1=0, data2=0, offset=0):
        if status & 0xF0 == 0x90 and data2 > 0:
            self.pending.append(offset)

    def process(self, block):
        for off in self.pending:
            block[off, :] = 1.0
        self.pending.clear()


class Rig:
    """A JACK player wired into the engine's inputs and a recorder on its outputs. The same two
    clients serve every take, so JACK's graph order (which can add a period) stays fixed."""

    def __init__(self, channels: int = 2):
        ins, outs = engine_ports()
        self.player = JackPlayer(np.zeros((1, channels), np.float32))
        self.rec = JackRecorder(1, channels)
        self.rec.start(outs[:channels])
        self.player.start(ins[:channels])
        time.sleep(0.1)

    def take(self, signal: np.ndarray, tail: int = 4800) -> np.ndarray:
        # An engine running in this process has a Python DSP thread: a full collection of a test
        # session's heap (1.3 GB by the end of the suite) holds the GIL for longer than its blocks
        # last. No collections while a take runs (``take_with_glitches`` collects before it).
        gc.disable()
        try:
            return self._take(signal, tail)
        finally:
            gc.enable()

    def _take(self, signal: np.ndarray, tail: int) -> np.ndarray:
        rec, player = self.rec, self.player
        rec.recording = False
        rec.rearm(signal.shape[0] + tail)
        rec.recording = True
        player.play(signal)
        assert player.wait(signal.shape[0] / 48000 + 10), "player did not finish"
        deadline = time.monotonic() + 10
        while rec.pos < rec.data.shape[0] and time.monotonic() < deadline:
            time.sleep(0.02)
        rec.recording = False
        return rec.since(player.start_frame)

    def close(self):
        self.player.close()
        self.rec.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def lag_of(signal, recorded, max_lag=4000) -> int:
    return measure_lag(signal, recorded, max_lag)


def hold_gil(ms: float) -> None:
    """Hold the GIL for ``ms`` in the calling thread (PyDLL keeps it during the call)."""
    ctypes.PyDLL(None).usleep(int(ms * 1000))


GLITCH_COUNTERS = ("late_blocks", "late_blocks_ours", "late_blocks_stolen", "server_xruns")


def take_with_glitches(eng, rig: "Rig", signal: np.ndarray, tail: int = 4800) -> tuple[np.ndarray, dict]:
    """``rig.take`` on a settled stream: (the recording, the engine's stats with the glitch counters
    counting only the take). A fresh stream's first cycles often hiccup, before any audio plays:
    that costs the take nothing and must not make ``clean_take`` repeat it."""
    gc.collect()  # here, not inside the take: it holds the GIL the engine's DSP thread needs
    time.sleep(0.3)
    before = eng.stats()
    got = rig.take(signal, tail)
    after = eng.stats()
    return got, after | {k: after[k] - before[k] for k in GLITCH_COUNTERS}


class GlitchTries:
    """The tries of a take that a glitch of the machine can spoil (a server xrun; a late block the
    engine puts on the server or the hypervisor): at least ``least``, then more while ``budget_s``
    lasts from the first, ``pause_s`` apart. The caller stops early (break, return) on what it needs.

    A shared machine's bad spells last seconds: CI saw 33, 28, 15, 10 and 1 server xruns in five
    one-second takes a second apart, and a fixed five tries failed in them. ``words()`` says what
    the machine did during the tries (load average, time its hypervisor stole), for the failure
    message: a test that fails on a glitching machine says so."""

    def __init__(self, least: int = 5, budget_s: float = 60.0, pause_s: float = 1.0):
        self.least, self.budget_s, self.pause_s = least, budget_s, pause_s
        self.count = 0
        self._cpu = _cpu_times()

    def __iter__(self):
        t0 = time.monotonic()
        while self.count < self.least or time.monotonic() - t0 < self.budget_s:
            if self.count:
                time.sleep(self.pause_s)
            self.count += 1
            yield self.count - 1

    def words(self) -> str:
        now = _cpu_times()
        spent = [b - a for a, b in zip(self._cpu, now)]
        total = sum(spent) or 1
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        # /proc/stat's cpu columns: user nice system idle iowait irq softirq steal ...
        return (f"{self.count} tries; the machine meanwhile: load average {load}, "
                f"{100 * spent[7] / total:.0f}% stolen by the hypervisor, {100 * spent[3] / total:.0f}% idle")


def _cpu_times() -> list[int]:
    """The machine's CPU time by kind (/proc/stat's first line), zeros where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            cols = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        cols = []
    return (cols + [0] * 10)[:10]


def clean_take(take, attempts: int = 5, pause_s: float = 1.0, budget_s: float = 60.0):
    """Run ``take() -> (result, engine stats)`` until a take has no glitch at all, pausing after a
    glitched one; returns (result, stats, the glitched takes' counters).

    A late block or a server xrun replaces audio (underrun policy, or the server skipping a
    cycle), so a take that has to match sample for sample cannot survive one. Only glitches that
    are not ours are retried: the server's xruns and late blocks the engine attributes to the
    server or to the hypervisor (on a shared VM about one one-second take in five carries one).
    A late block of ours fails at once, and so does running out of tries (``GlitchTries``: at
    least ``attempts``, more while ``budget_s`` lasts); a glitch nobody reported still fails the
    caller's comparison."""
    import pytest

    glitched, tries = [], GlitchTries(attempts, budget_s, pause_s)
    for _ in tries:
        result, stats = take()
        if stats["late_blocks"] == 0 and stats["server_xruns"] == 0:
            return result, stats, glitched
        counters = {k: stats[k] for k in GLITCH_COUNTERS}
        if stats["late_blocks_ours"]:
            pytest.fail(f"late blocks of ours in a take: {counters}; earlier glitched takes: {glitched}")
        glitched.append(counters)
    pytest.fail(f"no clean take in {tries.words()} (the server or the machine glitched each time): {glitched}")


def assert_minus_6db_halves_the_level(eng, rig, slot: str, param: str, samplerate: int = 48000) -> None:
    """Play a sine through the running engine, set ``slot.param`` to -6.02 dB, play it again: the
    output level must halve (the knob reached the audio)."""
    import numpy as np
    import pytest

    sig = np.tile(0.25 * np.sin(2 * np.pi * 440 * np.arange(samplerate // 2) / samplerate), (2, 1)).T
    sig = sig.astype(np.float32)
    before = rig.take(sig)
    eng.set_param(slot, param, -6.0206)
    time.sleep(0.1)
    after = rig.take(sig)
    ratio = np.abs(after[8000:20000]).max() / np.abs(before[8000:20000]).max()
    assert ratio == pytest.approx(0.5, abs=0.01)


def run_delay_s() -> float:
    """The time this thread has spent runnable but not running (waiting for a CPU), seconds;
    0 where the kernel does not say (/proc/thread-self/schedstat's second field)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) * 1e-9
    except (OSError, ValueError, IndexError):
        return 0.0
