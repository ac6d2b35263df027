"""What the streaming neural effects (enhancer, de-limiter) share: one model, opened the same way.

A subclass names its default model, the inputs the model must have and the environment variable
that picks its provider; ``NeuralProcessor`` opens the ``StatefulSession``, says which provider it
got, and counts the non-finite input values its scrub replaced.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from realtime.dsp.processor import Processor
from realtime.dsp.processors.neural.onnx import StatefulSession


class NeuralProcessor(Processor):
    """Base class of a processor that runs one ONNX model with explicit streaming state.

    Parameters
    ----------
    model_path : str or Path, optional
        The ``.onnx`` model (default: the class's ``default_model``, the committed one).
    provider : str, optional
        ONNX Runtime provider: auto/cpu/cuda/tensorrt (default: ``$<provider_env>`` or auto).
    threads : int
        ONNX Runtime intra-op threads for this stream.
    **values
        Initial parameter values by id.

    Raises
    ------
    ModelError
        The model is missing (the message says how to train it), corrupt, or has other inputs.
    ParamError
        A value in ``values`` is unknown or out of range.

    Attributes
    ----------
    session : StatefulSession
        The model.
    provider : str
        The execution provider it runs on, e.g. ``"CPUExecutionProvider"``.
    threads : int
        Its intra-op thread count.
    """

    default_model: ClassVar[Path]
    model_inputs: ClassVar[tuple[str, ...]]
    provider_env: ClassVar[str]

    def __init__(self, model_path=None, provider: str | None = None, threads: int = 1, **values):
        super().__init__(**values)
        self.model_path = Path(model_path) if model_path else self.default_model
        provider = provider or os.environ.get(self.provider_env, "auto")
        self.session = StatefulSession(self.model_path, self.kind, inputs=self.model_inputs, provider=provider,
                                       threads=threads, train_hint=f"python main.py train {self.kind}")
        self.provider = self.session.provider
        self.threads = int(threads)
        self._counts = np.zeros(2, np.int64)  # input values [non-finite, clamped] (blocking.HopInput)

    @property
    def nonfinite_count(self) -> int:
        """Input values (samples x channels) that were NaN/Inf and went in as 0."""
        return int(self._counts[0])

    @property
    def latency_ms(self) -> float:
        """``latency`` in milliseconds at the prepared rate (0 before ``prepare``)."""
        return 1000.0 * self.latency / self.sample_rate if self.sample_rate else 0.0
