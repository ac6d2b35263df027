"""Inputs, review 39: joined MP3 files and chained Ogg streams read whole (libsndfile read their
first part alone, without a word), a rest that cannot be read said in one line, a damaged later
part kept up to the damage, an I/O error under a WAV read whole (no callback traceback), and the
helpers that give an Opus output a clean end. Each test failed before its fix."""
import errno
import io
import os
import struct
import sys

import numpy as np
import pytest
import soundfile as sf

from realtime.dsp.presets import build_chain, load_preset
from realtime.run import audio_input
from realtime.run.audio_input import WavAudio, open_input, salvage
from realtime.run.offline import process_file

from .test_offline_edges import _feed
from .test_offline_review38 import decodable_frames


def _clean():
    return build_chain(load_preset("clean"))


def _tone(sr, n, f, ch=1, amp=0.3):
    x = amp * np.sin(2 * np.pi * f * np.arange(n) / sr)
    return np.repeat(x[:, None], ch, 1).astype(np.float32)


def _encoded(x, sr, fmt, subtype=None, title=None) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", sr, x.shape[1], format=fmt, subtype=subtype) as f:
        if title:
            f.title = title
        f.write(x)
    return buf.getvalue()


def _frames(data: bytes) -> int:
    with sf.SoundFile(io.BytesIO(data)) as f:
        return f.frames


def _pitch(y, sr, at_s) -> float:
    seg = y[int(at_s * sr): int(at_s * sr) + 8192]
    seg = seg if seg.ndim == 1 else seg[:, 0]
    return np.argmax(np.abs(np.fft.rfft(seg * np.hanning(len(seg))))) * sr / len(seg)


def _run(tmp_path, name, data, through="file"):
    src, out = tmp_path / name, tmp_path / "out.flac"
    src.write_bytes(data)
    if through == "file":
        return process_file(src, out, _clean(), progress=False), out
    fifo = tmp_path / f"pipe{src.suffix}"
    os.mkfifo(fifo)
    writer = _feed(fifo, data)
    report = process_file(fifo, out, _clean(), progress=False)
    writer.join(10)
    return report, out


# ------------------------------------------------------------------------------ 1: joined MP3, chained Ogg

@pytest.mark.parametrize("through", ["file", "pipe"])
@pytest.mark.parametrize("fmt, subtype, sr", [("MP3", None, 44100), ("OGG", "VORBIS", 44100), ("OGG", "OPUS", 48000)])
def test_joined_mp3_files_and_chained_ogg_streams_are_processed_whole(tmp_path, capsys, fmt, subtype, sr, through):
    """`cat a.mp3 b.mp3 > j.mp3` (players play it through) and chained Ogg (a stream recording, or
    two files joined): libsndfile read the first part alone; the output stopped there, and nothing
    said so. Every part is read now, the first part's tags kept."""
    a = _encoded(_tone(sr, sr, 440), sr, fmt, subtype, title="First")
    b = _encoded(_tone(sr, sr * 3 // 2, 660), sr, fmt, subtype)
    c = _encoded(_tone(sr, sr // 2, 880), sr, fmt, subtype)
    whole = _frames(a) + _frames(b) + _frames(c)
    report, out = _run(tmp_path, "joined.mp3" if fmt == "MP3" else "chained.ogg", a + b + c, through)
    assert report["frames"] == report["frames_read"] == whole and not report["truncated"]
    assert "warning" not in capsys.readouterr().err
    y = sf.read(out)[0]
    assert [round(_pitch(y, sr, s) / 110) for s in (0.5, 1.5, 2.2, 2.6)] == [4, 6, 6, 8]  # 440, 660, 660, 880 Hz
    with sf.SoundFile(out) as f:
        assert f.title == "First"


@pytest.mark.parametrize("through", ["file", "pipe"])
def test_a_joined_file_whose_rest_cannot_be_read_says_so_in_one_line(tmp_path, capsys, through):
    """A part at another rate (or channel count) is not read: one line says where the file goes on,
    in seconds and bytes, and the run is marked cut. Bytes after an MP3 that are no audio say nothing.
    Through a pipe the first part is read whole too (the parts' scan had moved the spool under
    libsndfile: 47 of 44,100 frames, the rest written as silence)."""
    a = _encoded(_tone(44100, 44100, 440), 44100, "MP3")
    b = _encoded(_tone(48000, 48000, 660), 48000, "MP3")
    report, out = _run(tmp_path, "rates.mp3", a + b, through)
    assert np.abs(sf.read(out)[0][-4410:]).max() > 0.1  # sound to its end, no silence written
    err = capsys.readouterr().err.splitlines()
    said = [line for line in err if line.startswith("warning")]
    name = "rates.mp3" if through == "file" else "pipe.mp3"
    assert len(said) == 1 and f"{name}: the file goes on past its first 1.0 s" in said[0], err
    assert f"({len(a)} of {len(a) + len(b)} bytes)" in said[0] and "48000 Hz" in said[0]
    assert report["truncated"] and report["frames"] == _frames(a)
    stereo = _encoded(_tone(44100, 44100, 660, ch=2), 44100, "MP3")
    _run(tmp_path, "stereo.mp3", a + stereo)
    assert "with a stereo part; that rest is not processed" in capsys.readouterr().err
    report, _ = _run(tmp_path, "padded.mp3", a + bytes(5000))
    assert not report["truncated"] and "warning" not in capsys.readouterr().err


def _ogg_pages(data: bytes) -> list[tuple[int, int]]:
    pages, pos = [], 0
    while pos < len(data):
        n = data[pos + 26]
        pages.append((pos, 27 + n + sum(data[pos + 27: pos + 27 + n])))
        pos += pages[-1][1]
    return pages


def test_a_damaged_later_part_keeps_every_frame_that_decodes(tmp_path):
    """A decoding error in the second link of a chained Opus file: what decodes before it is kept
    (read again through the parts opened anew), the rest written as silence and said."""
    from realtime.io.files import ogg_crc

    a = _encoded(_tone(48000, 48000, 440), 48000, "OGG", "OPUS")
    b = bytearray(_encoded(_tone(48000, 48000 * 4, 660), 48000, "OGG", "OPUS"))
    pages = _ogg_pages(bytes(b))
    (at, length), before = pages[3], struct.unpack_from("<q", b, pages[2][0] + 6)[0]
    struct.pack_into("<q", b, at + 6, before + 100)  # a page's position short of the audio it holds
    b[at + 22: at + 26] = bytes(4)
    b[at + 22: at + 26] = struct.pack("<I", ogg_crc(bytes(b[at: at + length])))
    decodable = decodable_frames(bytes(b), 256)
    assert 0 < decodable < 48000 * 4
    report, out = _run(tmp_path, "damaged.opus", a + bytes(b))
    assert report["truncated"] and report["frames_read"] == 48000 + decodable
    y = sf.read(out)[0]
    assert np.abs(y[48000 + decodable - 3000: 48000 + decodable - 1000]).max() > 0.1


# ------------------------------------------------------------------------------ 2: a WAV read whole, an I/O error

def _wav_with_data_size_0(path, x, sr):
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    i = data.find(b"data")
    data[i + 4: i + 8] = bytes(4)  # a recorder that crashed: libsndfile reads none of it (``WavAudio``)
    path.write_bytes(bytes(data))
    return i + 8


class _FailingFile(io.FileIO):
    """A file whose reads past ``FAIL_AT`` fail as a failing disk's do (EIO)."""
    FAIL_AT = 0

    def readinto(self, b):
        if self.tell() >= self.FAIL_AT:
            raise OSError(errno.EIO, "Input/output error")
        return super().readinto(b)


def test_an_io_error_under_a_wav_read_whole_ends_it_without_a_traceback(tmp_path, capsys, monkeypatch):
    """A WAV read as RAW past its header (``WavAudio``) reads through a Python file: an EIO there went
    to stderr as "Exception ignored from cffi callback" and a traceback, once per read. It ends the
    audio there now, as libsndfile's own read errors do: the frames before it kept, one line said."""
    sr = 48000
    src = tmp_path / "crashed.wav"
    start = _wav_with_data_size_0(src, _tone(sr, sr * 2, 440), sr)
    _FailingFile.FAIL_AT = start + 100000
    monkeypatch.setattr(audio_input, "open", lambda p, *a, **k: _FailingFile(p, "rb"), raising=False)
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    report = process_file(src, tmp_path / "out.wav", _clean(), progress=False)
    assert not unraisable, [u.exc_value for u in unraisable]
    assert report["truncated"] and 100000 // 2 <= report["frames_read"] < sr * 2
    assert "the file ended after" in capsys.readouterr().err


def test_salvage_reads_a_wav_read_whole_again(tmp_path):
    """``salvage`` opened a ``WavAudio`` again by its name, a file object libsndfile cannot open
    without RAW's settings: nothing came back. It is reopened as it was opened."""
    sr = 48000
    src = tmp_path / "crashed.wav"
    x = _tone(sr, sr, 440)
    _wav_with_data_size_0(src, x, sr)
    f, _ = open_input(src)
    try:
        assert isinstance(f, WavAudio)
        got = salvage(f, 1000, 5000)
    finally:
        f.close()
    assert got.shape == (5000, 1) and np.abs(got - x[1000:6000]).max() < 1e-4


# ------------------------------------------------------------------------------ 3: an Opus output's end

@pytest.mark.parametrize("sr, cut", [(48000, 0), (48000, 2953), (16000, 0), (16000, 611)])
def test_an_opus_output_padded_and_trimmed_ends_clean(tmp_path, sr, cut):
    """libsndfile's Opus encoder garbles the last ~5 ms of audio that does not end in silence (it
    encodes its last frame again to push its look-ahead out: 0.07 to 0.17 off on average there,
    for these lengths). Silence after the audio (``opus_end_padding``), trimmed again once the
    file is closed (``trim_opus_end``: the last page's granule position), leaves those 5 ms as
    close as the rest (the audio's abrupt end itself costs Opus a little: 0.01)."""
    from realtime.io.files import opus_end_padding, trim_opus_end

    n = sr - cut
    t = np.arange(n) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1500 * t)).astype(np.float32)[:, None]
    out = tmp_path / "out.opus"
    pad = opus_end_padding("OGG", "OPUS", sr)
    assert pad == -(-312 * sr // 48000) and opus_end_padding("OGG", "VORBIS", sr) == 0
    with sf.SoundFile(out, "w", sr, 1, format="OGG", subtype="OPUS") as f:
        f.write(x)
        f.write(np.zeros((pad, 1), np.float32))
    assert trim_opus_end(out, n)
    y = sf.read(out, dtype="float32", always_2d=True)[0]
    assert len(y) == n
    k = sr // 200
    assert np.abs(y[-k:] - x[-k:]).mean() < 0.015


def test_trim_opus_end_leaves_other_files_alone(tmp_path):
    from realtime.io.files import trim_opus_end

    vorbis = tmp_path / "v.ogg"
    sf.write(vorbis, _tone(48000, 4800, 440), 48000, format="OGG", subtype="VORBIS")
    before = vorbis.read_bytes()
    assert not trim_opus_end(vorbis, 4000) and vorbis.read_bytes() == before
    opus = tmp_path / "o.opus"
    sf.write(opus, _tone(48000, 96000, 440), 48000, format="OGG", subtype="OPUS")
    before = opus.read_bytes()
    assert not trim_opus_end(opus, 1000) and opus.read_bytes() == before  # before the last page: not an end trim


def test_a_midi_render_to_opus_cut_at_the_files_end_keeps_its_last_5_ms(tmp_path):
    """``synth`` with ``--tail 0`` ends where the file does, mid-note: the Opus file's last 5 ms
    are as close to the WAV render as the rest (``RenderWriter`` pads, ``render_midi`` trims)."""
    from realtime.run.offline import render_midi

    from .test_synth_render_end import SR, on, song, synth_chain

    mid = song(tmp_path / "held.mid", [(0, on(60))], 2)
    wav, opus = tmp_path / "r.wav", tmp_path / "r.opus"
    render_midi(mid, wav, synth_chain(), SR, 128, tail_s=0)
    render_midi(mid, opus, synth_chain(), SR, 128, tail_s=0)
    x = sf.read(wav, dtype="float32", always_2d=True)[0]
    y = sf.read(opus, dtype="float32", always_2d=True)[0]
    assert len(y) == len(x) == SR
    k = SR // 200
    body = np.abs(y[SR // 2:SR // 2 + k] - x[SR // 2:SR // 2 + k]).mean()
    assert np.abs(y[-k:] - x[-k:]).mean() < 1.5 * body  # garbled: twice the body's error


def test_a_recording_to_opus_keeps_its_last_5_ms(tmp_path):
    """``run --record take.opus``: the recorder pads and trims as the file writers do, so the take
    decodes to what was recorded, its end as clean as the rest."""
    from realtime.io.recorder import FileRecorder

    sr, n = 48000, 48000 - 960  # libsndfile alone: the last 5 ms 0.11 off on average (0.002 at 47,700)
    t = np.arange(n) / sr
    x = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None], 2, axis=1)
    rec = FileRecorder(str(tmp_path / "take.opus"), sr, 2, format="OGG", subtype="OPUS")
    for s in range(0, n, 4096):  # the ring holds 4 s: all of it fits
        assert rec.ring.push(x[s:s + 4096]) == len(x[s:s + 4096])
    rec.close()
    y = sf.read(tmp_path / "take.opus", dtype="float32", always_2d=True)[0]
    assert len(y) == n and [p.name for p in tmp_path.iterdir()] == ["take.opus"]
    k = sr // 200
    body = np.abs(y[sr // 2:sr // 2 + k] - x[sr // 2:sr // 2 + k]).mean()
    assert np.abs(y[-k:] - x[-k:]).mean() < max(1.5 * body, 0.02)


@pytest.mark.parametrize("n", [505402, 48000 - 77])
def test_process_writes_an_opus_file_of_the_inputs_length_its_end_clean(tmp_path, n):
    """End to end (``process`` with an empty chain): the padding and the trim are wired into the
    writer, so the file decodes to the input's length, its last 5 ms as clean as the rest. At
    505,402 frames libsndfile ends a page right after the audio, and the last page holds only the
    padding: the end was refused ("reads back 505714 of 505402 frames", nothing written). That page
    becomes the last one."""
    from realtime.dsp.chain import Chain

    sr = 48000
    x = (0.2 * np.sin(2 * np.pi * 330 * np.arange(n) / sr)).astype(np.float32)[:, None]
    src, out = tmp_path / "in.wav", tmp_path / "out.opus"
    sf.write(src, x, sr, subtype="FLOAT")
    process_file(src, out, Chain([]), progress=False)
    y = sf.read(out, dtype="float32", always_2d=True)[0]
    assert len(y) == n
    k = sr // 200
    assert np.abs(y[-k:] - x[-k:]).mean() < 0.015
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.opus"]
