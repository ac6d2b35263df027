"""The house rules, as tests: the runtime's arrows point down.

Each check runs in a fresh interpreter and looks at what got imported, so a stray import anywhere
in the runtime (even one loaded by a string) fails here.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# never loaded by the runtime: the GUI, Qt, torch, training code, benchmarks
FORBIDDEN = ("gui", "PyQt6", "torch", "models", "bench")


def _modules_after(code: str) -> list[str]:
    """Names in sys.modules after running ``code`` in a fresh interpreter at the repo root."""
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _forbidden(mods: list[str]) -> list[str]:
    return [m for m in mods if m.split(".")[0] in FORBIDDEN]


def test_all_of_the_runtime_loads_nothing_above_it():
    mods = _modules_after(
        "import importlib, pkgutil, realtime\n"
        "for m in pkgutil.walk_packages(realtime.__path__, 'realtime.'):\n"
        "    importlib.import_module(m.name)\n")
    assert "realtime.engine.engine" in mods and "realtime.dsp.processors.neural.enhancer" in mods  # it did walk
    assert not _forbidden(mods), _forbidden(mods)


def test_a_processor_runs_without_the_engine_portaudio_or_anything_above():
    """Building and running a neural processor (its model found through the resolver) must not pull
    in the live engine, its compiled callback or PortAudio, let alone the GUI or training code."""
    mods = _modules_after(
        "import numpy as np\n"
        "from realtime.dsp.processors import create\n"
        "p = create('enhancer'); p.prepare(48000, 128, 2)\n"
        "b = np.zeros((128, 2), np.float32); p.process(b)\n")
    assert "realtime.dsp.processors.neural.enhancer" in mods
    assert not _forbidden(mods), _forbidden(mods)
    pulled = [m for m in ("realtime.engine.engine", "realtime.engine.callback", "sounddevice") if m in mods]
    assert not pulled, pulled


def test_errors_is_a_leaf():
    mods = _modules_after("import realtime.errors")
    assert [m for m in mods if m.startswith("realtime")] == ["realtime", "realtime.errors"]


def test_listing_presets_loads_no_numba_and_main_no_gui():
    mods = _modules_after("import main\nmain.main(['presets'])")
    assert "numba" not in mods and "realtime.dsp.chain" not in mods
    # main.py imports nothing of the GUI, Qt, torch or training; of bench/ only the registry (for --help)
    above = [m for m in _forbidden(mods) if m != "bench"]
    assert not above, above
