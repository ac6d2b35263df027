"""Many de-limiter streams per ONNX Runtime call: N independent streams, each with its own state.

``BatchedDelimiter`` is the de-limiter with its channels split into ``streams`` groups: a block of
shape (frames, streams * channels) holds stream ``s`` in columns ``s*channels : (s+1)*channels``.
The single de-limiter feeds its model one stereo-linked stream (batch 1, a mono stream as L = R);
here the N streams are the model's batch, so every chunk of hops of all streams is one call. What
stays per stream is what a single stream keeps for itself: its input history and output pre-fill,
its look-ahead skip, its smoothers (amount, trim, auto-level), its de-clipper and its rows of the
model state.

The state is read from the model, not assumed: every input other than ``frames`` is a state whose
next value is the output ``<name>_out``, and its batch axis is the axis named like the batch axis
of ``frames`` (else its one symbolic axis). The export being trained may add state tensors or
change their shapes without a change here.

Parameters (amount, trim, auto-level, ceiling) are shared by all streams, as they are by the files
of a batch; the readouts describe all streams together (the largest restored gain, the deepest
auto-level). The outputs equal N single-stream de-limiters fed the same blocks (to float rounding
of the bigger matrix products; the tests allow 1e-5). For offline work; the live engine runs the
single-stream ``Delimiter``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.blocking import FixedHop, check_block
from realtime.dsp.declip import Declipper
from realtime.dsp.kernels import scrub_into
from realtime.dsp.processors.neural.delimiter import (
    FRAMES,
    IN_CLIP,
    MAX_CALL_SAMPLES,
    N_FLOAT_STATE,
    Delimiter,
    _restore,
)


@njit(nogil=True, cache=True)
def _frames_n(x, start, T, hop, frames):
    """frames[s, t] = x[start + t*hop : start + (t+1)*hop, 2s : 2s+2] for every stream s."""
    for s in range(frames.shape[0]):
        for t in range(T):
            for i in range(hop):
                for ch in range(2):
                    frames[s, t, i, ch] = x[start + t * hop + i, 2 * s + ch]


@njit(nogil=True, cache=True)
def _restore_n(knots, T, skip, x, start, dry, hop, out, C, opos, values, fs, k, readings):
    """The single stream's restore, per stream: knots[s], skip[s], fs[s]; x and dry columns 2s:2s+2
    in, out columns s*C:(s+1)*C out; readings gather the largest gain and the deepest auto-level."""
    for s in range(knots.shape[0]):
        _restore(knots[s:s + 1], T, skip[s:s + 1], x[:, 2 * s:2 * s + 2], start, dry[:, 2 * s:2 * s + 2], hop,
                 out[:, s * C:(s + 1) * C], opos, values, fs[s], k, readings)


def batch_axis(shape: list, batch) -> int | None:
    """The axis of a state input's declared ``shape`` that carries the batch: the one named
    ``batch`` (the symbolic batch dimension of the data input), else the one symbolic axis;
    None when neither is there."""
    named = [i for i, d in enumerate(shape) if isinstance(batch, str) and d == batch]
    if len(named) == 1:
        return named[0]
    symbolic = [i for i, d in enumerate(shape) if not isinstance(d, int)]
    return symbolic[0] if len(symbolic) == 1 else None


class BatchedDelimiter(Delimiter):
    """``streams`` independent de-limiter streams through one model call per chunk of hops.

    Parameters
    ----------
    streams : int
        Number of streams (``prepare`` takes each one's channel count).
    model_path, provider, threads, **values
        As for ``Delimiter`` (values are shared by every stream).

    Raises
    ------
    ModelError
        As for ``Delimiter``; or the model lacks ``frames``/``knots``, or a state input has no
        batch axis that can be found.
    ValueError
        ``streams`` below 1.
    """

    def __init__(self, streams: int, model_path=None, provider: str | None = None, threads: int = 1, **values):
        super().__init__(model_path, provider, threads, **values)
        self.streams = int(streams)
        if self.streams < 1:
            raise ValueError(f"streams: {streams} (at least 1)")
        ses = self.session  # Delimiter checked: "frames" first, then the states (self.state_names)
        batch = ses.input_shape(FRAMES)[0]
        self.state_axes = {}  # state input -> its batch axis
        for name in self.state_names:
            axis = batch_axis(ses.input_shape(name), batch)
            if axis is None:
                raise ses.error(f"state input {name!r} {ses.input_shape(name)} has no batch axis "
                                f"(no axis named {batch!r}, not one symbolic axis)")
            self.state_axes[name] = axis

    def prepare(self, sample_rate: float, max_block: int, channels: int) -> None:
        """Allocate for ``streams`` streams of ``channels`` (1 or 2) each; ``process`` then takes
        blocks of (frames, streams * channels), stream ``s`` in columns ``s*channels : (s+1)*channels``.

        Raises
        ------
        ConfigError
            ``channels`` is not 1 or 2, or a sample rate the model was not trained for.
        """
        super().prepare(sample_rate, max_block, channels)  # checks the per-stream channel count

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each state's shape for N streams: the batch axis N, other symbolic axes 1 (as the single
        de-limiter sizes them)."""
        shapes = {}
        for name, axis in self.state_axes.items():
            shp = [d if isinstance(d, int) else 1 for d in self.session.input_shape(name)]
            shp[axis] = self.streams
            shapes[name] = tuple(shp)
        return shapes

    def _prepare(self) -> None:
        self._k = self._kernel_constants()
        N, C, H, K = self.streams, self.channels, self.hop, self.lookahead_frames
        self.stream_channels = C
        self.channels = N * C
        self._tmax = min(self.max_block // H + 1, max(1, MAX_CALL_SAMPLES // H))  # hops per model call (Delimiter's)
        # one re-blocking for all streams (they move in lockstep); its input holds each stream as
        # the model's stereo pair, columns 2s:2s+2 (a mono stream fills both)
        self._fixed = FixedHop(H, N * C, self.max_block, history=K * H, in_channels=2 * N, ceiling=IN_CLIP,
                               max_hops=self._tmax)
        inp = self._fixed.input.buf
        self._in_cols = [inp[:, 2 * s:2 * s + 2] for s in range(N)]
        # per call length: contiguous [N, T, ...] buffers (a slice of a longer one is not)
        self._frames_t = [np.zeros((N, T, H, 2), np.float32) for T in range(self._tmax + 1)]
        self._knots_t = [np.zeros((N, T, self.knots), np.float32) for T in range(self._tmax + 1)]
        self._fs = np.zeros((N, N_FLOAT_STATE), np.float64)
        self._declippers = [Declipper(K * H, self._tmax * H, self.sample_rate, channels=C) for _ in range(N)]
        self._dry = np.zeros((self._tmax * H, 2 * N), np.float32)  # stream s de-clipped in columns 2s:2s+2
        self._dry_cols = [self._dry[:, 2 * s:2 * s + 2] for s in range(N)]
        self._skip = np.zeros(N, np.int64)
        self.readings = np.zeros(2, np.float32)
        self.session.allocate_state(self._state_shapes())
        for T in range(1, self._tmax + 1):
            self.session.bind(T, {FRAMES: self._frames_t[T]}, {"knots": self._knots_t[T]})
        self.session.warm_up()
        self.process(np.zeros((min(self.max_block, self._tmax * H), N * C), np.float32))  # compile the kernels; reset follows

    def reset(self) -> None:
        super().reset()
        self._skip[:] = self.lookahead_frames
        self._fs[:] = self._initial_float_state()

    def _hops(self, x, start, T, out, opos) -> int:
        """FixedHop's runner for all streams: one model call over the T newest frames of each."""
        H = self.hop
        newest = start + self.lookahead_frames * H
        _frames_n(x, newest, T, H, self._frames_t[T])
        self.session.run(T)
        knots = self._knots_t[T]
        if not math.isfinite(float(knots.sum())):  # a stream whose state blew up starts afresh, alone
            for s in range(self.streams):
                if not math.isfinite(float(knots[s].sum())):
                    self.session.contain_state(slice(s, s + 1), self.state_axes)
        self._declip(newest, T * H)  # _in_cols[s] are x's columns 2s:2s+2
        _restore_n(self._knots_t[T], T, self._skip, x, start, self._dry, H, out, self.stream_channels, opos, self.values,
                   self._fs, self._k, self.readings)
        return T

    def process(self, block: np.ndarray) -> None:
        n = block.shape[0]
        check_block(n, self._fixed.input.max_push)  # the streams are written in below without HopInput.push
        self.readings[0] = 0.0
        self.readings[1] = 0.0
        C, fill = self.stream_channels, self._fixed.input.fill
        for s in range(self.streams):
            scrub_into(block[:, s * C:(s + 1) * C], n, self._in_cols[s], fill, IN_CLIP, self._counts, 0, 1)
        self._fixed.input.fill += n
        self._fixed.run_hops(self._hops)
        self._fixed.output.pop(block, n)
