"""Causal de-limiter network: frames of limited audio in, the limiter's log-gain curve out.

Per hop of HOP samples (stereo) the model sees the raw frame and predicts KNOTS values of the
log *inverse* gain (a = -log g >= 0) for the frame LOOKAHEAD_FRAMES hops earlier, so every
output sample has seen between LOOKAHEAD_FRAMES*HOP and (LOOKAHEAD_FRAMES+1)*HOP - 1 samples of
future: enough to cover a limiter's lookahead (<= 5 ms), whose attack ramps start before the
peak. Knot j of a frame is the value at its sample 8j+7; the processor (and ``interpolate``
here, for training) draws straight lines between consecutive knots, carrying the last knot of
the previous frame, so the gain is continuous and causal.

Streaming state is explicit (ONNX inputs/outputs): ``e_hist`` the last LOOKAHEAD_FRAMES frame
embeddings (a causal convolution over frames), ``h`` the GRU state.

Features are computed inside the network from the raw frame (mid, side, and the log of the
linked peak per knot segment) so training and the exported model can never disagree.
"""
from __future__ import annotations

import torch
from torch import nn

HOP = 128
KNOTS = 16
SEG = HOP // KNOTS
LOOKAHEAD_FRAMES = 2
EMB = 128
HID = 128
MAX_LOG_INV_GAIN = 4.0  # 34.7 dB: more gain reduction than any realistic master


class Delimiter(nn.Module):
    def __init__(self, emb: int = EMB, hid: int = HID):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(2 * HOP + KNOTS, emb), nn.LeakyReLU(0.1))
        self.mix = nn.Sequential(nn.Linear((LOOKAHEAD_FRAMES + 1) * emb, hid), nn.LeakyReLU(0.1))
        self.gru = nn.GRU(hid, hid, batch_first=True)
        self.head = nn.Sequential(nn.Linear(2 * hid, 128), nn.LeakyReLU(0.1), nn.Linear(128, KNOTS))
        self.emb, self.hid = emb, hid
        self.clamp_output = False

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, HOP, 2] -> [B, T, 2*HOP + KNOTS].

        A limiter pins peaks at its ceiling; telling "at the ceiling" from "0.3 dB under it" needs
        a fine scale near full scale (``fine``: 0.1 dB ~ 0.07), next to a coarse one for the rest."""
        mid = 0.5 * (frames[..., 0] + frames[..., 1])
        peak = frames.abs().amax(-1)  # stereo-linked, as the limiter sees it
        logpk = torch.log(peak + 1e-4)
        fine = 6.0 * logpk.clamp(-0.7, 0.1) + 2.0  # per sample, peaks above ~ -6 dBFS
        seg_peak = peak.reshape(*peak.shape[:-1], KNOTS, SEG).amax(-1)
        coarse = 0.25 * torch.log(seg_peak + 1e-4)  # ~[-2.3, 0.1]
        return torch.cat([2.0 * mid, fine, coarse], -1)

    def forward(self, frames, e_hist, h):
        """frames [B,T,HOP,2], e_hist [B,LOOKAHEAD_FRAMES,EMB], h [1,B,HID]
        -> knots [B,T,KNOTS] (log inverse gain, frame t-LOOKAHEAD_FRAMES), e_hist', h'."""
        e = self.embed(self.features(frames))
        ecat = torch.cat([e_hist, e], 1)  # [B, K+T, E]
        T = frames.shape[1]
        K = LOOKAHEAD_FRAMES
        win = torch.cat([ecat[:, i:i + T] for i in range(K + 1)], -1)  # causal conv over frames
        c = self.mix(win)
        g, h2 = self.gru(c, h)
        a = self.head(torch.cat([c, g], -1))
        if self.clamp_output:  # exported model; training keeps the gradient alive everywhere
            a = a.clamp(0.0, MAX_LOG_INV_GAIN)
        return a, ecat[:, T:], h2

    def initial_state(self, batch: int):
        return torch.zeros(batch, LOOKAHEAD_FRAMES, self.emb), torch.zeros(1, batch, self.hid)


def interpolate(knots: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
    """knots [B, F, KNOTS] -> per-sample log inverse gain [B, F*HOP] (straight lines between knots).

    ``prev`` [B] is the last knot before the first frame (0 = no gain change)."""
    B, F, _ = knots.shape
    k = knots.reshape(B, F * KNOTS)
    if prev is None:
        prev = torch.zeros(B, 1, dtype=k.dtype)
    k0 = torch.cat([prev.reshape(B, 1), k[:, :-1]], 1)
    w = torch.arange(1, SEG + 1, dtype=k.dtype) / SEG  # sample i of a segment: (i+1)/SEG of the way
    return (k0.unsqueeze(-1) + w * (k - k0).unsqueeze(-1)).reshape(B, F * HOP)
