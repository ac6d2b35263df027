"""The enhancer's compact data pack (Opus parts for the device machine): what goes in comes back
out in the recipe's layout, the parts hold different clips, and the trainer runs on it."""
import json

import numpy as np
import pytest

from models.enhancer.data import SR, Pool, save_pool, synth_noise, synth_speech_clip
from models.enhancer.pack import pack, unpack
from models.opus import opus_level


def _recipe_like(folder, n_speech=16, n_noise=6):
    """Pools in the recipe's layout (int16 + index), two speaker groups of two packages."""
    rng = np.random.default_rng(3)
    speech = [(0.5 * synth_speech_clip(rng, rng.uniform(1.0, 2.0)), f"pkg{i % 2}/spk{i % 4}", f"s{i}.wav", SR)
              for i in range(n_speech)]
    noise = [(0.1 * synth_noise(rng, SR), "noisepkg", f"n{i}.wav", SR) for i in range(n_noise)]
    folder.mkdir()
    save_pool(speech, folder / "train_speech")
    save_pool(noise, folder / "train_noise")
    return speech, noise


def test_pack_and_unpack_keep_the_clips_and_their_groups(tmp_path):
    speech, noise = _recipe_like(tmp_path / "data")
    seconds = sum(len(x) for x, *_ in speech) / SR
    # parts sized to hold about half the speech each (64 kbit/s, 80 % of a part for speech)
    mib = seconds / 2 * 64000 / 8 / 0.8 / 2 ** 20
    summary = pack(tmp_path / "data", tmp_path / "pack", parts=3, mib=mib, kbps=64)
    files = [json.loads((tmp_path / "pack" / f"part{k}" / "train_speech.json").read_text())["files"]
             for k in (1, 2) if (tmp_path / "pack" / f"part{k}" / "train_speech.json").exists()]
    assert len(files) == 2 and not set(files[0]) & set(files[1]), files  # no clip in two parts
    for part in summary["parts"]:
        for name, p in part.items():
            assert p["mib"] <= 1.3 * mib * (0.8 if name == "train_speech" else 0.2) + 0.01, summary

    unpack(tmp_path / "pack", tmp_path / "out")
    got = Pool.load(tmp_path / "out" / "train_speech")
    idx = json.loads((tmp_path / "out" / "train_speech.json").read_text())
    original = {f: (x, g) for x, g, f, _ in speech}
    assert sorted(idx["files"]) == sorted(original)  # every clip, once (three parts hold them all)
    for i, f in enumerate(idx["files"]):
        x, g = original[f]
        y = got.clip(i)
        assert len(y) == len(x)
        assert idx["groups"][got.group[i]] == g
        snr = 10 * np.log10(np.sum(x ** 2) / np.sum((y - x) ** 2))
        assert snr > 10, (f, snr)  # Opus at 64 kbit/s, aligned sample for sample
    assert len(Pool.load(tmp_path / "out" / "train_noise")) == len(noise)


def test_opus_level_follows_the_bit_rate(tmp_path):
    import soundfile as sf

    x = (0.1 * np.random.default_rng(0).standard_normal(SR * 4)).astype(np.float32)
    rates = []
    for kbps in (32, 64, 128):
        path = tmp_path / f"{kbps}.opus"
        sf.write(path, x, SR, format="OGG", subtype="OPUS", compression_level=opus_level(kbps))
        rates.append(path.stat().st_size * 8 / 4 / 1000)
    assert all(0.7 * k < r < 1.3 * k for k, r in zip((32, 64, 128), rates)), rates


@pytest.mark.slow
def test_the_trainer_runs_on_an_unpacked_pack(tmp_path):
    pytest.importorskip("torch", reason="training extra not installed")
    from models.enhancer.train import main

    _recipe_like(tmp_path / "data")
    pack(tmp_path / "data", tmp_path / "pack", parts=1, mib=4)
    unpack(tmp_path / "pack", tmp_path / "unpacked")
    out = tmp_path / "ck" / "enhancer.onnx"
    assert main(["--data", str(tmp_path / "unpacked"), "--ckpt", str(tmp_path / "ck"), "--export", str(out),
                 "--steps", "2", "--batch", "2", "--workers", "0", "--val-every", "2", "--device", "cpu",
                 "--keep-every", "1"]) == 0
    assert out.is_file()
    assert "on cpu" in (tmp_path / "ck" / "train.log").read_text()
    # the kept weights start another run (what a GPU run brings back to be selected and continued)
    kept = tmp_path / "ck" / "step2.pt"
    assert kept.is_file() and (tmp_path / "ck" / "step1.pt").is_file()
    assert main(["--smoke", "--init", str(kept), "--ckpt", str(tmp_path / "ck2"), "--steps", "1"]) == 0
    assert "fine-tuning from" in (tmp_path / "ck2" / "train.log").read_text()
    # and export alone, to be selected on the held-out set like any other candidate
    assert main(["--export-only", "--init", str(kept), "--export", str(tmp_path / "kept.onnx"),
                 "--ckpt", str(tmp_path / "ck3")]) == 0
    assert (tmp_path / "kept.onnx").is_file()
    assert not (tmp_path / "ck3").exists()  # an export trains nothing and writes no run log
    # or the mean of the kept weights (a soup of one run), which is their midpoint, parameter by parameter
    import onnx
    import torch

    from models.enhancer.onnx_weights import onnx_state_dict

    first = tmp_path / "ck" / "step1.pt"
    assert main(["--export-only", "--average", str(first), str(kept), "--export", str(tmp_path / "mean.onnx")]) == 0
    w1, w2 = (torch.load(p, weights_only=False)["model"] for p in (first, kept))
    got = onnx_state_dict(onnx.load(str(tmp_path / "mean.onnx")))
    moved = [k for k in w1 if w1[k].is_floating_point() and not torch.equal(w1[k], w2[k])]
    assert moved
    for k in moved:
        assert np.allclose(got[k], ((w1[k] + w2[k]) / 2).numpy(), atol=1e-6), k
    with pytest.raises(SystemExit, match="--average goes with --export-only"):
        main(["--average", str(kept)])
    other = tmp_path / "other.pt"  # weights of another graph
    torch.save({"model": {"gain.weight": torch.zeros(3, 3)}, "step": 0}, other)
    with pytest.raises(SystemExit, match="--average: the checkpoints are of different graphs"):
        main(["--export-only", "--average", str(kept), str(other), "--export", str(tmp_path / "x.onnx")])
    finer = tmp_path / "finer.pt"  # the same shapes, trained on 100 Hz bands: no mean with 200 Hz ones
    torch.save({**torch.load(kept, weights_only=False), "min_band_hz": 100.0}, finer)
    with pytest.raises(SystemExit, match="--average: the checkpoints are of different windows or bands"):
        main(["--export-only", "--average", str(kept), str(finer), "--export", str(tmp_path / "x.onnx")])
    with pytest.raises(SystemExit, match="leave out --win / --min-band-hz"):
        main(["--export-only", "--init", str(kept), "--win", "960", "--export", str(tmp_path / "x.onnx")])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="junk.pt: not an enhancer checkpoint"):
        main(["--export-only", "--average", str(kept), str(tmp_path / "junk.pt"), "--export", str(tmp_path / "x.onnx")])


@pytest.mark.parametrize("cut", [0.5, 0.02])
def test_a_truncated_part_is_a_clear_error(tmp_path, cut):
    """A part cut short in transfer: half a file decodes to too few samples, a few pages not at all."""
    _recipe_like(tmp_path / "data")
    pack(tmp_path / "data", tmp_path / "pack", parts=1, mib=4)
    opus = tmp_path / "pack" / "part1" / "train_speech.opus"
    raw = opus.read_bytes()
    opus.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(SystemExit, match=r"train_speech.opus: (holds .* truncated|cannot be decoded)"):
        unpack(tmp_path / "pack", tmp_path / "out")


def test_unpack_without_parts_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no pack parts"):
        unpack(tmp_path, tmp_path / "out")


def test_a_device_torch_cannot_see_is_a_clear_error():
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.device import pick_device

    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SystemExit, match="not a torch device"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="sees no CUDA GPU"):
            pick_device("cuda")
