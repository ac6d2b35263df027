"""ONNX Runtime sessions for the neural processors: provider choice and clear model errors.

One place decides the execution provider (CUDA/TensorRT when onnxruntime-gpu sees a GPU, CPU
otherwise) and turns a missing, corrupt or mis-shaped model file into a ``ModelError`` that names
the file, so every processor reports the same way.
"""
from __future__ import annotations

from pathlib import Path

from realtime.errors import ModelError

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
              "tensorrt": "TensorrtExecutionProvider"}


def choose_providers(want: str, available: list[str], what: str = "model") -> list[str]:
    """Provider list for ``want`` in auto/cpu/cuda/tensorrt; CPU always last as the fallback."""
    want = (want or "auto").lower()
    if want == "auto":
        order = [p for p in ("CUDAExecutionProvider",) if p in available]
    elif want in _PROVIDERS:
        if _PROVIDERS[want] not in available:
            raise ModelError(f"{what}: provider {want!r} not available (have {available})")
        order = [_PROVIDERS[want]] if want != "cpu" else []
        if want == "tensorrt" and "CUDAExecutionProvider" in available:
            order.append("CUDAExecutionProvider")
    else:
        raise ModelError(f"{what}: unknown provider {want!r}; use auto, cpu, cuda or tensorrt")
    return order + ["CPUExecutionProvider"]


def load_session(path, provider: str = "auto", threads: int = 1, what: str = "model",
                 required_inputs: tuple[str, ...] | None = None, train_hint: str = ""):
    """An InferenceSession tuned for one stream (single thread, no spinning pool).

    Raises ModelError naming ``path`` when it is missing, not ONNX, or its inputs differ from
    ``required_inputs``. Returns (session, metadata dict).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        hint = f" (train it with `{train_hint}`)" if train_hint else ""
        raise ModelError(f"{what} model not found: {path}{hint}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)  # one core per stream: predictable, no spinning pool
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    providers = choose_providers(provider, ort.get_available_providers(), what)
    try:
        sess = ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:  # onnxruntime raises several types for unreadable files
        raise ModelError(f"{what} model {path} is corrupt or not a valid ONNX model: {e}") from None
    names = tuple(i.name for i in sess.get_inputs())
    if required_inputs is not None and names != tuple(required_inputs):
        raise ModelError(f"{what} model {path} has inputs {list(names)}, expected {list(required_inputs)}")
    return sess, dict(sess.get_modelmeta().custom_metadata_map)
