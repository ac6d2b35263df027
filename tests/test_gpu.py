"""Where an NVIDIA GPU is present: every model runs on ONNX Runtime's CUDA provider and matches the
CPU. Elsewhere these tests skip and say why (no GPU in CI or on the development machines)."""
import numpy as np
import pytest


def _cuda_reason() -> str | None:
    """None when a CUDA session can really be created, else why not."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        return f"onnxruntime not importable: {e}"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"this onnxruntime has no CUDA provider ({ort.get_available_providers()}): install the gpu extra"
    from realtime.dsp.processors.neural.onnx import StatefulSession
    from realtime.dsp.processors.neural.weights import model_file

    s = StatefulSession(model_file("enhancer", "enhancer.onnx"), "probe", provider="auto")
    if s.provider != "CUDAExecutionProvider":
        return f"the CUDA provider did not start (no GPU or no CUDA/cuDNN libraries): running on {s.provider}"
    return None


REASON = _cuda_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.mark.parametrize("kind", ["enhancer", "delimiter", "synth"])
def test_each_model_runs_on_cuda_and_matches_the_cpu(kind):
    from realtime.dsp.processors import processor_class

    cls = processor_class(kind)
    rng = np.random.default_rng(0)
    x = (0.2 * rng.standard_normal((48000, 2))).astype(np.float32)
    outs = {}
    for provider in ("cpu", "cuda"):
        p = cls(provider=provider)
        p.prepare(48000, 480, 2)
        if kind == "synth":
            p.handle_midi(0x90, 69, 100, 0)
        y = x.copy() if kind != "synth" else np.zeros_like(x)
        for k in range(0, len(y), 480):
            p.process(y[k:k + 480])
        outs[provider] = y
        sessions = [p.session] if hasattr(p, "session") else [i.session for i in p.instruments.values()]
        assert {s.provider for s in sessions} == {"CPUExecutionProvider" if provider == "cpu"
                                                  else "CUDAExecutionProvider"}
    np.testing.assert_allclose(outs["cuda"], outs["cpu"], atol=1e-4)
