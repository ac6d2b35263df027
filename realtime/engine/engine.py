"""The live engine: a PortAudio stream with the compiled callback, a DSP thread, a monitor.

    PortAudio RT thread ──(compiled callback)──► input ring ──► DSP thread: chain ──► output ring ──► callback

Control from other threads goes through rings too: ``set_param`` (one control thread) and
``send_midi`` (one MIDI thread) push records that the DSP thread applies between blocks, so the
chain is only ever touched by the DSP thread while streaming.

MIDI keeps its timing within a block: each message carries its arrival time (CLOCK_MONOTONIC, the
callback's clock). The block processed after the callback that began at T takes the messages that
arrived in [T - period, T), each at the sample offset matching its time in that window; messages
from after T wait for the next block. So every message is heard one period after it would have been
"on time", a constant delay instead of a jitter of up to a block.
"""
from __future__ import annotations

import gc
import os
import select
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from realtime.engine import callback as cb
from realtime.engine.ring import Ring, ring_discard, ring_pop, ring_push, ring_readable
from realtime.engine.rt_os import SwitchCounter
from realtime.errors import EngineError
from realtime.io.portaudio import check, resolve_device, sd

PA_FLOAT32 = 0x00000001
PA_CLIP_OFF = 0x00000001

PARAM, BYPASS, MIX = 0, 1, 2  # control record kinds
MIDI_MAX_AHEAD_NS = 10e9  # a MIDI stamp further ahead than this is taken as garbage and played now
LATE_CONTEXT_MAX = 16  # late blocks not the server's explained in stats() (the first ones; they are rare)



@dataclass
class EngineConfig:
    samplerate: int = 48000
    blocksize: int = 128
    channels: int = 2
    mode: str = "duplex"  # "duplex", "input" (capture only) or "output" (playback only, e.g. a synth)
    input_device: int | str | None = None
    output_device: int | str | None = None
    prefill_blocks: int = 2  # output ring pre-fill: the DSP thread's time budget, in blocks
    ring_blocks: int = 32  # ring capacity, in blocks
    switch_interval_s: float = 0.0005  # GIL hand-over interval while streaming (Python's default 5 ms > a 128-frame block)
    realtime_priority: int = 5  # SCHED_FIFO priority for the DSP thread when permitted (JACK's own threads run higher)

    def validate(self) -> None:
        if self.samplerate not in (44100, 48000, 88200, 96000):
            raise EngineError(f"samplerate {self.samplerate} not supported (44100, 48000, 88200, 96000)")
        if not 32 <= self.blocksize <= 2048:
            raise EngineError(f"blocksize {self.blocksize} outside 32..2048 frames")
        if self.channels not in (1, 2):
            raise EngineError(f"channels must be 1 or 2, got {self.channels}")
        if self.mode not in ("duplex", "input", "output"):
            raise EngineError(f"mode must be duplex, input or output, got {self.mode!r}")
        if self.prefill_blocks < 1:
            raise EngineError("prefill_blocks must be >= 1")


class Engine:
    def __init__(self, chain, config: EngineConfig | None = None, tap: Ring | None = None):
        self.chain = chain
        self.config = config or EngineConfig()
        self.config.validate()
        self.tap = tap  # optional ring receiving every processed block (recording, tests)
        self.error: str | None = None  # set when the device/server disappears
        self._stream = None
        self._running = False
        self._threads: list[threading.Thread] = []
        self._slot_ids: list[str] = []
        c = self.config
        ring_frames = c.blocksize * c.ring_blocks
        self.in_ring = Ring.for_frames(ring_frames, c.channels)
        # The output ring holds a full input ring plus the pre-fill: after a stall the DSP thread
        # flushes everything queued at once, and a drop here would shift latency behind the
        # callback's skip accounting.
        self.out_ring = Ring.for_frames(self.in_ring.capacity + c.blocksize * (c.prefill_blocks + 1), c.channels)
        self.timing = Ring(8192, cb.TIME_WIDTH, np.int64)
        self.control = Ring(1024, 4, np.float64)  # (slot, param, value, kind)
        self.midi = Ring(1024, 4, np.float64)  # (status, data1, data2, arrival CLOCK_MONOTONIC ns)
        self.stats_arr = np.zeros(cb.ST_SIZE, np.int64)
        self._clock = np.zeros(2 + cb.TIME_WIDTH, np.int64)
        self._wake_byte = np.ones(1, np.uint8)
        self._ctl = np.zeros(cb.CTL_SIZE, np.int64)
        self._block = np.zeros((c.blocksize, c.channels), np.float32)
        # for UIs, per block (linear): input peak L/R, output peak L/R, input mean square L/R,
        # output mean square L/R
        self.meters = np.zeros(8, np.float32)
        # every block's meters, for a UI that must not miss peaks between its redraws; a UI
        # pops them (single consumer); nobody reading just means pushes are dropped
        self.meter_ring = Ring(1024, 8, np.float32)
        # rolling histories the monitor fills (microseconds)
        self._cb_us = np.zeros(1 << 16, np.float32)
        self._cb_n = 0
        self._dsp_us = np.zeros(1 << 16, np.float32)
        self._dsp_n = 0
        # per block, for explaining late blocks: start (CLOCK_MONOTONIC ns, the callback's clock)
        # and this thread's CPU time (wall minus CPU: preempted, waiting for the GIL, or stolen)
        self._dsp_t0 = np.zeros(1 << 16, np.int64)
        self._dsp_cpu_us = np.zeros(1 << 16, np.float32)
        self._dsp_switches = np.zeros(1 << 16, np.int64)  # context switches during the block (-1: unknown)
        self._switches = SwitchCounter()
        # the first LATE_CONTEXT_MAX late blocks that no server anomaly explains, explained
        self.late_context: list[dict] = []
        self._late_pending: list[int] = []  # their callbacks' start times, until explained
        self._last_start_ns = 0
        self.delayed_callbacks = 0
        self.max_callback_gap_ms = 0.0  # longest interval between callback starts (set 0 to time a window)
        # Late blocks with no server timing anomaly (a delayed or bunched callback, an xrun flag)
        # among the callbacks that could have affected them are either the hypervisor's (it took
        # at least a period of CPU from the DSP thread in their window: `_explain_late`) or ours.
        self.late_blocks_ours = 0
        self.late_blocks_stolen = 0
        self._attrib_window = self.config.prefill_blocks + 2
        self._odd_tail = np.zeros(self._attrib_window - 1, bool)
        self.dsp_overflows = 0
        self._stream_info = (0.0, 0.0)
        self._dsp_tid = 0  # the DSP thread's kernel id, for its page-fault counters

    # ---------------------------------------------------------------- life cycle
    def start(self) -> None:
        if self._running:
            return
        c = self.config
        self.chain.prepare(c.samplerate, c.blocksize, c.channels)
        self._slot_ids = [s.id for s in self.chain.slots]
        self._warm_up()
        # A full garbage collection walks every object (~130k with the neural processors loaded:
        # ~70 ms, 26 blocks, measured) and can start in any thread, the DSP thread included.
        # Collect once now and freeze the survivors, so later collections only see new objects.
        gc.collect()
        gc.freeze()
        self._wire_control_block()
        # pre-fill: the DSP thread gets prefill_blocks periods to deliver each block
        if c.mode != "input":
            self.out_ring.push(np.zeros((c.blocksize * c.prefill_blocks, c.channels), np.float32))
        self._open_stream()
        self._running = True
        self._old_switch = sys.getswitchinterval()
        sys.setswitchinterval(c.switch_interval_s)
        self._threads = [threading.Thread(target=self._dsp_loop, name="dsp", daemon=True),
                         threading.Thread(target=self._monitor_loop, name="engine-monitor", daemon=True)]
        for t in self._threads:
            t.start()
        s = sd()
        check(s._lib.Pa_StartStream(self._stream), "start stream")

    def stop(self) -> None:
        """Stop and close the stream (always before any JACK server is torn down)."""
        if not self._running:
            return
        self._running = False
        s = sd()
        if self._stream is not None:
            if self.error is None:
                s._lib.Pa_StopStream(self._stream)
                s._lib.Pa_CloseStream(self._stream)
            else:
                _abandon(self)
            self._stream = None
        os.write(self._wake_w, b"x")
        for t in self._threads:
            t.join(2)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._drain_timing()
        sys.setswitchinterval(self._old_switch)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self) -> bool:
        return self._running

    def _warm_up(self) -> None:
        """Compile/load every kernel signature and warm ONNX sessions before the stream starts,
        so the first real block does no compilation; then reset all state. (A compile, even a
        cache load, in the DSP or monitor thread holds the GIL: ~100 ms on a fresh checkout.)"""
        for _ in range(3):
            self._block[:] = 0
            self.chain.process(self._block)
        self.chain.reset()
        self._block[:] = 0
        _peak(self._block, self.meters, 0)
        rec = np.zeros((1, 4), np.float64)
        for ring in (self.control, self.midi):
            ring_pop(ring.buf, ring.idx, rec, 0)
            ring_discard(ring.buf, ring.idx, 0)  # a chain without MIDI input discards the MIDI ring
        ring_pop(self.timing.buf, self.timing.idx, np.zeros((1, cb.TIME_WIDTH), np.int64), 0)  # the monitor's
        self._switches.store(0, self._dsp_switches)
        Ring.compile_record_push()  # the producers' side too (set_param, send_midi)
        for ring in (self.in_ring, self.out_ring, self.meter_ring) + ((self.tap,) if self.tap is not None else ()):
            ring_push(ring.buf, ring.idx, self._block, 0)
            ring_pop(ring.buf, ring.idx, self._block, 0)
            ring_readable(ring.idx)

    def _wire_control_block(self) -> None:
        c = self.config
        ctl = self._ctl
        has_in, has_out = c.mode != "output", c.mode != "input"
        ctl[cb.CTL_IN_BUF] = self.in_ring.buf.ctypes.data
        ctl[cb.CTL_IN_IDX] = self.in_ring.idx.ctypes.data
        ctl[cb.CTL_IN_CAP] = self.in_ring.capacity
        ctl[cb.CTL_IN_CH] = c.channels if has_in else 0
        ctl[cb.CTL_OUT_BUF] = self.out_ring.buf.ctypes.data
        ctl[cb.CTL_OUT_IDX] = self.out_ring.idx.ctypes.data
        ctl[cb.CTL_OUT_CAP] = self.out_ring.capacity
        ctl[cb.CTL_OUT_CH] = c.channels if has_out else 0
        ctl[cb.CTL_STATS] = self.stats_arr.ctypes.data
        ctl[cb.CTL_TIME_BUF] = self.timing.buf.ctypes.data
        ctl[cb.CTL_TIME_IDX] = self.timing.idx.ctypes.data
        ctl[cb.CTL_TIME_CAP] = self.timing.capacity
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        ctl[cb.CTL_WAKE_FD] = self._wake_w
        ctl[cb.CTL_WAKE_BYTE] = self._wake_byte.ctypes.data
        ctl[cb.CTL_CLOCK] = self._clock.ctypes.data

    def _open_stream(self) -> None:
        c = self.config
        s = sd()
        ffi, lib = s._ffi, s._lib

        def params(kind):
            dev = resolve_device(c.input_device if kind == "input" else c.output_device, kind, c.channels)
            p = ffi.new("PaStreamParameters *")
            p.device = dev
            p.channelCount = c.channels
            p.sampleFormat = PA_FLOAT32
            info = lib.Pa_GetDeviceInfo(dev)
            p.suggestedLatency = info.defaultLowInputLatency if kind == "input" else info.defaultLowOutputLatency
            p.hostApiSpecificStreamInfo = ffi.NULL
            return p

        in_p = params("input") if c.mode != "output" else ffi.NULL
        out_p = params("output") if c.mode != "input" else ffi.NULL
        check(lib.Pa_IsFormatSupported(in_p, out_p, float(c.samplerate)),
              f"{c.samplerate} Hz, {c.channels} ch {c.mode} stream")
        stream = ffi.new("PaStream **")
        self._callback_ptr = cb.callback_pointer(ffi)  # keep alive while the stream exists
        check(lib.Pa_OpenStream(stream, in_p, out_p, float(c.samplerate), c.blocksize, PA_CLIP_OFF,
                                self._callback_ptr, ffi.cast("void *", self._ctl.ctypes.data)), "open stream")
        self._stream = stream[0]
        info = lib.Pa_GetStreamInfo(self._stream)
        self._stream_info = (info.inputLatency, info.outputLatency)

    # ---------------------------------------------------------------- control (other threads)
    def set_param(self, slot_id: str, param_id: str, value) -> None:
        """Queue a parameter change (validated here, applied by the DSP thread at the next block).

        Single producer: call from one control thread (the GUI, or the main thread).
        """
        si = self._slot_index(slot_id)
        proc = self.chain.slots[si].processor
        pi = proc.param_index(param_id)
        v = proc.params[pi].validate(value, where=f"{slot_id}.")
        self._push_control(si, pi, v, PARAM)

    def set_bypass(self, slot_id: str, bypass: bool) -> None:
        self._push_control(self._user_slot(slot_id), 0, 1.0 if bypass else 0.0, BYPASS)

    def set_mix(self, slot_id: str, mix: float) -> None:
        mix = float(mix)
        if not 0.0 <= mix <= 1.0:
            raise EngineError(f"{slot_id}.mix: {mix} outside [0, 1]")
        self._push_control(self._user_slot(slot_id), 0, mix, MIX)

    def _user_slot(self, slot_id: str) -> int:
        """Index of a slot the user may bypass/mix: the final safety stage is not one (refused
        here, so the DSP thread never meets the chain's error)."""
        si = self._slot_index(slot_id)
        if si == len(self.chain.slots) - 1 and self.chain.slots[si].processor.kind == "safety":
            raise EngineError(f"{slot_id}: the safety stage cannot be bypassed or mixed")
        return si

    def send_midi(self, status: int, data1: int = 0, data2: int = 0, at_ns: int | None = None) -> bool:
        """Queue a MIDI message for the chain (single producer: the MIDI input thread), stamped
        with ``time.monotonic_ns()`` now, or ``at_ns`` (same clock; a later time schedules it,
        up to MIDI_MAX_AHEAD_NS ahead; 0 means "next block, at its start")."""
        t = time.monotonic_ns() if at_ns is None else at_ns
        return self.midi.push_record(float(status), float(data1), float(data2), float(t))

    def _slot_index(self, slot_id: str) -> int:
        ids = [s.id for s in self.chain.slots]
        if slot_id not in ids:
            raise EngineError(f"unknown slot {slot_id!r}; slots: {ids}")
        return ids.index(slot_id)

    def _push_control(self, si: int, pi: int, value: float, kind: int) -> None:
        if not self._running:  # not streaming: the chain is ours to touch directly
            self._apply_control(si, pi, value, kind)
            return
        if not self.control.push_record(si, pi, value, kind):
            raise EngineError("control queue full: the DSP thread is not keeping up")

    def _apply_control(self, si, pi, value, kind) -> None:
        slot = self.chain.slots[si]
        if kind == PARAM:
            slot.processor.values[pi] = value
        elif kind == BYPASS:
            self.chain.set_bypass(slot.id, bool(value))
        else:
            self.chain.set_mix(slot.id, value)

    # ---------------------------------------------------------------- DSP thread
    def _dsp_loop(self) -> None:
        c = self.config
        self._dsp_tid = threading.get_native_id()
        set_realtime_priority(c.realtime_priority)
        B = c.blocksize
        block = self._block
        in_buf, in_idx = self.in_ring.buf, self.in_ring.idx
        out_buf, out_idx = self.out_ring.buf, self.out_ring.idx
        has_in, has_out = c.mode != "output", c.mode != "input"
        target_fill = B * c.prefill_blocks
        ctrl = self.control
        ctrl_rec = np.zeros((1, 4), np.float64)
        midi_rec = np.zeros((1, 4), np.float64)
        midi_sink = getattr(self.chain, "handle_midi", None)
        midi_held = False  # midi_rec holds a popped message that is not due yet
        ctl_block = self._ctl
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        process = self.chain.process
        tap = self.tap
        meters = self.meters
        meter_rec = meters.reshape(1, -1)
        meter_buf, meter_idx = self.meter_ring.buf, self.meter_ring.idx
        perf = time.perf_counter_ns
        dsp_us, dsp_t0, dsp_cpu_us, dsp_switches = self._dsp_us, self._dsp_t0, self._dsp_cpu_us, self._dsp_switches
        switches = self._switches
        cpu = time.thread_time_ns
        mask = dsp_us.shape[0] - 1
        while self._running:
            poller.poll(100)
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
            while ring_pop(ctrl.buf, ctrl.idx, ctrl_rec, 1):
                self._apply_control(int(ctrl_rec[0, 0]), int(ctrl_rec[0, 1]), ctrl_rec[0, 2], int(ctrl_rec[0, 3]))
            if midi_sink is None:
                self.midi.discard(self.midi.readable())
            while self._running:
                if has_in:
                    if ring_readable(in_idx) < B:
                        break
                    ring_pop(in_buf, in_idx, block, B)
                else:
                    if ring_readable(out_idx) >= target_fill:
                        break
                    block.fill(0.0)
                if midi_sink is not None:
                    midi_held = self._deliver_midi(midi_sink, midi_rec, midi_held, float(ctl_block[cb.CTL_LAST_START]))
                _peak(block, meters, 0)
                t0, c0 = perf(), cpu()
                switches.before()
                process(block)
                switches.after()
                i = self._dsp_n & mask
                dsp_us[i] = (perf() - t0) * 1e-3
                dsp_cpu_us[i] = (cpu() - c0) * 1e-3
                switches.store(i, dsp_switches)
                dsp_t0[i] = t0  # perf_counter_ns is CLOCK_MONOTONIC on Linux, like the callback's stamps
                self._dsp_n += 1
                _peak(block, meters, 2)
                ring_push(meter_buf, meter_idx, meter_rec, 1)
                if has_out and ring_push(out_buf, out_idx, block, B) < B:
                    self.dsp_overflows += 1
                if tap is not None:
                    ring_push(tap.buf, tap.idx, block, B)

    def _deliver_midi(self, sink, rec, held: bool, end: float) -> bool:
        """Hand the chain the messages due in this block: those stamped before ``end`` (the start
        of the callback that triggered it), at their offset in [end - period, end). Returns
        whether ``rec`` holds a message kept for a later block."""
        B = self.config.blocksize
        per_ns = self.config.samplerate * 1e-9
        start = end - B / per_ns
        while held or ring_pop(self.midi.buf, self.midi.idx, rec, 1):
            t = rec[0, 3]
            if end < t <= end + MIDI_MAX_AHEAD_NS:  # later than this block (NaN / absurd stamps: now)
                return True
            held = False
            off = int((t - start) * per_ns) if start < t <= end else 0  # late or garbage: block start
            sink(int(rec[0, 0]), int(rec[0, 1]), int(rec[0, 2]), min(off, B - 1))
        return False

    # ---------------------------------------------------------------- monitor thread
    def _monitor_loop(self) -> None:
        period = self.config.blocksize / self.config.samplerate
        last_callbacks, last_change = -1, time.monotonic()
        while self._running:
            time.sleep(0.05)
            self._drain_timing()
            self._explain_pending_late()
            n = int(self.stats_arr[cb.ST_CALLBACKS])
            now = time.monotonic()
            if n != last_callbacks:
                last_callbacks, last_change = n, now
            elif now - last_change > max(1.0, 50 * period) and self.error is None:
                self.error = ("audio device stopped delivering callbacks "
                              f"(no callback for {now - last_change:.1f} s): server or device lost")

    def _drain_timing(self) -> None:
        buf, idx = self.timing.buf, self.timing.idx
        n = int(ring_readable(idx))
        if n == 0:
            return
        recs = np.empty((n, cb.TIME_WIDTH), np.int64)
        ring_pop(buf, idx, recs, n)
        mask = self._cb_us.shape[0] - 1
        pos = (self._cb_n + np.arange(n)) & mask
        self._cb_us[pos] = recs[:, 1] * 1e-3
        self._cb_n += n
        starts = recs[:, 0]
        prev = np.concatenate(([self._last_start_ns or starts[0]], starts[:-1]))
        period_ns = recs[:, 2] * 1e9 / self.config.samplerate
        gaps = starts - prev
        delayed = gaps > 1.5 * period_ns
        self.max_callback_gap_ms = max(self.max_callback_gap_ms, float(gaps.max()) * 1e-6)
        self.delayed_callbacks += int(np.count_nonzero(delayed))
        # server timing anomalies: a callback delayed, or bunched right after one (catching up),
        # or carrying PortAudio's xrun flags
        odd = delayed | (gaps < 0.5 * period_ns) | ((recs[:, 3] & (cb.LATE_FLAG - 1)) != 0)
        if not self._last_start_ns:
            odd[0] = False  # the very first callback has no predecessor
        self._last_start_ns = int(starts[-1])
        W = self._attrib_window
        hist = np.concatenate((self._odd_tail, odd))
        for i in np.flatnonzero(recs[:, 3] & cb.LATE_FLAG):  # rare: a Python loop is fine
            if not hist[i : i + W].any():  # no anomaly in this callback or the W - 1 before it
                self._late_pending.append(int(starts[i]))  # ours or stolen: see _explain_pending_late
        self._odd_tail = hist[len(hist) - (W - 1):]

    def _explain_pending_late(self, force: bool = False) -> None:
        """Explain and attribute late blocks once the DSP thread has started a block after them (a
        block is recorded when it ends: a stalled one shows up late), or after a second."""
        if not self._late_pending:
            return
        latest = int(self._dsp_t0[(self._dsp_n - 1) & (self._dsp_t0.shape[0] - 1)]) if self._dsp_n else 0
        now = time.monotonic_ns()
        keep = []
        for start_ns in self._late_pending:
            if not (force or latest > start_ns or now - start_ns > 1e9):
                keep.append(start_ns)
                continue
            ctx = self._explain_late(start_ns)
            if ctx["cause"] == "stolen":
                self.late_blocks_stolen += 1
            else:
                self.late_blocks_ours += 1
            if len(self.late_context) < LATE_CONTEXT_MAX:
                self.late_context.append(ctx)
        self._late_pending = keep

    # blocks looked at when explaining a late one: it is explained within about a second
    EXPLAIN_LOOKBACK_BLOCKS = 4096

    def _explain_late(self, start_ns: int) -> dict:
        """What the DSP thread did in the attribution window before a late callback at
        ``start_ns``: blocks started, the longest gap between block starts (up to the callback),
        the slowest block's wall and CPU time, and the time the hypervisor took from the thread.

        Stolen time is a block's wall time minus its CPU time when the thread was not switched
        out during it (no GIL wait, no preemption): the virtual CPU itself was taken away (a
        paravirtual Linux keeps steal out of thread CPU time). Counted for the blocks overlapping
        the window, and only as much as must have fallen inside it. A late block is the
        hypervisor's ("stolen") when that is at least one block period, otherwise "ours"."""
        period_ns = 1e9 * self.config.blocksize / self.config.samplerate
        size = self._dsp_t0.shape[0]
        n = self._dsp_n
        idx = np.arange(n - min(n, size, self.EXPLAIN_LOOKBACK_BLOCKS), n) & (size - 1)
        t0 = self._dsp_t0[idx]
        wall_ns = self._dsp_us[idx].astype(np.float64) * 1e3
        lo = start_ns - (self._attrib_window + 1) * period_ns
        started = (t0 >= lo) & (t0 <= start_ns)
        inside = idx[started]
        before = t0[t0 < lo]
        edges = np.concatenate(([before.max()] if before.size else [], t0[started], [start_ns]))
        worst = inside[np.argmax(self._dsp_us[inside])] if inside.size else None
        # off-CPU time without a switch, at least this much of it inside the window
        ov = (t0 <= start_ns) & (t0 + wall_ns >= lo) & (self._dsp_switches[idx] == 0)
        outside_ns = wall_ns[ov] - (np.minimum(t0[ov] + wall_ns[ov], start_ns) - np.maximum(t0[ov], lo))
        off_cpu_ns = wall_ns[ov] - self._dsp_cpu_us[idx[ov]].astype(np.float64) * 1e3
        stolen_ms = float(np.clip(off_cpu_ns - outside_ns, 0, None).sum() * 1e-6)
        return {"callback_ns": start_ns, "blocks_in_window": int(inside.size),
                "max_gap_ms": float(np.diff(edges).max() * 1e-6) if edges.size > 1 else None,
                "slowest_block_ms": float(self._dsp_us[worst] * 1e-3) if worst is not None else None,
                "slowest_block_cpu_ms": float(self._dsp_cpu_us[worst] * 1e-3) if worst is not None else None,
                "slowest_block_switches": int(self._dsp_switches[worst]) if worst is not None else None,
                "stolen_ms": stolen_ms, "cause": "stolen" if stolen_ms >= period_ns * 1e-6 else "ours"}

    # ---------------------------------------------------------------- reports
    def latency(self) -> dict:
        c = self.config
        prefill = c.blocksize * c.prefill_blocks if c.mode == "duplex" else 0
        chain_lat = int(self.chain.latency)
        added = prefill + chain_lat
        in_lat, out_lat = self._stream_info
        return {"samplerate": c.samplerate, "blocksize": c.blocksize, "prefill_frames": prefill,
                "chain_latency_frames": chain_lat, "added_frames": added,
                "added_ms": 1000.0 * added / c.samplerate,
                "device_input_ms": 1000.0 * in_lat, "device_output_ms": 1000.0 * out_lat,
                "round_trip_ms": 1000.0 * (in_lat + out_lat + added / c.samplerate)}

    def stats(self) -> dict:
        if not self._running:
            self._drain_timing()
            self._explain_pending_late(force=True)
        st = self.stats_arr
        period_us = 1e6 * self.config.blocksize / self.config.samplerate
        cbs = self._cb_us[: min(self._cb_n, self._cb_us.shape[0])]
        dsp = self._dsp_us[: min(self._dsp_n, self._dsp_us.shape[0])]
        p = lambda a, q: float(np.percentile(a, q)) if a.size else 0.0  # noqa: E731
        return {"callbacks": int(st[cb.ST_CALLBACKS]), "late_blocks": int(st[cb.ST_LATE_BLOCKS]),
                "late_frames": int(st[cb.ST_LATE_FRAMES]), "server_xruns": int(st[cb.ST_SERVER_XRUNS]),
                "input_dropped_frames": int(st[cb.ST_IN_DROPPED]), "delayed_callbacks": self.delayed_callbacks,
                "callback_gap_ms_max": self.max_callback_gap_ms,
                "late_blocks_ours": self.late_blocks_ours, "late_blocks_stolen": self.late_blocks_stolen,
                "late_context": list(self.late_context),
                "nonfinite_scrubbed": int(st[cb.ST_NONFINITE]), "clipped": int(st[cb.ST_CLIPPED]),
                "callback_us_p50": p(cbs, 50), "callback_us_p99": p(cbs, 99),
                "callback_us_max": float(cbs.max()) if cbs.size else 0.0,
                "dsp_us_p50": p(dsp, 50), "dsp_us_p99": p(dsp, 99), "dsp_us_max": float(dsp.max()) if dsp.size else 0.0,
                "dsp_load": p(dsp, 50) / period_us, "blocks_processed": self._dsp_n, **self.dsp_page_faults(),
                "error": self.error}

    def dsp_page_faults(self) -> dict:
        """The DSP thread's page faults so far (Linux; zeros elsewhere). A fault in the audio path
        is a stall: minor ones mean first-touched or newly allocated memory, major ones a read
        from disk (code or data the kernel had evicted)."""
        minor, major = thread_page_faults(self._dsp_tid) if self._dsp_tid else (0, 0)
        return {"dsp_minor_faults": minor, "dsp_major_faults": major}


def set_realtime_priority(level: int, tid: int = 0) -> bool:
    """SCHED_FIFO ``level`` for thread ``tid`` (0: the calling thread), where permitted; whether it
    took (not permitted: the thread keeps its normal priority)."""
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(level))
        return True
    except (AttributeError, PermissionError, OSError):
        return False


def thread_page_faults(tid: int) -> tuple[int, int]:
    """(minor, major) page faults of thread ``tid`` of this process, from /proc; (0, 0) if unknown."""
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": comm may hold spaces
    except OSError:
        return 0, 0
    return int(fields[7]), int(fields[9])  # minflt, majflt (fields 10 and 12 of proc(5))


_ABANDONED: list = []


def _abandon(engine: "Engine") -> None:
    """The device/server vanished: PortAudio's stop, abort and close (and Pa_Terminate at exit)
    block forever waiting for a server that is gone (seen with JACK killed mid-stream). Leave the
    dead stream alone, keep everything its callback could touch alive, and skip sounddevice's
    exit handler so the process can still exit cleanly."""
    import atexit

    _ABANDONED.append((engine._stream, engine._ctl, engine.stats_arr, engine.in_ring, engine.out_ring,
                       engine.timing, engine._clock, engine._wake_byte, engine._callback_ptr))
    atexit.unregister(sd()._exit_handler)


def _peak_impl(block, meters, offset):
    """Peak into meters[offset + ch], mean square into meters[offset + 4 + ch]."""
    ch = block.shape[1]
    for c in range(ch):
        m = 0.0
        ms = 0.0
        for k in range(block.shape[0]):
            v = abs(block[k, c])
            if v > m:
                m = v
            ms += v * v
        meters[offset + c] = m
        meters[offset + 4 + c] = ms / max(1, block.shape[0])
    if ch == 1:
        meters[offset + 1] = meters[offset]
        meters[offset + 5] = meters[offset + 4]


from numba import njit  # noqa: E402

_peak = njit(nogil=True, cache=True)(_peak_impl)
