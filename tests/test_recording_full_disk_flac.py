"""A FLAC take cut by a full disk is kept readable (live review 48)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from realtime.errors import RecordingError
from realtime.io.flac_repair import repair_cut_flac

SR = 48000


def _noise(seconds: float) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal((int(seconds * SR), 2))).astype(np.float32)


def test_a_flac_cut_mid_frame_is_cut_back_to_its_last_whole_frame_and_reads(tmp_path):
    """Its length unknown (libsndfile said 2^63 - 1 frames, sf.read failed) and its last frame cut
    (the decoder lost sync): repaired in place, it reads back as what was recorded up to the cut."""
    x = _noise(3.0)
    sf.write(tmp_path / "full.flac", x, SR, subtype="PCM_24")
    data = bytearray((tmp_path / "full.flac").read_bytes())
    word = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # as a writer cut short leaves it
    data[18:26], data[26:42] = word.to_bytes(8, "big"), bytes(16)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(bytes(data[: int(len(data) * 0.61)]))
    with pytest.raises(Exception):
        sf.read(cut)
    n = repair_cut_flac(cut)
    assert n is not None and 0.5 * len(x) < n < 0.65 * len(x) and n % 4096 == 0
    y = sf.read(cut, dtype="float32")[0]
    assert len(y) == n and np.abs(y - x[:n]).max() < 1e-6
    assert repair_cut_flac(tmp_path / "full.flac") is not None  # (a whole file: its last frame dropped, no more)
    (tmp_path / "x.wav").write_bytes(b"RIFF....WAVE")
    assert repair_cut_flac(tmp_path / "x.wav") is None


def test_a_flac_recording_stopped_by_a_full_disk_keeps_a_take_that_reads(small_disk):
    """`run --record take.flac` on a disk that filled: "what was written is kept", and the kept file
    said 2^63 - 1 frames, failed sf.read, and decoded 1.1 s of 1.3."""
    from realtime.io.recorder import FileRecorder

    rec = FileRecorder(str(small_disk / "take.flac"), SR, 2, format="FLAC", subtype="PCM_24")
    x = _noise(4.0)  # far more than 96 kB of FLAC
    for s in range(0, len(x), 4096):
        while rec.ring.push(x[s:s + 4096]) == 0 and rec.error is None:
            time.sleep(0.01)
        if rec.error is not None:
            break
    with pytest.raises(RecordingError, match="what was written is kept"):
        rec.close()
    y = sf.read(small_disk / "take.flac", dtype="float32")[0]
    assert 0 < len(y) <= rec.frames and np.abs(y - x[:len(y)]).max() < 1e-6


def test_what_a_slow_disk_made_the_engine_drop_is_recorded_as_silence_in_its_place(tmp_path, monkeypatch):
    """A disk that could not keep up: the engine dropped what found no room in the recorder's ring,
    and the take was shorter by it (0.56 s of 12 s), everything after it early against any other
    recording of the same session. The engine logs where it dropped (``TapGaps``); the recorder puts
    that much silence there."""
    import threading

    from realtime.engine.ring import WRITE
    from realtime.io.recorder import FileRecorder

    stalled = threading.Event()
    real_write = FileRecorder._write

    def slow_write(self, frames):
        while stalled.is_set():
            time.sleep(0.005)
        real_write(self, frames)

    monkeypatch.setattr(FileRecorder, "_write", slow_write)
    rec = FileRecorder(str(tmp_path / "take.wav"), SR, 2, seconds_buffer=0.05)
    x = _noise(2.0)
    B = 256
    dropped = np.zeros(len(x), bool)
    stalled.set()
    for s in range(0, len(x), B):  # as the engine's DSP thread pushes: never waiting
        if s >= SR and stalled.is_set():
            stalled.clear()  # the disk is back after a second
        if s >= SR:
            time.sleep(0.001)
        pushed = rec.ring.push(x[s:s + B])
        if pushed < B:
            dropped[s + pushed:s + B] = True
            rec.ring.gaps.add(int(rec.ring.idx[WRITE]), B - pushed)
    rec.close()
    y = sf.read(tmp_path / "take.wav", dtype="float32")[0]
    assert dropped.sum() > SR // 2 and rec.silence_frames == dropped.sum() and rec.ring.gaps.unplaced == 0
    assert len(y) == len(x)  # the take keeps its length: nothing after the gap moved
    np.testing.assert_array_equal(y[~dropped], x[~dropped])
    assert not y[dropped].any()
