"""Causal dilated-convolution de-limiter: block envelopes of limited audio in, the log-gain curve out.

The GRU network (``model.py``) sees each 128-sample frame through one linear layer and must carry
the music's recent dynamics in its state; on a single fixed limiter it reads no more of the gain
curve than gradient-boosted trees on hand-made level features do (MODEL_CARD.md, "A
convolutional network"). This one describes every BLOCK samples by a few levels (linked peak, four
sub-block peaks, mid and side RMS, the peak relative to the running ceiling, the ceiling) and runs
a stack of causal dilated convolutions over them, 1.5 s of past at every layer's full resolution.

Same contract as ``model.Delimiter`` (the processor and the trainer do not tell them apart):
``forward(frames [B,T,HOP,2], *states) -> (knots [B,T,KNOTS], *states')``, the knots being the
log inverse gain at the end of each BLOCK of the frame ``lookahead`` hops earlier (the output at
block b is trained on block b - lookahead*HOP/BLOCK). Streaming state is explicit: each layer's
last 2*dilation input columns (``hist{i}``) and the linked block peaks of the last CEIL_BLOCKS
blocks (``pk_hist``, the ceiling estimate).
"""
from __future__ import annotations

import torch
from torch import nn

from models.delimiter.model import HOP, LOOKAHEAD_FRAMES, MAX_LOG_INV_GAIN

BLOCK = 32
KNOTS = HOP // BLOCK
SUB = 4  # sub-block peaks per block
CEIL_BLOCKS = 1378  # ~1 s at 44.1 kHz: the ceiling estimate's memory
N_FEAT = 5 + SUB
CH = 48
LAYERS = 10  # dilations 1 ... 512 blocks: 1.5 s of past at 44.1 kHz


class ChannelNorm(nn.Module):
    """Layer norm over the channels of each time step (a norm over time would see the future)."""

    def __init__(self, ch: int):
        super().__init__()
        self.ln = nn.LayerNorm(ch)

    def forward(self, x):
        return self.ln(x.transpose(1, 2)).transpose(1, 2)


class DelimiterTCN(nn.Module):
    arch = "tcn"
    knots = KNOTS

    def __init__(self, ch: int = CH, layers: int = LAYERS, lookahead_frames: int = LOOKAHEAD_FRAMES):
        super().__init__()
        self.lookahead = lookahead_frames
        self.ch, self.dilations = ch, [2 ** i for i in range(layers)]
        self.inp = nn.Conv1d(N_FEAT, ch, 1)
        self.norms = nn.ModuleList(ChannelNorm(ch) for _ in self.dilations)
        self.convs = nn.ModuleList(nn.Conv1d(ch, ch, 3, dilation=d) for d in self.dilations)
        self.mixes = nn.ModuleList(nn.Conv1d(ch, ch, 1) for _ in self.dilations)
        self.out = nn.Conv1d(ch, 1, 1)
        self.act = nn.LeakyReLU(0.1)
        self.clamp_output = False

    @property
    def state_names(self) -> list[str]:
        return [f"hist{i}" for i in range(len(self.dilations))] + ["pk_hist"]

    def features(self, frames: torch.Tensor, pk_hist: torch.Tensor):
        """frames [B, T, HOP, 2] -> ([B, N_FEAT, T*KNOTS], pk_hist')."""
        B, T = frames.shape[:2]
        blocks = frames.reshape(B, T * KNOTS, BLOCK, 2)
        peak = blocks.abs().amax(-1)  # [B, N, BLOCK] stereo-linked, as a limiter sees it
        sub = torch.log(peak.reshape(B, T * KNOTS, SUB, BLOCK // SUB).amax(-1) + 1e-4)
        bpk = peak.amax(-1)  # [B, N]
        lp = torch.log(bpk + 1e-4)
        mid = 0.5 * (blocks[..., 0] + blocks[..., 1])
        side = 0.5 * (blocks[..., 0] - blocks[..., 1])
        lm = 0.5 * torch.log((mid * mid).mean(-1) + 1e-8)
        ls = 0.5 * torch.log((side * side).mean(-1) + 1e-8)
        run = torch.cat([pk_hist, bpk], 1)
        ceil = nn.functional.max_pool1d(run.unsqueeze(1), CEIL_BLOCKS + 1, stride=1).squeeze(1)  # [B, N]
        lc = torch.log(ceil + 1e-4)
        f = torch.cat([lp.unsqueeze(-1), sub, lm.unsqueeze(-1), ls.unsqueeze(-1), (lp - lc).unsqueeze(-1),
                       lc.unsqueeze(-1)], -1)
        return 0.25 * f.transpose(1, 2), run[:, T * KNOTS:]

    def forward(self, frames, *states):
        hists, pk_hist = states[:-1], states[-1]
        f, pk2 = self.features(frames, pk_hist)
        h = self.inp(f)
        new = []
        for hist, d, norm, conv, mix in zip(hists, self.dilations, self.norms, self.convs, self.mixes):
            x = torch.cat([hist, norm(h)], 2)  # the layer's input, its last 2d past columns first
            new.append(x[:, :, -2 * d:])
            h = h + mix(self.act(conv(x)))
        a = self.out(h).squeeze(1)  # [B, T*KNOTS]
        if self.clamp_output:  # exported model; training keeps the gradient alive everywhere
            a = a.clamp(0.0, MAX_LOG_INV_GAIN)
        return (a.reshape(frames.shape[0], frames.shape[1], KNOTS), *new, pk2)

    def initial_state(self, batch: int):
        dev = next(self.parameters()).device
        return (*(torch.zeros(batch, self.ch, 2 * d, device=dev) for d in self.dilations),
                torch.zeros(batch, CEIL_BLOCKS, device=dev))
