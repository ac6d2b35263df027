"""An exported ONNX graph checked against the torch module it came from, before it replaces anything:
a graph that computes something else (an op exported wrongly, a state output wired to the wrong
input) would otherwise ship and only show in a benchmark."""
from __future__ import annotations

import numpy as np


def check_parity(onnx_path, module, inputs: dict[str, np.ndarray], tolerance: float = 1e-4) -> float:
    """Run ``module`` (torch, eval mode, on the CPU) and the graph at ``onnx_path`` on ``inputs`` (its
    input names -> arrays, in the module's argument order) and compare every output; returns the
    largest difference, relative to each output's largest magnitude (at least 1).

    Raises
    ------
    RuntimeError
        An output differs by more than ``tolerance``.
    """
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, inputs)
    with torch.no_grad():
        ref = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()))
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    if len(got) != len(ref):
        raise RuntimeError(f"the ONNX export has {len(got)} outputs, torch's module {len(ref)}")
    worst = 0.0
    for name, g, r in zip((o.name for o in sess.get_outputs()), got, ref):
        r = r.detach().numpy()
        if g.shape != r.shape:
            raise RuntimeError(f"the ONNX export's {name} has shape {g.shape}, torch's {r.shape}")
        err = float(np.abs(g - r).max() / max(1.0, float(np.abs(r).max()))) if r.size else 0.0
        if not err <= tolerance:  # (a NaN too)
            raise RuntimeError(f"the ONNX export's {name} differs from torch's by {err:.3g} (at most {tolerance:g})")
        worst = max(worst, err)
    return worst
