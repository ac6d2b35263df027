"""Neural de-limiter: estimates the gain curve a brickwall limiter applied and divides it out.

Model: ``models/delimiter/delimiter.onnx`` (see models/delimiter/MODEL_CARD.md), run at the host
rate (trained at 44.1 and 48 kHz). Per hop of ``hop`` samples it sees the stereo-linked frame and
returns ``knots`` values of the log inverse gain a = -log g for the frame ``lookahead_frames``
hops earlier; straight lines between knots (the last knot of the previous frame carried over)
give a continuous per-sample curve. The frame embeddings history and the GRU state are explicit
ONNX inputs/outputs, carried here between calls (ping-pong buffers, I/O binding, so the audio
path allocates nothing).

Signal path per host block::

    block ─► NaN/Inf -> 0, clip ±4 ─► frame FIFO ─► ONNX (all complete frames in one call)
      ─► y · exp(amount · a) · trim · auto-level scale ─► output FIFO (pre-filled) ─► block

Latency: (lookahead_frames + 1) · hop − 1 samples for any block size (383 = 8.0 ms at 48 kHz,
8.7 ms at 44.1 kHz with the shipped model). Mono input goes through the model as L = R.

Output level: the restored peaks rise above the limited input's ceiling by design. With
``auto_level`` on, a stereo-linked scale with instant attack and a slow (3 s) release keeps the
output under ``ceiling_db``; the scale is reported in ``readings[1]`` (dB) next to the largest
restored gain of the block in ``readings[0]`` (dB). With it off the safety stage catches overs.
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
from realtime.errors import ModelError

DEFAULT_MODEL = model_file("delimiter", "delimiter.onnx")
REQUIRED_INPUTS = ("frames", "e_hist", "h")
IN_CLIP = 4.0
MAX_LOG_GAIN = 4.0  # bound on the log inverse gain (34.7 dB; the exported model clamps to it too)
RATE_RANGE = (40000, 50000)  # trained at 44.1 and 48 kHz; its time constants are in samples
AUTO_RELEASE_S = 3.0

# float state slots
_PREV, _AMOUNT, _TRIM, _SCALE = range(4)


@njit(nogil=True, cache=True)
def _stage_in(block, n, ybuf, pos, clip):
    """ybuf[pos:pos+n] = sanitized block (mono duplicated to both channels). Returns bad count."""
    bad = 0
    nch = block.shape[1]
    for i in range(n):
        for ch in range(2):
            v = block[i, ch if nch > 1 else 0]
            if not math.isfinite(v):
                v = 0.0
                bad += 1
            elif v > clip:
                v = clip
            elif v < -clip:
                v = -clip
            ybuf[pos + i, ch] = v
    return bad // 2 if nch == 1 else bad


@njit(nogil=True, cache=True)
def _frames(ybuf, start, T, hop, frames):
    for t in range(T):
        for i in range(hop):
            for ch in range(2):
                frames[0, t, i, ch] = ybuf[start + t * hop + i, ch]


@njit(nogil=True, cache=True)
def _restore(knots, T, skip, ybuf, hop, ofifo, ofill, values, fs, k, readings):
    """Restore the oldest frames of ybuf with the knots of this call; append to ofifo.

    k = [amount/trim smoothing coeff, auto-level release coeff]. Returns frames restored."""
    nk = knots.shape[2]
    seg = hop // nk
    amount_t = values[0]
    trim_t = 10.0 ** (values[1] / 20.0)
    auto = values[2] >= 0.5
    ceil = 10.0 ** (values[3] / 20.0)
    c = k[0]
    crel = k[1]
    prev = fs[_PREV]
    am = fs[_AMOUNT]
    trim = fs[_TRIM]
    s = fs[_SCALE]
    gmax = 0.0
    smin = s
    done = 0
    nch = ofifo.shape[1]
    for t in range(T):
        if skip[0] > 0:  # outputs for the frames before the stream started
            skip[0] -= 1
            continue
        base = done * hop
        for j in range(nk):
            kj = knots[0, t, j]
            if not math.isfinite(kj):
                kj = 0.0
            kj = min(max(kj, 0.0), MAX_LOG_GAIN)
            for q in range(seg):
                i = j * seg + q
                a = prev + (q + 1) * (kj - prev) / seg
                am += c * (amount_t - am)
                trim += c * (trim_t - trim)
                la = am * a
                if la > gmax:
                    gmax = la
                g = math.exp(la) * trim
                y0 = ybuf[base + i, 0] * g
                y1 = ybuf[base + i, 1] * g
                pk = max(abs(y0), abs(y1))
                if auto:
                    s += crel * (1.0 - s)
                    if pk * s > ceil:
                        s = ceil / pk
                else:
                    s += crel * (1.0 - s)
                if s < smin:
                    smin = s
                o = ofill + base + i
                ofifo[o, 0] = y0 * s
                if nch > 1:
                    ofifo[o, 1] = y1 * s
            prev = kj
        done += 1
    fs[_PREV] = prev
    fs[_AMOUNT] = am
    fs[_TRIM] = trim
    fs[_SCALE] = s
    if gmax * 8.685889638 > readings[0]:
        readings[0] = gmax * 8.685889638
    v = 20.0 * math.log10(max(smin, 1e-9))
    if v < readings[1]:
        readings[1] = v
    return done


@njit(nogil=True, cache=True)
def _pop(ofifo, ofill, block, n):
    """block[:n] = ofifo[:n] (first channels); shift the rest down. Returns new fill."""
    for i in range(n):
        for ch in range(block.shape[1]):
            block[i, ch] = ofifo[i, ch]
    rest = ofill - n
    for i in range(rest):
        for ch in range(ofifo.shape[1]):
            ofifo[i, ch] = ofifo[n + i, ch]
    return rest


@njit(nogil=True, cache=True)
def _shift(buf, start, count):
    if start == 0:
        return
    for i in range(count):
        for ch in range(buf.shape[1]):
            buf[i, ch] = buf[start + i, ch]


def load_session(path, provider: str = "auto", threads: int = 1):
    """The de-limiter's session plus its framing metadata (hop, lookahead frames, knots)."""
    sess, meta = _load(path, provider, threads, what="delimiter", required_inputs=REQUIRED_INPUTS,
                       train_hint="python main.py train delimiter")
    try:
        hop, la, knots = int(meta["hop"]), int(meta["lookahead_frames"]), int(meta["knots"])
    except (KeyError, ValueError):
        raise ModelError(f"delimiter model {path} lacks hop/lookahead_frames/knots metadata") from None
    if hop <= 0 or knots <= 0 or hop % knots or la < 0:
        raise ModelError(f"delimiter model {path} has inconsistent metadata hop={hop} knots={knots}")
    return sess, hop, la, knots


@register
class Delimiter(Processor):
    kind = "delimiter"
    params = (
        Param("amount", "Amount", 0.0, 1.0, 1.0, smoothing_ms=30.0),
        Param("output_gain_db", "Output trim", -24.0, 12.0, 0.0, unit="dB", smoothing_ms=30.0),
        Param("auto_level", "Auto-level", 0.0, 1.0, 1.0, choices=("off", "on"), step=1.0, smoothing_ms=0.0),
        Param("ceiling_db", "Auto-level ceiling", -12.0, 0.0, -1.0, unit="dB", smoothing_ms=0.0),
    )

    def __init__(self, model_path=None, provider: str | None = None, threads: int = 1, **values):
        super().__init__(**values)
        self.model_path = Path(model_path) if model_path else DEFAULT_MODEL
        provider = provider or os.environ.get("RT_DELIMITER_PROVIDER", "auto")
        self.session, self.hop, self.lookahead_frames, self.knots = load_session(self.model_path, provider, threads)
        self.provider = self.session.get_providers()[0]
        self.nonfinite_count = 0  # input values (sample x channel) that were NaN/Inf, scrubbed to 0

    @property
    def latency(self) -> int:
        return (self.lookahead_frames + 1) * self.hop - 1

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency / self.sample_rate if self.sample_rate else 0.0

    def _prepare(self) -> None:
        sr = self.sample_rate
        if not RATE_RANGE[0] <= sr <= RATE_RANGE[1]:
            raise ValueError(f"delimiter: the model runs at 44.1/48 kHz; {sr:g} Hz is not supported "
                             f"(resample the chain to 44100 or 48000)")
        H, K = self.hop, self.lookahead_frames
        self._tmax = self.max_block // H + 1
        self._ybuf = np.zeros(((K + 1) * H + self.max_block + H, 2), np.float32)
        self._frames = np.zeros((1, self._tmax, H, 2), np.float32)
        self._knots = np.zeros((1, self._tmax, self.knots), np.float32)
        self._ofifo = np.zeros((self.latency + self.max_block + H, self.channels), np.float32)
        self._fs = np.zeros(4, np.float64)
        self._skip = np.zeros(1, np.int64)
        self._k = np.array([self.params[0].smoothing_coeff(sr), 1.0 - math.exp(-1.0 / (AUTO_RELEASE_S * sr))])
        self.readings = np.zeros(2, np.float32)  # [largest restored gain dB, auto-level scale dB]
        shapes = {}
        for i in self.session.get_inputs()[1:]:
            shp = [1 if not isinstance(d, int) else d for d in i.shape]
            shapes[i.name] = tuple(shp)
        self._state = [{k: np.zeros(s, np.float32) for k, s in shapes.items()} for _ in range(2)]
        out_names = {"e_hist": "e_hist_out", "h": "h_out"}
        self._bind = {}
        for T in range(1, self._tmax + 1):
            for p in (0, 1):
                io = self.session.io_binding()
                io.bind_cpu_input("frames", self._frames[:, :T])
                for name in shapes:
                    io.bind_cpu_input(name, self._state[p][name])
                    o = self._state[1 - p][name]
                    io.bind_output(out_names[name], "cpu", 0, np.float32, list(o.shape), o.ctypes.data)
                kn = self._knots[:, :T]
                io.bind_output("knots", "cpu", 0, np.float32, list(kn.shape), kn.ctypes.data)
                self._bind[(T, p)] = io
        self._warm()

    def _warm(self) -> None:
        """One call per shape before the stream starts (first-run allocations happen here)."""
        for T in range(1, self._tmax + 1):
            self.session.run_with_iobinding(self._bind[(T, 0)])

    def reset(self) -> None:
        for st in self._state:
            for v in st.values():
                v.fill(0.0)
        self._parity = 0
        self._ybuf.fill(0.0)
        self._yfill = 0
        self._pend = 0  # frames in ybuf already fed to the model, not yet restored
        self._ofifo.fill(0.0)
        self._ofill = self.latency  # pre-fill = the latency: the output starts with it in silence
        self._skip[0] = self.lookahead_frames
        self._fs[:] = (0.0, self.values[0], 10.0 ** (self.values[1] / 20.0), 1.0)
        self.readings.fill(0.0)

    def process(self, block: np.ndarray) -> None:
        n = block.shape[0]
        H = self.hop
        self.nonfinite_count += _stage_in(block, n, self._ybuf, self._yfill, IN_CLIP)
        self._yfill += n
        T = (self._yfill - self._pend * H) // H
        self.readings[0] = 0.0
        self.readings[1] = 0.0
        if T > 0:
            _frames(self._ybuf, self._pend * H, T, H, self._frames)
            self.session.run_with_iobinding(self._bind[(T, self._parity)])
            self._parity ^= 1
            self._pend += T
            done = _restore(self._knots, T, self._skip, self._ybuf, H, self._ofifo, self._ofill,
                            self.values, self._fs, self._k, self.readings)
            self._ofill += done * H
            self._pend -= done
            self._yfill -= done * H
            _shift(self._ybuf, done * H, self._yfill)
        self._ofill = _pop(self._ofifo, self._ofill, block, n)
