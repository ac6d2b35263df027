"""An MP3 without a Xing/Info header (an old or a streaming encoder's file) is read to its real
end: libsndfile takes libmpg123's length estimate (the file's size over its first frame's) and
never reads past it, so a 10 s VBR file came out 3 s long without a word, or one whose first
frame was small came out padded with a false "ended early" warning. Each test failed before
``whole_mp3``."""
import io

import numpy as np
import pytest
import soundfile as sf

from realtime.dsp.presets import build_chain, load_preset
from realtime.io import mpg123
from realtime.io.mpg123 import Mpg123Audio
from realtime.run import audio_input
from realtime.run.audio_input import open_input
from realtime.run.offline import process_file

from .test_offline_edges import _feed

SR = 44100
VBR = {"compression_level": 0.9, "bitrate_mode": "VARIABLE"}
pytestmark = pytest.mark.skipif(mpg123.library() is None, reason="libmpg123 is not installed")


def _vbr(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", SR, x.shape[1], format="MP3", subtype="MPEG_LAYER_III", **VBR) as f:
        f.write(x)
    return buf.getvalue()


def _without_xing(data: bytes) -> bytes:
    """The file with its first frame (the Xing/Info header's) left out, as encoders without one write."""
    length, count, _ = audio_input._mp3_frame(io.BytesIO(data), 0)
    assert count is not None  # libsndfile's encoder wrote one
    return data[length:]


def _song(quiet_start_s: float = 0.0, seconds: float = 10.0) -> np.ndarray:
    """A tone whose level rises, noise in its second half (dense frames), and a 660 Hz last second."""
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * np.where(t < seconds - 1, 440, 660) * t) * np.minimum(1, t / 2)
    x += 0.08 * np.random.default_rng(0).standard_normal(t.size) * (t > seconds / 2)
    x[t < quiet_start_s] = 0
    return np.stack([x, 0.5 * x], 1).astype(np.float32)


def _decoded_frames(data: bytes) -> int:
    """What libmpg123 decodes of every frame, counted by reading it to the end."""
    with Mpg123Audio(io.BytesIO(data)) as a:
        return a.read(dtype="float32").shape[0]


def _pitch(y, at_s) -> float:
    seg = y[int(at_s * SR): int(at_s * SR) + 8192, 0]
    return np.argmax(np.abs(np.fft.rfft(seg * np.hanning(len(seg))))) * SR / len(seg)


@pytest.mark.parametrize("through", ["file", "pipe"])
def test_a_vbr_mp3_without_xing_header_is_processed_to_its_end(tmp_path, capsys, through):
    data = _without_xing(_vbr(_song()))
    with sf.SoundFile(io.BytesIO(data)) as f:
        guessed = f.frames
    whole = _decoded_frames(data)
    assert guessed < 0.6 * whole  # libsndfile's estimate: what it read before, without a word
    src, out = tmp_path / "old.mp3", tmp_path / "out.flac"
    src.write_bytes(data)
    if through == "pipe":
        import os
        src = tmp_path / "pipe.mp3"
        os.mkfifo(src)
        writer = _feed(src, data)
    report = process_file(src, out, build_chain(load_preset("clean")), progress=False)
    if through == "pipe":
        writer.join(10)
    assert report["frames"] == report["frames_read"] == whole and not report["truncated"]
    assert "warning" not in capsys.readouterr().err
    y = sf.read(out)[0]
    assert abs(y.shape[0] / SR - 10.0) < 0.1
    assert round(_pitch(y, 9.5)) in range(650, 671)  # the last second's tone is there


def test_an_estimate_too_long_is_not_padded_nor_said_as_a_cut_file(tmp_path, capsys):
    """A quiet start (small first frames): libsndfile's estimate ran far past the end, the run
    wrote silence after the music and warned that the file ended early."""
    data = _without_xing(_vbr(_song(quiet_start_s=3.0)))
    with sf.SoundFile(io.BytesIO(data)) as f:
        guessed = f.frames
    whole = _decoded_frames(data)
    assert guessed > 1.5 * whole
    src, out = tmp_path / "quiet.mp3", tmp_path / "out.wav"
    src.write_bytes(data)
    report = process_file(src, out, build_chain(load_preset("clean")), progress=False)
    assert report["frames"] == whole and not report["truncated"]
    assert "warning" not in capsys.readouterr().err


def test_an_mp3_with_its_header_is_still_libsndfiles_and_decodes_the_same(tmp_path):
    """Where a Xing/Info header counts the frames nothing changes; libmpg123 read here gives the
    same samples libsndfile gives (the same decoder with libsndfile's settings)."""
    data = _vbr(_song(seconds=3.0))
    src = tmp_path / "tagged.mp3"
    src.write_bytes(data)
    f, cut = open_input(src)
    with f:
        assert isinstance(f, sf.SoundFile) and not cut
        ref = f.read(dtype="float32", always_2d=True)
    with Mpg123Audio(src) as a:
        assert a.frames == ref.shape[0]
        assert np.array_equal(a.read(dtype="float32", always_2d=True), ref)


def test_an_mp3_read_whole_keeps_its_tags_and_reads_again_from_anywhere(tmp_path):
    x = _song(seconds=4.0)
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", SR, 2, format="MP3", **VBR) as f:
        f.title, f.artist = "Old Song", "Someone"
        f.write(x)
    data = buf.getvalue()
    id3 = 10 + int.from_bytes(bytes(b & 0x7F for b in data[6:10]), "big") if data[:3] == b"ID3" else 0
    length, _, _ = audio_input._mp3_frame(io.BytesIO(data), id3)
    src = tmp_path / "tags.mp3"
    src.write_bytes(data[:id3] + data[id3 + length:])
    f, _ = open_input(src)
    with f:
        assert isinstance(f, Mpg123Audio)
        assert f.copy_metadata().get("title") == "Old Song" and f.copy_metadata().get("artist") == "Someone"
        first = f.read(SR, dtype="float32", always_2d=True)
        with f.reopen() as again:
            assert again.frames == f.frames and np.array_equal(again.read(SR, dtype="float32", always_2d=True), first)
        assert f.seek(f.frames - 100) == f.frames - 100 and f.read(1000).shape[0] == 100


def test_without_libmpg123_the_guess_is_said(tmp_path, capsys, monkeypatch):
    data = _without_xing(_vbr(_song(seconds=4.0)))
    src = tmp_path / "old.mp3"
    src.write_bytes(data)
    monkeypatch.setattr(mpg123, "library", lambda: None)
    f, cut = open_input(src)
    f.close()
    err = capsys.readouterr().err
    assert cut is False and err.count("\n") == 1
    assert "no header gives its length, and libmpg123 (Debian: libmpg123-0) is not installed" in err


def test_the_batch_plan_counts_the_whole_length(tmp_path):
    from realtime.run.batch_plan import _read_frames

    data = _without_xing(_vbr(_song(seconds=6.0)))
    src = tmp_path / "old.mp3"
    src.write_bytes(data)
    assert _read_frames(src) == _decoded_frames(data)


def test_an_mp3_reader_dropped_unclosed_lets_its_file_go(tmp_path):
    """Its ctypes callbacks held the reader itself: each one left open kept its file until a
    garbage collection (26 of 50 descriptors)."""
    import gc
    import os

    src = tmp_path / "old.mp3"
    src.write_bytes(_without_xing(_vbr(_song(seconds=1.0))))
    gc.collect()
    gc.disable()
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            Mpg123Audio(src).read(1000)
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        gc.enable()
