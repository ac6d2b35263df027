"""The trainers at their edges, review 44: a de-limiter run stopped while it writes a new best, the
enhancer's --steps=N smoke form, a refused --init that left a checkpoint folder behind, and an
enhancer selection set a stopped build left half written. Each test failed before its fix."""
from types import SimpleNamespace

import numpy as np
import pytest

from tests.test_trainer_cli import TINY

torch = pytest.importorskip("torch", reason="training extra not installed")


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
