"""The processor ("plugin") interface and its parameter descriptors.

One source of truth: the GUI, presets, MIDI-CC mapping and the command line all read
``Processor.params``. Allocation happens in ``prepare``; ``process`` works in place on a
float32 block of shape (frames, channels) and must not allocate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from realtime.errors import ConfigError, ParamError


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so that an error about it stays one line (an int
    of thousands of digits, which Python refuses to write out, by its size)."""
    if isinstance(value, int) and abs(value) >= 10 ** 60:
        return f"an integer of {int(value.bit_length() * 0.30103) + 1} digits"
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + "..."


@dataclass(frozen=True)
class Param:
    """Descriptor of one processor parameter: the GUI knob, preset field, ``--set`` key and
    MIDI-CC target are all generated from it.

    Parameters
    ----------
    id : str
        Key in presets and ``--set slot.id=value``.
    name : str
        Label shown in the GUI.
    min, max, default : float
        Range and initial value.
    unit : str
        Unit shown after the value (``"dB"``, ``"ms"``...).
    scale : str
        Knob taper: ``"lin"`` or ``"log"`` (log needs ``min > 0``).
    smoothing_ms : float
        One-pole time constant the audio path smooths changes with (0: applied at once).
    choices : tuple of str
        For enumerations: the value is an index into ``choices``, which presets may name.
    step : float
        0 for continuous values; 1 for integer, boolean and choice parameters.
    """

    id: str
    name: str
    min: float
    max: float
    default: float
    unit: str = ""
    scale: str = "lin"  # "lin" or "log" (GUI knob taper; log needs min > 0)
    smoothing_ms: float = 20.0  # one-pole time constant applied in the audio path
    choices: tuple[str, ...] = ()  # for enumerations: value is an index into choices
    step: float = 0.0  # 0 = continuous; 1 for integer/boolean/choice params

    def validate(self, value, where: str = "") -> float:
        """Check and normalise a value from a preset, the command line or a caller.

        Parameters
        ----------
        value : float, int, bool or str
            A number, a numeric string, or one of ``choices`` by name.
        where : str
            Prefix for the message (e.g. ``"limiter."``).

        Returns
        -------
        float
            The value (a choice as its index), rounded to ``step`` when there is one.

        Raises
        ------
        ParamError
            Not a number, not finite, outside [min, max], or not one of ``choices``; the
            message names the parameter.
        """
        label = f"{where}{self.id}"
        if self.choices and isinstance(value, str):
            if value not in self.choices:
                raise ParamError(f"{label}: {value!r} is not one of {list(self.choices)}")
            return float(self.choices.index(value))
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ParamError(f"{label}: {value!r} is not a number") from None
        try:
            value = float(value)
        except OverflowError:  # an int of hundreds of digits
            raise ParamError(f"{label}: {short_repr(value)} is outside [{self.min:g}, {self.max:g}]") from None
        if not math.isfinite(value):
            raise ParamError(f"{label}: {value} is not finite")
        if value < self.min or value > self.max:
            # (enough digits that a value just past a limit does not read as the limit itself)
            raise ParamError(f"{label}: {value:.12g} is outside [{self.min:g}, {self.max:g}] {self.unit}".rstrip())
        if self.step:
            value = self.min + round((value - self.min) / self.step) * self.step
        return value

    @property
    def toggle(self) -> bool:
        """Whether this is a two-state switch: exactly the choices "off" and "on" (any case; an LV2
        toggled port, the de-limiter's switches), which presets and ``--set`` may also give as
        true/false."""
        return len(self.choices) == 2 and tuple(c.casefold() for c in self.choices) == ("off", "on")

    def choice_of(self, value, where: str = "") -> int:
        """The choice a number in a preset or ``--set`` names (an enumeration's): its index here; a
        hosted plugin's enumeration whose own values are not 0, 1, 2... names it by that value
        (``realtime.dsp.processors.lv2._ScalePoints``), as its documentation shows it. A switch
        (``toggle``) also takes true/false: false the first choice ("off"), true the second.

        Raises
        ------
        ParamError
            Not one of the choices; the message names the parameter.
        """
        if isinstance(value, bool) and self.toggle:
            return int(value)
        # (an int is compared as it is: one of hundreds of digits overflows a float)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < len(self.choices) \
                and value == int(value):
            return int(value)
        raise ParamError(f"{where}{self.id}: {short_repr(value)} is not one of {list(self.choices)}")

    def smoothing_coeff(self, sample_rate: float) -> float:
        """Per-sample one-pole coefficient ``c`` of ``y += c * (target - y)``.

        Parameters
        ----------
        sample_rate : float
            Rate the smoother runs at (Hz).

        Returns
        -------
        float
            In (0, 1]; 1 (no smoothing) when ``smoothing_ms`` is 0.
        """
        if self.smoothing_ms <= 0:
            return 1.0
        return 1.0 - math.exp(-1.0 / (self.smoothing_ms * 1e-3 * sample_rate))

    def to_unit(self, value: float) -> float:
        """Position of ``value`` along the knob taper.

        Returns
        -------
        float
            0 at ``min``, 1 at ``max`` (linear or logarithmic per ``scale``).
        """
        if self.scale == "log":
            return math.log(value / self.min) / math.log(self.max / self.min)
        return (value - self.min) / (self.max - self.min)

    def from_unit(self, u: float) -> float:
        """The value at knob position ``u`` (clamped to 0..1), validated and rounded to ``step``.

        Returns
        -------
        float
            A value within [min, max].
        """
        u = min(1.0, max(0.0, u))
        if self.scale == "log":
            v = self.min * (self.max / self.min) ** u
        else:
            v = self.min + u * (self.max - self.min)
        return self.validate(min(self.max, max(self.min, v)))

    def format(self, value: float) -> str:
        """Display text: the choice's name, or a short number with the unit (``"1.20 kHz"``,
        ``"1.50 s"``, ``"1.20k"`` for units without a larger one), never in exponent notation."""
        if self.choices:
            return self.choices[int(round(value))]
        if self.step < 1:
            if self.scale != "log" and abs(value) < (self.max - self.min) * 1e-9:
                value = 0.0  # float noise at 0 (a preset's 1e-15, a sum of steps) read "0.000000000000001 dB"
            value = float(f"{value:.3g}")  # rounded first: 999.8 reads "1.00 kHz", not "1e+03 Hz"
        if abs(value) >= 1000:
            return _in_thousands(f"{value / 1000:.2f}", self.unit)
        if self.step >= 1:
            txt = f"{value:.0f}"
        else:
            txt = f"{value:.3g}"
            if "e" in txt:  # under 0.001: as many decimals as three significant digits need
                txt = f"{value:.{2 - math.floor(math.log10(abs(value)))}f}"
        return f"{txt} {self.unit}".strip()


LARGER_UNITS = {"Hz": "kHz", "ms": "s"}  # what a thousand of a unit reads as


def _in_thousands(txt: str, unit: str) -> str:
    """``txt``, a number of thousands, with its unit: "1.20 kHz", "1.50 s", "1.20k" (no larger unit)."""
    bigger = LARGER_UNITS.get(unit)
    return f"{txt} {bigger}" if bigger else f"{txt}k {unit}".strip()


READOUT_KINDS = ("level", "gr", "number", "text")


@dataclass(frozen=True)
class Readout:
    """Descriptor of one read-only value a processor reports each block (a meter, a count).

    The panel draws one widget per descriptor, as it draws one knob per ``Param``.

    Parameters
    ----------
    id : str
        Unique within the processor.
    name : str
        Label shown in the GUI.
    unit : str
        Unit shown after the value (``"dB"``, ``"%"``...).
    min, max : float
        Range of the bar (``level``, ``gr``) or the expected range of a number.
    kind : str
        ``"level"``: a bar growing upward (the GUI shows the highest value since its last
        redraw and holds peaks); ``"gr"``: a gain-reduction bar in dB (<= 0) growing downward
        from 0 (the GUI shows the deepest value); ``"number"``: the latest value with its unit;
        ``"text"``: the latest value as an index into ``choices``.
    choices : tuple of str
        For ``text``: the names the value indexes.
    """

    id: str
    name: str
    unit: str = ""
    min: float = -60.0
    max: float = 0.0
    kind: str = "number"
    choices: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in READOUT_KINDS:
            raise ValueError(f"readout {self.id}: kind {self.kind!r} is not one of {READOUT_KINDS}")

    def format(self, value: float) -> str:
        """Display text: the choice's name, or a short number with the unit."""
        if self.kind == "text" and self.choices:
            i = int(round(value)) if math.isfinite(value) else -1
            return self.choices[i] if 0 <= i < len(self.choices) else "-"
        if not math.isfinite(value):
            return "-"
        if self.kind in ("level", "gr") and value <= -120.0:
            return f"-inf {self.unit}".strip()
        if abs(value) >= 1000:  # as a knob reads it, so a meter's 44 px hold it: "192 kHz", not "192000 Hz"
            v = value / 1000
            return _in_thousands(f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}", self.unit)
        txt = f"{value:.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.1f}"
        return f"{txt} {self.unit}".strip()


class LookaheadLatency:
    """Mixin for a processor whose latency is a look-ahead knob (ms): ``_size_lookahead`` (in
    ``_prepare``) sets the largest one, which buffers and the chain's dry-path delay
    (``max_latency``) are sized for, so a change never reallocates; ``_set_lookahead`` (in
    ``reset``) the current one. A knob turned while streaming takes effect at the next block:
    ``process`` asks ``_lookahead_moved`` and moves to the new delay keeping its delay line,
    crossfading from the old delay's output (the limiter, the de-clipper: a reset there dropped a
    look-ahead's worth of audio and clicked); the chain reads the new latency for its dry path at once."""

    _L = 0
    _Lmax = 0

    @property
    def latency(self) -> int:
        return self._L

    @property
    def max_latency(self) -> int:
        return self._Lmax

    def _size_lookahead(self, max_ms: float) -> int:
        self._Lmax = int(math.ceil(max_ms * 1e-3 * self.sample_rate))
        return self._Lmax

    def _lookahead_samples(self, ms: float) -> int:
        return min(self._Lmax, int(round(ms * 1e-3 * self.sample_rate)))

    def _set_lookahead(self, ms: float) -> int:
        self._L = self._lookahead_samples(ms)
        return self._L

    def _lookahead_moved(self, ms: float) -> bool:
        return self._lookahead_samples(ms) != self._L


class Processor:
    """Base class of every processor ("plugin") in a chain.

    Subclasses set ``kind`` (the registry name) and ``params`` and implement ``_prepare``
    (allocate), ``process`` (in place, no allocation) and, when they keep state, ``reset``;
    a processor with a delay reports it in ``latency``. A processor that reports values declares
    ``readouts`` and writes them into ``readings`` from ``process`` (flat index i is readout i).

    Parameters
    ----------
    **values
        Initial parameter values by id (see ``set_param``).

    Raises
    ------
    ParamError
        An unknown id or an invalid value in ``values``.

    Attributes
    ----------
    values : ndarray
        float64, one entry per parameter in ``params`` order: the targets the audio kernels
        smooth toward. ``set_param`` only writes this array, so it is safe to call between
        blocks from the DSP thread.
    sample_rate : float
        Set by ``prepare`` (0 before).
    max_block, channels : int
        Set by ``prepare`` (0 before).
    readings : ndarray
        float32, ``readouts``' values (flat, in order; a subclass may shape it, e.g. (channels,
        n)); allocated by ``prepare`` unless ``_prepare`` did. A chain rebinds it to a view of
        its own readout record (``bind_readings``), so the DSP thread never copies it.
    """

    kind: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    # rates the processor runs at as it is (None: any); files at other rates are processed at
    # 48 kHz (realtime/run/offline.py, chain_rate)
    native_rates: ClassVar[tuple[int, ...] | None] = None
    # the rates it can run at at all (None: any); ``prepare`` refuses others, a batch before any work
    rate_range: ClassVar[tuple[float, float] | None] = None
    # every block ``process`` is given is a multiple of this many frames (a hosted plugin that
    # corrupts other runs: ``lv2_scan.BLOCK_MULTIPLE``); the chain's blocks keep to it
    block_multiple: ClassVar[int] = 1
    readouts: tuple[Readout, ...] = ()  # a class constant, or per instance (an LV2 plugin's output ports)
    # set before ``prepare`` by a live engine's chain (``Chain.prepare(live=True)``): a processor
    # may then do slow, non-real-time work beside the DSP thread (an LV2 plugin's worker) where
    # offline it does it in line, so that renders repeat exactly
    live: bool = False

    def __init__(self, /, **values):  # (a hosted plugin may have a port named "self")
        self.values = np.array([p.default for p in self.params], dtype=np.float64)
        self.sample_rate = 0.0
        self.max_block = 0
        self.channels = 0
        for k, v in values.items():
            self.set_param(k, v)

    # -- parameters -------------------------------------------------------------------------
    @classmethod
    def param_index(cls, param_id: str) -> int:
        """Index of ``param_id`` in ``params`` (and ``values``).

        Raises
        ------
        ParamError
            No parameter has that id; the message lists the known ones.
        """
        for i, p in enumerate(cls.params):
            if p.id == param_id:
                return i
        raise ParamError(f"{cls.kind}: unknown parameter {param_id!r}; known: {[p.id for p in cls.params]}")

    def set_param(self, param, value) -> None:
        """Set a parameter's target value (the audio path smooths toward it).

        Parameters
        ----------
        param : str or int
            Parameter id, or index into ``params``.
        value : float, int, bool or str
            Anything ``Param.validate`` accepts.

        Raises
        ------
        ParamError
            Unknown id or invalid value.
        """
        i = param if isinstance(param, int) else self.param_index(param)
        self.values[i] = self.params[i].validate(value, where=f"{self.kind}.")

    def get_param(self, param) -> float:
        """Current target value of a parameter (by id or index).

        Raises
        ------
        ParamError
            Unknown id.
        """
        i = param if isinstance(param, int) else self.param_index(param)
        return float(self.values[i])

    def param_dict(self) -> dict[str, float]:
        """All target values by parameter id (what a preset stores)."""
        return {p.id: float(v) for p, v in zip(self.params, self.values)}

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def latency(self) -> int:
        """Algorithmic latency in samples at the prepared rate (the chain delays its dry paths by
        it); 0 unless a subclass says otherwise."""
        return 0

    @property
    def max_latency(self) -> int:
        """Largest latency this processor can report at the prepared rate (sizes the chain's
        dry-path delay lines, so a latency change on ``reset`` never needs a reallocation)."""
        return self.latency

    def prepare(self, sample_rate: float, max_block: int, channels: int) -> None:
        """Allocate for a stream, then ``reset``: the only place a processor may allocate.

        Parameters
        ----------
        sample_rate : float
            Hz.
        max_block : int
            Largest block ``process`` will get (frames).
        channels : int
            1 or 2.

        Raises
        ------
        ValueError
            Other channel counts, or a configuration the subclass cannot run (e.g. a sample
            rate its model was not trained for).
        ModelError
            A neural processor's model cannot be loaded.
        """
        if channels not in (1, 2):
            raise ConfigError(f"{self.kind}: {channels} channels not supported (mono or stereo)")
        self.sample_rate = float(sample_rate)
        self.max_block = int(max_block)
        self.channels = int(channels)
        self.readings = np.zeros(len(self.readouts), np.float32)  # _prepare may shape it (same size)
        self._prepare()
        if self.readings.size != len(self.readouts):
            raise ConfigError(f"{self.kind}: {self.readings.size} readings for {len(self.readouts)} readouts")
        self.reset()

    def bind_readings(self, view: np.ndarray) -> None:
        """Write the readouts into ``view`` from now on (float32, ``len(readouts)`` values: a slice of
        the chain's readout record). Called between blocks, after ``prepare``; keeps the values."""
        view[:] = self.readings.reshape(-1)
        self.readings = view.reshape(self.readings.shape)

    def _prepare(self) -> None:
        """Allocate buffers for (sample_rate, max_block, channels)."""

    def reset(self) -> None:
        """Clear internal state (delay lines, filter memories) and jump smoothers to their targets,
        as at the start of a stream; allocates nothing."""

    def close(self) -> None:
        """Give back what outlives the Python object's references (threads, native instances)
        when a host drops the processor; ``prepare`` makes it usable again. Nothing by default."""

    def process(self, block: np.ndarray) -> None:
        """Process one block in place; must not allocate, lock or wait.

        Parameters
        ----------
        block : ndarray
            float32, (frames, channels) with frames <= ``max_block`` and the prepared channels.
        """
        raise NotImplementedError


def _midi_rank(status, data1, data2) -> int:
    """What a full MIDI queue keeps first: 2 = a note-off or a message that ends notes (sustain
    pedal, channel mode messages: all notes off...), 1 = a note-on or a program change, 0 = the
    rest (controllers, pitch bend, pressure, bytes that are not channel messages), which a later
    message of the same kind supersedes."""
    if not 0x80 <= status < 0xF0:  # NaN too
        return 0
    typ = int(status) & 0xF0
    if typ == 0x80 or (typ == 0x90 and not data2 >= 1):
        return 2
    if typ == 0x90 or typ == 0xC0:
        return 1
    if typ == 0xB0 and (data1 == 64 or data1 >= 120):
        return 2
    return 0


class MidiQueue:
    """Mixin for processors that take MIDI: ``handle_midi`` queues each message for the next block.

    The subclass preallocates ``self._ev`` ((max events, 4) C-contiguous float64 rows of offset,
    status, data1, data2) and sets ``self._n_ev = 0`` and ``self.dropped_events = 0``; its
    ``process`` consumes ``self._ev[:self._n_ev]`` and sets ``self._n_ev = 0``. Messages beyond the
    capacity are counted in ``dropped_events``, never allocated for; a full queue drops controllers
    and pitch bend first, then note-ons, so that a note-off is never lost to a controller burst.
    """

    def handle_midi(self, status, data1=0, data2=0, offset=0) -> None:
        """Queue one MIDI message for the next block (call between blocks).

        Parameters
        ----------
        status, data1, data2 : int
            The message's bytes.
        offset : int
            Sample within the next block at which it takes effect.
        """
        ev = self._ev
        n = self._n_ev
        rank = _midi_rank(status, data1, data2)
        # how many queued messages hold each rank: a full queue knows at once whether anything can make
        # room (a flood of 100k pitch bends at one tick scanned the whole queue for each one: 86 s to
        # render 1.3 s). The subclass empties the queue by setting _n_ev = 0: the counts start again then
        held = getattr(self, "_ranks_held", None)
        if held is None:
            held = self._ranks_held = [0, 0, 0]
        if n == 0:
            held[0] = held[1] = held[2] = 0
        if n >= ev.shape[0]:
            self.dropped_events += 1
            # full: the message takes the place of the oldest one of lower rank, if any (a note-off
            # that of a controller, else of a note-on: a note never begun needs no end)
            victim_rank = 0 if held[0] else 1 if held[1] else 2
            if victim_rank >= rank:
                return
            victim = 0
            while victim < n and _midi_rank(ev[victim, 1], ev[victim, 2], ev[victim, 3]) != victim_rank:
                victim += 1
            if victim == n:  # the counts went stale (the queue changed another way): counted afresh, then again
                held[0] = held[1] = held[2] = 0
                for i in range(n):
                    held[_midi_rank(ev[i, 1], ev[i, 2], ev[i, 3])] += 1
                self.dropped_events -= 1
                return self.handle_midi(status, data1, data2, offset)
            # the later messages move down one row, in order (equal offsets apply in queue order);
            # 1-D and moving down, numpy copies the overlap in place, with no temporary
            flat = ev.reshape(-1)
            flat[4 * victim: 4 * (n - 1)] = flat[4 * (victim + 1): 4 * n]
            held[victim_rank] -= 1
            n -= 1
        e = ev[n]
        e[0], e[1], e[2], e[3] = offset, status, data1, data2
        held[rank] += 1
        self._n_ev = n + 1


def dropped_midi_events(chain) -> int:
    """MIDI messages the processors of ``chain`` (a Chain, or anything with ``slots``) have dropped
    from full queues since they were made."""
    total = 0
    for s in getattr(chain, "slots", ()):
        p = s.processor
        total += int(getattr(p, "dropped_events", 0))
        for song in getattr(p, "songs", ()):  # a batched synth's songs queue their own MIDI
            total += int(getattr(song, "dropped_events", 0))
    return total


def junk_samples(chain) -> dict[str, int]:
    """Per hosted plugin's slot of ``chain``, how many output samples it has had replaced by silence so
    far (junk: NaN/Inf or absurd levels; ``bad_output_samples``, counted since the plugin was built)."""
    return {s.id: int(s.processor.bad_output_samples) for s in getattr(chain, "slots", ())
            if hasattr(s.processor, "bad_output_samples")}
