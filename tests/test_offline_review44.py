"""`process` and `batch` on a FLAC whose header does not give its length (total samples 0: written to
a pipe by `flac -` or `ffmpeg -f flac -`, or left so by a writer that stopped on a full disk).
libsndfile calls its length 2^63 frames: a run sized its output by that and failed with a traceback
(numpy's "array is too big"), and the plan's ETA was years. Each test failed before its fix."""
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.run.audio_input import UNKNOWN_FRAMES
from realtime.run.batch import BatchOptions, plan_batch
from realtime.run.offline import process_file

from .test_offline_review38 import _clean, _tone, process_through

SR = 44100
LENGTH = 3 * SR + 123


def _unsized(data: bytes) -> bytes:
    """A FLAC's bytes with its STREAMINFO's total samples set to 0 ("unknown")."""
    b = bytearray(data)
    assert b[:4] == b"fLaC" and b[4] & 0x7F == 0  # the first metadata block: STREAMINFO
    fields = int.from_bytes(b[18:26], "big")  # rate (20 bits), channels (3), bits (5), total samples (36)
    b[18:26] = (fields & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(b)


@pytest.fixture
def song(tmp_path) -> tuple[Path, Path]:
    """(a FLAC, the same bytes with no length in the header)."""
    whole, unsized = tmp_path / "song.flac", tmp_path / "unsized.flac"
    sf.write(whole, _tone(SR, LENGTH), SR, subtype="PCM_16")
    unsized.write_bytes(_unsized(whole.read_bytes()))
    assert sf.info(str(unsized)).frames >= UNKNOWN_FRAMES  # what libsndfile makes of it
    return whole, unsized


@pytest.mark.parametrize("through", ["file", "pipe"])
def test_a_flac_whose_header_gives_no_length_is_processed_whole(tmp_path, capsys, song, through):
    """Every frame, to the last: libsndfile cannot seek such a file to its end, so the read that
    reached it failed (soundfile seeks after each read) and its frames were lost."""
    whole, unsized = song
    process_file(whole, tmp_path / "ref.wav", _clean(), progress=False)
    capsys.readouterr()
    out = tmp_path / "out.wav"
    report = process_through(unsized, out, through)
    assert report["frames"] == report["frames_read"] == LENGTH and not report["truncated"]
    assert capsys.readouterr().err == ""
    assert np.array_equal(sf.read(out)[0], sf.read(tmp_path / "ref.wav")[0])


def test_a_cut_flac_whose_header_gives_no_length_keeps_what_decodes(tmp_path, capsys, song):
    """The full disk's case: the writer never came back to fill in the length, and the file ends
    mid-frame. What decodes is processed (as of the same file with its length), said in one line,
    and the output is as long as that."""
    whole, unsized = song
    keep = len(whole.read_bytes()) * 6 // 10
    sized_cut, cut = tmp_path / "sized_cut.flac", tmp_path / "cut.flac"
    sized_cut.write_bytes(whole.read_bytes()[:keep])
    cut.write_bytes(unsized.read_bytes()[:keep])
    ref = process_file(sized_cut, tmp_path / "ref.wav", _clean(), progress=False)
    assert ref["truncated"] and 0 < ref["frames_read"] < LENGTH
    capsys.readouterr()
    report = process_file(cut, tmp_path / "out.wav", _clean(), progress=False)
    err = capsys.readouterr().err
    assert report["truncated"] and report["frames"] == report["frames_read"] == ref["frames_read"]
    assert err.count("\n") == 1 and f"cut.flac: decoding stopped after {ref['frames_read'] / SR:.1f} s" in err and "cut file" in err, err
    y, expected = sf.read(tmp_path / "out.wav")[0], sf.read(tmp_path / "ref.wav")[0]
    good = ref["frames_read"] - 1000  # the chain's look-ahead sees the end
    assert len(y) == ref["frames_read"] and np.abs(y[:good] - expected[:good]).max() < 1e-6


def test_the_plan_counts_a_length_no_header_gives(tmp_path, song):
    whole, unsized = song
    (tmp_path / "in").mkdir()
    unsized.rename(tmp_path / "in" / "unsized.flac")
    task, = plan_batch([tmp_path / "in"], tmp_path / "out", BatchOptions())
    assert task.audio_s == pytest.approx(LENGTH / SR)


def test_a_flac_without_its_length_and_a_name_not_in_utf8_is_processed(tmp_path, song):
    """Opened again by its name as text, which soundfile encodes as strict UTF-8: a traceback."""
    whole, unsized = song
    odd = tmp_path / os.fsdecode(b"caf\xe9.flac")
    unsized.rename(odd)
    report = process_file(odd, tmp_path / "out.wav", _clean(), progress=False)
    assert report["frames"] == report["frames_read"] == LENGTH
    (tmp_path / "in").mkdir()
    odd.rename(tmp_path / "in" / odd.name)
    task, = plan_batch([tmp_path / "in"], tmp_path / "out", BatchOptions())
    assert task.audio_s == pytest.approx(LENGTH / SR)
