"""Review 49 of the neural processors at run time: an optional DDSP decoder on another frame rate is
left out (it refused the whole synth), a de-limiter whose model state blows up starts afresh (it
stayed NaN for the rest of the stream, restoring nothing), and a huge block no longer binds and
warms up one de-limiter call shape per hop count, nor one synth decoder shape per frame count."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from realtime.dsp.processors.neural.batched_delimiter import BatchedDelimiter
from realtime.dsp.processors.neural.delimiter import MAX_CALL_SAMPLES, Delimiter
from realtime.dsp.processors.synth.processor import MODEL_DIR, Synth

from .onnx_helpers import graph_model

SR = 48000


def _run(p, x: np.ndarray, block: int) -> np.ndarray:
    y = x.copy()
    for s in range(0, len(y), block):
        p.process(y[s:s + block])
    return y


# ---------------------------------------------------------------------------------- finding 1
def _with_frame_rate(src, dst, rate: str) -> None:
    import onnx

    m = onnx.load(str(src))
    for p in m.metadata_props:
        if p.key == "frame_rate":
            p.value = rate
    onnx.save(m, str(dst))


@pytest.mark.parametrize("played", ["violin", "flute"])
def test_an_optional_decoder_on_another_frame_rate_is_left_out_not_the_synth(tmp_path, capfd, played):
    """A flute.onnx exported at 100 frames/s beside the 250 frames/s violin: the violin plays and
    the flute is left out with one warning, as an unreadable optional decoder is (the synth was
    refused: 'DDSP models disagree on the frame rate', a song that never needed the flute); with the
    flute played, the violin is the one left out."""
    shutil.copy(MODEL_DIR / "violin.onnx", tmp_path / "violin.onnx")
    _with_frame_rate(MODEL_DIR / "flute.onnx", tmp_path / "flute.onnx", "100")
    s = Synth(model_dir=tmp_path, instrument=played)
    s.prepare(SR, 256, 2)
    other = "violin" if played == "flute" else "flute"
    assert [i.name for i in s.instruments.values()] == [played]
    err = capfd.readouterr().err
    assert f"{other}.onnx has frame_rate" in err and f"a program change to the {other} is ignored" in err
    s.handle_midi(0x90, 69, 100, 0)
    y = _run(s, np.zeros((SR // 4, 2), np.float32), 256)
    assert np.isfinite(y).all() and np.abs(y).max() > 0.01
    assert s.hop == round(SR / (100 if played == "flute" else 250))


# ---------------------------------------------------------------------------------- finding 2
H = 128


def _blow_up_model(path):
    """A de-limiter-shaped model whose state goes NaN on finite input: s_out = s + sqrt(sum of the
    frames), so a stretch whose sum is negative makes it NaN, and NaN stays NaN; knots = 1 + 0 * s_out
    (a log gain of 1 while the state is finite, NaN once it is not)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([1, 2, 3], np.int64), "ax"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1"),
             numpy_helper.from_array(np.float32(0.0), "zero"), numpy_helper.from_array(np.float32(1.0), "one")]
    nodes = [helper.make_node("ReduceSum", ["frames", "ax"], ["sum"], keepdims=0),
             helper.make_node("Unsqueeze", ["sum", "ax1"], ["sum2"]),
             helper.make_node("Sqrt", ["sum2"], ["root"]),
             helper.make_node("Add", ["s", "root"], ["s_out"]),
             helper.make_node("ReduceMean", ["frames"], ["fm"], axes=[2], keepdims=0),
             helper.make_node("Concat", ["fm", "fm"], ["f4"], axis=2),
             helper.make_node("Mul", ["f4", "zero"], ["z4"]),
             helper.make_node("Unsqueeze", ["s_out", "ax1"], ["s3"]),
             helper.make_node("Mul", ["s3", "zero"], ["s30"]),
             helper.make_node("Add", ["z4", "s30"], ["zz"]),
             helper.make_node("Add", ["zz", "one"], ["knots"])]
    io = helper.make_tensor_value_info
    return graph_model(path, nodes, [io("frames", TensorProto.FLOAT, ["batch", "T", H, 2]),
                                     io("s", TensorProto.FLOAT, ["batch", 1])],
                       [io("knots", TensorProto.FLOAT, ["batch", "T", 4]), io("s_out", TensorProto.FLOAT, ["batch", 1])],
                       {"hop": str(H), "lookahead_frames": "1", "knots": "4"}, inits)


def _gain_db(y, x, latency, part):
    g = np.abs(y[latency:, 0]) / np.maximum(np.abs(x[:-latency, 0]), 1e-9)
    return float(20 * np.log10(np.median(g[part])))


def test_a_delimiter_state_that_blows_up_starts_afresh(tmp_path):
    """A quarter of a second in, the model's state turns NaN (its input stays finite and in range):
    the de-limiter goes back to the start state and restores again (it held the NaN for good: 0 dB
    for the rest of the stream, as the enhancer's containment already prevented for its model)."""
    path = _blow_up_model(tmp_path / "blows_up.onnx")
    t = np.arange(SR) / SR
    x = np.repeat((0.1 * np.sin(2 * np.pi * 200 * t) + 0.2)[:, None], 2, 1).astype(np.float32)
    x[SR // 4:SR // 4 + 2000] = -0.3  # a negative stretch: sqrt of a negative sum
    knobs = dict(auto_level="off", threshold_db=0.0, declip="off")
    p = Delimiter(model_path=path, **knobs)
    p.prepare(SR, 128, 2)
    y = _run(p, x, 128)
    assert np.isfinite(y).all()
    before = _gain_db(y, x, p.latency, slice(SR // 8, SR // 4 - 1000))
    after = _gain_db(y, x, p.latency, slice(-SR // 4, None))
    assert before == pytest.approx(20 / np.log(10), abs=0.01)  # a log gain of 1: 8.69 dB
    assert after == pytest.approx(before, abs=0.01)
    # batched: the stream whose state blew up starts afresh alone; the other is as if alone
    clean = x.copy()
    clean[SR // 4:SR // 4 + 2000] = 0.2
    b = BatchedDelimiter(2, model_path=path, **knobs)
    b.prepare(SR, 128, 2)
    yb = _run(b, np.concatenate([x, clean], 1), 128)
    assert np.array_equal(yb[:, :2], y)
    q = Delimiter(model_path=path, **knobs)
    q.prepare(SR, 128, 2)
    assert np.array_equal(yb[:, 2:], _run(q, clean, 128))


# ---------------------------------------------------------------------------------- finding 3
@pytest.mark.parametrize("make", [Delimiter, lambda: BatchedDelimiter(2)])
def test_a_huge_block_goes_through_the_model_in_calls_of_bounded_size(make):
    """-b 65536 (513 hops of 128): the model takes at most MAX_CALL_SAMPLES per call, so prepare
    binds and warms up 32 call shapes, not 513 (3.5 s per prepare, 32 s with 8 batched streams),
    and the output is the same as with small blocks."""
    rng = np.random.default_rng(49)
    p = make()
    p.prepare(44100, 65536, 2)
    assert len(p.session.keys) <= MAX_CALL_SAMPLES // p.hop
    x = np.clip(rng.standard_normal((3 * 65536, p.channels)) * 0.5, -0.6, 0.6).astype(np.float32)
    y = _run(p, x, 65536)
    q = make()
    q.prepare(44100, 512, 2)
    assert np.abs(y - _run(q, x, 512)).max() < 1e-5


# ---------------------------------------------------------------------------------- finding 4
def test_a_huge_synth_block_is_played_in_parts_the_same_as_small_blocks():
    """-b 65536: the decoders bind call shapes for one part (MAX_PART frames) instead of the whole
    block (342 frames x 32 voices per instrument, 700 MB for the synth); the render is the same."""
    from realtime.dsp.processors.synth.processor import MAX_PART

    def render(block):
        s = Synth(model_dir=MODEL_DIR)
        s.prepare(SR, block, 2)
        y = np.zeros((SR, 2), np.float32)
        events = [(100, 0x90, 60, 100), (5000, 0x90, 64, 90), (9000, 0xC0, 73, 0), (20000, 0x80, 60, 0),
                  (30000, 0xB0, 120, 0), (30100, 0x90, 67, 110), (44000, 0x80, 67, 0)]
        k = 0
        for pos in range(0, SR, block):
            while k < len(events) and events[k][0] < pos + block:
                t, *msg = events[k]
                s.handle_midi(*msg, t - pos)
                k += 1
            s.process(y[pos:pos + block])
        return s, y

    big, y = render(65536)
    assert big.t_max == (MAX_PART - 1) // big.hop + 1
    assert max(t for t, _ in big.instruments[0].session.keys) == big.t_max
    _, small = render(128)
    assert np.abs(small).max() > 0.01 and np.abs(y - small).max() < 1e-6


def test_a_models_folder_given_with_a_quoted_tilde_is_the_home_folders(tmp_path, monkeypatch):
    """RTAUDIO_MODELS_DIR="~/models": the shell leaves the ~ in quotes; it was looked for as a folder named ~."""
    import subprocess
    import sys

    monkeypatch.setenv("HOME", str(tmp_path))
    code = ("from realtime.dsp.processors.neural.weights import models_root; "
            "from realtime.dsp.processors.synth.processor import MODEL_DIR; print(models_root(), MODEL_DIR)")
    env = {**__import__("os").environ, "RTAUDIO_MODELS_DIR": "~/models", "DDSP_MODEL_DIR": "~/ddsp"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=__import__("pathlib").Path(__file__).resolve().parents[1]).stdout
    assert out.split() == [str(tmp_path / "models"), str(tmp_path / "ddsp")]
