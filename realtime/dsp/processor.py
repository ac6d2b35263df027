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

from realtime.errors import ParamError


@dataclass(frozen=True)
class Param:
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
        """Return value as float, or raise ParamError naming the parameter."""
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
        value = float(value)
        if not math.isfinite(value):
            raise ParamError(f"{label}: {value} is not finite")
        if value < self.min or value > self.max:
            raise ParamError(f"{label}: {value:g} is outside [{self.min:g}, {self.max:g}] {self.unit}".rstrip())
        if self.step:
            value = self.min + round((value - self.min) / self.step) * self.step
        return value

    def smoothing_coeff(self, sample_rate: float) -> float:
        """Per-sample one-pole coefficient: y += c * (target - y)."""
        if self.smoothing_ms <= 0:
            return 1.0
        return 1.0 - math.exp(-1.0 / (self.smoothing_ms * 1e-3 * sample_rate))

    def to_unit(self, value: float) -> float:
        """Map a value to 0..1 along the knob taper."""
        if self.scale == "log":
            return math.log(value / self.min) / math.log(self.max / self.min)
        return (value - self.min) / (self.max - self.min)

    def from_unit(self, u: float) -> float:
        u = min(1.0, max(0.0, u))
        if self.scale == "log":
            v = self.min * (self.max / self.min) ** u
        else:
            v = self.min + u * (self.max - self.min)
        return self.validate(min(self.max, max(self.min, v)))

    def format(self, value: float) -> str:
        if self.choices:
            return self.choices[int(round(value))]
        if abs(value) >= 1000:
            txt = f"{value / 1000:.2f}k"
        elif self.step >= 1:
            txt = f"{value:.0f}"
        else:
            txt = f"{value:.3g}"
        return f"{txt} {self.unit}".strip()


class Processor:
    """Base class. Subclasses set ``kind`` and ``params`` and implement ``_prepare``/``process``.

    ``self.values`` (float64, one entry per param, in ``params`` order) holds the targets the
    audio kernels smooth toward; ``set_param`` only writes this array, so it is safe to call
    between blocks from the DSP thread.
    """

    kind: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **values):
        self.values = np.array([p.default for p in self.params], dtype=np.float64)
        self.sample_rate = 0.0
        self.max_block = 0
        self.channels = 0
        for k, v in values.items():
            self.set_param(k, v)

    # -- parameters -------------------------------------------------------------------------
    @classmethod
    def param_index(cls, param_id: str) -> int:
        for i, p in enumerate(cls.params):
            if p.id == param_id:
                return i
        raise ParamError(f"{cls.kind}: unknown parameter {param_id!r}; known: {[p.id for p in cls.params]}")

    def set_param(self, param, value) -> None:
        i = param if isinstance(param, int) else self.param_index(param)
        self.values[i] = self.params[i].validate(value, where=f"{self.kind}.")

    def get_param(self, param) -> float:
        i = param if isinstance(param, int) else self.param_index(param)
        return float(self.values[i])

    def param_dict(self) -> dict[str, float]:
        return {p.id: float(v) for p, v in zip(self.params, self.values)}

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def latency(self) -> int:
        """Algorithmic latency in samples at the prepared rate."""
        return 0

    @property
    def max_latency(self) -> int:
        """Largest latency this processor can report at the prepared rate (sizes the chain's
        dry-path delay lines, so a latency change on ``reset`` never needs a reallocation)."""
        return self.latency

    def prepare(self, sample_rate: float, max_block: int, channels: int) -> None:
        if channels not in (1, 2):
            raise ValueError(f"{self.kind}: {channels} channels not supported (mono or stereo)")
        self.sample_rate = float(sample_rate)
        self.max_block = int(max_block)
        self.channels = int(channels)
        self._prepare()
        self.reset()

    def _prepare(self) -> None:
        """Allocate buffers for (sample_rate, max_block, channels)."""

    def reset(self) -> None:
        """Clear internal state (delay lines, filter memories), jump smoothers to targets."""

    def process(self, block: np.ndarray) -> None:
        """Process a float32 (frames, channels) block in place; frames <= max_block."""
        raise NotImplementedError
