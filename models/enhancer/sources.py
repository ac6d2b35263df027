"""Where the enhancer's training, validation and held-out audio comes from (Debian packages).

Each source is a (path, group, split) triple: group = one voice set / one recording set
("package/voice"), split = "train" or "val" (the recipe's in-source validation groups), or for the
held-out packages "select" / "bench". A path ``archive.pk3::member.ogg`` names a member of a zip
archive. ``v1_*_sources`` are the first recipe's packages (the benchmark's in-source set comes from
their held-out groups only); ``new_*_sources`` the ones added for issue 13.
"""
from __future__ import annotations

import functools
import glob
import os
import re
from pathlib import Path

import numpy as np

FILLETS = "/usr/share/games/fillets-ng/sound"
KLETTRES = "/usr/share/klettres"
KTUBERLING = "/usr/share/ktuberling/sounds"
HEDGEWARS = "/usr/share/games/hedgewars/Data/Sounds/voices"
MEGAGLEST = "/usr/share/games/megaglest/tilesets"
SONICPI = "/usr/share/sonic-pi/samples"
# added for issue 13 (more voices, languages and real noise recordings)
TUXPAINT = "/usr/share/tuxpaint/stamps"  # spoken stamp descriptions (~20 languages) + stamp sound effects
FESTVOX_RU = "/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav"  # Russian studio sentences, 16 kHz
FILLETS_NL = FILLETS  # fillets-ng-data-nl: Dutch dialogue beside the Czech (sound/<level>/nl/)
DRASCULA = "/usr/share/scummvm/drascula"  # en/es/it voices: raw u8 11,025 Hz, 32-byte header and tail
WARZONE = "/usr/share/games/warzone2100/base.wz"  # zip: audio/<set>/*.ogg voice lines
NEXUIZ = "/usr/share/games/nexuiz/data/data.pk3"  # zip: tutorial narration, announcer, player voices; ambiences
UFOAI = "/usr/share/games/ufoai/base/0snd.pk3"  # zip: sound/ambience (fire, water, thunder, machinery, city)
SCORCHED = "/usr/share/games/scorched3d/data/globalmods"  # */data/wav/misc: birds, waves, rain, crowd, vehicles
OPENARENA = "/usr/share/games/openarena"  # baseoa/pak0.pk3, missionpack/mp-pak0.pk3: sound/world ambiences
# added in the fifth session: field recordings, machinery, weather, vehicles and background music
OPENSFX = "/usr/share/games/openttd/baseset/opensfx/opensfx.cat"  # 71 CC field recordings in one catalogue
ETR = "/usr/share/games/etr"  # sounds/*_slide.wav (snow, ice, gravel...), music/*.ogg (instrumental)
KAA = "/usr/share/games/7kaa/SOUND"  # rain, wind, thunder, fire, quake
FREECIV = "/usr/share/games/freeciv/stdsounds"  # cannons, machine guns, explosions, footsteps, water
SIMUTRANS = "/usr/share/games/simutrans/pak/sound"  # vehicles, harbours, forests, jackhammer, saw
FLIGHTGEAR = "/usr/share/games/flightgear"  # Sounds/ and Aircraft/c172p/Sounds/: engines, rotors, rain, wind
# added in the fourteenth session: car engines and crashes, battle and ambience effects, an RPG's effects and music
TORCS = "/usr/share/games/torcs/data"  # sound/*.wav: engine loops, skids, crashes, road; music/torcs1.ogg
WESNOTH = "/usr/share/games/wesnoth/1.16/data/core/sounds"  # ambient/ (birds, campfire, ship, drums), weapons
FREEDROID = "/usr/share/freedroidrpg/data/sound"  # effects/ (blasts, glass, doors, bullets, items), music/
ARCHIVE_SEP = "::"  # "archive.pk3::member/path.ogg" names a file inside a zip archive

# Held-out voices: whole voice packs / languages (each recorded by other people).
VAL_HEDGEWARS = {"Pirate", "Mobster", "Surfer", "HillBilly"}
VAL_KLETTRES = {"it", "pt_BR", "da", "he"}
VAL_KTUBERLING = {"en", "gl", "sv", "nl"}
# Held-out noise recordings: whole tilesets / sample families.
VAL_MEGAGLEST = {"winter", "hell", "mediterran", "autumn", "evergreen"}
VAL_SONICPI = {"guit", "tabla", "mehackit", "misc", "loop_amen", "loop_safari", "loop_tabla"}
VAL_TUXPAINT = {"da", "nl", "sv", "ko"}  # description / number languages (other readers)
VAL_DRASCULA = {"it/drascula", "it/igor", "it/bj"}  # language/character: the Italian cast's minor roles
VAL_WARZONE = {"taunts", "trnsppil"}
VAL_NEXUIZ_SPEECH = {"specop"}
VAL_TUXPAINT_NOISE = {"seasonal", "space"}
VAL_NEXUIZ_NOISE = {"desertfactory"}
VAL_UFOAI = {"misc"}
VAL_SCORCHED = {"gull", "carhorn", "oceanwaves", "cessna"}  # sound families (file stem without digits)
VAL_OPENARENA = {"ambient"}


DEB_PACKAGES = ("fillets-ng-data-cs", "klettres-data", "ktuberling-data", "hedgewars-data",
                "megaglest-data", "sonic-pi-samples",
                "tuxpaint-stamps-default", "festvox-ru", "fillets-ng-data-nl", "drascula", "drascula-spanish",
                "drascula-italian", "warzone2100-data", "nexuiz-data", "ufoai-sound", "scorched3d-data",
                "openarena-data", "openttd-opensfx", "extremetuxracer-data", "7kaa-data", "freeciv-data",
                "simutrans-pak64", "flightgear-data-base", "torcs-data", "wesnoth-1.16-data", "freedroidrpg-data")
# group-name prefix -> Debian package (the manifest's hours per package)
GROUP_PACKAGES = {"fillets": "fillets-ng-data-cs", "fillets-nl": "fillets-ng-data-nl", "klettres": "klettres-data",
                  "ktuberling": "ktuberling-data", "hedgewars": "hedgewars-data", "megaglest": "megaglest-data",
                  "sonicpi": "sonic-pi-samples", "tuxpaint": "tuxpaint-stamps-default", "festvox-ru": "festvox-ru",
                  "drascula/en": "drascula", "drascula/es": "drascula-spanish", "drascula/it": "drascula-italian",
                  "warzone2100": "warzone2100-data", "nexuiz": "nexuiz-data", "ufoai": "ufoai-sound",
                  "scorched3d": "scorched3d-data", "openarena": "openarena-data", "opensfx": "openttd-opensfx",
                  "etr": "extremetuxracer-data", "7kaa": "7kaa-data", "freeciv": "freeciv-data",
                  "simutrans": "simutrans-pak64", "flightgear": "flightgear-data-base", "torcs": "torcs-data",
                  "wesnoth": "wesnoth-1.16-data", "freedroid": "freedroidrpg-data"}

# Held-out SOURCES: whole packages (other recordings, other people, other rooms) that training never
# reads. Checkpoint selection (``select/``) and the benchmark's out-of-source set (``bench/``) are
# mixed from them; the in-source set uses the held-out groups of the training packages above.
KAJONGG = "/usr/share/kajongg/voices"  # German tile calls, 4 speakers (44.1 kHz)
GCIN = "/usr/share/gcin-voice/ogg"  # Mandarin syllables, one speaker (44.1 kHz)
BUCKLE = "/usr/share/buckle/wav"  # real keyboard key presses / releases
LINCITY = "/usr/share/games/lincity-ng/sounds"  # industry, traffic, crowds, water, trains
HELDOUT_SPEECH_PACKAGES = ("kajongg", "gcin-voice")
HELDOUT_NOISE_PACKAGES = ("bucklespring-data", "lincity-ng-data")
HELDOUT_ROOTS = (KAJONGG, GCIN, BUCKLE, LINCITY)
# every SELECT_EVERY-th held-out file (per group) mixes the checkpoint-selection clips; the rest the
# benchmark, so the benchmark's recordings never steered training
SELECT_EVERY = 4


def install_packages(log) -> None:
    """apt-get the source packages that are missing (root only; otherwise say what to run)."""
    import shutil
    import subprocess

    missing = [p for p in DEB_PACKAGES + HELDOUT_SPEECH_PACKAGES + HELDOUT_NOISE_PACKAGES
               if "ok installed" not in subprocess.run(["dpkg-query", "-W", "-f=${Status}", p],
                                                       capture_output=True, text=True).stdout]
    if not missing or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env)


def _bytes(path: str) -> bytes:
    """A source file's bytes; ``archive::member`` reads a member of a zip archive (pk3, wz) or, for an
    OpenTTD sound catalogue (``.cat``), the entry with that index."""
    if ARCHIVE_SEP in path:
        import zipfile

        archive, member = path.split(ARCHIVE_SEP, 1)
        if archive.endswith(".cat"):
            return _catalogue(archive)[int(member)][1]
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    return Path(path).read_bytes()


def _read(path: str, data: bytes | None = None) -> tuple[np.ndarray, int]:
    import io

    import soundfile as sf

    data = _bytes(path) if data is None else data
    if path.upper().endswith(".ALS"):
        # Drascula speech: unsigned 8-bit 11,025 Hz mono; ScummVM skips 32 header bytes and
        # plays all but the last 32 (engines/drascula/sound.cpp, playFile)
        return (np.frombuffer(data[32:-32], np.uint8).astype(np.float32) - 128.0) / 128.0, 11025
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


def _cat_entries(data: bytes) -> list[tuple[str, bytes]]:
    """(name, RIFF bytes) per entry of an OpenTTD sound catalogue: a table of little-endian uint32
    (offset, size) pairs (the first offset / 8 is the entry count), each entry a length-prefixed
    name followed by the WAV file. Raises ValueError when ``data`` is not such a catalogue."""
    import struct

    try:
        count = (struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF) // 8
        out = []
        for i in range(count):
            off, size = struct.unpack_from("<II", data, 8 * i)
            off &= 0x7FFFFFFF
            n = data[off]
            out.append((data[off + 1 : off + 1 + n].split(b"\0")[0].decode("latin-1"), data[off + 1 + n : off + size]))
    except (struct.error, IndexError):
        raise ValueError("not an OpenTTD sound catalogue (its entry table points outside the file)") from None
    return out


@functools.lru_cache(maxsize=2)
def _catalogue(path: str) -> list[tuple[str, bytes]]:
    """A catalogue file's entries, read and parsed once (every entry is a source of its own).

    Raises
    ------
    OSError
        Unreadable or malformed (``load_pool`` then counts its entries as unreadable)."""
    try:
        return _cat_entries(Path(path).read_bytes())
    except ValueError as e:
        raise OSError(f"{path}: {e}") from None


def _members(archive: str, prefix: str) -> list[str]:
    """``archive::member`` names of the audio files under ``prefix`` in a zip archive."""
    import zipfile

    if not os.path.isfile(archive):
        return []
    with zipfile.ZipFile(archive) as z:
        names = [n for n in z.namelist() if n.startswith(prefix) and n.lower().endswith((".ogg", ".wav", ".flac"))]
    return [f"{archive}{ARCHIVE_SEP}{n}" for n in sorted(names)]


def speech_sources() -> list[tuple[str, str, str]]:
    """(path, group, split) for every speech file."""
    return v1_speech_sources() + new_speech_sources()


def v1_speech_sources() -> list[tuple[str, str, str]]:
    """The first recipe's speech packages (the benchmark's in-source set is mixed from their held-out
    groups only, so its figures stay comparable across recipe versions)."""
    out = []
    for f in sorted(glob.glob(f"{FILLETS}/**/cs/*.ogg", recursive=True)):
        out.append((f, "fillets", "train"))  # same actors across levels: training only
    for lang in sorted(os.listdir(KLETTRES)) if os.path.isdir(KLETTRES) else []:
        for f in sorted(glob.glob(f"{KLETTRES}/{lang}/*/*.ogg") + glob.glob(f"{KLETTRES}/{lang}/*/*.wav")):
            out.append((f, f"klettres/{lang}", "val" if lang in VAL_KLETTRES else "train"))
    for lang in sorted(os.listdir(KTUBERLING)) if os.path.isdir(KTUBERLING) else []:
        base = lang.split("@")[0]
        for f in sorted(glob.glob(f"{KTUBERLING}/{lang}/*.ogg") + glob.glob(f"{KTUBERLING}/{lang}/*.wav")):
            out.append((f, f"ktuberling/{base}", "val" if base in VAL_KTUBERLING else "train"))
    for pack in sorted(os.listdir(HEDGEWARS)) if os.path.isdir(HEDGEWARS) else []:
        if pack == "Robot":
            continue  # vocoded robot voice: not natural speech (filtered)
        grp = pack.split("_")[0] if pack.startswith("Russian") else pack
        for f in sorted(glob.glob(f"{HEDGEWARS}/{pack}/*.ogg")):
            out.append((f, f"hedgewars/{grp}", "val" if pack in VAL_HEDGEWARS else "train"))
    return out


TUX_LANG = re.compile(r"_(?:desc_)?([a-z]{2}(?:_[A-Za-z]{2})?)\.(?:ogg|wav)$")


def _tuxpaint_speech(path: str) -> str | None:
    """Language of a spoken tuxpaint file, None for a sound effect. Stamps have ``<stamp>.ogg`` (the
    effect: a kettle, a cow), ``<stamp>_desc[_<lang>].ogg`` (its description read aloud) and, for
    letters and numbers, ``<name>_<lang>.ogg`` / ``<digit>.ogg`` (the name read aloud)."""
    rel = os.path.relpath(path, TUXPAINT)
    name = os.path.basename(path)
    spoken_symbol = rel.startswith(("symbols/math/", "symbols/alphabets/"))
    if "_desc" not in name and not spoken_symbol:
        return None
    m = TUX_LANG.search(name)
    return m.group(1).lower() if m else "en"


def new_speech_sources() -> list[tuple[str, str, str]]:
    """Speech added for issue 13: tuxpaint descriptions, festvox-ru, Dutch fillets, Drascula's three
    casts, warzone2100 and nexuiz voice lines. Groups are voice sets (a language's readers, one
    character); held-out groups go to the in-source validation pool."""
    out = []
    tux = sorted(glob.glob(f"{TUXPAINT}/**/*.ogg", recursive=True) + glob.glob(f"{TUXPAINT}/**/*.wav", recursive=True))
    for f in tux:
        lang = _tuxpaint_speech(f)
        if lang is not None:
            out.append((f, f"tuxpaint/{lang}", "val" if lang.split("_")[0] in VAL_TUXPAINT else "train"))
    out += [(f, "festvox-ru", "train") for f in sorted(glob.glob(f"{FESTVOX_RU}/*.wav"))]  # one speaker
    out += [(f, "fillets-nl", "train") for f in sorted(glob.glob(f"{FILLETS_NL}/**/nl/*.ogg", recursive=True))]
    cast = {"": "hacker", "D": "drascula", "VB": "vb", "I": "igor", "L": "l", "BJ": "bj", "T": "t", "E": "e",
            "P": "p", "B": "b", "F": "f"}
    for lang in ("en", "es", "it"):
        for f in sorted(glob.glob(f"{DRASCULA}/{lang}/*.ALS")):
            stem = os.path.basename(f)[:-4]
            who = cast.get(re.sub(r"\d+$", "", stem))
            # links point into en/ (lines the other casts did not re-record); S<n> are sound effects
            if who is None or os.path.islink(f):
                continue
            out.append((f, f"drascula/{lang}/{who}", "val" if f"{lang}/{who}" in VAL_DRASCULA else "train"))
    # voice sets; sfx/, multi/, radclick/ are effects and nexus/ is a processed villain voice
    for set_ in ("memressp", "countdown", "tutorial", "vtoltalk", "trnsppil", "taunts", "coltive", "extra",
                 "proxmessages"):
        out += [(f, f"warzone2100/{set_}", "val" if set_ in VAL_WARZONE else "train")
                for f in _members(WARZONE, f"audio/{set_}/")]
    out += [(f, "warzone2100/sequenceaudio", "train") for f in _members(WARZONE, "sequenceaudio/")]
    out += [(f, "nexuiz/tutorial", "train") for f in _members(NEXUIZ, "sound/tutorial/")]
    out += [(f, "nexuiz/announcer", "train") for f in _members(NEXUIZ, "sound/announcer/male/")]
    for voice in ("marine", "soldier", "specop", "insurrectionist", "fricka", "pyria-skadi"):  # not the monsters
        out += [(f, f"nexuiz/{voice}", "val" if voice in VAL_NEXUIZ_SPEECH else "train")
                for f in _members(NEXUIZ, f"sound/player/{voice}/coms/")]
    return out


def noise_sources() -> list[tuple[str, str, str]]:
    """(path, group, split) for every noise file."""
    return v1_noise_sources() + new_noise_sources() + more_noise_sources() + effects_noise_sources()


def v1_noise_sources() -> list[tuple[str, str, str]]:
    """The first recipe's noise packages (see ``v1_speech_sources``)."""
    out = []
    for f in sorted(glob.glob(f"{MEGAGLEST}/*/sounds/*")):
        ts = f.split("/")[-3]
        out.append((f, f"megaglest/{ts}", "val" if ts in VAL_MEGAGLEST else "train"))
    for f in sorted(glob.glob(f"{SONICPI}/*.flac")):
        name = os.path.basename(f)[:-5]
        fam = name.split("_")[0]
        val = fam in VAL_SONICPI or any(name.startswith(v) for v in VAL_SONICPI if "_" in v)
        out.append((f, f"sonicpi/{fam}", "val" if val else "train"))
    return out


# effects that are speech, screams, music or UI beeps, not noise a microphone meets
UFOAI_SKIP = {"disco", "jingle", "jingle2", "tv_newswav", "radiomessage", "aliencom"}
SCORCHED_KEEP = {"birds", "birdchirp", "gull", "bats", "frogs", "cows", "moo", "sheep", "rooster", "dog", "wolf",
                 "thunder", "rain", "oceanwaves", "splash", "citysounds", "cheeringloop", "factoryloop",
                 "nuclearloop", "helicopter", "apache", "jet", "f", "cessna", "t", "policecar", "firetruck",
                 "carhorn", "lava", "para"}
OPENARENA_SKIP = ("growl", "moan", "1shot_greg", "jumppad", "tele", "clack")


def _family(path: str) -> str:
    """A sound's family: its file stem without trailing digits / underscores ("gull4" -> "gull")."""
    return re.sub(r"[\d_]+$", "", os.path.splitext(os.path.basename(path))[0])


def new_noise_sources() -> list[tuple[str, str, str]]:
    """Noise added for issue 13: ufoai, scorched3d, nexuiz and openarena ambiences, tuxpaint stamp sounds."""
    out = []
    for f in _members(UFOAI, "sound/ambience/") + _members(UFOAI, "sound/misc/break"):
        if _family(f) in UFOAI_SKIP or os.path.splitext(f.split("/")[-1])[0] in UFOAI_SKIP:
            continue
        grp = f.split("/")[-2]
        out.append((f, f"ufoai/{grp}", "val" if grp in VAL_UFOAI else "train"))
    for f in sorted(glob.glob(f"{SCORCHED}/*/data/wav/misc/*.wav")):
        fam = _family(f)
        if fam in SCORCHED_KEEP:
            out.append((f, f"scorched3d/{fam}", "val" if fam in VAL_SCORCHED else "train"))
    for grp in ("ambient", "desertfactory", "weather"):
        out += [(f, f"nexuiz/{grp}", "val" if grp in VAL_NEXUIZ_NOISE else "train")
                for f in _members(NEXUIZ, f"sound/{grp}/") if "radiomessage" not in f]
    for pak in ("baseoa/pak0.pk3", "missionpack/mp-pak0.pk3"):
        for f in _members(f"{OPENARENA}/{pak}", "sound/world/"):
            if not os.path.basename(f).startswith(OPENARENA_SKIP):
                grp = "ambient" if "/world/ambient/" in f else "world"
                out.append((f, f"openarena/{grp}", "val" if grp in VAL_OPENARENA else "train"))
    tux = sorted(glob.glob(f"{TUXPAINT}/**/*.ogg", recursive=True))
    for f in tux:
        rel = os.path.relpath(f, TUXPAINT)
        if _tuxpaint_speech(f) is None and not rel.startswith(("symbols/", "town/roadsigns/", "military/")):
            top = rel.split("/")[0]
            out.append((f, f"tuxpaint/{top}", "val" if top in VAL_TUXPAINT_NOISE else "train"))
    return out


# OpenTTD entries that are UI jingles, beeps, cartoon effects or empty, not sounds a microphone meets
OPENSFX_SKIP = ("Good Year", "Bad Year", "Beep", "Morse", "Cash till", "Unused", "Toyland", "Oooh")
# simutrans sounds that are UI effects
SIMUTRANS_SKIP = ("boing", "cash", "click", "gavel")
# FlightGear files that are voices (callouts, checklists, a cough) or synthetic tones
FLIGHTGEAR_SKIP = ("mk-viii/", "tcas/", "checklist", "coughing", "beep", "avionics-400Hz", "overspeed",
                   "gear-hrn", "stall", "flarm", "vario")


def more_noise_sources() -> list[tuple[str, str, str]]:
    """Noise added in the fifth session (issue 13: the training noise was 0.7 h from eight packages):
    OpenTTD's CC field recordings, Extreme Tux Racer's slides and instrumental music, Seven
    Kingdoms' weather, freeciv's battle and water sounds, simutrans' traffic and industry, FlightGear's
    engines, rotors, rain and wind. All training: selection and the benchmark use the held-out packages."""
    out = []
    try:
        entries = _catalogue(OPENSFX) if os.path.isfile(OPENSFX) else []
    except OSError:
        entries = []  # a broken package: the manifest lists it under packages_missing
    out += [(f"{OPENSFX}{ARCHIVE_SEP}{i}", "opensfx", "train") for i, (name, wav) in enumerate(entries)
            if wav and not name.strip('"').startswith(OPENSFX_SKIP)]
    out += [(f, "etr/sounds", "train") for f in sorted(glob.glob(f"{ETR}/sounds/*_slide.wav"))]
    out += [(f, "etr/music", "train") for f in sorted(glob.glob(f"{ETR}/music/*.ogg"))]
    out += [(f, "7kaa", "train") for f in sorted(glob.glob(f"{KAA}/*.WAV"))]
    out += [(f, "freeciv", "train") for f in sorted(glob.glob(f"{FREECIV}/*.ogg")) if "illegal" not in f]
    out += [(f, "simutrans", "train") for f in sorted(glob.glob(f"{SIMUTRANS}/*.wav"))
            if _family(f) not in SIMUTRANS_SKIP]
    fg = sorted(glob.glob(f"{FLIGHTGEAR}/Sounds/**/*.wav", recursive=True)
                + glob.glob(f"{FLIGHTGEAR}/Aircraft/c172p/Sounds/*.wav"))
    out += [(f, "flightgear", "train") for f in fg if not any(k in f for k in FLIGHTGEAR_SKIP)]
    return out


# Wesnoth's unit sounds that are voices (cries, grunts, laughter) rather than effects
WESNOTH_VOICE = re.compile(r"-(die|hit|laugh|shriek|growl|scream)|groan|ugg|wail|attack|charge")
# freedroidrpg effects that are voices (the hero's comments and screams, the droids' spoken lines)
FREEDROID_SKIP = ("tux_ingame_comments", "bot_sounds", "Scream", "ThouArtDefeated")


def effects_noise_sources() -> list[tuple[str, str, str]]:
    """Noise added in the fourteenth session (the noise was still the recipe's thin part: 1.0 h from
    thirteen packages, 550 recordings): TORCS's engine loops, skids and crashes, Wesnoth's ambiences and
    weapon effects (not its voices), freedroidrpg's effects and music. All training."""
    out = [(f, "torcs/sound", "train") for f in sorted(glob.glob(f"{TORCS}/sound/*.wav"))]
    out += [(f, "torcs/music", "train") for f in sorted(glob.glob(f"{TORCS}/music/*.ogg"))]
    out += [(f, "wesnoth/ambient", "train") for f in sorted(glob.glob(f"{WESNOTH}/ambient/*.ogg"))]
    out += [(f, "wesnoth/effects", "train") for f in sorted(glob.glob(f"{WESNOTH}/*.*"))
            if f.endswith((".ogg", ".wav")) and not WESNOTH_VOICE.search(os.path.basename(f))]
    fx = sorted(glob.glob(f"{FREEDROID}/effects/**/*.ogg", recursive=True))
    out += [(f, "freedroid/effects", "train") for f in fx if not any(k in f for k in FREEDROID_SKIP)]
    out += [(f, "freedroid/music", "train") for f in sorted(glob.glob(f"{FREEDROID}/music/*.ogg"))]
    return out


def _heldout_split(files: list[str]) -> list[tuple[str, str]]:
    """(path, split) with split "select" for every SELECT_EVERY-th file, else "bench"."""
    return [(f, "select" if i % SELECT_EVERY == 0 else "bench") for i, f in enumerate(sorted(files))]


def heldout_speech_sources() -> list[tuple[str, str, str]]:
    """(path, group, split) for the held-out speech packages; split is "select" or "bench"."""
    out = []
    for spk in sorted(glob.glob(f"{KAJONGG}/*/*/")):
        group = "kajongg/" + "/".join(spk.rstrip("/").split("/")[-2:])
        out += [(f, group, sp) for f, sp in _heldout_split(glob.glob(f"{spk}*.ogg"))]
    out += [(f, "gcin-voice", sp) for f, sp in _heldout_split(glob.glob(f"{GCIN}/*/*.ogg"))]
    return out


def heldout_noise_sources() -> list[tuple[str, str, str]]:
    """(path, group, split) for the held-out noise packages; split is "select" or "bench"."""
    out = [(f, "bucklespring", sp) for f, sp in _heldout_split(glob.glob(f"{BUCKLE}/*.wav"))]
    out += [(f, "lincity-ng", sp) for f, sp in _heldout_split(glob.glob(f"{LINCITY}/*.wav"))]
    return out


def package_of(group: str) -> str:
    """The Debian package a pool group comes from (``GROUP_PACKAGES``, longest prefix first)."""
    for prefix in sorted(GROUP_PACKAGES, key=len, reverse=True):
        if group == prefix or group.startswith(prefix + "/"):
            return GROUP_PACKAGES[prefix]
    return group.split("/")[0]


def split_description() -> dict:
    """The held-out groups and the by-name filters, for the recipe's manifest."""
    return {
        "held_out": {"hedgewars": sorted(VAL_HEDGEWARS), "klettres": sorted(VAL_KLETTRES),
                     "ktuberling": sorted(VAL_KTUBERLING), "megaglest": sorted(VAL_MEGAGLEST),
                     "sonic-pi": sorted(VAL_SONICPI), "tuxpaint (speech languages)": sorted(VAL_TUXPAINT),
                     "tuxpaint (noise categories)": sorted(VAL_TUXPAINT_NOISE), "drascula": sorted(VAL_DRASCULA),
                     "warzone2100": sorted(VAL_WARZONE), "nexuiz (speech)": sorted(VAL_NEXUIZ_SPEECH),
                     "nexuiz (noise)": sorted(VAL_NEXUIZ_NOISE), "ufoai": sorted(VAL_UFOAI),
                     "scorched3d": sorted(VAL_SCORCHED), "openarena": sorted(VAL_OPENARENA)},
        "skipped_by_name": {
            "tuxpaint-stamps-default": "speech = *_desc*.ogg/wav and spoken letters/numbers; noise = the other "
                                       "stamp sounds except symbols/, town/roadsigns/, military/",
            "drascula*": "S<n>.ALS sound effects; links into en/ from es/ and it/",
            "warzone2100-data": "audio/sfx, multi, radclick (effects), nexus (processed villain voice)",
            "nexuiz-data": "robotic announcer, monster player voices, weapons/misc effects, radiomessage",
            "ufoai-sound": "music / radio / TV / speech ambiences: " + ", ".join(sorted(UFOAI_SKIP)),
            "scorched3d-data": "all but the families " + ", ".join(sorted(SCORCHED_KEEP)),
            "openarena-data": "sound/world files starting " + ", ".join(OPENARENA_SKIP)},
    }
