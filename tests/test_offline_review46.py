"""`process` as sox and ffmpeg users expect it (forty-sixth session's review): a write-protected or
another user's output refused before the work, an unreadable input said as such, a pipe's input not
swallowed before the output is checked, a device refused, an interrupt after the commit said truly,
no progress frames in a log, no traceback for an interrupt inside Numba's compiler, absurd rates
refused and DXD run at its own rate. Each test failed before its fix."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
PROCESS = [sys.executable, str(ROOT / "main.py"), "process"]


def _noise(path: Path, sr=48000, seconds=0.5):
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal((int(sr * seconds), 2))).astype(np.float32), sr)
    return path


def _as_user(cmd):
    """``cmd`` as root without the capabilities that pass over file permissions (as any other user)."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop the permission-override capabilities")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]


def _run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, **kw)


def test_a_write_protected_output_is_refused_and_kept(tmp_path):
    """sox and cp refuse `chmod 444 out.wav`; the rename into place replaced it, exit 0."""
    src, out = _noise(tmp_path / "a.wav"), _noise(tmp_path / "out.wav", sr=8000)
    out.chmod(0o444)
    r = _run(_as_user([*PROCESS, str(src), str(out), "--no-progress"]))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {out}: write-protected (permission denied); remove it or make it writable to replace it; "
        "nothing was written"], r.stderr
    assert sf.info(str(out)).samplerate == 8000


def test_an_unreadable_input_is_said_as_such(tmp_path):
    """libsndfile's "not a readable audio file (System error.)" for a file it may not open."""
    src = _noise(tmp_path / "a.wav")
    src.chmod(0)
    r = _run(_as_user([*PROCESS, str(src), str(tmp_path / "o.wav"), "--no-progress"]))
    assert r.returncode == 2 and r.stderr.strip() == f"error: {src}: cannot read it (permission denied)", r.stderr


def test_a_device_is_refused_not_spooled_until_the_disk_is_full(tmp_path):
    r = _run([*PROCESS, "/dev/zero", str(tmp_path / "z.wav"), "--no-progress"])
    assert r.returncode == 2 and "is a device, not an audio file" in r.stderr and not list(tmp_path.iterdir())


def test_a_pipes_input_is_not_read_before_the_output_is_checked(tmp_path):
    """`arecord | … process - nodir/x.wav` read the whole stream (until the recorder stopped) before
    saying the folder does not exist: a live source's audio was lost meanwhile."""
    proc = subprocess.Popen([*PROCESS, "-", str(tmp_path / "nodir" / "x.wav")], cwd=ROOT, stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        proc.stdin.write(_noise(tmp_path / "a.wav").read_bytes()[:1000])  # a stream that goes on
        proc.stdin.flush()
        proc.wait(timeout=60)  # stdin stays open (before, it waited here for the stream's end)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("it read the pipe to its end before checking the output")
    finally:
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.returncode == 2 and b"output directory does not exist" in err, err


def test_an_interrupt_after_the_commit_says_the_file_was_written():
    """SIGTERM in the ~1 s between the rename into place and the report said "OUT not written" of a
    file that was there, whole (and had replaced the one before)."""
    import argparse

    import main
    from realtime.io.files import COMMITTED

    args = argparse.Namespace(command="process", output="out_46.wav")
    assert main._interrupted_note(args) == "interrupted; out_46.wav not written"
    COMMITTED.add(os.path.abspath("out_46.wav"))
    try:
        assert main._interrupted_note(args) == "interrupted; out_46.wav was written whole before it"
    finally:
        COMMITTED.discard(os.path.abspath("out_46.wav"))


def test_no_progress_frames_go_into_a_log(tmp_path):
    """`process a.wav o.wav 2> log` filled the log with carriage-return frames of the bar."""
    r = _run([*PROCESS, str(_noise(tmp_path / "a.wav", seconds=3)), str(tmp_path / "o.wav")])
    assert r.returncode == 0 and "\r" not in r.stderr and "frame/s" not in r.stderr, r.stderr


def test_an_interrupt_inside_a_ctypes_callback_prints_no_traceback():
    """A signal while Numba compiled (its object cache calls back into Python through ctypes):
    "Exception ignored on calling ctypes callback function" and a traceback before the one line."""
    from realtime.errors import Interrupted, _quiet_unraisable_interrupts

    before, seen = sys.unraisablehook, []
    try:
        sys.unraisablehook = lambda u: seen.append(u.exc_value)  # what would be printed
        _quiet_unraisable_interrupts()

        class Unraisable:
            exc_traceback, err_msg, object = None, "Exception ignored in", None

        real = ValueError("a real one")
        for exc in (Interrupted("SIGTERM"), KeyboardInterrupt(), real):
            u = Unraisable()
            u.exc_type, u.exc_value = type(exc), exc
            sys.unraisablehook(u)
        assert seen == [real]
    finally:
        sys.unraisablehook = before


def test_a_rate_that_is_no_audio_rate_is_one_line(tmp_path):
    """A 1 Hz file: each 16,384-frame read was resampled to 48 kHz at once (3 GB), MemoryError traceback."""
    src = tmp_path / "r1.wav"
    sf.write(src, np.zeros((100, 1), np.float32), 1)
    r = _run([*PROCESS, str(src), str(tmp_path / "o.wav"), "--no-progress"])
    assert r.returncode == 2 and r.stderr.strip() == f"error: {src}: a sample rate of 1 Hz is no audio rate; " \
        "1000 Hz at least", r.stderr


def test_dxd_runs_at_its_own_rate(tmp_path):
    """705.6 kHz went to 48 kHz (chain_samplerate 48000), a 30 kHz tone 90 dB down, nothing said."""
    sr = 705600
    t = np.arange(sr // 4) / sr
    x = (0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 30000 * t)).astype(np.float32)
    src, out = tmp_path / "dxd.wav", tmp_path / "o.wav"
    sf.write(src, np.stack([x, x], 1), sr)
    r = _run([*PROCESS, str(src), str(out), "--preset", "clean", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["chain_samplerate"] == sr
    y, _ = sf.read(out)
    spec = np.abs(np.fft.rfft(y[:, 0] * np.hanning(len(y))))
    k = round(30000 * len(y) / sr)
    assert spec[k - 3:k + 4].max() > 0.1 * spec.max()




def _rich(path: Path, kind: str):
    """A file of ``kind`` with tags libsndfile does not know, a loudness tag and a picture."""
    from mutagen.flac import FLAC, Picture
    from mutagen.id3 import APIC, ID3, TIT2, TPE2, TXXX
    from mutagen.oggvorbis import OggVorbis

    x = (0.1 * np.random.default_rng(0).standard_normal((44100, 2))).astype(np.float32)
    sf.write(path, x, 44100, **({"format": "MP3"} if kind == "mp3" else {}))
    pic = Picture()
    pic.type, pic.mime, pic.data = 3, "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    if kind == "mp3":
        tags = ID3()
        tags.add(TIT2(encoding=3, text="Song"))
        tags.add(TPE2(encoding=3, text="The Album Artist"))
        tags.add(TXXX(encoding=3, desc="ISRC", text="GBAYE0000001"))
        tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text="-7.2 dB"))
        tags.add(APIC(encoding=3, mime="image/png", type=3, desc="cover", data=pic.data))
        tags.save(path)
        return
    f = (FLAC if kind == "flac" else OggVorbis)(path)
    f["TITLE"], f["ALBUMARTIST"], f["ISRC"], f["REPLAYGAIN_TRACK_GAIN"] = "Song", "The Album Artist", "GBAYE0000001", \
        "-7.2 dB"
    if kind == "flac":
        f.add_picture(pic)
    f.save()


@pytest.mark.parametrize("kind", ["flac", "ogg", "mp3"])
def test_a_files_own_tags_and_cover_go_across_but_its_loudness(tmp_path, kind):
    """libsndfile's ten fields only: ALBUMARTIST, ISRC, the cover art were lost (ffmpeg and sox keep
    them); the input's ReplayGain, untrue of the output, stays behind."""
    import mutagen
    from mutagen.id3 import ID3

    src, out = tmp_path / f"in.{kind}", tmp_path / f"out.{kind}"
    _rich(src, kind)
    r = _run([*PROCESS, str(src), str(out), "--preset", "clean", "--no-progress"])
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    if kind == "mp3":
        tags = ID3(out)
        assert str(tags["TPE2"]) == "The Album Artist" and str(tags["TXXX:ISRC"]) == "GBAYE0000001"
        assert "TXXX:REPLAYGAIN_TRACK_GAIN" not in tags and tags.getall("APIC")[0].data.startswith(b"\x89PNG")
        return
    f = mutagen.File(out)
    assert f["ALBUMARTIST"] == ["The Album Artist"] and f["ISRC"] == ["GBAYE0000001"] and f["TITLE"] == ["Song"]
    assert "REPLAYGAIN_TRACK_GAIN" not in f
    if kind == "flac":
        assert len(f.pictures) == 1 and f.pictures[0].data.startswith(b"\x89PNG")


def test_the_inputs_encoder_is_not_claimed_and_no_ascii_warning_where_id3_goes_whole(tmp_path):
    """The carried tags brought the input's ENCODER/SOFTWARE (and ID3 TSSE/TENC) along, naming
    another program as the output's writer; an MP3's accents were warned about as lost (ID3v1's
    ASCII) although the ID3v2 tag carried them whole."""
    import mutagen
    from mutagen.id3 import ID3, TIT2, TSSE
    from mutagen.oggvorbis import OggVorbis

    src, out = tmp_path / "in.ogg", tmp_path / "out.ogg"
    sf.write(src, np.zeros((44100, 2), np.float32), 44100)
    f = OggVorbis(src)
    f["ENCODER"], f["SOFTWARE"], f["TITLE"] = "Lavf60.3.100", "SomeRipper 2.0", "song"
    f.save()
    assert _run([*PROCESS, str(src), str(out), "--preset", "clean", "--no-progress"]).returncode == 0
    tags = mutagen.File(out)
    assert tags["TITLE"] == ["song"] and "SOFTWARE" not in tags and tags.get("ENCODER") != ["Lavf60.3.100"]
    src, out = tmp_path / "in.mp3", tmp_path / "out.mp3"
    sf.write(src, np.zeros((44100, 2), np.float32), 44100, format="MP3")
    id3 = ID3()
    id3.add(TIT2(encoding=3, text="Déjà Vu"))
    id3.add(TSSE(encoding=3, text="LAME 3.100"))
    id3.save(src)
    r = _run([*PROCESS, str(src), str(out), "--preset", "clean", "--no-progress"])
    assert r.returncode == 0 and "ASCII" not in r.stderr, r.stderr
    assert str(ID3(out)["TIT2"]) == "Déjà Vu" and "TSSE" not in ID3(out)


def test_an_interrupt_note_through_a_link_names_the_file_written(tmp_path):
    import argparse

    import main
    from realtime.io.files import COMMITTED

    (tmp_path / "real").mkdir()
    link = tmp_path / "out.wav"
    link.symlink_to(tmp_path / "real" / "out.wav")
    target = os.path.abspath(tmp_path / "real" / "out.wav")
    COMMITTED.add(target)  # what AtomicFile records: the link's target, written through
    try:
        note = main._interrupted_note(argparse.Namespace(command="process", output=str(link)))
        assert note == f"interrupted; {link} was written whole before it"
    finally:
        COMMITTED.discard(target)
