"""JSON presets: versioned, validated with errors that name the offending field.

Format (version 1)::

    {"version": 1, "name": "default", "description": "...",
     "chain": [{"id": "hpf", "processor": "biquad", "bypass": false, "mix": 1.0,
                "params": {"type": "highpass", "freq_hz": 40}}, ...]}

``validate_preset`` returns a normalised copy: every slot has id/bypass/mix/params (ids default to
the processor kind, suffixed 2, 3, ... when repeated) and the chain ends in a safety slot (added
when missing), so overrides and UIs can address every slot, the auto-added safety included.
The loader is generic: any registered or lazily importable processor kind is accepted. A hosted
plugin's slot also names the plugin, and its params are the plugin's control ports::

    {"id": "verb", "processor": "lv2", "uri": "http://plugin.org.uk/swh-plugins/gverb",
     "params": {"revtime": 2.5}}

and, for a plugin implementing the LV2 state extension, its own state as Turtle (``"state"``,
written by ``Chain.to_preset``; checked against the plugin when the preset is validated). A slot
may start from one of the presets that come with the plugin (``"plugin_preset": "Mellow"``;
``python main.py plugins --presets`` lists them): its values are taken when the preset is read,
the slot's own ``params`` over them, so the normalised preset holds them as params.
"""
from __future__ import annotations

import codecs
import copy
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from realtime.dsp.processor import short_repr
from realtime.errors import ParamError, PluginError, PresetError, UnknownProcessorError
from realtime.io.files import atomic_write_text

if TYPE_CHECKING:
    from realtime.dsp.chain import Chain

# The processors (and Numba with them) are imported where a preset is validated or built, not here:
# listing and reading presets must stay instant.

VERSION = 1
# A preset is a few KB, but a hosted plugin's own state can be large (LSP Multisampler x48's: about
# 1 MB): this only guards against absurd files (a recording given by mistake, /dev/zero). The same
# limit for saving and loading: a preset that is saved can be loaded again.
MAX_PRESET_BYTES = 64 << 20
MAX_SLOTS = 256
BUILTIN_DIR = Path(__file__).with_name("presets")
APP = "rtaudio-host"
TOP_KEYS = ("version", "name", "description", "chain", "midi")
MIDI_KEYS = ("cc", "channel", "target")
SLOT_KEYS = ("id", "processor", "uri", "bypass", "mix", "params", "state", "plugin_preset")  # uri, state,
# plugin_preset: only kinds in URI_KINDS
_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}



def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_param(d, value, where: str):
    """Validate one param value from JSON; return the value to store (choice names kept)."""
    label = f"{where}{d.id}"
    if d.choices:
        if isinstance(value, str):
            if value not in d.choices:
                raise PresetError(f"{label}: {short_repr(value)} is not one of {list(d.choices)}")
            return value
        try:  # a number: an index, or a plugin's own value (Param.choice_of)
            return d.choices[d.choice_of(value, where)]
        except ParamError as e:
            raise PresetError(str(e)) from None
    boolean = (d.min, d.max, d.step) == (0.0, 1.0, 1.0)
    if isinstance(value, bool) and boolean:
        return value
    if not _is_number(value):
        raise PresetError(f"{label}: expected a number, got {type(value).__name__} {short_repr(value)}")
    try:
        d.validate(value, where=where)
    except ParamError as e:
        raise PresetError(str(e)) from None
    return value


def _check_object(raw, where: str, allowed: tuple[str, ...], what: str = "an object") -> None:
    """``raw`` must be a dict whose keys are all in ``allowed``; errors name ``where``."""
    if not isinstance(raw, dict):
        raise PresetError(f"{where}: expected {what}, got {type(raw).__name__}")
    for k in raw:
        if k not in allowed:
            prefix = f"{where}.{k}" if where != "preset" else f"{k}"
            kind = "unknown key" if where != "preset" else "unknown top-level key"
            raise PresetError(f"{prefix}: {kind}; allowed: {list(allowed)}")


# parameters renamed or removed since presets were first written (version 1): kind -> {old: new, or
# None for gone}. A preset saved before is read with one warning, not refused whole
RETIRED_PARAMS = {"enhancer": {"mix": "wet"}, "delimiter": {"limit_gate": None}}
_said: set = set()  # the warnings given (a preset is validated again at each build: said once)


def _retired(kind: str, pid: str, label: str) -> bool:
    """Whether an unknown parameter ``pid`` of a ``kind`` slot is one renamed or removed since
    (``RETIRED_PARAMS``); says so once. Any other unknown name is refused: a typo in a preset or a
    ``--set`` must not pass as a warning (a hosted plugin's port too)."""
    retired = RETIRED_PARAMS.get(kind, {})
    if pid not in retired:
        return False
    if (kind, pid) not in _said:
        _said.add((kind, pid))
        new = retired[pid]
        what = (f"renamed {new!r} since this preset was saved; read as that" if new is not None else
                "no longer a parameter of this processor; left out")
        print(f"warning: {label}: {what}", file=sys.stderr)
    return True


def _plugin_preset(cls, label, where: str) -> tuple[dict, str | None]:
    """The values and state of the preset ``label`` that comes with a hosted plugin (``cls``)."""
    if not isinstance(label, str) or not label:
        raise PresetError(f"{where}: expected the name of one of the plugin's presets, got {short_repr(label)}")
    try:
        return cls.plugin_preset(label)
    except PluginError as e:
        raise PresetError(f"{where}: {e}") from None


def _validate_slot(i: int, raw) -> dict:
    where = f"chain[{i}]"
    _check_object(raw, where, SLOT_KEYS)
    if "processor" not in raw:
        raise PresetError(f"{where}.processor: missing")
    from realtime.dsp.chain import SLOT_ID_RE
    from realtime.dsp.processors import URI_KINDS, available_kinds, processor_class, slot_class

    kind = raw["processor"]
    if not isinstance(kind, str):
        raise PresetError(f"{where}.processor: expected a string, got {short_repr(kind)}")
    try:
        cls = processor_class(kind)
    except UnknownProcessorError as e:
        if "unknown processor" in str(e):
            raise PresetError(f"{where}.processor: unknown processor {short_repr(kind)}; known: {available_kinds()}") from None
        raise PresetError(f"{where}.processor: {e}") from None
    uri = raw.get("uri")
    if kind in URI_KINDS:
        if not isinstance(uri, str) or not uri:
            raise PresetError(f"{where}.uri: a {short_repr(kind)} slot needs the plugin's URI as a string, got {short_repr(uri)}")
        try:
            cls = slot_class(kind, uri)
        except (PluginError, UnknownProcessorError) as e:
            raise PresetError(f"{where}.uri: {e}") from None
    elif "uri" in raw:
        raise PresetError(f"{where}.uri: only {list(URI_KINDS)} slots take a uri")
    state = raw.get("state")
    params = raw.get("params", {})
    if "plugin_preset" in raw:
        if kind not in URI_KINDS or not hasattr(cls, "plugin_preset"):
            raise PresetError(f"{where}.plugin_preset: only {list(URI_KINDS)} slots take one of their plugin's presets")
        values, own_state = _plugin_preset(cls, raw["plugin_preset"], f"{where}.plugin_preset")
        if isinstance(params, dict):
            params = {**values, **params}  # the slot's own params over the plugin preset's
        state = state if "state" in raw else own_state
    if "state" in raw or state is not None:
        if kind not in URI_KINDS or not hasattr(cls, "check_state"):
            raise PresetError(f"{where}.state: only {list(URI_KINDS)} slots take a state")
        if not isinstance(state, str):
            raise PresetError(f"{where}.state: expected the plugin's saved state as a string, got {type(state).__name__}")
        try:
            cls.check_state(state)
        except PluginError as e:
            raise PresetError(f"{where}.state: {e}") from None
    sid = raw.get("id")
    if sid is not None and (not isinstance(sid, str) or not SLOT_ID_RE.match(sid)):
        raise PresetError(f"{where}.id: {short_repr(sid)} is not a valid slot id (letters, digits, '_' and '-'; no dots)")
    bypass = raw.get("bypass", False)
    if not isinstance(bypass, bool):
        raise PresetError(f"{where}.bypass: expected true or false, got {short_repr(bypass)}")
    mix = raw.get("mix", 1.0)
    if not _is_number(mix):
        raise PresetError(f"{where}.mix: expected a number, got {type(mix).__name__} {short_repr(mix)}")
    if isinstance(mix, float) and not math.isfinite(mix):
        raise PresetError(f"{where}.mix: {mix} is not finite")
    if not 0.0 <= mix <= 1.0:
        raise PresetError(f"{where}.mix: {short_repr(mix, 20)} is outside [0, 1]")
    if not isinstance(params, dict):
        raise PresetError(f"{where}.params: expected an object, got {type(params).__name__}")
    known = {d.id: d for d in cls.params}
    out_params = {}
    for pid, value in params.items():
        if pid not in known:
            if _retired(kind, pid, f"{where}.params.{pid}"):
                new = RETIRED_PARAMS.get(kind, {}).get(pid)
                if new is not None and new not in params:
                    out_params[new] = _check_param(known[new], value, f"{where}.params.")
                continue
            raise PresetError(f"{where}.params.{pid}: unknown parameter for {short_repr(kind)}; known: {list(known)}")
        out_params[pid] = _check_param(known[pid], value, f"{where}.params.")
    head = {"id": sid, "processor": kind, **({"uri": uri} if kind in URI_KINDS else {})}
    tail = {"state": state} if state is not None else {}
    return {**head, "bypass": bypass, "mix": float(mix), "params": out_params, **tail}


def validate_preset(preset, source: str | None = None) -> dict:
    """Check a preset dict and return a normalised deep copy.

    Parameters
    ----------
    preset : dict
        Parsed preset JSON.
    source : str, optional
        Where it came from (a path), prefixed to error messages.

    Returns
    -------
    dict
        Every slot with id/bypass/mix/params, the safety stage last (added when missing).

    Raises
    ------
    PresetError
        The message names the offending field, e.g. ``chain[1].params.q``.
    """
    try:
        return _validate(preset)
    except PresetError as e:
        if source:
            raise PresetError(f"{source}: {e}") from None
        raise


def _validate(preset) -> dict:
    _check_object(preset, "preset", TOP_KEYS, "a JSON object")
    if "version" not in preset:
        raise PresetError(f"version: missing (expected {VERSION})")
    v = preset["version"]
    if _is_number(v) and v > VERSION:  # (2 or 2.0)
        raise PresetError(f"version: {short_repr(v, 20)} is not supported: this preset was written by a newer "
                          f"release of {APP} (this one reads version {VERSION}); update to load it")
    if not _is_number(v) or v != VERSION:
        raise PresetError(f"version: {short_repr(v, 20)} is not supported (expected {VERSION})")
    name = preset.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PresetError(f"name: expected a non-empty string, got {short_repr(name)}")
    desc = preset.get("description", "")
    if not isinstance(desc, str):
        raise PresetError(f"description: expected a string, got {short_repr(desc)}")
    chain = preset.get("chain")
    if not isinstance(chain, list):
        raise PresetError(f"chain: expected a list of slots, got {type(chain).__name__}")
    final_safety = bool(chain) and isinstance(chain[-1], dict) and chain[-1].get("processor") == "safety"
    if len(chain) - final_safety > MAX_SLOTS:  # the final safety stage not counted: it is appended when missing
        raise PresetError(f"chain: {len(chain) - final_safety} slots; at most {MAX_SLOTS} (and the final safety stage)")
    try:
        chain = copy.deepcopy(chain)
    except RecursionError:
        raise PresetError("chain: nested too deeply to be a preset") from None
    slots = [_validate_slot(i, s) for i, s in enumerate(chain)]
    # Explicit ids first (duplicates are errors), then defaults: kind, kind2, kind3, ...
    taken = set()
    for i, s in enumerate(slots):
        if s["id"] is not None:
            if s["id"] in taken:
                raise PresetError(f"chain[{i}].id: duplicate slot id {short_repr(s['id'])}")
            taken.add(s["id"])

    next_suffix: dict[str, int] = {}  # per kind, so assigning n ids stays linear

    def fresh(kind):
        sid, k = kind, next_suffix.get(kind, 1)
        if k > 1:
            sid = f"{kind}{k}"
        while sid in taken:
            k += 1
            sid = f"{kind}{k}"
        next_suffix[kind] = k + 1
        taken.add(sid)
        return sid

    for s in slots:
        if s["id"] is None:
            s["id"] = fresh(s["processor"])
    if not slots or slots[-1]["processor"] != "safety":
        slots.append({"id": fresh("safety"), "processor": "safety", "bypass": False, "mix": 1.0, "params": {}})
    last = len(slots) - 1
    if slots[-1]["bypass"]:
        raise PresetError(f"chain[{last}].bypass: the final safety stage cannot be bypassed")
    if slots[-1]["mix"] != 1.0:
        raise PresetError(f"chain[{last}].mix: the final safety stage has no wet/dry mix (must be 1)")
    out = {"version": VERSION, "name": name, "description": desc, "chain": slots}
    if "midi" in preset:
        out["midi"] = _validate_midi(preset["midi"], slots)
    return out


# 120..127 are channel mode messages (all sound off, reset, all notes off, ...): never a knob's
LAST_LEARNABLE_CC = 119


def _validate_midi(raw, slots) -> list[dict]:
    """MIDI-learn mappings: [{"cc": 0..119, "channel": 0..15 or null (any), "target": "slot.param"}]
    where param is one of the slot's parameters, "bypass" or "mix"."""
    from realtime.dsp.processors import slot_class

    if not isinstance(raw, list):
        raise PresetError(f"midi: expected a list of mappings, got {type(raw).__name__}")
    params = {s["id"]: [d.id for d in slot_class(s["processor"], s.get("uri")).params] for s in slots}
    out, seen = [], set()
    for i, m in enumerate(raw):
        where = f"midi[{i}]"
        _check_object(m, where, MIDI_KEYS)
        cc, ch, target = m.get("cc"), m.get("channel"), m.get("target")
        if isinstance(cc, int) and not isinstance(cc, bool) and LAST_LEARNABLE_CC < cc <= 127:
            # a learn took these until 2026-12-07: such a preset still loads, without that mapping
            print(f"warning: {where}: controller {cc} is a channel mode message (all notes off, reset, ...), "
                  f"which always goes to the chain; its mapping to {short_repr(target)} is dropped", file=sys.stderr)
            continue
        if isinstance(cc, bool) or not isinstance(cc, int) or not 0 <= cc <= LAST_LEARNABLE_CC:
            raise PresetError(f"{where}.cc: expected a controller number 0..{LAST_LEARNABLE_CC}, got {short_repr(cc)}")
        if ch is not None and (isinstance(ch, bool) or not isinstance(ch, int) or not 0 <= ch <= 15):
            raise PresetError(f"{where}.channel: expected 0..15 or null (any channel), got {short_repr(ch)}")
        slot_id, _, pid = target.partition(".") if isinstance(target, str) else ("", "", "")
        if slot_id not in params:
            raise PresetError(f"{where}.target: {short_repr(target)} names no slot; slots: {list(params)}")
        last = slot_id == slots[-1]["id"]
        allowed = params[slot_id] + ([] if last else ["bypass", "mix"])
        kind = next(s["processor"] for s in slots if s["id"] == slot_id)
        if pid not in allowed and _retired(kind, pid, f"{where}.target {short_repr(target)}"):
            new = RETIRED_PARAMS.get(kind, {}).get(pid)
            if new is None:  # its knob is gone: so is the mapping (said)
                continue
            pid, target = new, f"{slot_id}.{new}"
        if pid not in allowed:
            raise PresetError(f"{where}.target: {short_repr(target)}: {short_repr(pid)} is not one of {allowed}")
        if (cc, ch) in seen:
            raise PresetError(f"{where}: controller {cc} (channel {ch}) is mapped twice")
        seen.add((cc, ch))
        out.append({"cc": cc, "channel": ch, "target": target})
    return out


def _no_duplicate_keys(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise PresetError(f"duplicate key {k!r}")
        d[k] = v
    return d


def parse_preset(text: str, source: str = "preset") -> dict:
    """Parse and validate preset JSON ``text`` (duplicate keys are errors).

    Raises
    ------
    PresetError
        Invalid JSON (with line and column) or an invalid preset, prefixed with ``source``.
    """
    if len(text) > MAX_PRESET_BYTES:
        raise PresetError(f"{source}: {len(text)} bytes is too large for a preset (at most {MAX_PRESET_BYTES})")
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise PresetError(f"{source}: nested too deeply to be a preset") from None
    except json.JSONDecodeError as e:
        raise PresetError(f"{source}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except PresetError as e:  # (a ValueError too: before that clause)
        raise PresetError(f"{source}: invalid JSON: {e}") from None
    except ValueError:  # Python's own limit: an integer of more than 4300 digits (its words name a setting of Python's)
        raise PresetError(f"{source}: invalid JSON: a number is too long "
                          f"(more than {sys.get_int_max_str_digits()} digits)") from None
    return validate_preset(raw, source)


def builtin_presets() -> list[str]:
    """Names of the built-in presets, sorted."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.json"))


def builtin_descriptions() -> dict[str, str]:
    """Name -> description of every built-in preset, read without building or validating them
    (the test suite validates the built-ins), so that listing them stays instant."""
    out = {}
    for name in builtin_presets():
        try:
            raw = json.loads((BUILTIN_DIR / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise PresetError(f"{BUILTIN_DIR / name}.json: cannot read: {e}") from None
        out[name] = raw.get("description", "") if isinstance(raw, dict) else ""
    return out


def config_path() -> Path:
    """The panel's settings file: ``$RTAUDIO_HOST_CONFIG`` if set, else <the platform's config
    folder>/rtaudio-host/rtaudio-host.ini, the folder Qt calls GenericConfigLocation: ``$XDG_CONFIG_HOME``
    (when absolute) or ~/.config on Linux, ~/Library/Preferences on macOS, %LOCALAPPDATA% on Windows.
    Here, not in gui/, because the user's saved presets are beside it (``user_preset_dir``) and the
    command line finds them by name without Qt."""
    env = os.environ.get("RTAUDIO_HOST_CONFIG")
    if env:
        return Path(env)
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry (a container's numeric user): as cache_dir
        import tempfile

        home = Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}"
    if sys.platform == "darwin":
        base = home / "Library" / "Preferences"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else home / ".config"
    return base / APP / f"{APP}.ini"


def user_preset_dir() -> Path:
    """The user's saved presets (the panel's Save As puts them here): beside the settings file."""
    return config_path().parent / "presets"


def is_json_name(name) -> bool:
    """Whether a file name ends in .json, in any case (``MINE.JSON`` too)."""
    return str(name).casefold().endswith(".json")


def user_presets(folder=None) -> list[Path]:
    """The preset files in ``folder`` (default ``user_preset_dir()``): the *.json files (any case),
    not hidden ones, sorted by name; none while it does not exist. Unread here: a malformed one is
    listed, and says what is wrong when loaded."""
    folder = user_preset_dir() if folder is None else Path(folder)
    try:
        names = [p for p in folder.iterdir() if is_json_name(p.name) and not p.name.startswith(".")]
    except OSError:  # no such folder, or unreadable: the built-ins still list
        return []
    files = [p for p in names if _is_file(p)]
    return sorted(files, key=lambda p: (p.stem.casefold(), p.stem, p.name))


def _is_file(p: Path) -> bool:
    """Whether ``p`` is a file; False where it cannot be told (a link into a folder we may not read,
    a failing network mount): that entry alone is left out, not every saved preset."""
    try:
        return p.is_file()
    except OSError:
        return False


def say_unapplied_mappings(ref, preset: dict, who: str) -> None:
    """One warning line where ``preset`` holds MIDI controller mappings (learnt in the panel; the
    panel and ``run`` apply them) and ``who`` does not apply them: said rather than dropped unsaid."""
    if preset.get("midi"):
        print(f"warning: {ref}: its {len(preset['midi'])} MIDI controller mapping(s) work live (`main.py run`, "
              f"`main.py gui`); {who} does not apply them", file=sys.stderr)


def user_descriptions(folder=None) -> list[tuple[Path, str]]:
    """(file, description) of every user preset (``user_presets``), read without validating them; a
    file that cannot be read says so in place of its description. A large file (a plugin's saved
    state can make it megabytes) is read only as far as its description (``_description``)."""
    out = []
    for path in user_presets(folder):
        try:
            desc = _description(path)
        except RecursionError:  # (Python's own words name its recursion limit)
            desc = "(cannot be read: nested too deeply to be a preset)"
        except (OSError, ValueError) as e:
            desc = f"(cannot be read: {(str(e).splitlines() or [type(e).__name__])[0][:80]})"
        out.append((path, " ".join(desc.split())))
    return out


DESCRIPTION_HEAD = 64 << 10  # the first bytes of a preset file, where a saved one has its description


def _description(path) -> str:
    """A preset file's description ("" when it has none, or is no JSON object). Read from the first
    DESCRIPTION_HEAD bytes when its top-level keys up to "description" are there (``save_preset``
    writes it third, before the chain); else, and for a small file, the whole file is parsed, as
    ``load_preset`` would.

    Raises
    ------
    OSError, ValueError
        Unreadable, too large, not UTF-8, or not JSON.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_PRESET_BYTES:
            raise ValueError(f"too large for a preset ({size} bytes; at most {MAX_PRESET_BYTES})")
        head = f.read(DESCRIPTION_HEAD + 1)
    if len(head) > DESCRIPTION_HEAD:
        found = _head_description(codecs.getincrementaldecoder("utf-8-sig")().decode(head[:DESCRIPTION_HEAD]))
        if found is not None:
            return found
        head = _read_capped(path)
    raw = json.loads(head.decode("utf-8-sig"))
    desc = raw.get("description", "") if isinstance(raw, dict) else ""
    return desc if isinstance(desc, str) else ""


def _head_description(text: str) -> str | None:
    """The top-level "description" of the JSON object ``text`` begins, from its keys and values up
    to that one; None when ``text`` ends first or is not such a start (the caller parses the whole)."""
    decoder = json.JSONDecoder()
    ws = json.decoder.WHITESPACE.match
    i = ws(text, 0).end()
    if text[i:i + 1] != "{":
        return None
    i += 1
    try:
        while True:
            i = ws(text, i).end()
            if text[i:i + 1] != '"':
                return None  # the object's end (no description: decided by the whole file), or not JSON
            key, i = decoder.raw_decode(text, i)
            i = ws(text, i).end()
            if text[i:i + 1] != ":":
                return None
            value, i = decoder.raw_decode(text, ws(text, i + 1).end())
            if key == "description":
                return value if isinstance(value, str) else ""
            i = ws(text, i).end()
            if text[i:i + 1] != ",":
                return None
            i += 1
    except (ValueError, RecursionError):  # cut off by the head's end (or not JSON): the whole file decides
        return None


def _read_capped(path) -> bytes:
    """A file's bytes, at most one past ``MAX_PRESET_BYTES``, read in 1 MiB pieces: ``read(n)``
    allocates n bytes up front, 64 MiB for every preset loaded."""
    pieces, size = [], 0
    with open(path, "rb") as f:
        while size <= MAX_PRESET_BYTES:
            piece = f.read(min(1 << 20, MAX_PRESET_BYTES + 1 - size))
            if not piece:
                break
            pieces.append(piece)
            size += len(piece)
    return b"".join(pieces)


def _names_a_file(ref: str) -> bool:
    """Whether a reference is written as a file: a name ending in .json (any case) or holding a separator."""
    return is_json_name(ref) or os.sep in ref or bool(os.altsep and os.altsep in ref)


def resolve_preset(name_or_path) -> tuple[Path, str]:
    """Where a preset reference leads: (its file, ``"builtin"``, ``"user"`` or ``"file"``).

    A Path, a name ending in .json (any case) or holding a separator is a file (not checked here);
    else a built-in's name, else the name of a preset saved in the user's folder (``user_presets``;
    a built-in of the same name wins), else an existing file whatever its name (``mine.preset``).
    A built-in's own file, given by its path, is the built-in.

    Raises
    ------
    PresetError
        None of these: the message lists the built-ins and the user's presets, and names their folder.
    """
    if isinstance(name_or_path, os.PathLike) or _names_a_file(str(name_or_path)):
        path = Path(name_or_path)
        return path, "builtin" if _a_builtin_file(path) else "file"
    ref = str(name_or_path)
    if ref in builtin_presets():
        return BUILTIN_DIR / f"{ref}.json", "builtin"
    users = user_presets()
    for path in users:
        if path.stem == ref:
            return path, "user"
    if ref and os.path.isfile(ref):
        return Path(ref), "file"
    folder = user_preset_dir()
    saved = f"saved in {folder}: {[p.stem for p in users]}" if users else f"none saved in {folder}"
    raise PresetError(f"unknown preset {short_repr(ref)}; built-in: {builtin_presets()}; {saved}")


def _a_builtin_file(path: Path) -> bool:
    """Whether ``path`` is a built-in's own file (opened by its path: a Save must not write over it)."""
    try:
        real = path.resolve()
        return real.parent == BUILTIN_DIR.resolve() and real.suffix == ".json" and real.is_file()
    except (OSError, RuntimeError):  # (a link loop)
        return False


def is_preset_file(name_or_path) -> bool:
    """Whether ``name_or_path`` names a preset file, not a built-in: a path, a name ending in .json
    (any case), a preset saved in the user's folder, an existing file (``resolve_preset``)."""
    try:
        return resolve_preset(name_or_path)[1] != "builtin"
    except PresetError:
        return False


def load_preset(name_or_path) -> dict:
    """Load and validate a preset.

    Parameters
    ----------
    name_or_path : str or Path
        A built-in preset's name, a preset saved in the user's folder by name, or a file (a Path, a str
        ending in .json or holding a separator, or naming an existing file): see ``resolve_preset``.

    Returns
    -------
    dict
        The validated preset (see ``validate_preset``).

    Raises
    ------
    PresetError
        Unknown name, unreadable file or invalid preset.
    """
    path = resolve_preset(name_or_path)[0]
    try:
        data = _read_capped(path)  # a recording given by mistake (or /dev/zero) is not read whole
        if len(data) > MAX_PRESET_BYTES:
            raise PresetError(f"{path}: too large for a preset (more than {MAX_PRESET_BYTES} bytes)")
        text = data.decode("utf-8-sig")  # a byte-order mark (Notepad's "UTF-8") is no error
    except FileNotFoundError:
        raise PresetError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:  # (saved as UTF-16 by an editor, or not a preset at all)
        raise PresetError(f"{path}: not UTF-8 text, as a preset's JSON is (byte {e.start}: "
                          f"{data[e.start:e.start + 4]!r})") from None
    except OSError as e:
        raise PresetError(f"{path}: cannot read: {e}") from None
    return parse_preset(text, source=str(path))


def _parse_value(raw: str):
    """Command-line value: JSON scalar when it parses as one (numbers, true/false), else a number
    as people type it (``.5``, ``-.5``, ``+5``, ``1_000``, ``nan``, ``inf``: JSON refuses them), else
    the string."""
    try:
        v = json.loads(raw)
    except ValueError:  # not JSON (or an integer past Python's 4300 digits)
        try:
            return float(raw)
        except ValueError:
            return raw
    return v if isinstance(v, (int, float, str, bool)) else raw


def _param_value(slot: dict, key: str, raw: str):
    """A ``--set`` value for parameter ``key`` of ``slot``: ``_parse_value``, but a choice's own name
    stays a name, as in a preset (choices named "inf", or with numbers: an FFT size of "1024", a
    delay of "2" that is not the choice at index 2), and a switch (``Param.toggle``) also takes
    true/false/yes/no/on/off in any case."""
    v = _parse_value(raw)
    from realtime.dsp.processors import slot_class

    try:
        d = {p.id: p for p in slot_class(slot["processor"], slot.get("uri")).params}.get(key)
    except (PluginError, UnknownProcessorError):  # said when the preset is validated
        return v
    if d is None or not d.choices:
        return v
    if raw in d.choices:  # the name the drop-down shows, even when it reads as a number
        return raw
    if d.toggle and isinstance(v, str):
        low = raw.lower()
        return True if low in _TRUE else False if low in _FALSE else v
    return v


def apply_overrides(preset: dict, overrides) -> dict:
    """Apply command-line overrides to a preset.

    Parameters
    ----------
    preset : dict
        The preset (validated here).
    overrides : iterable of str
        ``"slot.param=value"``, ``"slot.bypass=true"``, ``"slot.mix=0.5"``, ``"slot.plugin_preset=NAME"``
        (a hosted plugin's own preset, over the slot's values); values parse as JSON scalars where
        they can (choice names stay strings).

    Returns
    -------
    dict
        A new validated preset; ``preset`` is untouched.

    Raises
    ------
    PresetError
        A malformed override, an unknown slot or parameter, or a value out of range.
    """
    out = validate_preset(preset)
    for ov in overrides:
        lhs, eq, raw = str(ov).partition("=")
        slot_id, dot, key = lhs.strip().partition(".")
        if not eq or not dot or not slot_id or not key:
            raise PresetError(f"override {short_repr(ov)}: expected SLOT.PARAM=VALUE (or SLOT.bypass=, SLOT.mix=)")
        ids = [s["id"] for s in out["chain"]]
        if slot_id not in ids:
            raise PresetError(f"override {short_repr(ov)}: no slot {short_repr(slot_id)}; slots: {ids}")
        slot = out["chain"][ids.index(slot_id)]
        raw = raw.strip()
        if key == "bypass":
            low = raw.lower()
            slot["bypass"] = True if low in _TRUE else False if low in _FALSE else raw
        elif key == "mix":
            slot["mix"] = _parse_value(raw)
        elif key == "plugin_preset":  # its values now, over the slot's (the overrides after it go over them)
            from realtime.dsp.processors import URI_KINDS, slot_class

            if slot["processor"] not in URI_KINDS:
                raise PresetError(f"override {short_repr(ov)}: only {list(URI_KINDS)} slots take one of their "
                                  "plugin's presets")
            cls = slot_class(slot["processor"], slot["uri"])
            values, state = _plugin_preset(cls, raw, f"override {short_repr(ov)}")
            slot["params"].update(values)
            if state is not None:  # (one of control values alone leaves the plugin's saved state as it is)
                slot["state"] = state
        else:
            slot["params"][key] = _param_value(slot, key, raw)
        try:
            out = validate_preset(out)
        except PresetError as e:
            raise PresetError(f"override {short_repr(ov)}: {e}") from None
    return out


def build_chain(preset: dict) -> "Chain":
    """Instantiate a preset's processors into a Chain (not yet prepared).

    Parameters
    ----------
    preset : dict
        A preset dict (validated here).

    Returns
    -------
    Chain
        One slot per preset entry, the safety stage last.

    Raises
    ------
    PresetError
        The preset is invalid.
    ModelError
        A neural processor's model cannot be loaded.
    """
    from realtime.dsp.chain import Chain, Slot
    from realtime.dsp.processors import create

    def processor(s):
        proc = create(s["processor"], **({"uri": s["uri"]} if "uri" in s else {}), **s["params"])
        if "state" in s:  # a hosted plugin's own state, restored when the chain is prepared
            proc.set_plugin_state(s["state"])
        return proc

    p = validate_preset(preset)
    slots = [Slot(processor(s), s["id"], s["bypass"], s["mix"]) for s in p["chain"]]
    return Chain(slots)


def save_preset(preset: dict, path) -> Path:
    """Validate ``preset`` and write it to ``path`` as JSON, atomically.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    PresetError
        The preset is invalid, or larger than ``load_preset`` reads (``MAX_PRESET_BYTES``): nothing
        is written.
    OSError
        The file cannot be written (an earlier file at ``path`` is kept), or one is there that is
        read-only (``PermissionError``).
    """
    p = validate_preset(preset)
    path = Path(path)
    _not_read_only(path)
    text = json.dumps(p, indent=2, allow_nan=False) + "\n"
    size = len(text.encode("utf-8"))
    if size > MAX_PRESET_BYTES:
        raise PresetError(f"{path}: not saved: the preset would be {size} bytes, more than a preset may be "
                          f"({MAX_PRESET_BYTES}: it could not be loaded again)")
    atomic_write_text(path, text, suffix=".tmp")
    return path


def _not_read_only(path: Path) -> None:
    """Refuse to save over a preset file made read-only (``chmod a-w``, a file of another user's):
    the atomic writer renames a new file over it, which its permissions do not stop, so a Save
    replaced the preset it was to protect. Its mode is asked too, as root may write anywhere.

    Raises
    ------
    PermissionError
        ``path`` is a read-only file.
    """
    import errno
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:  # none there (or none that can be looked at: the write says why)
        return
    if stat.S_ISREG(mode) and (not mode & 0o222 or not os.access(path, os.W_OK)):
        raise PermissionError(errno.EACCES, "the file is read-only; save under another name", str(path))


__all__ = ["PresetError", "VERSION", "apply_overrides", "build_chain", "builtin_presets", "config_path",
           "load_preset", "parse_preset", "resolve_preset", "save_preset", "user_preset_dir", "user_presets",
           "validate_preset"]
