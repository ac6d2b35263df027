"""The de-limiter's music pack (Opus parts for the device machine): whole training tracks go in,
never the selection music; they come back as WAV files with an index in the recipe's layout, and
the trainer runs on it without a selection set, keeping its weights to be selected elsewhere."""
import json

import numpy as np
import pytest

from models.delimiter.data import synthetic_tracks
from models.delimiter.pack import OPUS_SR, pack, unpack


def _recipe_like(folder):
    """An index in the recipe's layout: two synthetic training tracks (40 s, 44.1 kHz), one val track."""
    folder.mkdir()
    train = synthetic_tracks(folder)
    val = [dict(train[0], path=str(folder / "val.wav"), package="valpkg")]
    (folder / "val.wav").write_bytes((folder / "synthetic-0.wav").read_bytes())
    (folder / "index.json").write_text(json.dumps({"train": train, "val": val, "hours": {}}))
    return train, val


def test_pack_and_unpack_keep_the_training_tracks_only(tmp_path):
    import soundfile as sf
    import soxr

    train, val = _recipe_like(tmp_path / "data")
    # ~0.46 MiB per 40 s track at 96 kbit/s: parts of 0.4 MiB hold one track each
    summary = pack(tmp_path / "data", tmp_path / "pack", parts=3, mib=0.4, kbps=96)
    assert [p["tracks"] for p in summary["parts"]] == [1, 1]  # the third part had nothing left
    assert all(p["mib"] < 0.6 for p in summary["parts"]), summary  # 40 s of stereo at 96 kbit/s: 0.46 MiB
    listed = [e for k in (1, 2) for e in json.loads((tmp_path / "pack" / f"part{k}" / "tracks.json").read_text())]
    assert sorted(e["source"] for e in listed) == sorted(t["path"] for t in train)  # never the val music
    assert not (tmp_path / "pack" / "part3").exists()

    got = unpack(tmp_path / "pack", tmp_path / "out")
    assert got["tracks"] == 2 and abs(got["hours"] - 80 / 3600) < 1e-3
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["val"] == [] and (tmp_path / "out" / "DONE").is_file()
    for e, t in zip(listed, index["train"]):  # parts in order, tracks in their part's order
        assert t["sr"] == OPUS_SR and t["channels"] == 2 and t["package"] == e["package"]
        x, sr = sf.read(e["source"], dtype="float32", always_2d=True)
        x = soxr.resample(x, sr, OPUS_SR)
        y, sr2 = sf.read(t["path"], dtype="float32", always_2d=True)
        assert sr2 == OPUS_SR and abs(len(y) - len(x)) < 64 and t["frames"] == len(y)
        n = min(len(x), len(y)) - 16

        def snr(lag):
            return 10 * np.log10(np.sum(x[8:n] ** 2) / np.sum((y[8 + lag:n + lag] - x[8:n]) ** 2))

        by_lag = [snr(lag) for lag in range(-4, 5)]
        # the same music, aligned sample for sample (Opus keeps the noise-like synthetic hits' spectra
        # more than their waveforms: a few dB, where another track or a shifted one gives <= 0 dB)
        assert by_lag[4] > 3 and int(np.argmax(by_lag)) == 4, by_lag


def test_a_truncated_part_is_a_clear_error(tmp_path):
    _recipe_like(tmp_path / "data")
    pack(tmp_path / "data", tmp_path / "pack", parts=1, mib=0.4)
    f = next((tmp_path / "pack" / "part1").glob("*.opus"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(SystemExit, match="truncated; copy the part again|cannot be decoded"):
        unpack(tmp_path / "pack", tmp_path / "out")
    with pytest.raises(SystemExit, match="no pack parts"):
        unpack(tmp_path / "nothing", tmp_path / "out2")


@pytest.mark.slow
def test_the_trainer_runs_on_an_unpacked_pack_and_keeps_its_weights(tmp_path):
    pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter.train import main

    _recipe_like(tmp_path / "data")
    pack(tmp_path / "data", tmp_path / "pack", parts=2, mib=0.4)
    unpack(tmp_path / "pack", tmp_path / "unpacked")
    ck, out = tmp_path / "ck", tmp_path / "ck" / "delimiter.onnx"
    assert main(["--data", str(tmp_path / "unpacked"), "--ckpt", str(ck), "--out", str(out), "--steps", "2",
                 "--batch", "2", "--frames", "32", "--workers", "0", "--val-every", "1", "--keep-all",
                 "--device", "cpu", "--limiters", "zoo,clip_limit"]) == 0
    assert out.is_file()
    kept = sorted(p.name for p in (ck / "steps").glob("step*.pt"))
    assert kept == ["step000001.pt", "step000002.pt"]  # no selection set there: every state comes back
