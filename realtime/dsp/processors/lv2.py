"""Any installed LV2 plugin as a chain slot (processor kind "lv2", preset key ``"uri"``).

Each plugin URI gets its own ``Lv2Plugin`` subclass, made on first use from the scan
(``realtime.io.lv2_scan``): its control inputs become ``Param`` descriptors (range, default,
unit, integer / toggle / enumeration, logarithmic taper), so knobs, presets, MIDI learn and
``--set slot.param=value`` work as for built-in processors. ``create("lv2", uri=...)`` and
``Lv2Plugin(uri=...)`` return an instance of that subclass. A logarithmic port whose range starts
at 0 gets a log taper from a floor (``LOG_FLOOR`` of its maximum) and the plugin gets 0 for the
floor. A range given as a fraction of the sample rate (``lv2:sampleRate``) is shown in Hz at
``NOMINAL_RATE`` by the class, which accepts any value the range allows at a rate in ``RATE_SPAN``
(a preset saved at 96 kHz loads anywhere); ``prepare`` gives the instance its own descriptors at
the stream's rate (a cutoff up to 0.45 of the rate reaches 43.2 kHz at 96 kHz), clamps the values
to them, and turns a value still at its default into the plugin's default at that rate.

Per block (no allocation): one Numba kernel copies the knob values to the control ports and the
chain's block into the plugin's input buffers, one ctypes call per instance runs the plugin
(the GIL is released), one kernel cleans the outputs and one writes them back. Buffers are preallocated and
connected once, in ``prepare``. A block longer than ``lv2_host.MAX_RUN_FRAMES`` runs in pieces of at
most that many frames, each with the MIDI events that fall in it.

Channels adapt to the chain, counting only the signal path's ports (a plugin's ``pg:mainInput`` and
``pg:mainOutput`` groups where it declares them: LSP's crossover bands are not heard): a mono plugin on a stereo
chain runs as two instances (dual-mono); a mono-in / stereo-out plugin gets the input downmixed;
a stereo plugin on a mono chain gets the input on both sides and its output downmixed; side-chain
inputs (``lv2:isSideChain``, or a ``pg:sideChainOf`` group) and extra inputs get silence.
``adaptation`` says which. Plugins with a MIDI input receive the chain's MIDI (``handle_midi``) as
an atom sequence with exact sample offsets, the whole queue (``MAX_EVENTS``) in every block.
Instruments (``Lv2Instrument``: a MIDI input and no signal-path audio input, or the
``lv2:InstrumentPlugin`` class) are what ``synth`` may play; those without an audio input add
their sound to the block, like the DDSP synth.

Output: a sample that is not finite or beyond ``OUTPUT_LIMIT`` becomes 0 before it reaches the
chain, is counted (``bad_output_samples``), and the instance that made it is reset: offline at
once; live, the DSP thread only stops running it (silence) and a rescue thread resets it, since
(de)activation may allocate and must not overlap ``run()``; in a block run in pieces, before its
next piece, as a block of that piece's length would have it (it never runs on broken, its junk
counted again piece by piece). So is an effect's output beyond
``JUNK_LIMIT`` on a silent input for ``JUNK_SPAN`` samples in a row (junk: an effect makes no sound
out of silence), and every such block after it; plugins without audio inputs and instruments are
exempt (their sound needs no input).

Choices: an enumeration's knob value is the index of its choice; where the plugin's own values are
not 0, 1, 2... (``_ScalePoints``), a number in a preset or ``--set`` is the plugin's value.

Reset (``reset``, the end of ``prepare``, a blown-up instance): LV2's deactivate + activate; on
``reset``, an instance without a state of its own that ran since it was made (the silent block of
``prepare``, a chain's warm-up) is made anew instead, so that a render starts as a fresh instance
would, whatever the block size (LFOs keep their phase through activate()); not one of a plugin
whose memory starts as junk (``lv2_scan.UNINITIALISED_MEMORY``): the one that plays stays the one
checked on silence. An
instance whose output on the silent block of ``prepare`` was not silence, or that blew up, then runs
on silence, on buffers of its own, until its output is within ``SETTLE_LIMIT`` (``_settle``); a
healthy one is left exactly as any host leaves it, since such a run moves the internal phase of
some plugins (swh's fastLookaheadLimiter then limits the same music differently). Some plugins
never clear their memory in activate() (swh dcRemove starts with whatever its allocation held, seen
at 1e31, or at 99: a +40 dB DC thump the output limit lets through): only running them lets it die
away. Silence is the test because no effect makes sound
out of it whatever its gain, so loud plugins are never mistaken for broken ones; an output that
does not fall (a generator) ends the run early and is left as it is, unless an effect's is beyond
``JUNK_LIMIT``. An instance still making such output (Inf or NaN kept in its memory) is made anew
(``_renew``: its state restored), unless that did not help the time before: the new instance made
it too, or did within ``RENEW_BACKOFF_S`` (swh chebstortion, made anew every block otherwise); the
slot then zeroes its junk and counts it. Instances are made in ``prepare``, a ``reset`` outside the
DSP thread, offline renders' blocks and the rescue thread, never on a live DSP thread.

Latency: the plugin's latency port is read after one silent block in ``prepare`` and after every
block: the chain's dry path follows a change at once, up to ``max_latency`` (the latency at
``prepare`` or ``LATENCY_HEADROOM_S``, whichever is larger). A plugin whose port is known not to
say its delay, or that delays the signal with no latency port (``lv2_scan.LATENCY_MISREPORTED``: swh
dj_eq says 3 samples and delays none; Calf's limiters delay by their look-ahead knob and have no
port) has its latency from a rule (``lv2_scan.LatencyRule``: its port's figure scaled, a control's
value, in ms at the stream's rate or in samples, or a constant), followed per block as a port is
(``max_latency``: the most the rule gives over the control's range), with one line on stderr when
its class is made. Plugins not declaring ``lv2:hardRTCapable`` run all the same; ``hard_rt`` is
False for UIs to flag.

State: a plugin implementing the LV2 state extension has its own state (besides its control
ports) saved in presets as Turtle (``plugin_state``, the slot key ``"state"``) and restored by
``prepare`` into every new instance, before activation (``set_plugin_state``); a re-prepare keeps
it. Dual-mono instances save the first one's state and all restore it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading
import weakref
from typing import ClassVar

import numpy as np
from numba import njit

from realtime.dsp.processor import MidiQueue, Param, Processor, Readout, short_repr
from realtime.dsp.processors import SLOT_CONTROLS, register
from realtime.errors import ParamError, PluginError
from realtime.io import crash_site, lilv, lv2_host, lv2_scan

NOMINAL_RATE = 48000.0  # ranges given as fractions of the sample rate are shown at this rate
RESERVED_IDS = (*SLOT_CONTROLS, "uri")  # a port with such a symbol gets a trailing "_"
MAX_EVENTS = 512  # MIDI events per block (more are counted in ``dropped_events``)
ATOM_CAPACITY = 8192  # bytes per atom port unless the plugin asks for more
# a MIDI event in an atom sequence: frames (8), atom header (8), 3 bytes padded to 8
MIDI_EVENT_BYTES = 24
# a MIDI input holds the whole queue (atom header and sequence body: 16 bytes), so that only the
# queue's own dropping, which keeps note-offs, ever applies
MIDI_CAPACITY = 16 + MIDI_EVENT_BYTES * MAX_EVENTS
# +80 dBFS: no setting of a working effect gets there (+70 dB of gain on a full-scale signal is
# 3162), a blown-up filter passes it on its way to Inf, and a chain's float32 maths (squares in
# meters, filter states) stays far from overflow below it
OUTPUT_LIMIT = 1e4
# +40 dBFS: an effect's output on a silent input (within SETTLE_LIMIT) beyond it for JUNK_SPAN samples
# in a row is junk (mda BeatBox reading uninitialised memory put out +46 dBFS RMS on silence): no
# working effect gets there (+70 dB of gain on -60 dBFS is +10 dBFS; LSP's oscillator, an effect,
# reaches +21 dBFS at its loudest); plugins without audio inputs and instruments may
JUNK_LIMIT = 100.0
JUNK_SPAN = 4096
RENEW_BACKOFF_S = 5.0  # an instance made anew that makes junk again this soon is not made anew again
LATENCY_HEADROOM_S = 0.5  # a plugin with a latency port may move its latency this far while streaming
LOG_FLOOR = 1e-6  # a log taper over [0, max] starts at max * LOG_FLOOR (six decades), or at the default
RATE_SPAN = (8000.0, 384000.0)  # the rates a sample-rate range's class descriptor accepts values for
SETTLE_LIMIT = 1e-3  # -60 dBFS: a reset instance fed silence is settled once its output is within it
SETTLE_SPAN = 4096  # samples: an output on silence whose peak does not fall by SETTLE_DECAY over one...
SETTLE_DECAY = 0.9  # ...is not junk dying away but sound the plugin makes (an oscillator): stop there
SETTLE_MAX = 1 << 17  # samples at most (swh dcRemove, decaying by 0.999 a sample, needs 80000 from 1e31)
_SILENCE, _DOWNMIX = -2, -1  # input sources besides a channel index


# -- kernels ----------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def _read_outputs(ctl, out_port, readings):
    """The first instance's control outputs -> readings (what the panel shows as readouts)."""
    for k in range(out_port.shape[0]):
        readings[k] = ctl[0, out_port[k]]


@njit(nogil=True, cache=True)
def _pre(block, off, n, ain, in_src, values, ctl, ctl_port, enum_n, enum_val, bounds):
    """Knob values -> control ports (enumeration index -> scale point value; a log taper's floor,
    bounds[k, 2], -> 0; clamped to [bounds[k, 0], bounds[k, 1]]); frames [off, off + n) of block ->
    inputs, non-finite samples as 0: a NaN in a plugin's filter or reverb state would stay there for good."""
    for k in range(values.shape[0]):
        v = values[k]
        if enum_n[k] > 0:
            v = enum_val[k, min(max(int(round(v)), 0), enum_n[k] - 1)]
        else:
            if v <= bounds[k, 2]:
                v = 0.0
            v = min(max(v, bounds[k, 0]), bounds[k, 1])
        for i in range(ctl.shape[0]):
            ctl[i, ctl_port[k]] = v
    chans = block.shape[1]
    for i in range(ain.shape[0]):
        for j in range(ain.shape[1]):
            src = in_src[i, j]
            if src >= 0:
                for t in range(n):
                    v = block[off + t, src]
                    ain[i, j, t] = v if np.isfinite(v) else 0.0
            elif src == -1:
                for t in range(n):
                    acc = 0.0
                    for c in range(chans):
                        v = block[off + t, c]
                        if np.isfinite(v):
                            acc += v
                    ain[i, j, t] = acc / chans
            else:
                for t in range(n):
                    ain[i, j, t] = 0.0


@njit(nogil=True, cache=True)
def _clean_outputs(aout, ain, n, hits, run_hits, limit, junk_limit, junk_run, clock):
    """Output samples that are not finite or beyond +-limit -> 0: a blown-up plugin must not feed
    the chain. An instance whose input is silent and whose output goes beyond +-junk_limit for
    ``JUNK_SPAN`` samples in a row makes junk: its whole block -> 0, and every such block after it
    (``junk_run[i]`` stays at the span; a generator's junk_limit is ``limit``: no such rule).
    run_hits[i] counts instance i's samples in this run, hits[i] in the chain block (added to: the
    caller zeroes it per block). Returns this run's total; clock[0] counts the samples run."""
    clock[0] += n
    total = 0
    for i in range(aout.shape[0]):
        junk = False
        if junk_limit < limit:
            quiet = True
            for j in range(ain.shape[1]):
                for t in range(n):
                    if abs(ain[i, j, t]) > SETTLE_LIMIT:
                        quiet = False
                        break
                if not quiet:
                    break
            loud = False
            for j in range(aout.shape[1] if quiet else 0):  # music in: not looked at
                for t in range(n):
                    if abs(aout[i, j, t]) > junk_limit:
                        loud = True
                        break
                if loud:
                    break
            if quiet and loud:
                junk_run[i] = min(junk_run[i] + n, JUNK_SPAN)
                junk = junk_run[i] >= JUNK_SPAN
            elif junk_run[i] < JUNK_SPAN:
                junk_run[i] = 0
        h = 0
        for j in range(aout.shape[1]):
            for t in range(n):
                if junk or not abs(aout[i, j, t]) <= limit:  # NaN fails it too
                    aout[i, j, t] = 0.0
                    h += 1
        run_hits[i] = h
        hits[i] += h
        total += h
    return total


@njit(nogil=True, cache=True)
def _peak(aout):
    """The largest magnitude in ``aout`` (allocates nothing); Inf when a sample is not finite."""
    m = 0.0
    for v in aout.ravel():
        if not np.isfinite(v):
            return np.inf
        m = max(m, abs(v))
    return m


@njit(nogil=True, cache=True)
def _delay_of(v, rule):
    """A port's value ``v`` as the delay ``rule`` says (samples, not clamped; NaN for a non-finite
    ``v``): ``rule`` = [scale (per sample at the stream's rate), offset, floor, stages, bypass port]
    (``lv2_scan.LatencyRule``; a latency port taken as it is: [1, 0, 0, 1, -1])."""
    x = v * rule[0] + rule[1]
    if not np.isfinite(x):
        return np.nan
    return (math.floor(x) if rule[2] else np.rint(x)) * rule[3]


@njit(nogil=True, cache=True)
def _follow_latency(ctl, port, lat, rule):
    """The first instance's port ``port`` (its latency port, or the control that sets its delay; -1:
    none, as 0) as ``rule`` takes it (``_delay_of``; 0 while its bypass port is on) -> lat[0]
    (samples, within [0, lat[1]]; a non-finite value leaves it); True when it moved."""
    b = int(rule[4])
    if b >= 0 and ctl[0, b] > 0.5:
        v = 0.0
    else:
        v = _delay_of(ctl[0, port] if port >= 0 else 0.0, rule)
        if not np.isfinite(v):
            return False
    n = int(min(max(v, 0.0), float(lat[1])))
    moved = n != lat[0]
    lat[0] = n
    return moved


@njit(nogil=True, cache=True)
def _post(block, off, n, aout, weights, add):
    """block[off + t, c] = (that if add else 0) + sum over instances and outputs of weight * output[t],
    for t < n."""
    for c in range(block.shape[1]):  # a channel at a time, each weight's samples in one loop (it vectorises)
        if not add:
            for t in range(n):
                block[off + t, c] = 0.0
        for i in range(aout.shape[0]):
            for j in range(aout.shape[1]):
                w = weights[c, i, j]
                if w != 0.0:
                    for t in range(n):
                        block[off + t, c] += w * aout[i, j, t]


@njit(nogil=True, cache=True)
def _atoms(a32, a8, kinds, ev, n_ev, order, n, off, m, urids):
    """Prepare every atom port for one run, of frames [off, off + m) of an n-frame block: MIDI inputs
    get the events that fall there (offsets clamped to the block) as a sequence (sorted by offset,
    stable; frames counted from off), other inputs an empty sequence, outputs their capacity.
    urids = [atom:Sequence, midi:MidiEvent, atom:Chunk]."""
    cap = a8.shape[2]
    for e in range(n_ev):  # insertion sort by offset: events mostly arrive in order
        k = e
        while k > 0 and ev[order[k - 1], 0] > ev[e, 0]:
            order[k] = order[k - 1]
            k -= 1
        order[k] = e
    for i in range(a32.shape[0]):
        for p in range(a32.shape[1]):
            kind = kinds[p]
            if kind == 2:  # output: the plugin may write up to the capacity
                a32[i, p, 0] = cap - 8
                a32[i, p, 1] = urids[2]
                continue
            a32[i, p, 1] = urids[0]
            a32[i, p, 2] = 0  # unit: frames
            a32[i, p, 3] = 0
            size = 8
            if kind == 0:
                for q in range(n_ev):
                    e = order[q]
                    status = int(ev[e, 1])
                    nbytes = 2 if (status & 0xE0) == 0xC0 else 3  # program change, channel pressure: 2
                    frame = min(max(int(ev[e, 0]), 0), n - 1) - off
                    if frame < 0 or frame >= m:  # another run's
                        continue
                    if status < 0x80 or status >= 0xF0 or 8 + size + MIDI_EVENT_BYTES > cap:
                        continue
                    at = 8 + size  # byte offset of this event in the buffer
                    w = at // 4
                    a32[i, p, w] = frame  # frames (int64, little-endian)
                    a32[i, p, w + 1] = 0
                    a32[i, p, w + 2] = nbytes
                    a32[i, p, w + 3] = urids[1]
                    a8[i, p, at + 16] = status
                    a8[i, p, at + 17] = int(ev[e, 2]) & 0x7F
                    a8[i, p, at + 18] = int(ev[e, 3]) & 0x7F if nbytes == 3 else 0
                    size += MIDI_EVENT_BYTES
            a32[i, p, 0] = size


# -- descriptors ------------------------------------------------------------------------------
class _LogFromZero(Param):
    """A log taper for a port whose range starts at 0 (``Param``'s log taper needs min > 0): ``min``
    is the taper's floor, which the plugin gets as 0 (``_pre``). Values from 0 up to the floor, as
    presets saved when the knob was linear hold, are taken as the floor."""

    def validate(self, value, where: str = "") -> float:
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            return super().validate(value, where)
        return super().validate(self.min if 0.0 <= v < self.min else value, where)

    def format(self, value: float) -> str:
        return super().format(0.0 if value <= self.min else value)  # what the plugin gets (it read "0.0200 Hz")


class _AnyRate(Param):
    """A sample-rate range as the plugin's class shows it (at ``NOMINAL_RATE``): it accepts what the
    range allows at any rate in ``RATE_SPAN``, as the stream's rate is not known before ``prepare``."""

    def validate(self, value, where: str = "") -> float:
        ends = [x / NOMINAL_RATE * r for x in (self.min, self.max) for r in RATE_SPAN]  # a bound may be negative
        return Param.validate(dataclasses.replace(self, min=min(ends), max=max(ends)), value, where)


class _LogFromZeroAnyRate(_LogFromZero, _AnyRate):
    """A log taper from 0 (``_LogFromZero``) over a sample-rate range (``_AnyRate``)."""


@dataclasses.dataclass(frozen=True)
class _ScalePoints(Param):
    """An enumeration whose scale points are not 0, 1, 2... (mda Leslie's speed: 0, 0.5, 1): a number
    in a preset or ``--set`` is the plugin's own value, as its documentation and other hosts show
    it; the knob's value stays the choice's index (panel, MIDI learn), presets keep the name."""

    points: tuple[float, ...] = ()

    def choice_of(self, value, where: str = "") -> int:
        # (an int of hundreds of digits overflows the float isclose makes of it: no point is that far)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e300:
            for k, p in enumerate(self.points):
                if math.isclose(value, p, rel_tol=1e-5, abs_tol=1e-9):  # the points are float32
                    return k
        named = ", ".join(f"{p:g} {c}" for p, c in zip(self.points, self.choices))
        raise ParamError(f"{where}{self.id}: {short_repr(value)} is not one of {list(self.choices)} (by value: {named})")


def _raw_range(port: lv2_scan.PortInfo) -> tuple[float, float]:
    """The port's range as the plugin declares it (a fraction of the rate for lv2:sampleRate ports)."""
    return (port.minimum if port.minimum is not None else 0.0, port.maximum if port.maximum is not None else 1.0)


def _log_floor(hi: float, default: float) -> float:
    """Where a log taper over [0, hi] starts: six decades down, lower if the default is."""
    floor = float(f"{hi * LOG_FLOOR:.6g}")  # 1e-05, not 9.999999999999999e-06, in presets
    return min(floor, default) if default > 0.0 else floor


def _param_of(port: lv2_scan.PortInfo, taken: set, rate: float | None = None) -> tuple[Param, tuple[float, ...]]:
    """A Param for one control input, and the scale point values for an enumeration (else ()). A
    sample-rate range is in Hz at ``rate``; without one, at ``NOMINAL_RATE`` as an ``_AnyRate``."""
    pid = port.symbol if port.symbol not in RESERVED_IDS else port.symbol + "_"
    if pid.startswith("_"):  # a leading "_" marks a command the panel does not draw nor presets keep
        pid = "port" + pid
    while pid in taken:
        pid += "_"
    taken.add(pid)
    scale = (rate or NOMINAL_RATE) if port.sample_rate else 1.0
    lo_raw, hi_raw = _raw_range(port)
    lo, hi = lo_raw * scale, hi_raw * scale
    default = port.default if port.default is not None else lo_raw
    if lo_raw <= default <= hi_raw:  # some bundles give the default as a fraction too, some in Hz
        default *= scale
    if port.toggled:
        # a switch, not a knob reading "0"/"1": the panel draws choices as a selector
        return Param(pid, port.name, 0.0, 1.0, 1.0 if default > 0.5 else 0.0, step=1.0, smoothing_ms=0.0,
                     choices=("off", "on")), ()
    if port.enumeration and port.scale_points:
        vals = tuple(v for v, _ in port.scale_points)
        labels, seen = [], set()
        for v, label in port.scale_points:  # choice names must be unique
            name = label if label not in seen else f"{label} ({v:g})"
            seen.add(name)
            labels.append(name)
        idx = min(range(len(vals)), key=lambda i: abs(vals[i] - default))
        if vals == tuple(range(len(vals))):  # values that are the indices: numbers mean the same either way
            return Param(pid, port.name, 0.0, len(vals) - 1.0, float(idx), choices=tuple(labels), step=1.0,
                         smoothing_ms=0.0), vals
        return _ScalePoints(pid, port.name, 0.0, len(vals) - 1.0, float(idx), choices=tuple(labels), step=1.0,
                            smoothing_ms=0.0, points=vals), vals
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        lo, hi = (lo, lo + 1.0) if math.isfinite(lo) else (0.0, 1.0)
    step = 1.0 if port.integer else 0.0
    if step and lo != round(lo):  # integer steps count from an integer
        lo = float(math.ceil(lo))
        hi = max(hi, lo + 1.0)
    default = min(hi, max(lo, default if math.isfinite(default) else lo))
    if step:
        default = float(round(default))
    if port.logarithmic and lo == 0.0 and not step:
        floor = _log_floor(hi, default)
        kind = _LogFromZeroAnyRate if port.sample_rate and rate is None else _LogFromZero
        return kind(pid, port.name, floor, hi, max(default, floor), unit=port.unit, scale="log",
                    smoothing_ms=0.0), ()
    log = port.logarithmic and lo > 0.0
    kind = _AnyRate if port.sample_rate and rate is None else Param
    return kind(pid, port.name, lo, hi, default, unit=port.unit, scale="log" if log else "lin", step=step,
                smoothing_ms=0.0), ()


def _readout_of(port: lv2_scan.PortInfo) -> Readout:
    """A Readout for one control output: a choice name (enumeration, toggle), a bar when it has a range, else a number."""
    lo = port.minimum if port.minimum is not None and math.isfinite(port.minimum) else 0.0
    hi = port.maximum if port.maximum is not None and math.isfinite(port.maximum) else 1.0
    if hi <= lo:
        hi = lo + 1.0
    if port.enumeration and port.scale_points and all(float(v).is_integer() and v >= 0 for v, _ in port.scale_points):
        names = [""] * (int(max(v for v, _ in port.scale_points)) + 1)
        for v, label in port.scale_points:
            names[int(v)] = label
        return Readout(port.symbol, port.name, port.unit, lo, hi, kind="text", choices=tuple(names))
    if port.toggled:
        return Readout(port.symbol, port.name, kind="text", choices=("off", "on"))
    bounded = port.minimum is not None and port.maximum is not None and math.isfinite(port.maximum - port.minimum)
    return Readout(port.symbol, port.name, port.unit, lo, hi, kind="level" if bounded and not port.integer else "number")


def _latency_from(info: lv2_scan.PluginInfo) -> tuple[lv2_scan.LatencyRule | None, int, int]:
    """Where the plugin's latency comes from: its rule (``lv2_scan.LATENCY_MISREPORTED``; None: its
    latency port says it), the port read (the latency port or the control the rule names; -1: none)
    and the rule's bypass toggle (-1: none). A rule on a control is for a build without a latency port."""
    rule = lv2_scan.LATENCY_MISREPORTED.get(info.uri)
    port = -1 if info.latency_port is None else info.latency_port
    if rule is None or (rule.port is not None and port >= 0):
        return None, port, -1
    controls = {p.symbol: p.index for p in info.controls}
    if rule.port is not None:
        port = controls.get(rule.port, -1)
    return rule, port, controls.get(rule.bypass, -1) if rule.bypass else -1


_classes: dict[str, type] = {}


def plugin_class(uri: str) -> type["Lv2Plugin"]:
    """The processor class for one plugin URI (made once per process).

    Raises
    ------
    PluginError
        Not installed, broken bundle, a required feature this host lacks, or no audio output.
    """
    cls = _classes.get(uri)
    if cls is not None:
        return cls
    info = lv2_scan.plugin_info(uri)
    why = info.refusal()  # (one known to be broken: plugin_info refused it already)
    if why:
        raise PluginError(f"lv2 plugin {uri}: {why}")
    if info.audio_out == 0:
        raise PluginError(f"lv2 plugin {uri}: has no audio output, nothing to put in a chain")
    for p in info.ports:
        if p.type == "other" and not p.optional:
            raise PluginError(f"lv2 plugin {uri}: port {p.symbol!r} is of a type this host does not support")
    taken: set = set()
    params, enums = [], []
    for port in info.controls:
        prm, vals = _param_of(port, taken)
        params.append(prm)
        enums.append(vals)
    outs = [p for p in info.ports_of("control", "out") if p.index != info.latency_port]
    latency_from = _latency_from(info)
    if latency_from[0] is not None:  # once per process: the chain's latency is not what the plugin says
        print(f"lv2 plugin {uri}: {latency_from[0].why}", file=sys.stderr)
    bases = (Lv2Instrument,) if info.instrument else (Lv2MidiPlugin,) if info.midi_in else (Lv2Plugin,)
    name = "Lv2_" + "".join(ch if ch.isalnum() else "_" for ch in info.name)
    cls = type(name, bases, {"uri": uri, "info": info, "params": tuple(params), "hard_rt": info.hard_rt,
                             "_control_ports": tuple(p.index for p in info.controls), "_enums": tuple(enums),
                             "_rate_ranges": tuple(_raw_range(p) if p.sample_rate else None for p in info.controls),
                             "readouts": tuple(_readout_of(p) for p in outs),
                             "_output_ports": tuple(p.index for p in outs), "_latency_source": latency_from,
                             "block_multiple": lv2_scan.BLOCK_MULTIPLE.get(uri, 1),
                             "__module__": __name__, "__doc__": f"LV2 plugin {info.name} <{uri}>."})
    _classes[uri] = cls
    return cls


# -- the processor ----------------------------------------------------------------------------
@register
class Lv2Plugin(Processor):
    """An LV2 plugin in a chain. ``Lv2Plugin(uri=..., **values)`` builds the plugin's own subclass.

    Parameters
    ----------
    uri : str
        The plugin's URI (``python main.py plugins`` lists them).
    **values
        Initial parameter values by id (the port symbols).

    Raises
    ------
    PluginError
        See ``plugin_class``; instantiation errors are raised by ``prepare``.

    Attributes
    ----------
    bad_output_samples : int
        Output samples the plugin made that were not finite or beyond ``OUTPUT_LIMIT`` (given to the
        chain as 0), since it was made.
    instance_resets : int
        Resets of an instance that made such samples.
    instance_renewals : int
        Instances made anew because a reset left them making such samples (see ``_renew``).
    """

    kind = "lv2"
    keeps_junk = False  # an instance of this plugin showed junk on silence: resets settle every instance
    uri: ClassVar[str] = ""
    info: ClassVar[lv2_scan.PluginInfo | None] = None
    hard_rt: ClassVar[bool] = False
    _control_ports: ClassVar[tuple[int, ...]] = ()
    _output_ports: ClassVar[tuple[int, ...]] = ()  # control outputs shown as readouts (latency port excluded)
    # the latency's rule, the port it is read from and the rule's bypass toggle (_latency_from)
    _latency_source: ClassVar[tuple] = (None, -1, -1)
    _enums: ClassVar[tuple[tuple[float, ...], ...]] = ()
    _rate_ranges: ClassVar[tuple[tuple[float, float] | None, ...]] = ()  # per param: fractions of the rate
    instrument: ClassVar[bool] = False  # what ``synth`` may play (see ``Lv2Instrument``)

    @classmethod
    def for_uri(cls, uri: str) -> type["Lv2Plugin"]:
        """The class of the plugin ``uri`` (see ``plugin_class``)."""
        return plugin_class(uri)

    def __new__(cls, /, uri: str | None = None, **values):  # (a port may be named "cls")
        if cls.info is None:  # the registry's class: hand over to the plugin's own
            if uri is None:
                raise PluginError('lv2: a slot of kind "lv2" needs the plugin\'s "uri"')
            cls = plugin_class(uri)
        return super().__new__(cls)

    def __init__(self, /, uri: str | None = None, **values):
        # the rescue thread's reset of an instance never overlaps another reset or a close
        self._life = threading.Lock()
        if uri is not None and uri != self.uri:
            raise PluginError(f"lv2: this class hosts {self.uri}, not {uri}")
        super().__init__(**values)
        self._instances: list = []
        self._runs: tuple = ()
        self.adaptation = ""
        self._latency = self._max_latency = 0
        self._lat_port = -1
        self.bad_output_samples = 0
        self.instance_resets = 0
        self.instance_renewals = 0
        self.dropped_events = 0
        self._ev = np.zeros((MAX_EVENTS, 4), np.float64)  # MIDI queued for the next block
        self._order = np.zeros(MAX_EVENTS, np.int64)
        self._n_ev = 0
        self._pending_state: str | None = None  # restored by the next prepare
        self._ran = False  # see reset
        self._run_max = lv2_host.MAX_RUN_FRAMES  # the longest run() (prepare sets it: the block, at most that)
        # per sample-rate port clamped at a lower rate: (the value asked, what it was clamped to)
        self._rate_asked: dict[int, tuple[float, float]] = {}

    # -- the plugin's own presets (LV2 presets extension) ---------------------------------------
    @classmethod
    def plugin_presets(cls) -> list[str]:
        """The labels of the presets that come with the plugin (``lv2_host.plugin_presets``)."""
        return list(lv2_host.plugin_presets(lv2_scan.world(), cls.uri))

    @classmethod
    def plugin_preset(cls, label: str) -> tuple[dict[str, float | str], str | None]:
        """One of the plugin's own presets: its values by parameter id, as a preset's ``params``
        take them (a choice by name, a number held to the knob's range), and its state as Turtle
        (None: it holds only control values, as every preset of Debian's plugins does).

        Raises
        ------
        PluginError
            No preset of that label (the message lists them), or lilv cannot read it.
        """
        values, state = lv2_host.plugin_preset(lv2_scan.world(), cls.uri, label)
        return cls._preset_params(values), state

    @classmethod
    def _preset_params(cls, values: dict[str, float]) -> dict[str, float | str]:
        """A preset's control values by port symbol as a preset's ``params`` take them (``plugin_preset``)."""
        params: dict[str, float | str] = {}
        for port, prm in zip(cls.info.controls, cls.params):
            v = values.get(port.symbol)
            if v is None or not math.isfinite(v):
                continue
            v = float(f"{v:.7g}")  # float32 in the preset: 0.65, not 0.6499999761581421
            if prm.choices:
                try:
                    params[prm.id] = prm.choices[prm.choice_of(v)]
                except ParamError:  # between two points: the nearest one
                    points = getattr(prm, "points", None) or range(len(prm.choices))
                    params[prm.id] = prm.choices[min(range(len(points)), key=lambda k: abs(points[k] - v))]
            else:
                params[prm.id] = min(prm.max, max(prm.min, v))
        return params

    @classmethod
    def value_presets(cls) -> dict[str, dict[str, float | str]]:
        """The plugin's own presets that hold control values alone (every one of Debian's plugins'),
        label -> params as ``plugin_preset`` gives them: what the panel's preset drop-down moves the
        knobs to, live. Read once per process; one lilv cannot read is left out."""
        if cls.__dict__.get("_value_presets") is None:
            world, found = lv2_scan.world(), {}
            for label, preset in lv2_host.plugin_presets(world, cls.uri).items():  # (listed once, each read once)
                try:
                    values, state = lv2_host.read_preset(world, cls.uri, preset, label)
                except PluginError:
                    continue
                if state is None:
                    found[label] = cls._preset_params(values)
            cls._value_presets = found
        return cls._value_presets

    # -- state (LV2 state extension) ---------------------------------------------------------
    @classmethod
    def check_state(cls, text: str) -> None:
        """Check that ``text`` is a state saved for this plugin (presets call it).

        Raises
        ------
        PluginError
            One line saying what is wrong with it.
        """
        lv2_host.parse_state(lv2_scan.world(), cls.uri, text).close()

    def set_plugin_state(self, text: str) -> None:
        """Give the plugin a saved state (``plugin_state``'s Turtle); ``prepare`` restores it,
        outside the audio thread. Plugins without the state interface ignore it.

        Raises
        ------
        PluginError
            The text is not a state saved for this plugin.
        """
        self.check_state(text)
        self._pending_state = text

    def plugin_state(self) -> str | None:
        """The plugin's own state as Turtle, for presets: the live instance's when prepared, else
        the state given by ``set_plugin_state``; None for plugins without the state interface.

        Raises
        ------
        PluginError
            lilv could not save it.
        """
        if self._pending_state is not None:
            return self._pending_state
        with self._life:  # the rescue thread may be making the instance anew (_renew frees the old one)
            if self._instances:
                return self._instances[0].save_state()
        return None

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def latency(self) -> int:
        return self._latency

    @property
    def max_latency(self) -> int:
        return self._max_latency

    def _prepare(self) -> None:
        if self._pending_state is None and self._instances:  # a re-prepare keeps the plugin's state
            self._pending_state = self._instances[0].save_state()
        self._close()
        self._rate_params()
        info, C, B = self.info, self.channels, self.max_block
        if B % self.block_multiple:
            raise PluginError(f"lv2 plugin {info.name}: corrupts blocks that are not a multiple of "
                              f"{self.block_multiple} frames (its last samples): give a block size that is one, "
                              f"not {B}")
        R = self._run_max = min(B, lv2_host.MAX_RUN_FRAMES)  # a longer block runs in pieces (_run_block)
        ins, outs = info.ports_of("audio", "in"), info.ports_of("audio", "out")
        n_inst = self._route(ins, outs)
        self._ain = np.zeros((n_inst, len(ins), R), np.float32)
        self._aout = np.zeros((n_inst, len(outs), R), np.float32)
        self._hits = np.zeros(n_inst, np.int64)  # bad output samples per instance, this block
        self._run_hits = np.zeros(n_inst, np.int64)  # ... and in its last run (_run_block)
        cvs_in, cvs_out = info.ports_of("cv", "in"), info.ports_of("cv", "out")
        self._cv = np.zeros((n_inst, len(cvs_in) + len(cvs_out), R), np.float32)  # silence in, ignored out
        self._control_buffers(n_inst)
        atoms = info.ports_of("atom", "in") + info.ports_of("atom", "out")
        self._atom_buffers(n_inst, atoms)
        # what _settle runs an instance on: its own buffers, made here as it may run offline per block
        self._own = tuple(np.zeros_like(b[:1]) for b in self._buffers)
        self._own_atom = (self._own[4].view(np.uint32), self._own[4].view(np.uint8))
        self._silence = np.zeros((R, C), np.float32)
        world = lv2_scan.world()
        self._instances = [lv2_host.Instance(world, self.uri, self.sample_rate, R, info.required_features,
                                             label=self._crash_label) for _ in range(n_inst)]
        for i, inst in enumerate(self._instances):
            self._connect(inst, i, self._buffers)
        if self._pending_state is not None:  # after instantiation, before activation; never per block
            with lv2_host.parse_state(world, self.uri, self._pending_state) as state:
                for inst in self._instances:
                    inst.restore_state(state)
            self._pending_state = None
        # per instance: run(), its handle, the instance, and whether it is parked (see _blown_up)
        self._runs = tuple((inst.run_fn, inst.handle, inst, [False]) for inst in self._instances)
        self._workers = tuple((inst, parked) for _, _, inst, parked in self._runs if inst.worker is not None)
        self._renewable = [True] * n_inst  # False: making it anew did not help the last time (_clear_instance)
        self._renewed_at = [-math.inf] * n_inst  # _clock when it was last made anew
        self._clock = np.zeros(1, np.int64)  # samples run since prepare (counted by _clean_outputs)
        self._junk_run = np.zeros(n_inst, np.int64)  # samples of junk in a row (_clean_outputs)
        # an effect's output on silence far above full scale is junk; a generator's may be its sound
        generator = self.instrument or not info.main_inputs or self.uri in lv2_scan.SOUND_OF_THEIR_OWN
        self._junk_limit = OUTPUT_LIMIT if generator else JUNK_LIMIT
        self._keeps_junk = [False] * n_inst  # True: it showed junk on silence or blew up; resets settle it
        self._ran = False  # the instances ran on the chain's buffers since they were made: reset makes them anew
        self._measure_latency(B, C)
        if not self.live:  # offline, a worker's first jobs (a sampler loading the file its state names) are
            for i, inst in enumerate(self._instances):  # done now: the first block's notes were lost to them
                if inst.worker is not None:
                    self._settle(i, inst)
        if self.live:  # from now on work is done beside the DSP thread, never on it
            for inst, _ in self._workers:
                inst.start_worker_thread()
            _rescuer.enrol(self)

    def _rate_params(self) -> None:
        """This instance's descriptors at the stream's rate (``_param_of``) for the sample-rate
        ranges, with the values clamped to them (what the plugin would get anyway). A value that is
        still the default (the class's, at ``NOMINAL_RATE``, or the one of the rate prepared before)
        becomes the plugin's default at this rate: its fraction of the rate, as other hosts give it
        (swh lsFilter's 0.251 of the rate at 22.05 kHz is 5534 Hz; 12048 Hz, clamped to Nyquist, blew it up)."""
        params = list(type(self).params)
        for k, port in enumerate(self.info.controls):
            if port.sample_rate:
                at_rate, shown = _param_of(port, set(), self.sample_rate)[0], params[k]
                lo, hi = at_rate.min, at_rate.max
                value, asked = self.values[k], self._rate_asked.pop(k, None)
                if asked is not None and value == asked[1]:  # clamped before and not moved since: as asked
                    value = asked[0]  # (a rate change and back lost 18 kHz to 22.05 kHz's 9.9 kHz for good)
                untouched = any(math.isclose(value, d.default, rel_tol=1e-9, abs_tol=1e-12)
                                for d in (shown, self.params[k]))
                params[k] = dataclasses.replace(at_rate, id=shown.id)
                self.values[k] = at_rate.default if untouched else min(max(value, lo), hi)
                if self.values[k] != value and not untouched:
                    self._rate_asked[k] = (value, self.values[k])
        self.params = tuple(params)

    @property
    def _buffers(self) -> tuple:
        """The buffers the chain's blocks go through (per instance: audio in and out, CV, control, atom)."""
        return self._ain, self._aout, self._cv, self._ctl, self._atom

    def _connect(self, inst, i: int, buffers: tuple) -> None:
        """Connect every port of ``inst`` to row ``i`` of ``buffers`` (shaped as ``_buffers``)."""
        ain, aout, cv, ctl, atom = buffers
        info = self.info
        for j, p in enumerate(info.ports_of("audio", "in")):
            inst.connect(p.index, ain[i, j].ctypes.data)
        for j, p in enumerate(info.ports_of("audio", "out")):
            inst.connect(p.index, aout[i, j].ctypes.data)
        for j, p in enumerate(info.ports_of("cv", "in") + info.ports_of("cv", "out")):
            inst.connect(p.index, cv[i, j].ctypes.data)
        for p in info.ports:
            if p.type == "control":
                inst.connect(p.index, ctl[i, p.index:].ctypes.data)
            elif p.type == "other":
                inst.connect(p.index, None)
        for j, p in enumerate(info.ports_of("atom", "in") + info.ports_of("atom", "out")):
            inst.connect(p.index, atom[i, j].ctypes.data)

    def _route(self, ins: list, outs: list) -> int:
        """Which chain channel feeds each audio input, and the weight of each output in each chain
        channel (``_in_src``, ``_weights``), counting only signal-path ports (``PluginInfo.main_inputs``
        and ``main_outputs``: a plugin's main groups where it declares them); side-chain and other
        inputs keep silence, other outputs are not heard. Returns the number of instances (2: dual-mono)."""
        C, info = self.channels, self.info
        main_in = {p.index for p in info.main_inputs}
        main_out = {p.index for p in info.main_outputs}
        main = [j for j, p in enumerate(ins) if p.index in main_in]
        heard = [j for j, p in enumerate(outs) if p.index in main_out]
        mi, mo = min(len(main), 2), min(len(heard), 2)
        n_inst = 2 if (C == 2 and mi == 1 and mo == 1) else 1
        in_src = np.full((n_inst, len(ins)), _SILENCE, np.int64)
        weights = np.zeros((C, n_inst, len(outs)), np.float32)
        if n_inst == 2:
            in_src[:, main[0]] = (0, 1)
            weights[0, 0, heard[0]] = weights[1, 1, heard[0]] = 1.0
            self.adaptation = "dual-mono (two instances)"
        else:
            if mi == C:
                in_src[0, main[:mi]] = np.arange(mi)
            elif mi == 1:
                in_src[0, main[0]] = _DOWNMIX
            elif mi == 2:
                in_src[0, main[:2]] = 0  # mono chain: the one channel on both inputs
            if mo == C:
                for c in range(C):
                    weights[c, 0, heard[c]] = 1.0
            elif mo == 1:
                weights[:, 0, heard[0]] = 1.0  # mono output on both channels
            else:
                weights[0, 0, heard[:2]] = 0.5  # stereo output downmixed
            self.adaptation = self._describe_adaptation(mi, mo, C)
        if len(main) > mi:  # swh xfade's B pair: said "stereo" while half its inputs got silence
            self.adaptation += f", inputs {mi + 1}-{len(main)} silent" if len(main) > mi + 1 else f", input {len(main)} silent"
        if len(main) < len(ins):
            self.adaptation += (", side-chain input silent" if any(p.sidechain for p in ins)
                                else ", inputs besides the main ones silent")
        if len(heard) < len(outs):
            self.adaptation += ", outputs besides the main ones unused"
        elif len(heard) > mo:  # no main group declared: Calf's crossovers played their lowest band alone, unsaid
            self.adaptation += f", only the first {mo} of its {len(heard)} outputs heard"
        self._in_src, self._weights, self._add = in_src, weights, mi == 0
        return n_inst

    def _control_buffers(self, n_inst: int) -> None:
        """Control port values, the knobs' ports, enumerations, and each knob's clamp (a sample-rate
        range at the real rate) and log floor, as ``_pre`` reads them."""
        info = self.info
        self._ctl = np.zeros((n_inst, len(info.ports)), np.float32)
        for p in info.ports:
            if p.type == "control" and p.direction == "in":
                self._ctl[:, p.index] = p.default if p.default is not None else 0.0
        self._ctl_port = np.array(self._control_ports, np.int64)
        self._out_port = np.array(self._output_ports, np.int64)
        width = max([len(e) for e in self._enums] + [1])
        self._enum_n = np.array([len(e) for e in self._enums] or [0], np.int64)[: len(self.params)]
        self._enum_val = np.zeros((max(1, len(self.params)), width), np.float32)
        for k, e in enumerate(self._enums):
            self._enum_val[k, : len(e)] = e
        self._bounds = np.tile(np.array([-np.inf, np.inf, -np.inf]), (max(1, len(self.params)), 1))
        for k, (prm, fractions) in enumerate(zip(self.params, self._rate_ranges)):
            if fractions is not None:
                self._bounds[k, :2] = [f * self.sample_rate for f in fractions]
            if isinstance(prm, _LogFromZero):
                self._bounds[k, 2] = prm.min

    def _atom_buffers(self, n_inst: int, atoms: list) -> None:
        """One buffer per atom port and instance, large enough for the plugin's minimum and, with a
        MIDI input, for the whole MIDI queue."""
        midi = any(p.midi and p.direction == "in" for p in atoms)
        cap = max([ATOM_CAPACITY, MIDI_CAPACITY if midi else 0] + [p.min_size for p in atoms])
        cap = (cap + 7) // 8 * 8
        self._atom = np.zeros((n_inst, len(atoms), cap // 8), np.uint64)
        self._a32 = self._atom.view(np.uint32)
        self._a8 = self._atom.view(np.uint8)
        self._atom_kinds = np.array([0 if p.midi and p.direction == "in" else 1 if p.direction == "in" else 2
                                     for p in atoms], np.int64)
        t = lv2_host.urids()
        self._urids = np.array([t.map(lilv.ATOM + "Sequence"), t.map(lilv.MIDI_EVENT), t.map(lilv.ATOM + "Chunk")],
                               np.uint32)
        self._n_ev = 0

    def _measure_latency(self, B: int, C: int) -> None:
        """Activate, run one silent block (the plugin reports its latency from run(); an instance
        not silent on it is settled and the block run again) and size ``max_latency``: that latency
        or ``LATENCY_HEADROOM_S``, whichever is larger, for a plugin with a latency port (its latency
        may move while streaming); for one whose delay a rule gives from a control (or a constant:
        ``lv2_scan.LATENCY_MISREPORTED``), the most it gives over the control's range; else 0."""
        rule, self._lat_port, bypass = self._latency_source
        per = self.sample_rate / 1000.0 if rule is not None and rule.ms else 1.0
        self._lat_rule = np.array([1.0, 0.0, 0.0, 1.0, -1.0] if rule is None else
                                  [rule.scale * per, rule.offset, rule.floor, rule.stages, bypass], np.float64)
        self._lat = np.array([0, 1 << 30], np.int64)  # [latency, the most it may be]
        for i in range(len(self._runs)):
            self._clear_instance(i, settle=False)
        # what it makes wrong here is counted; the reset that ends ``prepare`` clears it
        silence = np.zeros((B, C), np.float32)
        bad = self._run_block(silence, rescue=False)
        # This block also shows junk: an instance whose output on silence is not silence is settled
        # and the block run again. One that is silent is left exactly as any host leaves it (a run
        # on silence moves the internal phase of some plugins: swh's fastLookaheadLimiter then limits
        # the same music differently, which moved the de-limiter benchmark's unseen-limiter figures).
        noisy = [i for i in range(len(self._runs)) if self._hits[i] or _peak(self._aout[i]) > SETTLE_LIMIT]
        if noisy:  # junk settled is not counted; what the block still makes wrong after it is
            type(self).keeps_junk = True  # the plugin's code keeps memory through activate(): any instance may
            for i in noisy:
                self._clear_instance(i)
            bad = self._run_block(silence, rescue=False)
        self.bad_output_samples += bad
        if rule is None and self._lat_port < 0:
            self._latency = self._max_latency = 0
            return
        if rule is None or (rule.port is None and self._lat_port >= 0):  # a latency port: it may move anywhere
            most = int(math.ceil(LATENCY_HEADROOM_S * self.sample_rate))
        else:  # a control's value (as the plugin gets it: the ends of its range bound it) or a constant
            _follow_latency(self._ctl, self._lat_port, self._lat, self._lat_rule)
            ends = [0.0]
            if self._lat_port >= 0:
                port = self.info.ports[self._lat_port]
                ends = [v * (self.sample_rate if port.sample_rate else 1.0) for v in _raw_range(port)]
            most = max([int(d) for d in (_delay_of(v, self._lat_rule) for v in ends) if math.isfinite(d)] + [0])
        self._max_latency = max(int(self._lat[0]), most)
        self._lat[1] = self._max_latency
        self._latency = int(self._lat[0])

    @staticmethod
    def _describe_adaptation(mi: int, mo: int, chans: int) -> str:
        name = {0: "no", 1: "mono", 2: "stereo"}
        if mi in (0, chans) and mo == chans:
            return "instrument" if mi == 0 else name[chans]
        parts = []
        if mi == 1 and chans == 2:
            parts.append("input downmixed to mono")
        if mi == 2 and chans == 1:
            parts.append("mono input on both plugin inputs")
        if mo == 1 and chans == 2:
            parts.append("mono output on both channels")
        if mo == 2 and chans == 1:
            parts.append("stereo output downmixed")
        return f"{name[mi]} in / {name[mo]} out plugin: " + ", ".join(parts)

    def reset(self) -> None:
        """Clear the plugin's state, as at the start of a stream. An instance that ran since it was
        made (the silent block of ``prepare``, the chain's warm-up) is made anew (``_fresh_instance``) when
        its control ports are all it has: LV2's deactivate + activate does not rewind everything (swh
        djFlanger's and lfoPhaser's, mda ThruZero's LFOs went on from where those blocks left them,
        so a render depended on the block size). Others are deactivated and activated again: one
        with a state of its own (``plugin_state``) keeps what it loaded (LSP's sampler takes a
        restored sample file in only when it runs); one whose new instances may start with junk in
        their memory (``lv2_scan.UNINITIALISED_MEMORY``, or one seen so) stays the instance that was
        checked on silence, and one that showed junk on silence when prepared is run on silence
        until it settles (see the module's doc)."""
        with self._life:
            for i in range(len(self._runs)):
                settle = self._keeps_junk[i] or type(self).keeps_junk  # it runs on silence anyway
                if self._ran and not settle and self.uri not in lv2_scan.UNINITIALISED_MEMORY \
                        and not self._runs[i][2].has_state:
                    self._fresh_instance(i)
                self._clear_instance(i, settle=settle)
                self._runs[i][3][0] = False
            self._ran = False
        self._n_ev = 0

    def _fresh_instance(self, i: int) -> None:
        """Instance ``i`` (one without a state of its own) made anew in place, not activated, for
        ``reset`` (the DSP thread does not run); the old one is freed. When the new one cannot be
        made, the old one stays."""
        try:
            new = lv2_host.Instance(lv2_scan.world(), self.uri, self.sample_rate, self._run_max,
                                    self.info.required_features, label=self._crash_label)
        except PluginError:
            return
        try:
            self._connect(new, i, self._buffers)
        except BaseException:
            new.close()
            raise
        old, self._instances[i] = self._instances[i], new
        runs = list(self._runs)
        runs[i] = (new.run_fn, new.handle, new, [False])
        self._runs = tuple(runs)
        self._workers = tuple((inst, p) for _, _, inst, p in self._runs if inst.worker is not None)
        self._junk_run[i] = 0
        old.close()

    def _clear_instance(self, i: int, settle: bool = True) -> None:
        """Reset instance ``i`` and (``settle``) settle it (``_settle``); one that still makes output
        the limit would zero is made anew (``_renew``), unless that did not help the time before
        either. It ends with a reset again: a plugin that clears itself in activate() starts as
        activated, one that does not keeps what the run on silence left. Not while the DSP thread
        may run it: it is parked, or the chain does not run."""
        inst = self._runs[i][2]
        if not inst.stop_worker_thread():  # LV2: no work() while (de)activating; a work() that
            return  # never returns leaves this instance as it is rather than crash it
        if inst.worker is not None:  # what was asked before the reset is answered before it,
            inst.flush_work()  # as offline, never into the freshly activated plugin
        inst.deactivate()
        inst.activate()
        if settle:
            self._keeps_junk[i] = True  # later resets settle it too
            ok = self._settle(i, inst)
            if not ok and self._renewable[i]:
                if self._clock[0] - self._renewed_at[i] < RENEW_BACKOFF_S * self.sample_rate:
                    self._renewable[i] = False  # junk again this soon: making it anew does not help
                else:
                    inst = self._renew(i, inst)
                    ok = self._settle(i, inst)
                    self._renewable[i] = ok  # NaN again from a new instance: its settings, not its memory
            if not ok:
                self._junk_run[i] = JUNK_SPAN  # what it makes on silence is junk from the first block
            inst.deactivate()
            inst.activate()
        if self.live:
            inst.start_worker_thread()

    def _settle(self, i: int, inst) -> bool:
        """Run instance ``i`` on silence, on buffers of its own (the DSP thread may be running the
        others), until its output is within ``SETTLE_LIMIT``; stop early on output that is not finite
        (it never dies away) or that does not fall (sound the plugin makes), and after ``SETTLE_MAX``
        samples. Connected back to the chain's buffers at the end. Returns whether its last output
        is finite and within ``OUTPUT_LIMIT``, or for an effect within ``JUNK_LIMIT`` (an effect
        does not make sound out of silence: output that does not fall is its junk)."""
        ain, aout, cv, ctl, atom = own = self._own
        for b in own:
            b.fill(0)
        ctl[0] = self._ctl[i]
        a32, a8 = self._own_atom
        n, silence = self._run_max, self._silence
        self._connect(inst, 0, own)
        try:
            last = math.inf
            for _ in range(max(1, SETTLE_MAX // SETTLE_SPAN)):
                peak = 0.0
                for _ in range(max(1, SETTLE_SPAN // n)):
                    _pre(silence, 0, n, ain, self._in_src[i:i + 1], self.values, ctl, self._ctl_port, self._enum_n,
                         self._enum_val, self._bounds)
                    if atom.shape[1]:
                        _atoms(a32, a8, self._atom_kinds, self._ev, 0, self._order, n, 0, n, self._urids)
                    inst.run_fn(inst.handle, n)
                    if inst.worker is not None:
                        inst.end_cycle()
                    out = _peak(aout)
                    if not math.isfinite(out):
                        return False
                    if out <= SETTLE_LIMIT:
                        return True
                    peak = max(peak, out)
                if peak > SETTLE_DECAY * last:
                    break
                last = peak
            return peak <= self._junk_limit
        finally:
            self._connect(inst, i, self._buffers)

    def _renew(self, i: int, old):
        """A new instance in place of instance ``i`` (its state restored, activated), for one whose
        memory a reset does not clear; ``old`` is freed. The DSP thread may hold the old ``_runs``:
        the old entry stays parked for good, the new one starts as parked as the old was. On
        failure the old instance stays."""
        try:
            text = old.save_state()  # its own properties (a loaded file), not its DSP memory
        except PluginError:
            text = None  # a fresh state beats a blown-up instance
        try:
            new = lv2_host.Instance(lv2_scan.world(), self.uri, self.sample_rate, self._run_max,
                                    self.info.required_features, label=self._crash_label)
            if text is not None:
                with lv2_host.parse_state(lv2_scan.world(), self.uri, text) as state:
                    new.restore_state(state)
        except PluginError:
            return old
        self._connect(new, i, self._buffers)
        new.activate()
        runs = list(self._runs)
        parked = runs[i][3]
        runs[i] = (new.run_fn, new.handle, new, [parked[0]])
        parked[0] = True
        self._instances[i] = new
        self._runs = tuple(runs)
        self._workers = tuple((inst, p) for _, _, inst, p in self._runs if inst.worker is not None)
        old.close()
        self.instance_renewals += 1
        self._renewed_at[i] = int(self._clock[0])
        self._junk_run[i] = 0  # a new instance gets the span again
        return new

    def _revive_parked(self) -> None:
        """Reset the instances the DSP thread parked and let them run again (the rescue thread)."""
        with self._life:
            for i in range(len(self._runs)):
                if self._runs[i][3][0]:
                    self._clear_instance(i)
                    self.instance_resets += 1
                    self._runs[i][3][0] = False  # the entry _renew may have put there

    def _close(self) -> None:
        with self._life:
            for inst in self._instances:
                inst.close()
            self._instances = []
            self._runs = self._workers = ()

    def close(self) -> None:
        """Free the plugin instances and stop their worker threads (a host dropping the slot)."""
        self._close()

    def __del__(self):
        try:
            self._close()
        except Exception:  # interpreter shutdown
            pass

    # -- audio --------------------------------------------------------------------------------
    @property
    def _crash_label(self) -> str:
        """What a crash in this plugin's code is put down to (``crash_site``)."""
        return f"LV2 plugin '{self.info.name}' <{self.uri}>"

    def _run_block(self, block: np.ndarray, rescue: bool = True) -> int:
        """``_run_pieces`` with the first instance marked as running audio on this thread
        (``crash_site``: a crash in its code is then put down to it)."""
        before = crash_site.mark(crash_site.DSP, self._runs[0][2].crash_row if self._runs else 0)
        try:
            return self._run_pieces(block, rescue)
        finally:
            crash_site.mark(*before)

    def _run_pieces(self, block: np.ndarray, rescue: bool = True) -> int:
        """One block through the plugin, in runs of at most ``lv2_host.MAX_RUN_FRAMES`` frames (each
        with the MIDI events that fall in it); returns how many output samples ``_clean_outputs`` zeroed.
        An instance that makes such samples in one run is dealt with before the next: ``rescue``
        (``process``), reset or parked (``_blown_up``), as a block of that run's length would have it;
        else (the silent block of ``prepare``) it sits the rest of the block out, silent. Either way a
        broken instance never runs on, counted again, in the block's later runs."""
        n, R = block.shape[0], self._run_max
        self._ran = True
        self._hits.fill(0)
        bad = 0
        for off in range(0, n, R):
            m = min(R, n - off)
            _pre(block, off, m, self._ain, self._in_src, self.values, self._ctl, self._ctl_port, self._enum_n,
                 self._enum_val, self._bounds)
            if self._atom.shape[1]:
                _atoms(self._a32, self._a8, self._atom_kinds, self._ev, self._n_ev, self._order, n, off, m,
                       self._urids)
            if bad and not rescue:
                self._run_unbroken(m)
            else:
                for run, handle, _, parked in self._runs:
                    if not parked[0]:
                        run(handle, m)
                for inst, parked in self._workers:
                    if not parked[0]:
                        inst.end_cycle()
            got = _clean_outputs(self._aout, self._ain, m, self._hits, self._run_hits, OUTPUT_LIMIT,
                                 self._junk_limit, self._junk_run, self._clock)
            _post(block, off, m, self._aout, self._weights, self._add)
            if self._lat_port >= 0 and _follow_latency(self._ctl, self._lat_port, self._lat, self._lat_rule):
                self._latency = int(self._lat[0])  # the chain's dry path follows at once
            if got:
                bad += got
                if rescue:
                    self._blown_up(got)
        if n:
            self._n_ev = 0
        if self._out_port.size:  # (a plugin without control outputs: no call)
            _read_outputs(self._ctl, self._out_port, self.readings)
        return bad

    def _run_unbroken(self, m: int) -> None:
        """One run of the instances that made no bad sample in this block; the others' outputs are
        silence (the rest of ``prepare``'s silent block)."""
        for i, (run, handle, inst, parked) in enumerate(self._runs):
            if self._hits[i]:
                self._aout[i] = 0.0
            elif not parked[0]:
                run(handle, m)
                if inst.worker is not None:
                    inst.end_cycle()

    def _blown_up(self, bad: int) -> None:
        """An instance made samples that ``_clean_outputs`` zeroed in the last run: count them and
        reset it (a NaN or a blown-up filter state never leaves by itself). Offline at once, as
        renders repeat exactly; live, (de)activation may allocate and must not overlap run(), so the
        DSP thread parks the instance (no run(), silent outputs) and wakes the rescue thread, which
        resets it."""
        self.bad_output_samples += bad
        for i, (_, _, _, parked) in enumerate(self._runs):
            if not self._run_hits[i] or parked[0]:
                continue
            if self.live:
                parked[0] = True
                self._aout[i] = 0.0  # what it made last must not repeat while it is parked
                _rescuer.wake()
            else:
                self._clear_instance(i)
                self.instance_resets += 1

    def process(self, block: np.ndarray) -> None:
        self._run_block(block)

    def describe_extra(self) -> dict:
        """What ``Chain.describe()`` adds for UIs: uri, plugin name, hard_rt, channel adaptation,
        has_state (it declares the state extension: it keeps more than its control values), the
        output samples replaced by 0 and instance resets that followed (``bad_output_samples``,
        ``instance_resets``), the plugin's own presets of control values (``value_presets``) and
        whether it takes MIDI (``takes_midi``: the panel's on-screen keyboard plays it)."""
        info = self.info
        adaptation = self.adaptation or _layout(len(info.main_inputs), len(info.main_outputs))  # before prepare
        return {"uri": self.uri, "plugin_name": self.info.name, "hard_rt": self.hard_rt, "adaptation": adaptation,
                "has_state": lv2_host.STATE_INTERFACE in self.info.extension_data,
                "bad_output_samples": self.bad_output_samples, "instance_resets": self.instance_resets,
                "presets": self.value_presets(), "takes_midi": bool(info.midi_in)}

    @property
    def instances(self) -> list:
        """The plugin instances (two for dual-mono), ``realtime.io.lv2_host.Instance``."""
        return list(self._instances)

    def run_only(self, n: int) -> None:
        """Only the plugins' own ``run()`` calls on the current buffers (the bench's baseline), in
        runs of at most ``lv2_host.MAX_RUN_FRAMES`` frames as ``process`` makes them."""
        self._ran = True
        for off in range(0, n, self._run_max):
            for run, handle, _, parked in self._runs:
                if not parked[0]:
                    run(handle, min(self._run_max, n - off))


class Lv2MidiPlugin(MidiQueue, Lv2Plugin):
    """An LV2 plugin with a MIDI input: the chain forwards its MIDI here (``handle_midi``). An
    effect (it has a signal-path audio input and is no ``lv2:InstrumentPlugin``) unless it is an
    ``Lv2Instrument``."""

    def panic(self) -> None:
        """All notes off (every channel) at the start of the next block."""
        for ch in range(16):
            self.handle_midi(0xB0 | ch, 123, 0, 0)
            self.handle_midi(0xB0 | ch, 120, 0, 0)


class Lv2Instrument(Lv2MidiPlugin):
    """An LV2 instrument: a MIDI input, and no signal-path audio input or the ``lv2:InstrumentPlugin``
    class (``PluginInfo.instrument``); what ``synth`` may play."""

    instrument = True


class _Rescuer:
    """One thread for the process that resets the instances live chains' DSP threads parked
    (``Lv2Plugin._blown_up``). Woken through a pipe: a non-blocking write is all the DSP thread does."""

    def __init__(self):
        self._lock = threading.Lock()  # enrol (prepare) against the thread's walk; never the DSP thread
        self._plugins: weakref.WeakSet = weakref.WeakSet()
        self._wake_fd = -1
        self._pid = 0  # a forked child has the pipe but not the thread: it starts its own

    def enrol(self, plugin: "Lv2Plugin") -> None:
        """Look after ``plugin`` (a live chain's, from ``prepare``); starts the thread the first time."""
        with self._lock:
            self._plugins.add(plugin)
            if self._pid != os.getpid():
                r, w = os.pipe()
                os.set_blocking(w, False)
                threading.Thread(target=self._loop, args=(r,), name="lv2-rescue", daemon=True).start()
                self._wake_fd, self._pid = w, os.getpid()

    def wake(self) -> None:
        """From the DSP thread: some instance is parked."""
        if self._wake_fd >= 0:
            try:
                os.write(self._wake_fd, b"r")
            except BlockingIOError:  # the pipe is full of wake-ups: the thread is awake anyway
                pass

    def _loop(self, wake: int) -> None:
        try:  # started from a real-time thread, it would inherit its policy; (de)activation is not real-time work
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except (AttributeError, OSError):
            pass
        while True:
            os.read(wake, 512)
            with self._lock:
                plugins = list(self._plugins)
            for plugin in plugins:
                plugin._revive_parked()


_rescuer = _Rescuer()


def _layout(ins: int, outs: int) -> str:
    """A plugin's own channel layout in words (what the UI says before the chain's channels are known)."""
    if ins == 0:
        return "instrument"
    names = {1: "mono", 2: "stereo"}
    return f"{names.get(ins, ins)} in / {names.get(outs, outs)} out plugin"


def plugin_classes_loaded() -> dict[str, type]:
    """The per-URI classes made so far (for tests and UIs)."""
    return dict(_classes)


__all__ = ["Lv2Instrument", "Lv2MidiPlugin", "Lv2Plugin", "plugin_class"]
