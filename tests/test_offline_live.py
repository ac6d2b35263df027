"""The offline runner and the live engine run the same processor code: same input through
JACK and through a file gives the same output, sample for sample, after latency alignment."""
import time

import numpy as np
import pytest
import soundfile as sf

from realtime.engine import Engine, EngineConfig
from realtime.live import DEMO_SIGNAL
from realtime.offline import process_file
from realtime.presets import build_chain, load_preset

from .jack_helpers import Rig, lag_of

pytestmark = pytest.mark.jack


@pytest.mark.parametrize("preset", ["default", "master"])
def test_offline_output_equals_live_output(jack_server, tmp_path, preset):
    x, sr = sf.read(str(DEMO_SIGNAL), dtype="float32", always_2d=True, frames=48000)
    x = np.ascontiguousarray(x)
    x[0] = 0.9  # marker so the alignment is unambiguous
    # a block the engine itself reports late (or a server xrun) replaces audio by the underrun
    # policy, so no take with one can match sample for sample; such a take is repeated, after a
    # pause (CI's 2-core machine had one in a 1 s take, and once three in a row within seconds:
    # a burst of machine noise). A glitch the engine did not report still fails.
    glitched = []
    for _attempt in range(5):
        with Engine(build_chain(load_preset(preset)), EngineConfig(blocksize=128)) as eng, Rig() as rig:
            live = rig.take(x, tail=8192)
            prefill = eng.latency()["prefill_frames"]
            stats = eng.stats()
        if stats["late_blocks"] == 0 and stats["server_xruns"] == 0:
            break
        glitched.append({k: stats[k] for k in ("late_blocks", "late_blocks_ours", "server_xruns")})
        time.sleep(1.0)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, sr, subtype="FLOAT")
    process_file(src, dst, build_chain(load_preset(preset)), samplerate=48000, blocksize=128,
                 progress=False, compensate_latency=False)
    offline, _ = sf.read(dst, dtype="float32", always_2d=True)
    lag = lag_of(offline, live)
    # both outputs carry the chain latency; live adds the pre-fill, plus one JACK period for each of
    # the two hops (player -> engine -> recorder) that JACK's graph order puts after its consumer
    assert lag - prefill in (0, 128, 256)
    np.testing.assert_allclose(live[lag: lag + len(x)], offline, atol=1e-6, rtol=0,
                               err_msg=f"{stats}; glitched takes before: {glitched}")
