"""A trained start state: the enhancer's encoder state at a stream's start can be learnt
(``train --learn-start``), is exported in the model's metadata (``h_enc_start``) and is where the
runtime starts every stream, resets, and goes back to after a numerical blow-up."""
from __future__ import annotations

import numpy as np
import pytest

from realtime.dsp.processors.neural.enhancer import Enhancer
from realtime.errors import ModelError


def _export_with_start(tmp_path, hidden=16, seed=3):
    torch = pytest.importorskip("torch", reason="training extra not installed")
    pytest.importorskip("onnx")
    from models.enhancer.model import Enhancer as Net
    from models.enhancer.model import export_onnx

    net = Net(hidden=hidden, pitch_features=True, learn_start=True).eval()
    with torch.no_grad():
        net.h_start.copy_(torch.randn(2, 1, hidden, generator=torch.Generator().manual_seed(seed)) * 0.5)
    path = tmp_path / "start.onnx"
    export_onnx(net, path)
    return net, path


def test_the_start_state_is_exported_and_every_stream_starts_there(tmp_path):
    net, path = _export_with_start(tmp_path)
    want = net.h_start.detach().numpy()
    e = Enhancer(model_path=path)
    e.prepare(48000, 256, 2)
    np.testing.assert_allclose(e.session.state["h_enc"], np.broadcast_to(want, (2, 2, 16)), rtol=1e-6)
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((48000, 2))).astype(np.float32)
    outs = []
    for _ in range(2):
        y = np.zeros_like(x)
        for s in range(0, len(x), 256):
            blk = x[s:s + 256].copy()
            e.process(blk)
            y[s:s + 256] = blk
        assert not np.allclose(e.session.state["h_enc"], want)  # the network moved on from its start
        outs.append(y)
        e.reset()
        np.testing.assert_allclose(e.session.state["h_enc"], np.broadcast_to(want, (2, 2, 16)), rtol=1e-6)
    assert np.array_equal(outs[0], outs[1])  # a reset is the same start again


def test_a_blow_up_goes_back_to_the_start_state_in_its_own_slot_only(tmp_path):
    net, path = _export_with_start(tmp_path)
    want = net.h_start.detach().numpy()[:, 0]
    e = Enhancer(model_path=path)
    e.prepare(48000, 256, 2)
    st = e.session.state["h_enc"]
    st[:, 1] = 0.25
    st[0, 0, 3] = np.nan
    e.session.contain_state(slice(0, 1))
    np.testing.assert_allclose(st[:, 0], want, rtol=1e-6)
    assert np.all(st[:, 1] == 0.25)


def test_the_start_state_loads_back_into_the_torch_model(tmp_path):
    net, path = _export_with_start(tmp_path)
    from models.enhancer.model import Enhancer as Net
    from models.enhancer.onnx_weights import load_onnx_weights
    from models.enhancer.train import _onnx_facts

    assert _onnx_facts(path)["learn_start"]
    back = Net(hidden=16, pitch_features=True, learn_start=True)
    load_onnx_weights(back, path)
    np.testing.assert_allclose(back.h_start.detach().numpy(), net.h_start.detach().numpy(), rtol=1e-6)
    plain = Net(hidden=16, pitch_features=True)  # weights without a start start at zero; a start is never half-loaded
    load_onnx_weights(plain, path)
    assert not hasattr(plain, "h_start")


def test_train_only_start_moves_the_start_state_and_no_weight(tmp_path):
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.enhancer.train import main

    ck = tmp_path / "a"
    assert main(["--smoke", "--hidden", "16", "--steps", "2", "--ckpt", str(ck), "--export", str(tmp_path / "a.onnx")]) == 0
    out = tmp_path / "b.onnx"
    assert main(["--smoke", "--init", str(ck / "last.pt"), "--learn-start", "--train-only", "start",
                 "--lr", "0.05", "--steps", "6", "--ckpt", str(tmp_path / "b"), "--export", str(out)]) == 0
    before = torch.load(ck / "last.pt", weights_only=False)["model"]
    after = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    assert set(after) - set(before) == {"h_start"}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert float(after["h_start"].abs().max()) > 0.01
    # a run that starts from a learnt start keeps it without the flag
    assert main(["--smoke", "--init", str(tmp_path / "b" / "last.pt"), "--steps", "1", "--ckpt", str(tmp_path / "c"),
                 "--export", str(tmp_path / "c.onnx")]) == 0
    assert "h_start" in torch.load(tmp_path / "c" / "last.pt", weights_only=False)["model"]
    with pytest.raises(SystemExit, match="needs --learn-start"):
        main(["--smoke", "--train-only", "start", "--no-learn-start", "--ckpt", str(tmp_path / "d")])


@pytest.mark.parametrize("value", ["1,2,x", "0.5", "nan," * 63 + "nan"])
def test_a_broken_start_state_is_a_one_line_error(tmp_path, value):
    pytest.importorskip("onnx")
    from .onnx_helpers import identity_model

    identity_model(tmp_path / "bad.onnx", {"spec": ["T", "B", 241, 2], "h_enc": [2, "B", 32]},
                   [("spec", "enh"), ("h_enc", "h_enc_out")],
                   {"sample_rate": "48000", "win": "480", "hop": "240", "h_enc_start": value})
    with pytest.raises(ModelError, match=r"bad\.onnx has a broken h_enc_start in its metadata \(64 finite numbers"):
        Enhancer(model_path=tmp_path / "bad.onnx")


def test_the_start_state_goes_to_the_grus_contiguous_whatever_the_batch():
    """cuDNN's GRU takes a contiguous initial state only (an expanded view fails on the GPU)."""
    pytest.importorskip("torch", reason="training extra not installed")
    from models.enhancer.model import Enhancer as Net

    net = Net(hidden=16, pitch_features=True, learn_start=True)
    for b in (1, 5):
        h, = net.init_state(b)
        assert h.shape == (2, b, 16) and h.is_contiguous() and h.requires_grad


def test_a_resumed_run_keeps_its_trained_set_and_says_so_when_told_otherwise(tmp_path):
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.enhancer.train import main

    ck = tmp_path / "a"
    assert main(["--smoke", "--hidden", "16", "--steps", "2", "--ckpt", str(ck), "--export", str(tmp_path / "a.onnx")]) == 0
    run = tmp_path / "b"
    assert main(["--smoke", "--init", str(ck / "last.pt"), "--learn-start", "--train-only", "start", "--steps", "2",
                 "--ckpt", str(run), "--export", str(tmp_path / "b.onnx")]) == 0
    w = torch.load(run / "last.pt", weights_only=False)["model"]
    assert main(["--smoke", "--resume", "--steps", "4", "--ckpt", str(run), "--export", str(tmp_path / "b.onnx")]) == 0
    again = torch.load(run / "last.pt", weights_only=False)
    assert again["step"] == 4 and again["train_only"] == "start"
    assert all(torch.equal(w[k], again["model"][k]) for k in w if k != "h_start")  # still only the start learns
    with pytest.raises(SystemExit, match="trained with --train-only start"):
        main(["--smoke", "--resume", "--train-only", "all", "--steps", "6", "--ckpt", str(run)])
    with pytest.raises(SystemExit, match="trained with --learn-start"):
        main(["--smoke", "--resume", "--no-learn-start", "--steps", "6", "--ckpt", str(run)])
