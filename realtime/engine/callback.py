"""The PortAudio stream callback, compiled with Numba ``@cfunc`` so it never needs the GIL.

PortAudio calls ``audio_callback`` from its real-time thread (on JACK: the JACK process thread).
It only copies frames between PortAudio's buffers and two SPSC rings, sanitises the output,
fades it in after a start and out before a stop (``apply_fade``), ramps an underrun's silence in
and the sound after it back (``declick_underrun``), counts under-/overruns,
records its own timing and pokes the DSP thread through a non-blocking pipe write. It allocates nothing, takes no lock and never enters the interpreter, so a Python
thread holding the GIL cannot delay it.

Everything it touches is described by one int64 *control block* whose address is PortAudio's
``userData``; the layout is the ``CTL_*`` constants below.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np
from numba import carray, cfunc, njit, types

from realtime.dsp.kernels import scrub_into
from realtime.engine.atomics import address_as_pointer, load_acquire, pointer_as_address, store_release
from realtime.engine.ring import READ as RING_READ
from realtime.engine.ring import WRITE as RING_WRITE
from realtime.engine.ring import ring_discard, ring_pop, ring_push, ring_push_silence, ring_readable

# control block layout (int64 slots)
CTL_IN_BUF, CTL_IN_IDX, CTL_IN_CAP, CTL_IN_CH = 0, 1, 2, 3
CTL_OUT_BUF, CTL_OUT_IDX, CTL_OUT_CAP, CTL_OUT_CH = 4, 5, 6, 7
CTL_STATS, CTL_TIME_BUF, CTL_TIME_IDX, CTL_TIME_CAP = 8, 9, 10, 11
CTL_WAKE_FD, CTL_WAKE_BYTE, CTL_CLOCK = 12, 13, 14
CTL_LAST_START = 15  # CLOCK_MONOTONIC ns at which the latest callback began
# MIDI's time base (``block_end_ns``): the DSP thread places each block's messages by the time its frames
# stand for, CLOCK_MONOTONIC ns of ring frame 0 plus the block's ring index in frames (0: no callback yet)
CTL_STAMP_BASE = 16
CTL_RATE = 17  # frames per second (the stamps' frame length)
CTL_HOST_CYCLES = 18  # 1: PortAudio's time info places each block in the host's cycle (JACK)
CTL_CYCLE_TIME = 19  # the host cycle's own time (ns, PortAudio's currentTime) of the latest callback
CTL_CYCLE_START = 20  # CLOCK_MONOTONIC ns at which that cycle's first callback began
CTL_CYCLES = 21  # host cycles seen
CTL_POS_MAX, CTL_POS_MAX_OLD = 22, 23  # the latest block position in a cycle, this epoch and the last
# the output's fade (``apply_fade``): a stream that starts or stops mid-waveform clicks
CTL_FADE_LEN = 24  # frames of a whole fade
CTL_FADE_POS = 25  # where the gain stands, 0 (silent) .. CTL_FADE_LEN (unity): the callback's own
CTL_FADE_TARGET = 26  # where it heads: CTL_FADE_LEN from the start, 0 once a stop asks for the fade-out
CTL_FADE_FROM = 27  # the output ring index the fade-in begins at: the first frame after the pre-fill and the chain's latency
CTL_FADED = 28  # set by the callback once a whole block has played at 0 after a fade-out: the stream may stop
CTL_LAST_OUT = 29  # address of float32[channels]: the last frame the callback played (``declick_underrun``)
# input frames the DSP thread dropped unprocessed after a stall, their output due to be discarded
# (``drop_stale_input``; the DSP thread's own, monotonic): credit against the skip debt
CTL_DSP_DROPPED = 30
CTL_SIZE = 31
UNDERRUN_RAMP_S = 0.001  # an underrun's silence starts with a ramp this long from the last frame played

# stats slots (int64, written only by the callback)
ST_CALLBACKS = 0
ST_FRAMES = 1
ST_IN_DROPPED = 2  # input frames dropped: input ring full (DSP thread behind)
ST_LATE_BLOCKS = 3  # callbacks whose output was not ready: blocks *we* delivered late
ST_LATE_FRAMES = 4
ST_SERVER_XRUNS = 5  # callbacks PortAudio flagged with an under/overflow: the server's xruns
ST_SKIP_DEBT = 6  # signed: frames to discard (>0) so latency stays constant after an underrun;
#                   input frames dropped on overflow will never arrive, so they count as credit (<0)
ST_STATUS_BITS = 7  # OR of all PortAudio status flags seen
ST_NONFINITE = 8  # non-finite output samples replaced by 0 (should stay 0: the chain scrubs first)
ST_CLIPPED = 9  # output samples beyond +-1 clamped
ST_TIMING_DROPPED = 10
ST_LATE_MUTED = 11  # late blocks played wholly at fade gain 0 (a swap, a stop, a start's pre-fill): silence either way
ST_DSP_DROPPED_SEEN = 12  # CTL_DSP_DROPPED as the callback last credited it
ST_SIZE = 16

TIME_WIDTH = 4  # timing record: start_ns, duration_ns, frames, status flags (| LATE_FLAG)
LATE_FLAG = 1 << 16  # in a timing record: this callback's output was not ready (PortAudio's flags use bits 0-4)

CLOCK_MONOTONIC = 1

NO_POSITION = -(1 << 62)  # CTL_POS_MAX* before any callback (and CTL_CYCLE_TIME: no cycle yet)
POSITION_EPOCH = 128  # host cycles a block position counts towards the latest one (2 epochs at most)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_clock_gettime = _libc.clock_gettime
_clock_gettime.argtypes = [ctypes.c_int, ctypes.c_void_p]
_clock_gettime.restype = ctypes.c_int
_write = _libc.write
_write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_write.restype = ctypes.c_ssize_t


@njit(nogil=True, cache=False)
def _now_ns(clock_addr):
    _clock_gettime(CLOCK_MONOTONIC, address_as_pointer(clock_addr))
    ts = carray(address_as_pointer(clock_addr), (2,), np.int64)
    return ts[0] * 1_000_000_000 + ts[1]


@njit(nogil=True, cache=True)
def sanitize_output(block, n, stats):
    """NaN/Inf -> 0 and clamp to +-1 in place: the last line of defence before the speakers."""
    scrub_into(block, n, block, 0, 1.0, stats, ST_NONFINITE, ST_CLIPPED)


@njit(nogil=True, cache=True)
def fill_output(out_buf, out_idx, dst, frames, stats, duplex):
    """Pop ``frames`` processed frames into ``dst``; silence + count when the ring runs dry.

    Underrun policy: missing frames are silence. In a duplex stream the same number of frames is
    discarded when they arrive later (skip debt), so the round-trip latency never drifts. An
    output-only stream has no input to stay in step with, and its DSP thread only renders up to
    the pre-fill: discarding would silence as much again after every stall (and drop the starts of
    notes played meanwhile). Returns the frames taken from the ring (the first ``n`` of ``dst``).
    """
    debt = stats[ST_SKIP_DEBT]
    if debt > 0:
        # the debt lowered before the frames go: the DSP thread reads what is queued, then the debt
        # (``drop_stale_input``), so it never sees the ring after the discard with the debt before it
        gone = min(debt, ring_readable(out_idx))
        debt -= gone
        store_release(stats, ST_SKIP_DEBT, debt)
        ring_discard(out_buf, out_idx, gone)
    n = 0
    if debt <= 0:
        n = ring_pop(out_buf, out_idx, dst, frames)
    sanitize_output(dst, n, stats)
    if n < frames:
        for k in range(n, frames):
            for c in range(dst.shape[1]):
                dst[k, c] = 0.0
        stats[ST_LATE_BLOCKS] += 1
        stats[ST_LATE_FRAMES] += frames - n
        if duplex:
            stats[ST_SKIP_DEBT] += frames - n
    return n


@njit(nogil=True, cache=True)
def apply_fade(ctl, dst, n, first_index):
    """The output's raised-cosine fade, in place: ``dst``'s first ``n`` frames came from output ring
    indices ``first_index`` on (the rest is an underrun's silence).

    The gain steps one frame at a time from ``CTL_FADE_POS`` towards ``CTL_FADE_TARGET``. Fading in
    it holds at 0 until the ring reaches ``CTL_FADE_FROM``: the pre-fill (and a chain's latency) is
    silence already, and the fade belongs to the first sound, which would else start mid-waveform
    (nor does it move over an underrun's silence). Fading out it moves on every frame, so a stop
    ends whatever the DSP thread delivers. A block that began at 0 with the fade-out asked for sets
    ``CTL_FADED``: everything played since is silence. At unity (the steady state) it does nothing.
    """
    length = ctl[CTL_FADE_LEN]
    pos = ctl[CTL_FADE_POS]
    target = load_acquire(ctl, CTL_FADE_TARGET)
    if length <= 0 or (pos == length and target == length):
        return
    silent_before = pos == 0 and target == 0
    start = ctl[CTL_FADE_FROM]
    for k in range(dst.shape[0]):
        if pos < target:
            if k < n and first_index + k >= start:
                pos += 1
        elif pos > target:
            pos -= 1
        g = np.float32(0.5 - 0.5 * math.cos(math.pi * pos / length))
        for c in range(dst.shape[1]):
            dst[k, c] *= g
    ctl[CTL_FADE_POS] = pos
    if silent_before:
        store_release(ctl, CTL_FADED, 1)


@njit(nogil=True, cache=True)
def declick_underrun(ctl, dst, n, last, read_index):
    """An underrun's silence (``dst``'s frames from ``n`` on, the DSP thread late) without its clicks:
    it begins with a raised-cosine ramp from the last frame played (``dst[n - 1]``, or ``last``, the
    previous callback's) down to zero over ``UNDERRUN_RAMP_S`` (or the frames missing, when fewer),
    where the cut stepped from mid-waveform to zero; and the sound that comes back fades in over the
    start's fade (``apply_fade`` from ring index ``read_index``), where it stepped from zero. A fade
    towards silence (a stop, a swap) is left alone: it ends in silence anyway. Then ``last`` takes
    this block's last frame."""
    frames = dst.shape[0]
    if frames == 0:
        return
    if n < frames:
        ramp = min(frames - n, max(1, np.int64(ctl[CTL_RATE] * UNDERRUN_RAMP_S)))
        for c in range(dst.shape[1]):
            v = dst[n - 1, c] if n > 0 else last[c]
            for k in range(ramp):
                dst[n + k, c] = v * np.float32(0.5 + 0.5 * math.cos(math.pi * (k + 1) / (ramp + 1)))
        if load_acquire(ctl, CTL_FADE_TARGET) == ctl[CTL_FADE_LEN]:
            ctl[CTL_FADE_POS] = 0
            # (a fade-in still waiting for a chain's first sound keeps waiting for it)
            ctl[CTL_FADE_FROM] = max(ctl[CTL_FADE_FROM], read_index)
    for c in range(dst.shape[1]):
        last[c] = dst[frames - 1, c]


@njit(nogil=True, cache=True)
def count_missing_input(frames, stats, duplex):
    """Input frames that will never reach the DSP thread (the input ring was full). In a duplex
    stream they count as credit against the skip debt: the output they would have become never
    arrives, and discarding on-time frames in its place would shorten the latency for good."""
    stats[ST_IN_DROPPED] += frames
    if duplex:
        stats[ST_SKIP_DEBT] -= frames


@njit(nogil=True, cache=True)
def credit_stale_input(ctl, stats):
    """The input frames the DSP thread dropped from its backlog since the last look (``drop_stale_input``)
    count as credit against the skip debt, as the input ring's own drops do (duplex)."""
    dropped = load_acquire(ctl, CTL_DSP_DROPPED)
    new = dropped - stats[ST_DSP_DROPPED_SEEN]
    if new != 0:
        stats[ST_SKIP_DEBT] -= new
        store_release(stats, ST_DSP_DROPPED_SEEN, dropped)  # the DSP thread drops again only after this


@njit(nogil=True, cache=True)
def drop_stale_input(in_buf, in_idx, out_idx, stats, ctl, least):
    """The DSP thread's side of a stall (duplex): the input that piled up meanwhile would be
    processed only for the callback to discard its output (skip debt), a silence that outlasted the
    stall by load / (1 - load) (80 % load: a 30-period stall, 112 periods more). The oldest frames
    whose output is due to be discarded (the debt beyond what the output ring holds) are dropped
    unprocessed, at least ``least`` of them, and published for the callback to credit; the rest
    (the pre-fill's lead) is processed as always. Returns how many; none while the callback has not
    credited the last ones (its debt still counts them). A callback that reads the credit just
    before it is published and discards a block pushed just after it in its place (microseconds
    apart) costs a glitch, not latency: the credit then leaves the debt negative, which the next
    underrun's frames fill instead of discarding as many."""
    if load_acquire(stats, ST_DSP_DROPPED_SEEN) != ctl[CTL_DSP_DROPPED]:
        return -1
    queued = ring_readable(out_idx)  # first: what the callback discards of it meanwhile lowers the debt read next
    stale = min(load_acquire(stats, ST_SKIP_DEBT) - queued, ring_readable(in_idx))
    if stale < least:
        return 0
    ring_discard(in_buf, in_idx, stale)
    store_release(ctl, CTL_DSP_DROPPED, ctl[CTL_DSP_DROPPED] + stale)
    return stale


@njit(nogil=True, cache=True)
def block_end_ns(ctl, t0, cycle_time, position):
    """When the frames of this callback's block end, CLOCK_MONOTONIC ns: what MIDI is placed by.

    A JACK server whose period is longer than the block runs the callback period / blocksize times
    back to back in each cycle: all of them start within microseconds of ``t0``, while their blocks
    follow one another through the period. PortAudio's time info says where: ``position``, the
    block's DAC (an input-only stream's: ADC) time less the cycle's ``cycle_time``, in seconds, one
    block further for each callback of a cycle, plus the port latency and the leftover of a period
    that is not a multiple of the block. The block at the latest position ends when the cycle's
    first callback began (as every block did at one callback a cycle); the others end earlier by
    their distance to it, so a cycle's blocks follow on from the last cycle's. The latest position
    is the largest seen over the last ``POSITION_EPOCH`` to twice that many cycles (a period not a
    multiple of the block reaches it once in a while; a period or port latency that shrinks is
    followed within two epochs). Without it (``CTL_HOST_CYCLES`` 0: another host API, whose time
    info PortAudio does not count this way) a block ends when its callback began."""
    if ctl[CTL_HOST_CYCLES] == 0:
        return t0
    cycle = np.int64(round(cycle_time * 1e9))
    if cycle != ctl[CTL_CYCLE_TIME]:  # the cycle's first callback
        ctl[CTL_CYCLE_TIME] = cycle
        ctl[CTL_CYCLE_START] = t0
        ctl[CTL_CYCLES] += 1
        if ctl[CTL_CYCLES] % POSITION_EPOCH == 0:
            ctl[CTL_POS_MAX_OLD] = ctl[CTL_POS_MAX]
            ctl[CTL_POS_MAX] = NO_POSITION
    pos = np.int64(round(position * 1e9))
    if pos > ctl[CTL_POS_MAX]:
        ctl[CTL_POS_MAX] = pos
    return ctl[CTL_CYCLE_START] + pos - max(ctl[CTL_POS_MAX], ctl[CTL_POS_MAX_OLD])


@njit(nogil=True, cache=True)
def publish_stamp(ctl, end_ns, ring_index):
    """The DSP thread's MIDI time base: ``end_ns`` is when the frame before ring index ``ring_index``
    ends (the input ring's write index after this callback's push; an output-only stream's: the
    output ring's read index after its pop). One value, so the DSP thread never pairs one
    callback's time with another's index."""
    store_release(ctl, CTL_STAMP_BASE, np.int64(round(end_ns - ring_index * (1e9 / ctl[CTL_RATE]))))


_SIG = types.int32(types.voidptr, types.voidptr, types.uint64, types.voidptr, types.uint64, types.voidptr)


def _audio_callback(inp, out, frame_count, time_info, status_flags, user_data):
    ctl = carray(user_data, (CTL_SIZE,), np.int64)
    t0 = _now_ns(ctl[CTL_CLOCK])
    ctl[CTL_LAST_START] = t0
    stats = carray(address_as_pointer(ctl[CTL_STATS]), (ST_SIZE,), np.int64)
    frames = np.int64(frame_count)
    flags = np.int64(status_flags)
    if flags != 0:
        stats[ST_SERVER_XRUNS] += 1
        stats[ST_STATUS_BITS] |= flags

    in_ch = ctl[CTL_IN_CH]
    ring_index = np.int64(0)
    if in_ch > 0:
        in_buf = carray(address_as_pointer(ctl[CTL_IN_BUF]), (ctl[CTL_IN_CAP], in_ch), np.float32)
        in_idx = carray(address_as_pointer(ctl[CTL_IN_IDX]), (16,), np.int64)
        if pointer_as_address(inp) != 0:
            src = carray(inp, (frames, in_ch), np.float32)
            pushed = ring_push(in_buf, in_idx, src, frames)
        else:  # no input buffer (PortAudio's input underflow): silence in its place keeps the chain in step
            pushed = ring_push_silence(in_buf, in_idx, frames)
        if pushed < frames:
            count_missing_input(frames - pushed, stats, ctl[CTL_OUT_CH] > 0)
        ring_index = in_idx[RING_WRITE] + frames - pushed  # (frames it dropped: those pushed ended earlier)

    out_ch = ctl[CTL_OUT_CH]
    if out_ch > 0 and pointer_as_address(out) != 0:
        out_buf = carray(address_as_pointer(ctl[CTL_OUT_BUF]), (ctl[CTL_OUT_CAP], out_ch), np.float32)
        out_idx = carray(address_as_pointer(ctl[CTL_OUT_IDX]), (16,), np.int64)
        dst = carray(out, (frames, out_ch), np.float32)
        if in_ch > 0:
            credit_stale_input(ctl, stats)
        late_before, late_frames_before = stats[ST_LATE_BLOCKS], stats[ST_LATE_FRAMES]
        silent_before = ctl[CTL_FADE_POS] == 0
        n = fill_output(out_buf, out_idx, dst, frames, stats, in_ch > 0)
        apply_fade(ctl, dst, n, out_idx[RING_READ] - n)
        # the whole block at gain 0 by a fade: one out (a stop, a swap) or one in that waits for the
        # chain's first sound (a start's pre-fill, a swap's); not the silence of an underrun under way
        muted = silent_before and ctl[CTL_FADE_POS] == 0 and (
            load_acquire(ctl, CTL_FADE_TARGET) == 0 or ctl[CTL_FADE_FROM] > out_idx[RING_READ])
        last = carray(address_as_pointer(ctl[CTL_LAST_OUT]), (out_ch,), np.float32)
        declick_underrun(ctl, dst, n, last, out_idx[RING_READ])
        if stats[ST_LATE_BLOCKS] != late_before:
            if muted:  # nobody hears it: counted apart, not as a glitch
                stats[ST_LATE_BLOCKS], stats[ST_LATE_FRAMES] = late_before, late_frames_before
                stats[ST_LATE_MUTED] += 1
            else:
                flags |= LATE_FLAG
    if in_ch == 0:  # output only: its ring's next frame plays after this block (a short one too)
        ring_index = carray(address_as_pointer(ctl[CTL_OUT_IDX]), (16,), np.int64)[RING_READ]

    if pointer_as_address(time_info) != 0:
        ti = carray(time_info, (3,), np.float64)  # input ADC, current, output DAC time (s)
        end = block_end_ns(ctl, t0, ti[1], (ti[2] if out_ch > 0 else ti[0]) - ti[1])
    else:
        end = t0
    publish_stamp(ctl, end, ring_index)  # before the wake-up write below, so the woken DSP thread sees it

    stats[ST_CALLBACKS] += 1
    stats[ST_FRAMES] += frames
    # wake the DSP thread (non-blocking pipe: a full pipe just means it is already awake)
    _write(ctl[CTL_WAKE_FD], address_as_pointer(ctl[CTL_WAKE_BYTE]), 1)

    t1 = _now_ns(ctl[CTL_CLOCK])
    time_buf = carray(address_as_pointer(ctl[CTL_TIME_BUF]), (ctl[CTL_TIME_CAP], TIME_WIDTH), np.int64)
    time_idx = carray(address_as_pointer(ctl[CTL_TIME_IDX]), (16,), np.int64)
    rec = carray(address_as_pointer(ctl[CTL_CLOCK] + 16), (1, TIME_WIDTH), np.int64)
    rec[0, 0] = t0
    rec[0, 1] = t1 - t0
    rec[0, 2] = frames
    rec[0, 3] = flags
    if ring_push(time_buf, time_idx, rec, 1) == 0:
        stats[ST_TIMING_DROPPED] += 1
    return 0  # paContinue


_compiled = None


def callback_pointer(ffi):
    """The callback as a ``PaStreamCallback *`` for sounddevice's cffi handle.

    Compiled on the first call (about a second), when the first stream opens, so commands that
    never open a stream never pay for it; later streams in the process reuse it. (A ``cfunc``
    that calls libc through ctypes cannot be cached on disk.)
    """
    global _compiled
    if _compiled is None:
        _compiled = cfunc(_SIG, nopython=True, cache=False)(_audio_callback)
    return ffi.cast("PaStreamCallback *", _compiled.address)
