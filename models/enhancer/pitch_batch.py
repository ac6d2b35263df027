"""The enhancer's pitch features for a whole training batch at once, in torch (on the GPU when the
trainer runs there).

Why: on the first GPU run the trainer waited for its loader 65-80 % of the time. Computed per
example in the loader's workers (``realtime.dsp.pitch.pitch_features``, Numba, one frame after
another) the features cost a worker ~4 ms of CPU per 1.5 s example beside ~9 ms of mixing
(``python main.py bench loader``), a third of its work. Every frame's period search reads only the
signal (the streaming filter's history is the signal's past), so the frames can be searched side
by side on the GPU. On a CPU this is far slower than Numba (~90 ms an example): there the workers
keep the search.

What: the same values as ``pitch_features`` (same PitchFilter parameters, same rules: coarse
search on every second lag of the quarter-rate copy, the shortest good peak, its odd neighbours,
then the full rate around it; a new period every EVERY frames; none in silence), in float64.
Sums are taken in another order, so a near-tie between two lags can go the other way in a rare
frame; the test bounds how rare.
"""
from __future__ import annotations

import numpy as np
import torch

from realtime.dsp.pitch import DECIMATE, EVERY, OCTAVE_SHARE, SILENT, PitchFilter

ROWS_PER_CHUNK = 512  # frames whose coarse correlations are formed at once (~190 MB of float64)


def _gather(x: torch.Tensor, starts: torch.Tensor, n: int) -> torch.Tensor:
    """x [B, L], starts [B, T] -> [B, T, n]: the spans x[b, s : s + n] (starts within x)."""
    idx = starts[..., None] + torch.arange(n, device=x.device)
    return torch.gather(x[:, None, :].expand(-1, starts.shape[1], -1), 2, idx)


def _ncorr(target: torch.Tensor, segs: torch.Tensor) -> torch.Tensor:
    """Normalised correlation of target [..., n] with each of segs [..., K, n] -> [..., K]."""
    num = (segs * target[..., None, :]).sum(-1)
    e0 = (target * target).sum(-1, keepdim=True)
    el = (segs * segs).sum(-1).clamp_min(0.0)
    return num / torch.sqrt(e0 * el + 1e-30)


class BatchPitch:
    """Pitch features of batches of signals, for an STFT of ``window`` at ``hop`` and ``rate``."""

    def __init__(self, rate: int, window: np.ndarray, hop: int, min_band_hz: float, device="cpu"):
        pf = PitchFilter(rate, window, hop, 1, 1, min_band_hz)  # its parameters: one definition of them
        self.N, self.hop, self.D = pf.win_len, hop, DECIMATE
        self.tmin, self.tmax, self.pw = pf.tmin, pf.tmax, pf.pw
        self.pwd, self.nd = pf.pw // DECIMATE, hop // DECIMATE
        self.lo, self.hi = (pf.tmin + DECIMATE - 1) // DECIMATE, pf.tmax // DECIMATE
        self.K = pf.taps.shape[0]
        self.device = torch.device(device)
        dev = self.device
        self.taps = torch.from_numpy(pf.taps[::-1].copy()).to(dev)[None, None]  # conv1d correlates: flip
        self.window = torch.from_numpy(pf.window).to(dev)
        F = self.N // 2 + 1
        bands = np.zeros((F, len(pf.edges) - 1))
        for b in range(bands.shape[1]):
            bands[pf.edges[b]: pf.edges[b + 1], b] = 1.0
        self.bands = torch.from_numpy(bands).to(dev)
        # zeros before the stream, as the streaming filter's history starts: enough for the
        # longest lag, the correlated span, a window and the decimation filter
        self.Z = -(-(self.tmax + self.pw + self.N + self.K) // self.D) * self.D

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L] (L cut to whole hops) -> float32 [L // hop, B, NB_ERB], as ``pitch_features``."""
        N, hop, Z = self.N, self.hop, self.Z
        x = x.to(self.device, torch.float64)
        B = x.shape[0]
        T = x.shape[1] // hop
        if T == 0:  # shorter than a hop: no frame, as pitch_features
            return torch.zeros(0, B, self.bands.shape[1], dtype=torch.float32, device=self.device)
        # xp as pitch_features frames it (N - hop zeros first), then Z more zeros before it
        xz = torch.nn.functional.pad(x[:, : T * hop], (Z + N - hop, 0))
        t = torch.arange(T, device=x.device)
        frames = _gather(xz, (Z + t * hop).expand(B, T), N)  # frame t = xp[t*hop : t*hop + N]
        voiced = (frames * frames).sum(-1) > SILENT * N  # [B, T]
        periods = self._periods(xz, T, voiced)
        # each frame's window T samples earlier (zeros where no period), and both spectra
        lagged = _gather(xz, Z + t * hop - periods, N) * (periods > 0)[..., None]
        X = torch.fft.rfft(frames * self.window, dim=-1)
        P = torch.fft.rfft(lagged * self.window, dim=-1)
        ex = (X.real ** 2 + X.imag ** 2) @ self.bands
        ep = (P.real ** 2 + P.imag ** 2) @ self.bands
        exp_ = (X.real * P.real + X.imag * P.imag) @ self.bands
        ok = (ex > 1e-20) & (ep > 1e-20)
        out = torch.where(ok, exp_ / torch.sqrt(torch.where(ok, ex * ep, 1.0)), 0.0)
        return out.transpose(0, 1).to(torch.float32)

    def _periods(self, xz: torch.Tensor, T: int, voiced: torch.Tensor) -> torch.Tensor:
        """[B, T] int64: each frame's period in samples (0: none), as PitchFilter.analyse finds it."""
        N, hop, D, Z, pw, pwd = self.N, self.hop, self.D, self.Z, self.pw, self.pwd
        lo, hi = self.lo, self.hi
        B = xz.shape[0]
        dev = xz.device
        # the quarter-rate copy: d[m] = sum_k taps[k] x[q_m - k] at q_m = N - hop + (m + 1) D - 1
        off = Z + N - hop + D - self.K
        d = torch.nn.functional.conv1d(xz[:, None, off:], self.taps, stride=D)[:, 0, : T * self.nd]
        d = torch.nn.functional.pad(d, (hi + pwd, 0))  # the decimated history starts as zeros
        fresh = torch.arange(0, T, EVERY, device=dev)  # frames that look for a new period
        Tf = fresh.shape[0]
        m_end = (fresh + 1) * self.nd - 1 + hi + pwd  # index in d of each fresh frame's newest sample
        # normalised correlation of the last pwd decimated samples with every lag lo..hi
        c = torch.empty(B, Tf, hi - lo + 1, dtype=torch.float64, device=dev)
        step = max(1, ROWS_PER_CHUNK // max(1, B))  # frames per chunk, to bound the memory
        for s in range(0, Tf, step):
            sl = slice(s, s + step)
            w = _gather(d, (m_end[sl] - pwd + 1 - hi).expand(B, -1), pwd + hi)  # [B, tf, pwd + hi]
            segs = w.unfold(-1, pwd, 1).flip(-2)[..., lo:, :]  # span k of w is lag hi - k: flipped, lag lo + j at j
            c[:, sl] = _ncorr(w[..., hi:], segs)
        # coarse: every second lag; the shortest one that is a peak and nearly as good as the best
        cc = c[..., ::2]
        best = cc.max(-1, keepdim=True).values
        left = torch.nn.functional.pad(cc[..., :-1], (1, 0), value=-np.inf)
        right = torch.nn.functional.pad(cc[..., 1:], (0, 1), value=-np.inf)
        good = (cc >= OCTAVE_SHARE * best) & (cc >= left) & (cc >= right)
        j = torch.where(good.any(-1), good.to(torch.float32).argmax(-1), 0)
        bl = lo + 2 * j
        # its odd neighbours at the quarter rate (the first of equal maxima, as the loop keeps it)
        lags = torch.arange(lo, hi + 1, device=dev)
        near = (lags >= (bl - 1).clamp_min(lo)[..., None]) & (lags <= (bl + 1).clamp_max(hi)[..., None])
        bl = lo + torch.where(near, c, -np.inf).argmax(-1)
        # the full rate around D * bl
        e = Z + (fresh * hop + N)  # in xz, one past each fresh frame's newest sample
        target = _gather(xz, (e - pw).expand(B, -1), pw)
        k_lo = (D * bl - D // 2 - 1).clamp_min(self.tmin)
        k_hi = (D * bl + D // 2 + 1).clamp_max(self.tmax)
        cf = []
        for o in range(D + 3):
            lag = (D * bl - D // 2 - 1 + o).clamp(self.tmin, self.tmax)
            seg = _gather(xz, e - pw - lag, pw)
            cf.append(_ncorr(target, seg[..., None, :])[..., 0])
        cf = torch.stack(cf, -1)
        cand = D * bl[..., None] - D // 2 - 1 + torch.arange(D + 3, device=dev)
        inside = (cand >= k_lo[..., None]) & (cand <= k_hi[..., None])
        found = torch.gather(cand, -1, torch.where(inside, cf, -np.inf).argmax(-1, keepdim=True))[..., 0]
        # fresh frames keep what they found (none in silence); the frames between hold the last one
        periods = torch.zeros(B, T, dtype=torch.int64, device=dev)
        periods[:, fresh] = torch.where(voiced[:, fresh], found, 0)
        for k in range(1, EVERY):
            held = fresh + k
            held = held[held < T]
            periods[:, held] = torch.where(voiced[:, held], periods[:, held - 1], 0)
        return periods
