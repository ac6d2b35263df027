"""`python main.py bench gui` runs end to end and prints its JSON line (figures are not asserted:
speed targets live in the benchmark's output, not in unit tests)."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("PyQt6")
pytestmark = pytest.mark.jack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_gui_prints_the_promised_fields():
    env = dict(os.environ, JACK_DEFAULT_SERVER="rtguibench", QT_QPA_PLATFORM="offscreen")  # its own server
    r = subprocess.run([sys.executable, "main.py", "bench", "gui", "--seconds", "3", "--add", "--json"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("bench", "seconds", "late_blocks", "server_xruns", "knob_moves", "param_latency_ms_p99"):
        assert key in rec
    assert rec["bench"] == "gui" and rec["mode"] == "engine-process" and rec["error"] is None
    assert rec["chain"] == ["hpf", "gain", "limiter", "meter", "safety"]  # --add with nothing: the preset alone
    assert rec["callbacks"] > 375 and rec["knob_moves"] > 20
    # "missed": not applied within 500 ms, a timing a loaded 2-core CI machine breaks now and then
    # (2 of 60 once); moves lost for good would be most of them
    assert rec["param_missed"] <= rec["knob_moves"] // 10 and 0 < rec["param_latency_ms_p50"] < 1000
    # the diagnostics: at most one explanation per late block that the server does not explain,
    # each put down to us or to the hypervisor; counters that only grow
    assert rec["late_blocks_ours"] + rec["late_blocks_stolen"] <= rec["late_blocks"]
    assert len(rec["late_context"]) == min(16, rec["late_blocks_ours"] + rec["late_blocks_stolen"])
    assert all({"blocks_in_window", "max_gap_ms", "slowest_block_ms", "slowest_block_cpu_ms",
                "slowest_block_switches", "stolen_ms", "cause"} <= set(c) for c in rec["late_context"])
    assert sum(c["cause"] == "stolen" for c in rec["late_context"]) <= rec["late_blocks_stolen"]
    assert rec["dsp_minor_faults"] >= 0 and rec["dsp_major_faults"] >= 0 and rec["cpu_steal_ms"] >= 0
