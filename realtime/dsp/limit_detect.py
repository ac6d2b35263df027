"""Is this music held by a brickwall limiter? A confidence from how often its peaks sit at one ceiling.

A limiter pins peak after peak at its ceiling; music no limiter touched reaches its loudest peak
now and then, and its other peaks fall short of it by varying amounts. So, per frame: the frame's
stereo-linked peak, the ceiling (the largest frame peak of the last ``RING`` frames before it), and
whether the frame is loud (within ``LOUD_DB`` of the ceiling) and pinned (within ``PIN_TOL_DB`` of
the ceiling, above or below: a frame that sets a new, higher peak is no pin). A frame whose peak
is a plateau (two neighbouring samples of one channel at it, to float rounding: a clipper's run)
is no pin either: no smooth gain undoes a clipper (the benchmark's oracle), the de-clipper does,
and the network's gain there only costs. The share of loud
frames that are pinned is smoothed over ``SHARE_FRAMES`` loud frames; the confidence ramps from 0
at ``CONF_LO`` to 1 at ``CONF_HI``.

The de-limiter scales its network's restored gain by it (realtime/dsp/processors/neural/
delimiter.py), and its trainer's checkpoint selection applies the same function to the same frames
(models/delimiter/train.py), so selection scores what the product plays. Why: trained on six
limiter implementations, the network restores heavily limited music from unseen limiters a little
and costs lightly limited music more (MODEL_CARD.md, "A confidence gate"). Settings chosen on the
selection set (Calf and ZaMaximX2 on unseen tracks), never on the benchmark.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from realtime.dsp.declip import TOL as PLATEAU_TOL

RING = 512  # frames of peak history for the ceiling (1.5 s at 128-sample frames, 44.1 kHz)
PIN_TOL_DB = 0.05
LOUD_DB = 6.0
SHARE_FRAMES = 50.0
CONF_LO, CONF_HI = 0.1, 0.3
N_STATE = 2  # [ring position, smoothed pinned share]


@njit(nogil=True, cache=True)
def pin_confidence(frames, T, ring, st, conf):
    """For each of the T frames ``frames[0, t]`` ([hop, channels]) in stream order: update the
    peak ring (``ring`` [RING], zeros at a stream's start) and the smoothed share (``st``), and
    write the confidence after that frame to ``conf[t]``. Bounded work: RING per frame."""
    tol = 10.0 ** (PIN_TOL_DB / 20.0)
    loud = 10.0 ** (-LOUD_DB / 20.0)
    rate = 1.0 / SHARE_FRAMES
    pos = int(st[0])
    share = st[1]
    for t in range(T):
        p = 0.0
        for i in range(frames.shape[2]):
            for ch in range(frames.shape[3]):
                v = abs(frames[0, t, i, ch])
                if v > p:
                    p = v
        plateau = False
        for i in range(1, frames.shape[2]):
            for ch in range(frames.shape[3]):
                a, b = abs(frames[0, t, i - 1, ch]), abs(frames[0, t, i, ch])
                if a >= p * (1.0 - PLATEAU_TOL) and b >= p * (1.0 - PLATEAU_TOL):
                    plateau = True
        c = 0.0
        for j in range(ring.shape[0]):
            if ring[j] > c:
                c = ring[j]
        top = max(c, p)
        if p > 0.0 and p >= top * loud:
            pinned = 1.0 if c > 0.0 and c / tol <= p <= c * tol and not plateau else 0.0
            share += rate * (pinned - share)
        ring[pos] = p
        pos = (pos + 1) % ring.shape[0]
        conf[t] = min(max((share - CONF_LO) / (CONF_HI - CONF_LO), 0.0), 1.0)
    st[0] = pos
    st[1] = share


def confidence_curve(y: np.ndarray, hop: int, lookahead_frames: int) -> np.ndarray:
    """Per sample of the whole frames of y [n, ch], the confidence the de-limiter applies to them
    when y is a fresh stream: frame f's from the confidence after frame f + lookahead_frames (the
    newest one its network has seen), in a straight line from frame f - 1's; past the end it holds."""
    F = y.shape[0] // hop
    frames = np.ascontiguousarray(y[: F * hop].reshape(1, F, hop, -1), dtype=np.float32)
    conf = np.zeros(F, np.float64)
    pin_confidence(frames, F, np.zeros(RING), np.zeros(N_STATE), conf)
    K = lookahead_frames
    # ahead[j + 1] = conf[j], 0 before the stream, the last value held past its end
    ahead = np.concatenate([[0.0], conf, np.full(K + 1, conf[-1] if F else 0.0)])
    start, end = ahead[K:K + F], ahead[K + 1:K + 1 + F]
    ramp = np.arange(1, hop + 1) / hop
    return (start[:, None] + ramp[None] * (end - start)[:, None]).reshape(-1)
