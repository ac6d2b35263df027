"""Standard MIDI files read for offline renders: channel messages at their sample times by the
tempo map (or SMPTE time), lenient with the damage real files carry (said, not fatal)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from realtime.errors import OfflineError


def midi_file_events(path, samplerate: int) -> np.ndarray:
    """The channel messages of a MIDI file as (n, 4) float64 rows: sample time, status, data1, data2.

    Times follow the tempo map, or for an SMPTE-timed file (a negative division: frames per second
    and ticks per frame) the fixed ticks per second, which tempo changes do not alter.

    Raises
    ------
    OfflineError
        The file is missing or not a readable MIDI file.
    """
    return midi_file_song(path, samplerate)[0]


def midi_file_song(path, samplerate: int) -> tuple[np.ndarray, int]:
    """A MIDI file's channel messages (``midi_file_events``) and its length in frames: the time of
    its last End of Track (mido's ``length``; a type 2 file's songs one after another), never
    before its last message. A cut or damaged file gives what could be read (``read_midi_song``),
    without a word: a render says it (``plan_render``).

    Raises
    ------
    OfflineError
        The file is missing, not a MIDI file, or has no channel message before its damage.
    """
    events, n, _ = read_midi_song(path, samplerate)
    return events, n


class MidiDamage:
    """What a cut or damaged MIDI file lacked (``read_midi_song``).

    Attributes
    ----------
    track : int or None
        The first track read only in part (None: the tracks read are whole, later ones missing).
    tracks, missing : int
        Tracks the header counts; of them, how many were not in the file at all.
    cut : bool
        The file ends early (a partial download), rather than holding bytes no reader can take.
    why : str
        What the reader met there (mido's words), for a file refused because nothing could be read.
    tick : int
        Of the last message read in ``track``; ``seconds`` is its time in the song.
    added : int
        Releases added where a cut track stops (``_release_held``): not the file's messages.
    """

    def __init__(self, tracks: int):
        self.track, self.tracks, self.missing, self.cut, self.why = None, tracks, 0, True, "it ends too early"
        self.tick, self.seconds, self.added = 0, 0.0, 0

    def say(self, p) -> str:
        """One line: ``PATH is truncated after 12.3 s`` (which track, when there are several)."""
        word = "truncated" if self.cut else "damaged"
        if self.track is None:
            return f"{p} is {word}: {self.missing} of its {self.tracks} tracks are missing"
        where = f" in track {self.track + 1} of {self.tracks}" if self.tracks > 1 else ""
        more = f" ({self.missing} more missing)" if self.missing else ""
        return f"{p} is {word} after {self.seconds:.1f} s{where}{more}"


def read_midi_song(path, samplerate: int) -> tuple[np.ndarray, int, MidiDamage | None]:
    """``midi_file_song``'s events and length, and what the file lacked (None: nothing).

    A file cut short (a partial download: a track chunk whose declared length runs past the end of
    the file, tracks the header counts that never come) or damaged (a byte no MIDI reader can take)
    is read as players read it: each track up to its damage (``_read_midi_tracks``); a track cut
    with keys or pedals down lets them go where it stops. A file that is not MIDI at all, or gives
    no channel message before its damage, is refused as before.

    Raises
    ------
    OfflineError
        The file is missing, not a MIDI file, or has no channel message before its damage.
    """
    import mido

    p = Path(path)
    if not p.is_file():
        if p.is_dir():
            raise OfflineError(f"{p}: is a folder, not a MIDI file")
        if p.exists():  # a FIFO, a terminal: the reader seeks, and batch hashes each file
            raise OfflineError(f"{p}: a pipe or device, not a file; save the MIDI to a file first")
        raise OfflineError(f"{p}: no such MIDI file")
    try:
        mf, damage = _read_midi_tracks(p)
        tick_s = _smpte_tick_seconds(p, mf.ticks_per_beat)
        # type 0/1: the tracks play together (merged); type 2: each is a song of its own (its own
        # tempo map), played one after another (mido refuses to merge them)
        songs = [mf] if mf.type != 2 else [mido.MidiFile(type=0, ticks_per_beat=mf.ticks_per_beat, tracks=[tr])
                                            for tr in mf.tracks]
        t, ticks, rows = 0.0, 0, []
        for k, song in enumerate(songs):
            if damage is not None and damage.track is not None and k == (damage.track if mf.type == 2 else 0):
                damage.seconds = t + _seconds_at(song, damage.tick, tick_s)  # after the songs before it
            # times in seconds (tempo map applied); SMPTE: mido would divide by the negative
            # division as if it were ticks per beat (every time negative, notes piled into chords)
            for msg in song if tick_s is None else mido.merge_tracks(song.tracks):
                if tick_s is None:
                    t += msg.time
                else:
                    ticks += msg.time
                    t = ticks * tick_s
                if not msg.is_meta and msg.type not in ("sysex",) and hasattr(msg, "channel"):
                    b = msg.bytes()
                    rows.append((round(t * samplerate), b[0], b[1] if len(b) > 1 else 0, b[2] if len(b) > 2 else 0))
    except (OSError, ValueError, EOFError, KeyError, IndexError) as e:
        why = str(e) or ("it ends too early" if isinstance(e, EOFError) else type(e).__name__)
        raise OfflineError(f"{p}: not a readable MIDI file ({why})") from None
    if damage is not None and len(rows) <= damage.added:  # nothing to play before the damage
        raise OfflineError(f"{p}: not a readable MIDI file ({damage.why})")
    events = np.asarray(rows, np.float64).reshape(-1, 4)
    # the merged song ends with the latest End of Track (mido moves it there), so t is its time
    return events, max(round(t * samplerate), int(events[:, 0].max()) if len(events) else 0), damage


def _seconds_at(song, tick: int, tick_s: float | None) -> float:
    """The time in ``song`` (a type 0/1 file) of ``tick``, by its tempo map as mido times it."""
    import mido

    if tick_s is not None:
        return tick * tick_s
    t, now, tempo = 0.0, 0, 500000  # mido's default tempo, 120 BPM
    for msg in mido.merge_tracks(song.tracks):
        if now + msg.time > tick:
            break
        now += msg.time
        t += mido.tick2second(msg.time, song.ticks_per_beat, tempo)
        if msg.type == "set_tempo":
            tempo = msg.tempo
    return t + mido.tick2second(tick - now, song.ticks_per_beat, tempo)


def _read_midi_tracks(p: Path):
    """A MIDI file read as mido reads it, but leniently: (``mido.MidiFile``, ``MidiDamage`` or None).

    Chunk by chunk (mido reads a track until its declared length is used up, and a cut file ended
    that in an ``EOFError`` that refused it whole): a track chunk is read up to the end of the
    file or its first unreadable message (``_read_midi_track``); one that stops before its End of
    Track is damaged, and tracks the file never reaches are missing. A chunk of another kind is
    skipped (the standard's rule: mido refused the file); one whose name is not text ends the
    reading. A file without a MIDI header raises what mido raises (``OSError``, ``EOFError``)."""
    import mido
    from mido.midifiles.meta import meta_charset
    from mido.midifiles.midifiles import read_chunk_header, read_file_header

    size = p.stat().st_size
    tracks: list = []
    damage = None
    with open(p, "rb") as f, meta_charset("latin1"):
        size = _past_rmid_header(f, size)
        kind, count, division = read_file_header(f)
        while len(tracks) < count:
            start = f.tell()
            try:
                name, length = read_chunk_header(f)
            except EOFError:  # the file ends: the tracks left are missing
                break
            if name != b"MTrk":
                if all(32 <= c < 127 for c in name) and start + 8 + length <= size:
                    f.seek(start + 8 + length)  # an alien chunk, whole: skipped
                    continue
                damage = damage or MidiDamage(count)
                damage.cut, damage.why = False, "no MTrk header at start of track"
                break
            body = f.read(length)
            track, tick, why = _read_midi_track(body)
            tracks.append(track)
            ended = len(track) > 0 and track[-1].type == "end_of_track"  # then nothing of it is missing
            if (why is not None or len(body) < length) and not ended:
                if damage is None:  # the first damaged track is the one said
                    damage = MidiDamage(count)
                    damage.track, damage.tick, damage.cut = len(tracks) - 1, tick, len(body) < length
                    damage.why = why or "it ends too early"
                damage.added += _release_held(track)
    if len(tracks) < count:
        damage = damage or MidiDamage(count)
        damage.missing = count - len(tracks)
    mf = mido.MidiFile(ticks_per_beat=division, tracks=tracks)
    mf.type = kind  # as mido's own reader: whatever the header says (a type beyond 2 plays as type 1)
    return mf, damage


def _read_midi_track(body: bytes):
    """mido's ``read_track`` over one track chunk's bytes, up to the first message it cannot read:
    (the track, the ticks of its messages, None or what stopped it). Data bytes over 127 are read
    as 127 (mido's ``clip``: files from some writers hold them), and a meta event that does not
    decode (a key signature of mode 255) is left out (it carries no sound; mido raised a
    ``KeySignatureError`` that ended the command in a traceback), its delta time kept."""
    import io

    from mido.midifiles.meta import build_meta_message
    from mido.midifiles.midifiles import read_byte, read_bytes, read_message, read_sysex, read_variable_int
    from mido.midifiles.tracks import MidiTrack

    f, track = io.BytesIO(body), MidiTrack()
    tick = carry = 0
    last_status = None
    try:
        while f.tell() < len(body):
            delta = read_variable_int(f) + carry
            status = read_byte(f)
            carry = 0
            if status < 0x80:  # running status
                if last_status is None:
                    raise OSError("running status without last_status")
                peek, status = [status], last_status
            else:
                if status != 0xFF:
                    last_status = status
                peek = []
            if status == 0xFF:
                meta_type = read_byte(f)
                data = read_bytes(f, read_variable_int(f))
                try:
                    msg = build_meta_message(meta_type, data, delta)
                except Exception:  # mido's decoders raise what they meet (KeySignatureError, IndexError, …)
                    carry = delta
                    continue
            elif status in (0xF0, 0xF7):
                msg = read_sysex(f, delta, clip=True)
            else:
                msg = read_message(f, status, peek, delta, clip=True)
            track.append(msg)
            tick += delta
    except (EOFError, OSError, ValueError, KeyError, IndexError) as e:
        return track, tick, str(e) or "it ends too early"
    return track, tick, None


def _release_held(track) -> int:
    """Let go, at the end of a track cut short, of what it holds down: ``release_at_end``'s pedals
    up and note-offs, for this track's own keys (not its all-notes-off, which would end other
    tracks' notes on the channel); returns how many messages it added."""
    import mido

    rows, tick = [], 0
    for m in track:  # at their ticks: a re-strike is told by its note-off at the note-on's tick
        tick += m.time
        if not m.is_meta and hasattr(m, "channel"):
            rows.append((tick, *(m.bytes() + [0, 0])[:3]))
    held = np.asarray(rows, np.float64).reshape(-1, 4)
    added = [mido.Message.from_bytes([int(s), int(a), int(b)]) for _, s, a, b in release_at_end(held, 0)[len(held):]
             if not (int(s) & 0xF0 == 0xB0 and int(a) == 123)]
    track.extend(added)
    return len(added)


def _past_rmid_header(f, size: int) -> int:
    """Where the MIDI file's bytes end, ``f`` at their start: a RIFF MIDI file (.rmi, "RMID": a
    standard MIDI file in its "data" chunk, as Windows saves them) is read from that chunk; any
    other file from its start, to its end (``size``)."""
    import struct

    head = f.read(12)
    if len(head) == 12 and head[:4] == b"RIFF" and head[8:] == b"RMID":
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            name, length = struct.unpack("<4sI", f.read(8))
            if name == b"data":
                return min(size, pos + 8 + length)
            pos += 8 + length + (length & 1)
    f.seek(0)
    return size


def _smpte_tick_seconds(p: Path, division: int) -> float | None:
    """Seconds per tick of an SMPTE-timed file (None for one timed in ticks per beat). mido reads the
    header's division as a signed 16-bit number: -frames per second in its high byte (-24, -25,
    -29 for 29.97 drop-frame, -30), ticks per frame in its low byte.

    Raises
    ------
    OfflineError
        A division of 0, or an SMPTE one with no frames or ticks.
    """
    if division > 0:
        return None
    fps, tpf = -(division >> 8), division & 0xFF
    if division == 0 or fps <= 0 or tpf == 0:
        raise OfflineError(f"{p}: not a readable MIDI file (its header's time division is {division & 0xFFFF:#06x})")
    return 1.0 / ((30000.0 / 1001.0 if fps == 29 else fps) * tpf)


def release_at_end(events: np.ndarray, end: int) -> np.ndarray:
    """``events`` with, at ``end``, what a player lifting the keys and the pedals sends: for each
    channel left with keys down or a pedal held, sustain and sostenuto off (CC64, CC66), all notes
    off (CC123) and a note-off for each key still down (for an instrument that ignores CC123).
    A song whose notes all end and whose pedals are up gets nothing.

    A key struck again while down, then let go at that same time (a file's re-strike: the new
    note-on before the old note's note-off at one tick), stays down: the synth takes that note-off
    as the old note's, and the new note rang on to the render's 30 s cap."""
    keys: dict[int, set[int]] = {}
    pedals: dict[int, set[int]] = {}  # per channel: the pedal controllers (64, 66) held down
    restruck: dict[tuple[int, int], float] = {}  # (channel, key) -> when a note-on re-struck it while down
    for t, status, d1, d2 in events:
        kind, ch, d1 = int(status) & 0xF0, int(status) & 0x0F, int(d1)
        if kind == 0x90 and d2 > 0:
            if d1 in keys.setdefault(ch, set()):
                restruck[(ch, d1)] = t
            keys[ch].add(d1)
        elif kind in (0x80, 0x90):
            if restruck.pop((ch, d1), None) == t:  # the old note's end: the new one sounds on
                continue
            keys.get(ch, set()).discard(d1)
        elif kind == 0xB0 and d1 in (64, 66):
            (pedals.setdefault(ch, set()).add if d2 >= 64 else pedals.get(ch, set()).discard)(d1)
        elif kind == 0xB0 and d1 in (120, 123):
            keys.pop(ch, None)
        elif kind == 0xB0 and d1 == 121:  # reset all controllers: the pedals go up
            pedals.pop(ch, None)
    rows = []
    for ch in sorted(set(keys) | set(pedals)):
        if not keys.get(ch) and not pedals.get(ch):
            continue
        rows += [(end, 0xB0 | ch, cc, 0) for cc in sorted(pedals.get(ch, ()))]
        rows.append((end, 0xB0 | ch, 123, 0))
        rows += [(end, 0x80 | ch, key, 64) for key in sorted(keys.get(ch, ()))]
    if not rows:
        return events
    return np.concatenate([events, np.asarray(rows, np.float64)])
