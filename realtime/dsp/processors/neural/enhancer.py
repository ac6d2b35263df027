"""Neural speech enhancer (ONNX Runtime only; never imports torch).

Model: ``models/enhancer/enhancer.onnx`` (see models/enhancer/MODEL_CARD.md): 48 kHz,
480-sample sqrt-Hann window, 240-sample hop, no look-ahead; ERB-band gains + a causal deep
filter driven by GRUs. Every recurrent state and the deep filter's frame history are explicit
ONNX inputs/outputs; this processor carries them between calls as numpy arrays.

Signal path per host block::

    block ─► sanitize (NaN/Inf -> 0, clip ±16) ─► [StreamResampler host->48k] ─► input FIFO
      ─► every 240 samples: frame, window, rFFT ─► ONNX (T frames per call, channels as batch)
      ─► |Y/X| raised to ≥ floor = 10^(−limit/20) per bin;  Y' = X + wet·(Y − X)
      ─► iFFT, window, overlap-add ─► output FIFO ─► [StreamResampler 48k->host] ─► block

Latency (reported in ``latency``, host samples): at 48 kHz, 239 samples of overlap-add plus a
240-sample re-blocking FIFO pre-fill = 479 samples (9.98 ms), for any host block size. At other
host rates the two streaming resamplers (realtime/resample.py: polyphase, no allocation per
block) add their filter delay and a re-blocking pre-fill (measured at ``prepare`` by pushing an
impulse through the exact same path): 44.1 kHz, any block size: see models/enhancer/MODEL_CARD.md.

Stereo: the channels go through the network as a batch of 2 (independent states); no downmix.

Digital silence (frames below -120 dB, e.g. idle ports before a stream starts) skips the network
and holds its state, so a long idle stretch does not drive the GRUs somewhere they never were
in training; the decision is per frame, so any block size gives the same output.

Knobs:
  atten_limit_db  0..100 dB: no bin is attenuated by more than this (where the network went
                  lower than 10^(−limit/20), the bin is the input bin scaled to that);
                  milder suppression is left untouched. Noise the network removes is therefore
                  pulled down by the knob's amount. 0 dB = bypass (the delayed input, exact up to
                  float rounding; the wet path fades in over the first dB), 100 dB = the
                  network's full suppression.
  wet             0..1 wet/dry, applied in the STFT domain, so the dry path is latency-aligned.
Both are smoothed per 5 ms hop (one-pole, ~30 ms).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from numba import njit

from realtime.dsp.processor import Param, Processor
from realtime.dsp.processors import register
from realtime.dsp.processors.neural.onnx import load_session as _load
from realtime.dsp.processors.neural.weights import model_file
from realtime.dsp.resample import StreamResampler
from realtime.errors import ModelError

DEFAULT_MODEL = model_file("enhancer", "enhancer.onnx")
REQUIRED_INPUTS = ("spec", "h_enc", "h_df", "df_hist")
MAX_T = 8  # frames per ONNX call (bigger host blocks are split into chunks of <= MAX_T frames)
IN_CLIP = 16.0
SILENCE_POWER = 1e-12  # mean power of a windowed frame below which it counts as silence (-120 dB)
BYPASS_FADE = 1.0 / (1.0 - 10.0 ** (-1.0 / 20.0))  # the mix fades in over the first dB of the limit


# ------------------------------------------------------------------------------------------
# Numba kernels (nogil): re-blocking, framing, blend, overlap-add
# ------------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def _stage_in(block, n, fifo, pos, clip):
    """Append block[:n, ch] to fifo[ch, pos:], NaN/Inf -> 0, clipped. Returns bad count."""
    bad = 0
    for i in range(n):
        for ch in range(fifo.shape[0]):
            v = block[i, ch]
            if not math.isfinite(v):
                v = 0.0
                bad += 1
            elif v > clip:
                v = clip
            elif v < -clip:
                v = -clip
            fifo[ch, pos + i] = v
    return bad


@njit(nogil=True, cache=True)
def _frames(fifo, start, T, hop, win, frames):
    """frames[t, ch, :] = fifo[ch, start + t*hop : start + t*hop + N] * win."""
    N = win.shape[0]
    for t in range(T):
        o = start + t * hop
        for ch in range(fifo.shape[0]):
            for i in range(N):
                frames[t, ch, i] = fifo[ch, o + i] * win[i]


@njit(nogil=True, cache=True)
def _narrow(src, T, dst):
    """dst[:T] = src[:T] (complex128 -> complex64, the model's input precision)."""
    for t in range(T):
        for ch in range(src.shape[1]):
            for f in range(src.shape[2]):
                dst[t, ch, f] = src[t, ch, f]


@njit(nogil=True, cache=True)
def _blend(X, Y, T, st, floor_t, mix_t, alpha):
    """Apply the knobs to the network output Y (in place), per frame and bin; X, Y [T,C,F,2].

    Attenuation limit: where |Y/X| is below ``floor`` the bin becomes floor * X, so no bin is
    pulled down by more than the limit, while milder suppression is left as the network made
    it. The noisy phase matters: a floored bin with the network's phase (the deep filter
    rotates it) partly cancels in the overlap-add, and brown noise came out 12 dB down at a
    6 dB limit; a scaled copy of the input overlap-adds back exactly.
    Mix: Y = X + w (Y - X) with w = mix, faded in over the first dB of the limit so that 0 dB
    is exact bypass. floor (st[0]) and mix (st[1]) are smoothed once per frame."""
    f, m = st[0], st[1]
    for t in range(T):
        f += alpha * (floor_t - f)
        m += alpha * (mix_t - m)
        if abs(floor_t - f) < 1e-7:
            f = floor_t
        if abs(mix_t - m) < 1e-7:
            m = mix_t
        w = m * min(1.0, (1.0 - f) * BYPASS_FADE)
        f2 = f * f
        for ch in range(X.shape[1]):
            for k in range(X.shape[2]):
                xr, xi = X[t, ch, k, 0], X[t, ch, k, 1]
                yr, yi = Y[t, ch, k, 0], Y[t, ch, k, 1]
                px = xr * xr + xi * xi
                py = yr * yr + yi * yi
                if py < f2 * px:
                    yr, yi = f * xr, f * xi
                Y[t, ch, k, 0] = xr + w * (yr - xr)
                Y[t, ch, k, 1] = xi + w * (yi - xi)
    st[0], st[1] = f, m


@njit(nogil=True, cache=True)
def _run_length(frames, T, thresh):
    """Length of the leading run of frames with signal (> 0) or of silent frames (< 0);
    a frame is silent when every channel's mean power is below thresh."""
    N = frames.shape[2]
    first = True
    first_loud = False
    k = 0
    for t in range(T):
        loud = False
        for ch in range(frames.shape[1]):
            e = 0.0
            for i in range(N):
                e += frames[t, ch, i] * frames[t, ch, i]
            if e > thresh * N:
                loud = True
        if first:
            first_loud = loud
            first = False
        elif loud != first_loud:
            break
        k += 1
    return k if first_loud else -k


@njit(nogil=True, cache=True)
def _ola(ybuf, T, hop, win, ola, out, opos):
    """Overlap-add T frames: out[ch, opos + t*hop + i] = ybuf[t,ch,i]*win[i] + tail."""
    for t in range(T):
        for ch in range(ybuf.shape[1]):
            for i in range(hop):
                out[ch, opos + t * hop + i] = ybuf[t, ch, i] * win[i] + ola[ch, i]
                ola[ch, i] = ybuf[t, ch, hop + i] * win[hop + i]


@njit(nogil=True, cache=True)
def _stage_out(fifo, start, block, n):
    for i in range(n):
        for ch in range(block.shape[1]):
            block[i, ch] = fifo[ch, start + i]


@njit(nogil=True, cache=True)
def _shift(buf, start, count):
    """Move buf[:, start:start+count] to buf[:, :count]."""
    if start == 0:
        return
    for ch in range(buf.shape[0]):
        for i in range(count):
            buf[ch, i] = buf[ch, start + i]


# ------------------------------------------------------------------------------------------
def load_session(path, provider: str = "auto", threads: int = 1):
    """The enhancer's session plus its framing metadata (sample rate, window, hop)."""
    sess, meta = _load(path, provider, threads, what="enhancer", required_inputs=REQUIRED_INPUTS,
                       train_hint="python main.py train enhancer")
    try:
        sr, win, hop = int(meta["sample_rate"]), int(meta["win"]), int(meta["hop"])
    except (KeyError, ValueError):
        raise ModelError(f"enhancer model {path} lacks sample_rate/win/hop metadata") from None
    return sess, sr, win, hop


@register
class Enhancer(Processor):
    kind = "enhancer"
    params = (
        Param("atten_limit_db", "Attenuation limit", 0.0, 100.0, 100.0, unit="dB", smoothing_ms=30.0),
        Param("wet", "Wet", 0.0, 1.0, 1.0, smoothing_ms=30.0),
    )

    def __init__(self, model_path=None, provider: str | None = None, threads: int = 1, **values):
        super().__init__(**values)
        self.model_path = Path(model_path) if model_path else DEFAULT_MODEL
        provider = provider or os.environ.get("RT_ENHANCER_PROVIDER", "auto")
        self.session, self.model_rate, self.win_len, self.hop = load_session(self.model_path, provider, threads)
        self.provider = self.session.get_providers()[0]  # e.g. "CPUExecutionProvider"
        self.threads = int(threads)
        self.nfreq = self.win_len // 2 + 1
        self._host_produced = 0
        self.nonfinite_count = 0  # input samples that were NaN/Inf (scrubbed to 0)
        self._latency = 0
        n = np.arange(self.win_len)
        self._win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * n / self.win_len)).astype(np.float32)

    # ---------------------------------------------------------------------------------------
    @property
    def latency(self) -> int:
        return self._latency

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self._latency / self.sample_rate if self.sample_rate else 0.0

    def _prepare(self) -> None:
        C, N, H, F = self.channels, self.win_len, self.hop, self.nfreq
        self._resample = int(round(self.sample_rate)) != self.model_rate
        ratio = self.model_rate / self.sample_rate
        max_in = int(math.ceil(self.max_block * ratio)) + 2048 if self._resample else self.max_block
        self._fifo_in = np.zeros((C, (N - H) + max_in + H), np.float32)
        self._fifo_out = np.zeros((C, max_in + 2 * H + 4096), np.float32)
        # float64 frames: numpy's rfft copies float32 input to float64 on every call (an
        # allocation per block); float64 in, complex128 out, it allocates nothing
        self._frames = np.zeros((MAX_T, C, N), np.float64)
        self._spec64 = np.zeros((MAX_T, C, F), np.complex128)
        self._spec = np.zeros((MAX_T, C, F), np.complex64)
        self._enh = np.zeros((MAX_T, C, F, 2), np.float32)
        self._ybuf = np.zeros((MAX_T, C, N), np.float32)
        self._ola = np.zeros((C, H), np.float32)
        self._cst = np.zeros(2, np.float64)  # smoothed (floor, mix)
        self._alpha = 1.0 - math.exp(-H / (self.params[0].smoothing_ms * 1e-3 * self.model_rate))
        # explicit model state, ping-pong between two sets (outputs of one call = inputs of next)
        shapes = {}
        for i in self.session.get_inputs()[1:]:
            shp = list(i.shape)
            shp[1] = C
            shapes[i.name] = tuple(int(s) for s in shp)
        self._state = [{k: np.zeros(s, np.float32) for k, s in shapes.items()} for _ in range(2)]
        self._parity = 0
        outs = [o.name for o in self.session.get_outputs()]
        self._bind = {}
        for T in range(1, MAX_T + 1):
            for p in (0, 1):
                io = self.session.io_binding()
                spec_f = self._spec[:T].view(np.float32).reshape(T, C, F, 2)
                io.bind_cpu_input("spec", spec_f)
                for k in shapes:
                    io.bind_cpu_input(k, self._state[p][k])
                io.bind_output(outs[0], "cpu", 0, np.float32, (T, C, F, 2), self._enh[:T].ctypes.data)
                for k, o in zip(shapes, outs[1:]):
                    arr = self._state[1 - p][k]
                    io.bind_output(o, "cpu", 0, np.float32, arr.shape, arr.ctypes.data)
                self._bind[(T, p)] = io
        self._spec_f = self._spec.view(np.float32).reshape(MAX_T, C, F, 2)
        self._rs_in = self._rs_out = None
        self._host_out = None
        if self._resample:
            sr = int(round(self.sample_rate))
            self._rs_in = StreamResampler(sr, self.model_rate, C, self.max_block)
            self._rs_out = StreamResampler(self.model_rate, sr, C, self._fifo_out.shape[1])
            self._stage = np.zeros((self.max_block, C), np.float32)
            self._stage_t = self._stage.T
            self._x_model = np.zeros((C, self._rs_in.max_out), np.float32)
            self._x_model_t = self._x_model.T  # [frames, C] view, as _core takes it
            self._host_out = np.zeros((C, self.max_block + self._rs_out.max_out + 8192), np.float32)
        # warm-up: first runs allocate ORT's arenas and JIT-compile the numba kernels
        self._host_prefill = 0
        self._reset_core()
        for T in (1, 2, MAX_T):
            self._run_model(T)
        blk = np.zeros((min(self.max_block, 512), C), np.float32)
        self._reset_core()
        self.process(blk)
        self._host_prefill = self._measure_prefill() if self._resample else 0
        self._latency = self._measure_latency()

    # ---------------------------------------------------------------------------------------
    def _reset_core(self) -> None:
        N, H = self.win_len, self.hop
        self._fifo_in[:] = 0
        self._n_in = N - H  # history (zeros) + new samples
        self._fifo_out[:] = 0
        self._n_out = H - 1  # pre-fill: makes any host block size work, latency N - 1 total
        self._ola[:] = 0
        for st in self._state:
            for a in st.values():
                a.fill(0.0)
        self._parity = 0
        self._cst[0] = 10.0 ** (-self.values[0] / 20.0)
        self._cst[1] = self.values[1]
        if self._resample:
            self._rs_in.reset()
            self._rs_out.reset()
            self._host_out[:] = 0
            self._n_host = self._host_prefill

    def reset(self) -> None:
        self._reset_core()

    def _run_model(self, T: int) -> None:
        io = self._bind[(T, self._parity)]
        self.session.run_with_iobinding(io)
        self._parity ^= 1
        st = self._state[self._parity]
        if not math.isfinite(float(st["h_enc"].sum()) + float(st["h_df"].sum())):
            for a in st.values():  # contain a numerical blow-up: start the state afresh
                a.fill(0.0)
        if not math.isfinite(float(self._enh[:T].sum())):  # never let a bad frame reach the OLA
            self._enh[:T] = self._spec_f[:T]

    def _core(self, x, n, bypass_model=False) -> None:
        """Push n model-rate samples (x: [n, C]) through framing/model/OLA into _fifo_out."""
        N, H = self.win_len, self.hop
        self.nonfinite_count += _stage_in(x, n, self._fifo_in, self._n_in, IN_CLIP)
        self._n_in += n
        avail = (self._n_in - (N - H)) // H
        start = 0
        floor = 10.0 ** (-self.values[0] / 20.0)
        mix = self.values[1]
        while avail > 0:
            T = min(avail, MAX_T)
            _frames(self._fifo_in, start, T, H, self._win, self._frames)
            np.fft.rfft(self._frames[:T], axis=-1, out=self._spec64[:T])
            _narrow(self._spec64, T, self._spec)
            # digital-silence gate, decided per frame (so any chunking gives the same result):
            # frames with no signal (< -120 dBFS, e.g. idle ports) do not run the network and
            # leave its state as it was; a run of frames with signal goes through in one call
            k = _run_length(self._frames, T, SILENCE_POWER)
            if k < 0:  # -k leading silent frames
                T = -k
                self._enh[:T] = self._spec_f[:T]
                if not bypass_model:  # the deep filter's history is frames of silence now
                    self._state[self._parity]["df_hist"].fill(0.0)
            elif bypass_model:
                T = k
                self._enh[:T] = self._spec_f[:T]
            else:
                T = k
                self._run_model(T)
            _blend(self._spec_f, self._enh, T, self._cst, floor, mix, self._alpha)
            Yc = self._enh[:T].view(np.complex64)[..., 0]
            np.fft.irfft(Yc, n=N, axis=-1, out=self._ybuf[:T])  # complex64 in, float32 out: no copy
            _ola(self._ybuf, T, H, self._win, self._ola, self._fifo_out, self._n_out)
            self._n_out += T * H
            start += T * H
            avail -= T
        if start:
            self._n_in -= start
            _shift(self._fifo_in, start, self._n_in)

    def _pop_core(self, n):
        self._n_out -= n
        _shift(self._fifo_out, n, self._n_out)

    def process(self, block: np.ndarray, _bypass_model: bool = False) -> None:
        n = block.shape[0]
        if n == 0:
            return
        if not self._resample:
            self._core(block, n, _bypass_model)
            _stage_out(self._fifo_out, 0, block, n)
            self._pop_core(n)
            return
        # host rate != model rate: streaming resampler in, FIFO, model, resampler out
        _stage_in(block, n, self._stage_t, 0, IN_CLIP)  # scrub before the resampler sees it
        m = self._rs_in.process(self._stage_t, n, self._x_model)
        if m:
            self._core(self._x_model_t, m, _bypass_model)
        if self._n_out:
            m = self._rs_out.process(self._fifo_out, self._n_out, self._host_out, self._n_host)
            self._pop_core(self._n_out)
            self._n_host += m
            self._host_produced += m
        if self._n_host < n:  # cannot happen with the measured pre-fill; never output garbage
            self._host_out[:, self._n_host : n] = 0
            self._n_host = n
        _stage_out(self._host_out, 0, block, n)
        self._n_host -= n
        _shift(self._host_out, n, self._n_host)

    # ---------------------------------------------------------------------------------------
    def _measure_prefill(self) -> int:
        """Largest output shortfall of the resampled path over any block pattern (1 s at 16-sample
        steps plus one max_block), so the host FIFO never runs dry."""
        self._host_prefill = 0
        self._reset_core()
        worst = 0
        step = 16
        z = np.zeros((self.max_block, self.channels), np.float32)
        total_in = 0
        self._host_produced = 0
        for size in [step] * int(self.sample_rate // step) + [self.max_block] * 3:
            self.process(z[:size], _bypass_model=True)
            total_in += size
            worst = max(worst, total_in - self._host_produced)
        self._reset_core()
        return worst + step

    def _measure_latency(self) -> int:
        """Impulse through the exact streaming path (model bypassed: PR synthesis)."""
        self._reset_core()
        L = int(0.1 * self.sample_rate) + self._host_prefill
        x = np.zeros((L, self.channels), np.float32)
        x[0, :] = 1.0
        size = max(1, min(self.max_block, 64))
        for s in range(0, L, size):
            self.process(x[s : s + size], _bypass_model=True)
        self._reset_core()
        return int(np.argmax(np.abs(x[:, 0])))
