"""Batch, forty-sixth session."""
import os

from realtime.run.batch import BatchOptions, run_batch

from .test_batch_review3 import _tone


def test_a_failed_file_leaves_no_empty_folder_in_out(tmp_path):
    """`_start` makes an output's sub-folders before the file is processed: a file that failed left
    them empty in --out (one per broken input in a deep library). Those the batch made for failed
    files alone are removed; a folder that holds an output, or that was there before, stays."""
    lib, out = tmp_path / "lib", tmp_path / "out"
    _tone(lib / "good" / "a.wav")
    _tone(lib / "mixed" / "b.wav")
    for broken in ("mixed/x.wav", "bad/deep/er/y.wav", "bad/side/z.wav", "kept/w.wav"):
        (lib / broken).parent.mkdir(parents=True, exist_ok=True)
        (lib / broken).write_bytes(os.urandom(3000))
    (out / "kept").mkdir(parents=True)  # the user's, empty, before the batch
    s = run_batch([lib], out, BatchOptions(), jobs=2, progress=False)
    assert (s["processed"], s["failed"]) == (6, 4)
    folders = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_dir())
    assert folders == ["good", "kept", "mixed"]
    assert (out / "good" / "a.wav").is_file() and (out / "mixed" / "b.wav").is_file()
