"""A file's own tags and pictures carried onto its processed copy (mutagen).

libsndfile knows ten text fields (title, artist, album, date, …): a FLAC's or an Ogg file's other
Vorbis comments (ALBUMARTIST, DISCNUMBER, ISRC, LYRICS, MusicBrainz ids…) and its cover art, and an
MP3's ID3 frames beyond them, were lost on the way through a chain. Between files of one kind
(FLAC to FLAC, Ogg Vorbis or Opus to either, MP3 to MP3) every tag and picture now goes across but
the loudness ones (ReplayGain, R128: measured on the input, untrue of the output); between kinds the
fields libsndfile copies are what there is (``offline.copy_tags``).
"""
from __future__ import annotations

import copy
import os

# tags that describe the input's loudness: the output's differs (a de-limiter, a gain, a limiter)
LOUDNESS_PREFIXES = ("REPLAYGAIN_", "R128_")
ID3_LOUDNESS = ("RVA2", "RVAD")
# tags that name what wrote the input: the output's own (libsndfile's) stays
WRITER_KEYS = ("ENCODER", "ENCODER_OPTIONS", "ENCODED_BY", "ENCODEDBY", "SOFTWARE")
ID3_WRITER = ("TSSE", "TENC")


def _kind(fmt: str, subtype: str) -> str | None:
    """The tag family of an output written as libsndfile ``fmt``/``subtype``: "vorbis" (FLAC and
    Ogg: Vorbis comments), "id3" (MP3), else None (libsndfile's own fields only)."""
    if fmt in ("FLAC", "OGG"):
        return "vorbis"
    return "id3" if fmt == "MP3" else None


def _loudness(key: str) -> bool:
    return key.upper().startswith(LOUDNESS_PREFIXES)


def _writer(key: str) -> bool:
    return key.upper() in WRITER_KEYS


def will_carry(src_path, fmt: str, subtype: str = "") -> bool:
    """Whether ``carry_tags`` takes the input's tags across to an output of ``fmt``: same family,
    a file (not a pipe's spool) whose tags it can read (an MP3 with an ID3v2 tag). Then what
    libsndfile's fields could not hold (an MP3's ID3v1: ASCII) is no loss worth a warning."""
    kind = _kind(fmt, subtype)
    if kind is None or not os.path.isfile(src_path):
        return False
    try:
        with open(src_path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:3] == b"ID3" if kind == "id3" else head in (b"fLaC", b"OggS")


def carry_tags(src_path, dst_path, fmt: str, subtype: str = "") -> str | None:
    """Carry ``src_path``'s tags and pictures onto ``dst_path`` (a finished output, written as
    libsndfile ``fmt``/``subtype``, before it is put in place), where both are of one tag family.

    Returns
    -------
    str or None
        What could not be carried, in words for a warning (a damaged tag), else None.
    """
    kind = _kind(fmt, subtype)
    if kind is None or not os.path.isfile(src_path):  # (a pipe's input cannot be read again)
        return None
    import mutagen
    from mutagen.flac import FLAC
    from mutagen.id3 import ID3, ID3NoHeaderError
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis

    try:
        if kind == "id3":
            try:
                src = ID3(src_path)
            except ID3NoHeaderError:
                return None
            tags = copy.deepcopy(src)
            for frame in (*ID3_LOUDNESS, *ID3_WRITER):
                tags.delall(frame)
            for key in [k for k in tags if k.startswith("TXXX:") and _loudness(k[5:])]:
                del tags[key]
            tags.save(os.fspath(dst_path), v2_version=4 if src.version[1] >= 4 else 3)
            return None
        src = mutagen.File(src_path)
        if not isinstance(src, (FLAC, OggVorbis, OggOpus)) or src.tags is None:
            return None
        dst = (FLAC if fmt == "FLAC" else OggOpus if subtype == "OPUS" else OggVorbis)(os.fspath(dst_path))
        if dst.tags is None:
            dst.add_tags()
        own = [(k, v) for k, v in dst.tags if _writer(k)]  # libsndfile's "encoder": what wrote this file
        comments = [(k, v) for k, v in src.tags if not _loudness(k) and not _writer(k)]
        dst.tags.clear()
        dst.tags.extend(comments + own)
        if isinstance(dst, FLAC):
            dst.clear_pictures()
            for picture in getattr(src, "pictures", ()):  # (an Ogg's are comments, carried above)
                dst.add_picture(picture)
        dst.save()
    except (mutagen.MutagenError, ValueError) as e:
        if (full := _disk_full(e)) is not None:  # fails the write, as libsndfile's own would
            raise full from None
        return f"its tags beyond title, artist, album and date were not copied ({type(e).__name__}: {e})"
    return None


def _disk_full(e: Exception) -> OSError | None:
    """The full disk, quota or file-size limit behind mutagen's error, else None: mutagen wraps every
    OSError in its own, and a cover art that found no room was said as a tag problem, the output
    put in place without it (exit status 0)."""
    import errno

    inner = e.args[0] if e.args and isinstance(e.args[0], OSError) else e.__context__
    if isinstance(inner, OSError) and inner.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return inner
    return None


__all__ = ["carry_tags", "will_carry"]
