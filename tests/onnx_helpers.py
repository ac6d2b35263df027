"""Tiny ONNX graphs for the runtime's load-time checks: each output an Identity of an input."""
from __future__ import annotations

from pathlib import Path


def identity_model(path: Path, inputs: dict[str, list], pairs: list[tuple[str, str]], meta: dict[str, str]) -> Path:
    """Write a model with float inputs ``inputs`` (name -> shape), outputs ``pairs`` (input name,
    output name: the output is the input, same shape) and metadata ``meta``; returns ``path``."""
    from onnx import TensorProto, helper

    def io(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    nodes = [helper.make_node("Identity", [a], [b]) for a, b in pairs]
    return graph_model(path, nodes, [io(k, v) for k, v in inputs.items()], [io(b, inputs[a]) for a, b in pairs], meta)


def graph_model(path: Path, nodes, inputs, outputs, meta: dict[str, str], inits=()) -> Path:
    """Write a model of ``nodes`` (onnx.helper nodes) with value infos ``inputs`` / ``outputs``,
    initializers ``inits`` and metadata ``meta``; returns ``path``."""
    from onnx import helper, save

    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    save(m, path)
    return path
