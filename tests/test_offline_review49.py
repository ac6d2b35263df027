"""Offline processing (review 49): tags in a legacy encoding, a cut CAF. Each test failed before its fix."""
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.dsp.presets import build_chain, load_preset
from realtime.run.offline import process_file


def _tone(n=4800, ch=2):
    return (0.1 * np.sin(np.arange(n) / 7.0))[:, None].repeat(ch, 1).astype(np.float32)


def _process(src: Path, out: Path) -> dict:
    return process_file(src, out, build_chain(load_preset("default")), progress=False)


def _wav_with_info(path: Path, items: dict[bytes, bytes]) -> None:
    """A WAV whose LIST/INFO chunk holds ``items`` as their raw bytes (a Windows tagger's ANSI)."""
    sf.write(path, _tone(), 48000)
    raw = path.read_bytes()
    subs = b""
    for cid, text in items.items():
        text += b"\0" * (2 - len(text) % 2)
        subs += cid + struct.pack("<I", len(text)) + text
    info = b"INFO" + subs
    chunk = b"LIST" + struct.pack("<I", len(info)) + info
    path.write_bytes(raw[:4] + struct.pack("<I", len(raw) - 8 + len(chunk)) + raw[8:] + chunk)


def test_latin1_wav_tags_are_carried_as_their_letters(tmp_path, capsys):
    src = tmp_path / "in.wav"
    _wav_with_info(src, {b"INAM": "Café del Mar".encode("cp1252"), b"IART": "Beyoncé – “Live”".encode("cp1252")})
    for ext in ("wav", "flac"):
        _process(src, tmp_path / f"out.{ext}")
        tags = sf.SoundFile(tmp_path / f"out.{ext}").copy_metadata()
        assert tags["title"] == "Café del Mar" and tags["artist"] == "Beyoncé – “Live”", (ext, tags)
    _process(src, tmp_path / "out.mp3")  # ASCII only: the accents dropped, not the tag ("Caf\ufffd": none)
    assert sf.SoundFile(tmp_path / "out.mp3").copy_metadata()["title"] == "Cafe del Mar"


def test_utf8_tags_stay_as_they_are(tmp_path):
    src = tmp_path / "in.wav"
    _wav_with_info(src, {b"INAM": "Café ♪".encode("utf-8")})
    _process(src, tmp_path / "out.wav")
    assert sf.SoundFile(tmp_path / "out.wav").copy_metadata()["title"] == "Café ♪"


def test_mac_roman_aiff_tags_are_carried_as_their_letters(tmp_path):
    src = tmp_path / "in.aiff"
    with sf.SoundFile(src, "w", 48000, 1, format="AIFF") as f:
        f.title = "XXXX"
        f.write(_tone(ch=1))
    src.write_bytes(src.read_bytes().replace(b"XXXX", "Æon–".encode("mac_roman")))
    _process(src, tmp_path / "out.flac")
    assert sf.SoundFile(tmp_path / "out.flac").copy_metadata()["title"] == "Æon–"


def test_a_cut_caf_is_said_to_be_cut(tmp_path, capsys):
    src = tmp_path / "in.caf"
    sf.write(src, _tone(48000), 48000)
    src.write_bytes(src.read_bytes()[:-999])
    report = _process(src, tmp_path / "out.wav")
    assert report["truncated"]
    assert "the header promises 999 more bytes of audio than the file holds" in capsys.readouterr().err
    whole = tmp_path / "whole.caf"
    sf.write(whole, _tone(48000), 48000)
    assert not _process(whole, tmp_path / "out2.wav")["truncated"]


def test_typographic_quotes_and_dashes_reach_an_mp3_as_ascii(tmp_path, capsys):
    src = tmp_path / "in.flac"
    with sf.SoundFile(src, "w", 48000, 2, format="FLAC") as f:
        f.title, f.artist, f.album = "Don’t Stop Me Now", "Queen – Live", "“Greatest” Hits…"
        f.write(_tone())
    _process(src, tmp_path / "out.mp3")
    tags = sf.SoundFile(tmp_path / "out.mp3").copy_metadata()
    assert (tags["title"], tags["artist"], tags["album"]) == ("Don't Stop Me Now", "Queen - Live", '"Greatest" Hits...')
    assert "title written in plain ASCII" in capsys.readouterr().err


def test_a_full_disk_while_the_tags_go_in_fails_the_write(tmp_path, monkeypatch):
    import errno

    import mutagen.flac
    import pytest
    from mutagen.flac import FLAC, Picture

    from realtime.errors import OfflineError

    src = tmp_path / "in.flac"
    sf.write(src, _tone(), 48000)
    tagged = FLAC(src)
    tagged["TITLE"] = "t"
    picture = Picture()
    picture.data, picture.mime, picture.type = b"\xff" * 100_000, "image/jpeg", 3
    tagged.add_picture(picture)
    tagged.save()

    def no_room(*_args, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mutagen.flac, "resize_bytes", no_room)  # the cover art finds no room: mutagen's own error
    out = tmp_path / "out" / "o.flac"
    out.parent.mkdir()
    with pytest.raises(OfflineError, match="no space left on device while writing .*o.flac; nothing was written"):
        _process(src, out)
    assert list(out.parent.iterdir()) == []  # (it was put in place without its cover art, exit status 0)
