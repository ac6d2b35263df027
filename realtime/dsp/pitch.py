"""Pitch (comb) filter for a band-gain enhancer, after RNNoise (Valin, "A Hybrid DSP/Deep Learning
Approach to Real-Time Full-Band Speech Enhancement", 2018, section 3.4).

Why: gains on ERB bands of a 10 ms window's 100 Hz bins cannot take out the noise between a voice's
harmonics (80-300 Hz apart); a comb filter tuned to the voice's period can.

How, per frame of the enhancer's STFT (all causal, no look-ahead):
  * the period T: the lag (62.5-800 Hz) with the highest normalised correlation between the last
    2 windows of input and the same span T earlier; coarse on a quarter-rate copy (FIR-decimated;
    every second lag, then the shortest good peak's neighbours: a voice is not combed at twice its
    period), refined at the full rate around it; a new period every 10 ms (as RNNoise);
  * P: the spectrum of the frame's window taken T samples earlier (same window function);
  * per ERB band b, from the input X, P and the network's gain g_b (the band's output/input
    energy): the pitch correlation c_b = Re(X·P*) / sqrt(|X|²|P|²), then RNNoise's rule
    r_b = 1 where c_b > g_b (the band is more periodic than the network thinks it is clean),
    else sqrt(c_b²(1 - g_b²) / (g_b²(1 - c_b²))); r_b ·= strength · sqrt(|X|²/|P|²) per band;
  * X' = X + r·P (r interpolated across bins like the gains), rescaled so each band keeps its
    input energy; the network's per-bin gains then apply to X' instead of X.
X + r·P is x[n] + r·x[n - T] in time: harmonics of 1/T add up, the noise between them does not.
Where the network passes a band (g = 1) r is 0 and nothing changes, so bypass stays exact.

``band_correlation`` gives the c_b alone, as the network's pitch features (models that take a
``pcorr`` input, stage 13): how periodic each band is at the voice's period is evidence of speech
that no noise level or spectrum fakes easily (RNNoise feeds its network the same).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.signal import firwin

from realtime.dsp.erb import MIN_BAND_HZ, NB_ERB, erb_bands, erb_matrices

DECIMATE = 4  # the coarse search runs at a quarter of the rate (12 kHz at 48 kHz)
DECIM_TAPS = 32
F0_MIN, F0_MAX = 62.5, 800.0  # Hz: the periods searched
SILENT = 1e-10  # mean power of a window below which no period is looked for
EVERY = 2  # frames per period estimate: every 10 ms at a 5 ms hop, as RNNoise (halves the search's cost)
OCTAVE_SHARE = 0.9  # a shorter lag whose correlation reaches this share of the best one is the period


@njit(nogil=True, cache=True)
def _energy(s, a, n):
    """Sum of s[a : a + n] squared."""
    e = 0.0
    for i in range(a, a + n):
        e += s[i] * s[i]
    return e


@njit(nogil=True, cache=True)
def _best_lag(s, a0, n, e0, lo, hi, default):
    """The lag in [lo, hi] whose span s[a0 - lag : a0 - lag + n] correlates best (normalised) with
    s[a0 : a0 + n] (energy e0); ``default`` when the range is empty."""
    best_c, best = -2.0, default
    for lag in range(lo, hi + 1):
        num = 0.0
        el = 0.0
        for i in range(n):
            v = s[a0 - lag + i]
            num += s[a0 + i] * v
            el += v * v
        c = num / math.sqrt(e0 * el + 1e-30)
        if c > best_c:
            best_c, best = c, lag
    return best


@njit(nogil=True, cache=True)
def _push(hist, hist_d, taps, x, start, T, hop, win_len, D, tmin, tmax, pw, periods, frames, window, search, corr,
          last, count):
    """For each of T frames: shift its new hop into the histories, find the period, write the
    delayed, windowed frame into ``frames`` (zeros where no period: silence or search off)."""
    C = hist.shape[0]
    HL = hist.shape[1]
    HD = hist_d.shape[1]
    K = taps.shape[0]
    nd = hop // D
    pwd = pw // D
    lo, hi = (tmin + D - 1) // D, tmax // D
    for t in range(T):
        src = start + t * hop + win_len - hop
        fresh = count[0] % EVERY == 0  # a new period every EVERY frames; between, the last one holds
        count[0] += 1
        for ch in range(C):
            h = hist[ch]
            for i in range(HL - hop):
                h[i] = h[i + hop]
            for i in range(hop):
                h[HL - hop + i] = x[src + i, ch]
            hd = hist_d[ch]
            for i in range(HD - nd):
                hd[i] = hd[i + nd]
            for j in range(nd):  # decimated samples at full-rate positions HL - hop + (j + 1) * D - 1
                p = HL - hop + (j + 1) * D - 1
                acc = 0.0
                for k in range(K):
                    acc += taps[k] * h[p - k]
                hd[HD - nd + j] = acc
            periods[t, ch] = last[ch]  # a fresh frame overwrites it below (or zeroes it: silence)
            e_win = _energy(h, HL - win_len, win_len)
            if search and fresh and e_win > SILENT * win_len:
                # coarse: normalised correlation of the last pwd decimated samples with every
                # second lag l (the peak of a voice is wider than 2 samples at a quarter rate)
                a0 = HD - pwd
                e0 = _energy(hd, a0, pwd)
                el = _energy(hd, a0 - lo, pwd)
                best_c = -2.0
                n = 0
                for lag in range(lo, hi + 1, 2):
                    if lag > lo:  # slide the lagged span's energy two samples back
                        el += (hd[a0 - lag] * hd[a0 - lag] + hd[a0 - lag + 1] * hd[a0 - lag + 1]
                               - hd[a0 - lag + pwd] * hd[a0 - lag + pwd]
                               - hd[a0 - lag + pwd + 1] * hd[a0 - lag + pwd + 1])
                    num = 0.0
                    for i in range(pwd):
                        num += hd[a0 + i] * hd[a0 - lag + i]
                    c = num / math.sqrt(e0 * max(el, 0.0) + 1e-30)
                    corr[n] = c
                    n += 1
                    best_c = max(best_c, c)
                # a periodic signal correlates as well at 2T, 3T...: the shortest lag that is a peak
                # and nearly as good as the best (a comb at 2T also passes the noise halfway between
                # the harmonics)
                best_l = lo
                for j in range(n):
                    c = corr[j]
                    if c >= OCTAVE_SHARE * best_c and (j == 0 or c >= corr[j - 1]) and (j == n - 1 or c >= corr[j + 1]):
                        best_l = lo + 2 * j
                        break
                # the odd lags beside it, at the quarter rate; then the full rate around D * best_l
                best_l = _best_lag(hd, a0, pwd, e0, max(lo, best_l - 1), min(hi, best_l + 1), best_l)
                a0 = HL - pw
                periods[t, ch] = _best_lag(h, a0, pw, _energy(h, a0, pw), max(tmin, D * best_l - D // 2 - 1),
                                           min(tmax, D * best_l + D // 2 + 1), D * best_l)
            if not search or e_win <= SILENT * win_len:
                periods[t, ch] = 0
            last[ch] = periods[t, ch]
            lag = periods[t, ch]
            o = HL - win_len - lag
            for i in range(win_len):
                frames[t, ch, i] = h[o + i] * window[i] if lag > 0 else 0.0


@njit(nogil=True, cache=True)
def _band_sums(X, P, k0, k1):
    """Over bins k0..k1-1 of one frame's spectra: (|X|², |P|², Re(X·P*))."""
    ex = 0.0
    ep = 0.0
    exp_ = 0.0
    for k in range(k0, k1):
        xr, xi = X[k].real, X[k].imag
        pr, pi = P[k].real, P[k].imag
        ex += xr * xr + xi * xi
        ep += pr * pr + pi * pi
        exp_ += xr * pr + xi * pi
    return ex, ep, exp_


@njit(nogil=True, cache=True)
def _filter(X, P, Y, T, edges, b0, w0, strength, r, norm):
    """Y[t,ch,k] (float [.., 2], the network's output g·X) becomes g·X' (module docstring)."""
    NB = edges.shape[0] - 1
    F = X.shape[2]
    for t in range(T):
        for ch in range(X.shape[1]):
            for b in range(NB):
                ex, ep, exp_ = _band_sums(X[t, ch], P[t, ch], edges[b], edges[b + 1])
                ey = 0.0
                for k in range(edges[b], edges[b + 1]):
                    ey += Y[t, ch, k, 0] * Y[t, ch, k, 0] + Y[t, ch, k, 1] * Y[t, ch, k, 1]
                rb = 0.0
                if ex > 1e-20 and ep > 1e-20:
                    g = min(1.0, math.sqrt(ey / ex))
                    c = min(1.0, max(0.0, exp_ / math.sqrt(ex * ep)))
                    if c > g:
                        rb = 1.0
                    else:
                        rb = math.sqrt(min(1.0, c * c * (1.0 - g * g) / (0.001 + g * g * (1.0 - c * c))))
                    rb *= strength * math.sqrt(ex / ep)
                r[b] = rb
            # X' = X + r P per bin, then each band back to its input energy
            for b in range(NB):
                ex = 0.0
                enew = 0.0
                for k in range(edges[b], edges[b + 1]):
                    rk = w0[k] * r[b0[k]] + (1.0 - w0[k]) * r[min(b0[k] + 1, NB - 1)]
                    xr, xi = X[t, ch, k].real, X[t, ch, k].imag
                    nr, ni = xr + rk * P[t, ch, k].real, xi + rk * P[t, ch, k].imag
                    ex += xr * xr + xi * xi
                    enew += nr * nr + ni * ni
                norm[b] = math.sqrt(ex / enew) if enew > 1e-30 else 0.0
            for k in range(F):
                nk = w0[k] * norm[b0[k]] + (1.0 - w0[k]) * norm[min(b0[k] + 1, NB - 1)]
                rk = w0[k] * r[b0[k]] + (1.0 - w0[k]) * r[min(b0[k] + 1, NB - 1)]
                if rk == 0.0 and nk == 1.0:  # nothing added in this bin's bands: g·X as it is
                    continue
                xr, xi = X[t, ch, k].real, X[t, ch, k].imag
                px = xr * xr + xi * xi
                if px <= 1e-30:
                    continue
                yr, yi = Y[t, ch, k, 0], Y[t, ch, k, 1]
                gk = math.sqrt((yr * yr + yi * yi) / px)  # the network's gain for this bin
                Y[t, ch, k, 0] = gk * nk * (xr + rk * P[t, ch, k].real)
                Y[t, ch, k, 1] = gk * nk * (xi + rk * P[t, ch, k].imag)


@njit(nogil=True, cache=True)
def _band_corr(X, P, T, edges, out):
    """out[t, ch, b] = Re(sum X·P*) / sqrt(|X|²|P|²) over band b's bins, in [-1, 1]; 0 where
    either is silent (no period: P is zeros)."""
    NB = edges.shape[0] - 1
    for t in range(T):
        for ch in range(X.shape[1]):
            for b in range(NB):
                ex, ep, exp_ = _band_sums(X[t, ch], P[t, ch], edges[b], edges[b + 1])
                out[t, ch, b] = exp_ / math.sqrt(ex * ep) if ex > 1e-20 and ep > 1e-20 else 0.0


class PitchFilter:
    """Streaming pitch filter for an STFT of ``window`` (length N) at ``hop``; channels independent.

    Parameters
    ----------
    rate : int
        Sample rate of the STFT (the model's).
    window : np.ndarray
        Analysis window (length N, as the enhancer frames with).
    hop, channels, max_frames : int
        STFT hop, channel count and most frames per call.
    min_band_hz : float
        The narrowest ERB band (realtime/dsp/erb.py): the network's bands, which this filter pools.
    """

    def __init__(self, rate: int, window: np.ndarray, hop: int, channels: int, max_frames: int,
                 min_band_hz: float = MIN_BAND_HZ):
        N = window.shape[0]
        self.win_len, self.hop, self.window = N, hop, window.astype(np.float64)
        self.tmin = int(round(rate / F0_MAX))
        self.tmax = int(round(rate / F0_MIN))
        self.pw = 2 * N  # the span correlated: two windows (RNNoise: 20 ms)
        if hop % DECIMATE or self.pw % DECIMATE:
            raise ValueError(f"hop {hop} and window {N} must be multiples of {DECIMATE}")
        self.taps = firwin(DECIM_TAPS, 0.8 / DECIMATE).astype(np.float64)
        hl = self.tmax + self.pw + DECIM_TAPS
        self.hist = np.zeros((channels, hl), np.float64)
        self.hist_d = np.zeros((channels, (self.tmax + self.pw) // DECIMATE + 2), np.float64)
        self.frames = np.zeros((max_frames, channels, N), np.float64)
        self.spec = np.zeros((max_frames, channels, N // 2 + 1), np.complex128)
        self.periods = np.zeros((max_frames, channels), np.int64)  # per frame of the last call; 0: none
        F = N // 2 + 1
        widths = erb_bands(NB_ERB, F, rate, min_band_hz)
        self.edges = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
        # per bin: the first of the (at most two) bands the gains' triangular interpolation mixes,
        # and its weight; the other one is the next band with 1 - weight
        _, interp = erb_matrices(NB_ERB, F, rate, min_band_hz)
        self.b0 = np.argmax(interp > 0, axis=0).astype(np.int64)
        self.w0 = interp[self.b0, np.arange(F)].astype(np.float64)
        self._corr = np.zeros(self.tmax // DECIMATE + 1, np.float64)
        self._last = np.zeros(channels, np.int64)  # each channel's period of the frame before
        self._count = np.zeros(1, np.int64)  # frames taken in since the reset
        self._r = np.zeros(NB_ERB, np.float64)
        self._norm = np.zeros(NB_ERB, np.float64)

    def reset(self) -> None:
        self.hist.fill(0.0)
        self.hist_d.fill(0.0)
        self.periods.fill(0)
        self._last.fill(0)
        self._count.fill(0)

    def analyse(self, x: np.ndarray, start: int, T: int, search: bool = True) -> None:
        """Take in frames ``t < T`` (frame t = x[start + t*hop : start + t*hop + N], x (samples,
        channels)) and compute each one's pitch-delayed spectrum. ``search=False`` only keeps the
        history (the filter is off), so turning it on later starts from a full history."""
        _push(self.hist, self.hist_d, self.taps, x, start, T, self.hop, self.win_len, DECIMATE, self.tmin,
              self.tmax, self.pw, self.periods, self.frames, self.window, search, self._corr,
              self._last, self._count)
        if search:
            np.fft.rfft(self.frames[:T], axis=-1, out=self.spec[:T])

    def apply(self, X: np.ndarray, Y: np.ndarray, T: int, strength: float) -> None:
        """X: the input spectra (complex128 [T, C, F]); Y: the network's output g·X (float32
        [T, C, F, 2]), made g·X' in place. Call after ``analyse`` of the same frames."""
        _filter(X, self.spec, Y, T, self.edges, self.b0, self.w0, strength, self._r, self._norm)

    def band_correlation(self, X: np.ndarray, out: np.ndarray, T: int) -> None:
        """out[:T] (float [T, C, NB_ERB]) = each band's pitch correlation (``_band_corr``) of the
        input spectra X (complex128 [T, C, F]). Call after ``analyse`` (with the search on)."""
        _band_corr(X, self.spec, T, self.edges, out)


def pitch_features(x: np.ndarray, rate: int, window: np.ndarray, hop: int,
                   min_band_hz: float = MIN_BAND_HZ) -> np.ndarray:
    """Band pitch correlations of whole signals, framed as the enhancer's training STFT frames
    them (frame t = x[t*hop - (N - hop) : t*hop + hop], zeros before the start).

    x: (B, L) float, L a multiple of hop. Returns float32 [L // hop, B, NB_ERB], the values the
    streaming processor feeds the network for the same frames (same PitchFilter, fresh state).
    """
    B, L = x.shape
    N = window.shape[0]
    T = L // hop
    xp = np.zeros((L + N - hop, B), np.float64)
    xp[N - hop:] = x[:, : T * hop].T
    pf = PitchFilter(rate, window, hop, B, T, min_band_hz)
    pf.analyse(xp, 0, T)
    frames = np.lib.stride_tricks.sliding_window_view(xp, N, axis=0)[::hop][:T]  # [T, B, N]
    X = np.fft.rfft(frames * pf.window, axis=-1)
    out = np.zeros((T, B, NB_ERB), np.float32)
    pf.band_correlation(X, out, T)
    return out
