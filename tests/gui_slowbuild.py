"""Processors that are slow to build or fail to (a plugin instantiated, a model loaded), imported
by the engine process as a plugin: a structural change must build them while the old chain plays."""
import time

from realtime.dsp.processor import Processor
from realtime.dsp.processors import REGISTRY, register

BUILD_S = 0.8  # (tests/test_remote_structure_live.py's too)


class SlowBuild(Processor):
    kind = "slowbuild"
    params = ()

    def __init__(self, **values):
        time.sleep(BUILD_S)  # the GIL is free meanwhile, as in lilv's instantiate or an ONNX load
        super().__init__(**values)

    def process(self, block):
        pass


class FailBuild(Processor):
    kind = "failbuild"
    params = ()

    def __init__(self, **values):
        time.sleep(BUILD_S / 2)
        raise RuntimeError("failbuild: this plugin never builds")

    def process(self, block):
        pass


for _cls in (SlowBuild, FailBuild):
    if _cls.kind not in REGISTRY:
        register(_cls)
