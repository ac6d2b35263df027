"""Numba synthesis kernels for the DDSP synth: additive bank, filtered noise, reverb.

The maths mirrors the differentiable torch synth the decoders were trained through
(models/ddsp/model.py), delayed by exactly one frame so it can run causally:

- harmonic bank: per voice, f0 and the 64 harmonic amplitudes ramp linearly from the previous
  frame's values to this frame's over one hop, per sample; the phase is carried across blocks
  (no clicks at block edges); harmonics at or above Nyquist are muted. Each voice runs on its
  own frame grid, ``lag`` samples after the decoder's (voices.py): the frame decoded at boundary
  b is its ramp target from b + lag (a voice's pending frame). An event step (a note-on or a
  release start between boundaries) cuts in at its own sample: the voice ramps from where it is
  (from silence and phase 0 if it was silent) to the step's controls over the next hop.
  Harmonics come from the Chebyshev recurrence sin((k+1)x) = 2 cos(x) sin(kx) - sin((k-1)x)
  in float64, with samples in the inner loop so it vectorises: one sin and one cos per voice and
  sample, not per harmonic.
- noise: per frame, a zero-phase Hann-windowed FIR sampled at the 65 band magnitudes (same
  absolute band frequencies at any engine rate), applied to uniform noise and overlap-added.
  Voices share one noise stream: the bands are combined as sqrt(sum of squares), which gives the
  same expected power as independent noise per voice at the cost of one filter, not 32. A voice
  whose grid lags the decoder's by d adds, per frame, its previous frame's power for d samples of
  the hop and this frame's for the rest; a step that starts a note adds its own noise from its
  event (one partial frame of it, up to the next boundary's).
- reverb: a small feedback delay network (4 lines, Householder feedback), stereo out.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.kernels import flush_denormal, glide
from realtime.dsp.processors.synth.voices import (
    ES_F0,
    ES_FRESH,
    ES_GAIN,
    ES_KIND,
    ES_RESET,
    ES_T,
    ES_V,
    K_BALANCE,
    K_BRIGHT,
    K_GAIN,
    K_REVERB,
)

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
    f = np.arange(n_bands) * band_hz
    tab = fac[:, None] * np.cos(2 * np.pi * f[:, None] * m[None, :] / sr)
    tab[f > 0.5 * sr] = 0.0  # bands above Nyquist (rates under 24 kHz) are muted, not folded back
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
def _target(a_to, v, h, hgain, tilt):
    """Voice v's ramp target from one frame's harmonic amplitudes h: clamped (a broken model's NaN
    or negative values are silence, never noise), tilted by Brightness at the same total."""
    K = a_to.shape[1]  # the bank: the most harmonics of any loaded instrument
    Kh = min(K, h.shape[0])  # this instrument's
    s0 = 0.0
    s1 = 0.0
    for k in range(Kh, K):  # harmonics this instrument's decoder does not have stay silent
        a_to[v, k] = 0.0
    for k in range(Kh):
        a = h[k]
        if not (a >= 0.0):
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


@njit(nogil=True, cache=True)
def _new_frame(j, T, harm, noise, act, f0_in, n_used, kv, a_from, a_to, f_from, f_to, live, kscale):
    """At a frame boundary: this frame's controls become ramp targets. Returns nothing; fills
    kscale (n_bands) with the combined noise magnitudes of the sounding voices. (Every voice at
    once, at the boundary: what ``_pend`` and ``_begin``, which ``render`` runs, do for voices
    whose grid does not lag the decoder's.)"""
    hgain = min(1.0, max(0.0, 1.0 - kv[K_BALANCE]))
    ngain = min(1.0, max(0.0, 1.0 + kv[K_BALANCE]))
    tilt = kv[K_BRIGHT]
    K = a_to.shape[1]
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
        _target(a_to, v, harm[v, j], hgain * act[j, v], tilt)
        live[v] = 1.0
        for b in range(nb):
            m = noise[v, j, b]
            if m >= 0.0:
                m = act[j, v] * min(m, 4.0)
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
    """Add voice v's harmonic bank for block samples [s, e) into out (float64), its ramp the
    frame's: from the boundary at or before pos + s, one hop long."""
    _harmonics_ramp(out, s, e, pos, float(pos + s - (pos + s) % hop), float(hop), sr, v, phase, a_from, a_to, f_from,
                    f_to, sn, c2, sp, w)


@njit(nogil=True, cache=True, fastmath=True)
def _harmonics_ramp(out, s, e, pos, p0, span, sr, v, phase, a_from, a_to, f_from, f_to, sn, c2, sp, w):
    """Add voice v's harmonic bank for block samples [s, e) into out (float64), on a ramp from
    a_from/f_from at absolute sample p0 to a_to/f_to at p0 + span. [s, e) never crosses the end
    of the ramp, so f0 ramps linearly in it and the fundamental's phasor follows from two complex
    rotations per sample instead of a sin and a cos."""
    L = e - s
    if L <= 0:
        return
    r0 = pos + s - p0
    hop = span
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


# per-voice scalars of the render kernel (vr[voice, VR_*]): where its ramp starts (absolute
# sample); its pending frame's start (-1: none), f0 and whether it sounds; whether the noise
# magnitudes of its current ramp target (nz_cur) are on
VR_P0, VR_PT, VR_PF, VR_PON, VR_CON, NVR = range(6)


@njit(nogil=True, cache=True)
def _ramp_at(v, now, hop, a_from, a_to, f_from, f_to, vr):
    """Voice v's ramp cut at absolute sample ``now``: a_from / f_from where it is there (its target
    itself once the ramp is complete)."""
    x = (now - vr[v, VR_P0]) / hop
    if x >= 1.0:
        for i in range(a_to.shape[1]):
            a_from[v, i] = a_to[v, i]
        f_from[v] = f_to[v]
    elif x > 0.0:
        for i in range(a_to.shape[1]):
            a_from[v, i] = a_from[v, i] + (a_to[v, i] - a_from[v, i]) * x
        f_from[v] = f_from[v] + (f_to[v] - f_from[v]) * x


@njit(nogil=True, cache=True)
def _begin(v, now, hop, phase, a_from, a_to, f_from, f_to, live, vr, p_a, nz_cur, nz_pend):
    """Voice v's pending frame becomes its ramp target at absolute sample ``now`` (its time)."""
    was = live[v] > 0.0
    if was:
        _ramp_at(v, now, hop, a_from, a_to, f_from, f_to, vr)
    if vr[v, VR_PON] > 0.0:
        for i in range(a_to.shape[1]):
            a_to[v, i] = p_a[v, i]
        f_to[v] = vr[v, VR_PF]
        if not was:  # from silence: phase 0, no glide in from a stale pitch
            f_from[v] = f_to[v]
            phase[v] = 0.0
        live[v] = 1.0
        for b in range(nz_cur.shape[1]):
            nz_cur[v, b] = nz_pend[v, b]
        vr[v, VR_CON] = 1.0
    else:
        if was:
            ramp = 0.0
            for i in range(a_to.shape[1]):
                a_to[v, i] = 0.0
                ramp += a_from[v, i]
            live[v] = 1.0 if ramp > 0.0 else 0.0  # synthesized while its ramp down to silence lasts
        vr[v, VR_CON] = 0.0
    vr[v, VR_P0] = now
    vr[v, VR_PT] = -1.0


@njit(nogil=True, cache=True)
def _pend(j, harm, noise, act, lag, f0_in, n_used, kv, b0, hop, vr, p_a, nz_cur, nz_pend, kscale):
    """At the decoder's boundary b0 (absolute): frame j becomes each voice's pending frame, from
    b0 + its lag, at its gain (act[j]: its channel's volume; 0: silent). Fills kscale with the
    combined noise magnitudes of the hop after b0 + hop."""
    hgain = min(1.0, max(0.0, 1.0 - kv[K_BALANCE]))
    ngain = min(1.0, max(0.0, 1.0 + kv[K_BALANCE]))
    tilt = kv[K_BRIGHT]
    nb = kscale.shape[0]
    kscale[:] = 0.0
    for v in range(p_a.shape[0]):
        d = lag[j, v]
        vr[v, VR_PT] = b0 + d
        on = v < n_used and act[j, v] > 0.0
        vr[v, VR_PON] = 1.0 if on else 0.0
        if on:
            vr[v, VR_PF] = f0_in[v, j]
            gv = act[j, v]
            _target(p_a, v, harm[v, j], hgain * gv, tilt)
            for b in range(nb):
                m = noise[v, j, b] if b < noise.shape[2] else 0.0
                m = gv * min(m, 4.0) if m >= 0.0 else 0.0
                nz_pend[v, b] = m
                if d == 0.0:
                    kscale[b] += m * m
                else:
                    kscale[b] += (hop - d) * m * m / hop
        if d > 0.0 and vr[v, VR_CON] > 0.0:  # the voice's current frame's noise for d samples of that hop
            for b in range(nb):
                kscale[b] += d * nz_cur[v, b] * nz_cur[v, b] / hop
    for b in range(nb):
        kscale[b] = ngain * math.sqrt(kscale[b])


@njit(nogil=True, cache=True)
def _step_in(k, now, hop, es, es_harm, es_noise, kv, phase, a_from, a_to, f_from, f_to, live, vr, nz_cur):
    """Event step k cuts in on its voice at absolute sample ``now``: the voice ramps from where it
    is (from silence and phase 0 if it was silent) to the step's controls over one hop; a pending
    frame that has not begun (decoded before the event) is dropped."""
    v = int(es[k, ES_V])
    f = es[k, ES_F0]
    if live[v] > 0.0:
        _ramp_at(v, now, hop, a_from, a_to, f_from, f_to, vr)
    else:
        a_from[v, :] = 0.0
        f_from[v] = f
        phase[v] = 0.0
    gv = es[k, ES_GAIN]
    _target(a_to, v, es_harm[k], gv * min(1.0, max(0.0, 1.0 - kv[K_BALANCE])), kv[K_BRIGHT])
    f_to[v] = f
    for b in range(nz_cur.shape[1]):
        m = es_noise[k, b] if b < es_noise.shape[1] else 0.0
        nz_cur[v, b] = gv * min(m, 4.0) if m >= 0.0 else 0.0
    vr[v, VR_CON] = 1.0
    vr[v, VR_P0] = now
    vr[v, VR_PT] = -1.0
    live[v] = 1.0


@njit(nogil=True, cache=True)
def render(block, n, pos, hop, sr, T, harm, noise, act, lag, f0_in, n_used, kv, phase, a_from, a_to,
           f_from, f_to, live, vr, p_a, nz_cur, nz_pend, es, n_es, es_harm, es_noise, kscale, table, ir, xbuf, conv,
           rng, ring, noise_scale, mono, sn, c2, sp, w, smooth, rev_buf, rev_pos, rev_len):
    """Synthesize n samples and add them to block (n, channels). Per voice: its ramp (a_*, f_*,
    one hop long from vr[:, VR_P0]), its pending frame (p_a and vr) and its noise magnitudes
    (nz_*); es[:n_es]: the block's event steps (voices.py), es_harm / es_noise their controls;
    act: each voice's gain per frame (its channel's volume, CC7; 0: silent), es[:, ES_GAIN] at a step."""
    first = (hop - pos % hop) % hop
    mono[:n] = 0.0
    fhop = float(hop)
    ngain = min(1.0, max(0.0, 1.0 + kv[K_BALANCE]))
    seg_s = 0
    k0 = 0
    for j in range(T + 1):
        seg_e = first + j * hop if j < T else n
        k1 = k0  # the steps whose events are in this segment
        while k1 < n_es and es[k1, ES_T] < seg_e:
            k1 += 1
        for v in range(a_to.shape[0]):
            s = seg_s
            for k in range(k0, k1 + 1):  # each step of this voice, then the segment's end
                if k < k1:
                    if es[k, ES_V] != v or es[k, ES_KIND] == ES_RESET:
                        continue
                    e = int(es[k, ES_T])
                else:
                    e = seg_e
                pt = vr[v, VR_PT]
                if pt >= 0.0 and pt - pos < e:  # its pending frame begins first
                    b = int(pt - pos)
                    if live[v] > 0.0:
                        _harmonics_ramp(mono, s, b, pos, vr[v, VR_P0], fhop, sr, v, phase, a_from, a_to, f_from,
                                        f_to, sn, c2, sp, w)
                    _begin(v, pt, fhop, phase, a_from, a_to, f_from, f_to, live, vr, p_a, nz_cur, nz_pend)
                    s = b
                if live[v] > 0.0:
                    _harmonics_ramp(mono, s, e, pos, vr[v, VR_P0], fhop, sr, v, phase, a_from, a_to, f_from, f_to,
                                    sn, c2, sp, w)
                s = e
                if k < k1:
                    _step_in(k, float(pos + e), fhop, es, es_harm, es_noise, kv, phase, a_from, a_to, f_from, f_to,
                             live, vr, nz_cur)
        for k in range(k0, k1):
            # a new note's noise from its event on (as the frames' noise, one hop after its
            # harmonics), up to where the next boundary's noise takes it over
            if es[k, ES_KIND] == ES_FRESH:
                for b in range(kscale.shape[0]):
                    m = es_noise[k, b] if b < es_noise.shape[1] else 0.0
                    kscale[b] = ngain * es[k, ES_GAIN] * min(m, 4.0) if m >= 0.0 else 0.0
                t = int(es[k, ES_T])
                length = seg_e - t if j < T else first + T * hop - t
                # at most a hop: the scratch buffers hold one (steps come in time order)
                _noise_frame(kscale, table, ir, xbuf, conv, rng, ring, pos + t + hop, min(hop, max(0, length)),
                             noise_scale)
        k0 = k1
        if j == T:
            break
        _pend(j, harm, noise, act, lag, f0_in, n_used, kv, float(pos + seg_e), fhop, vr, p_a, nz_cur, nz_pend, kscale)
        _noise_frame(kscale, table, ir, xbuf, conv, rng, ring, pos + seg_e + hop, hop, noise_scale)
        seg_s = seg_e
    # noise from the overlap-add ring, then gain (the knob, smoothed; CC7 is each voice's) and reverb
    mask = ring.shape[0] - 1
    g_target = 10.0 ** (kv[K_GAIN] / 20.0)
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
