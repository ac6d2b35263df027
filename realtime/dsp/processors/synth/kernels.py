"""Numba synthesis kernels for the DDSP synth: additive bank, filtered noise, reverb.

The maths mirrors the differentiable torch synth the decoders were trained through
(models/ddsp/model.py), delayed by exactly one frame so it can run causally:

- harmonic bank: per voice, f0 and the 64 harmonic amplitudes ramp linearly from the previous
  frame's values to this frame's over one hop, per sample; the phase is carried across blocks
  (no clicks at block edges); harmonics at or above Nyquist are muted. Harmonics come from the
  Chebyshev recurrence sin((k+1)x) = 2 cos(x) sin(kx) - sin((k-1)x) in float64, with samples in
  the inner loop so it vectorises: one sin and one cos per voice and sample, not per harmonic.
- noise: per frame, a zero-phase Hann-windowed FIR sampled at the 65 band magnitudes (same
  absolute band frequencies at any engine rate), applied to uniform noise and overlap-added.
  Voices share one noise stream: the bands are combined as sqrt(sum of squares), which gives the
  same expected power as independent noise per voice at the cost of one filter, not 32.
- reverb: a small feedback delay network (4 lines, Householder feedback), stereo out.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.kernels import flush_denormal, glide
from realtime.dsp.processors.synth.voices import K_BALANCE, K_BRIGHT, K_GAIN, K_REVERB

TRAIN_SR = 24000.0
TRAIN_TAPS = 128
REVERB_DELAYS_48K = (1447, 1811, 2137, 2659)
REVERB_DECAY = 0.84


def noise_table(n_bands: int, band_hz: float, taps: int, sr: float) -> np.ndarray:
    """(n_bands, taps) so that ir = magnitudes @ table equals the torch irfft + roll + Hann."""
    m = np.arange(taps) - taps // 2
    w = np.hanning(taps) if taps > 1 else np.ones(1)
    fac = np.full(n_bands, 2.0)
    fac[0] = 1.0
    fac[-1] = 1.0
    tab = fac[:, None] * np.cos(2 * np.pi * np.arange(n_bands)[:, None] * band_hz * m[None, :] / sr)
    return (tab * w[None, :] / taps).astype(np.float64)


def noise_taps(sr: float) -> int:
    return int(round(TRAIN_TAPS * sr / TRAIN_SR))


@njit(nogil=True, cache=True)
def _xorshift(rng):
    x = rng[0]
    x ^= (x << np.uint64(13))
    x ^= (x >> np.uint64(7))
    x ^= (x << np.uint64(17))
    rng[0] = x
    return (x >> np.uint64(11)) * (1.0 / 9007199254740992.0) * 2.0 - 1.0


@njit(nogil=True, cache=True)
def _new_frame(j, T, harm, noise, act, f0_in, n_used, kv, a_from, a_to, f_from, f_to, live, kscale):
    """At a frame boundary: this frame's controls become ramp targets. Returns nothing; fills
    kscale (n_bands) with the combined noise magnitudes of the sounding voices."""
    hgain = min(1.0, max(0.0, 1.0 - kv[K_BALANCE]))
    ngain = min(1.0, max(0.0, 1.0 + kv[K_BALANCE]))
    tilt = kv[K_BRIGHT]
    K = a_to.shape[1]  # the bank: the most harmonics of any loaded instrument
    Kh = min(K, harm.shape[2])  # this instrument's
    nb = kscale.shape[0]
    kscale[:] = 0.0
    for v in range(a_to.shape[0]):
        was_live = live[v]
        for k in range(K):
            a_from[v, k] = a_to[v, k]
        f_from[v] = f_to[v]
        on = v < n_used and act[j, v] > 0.0
        if not on:
            for k in range(K):
                a_to[v, k] = 0.0
            # keep synthesizing while the ramp down to silence is still under way
            ramp = 0.0
            if was_live > 0.0:
                for k in range(K):
                    ramp += a_from[v, k]
            live[v] = 1.0 if ramp > 0.0 else 0.0
            continue
        f = f0_in[v, j]
        f_to[v] = f
        if was_live == 0.0:
            f_from[v] = f  # a voice starting from silence does not glide in from a stale pitch
        s0 = 0.0
        s1 = 0.0
        for k in range(Kh, K):  # harmonics this instrument's decoder does not have stay silent
            a_to[v, k] = 0.0
        for k in range(Kh):
            a = harm[v, j, k]
            if not (a >= 0.0):  # NaN or negative from a broken model: silence, never noise
                a = 0.0
            a = min(a, 2.0)
            s0 += a
            if tilt != 0.0:
                a *= (k + 1.0) ** tilt
            s1 += a
            a_to[v, k] = a
        norm = hgain * (s0 / s1 if s1 > 0.0 else 0.0)
        for k in range(K):
            a_to[v, k] *= norm
        live[v] = 1.0
        for b in range(nb):
            m = noise[v, j, b]
            if m >= 0.0:
                m = min(m, 4.0)
                kscale[b] += m * m
    for b in range(nb):
        kscale[b] = ngain * math.sqrt(kscale[b])


@njit(nogil=True, cache=True, fastmath=True)
def _noise_frame(kscale, table, ir, xbuf, conv, rng, ring, start, hop, scale):
    taps = table.shape[1]
    any_on = False
    for b in range(kscale.shape[0]):
        if kscale[b] > 0.0:
            any_on = True
    if not any_on:
        return
    ir[:] = 0.0
    for b in range(table.shape[0]):
        m = kscale[b]
        if m != 0.0:
            for i in range(taps):
                ir[i] += m * table[b, i]
    for i in range(hop):
        xbuf[i] = _xorshift(rng) * scale
    # direct convolution into a linear scratch (vectorises over taps), then into the ring
    n_out = hop + taps - 1
    for i in range(n_out):
        conv[i] = 0.0
    for i in range(hop):
        x = xbuf[i]
        for t in range(taps):
            conv[i + t] += x * ir[t]
    mask = ring.shape[0] - 1
    for i in range(n_out):
        ring[(start + i) & mask] += conv[i]


@njit(nogil=True, cache=True, fastmath=True)
def _harmonics(out, s, e, pos, hop, sr, v, phase, a_from, a_to, f_from, f_to, sn, c2, sp, w):
    """Add voice v's harmonic bank for block samples [s, e) into out (float64). [s, e) never
    crosses a frame boundary, so f0 ramps linearly in it and the fundamental's phasor follows
    from two complex rotations per sample instead of a sin and a cos."""
    L = e - s
    if L <= 0:
        return
    r0 = (pos + s) % hop
    inc_a = (f_from[v] + (f_to[v] - f_from[v]) * r0 / hop) / sr  # cycles per sample, first sample
    dinc = (f_to[v] - f_from[v]) / (hop * sr)  # its change per sample
    ph0 = phase[v]
    x = 2.0 * math.pi * (ph0 + inc_a)
    zr, zi = math.cos(x), math.sin(x)
    x = 2.0 * math.pi * (inc_a + dinc)
    rr, ri = math.cos(x), math.sin(x)
    x = 2.0 * math.pi * dinc
    dr, di = math.cos(x), math.sin(x)
    for i in range(L):
        w[i] = (r0 + i) / hop
        sn[i] = zi
        c2[i] = 2.0 * zr
        sp[i] = 0.0
        zr, zi = zr * rr - zi * ri, zr * ri + zi * rr
        rr, ri = rr * dr - ri * di, rr * di + ri * dr
    ph = ph0 + L * inc_a + dinc * 0.5 * (L - 1) * L
    phase[v] = ph - math.floor(ph)
    fmax = max(f_from[v], f_to[v])
    K = a_to.shape[1]
    # highest audible harmonic below Nyquist (the Nyquist test is monotone in k); the trained
    # softmax leaves every harmonic a little energy, and those under -120 dBFS are not worth
    # computing
    kmax = 0
    for k in range(K):
        if (k + 1) * fmax >= 0.5 * sr:
            break
        if a_from[v, k] > 1e-6 or a_to[v, k] > 1e-6:
            kmax = k + 1
    # four harmonics per pass over the samples: the recurrence stays in registers
    o = out[s:e]
    sn = sn[:L]
    c2 = c2[:L]
    sp = sp[:L]
    w = w[:L]
    k = 0
    while k + 4 <= kmax:
        a0 = a_from[v, k]
        d0 = a_to[v, k] - a0
        a1 = a_from[v, k + 1]
        d1 = a_to[v, k + 1] - a1
        a2 = a_from[v, k + 2]
        d2 = a_to[v, k + 2] - a2
        a3 = a_from[v, k + 3]
        d3 = a_to[v, k + 3] - a3
        for i in range(L):
            c = c2[i]
            wi = w[i]
            s0 = sn[i]
            s1 = c * s0 - sp[i]
            s2 = c * s1 - s0
            s3 = c * s2 - s1
            o[i] += (a0 + d0 * wi) * s0 + (a1 + d1 * wi) * s1 + (a2 + d2 * wi) * s2 + (a3 + d3 * wi) * s3
            sp[i] = s3
            sn[i] = c * s3 - s2
        k += 4
    while k < kmax:
        a0 = a_from[v, k]
        d0 = a_to[v, k] - a0
        for i in range(L):
            cur = sn[i]
            o[i] += (a0 + d0 * w[i]) * cur
            nxt = c2[i] * cur - sp[i]
            sp[i] = cur
            sn[i] = nxt
        k += 1


@njit(nogil=True, cache=True)
def render(block, n, pos, hop, sr, T, harm, noise, act, f0_in, n_used, kv, vol, phase, a_from, a_to,
           f_from, f_to, live, kscale, table, ir, xbuf, conv, rng, ring, noise_scale, mono, sn, c2, sp, w,
           smooth, rev_buf, rev_pos, rev_len):
    """Synthesize n samples and add them to block (n, channels)."""
    first = (hop - pos % hop) % hop
    mono[:n] = 0.0
    seg_s = 0
    for j in range(T + 1):
        seg_e = first + j * hop if j < T else n
        for v in range(a_to.shape[0]):
            if live[v] > 0.0:
                _harmonics(mono, seg_s, seg_e, pos, hop, sr, v, phase, a_from, a_to, f_from, f_to, sn, c2, sp, w)
        if j == T:
            break
        _new_frame(j, T, harm, noise, act, f0_in, n_used, kv, a_from, a_to, f_from, f_to, live, kscale)
        _noise_frame(kscale, table, ir, xbuf, conv, rng, ring, pos + seg_e + hop, hop, noise_scale)
        seg_s = seg_e
    # noise from the overlap-add ring, then gain (knob x CC7 volume, smoothed) and reverb
    mask = ring.shape[0] - 1
    g_target = 10.0 ** (kv[K_GAIN] / 20.0) * vol * vol
    mix_target = kv[K_REVERB]
    g = smooth[0]
    mix = smooth[1]
    c = smooth[2]
    ch = block.shape[1]
    for i in range(n):
        idx = (pos + i) & mask
        y = mono[i] + ring[idx]
        ring[idx] = 0.0
        g = glide(g, g_target, c)
        mix = glide(mix, mix_target, c)
        y *= g
        # 4-line FDN, always running so its tail outlives a mix change: read, Householder
        # mix (x - 2/N sum), feed back with decay
        r0 = rev_buf[0, (rev_pos[0] - rev_len[0]) % rev_buf.shape[1]]
        r1 = rev_buf[1, (rev_pos[0] - rev_len[1]) % rev_buf.shape[1]]
        r2 = rev_buf[2, (rev_pos[0] - rev_len[2]) % rev_buf.shape[1]]
        r3 = rev_buf[3, (rev_pos[0] - rev_len[3]) % rev_buf.shape[1]]
        hsum = 0.5 * (r0 + r1 + r2 + r3)
        wp = rev_pos[0] % rev_buf.shape[1]
        inp = 0.25 * y
        rev_buf[0, wp] = flush_denormal(REVERB_DECAY * (r0 - hsum) + inp)
        rev_buf[1, wp] = flush_denormal(REVERB_DECAY * (r1 - hsum) + inp)
        rev_buf[2, wp] = flush_denormal(REVERB_DECAY * (r2 - hsum) + inp)
        rev_buf[3, wp] = flush_denormal(REVERB_DECAY * (r3 - hsum) + inp)
        rev_pos[0] += 1
        wl = (1.0 - mix) * y + mix * (r0 + r2)
        wr = (1.0 - mix) * y + mix * (r1 + r3)
        if ch == 1:
            block[i, 0] += 0.5 * (wl + wr)
        else:
            block[i, 0] += wl
            block[i, 1] += wr
    smooth[0] = g
    smooth[1] = mix
