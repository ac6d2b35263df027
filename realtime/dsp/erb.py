"""ERB-scale bands of the enhancer's spectrum (numpy only): the network's band features and
gains (models/enhancer/model.py) and the runtime's pitch filter (realtime/dsp/pitch.py) pool the
same bands, so they are defined once, here."""
from __future__ import annotations

import numpy as np

SR = 48000
NFREQ = 241  # a 480-sample window's bins
NB_ERB = 32
MIN_BAND_HZ = 200.0  # the narrowest band by default: 2 bins of a 480-sample frame, 4 of a 960-sample one


def erb_bands(n_bands=NB_ERB, n_freqs=NFREQ, sr=SR, min_band_hz=MIN_BAND_HZ) -> list[int]:
    """Band widths (in bins) on the ERB scale, at least ``min_band_hz`` wide (whole bins, at least
    one), summing to n_freqs. The same ``min_band_hz`` gives a longer frame's bands the same Hz."""
    def hz2erb(f):
        return 21.4 * np.log10(1 + 0.00437 * f)

    def erb2hz(e):
        return (10 ** (e / 21.4) - 1) / 0.00437

    bin_hz = sr / 2 / (n_freqs - 1)
    min_bins = max(1, int(round(min_band_hz / bin_hz)))
    edges = erb2hz(np.linspace(0, hz2erb(sr / 2), n_bands + 1))
    widths = []
    prev = 0
    for k in range(1, n_bands + 1):
        e = int(round(edges[k] / bin_hz))
        w = e - prev
        w = max(w, min_bins)
        widths.append(w)
        prev += w
    # fix the total
    total = sum(widths)
    widths[-1] += n_freqs - total
    while widths[-1] < min_bins:  # steal from wider bands
        j = int(np.argmax(widths[:-1]))
        widths[j] -= 1
        widths[-1] += 1
    assert sum(widths) == n_freqs and min(widths) >= 1, widths
    return widths


def erb_matrices(n_bands=NB_ERB, n_freqs=NFREQ, sr=SR, min_band_hz=MIN_BAND_HZ) -> tuple[np.ndarray, np.ndarray]:
    """(pool [F, NB] mean-power pooling, interp [NB, F] triangular gain interpolation)."""
    widths = erb_bands(n_bands, n_freqs, sr, min_band_hz)
    pool = np.zeros((n_freqs, n_bands), np.float32)
    centers = []
    s = 0
    for b, w in enumerate(widths):
        pool[s : s + w, b] = 1.0 / w
        centers.append(s + (w - 1) / 2)
        s += w
    interp = np.zeros((n_bands, n_freqs), np.float32)
    c = np.array(centers)
    for f in range(n_freqs):
        if f <= c[0]:
            interp[0, f] = 1
        elif f >= c[-1]:
            interp[-1, f] = 1
        else:
            j = int(np.searchsorted(c, f) - 1)
            t = (f - c[j]) / (c[j + 1] - c[j])
            interp[j, f] = 1 - t
            interp[j + 1, f] = t
    return pool, interp
