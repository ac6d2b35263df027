"""Pass-through level meter: per-channel peak (instant attack, dB-linear fall) and RMS
(exponential mean square, ~300 ms), plus a latching clip indicator.

After every block ``readings[ch] = (peak_db, rms_db, clip)`` (float32, always two rows: a mono
stream leaves the right one at the floor; clip is 1.0 once any sample reached 0 dBFS, until
``clear_clip()``, ``reset()`` or a change of ``_clear_clip``) and ``clip_count[ch]`` counts the
samples at or above full scale. The DSP thread can copy ``readings`` straight into a meter ring.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.processor import Param, Processor, Readout
from realtime.dsp.processors import register

PEAK, RMS, CLIP = 0, 1, 2
CLEAR = 2  # values index of "_clear_clip"
FLOOR_DB = -120.0
OVER_MAX = 4.0  # +12 dBFS: the largest level the envelopes take in


@njit(nogil=True, cache=True)
def _meter_kernel(block, values, env, readings, clip_count, sample_rate):
    a = 1.0 - math.exp(-1.0 / (values[0] * 1e-3 * sample_rate))  # mean-square one-pole
    fall = 10.0 ** (-values[1] / (20.0 * sample_rate))  # peak decay factor per sample
    floor = 10.0 ** (FLOOR_DB / 20.0)
    for ch in range(block.shape[1]):
        pk = env[ch, 0]
        ms = env[ch, 1]
        clips = 0
        top = 0.0  # the envelope's highest point in the block: its end had fallen by the block's length
        for n in range(block.shape[0]):
            x = np.float64(block[n, ch])
            ax = abs(x)
            if not ax < 1.0:  # also counts NaN/Inf as clipping
                clips += 1
                if ax != ax:
                    ax = 1.0
                elif ax > OVER_MAX:  # Inf or 1e30: bounded, or the readings stay broken (inf - inf
                    ax = OVER_MAX  # is NaN for good; a 1e30 sample read +576 dB and took 48 s to fall)
            pk *= fall
            if ax > pk:
                pk = ax
            if pk > top:
                top = pk
            ms += a * (ax * ax - ms)
        # flush (silence would otherwise decay into denormals)
        if pk < 1e-30:
            pk = 0.0
        if ms < 1e-30:
            ms = 0.0
        env[ch, 0] = pk
        env[ch, 1] = ms
        clip_count[ch] += clips
        readings[ch, PEAK] = 20.0 * math.log10(max(top, floor))
        readings[ch, RMS] = 10.0 * math.log10(max(ms, floor * floor))
        if clips > 0:
            readings[ch, CLIP] = 1.0


@register
class Meter(Processor):
    kind = "meter"
    params = (
        Param("rms_window_ms", "RMS window", 10.0, 3000.0, 300.0, unit="ms", scale="log", smoothing_ms=0.0),
        Param("peak_fall_db_s", "Peak fall", 1.0, 120.0, 12.0, unit="dB/s", scale="log", smoothing_ms=0.0),
        # a command, not a setting: any change of its value clears the clip latch (the panel counts it
        # up through the control ring when a clip readout is clicked: two clicks within a block still
        # change it; "_": no knob). Its value means nothing: a preset holding any changes nothing.
        Param("_clear_clip", "Clear clip", 0.0, 255.0, 0.0, step=1.0, smoothing_ms=0.0),
    )
    readouts = tuple(r for side in ("L", "R") for r in (
        Readout(f"peak_{side.lower()}", f"Peak {side}", "dB", -60.0, 0.0, kind="level"),
        Readout(f"rms_{side.lower()}", f"RMS {side}", "dB", -60.0, 0.0, kind="level"),
        Readout(f"clip_{side.lower()}", f"Clip {side}", kind="text", choices=("ok", "CLIP"))))

    def _prepare(self) -> None:
        self._env = np.zeros((self.channels, 2), np.float64)  # peak envelope, mean square
        self.readings = np.full((2, 3), FLOOR_DB, np.float32)  # the readouts' layout, mono or stereo
        self.clip_count = np.zeros(self.channels, np.int64)

    def reset(self) -> None:
        self._cleared = self.values[CLEAR]
        self._env.fill(0.0)
        self.readings[:, :2] = FLOOR_DB
        self.clear_clip()

    def clear_clip(self) -> None:
        self.readings[:, CLIP] = 0.0
        self.clip_count.fill(0)

    def process(self, block: np.ndarray) -> None:
        if self.values[CLEAR] != self._cleared:  # "_clear_clip" moved: clear the latch now
            self._cleared = self.values[CLEAR]
            self.clear_clip()
        _meter_kernel(block, self.values, self._env, self.readings, self.clip_count, self.sample_rate)
