"""Neural speech enhancer (ONNX Runtime only; never imports torch).

Model: ``models/enhancer/enhancer.onnx`` (see models/enhancer/MODEL_CARD.md): 48 kHz,
480-sample sqrt-Hann window (or, metadata ``window`` = asymmetric-sqrt-hann, a longer analysis
window whose synthesis window spans only its last 2 hops: realtime/dsp/stft_windows.py; the same
latency), 240-sample hop, no look-ahead; ERB-band gains from GRUs (models
before stage 11 also have a causal deep filter for the low bins). Every recurrent state (and a
deep filter's frame history) is an explicit ONNX input/output, whatever states a model has: this
processor carries them between calls as numpy arrays.

Signal path per host block::

    block ─► scrub (NaN/Inf -> 0, clip ±16) ─► [StreamResampler host->48k] ─► FixedHop input
      ─► DC blocker (one pole, 5 Hz: a recorder's offset out; the dry path too)
      ─► every 240 samples: frame, window, rFFT ─► [period search; band pitch correlations]
      ─► ONNX (T frames per call, channels as batch)
      ─► [pitch filter: Y = g·X becomes g·X', X' = X + r·P, P the window one voice period earlier]
      ─► |Y/X| raised to ≥ floor = 10^(−limit/20) per bin;  Y' = X + wet·(Y − X)
      ─► iFFT, synthesis window (its last 2 hops), overlap-add ─► FixedHop output ─► [StreamResampler 48k->host] ─► block

Latency (reported in ``latency``, host samples): at the model rate, the synthesis overlap
(hop) plus the re-blocking pre-fill (hop - 1, realtime/dsp/blocking.py) = 2·hop - 1, for any
host block size and analysis window. At other host rates the two streaming resamplers (realtime/dsp/resample.py:
polyphase, no allocation per block) add their filter delay and a host-side pre-fill, both measured
at ``prepare`` by pushing an impulse through the exact same path (figures: the model card).

Pitch features: a model with a ``pcorr`` input (stage 13) also gets, per frame, each ERB band's
pitch correlation (realtime/dsp/pitch.py, the same PitchFilter that combs): the period search then
runs whatever the pitch_filter knob says, ahead of the network, and the values equal what the
training workers computed for whole segments.

Stereo: the channels go through the network as a batch of 2 (independent states); no downmix.

Digital silence (frames below -120 dB: pauses in produced voice files, idle ports): the network
runs through the first second of it, as it did through the pauses of its training speech, then
stops and holds its state, so an idle port costs nothing; the decision is per frame, so any block
size gives the same output.

Knobs:
  atten_limit_db  0..100 dB: no bin is attenuated by more than this (where the network went
                  lower than 10^(−limit/20), the bin is the input bin scaled to that);
                  milder suppression is left untouched. Noise the network removes is therefore
                  pulled down by the knob's amount. 0 dB = bypass (the delayed input, exact up to
                  float rounding; the wet path fades in over the first dB), 100 dB = the
                  network's full suppression. Either bypass is the input after the DC
                  blocker.
  wet             0..1 wet/dry, applied in the STFT domain, so the dry path is latency-aligned.
Both are smoothed per 5 ms hop (one-pole, ~30 ms).
  pitch_filter    0..1 strength of the comb filter on the voice's period ahead of the band gains
                  (realtime/dsp/pitch.py, after RNNoise): it takes out noise between a voice's
                  harmonics, which 100 Hz-wide bins cannot. Models with band gains alone (stage 11
                  on); with a deep filter it has no effect. Its history is kept while it is at 0.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.blocking import FixedHop, OutputFifo, check_block
from realtime.dsp.erb import MIN_BAND_HZ, NB_ERB
from realtime.dsp.fixed_filter import dc_blocker_coefficients, fixed_biquad
from realtime.dsp.kernels import scrub_into
from realtime.dsp.pitch import PitchFilter
from realtime.dsp.processor import Param, Readout
from realtime.dsp.processors import register
from realtime.dsp.processors.neural.base import NeuralProcessor
from realtime.dsp.processors.neural.weights import model_file
from realtime.dsp.resample import StreamResampler
from realtime.dsp.stft_windows import asymmetric_windows
from realtime.errors import ConfigError

DEFAULT_MODEL = model_file("enhancer", "enhancer.onnx")
SPEC = "spec"  # the first input; the others are states (h_enc, and h_df / df_hist with a deep filter) and PCORR
PCORR = "pcorr"  # models that take pitch features (stage 13): the bands' pitch correlations, not a state
WINDOWS = ("sqrt-hann-periodic", "asymmetric-sqrt-hann")  # the metadata's window kinds this runtime frames
MODEL_RATES = (8000, 192000)  # the metadata's sample rates this runtime frames and resamples to
MAX_T = 8  # frames per ONNX call (bigger host blocks are split into chunks of <= MAX_T frames)
IN_CLIP = 16.0
SILENCE_POWER = 1e-12  # mean power of a windowed frame below which it counts as silence (-120 dB)
QUIET_RUN_FRAMES = 200  # silent frames (1 s) the network still runs through before it holds its state
BYPASS_FADE = 1.0 / (1.0 - 10.0 ** (-1.0 / 20.0))  # the mix fades in over the first dB of the limit
READOUT_ALPHA = 0.03  # per-hop smoothing of the readouts (~170 ms at a 5 ms hop)
SPEECH_KEPT = 0.5  # a frame that keeps at least this share of its energy counts as speech
# the pitch filter's default strength: on the selection clips (held-out packages) 0.5 and 1.0 scored
# alike on PESQ-WB + DNSMOS OVRL, 0.5 with a third of 1.0's SI-SDR cost (model card, stage 12); again for stage 13
PITCH_STRENGTH = 0.5
# input DC blocker (one pole, -3 dB at 5 Hz): takes a recorder's DC offset out before the STFT,
# as RNNoise's input high-pass does. An offset is no part of a voice; the network passed it on,
# modulated by its gains, and DNSMOS marks a voice down for it (model card, "DC offsets"). One
# pole at 5 Hz keeps a clean voice's low harmonics in phase (a 20 Hz Butterworth left clean
# voices at 17 dB SI-SDR: its phase at 100-200 Hz)
DC_CUT_HZ = 5.0


def dc_blocked(x: np.ndarray, sample_rate: float = 48000.0) -> np.ndarray:
    """A mono signal through the processor's input DC blocker from rest (offline: the trainer's
    selection feeds its network what the runtime does)."""
    y = np.array(x, np.float32).reshape(-1, 1)
    fixed_biquad(y, 0, len(y), dc_blocker_coefficients(DC_CUT_HZ, sample_rate), np.zeros((1, 2)))
    return y[:, 0]


# ------------------------------------------------------------------------------------------
# Numba kernels (nogil): framing, blend, overlap-add. Buffers are (samples, channels).
# ------------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def _frames(x, start, T, hop, win, frames):
    """frames[t, ch, :] = x[start + t*hop : start + t*hop + N, ch] * win."""
    N = win.shape[0]
    for t in range(T):
        o = start + t * hop
        for ch in range(x.shape[1]):
            for i in range(N):
                frames[t, ch, i] = x[o + i, ch] * win[i]


@njit(nogil=True, cache=True)
def _narrow(src, T, dst):
    """dst[:T] = src[:T] (complex128 -> complex64, the model's input precision)."""
    for t in range(T):
        for ch in range(src.shape[1]):
            for f in range(src.shape[2]):
                dst[t, ch, f] = src[t, ch, f]


@njit(nogil=True, cache=True)
def _blend(X, Y, T, st, floor_t, mix_t, alpha, acc, readings):
    """Apply the knobs to the network output Y (in place), per frame and bin; X, Y [T,C,F,2].

    Attenuation limit: where |Y/X| is below ``floor`` the bin becomes floor * X, so no bin is
    pulled down by more than the limit, while milder suppression is left as the network made
    it. The noisy phase matters: a floored bin with the network's phase (a deep filter
    rotates it) partly cancels in the overlap-add, and brown noise came out 12 dB down at a
    6 dB limit; a scaled copy of the input overlap-adds back exactly.
    Mix: Y = X + w (Y - X) with w = mix, faded in over the first dB of the limit so that 0 dB
    is exact bypass. floor (st[0]) and mix (st[1]) are smoothed once per frame.
    Readouts: the share of each frame's energy the network keeps, before the knobs (speech
    presence, smoothed in acc[2]; digital silence pulls it to 0) and, in frames where that is under
    SPEECH_KEPT (speech-free), input over output level after the knobs (noise cut, dB: the frames'
    energies smoothed in acc[0] and acc[1], so it is the level drop a meter measures, not a mean of
    dB); readings = [noise cut dB, speech presence %]. Judged on the knobs' output instead, a limit
    of 3 dB or less read no cut at all, and the last cut stayed on show for good."""
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
        e_in = 0.0
        e_net = 0.0
        e_out = 0.0
        for ch in range(X.shape[1]):
            for k in range(X.shape[2]):
                xr, xi = X[t, ch, k, 0], X[t, ch, k, 1]
                yr, yi = Y[t, ch, k, 0], Y[t, ch, k, 1]
                px = xr * xr + xi * xi
                py = yr * yr + yi * yi
                e_net += py
                if py < f2 * px:
                    yr, yi = f * xr, f * xi
                yr = xr + w * (yr - xr)
                yi = xi + w * (yi - xi)
                Y[t, ch, k, 0] = yr
                Y[t, ch, k, 1] = yi
                e_in += px
                e_out += yr * yr + yi * yi
        if e_in > 1e-9:
            kept = min(1.0, e_net / e_in)
            acc[2] += READOUT_ALPHA * (kept - acc[2])
            if kept < SPEECH_KEPT:
                acc[0] += READOUT_ALPHA * (e_in - acc[0])
                acc[1] += READOUT_ALPHA * (e_out - acc[1])
        else:  # digital silence holds no speech (and says nothing about the noise cut)
            acc[2] = acc[2] - READOUT_ALPHA * acc[2] if acc[2] > 1e-6 else 0.0  # no denormals
    st[0], st[1] = f, m
    readings[0] = 10.0 * math.log10(acc[0] / max(acc[1], 1e-12 * acc[0])) if acc[0] > 0.0 else 0.0
    readings[1] = 100.0 * acc[2]


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
    """Overlap-add the last 2 hops of T frames (the synthesis window ``win`` is zero before them):
    out[opos + t*hop + i, ch] = ybuf[t,ch,o+i]*win[o+i] + tail, o = N - 2·hop."""
    o = win.shape[0] - 2 * hop
    for t in range(T):
        for ch in range(ybuf.shape[1]):
            for i in range(hop):
                out[opos + t * hop + i, ch] = ybuf[t, ch, o + i] * win[o + i] + ola[ch, i]
                ola[ch, i] = ybuf[t, ch, o + hop + i] * win[o + hop + i]


def _check_min_band(session, min_band_hz: float, rate: int, win: int) -> None:
    """Refuse a ``min_band_hz`` the ERB layout cannot honour (realtime/dsp/erb.py): NaN, negative,
    or so wide that NB_ERB bands of it do not fit the window's bins."""
    nfreq = win // 2 + 1
    bin_hz = rate / 2 / (nfreq - 1)
    if not (0.0 <= min_band_hz < math.inf and NB_ERB * max(1, round(min_band_hz / bin_hz)) <= nfreq):
        raise session.error(f"has min_band_hz {min_band_hz} in its metadata: {NB_ERB} bands at least that wide "
                            f"must fit the {nfreq} bins of its {win}-sample window at {rate} Hz: re-export it")


@register
class Enhancer(NeuralProcessor):
    """Causal neural speech enhancer (signal path: the module docstring).

    Parameters and errors: ``NeuralProcessor``; the provider comes from ``$RT_ENHANCER_PROVIDER``
    when not given. ``nonfinite_count`` counts the input samples that were NaN/Inf since the last reset.
    """

    kind = "enhancer"
    native_rates = (48000,)  # the committed model's rate; at 44.1 kHz it resamples inside
    params = (
        Param("atten_limit_db", "Attenuation limit", 0.0, 100.0, 100.0, unit="dB", smoothing_ms=30.0),
        Param("wet", "Wet", 0.0, 1.0, 1.0, smoothing_ms=30.0),
        Param("pitch_filter", "Pitch filter", 0.0, 1.0, PITCH_STRENGTH, smoothing_ms=0.0),
    )
    readouts = (Readout("noise_reduction_db", "Noise cut", "dB", 0.0, 40.0, kind="number"),
                Readout("speech_pct", "Speech", "%", 0.0, 100.0, kind="level"))
    default_model = DEFAULT_MODEL
    model_inputs = None  # checked in __init__: "spec" first, then the states
    provider_env = "RT_ENHANCER_PROVIDER"

    def __init__(self, model_path=None, provider: str | None = None, threads: int = 1, **values):
        super().__init__(model_path, provider, threads, **values)
        names = self.session.input_names
        if len(names) < 2 or names[0] != SPEC or "enh" not in self.session.output_names:
            raise self.session.error(f"has inputs {list(names)}; expected 'spec' first, then its states")
        self.takes_pcorr = PCORR in names
        if self.takes_pcorr and self.session.input_shape(PCORR)[-1] != NB_ERB:
            raise self.session.error(f"takes {self.session.input_shape(PCORR)[-1]} pitch features; "
                                     f"this runtime computes {NB_ERB} (one per ERB band)")
        self.state_names = [n for n in names[1:] if n != PCORR]
        self.session.read_start_states(self.state_names)  # a trained start (metadata "h_enc_start"), else zeros
        self.model_rate, self.win_len, self.hop = self.session.metadata_values(int, "sample_rate", "win", "hop")
        if not MODEL_RATES[0] <= self.model_rate <= MODEL_RATES[1]:  # 0 divided by zero; < 0 sized buffers by NaN
            raise self.session.error(f"has sample_rate {self.model_rate} in its metadata (expected "
                                     f"{MODEL_RATES[0]}-{MODEL_RATES[1]} Hz): re-export it")
        self.nfreq = self.win_len // 2 + 1
        kind = self.session.metadata.get("window", WINDOWS[0])
        if kind not in WINDOWS or self.hop <= 0 or self.hop % 4 or self.win_len < 2 * self.hop or (
                kind == WINDOWS[0] and self.win_len != 2 * self.hop):
            raise self.session.error(f"has a {self.win_len}-sample {kind} window at hop {self.hop}; this runtime "
                                     f"frames {WINDOWS[0]} at 2 hops and {WINDOWS[1]} of 2 hops or more")
        spec = self.session.input_shape(SPEC)
        if len(spec) != 4:
            raise self.session.error(f"takes its spectrum as {spec}; this runtime gives [frames, batch, bins, 2]")
        for name in self.state_names:  # [layers, batch, ...]: the channels go on axis 1, the rest are sized
            shp = self.session.input_shape(name)
            if len(shp) < 2 or not all(isinstance(d, int) for i, d in enumerate(shp) if i != 1):
                raise self.session.error(f"declares its state {name!r} as {shp}; this runtime needs "
                                         "[layers, batch, ...] with every axis but the batch fixed: re-export it")
        bins = spec[2]
        if isinstance(bins, int) and bins != self.nfreq:
            raise self.session.error(f"takes {bins} bins; its {self.win_len}-sample window has {self.nfreq}")
        self._host_produced = 0
        self._bypass_model = False  # set while prepare measures the streaming path
        self._quiet_frames = 0  # silent frames in a row so far (capped at QUIET_RUN_FRAMES)
        self._latency = 0
        self._pitch = None  # a PitchFilter from prepare, for models with band gains alone
        # the network's narrowest ERB band (its pitch features and the comb pool its bands)
        self.min_band_hz = (self.session.metadata_values(float, "min_band_hz")[0]
                            if "min_band_hz" in self.session.metadata else MIN_BAND_HZ)
        _check_min_band(self.session, self.min_band_hz, self.model_rate, self.win_len)
        # analysis and synthesis windows (the same sqrt-Hann at 2 hops)
        self._win, self._syn = (w.astype(np.float32) for w in asymmetric_windows(self.win_len, self.hop))

    # ---------------------------------------------------------------------------------------
    @property
    def latency(self) -> int:
        return self._latency

    def _prepare(self) -> None:
        C, N, H, F = self.channels, self.win_len, self.hop, self.nfreq
        self._resample = int(round(self.sample_rate)) != self.model_rate
        ratio = self.model_rate / self.sample_rate
        max_in = int(math.ceil(self.max_block * ratio)) + 2048 if self._resample else self.max_block
        # whole hops with the window's overlap before them; at most MAX_T frames per model call
        # (the input DC blocker runs as the samples come in, after the scrub)
        self._fixed = FixedHop(H, C, max_in, history=N - H, ceiling=IN_CLIP, max_hops=MAX_T,
                               prefilter=dc_blocker_coefficients(DC_CUT_HZ, self.model_rate))
        # float64 frames: numpy's rfft copies float32 input to float64 on every call (an
        # allocation per block); float64 in, complex128 out, it allocates nothing
        self._frames = np.zeros((MAX_T, C, N), np.float64)
        self._spec64 = np.zeros((MAX_T, C, F), np.complex128)
        self._spec = np.zeros((MAX_T, C, F), np.complex64)
        self._enh = np.zeros((MAX_T, C, F, 2), np.float32)
        self._ybuf = np.zeros((MAX_T, C, N), np.float32)
        self._ola = np.zeros((C, H), np.float32)
        self._cst = np.zeros(2, np.float64)  # smoothed (floor, mix)
        self._acc = np.zeros(3, np.float64)  # smoothed readouts (speech-free frames' energy in, out; speech share)
        self._alpha = 1.0 - math.exp(-H / (self.params[0].smoothing_ms * 1e-3 * self.model_rate))
        self._spec_f = self._spec.view(np.float32).reshape(MAX_T, C, F, 2)
        # the comb needs the network's output to be g·X: band gains alone, no deep filter
        self._combs = "h_df" not in self.state_names
        # the period search serves the comb and a model's pitch features
        self._pitch = (PitchFilter(self.model_rate, self._win, H, C, MAX_T, self.min_band_hz)
                       if self._combs or self.takes_pcorr else None)
        self._pcorr = np.zeros((MAX_T, C, NB_ERB), np.float32)  # the network's pitch features, when it takes them
        # explicit model state, the channels as the batch (axis 1 of every state input)
        shapes = {}
        for name in self.state_names:
            shp = list(self.session.input_shape(name))
            shp[1] = C
            shapes[name] = tuple(int(d) for d in shp)
        self.session.allocate_state(shapes)
        for T in range(1, MAX_T + 1):
            self.session.bind(T, self._model_inputs(slice(0, T)), {"enh": self._enh[:T]})
        self._rs_in = self._rs_out = self._host = None
        if self._resample:
            sr = int(round(self.sample_rate))
            out = self._fixed.output.buf
            self._rs_in = StreamResampler(sr, self.model_rate, C, self.max_block)
            self._rs_out = StreamResampler(self.model_rate, sr, C, out.shape[0])
            self._stage = np.zeros((self.max_block, C), np.float32)
            self._stage_t = self._stage.T  # [C, frames] views, as the resamplers take them
            self._x_model = np.zeros((C, self._rs_in.max_out), np.float32)
            self._x_model_t = self._x_model.T
            self._recounts = np.zeros(2, np.int64)
            self._out_t = out.T
            self._host = OutputFifo(self.max_block + self._rs_out.max_out + 8192, C)
            self._host_t = self._host.buf.T
        self.session.warm_up()  # ONNX Runtime's first runs allocate; the numba kernels compile below
        self._reset_core()
        self.process(np.zeros((min(self.max_block, 512), C), np.float32))
        if self._resample:
            self._host.prefill = self._measure_prefill()
        self._latency = self._measure_latency()

    # ---------------------------------------------------------------------------------------
    def _reset_core(self) -> None:
        self._fixed.reset()
        self._ola[:] = 0
        self.session.reset_state()
        self._quiet_frames = 0
        self._cst[0] = 10.0 ** (-self.values[0] / 20.0)
        self._cst[1] = self.values[1]
        self._acc.fill(0.0)
        if self._pitch is not None:
            self._pitch.reset()
        if self._resample:
            self._rs_in.reset()
            self._rs_out.reset()
            self._host.reset()

    def reset(self) -> None:
        self._reset_core()
        self._counts.fill(0)  # nonfinite_count is per stream

    def _model_inputs(self, frames: slice) -> dict:
        """The non-state inputs of a model call on ``frames`` of the chunk (views of the buffers)."""
        return {SPEC: self._spec_f[frames], **({PCORR: self._pcorr[frames]} if self.takes_pcorr else {})}

    def _run_model(self, T: int) -> None:
        self.session.run(T)
        self.session.contain_state()
        if not math.isfinite(float(self._enh[:T].sum())):  # never let a bad frame reach the OLA
            self._enh[:T] = self._spec_f[:T]

    def _hops(self, x, start, T, out, opos) -> int:
        """FixedHop's runner: STFT, model and overlap-add of up to T hops; returns how many."""
        N, H = self.win_len, self.hop
        _frames(x, start, T, H, self._win, self._frames)
        np.fft.rfft(self._frames[:T], axis=-1, out=self._spec64[:T])
        _narrow(self._spec64, T, self._spec)
        # digital silence (< -120 dBFS), decided per frame so any chunking gives the same result:
        # the first QUIET_RUN_FRAMES silent frames of a run go through the network, as digital
        # pauses did in training (holding the state of the quiet tail before a pause instead made
        # each word after it start half-suppressed: clean voices with pauses lost 2.1 dB); after
        # that the network, settled on silence, is not run and holds its state, so an idle port
        # costs nothing. A run of frames with signal goes through in one call.
        k = _run_length(self._frames, T, SILENCE_POWER)
        if k < 0:  # -k leading silent frames
            room = QUIET_RUN_FRAMES - self._quiet_frames
            run = room > 0 and not self._bypass_model
            T = min(-k, room) if run else -k
            self._quiet_frames = min(self._quiet_frames + T, QUIET_RUN_FRAMES)
        else:
            self._quiet_frames = 0
            T = k
            run = not self._bypass_model
        comb = self._combs and self.values[2] > 0.0 and not self._bypass_model
        if self._pitch is not None:  # the frames consumed go through its history whatever the knob says
            # a model that takes pitch features searches always, as its training segments did (silent
            # frames cost nothing: they are skipped inside), so the first frame after a pause has a period
            self._pitch.analyse(x, start, T, search=comb or self.takes_pcorr)
            if run and self.takes_pcorr:
                self._pitch.band_correlation(self._spec64, self._pcorr, T)
        if run:
            self._run_model(T)
        else:
            self._enh[:T] = self._spec_f[:T]
        if comb:
            self._pitch.apply(self._spec64, self._enh, T, self.values[2])
        floor = 10.0 ** (-self.values[0] / 20.0)
        _blend(self._spec_f, self._enh, T, self._cst, floor, self.values[1], self._alpha, self._acc, self.readings)
        Yc = self._enh[:T].view(np.complex64)[..., 0]
        np.fft.irfft(Yc, n=N, axis=-1, out=self._ybuf[:T])  # complex64 in, float32 out: no copy
        _ola(self._ybuf, T, H, self._syn, self._ola, out, opos)
        return T

    def process(self, block: np.ndarray) -> None:
        n = block.shape[0]
        if n == 0:
            return
        if not self._resample:
            self._fixed.process(block, self._hops, self._counts)
            return
        # host rate != model rate: streaming resampler in, re-blocking, model, resampler out
        check_block(n, self.max_block)  # before the staging buffer (max_block frames) is written
        scrub_into(block, n, self._stage, 0, IN_CLIP, self._counts, 0, 1)  # before the resampler sees it
        m = self._rs_in.process(self._stage_t, n, self._x_model)
        if m:
            # scrubbed and counted once already (host samples); the re-scrub only clamps the
            # resampler's overshoot, which is no input sample to count
            self._fixed.input.push(self._x_model_t, m, self._recounts)
            self._fixed.run_hops(self._hops)
        model_out = self._fixed.output
        if model_out.fill:
            m = self._rs_out.process(self._out_t, model_out.fill, self._host_t, self._host.fill)
            model_out.drop(model_out.fill)
            self._host.fill += m
            self._host_produced += m
        self._host.pop(block, n)  # with the measured pre-fill it never runs short

    # ---------------------------------------------------------------------------------------
    def _measure_prefill(self) -> int:
        """Largest output shortfall of the resampled path over any block pattern (1 s at 16-sample
        steps plus one max_block), so the host FIFO never runs dry."""
        self._host.prefill = 0
        self._reset_core()
        worst = 0
        step = min(16, self.max_block)  # z holds max_block frames: a larger step counted frames never fed
        z = np.zeros((self.max_block, self.channels), np.float32)
        total_in = 0
        self._host_produced = 0
        self._bypass_model = True
        for size in [step] * int(self.sample_rate // step) + [self.max_block] * 3:
            self.process(z[:size])
            total_in += size
            worst = max(worst, total_in - self._host_produced)
        self._bypass_model = False
        self._reset_core()
        if worst + step > self._host.buf.shape[0] - self.max_block:  # the FIFO must hold it: never overrun
            raise ConfigError(f"enhancer: the resampled path needs {worst + step} frames of pre-fill at "
                              f"{self.sample_rate:g} Hz, more than its buffer holds")
        return worst + step

    def _measure_latency(self) -> int:
        """Impulse through the exact streaming path (model bypassed: PR synthesis)."""
        self._reset_core()
        L = int(0.1 * self.sample_rate) + (self._host.prefill if self._resample else 0)
        x = np.zeros((L, self.channels), np.float32)
        x[0, :] = 1.0
        size = max(1, min(self.max_block, 64))
        self._bypass_model = True
        for s in range(0, L, size):
            self.process(x[s : s + size])
        self._bypass_model = False
        self._reset_core()
        return int(np.argmax(np.abs(x[:, 0])))
