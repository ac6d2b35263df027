"""A thin ctypes binding of the few lilv calls this host needs: a world, its plugins, their ports.

lilv (Debian ``liblilv-0-0``) reads the LV2 bundles' Turtle files and loads plugin libraries. The
library is opened on first use, so importing this module costs nothing and works without lilv
installed; ``lib()`` then raises a one-line ``PluginError`` saying what to install.

Pointers are plain ints (``c_void_p``). Calls marked *owned* in lilv.h return values the caller
frees; ``World`` frees what it takes. lilv writes Turtle syntax errors to stderr: ``native_stderr.capture_stderr``
collects them so a broken bundle can be reported (and skipped) instead of scrolling past.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from ctypes import c_bool, c_char_p, c_double, c_float, c_uint32, c_void_p

from realtime.errors import PluginError
from realtime.io.native_stderr import capture_stderr

LV2 = "http://lv2plug.in/ns/lv2core#"
ATOM = "http://lv2plug.in/ns/ext/atom#"
MIDI_EVENT = "http://lv2plug.in/ns/ext/midi#MidiEvent"
UNITS = "http://lv2plug.in/ns/extensions/units#"
PPROPS = "http://lv2plug.in/ns/ext/port-props#"
RESIZE_MIN_SIZE = "http://lv2plug.in/ns/ext/resize-port#minimumSize"
OPTION_LV2_PATH = "http://drobilla.net/ns/lilv#lv2-path"

_V, _P, _S = c_void_p, c_char_p, c_uint32
# name: (restype, argtypes); the calls used, with lilv.h's types reduced to what ctypes needs
_PROTOTYPES = {
    "lilv_world_new": (_V, []),
    "lilv_world_free": (None, [_V]),
    "lilv_world_set_option": (None, [_V, _P, _V]),
    "lilv_world_load_all": (None, [_V]),
    "lilv_world_get_all_plugins": (_V, [_V]),
    "lilv_world_get": (_V, [_V, _V, _V, _V]),  # owned
    "lilv_new_uri": (_V, [_V, _P]),  # owned
    "lilv_new_string": (_V, [_V, _P]),  # owned
    "lilv_node_free": (None, [_V]),
    "lilv_node_as_string": (_P, [_V]),
    "lilv_node_as_float": (c_float, [_V]),
    "lilv_node_is_float": (c_bool, [_V]),
    "lilv_node_is_int": (c_bool, [_V]),
    "lilv_node_is_uri": (c_bool, [_V]),
    "lilv_node_is_bool": (c_bool, [_V]),
    "lilv_node_as_bool": (c_bool, [_V]),
    "lilv_nodes_begin": (_V, [_V]),
    "lilv_nodes_get": (_V, [_V, _V]),
    "lilv_nodes_next": (_V, [_V, _V]),
    "lilv_nodes_is_end": (c_bool, [_V, _V]),
    "lilv_nodes_free": (None, [_V]),
    "lilv_plugins_begin": (_V, [_V]),
    "lilv_plugins_get": (_V, [_V, _V]),
    "lilv_plugins_next": (_V, [_V, _V]),
    "lilv_plugins_is_end": (c_bool, [_V, _V]),
    "lilv_plugins_get_by_uri": (_V, [_V, _V]),
    "lilv_plugin_verify": (c_bool, [_V]),
    "lilv_plugin_get_uri": (_V, [_V]),
    "lilv_plugin_get_bundle_uri": (_V, [_V]),
    "lilv_plugin_get_name": (_V, [_V]),  # owned
    "lilv_plugin_get_class": (_V, [_V]),
    "lilv_plugin_class_get_label": (_V, [_V]),
    "lilv_plugin_get_num_ports": (_S, [_V]),
    "lilv_plugin_get_port_by_index": (_V, [_V, _S]),
    "lilv_plugin_has_latency": (c_bool, [_V]),
    "lilv_plugin_get_latency_port_index": (_S, [_V]),
    "lilv_plugin_has_feature": (c_bool, [_V, _V]),
    "lilv_plugin_has_extension_data": (c_bool, [_V, _V]),
    "lilv_plugin_get_required_features": (_V, [_V]),  # owned
    "lilv_plugin_get_optional_features": (_V, [_V]),  # owned
    "lilv_plugin_instantiate": (_V, [_V, c_double, _V]),  # owned: lilv_instance_free
    "lilv_instance_free": (None, [_V]),
    "lilv_port_get_symbol": (_V, [_V, _V]),
    "lilv_port_get_name": (_V, [_V, _V]),  # owned
    "lilv_port_is_a": (c_bool, [_V, _V, _V]),
    "lilv_port_has_property": (c_bool, [_V, _V, _V]),
    "lilv_port_supports_event": (c_bool, [_V, _V, _V]),
    "lilv_port_get": (_V, [_V, _V, _V]),  # owned
    "lilv_port_get_range": (None, [_V, _V, ctypes.POINTER(_V), ctypes.POINTER(_V), ctypes.POINTER(_V)]),
    "lilv_port_get_scale_points": (_V, [_V, _V]),  # owned
    "lilv_scale_points_begin": (_V, [_V]),
    "lilv_scale_points_get": (_V, [_V, _V]),
    "lilv_scale_points_next": (_V, [_V, _V]),
    "lilv_scale_points_is_end": (c_bool, [_V, _V]),
    "lilv_scale_points_free": (None, [_V]),
    "lilv_scale_point_get_label": (_V, [_V]),
    "lilv_scale_point_get_value": (_V, [_V]),
    # state (http://lv2plug.in/ns/ext/state): plugin and instance pointers, the host's URID map/unmap
    # structs, directories (all NULL here: a state lives in a preset, not in a folder), port value
    # callbacks (NULL: control values are the slot's params), flags, features
    "lilv_state_new_from_instance": (_V, [_V, _V, _V, _P, _P, _P, _P, _V, _V, _S, _V]),  # owned: lilv_state_free
    "lilv_state_new_from_string": (_V, [_V, _V, _P]),  # owned: lilv_state_free
    "lilv_state_to_string": (_V, [_V, _V, _V, _V, _P, _P]),  # owned char*: lilv_free
    "lilv_state_restore": (None, [_V, _V, _V, _V, _S, _V]),
    "lilv_state_get_plugin_uri": (_V, [_V]),
    "lilv_state_get_num_properties": (_S, [_V]),
    "lilv_state_free": (None, [_V]),
    # a plugin's own presets (pset:Preset resources related to it): listed, loaded, read as a state
    "lilv_plugin_get_related": (_V, [_V, _V]),  # owned nodes
    "lilv_world_load_resource": (ctypes.c_int, [_V, _V]),
    "lilv_state_new_from_world": (_V, [_V, _V, _V]),  # owned: lilv_state_free
    "lilv_state_emit_port_values": (None, [_V, _V, _V]),
    "lilv_free": (None, [_V]),
}

_lib = None


def lib():
    """The lilv library with its prototypes set, loaded on first call.

    Raises
    ------
    PluginError
        liblilv is not installed.
    """
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("lilv-0") or "liblilv-0.so.0"
        try:
            handle = ctypes.CDLL(name)
        except OSError:
            raise PluginError("LV2 hosting needs lilv: install liblilv-0-0 (apt-get install liblilv-0-0)") from None
        for fn, (res, args) in _PROTOTYPES.items():
            f = getattr(handle, fn)
            f.restype, f.argtypes = res, args
        _lib = handle
    return _lib


def available() -> bool:
    """True when liblilv can be loaded."""
    try:
        lib()
    except PluginError:
        return False
    return True


def node_str(node) -> str | None:
    """A node's text (URI, literal or number), or None for a NULL node."""
    if not node:
        return None
    s = lib().lilv_node_as_string(node)
    return None if s is None else s.decode("utf-8", "replace")


def node_float(node) -> float | None:
    """A numeric node's value (float, int or boolean), else None."""
    L = lib()
    if not node:
        return None
    if L.lilv_node_is_float(node) or L.lilv_node_is_int(node):
        return float(f"{L.lilv_node_as_float(node):.7g}")  # a float32 default: no 0.64999997 for 0.65
    if L.lilv_node_is_bool(node):
        return float(L.lilv_node_as_bool(node))
    return None


def iterate(kind: str, collection):
    """Yield the element pointers of a lilv collection (``kind``: nodes, plugins, scale_points)."""
    if not collection:
        return
    L = lib()
    begin, get, nxt, is_end = (getattr(L, f"lilv_{kind}_{s}") for s in ("begin", "get", "next", "is_end"))
    it = begin(collection)
    while not is_end(collection, it):
        yield get(collection, it)
        it = nxt(collection, it)


class World:
    """One lilv world over an LV2 path, with its bundles loaded.

    Parameters
    ----------
    lv2_path : str, optional
        Folders separated by ``os.pathsep``; None: lilv's default (``LV2_PATH`` or the system folders).

    Attributes
    ----------
    load_messages : list of str
        What lilv wrote to stderr while loading (Turtle errors name the broken file).
    """

    def __init__(self, lv2_path: str | None = None):
        L = lib()
        self._L = L
        self.ptr = L.lilv_world_new()
        if not self.ptr:
            raise PluginError("lilv could not create a world")
        self.lv2_path = lv2_path
        self._uris: dict[str, int] = {}
        if lv2_path is not None:
            path = L.lilv_new_string(self.ptr, lv2_path.encode())
            L.lilv_world_set_option(self.ptr, OPTION_LV2_PATH.encode(), path)
            L.lilv_node_free(path)
        with capture_stderr() as msgs:
            L.lilv_world_load_all(self.ptr)
        self.load_messages = msgs

    def uri(self, uri: str) -> int:
        """A URI node owned by the world (created once, freed with it)."""
        node = self._uris.get(uri)
        if node is None:
            node = self._uris[uri] = self._L.lilv_new_uri(self.ptr, uri.encode())
        return node

    def plugins(self):
        """Yield every plugin pointer the world knows."""
        yield from iterate("plugins", self._L.lilv_world_get_all_plugins(self.ptr))

    def plugin(self, uri: str):
        """The plugin pointer for ``uri``, or None."""
        return self._L.lilv_plugins_get_by_uri(self._L.lilv_world_get_all_plugins(self.ptr), self.uri(uri)) or None

    def close(self) -> None:
        if self.ptr:
            for node in self._uris.values():
                self._L.lilv_node_free(node)
            self._uris.clear()
            self._L.lilv_world_free(self.ptr)
            self.ptr = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


def owned_str(node) -> str | None:
    """Text of an owned node, which is freed."""
    try:
        return node_str(node)
    finally:
        if node:
            lib().lilv_node_free(node)


def owned_uris(nodes) -> tuple[str, ...]:
    """The texts of an owned node collection, which is freed."""
    try:
        return tuple(node_str(n) for n in iterate("nodes", nodes))
    finally:
        if nodes:
            lib().lilv_nodes_free(nodes)


# -- Turtle statements through serd (lilv's own parser) ------------------------------------------
# lilv_state_new_from_string dereferences NULL on Turtle without a pset:Preset subject, so a saved
# state is read here first: statements are listed and checked before lilv sees the text.
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
# the prefixes lilv predefines when it reads a state string (src/state.c, set_prefixes)
STATE_PREFIXES = {"atom": ATOM, "lv2": LV2, "pset": "http://lv2plug.in/ns/ext/presets#",
                  "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
                  "state": "http://lv2plug.in/ns/ext/state#", "xsd": "http://www.w3.org/2001/XMLSchema#"}
_SERD_TURTLE, _SERD_URI, _SERD_CURIE, _SERD_BLANK = 1, 2, 3, 4


class _SerdNode(ctypes.Structure):
    _fields_ = [("buf", c_char_p), ("n_bytes", ctypes.c_size_t), ("n_chars", ctypes.c_size_t),
                ("flags", c_uint32), ("type", ctypes.c_int)]


_NodeP = ctypes.POINTER(_SerdNode)
_prefix_sink = ctypes.CFUNCTYPE(ctypes.c_int, _V, _NodeP, _NodeP)
_statement_sink = ctypes.CFUNCTYPE(ctypes.c_int, _V, c_uint32, _NodeP, _NodeP, _NodeP, _NodeP, _NodeP, _NodeP)
_serd = None


def _serd_lib():
    global _serd
    if _serd is None:
        lib()  # lilv loaded: serd, its dependency, is there
        handle = ctypes.CDLL(ctypes.util.find_library("serd-0") or "libserd-0.so.0")
        handle.serd_reader_new.restype = _V
        handle.serd_reader_new.argtypes = [ctypes.c_int, _V, _V, _V, _prefix_sink, _statement_sink, _V]
        handle.serd_reader_read_string.restype = ctypes.c_int
        handle.serd_reader_read_string.argtypes = [_V, _P]
        handle.serd_reader_free.restype, handle.serd_reader_free.argtypes = None, [_V]
        _serd = handle
    return _serd


def turtle_statements(text: str, prefixes: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """The (subject, predicate, object) texts of a Turtle document; CURIEs expanded, blank nodes
    as ``_:id``, literals as their text.

    Parameters
    ----------
    text : str
        The Turtle document.
    prefixes : dict, optional
        Prefixes known before the document's own ``@prefix`` lines (lilv's for a state string).

    Raises
    ------
    PluginError
        Not valid Turtle (serd's message, with line and column), or a CURIE with an unknown prefix.
    """
    S = _serd_lib()
    known = dict(prefixes or {})
    out: list[tuple[str, str, str]] = []
    problems: list[str] = []

    def as_text(node) -> str:
        n = node.contents
        raw = (n.buf or b"")[: n.n_bytes].decode("utf-8", "replace")
        if n.type == _SERD_CURIE:
            pre, _, local = raw.partition(":")
            if pre not in known:
                problems.append(f"unknown prefix {pre!r}")
                return raw
            return known[pre] + local
        return "_:" + raw if n.type == _SERD_BLANK else raw

    def on_prefix(_h, name, uri) -> int:
        known[as_text(name)] = as_text(uri)
        return 0

    def on_statement(_h, _flags, _graph, s, p, o, _dt, _lang) -> int:
        out.append((as_text(s), as_text(p), as_text(o)))
        return 0

    sinks = (_prefix_sink(on_prefix), _statement_sink(on_statement))  # alive until the reader is freed
    reader = S.serd_reader_new(_SERD_TURTLE, None, None, None, *sinks, None)
    try:
        with capture_stderr() as msgs:
            status = S.serd_reader_read_string(reader, text.encode("utf-8"))
    finally:
        S.serd_reader_free(reader)
    if status or msgs or problems:
        why = "; ".join((msgs + problems)[:2]) or f"serd status {status}"
        raise PluginError(f"not valid Turtle ({why.replace('error: ', '').replace(chr(10), ' ')})")
    return out


__all__ = ["STATE_PREFIXES", "World", "available", "iterate", "lib", "node_float", "node_str",
           "owned_str", "owned_uris", "turtle_statements"]
