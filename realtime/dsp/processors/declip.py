"""De-clipper as a processor of its own: clipped runs filled in from the waveform around them.

The de-limiter runs the same de-clipper (realtime/dsp/declip.py) inside its network's look-ahead;
this slot brings it to any chain (a clipped recording, a clipped drum bus) at the cost of its
look-ahead in latency. ``lookahead_ms`` sets how long a run can be filled (the look-ahead minus
``declip.POST`` samples; at least ``MIN_FILL`` samples, so at low rates the latency can be a few
ms above the knob); the buffers are sized for the maximum. A change while streaming takes effect
at the next block, as the limiter's: the delay line keeps its samples and the output crossfades
from the old delay to the new one over ``FADE_MS`` (``Declipper.move_delay``; the reported latency
is the new one at once, as the chain's dry path reads it). Clearing the buffer instead dropped a
look-ahead's worth of audio into silence and clicked (a 0.24 jump on a 0.5 sine whose steps are
0.014). A further change waits for the crossfade to end. Readout: the largest filled peak of the
block over its clip level (dB).
"""
from __future__ import annotations

import numpy as np

from realtime.dsp.blocking import check_block
from realtime.dsp.declip import IN_CLIP, POST, Declipper
from realtime.dsp.kernels import scrub_into
from realtime.dsp.processor import LookaheadLatency, Param, Processor, Readout
from realtime.dsp.processors import register

MAX_LOOKAHEAD_MS = 20.0
MIN_FILL = 8  # samples: the shortest look-ahead beyond POST (runs up to this long can be filled)
FADE_MS = 10.0  # a look-ahead change crossfades from the old delay to the new one over this (as the chain's bypass)


@register
class Declip(LookaheadLatency, Processor):
    """Streaming de-clipper (module docstring); latency = the look-ahead in samples."""

    kind = "declip"
    params = (
        Param("lookahead_ms", "Look-ahead", 1.0, MAX_LOOKAHEAD_MS, 10.0, unit="ms", smoothing_ms=0.0),
    )
    readouts = (Readout("restored_db", "Restored", "dB", 0.0, 24.0, kind="level"),)

    def _prepare(self) -> None:
        most = self._size_lookahead(MAX_LOOKAHEAD_MS)
        self._dcl = Declipper(most, self.max_block, self.sample_rate, max_delay=most, channels=self.channels)
        self.readings = np.zeros(1, np.float32)
        self._counts = np.zeros(2, np.int64)  # non-finite, clamped samples (scrub_into's tallies)
        self._fade_len = max(1, int(round(FADE_MS * 1e-3 * self.sample_rate)))

    def _lookahead_samples(self, ms: float) -> int:
        # at least the fit's POST samples plus a short run: at 8-32 kHz 1 ms was all POST, so the
        # slot delayed the audio and filled nothing
        return min(self._Lmax, max(super()._lookahead_samples(ms), POST + MIN_FILL))

    def reset(self) -> None:
        self._dcl.reset(self._set_lookahead(self.values[0]))
        self.readings.fill(0.0)

    def process(self, block: np.ndarray) -> None:
        check_block(block.shape[0], self.max_block)  # its ring holds max_block more: past it, garbage out
        if self._lookahead_moved(self.values[0]) and not self._dcl.moving:
            self._dcl.move_delay(self._set_lookahead(self.values[0]), self._fade_len)
        n = block.shape[0]
        # as the de-limiter does: one absurd sample (1e30) would lift the peak hold so high that no
        # clipped run counts as a peak for minutes (at +12 dBFS it is ~10 s); NaN/Inf become 0
        scrub_into(block, n, block, 0, IN_CLIP, self._counts, 0, 1)
        self.readings[0] = self._dcl.push(block, 0, n)
        self._dcl.read(n, block)
