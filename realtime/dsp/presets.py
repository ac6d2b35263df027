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
written by ``Chain.to_preset``; checked against the plugin when the preset is validated).
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from realtime.errors import ParamError, PluginError, PresetError, UnknownProcessorError
from realtime.io.files import atomic_write_text

if TYPE_CHECKING:
    from realtime.dsp.chain import Chain

# The processors (and Numba with them) are imported where a preset is validated or built, not here:
# listing and reading presets must stay instant.

VERSION = 1
MAX_PRESET_BYTES = 1 << 20  # a preset is a few KB; anything this big is not one
MAX_SLOTS = 256
BUILTIN_DIR = Path(__file__).with_name("presets")
TOP_KEYS = ("version", "name", "description", "chain", "midi")
MIDI_KEYS = ("cc", "channel", "target")
SLOT_KEYS = ("id", "processor", "uri", "bypass", "mix", "params", "state")  # uri, state: only kinds in URI_KINDS
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
                raise PresetError(f"{label}: {value!r} is not one of {list(d.choices)}")
            return value
        try:  # a number: an index, or a plugin's own value (Param.choice_of)
            return d.choices[d.choice_of(value, where)]
        except ParamError as e:
            raise PresetError(str(e)) from None
    boolean = (d.min, d.max, d.step) == (0.0, 1.0, 1.0)
    if isinstance(value, bool) and boolean:
        return value
    if not _is_number(value):
        raise PresetError(f"{label}: expected a number, got {type(value).__name__} {_short(value)}")
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


def _validate_slot(i: int, raw) -> dict:
    where = f"chain[{i}]"
    _check_object(raw, where, SLOT_KEYS)
    if "processor" not in raw:
        raise PresetError(f"{where}.processor: missing")
    from realtime.dsp.chain import SLOT_ID_RE
    from realtime.dsp.processors import URI_KINDS, available_kinds, processor_class, slot_class

    kind = raw["processor"]
    if not isinstance(kind, str):
        raise PresetError(f"{where}.processor: expected a string, got {kind!r}")
    try:
        cls = processor_class(kind)
    except UnknownProcessorError as e:
        if "unknown processor" in str(e):
            raise PresetError(f"{where}.processor: unknown processor {kind!r}; known: {available_kinds()}") from None
        raise PresetError(f"{where}.processor: {e}") from None
    uri = raw.get("uri")
    if kind in URI_KINDS:
        if not isinstance(uri, str) or not uri:
            raise PresetError(f"{where}.uri: a {kind!r} slot needs the plugin's URI as a string, got {uri!r}")
        try:
            cls = slot_class(kind, uri)
        except (PluginError, UnknownProcessorError) as e:
            raise PresetError(f"{where}.uri: {e}") from None
    elif "uri" in raw:
        raise PresetError(f"{where}.uri: only {list(URI_KINDS)} slots take a uri")
    state = raw.get("state")
    if "state" in raw:
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
        raise PresetError(f"{where}.id: {sid!r} is not a valid slot id (letters, digits, '_' and '-'; no dots)")
    bypass = raw.get("bypass", False)
    if not isinstance(bypass, bool):
        raise PresetError(f"{where}.bypass: expected true or false, got {bypass!r}")
    mix = raw.get("mix", 1.0)
    if not _is_number(mix) or not 0.0 <= mix <= 1.0:
        raise PresetError(f"{where}.mix: {mix!r} is outside [0, 1]")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise PresetError(f"{where}.params: expected an object, got {type(params).__name__}")
    known = {d.id: d for d in cls.params}
    out_params = {}
    for pid, value in params.items():
        if pid not in known:
            raise PresetError(f"{where}.params.{pid}: unknown parameter for {kind!r}; known: {list(known)}")
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
    if not _is_number(v) or v != VERSION:
        raise PresetError(f"version: {v!r} is not supported (expected {VERSION})")
    name = preset.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PresetError(f"name: expected a non-empty string, got {name!r}")
    desc = preset.get("description", "")
    if not isinstance(desc, str):
        raise PresetError(f"description: expected a string, got {desc!r}")
    chain = preset.get("chain")
    if not isinstance(chain, list):
        raise PresetError(f"chain: expected a list of slots, got {type(chain).__name__}")
    if len(chain) > MAX_SLOTS:
        raise PresetError(f"chain: {len(chain)} slots; at most {MAX_SLOTS}")
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
                raise PresetError(f"chain[{i}].id: duplicate slot id {s['id']!r}")
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


def _validate_midi(raw, slots) -> list[dict]:
    """MIDI-learn mappings: [{"cc": 0..127, "channel": 0..15 or null (any), "target": "slot.param"}]
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
        if isinstance(cc, bool) or not isinstance(cc, int) or not 0 <= cc <= 127:
            raise PresetError(f"{where}.cc: expected a controller number 0..127, got {cc!r}")
        if ch is not None and (isinstance(ch, bool) or not isinstance(ch, int) or not 0 <= ch <= 15):
            raise PresetError(f"{where}.channel: expected 0..15 or null (any channel), got {ch!r}")
        slot_id, _, pid = target.partition(".") if isinstance(target, str) else ("", "", "")
        if slot_id not in params:
            raise PresetError(f"{where}.target: {target!r} names no slot; slots: {list(params)}")
        last = slot_id == slots[-1]["id"]
        allowed = params[slot_id] + ([] if last else ["bypass", "mix"])
        if pid not in allowed:
            raise PresetError(f"{where}.target: {target!r}: {pid!r} is not one of {allowed}")
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
    except ValueError as e:  # Python's own limit: an integer of more than 4300 digits
        raise PresetError(f"{source}: invalid JSON: {e}") from None
    except PresetError as e:
        raise PresetError(f"{source}: invalid JSON: {e}") from None
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


def is_preset_file(name_or_path) -> bool:
    """Whether ``name_or_path`` names a preset file (a path, or a name ending in .json), not a built-in."""
    return isinstance(name_or_path, os.PathLike) or str(name_or_path).endswith(".json") or os.sep in str(name_or_path)


def load_preset(name_or_path) -> dict:
    """Load and validate a preset.

    Parameters
    ----------
    name_or_path : str or Path
        A built-in preset's name, or a file (a Path, or a str ending in .json or holding a separator).

    Returns
    -------
    dict
        The validated preset (see ``validate_preset``).

    Raises
    ------
    PresetError
        Unknown name, unreadable file or invalid preset.
    """
    if is_preset_file(name_or_path):
        path = Path(name_or_path)
    else:
        path = BUILTIN_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise PresetError(f"unknown preset {name_or_path!r}; built-in: {builtin_presets()}")
    try:
        with open(path, "rb") as f:  # at most one byte past the limit: a recording given by mistake
            data = f.read(MAX_PRESET_BYTES + 1)  # (or /dev/zero) is refused without being read whole
        if len(data) > MAX_PRESET_BYTES:
            raise PresetError(f"{path}: too large for a preset (more than {MAX_PRESET_BYTES} bytes)")
        text = data.decode("utf-8-sig")  # a byte-order mark (Notepad's "UTF-8") is no error
    except FileNotFoundError:
        raise PresetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PresetError(f"{path}: cannot read: {e}") from None
    return parse_preset(text, source=str(path))


def _short(value, limit: int = 60) -> str:
    """repr of ``value`` cut to ``limit`` characters: an error line stays one line."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + "..."


def _parse_value(raw: str):
    """Command-line value: JSON scalar when it parses as one (numbers, true/false), else a number
    as people type it (``.5``, ``-.5``, ``+5``, ``1_000``: JSON refuses them), else the string."""
    try:
        v = json.loads(raw)
    except ValueError:  # not JSON (or an integer past Python's 4300 digits)
        try:
            v = float(raw)
        except ValueError:
            return raw
        return v if raw.strip().lower().lstrip("+-") not in ("nan", "inf", "infinity") else raw
    return v if isinstance(v, (int, float, str, bool)) else raw


def apply_overrides(preset: dict, overrides) -> dict:
    """Apply command-line overrides to a preset.

    Parameters
    ----------
    preset : dict
        The preset (validated here).
    overrides : iterable of str
        ``"slot.param=value"``, ``"slot.bypass=true"``, ``"slot.mix=0.5"``; values parse as JSON
        scalars where they can (choice names stay strings).

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
            raise PresetError(f"override {_short(ov)}: expected SLOT.PARAM=VALUE (or SLOT.bypass=, SLOT.mix=)")
        ids = [s["id"] for s in out["chain"]]
        if slot_id not in ids:
            raise PresetError(f"override {_short(ov)}: no slot {_short(slot_id)}; slots: {ids}")
        slot = out["chain"][ids.index(slot_id)]
        raw = raw.strip()
        if key == "bypass":
            low = raw.lower()
            slot["bypass"] = True if low in _TRUE else False if low in _FALSE else raw
        elif key == "mix":
            slot["mix"] = _parse_value(raw)
        else:
            slot["params"][key] = _parse_value(raw)
        try:
            out = validate_preset(out)
        except PresetError as e:
            raise PresetError(f"override {_short(ov)}: {e}") from None
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
        The preset is invalid (nothing is written).
    OSError
        The file cannot be written (an earlier file at ``path`` is kept).
    """
    p = validate_preset(preset)
    path = Path(path)
    text = json.dumps(p, indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text, suffix=".tmp")
    return path


__all__ = ["PresetError", "VERSION", "apply_overrides", "build_chain", "builtin_presets", "load_preset",
           "parse_preset", "save_preset", "validate_preset"]
