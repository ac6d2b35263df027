"""Every processor kind's code is loaded before the stream first plays (realtime/dsp/processors/warm.py),
so the first enhancer a user adds to a playing chain finds its modules, ONNX Runtime and Numba
kernels loaded instead of stalling the DSP thread while they load."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from realtime.dsp.processor import Processor
from realtime.dsp.processors import REGISTRY, register
from realtime.dsp.processors.warm import warm_up_kinds

ROOT = Path(__file__).resolve().parents[1]


def test_after_the_warm_up_a_new_processor_of_any_kind_loads_nothing():
    code = """
import sys
import numpy as np
from realtime.dsp.processors import available_kinds, processor_class
from realtime.dsp.processors.warm import warm_up_kinds
assert warm_up_kinds(48000, 128, 2) == {}
loaded = set(sys.modules)
for kind in available_kinds():
    p = processor_class(kind)()
    p.prepare(48000, 128, 2)
    p.process(np.zeros((128, 2), np.float32))
    p.close()
new = sorted(set(sys.modules) - loaded)
assert not new, new
assert {"onnxruntime", "realtime.dsp.processors.neural.enhancer", "realtime.dsp.processors.synth.processor"} <= loaded
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=600)


class _Broken(Processor):
    kind = "test_broken_warm"
    params = ()

    def _prepare(self) -> None:
        raise RuntimeError("no model here")

    def process(self, block: np.ndarray) -> None:
        pass


def test_a_kind_that_cannot_be_warmed_is_reported_not_raised():
    register(_Broken)
    try:
        failed = warm_up_kinds(48000, 64, 1, kinds=["gain", "test_broken_warm"])
    finally:
        REGISTRY.pop("test_broken_warm", None)
    assert list(failed) == ["test_broken_warm"] and "no model here" in failed["test_broken_warm"]


def test_the_panels_engine_process_loads_the_neural_kinds_before_it_plays():
    """Preset ``default`` holds no neural slot; its engine process has ONNX Runtime loaded anyway
    (its shared library mapped) once it answers a command that builds or starts."""
    from gui.remote import RemoteEngineHost
    from realtime.dsp.presets import load_preset
    from realtime.engine.config import EngineConfig

    h = RemoteEngineHost(load_preset("default"), EngineConfig())
    try:
        h.to_preset()  # waits for the warm-up, as a start would
        maps = Path(f"/proc/{h._proc.pid}/maps").read_text()
        assert "onnxruntime" in maps
    finally:
        h.close()


def test_a_stop_leaves_the_kinds_not_begun_cold():
    import threading

    register(_Broken)
    stop = threading.Event()
    stop.set()
    try:
        assert warm_up_kinds(48000, 64, 1, kinds=["test_broken_warm"], stop=stop) == {}  # never built
    finally:
        REGISTRY.pop("test_broken_warm", None)


def test_the_engine_process_says_which_kinds_it_could_not_load_and_warms_again_for_new_settings(capfd):
    """A kind that fails its warm-up is one line on the engine process's stderr (its first slot may
    stall the stream); new audio settings warm every kind again at the new rate (its own Numba
    kernels: the resamplers at 44.1 kHz), before the engine starts with them."""
    from gui.remote import RemoteEngineHost
    from realtime.dsp.presets import load_preset
    from realtime.engine.config import EngineConfig

    h = RemoteEngineHost(load_preset("default"), EngineConfig(), plugins=("tests.gui_slowbuild",))
    try:
        h.to_preset()
        line = "engine: failbuild not loaded ahead (RuntimeError: failbuild: this plugin never builds)"
        assert capfd.readouterr().err.count(line) == 1
        h.set_config(EngineConfig(samplerate=44100))
        assert capfd.readouterr().err.count(line) == 1
        assert h.config.samplerate == 44100
    finally:
        h.close()
