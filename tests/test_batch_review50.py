"""Batch review of the fiftieth session: a Ray worker's warnings on a terminal (glued to the progress
line; a hung-up one's EIO ended the batch), an output folder moved elsewhere, manifests with a NUL in
a path or a byte-order mark. Each test failed before its fix."""
import json
import os
import pty
import select
import sys

import numpy as np
import pytest
import soundfile as sf

from realtime.run.batch import LOG_NAME, BatchOptions, plan_batch, run_batch
from realtime.run.batch_plan import QUEUED_NAME

from .test_batch import local_ray
from .test_batch_review3 import _one_error_line, _tone


@pytest.fixture(scope="module")
def ray_one_cpu():
    """A real local Ray cluster of one CPU: its tasks run one at a time, in the batch's order."""
    yield from local_ray(1)


def _clean_then_nan(src):
    """A long clean file (processed first: longest first) and a short one with NaNs (a worker's warning)."""
    src.mkdir()
    rng = np.random.default_rng(5)
    sf.write(src / "long.wav", (0.1 * rng.standard_normal((96000, 1))).astype(np.float32), 48000, subtype="FLOAT")
    x = (0.1 * rng.standard_normal((24000, 1))).astype(np.float32)
    x[1000:1200] = np.nan
    sf.write(src / "nan.wav", x, 48000, subtype="FLOAT")


def test_a_ray_workers_warning_clears_the_progress_line_it_lands_on(tmp_path, ray_one_cpu, monkeypatch):
    """What a Ray worker said was printed as it was, where a local worker's line first clears the
    progress line (a terminal's has no newline): it was glued onto its end."""
    src = tmp_path / "in"
    _clean_then_nan(src)
    master, slave = pty.openpty()
    tty = os.fdopen(slave, "w")
    try:
        monkeypatch.setattr(sys, "stderr", tty)
        s = run_batch([src], tmp_path / "out", BatchOptions(preset="default", streams=1), ray_address=ray_one_cpu,
                      stream=tty)
        monkeypatch.undo()
        tty.flush()
        got = b""
        while select.select([master], [], [], 1.0)[0]:
            got += os.read(master, 65536)
    finally:
        monkeypatch.undo()
        tty.close()
        os.close(master)
    said = got.decode(errors="replace")
    assert s["processed"] == 2 and s["nonfinite_inputs"] == 1, s
    assert "200 samples of the input were not numbers" in said, said
    assert "\r\033[Kwarning: " in said, repr(said)  # was "…ETA 0:00:00warning: …"


def test_a_ray_workers_warning_to_a_hung_up_terminal_loses_no_file(tmp_path, ray_one_cpu, monkeypatch):
    """After a hang-up (SIGHUP: the batch goes on to finish its files in progress) a Ray worker's
    warning met the terminal's EIO: the batch ended with a traceback, that file's result not logged."""
    src = tmp_path / "in"
    _clean_then_nan(src)
    master, slave = pty.openpty()
    hung_up = os.fdopen(slave, "w")
    os.close(master)
    out = tmp_path / "hup"
    try:
        monkeypatch.setattr(sys, "stderr", hung_up)
        s = run_batch([src], out, BatchOptions(preset="default", streams=1), ray_address=ray_one_cpu,
                      progress=False, stream=hung_up)
    finally:
        monkeypatch.undo()
        try:
            hung_up.close()
        except OSError:
            pass
    assert (s["processed"], s["failed"], s["nonfinite_inputs"]) == (2, 0, 1), s
    logged = [json.loads(line)["output"] for line in (out / LOG_NAME).read_text().splitlines()]
    assert sorted(os.path.basename(o) for o in logged) == ["long.wav", "nan.wav"]
    assert not (out / QUEUED_NAME).exists()


def test_an_output_folder_moved_elsewhere_resumes(tmp_path):
    """The log's records were found by their absolute paths only: the folder moved (another disk, a
    share mounted at another path) held outputs "which no earlier batch wrote", and only --force, every
    file again, went past it."""
    _tone(tmp_path / "lib" / "a.wav")
    _tone(tmp_path / "lib" / "sub" / "b.wav", freq=300)
    first = run_batch([tmp_path / "lib"], tmp_path / "out", BatchOptions(), jobs=1, progress=False)
    assert first["processed"] == 2 and first["failed"] == 0
    os.rename(tmp_path / "out", tmp_path / "moved")
    again = run_batch([tmp_path / "lib"], tmp_path / "moved", BatchOptions(), jobs=1, progress=False)
    assert (again["skipped"], again["processed"]) == (2, 0), again
    os.utime(tmp_path / "lib" / "a.wav", ns=(1, 1))  # a changed input is still done again, in the moved folder
    third = run_batch([tmp_path / "lib"], tmp_path / "moved", BatchOptions(), jobs=1, progress=False)
    assert (third["skipped"], third["processed"]) == (1, 1), third


def test_a_manifest_path_with_a_nul_is_one_line(tmp_path, capsys):
    """A NUL in a row's input or output raised ValueError ("embedded null byte") out of the planner."""
    _tone(tmp_path / "a.wav")
    for row in ({"input": "a\0.wav"}, {"input": "a.wav", "output": "o\0.wav"}):
        manifest = tmp_path / "m.jsonl"
        manifest.write_text(json.dumps(row) + "\n")
        err = _one_error_line(capsys, ["batch", str(manifest), "--out", str(tmp_path / "out"), "--no-progress"])
        assert "row 1" in err and "NUL character" in err, err
    assert not (tmp_path / "out").exists()


def test_a_jsonl_manifest_with_a_byte_order_mark_is_read(tmp_path):
    """Windows tools (PowerShell's Out-File -Encoding utf8, Notepad) start UTF-8 with a byte-order
    mark: a CSV's was skipped, a JSONL's line 1 was refused ("Unexpected UTF-8 BOM")."""
    _tone(tmp_path / "a.wav")
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\xef\xbb\xbf" + json.dumps({"input": "a.wav", "set": "gain.gain_db=-3"}).encode() + b"\n")
    tasks = plan_batch([manifest], tmp_path / "out", BatchOptions())
    assert [os.path.basename(t.input) for t in tasks] == ["a.wav"]
    assert tasks[0].preset["chain"][1]["params"]["gain_db"] == -3

