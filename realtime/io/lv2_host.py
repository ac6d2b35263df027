"""The C side of hosting one LV2 plugin instance: host features, instantiate, connect, run.

Features offered (what common plugins ask for): ``urid:map`` / ``urid:unmap`` (one table per
process, so URIDs agree between instances), ``options:options`` (sample rate, block lengths),
``buf-size:boundedBlockLength``, ``worker:schedule``, ``log:log``, and the flags
``lv2:isLive`` / ``lv2:inPlaceBroken`` (buffers are never shared between ports) /
``lv2:hardRTCapable``. A plugin requiring anything else is refused with a ``PluginError`` naming it.

The worker (``worker:schedule``): offline, work scheduled during ``run()`` is done right after it
returns, on the same thread, so a render is the same every time. Live (``start_worker_thread``,
the engine's chains), it is done on a thread of its own, as LV2 means it: a plugin loading a
sample or a soundfont from disk never holds up the DSP thread, and its answer is delivered after
the first ``run()`` that follows it. In both, ``end_run`` is called after every ``run()``.

ctypes calls release the GIL, so ``run()`` leaves other Python threads free while the plugin works.

Block lengths: a plugin is never run on more than ``MAX_RUN_FRAMES`` frames at once, and is told so
(``maxBlockLength``): many plugins keep buffers of that size whatever they are told (LSP's delays and
samplers, ZamVerb, ZamHeadX2 crashed the process on longer runs), so a host runs longer blocks in
pieces (``Lv2Plugin`` does).

What a plugin prints to stdout while it is made, given a state or activated goes to stderr
(``stdout_to_stderr``): a command's JSON on stdout stays JSON.

State (``state:interface``): ``Instance.save_state`` asks the plugin for its properties through
lilv and returns them as Turtle; ``parse_state`` checks such a text and ``Instance.restore_state``
gives it back to a fresh instance (between instantiation and activation, never during ``run()``).
Port values are not part of it: the slot's params hold them. lilv adds the ``state:mapPath`` and
``state:freePath`` features itself; no state folder is given, so file paths are kept absolute.
"""
from __future__ import annotations

import collections
import ctypes
import os
import sys
import threading
from ctypes import CFUNCTYPE, POINTER, Structure, c_char_p, c_int, c_uint32, c_void_p

from realtime.errors import PluginError
from realtime.io import crash_site, lilv
from realtime.io.native_stderr import capture_stderr, stdout_to_stderr

URID_MAP = "http://lv2plug.in/ns/ext/urid#map"
URID_UNMAP = "http://lv2plug.in/ns/ext/urid#unmap"
OPTIONS = "http://lv2plug.in/ns/ext/options#options"
BOUNDED = "http://lv2plug.in/ns/ext/buf-size#boundedBlockLength"
WORKER_SCHEDULE = "http://lv2plug.in/ns/ext/worker#schedule"
WORKER_INTERFACE = "http://lv2plug.in/ns/ext/worker#interface"
LOG = "http://lv2plug.in/ns/ext/log#log"
STATE_INTERFACE = "http://lv2plug.in/ns/ext/state#interface"
STATE_SUBJECT = "urn:realtime:lv2-state"  # the subject of a saved state's Turtle
_STATE_FLAGS = 1 | 2  # LV2_STATE_IS_POD | LV2_STATE_IS_PORTABLE: a preset may move between machines
_PRESET = "http://lv2plug.in/ns/ext/presets#Preset"
FLAGS = (lilv.LV2 + "isLive", lilv.LV2 + "inPlaceBroken", lilv.LV2 + "hardRTCapable")
SUPPORTED_FEATURES = frozenset((URID_MAP, URID_UNMAP, OPTIONS, BOUNDED, WORKER_SCHEDULE, LOG, *FLAGS))

# the longest run() a plugin gets (and is told of): LSP's comp_delay, sampler and multisampler,
# ZamVerb and ZamHeadX2 crash on longer runs whatever maxBlockLength says
MAX_RUN_FRAMES = 4096
WORKER_STOP_S = 5.0  # how long closing an instance waits for a work() under way
MAX_PENDING_WORK = 1024  # requests queued for a worker that has not got to them yet

_BUF = "http://lv2plug.in/ns/ext/buf-size#"
_PARAM_SAMPLE_RATE = "http://lv2plug.in/ns/ext/parameters#sampleRate"


def unsupported_features(required) -> list[str]:
    """The required features this host does not provide."""
    return sorted(set(required) - SUPPORTED_FEATURES)


# -- C structures (lv2.h, urid.h, options.h, worker.h, log.h) ------------------------------------
class Feature(Structure):
    _fields_ = [("URI", c_char_p), ("data", c_void_p)]


_connect_fn = CFUNCTYPE(None, c_void_p, c_uint32, c_void_p)
_handle_fn = CFUNCTYPE(None, c_void_p)
_run_fn = CFUNCTYPE(None, c_void_p, c_uint32)


class Descriptor(Structure):
    _fields_ = [("URI", c_char_p), ("instantiate", c_void_p), ("connect_port", _connect_fn),
                ("activate", _handle_fn), ("run", _run_fn), ("deactivate", _handle_fn), ("cleanup", c_void_p),
                ("extension_data", CFUNCTYPE(c_void_p, c_char_p))]


class _LilvInstance(Structure):  # struct LilvInstanceImpl, public in lilv.h
    _fields_ = [("descriptor", POINTER(Descriptor)), ("handle", c_void_p), ("pimpl", c_void_p)]


_map_fn = CFUNCTYPE(c_uint32, c_void_p, c_char_p)
_unmap_fn = CFUNCTYPE(c_void_p, c_void_p, c_uint32)  # returns const char* (kept alive by the table)


class _UridMap(Structure):
    _fields_ = [("handle", c_void_p), ("map", _map_fn)]


class _UridUnmap(Structure):
    _fields_ = [("handle", c_void_p), ("unmap", _unmap_fn)]


class _Option(Structure):
    _fields_ = [("context", c_uint32), ("subject", c_uint32), ("key", c_uint32), ("size", c_uint32),
                ("type", c_uint32), ("value", c_void_p)]


_schedule_fn = CFUNCTYPE(c_int, c_void_p, c_uint32, c_void_p)
_respond_fn = CFUNCTYPE(c_int, c_void_p, c_uint32, c_void_p)


class _WorkerSchedule(Structure):
    _fields_ = [("handle", c_void_p), ("schedule_work", _schedule_fn)]


class _WorkerInterface(Structure):
    _fields_ = [("work", CFUNCTYPE(c_int, c_void_p, _respond_fn, c_void_p, c_uint32, c_void_p)),
                ("work_response", CFUNCTYPE(c_int, c_void_p, c_uint32, c_void_p)),
                ("end_run", CFUNCTYPE(c_int, c_void_p))]


_log_fn = CFUNCTYPE(c_int, c_void_p, c_uint32, c_char_p)  # printf(handle, type, fmt, ...): the format only
# vprintf(handle, type, fmt, va_list): what LV2's logger.h helpers (lv2_log_error and co) call,
# unchecked, whenever a host offers the log feature; formatted by libc
_log_vfn = CFUNCTYPE(c_int, c_void_p, c_uint32, c_char_p, c_void_p)
_libc = ctypes.CDLL(None)
_vsnprintf = _libc.vsnprintf
_vsnprintf.argtypes = [c_void_p, ctypes.c_size_t, c_char_p, c_void_p]
_vsnprintf.restype = c_int


class _Log(Structure):
    _fields_ = [("handle", c_void_p), ("printf", _log_fn), ("vprintf", _log_vfn)]


# -- the process's URID table -----------------------------------------------------------------
class UridTable:
    """URI <-> URID, one per process (URIDs must agree for every instance of a host)."""

    def __init__(self):
        self._ids: dict[bytes, int] = {}
        self._uris: list = [None]  # URID 0 is "none"; the buffers keep unmap's strings alive
        # plugins are made on several threads (a chain built while the rescue thread renews an
        # instance): unguarded, two URIs got one number (13 of 40,000 from two threads)
        self._lock = threading.Lock()
        self._map = _map_fn(lambda _h, uri: self.map_bytes(uri or b""))
        self._unmap = _unmap_fn(lambda _h, urid: ctypes.addressof(self._uris[urid])
                                if 0 < urid < len(self._uris) else None)
        self.map_struct = _UridMap(None, self._map)
        self.unmap_struct = _UridUnmap(None, self._unmap)

    def map_bytes(self, uri: bytes) -> int:
        urid = self._ids.get(uri)
        if urid is None:
            with self._lock:
                urid = self._ids.get(uri)
                if urid is None:
                    self._uris.append(ctypes.create_string_buffer(uri))
                    urid = self._ids[uri] = len(self._uris) - 1
        return urid

    def map(self, uri: str) -> int:
        return self.map_bytes(uri.encode())

    def unmap(self, urid: int) -> str | None:
        return self._uris[urid].value.decode() if 0 < urid < len(self._uris) else None


_table: UridTable | None = None


def urids() -> UridTable:
    global _table
    if _table is None:
        _table = UridTable()
    return _table


# -- one instance ------------------------------------------------------------------------------
class _FloatEnvKept:
    """The calling thread's floating-point environment (x87 and SSE control: rounding, flush-to-zero,
    denormals-are-zero) as it was before a plugin's entry point ran. Some plugins set
    flush-to-zero when they are instantiated (DPF's ZamComp), which is right on an audio thread
    but leaked into the caller: the main thread of an offline render, or of the panel, then
    computed without subnormal numbers for the rest of the process. Not used around ``run()``."""

    _libm = None

    def __enter__(self):
        if _FloatEnvKept._libm is None:
            try:
                _FloatEnvKept._libm = ctypes.CDLL("libm.so.6")
            except OSError:  # not glibc: nothing to keep
                _FloatEnvKept._libm = False
        self._env = ctypes.create_string_buffer(256)  # fenv_t is 32 bytes on x86-64 glibc
        self._saved = bool(self._libm) and self._libm.fegetenv(self._env) == 0
        return self

    def __exit__(self, *exc):
        if self._saved:
            self._libm.fesetenv(self._env)


class Instance:
    """One instantiated plugin: its features, handle and the descriptor's entry points.

    Parameters
    ----------
    world : lilv.World
        The world the plugin was found in (kept alive as long as the instance).
    uri : str
        The plugin.
    sample_rate : float
    max_block : int
        Largest block the caller has; the plugin is told ``min(max_block, MAX_RUN_FRAMES)`` as its
        ``maxBlockLength``, and ``run()`` must never be given more.
    label : str, optional
        What a crash in its code is put down to (``crash_site``; default: the URI). The caller marks
        ``crash_row`` on the DSP site around ``run()``; the rest of its calls are marked here.

    Raises
    ------
    PluginError
        Unknown plugin, a required feature this host lacks, or instantiation failed.
    """

    def __init__(self, world, uri: str, sample_rate: float, max_block: int, required=(), label: str | None = None):
        missing = unsupported_features(required)
        if missing:
            raise PluginError(f"lv2 plugin {uri}: needs host features this host does not provide: {', '.join(missing)}")
        plugin = world.plugin(uri)
        if plugin is None:
            raise PluginError(f"lv2 plugin {uri!r} is not installed (see `python main.py plugins`)")
        self.world, self.uri = world, uri
        t = urids()
        self._rate = ctypes.c_float(sample_rate)
        self.max_run = max(1, min(int(max_block), MAX_RUN_FRAMES))
        self._lengths = (ctypes.c_int32 * 3)(1, self.max_run, self.max_run)  # min, max, nominal
        opt = [(_PARAM_SAMPLE_RATE, "http://lv2plug.in/ns/ext/atom#Float", ctypes.addressof(self._rate), 4),
               (_BUF + "minBlockLength", lilv.ATOM + "Int", ctypes.addressof(self._lengths), 4),
               (_BUF + "maxBlockLength", lilv.ATOM + "Int", ctypes.addressof(self._lengths) + 4, 4),
               (_BUF + "nominalBlockLength", lilv.ATOM + "Int", ctypes.addressof(self._lengths) + 8, 4)]
        self._options = (_Option * (len(opt) + 1))(*[_Option(0, 0, t.map(k), size, t.map(ty), addr)
                                                     for k, ty, addr, size in opt])
        # worker requests made during run(), and the work's answers: deques, whose append and
        # popleft need no lock between the DSP thread and the worker thread
        self.pending: collections.deque[bytes] = collections.deque()
        self._responses: collections.deque[bytes] = collections.deque()
        self._thread: threading.Thread | None = None  # the live worker thread
        self._wake: tuple[int, int] | None = None  # its wake pipe (read end, non-blocking write end)
        self._stopping = False
        self._schedule = _WorkerSchedule(None, _schedule_fn(self._schedule_work))
        self._respond = _respond_fn(self._respond_work)
        self._log = _Log(None, _log_fn(self._log_printf), _log_vfn(self._log_vprintf))
        feats = [(URID_MAP, ctypes.addressof(t.map_struct)), (URID_UNMAP, ctypes.addressof(t.unmap_struct)),
                 (OPTIONS, ctypes.addressof(self._options)), (BOUNDED, None),
                 (WORKER_SCHEDULE, ctypes.addressof(self._schedule)), (LOG, ctypes.addressof(self._log)),
                 *((f, None) for f in FLAGS)]
        self._features = [Feature(u.encode(), d) for u, d in feats]
        self._feature_ptrs = (POINTER(Feature) * (len(feats) + 1))(*[ctypes.pointer(f) for f in self._features])
        L = lilv.lib()
        self.crash_row = crash_site.take(label or uri)
        with stdout_to_stderr(), capture_stderr() as msgs, _FloatEnvKept(), crash_site.inside(self.crash_row):
            ptr = L.lilv_plugin_instantiate(plugin, float(sample_rate), ctypes.addressof(self._feature_ptrs))
        if not ptr:
            crash_site.give_back(self.crash_row)
            why = "; ".join(msgs[-3:]) or "the plugin returned no instance"
            raise PluginError(f"lv2 plugin {uri}: failed to instantiate at {sample_rate:g} Hz ({why})")
        self._ptr = ptr
        inst = _LilvInstance.from_address(ptr)
        d = inst.descriptor.contents
        self.handle = inst.handle
        self._connect = d.connect_port
        self.run_fn = d.run  # called per block by the processor: one ctypes call, GIL released
        self._activate = d.activate if d.activate else None
        self._deactivate = d.deactivate if d.deactivate else None
        self.active = False
        self.worker = None
        self.has_state = False  # the plugin implements state:interface (asked at run time, not from the TTL)
        if d.extension_data:
            iface = d.extension_data(WORKER_INTERFACE.encode())
            if iface:
                self.worker = _WorkerInterface.from_address(iface)
            self.has_state = bool(d.extension_data(STATE_INTERFACE.encode()))

    # -- worker callbacks (plugin -> host) ------------------------------------------------------
    def _schedule_work(self, _handle, size, data) -> int:
        if self.worker is None:
            return 1  # LV2_WORKER_ERR_UNKNOWN
        if len(self.pending) >= MAX_PENDING_WORK:  # a worker that cannot keep up: the plugin is told
            return 2  # LV2_WORKER_ERR_NO_SPACE
        self.pending.append(ctypes.string_at(data, size))
        if self._wake is not None:
            try:
                os.write(self._wake[1], b"w")
            except BlockingIOError:  # the pipe is full of wake-ups: the thread is awake anyway
                pass
        return 0

    def _respond_work(self, _handle, size, data) -> int:
        self._responses.append(ctypes.string_at(data, size))
        return 0

    def _log_printf(self, _handle, _type, fmt) -> int:
        text = (fmt or b"").decode("utf-8", "replace").rstrip()
        print(f"lv2 {self.uri}: {text}", file=sys.stderr)
        return len(text)

    def _log_vprintf(self, _handle, _type, fmt, args) -> int:
        if not fmt:
            return 0
        buf = ctypes.create_string_buffer(1024)  # one per call: the worker thread may log meanwhile
        n = _vsnprintf(buf, len(buf), fmt, args)
        text = buf.value.decode("utf-8", "replace").rstrip()
        print(f"lv2 {self.uri}: {text}", file=sys.stderr)
        return n

    def end_cycle(self) -> None:
        """After each ``run()`` of a plugin with a worker (the DSP thread): without a worker thread
        do the work scheduled during it; deliver the answers that are ready; ``end_run``."""
        w, h = self.worker, self.handle
        if self._thread is None:
            self._work_pending()
        self._deliver_responses()
        if w.end_run:  # LV2: after every run(), whether or not anything was answered
            w.end_run(h)

    def _work_pending(self) -> None:
        w, h = self.worker, self.handle
        while self.pending and not self._stopping:
            req = self.pending.popleft()
            w.work(h, self._respond, None, len(req), req)

    def flush_work(self) -> None:
        """Do what is scheduled and deliver every answer, here and now (the worker thread stopped):
        before a reset, as an offline render would have done it already."""
        with crash_site.inside(self.crash_row):
            self._work_pending()
            self._deliver_responses()

    def _deliver_responses(self) -> None:
        w, h = self.worker, self.handle
        while self._responses:
            resp = self._responses.popleft()
            w.work_response(h, len(resp), resp)

    def start_worker_thread(self) -> None:
        """Do scheduled work on a thread of its own from now on (live use; see the module's doc)."""
        if self.worker is None or self._thread is not None:
            return
        r, wr = os.pipe()
        os.set_blocking(wr, False)
        self._wake, self._stopping = (r, wr), False
        self._thread = threading.Thread(target=self._work_loop, args=(r,), name="lv2-worker", daemon=True)
        self._thread.start()
        if self.pending:  # scheduled before the thread was there
            os.write(wr, b"w")

    def _work_loop(self, wake: int) -> None:
        # a thread started from a real-time one inherits its policy; work() is slow, non-real-time
        # work by definition (file loading, decoding) and must not starve the machine's other threads
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except (AttributeError, OSError):
            pass
        while True:
            got = os.read(wake, 512)
            # only a stop byte ends the thread: a stop that timed out (a slow work()) has taken its
            # flag back by the time that work() returns, and its byte must then not end the thread
            if self._stopping and b"s" in got:
                return
            with crash_site.inside(self.crash_row, crash_site.WORKER):
                self._work_pending()

    def stop_worker_thread(self) -> bool:
        """Stop the worker thread (work it has not begun stays pending). False when the plugin's
        ``work()`` did not return within WORKER_STOP_S: the instance must then not be freed."""
        t = self._thread
        if t is None:
            return True
        self._stopping = True
        try:
            os.write(self._wake[1], b"s")
        except BlockingIOError:
            pass
        t.join(WORKER_STOP_S)
        if t.is_alive():  # its work() goes on: let the thread keep serving once it returns
            self._stopping = False
            return False
        os.close(self._wake[0])
        os.close(self._wake[1])
        self._thread, self._wake, self._stopping = None, None, False
        return True

    # -- state ----------------------------------------------------------------------------------
    def save_state(self) -> str | None:
        """The plugin's own state (its ``state:interface`` properties) as Turtle, or None when it
        has no state interface. May run while another thread calls ``run()`` (LV2 allows it).

        Raises
        ------
        PluginError
            lilv could not write the state.
        """
        if not self.has_state:
            return None
        L, t = lilv.lib(), urids()
        plugin = self.world.plugin(self.uri)
        # lilv's warnings (a property lost on save) go to stderr as they are: this may run while the
        # engine does, and capturing descriptor 2 would swallow other threads' messages
        with crash_site.inside(self.crash_row):
            st = L.lilv_state_new_from_instance(plugin, self._ptr, ctypes.addressof(t.map_struct), None, None,
                                                None, None, None, None, _STATE_FLAGS,
                                                ctypes.addressof(self._feature_ptrs))
        try:
            text = L.lilv_state_to_string(self.world.ptr, ctypes.addressof(t.map_struct),
                                          ctypes.addressof(t.unmap_struct), st, STATE_SUBJECT.encode(),
                                          None) if st else None
        finally:
            if st:
                L.lilv_state_free(st)
        if not text:
            raise PluginError(f"lv2 plugin {self.uri}: lilv could not save its state")
        try:
            return ctypes.string_at(text).decode("utf-8")
        finally:
            L.lilv_free(text)

    def restore_state(self, state: "State") -> None:
        """Give the plugin a saved state (``parse_state``). Not while ``run()`` may be called:
        ``prepare`` does it between instantiation and activation."""
        if self.has_state:
            with stdout_to_stderr(), crash_site.inside(self.crash_row):
                lilv.lib().lilv_state_restore(state.ptr, self._ptr, None, None, _STATE_FLAGS,
                                              ctypes.addressof(self._feature_ptrs))

    # -- life cycle -------------------------------------------------------------------------
    def connect(self, port: int, address: int) -> None:
        self._connect(self.handle, port, address)

    def activate(self) -> None:
        if not self.active:
            if self._activate:
                with stdout_to_stderr(), _FloatEnvKept(), crash_site.inside(self.crash_row):
                    self._activate(self.handle)
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            if self._deactivate:
                with _FloatEnvKept(), crash_site.inside(self.crash_row):
                    self._deactivate(self.handle)
            self.active = False

    def close(self) -> None:
        """Stop the worker thread, deactivate and free the instance (unloads the library when it
        was the last). An instance whose ``work()`` never returns is left allocated: freeing it
        under that thread would crash the process."""
        if getattr(self, "_ptr", None):
            if not self.stop_worker_thread():
                print(f"lv2 {self.uri}: its worker did not finish within {WORKER_STOP_S:g} s; "
                      "the instance is left loaded", file=sys.stderr)
                self._ptr = None
                return
            self.deactivate()
            with crash_site.inside(self.crash_row):
                lilv.lib().lilv_instance_free(self._ptr)
            self._ptr = None
            crash_site.give_back(self.crash_row)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


# -- saved states ----------------------------------------------------------------------------
class State:
    """A parsed plugin state (a ``LilvState``), freed by ``close`` or when collected."""

    def __init__(self, ptr: int, n_properties: int):
        self.ptr, self.n_properties = ptr, n_properties

    def close(self) -> None:
        if self.ptr:
            lilv.lib().lilv_state_free(self.ptr)
            self.ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


def parse_state(world, uri: str, text: str) -> State:
    """Read a state saved by ``Instance.save_state`` for the plugin ``uri``.

    The Turtle is checked before lilv reads it (lilv crashes on some valid Turtle that is not a
    state): one ``pset:Preset`` subject, applying to ``uri``.

    Parameters
    ----------
    world : lilv.World
    uri : str
        The plugin the state must apply to.
    text : str
        The Turtle text.

    Returns
    -------
    State

    Raises
    ------
    PluginError
        One line: not Turtle, not a saved state, or the state of another plugin.
    """
    def bad(why: str) -> PluginError:
        return PluginError(f"lv2 plugin {uri}: the saved state is unusable: {why}")

    if not isinstance(text, str) or not text.strip():
        raise bad("expected Turtle text, got an empty or non-text value")
    if "\x00" in text:
        raise bad("it holds a NUL character")
    try:
        triples = lilv.turtle_statements(text, lilv.STATE_PREFIXES)
    except PluginError as e:
        raise bad(str(e)) from None
    subjects = {s for s, p, o in triples if p == lilv.RDF_TYPE and o == _PRESET}
    if len(subjects) != 1:
        raise bad(f"expected one pset:Preset subject, found {len(subjects)}")
    (subject,) = subjects
    applies = [o for s, p, o in triples if s == subject and p == lilv.LV2 + "appliesTo"]
    if applies != [uri]:
        raise bad(f"it is the state of {applies[0] if applies else 'no plugin (lv2:appliesTo missing)'}")
    L, t = lilv.lib(), urids()
    with capture_stderr() as msgs:
        ptr = L.lilv_state_new_from_string(world.ptr, ctypes.addressof(t.map_struct), text.encode("utf-8"))
    if not ptr:
        raise bad("; ".join(msgs[-2:]) or "lilv could not read it")
    got = lilv.node_str(L.lilv_state_get_plugin_uri(ptr))
    state = State(ptr, L.lilv_state_get_num_properties(ptr))
    if got != uri:
        state.close()
        raise bad(f"it is the state of {got}")
    return state


# -- the plugin's own presets -----------------------------------------------------------------
_port_value_fn = CFUNCTYPE(None, c_char_p, c_void_p, c_void_p, c_uint32, c_uint32)
_RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"


def plugin_presets(world, uri: str) -> dict[str, str]:
    """The presets that come with the plugin ``uri`` (``pset:Preset`` resources of its bundle or of
    another, e.g. mda EPiano's "Mellow"): label -> preset URI, by label. A preset without a label is
    named by its URI's last part; of two with one label, the first keeps it and the next get " (2)"..."""
    L = lilv.lib()
    plugin = world.plugin(uri)
    if plugin is None:
        raise PluginError(f"lv2 plugin {uri}: not installed")
    nodes = L.lilv_plugin_get_related(plugin, world.uri(_PRESET))
    found: dict[str, str] = {}
    try:
        for node in lilv.iterate("nodes", nodes):
            preset = lilv.node_str(node)
            with capture_stderr():  # a broken preset file: said where the preset is taken (plugin_preset)
                L.lilv_world_load_resource(world.ptr, node)
            label = lilv.owned_str(L.lilv_world_get(world.ptr, node, world.uri(_RDFS_LABEL), None)) or \
                preset.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]
            name, n = label.strip() or preset, 1
            while name in found:
                n += 1
                name = f"{label} ({n})"
            found[name] = preset
    finally:
        if nodes:
            L.lilv_nodes_free(nodes)
    return dict(sorted(found.items(), key=lambda kv: kv[0].casefold()))


def plugin_preset(world, uri: str, label: str) -> tuple[dict[str, float], str | None]:
    """One of the presets that come with the plugin ``uri`` (``plugin_presets``), by label: its
    control values by port symbol and, where it holds more than them (state properties), that
    state as Turtle (``parse_state`` reads it; None where it has none).

    Raises
    ------
    PluginError
        No preset of that label (the message lists them), or lilv cannot read it.
    """
    presets = plugin_presets(world, uri)
    if label not in presets:
        listed = ", ".join(repr(k) for k in list(presets)[:12]) + (", ..." if len(presets) > 12 else "")
        raise PluginError(f"lv2 plugin {uri}: no preset named {label!r}; "
                          + (f"its presets: {listed}" if presets else "it comes with none"))
    return read_preset(world, uri, presets[label], label)


def read_preset(world, uri: str, preset: str, label: str) -> tuple[dict[str, float], str | None]:
    """``plugin_preset``'s reading of the preset whose URI is ``preset`` (listed by ``plugin_presets``,
    which loaded it; ``label``: what an error calls it)."""
    L, t = lilv.lib(), urids()
    node = world.uri(preset)
    with capture_stderr() as msgs:
        st = L.lilv_state_new_from_world(world.ptr, ctypes.addressof(t.map_struct), node)
    if not st:
        raise PluginError(f"lv2 plugin {uri}: its preset {label!r} cannot be read"
                          + (f": {'; '.join(msgs[-2:])}" if msgs else ""))
    values: dict[str, float] = {}
    kinds = {t.map(lilv.ATOM + k): k for k in ("Float", "Double", "Int", "Long", "Bool")}
    c_of = {"Float": ctypes.c_float, "Double": ctypes.c_double, "Int": ctypes.c_int32, "Long": ctypes.c_int64,
            "Bool": ctypes.c_int32}

    def take(symbol, _data, value, size, kind):
        c = c_of.get(kinds.get(kind, ""))
        if symbol and value and c is not None and size == ctypes.sizeof(c):
            values[symbol.decode("utf-8", "replace")] = float(c.from_address(value).value)

    try:
        callback = _port_value_fn(take)
        L.lilv_state_emit_port_values(st, ctypes.cast(callback, c_void_p), None)
        text = None
        if L.lilv_state_get_num_properties(st):
            raw = L.lilv_state_to_string(world.ptr, ctypes.addressof(t.map_struct), ctypes.addressof(t.unmap_struct),
                                         st, STATE_SUBJECT.encode(), None)
            if not raw:
                raise PluginError(f"lv2 plugin {uri}: its preset {label!r}: lilv could not write its state")
            try:
                text = ctypes.string_at(raw).decode("utf-8")
            finally:
                L.lilv_free(raw)
    finally:
        L.lilv_state_free(st)
    return values, text


__all__ = ["Instance", "MAX_RUN_FRAMES", "STATE_INTERFACE", "SUPPORTED_FEATURES", "State", "UridTable",
           "parse_state", "plugin_preset", "plugin_presets", "read_preset", "unsupported_features", "urids"]
