"""Training review 49: the GPU run scripts work with only what the lent machine has, the de-limiter's
runs follow their --seed, a selection set built before the sub-sample LV2 alignment is refused,
DDSP's validation leaves the training's noise to the seed, and seeds and pack sizes are checked."""
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import bad_argument

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "2", "--batch", "2", "--frames", "32", "--workers", "0", "--device", "cpu", "--limiters", "zoo"]

# Python packages of the device machine's image (/work/.library/device/KINDS.md, read 2026-11-17): with
# the wheels a script carries, all that its run can import there.
DEVICE_IMAGE = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader
lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl
meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _carried(script: Path) -> set:
    """The distributions a device script downloads as wheels (its download_wheels NAME==VERSION)."""
    return {_norm(n) for n in re.findall(r"([A-Za-z0-9_.-]+)==[0-9]", script.read_text())}


def _skip_unless_installed(script: Path) -> None:
    """Here, the carried wheels are this machine's installs of them (the training extra)."""
    installed = {_norm(d.metadata["Name"] or "") for d in metadata.distributions()}
    missing = sorted(_carried(script) - installed)
    if missing:
        pytest.skip(f"not installed here: {', '.join(missing)}")


def _device_python(tmp_path: Path, script: Path) -> Path:
    """A folder holding a ``python3`` that sees only the device image's and ``script``'s carried
    packages (this machine's installs of them, linked into a site folder): no site-packages, no .pth."""
    allowed = {_norm(n) for n in DEVICE_IMAGE} | _carried(script)
    site = tmp_path / "devsite"
    site.mkdir()
    for dist in metadata.distributions():
        if _norm(dist.metadata["Name"] or "") not in allowed:
            continue
        for f in dist.files or ():
            top = Path(f).parts[0]
            if top in ("..", "__pycache__") or (site / top).exists() or not dist.locate_file(top).exists():
                continue
            (site / top).symlink_to(dist.locate_file(top))
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    py = bin_ / "python3"
    py.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}" exec {sys.executable} -S "$@"\n')
    py.chmod(0o755)
    return bin_


def _run_device_script(tmp_path, model: str, args: list[str], timeout=600):
    script = ROOT / "scripts" / f"device_{model}.sh"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PATH=f"{_device_python(tmp_path, script)}:{env['PATH']}", OUT=str(tmp_path / "out"),
               DATA=str(tmp_path / "unpacked"), PACK=str(tmp_path / "pack"), RUN_DIR=str(tmp_path / "run"),
               DEVICE="cpu", WORKERS="0")
    return subprocess.run(["bash", str(script), "train", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_the_delimiter_gpu_run_needs_nothing_the_machine_lacks(tmp_path):
    """scripts/device_delimiter.sh train, on the CPU, with only the device image's packages and the
    wheels the script carries: the loader measured every example's loudness with pyloudnorm, which
    neither had, so the GPU run stopped at its first batch (after the unpack) with no weights kept."""
    pytest.importorskip("torch", reason="training extra not installed")
    _skip_unless_installed(ROOT / "scripts" / "device_delimiter.sh")
    from models.delimiter.data import synthetic_tracks
    from models.delimiter.pack import pack

    data = tmp_path / "data"
    data.mkdir()
    tracks = synthetic_tracks(data)
    (data / "index.json").write_text(json.dumps({"train": tracks, "val": [], "hours": {}}))
    pack(data, tmp_path / "pack", parts=2, mib=0.4)
    r = _run_device_script(tmp_path, "delimiter", ["0.5", "--steps", "4", "--batch", "2", "--frames", "32",
                                                  "--val-every", "2"])
    log = (tmp_path / "out" / "train.log").read_text() if (tmp_path / "out" / "train.log").is_file() else ""
    assert r.returncode == 0, r.stderr[-3000:] + log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").glob("step*.pt")) == ["step000002.pt", "step000004.pt"], log
    kinds = re.search(r"limiters (\S+)", log).group(1).split(",")
    assert {"zoo", "pedalboard", "alimiter", "clip_limit", "multiband", "clipper"} <= set(kinds), kinds


@pytest.mark.slow
def test_the_enhancer_gpu_run_needs_nothing_the_machine_lacks(tmp_path):
    """The same for scripts/device_enhancer.sh (soundfile, soxr and cffi carried)."""
    pytest.importorskip("torch", reason="training extra not installed")
    _skip_unless_installed(ROOT / "scripts" / "device_enhancer.sh")
    from models.enhancer.data import SR, save_pool, synth_noise, synth_speech_clip
    from models.enhancer.pack import pack

    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    data.mkdir()
    save_pool([(0.5 * synth_speech_clip(rng, 1.5), f"pkg{i % 2}/spk{i % 4}", f"s{i}.wav", SR) for i in range(16)],
              data / "train_speech")
    save_pool([(0.1 * synth_noise(rng, SR), "noisepkg", f"n{i}.wav", SR) for i in range(4)], data / "train_noise")
    pack(data, tmp_path / "pack", parts=1, mib=1.0, kbps=64)
    r = _run_device_script(tmp_path, "enhancer", ["0.5", "--steps", "4", "--batch", "2", "--val-every", "2",
                                                 "--keep-every", "2"])
    log = (tmp_path / "out" / "train.log").read_text() if (tmp_path / "out" / "train.log").is_file() else ""
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:] + log[-3000:]
    assert (tmp_path / "out" / "enhancer.onnx").is_file() and list((tmp_path / "out").glob("step*.pt")), log


@pytest.mark.parametrize("model", ["delimiter", "enhancer"])
@pytest.mark.parametrize("minutes, said", [("8x", "a number of minutes, not '8x'"),
                                           ("0", "more than 0 minutes, not '0'")])
def test_a_device_run_of_minutes_that_are_no_number_stops_before_any_setup(tmp_path, model, minutes, said):
    """`train 8x` (or a flag where MINUTES goes) was found by the trainer after the wheels' install and
    the unpack; MINUTES is now the whole call's budget, checked first (0 left a run of 0.2 minutes)."""
    r = subprocess.run(["bash", str(ROOT / "scripts" / f"device_{model}.sh"), "train", minutes], cwd=tmp_path,
                       env=dict(os.environ, OUT=str(tmp_path / "out")), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == f"train MINUTES: {said}", r.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def dl_data(tmp_path_factory):
    from models.delimiter import data as recipe

    return recipe.build(tmp_path_factory.mktemp("dl") / "data", smoke=True)


def test_the_same_delimiter_command_trains_the_same_weights(tmp_path, dl_data):
    """The loader's streams were seeded with the clock and the polarity flips with numpy's global
    generator: two runs of one command (the model card's "paired" runs) saw other examples."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import train

    def weights(name, seed):
        ck = tmp_path / name
        assert train.main(TINY + ["--data", str(dl_data), "--ckpt", str(ck), "--arch", "tcn", "--seed", seed]) == 0
        return torch.load(ck / "last.pt", weights_only=False)["model"]

    a, b, c = weights("a", "3"), weights("b", "3"), weights("c", "4")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("module,argv,flag", [
    ("models.delimiter.train", ["--seed", "-1"], "--seed"),
    ("models.enhancer.train", ["--seed", "-1"], "--seed"),
    ("models.ddsp.train", ["--instrument", "flute", "--smoke", "--seed", "-1"], "--seed"),
    ("models.ddsp.data", ["--seed", "-1"], "--seed"),
    ("models.delimiter.pack", ["--out", "OUT", "--seed", "-1"], "--seed"),
    ("models.enhancer.pack", ["--out", "OUT", "--seed", "-1"], "--seed"),
    ("models.delimiter.pack", ["--out", "OUT", "--parts", "0"], "--parts"),
    ("models.delimiter.pack", ["--out", "OUT", "--mib", "-4"], "--mib"),
    ("models.delimiter.train", ["--lr", "-1"], "--lr"),
    ("models.ddsp.train", ["--instrument", "flute", "--smoke", "--lr", "nan"], "--lr"),
])
def test_seeds_and_pack_sizes_out_of_range_are_one_line_errors(tmp_path, capsys, module, argv, flag):
    """A negative --seed was a numpy traceback, in the de-limiter's case from a loader worker after the
    data step; the de-limiter's `pack --parts 0` removed every part an earlier pack had left there; a
    learning rate <= 0 (or nan) was torch's traceback once the data was loaded."""
    import importlib

    main = importlib.import_module(module).main
    bad_argument(main, [str(tmp_path / "out") if v == "OUT" else v for v in argv], capsys, flag)


def test_a_selection_set_from_before_the_sub_sample_alignment_is_refused(tmp_path):
    """A selection set built before the LV2 limiters were aligned to a part of a sample (Calf's
    oversampling left its segments half a sample off their references) was scored as any other:
    states picked on it, and their scores compared with a rebuilt set's. Its LV2 segments now
    record the latency taken out, and one that records none is refused with the rebuild command."""
    pytest.importorskip("torch", reason="training extra not installed")
    from models.delimiter import data as recipe
    from models.delimiter import limiters, train

    if "calf" not in limiters.available(limiters.VAL_KINDS):
        pytest.skip("calf-plugins not installed")
    tracks = recipe.synthetic_tracks(tmp_path)
    n = recipe.build_selection(tmp_path, tracks[:1], per_track=1, kinds={"calf": limiters.calf})
    meta = json.loads((tmp_path / "sel_meta.json").read_text())
    assert n == 1 and meta[0]["limiter"] == "calf" and meta[0]["aligned_latency"] >= 0.0, meta
    assert train.load_selection(tmp_path)[2] == meta
    (tmp_path / "sel_meta.json").write_text(json.dumps([{k: v for k, v in m.items() if k != "aligned_latency"}
                                                        for m in meta]))
    with pytest.raises(SystemExit, match="built before the LV2 limiters were aligned to a part of a sample; rebuild "
                                         "it: python -m models.delimiter.data --selection-only --out "):
        train.load_selection(tmp_path)


def test_ddsp_validation_leaves_the_training_noise_to_the_seed(tmp_path, monkeypatch):
    """Validation re-seeded torch's global generator (its fixed noise): from the first validation on,
    every run drew the same training noise whatever --seed said, and again after each validation."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.ddsp import model as ddsp_model
    from models.ddsp import train

    synth = ddsp_model.synth
    drawn = []

    def recording(*args, **kw):
        if torch.is_grad_enabled():  # a training step's synth (validation runs under no_grad)
            drawn.append(torch.get_rng_state().clone())
        return synth(*args, **kw)

    monkeypatch.setattr(ddsp_model, "synth", recording)
    after_validation = []
    for seed in ("0", "1"):
        drawn.clear()
        assert train.main(["--instrument", "flute", "--smoke", "--ckpt", str(tmp_path / seed), "--seed", seed]) == 0
        after_validation.append(drawn[3])  # the smoke run validates at step 3 (of 6)
    assert not torch.equal(*after_validation)


@pytest.mark.parametrize("flag, value", [("--lookahead", "100000"), ("--wave-threshold", "nan"),
                                         ("--false-weight", "-1")])
def test_delimiter_look_ahead_and_loss_weights_out_of_range_are_one_line_errors(flag, value):
    """--lookahead 100000 ran out of memory with a traceback; nan or negative loss settings trained on."""
    pytest.importorskip("torch", reason="training extra not installed")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "models.delimiter.train", flag, value], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"argument {flag}" in r.stderr, r.stderr


def test_an_export_that_computes_something_else_than_torch_is_refused(tmp_path):
    """The enhancer's and the de-limiter's exports were not checked against torch (only DDSP's was):
    a graph that differs would have shipped. ``check_parity`` runs both and refuses the difference."""
    torch = pytest.importorskip("torch", reason="training extra not installed")
    from models.export_check import check_parity

    net = torch.nn.Linear(4, 3).eval()
    path = tmp_path / "lin.onnx"
    torch.onnx.export(net, (torch.zeros(2, 4),), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    x = {"x": np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)}
    assert check_parity(path, net, x) < 1e-5
    with torch.no_grad():
        net.bias += 0.01  # the graph now computes something else than this module
    with pytest.raises(RuntimeError, match="the ONNX export's y differs from torch's"):
        check_parity(path, net, x)
