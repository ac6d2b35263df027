"""Causal de-limiter network: frames of limited audio in, the limiter's log-gain curve out.

Per hop of HOP samples (stereo) the model sees the raw frame and predicts KNOTS values of the
log *inverse* gain (a = -log g >= 0) for the frame LOOKAHEAD_FRAMES hops earlier, so every
output sample has seen between LOOKAHEAD_FRAMES*HOP and (LOOKAHEAD_FRAMES+1)*HOP - 1 samples of
future: enough to cover a limiter's lookahead (<= 5 ms), whose attack ramps start before the
peak. Knot j of a frame is the value at its sample 8j+7; the processor (and ``interpolate``
here, for training) draws straight lines between consecutive knots, carrying the last knot of
the previous frame, so the gain is continuous and causal.

Streaming state is explicit (ONNX inputs/outputs): ``e_hist`` the last LOOKAHEAD_FRAMES frame
embeddings (a causal convolution over frames), ``h`` the GRU state, ``pk_hist`` the linked peaks
of the last PEAK_FRAMES frames.

Features are computed inside the network from the raw frame (mid, the linked per-sample log peak
on a fine scale near full scale, the log peak per knot segment) so training and the exported model
can never disagree. A limiter pins its peaks at a ceiling that differs from product to product
(-3 ... -0.1 dBFS, or lower after make-up): the running maximum of the peaks over the last
PEAK_FRAMES frames (~1.5 s) estimates it, and the fine scale is repeated relative to it.
"""
from __future__ import annotations

import torch
from torch import nn

HOP = 128
KNOTS = 16
SEG = HOP // KNOTS
LOOKAHEAD_FRAMES = 2
EMB = 128
HID = 160
PEAK_FRAMES = 512  # ceiling estimate: max linked peak over the last 512 frames (1.5 s at 44.1 kHz)
CONV_CH = 24  # channels of the optional convolutional front end
MAX_LOG_INV_GAIN = 4.0  # 34.7 dB: more gain reduction than any realistic master


class Delimiter(nn.Module):
    def __init__(self, emb: int = EMB, hid: int = HID, lookahead_frames: int = LOOKAHEAD_FRAMES, front: str = "linear"):
        """``lookahead_frames`` > LOOKAHEAD_FRAMES makes the benchmark's non-causal variant.
        ``front="conv"`` adds a small convolutional detector over each frame's samples (mid, fine and
        relative peak) next to the raw features: the linear embedding alone sees a transient's
        shape only through one layer of fixed filters."""
        super().__init__()
        self.lookahead = lookahead_frames
        self.front = front
        n_in = 3 * HOP + KNOTS + 1
        if front == "conv":
            self.conv = nn.Sequential(nn.Conv1d(3, CONV_CH, 9, padding=4), nn.LeakyReLU(0.1),
                                      nn.Conv1d(CONV_CH, CONV_CH, SEG, stride=SEG), nn.LeakyReLU(0.1))
            n_in += CONV_CH * KNOTS
        elif front != "linear":
            raise ValueError(f"front must be linear or conv, not {front!r}")
        self.embed = nn.Sequential(nn.Linear(n_in, emb), nn.LeakyReLU(0.1))
        self.mix = nn.Sequential(nn.Linear((lookahead_frames + 1) * emb, hid), nn.LeakyReLU(0.1))
        self.gru = nn.GRU(hid, hid, batch_first=True)
        self.head = nn.Sequential(nn.Linear(2 * hid, 128), nn.LeakyReLU(0.1), nn.Linear(128, KNOTS))
        self.emb, self.hid = emb, hid
        self.clamp_output = False

    def features(self, frames: torch.Tensor, pk_hist: torch.Tensor):
        """frames [B, T, HOP, 2], pk_hist [B, PEAK_FRAMES] -> ([B, T, 3*HOP + KNOTS + 1], pk_hist').

        A limiter pins peaks at its ceiling; telling "at the ceiling" from "0.3 dB under it" needs
        a fine scale near full scale (``fine``: 0.1 dB ~ 0.07), next to a coarse one for the rest,
        and the same fine scale relative to the running peak (the ceiling estimate)."""
        mid = 0.5 * (frames[..., 0] + frames[..., 1])
        peak = frames.abs().amax(-1)  # stereo-linked, as the limiter sees it
        logpk = torch.log(peak + 1e-4)
        fine = 6.0 * logpk.clamp(-0.7, 0.1) + 2.0  # per sample, peaks above ~ -6 dBFS
        seg_peak = peak.reshape(*peak.shape[:-1], KNOTS, SEG).amax(-1)
        coarse = 0.25 * torch.log(seg_peak + 1e-4)  # ~[-2.3, 0.1]
        T = frames.shape[1]
        frame_peak = seg_peak.amax(-1)  # [B, T]
        run = torch.cat([pk_hist, frame_peak], 1)  # running max over the window ending at each frame
        ceil = nn.functional.max_pool1d(run.unsqueeze(1), PEAK_FRAMES + 1, stride=1).squeeze(1)  # [B, T]
        logceil = torch.log(ceil + 1e-4)
        rel = 6.0 * (logpk - logceil.unsqueeze(-1)).clamp(-0.7, 0.0) + 2.0
        feats = torch.cat([2.0 * mid, fine, rel, coarse, 0.25 * logceil.unsqueeze(-1)], -1)
        if self.front == "conv":  # per frame: [B*T, 3, HOP] -> [B*T, CONV_CH, KNOTS], flattened
            per = torch.stack([2.0 * mid, fine, rel], -2).reshape(-1, 3, HOP)
            feats = torch.cat([self.conv(per).reshape(*feats.shape[:2], CONV_CH * KNOTS), feats], -1)
        return feats, run[:, T:]

    def forward(self, frames, e_hist, h, pk_hist):
        """frames [B,T,HOP,2], e_hist [B,LOOKAHEAD_FRAMES,EMB], h [1,B,HID], pk_hist [B,PEAK_FRAMES]
        -> knots [B,T,KNOTS] (log inverse gain, frame t-lookahead), e_hist', h', pk_hist'."""
        f, pk2 = self.features(frames, pk_hist)
        e = self.embed(f)
        ecat = torch.cat([e_hist, e], 1)  # [B, K+T, E]
        T = frames.shape[1]
        K = self.lookahead
        win = torch.cat([ecat[:, i:i + T] for i in range(K + 1)], -1)  # causal conv over frames
        c = self.mix(win)
        g, h2 = self.gru(c, h)
        a = self.head(torch.cat([c, g], -1))
        if self.clamp_output:  # exported model; training keeps the gradient alive everywhere
            a = a.clamp(0.0, MAX_LOG_INV_GAIN)
        return a, ecat[:, T:], h2, pk2

    arch = "gru"
    state_names = ("e_hist", "h", "pk_hist")
    knots = KNOTS

    def initial_state(self, batch: int):
        dev = next(self.parameters()).device
        return (torch.zeros(batch, self.lookahead, self.emb, device=dev), torch.zeros(1, batch, self.hid, device=dev),
                torch.zeros(batch, PEAK_FRAMES, device=dev))


def interpolate(knots: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
    """knots [B, F, K] -> per-sample log inverse gain [B, F*HOP] (straight lines between knots).

    ``prev`` [B] is the last knot before the first frame (0 = no gain change)."""
    B, F, nk = knots.shape
    seg = HOP // nk  # 16 knots a frame for the GRU network, 4 for the convolutional one
    k = knots.reshape(B, F * nk)
    if prev is None:
        prev = torch.zeros(B, 1, dtype=k.dtype, device=k.device)
    k0 = torch.cat([prev.reshape(B, 1), k[:, :-1]], 1)
    w = torch.arange(1, seg + 1, dtype=k.dtype, device=k.device) / seg  # sample i of a segment: (i+1)/seg of the way
    return (k0.unsqueeze(-1) + w * (k - k0).unsqueeze(-1)).reshape(B, F * HOP)
