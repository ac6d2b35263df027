"""The benchmarks at their edges, review 44: `bench gui` ended by a signal (a segfault on Ctrl-C, an
abort on SIGTERM), figures that were not measured (NaN in the JSON, a knob latency of 0 ms, the
throughput of audio never processed, the seconds asked for rather than run), numbers without an
upper bound, constructor arguments taken as knobs, and a server started before the preset was read.
Each test failed before its fix."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.test_robustness import one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(*args, env=None, timeout=240):
    return subprocess.run([sys.executable, "main.py", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_a_figure_that_is_not_a_number_is_null_in_the_json(capsys):
    from bench.common import emit

    emit({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}, "e": 2.5}, True)
    line = capsys.readouterr().out

    def refuse(c):
        raise ValueError(c)

    assert json.loads(line, parse_constant=refuse) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2.5}


@pytest.mark.parametrize("args, said", [
    (("jitter", "--seconds", "1e9"), "--seconds: must be at most 3600"),
    (("processor", "gain", "--blocksize", "100000000000"), "--blocksize: must be at most 65536"),
    (("gui", "--seconds", "1e7"), "--seconds: must be at most 86400"),
    (("gui", "--move-hz", "1e9"), "--move-hz: must be at most 1000"),
    (("synth", "--samplerate", "1"), "a sample rate is 8000 to 384000 Hz"),
    (("engine", "--samplerate", "5"), "a sample rate is 8000 to 384000 Hz"),
    (("loader", "--seconds", "0.003"), "--seconds: must be at least 0.05"),
    (("enhancer", "--set", "model_path=x"), "--set: unknown parameter 'model_path'"),
    (("enhancer", "--set", "threads=abc"), "--set: unknown parameter 'threads'"),
    (("swap", "--add", "lv2"), "--add lv2: a hosted plugin needs its URI"),
    (("batch", "--what", "", "--streams-n", "1", "--seconds", "0.005"), "shorter than one block"),
])
def test_numbers_and_names_a_bench_cannot_take_are_one_line(args, said):
    assert said in one_line_error(_bench(*args, timeout=120))


@pytest.mark.parametrize("which", ["engine", "swap"])
def test_a_preset_that_fails_starts_no_server(which, monkeypatch):
    """bench engine and swap started a JACK server, then failed on the preset and left it running."""
    from realtime.errors import PresetError
    from realtime.io import jackserver

    started = []
    monkeypatch.setattr(jackserver, "ensure_server", lambda *a, **k: started.append(a))
    mod = __import__(f"bench.{which}", fromlist=["main"])
    with pytest.raises(PresetError, match="unknown preset 'nosuch'"):
        mod.main(["--preset", "nosuch", *(["--add", "gain"] if which == "swap" else [])])
    assert started == []


def test_the_batched_streams_count_the_audio_they_processed():
    from bench.batch import _delimiter_streams

    wall, done = _delimiter_streams(1, 0.05)
    assert done == 4 * 512 / 44100 and wall > 0  # whole blocks only: 2205 frames hold four


@pytest.mark.jack
def test_bench_engine_says_the_seconds_it_ran(jack_server):
    r = _bench("engine", "--seconds", "0.3", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0.3 <= rec["seconds"] < 0.8 and rec["callbacks"] < 0.8 * 48000 / 128  # it ran a whole second


def _no_note_of(pid: int) -> bool:
    return not os.path.exists(f"/dev/shm/rtaudio-jackd-{pid}.json")


@pytest.mark.jack
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_bench_gui_ended_by_a_signal_cleans_up_and_says_interrupted(sig, status):
    """Ctrl-C crashed it (a segfault: the probe read the rings the window had freed), SIGTERM aborted
    it (raised inside a Qt slot); both left the private server's files behind."""
    env = dict(os.environ, JACK_DEFAULT_SERVER="rtguibench44", QT_QPA_PLATFORM="offscreen")  # its own server
    p = subprocess.Popen([sys.executable, "main.py", "bench", "gui", "--seconds", "60", "--add", "--json"], cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _server_pids():
            time.sleep(0.2)
        time.sleep(8.0)  # the window up, its knobs moving (the engine process starts in ~3 s)
        server = _server_pids()
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == status, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err and out == ""
    assert len(server) == 1 and _server_pids() == [] and _no_note_of(server[0])  # its private server, gone whole


def _server_pids() -> list[int]:
    r = subprocess.run(["pgrep", "-f", "jackd -n rtguibench44"], capture_output=True, text=True)
    return [int(pid) for pid in r.stdout.split()]


@pytest.mark.jack
def test_bench_gui_with_no_knob_move_measured_says_none(jack_server):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    r = _bench("gui", "--seconds", "2", "--move-hz", "0.2", "--add", "--json", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["knob_moves"] == 0 and rec["param_latency_ms_p50"] is None and rec["param_latency_ms_max"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in rec.values())


def test_a_probe_whose_rings_are_gone_counts_its_pending_moves_missed_at_once():
    """The window closed (it frees the rings): stop() spun its whole timeout on moves it could no
    longer read."""
    from bench.gui import LatencyProbe

    probe = LatencyProbe()
    probe._pending = [(0, time.perf_counter_ns()), (1, time.perf_counter_ns())]
    probe.forget()
    assert probe.missed == 2 and probe._pending == []  # nothing left for stop() to wait on
    probe.stop()
    assert probe.missed == 2 and probe.ms == []
