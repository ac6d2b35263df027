"""Re-blocking for processors with a native hop: input FIFO, framing, output pre-fill.

A model that works in whole hops (an STFT frame, a de-limiter frame) meets host blocks of any
size through ``FixedHop``, this project's form of pedalboard's ``FixedBlockSize`` template:

    block ─► scrub [─► fixed biquad] ─► HopInput (history + new samples) ─► run(whole hops) ─► OutputFifo ─► block
                                                                                 (pre-filled with hop - 1 zeros)

Why ``hop - 1`` samples of pre-fill: after m input samples, ``floor(m / hop)`` hops have been
processed, so ``hop - 1 + floor(m / hop)·hop >= m`` output samples exist for every m: any
block size is answered at once, and no smaller pre-fill is enough for every block size.

``history`` keeps that many samples before the hops being processed (an STFT's window overlap,
a de-limiter's look-ahead frames): they start as zeros and slide along with the stream.

Buffers are (frames, channels) float32, like the blocks, sized once; the per-block work is three
Numba calls and the processor's own ``run``, so nothing is allocated per block.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numba import njit

from realtime.dsp.fixed_filter import fixed_biquad
from realtime.dsp.kernels import scrub_into


def pow2_at_least(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1): the size of a ring indexed with ``& (size - 1)``."""
    return 1 << max(0, int(n) - 1).bit_length()


def check_block(n: int, max_block: int) -> None:
    """Refuse a block of more than ``max_block`` frames before any kernel sees it: the buffers are
    sized for ``max_block`` and the Numba kernels write without bounds checks, so a longer block
    would corrupt memory. One comparison; a host sends at most the block size it prepared with."""
    if n > max_block:
        raise ValueError(f"a block of {n} frames is longer than the {max_block} this processor was "
                         "prepared for (prepare's max_block)")


@njit(nogil=True, cache=True)
def _drop_front(buf, count, keep):
    """buf[:keep] = buf[count:count + keep] (frames, channels)."""
    if count == 0:
        return
    for i in range(keep):
        for ch in range(buf.shape[1]):
            buf[i, ch] = buf[count + i, ch]


@njit(nogil=True, cache=True)
def _copy_out(buf, block, n):
    """block[:n] = buf[:n] for the block's channels."""
    for i in range(n):
        for ch in range(block.shape[1]):
            block[i, ch] = buf[i, ch]


class HopInput:
    """Input FIFO that gathers samples until whole hops are there.

    Parameters
    ----------
    hop : int
        Samples per hop.
    channels : int
        Channels of the buffer (a mono push fills every channel).
    max_push : int
        Most samples one ``push`` may add.
    history : int
        Samples kept before the hops being processed (zeros after ``reset``).
    ceiling : float
        Pushed samples are scrubbed: NaN/Inf -> 0, clamped to ``±ceiling``.
    prefilter : ndarray, optional
        (b0, b1, b2, a1, a2) of a fixed biquad the scrubbed samples go through as they come in
        (``fixed_filter.fixed_biquad``, its state reset with the buffer): the enhancer's DC blocker.
    """

    def __init__(self, hop: int, channels: int, max_push: int, history: int = 0, ceiling: float = math.inf,
                 prefilter: np.ndarray | None = None):
        self.hop, self.history, self.ceiling = int(hop), int(history), float(ceiling)
        self.max_push = int(max_push)
        self.buf = np.zeros((self.history + self.max_push + self.hop, channels), np.float32)
        self.prefilter = None if prefilter is None else np.asarray(prefilter, np.float64)
        self._z = np.zeros((channels, 2), np.float64)  # the prefilter's state
        self.reset()

    def reset(self) -> None:
        """Zero the buffer and the prefilter's state; only the (silent) history is left."""
        self.buf.fill(0.0)
        self._z.fill(0.0)
        self.fill = self.history

    def push(self, x: np.ndarray, n: int, counts: np.ndarray) -> None:
        """Append ``x[:n]`` ((frames, channels), any strides), scrubbed.

        Parameters
        ----------
        x : ndarray
            Source frames.
        n : int
            How many (at most ``max_push``).
        counts : ndarray
            int64 counters: non-finite values are counted in ``counts[0]``, clamped in ``counts[1]``.

        Raises
        ------
        ValueError
            ``n`` is more than ``max_push`` (a block longer than ``prepare``'s max_block).
        """
        check_block(n, self.max_push)  # the kernels index without bounds checks
        scrub_into(x, n, self.buf, self.fill, self.ceiling, counts, 0, 1)
        if self.prefilter is not None:  # after the scrub: its state never sees a NaN
            fixed_biquad(self.buf, self.fill, n, self.prefilter, self._z)
        self.fill += n

    @property
    def hops_ready(self) -> int:
        """Whole hops waiting to be processed."""
        return (self.fill - self.history) // self.hop

    def consume(self, samples: int) -> None:
        """Drop ``samples`` (whole hops) from the front: the history slides along with them."""
        self.fill -= samples
        _drop_front(self.buf, samples, self.fill)


class OutputFifo:
    """Output FIFO that starts with ``prefill`` samples of silence and is popped block by block.

    Parameters
    ----------
    capacity : int
        Most samples it can hold.
    channels : int
        Channels of the buffer (a pop fills the block's channels, the first ones).
    prefill : int
        Zeros it holds after ``reset``: the latency it adds.
    """

    def __init__(self, capacity: int, channels: int, prefill: int = 0):
        self.buf = np.zeros((int(capacity), channels), np.float32)
        self.prefill = int(prefill)
        self.reset()

    def reset(self) -> None:
        """Zero the buffer and hold ``prefill`` zeros."""
        self.buf.fill(0.0)
        self.fill = self.prefill

    def drop(self, n: int) -> None:
        """Discard the oldest ``n`` samples."""
        self.fill -= n
        _drop_front(self.buf, n, self.fill)

    def pop(self, block: np.ndarray, n: int) -> None:
        """Move the oldest ``n`` samples into ``block[:n]``; silence, never garbage, if it holds fewer."""
        if self.fill < n:
            self.buf[self.fill : n] = 0.0
            self.fill = n
        _copy_out(self.buf, block, n)
        self.drop(n)


# run(inp, start, hops, out, opos) -> hops done: process the hops at inp[start + history :], whose
# history is inp[start : start + history], writing hop samples per hop done to out[opos:]
HopRunner = Callable[[np.ndarray, int, int, np.ndarray, int], int]


class FixedHop:
    """Re-blocking wrapper: feeds a processor whole hops whatever the host's block size.

    Parameters
    ----------
    hop : int
        The processor's native hop (samples).
    channels : int
        Channels of the output (the host block's).
    max_push : int
        Most samples one call may bring in.
    history : int
        Samples the processor sees before each hop (see ``HopInput``).
    in_channels : int, optional
        Channels of the input buffer when they differ from ``channels`` (a stereo-linked model
        fed mono duplicates it).
    ceiling : float
        Input scrub ceiling (see ``HopInput``).
    max_hops : int, optional
        Most hops handed to ``run`` in one call (the rest go in further calls).
    prefilter : ndarray, optional
        A fixed biquad on the input (see ``HopInput``).

    Notes
    -----
    ``latency`` (``hop - 1``) is what the re-blocking adds; the processor adds its own on top.
    """

    def __init__(self, hop: int, channels: int, max_push: int, history: int = 0, in_channels: int | None = None,
                 ceiling: float = math.inf, max_hops: int | None = None, prefilter: np.ndarray | None = None):
        self.hop = int(hop)
        self.max_hops = int(max_hops) if max_hops else int(max_push) // self.hop + 1
        self.input = HopInput(hop, in_channels or channels, max_push, history, ceiling, prefilter)
        self.output = OutputFifo(int(max_push) + 2 * self.hop, channels, prefill=self.latency)

    @property
    def latency(self) -> int:
        """Samples of delay the re-blocking adds (its output pre-fill)."""
        return self.hop - 1

    def reset(self) -> None:
        """Back to the state after construction: silent history, pre-filled output."""
        self.input.reset()
        self.output.reset()

    def run_hops(self, run: HopRunner) -> None:
        """Hand every whole hop waiting in the input to ``run`` (at most ``max_hops`` per call);
        ``run`` may do fewer than offered and is called again for the rest."""
        ready = self.input.hops_ready
        start = 0
        while ready > 0:
            done = run(self.input.buf, start, min(ready, self.max_hops), self.output.buf, self.output.fill)
            self.output.fill += done * self.hop
            start += done * self.hop
            ready -= done
        if start:
            self.input.consume(start)

    def process(self, block: np.ndarray, run: HopRunner, counts: np.ndarray) -> None:
        """Push ``block`` in (scrubbed, counted in ``counts``), run the whole hops, pop ``block`` out.

        Parameters
        ----------
        block : ndarray
            (frames, channels) float32, processed in place; frames <= ``max_push``.
        run : callable
            The processor's hop kernel, ``run(inp, start, hops, out, opos) -> hops done``.
        counts : ndarray
            int64 [non-finite, clamped] input counters.

        Raises
        ------
        ValueError
            ``block`` has more than ``max_push`` frames (nothing is written).
        """
        n = block.shape[0]
        self.input.push(block, n, counts)
        self.run_hops(run)
        self.output.pop(block, n)
