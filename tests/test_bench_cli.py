"""`main.py bench …` and `python -m bench.NAME` as a user meets them: a bad option is one line and status 2
before anything runs, Ctrl-C stops a benchmark. Tiny inputs only; no JACK, no data sets built by a recipe."""
import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import BENCHMARKS
from realtime.run.batch import LOG_NAME

ROOT = Path(__file__).resolve().parent.parent


def run(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def parse_error(name: str, argv: list[str], capsys) -> str:
    """The one error line the benchmark's parser gives for ``argv`` (argparse's status 2)."""
    parser = importlib.import_module(BENCHMARKS[name][0]).get_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("name,argv,said", [
    ("processor", ["--seconds", "0"], "--seconds: must be > 0, got 0"),
    ("processor", ["--seconds", "-1"], "--seconds: must be > 0"),
    ("processor", ["--blocksize", "0"], "--blocksize: must be > 0"),
    ("processor", ["--seconds", "nan"], "--seconds: must be > 0"),
    ("jitter", ["--seconds", "0"], "--seconds: must be > 0"),
    ("jitter", ["--blocksize", "0"], "--blocksize: must be > 0"),
    ("jitter", ["--work-ms", "-1"], "--work-ms: must be > 0"),
    ("engine", ["--seconds", "0"], "--seconds: must be > 0"),
    ("engine", ["--blocksize", "0"], "--blocksize: must be > 0"),
    ("engine", ["--prefill-blocks", "0"], "--prefill-blocks: must be > 0"),
    ("gui", ["--blocksize", "0"], "--blocksize: must be > 0"),
    ("gui", ["--move-hz", "0"], "--move-hz: must be > 0"),
    ("loader", ["--examples", "0"], "--examples: must be > 0"),
    ("loader", ["--batch", "1.5"], "--batch: expected a whole number, got '1.5'"),
    ("synth", ["--seconds", "0"], "--seconds: must be > 0"),
    ("batch", ["--files", "0"], "--files: must be > 0"),
    ("batch", ["--workers", "1,0"], "--workers: must be > 0"),
    ("delimiter", ["--tracks", "0"], "--tracks: must be > 0"),
    ("enhancer", ["--limit", "-1"], "--limit: must be >= 0"),
    ("enhancer", ["--skip", "-1"], "--skip: must be >= 0"),
    ("enhancer", ["--block", "0"], "--block: must be > 0"),
])
def test_numbers_out_of_range_are_refused_by_the_parser(name, argv, said, capsys):
    """Finding 6 (and 2's --limit / --block): these were tracebacks (ZeroDivisionError, ValueError,
    IndexError) somewhere in the run."""
    assert said in parse_error(name, argv, capsys)


def test_delimiter_targets_must_be_numbers(capsys):
    assert "--targets: expected comma-separated numbers, got 'abc'" in parse_error("delimiter", ["--targets", "abc"],
                                                                                  capsys)
    a = importlib.import_module("bench.delimiter").get_parser().parse_args(["--targets=-6,-8.5"])
    assert a.targets == [-6.0, -8.5]


def test_batch_workloads_are_choices(capsys):
    line = parse_error("batch", ["--what", "voice,nosuch"], capsys)
    assert "--what: unknown 'nosuch'; one of: voice, voice-streams" in line
    assert "unknown 'x'" in parse_error("batch", ["--streams-of", "x"], capsys)
    a = importlib.import_module("bench.batch").get_parser().parse_args([])
    assert a.workers == [1, 2] and a.streams_n == [1, 8, 32] and a.what[0] == "voice"


def test_synth_refuses_an_unknown_instrument_naming_those_there_are(capsys):
    line = parse_error("synth", ["--instruments", "nosuch"], capsys)
    assert "--instruments: unknown 'nosuch'; one of: violin, flute, trumpet" in line


@pytest.mark.parametrize("args,said", [
    (["processor", "gain", "--seconds", "0"], "error: argument --seconds: must be > 0, got 0"),
    (["delimiter", "--targets", "abc"], "error: argument --targets:"),
    (["batch", "--what", "nosuch"], "error: argument --what: unknown 'nosuch'"),
])
def test_main_py_bench_gives_the_parsers_refusal(args, said):
    """`main.py bench NAME …` hands the rest of the line to the benchmark's own parser: one line."""
    r = run("bench", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr and not r.stdout
    assert r.stderr.startswith(said) and r.stderr.count("\n") == 1, r.stderr


@pytest.fixture
def enhancer_data(tmp_path):
    """One set (``in_source``) of one short clip, as the recipe lays it out."""
    x = (0.1 * np.random.default_rng(0).standard_normal(4800)).astype(np.float32)
    for kind in ("noisy", "clean"):
        (tmp_path / "in_source" / kind).mkdir(parents=True)
        sf.write(tmp_path / "in_source" / kind / "a.wav", x, 48000)
    return tmp_path


def enhancer_refusal(argv) -> str:
    from bench.enhancer import main

    with pytest.raises(SystemExit) as e:  # said by main.py / run_cli as `error: …`, status 2
        main([*argv, "--no-dnsmos", "--no-rnnoise", "--no-dfn", "--clean-clips", "0"])
    assert isinstance(e.value.code, str)
    return e.value.code


def test_enhancer_names_the_sets_there_are(enhancer_data):
    said = enhancer_refusal(["--data", str(enhancer_data), "--sets", "nosuch"])
    assert said == f"--sets: no set nosuch in {enhancer_data}; there: in_source"
    assert "no sets in" in enhancer_refusal(["--data", str(enhancer_data / "none"), "--sets", "x"])


def test_enhancer_by_default_runs_the_sets_that_are_built(enhancer_data, capsys):
    """`bench enhancer --json`, the README's command, refused a checkout without the training
    packages: in_source, the default's first set, is built only by the full recipe."""
    from bench.enhancer import set_names

    (enhancer_data / "in_source").rename(enhancer_data / "out_of_source")
    assert set_names(enhancer_data, None) == ["out_of_source"]
    err = capsys.readouterr().err
    assert err.startswith("bench enhancer: no in_source set in") and err.count("\n") == 1, err
    assert set_names(enhancer_data, ["out_of_source"]) == ["out_of_source"] and capsys.readouterr().err == ""


def test_enhancer_refuses_sets_that_name_none(capsys):
    assert "--sets: names nothing: ','" in parse_error("enhancer", ["--sets", ","], capsys)


def test_enhancer_skip_past_the_end_is_refused(enhancer_data):
    said = enhancer_refusal(["--data", str(enhancer_data), "--sets", "in_source", "--skip", "1"])
    assert said.startswith("--skip 1 leaves none of the 1 clips in")


def test_python_m_bench_enhancer_says_a_bad_model_in_one_line(tmp_path):
    """Finding 7: a ModelError was a traceback under `python -m`."""
    model = tmp_path / "text.pt"
    model.write_text("not a model")
    r = subprocess.run([sys.executable, "-m", "bench.enhancer", "--model", str(model)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "text.pt" in lines[0]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # runpy: the module is imported already
@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_benchmark_module_runs_through_run_cli(name, monkeypatch):
    """`python -m bench.NAME` says user errors and Ctrl-C as main.py does. run_cli is stood in for, so no
    benchmark runs (an entry point that calls main() directly gets --help and prints it)."""
    import realtime.errors

    called = []
    monkeypatch.setattr(realtime.errors, "run_cli", lambda main, argv=None: called.append(main) or 0)
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as e:
        runpy.run_module(BENCHMARKS[name][0], run_name="__main__")
    assert e.value.code == 0 and len(called) == 1 and called[0].__name__ == "main"


def test_bench_batch_stops_on_ctrl_c_and_removes_its_folder(tmp_path):
    """Finding 1: Ctrl-C during a pass printed that pass's record as if whole, ran the next worker count
    and exited 0."""
    p = subprocess.Popen([sys.executable, "main.py", "bench", "batch", "--files", "2", "--seconds", "2", "--what",
                          "voice", "--workers", "1,2", "--streams-n", "", "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        log = f"bench-batch-*/voice/out1/{LOG_NAME}"  # the first file's record: run_batch, mid-pass, has Ctrl-C
        deadline = time.time() + 60
        while time.time() < deadline and p.poll() is None and not list(tmp_path.glob(log)):
            time.sleep(0.01)
        p.send_signal(signal.SIGINT)  # run_batch finishes the file in flight, then says it was interrupted
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert not [json.loads(line) for line in out.splitlines()]  # no record of a cut-short pass, no second pass
    assert not list(tmp_path.glob("bench-batch-*"))


def test_a_processor_asked_for_by_name_that_cannot_be_made_fails_the_command(capsys):
    """`bench processor nosuchproc` printed its error record and exited 0; the others named still run."""
    from bench import processor

    assert processor.main(["nosuchproc", "gain", "--seconds", "0.1"]) == 2
    out, err = capsys.readouterr()
    assert "name=gain" in out and "rtf=" in out
    assert err.startswith("error: bench processor: nosuchproc: unknown processor 'nosuchproc'")
    assert err.count("\n") == 1
