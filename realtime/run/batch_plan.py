"""What a batch has to do: inputs expanded into tasks, and the log of what earlier runs finished.

    plan_batch(inputs, out_dir, options) -> [BatchTask]   files, folders, CSV/JSONL manifests
    ResumeLog(out_dir).done(task)         -> "ok" | "partial" | "failed" | None

A task is plain data (paths, the resolved preset, its hash, rate and block size), so it pickles to
a local worker or a Ray task alike. The log (``OUT/.batch-manifest.jsonl``) has one JSON line per
finished output, written by the batch's parent process only, with absolute paths: a re-run from
another folder finds it all the same.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import heapq
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from realtime.dsp.presets import is_json_name
from realtime.errors import OfflineError, PresetError, os_reason
from realtime.io.files import sf_path
from realtime.run.audio_input import UNKNOWN_FRAMES
from realtime.run.offline import DEFAULT_RATE, chain_rate

MIDI_EXTENSIONS = frozenset({".mid", ".midi", ".kar", ".smf", ".rmi"})  # (.kar: karaoke; .rmi: RIFF MIDI)
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                              ".au", ".caf", ".w64", ".rf64"})  # no .wv: libsndfile cannot read WavPack
# audio it cannot read (libsndfile does not): left out of a folder's scan, but said, never passed over
UNREAD_AUDIO = frozenset({".m4a", ".m4b", ".mp4", ".aac", ".alac", ".wma", ".ape", ".wv", ".mka", ".mpc", ".tta",
                          ".ac3", ".dts", ".amr", ".dsf", ".dff", ".ra", ".spx"})
MANIFEST_EXTENSIONS = frozenset({".csv", ".jsonl"})
LOG_NAME = ".batch-manifest.jsonl"
QUEUED_NAME = ".batch-queued.jsonl"  # the outputs a running batch is about to write (``ResumeLog.claim``)


@dataclass
class BatchOptions:
    """How every file of a batch is processed (the command line's options).

    Parameters
    ----------
    preset, overrides : str, list of str
        Chain for audio inputs, as for ``main.py process --preset P --set …``.
    midi_preset, midi_overrides : str, list of str
        Chain for MIDI inputs (an instrument), as for ``main.py synth``.
    samplerate : int or None
        Chain rate for audio and MIDI. None: each audio file's own rate where its chain runs at
        it (``offline.chain_rate``: nothing resampled), else 48 kHz; MIDI renders at 48 kHz.
    blocksize, midi_blocksize : int
        Chain block sizes (``process``'s and ``synth``'s defaults).
    ext : str or None
        Output extension (``"wav"``, ``".flac"``); None keeps the input's (MIDI renders to .wav).
    force : bool
        Process everything, ignoring the resume log (which otherwise skips complete outputs and
        files that failed and have not changed since).
    streams : int
        Most files a worker runs side by side through one model call per hop, where the preset
        allows (see ``group_tasks``; the outputs are the same); 1 processes one file at a time.
    tail_s : float
        Seconds kept after each audio input ends (``process_file``'s ``tail_s``); a MIDI render
        runs until its sound has died away (``offline.render_midi``).
    bits : str or None
        The outputs' samples (``process_file``'s ``bits``), for every output in a format that holds
        samples (WAV, FLAC, AIFF…); a compressed output (MP3, Ogg) is written as it would be.
    """

    preset: str = "default"
    overrides: list[str] = field(default_factory=list)
    midi_preset: str = "synth"
    midi_overrides: list[str] = field(default_factory=list)
    samplerate: int | None = None
    blocksize: int = 512
    midi_blocksize: int = 128
    ext: str | None = None
    force: bool = False
    streams: int = 8
    tail_s: float = 0.0
    bits: str | None = None


@dataclass(frozen=True)
class BatchTask:
    """One file to process: what a worker needs, picklable (plain values only)."""

    input: str
    output: str
    kind: str  # "audio" | "midi"
    preset: dict  # validated, overrides applied
    preset_hash: str  # preset + settings: a change means outputs are stale
    preset_file: str  # its JSON file (its content is in preset_hash)
    samplerate: int
    blocksize: int
    audio_s: float  # duration from the header (0 if unreadable): for the ETA
    channels: int = 0  # from the header (0 if unreadable or MIDI): streams are grouped by it
    tail_s: float = 0.0  # audio: seconds kept after the input ends
    bits: str | None = None  # the output's samples (``BatchOptions.bits``), None for a compressed output


# ------------------------------------------------------------------------------------------ planning

class _Presets:
    """Loads (preset, overrides) once per distinct pair and hashes it with the run settings once
    per distinct triple; errors name the file that asked."""

    def __init__(self):
        self._loaded: dict[tuple, dict] = {}
        self._digests: dict[tuple, str] = {}
        self._files: dict[str, str] = {}
        self._said: set[str] = set()  # presets whose unapplied MIDI mappings were said

    def file(self, name: str) -> str:
        """The file a preset reference leads to, as ``--preset`` reads it (a user's saved one too),
        absolute; looked up once per name (a lookup lists two folders)."""
        if name not in self._files:
            from realtime.dsp.presets import resolve_preset

            self._files[name] = os.path.abspath(resolve_preset(name)[0])
        return self._files[name]

    def load(self, name: str, overrides: tuple[str, ...]) -> dict:
        key = (name, overrides)
        if key not in self._loaded:
            from realtime.dsp.presets import apply_overrides, load_preset, say_unapplied_mappings

            self._loaded[key] = apply_overrides(load_preset(name), list(overrides))
            if name not in self._said:
                self._said.add(name)
                say_unapplied_mappings(name, self._loaded[key], "a batch")
        return self._loaded[key]

    def digest(self, name: str, overrides: tuple[str, ...], settings: dict) -> str:
        """What decides a run's sound, hashed (a resume log's ``preset_hash``): each slot's every
        knob, defaults included, as the processor takes it, and the model files its neural slots
        load. Hashed as written, `--set gain.gain_db=6` and `=6.0` redid every file, and a new
        default or a retrained model kept the old outputs."""
        key = (name, overrides, tuple(sorted(settings.items())))
        if key not in self._digests:
            chain = sound_of(self.load(name, overrides))
            text = json.dumps({"chain": chain, "models": _model_files(chain), **settings}, sort_keys=True,
                              separators=(",", ":"))
            self._digests[key] = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._digests[key]


def sound_of(preset: dict) -> list[dict]:
    """A validated preset's chain as what makes its sound: per slot its processor (and plugin and
    state), bypass, mix and every knob's value as the processor takes it (``Param.validate``: a
    choice as its index, defaults filled in); no ids, names or description."""
    from realtime.dsp.processors import slot_class

    out = []
    for s in preset["chain"]:
        cls = slot_class(s["processor"], s.get("uri"))
        params = {d.id: float(d.validate(s["params"].get(d.id, d.default))) for d in cls.params}
        out.append({"processor": s["processor"], **({"uri": s["uri"]} if "uri" in s else {}),
                    **({"state": s["state"]} if "state" in s else {}), "bypass": bool(s["bypass"]),
                    "mix": float(s["mix"]), "params": params})
    return out


def _model_files(chain: list[dict]) -> list:
    """(file name, content hash) of each exported model a neural slot of ``chain`` may load: a
    retrained model is a new sound (its content, not its time: a fresh clone is not)."""
    found = []
    for kind in sorted({s["processor"] for s in chain} & set(NEURAL_KINDS)):
        folder = _model_folder(kind)
        for f in sorted(folder.glob("*.onnx")) if folder.is_dir() else []:
            found.append([f"{kind}/{f.name}", _file_hash(f)])
    return found


NEURAL_KINDS = ("enhancer", "delimiter", "synth")  # the slots that load exported models


def _model_folder(kind: str) -> Path:
    """Where a neural slot of ``kind`` finds its models (imported only for a chain that has one)."""
    if kind == "synth":
        from realtime.dsp.processors.synth.processor import MODEL_DIR

        return Path(MODEL_DIR)
    from realtime.dsp.processors.neural.weights import model_dir

    return model_dir(kind)


_hashes: dict = {}  # (path, size, mtime) -> content hash: a plan hashes each model once


def _file_hash(f: Path) -> str:
    st = f.stat()
    key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        _hashes[key] = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
    return _hashes[key]


MANIFEST_FIELDS = ("input", "output", "set", "preset")


def _read_manifest(path: Path) -> list[dict]:
    """Rows of a CSV (header: input[,output][,set][,preset]) or JSONL manifest; ``set`` as a list.
    A CSV's spaces after commas are skipped (``input, output``): a header name read as " output"
    would drop its column unsaid."""
    rows = []
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:  # Excel starts its CSV with a byte-order mark
                reader = csv.DictReader(f, skipinitialspace=True)
                if reader.fieldnames:
                    reader.fieldnames = [name.strip() for name in reader.fieldnames]
                for row in reader:
                    sets = (row.get("set") or "").strip()
                    rows.append({**row, "set": [s.strip() for s in sets.split(";") if s.strip()]})
        else:
            with open(path, encoding="utf-8-sig") as f:  # as a CSV's: Windows tools start UTF-8 with a byte-order mark
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as e:  # its own "line 1" is of the one line it was given
                            raise ValueError(f"line {n}, column {e.colno}: {e.msg}") from None
                        if not isinstance(row, dict):
                            raise ValueError(f"line {n}: expected an object")
                        sets = row.get("set") or []
                        row["set"] = [sets] if isinstance(sets, str) else sets
                        rows.append(row)
    except (OSError, ValueError, csv.Error) as e:
        raise OfflineError(f"{path}: cannot read manifest ({e})") from None
    for i, row in enumerate(rows):
        _check_row(path, i + 1, row)
    return rows


def _check_row(path: Path, n: int, row: dict) -> None:
    """A manifest row's fields are what the planner expects: known names (a typo would drop its
    field unsaid), text paths, a list of text overrides, an output that stays inside ``--out``."""
    where = f"{path}: row {n}"
    if any(v.strip() for v in row.get(None, ())):  # csv's key for values past the header's names: a comma
        # in an unquoted field (a trailing comma's empty value is none)
        raise OfflineError(f"{where} has more fields than the header names ({', '.join(map(repr, row[None]))} "
                           "left over); quote a field that holds a comma")
    unknown = [k for k, v in row.items()  # (a trailing comma's empty column is none)
               if k is not None and k not in MANIFEST_FIELDS and (k or v)]
    if unknown:
        raise OfflineError(f"{where}: unknown field{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} "
                           f"(a manifest's fields: {', '.join(MANIFEST_FIELDS)})")
    if not row.get("input"):
        raise OfflineError(f"{where} has no 'input'")
    for key in ("input", "output", "preset"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise OfflineError(f"{where}: '{key}' must be a path (text), not {type(row[key]).__name__}")
        if "\0" in (row.get(key) or ""):  # no path holds one: the planner's stat of it raised ValueError
            raise OfflineError(f"{where}: '{key}' {row[key]!r} holds a NUL character, which no path can")
    if not isinstance(row["set"], list) or not all(isinstance(s, str) for s in row["set"]):
        raise OfflineError(f"{where}: 'set' must be text or a list of texts like \"slot.param=value\"")
    out = row.get("output")
    if out and (Path(out).is_absolute() or ".." in Path(out).parts):
        raise OfflineError(f"{where}: 'output' {out!r} must be a path inside --out")


def _kind(path: Path) -> str:
    return "midi" if path.suffix.lower() in MIDI_EXTENSIONS else "audio"


def _default_output(src: Path, rel: Path, out_dir: Path, ext: str | None) -> Path:
    if _kind(src) == "midi":
        suffix = "." + (ext or "wav").lstrip(".")
    else:
        suffix = "." + ext.lstrip(".") if ext else src.suffix
    return out_dir / rel.with_suffix(suffix)


def _header(path: Path, kind: str, samplerate: int) -> tuple[float, int, int]:
    """(seconds, channels, rate) from the file's header; (0, 0, 0) when unreadable (the worker
    reports why); a MIDI file's rate is ``samplerate``."""
    try:
        if kind == "midi":
            from realtime.run.midi_file import midi_file_song

            # its length; the release tail is not known before the render
            return midi_file_song(path, samplerate)[1] / samplerate, 0, samplerate
        import soundfile as sf

        from realtime.io.native_stderr import capture_stderr

        with capture_stderr():  # libmpg123's notes on a broken MP3: the worker's reading says them
            info = sf.info(sf_path(path))
            unsure = info.format in ("MP3", "OGG") or info.frames >= UNKNOWN_FRAMES
            frames = _read_frames(path) if unsure else info.frames
        return frames / info.samplerate, info.channels, info.samplerate
    except Exception:
        return 0.0, 0, 0


def _read_frames(path: Path) -> int:
    """A file's length as the worker will read it: every part of a joined MP3 or chained Ogg (its
    header gives the first part's, or for a chained Ogg 2^63 frames), an MP3's frames where no
    header counts them (``whole_mp3``), a length no header gives counted (``known_length``)."""
    import soundfile as sf

    from realtime.run.audio_input import joined, known_length, whole_mp3

    with contextlib.redirect_stderr(io.StringIO()):  # a rest not read: the worker says it
        f, _ = joined(path, sf.SoundFile(sf_path(path)))
        f, _ = whole_mp3(path, f)
        f, _ = known_length(sf_path(path), f)
    with f:
        return f.frames


def _bits_for(dst: Path, bits: str | None) -> str | None:
    """``--bits`` for an output: None for one in a compressed format (MP3, Ogg), which has no sample
    format to set; one line, before any work, for a format that cannot hold them (FLAC's float)."""
    from realtime.run.offline import OUTPUT_FORMATS, bits_subtype

    fmt = OUTPUT_FORMATS.get(dst.suffix.lower().lstrip("."))
    if bits is None or fmt in (None, "OGG", "MP3"):  # (an unknown extension: its task fails as before)
        return None
    bits_subtype(dst, fmt, bits)
    return bits


def _plays_midi(preset: dict) -> bool:
    """Whether a slot of the preset may take MIDI: the synth, or a hosted plugin (which one is
    known once it is loaded: ``render_midi`` refuses a chain in which none does)."""
    from realtime.dsp.processors import URI_KINDS

    return (any(s["processor"] in URI_KINDS for s in preset["chain"])
            or any(callable(getattr(cls, "handle_midi", None)) for cls in _processor_classes(preset)))


def _check_rate(preset: dict, rate: int) -> None:
    """A rate a processor of ``preset`` cannot run at at all (``rate_range``: the de-limiter at
    -r 96000) is refused here, once, not as the failure of every file."""
    for cls in _processor_classes(preset):
        lo_hi = cls.rate_range
        if lo_hi is not None and not lo_hi[0] <= rate <= lo_hi[1]:
            raise PresetError(f"{cls.kind}: runs at {lo_hi[0] / 1000:g}-{lo_hi[1] / 1000:g} kHz only, not {rate} Hz "
                              "(give -r 44100 or 48000, or none)")


def _processor_classes(preset: dict) -> list:
    """The classes of a preset's slots (hosted plugins, which run at any rate, left out)."""
    from realtime.dsp.processors import URI_KINDS, processor_class

    return [processor_class(s["processor"]) for s in preset["chain"] if s["processor"] not in URI_KINDS]


def check_out_dir(out_dir) -> Path:
    """``--out`` as a Path; an empty one (an unset shell variable) is refused, not taken as the current folder."""
    if not str(out_dir).strip():
        raise OfflineError("--out is empty: give the folder the outputs go to")
    return Path(out_dir)


def real_path(path) -> str:
    """``path`` absolute, its folders' symbolic links resolved (the file itself as named: an output
    that is a link is written through): one spelling for a folder reached by links or ``..``."""
    p = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))


def _scan(folder: Path, out_dir: Path, others: dict[str, int] | None = None) \
        -> tuple[list[Path], list[tuple[Path, Path]]]:
    """A folder input's audio and MIDI files, and apart those that lie in ``out_dir`` (with their
    path below it): a run's own outputs, which every re-run would take for inputs. ``others``
    counts the other files by extension (what a folder with nothing to process held).

    One rule at every depth below ``folder``: a name that starts with "." (file or folder) is
    left out, and so is a folder below it that holds another batch's log (``LOG_NAME``: that
    batch's outputs, which a second batch into another folder took for inputs, a layer more at
    each run); links to folders and files are followed, and every folder and file is taken once,
    by its real path, where the fewest links lead to it (then by name): a link to a folder scanned
    already (a loop, a folder that holds it, a sibling) or to a file found already would have it
    processed again into a second output. What is left out so, and what cannot be read (a folder
    without permission, a link to nothing), is said in one warning line, not passed over unsaid.
    ``out_dir`` is found by its real path, however it is reached.
    """
    out_real, top = Path(os.path.realpath(out_dir)), os.path.realpath(folder)
    watch = not Path(top).is_relative_to(out_real)  # a folder inside out_dir is read as asked

    def below_out(real: str) -> Path | None:
        return Path(real).relative_to(out_real) if watch and Path(real).is_relative_to(out_real) else None

    files, unreadable, dangling, folders_again, other_outputs = [], [], [], [], []
    scanned: set[str] = set()
    # folders by (links on the way, path): the real tree first, then what links alone reach, so that
    # which way to a folder counts does not depend on the order the file system lists them in
    heap = [(0, os.fspath(folder), folder, top)]
    while heap:
        links, _, d, real_d = heapq.heappop(heap)
        if real_d in scanned:
            if below_out(real_d) is None:  # (a way into out_dir again leaves out outputs alone: unsaid)
                folders_again.append(str(d))
            continue
        scanned.add(real_d)
        below = below_out(real_d)
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as e:
            unreadable.append(f"{d}: {(os_reason(e) or e.strerror or str(e)).lower()}")
            continue
        if below is None and real_d != top and any(e.name == LOG_NAME for e in entries):
            other_outputs.append(str(d))  # another batch's outputs (its log says so): not this one's inputs
            continue
        for e in entries:
            p = d / e.name
            try:
                is_dir, is_file = e.is_dir(), e.is_file()  # through links
                via = links + e.is_symlink()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                real = os.path.realpath(p)
                # out_dir is looked into, hidden or not: the originals it may hold are checked
                if not e.name.startswith(".") or Path(real) == out_real:
                    heapq.heappush(heap, (via, os.fspath(p), p, real))
            elif e.name.startswith("."):
                continue
            elif is_file:
                ext = Path(e.name).suffix.lower()
                if ext in AUDIO_EXTENSIONS | MIDI_EXTENSIONS:
                    files.append((via, os.fspath(p), p, os.path.realpath(p), below))
                elif others is not None:
                    others[ext or "(none)"] = others.get(ext or "(none)", 0) + 1
            elif e.is_symlink() and not os.path.exists(p):
                dangling.append(str(p))
    found, outputs, files_again, taken = [], [], [], set()
    for _, _, p, real, below in sorted(files, key=lambda f: f[:2]):
        if real in taken:
            files_again.append(str(p))
        elif below is None:
            found.append(p)
        else:
            outputs.append((p, below / p.name))
        taken.add(real)
    said = [_counted(left, one, many)
            for left, one, many in ((unreadable, "unreadable folder", "unreadable folders"),
                                    (dangling, "link to nothing", "links to nothing"),
                                    (sorted(folders_again), "folder found again through a link",
                                     "folders found again through links"),
                                    (sorted(files_again), "file found again through a link",
                                     "files found again through links"),
                                    (sorted(other_outputs), "folder of another batch's outputs",
                                     "folders of other batches' outputs")) if left]
    if said:
        listed = said[0] if len(said) == 1 else f"{', '.join(said[:-1])} and {said[-1]}"
        print(f"warning: {folder}: left out {listed}", file=sys.stderr)
    return sorted(found), sorted(outputs)


def _counted(items: list, one: str, many: str) -> str:
    """"N things (the first, …)": how a warning line names what it left out."""
    return f"{len(items)} {many if len(items) > 1 else one} ({items[0]}{', …' * (len(items) > 1)})"


def _identity(path: Path):
    """A file's identity by any path to it: its device and inode where it exists (a hard link, a
    bind mount), else the path resolved."""
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.realpath(path)


def _check_out_files(out_dir: Path, skipped: list[tuple[Path, Path, Path]], log: ResumeLog) -> None:
    """The files a folder's scan skipped because they lie in ``--out`` must be outputs the log
    records: any other (an original kept there) would be left unprocessed, or replaced by the
    output of the input of the same name."""
    if not skipped:
        return
    known = log.known()
    for p, folder, rel in skipped:  # rel: its path below out_dir
        if log.key(str(out_dir / rel)) not in known:  # a failed re-run's record too: its file is the last output
            raise OfflineError(f"{out_dir}: --out lies inside the input folder {folder} and holds {p}, which no "
                               "earlier batch wrote: it would be skipped, or replaced by an output; give --out "
                               "a folder of its own")


def plan_batch(inputs, out_dir, options: BatchOptions) -> list[BatchTask]:
    """Expand the inputs into tasks, one per output.

    Parameters
    ----------
    inputs : iterable of str or Path
        Audio or MIDI files; folders (searched recursively for audio and MIDI extensions, see
        ``_scan``; the folder's layout kept under ``out_dir``); CSV or JSONL manifests whose rows
        give ``input`` (relative to the manifest), optional ``output`` (relative to ``out_dir``), ``set``
        (overrides added after the global ones; ``;``-separated in CSV) and ``preset``.
    out_dir : str or Path
        Where outputs go; a folder scan leaves out what lies in it (a run's own outputs).
    options : BatchOptions

    Returns
    -------
    list of BatchTask
        Longest first (keeps every worker busy to the end), chains grouped; input, output and
        preset file as absolute paths.

    Raises
    ------
    OfflineError
        An empty ``out_dir``, a folder input that is ``out_dir`` itself, an ``out_dir`` inside a
        folder input that holds files no earlier batch wrote there, a missing input, an input that
        is a pipe or a device (a FIFO, ``/dev/stdin`` from a pipe), an unreadable manifest, two
        inputs that would write the same output, an output that is an input (by any path), or an
        ``ext`` that MIDI inputs cannot be rendered to at their rate.
    PresetError
        A preset or override that does not apply (names the manifest row when it came from one).
    """
    out_dir = check_out_dir(out_dir)
    from realtime.run.offline import MAX_RENDER_S

    if not 0 <= options.tail_s <= MAX_RENDER_S:  # as `process` says it, once, not as every file's failure
        raise OfflineError(f"a tail of {options.tail_s} s: give 0 to {MAX_RENDER_S // 3600} hours")
    if options.ext is not None and not re.fullmatch(r"\.?[A-Za-z0-9]+", options.ext):
        raise OfflineError(f"--ext {options.ext!r}: not a file extension (e.g. wav, flac)")
    if options.ext is not None:  # refused now, as `process` refuses it, not as a failure of every file
        from realtime.run.offline import output_format

        try:
            output_format(Path("out." + options.ext.lstrip(".")), "FLOAT", bits=options.bits)
        except OfflineError as e:
            raise OfflineError(f"--ext {options.ext!r}: {str(e).split(': ', 1)[-1]}") from None
    presets = _Presets()
    others: dict[str, int] = {}  # the extensions of a folder's files that are neither audio nor MIDI
    jobs: list[tuple[Path, Path, str | None, tuple[str, ...], str]] = []  # input, output, preset, sets, origin
    skipped = []  # files of a folder input that lie in out_dir: (file, folder, its path below out_dir)
    for item in map(Path, inputs):
        if item.is_dir():
            if item.resolve() == out_dir.resolve():  # every output would be its own input
                raise OfflineError(f"{item}: the output folder is the input folder; give --out another folder")
            found, outputs = _scan(item, out_dir, others)
            skipped += [(p, item, rel) for p, rel in outputs]
            jobs += [(p, _default_output(p, p.relative_to(item), out_dir, options.ext), None, (), str(p))
                     for p in found]
        elif item.suffix.lower() in MANIFEST_EXTENSIONS and item.is_file():
            for i, row in enumerate(_read_manifest(item)):
                src = item.parent / row["input"]
                dst = out_dir / row["output"] if row.get("output") else \
                    _default_output(src, Path(Path(row["input"]).name), out_dir, options.ext)
                preset = row.get("preset") or None
                if preset and (is_json_name(preset) or os.sep in preset) and not Path(preset).is_absolute():
                    preset = str(item.parent / preset)  # a preset file beside the manifest, as its inputs are
                jobs.append((src, dst, preset, tuple(row["set"]), f"{item} row {i + 1}"))
        elif item.exists():
            jobs.append((item, _default_output(item, Path(item.name), out_dir, options.ext), None, (), str(item)))
        else:
            raise OfflineError(f"{item}: no such file or folder")
    log = None if options.force else ResumeLog(out_dir)  # (--force: replace what is there, as the refusals say)
    if log is not None:
        _check_out_files(out_dir, skipped, log)
    if options.ext is not None and any(_kind(src) == "midi" for src, *_ in jobs):  # renders are at one rate
        from realtime.run.offline import output_format

        try:
            output_format(Path("out." + options.ext.lstrip(".")), "PCM_24", options.samplerate or DEFAULT_RATE)
        except OfflineError as e:
            raise OfflineError(f"--ext {options.ext!r} for MIDI inputs: {str(e).split(': ', 1)[-1]}") from None
    jobs = _midi_apart_from_audio(_once_each(jobs))
    readers = {}  # what each input is, and the first task that reads it
    for src, _, _, _, origin in jobs:
        readers.setdefault(_identity(src), origin)
    tasks, seen = [], {}
    for src, dst, preset_name, sets, origin in jobs:
        key = real_path(dst)
        if key in seen:
            hint = "; give the manifest's rows an output column" if origin != str(src) else ""
            raise OfflineError(f"{origin} and {seen[key]} would both write {dst}{hint}")
        seen[key] = origin
        reader = readers.get(_identity(dst))
        if reader == origin:
            raise OfflineError(f"{origin}: its output {dst} is the input itself; give --out another folder")
        if reader is not None:  # the other task would read this one's output, or its input would be gone
            raise OfflineError(f"{origin} would write {dst}, the input of {reader}; give it another output")
        if src.exists() and not src.is_file() and not src.is_dir():  # a missing file or a folder fails alone, later
            # reading one would hang (a FIFO no one writes) or consume it (stdin): batch hashes each input to resume
            raise OfflineError(f"{origin}: a pipe or device, not a file; batch needs files "
                               "(for a pipe use `main.py process`)")
        kind = _kind(src)
        if kind == "midi":
            name, overrides, block = preset_name or options.midi_preset, (*options.midi_overrides, *sets), \
                options.midi_blocksize
        else:
            name, overrides, block = preset_name or options.preset, (*options.overrides, *sets), options.blocksize
        midi_rate = options.samplerate or DEFAULT_RATE
        seconds, channels, file_rate = _header(src, kind, midi_rate)
        tail = options.tail_s if kind == "audio" else 0.0
        try:
            preset = presets.load(name, tuple(overrides))
            rate = midi_rate if kind == "midi" else chain_rate(_processor_classes(preset), file_rate, options.samplerate)
            _check_rate(preset, rate)
            settings = {"kind": kind, "samplerate": rate, "blocksize": block}
            if tail:  # only then: the logs of runs without a tail keep their hashes
                settings["tail_s"] = tail
            bits = _bits_for(dst, options.bits)
            if bits:
                settings["bits"] = bits
            digest = presets.digest(name, tuple(overrides), settings)
            if kind == "midi" and not _plays_midi(preset):
                raise PresetError(f"preset {name!r} plays no MIDI (no synth or LV2 plugin in it): its renders would "
                                  "be silent; use a preset with an instrument, e.g. --midi-preset synth")
        except PresetError as e:
            if not (preset_name or sets):  # the command line's own preset: no file or row to blame
                raise
            raise PresetError(f"{origin}: {e}") from None
        # absolute: a Ray worker runs in the cluster's folder, not this one
        tasks.append(BatchTask(os.path.abspath(src), os.path.abspath(dst), kind, preset, digest,
                               presets.file(name), rate, block, seconds, channels, tail, bits))
    if not tasks:  # a typo'd folder, or a library of formats it does not read, looked like a success
        kinds = sorted(others)
        what = f" ({sum(others.values())} other files left out: {', '.join(kinds[:6])}{', …' * (len(kinds) > 6)})" \
            if others else ""
        raise OfflineError(f"{', '.join(map(str, inputs))}: no audio or MIDI files to process{what}")
    _say_unread_audio(others)  # (with nothing else, the error above names them)
    if log is not None:
        _check_strangers(out_dir, tasks, log)
    tasks.sort(key=lambda t: (-t.audio_s, t.preset_hash, t.input))
    return tasks


def _say_unread_audio(others: dict[str, int]) -> None:
    """One warning line for the audio files of kinds it cannot read that the folders held (a library
    of M4A files beside one WAV was 'processed' as that one file, unsaid)."""
    unread = {ext: n for ext, n in others.items() if ext in UNREAD_AUDIO}
    if unread:
        kinds = sorted(unread, key=lambda e: (-unread[e], e))
        listed = ", ".join(f"{e} ×{unread[e]}" for e in kinds[:6]) + (", …" if len(kinds) > 6 else "")
        print(f"warning: left out {sum(unread.values())} audio files of kinds this host does not read ({listed}): "
              "convert them (to FLAC, e.g. with ffmpeg) to process them", file=sys.stderr)


def _midi_apart_from_audio(jobs: list) -> list:
    """A MIDI file beside an audio file of the same name (song.mid and song.wav, as MIDI libraries
    keep them) rendered to the audio one's output name, and the batch was refused whole: the render
    keeps the MIDI file's extension in its name instead (song.mid.wav), said in one line. Only for
    files found or named (a manifest row's output is its own)."""
    places: dict[str, list[int]] = {}
    for i, (src, dst, *_) in enumerate(jobs):
        places.setdefault(real_path(dst), []).append(i)
    moved = []
    for idx in places.values():
        if len(idx) > 1 and any(_kind(jobs[i][0]) != "midi" for i in idx):
            for i in idx:
                src, dst, preset, sets, origin = jobs[i]
                if _kind(src) == "midi" and origin == str(src):
                    jobs[i] = (src, dst.with_name(src.name + dst.suffix), preset, sets, origin)
                    moved.append(jobs[i][1])
    if moved:
        why = "named after the MIDI file, as an audio file of the same name is beside it"
        print(f"note: {_counted(moved, f'MIDI render {why}', f'MIDI renders {why}')}", file=sys.stderr)
    return jobs


def _once_each(jobs: list) -> list:
    """The jobs with each input file once: a folder given with a folder inside it (a shell glob)
    processed the inner one's files twice, into two outputs. The first job keeps it; the rest are
    said in one warning line. A manifest's rows are its own: one file in two rows is two jobs."""
    seen, kept, again = set(), [], []
    for job in jobs:
        src, origin = job[0], job[4]
        key = _identity(src)
        if origin != str(src) or key not in seen:  # (a manifest row's origin names its row)
            seen.add(key)
            kept.append(job)
        else:
            again.append(str(src))
    if again:
        print(f"warning: left out {_counted(again, 'input given twice', 'inputs given twice')}: each is processed once",
              file=sys.stderr)
    return kept


def _check_strangers(out_dir: Path, tasks: list[BatchTask], log: ResumeLog) -> None:
    """An output that exists and that no batch wrote or set out to write there (the resume log
    names it) is a file of the user's: it would be replaced, so the batch is refused, naming it.
    (A batch claims its outputs before it writes them, ``ResumeLog.claim``: one killed after an output
    was put in place and before its result was logged left a file it knows.)"""
    known = log.known()
    # (a folder in the way is no file to lose: it fails alone, "is a folder", and is retried once moved)
    strangers = [t.output for t in tasks if os.path.isfile(t.output) and log.key(t.output) not in known]
    if strangers:
        more = f" and {len(strangers) - 1} more" if len(strangers) > 1 else ""
        raise OfflineError(f"{out_dir}: holds {strangers[0]}{more}, which no earlier batch wrote: it would be replaced "
                           "by an output; move it, give --out another folder, or --force to replace it")
    # an output changed since a batch wrote it (an edit saved over it) is the user's work now: it was
    # processed again and the edit lost, said as "processed"
    claimed = log.claimed()  # (a batch killed after it replaced an output and before it logged it: its own)
    edited = [t.output for t in tasks if log.key(t.output) not in claimed
              and _changed_since_written(t.output, log.records.get(log.key(t.output)))]
    if edited:
        more = f" and {len(edited) - 1} more" if len(edited) > 1 else ""
        raise OfflineError(f"{out_dir}: {edited[0]}{more} changed since an earlier batch wrote it: it would be "
                           "replaced by a new output; move it, give --out another folder, or --force to replace it")


def _changed_since_written(output: str, rec: dict | None) -> bool:
    """Whether ``output`` exists and is not the file its record says a batch wrote (size and mtime)."""
    if not rec or "output_mtime_ns" not in rec or rec.get("status") not in ("ok", "partial"):
        return False  # (a record from before the output's mtime was kept cannot tell)
    try:
        st = os.stat(output)
    except OSError:
        return False
    return not _as_written(st, rec)


def _as_written(st: os.stat_result, rec: dict) -> bool:
    """Whether a file's stat is that of the output ``rec`` says a batch wrote (size and mtime)."""
    return (st.st_mtime_ns, st.st_size) == (rec["output_mtime_ns"], rec.get("output_bytes"))


# the processors with a batched form (N streams through one model call) and the input kind they take
BATCHED_KINDS = {"enhancer": "audio", "delimiter": "audio", "synth": "midi"}


def batchable(preset: dict, kind: str = "audio") -> bool:
    """Whether a preset's ``kind`` ("audio" or "midi") files can run as streams side by side: its
    first slot is a processor with a batched form for that kind (the enhancer or the de-limiter for
    audio, the synth for MIDI), in full (not bypassed, not mixed)."""
    first = preset["chain"][0]
    return BATCHED_KINDS.get(first["processor"]) == kind and not first["bypass"] and first["mix"] == 1.0


def group_tasks(tasks: list[BatchTask], streams: int, workers: int = 1) -> list[tuple[BatchTask, ...]]:
    """Units of work: groups of up to ``streams`` files with the same preset and channel count
    (similar lengths side by side: ``tasks`` come longest first) where the preset is ``batchable``
    for their kind, the rest one file each.

    Parameters
    ----------
    tasks : list of BatchTask
    streams : int
        Most files per group.
    workers : int
        Groups are made small enough that every worker gets one (``streams`` is an upper bound).

    Returns
    -------
    list of tuple of BatchTask
        In ``tasks``' order of their first member.
    """
    def key(t: BatchTask):
        if streams <= 1 or not batchable(t.preset, t.kind) or (t.kind == "audio" and t.channels not in (1, 2)):
            return None
        return t.preset_hash, t.channels  # MIDI renders are stereo (channels 0 for all)

    counts: dict = {}
    for t in tasks:
        counts[key(t)] = counts.get(key(t), 0) + 1
    units: list[list[BatchTask]] = []
    open_groups: dict[tuple, list[BatchTask]] = {}
    for t in tasks:
        k = key(t)
        if k is None:
            units.append([t])
            continue
        size = max(1, min(streams, -(-counts[k] // max(1, workers))))
        group = open_groups.get(k)
        if group is None or len(group) >= size:
            group = open_groups[k] = []
            units.append(group)
        group.append(t)
    return [tuple(u) for u in units]


# ------------------------------------------------------------------------------------------ resume log

def finished_status(report: dict) -> str:
    """A finished file's status: ``"partial"`` when its input ends before its header says (a cut or
    damaged file: what could be read was processed; ``process_file``'s ``truncated``), else ``"ok"``."""
    return "partial" if report.get("truncated") else "ok"


def output_stat(output) -> dict:
    """What the log keeps of a written output: its size and mtime (``ResumeLog.done``)."""
    st = os.stat(output)
    return {"output_bytes": st.st_size, "output_mtime_ns": st.st_mtime_ns}


def claimed_outputs(path) -> list[str]:
    """The outputs a list of claims (``ResumeLog.claim``'s ``QUEUED_NAME``) names; none where it cannot be read."""
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    output = json.loads(line)
                except ValueError:  # a torn line (the list is written whole, but a disk may lie)
                    continue
                if isinstance(output, str):
                    out.append(output)
    except OSError:
        pass
    return out


class ResumeLog:
    """The batch's record of finished outputs: ``OUT/.batch-manifest.jsonl``, one JSON line each.

    Only the parent process appends (a line per result, flushed and synced); the last line for an
    output wins; a torn last line (power cut) is ignored. Records hold absolute paths and are
    looked up by the output's path inside ``out_dir`` (kept as ``output_key``), so the same batch run
    from another folder (``--out`` spelled differently), or into the folder moved elsewhere, resumes.
    A log written before paths were absolute holds them relative to the folder that run started
    in: they are read against the current folder, so they still count when the batch is run from
    that folder again.
    """

    def __init__(self, out_dir):
        self.path = Path(out_dir) / LOG_NAME
        self.queued_path = Path(out_dir) / QUEUED_NAME
        self.out_dir = os.path.realpath(out_dir)
        self.records: dict[str, dict] = {}
        self._torn = False  # the last line has no end (a power cut mid-append): the next line starts on its own
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    self._torn = not line.endswith(b"\n")
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(rec, dict) and isinstance(rec.get("output"), str):
                        self.records[self._key_of(rec)] = rec
        except FileNotFoundError:
            pass

    def key(self, output: str) -> str:
        """Where ``output`` lies in the output folder: the same whatever the current folder, and
        whatever links the folder was reached by (``real_path``)."""
        return os.path.relpath(real_path(output), self.out_dir)

    def _key_of(self, rec: dict) -> str:
        """A record's ``key``: the one it was written with, so that the records of an output folder
        moved or copied elsewhere (another disk, a share mounted at another path) still find their
        outputs; a record from before it was kept, by its absolute path."""
        rel = rec.get("output_key")
        return os.path.normpath(rel) if isinstance(rel, str) and rel and not os.path.isabs(rel) \
            else self.key(rec["output"])

    def record(self, task: BatchTask) -> dict | None:
        """The last record of the task's output, if any."""
        return self.records.get(self.key(task.output))

    def done(self, task: BatchTask) -> str | None:
        """What a previous run left for this task, if it still holds.

        Returns
        -------
        str or None
            ``"ok"``: the output exists as recorded (same size and mtime), made with this preset
            (its hash: the content, whatever the file's mtime) from the input as it is now (same
            size and mtime; a time in the future is no reason to redo it). ``"partial"``: the same,
            for an input that ended early (truncated or damaged; the output holds what it had):
            it counts as done, as processing the same bytes again would give the same output,
            and is processed again once the input changes (completed or replaced). ``"failed"``:
            the input itself failed (unreadable, no frames, …; not the output's folder or disk, a
            missing model, a dead worker) and neither it nor the preset has changed since: it
            would fail again. None: process it.
        """
        rec = self.record(task)
        if not rec or rec.get("preset_hash") != task.preset_hash:  # the preset's content and the run settings
            return None
        try:
            src = os.stat(task.input)
            # the input as recorded: equal, not older (a file copied over it with `cp -p` keeps its older mtime)
            same_input = (src.st_mtime_ns, src.st_size) == (rec.get("input_mtime_ns"), rec.get("input_bytes"))
            if rec.get("status") in ("ok", "partial"):
                out = os.stat(task.output)
                if "output_mtime_ns" in rec:  # the output as written: another file put in its place is not it
                    kept = _as_written(out, rec)
                else:  # a record from before it was kept: not older than the input, as then
                    kept = out.st_mtime_ns >= src.st_mtime_ns and out.st_size == rec.get("output_bytes")
                return rec["status"] if same_input and kept else None
            # only the input's own failures would come again; a full disk or a missing model is fixed
            # without touching the input. A record from before "input_fault" was kept cannot tell: retried
            # (one more attempt costs little, and then its record says)
            return "failed" if rec.get("input_fault") is True and same_input else None
        except OSError:
            return None

    def append(self, result: dict) -> None:
        """Record ``result`` with its paths made absolute (see the class docstring)."""
        rec = {**result, "input": os.path.abspath(result["input"]), "output": os.path.abspath(result["output"]),
               "output_key": self.key(result["output"])}
        self._write([rec])

    def claim(self, outputs) -> None:
        """Note, beside the log (``QUEUED_NAME``), the outputs this batch is about to write: one whose
        file a killed batch put in place before its result was logged is then known as a batch's,
        not taken for a file of the user's (``claimed``). ``release`` removes the note when the
        batch ends. The log itself holds results only."""
        from realtime.io.files import atomic_write

        # a killed batch's claims whose files are still unlogged stay: this batch may not write them all
        before = [o for o in self._claimed_paths() if self._unlogged(o)]
        paths = dict.fromkeys([*before, *map(os.path.abspath, outputs)])
        self.queued_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.queued_path) as tmp:
            Path(tmp).write_text("".join(json.dumps(o) + "\n" for o in paths), encoding="utf-8")

    def _unlogged(self, output: str) -> bool:
        """Whether ``output`` is a file its record does not describe (none, or an older one's: a
        batch killed after it put a new output in place and before it logged it)."""
        rec = self.records.get(self.key(output))
        return os.path.isfile(output) and (rec is None or _changed_since_written(output, rec))

    def claimed(self) -> set[str]:
        """The outputs (``key``) a batch claimed and did not release: it was killed."""
        return {self.key(o) for o in self._claimed_paths()}

    def _claimed_paths(self) -> list[str]:
        return claimed_outputs(self.queued_path)

    def known(self) -> set[str]:
        """The outputs (``key``) a batch wrote or set out to write: its records and its claims."""
        return self.records.keys() | self.claimed()

    def release(self) -> None:
        """The end of the batch: the note goes, unless an output it names was put in place and not
        logged (the log could not be written: a full disk); then it stays, for the next run to know it."""
        if any(self._unlogged(o) for o in self._claimed_paths()):
            return
        try:
            os.unlink(self.queued_path)
        except FileNotFoundError:
            pass

    def _write(self, recs: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # after a torn last line, a new line of its own: glued to the fragment it was lost too
        data = ("\n" * self._torn + "".join(json.dumps(r, sort_keys=True) + "\n" for r in recs)).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException:
                # a full disk mid-append left a fragment: cut back to the last whole line (the next
                # record, glued to it, was lost on disk while this run counted it written)
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    self._torn = True
                raise
        finally:
            os.close(fd)
        self._torn = False
        for rec in recs:
            self.records[self._key_of(rec)] = rec
