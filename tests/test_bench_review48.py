"""Benchmarks (review 48): sizes capped, a steady figure only where there is one, a running JACK
server at another period refused, a failed synth record failing the command."""
from __future__ import annotations

import json

import pytest

from .test_bench_cli import parse_error


@pytest.mark.parametrize("name,argv,said", [
    ("batch", ["--seconds", "1e9"], "--seconds: must be at most 3600"),  # a MemoryError traceback (or GBs in /tmp)
    ("batch", ["--files", "100000000"], "--files: must be at most 10000"),
    ("delimiter", ["--blocksize", "100000000000"], "--blocksize: must be at most 65536"),
    ("delimiter", ["--seconds", "1e9"], "--seconds: must be at most 600"),
    ("enhancer", ["--block", "100000000000"], "--block: must be at most 65536"),
    ("synth", ["--seconds", "1e15"], "--seconds: must be at most 3600"),
    ("jitter", ["--work-ms", "2.5"], "--work-ms: must be at most 1.5"),  # every iteration counted "over 2 ms"
])
def test_sizes_no_run_can_take_are_refused_by_the_parser(name, argv, said, capsys):
    assert said in parse_error(name, argv, capsys)


def test_a_worker_that_ran_one_unit_has_no_steady_figure(tmp_path):
    """Counted whole, its one file's model loading made two workers look 20x slower than one."""
    from bench.batch import _steady

    def log(rows):
        p = tmp_path / "log.jsonl"
        p.write_text("".join(json.dumps({"pid": pid, "finished": t, "audio_s": 2.0, "wall_s": w}) + "\n"
                             for pid, t, w in rows))
        return p

    assert _steady(log([(1, 1.0, 5.0), (1, 2.0, 0.1), (2, 1.5, 5.0), (2, 2.5, 0.1)])) == pytest.approx(40.0)
    steady = _steady(log([(1, 1.0, 5.0), (2, 1.5, 5.0), (2, 2.5, 0.1)]))
    assert steady != steady  # NaN: null in the JSON


def test_a_synth_record_that_failed_fails_the_command(tmp_path, monkeypatch, capsys):
    from bench import synth

    def broken(*a, **k):  # (as a missing model or tool fails it)
        raise FileNotFoundError("model not found: violin.onnx")

    monkeypatch.setattr(synth, "bench_rtf", broken)
    assert synth.main(["--instruments", "violin", "--skip", "latency,quality", "--seconds", "0.1", "--json"]) == 2
    out, err = capsys.readouterr()
    assert '"error"' in out and err.startswith("error: bench synth: violin:") and err.count("\n") == 1


def test_a_running_server_at_another_period_is_refused_not_measured_at_its_period(jack_server):
    """With a server already running at 128 frames, `bench engine --blocksize 1024` measured at 128
    and printed "blocksize": 1024."""
    from bench.common import jack_server_at
    from realtime.errors import AudioDeviceError

    with pytest.raises(AudioDeviceError, match="already runs at a period of 128 frames: --blocksize 1024"):
        jack_server_at(48000, 1024)
    assert jack_server_at(48000, 128) is None  # the running one, at its period: used
