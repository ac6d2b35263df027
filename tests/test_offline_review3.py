"""Review 3 of the offline runner: cut Ogg inputs, the output formats written and the rates each
holds, libsndfile's errors without the hidden temporary file's name, ``-`` for standard input.
Each test failed before its fix."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.dsp.presets import build_chain, load_preset
from realtime.errors import OfflineError
from realtime.run import offline
from realtime.run.batch import LOG_NAME, BatchOptions, run_batch
from realtime.run.offline import output_format, process_file

ROOT = Path(__file__).resolve().parent.parent


def _tone(sr, seconds, ch=2):
    t = np.arange(int(sr * seconds)) / sr
    return np.tile(0.3 * np.sin(2 * np.pi * 440 * t), (ch, 1)).T.astype(np.float32)


def _clean():
    return build_chain(load_preset("clean"))


def _ogg(path: Path, subtype: str) -> bytes:
    sf.write(path, _tone(48000, 4), 48000, format="OGG", subtype=subtype)
    return path.read_bytes()


def _main(*args, stdin=None):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, timeout=120, input=stdin,
                          check=False)


# ------------------------------------------------------------------------------ 7: a cut Ogg file

@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
@pytest.mark.parametrize("cut", ["part", "at a page", "last byte"])
def test_a_cut_ogg_file_is_reported_truncated(tmp_path, capsys, subtype, cut):
    """libsndfile takes an Ogg file's length from its last page: a cut one read as a whole, shorter
    file, "truncated": false and not a word (a partial download of 5 s gave 1.66 s)."""
    src, out = tmp_path / "in.ogg", tmp_path / "out.wav"
    data = _ogg(src, subtype)
    whole = process_file(src, out, _clean(), progress=False)
    assert not whole["truncated"] and capsys.readouterr().err == ""
    last = data.rfind(b"OggS")  # the last page, which carries the end-of-stream flag
    src.write_bytes({"part": data[: len(data) * 3 // 4], "at a page": data[:last], "last byte": data[:-1]}[cut])
    report = process_file(src, out, _clean(), progress=False)
    err = capsys.readouterr().err.splitlines()
    assert report["truncated"] and report["frames"] == report["frames_read"] < 4 * 48000
    said = f"warning: {src}: the Ogg stream stops before its end (a truncated or still-growing file); processing"
    assert err == [f"{said} what is there"]


def test_a_cut_ogg_file_is_partial_in_batch(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    data = _ogg(src / "whole.ogg", "VORBIS")
    (src / "cut.ogg").write_bytes(data[: data.rfind(b"OggS")])
    s = run_batch([src], tmp_path / "out", BatchOptions(preset="clean"), jobs=1, progress=False)
    assert (s["processed"], s["failed"], s["truncated"]) == (2, 0, 1)
    log = {Path(r["input"]).name: r for r in map(json.loads, (tmp_path / "out" / LOG_NAME).read_text()
                                                  .splitlines())}
    assert (log["cut.ogg"]["status"], log["whole.ogg"]["status"]) == ("partial", "ok")


# ------------------------------------------------------------------------------ 8: output formats and rates

@pytest.mark.parametrize("ext", [".raw", ".htk", ".svx", ".xi", ".sds", ".voc", ".nist"])
def test_formats_that_do_not_round_trip_are_refused_up_front(ext):
    """.raw read back 0 frames ("the file reads back 0 of 44100 frames"); .htk .svx .xi .sds failed
    in libsndfile ("Format not recognised", naming the .part file)."""
    with pytest.raises(OfflineError) as e:
        output_format(Path("o" + ext), "PCM_16", 44100)
    assert str(e.value) == (f"o{ext}: unsupported output format '{ext}'; "
                            "use one of .wav .flac .ogg .opus .mp3 .aiff .caf .w64 .rf64 .au")


@pytest.mark.parametrize("name, rate, expected", [
    ("o.mp3", 96000, (r"^o\.mp3: MP3 holds only 8/11\.025/12/16/22\.05/24/32/44\.1/48 kHz audio and the input is "
                      r"96000 Hz; write \.flac$")),
    ("o.flac", 705600, r"^o\.flac: FLAC holds at most 655350 Hz audio .*; write \.wav$")])
def test_a_rate_the_format_cannot_hold_is_refused_up_front(name, rate, expected):
    """MP3 at 192 kHz failed in libsndfile, its words naming the .part file."""
    with pytest.raises(OfflineError, match=expected):
        output_format(Path(name), "PCM_16", rate)
    for held in (8000, 11025, 22050, 32000, 44100, 48000):
        assert output_format(Path(name), "PCM_16", held)[0] == name[2:].upper()


def test_mp3_at_192_khz_says_one_line_naming_the_output(tmp_path):
    src, out = tmp_path / "in.wav", tmp_path / "b.mp3"
    sf.write(src, _tone(192000, 0.1), 192000)
    r = _main("process", "--no-progress", str(src), str(out))
    err = r.stderr.decode()
    assert r.returncode == 2 and err.count("\n") == 1 and err.startswith(f"error: {out}: MP3 holds only"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_libsndfile_refusing_to_open_the_output_names_the_output_not_its_temporary_file(tmp_path, monkeypatch):
    """A refusal output_format does not foresee still names what the user asked for."""
    src, out = tmp_path / "in.wav", tmp_path / "b.mp3"
    sf.write(src, _tone(96000, 0.1), 96000)
    monkeypatch.setattr(offline, "output_format", lambda *a, **kw: ("MP3", "MPEG_LAYER_III"))
    with pytest.raises(OfflineError) as e:
        process_file(src, out, _clean(), progress=False)
    assert str(e.value) == ("MPEG-1/2/2.5 only supports sample rates of 8000, 11025, 12000, 16000, 22050, 24000, "
                            f"32000, 44100, and 48000. while writing {out}; nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


# ------------------------------------------------------------------------------ `-`: standard input

def test_a_dash_reads_standard_input(tmp_path):
    src, out, ref = tmp_path / "in.flac", tmp_path / "out.wav", tmp_path / "ref.wav"
    sf.write(src, _tone(44100, 1), 44100)
    process_file(src, ref, _clean(), progress=False)
    r = _main("process", "--no-progress", "--preset", "clean", "-", str(out), stdin=src.read_bytes())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["frames"] == 44100
    np.testing.assert_array_equal(sf.read(out)[0], sf.read(ref)[0])


def test_a_dash_output_and_a_pipe_of_no_audio_say_one_clear_line(tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, _tone(44100, 0.1), 44100)
    r = _main("process", "--no-progress", str(src), "-")
    said = "error: -: cannot write audio to standard output; give a file name (.wav .flac .ogg .opus .mp3 .aiff"
    assert (r.returncode, r.stderr.decode()) == (2, f"{said} .caf .w64 .rf64 .au)\n")
    r = _main("process", "--no-progress", "-", str(tmp_path / "o.wav"), stdin=b"hello\n")
    said = "error: /dev/stdin: not a readable audio file (Format not recognised.)\n"  # no SpooledTemporaryFile
    assert (r.returncode, r.stderr.decode()) == (2, said)
