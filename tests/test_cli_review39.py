"""Trainers and benchmarks on a user's mistakes (review 39): a package that is not installed, an
unwritable export, a foreign last.pt and a processor that does not exist are each one line, said
before any work (training, the data recipe, a JACK server) starts.

"Not installed" is emulated in a subprocess by a sitecustomize on PYTHONPATH: for the modules named
in BLOCK_MODS, ``import X`` raises ModuleNotFoundError and ``importlib.util.find_spec(X)`` is None, as
on an install without that extra (None in ``sys.modules`` instead broke torch's importers)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import refused
from tests.test_robustness import one_line_error

ROOT = Path(__file__).resolve().parents[1]
SITECUSTOMIZE = """import importlib.util, os, sys
BLOCKED = [m for m in os.environ.get("BLOCK_MODS", "").split(",") if m]

def _blocked(name):
    return any(name == m or name.startswith(m + ".") for m in BLOCKED)

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: None if _blocked(name) else _find_spec(name, package)
"""


def _without(tmp_path, modules, *args, timeout=120):
    """``main.py ARGS`` in a subprocess where ``modules`` are not installed."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": str(site), "BLOCK_MODS": ",".join(modules), "JACK_NO_START_SERVER": "1"}
    return subprocess.run([sys.executable, "main.py", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ------------------------------------------------------------------ 1. no training extra
@pytest.mark.parametrize("command", [["train", "enhancer", "--smoke"], ["train", "ddsp", "--instrument", "flute", "--smoke"],
                                     ["train", "delimiter", "--smoke"], ["bench", "loader", "--examples", "2"]])
def test_without_torch_a_trainer_or_benchmark_says_so_in_one_line(tmp_path, command):
    """torch imported inside a trainer's main() (the enhancer's, DDSP's) or a benchmark's, not at the
    top of its module, was a traceback; the delimiter's (imported with the module) was this line."""
    ck = tmp_path / "ck"
    extra = ["--ckpt", ck, "--export" if command[1] != "delimiter" else "--out", tmp_path / "x.onnx"]
    line = one_line_error(_without(tmp_path, ["torch"], *command, *(extra if command[0] == "train" else [])))
    assert "No module named 'torch'" in line, line
    if command[0] == "train":
        assert line.startswith(f"error: cannot train {command[1]}: ") and "pip install -e '.[train]'" in line, line
        assert not (tmp_path / "x.onnx").exists()
    else:
        assert line.startswith("bench loader: not available"), line


def test_one_of_our_own_modules_missing_keeps_its_traceback(tmp_path):
    """Not an extra to install but a bug: not dressed up as "install the training extra"."""
    r = _without(tmp_path, ["models.enhancer.model"], "train", "enhancer", "--smoke", "--ckpt", tmp_path / "ck")
    assert r.returncode == 1 and "Traceback" in r.stderr and "training extra" not in r.stderr, r.stderr
    assert "No module named 'models.enhancer.model'" in r.stderr.splitlines()[-1], r.stderr


def test_missing_optional_tells_an_extra_from_our_own_modules():
    from bench import missing_optional

    assert missing_optional(ModuleNotFoundError("No module named 'torch.nn'", name="torch.nn"))
    assert missing_optional(ModuleNotFoundError("no name"))
    for ours in ("models.enhancer.model", "realtime", "bench.loader", "gui.host"):
        assert not missing_optional(ModuleNotFoundError(f"No module named {ours!r}", name=ours))


# ------------------------------------------------------------------ 2., 5. enhancer: where it writes
@pytest.mark.parametrize("where", ["read-only", "under a file"])
def test_enhancer_refuses_an_unwritable_export_before_training(tmp_path, request, where):
    """Found only at the export, after the whole training; the other trainers refuse it up front."""
    from models.enhancer.train import main

    if where == "read-only":
        export = request.getfixturevalue("read_only_dir") / "e.onnx"
        reason = f"{export}: cannot write there (read-only file system)"
    else:
        (tmp_path / "afile").write_text("")
        export = tmp_path / "afile" / "e.onnx"
        reason = f"{tmp_path / 'afile'}: is a file, not a folder (needed for {export})"
    ck = tmp_path / "ck"
    assert refused(main, ["--smoke", "--steps", "1", "--ckpt", str(ck), "--export", str(export)]) == reason
    assert not ck.exists()  # nothing trained, no train.log


def test_enhancer_ckpt_that_is_a_file_is_said_as_the_other_trainers_say_it(tmp_path):
    """It said "File exists" (the mkdir's error)."""
    from models.enhancer.train import main

    ck = tmp_path / "ck"
    ck.write_text("")
    msg = refused(main, ["--smoke", "--ckpt", str(ck), "--export", str(tmp_path / "e.onnx")])
    assert msg == f"{ck}: is a file, not a folder (needed for {ck / 'last.pt'})", msg


# ------------------------------------------------------------------ 3. delimiter --resume
def test_delimiter_resume_checks_last_pt_before_building_any_data(tmp_path):
    """A foreign last.pt was found only after the data step (without data, the 20 h recipe)."""
    pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train

    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "last.pt").write_text("garbage")
    msg = refused(train.main, ["--smoke", "--resume", "--device", "cpu", "--ckpt", str(ck)])
    assert msg.startswith(f"{ck / 'last.pt'}: not a de-limiter run's last.pt"), msg
    assert sorted(p.name for p in ck.iterdir()) == ["last.pt"]  # no data built


# ------------------------------------------------------------------ 4. bench enhancer without librosa
def test_bench_enhancer_without_librosa_says_so_before_any_work(tmp_path):
    """speechmos imports librosa without declaring it: DNSMOS failed with a traceback after the
    first system had run."""
    (tmp_path / "val" / "noisy").mkdir(parents=True)
    (tmp_path / "val" / "noisy" / "a.wav").write_bytes(b"")  # listed, never read: the check comes first
    line = one_line_error(_without(tmp_path, ["librosa"], "bench", "enhancer", "--val", tmp_path / "val",
                                   "--skip", "0", "--no-rnnoise", "--no-dfn"))
    assert line.startswith("error: bench enhancer needs [") and "'librosa'" in line, line


# ------------------------------------------------------------------ 5. bench gui --add
@pytest.mark.parametrize("add", [["nosuch"], ["gain", "nosuch"]])
def test_bench_gui_refuses_an_added_processor_that_does_not_exist(add):
    """It exited 0 with the name under "skipped" only; `bench processor NAME` fails (exit 2), and
    so does this, before a JACK server is started."""
    r = subprocess.run([sys.executable, "main.py", "bench", "gui", "--seconds", "1", "--json", "--add", *add],
                       cwd=ROOT, env={**os.environ, "JACK_NO_START_SERVER": "1", "QT_QPA_PLATFORM": "offscreen",
                                      "JACK_DEFAULT_SERVER": "rtguibench-none"},
                       capture_output=True, text=True, timeout=120)
    line = one_line_error(r)
    assert line.startswith("error: bench gui: --add nosuch: unknown processor 'nosuch'"), line
    assert r.stdout == ""
