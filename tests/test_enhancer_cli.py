"""The speech enhancer's training tools on user errors: one clear line before anything is built or
written, no earlier run replaced unasked, no data recipe run into a mistyped folder, checkpoints and
exports written whole (a full disk keeps the previous ones), and every ``python -m`` entry point says
its errors as one ``error:`` line (realtime.errors.run_cli).

Every run is tiny: smoke-sized (synthetic data, a step or two on the CPU) or stopped by a refusal
before torch is imported, in tmp_path folders only."""
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import bad_argument, refused
from tests.test_robustness import one_line_error

ROOT = Path(__file__).resolve().parents[1]
ENHANCER_CKPT = ROOT / "models" / "enhancer" / "checkpoint.pt"  # weights only (the shipped model's)
DELIMITER_CKPT = ROOT / "models" / "delimiter" / "checkpoint.pt"  # another model's weights


def _module(name, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", name, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _pools(folder: Path, n_speech=4, n_noise=2) -> Path:
    """Training pools in the recipe's layout (int16 + index), without the recipe's manifest."""
    from models.enhancer.data import SR, save_pool, synth_noise, synth_speech_clip

    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    save_pool([(0.5 * synth_speech_clip(rng, 1.0), f"pkg/spk{i % 2}", f"s{i}.wav", SR) for i in range(n_speech)],
              folder / "train_speech")
    save_pool([(0.1 * synth_noise(rng, SR), "noisepkg", f"n{i}.wav", SR) for i in range(n_noise)],
              folder / "train_noise")
    return folder


@pytest.fixture
def no_recipe(monkeypatch):
    """The data recipe must not run (as root it apt-gets packages): any call fails the test."""
    from models.enhancer import data

    def never(*a, **k):
        raise AssertionError("the data recipe ran")

    for name in ("build", "build_bench", "install_packages"):
        monkeypatch.setattr(data, name, never)
    monkeypatch.setattr(data, "speech_sources", lambda: [])


# ------------------------------------------------------------------ 1. exports written whole
def test_an_export_onto_a_full_disk_keeps_the_previous_model(full_disk, capsys):
    pytest.importorskip("torch", reason="training extra not installed")
    from models.enhancer import train
    from realtime.errors import run_cli

    shipped = full_disk / "enhancer.onnx"
    shipped.write_bytes(b"the previous export")
    assert run_cli(train.main, ["--export-only", "--init", str(ENHANCER_CKPT), "--export", str(shipped)]) == 2
    err = capsys.readouterr().err
    assert shipped.read_bytes() == b"the previous export"
    assert err.strip() == f"error: {shipped}: no space left on device", err
    assert [p.name for p in full_disk.iterdir()] == ["enhancer.onnx"]  # no temporary file left


# ------------------------------------------------------------------ 2. checkpoints written whole
@pytest.mark.slow
def test_a_checkpoint_onto_a_full_disk_is_one_line(tmp_path, full_disk):
    pytest.importorskip("torch", reason="training extra not installed")
    from models.enhancer.train import main

    msg = refused(main, ["--smoke", "--steps", "1", "--ckpt", str(full_disk), "--export", str(tmp_path / "x.onnx")])
    assert msg == f"{full_disk / 'best.pt'}: no space left on device", msg
    assert [p.name for p in full_disk.iterdir()] == ["train.log"]  # no half checkpoint
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------ 3. run folders
def test_a_fresh_run_never_replaces_an_earlier_one(tmp_path):
    from models.enhancer.train import main

    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "last.pt").write_bytes(b"an earlier run")
    msg = refused(main, ["--smoke", "--ckpt", str(ck)])
    assert "holds an earlier run" in msg and "--resume" in msg and "--force" in msg
    assert (ck / "last.pt").read_bytes() == b"an earlier run" and [p.name for p in ck.iterdir()] == ["last.pt"]
    typo = tmp_path / "typo"
    assert refused(main, ["--smoke", "--resume", "--ckpt", str(typo)]).startswith(f"--resume: no last.pt in {typo}")
    assert not typo.exists()


def test_a_resume_of_a_mistyped_folder_is_one_line_from_main_py(tmp_path):
    r = subprocess.run([sys.executable, "main.py", "train", "enhancer", "--smoke", "--resume", "--ckpt",
                        str(tmp_path / "typo")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "--resume: no last.pt" in one_line_error(r)
    assert not (tmp_path / "typo").exists()


@pytest.mark.slow
def test_a_smoke_run_replaces_the_last_one_in_its_own_folder(tmp_path, monkeypatch):
    """CI runs ``train enhancer --smoke`` again and again into checkpoints/enhancer-smoke: that run
    replaces the previous one there, and no weights of it survive to be exported as this run's."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.enhancer import train

    monkeypatch.setattr(train, "ROOT", tmp_path)
    own = tmp_path / "checkpoints" / "enhancer-smoke"
    own.mkdir(parents=True)
    for name in ("last.pt", "best.pt", "step6.pt"):
        (own / name).write_bytes(b"the previous smoke run")
    assert train.main(["--smoke", "--steps", "1"]) == 0
    assert not (own / "step6.pt").exists()
    assert torch.load(own / "best.pt", weights_only=False)["step"] == 1
    assert (own / "enhancer.onnx").is_file() and "exported best.pt (step 1)" in (own / "train.log").read_text()


# ------------------------------------------------------------------ 4. what --resume / --init read
def _weights_only(path):
    shutil.copy(ENHANCER_CKPT, path)


def _another_models_run(path):
    import torch

    torch.save({**torch.load(DELIMITER_CKPT, weights_only=False), "opt": {}, "step": 5}, path)


def _cut(path):
    path.write_bytes(ENHANCER_CKPT.read_bytes()[:20000])


@pytest.mark.parametrize("make, why", [
    (lambda p: p.write_bytes(b""), "(EOFError)"),
    (lambda p: p.write_text("step 600\n"), "(UnpicklingError)"),
    (_cut, "("),  # torch's reason varies (a zip reader's RuntimeError, an OSError)
    (_weights_only, "(weights only, no optimiser state: --init starts a run from them)"),
    (_another_models_run, "(no enhancer weights in it)"),
], ids=["empty", "text", "cut", "weights-only", "another-model"])
def test_resuming_from_a_file_that_is_no_run_is_one_line(tmp_path, make, why):
    pytest.importorskip("torch", reason="training extra not installed")
    from models.enhancer.train import main

    ck = tmp_path / "ck"
    ck.mkdir()
    make(ck / "last.pt")
    msg = refused(main, ["--smoke", "--resume", "--ckpt", str(ck)])
    assert msg.startswith(f"{ck / 'last.pt'}: not an enhancer run checkpoint {why}"), msg


def test_exporting_another_models_checkpoint_is_one_line(tmp_path):
    pytest.importorskip("torch", reason="training extra not installed")
    from models.enhancer.train import main

    out = tmp_path / "x.onnx"
    msg = refused(main, ["--export-only", "--init", str(DELIMITER_CKPT), "--export", str(out)])
    assert msg.startswith(f"{DELIMITER_CKPT}: not an enhancer checkpoint") and not out.exists()


# ------------------------------------------------------------------ 5. training data
def test_training_data_is_built_only_into_the_default_folder(tmp_path, monkeypatch, no_recipe):
    from models.enhancer import train
    from models.enhancer.data import MANIFEST, is_built

    ck = tmp_path / "ck"
    for data in (tmp_path / "typo", _pools(tmp_path / "cut-short")):  # missing; a build without its manifest
        msg = refused(train.main, ["--data", str(data), "--ckpt", str(ck), "--steps", "1"])
        assert msg.startswith(f"no training data in {data}: build it with python -m models.enhancer.data --out {data}")
        assert not ck.exists()
    assert not (tmp_path / "typo").exists()
    (tmp_path / "cut-short" / MANIFEST).write_text("{}")  # a finished build's (the recipe writes it last)
    assert is_built(tmp_path / "cut-short")

    default = tmp_path / "data" / "enhancer"
    monkeypatch.setattr(train, "DEFAULT_DATA", default)
    monkeypatch.setattr("models.enhancer.data.build", lambda out: (_ for _ in ()).throw(SystemExit(f"built {out}")))
    pytest.importorskip("torch", reason="training extra not installed")
    assert refused(train.main, ["--ckpt", str(ck), "--steps", "1"]) == f"built {default}"


# ------------------------------------------------------------------ 6. nonsense numbers
@pytest.mark.parametrize("flag, value", [
    ("--batch", "0"), ("--batch", "-3"), ("--seconds", "0"), ("--seconds", "-1"), ("--val-every", "0"),
    ("--ckpt-every", "0"), ("--log-every", "0"), ("--workers", "-1"), ("--threads", "0"), ("--lr", "nan"),
    ("--hidden", "0"), ("--steps", "0"), ("--max-minutes", "0"), ("--max-minutes", "-5"), ("--steps", "x")])
def test_nonsense_training_numbers_are_refused_by_the_parser(capsys, flag, value):
    from models.enhancer.train import parse

    bad_argument(parse, ["--smoke", flag, value], capsys, flag)


def test_a_segment_too_short_to_score_isrefused(capsys):
    from models.enhancer.train import parse

    assert refused(parse, ["--seconds", "0.01"]).startswith("--seconds 0.01:")


def test_nonsense_numbers_are_one_error_from_main_py(tmp_path):
    r = subprocess.run([sys.executable, "main.py", "train", "enhancer", "--smoke", "--batch", "0", "--ckpt",
                        str(tmp_path / "ck")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "argument --batch: must be > 0, got 0" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("flag, value", [("--kbps", "0"), ("--kbps", "-5"), ("--parts", "0"), ("--mib", "0")])
def test_nonsense_pack_numbers_are_refused_by_the_parser(tmp_path, capsys, flag, value):
    from models.enhancer.pack import main

    data = _pools(tmp_path / "data")
    bad_argument(main, ["--data", str(data), "--out", str(tmp_path / "pack"), flag, value], capsys, flag)
    assert not (tmp_path / "pack").exists()


# ------------------------------------------------------------------ 7. the python -m entry points
def test_unpacked_data_is_marked_whole_and_a_part_without_its_index_is_one_line(tmp_path):
    from models.enhancer.data import is_built
    from models.enhancer.pack import pack, unpack

    pack(_pools(tmp_path / "data"), tmp_path / "pack", parts=1, mib=1)
    unpack(tmp_path / "pack", tmp_path / "whole")
    assert is_built(tmp_path / "whole")  # the trainer takes it
    (tmp_path / "pack" / "part1" / "train_speech.json").unlink()
    r = _module("models.enhancer.pack", "--unpack", tmp_path / "pack", "--out", tmp_path / "out")
    assert "part1/train_speech.json" in one_line_error(r)
    assert not (tmp_path / "out").exists()  # refused before anything is decoded or written


@pytest.mark.parametrize("module", ["models.enhancer.pack", "models.enhancer.data"])
def test_an_out_that_is_a_file_is_one_line(tmp_path, module):
    (tmp_path / "out").write_text("a file")
    assert "is a file, not a folder" in one_line_error(_module(module, "--out", tmp_path / "out"))


def test_the_recipe_refuses_a_read_only_out_before_reading_any_source(read_only_dir, capsys, no_recipe):
    from models.enhancer import data
    from realtime.errors import run_cli

    assert run_cli(data.main, ["--out", str(read_only_dir / "enhancer")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {read_only_dir / 'enhancer'}: read-only file system"


@pytest.fixture
def megabyte_disk(tmp_path):
    from tests.conftest import _tmpfs

    yield from _tmpfs(tmp_path / "data", "size=1m")


def test_teacher_targets_into_a_read_only_folder_are_one_line(megabyte_disk):
    folder = megabyte_disk
    _pools(folder / "d")
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    line = one_line_error(_module("models.enhancer.targets", "--data", folder / "d"))
    assert "read-only file system" in line, line


@pytest.mark.slow
def test_ctrl_c_during_training_is_one_word(tmp_path):
    pytest.importorskip("torch", reason="training extra not installed")
    p = subprocess.Popen([sys.executable, "-m", "models.enhancer.train", "--smoke", "--ckpt", str(tmp_path / "ck"),
                          "--export", str(tmp_path / "x.onnx")], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:
            if " step 2/" in line:  # in the training loop
                p.send_signal(signal.SIGINT)
                break
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130 and err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err, err
    assert not [f for f in (tmp_path / "ck").iterdir() if f.name.endswith(".part")]
    assert not (tmp_path / "x.onnx").exists()



def test_a_run_in_its_own_folder_exports_there_not_over_the_shipped_model(tmp_path):
    """``--ckpt X`` without ``--export`` exports to X/enhancer.onnx (a fine-tune stopped by hand
    replaced the shipped model); the default run, and ``--export``, are as before."""
    from models.enhancer.train import DEFAULT_EXPORT, parse

    assert parse(["--ckpt", str(tmp_path / "run")]).export == tmp_path / "run" / "enhancer.onnx"
    assert parse([]).export == DEFAULT_EXPORT
    assert parse(["--ckpt", str(tmp_path / "run"), "--export", str(tmp_path / "e.onnx")]).export == tmp_path / "e.onnx"
