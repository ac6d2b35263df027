"""main.py as a user runs it: real subprocesses, real JACK servers, real files."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent


def run(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_process_with_overrides(tmp_path):
    src, dst = tmp_path / "in.wav", tmp_path / "out.flac"
    t = np.arange(24000) / 48000
    sf.write(src, (0.9 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 48000)
    r = run("process", str(src), str(dst), "--preset", "default", "--set", "limiter.ceiling_db=-6",
            "--set", "gain.gain_db=3", "--no-progress")
    assert r.returncode == 0, r.stderr
    y, _ = sf.read(dst)
    ceiling = 10 ** (-6 / 20)
    assert np.abs(y[4800:]).max() <= ceiling + 1e-3
    # the safety stage's DC blocker sits after the limiter: the sine's onset may overshoot slightly
    assert np.abs(y).max() <= ceiling * 1.01
    assert json.loads(r.stdout)["frames"] == 24000


@pytest.mark.parametrize("args,message", [
    (["--preset", "nope"], "nope"),
    (["--set", "limiter.ceiling_db=5"], "ceiling_db"),
    (["--set", "nosuchslot.x=1"], "nosuchslot"),
    (["--set", "garbage"], "garbage"),
])
def test_bad_presets_and_overrides_are_one_clear_line(tmp_path, args, message):
    src = tmp_path / "in.wav"
    sf.write(src, np.zeros(100, np.float32), 48000)
    r = run("process", str(src), str(tmp_path / "o.wav"), *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("argv", [
    ["process", "-b", "0"], ["run", "-b", "0"], ["batch", "in", "--out", "o", "-r", "-48000"],
    ["gui", "--prefill-blocks", "0"], ["batch", "in"], ["nosuch"],
    # benchmarks and trainers have their own parsers, of the same kind
    ["bench", "processor", "--blocksize", "x"], ["bench", "delimiter", "--bogus"], ["train", "enhancer", "--steps", "-1"],
    ["train", "delimiter", "--thresholds", "abc"],
])
def test_a_bad_argument_is_one_line_not_the_usage(argv):
    """The usage block came first (5 lines for `process -b 0`, 9 for `run -b 0`)."""
    r = run(*argv)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.parametrize("block", ["16", "4096"])
def test_run_refuses_a_block_the_live_engine_does_not_run_before_it_starts(block):
    """The parser took 16..65536 for every command; the engine then refused outside 32..2048."""
    r = run("run", "-b", block, "--demo")
    assert r.returncode == 2 and r.stderr == f"error: argument --blocksize/-b: {block} frames: a live block is " \
        "32 to 2048 frames\n", r.stderr


def test_malformed_preset_file_names_the_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "name": "x", "chain": [{"processor": "gain", "params": {"gain_db": "loud"}}]}))
    src = tmp_path / "in.wav"
    sf.write(src, np.zeros(100, np.float32), 48000)
    r = run("process", str(src), str(tmp_path / "o.wav"), "--preset", str(bad))
    assert r.returncode == 2 and "gain_db" in r.stderr and "Traceback" not in r.stderr


def test_unreadable_input_is_a_clear_error(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF....WAVEjunk")
    r = run("process", str(tmp_path / "x.wav"), str(tmp_path / "o.wav"))
    assert r.returncode == 2 and "not a readable audio file" in r.stderr


@pytest.mark.jack
def test_devices_lists_the_jack_server(jack_server):
    r = run("devices")
    assert r.returncode == 0, r.stderr
    assert "JACK Audio Connection Kit" in r.stdout


@pytest.mark.jack
def test_demo_plays_through_the_live_engine_and_writes_a_wav(jack_server, tmp_path):
    out = tmp_path / "demo.wav"
    r = run("run", "--demo", "--demo-out", str(out))
    assert r.returncode == 0, r.stderr
    assert "measured round trip through JACK" in r.stdout and "DSP load" in r.stdout
    y, sr = sf.read(out)
    assert sr == 48000 and len(y) > 5 * sr and np.abs(y).max() > 0.1


@pytest.mark.jack
def test_bench_engine_prints_the_agreed_json(jack_server):
    r = run("bench", "engine", "--seconds", "2", "--gil-hold-ms", "200", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("bench", "seconds", "blocksize", "callbacks", "late_blocks", "server_xruns", "delayed_callbacks",
                "callback_us_p99", "dsp_us_p99", "latency_ms"):
        assert key in rec
    assert rec["callbacks"] > 500 and rec["gil_holds"] >= 1


def test_bench_processor_prints_one_line_per_processor():
    r = run("bench", "processor", "gain", "limiter", "--seconds", "1", "--json")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [x["name"] for x in recs] == ["gain", "limiter"]
    assert recs[1]["latency_samples"] > 0 and all(x["rtf"] > 0 for x in recs)


def test_bench_alone_lists_every_benchmark_and_an_unknown_name_is_one_clear_error():
    from bench import BENCHMARKS

    r = run("bench")
    assert r.returncode == 0, r.stderr
    listed = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert listed == list(BENCHMARKS)
    assert {"processor", "engine", "jitter", "synth", "gui", "enhancer", "delimiter"} <= set(listed)
    r = run("bench", "nope")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown benchmark 'nope'" in r.stderr.splitlines()[0]


@pytest.mark.parametrize("kv,said", [("pitch=1", "unknown parameter 'pitch'"), ("pitch_filter", "PARAM=VALUE"),
                                     ("pitch_filter=3", "outside [0, 1]")])
def test_bench_enhancer_knobs_are_checked_in_one_line(kv, said):
    r = run("bench", "enhancer", "--set", kv)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert said in r.stderr.strip().splitlines()[-1]


def test_every_benchmark_is_a_runnable_module_with_its_own_parser():
    """The denoiser convention: `python -m bench.NAME` through get_parser() / main(argv)."""
    import importlib

    from bench import BENCHMARKS

    for name, (module, help_) in BENCHMARKS.items():
        mod = importlib.import_module(module)
        assert mod.get_parser().prog == f"bench {name}" and callable(mod.main) and help_
    r = subprocess.run([sys.executable, "-m", "bench.processor", "--seconds", "0.2", "--json", "gain"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "gain"


def test_jack_server_killed_mid_stream_reports_exits_and_keeps_the_recording(tmp_path):
    """A named private server, so the session's server is untouched."""
    from realtime.io.jackserver import DummyJackServer

    name = "rtkill"  # fixed: JACK reclaims a killed server's registry slot only for its name
    server = DummyJackServer(48000, 256, name=name).start()
    rec = tmp_path / "rec.wav"
    p = subprocess.Popen([sys.executable, "main.py", "run", "--seconds", "60", "--record", str(rec), "-b", "256"],
                         cwd=ROOT, env={**os.environ, "JACK_DEFAULT_SERVER": name}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60

        def recorded_bytes() -> int:
            return sum(f.stat().st_size for f in tmp_path.glob(".rec.wav.*"))

        while time.monotonic() < deadline and recorded_bytes() < 1 << 16:  # audio is flowing
            time.sleep(0.1)
        time.sleep(1.0)  # streaming for a while
        server.kill()
        _, err = p.communicate(timeout=30)  # no hang
    finally:
        if p.poll() is None:
            p.kill()
        server.stop()
    assert p.returncode == 1, err
    assert "lost" in err and "does not reconnect" in err and "Traceback" not in err  # says it, clearly
    info = sf.info(rec)
    assert info.frames > 48000  # what was recorded before the crash is intact
    assert not list(tmp_path.glob(".rec.wav.*"))


@pytest.mark.parametrize("rate,block,channels", [(44100, 32, 2), (96000, 2048, 1), (48000, 512, 1)])
def test_engine_runs_at_other_rates_and_block_sizes(rate, block, channels, tmp_path):
    """Each on its own private JACK server at that rate (JACK runs one rate per server): the demo
    plays 2 s of audio through the live engine and records what comes out, so the DSP thread must
    really process every block (a dead DSP thread gives silence)."""
    name = f"rt{rate}x{block}"
    out = tmp_path / "out.wav"
    r = run("run", "--demo", "--seconds", "2", "--demo-out", str(out), "--samplerate", str(rate),
            "--blocksize", str(block), "--channels", str(channels), "--preset", "default",
            env={"JACK_DEFAULT_SERVER": name}, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr.lower(), r.stderr
    y, sr = sf.read(out, always_2d=True)
    assert sr == rate and y.shape[1] == channels
    assert y.shape[0] >= 2 * rate  # the whole take came back
    played = y[int(0.3 * rate): int(1.9 * rate)]  # after the round trip, before the tail
    assert np.sqrt(np.mean(played ** 2)) > 0.01, "no output: the DSP thread did not process the blocks"
    assert re.search(r"late blocks (\d+)", r.stdout), r.stdout


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGINT twice", "SIGQUIT"])
def test_ctrl_c_stops_cleanly_and_keeps_the_recording(tmp_path, how):
    """Ctrl-C is how a live run ends (status 0); SIGTERM says 143, as for every command. A second
    Ctrl-C while it closes waits for the recording to be finished (it lost it, and could leave the
    private server's shared memory behind). SIGQUIT (Ctrl-\\) as SIGTERM: it dumped core, the take
    left behind as a hidden .part file."""
    import signal

    from realtime.io.jackserver import DummyJackServer

    name = "rtint"
    rec = tmp_path / "rec.wav"
    with DummyJackServer(48000, 256, name=name):
        p = subprocess.Popen([sys.executable, "main.py", "run", "--record", str(rec)], cwd=ROOT,
                             env={**os.environ, "JACK_DEFAULT_SERVER": name}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "Live:" not in (p.stderr.readline() or ""):
            pass
        time.sleep(1.0)
        p.send_signal(getattr(signal, how.split()[0]))
        if how == "SIGINT twice":
            time.sleep(0.02)  # while the engine stops
            p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    assert p.returncode == {"SIGINT": 0, "SIGTERM": 143, "SIGINT twice": 130, "SIGQUIT": 131}[how] or (
        how == "SIGINT twice" and p.returncode == 0), err  # the second may come after the run ended
    assert "stopped" in err and "Traceback" not in err
    assert sf.info(rec).frames > 24000 and "recorded" in err
    assert [f.name for f in tmp_path.iterdir()] == ["rec.wav"]  # no .part left


def test_a_recording_error_after_ctrl_c_is_said_not_taken_for_the_interrupt(monkeypatch, capsys):
    """A live run ended by Ctrl-C whose recording could not be finished (a full disk): its error used
    to come out as "interrupted" (status 130), the interrupt the live loop had taken still pending,
    so the player took the take for complete. The tear-down's error is said, status 2."""
    import main as cli
    from realtime.errors import RecordingError, note_interrupt
    from realtime.run.live import stream_until

    class Engine:
        error = None

    def live_run(args):
        try:
            note_interrupt("SIGINT")  # what the Ctrl-C handler does; the live loop takes it
            return stream_until(Engine(), status=False)
        finally:  # _tear_down's recorder.close()
            raise RecordingError("no space left on device while recording to take.wav: the recording "
                                 "stopped after 2.7 s; what was written is kept")

    monkeypatch.setitem(cli.COMMANDS, "run", live_run)
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert "error: no space left on device while recording to take.wav" in err and "interrupted" not in err, err


def test_a_recording_that_stops_midway_is_said_at_once(small_disk, capsys):
    """A full disk stops the recording while the engine plays on: the live loop says so as it happens
    (it was said only at the stop, minutes later), and the stop says what was kept."""
    from realtime.errors import RecordingError
    from realtime.io.recorder import FileRecorder
    from realtime.run.live import stream_until

    class Engine:
        error = None

    rec = FileRecorder(str(small_disk / "take.wav"), 48000, 2)
    block = np.full((4096, 2), 0.1, np.float32)
    deadline = time.monotonic() + 30
    while rec.error is None and time.monotonic() < deadline:  # the disk fills up
        rec.ring.push(block)
        time.sleep(0.005)
    assert stream_until(Engine(), seconds=0.6, status=False, recorder=rec) == 0
    said = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(said) == 1 and said[0].startswith(f"error: no space left on device while recording to "
                                                 f"{small_disk / 'take.wav'}: the recording stopped after "), said
    with pytest.raises(RecordingError, match="no space left on device.*what was written is kept"):
        rec.close()
    assert [f.name for f in small_disk.iterdir()] == ["take.wav"]


def test_a_live_run_the_engine_refuses_starts_no_server_and_leaves_no_file(tmp_path):
    """Settings the command line takes but the engine refuses (22.05 kHz) are said in one line
    before a private JACK server or a recording starts (both were left behind: a 107 MB shared
    memory segment and a .part file)."""
    r = run("run", "--demo", "--record", str(tmp_path / "x.wav"), "-r", "22050", timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "22050" in r.stderr and "JACK" not in r.stdout + r.stderr, (r.stdout, r.stderr)
    assert not list(tmp_path.iterdir())


def test_the_panel_gives_the_dsp_thread_a_larger_budget_than_headless_run():
    """The panel runs the heavy neural chains: 3 blocks of pre-fill by default (gui/__init__.py
    says why), the headless engine 2; either can be set."""
    from gui import PANEL_PREFILL_BLOCKS
    from main import build_parser

    p = build_parser()
    assert p.parse_args(["gui"]).prefill_blocks == PANEL_PREFILL_BLOCKS == 3
    assert p.parse_args(["run"]).prefill_blocks == 2
    assert p.parse_args(["gui", "--prefill-blocks", "2"]).prefill_blocks == 2


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_private_jack_server_dies_with_the_process_that_started_it():
    """A benchmark killed by a timeout must not leave its jackd behind (it runs in its own session)."""
    name = "rtorphan"  # fixed, like rtkill: JACK reuses a dead server's registry slot by name
    code = ("import sys, time; sys.path.insert(0, %r); from realtime.io.jackserver import DummyJackServer; "
            "s = DummyJackServer(48000, 256, name=%r).start(); print(s.proc.pid, flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code % (str(ROOT), name)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(p.stdout.readline())
        assert _process_alive(pid)
    finally:
        p.kill()  # SIGKILL: no cleanup code of ours runs
        p.wait()
    deadline = time.monotonic() + 10
    while _process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _process_alive(pid), "jackd outlived the process that started it"


def test_bench_jitter_times_fixed_work_once_per_period():
    r = run("bench", "jitter", "--seconds", "1", "--work-ms", "0.3", "--json", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["bench"] == "jitter" and abs(rec["period_ms"] - 128 / 48) < 1e-9
    assert 300 <= rec["iterations"] <= 376  # one per 2.67 ms period (fewer only if it overran)
    assert 0.05 < rec["work_ms_p50"] <= rec["work_ms_p99"] <= rec["work_ms_max"]
    assert rec["over_5ms"] <= rec["over_3ms"] <= rec["over_2ms"] <= rec["iterations"]
    assert rec["cpu_steal_ms"] >= 0.0  # the README says it reports the VM's stolen time


def test_presets_lists_every_builtin_with_its_description(tmp_path):
    from realtime.dsp.presets import builtin_presets, load_preset

    r = run("presets", env={"RTAUDIO_HOST_CONFIG": str(tmp_path / "rtaudio-host.ini")})  # no saved presets
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(None, 1) for line in r.stdout.strip().splitlines())
    assert list(lines) == builtin_presets()
    for name, text in lines.items():
        assert text == load_preset(name)["description"]


def test_presets_saved_by_the_panel_are_listed_and_run_by_name(tmp_path):
    """`--preset mine` (saved in the panel's folder) said "unknown preset", and `presets` did not list it."""
    from realtime.dsp.presets import builtin_presets, load_preset, save_preset

    env = {"RTAUDIO_HOST_CONFIG": "", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    folder = tmp_path / "xdg" / "rtaudio-host" / "presets"
    folder.mkdir(parents=True)
    save_preset({**load_preset("clean"), "name": "mine", "description": "my own"}, folder / "mine.json")
    save_preset({**load_preset("clean"), "name": "voice", "description": "not the built-in"}, folder / "voice.json")
    r = run("presets", env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert [line.split()[0] for line in out[:len(builtin_presets())]] == builtin_presets()
    assert f"in {folder}" in r.stdout and re.search(r"^mine +\(user\) my own$", r.stdout, re.M), r.stdout
    assert re.search(rf"^voice +\(user; the built-in of that name wins: --preset {re.escape(str(folder))}/voice\.json\)",
                     r.stdout, re.M), r.stdout
    src = tmp_path / "in.wav"
    sf.write(src, np.zeros(4800, np.float32), 48000)
    r = run("process", str(src), str(tmp_path / "o.wav"), "--preset", "mine", "--no-progress", env=env)
    assert r.returncode == 0 and (tmp_path / "o.wav").exists(), r.stderr
    r = run("process", str(src), str(tmp_path / "o2.wav"), "--preset", "nope", "--no-progress", env=env)
    assert r.returncode == 2 and str(folder) in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_an_output_only_card_is_a_device_for_output_streams(monkeypatch):
    """A card with no input (HDMI, a Pi's jack on bare ALSA: PortAudio's default input is -1) is
    played to by output-only streams, and a device the user named is opened as asked; only a
    direction the stream needs and nothing answers sends it to the demo server. (The PortAudio
    handle is replaced: this machine has no such card.)"""
    import realtime.io.portaudio
    from realtime.io.devices import has_audio_device

    class Default:
        device = (-1, 0)

    class FakePortAudio:
        default = Default()
        PortAudioError = RuntimeError

        @staticmethod
        def query_devices():
            return [{"name": "HDMI", "max_input_channels": 0, "max_output_channels": 2}]

    monkeypatch.setattr(realtime.io.portaudio, "sd", lambda: FakePortAudio)
    assert has_audio_device("output") and not has_audio_device("duplex") and not has_audio_device("input")
    assert has_audio_device("duplex", named=True)
    Default.device = (0, -1)
    assert has_audio_device("input") and not has_audio_device("output")


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129), ("SIGQUIT", 131)])
def test_an_interrupted_command_exits_with_128_plus_the_signals_number(tmp_path, sig, code):
    """As a shell reports it: SIGHUP (a closed terminal, a dropped ssh session) said 130, Ctrl-C's.
    The command reads its pipe to the end before processing: once it has taken more than a pipe
    holds, it is reading (its handlers set) and waits there for the rest."""
    import signal
    import threading

    out = tmp_path / "o.wav"
    p = subprocess.Popen([sys.executable, "main.py", "process", "/dev/stdin", str(out), "--preset", "clean",
                          "--no-progress"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    watchdog = threading.Timer(120, p.kill)  # a command that neither reads nor ends would block the writes
    watchdog.start()
    try:
        for _ in range(64):
            p.stdin.write(bytes(16384))
            p.stdin.flush()
        p.send_signal(getattr(signal, sig))
        _, err = p.communicate(timeout=60)
    finally:
        watchdog.cancel()
    err = err.decode()
    assert p.returncode == code, err
    assert err.strip() == f"interrupted; {out} not written", err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,says", [(["train"], "error: train which model? one of ddsp, delimiter, enhancer"),
                                       (["train", "foo"], "error: train unknown model 'foo'; one of ddsp, delimiter, enhancer")])
def test_train_names_its_models_in_words(argv, says):
    """`main.py train` alone said "the following arguments are required: model, rest"."""
    r = run(*argv)
    assert r.returncode == 2 and r.stderr.strip() == says, r.stderr


def test_a_short_ogg_cut_in_half_says_it_is_cut(tmp_path):
    """libsndfile reads no frame of it: "contains no audio frames" hid that the file is cut."""
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(96000) / 48000)
    whole = tmp_path / "whole.ogg"
    sf.write(whole, np.stack([x, x], 1), 48000, format="OGG", subtype="VORBIS")
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    r = run("process", str(cut), str(tmp_path / "o.wav"))
    assert r.returncode == 2 and r.stderr == f"error: {cut}: no audio could be read from it (the file is cut short: " \
        "its end is missing)\n", r.stderr


def test_devices_without_a_jack_server_say_so_for_midi_too(tmp_path):
    """MIDI said "unavailable (SystemError: MidiInJack::initialize: JACK server not running?)"."""
    r = subprocess.run([sys.executable, "main.py", "devices"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "JACK_DEFAULT_SERVER": f"none-{os.getpid()}", "JACK_NO_START_SERVER": "1"})
    assert r.returncode == 0 and "MIDI: unavailable (no JACK server running)" in r.stdout, r.stdout + r.stderr
    assert "SystemError" not in r.stdout + r.stderr


def test_the_installed_command_says_its_own_name(tmp_path):
    rtaudio = Path(sys.executable).parent / "rtaudio"
    if not rtaudio.exists():
        pytest.skip("the project is not installed as a command here")
    r = subprocess.run([str(rtaudio), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("usage: rtaudio "), r.stdout
