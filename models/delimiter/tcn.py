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
last 2*dilation input columns (``hist{i}``), with band levels (``bands`` > 0) the last
BAND_WIN - BLOCK input samples (``wav_hist``), and the linked block peaks of the last CEIL_BLOCKS
blocks (``pk_hist``, the ceiling estimate).
"""
from __future__ import annotations

import numpy as np
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
BAND_WIN = 256  # samples of the short-time spectrum behind the band levels (``bands`` > 0)
BAND_LO_HZ, BAND_HI_HZ, BAND_RATE = 150.0, 16000.0, 44100.0


def band_matrices(bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(windowed DFT [BAND_WIN, 2F] as cos | sin columns, band pooling [F, bands]): each band the
    bins between geometric edges from BAND_LO_HZ to BAND_HI_HZ (at 44.1 kHz; at 48 kHz the same bins,
    9 % higher), each edge at least one bin above the last, so no two bands share a bin (the low
    ones are a bin wide), and never bin 0 (DC)."""
    n = np.arange(BAND_WIN)
    F = BAND_WIN // 2 + 1
    w = np.hanning(BAND_WIN + 1)[:BAND_WIN]
    k = np.arange(F)
    ang = 2 * np.pi * np.outer(n, k) / BAND_WIN
    dft = np.concatenate([w[:, None] * np.cos(ang), w[:, None] * np.sin(ang)], 1)
    hz = k * BAND_RATE / BAND_WIN
    edges = np.ceil(np.geomspace(BAND_LO_HZ, BAND_HI_HZ, bands + 1) / hz[1]).astype(int)
    edges[0] = max(edges[0], 1)
    for b in range(1, bands + 1):
        edges[b] = max(edges[b], edges[b - 1] + 1)
    if edges[-1] > F:
        raise ValueError(f"{bands} bands do not fit {F - 1} bins")
    pool = np.zeros((F, bands))
    for b in range(bands):
        pool[edges[b]: edges[b + 1], b] = 1.0
    return dft.astype(np.float32), pool.astype(np.float32)


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

    def __init__(self, ch: int = CH, layers: int = LAYERS, lookahead_frames: int = LOOKAHEAD_FRAMES, bands: int = 0):
        super().__init__()
        self.lookahead = lookahead_frames
        self.ch, self.dilations, self.bands = ch, [2 ** i for i in range(layers)], bands
        self.inp = nn.Conv1d(N_FEAT + bands, ch, 1)
        if bands:  # fixed analysis, not weights: the state dict tells the band count by inp's width
            dft, pool = band_matrices(bands)
            self.register_buffer("dft", torch.from_numpy(dft), persistent=False)
            self.register_buffer("pool", torch.from_numpy(pool), persistent=False)
        self.norms = nn.ModuleList(ChannelNorm(ch) for _ in self.dilations)
        self.convs = nn.ModuleList(nn.Conv1d(ch, ch, 3, dilation=d) for d in self.dilations)
        self.mixes = nn.ModuleList(nn.Conv1d(ch, ch, 1) for _ in self.dilations)
        self.out = nn.Conv1d(ch, 1, 1)
        self.act = nn.LeakyReLU(0.1)
        self.clamp_output = False

    @property
    def state_names(self) -> list[str]:
        return [f"hist{i}" for i in range(len(self.dilations))] + (["wav_hist"] if self.bands else []) + ["pk_hist"]

    def band_levels(self, frames: torch.Tensor, wav_hist: torch.Tensor):
        """frames [B, T, HOP, 2] -> ([B, T*KNOTS, bands] log band levels of the BAND_WIN samples up to
        each block's end, stereo power summed; wav_hist') . Why: a limiter's gain scales every band
        alike, so the bands a drum hit does not reach show the gain's dip and release on their own
        (the probe: trees on one fixed limiter read r 0.44 of the curve from broadband levels, 0.53
        with band levels)."""
        B, T = frames.shape[:2]
        wav = torch.cat([wav_hist, frames.reshape(B, T * HOP, 2)], 1)  # [B, W - BLOCK + T*HOP, 2]
        # the windowed DFT of every BLOCK-th window as a strided convolution (exports to ONNX as one op)
        chans = wav.transpose(1, 2).reshape(B * 2, 1, wav.shape[1])
        spec = nn.functional.conv1d(chans, self.dft.t().unsqueeze(1), stride=BLOCK)  # [2B, 2F, T*KNOTS]
        F = self.pool.shape[0]
        power = (spec[:, :F] ** 2 + spec[:, F:] ** 2).reshape(B, 2, F, -1).sum(1)  # [B, F, N]
        lev = 0.5 * torch.log(power.transpose(1, 2) @ self.pool / BAND_WIN + 1e-10)
        return lev, wav[:, T * HOP:]

    def features(self, frames: torch.Tensor, pk_hist: torch.Tensor, wav_hist: torch.Tensor | None = None):
        """frames [B, T, HOP, 2] -> ([B, N_FEAT + bands, T*KNOTS], pk_hist', wav_hist' or None)."""
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
        parts = [lp.unsqueeze(-1), sub, lm.unsqueeze(-1), ls.unsqueeze(-1), (lp - lc).unsqueeze(-1), lc.unsqueeze(-1)]
        wav2 = None
        if self.bands:  # each band's level against the ceiling, as the peak is
            lev, wav2 = self.band_levels(frames, wav_hist)
            parts.append(lev - lc.unsqueeze(-1))
        f = torch.cat(parts, -1)
        return 0.25 * f.transpose(1, 2), run[:, T * KNOTS:], wav2

    def forward(self, frames, *states):
        n = len(self.dilations)
        hists, pk_hist = states[:n], states[-1]
        f, pk2, wav2 = self.features(frames, pk_hist, states[n] if self.bands else None)
        h = self.inp(f)
        new = []
        for hist, d, norm, conv, mix in zip(hists, self.dilations, self.norms, self.convs, self.mixes):
            x = torch.cat([hist, norm(h)], 2)  # the layer's input, its last 2d past columns first
            new.append(x[:, :, -2 * d:])
            h = h + mix(self.act(conv(x)))
        a = self.out(h).squeeze(1)  # [B, T*KNOTS]
        if self.clamp_output:  # exported model; training keeps the gradient alive everywhere
            a = a.clamp(0.0, MAX_LOG_INV_GAIN)
        return (a.reshape(frames.shape[0], frames.shape[1], KNOTS), *new, *([wav2] if self.bands else []), pk2)

    def initial_state(self, batch: int):
        dev = next(self.parameters()).device
        wav = [torch.zeros(batch, BAND_WIN - BLOCK, 2, device=dev)] if self.bands else []
        return (*(torch.zeros(batch, self.ch, 2 * d, device=dev) for d in self.dilations), *wav,
                torch.zeros(batch, CEIL_BLOCKS, device=dev))
