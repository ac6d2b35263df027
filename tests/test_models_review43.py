"""Models a user gives that load but do not fit (review 43): a state output sized unlike its input, a
graph that fails at its first run, a spectrum or state of another rank, symbolic sizes the runtime
must know, and an optional synth decoder like that beside a good one. Each was a traceback (ValueError,
IndexError, onnxruntime's RuntimeError) or stopped a render that never needed it; each is one line now."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from realtime.dsp.processors.neural.enhancer import Enhancer
from realtime.errors import ModelError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from .onnx_helpers import graph_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENHANCER_META = {"sample_rate": "48000", "win": "480", "hop": "240"}


def _io(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _ints(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def test_a_state_output_sized_unlike_its_input_is_refused_at_load(tmp_path):
    """h_enc_out half of h_enc: the first run failed inside prepare with onnxruntime's words."""
    path = graph_model(tmp_path / "half.onnx",
                  [helper.make_node("Identity", ["spec"], ["enh"]),
                   helper.make_node("Slice", ["h_enc", "st", "en", "ax"], ["h_enc_out"])],
                  [_io("spec", ["T", "B", 241, 2]), _io("h_enc", [2, "B", 256])],
                  [_io("enh", ["T", "B", 241, 2]), _io("h_enc_out", [2, "B", "X"])], ENHANCER_META,
                  [_ints("st", [0]), _ints("en", [128]), _ints("ax", [2])])
    e = Enhancer(model_path=path)
    with pytest.raises(ModelError, match=r"half\.onnx declares its state output 'h_enc_out' as \[2, 'B', 128\] "
                                         r"but its input 'h_enc' as \[2, 'B', 256\]: re-export it"):
        e.prepare(48000, 256, 1)


def test_a_model_that_fails_at_its_first_run_is_one_line(tmp_path):
    path = graph_model(tmp_path / "sum.onnx",
                  [helper.make_node("ReduceSum", ["spec"], ["enh"], keepdims=0),
                   helper.make_node("Identity", ["h_enc"], ["h_enc_out"])],
                  [_io("spec", ["T", "B", 241, 2]), _io("h_enc", [2, "B", 256])],
                  [_io("enh", None), _io("h_enc_out", [2, "B", 256])], ENHANCER_META)
    e = Enhancer(model_path=path)
    with pytest.raises(ModelError) as info:
        e.prepare(48000, 256, 1)
    said = str(info.value)
    assert "sum.onnx does not run: " in said and "\n" not in said and len(said) < 400, said


@pytest.mark.parametrize("spec, state, says", [
    (["T", 482], [2, "B", 256], r"takes its spectrum as \['T', 482\]"),
    (["T", "B", 241, 2], ["A", "B", "C"], r"declares its state 'h_enc' as \['A', 'B', 'C'\]"),
    (["T", "B", 241, 2], [256], r"declares its state 'h_enc' as \[256\]"),
])
def test_a_spectrum_or_state_of_another_rank_or_unsized_is_one_line(tmp_path, spec, state, says):
    path = graph_model(tmp_path / "odd.onnx",
                  [helper.make_node("Identity", ["spec"], ["enh"]), helper.make_node("Identity", ["h_enc"], ["h_enc_out"])],
                  [_io("spec", spec), _io("h_enc", state)], [_io("enh", spec), _io("h_enc_out", state)], ENHANCER_META)
    with pytest.raises(ModelError, match=says):
        Enhancer(model_path=path)


def _flute_with_unsized_harmonics(path: Path) -> Path:
    """A DDSP decoder whose harmonics axis is symbolic (as a normal dynamic export gives it)."""
    import json

    nodes = [helper.make_node("Unsqueeze", ["f0_hz", "ax2"], ["u"]), helper.make_node("Shape", ["f0_hz"], ["sh"]),
             helper.make_node("Slice", ["sh", "s1", "s2", "z"], ["nf"]),
             helper.make_node("Concat", ["one", "nf"], ["rep"], axis=0), helper.make_node("Tile", ["u", "rep"], ["harmonics"]),
             helper.make_node("Tile", ["u", "rep65"], ["noise"]), helper.make_node("Identity", ["state"], ["state_out"])]
    return graph_model(path, nodes,
                  [_io("f0_hz", ["voices", "frames"]), _io("loudness_db", ["voices", "frames"]), _io("state", [1, "voices", 8])],
                  [_io("harmonics", ["voices", "frames", "n_harmonics"]), _io("noise", ["voices", "frames", 65]),
                   _io("state_out", [1, "voices", 8])],
                  {"frame_rate": "250", "hidden": "8", "loudness_map": json.dumps({"c0": 0, "c1": 1, "c2": 0}),
                   "gm_program": "73"},
                  [_ints("ax2", [2]), _ints("one", [1, 1]), _ints("s1", [1]), _ints("s2", [2]), _ints("z", [0]),
                   _ints("rep65", [1, 1, 65])])


def test_an_unfit_optional_synth_decoder_is_left_out_and_the_song_plays(tmp_path, capsys):
    """A flute decoder with symbolic control sizes beside the shipped violin: the violin song stopped
    with ValueError (int('n_harmonics')); the flute is now left out with one line, as an unreadable one."""
    from realtime.dsp.processors import create

    shutil.copy(ROOT / "models" / "ddsp" / "violin.onnx", tmp_path / "violin.onnx")
    _flute_with_unsized_harmonics(tmp_path / "flute.onnx")
    synth = create("synth", model_dir=tmp_path)
    synth.prepare(48000, 256, 2)
    assert set(synth.instruments) == {0}  # the violin alone
    synth.process(np.zeros((256, 2), np.float32))
    err = capsys.readouterr().err
    assert "flute.onnx declares its control sizes as n_harmonics/65" in err and "flute is ignored" in err
    with pytest.raises(ModelError, match=r"flute\.onnx declares its control sizes"):  # chosen, it is one line
        create("synth", model_dir=tmp_path, instrument="flute").prepare(48000, 256, 2)


def test_a_value_just_past_a_limit_does_not_read_as_the_limit():
    from realtime.dsp.presets import apply_overrides, load_preset
    from realtime.errors import PresetError

    with pytest.raises(PresetError, match=r"6\.0000001 is outside \[0, 6\] dB"):
        apply_overrides(load_preset("delimit"), ["delimiter.threshold_db=6.0000001"])
