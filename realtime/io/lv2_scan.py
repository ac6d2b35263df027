"""What LV2 plugins are installed: a scan through lilv, described as plain data, cached on disk.

``scan()`` returns every plugin's URI, name, class, ports (control ranges, units, hints, side-chain
inputs, the audio ports of its main input and output groups), latency port, features and extension
data. Reading hundreds of bundles' Turtle takes a while, so the result is cached as JSON
(``$REALTIME_CACHE_DIR`` or ``~/.cache/realtime-host``) under a signature of the LV2 path's folders
and Turtle files: add, remove or edit a bundle and the next scan is fresh. A bundle whose Turtle
does not parse, or a plugin that fails lilv's checks, is listed in ``ScanResult.errors`` and
skipped; the rest of the scan stands.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from realtime import cache_dir
from realtime.errors import PluginError
from realtime.io import lilv
from realtime.io.native_stderr import capture_stderr

CACHE_VERSION = 5  # part of the signature: a cache written with other fields (or rules) is never read
PG = "http://lv2plug.in/ns/ext/port-groups#"
INSTRUMENT_CLASS = "http://lv2plug.in/ns/lv2core#InstrumentPlugin"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
UNIT_SYMBOLS = {"db": "dB", "hz": "Hz", "khz": "kHz", "mhz": "MHz", "ms": "ms", "s": "s", "min": "min",
                "bpm": "BPM", "pc": "%", "cent": "cents", "semitone12TET": "st", "oct": "oct", "midiNote": "note",
                "degree": "°", "frame": "frames", "bar": "bars", "beat": "beats", "m": "m", "cm": "cm",
                "mm": "mm", "km": "km", "inch": "in", "mile": "mi", "coef": ""}
# an input named as a side-chain: "sidechain", "Side Chain 2", "side_chain", or the token "sc" ("sc", "sc_l")
SIDE_CHAIN_NAME = re.compile(r"side[ _-]?chain|(?:^|[^a-z])sc(?:[^a-z]|$)", re.IGNORECASE)
# Plugins this host refuses to load (URI -> why), as hosts keep crash lists: each was seen breaking
# the process, never loading or never making anything but junk in Debian 12's packages. ``plugins`` marks them.
KNOWN_BROKEN = {
    "http://calf.sourceforge.net/plugins/Wavetable":
        "crashes the process (reads uninitialised memory, then 'double free or corruption' on close)",
    "http://plugin.org.uk/swh-plugins/mbeq": "its library does not load (undefined symbol fftwf_execute)",
    "http://plugin.org.uk/swh-plugins/pitchScaleHQ": "its library does not load (undefined symbol fftwf_execute)",
    "http://plugin.org.uk/swh-plugins/bodeShifterCV":
        "puts out about 1e28 whatever its settings and input (lilv's lv2apply too): silence and a reset every block",
}
# Plugins with audio inputs that make sound of their own (generators, oscillators that mix an input in):
# their output on a silent input is their sound, however loud they are set, never taken for junk
SOUND_OF_THEIR_OWN = frozenset({
    "http://lsp-plug.in/plugins/lv2/noise_generator_x1", "http://lsp-plug.in/plugins/lv2/noise_generator_x2",
    "http://lsp-plug.in/plugins/lv2/noise_generator_x4", "http://lsp-plug.in/plugins/lv2/oscillator_mono",
    "http://plugin.org.uk/swh-plugins/const", "http://plugin.org.uk/swh-plugins/fmOsc",
    "http://drobilla.net/plugins/mda/TestTone", "http://drobilla.net/plugins/mda/Shepard",
})
# Plugins whose new instances start with whatever their memory held (activate() does not clear it):
# junk on silence now and then (swh dcRemove at 1e31 or 99, mda BeatBox at +46 dBFS, swh chebstortion
# NaN). A reset never makes them anew (``Lv2Plugin.reset``): the instance that plays stays the one
# that was seen silent on silence, or was settled
UNINITIALISED_MEMORY = frozenset({
    "http://plugin.org.uk/swh-plugins/dcRemove", "http://drobilla.net/plugins/mda/BeatBox",
    "http://plugin.org.uk/swh-plugins/chebstortion",
})


@dataclass(frozen=True)
class LatencyRule:
    """How a plugin's delay is had where its latency port does not say it, or where it has none:
    ``stages * R(scale * v + offset)`` samples, where v is the value of ``port`` (times rate / 1000
    with ``ms``: a time in ms, as samples) and R rounds down with ``floor`` (a delay line sized by
    truncation), else to the nearest (ties to even, as lrintf); 0 while the ``bypass`` toggle is on
    (the input passed straight through). ``port``: the symbol of the control input that sets it, or
    None for the latency port; a plugin without that port counts v = 0 (a constant delay:
    ``offset``). A rule on a control is not used for a plugin that has a latency port (a build that
    says its delay is taken at its word). ``why``: what is wrong, in words (one line on stderr when
    the plugin is first used, ``plugins --json``)."""

    why: str
    scale: float = 1.0
    port: str | None = None
    ms: bool = False
    offset: float = 0.0
    floor: bool = False
    stages: int = 1
    bypass: str | None = None


# Plugins whose latency port says something other than their delay, or who delay the signal with no
# latency port at all (noise through each plugin in Debian 12's swh-lv2 1.0.16, lsp-plugins 1.2.5,
# zam-plugins 4.1 and calf 0.90.3, at its default and latency-moving settings, its delay against what
# it reports; LSP's and zam's say it right, but for the ~8-sample group delay of the filter of LSP
# limiter's "Full" oversampling, a phase, not a latency): URI -> ``LatencyRule``; for amPitchshift its
# mean delay at any pitch. ``Lv2Plugin`` takes its latency from the rule, so the chain's dry path and
# ``latency`` are the delay heard. Calf's limiters delay by their look-ahead: each look-ahead limiter
# floor(attack x rate / 1000) - 1 samples, attack in ms (the multiband ones have two in series, the
# bands' and the broadband one), at 44.1, 48 and 96 kHz and any block size, following the knob at
# once. Their phase is not in it: the multiband ones' IIR crossover adds about 1 sample at its default
# frequencies, up to 6 with its bands high, and oversampling (off by default) 1 to 3 more through its
# IIR resampling filters and a look-ahead counted at the higher rate. swh dysonCompress delays 999
# samples at any rate and setting; satanMaximiser half its envelope time (samples; ties to even). Not
# here: swh artificialLatency, which reports a latency it does not have by design (a test of compensation).
_SWH = "http://plugin.org.uk/swh-plugins/"
_CALF = "http://calf.sourceforge.net/plugins/"
_CALF_LOOKAHEAD = ("has no latency port, yet delays the signal by its look-ahead: floor(attack x rate / 1000) - 1 "
                   "samples")
LATENCY_MISREPORTED = {
    _SWH + "amPitchshift": LatencyRule("its latency port says half its delay (its output comes a whole buffer "
                                       "offset late, it reports half of one): the chain takes twice that figure",
                                       scale=2.0),
    _SWH + "dj_eq": LatencyRule("its latency port says 3 samples, but its filters delay nothing: the chain takes 0",
                                scale=0.0),
    _SWH + "dj_eq_mono": LatencyRule("its latency port says 3 samples, but its filters delay nothing: the chain "
                                     "takes 0", scale=0.0),
    _CALF + "Limiter": LatencyRule(f"{_CALF_LOOKAHEAD} (attack in ms): the chain takes that", port="attack",
                                   ms=True, offset=-1.0, floor=True, bypass="bypass"),
    _CALF + "MultibandLimiter": LatencyRule(
        f"{_CALF_LOOKAHEAD} (attack in ms), twice (bands, then broadband): the chain takes that",
        port="attack", ms=True, offset=-1.0, floor=True, stages=2, bypass="bypass"),
    _CALF + "SidechainLimiter": LatencyRule(
        f"{_CALF_LOOKAHEAD} (attack in ms), twice (bands, then broadband): the chain takes that",
        port="attack", ms=True, offset=-1.0, floor=True, stages=2, bypass="bypass"),
    _SWH + "dysonCompress": LatencyRule("has no latency port, yet delays the signal 999 samples at any rate: "
                                        "the chain takes that", scale=0.0, offset=999.0),
    _SWH + "satanMaximiser": LatencyRule("has no latency port, yet delays the signal by half its envelope time "
                                         "(samples): the chain takes that", scale=0.5, port="env_time_p"),
}
# Plugins whose main ports (the signal path) are not all their audio ports, which they do not say
# with port groups: URI -> (main input symbols, main output symbols). swh bodeShifterCV's second
# audio input is the shift's control voltage (it got the chain's right channel, or the music itself
# on a mono chain, and shifted by the music) and its heard output is "Mix out", not the down and up
# outputs; the CV input gets silence, so the "Base shift" knob sets the shift (Debian's build is
# refused all the same: ``KNOWN_BROKEN``).
MAIN_PORTS = {
    _SWH + "bodeShifterCV": (("input",), ("mixout",)),
}
# Plugins that corrupt a run whose length is not a multiple of N frames: URI -> N. Debian 12's LSP
# 1.2.5 mid/side plugins (every ``*_ms``; noise at 48 kHz in blocks of 999 against 1000 and 996 frames:
# 996 matches 1000, 999 is off by up to 0.5 and, in the multiband and graphic ones, by 100 to 10,000:
# the last samples of each run, as its vectorised mid/side conversion leaves a run's last 1-3 samples).
# The chain's blocks are a multiple of it: offline the block is rounded up to one, live a block size
# that is not is refused (``Lv2Plugin.block_multiple``).
_LSP = "http://lsp-plug.in/plugins/lv2/"
BLOCK_MULTIPLE = {_LSP + name + "_ms": 4 for name in (
    "compressor", "crossover", "dyna_processor", "expander", "gate", "graph_equalizer_x16", "graph_equalizer_x32",
    "mb_compressor", "mb_dyna_processor", "mb_expander", "mb_gate", "para_equalizer_x16", "para_equalizer_x32",
    "sc_compressor", "sc_dyna_processor", "sc_expander", "sc_gate", "sc_mb_compressor", "sc_mb_dyna_processor",
    "sc_mb_expander", "sc_mb_gate")}
LINUX_DEFAULT_PATH = ("~/.lv2", "/usr/lib/x86_64-linux-gnu/lv2", "/usr/lib/aarch64-linux-gnu/lv2", "/usr/lib/lv2",
                      "/usr/local/lib/lv2")


@dataclass(frozen=True)
class PortInfo:
    """One port. ``type``: audio, control, atom, cv or other; ``direction``: in or out."""

    index: int
    symbol: str
    name: str
    type: str
    direction: str
    default: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    toggled: bool = False
    integer: bool = False
    enumeration: bool = False
    logarithmic: bool = False
    sample_rate: bool = False  # range given as a fraction of the sample rate
    optional: bool = False  # lv2:connectionOptional
    midi: bool = False  # an atom port that carries MIDI events
    min_size: int = 0  # atom ports: rsz:minimumSize in bytes (0: not said)
    sidechain: bool = False  # an audio or CV input that is a side-chain (a key), not the signal path: marked
    # lv2:isSideChain or in a pg:sideChainOf group, or named so ("sidechain", "sc_l": _named_side_chains)
    main: bool = False  # an audio port in the plugin's pg:mainInput or pg:mainOutput group (_mark_main_groups)
    scale_points: tuple[tuple[float, str], ...] = ()


@dataclass(frozen=True)
class PluginInfo:
    """One plugin as scanned; ``ports`` in index order."""

    uri: str
    name: str
    plugin_class: str
    bundle: str
    ports: tuple[PortInfo, ...]
    latency_port: int | None = None
    required_features: tuple[str, ...] = ()
    optional_features: tuple[str, ...] = ()
    extension_data: tuple[str, ...] = ()
    hard_rt: bool = False  # lv2:hardRTCapable
    instrument_class: bool = False  # declared a lv2:InstrumentPlugin

    def ports_of(self, type_: str, direction: str) -> list[PortInfo]:
        return [p for p in self.ports if p.type == type_ and p.direction == direction]

    @property
    def audio_in(self) -> int:
        return len(self.ports_of("audio", "in"))

    @property
    def main_inputs(self) -> list[PortInfo]:
        """The audio inputs of the signal path: those of the plugin's main input group when it
        declares one, else all; side-chain inputs left out."""
        ins = [p for p in self.ports_of("audio", "in") if not p.sidechain]
        return [p for p in ins if p.main] or ins

    @property
    def audio_out(self) -> int:
        return len(self.ports_of("audio", "out"))

    @property
    def main_outputs(self) -> list[PortInfo]:
        """The audio outputs of the signal path: those of the plugin's main output group when it
        declares one (LSP's crossovers: not the bands' outputs), else all."""
        outs = self.ports_of("audio", "out")
        return [p for p in outs if p.main] or outs

    @property
    def midi_in(self) -> bool:
        return any(p.midi for p in self.ports_of("atom", "in"))

    @property
    def instrument(self) -> bool:
        """Plays MIDI into sound: a MIDI input, and no signal-path audio input or the instrument class."""
        return self.midi_in and (not self.main_inputs or self.instrument_class)

    @property
    def controls(self) -> list[PortInfo]:
        """The control inputs (what becomes knobs), latency port excluded."""
        return [p for p in self.ports_of("control", "in") if p.index != self.latency_port]

    def refusal(self) -> str | None:
        """Why this host does not load the plugin (``KNOWN_BROKEN``, or host features it requires
        that this host does not provide), else None."""
        if self.uri in KNOWN_BROKEN:
            return f"known to be broken: {KNOWN_BROKEN[self.uri]}"
        from realtime.io.lv2_host import unsupported_features

        missing = unsupported_features(self.required_features)
        return f"needs host features this host does not provide: {', '.join(missing)}" if missing else None

    def summary(self) -> dict:
        """A flat dict for listings: uri, name, class, audio in/out, MIDI in, controls, latency port, hard RT,
        required features, why it is known to be broken (``KNOWN_BROKEN``), why it is not loaded at
        all (``refusal``: broken, or a required feature missing) and why its latency port is not
        taken as it is (``LATENCY_MISREPORTED``), or None."""
        return {"uri": self.uri, "name": self.name, "class": self.plugin_class, "audio_in": self.audio_in,
                "audio_out": self.audio_out, "midi_in": self.midi_in, "controls": [p.symbol for p in self.controls],
                "latency_port": self.latency_port, "hard_rt": self.hard_rt,
                "required_features": list(self.required_features), "broken": KNOWN_BROKEN.get(self.uri),
                "refused": self.refusal(),
                "latency_misreported": LATENCY_MISREPORTED[self.uri].why if self.uri in LATENCY_MISREPORTED else None}

    @classmethod
    def from_dict(cls, d: dict) -> "PluginInfo":
        ports = tuple(PortInfo(**{**p, "scale_points": tuple(tuple(sp) for sp in p["scale_points"])})
                      for p in d["ports"])
        return cls(**{**d, "ports": ports, "required_features": tuple(d["required_features"]),
                      "optional_features": tuple(d["optional_features"]),
                      "extension_data": tuple(d["extension_data"])})


@dataclass
class ScanResult:
    """Plugins by URI, and one line per bundle or plugin that was skipped."""

    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    cached: bool = False


# -- reading one plugin through lilv ------------------------------------------------------------
def _port(world: "lilv.World", plugin, index: int) -> PortInfo:
    L = lilv.lib()
    port = L.lilv_plugin_get_port_by_index(plugin, index)
    is_a = lambda cls: bool(L.lilv_port_is_a(plugin, port, world.uri(cls)))  # noqa: E731
    has = lambda prop: bool(L.lilv_port_has_property(plugin, port, world.uri(prop)))  # noqa: E731
    if is_a(lilv.LV2 + "AudioPort"):
        type_ = "audio"
    elif is_a(lilv.LV2 + "ControlPort"):
        type_ = "control"
    elif is_a(lilv.ATOM + "AtomPort"):
        type_ = "atom"
    elif is_a(lilv.LV2 + "CVPort"):
        type_ = "cv"
    else:
        type_ = "other"
    direction = "in" if is_a(lilv.LV2 + "InputPort") else "out"
    info = {"index": index, "symbol": lilv.node_str(L.lilv_port_get_symbol(plugin, port)) or f"port{index}",
            "type": type_, "direction": direction, "optional": has(lilv.LV2 + "connectionOptional")}
    info["name"] = lilv.owned_str(L.lilv_port_get_name(plugin, port)) or info["symbol"]
    if type_ == "control":
        d, lo, hi = nodes = (ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p())
        L.lilv_port_get_range(plugin, port, *(ctypes.byref(n) for n in nodes))
        for key, node in zip(("default", "minimum", "maximum"), (d, lo, hi)):
            if node.value:
                info[key] = lilv.node_float(node.value)
                L.lilv_node_free(node.value)
        info.update(toggled=has(lilv.LV2 + "toggled"), integer=has(lilv.LV2 + "integer"),
                    enumeration=has(lilv.LV2 + "enumeration"), logarithmic=has(lilv.PPROPS + "logarithmic"),
                    sample_rate=has(lilv.LV2 + "sampleRate"))
        unit = lilv.owned_str(L.lilv_port_get(plugin, port, world.uri(lilv.UNITS + "unit")))
        if unit and unit.startswith(lilv.UNITS):
            info["unit"] = UNIT_SYMBOLS.get(unit[len(lilv.UNITS):], "")
        points = L.lilv_port_get_scale_points(plugin, port)
        try:
            sp = []
            for p in lilv.iterate("scale_points", points):
                v = lilv.node_float(L.lilv_scale_point_get_value(p))
                if v is not None:
                    sp.append((v, lilv.node_str(L.lilv_scale_point_get_label(p)) or f"{v:g}"))
            info["scale_points"] = tuple(sorted(sp))
        finally:
            if points:
                L.lilv_scale_points_free(points)
    elif type_ in ("audio", "cv") and direction == "in":
        info["sidechain"] = has(lilv.LV2 + "isSideChain") or _in_side_chain_group(world, plugin, port)
    elif type_ == "atom":
        info["midi"] = bool(L.lilv_port_supports_event(plugin, port, world.uri(lilv.MIDI_EVENT)))
        size = lilv.owned_str(L.lilv_port_get(plugin, port, world.uri(lilv.RESIZE_MIN_SIZE)))
        info["min_size"] = int(float(size)) if size else 0
    return PortInfo(**info)


def _in_side_chain_group(world: "lilv.World", plugin, port) -> bool:
    """The port, or its port group, is ``pg:sideChainOf`` another (how LSP marks its side-chain inputs)."""
    L = lilv.lib()
    side_of = world.uri(PG + "sideChainOf")
    own = L.lilv_port_get(plugin, port, side_of)
    if own:
        L.lilv_node_free(own)
        return True
    group = L.lilv_port_get(plugin, port, world.uri(PG + "group"))
    if not group:
        return False
    try:
        of = L.lilv_world_get(world.ptr, group, side_of, None)
    finally:
        L.lilv_node_free(group)
    if of:
        L.lilv_node_free(of)
    return bool(of)


def _named_side_chains(ports: tuple[PortInfo, ...]) -> tuple[PortInfo, ...]:
    """Mark the audio and CV inputs named as side-chains (``SIDE_CHAIN_NAME``) that the plugin does not
    mark (Calf's Sidechain* plugins and vocoder: "sidechain", "sidechain2"), as long as an audio input
    is left for the signal path (a plugin whose only input is called "sidechain" has nothing else)."""
    def named(p: PortInfo) -> bool:
        return (p.type in ("audio", "cv") and p.direction == "in" and not p.sidechain
                and bool(SIDE_CHAIN_NAME.search(p.symbol) or SIDE_CHAIN_NAME.search(p.name)))

    marked = {p.index for p in ports if named(p)}
    if not marked or all(p.sidechain or p.index in marked for p in ports if p.type == "audio" and p.direction == "in"):
        return ports
    return tuple(replace(p, sidechain=True) if p.index in marked else p for p in ports)


def _mark_main_groups(world: "lilv.World", plugin, ports: tuple[PortInfo, ...]) -> tuple[PortInfo, ...]:
    """Mark the audio ports in the plugin's ``pg:mainInput`` and ``pg:mainOutput`` groups (``main``).
    The plugin's data must be loaded (any port read does it)."""
    L = lilv.lib()
    subject = L.lilv_plugin_get_uri(plugin)
    groups = {lilv.owned_str(L.lilv_world_get(world.ptr, subject, world.uri(PG + key), None))
              for key in ("mainInput", "mainOutput")} - {None}
    if not groups:
        return ports
    in_group = world.uri(PG + "group")
    main = {p.index for p in ports if p.type == "audio" and lilv.owned_str(
        L.lilv_port_get(plugin, L.lilv_plugin_get_port_by_index(plugin, p.index), in_group)) in groups}
    return tuple(replace(p, main=True) if p.index in main else p for p in ports)


def _mark_known_main_ports(uri: str, ports: tuple[PortInfo, ...]) -> tuple[PortInfo, ...]:
    """Mark the main audio ports of a plugin in ``MAIN_PORTS`` (one without port groups)."""
    if uri not in MAIN_PORTS:
        return ports
    ins, outs = MAIN_PORTS[uri]
    main = {p.index for p in ports if p.type == "audio" and p.symbol in (ins if p.direction == "in" else outs)}
    return tuple(replace(p, main=True) if p.index in main else p for p in ports)


def _declares_type(world: "lilv.World", plugin, cls: str) -> bool:
    """The plugin's data says it is a ``cls``. lilv's own plugin class needs lv2core's Turtle, which
    distributions do not always install (then every class is lv2:Plugin), so the statement is asked for.
    The plugin's data must be loaded (any port read does it)."""
    L = lilv.lib()
    ask = L.lilv_world_ask
    if ask.restype is not ctypes.c_bool:  # not among lilv.py's prototypes: set here, once
        ask.restype, ask.argtypes = ctypes.c_bool, [ctypes.c_void_p] * 4
    return bool(ask(world.ptr, L.lilv_plugin_get_uri(plugin), world.uri(RDF_TYPE), world.uri(cls)))


def describe(world: "lilv.World", plugin) -> PluginInfo:
    """Read one plugin's description from a loaded world."""
    L = lilv.lib()
    uri = lilv.node_str(L.lilv_plugin_get_uri(plugin))
    cls = L.lilv_plugin_get_class(plugin)
    ports = _named_side_chains(tuple(_port(world, plugin, i) for i in range(L.lilv_plugin_get_num_ports(plugin))))
    ports = _mark_known_main_ports(uri, _mark_main_groups(world, plugin, ports))
    latency = int(L.lilv_plugin_get_latency_port_index(plugin)) if L.lilv_plugin_has_latency(plugin) else None
    known_ext = ("http://lv2plug.in/ns/ext/worker#interface", "http://lv2plug.in/ns/ext/state#interface",
                 "http://lv2plug.in/ns/ext/options#interface")
    extension = tuple(u for u in known_ext if L.lilv_plugin_has_extension_data(plugin, world.uri(u)))
    return PluginInfo(
        uri=uri, name=lilv.owned_str(L.lilv_plugin_get_name(plugin)) or uri,
        plugin_class=(lilv.node_str(L.lilv_plugin_class_get_label(cls)) if cls else None) or "Plugin",
        bundle=lilv.node_str(L.lilv_plugin_get_bundle_uri(plugin)) or "", ports=ports, latency_port=latency,
        required_features=lilv.owned_uris(L.lilv_plugin_get_required_features(plugin)),
        optional_features=lilv.owned_uris(L.lilv_plugin_get_optional_features(plugin)),
        extension_data=extension,
        hard_rt=bool(L.lilv_plugin_has_feature(plugin, world.uri(lilv.LV2 + "hardRTCapable"))),
        instrument_class=_declares_type(world, plugin, INSTRUMENT_CLASS))


def _errors_of(lines: list[str]) -> list[str]:
    return [ln.strip() for ln in lines if "error" in ln.lower()]


def scan_world(world: "lilv.World") -> ScanResult:
    """Describe every plugin of a loaded world; broken ones go to ``errors``, never raise."""
    res = ScanResult(errors=[f"lilv: {e}" for e in _errors_of(world.load_messages)])
    L = lilv.lib()
    for plugin in list(world.plugins()):
        uri = lilv.node_str(L.lilv_plugin_get_uri(plugin)) or "?"
        try:
            with capture_stderr() as msgs:
                ok = bool(L.lilv_plugin_verify(plugin))
                info = describe(world, plugin) if ok else None
        except Exception as e:  # a description lilv cannot give: report, go on
            res.errors.append(f"{uri}: skipped ({type(e).__name__}: {e})")
            continue
        errs = _errors_of(msgs)
        if not ok or errs:
            why = "; ".join(errs) or "lilv says its description is invalid (no binary, name or port types)"
            res.errors.append(f"{uri}: skipped ({why})")
            continue
        res.plugins[uri] = info
    return res


# -- the path, the signature, the cache ---------------------------------------------------------
def lv2_path() -> str | None:
    """The LV2 path in force: ``LV2_PATH`` when set (empty: no folder at all, as lilv reads it),
    else None (lilv's default). An empty one taken for the default wrote lilv's empty scan into
    the default path's cache entry."""
    return os.environ.get("LV2_PATH")


def _folders(path: str | None) -> list[Path]:
    if path is None:
        parts = LINUX_DEFAULT_PATH if sys.platform.startswith("linux") else ()
    else:
        parts = path.split(os.pathsep)
    return [Path(os.path.expanduser(p)) for p in parts if p]


def signature(path: str | None) -> str:
    """A digest of every bundle folder and Turtle file on the path (names, sizes, times)."""
    h = hashlib.sha256(f"{CACHE_VERSION}|{path}".encode())
    for folder in _folders(path):
        try:
            bundles = [e for e in os.scandir(folder) if e.is_dir()]
        except OSError:
            continue
        for b in sorted(bundles, key=lambda e: e.name):
            h.update(b.path.encode())
            try:
                files = sorted(os.scandir(b.path), key=lambda e: e.name)
            except OSError:
                continue
            for f in files:
                if f.name.endswith(".ttl") or f.name.endswith(".so"):
                    try:
                        st = f.stat()
                    except OSError:  # a dangling link in one bundle: lilv skips that plugin, so do we
                        h.update(f"{f.name}|missing".encode())
                        continue
                    h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


_worlds: dict[str | None, "lilv.World"] = {}
_world_signatures: dict[str | None, str] = {}  # the path's signature when its world was loaded
_retired_worlds: list = []  # worlds loaded before a bundle changed: kept, as instances and states may refer to them
_scans: dict[tuple[str | None, str], ScanResult] = {}


def world(path: str | None = None) -> "lilv.World":
    """The process's lilv world for an LV2 path (loaded once, kept: instances refer to it; loaded
    anew once ``scan`` sees a bundle on the path changed, so a plugin installed meanwhile is found)."""
    if path is None:
        path = lv2_path()
    w = _worlds.get(path)
    return w if w is not None else _load_world(path, signature(path))


def _load_world(path: str | None, sig: str) -> "lilv.World":
    """The world for ``path``, loaded (with ``sig``, its bundles' signature then) where there is none:
    ``scan`` retires one loaded under another signature first (a bundle added, removed or edited
    since). A stale world scanned afresh wrote what it knew under the new signature: the cache hid
    a plugin installed while a process ran, from every later process too, until ``plugins --rescan``."""
    w = _worlds.get(path)
    if w is None:
        w = _worlds[path] = lilv.World(path)
        _world_signatures[path] = sig
    return w


def scan(use_cache: bool = True, refresh: bool = False) -> ScanResult:
    """Every installed LV2 plugin on the current LV2 path.

    Parameters
    ----------
    use_cache : bool
        Read and write the on-disk cache (keyed by ``signature``); False scans afresh.
    refresh : bool
        Scan afresh and write the result to the cache (``plugins --rescan``: a cache gone wrong
        is repaired, not only ignored).

    Returns
    -------
    ScanResult
        Plugins by URI and the bundles or plugins skipped (one line each). Empty when lilv
        is missing (then ``errors`` says so) or no plugin is installed.
    """
    path = lv2_path()
    sig = signature(path)
    if path in _worlds and _world_signatures.get(path) != sig:  # a bundle changed: the next world() loads anew
        _retired_worlds.append(_worlds.pop(path))
    hit = _scans.get((path, sig))
    if hit is not None and use_cache and not refresh:
        return hit
    cache = cache_dir() / "lv2_scan.json"
    if use_cache and not refresh:
        try:
            # a Python hook per object lets other threads take the GIL between objects: one C parse of
            # the whole cache (12 MB for 345 plugins) held it for 0.2-0.3 s, and the panel's engine
            # process reads it when a first LV2 plugin is added while its DSP thread plays
            raw = json.loads(cache.read_text(encoding="utf-8"), object_hook=_each_object)
            if raw.get("signature") == sig:
                res = ScanResult({u: PluginInfo.from_dict(d) for u, d in raw["plugins"].items()}, raw["errors"], True)
                _scans[(path, sig)] = res
                return res
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no cache, or an old or damaged one (e.g. a list, not an object): scan
    if not lilv.available():
        return ScanResult(errors=["lilv is not installed (apt-get install liblilv-0-0): no LV2 plugins"])
    res = scan_world(_load_world(path, sig))
    _scans[(path, sig)] = res
    if use_cache:
        _write_cache(cache, sig, res)
    return res


def _each_object(obj: dict) -> dict:
    return obj


def _write_cache(cache: Path, sig: str, res: ScanResult) -> None:
    from realtime.io.files import atomic_write_text

    data = {"signature": sig, "plugins": {u: asdict(p) for u, p in res.plugins.items()}, "errors": res.errors}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(data), suffix=".tmp")
    except OSError:
        pass  # a read-only home: the scan still works, only slower next time


def plugin_info(uri: str) -> PluginInfo:
    """The scanned description of one plugin.

    Raises
    ------
    PluginError
        No plugin with that URI is installed (or its bundle is broken: the scan's reason is given).
    """
    if not isinstance(uri, str) or not uri:
        raise PluginError(f"lv2: expected a plugin URI, got {uri!r}")
    res = scan()
    info = res.plugins.get(uri)
    if info is None:
        why = [e for e in res.errors if e.startswith(uri + ":")]
        if why:
            raise PluginError(f"lv2 plugin {uri}: {why[0][len(uri) + 2:]}")
        raise PluginError(f"lv2 plugin {uri!r} is not installed (see `python main.py plugins`)")
    if uri in KNOWN_BROKEN:
        raise PluginError(f"lv2 plugin {uri}: known to be broken, not loaded: {KNOWN_BROKEN[uri]}")
    return info


__all__ = ["BLOCK_MULTIPLE", "KNOWN_BROKEN", "LATENCY_MISREPORTED", "MAIN_PORTS", "UNINITIALISED_MEMORY", "LatencyRule", "PluginInfo",
           "PortInfo", "ScanResult", "cache_dir", "describe", "lv2_path", "plugin_info", "scan", "scan_world",
           "signature", "world"]
