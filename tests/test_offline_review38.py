"""`process` at its edges, review 38: WAV past 4 GiB (out and in), a NaN before the resampler, an
output that is a pipe or a device, a WAV whose data size says 0, a cut FLAC's last good frames, cut
AIFF/RF64/W64/AU inputs, MP3 tags, and `synth`'s wording. Each test failed before its fix."""
import io
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.dsp.presets import build_chain, load_preset
from realtime.errors import OfflineError
from realtime.run import offline
from realtime.run.audio_input import open_input
from realtime.run.offline import plan_render, process_file

from .test_offline_edges import _feed


def _clean():
    return build_chain(load_preset("clean"))


def _tone(sr, n, ch=2, amp=0.3, f=440.0):
    t = np.arange(n) / sr
    x = amp * np.sin(2 * np.pi * f * t)[:, None] * np.linspace(1.0, 0.5, ch)[None, :]
    return x.astype(np.float32)


def _wav_with_data_size(x, sr, subtype, size, title=None) -> bytes:
    """``x`` as a WAV whose data chunk's size field says ``size`` (and the RIFF size too, if 0xFFFFFFFF)."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", sr, x.shape[1], format="WAV", subtype=subtype) as f:
        if title:
            f.title = title
        f.write(x)
    data = bytearray(buf.getvalue())
    i = data.find(b"data")
    data[i + 4:i + 8] = struct.pack("<I", size)
    if size == 0xFFFFFFFF:
        data[4:8] = struct.pack("<I", size)
    return bytes(data)


# ------------------------------------------------------------------------------ 1a: a WAV output past 4 GiB

def test_a_wav_output_past_4_gib_is_written_as_rf64_decided_before_any_work(tmp_path, capsys, monkeypatch):
    """libsndfile wrote the WAV, and it read back 4 GiB of it: refused after all the work ("the file reads
    back 268435455 of 269435456 frames"). Now RF64 from the start, said in one line; an AIFF, which has no
    64-bit form (it read back what its size wrapped to), is refused before any work. The limit is lowered
    here: 4 GiB of test audio would take minutes."""
    src, out = tmp_path / "in.wav", tmp_path / "out.wav"
    x = _tone(48000, 2000)
    sf.write(src, x, 48000, subtype="FLOAT")
    ref = tmp_path / "ref.wav"
    process_file(src, ref, _clean(), progress=False)
    capsys.readouterr()
    monkeypatch.setattr(offline, "RIFF_AUDIO_MAX", 2000 * 2 * 4 - 1)  # one byte short of the audio
    report = process_file(src, out, _clean(), progress=False)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "RF64" in err[0] and str(out) in err[0], err
    info = sf.info(out)
    assert (info.format, info.subtype, info.frames, report["frames"]) == ("RF64", "FLOAT", 2000, 2000)
    np.testing.assert_array_equal(sf.read(out)[0], sf.read(ref)[0])
    monkeypatch.setattr(offline, "RIFF_AUDIO_MAX", 2000 * 2 * 4)  # it fits: WAV, not a word
    capsys.readouterr()
    process_file(src, out, _clean(), progress=False)
    assert sf.info(out).format == "WAV" and capsys.readouterr().err == ""
    monkeypatch.setattr(offline, "RIFF_AUDIO_MAX", 100)

    class Unprepared:  # refused before any work: the chain is never prepared
        slots = ()

        def prepare(self, *args):
            raise AssertionError("the chain was prepared")

    with pytest.raises(OfflineError, match=r"more than an AIFF file holds \(4 GiB\); write \.rf64, \.w64 or \.flac$"):
        process_file(src, tmp_path / "out.aiff", Unprepared(), progress=False)
    assert not (tmp_path / "out.aiff").exists()
    for name in ("r.wav", "r.flac", "r.w64"):  # a render's longest length decides it too
        with offline.open_render(tmp_path / name, Path(name), 48000, frames=1000) as f:
            f.write(np.zeros((10, 2), np.float32))
    assert [sf.info(tmp_path / n).format for n in ("r.wav", "r.flac", "r.w64")] == ["RF64", "FLAC", "W64"]


# ------------------------------------------------------------------------------ 1b: a WAV input past 4 GiB

def test_a_wav_past_4_gib_with_a_streaming_header_is_read_whole(tmp_path, capsys):
    """A WAV of more than 4 GiB whose data size says 0xFFFFFFFF (a streaming header: ffmpeg, sox) was
    read as its first 4 GiB (1073741823 frames here), not truncated, without a word. A sparse file: no
    disk is used for its 4 GiB of silence."""
    big = tmp_path / "big.wav"
    head = _wav_with_data_size(np.zeros((1, 2), np.float32), 48000, "PCM_16", 0xFFFFFFFF)[:-4]  # the header alone
    size = (4 << 30) + (1 << 20)
    end = np.tile(np.array([[1000, -1000]], np.int16), (500, 1))
    with open(big, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
        fh.seek(size - end.nbytes)
        fh.write(end.tobytes())
    if big.stat().st_blocks * 512 > 64 << 20:
        big.unlink()
        pytest.skip("this file system does not keep sparse files")
    f, cut = open_input(big)
    try:
        assert f.frames == (size - len(head)) // 4 > 0xFFFFFFFF // 4 and cut is False
        assert capsys.readouterr().err == ""
        f.seek(f.frames - 501)
        y = f.read(501, dtype="int16")
        assert y[0].tolist() == [0, 0] and (y[1:] == end).all()
        assert f.copy_metadata() == {}
    finally:
        f.close()
        big.unlink()


# ------------------------------------------------------------------------------ 4: a WAV whose data size says 0

@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_a_wav_whose_data_size_says_0_is_processed_with_a_warning(tmp_path, capsys, subtype):
    """A recorder that crashed (or is still writing) leaves the data chunk's size at 0 with the audio
    after it: refused as "contains no audio frames". Now read to the end of the file, as a cut WAV is:
    the same output as the whole file's, its tags kept, truncated and said in one line."""
    x = _tone(48000, 24000)
    whole, crashed = tmp_path / "whole.wav", tmp_path / "crashed.wav"
    whole.write_bytes(_wav_with_data_size(x, 48000, subtype, _bytes(subtype) * x.size, "Take 1"))
    crashed.write_bytes(_wav_with_data_size(x, 48000, subtype, 0, "Take 1"))
    ref = process_file(whole, tmp_path / "ref.wav", _clean(), progress=False)
    assert ref["frames"] == 24000 and not ref["truncated"]
    capsys.readouterr()
    report = process_file(crashed, tmp_path / "out.wav", _clean(), progress=False)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "0 bytes" in err[0] and "processing what is there" in err[0], err
    assert (report["frames"], report["frames_read"], report["truncated"]) == (24000, 24000, True)
    np.testing.assert_array_equal(sf.read(tmp_path / "out.wav")[0], sf.read(tmp_path / "ref.wav")[0])
    with sf.SoundFile(tmp_path / "out.wav") as f:
        assert f.title == "Take 1"


def _bytes(subtype):
    return {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}[subtype]


# ------------------------------------------------------------------------------ 2: a NaN before the resampler

def test_a_nan_in_a_resampled_input_damages_nothing_around_it(tmp_path, capsys):
    """A 22.05 kHz file runs at 48 kHz: the input resampler spread one NaN over 67 ms of output before the
    safety stage scrubbed it, without a word. Now the input's non-finite samples are 0 before the
    resampler: the output is the one of the file with a 0 there, and one line says it."""
    x = _tone(22050, 22050 * 2)
    zero = x.copy()
    x[22050, 0] = np.nan
    zero[22050, 0] = 0.0
    sf.write(tmp_path / "nan.wav", x, 22050, subtype="FLOAT")
    sf.write(tmp_path / "zero.wav", zero, 22050, subtype="FLOAT")
    process_file(tmp_path / "zero.wav", tmp_path / "ref.wav", _clean(), progress=False)
    capsys.readouterr()
    report = process_file(tmp_path / "nan.wav", tmp_path / "out.wav", _clean(), progress=False)
    err = capsys.readouterr().err.splitlines()
    assert report["chain_samplerate"] == 48000 and report["nonfinite_input_samples"] == 1
    assert len(err) == 1 and "1 samples" in err[0] and "NaN" in err[0], err
    np.testing.assert_array_equal(sf.read(tmp_path / "out.wav")[0], sf.read(tmp_path / "ref.wav")[0])


def test_a_nan_in_files_side_by_side_is_zeroed_before_the_resampler(tmp_path, capsys):
    """The batch's streams read the input themselves: the same scrub, the same line."""
    from realtime.run.batch import BatchOptions, plan_batch, run_unit
    from realtime.run.batch_plan import group_tasks

    src = tmp_path / "in"
    src.mkdir()
    x = _tone(22050, 22050, ch=1)
    zero = x.copy()
    x[11025] = np.nan
    zero[11025] = 0.0
    sf.write(src / "a.wav", x, 22050, subtype="FLOAT")
    sf.write(src / "b.wav", zero, 22050, subtype="FLOAT")
    (unit,) = group_tasks(plan_batch([src], tmp_path / "out", BatchOptions(preset="voice", streams=2)), 2)
    capsys.readouterr()
    results = {Path(r["input"]).name: r for r in run_unit(unit)}
    assert results["a.wav"]["nonfinite_input_samples"] == 1 and results["b.wav"]["nonfinite_input_samples"] == 0
    assert sum("NaN" in line for line in capsys.readouterr().err.splitlines()) == 1
    np.testing.assert_array_equal(sf.read(tmp_path / "out" / "a.wav")[0], sf.read(tmp_path / "out" / "b.wav")[0])


# ------------------------------------------------------------------------------ 3: an output that is a pipe or a device

def test_an_output_that_is_a_pipe_or_a_device_is_refused(tmp_path):
    """An existing FIFO was replaced by a regular file (its reader waited forever); a link to /dev/null
    the same. Refused in one line, before any work; the FIFO is left as it was."""
    src = tmp_path / "in.wav"
    sf.write(src, _tone(48000, 4800), 48000)
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    with pytest.raises(OfflineError, match=r"fifo\.wav: is a pipe \(FIFO\), not a file; give a file name"):
        process_file(src, fifo, _clean(), progress=False)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    null = tmp_path / "null.wav"
    null.symlink_to(os.devnull)
    with pytest.raises(OfflineError, match=r"null\.wav: is a device, not a file"):
        process_file(src, null, _clean(), progress=False)
    assert null.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["fifo.wav", "in.wav", "null.wav"]


# ------------------------------------------------------------------------------ 5: a cut FLAC's last good frames

def decodable_frames(source, piece: int) -> int:
    """How many frames of a damaged file (a path, or bytes) libsndfile decodes: in reads of ``piece``
    frames up to the one that fails, then frame by frame from there (frame by frame throughout:
    a minute). Read onward, without the seek soundfile makes after each read of a file it can seek:
    that seek fails at the last good frame, and the frame read with it is lost (one in a 4096-frame
    FLAC block, counted before)."""
    class Onward(sf.SoundFile):
        def seekable(self):
            return False

    def opened():
        return Onward(io.BytesIO(source) if isinstance(source, bytes) else source)

    decodable = 0
    with opened() as f:
        try:
            while len(x := f.read(piece)):
                decodable += len(x)
        except sf.LibsndfileError:
            pass
    with opened() as f:
        try:
            f.seek(decodable)  # (fails next to the damage: then nothing more decodes)
            while len(f.read(1)):
                decodable += 1
        except sf.LibsndfileError:
            pass
    return decodable


def process_through(src: Path, out: Path, through: str) -> dict:
    """``process_file`` of ``src`` (the clean preset) read as a file, or (``through="pipe"``) from a
    FIFO beside it that a thread feeds with its bytes."""
    if through == "file":
        return process_file(src, out, _clean(), progress=False)
    fifo = src.with_name("pipe" + src.suffix)
    os.mkfifo(fifo)
    writer = _feed(fifo, src.read_bytes())
    report = process_file(fifo, out, _clean(), progress=False)
    writer.join(10)
    return report


@pytest.mark.parametrize("through", ["file", "pipe"])
def test_a_cut_flac_keeps_every_frame_that_decodes(tmp_path, through):
    """A decoding error ended the file at the start of the read that failed: up to 16384 good frames
    before the cut were written as silence. The failed read is done again in small pieces."""
    sr = 44100
    whole, cut = tmp_path / "song.flac", tmp_path / "cut.flac"
    sf.write(whole, _tone(sr, sr * 10), sr, subtype="PCM_16")
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 58 // 100])  # (not at a 16384-frame read: 15.5 of them decode)
    decodable = decodable_frames(cut, 1024)
    assert decodable % offline.READ_FRAMES  # a cut a plain 16384-frame read loses
    ref = tmp_path / "ref.wav"
    process_file(whole, ref, _clean(), progress=False)
    out = tmp_path / "out.wav"
    report = process_through(cut, out, through)
    assert report["truncated"] and report["frames_read"] == decodable
    assert report["frames"] == sr * 10
    y, expected = sf.read(out)[0], sf.read(ref)[0]
    good = report["frames_read"] - 1000  # the chain's look-ahead sees the silence after the cut
    assert np.abs(y[:good] - expected[:good]).max() < 1e-6
    assert np.abs(y[good - 2000:good]).max() > 0.1 and not y[report["frames_read"] + 1000:].any()


# ------------------------------------------------------------------------------ 6: cut AIFF, RF64, W64, AU

@pytest.mark.parametrize("fmt, subtype", [("AIFF", "PCM_16"), ("AIFF", "FLOAT"), ("RF64", "FLOAT"),
                                          ("W64", "PCM_24"), ("AU", "PCM_16")])
def test_a_cut_aiff_rf64_w64_or_au_is_reported(tmp_path, capsys, fmt, subtype):
    """libsndfile trims a cut file's length to what is there: only a cut WAV was said to be cut."""
    src = tmp_path / f"in.{fmt.lower()}"
    sf.write(src, _tone(48000, 24000), 48000, format=fmt, subtype=subtype)
    capsys.readouterr()
    whole = process_file(src, tmp_path / "out.wav", _clean(), progress=False)
    assert not whole["truncated"] and capsys.readouterr().err == ""
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    report = process_file(src, tmp_path / "out.wav", _clean(), progress=False)
    err = capsys.readouterr().err.splitlines()
    assert report["truncated"] and 0 < report["frames_read"] < 24000
    assert len(err) == 1 and "more bytes of audio than the file holds" in err[0], err


# ------------------------------------------------------------------------------ 7: MP3 tags

def test_mp3_tags_get_ascii_text_only(tmp_path, capsys):
    """libsndfile wrote a tag's UTF-8 bytes into the MP3's ID3v1 tag, which players read as Latin-1:
    'Tïtle ♪' came out garbled. Accents are dropped where that leaves ASCII, other text is left out,
    said in one line."""
    src, out = tmp_path / "in.flac", tmp_path / "out.mp3"
    with sf.SoundFile(src, "w", 48000, 2, subtype="PCM_16") as f:
        f.title, f.artist, f.album = "Tïtle ♪", "Beyoncé", "Plain"
        f.write(_tone(48000, 4800))
    capsys.readouterr()
    process_file(src, out, _clean(), progress=False)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "title left out" in err[0] and "artist written without its accents" in err[0], err
    tag = out.read_bytes()[-128:]  # ID3v1: "TAG", title, artist, album (30 bytes each), …, genre
    assert tag[:3] == b"TAG" and tag[:127].isascii()
    assert tag[3:33].rstrip(b"\0") == b"" and tag[33:63].rstrip(b"\0") == b"Beyonce"
    assert tag[63:93].rstrip(b"\0") == b"Plain"
    process_file(src, tmp_path / "out.flac", _clean(), progress=False)  # other formats: as they were
    assert capsys.readouterr().err == ""
    with sf.SoundFile(tmp_path / "out.flac") as f:
        assert (f.title, f.artist) == ("Tïtle ♪", "Beyoncé")


# ------------------------------------------------------------------------------ 8: synth's wording

def test_a_render_names_no_input_and_a_folder_is_a_folder(tmp_path):
    """`synth -r 44100 x.opus` said "and the input is 44100 Hz" (a render has no input); `synth IN.mid
    out/` said "unknown output format ''" where `process` says the output is a folder."""
    mid = tmp_path / "song.mid"
    mid.write_bytes(b"MThd")
    with pytest.raises(OfflineError, match=r"x\.opus: Opus holds only .* kHz audio and the render is 44100 Hz"):
        plan_render(mid, tmp_path / "x.opus", 44100)
    (tmp_path / "out").mkdir()
    with pytest.raises(OfflineError, match=r"out: is a folder; give a file name$"):
        plan_render(mid, str(tmp_path / "out") + "/", 48000)
    with pytest.raises(OfflineError, match=r"and the input is 44100 Hz"):  # process's words stay
        offline.output_format(Path("x.opus"), "PCM_16", 44100)
