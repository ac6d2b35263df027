"""The de-limiter and DDSP trainers (and their data tools) on user errors: one clear line before
anything is built or written, no earlier run replaced unasked, checkpoints written whole (a full
disk keeps the previous one), and a Ctrl-C keeps what the run learnt.

Every run is tiny: the smoke recipe's synthetic data (built once) or the DDSP trainer's synthetic
tones, a few steps on the CPU, in tmp_path folders only."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import bad_argument, refused
from tests.test_robustness import one_line_error

torch = pytest.importorskip("torch", reason="training extra not installed")

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "2", "--batch", "2", "--frames", "32", "--workers", "0", "--device", "cpu", "--limiters", "zoo"]
ENHANCER_CKPT = ROOT / "models" / "enhancer" / "checkpoint.pt"


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    """The smoke recipe's data: two synthetic tracks and a selection set."""
    from models.delimiter import data as recipe

    return recipe.build(tmp_path_factory.mktemp("dl") / "data", smoke=True)


@pytest.fixture(scope="module")
def pack_data(smoke_data, tmp_path_factory):
    """The same tracks without a selection set, as an unpacked GPU pack is."""
    out = tmp_path_factory.mktemp("pack") / "data"
    out.mkdir()
    for name in ("index.json", "DONE"):
        (out / name).write_bytes((smoke_data / name).read_bytes())
    return out


def _python_m(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ 1. full disk
@pytest.mark.parametrize("where", ["small", "ckpt"])
def test_delimiter_checkpoint_on_a_full_disk_is_one_line(tmp_path, smoke_data, full_disk, where):
    """save_small (--small) and save_last (CKPT/last.pt) on a full disk: the path and the reason."""
    from models.delimiter import train

    ck = full_disk / "ck" if where == "ckpt" else tmp_path / "ck"
    small = full_disk / "c.pt" if where == "small" else tmp_path / "c.pt"
    msg = refused(train.main, TINY + ["--data", str(smoke_data), "--ckpt", str(ck), "--small", str(small),
                                       "--out", str(tmp_path / "d.onnx")])
    assert "no space left on device" in msg and str(small if where == "small" else ck / "last.pt") in msg
    assert not [p for p in full_disk.rglob("*") if p.is_file()]  # no half-written file left


def test_ddsp_best_on_a_full_disk_is_one_line_and_keeps_the_previous(tmp_path, full_disk):
    from models.ddsp import train

    (full_disk / "best.pt").write_bytes(b"the previous best")
    msg = refused(train.main, ["--instrument", "flute", "--smoke", "--ckpt", str(full_disk),
                                "--export", str(tmp_path / "flute.onnx")])
    assert "no space left on device" in msg and str(full_disk / "best.pt") in msg
    assert (full_disk / "best.pt").read_bytes() == b"the previous best"


# ------------------------------------------------------------------ 2. an earlier run
def test_delimiter_fresh_run_never_replaces_an_earlier_one_unasked(tmp_path, smoke_data):
    from models.delimiter import train

    ck = tmp_path / "ck"
    run = TINY + ["--data", str(smoke_data), "--ckpt", str(ck)]
    assert train.main(run) == 0
    before = (ck / "last.pt").read_bytes(), (ck / "train_log.json").read_bytes()
    assert "--resume" in refused(train.main, run) and "--force" in refused(train.main, run)
    assert ((ck / "last.pt").read_bytes(), (ck / "train_log.json").read_bytes()) == before
    msg = refused(train.main, run[:-1] + [str(tmp_path / "typo"), "--resume"])
    assert "no last.pt" in msg and not (tmp_path / "typo").exists()
    assert train.main(run + ["--force"]) == 0
    assert train.main(run + ["--resume", "--steps", "3"]) == 0
    assert torch.load(ck / "last.pt")["step"] == 3


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--steps", "-3"], ["--minutes", "-1"], ["--minutes", "0"]])
def test_delimiter_refuses_a_run_of_no_steps(tmp_path, smoke_data, capsys, bad):
    from models.delimiter import train

    ck = tmp_path / "ck"
    bad_argument(train.main, TINY + ["--data", str(smoke_data), "--ckpt", str(ck)] + bad, capsys, bad[0])
    assert not ck.exists()


def test_delimiter_default_smoke_run_runs_twice(tmp_path, monkeypatch):
    """CI's `train delimiter --smoke` replaces its previous smoke run (here under a fake root)."""
    from models.delimiter import train

    monkeypatch.setattr(train, "COMMITTED_CKPT", tmp_path / train.COMMITTED_CKPT.relative_to(train.ROOT))
    monkeypatch.setattr(train, "ROOT", tmp_path)
    for _ in range(2):
        assert train.main(["--smoke", "--steps", "1"]) == 0
    assert (tmp_path / "checkpoints" / "delimiter-smoke" / "last.pt").is_file()


# ------------------------------------------------------------------ 3. Ctrl-C and a lost machine
def _failing_at(train, monkeypatch, call, exc):
    real = train.losses
    calls = []

    def losses(*args, **kw):
        calls.append(1)
        if len(calls) == call:
            raise exc
        return real(*args, **kw)

    monkeypatch.setattr(train, "losses", losses)


def test_delimiter_ctrl_c_saves_last_without_a_selection_set(tmp_path, pack_data, monkeypatch):
    from models.delimiter import train

    _failing_at(train, monkeypatch, 4, KeyboardInterrupt())
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        train.main(TINY + ["--data", str(pack_data), "--ckpt", str(ck), "--steps", "50"])
    assert torch.load(ck / "last.pt")["step"] == 3  # every step taken: --resume goes on from here


def test_delimiter_saves_last_on_a_time_interval_without_a_selection_set(tmp_path, pack_data, monkeypatch):
    """A machine that goes away (no Ctrl-C to catch) loses SAVE_EVERY_S at most."""
    from models.delimiter import train

    monkeypatch.setattr(train, "SAVE_EVERY_S", 0.0)
    _failing_at(train, monkeypatch, 4, RuntimeError("the machine went away"))
    ck = tmp_path / "ck"
    with pytest.raises(RuntimeError):
        train.main(TINY + ["--data", str(pack_data), "--ckpt", str(ck), "--steps", "50"])
    assert torch.load(ck / "last.pt")["step"] == 3


def test_delimiter_sigint_says_interrupted_and_keeps_the_run(tmp_path, pack_data):
    ck = tmp_path / "ck"
    p = subprocess.Popen([sys.executable, "-m", "models.delimiter.train", *TINY, "--steps", "100000",
                          "--data", str(pack_data), "--ckpt", str(ck)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:
            if line.startswith("params"):
                break
        time.sleep(1.5)  # a few steps
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130 and err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err, err
    assert torch.load(ck / "last.pt")["step"] >= 0  # --resume goes on from where it stopped


# ------------------------------------------------------------------ 4. what --resume and --init read
def _not_delimiter_files(tmp_path):
    from models.delimiter import train
    from models.delimiter.model import Delimiter

    files = {"text": tmp_path / "text.pt", "empty": tmp_path / "empty.pt", "enhancer": ENHANCER_CKPT,
             "weights-only": tmp_path / "small.pt"}
    files["text"].write_text("not a checkpoint\n")
    files["empty"].write_bytes(b"")
    train.save_small(Delimiter(), files["weights-only"], {"step": 1})
    return files


@pytest.mark.parametrize("kind", ["text", "empty", "enhancer", "weights-only"])
def test_delimiter_resume_of_something_else_is_one_line(tmp_path, smoke_data, kind):
    from models.delimiter import train

    src = _not_delimiter_files(tmp_path)[kind]
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "last.pt").write_bytes(src.read_bytes())
    msg = refused(train.main, TINY + ["--data", str(smoke_data), "--ckpt", str(ck), "--resume"])
    assert str(ck / "last.pt") in msg and "not a de-limiter" in msg
    assert sorted(p.name for p in ck.iterdir()) == ["last.pt"]


def test_delimiter_init_export_and_score_of_another_network_are_one_line(tmp_path, smoke_data):
    """The enhancer's weights have an `inp.weight` too: the network is built and loaded to tell."""
    from models.delimiter import train

    ck = tmp_path / "ck"
    for argv in (TINY + ["--data", str(smoke_data), "--ckpt", str(ck), "--init", str(ENHANCER_CKPT)],
                 ["--export-only", "--init", str(ENHANCER_CKPT), "--out", str(tmp_path / "x.onnx")],
                 ["--score", str(ENHANCER_CKPT), "--data", str(smoke_data), "--thresholds", "2"]):
        msg = refused(train.main, argv)
        assert str(ENHANCER_CKPT) in msg and "not a de-limiter checkpoint" in msg
    assert not ck.exists() and not list(tmp_path.glob("x.onnx*"))  # 8: a refused --init leaves no folder


# ------------------------------------------------------------------ 5. --data
def test_delimiter_builds_data_only_in_the_default_folder(tmp_path, monkeypatch):
    from models.delimiter import data as recipe
    from models.delimiter import train

    built = []

    def build(out, smoke=False):
        built.append(out)
        raise SystemExit("built")  # (the real recipe takes minutes)

    monkeypatch.setattr(recipe, "build", build)
    typo = tmp_path / "dat"
    msg = refused(train.main, TINY + ["--data", str(typo), "--ckpt", str(tmp_path / "ck")])
    assert msg == f"no data in {typo}: build it with python -m models.delimiter.data --out {typo}"
    assert not built and not typo.exists() and not (tmp_path / "ck").exists()
    monkeypatch.setattr(recipe, "DEFAULT_OUT", tmp_path / "default")
    assert refused(train.main, TINY + ["--ckpt", str(tmp_path / "ck")]) == "built"
    assert built == [tmp_path / "default"]


# ------------------------------------------------------------------ 6. nonsense numbers
@pytest.mark.parametrize("bad", [["--batch", "0"], ["--frames", "0"], ["--frames", "-4"], ["--val-every", "0"],
                                 ["--workers", "-1"], ["--threads", "0"], ["--lookahead", "-1"],
                                 ["--arch", "tcn", "--tcn-bands", "-2"]])
def test_delimiter_refuses_nonsense_numbers(tmp_path, smoke_data, capsys, bad):
    from models.delimiter import train

    ck = tmp_path / "ck"
    bad_argument(train.main, TINY + ["--data", str(smoke_data), "--ckpt", str(ck)] + bad, capsys, bad[-2])
    assert not ck.exists()


def test_delimiter_score_refuses_thresholds_that_are_not_numbers(tmp_path, smoke_data, capsys):
    from models.delimiter import train

    bad_argument(train.main, ["--score", str(train.COMMITTED_CKPT), "--data", str(smoke_data),
                               "--thresholds", "abc"], capsys, "--thresholds")


@pytest.mark.parametrize("bad", [["--batch", "0"], ["--frames", "0"], ["--frames", "-5"], ["--val-every", "0"],
                                 ["--hidden", "0"], ["--threads", "0"], ["--steps", "0"], ["--max-minutes", "0"]])
def test_ddsp_refuses_nonsense_numbers(tmp_path, capsys, bad):
    from models.ddsp import train

    argv = ["--instrument", "flute", "--data", str(tmp_path / "data"), "--ckpt", str(tmp_path / "ck"),
            "--export", str(tmp_path / "flute.onnx")] + bad
    bad_argument(train.main, argv, capsys, bad[0])


def test_ddsp_frames_longer_than_the_data_and_export_only_of_nothing_are_one_line(tmp_path):
    from models.ddsp import train

    msg = refused(train.main, ["--instrument", "flute", "--data", str(_ddsp_data(tmp_path / "data", "flute")),
                                "--frames", "100000", "--ckpt", str(tmp_path / "ck"),
                                "--export", str(tmp_path / "flute.onnx")])
    assert "--frames 100000" in msg
    msg = refused(train.main, ["--instrument", "flute", "--smoke", "--export-only", "--ckpt", str(tmp_path / "ck"),
                                "--export", str(tmp_path / "flute.onnx")])
    assert "no best.pt" in msg and not (tmp_path / "ck").exists()


# ------------------------------------------------------------------ 7. the DDSP model card
def _ddsp_data(root: Path, instrument: str) -> Path:
    from models.ddsp import train

    for split, seed in (("train", 0), ("val", 1)):
        d = train.synthetic_split(seed, seconds=8.0)
        (root / instrument).mkdir(parents=True, exist_ok=True)
        np.savez(root / instrument / f"{split}.npz", f0_midi_hz=d["f0_hz"], **d)
    return root


def test_ddsp_model_card_goes_beside_the_exported_model(tmp_path, monkeypatch):
    from models.ddsp import train

    repo = tmp_path / "repo"  # stands for models/ddsp: a run exported elsewhere must leave its card alone
    repo.mkdir()
    monkeypatch.setattr(train, "HERE", repo)
    out = tmp_path / "out" / "flute.onnx"
    assert train.main(["--instrument", "flute", "--data", str(_ddsp_data(tmp_path / "data", "flute")),
                       "--steps", "2", "--val-every", "1", "--batch", "2", "--frames", "50",
                       "--ckpt", str(tmp_path / "ck"), "--export", str(out)]) == 0
    assert out.is_file() and "# DDSP flute" in out.with_suffix(".md").read_text()
    assert not list(repo.iterdir())


# ------------------------------------------------------------------ 8. where the files go
def test_read_only_destinations_are_refused_before_training(tmp_path, smoke_data, read_only_dir):
    from models.ddsp import train as ddsp
    from models.delimiter import train

    ck = tmp_path / "ck"
    for argv in (TINY + ["--data", str(smoke_data), "--ckpt", str(ck), "--out", str(read_only_dir / "d.onnx")],
                 ["--export-only", "--init", str(train.COMMITTED_CKPT), "--out", str(read_only_dir / "d.onnx")]):
        assert refused(train.main, argv) == f"{read_only_dir / 'd.onnx'}: cannot write there (read-only file system)"
    assert refused(train.main, TINY + ["--data", str(smoke_data), "--ckpt", str(read_only_dir / "ck")]) == \
        f"{read_only_dir / 'ck' / 'last.pt'}: cannot write there (read-only file system)"
    assert refused(ddsp.main, ["--instrument", "flute", "--smoke", "--ckpt", str(ck),
                                "--export", str(read_only_dir / "d.onnx")]) == \
        f"{read_only_dir / 'd.onnx'}: cannot write there (read-only file system)"
    assert not ck.exists()


# ------------------------------------------------------------------ 9. python -m
def test_data_tools_say_user_errors_in_one_line(tmp_path, smoke_data):
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert "is a file" in one_line_error(_python_m("models.delimiter.data", "--out", str(a_file)))
    line = one_line_error(_python_m("models.delimiter.data", "--selection-only", "--out", str(tmp_path / "missing")))
    assert "no index.json" in line and not (tmp_path / "missing").exists()
    assert "no index.json" in one_line_error(_python_m("models.delimiter.pack", "--data", str(tmp_path / "missing"),
                                                       "--out", str(tmp_path / "pack")))
    assert "--selection" in one_line_error(_python_m("models.delimiter.probe", "--selection"))
    assert "is a file" in one_line_error(_python_m("models.ddsp.data", "--out", str(a_file)))
    assert "no data" in one_line_error(_python_m("models.ddsp.train", "--instrument", "flute", "--data",
                                                 str(tmp_path / "missing"), "--ckpt", str(tmp_path / "ck"),
                                                 "--export", str(tmp_path / "f.onnx")))
    line = one_line_error(_python_m("models.delimiter.train", *TINY, "--data", str(smoke_data),
                                    "--ckpt", str(tmp_path / "ck"), "--resume"))
    assert "no last.pt" in line


def test_resumed_run_reads_back_what_it_saved(tmp_path, smoke_data):
    """load_last: what save_last wrote comes back with the network it belongs to."""
    from models.delimiter import train

    ck = tmp_path / "ck"
    assert train.main(TINY + ["--data", str(smoke_data), "--ckpt", str(ck), "--arch", "tcn", "--lookahead", "3"]) == 0
    st, model = train.load_last(ck / "last.pt", 0)
    assert st["step"] == 2 and model.arch == "tcn" and model.lookahead == 3
    assert json.loads((ck / "train_log.json").read_text())["log"]
    assert os.path.getsize(ck / "checkpoint.pt") > 0
