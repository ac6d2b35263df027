"""The trainers at their edges, review 44: a de-limiter run stopped while it writes a new best, the
enhancer's --steps=N smoke form, a refused --init that left a checkpoint folder behind, and an
enhancer selection set a stopped build left half written. Each test failed before its fix."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.test_trainer_cli import TINY

torch = pytest.importorskip("torch", reason="training extra not installed")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dl_data(tmp_path_factory):
    """The de-limiter smoke recipe's data (as test_trainer_cli's)."""
    from models.delimiter import data as recipe

    return recipe.build(tmp_path_factory.mktemp("dl") / "data", smoke=True)


def test_a_delimiter_stopped_while_it_writes_a_new_best_keeps_the_best_it_wrote(tmp_path, dl_data, monkeypatch):
    """The new best was recorded before its ONNX and checkpoint were written: a Ctrl-C between
    them saved last.pt naming a best that was never written, and a resumed run never exported a
    state scoring between the two."""
    from models.delimiter import train

    real_validate, real_export = train.validate, train.export
    scores, exports = iter(range(1, 100)), []

    def validate(*args, **kw):  # every state better than the last
        return {**real_validate(*args, **kw), "sel_score": float(next(scores))}

    def export(model, out, meta, **kw):
        exports.append(meta["step"])
        if len(exports) == 2:
            raise KeyboardInterrupt
        return real_export(model, out, meta, **kw)

    monkeypatch.setattr(train, "validate", validate)
    monkeypatch.setattr(train, "export", export)
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        train.main(TINY + ["--data", str(dl_data), "--ckpt", str(ck), "--steps", "6", "--val-every", "2"])
    written = exports[0]
    assert torch.load(ck / "last.pt", weights_only=False)["best"]["step"] == written
    assert exports == [written, written + 2]


def test_the_enhancers_smoke_run_takes_steps_written_with_an_equals_sign():
    from models.enhancer.train import parse

    assert parse(["--smoke", "--steps=3"]).steps == 3
    assert parse(["--smoke", "--steps", "3"]).steps == 3
    assert parse(["--smoke"]).steps == 12 and parse([]).steps == 6000


def test_an_enhancer_init_that_is_no_checkpoint_leaves_no_folder(tmp_path, capsys):
    from models.enhancer import train

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="junk.pt: not an enhancer checkpoint"):
        train.main(["--smoke", "--ckpt", str(tmp_path / "run"), "--init", str(junk)])
    assert not (tmp_path / "run").exists()


def test_an_enhancer_selection_set_a_stopped_build_left_half_written_is_refused(tmp_path, monkeypatch):
    """A build stopped while it wrote select/ (clips one file at a time, meta.json last) left a set
    the trainer took as whole: a traceback on a noisy clip without its clean one, or a selection
    on the few clips written."""
    from models.enhancer import data, train

    speech = data.Pool([np.random.default_rng(1).standard_normal(48000 * 3).astype(np.float32) * 0.1])
    noise = data.Pool([np.random.default_rng(2).standard_normal(48000 * 3).astype(np.float32) * 0.1])
    folder = tmp_path / "data" / "select"
    data.write_mixtures(folder, [[speech]], [[noise]], 3, 1.0, np.random.default_rng(0))
    a = SimpleNamespace(data=tmp_path / "data", smoke=False, seed=0)
    assert train.val_batch(a, seconds=1.0)[0].shape[0] == 3
    real, written = data.write_clip, []

    def write_clip(path, x):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        real(path, x)

    monkeypatch.setattr(data, "write_clip", write_clip)
    with pytest.raises(KeyboardInterrupt):
        data.write_mixtures(folder, [[speech]], [[noise]], 3, 1.0, np.random.default_rng(5))
    with pytest.raises(SystemExit, match="select: not whole .* --bench-only"):
        train.val_batch(a, seconds=1.0)


def test_two_runs_never_train_in_one_folder(tmp_path):
    """A second run started before the first one's first checkpoint (or a --resume of a run still
    going) trained alongside it: both wrote last.pt, best.pt and the export."""
    import subprocess
    import sys

    from models.run_folder import check_run_folder, claim_run_folder

    ck = tmp_path / "ck"
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from models.run_folder import claim_run_folder; "
                               f"claim_run_folder({str(ck)!r}); print('held', flush=True); sys.stdin.read()"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for claim in (lambda: check_run_folder(ck, resume=False), lambda: claim_run_folder(ck)):
            with pytest.raises(SystemExit, match="another training run is using this folder"):
                claim()
    finally:
        holder.stdin.close()
        holder.wait(10)
    claim_run_folder(ck)  # the first run over: the folder is free
    check_run_folder(ck, resume=False)


def test_an_export_onto_a_full_disk_names_the_file(full_disk, capsys):
    """The de-limiter's (and the DDSP trainer's) said only "no space left on device"."""
    import main

    assert main.main(["train", "delimiter", "--export-only", "--init",
                      str(ROOT / "models" / "delimiter" / "checkpoint.pt"), "--out", str(full_disk / "d.onnx")]) != 0
    assert capsys.readouterr().err.strip() == f"error: {full_disk / 'd.onnx'}: no space left on device"
    assert list(full_disk.iterdir()) == []


def test_a_ddsp_export_only_needs_no_data_and_keeps_how_the_weights_were_trained(tmp_path):
    """--export-only loaded the training data first (and failed without it), then wrote the metadata
    and card from its own command line: the smoke run's weights were exported as a full run's."""
    import onnx

    from models.ddsp import train

    ck, out = tmp_path / "ck", tmp_path / "out" / "flute.onnx"
    assert train.main(["--instrument", "flute", "--smoke", "--ckpt", str(ck), "--export", str(out)]) == 0
    again = tmp_path / "again.onnx"
    assert train.main(["--instrument", "flute", "--export-only", "--data", str(tmp_path / "no-data"),
                       "--ckpt", str(ck), "--export", str(again), "--lr", "0.5"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(again)).metadata_props}
    assert meta["smoke"] == "True" and meta["steps"] == {p.key: p.value for p in onnx.load(str(out)).metadata_props}["steps"]
    with pytest.raises(SystemExit, match="a flute model, not a violin one"):
        train.main(["--instrument", "violin", "--export-only", "--ckpt", str(ck), "--export", str(tmp_path / "v.onnx")])


def test_a_smaller_pack_into_the_same_folder_leaves_no_earlier_part_to_unpack(tmp_path):
    """pack left an earlier, larger pack's last parts in --out, and unpack decoded them too: clips
    twice, or from another data build."""
    import json

    from models.enhancer.pack import pack, unpack

    from .test_enhancer_pack import _recipe_like

    speech, _ = _recipe_like(tmp_path / "data")
    pack(tmp_path / "data", tmp_path / "pack", parts=3, mib=0.005, kbps=64)
    assert (tmp_path / "pack" / "part3").is_dir()
    pack(tmp_path / "data", tmp_path / "pack", parts=1, mib=1.0, kbps=64)
    assert sorted(p.name for p in (tmp_path / "pack").iterdir()) == ["pack.json", "part1"]
    unpack(tmp_path / "pack", tmp_path / "out")
    files = json.loads((tmp_path / "out" / "train_speech.json").read_text())["files"]
    assert sorted(files) == sorted(f for _, _, f, _ in speech)  # each clip once


def test_a_folder_of_other_files_named_like_a_part_is_not_removed(tmp_path):
    from models.pack_parts import drop_stale_parts, pack_parts

    for k in (1, 2, 10):
        (tmp_path / f"part{k}").mkdir()
    (tmp_path / "part10" / "notes.txt").write_text("mine")
    assert [p.name for p in pack_parts(tmp_path)] == ["part1", "part2", "part10"]  # by number
    with pytest.raises(SystemExit, match="part10: left by another pack and holds other files"):
        drop_stale_parts(tmp_path, 1)
    assert (tmp_path / "part10" / "notes.txt").is_file()
