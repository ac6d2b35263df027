"""`--bits`: an output's sample format chosen (process, batch, synth renders), 16 bits with TPDF
dither. Before it an output was the input's format at 24 bits or more, and a 16-bit file for a CD
or a game meant another tool afterwards (sox, which dithers; rounding alone turns a fade's last
20 dB into distortion, and a tone under one LSB into silence)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.dsp.presets import build_chain, load_preset
from realtime.errors import OfflineError
from realtime.run.offline import process_file

ROOT = Path(__file__).resolve().parents[1]
SR = 48000
LSB = 1 / 32767


def _tone(db: float, seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = 10 ** (db / 20) * np.sin(2 * np.pi * 1000 * t)
    return np.stack([x, x], 1).astype(np.float32)


def _process(src, out, bits):
    return process_file(src, out, build_chain(load_preset("clean")), progress=False, bits=bits)


def _bin_db(y: np.ndarray, hz: float) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return 20 * np.log10(spec[round(hz * len(y) / SR)] / np.median(spec))


def test_sixteen_bits_are_dithered_a_tone_of_one_lsb_keeps_no_harmonics(tmp_path):
    src = tmp_path / "quiet.wav"
    x = _tone(-92)  # under one LSB's peak
    sf.write(src, x, SR, subtype="FLOAT")
    rounded = tmp_path / "rounded.wav"
    sf.write(rounded, x, SR, subtype="PCM_16")
    assert _bin_db(sf.read(rounded)[0][:, 0], 3000) > 20  # rounding alone: a stepped wave, rich in harmonics
    (tmp_path / "first" / "x").mkdir(parents=True)
    _process(src, tmp_path / "first" / "x" / "out.wav", "16")
    assert sf.info(tmp_path / "first" / "x" / "out.wav").subtype == "PCM_16"
    y = sf.read(tmp_path / "first" / "x" / "out.wav")[0][:, 0]
    assert _bin_db(y, 1000) > 20  # the tone stands over the dither's flat floor
    assert _bin_db(y, 3000) < 6 and _bin_db(y, 5000) < 6  # no harmonics: the error is noise
    err = y - x[:, 0]
    assert 0.4 * LSB < np.sqrt(np.mean(err ** 2)) < 0.7 * LSB  # TPDF's ±1 LSB plus rounding: 0.5 LSB RMS
    (tmp_path / "again" / "x").mkdir(parents=True)
    _process(src, tmp_path / "again" / "x" / "out.wav", "16")  # seeded: the same input and name, the same file
    assert (tmp_path / "again" / "x" / "out.wav").read_bytes() == (tmp_path / "first" / "x" / "out.wav").read_bytes()


def test_the_dither_is_the_same_however_the_writes_are_cut(tmp_path):
    """The noise was drawn per write: -b 256 and -b 512 gave different files (a third of the samples)."""
    src = tmp_path / "in.wav"
    sf.write(src, _tone(-40, 1.0), SR, subtype="FLOAT")
    for b in (256, 512, 333):
        (tmp_path / f"b{b}" / "x").mkdir(parents=True)
        process_file(src, tmp_path / f"b{b}" / "x" / "out.wav", build_chain(load_preset("clean")), blocksize=b,
                     progress=False, bits="16")
    assert (tmp_path / "b256/x/out.wav").read_bytes() == (tmp_path / "b512/x/out.wav").read_bytes() \
        == (tmp_path / "b333/x/out.wav").read_bytes()


def test_full_scale_is_held_not_wrapped(tmp_path):
    """Dither on a sample at full scale would round past 32767, which libsndfile wraps to -32768 (a
    chain whose safety ceiling is 0 dBFS lets such samples through)."""
    from realtime.io.dither import open_output

    with open_output(str(tmp_path / "out.wav"), SR, 2, "WAV", "PCM_16") as f:
        f.write(np.full((SR, 2), 1.0, np.float32))
        f.write(np.full(SR, -1.0, np.float32)[:, None].repeat(2, 1))
    y = sf.read(tmp_path / "out.wav", dtype="int16")[0]
    assert y[:SR].min() >= 32766 and y[SR:].max() <= -32766


@pytest.mark.parametrize("ext, bits, subtype", [("wav", "24", "PCM_24"), ("wav", "32", "PCM_32"),
                                                ("wav", "float", "FLOAT"), ("flac", "16", "PCM_16"),
                                                ("aiff", "float", "FLOAT")])
def test_each_format_gets_what_it_holds(tmp_path, ext, bits, subtype):
    src = tmp_path / "in.flac"
    sf.write(src, _tone(-20, 0.5), SR, subtype="PCM_16")
    _process(src, tmp_path / f"out.{ext}", bits)
    assert sf.info(tmp_path / f"out.{ext}").subtype == subtype


@pytest.mark.parametrize("name, words", [("out.flac", "FLAC holds 16/24-bit samples, not float; write .wav"),
                                         ("out.mp3", ".mp3 is compressed (write .wav or .flac)"),
                                         ("out.opus", ".opus is compressed (write .wav or .flac)")])
def test_what_a_format_cannot_hold_is_one_line_before_any_work(tmp_path, name, words):
    src = tmp_path / "in.wav"
    sf.write(src, _tone(-20, 0.5), SR)
    with pytest.raises(OfflineError, match=words.replace("(", r"\(").replace(")", r"\)")):
        _process(src, tmp_path / name, "float" if name.endswith("flac") else "16")
    assert [p.name for p in tmp_path.iterdir()] == ["in.wav"]


def test_batch_sets_the_samples_of_what_has_them_and_resumes_by_them(tmp_path):
    from realtime.run.batch import BatchOptions, run_batch

    from .test_batch import _midi

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    sf.write(src / "a.wav", _tone(-20, 0.5), SR, subtype="FLOAT")
    sf.write(src / "b.mp3", _tone(-20, 0.5), SR)
    _midi(src / "m.mid")
    s = run_batch([src], out, BatchOptions(preset="clean", bits="16"), jobs=1, progress=False)
    assert (s["processed"], s["failed"]) == (3, 0), json.dumps(s)[:3000]
    assert sf.info(out / "a.wav").subtype == "PCM_16" and sf.info(out / "m.wav").subtype == "PCM_16"
    assert sf.info(out / "b.mp3").format == "MP3"  # a compressed output has no samples to set
    s = run_batch([src], out, BatchOptions(preset="clean", bits="24"), jobs=1, progress=False)
    # other bits: the wav and the render again, not the mp3 (whose samples --bits does not set)
    assert (s["processed"], s["skipped"]) == (2, 1) and sf.info(out / "a.wav").subtype == "PCM_24"
    with pytest.raises(OfflineError, match="FLAC holds 16/24-bit samples, not float"):
        run_batch([src], out, BatchOptions(preset="clean", bits="float", ext="flac"), jobs=1, progress=False)


def test_the_command_line_takes_bits_for_process_and_synth(tmp_path):
    from .test_batch import _midi

    src = tmp_path / "in.wav"
    sf.write(src, _tone(-20, 0.5), SR)
    _midi(tmp_path / "m.mid")

    def run(*args):
        return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    r = run("process", "in.wav", "out.wav", "--preset", "clean", "--bits", "16", "--no-progress")
    assert r.returncode == 0 and json.loads(r.stdout)["output"] == "out.wav", r.stderr
    assert sf.info(tmp_path / "out.wav").subtype == "PCM_16"
    r = run("synth", "m.mid", "m.flac", "--bits", "16")
    assert r.returncode == 0, r.stderr
    assert sf.info(tmp_path / "m.flac").subtype == "PCM_16"
    r = run("process", "in.wav", "x.wav", "--bits", "12")
    assert r.returncode == 2 and "invalid choice: '12'" in r.stderr


def test_stems_rendered_to_different_names_get_independent_dither(tmp_path):
    """One seed for every file gave every stem the same noise: their rounding errors correlated at
    0.67, and four stems summed put the dither 10.8 dB up instead of 6. The seed takes the output's
    folder and file name: the same ones still give the same file, another name or folder other noise."""
    x = (0.3 * np.random.default_rng(5).standard_normal((SR, 2))).astype(np.float32)
    src = tmp_path / "in.wav"
    sf.write(src, x, SR, subtype="FLOAT")
    _process(src, tmp_path / "ref.wav", "float")
    ref = sf.read(tmp_path / "ref.wav", dtype="float64")[0]
    errs = {}
    for name in ("x/kick.wav", "x/bass.wav", "drums/song.wav", "bass/song.wav", "again/x/kick.wav"):
        out = tmp_path / name
        out.parent.mkdir(parents=True, exist_ok=True)
        _process(src, out, "16")
        errs[name] = sf.read(out, dtype="int16")[0][:, 0] - ref[:, 0] * 32767.0  # (read as floats: q / 32768)
    assert abs(np.corrcoef(errs["x/kick.wav"], errs["x/bass.wav"])[0, 1]) < 0.05
    assert abs(np.corrcoef(errs["drums/song.wav"], errs["bass/song.wav"])[0, 1]) < 0.05  # stems in folders of their own
    assert (tmp_path / "x/kick.wav").read_bytes() == (tmp_path / "again/x/kick.wav").read_bytes()
