"""Load an exported enhancer ONNX file's weights back into the torch ``Enhancer`` (training only).

The torch checkpoints of a run can be lost while its export survives; ``train --init-onnx`` starts
from the export instead. ``torch.onnx.export(dynamo=False)`` keeps the names of biases and buffers
but renames weights: a ``Linear`` becomes ``/<module>/MatMul`` with its weight transposed
(``onnx::MatMul_N`` [in, out]), a ``GRU`` layer becomes ``/<module>/GRU[_k]`` with
W [1, 3H, in], R [1, 3H, H], B [1, 6H] (input then recurrent biases), gates in ONNX order
z, r, h where torch stores r, z, n; ``linear_before_reset=1`` is torch's GRU cell.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _zr_swap(w: np.ndarray, hidden: int) -> np.ndarray:
    """ONNX gate blocks (z, r, h) along axis 0 -> torch's (r, z, n)."""
    z, r, h = w[:hidden], w[hidden : 2 * hidden], w[2 * hidden :]
    return np.concatenate([r, z, h], axis=0)


def onnx_state_dict(m) -> dict[str, np.ndarray]:
    """The torch ``state_dict`` (parameter and buffer name -> array) held by an exported ONNX model
    (an ``onnx.ModelProto``).

    Raises
    ------
    ValueError
        A weight-carrying node of the graph is not a Linear or GRU of the export's form.
    """
    from onnx import numpy_helper

    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    sd: dict[str, np.ndarray] = {k: v for k, v in inits.items() if not k.startswith("onnx::")}
    gru_layers: dict[str, int] = {}
    for node in g.node:  # graph order = layer order within one nn.GRU
        used = [i for i in node.input if i.startswith("onnx::") and i in inits]
        if not used:
            continue
        module = node.name.strip("/").split("/")[0]
        if node.op_type == "MatMul" and len(used) == 1:
            sd[f"{module}.weight"] = inits[used[0]].T.copy()
        elif node.op_type == "GRU":
            attrs = {a.name: a for a in node.attribute}
            if attrs.get("linear_before_reset") is None or attrs["linear_before_reset"].i != 1:
                raise ValueError(f"{node.name}: GRU without linear_before_reset=1 is not torch's GRU")
            hidden = attrs["hidden_size"].i
            k = gru_layers.get(module, 0)
            gru_layers[module] = k + 1
            w, r, b = (inits[node.input[i]][0] for i in (1, 2, 3))
            sd[f"{module}.weight_ih_l{k}"] = _zr_swap(w, hidden)
            sd[f"{module}.weight_hh_l{k}"] = _zr_swap(r, hidden)
            sd[f"{module}.bias_ih_l{k}"] = _zr_swap(b[: 3 * hidden], hidden)
            sd[f"{module}.bias_hh_l{k}"] = _zr_swap(b[3 * hidden :], hidden)
        else:
            raise ValueError(f"{node.name}: unexpected weight-carrying {node.op_type} node")
    start = {p.key: p.value for p in m.metadata_props}.get("h_enc_start")
    if start is not None:  # a trained start state (``Enhancer.start_metadata``): [2 layers, 1, hidden]
        sd["h_start"] = np.array([float(x) for x in start.split(",")], np.float32).reshape(2, 1, -1)
    return sd


def load_onnx_weights(model, path: str | Path) -> None:
    """Copy an exported ONNX file's weights into ``model`` (an ``Enhancer`` of the same sizes); the
    model takes the export's ``df_gate`` too (metadata; exports older than it have none: off), since
    the weights were trained for that graph. A model without the deep filter takes the band-gain
    weights of an export that has one (as ``train --init`` does).

    Raises
    ------
    ValueError
        The file lacks a tensor of the model, has one the model lacks, or a shape differs (another
        ``--hidden`` / ``--hidden-df``, or an export without the deep filter for a model with one).
    """
    import onnx
    import torch

    from models.enhancer.model import fit_weights

    m = onnx.load(str(path))  # once: weights and metadata
    sd = fit_weights(onnx_state_dict(m), model)
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in want.items()
             if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or extra or wrong:
        raise ValueError(f"{path}: does not match the model (missing {missing}, extra {extra}, "
                         f"shapes {wrong}); check --hidden / --hidden-df / --no-deep-filter / --pitch-features")
    model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in sd.items()})
    model.df_gate = {p.key: p.value for p in m.metadata_props}.get("df_gate", "0") == "1"
