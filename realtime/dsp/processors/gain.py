"""Gain: one smoothed multiplier.

The one-pole smoother runs on the linear gain, so the per-sample change of the gain envelope is
at most ``c * |g_target - g|`` (c = 1 - exp(-1/(20 ms * fs)) ~= 1e-3 at 48 kHz): a -60 -> +12 dB
jump moves by < 0.005 per sample, far below an audible click.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.processor import Param, Processor
from realtime.dsp.processors import register


@njit(nogil=True, cache=True)
def _gain_kernel(block, values, state, coeff):
    target = 10.0 ** (values[0] / 20.0)
    g = state[0]
    c = coeff[0]
    if g == target:  # settled: plain multiply
        for n in range(block.shape[0]):
            for ch in range(block.shape[1]):
                block[n, ch] = block[n, ch] * g
        return
    for n in range(block.shape[0]):
        g += c * (target - g)
        if abs(target - g) <= 1e-7 * target:  # snap (per sample: block-size independent)
            g = target
        for ch in range(block.shape[1]):
            block[n, ch] = block[n, ch] * g
    state[0] = g


@register
class Gain(Processor):
    kind = "gain"
    params = (Param("gain_db", "Gain", -60.0, 24.0, 0.0, unit="dB", smoothing_ms=20.0),)

    def _prepare(self) -> None:
        self._state = np.zeros(1, np.float64)  # current (smoothed) linear gain
        self._coeff = np.array([self.params[0].smoothing_coeff(self.sample_rate)])

    def reset(self) -> None:
        self._state[0] = math.pow(10.0, self.values[0] / 20.0)

    def process(self, block: np.ndarray) -> None:
        _gain_kernel(block, self.values, self._state, self._coeff)
