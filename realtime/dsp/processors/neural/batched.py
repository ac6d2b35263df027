"""Many enhancer streams per ONNX Runtime call: N independent streams, each with its own state.

``BatchedEnhancer`` is the enhancer with its channels split into ``streams`` groups: a block of
shape (frames, streams * channels) holds stream ``s`` in columns ``s*channels : (s+1)*channels``.
The model already takes a batch axis (the enhancer sends a stream's channels through it as a
batch), so every hop of all streams is one call; what must stay per stream is what the single
stream decides for itself:

- the digital-silence gate: a stream runs through the first QUIET_RUN_FRAMES silent frames in a
  row, then skips the network and holds its state (a deep filter's history too: the silence it
  last ran), as a single stream would. The enhancer's own gate sees all channels, so it skips frames
  where every stream is past that; in the runs it sends to the network, frames where the streams
  disagree go one call per frame, the skipping streams' state put back;
- the blow-up containment: a stream whose state or output turns non-finite is reset alone.

Parameters (``atten_limit_db``, ``wet``) are shared by all streams, as they are by the files of a
batch; the readouts describe all streams together. The outputs equal N single-stream enhancers fed
the same blocks (to float rounding of the bigger matrix products; the tests allow 1e-5). For
offline work (many files at once, a GPU kept busy); the live engine runs the single-stream
``Enhancer``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.processors.neural.enhancer import MAX_T, QUIET_RUN_FRAMES, SILENCE_POWER, Enhancer


@njit(nogil=True, cache=True)
def _loud_streams(frames, T, C, thresh, loud):
    """loud[t, s]: frame t of stream s has signal (any of its C channels above ``thresh`` mean power);
    the same sums, in the same order, as the single stream's gate."""
    N = frames.shape[2]
    for t in range(T):
        for s in range(frames.shape[1] // C):
            on = False
            for ch in range(s * C, (s + 1) * C):
                e = 0.0
                for i in range(N):
                    e += frames[t, ch, i] * frames[t, ch, i]
                if e > thresh * N:
                    on = True
            loud[t, s] = on


@njit(nogil=True, cache=True)
def _gate_streams(loud, T, quiet, limit):
    """loud[t, s] (signal) -> whether stream s runs frame t: with signal, or silent for fewer than
    ``limit`` frames in a row so far (``quiet[s]``, updated), as the single stream's gate decides."""
    for t in range(T):
        for s in range(loud.shape[1]):
            if loud[t, s]:
                quiet[s] = 0
            else:
                loud[t, s] = quiet[s] < limit
                quiet[s] = min(quiet[s] + 1, limit)


class BatchedEnhancer(Enhancer):
    """``streams`` independent enhancer streams through one model call per chunk of hops.

    Parameters
    ----------
    streams : int
        Number of streams (``prepare`` takes each one's channel count).
    model_path, provider, threads, **values
        As for ``Enhancer`` (values are shared by every stream).

    Raises
    ------
    ModelError
        As for ``Enhancer``.
    ValueError
        ``streams`` below 1.
    """

    def __init__(self, streams: int, model_path=None, provider: str | None = None, threads: int = 1, **values):
        super().__init__(model_path, provider, threads, **values)
        self.streams = int(streams)
        if self.streams < 1:
            raise ValueError(f"streams: {streams} (at least 1)")

    def prepare(self, sample_rate: float, max_block: int, channels: int) -> None:
        """Allocate for ``streams`` streams of ``channels`` (1 or 2) each; ``process`` then takes
        blocks of (frames, streams * channels), stream ``s`` in columns ``s*channels : (s+1)*channels``.

        Raises
        ------
        ConfigError
            ``channels`` is not 1 or 2.
        ModelError
            The model cannot be loaded.
        """
        super().prepare(sample_rate, max_block, channels)  # checks the per-stream channel count

    def _prepare(self) -> None:
        self.stream_channels = self.channels
        self.channels = self.streams * self.stream_channels  # what the enhancer's buffers are sized by
        self._loud = np.zeros((MAX_T, self.streams), np.bool_)  # per frame and stream: runs the network
        self._quiet_s = np.zeros(self.streams, np.int64)  # per stream: silent frames in a row
        super()._prepare()
        # one-frame calls at each position of the chunk, for chunks where the streams' gates disagree
        for t in range(MAX_T):
            self.session.bind(("frame", t), self._model_inputs(slice(t, t + 1)), {"enh": self._enh[t:t + 1]})
        self.session.warm_up([("frame", t) for t in range(MAX_T)])
        st = self.session.state
        self._saved = {name: np.zeros_like(a) for name, a in st.items()}
        self._held = {name: np.zeros((1, self.channels) + (1,) * (a.ndim - 2), np.bool_) for name, a in st.items()}

    def _reset_core(self) -> None:
        super()._reset_core()
        self._quiet_s[:] = 0

    def _channels_of(self, streams_mask: np.ndarray) -> np.ndarray:
        return np.repeat(streams_mask, self.stream_channels)

    def _contain(self, t0: int, t1: int, ran: np.ndarray) -> None:
        """Per stream that ran: a non-finite state starts afresh; a non-finite output passes the input."""
        C = self.stream_channels
        for s in np.flatnonzero(ran):
            sl = slice(s * C, (s + 1) * C)
            self.session.contain_state(sl)
            if not math.isfinite(float(self._enh[t0:t1, sl].sum())):
                self._enh[t0:t1, sl] = self._spec_f[t0:t1, sl]

    def _run_frame(self, t: int) -> None:
        """Frame t of the chunk: running streams through the model, the others passed and held."""
        loud = self._loud[t]
        silent_ch = self._channels_of(~loud)
        if loud.any():
            for name, a in self.session.state.items():
                np.copyto(self._saved[name], a)
                self._held[name].reshape(-1)[:] = silent_ch
            self.session.run(("frame", t))
            for name, a in self.session.state.items():  # the silent streams' state, as it was
                np.copyto(a, self._saved[name], where=self._held[name])
            self._contain(t, t + 1, loud)
        self._enh[t, silent_ch] = self._spec_f[t, silent_ch]

    def _run_model(self, T: int) -> None:
        """The enhancer's gate sends T frames (signal in some stream, or silence not yet long
        enough); per stream, frames past its own silence allowance skip the network (see the
        module docstring)."""
        _loud_streams(self._frames, T, self.stream_channels, SILENCE_POWER, self._loud)
        _gate_streams(self._loud, T, self._quiet_s, QUIET_RUN_FRAMES)
        if self._loud[:T].all():
            self.session.run(T)
            self._contain(0, T, self._loud[0])
        else:
            for t in range(T):
                self._run_frame(t)
