"""Neural de-limiter: estimates the gain curve a brickwall limiter applied and divides it out.

Model: ``models/delimiter/delimiter.onnx`` (see models/delimiter/MODEL_CARD.md), run at the host
rate (trained at 44.1 and 48 kHz). Per hop of ``hop`` samples it sees the stereo-linked frame and
returns ``knots`` values of the log inverse gain a = -log g for the frame ``lookahead_frames``
hops earlier; straight lines between knots (the last knot of the previous frame carried over)
give a continuous per-sample curve. The frame embeddings history and the GRU state are explicit
ONNX inputs/outputs, carried here between calls (ping-pong buffers, I/O binding, so the audio
path allocates nothing).

Signal path per host block::

    block ─► NaN/Inf -> 0, clip ±4 ─► FixedHop input (the look-ahead frames as history)
      ─► ONNX (all complete frames in one call)
      ─► d = the same frames through the de-clipper (realtime/dsp/declip.py), look-ahead frames later
      ─► (y + amount · (d − y)) · exp(amount · max(a − offset − threshold, 0)) · trim · auto-level scale
      ─► FixedHop output (pre-filled) ─► block

The de-clipper (knob ``declip``) fills runs of samples a clipper pinned at one value from the
waveform around them; the network, trained on limiters, sees the input as it came. It works
inside the network's look-ahead, so it adds no latency; off, the path is exactly as without it.

``offset`` is the model's own ``level_offset`` metadata: the log gain it predicts, on average,
for music no limiter touched (measured at export on held-out tracks; 0 for older models), so
un-limited input keeps its level. ``threshold`` (dB, a knob): estimated gain reductions under it
are left alone, so un-limited and lightly limited passages, where a wrong estimate costs the most
fidelity, pass bit-exact; the threshold is subtracted rather than gated, so the gain stays
continuous.

A call whose knots come out non-finite plays them as 0 (no gain) and sends every state that
blew up back to its start (``StatefulSession.contain_state``), as the enhancer does: a NaN kept in
a recurrent state or history would leave the rest of the stream unrestored.

Latency: (lookahead_frames + 1) · hop − 1 samples for any block size: the look-ahead frames plus
the re-blocking pre-fill (hop − 1; realtime/dsp/blocking.py). Mono input goes through the model
as L = R.

Output level: the restored peaks rise above the limited input's ceiling by design. With
``auto_level`` on, a stereo-linked scale with instant attack and a slow (3 s) release keeps the
output under ``ceiling_db``; the scale is reported in ``readings[1]`` (dB) next to the largest
restored gain of the block in ``readings[0]`` (dB). With it off the safety stage catches overs.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from realtime.dsp.blocking import FixedHop
from realtime.dsp.declip import IN_CLIP, Declipper
from realtime.dsp.kernels import glide
from realtime.dsp.processor import Param, Readout
from realtime.dsp.processors import register
from realtime.dsp.processors.neural.base import NeuralProcessor
from realtime.dsp.processors.neural.weights import model_file
from realtime.errors import ConfigError

DEFAULT_MODEL = model_file("delimiter", "delimiter.onnx")
FRAMES = "frames"  # every other model input is a streaming state with a ``<name>_out`` output
MAX_LOG_GAIN = 4.0  # bound on the log inverse gain (34.7 dB; the exported model clamps to it too)
# samples one model call takes at most: a longer block goes through in several calls, so a huge
# block (-b 65536: 513 hops) neither binds and warms up a call shape per hop count (3.5 s, and
# 32 s with 8 batched streams, at every prepare) nor needs buffers for it
MAX_CALL_SAMPLES = 4096
RATE_RANGE = (40000, 50000)  # trained at 44.1 and 48 kHz; its time constants are in samples
MAX_LOOKAHEAD = RATE_RANGE[1]  # samples (1 s at the highest rate): more is a broken file, not a de-limiter
AUTO_RELEASE_S = 3.0
DB_PER_NEPER = 20.0 / math.log(10.0)
# estimated gain reductions under this leave the audio alone (MODEL_CARD.md, "Processor"); the
# trainer's checkpoint selection applies the same rule, so it scores what the product does. Chosen
# per shipped network on the selection set (1 dB for the GRU; 1.5 dB for the first convolutional
# one; 2.5 dB for the one trained to hear the curve as it is played, --wave-threshold)
DEFAULT_THRESHOLD_DB = 2.5

# float state slots
_PREV, _AMOUNT, _TRIM, _SCALE, _THRESHOLD, _CEILING = range(6)
N_FLOAT_STATE = 6
# auto-level off is a ceiling (dB) no restored sample reaches (IN_CLIP · e^MAX_LOG_GAIN is 47 dB), so
# switching it glides like a ceiling move
AUTO_OFF_DB = 60.0


@njit(nogil=True, cache=True)
def _frames(x, start, T, hop, frames):
    """frames[0, t] = x[start + t*hop : start + (t+1)*hop] (both channels)."""
    for t in range(T):
        for i in range(hop):
            for ch in range(2):
                frames[0, t, i, ch] = x[start + t * hop + i, ch]


@njit(nogil=True, cache=True)
def _restore(knots, T, skip, x, start, dry, hop, out, opos, values, fs, k, readings):
    """Restore the T frames at x[start:] (de-clipped: dry[0:]) with this call's knots into out[opos:].
    The amount blends the input and the de-clipped input too, so amount 0 is the input as it came.

    The first ``skip[0]`` knots of a stream belong to the silent frames before it started:
    those frames stay silent and leave the smoothers alone.
    k = [amount/trim/threshold/ceiling smoothing coeff, auto-level release coeff, the model's level
    offset (nepers)]. The auto-level ceiling glides (in dB) to a new setting: with the signal over
    it, a jump would be a gain step of up to its whole range in one sample."""
    nk = knots.shape[2]
    seg = hop // nk
    amount_t = values[0]
    trim_t = 10.0 ** (values[1] / 20.0)
    ceil_t = values[3] if values[2] >= 0.5 else AUTO_OFF_DB
    thr_t = values[4] / DB_PER_NEPER
    c = k[0]
    crel = k[1]
    off = k[2]
    prev = fs[_PREV]
    am = fs[_AMOUNT]
    trim = fs[_TRIM]
    thr = fs[_THRESHOLD]
    s = fs[_SCALE]
    cdb = fs[_CEILING]
    ceil = math.exp(cdb / DB_PER_NEPER)
    gmax = 0.0
    smin = s
    nch = out.shape[1]
    for t in range(T):
        base = t * hop
        if skip[0] > 0:  # knots for the frames before the stream started
            skip[0] -= 1
            for i in range(hop):
                for ch in range(nch):
                    out[opos + base + i, ch] = 0.0
            continue
        for j in range(nk):
            kj = knots[0, t, j]
            if not math.isfinite(kj):
                kj = 0.0
            kj = min(max(kj, 0.0), MAX_LOG_GAIN)
            for q in range(seg):
                i = j * seg + q
                a = prev + (q + 1) * (kj - prev) / seg
                am = glide(am, amount_t, c)
                trim = glide(trim, trim_t, c)
                thr = glide(thr, thr_t, c)
                # the model's level offset out; estimates under the threshold leave the audio
                # alone (continuous: the threshold is subtracted, not gated)
                la = am * max(a - off - thr, 0.0)
                g = math.exp(la) * trim
                x0 = x[start + base + i, 0]
                x1 = x[start + base + i, 1]
                b0 = x0 + am * (dry[base + i, 0] - x0)
                b1 = x1 + am * (dry[base + i, 1] - x1)
                # the gain this sample got back: the network's, times a de-clipped sample's rise
                # over the input (blended by the amount, as the audio is)
                r = 1.0
                if b0 != x0 and x0 != 0.0:
                    r = abs(b0 / x0)
                if nch > 1 and b1 != x1 and x1 != 0.0:
                    r = max(r, abs(b1 / x1))
                lr = la + math.log(r) if r > 1.0 else la
                if lr > gmax:
                    gmax = lr
                y0 = b0 * g
                y1 = b1 * g
                pk = max(abs(y0), abs(y1))
                if cdb != ceil_t:
                    cdb = glide(cdb, ceil_t, c)
                    ceil = math.exp(cdb / DB_PER_NEPER)
                s += crel * (1.0 - s)
                if pk * s > ceil:
                    s = ceil / pk
                if s < smin:
                    smin = s
                o = opos + base + i
                out[o, 0] = y0 * s
                if nch > 1:
                    out[o, 1] = y1 * s
            prev = kj
    fs[_PREV] = prev
    fs[_AMOUNT] = am
    fs[_TRIM] = trim
    fs[_SCALE] = s
    fs[_THRESHOLD] = thr
    fs[_CEILING] = cdb
    if gmax * DB_PER_NEPER > readings[0]:
        readings[0] = gmax * DB_PER_NEPER
    v = 20.0 * math.log10(max(smin, 1e-9))
    if v < readings[1]:
        readings[1] = v


@register
class Delimiter(NeuralProcessor):
    """Causal neural de-limiter (signal path: the module docstring).

    Parameters and errors: ``NeuralProcessor``; the provider comes from ``$RT_DELIMITER_PROVIDER``
    when not given. ``prepare`` raises ``ConfigError`` for a sample rate the model was not trained
    for (outside 40-50 kHz). ``nonfinite_count`` counts the input values (samples x channels) that
    were NaN/Inf since the last reset; ``readings`` holds [largest restored gain of the last block
    (the network's gain times a de-clipped sample's rise over its clip level, by the amount: what
    the audio got back before trim and auto-level), auto-level scale] in dB.
    """

    kind = "delimiter"
    native_rates = (44100, 48000)  # trained at both
    rate_range = RATE_RANGE
    params = (
        Param("amount", "Amount", 0.0, 1.0, 1.0, smoothing_ms=30.0),
        Param("output_gain_db", "Output trim", -24.0, 12.0, 0.0, unit="dB", smoothing_ms=30.0),
        Param("auto_level", "Auto-level", 0.0, 1.0, 1.0, choices=("off", "on"), step=1.0, smoothing_ms=0.0),
        Param("ceiling_db", "Auto-level ceiling", -12.0, 0.0, -1.0, unit="dB", smoothing_ms=30.0),
        # gain reductions the model puts under this are left alone: un-limited and lightly limited
        # passages, where a wrong estimate costs most, pass bit-exact
        Param("threshold_db", "Threshold", 0.0, 6.0, DEFAULT_THRESHOLD_DB, unit="dB", smoothing_ms=30.0),
        # clipped runs filled in from the waveform around them (realtime/dsp/declip.py)
        Param("declip", "De-clip", 0.0, 1.0, 1.0, choices=("off", "on"), step=1.0, smoothing_ms=0.0),
    )
    readouts = (Readout("restored_db", "Restored", "dB", 0.0, 24.0, kind="level"),
                Readout("auto_level_db", "Auto level", "dB", -24.0, 0.0, kind="gr"))
    default_model = DEFAULT_MODEL
    model_inputs = None  # checked in __init__: "frames" first, then the states
    provider_env = "RT_DELIMITER_PROVIDER"

    def __init__(self, model_path=None, provider: str | None = None, threads: int = 1, **values):
        super().__init__(model_path, provider, threads, **values)
        names = self.session.input_names
        if not names or names[0] != FRAMES or "knots" not in self.session.output_names:
            raise self.session.error(f"has inputs {list(names)}; expected 'frames' first, then its states")
        self.state_names = names[1:]
        self.hop, self.lookahead_frames, self.knots = self.session.metadata_values(
            int, "hop", "lookahead_frames", "knots")
        # what the network predicts on average for music no limiter touched (measured at export on
        # held-out tracks): subtracted, so un-limited input keeps its level; older models lack it
        try:
            self.level_offset = float(self.session.metadata.get("level_offset", 0.0))
        except ValueError:
            self.level_offset = math.nan
        if not math.isfinite(self.level_offset) or not 0.0 <= self.level_offset < MAX_LOG_GAIN:
            raise self.session.error(f"has an invalid level_offset {self.level_offset}")
        if self.hop <= 0 or self.knots <= 0 or self.hop % self.knots or self.lookahead_frames < 0:
            raise self.session.error(f"has inconsistent metadata hop={self.hop} knots={self.knots}")
        self._check_shapes()

    def _check_shapes(self) -> None:
        """The metadata must agree with the graph (ONNX Runtime would fail on the first block) and
        the look-ahead must be one a real-time stream can buffer (1e7 frames asked for 32 GiB)."""
        for field, value, shape in (("hop", self.hop, self.session.input_shape(FRAMES)),
                                    ("knots", self.knots, self.session.output_shape("knots"))):
            size = shape[2] if len(shape) > 2 else None  # frames [batch, time, hop, 2], knots [batch, time, knots]
            if isinstance(size, int) and size != value:
                raise self.session.error(f"says {field}={value} in its metadata but its graph has {size}: re-export it")
        if self.lookahead_frames * self.hop > MAX_LOOKAHEAD:
            raise self.session.error(f"has lookahead_frames {self.lookahead_frames} in its metadata: "
                                     f"{self.lookahead_frames * self.hop} samples, more than {MAX_LOOKAHEAD}")

    @property
    def latency(self) -> int:
        return (self.lookahead_frames + 1) * self.hop - 1  # look-ahead + FixedHop's pre-fill (hop - 1)

    def _kernel_constants(self) -> np.ndarray:
        """``_restore``'s k: [amount/trim/threshold smoothing, auto-level release] coefficients at
        the prepared rate and the model's level offset; refuses a rate the model was not trained for."""
        sr = self.sample_rate
        if not RATE_RANGE[0] <= sr <= RATE_RANGE[1]:
            raise ConfigError(f"delimiter: the model runs at 44.1/48 kHz; {sr:g} Hz is not supported "
                             f"(resample the chain to 44100 or 48000)")
        return np.array([self.params[0].smoothing_coeff(sr), 1.0 - math.exp(-1.0 / (AUTO_RELEASE_S * sr)),
                         self.level_offset])

    def _prepare(self) -> None:
        self._k = self._kernel_constants()
        H, K = self.hop, self.lookahead_frames
        self._tmax = min(self.max_block // H + 1, max(1, MAX_CALL_SAMPLES // H))  # hops per model call
        # the model is stereo-linked: a mono input fills both of its channels
        self._fixed = FixedHop(H, self.channels, self.max_block, history=K * H, in_channels=2, ceiling=IN_CLIP,
                               max_hops=self._tmax)
        self._frames = np.zeros((1, self._tmax, H, 2), np.float32)
        self._knots = np.zeros((1, self._tmax, self.knots), np.float32)
        self._fs = np.zeros(N_FLOAT_STATE, np.float64)
        # the frames being restored, de-clipped: pushed when the network first sees them, read
        # look-ahead frames later (that is the de-clipper's delay)
        self._declippers = [Declipper(K * H, self._tmax * H, self.sample_rate, channels=self.channels)]
        self._dry = np.zeros((self._tmax * H, 2), np.float32)
        self._in_cols, self._dry_cols = [self._fixed.input.buf], [self._dry]  # per stream (_declip)
        self._skip = np.zeros(1, np.int64)
        self.readings = np.zeros(2, np.float32)  # [largest restored gain dB, auto-level scale dB]
        self.session.allocate_state({name: tuple(d if isinstance(d, int) else 1 for d in self.session.input_shape(name))
                                     for name in self.state_names})
        for T in range(1, self._tmax + 1):
            self.session.bind(T, {FRAMES: self._frames[:, :T]}, {"knots": self._knots[:, :T]})
        self.session.warm_up()

    def reset(self) -> None:
        self.session.reset_state()
        self._counts.fill(0)  # nonfinite_count is per stream
        self._fixed.reset()
        for d in self._declippers:
            d.reset()
        self._skip[0] = self.lookahead_frames
        self._fs[:] = self._initial_float_state()
        self.readings.fill(0.0)

    def _initial_float_state(self) -> tuple:
        """[previous knot, amount, trim, auto-level scale, threshold, ceiling dB] at the current values."""
        return (0.0, self.values[0], 10.0 ** (self.values[1] / 20.0), 1.0, self.values[4] / DB_PER_NEPER,
                self.values[3] if self.values[2] >= 0.5 else AUTO_OFF_DB)

    def _hops(self, x, start, T, out, opos) -> int:
        """FixedHop's runner: the model over the T newest frames, whose knots restore the T frames
        ``lookahead_frames`` hops earlier (at x[start:]); returns T."""
        H = self.hop
        newest = start + self.lookahead_frames * H
        _frames(x, newest, T, H, self._frames)
        self.session.run(T)
        if not math.isfinite(float(self._knots[:, :T].sum())):  # (_restore plays such knots as 0)
            self.session.contain_state()  # a state that blew up starts afresh, not stuck at NaN for good
        self._declip(newest, T * H)
        _restore(self._knots, T, self._skip, x, start, self._dry, H, out, opos, self.values, self._fs, self._k,
                 self.readings)
        return T

    def _declip(self, newest: int, n: int) -> None:
        """Each stream's n newest input samples (``_in_cols[s][newest:]``, FixedHop's input) into its
        de-clipper, and the n it hands back, look-ahead frames older, into ``_dry_cols[s]``
        (``_restore`` reads what a fill restored from them, blended by the amount as played: a fill's
        own peak, read here before, said 6 dB at amount 0, and left out the network's gain on it)."""
        on = self.values[5] >= 0.5
        for dcl, col, dry in zip(self._declippers, self._in_cols, self._dry_cols):
            dcl.push(col, newest, n, on)
            dcl.read(n, dry)

    def process(self, block: np.ndarray) -> None:
        self.readings[0] = 0.0
        self.readings[1] = 0.0
        self._fixed.process(block, self._hops, self._counts)
