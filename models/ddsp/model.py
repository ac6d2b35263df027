"""DDSP decoder and the differentiable torch version of the runtime synth.

Decoder: per 4 ms frame, (f0 Hz, A-weighted loudness dB) -> MLP -> GRU -> MLP -> harmonic
amplitudes (overall amplitude x softmax distribution, harmonics above the band limit removed and
the rest renormalised) and noise-band magnitudes. Normalisation of the inputs lives inside the
module, so the exported ONNX graph takes plain Hz and dB.

Synth (same maths as realtime/synth_kernels.py, which the tests compare against):
  harmonic: f0 and amplitudes linearly interpolated from frame k (sample k*hop) to frame k+1,
            phase = running sum of f0/sr, sum_k a_k sin(2 pi k phase)
  noise:    per frame, uniform noise in [-1, 1) of hop samples convolved with a zero-phase,
            Hann-windowed FIR sampled from the band magnitudes (IR centred at n_fft/2, so the
            noise is causal and n_fft/2 late), overlap-added
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

N_HARMONICS = 64
N_NOISE = 65  # rfft bins of a 128-tap FIR at 24 kHz: 187.5 Hz bands from 0 to 12 kHz
NOISE_TAPS = 128
BAND_LIMIT_HZ = 12000.0
F0_REF_MIDI = 69.0
LD_CENTER, LD_SCALE = -40.0, 30.0  # loudness dB -> roughly [-2, 1.5]
LD_FLOOR = -100.0


def exp_sigmoid(x, exponent=10.0, max_value=2.0, threshold=1e-7):
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


def mlp(n_in, n_hidden, layers=2):
    mods = []
    for i in range(layers):
        mods += [nn.Linear(n_in if i == 0 else n_hidden, n_hidden), nn.LayerNorm(n_hidden), nn.LeakyReLU(0.1)]
    return nn.Sequential(*mods)


class Decoder(nn.Module):
    def __init__(self, hidden: int = 96, n_harmonics: int = N_HARMONICS, n_noise: int = N_NOISE):
        super().__init__()
        self.hidden, self.n_harmonics, self.n_noise = hidden, n_harmonics, n_noise
        self.inp = mlp(2, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out = mlp(hidden + 2, hidden)
        self.proj = nn.Linear(hidden, 1 + n_harmonics + n_noise)
        self.register_buffer("k", torch.arange(1, n_harmonics + 1, dtype=torch.float32))

    @staticmethod
    def features(f0_hz, loudness_db):
        midi = 12.0 * torch.log2(torch.clamp(f0_hz, min=20.0) / 440.0) + F0_REF_MIDI
        f = (midi - 69.0) / 24.0
        ld = (torch.clamp(loudness_db, min=LD_FLOOR) - LD_CENTER) / LD_SCALE
        return torch.stack([f, ld], dim=-1)

    def forward(self, f0_hz, loudness_db, state):
        """f0_hz, loudness_db: (B, T); state: (1, B, hidden) -> harmonics (B,T,K), noise (B,T,N), state."""
        x = self.features(f0_hz, loudness_db)
        y, state = self.gru(self.inp(x), state)
        p = self.proj(self.out(torch.cat([y, x], dim=-1)))
        amp = exp_sigmoid(p[..., :1])
        logits = p[..., 1:1 + self.n_harmonics]
        # harmonics at or above the band limit are removed before the softmax renormalises
        above = (f0_hz.unsqueeze(-1) * self.k) >= BAND_LIMIT_HZ
        logits = logits.masked_fill(above, -1e4)
        dist = torch.softmax(logits, dim=-1) * (~above).float()
        harm = amp * dist
        noise = exp_sigmoid(p[..., 1 + self.n_harmonics:] - 5.0)
        return harm, noise, state

    def initial_state(self, batch: int):
        return torch.zeros(1, batch, self.hidden)


def upsample(x, hop: int):
    """(B, T, C) frame values -> (B, T*hop, C), linear from frame k to k+1 (last frame held)."""
    b, t, c = x.shape
    nxt = torch.cat([x[:, 1:], x[:, -1:]], dim=1)
    w = (torch.arange(hop, dtype=x.dtype, device=x.device) / hop).view(1, 1, hop, 1)
    y = x.unsqueeze(2) * (1 - w) + nxt.unsqueeze(2) * w
    return y.reshape(b, t * hop, c)


def harmonic_synth(f0_hz, harm, hop: int, sr: int, phase0=None):
    """f0_hz (B,T), harm (B,T,K) -> (B, T*hop)."""
    f0 = upsample(f0_hz.unsqueeze(-1), hop)[..., 0]
    amps = upsample(harm, hop)
    cycles = torch.cumsum(f0.double() / sr, dim=1)
    if phase0 is not None:
        cycles = cycles + phase0.double().unsqueeze(1)
    phase = (cycles - torch.floor(cycles)).float() * (2 * math.pi)
    k = torch.arange(1, harm.shape[-1] + 1, dtype=torch.float32, device=harm.device)
    return (torch.sin(phase.unsqueeze(-1) * k) * amps).sum(-1)


def noise_irs(mags, taps: int = NOISE_TAPS):
    """(B,T,N) band magnitudes -> (B,T,taps) zero-phase Hann-windowed FIRs centred at taps/2."""
    ir = torch.fft.irfft(torch.complex(mags, torch.zeros_like(mags)), n=taps)
    ir = torch.roll(ir, taps // 2, dims=-1)
    return ir * torch.hann_window(taps, periodic=False, dtype=mags.dtype, device=mags.device)


def filtered_noise(mags, hop: int, noise=None, taps: int = NOISE_TAPS):
    """(B,T,N) -> (B, T*hop): per-frame FIR on uniform noise, overlap-added (tail cut at the end)."""
    b, t, _ = mags.shape
    if noise is None:
        noise = torch.rand(b, t, hop, device=mags.device) * 2 - 1
    ir = noise_irs(mags, taps)
    n = hop + taps - 1
    nfft = 1 << (n - 1).bit_length()
    y = torch.fft.irfft(torch.fft.rfft(noise, nfft) * torch.fft.rfft(ir, nfft), nfft)[..., :n]  # (B,T,n)
    out_len = (t - 1) * hop + n
    y = F.fold(y.transpose(1, 2), output_size=(1, out_len), kernel_size=(1, n), stride=(1, hop))
    return y.reshape(b, out_len)[:, : t * hop]


def synth(f0_hz, harm, noise_mags, hop: int, sr: int):
    return harmonic_synth(f0_hz, harm, hop, sr) + filtered_noise(noise_mags, hop)


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over FFT sizes of |S - S^| + |log S - log S^| (magnitudes, 75 % overlap)."""

    def __init__(self, fft_sizes=(2048, 1024, 512, 256, 128, 64)):
        super().__init__()
        self.fft_sizes = fft_sizes
        for n in fft_sizes:
            self.register_buffer(f"win{n}", torch.hann_window(n))

    def forward(self, y, target):
        loss = 0.0
        for n in self.fft_sizes:
            w = getattr(self, f"win{n}")
            s = torch.stft(y, n, n // 4, window=w, return_complex=True, center=True).abs()
            t = torch.stft(target, n, n // 4, window=w, return_complex=True, center=True).abs()
            loss = loss + (s - t).abs().mean() + (torch.log(s + 1e-5) - torch.log(t + 1e-5)).abs().mean()
        return loss / len(self.fft_sizes)
