"""The live engine: a PortAudio stream with the compiled callback, a DSP thread, a monitor.

    PortAudio RT thread ──(compiled callback)──► input ring ──► DSP thread: chain ──► output ring ──► callback

Control from other threads goes through rings too (``realtime.engine.control``): ``set_param``,
``set_bypass`` and ``set_mix`` push records that the DSP thread applies between blocks, and
``send_midi`` pushes MIDI messages, so the chain is only ever touched by the DSP thread while
streaming. While stopped, control is applied at once. The rings may be handed in at construction
(the GUI's engine process passes rings in shared memory, written by its client).

MIDI keeps its timing within a block: each message carries its arrival time (CLOCK_MONOTONIC, the
callback's clock). The block processed after the callback that began at T takes the messages that
arrived in [T - period, T), each at the sample offset matching its time in that window; messages
from after T wait for the next block. So every message is heard one period after it would have been
"on time", a constant delay instead of a jitter of up to a block. T is the time the block's frames
stand for, not when its callback ran: a JACK period longer than the block runs the callbacks of a
cycle back to back, and a DSP thread that renders ahead (output only) or catches up handles several
blocks at once. The callback stamps its ring's index with its block's time, placed within the host's
cycle (``callback.block_end_ns``); each block's T follows from its own ring index (``_block_end``).

Late-block forensics live in ``realtime.engine.diagnostics``; thread priority, page faults and
context switches in ``realtime.engine.rt_os``.
"""
from __future__ import annotations

import _thread
import contextlib
import dataclasses
import gc
import os
import select
import signal
import sys
import threading
import time
import weakref

import numpy as np

from realtime.dsp.processor import dropped_midi_events
from realtime.engine import callback as cb
from realtime.engine.atomics import observe, publish
from realtime.engine.config import COMMON_RATES, EngineConfig
from realtime.engine.control import ControlRings, ControlWriter, apply_record, stamp_applied
from realtime.engine.diagnostics import HISTORY, Diagnostics
from realtime.engine.ring import READ, WRITE, Ring, ring_discard, ring_pop, ring_push, ring_push_silence, ring_readable
from realtime.engine.rt_os import SwitchCounter, set_realtime_priority, thread_page_faults
from realtime.errors import AudioDeviceError, EngineError, Interrupted, signals_deferred
from realtime.io.portaudio import check, resolve_device, sd

PA_FLOAT32 = 0x00000001
PA_INVALID_SAMPLE_RATE = -9997
PA_CLIP_OFF = 0x00000001

MIDI_MAX_AHEAD_NS = 10e9  # a MIDI stamp further ahead than this is taken as garbage and played now
# Pa_StopStream on a live stream returns within a few periods; one that is not back by then waits on
# a server that is gone or paused (the stream is then abandoned: Engine._stop_stream)
STOP_WAIT_S = 1.0
STOP_LOST_WAIT_S = 0.2  # the same once the monitor has called the device lost
# the output fades in after a start and out before a stop (cb.apply_fade): a stream cut or started
# mid-waveform clicks. A stop waits for the fade-out at most this long beyond the fade and three
# periods (the request seen, the fade, one block of silence), then stops anyway
FADE_S = 0.005
FADE_SLACK_S = 0.02
PERIOD_LOOK_S = 0.25  # how often the monitor reads the JACK server's period (a jack_bufsize while streaming)


class Engine:
    """Runs a chain on a live audio stream.

    Parameters
    ----------
    chain : Chain
        What to run (anything with ``prepare``, ``reset``, ``process``, ``slots`` and
        ``latency``; ``handle_midi`` if it takes MIDI).
    config : EngineConfig, optional
        Stream settings (validated here).
    tap : Ring, optional
        Receives every processed block (recording, tests).
    rings : ControlRings, optional
        The control, MIDI and meter rings; by default new ones in this process's memory.

    Raises
    ------
    EngineError
        An invalid configuration.
    """

    def __init__(self, chain, config: EngineConfig | None = None, tap: Ring | None = None,
                 rings: ControlRings | None = None):
        self.chain = chain
        self.config = config or EngineConfig()
        self.config.validate()
        self.tap = tap
        self.error: str | None = None  # set when the device/server disappears or the DSP thread died
        self.stale_control_records = 0  # control records whose slot or parameter the chain does not have
        self._device_lost = False
        self.rings = rings if rings is not None else ControlRings()
        # through a weak reference: engine -> writer -> engine would be a cycle, and the gc.freeze()
        # in start makes a cycle immortal (every engine a panel's chain changes replaced would stay)
        me = weakref.ref(self)
        self.writer = ControlWriter(self.rings, chain, on_full=lambda: (e := me()) is not None and
                                    e.apply_pending_control())
        self._stream = None
        self._running = False
        self._consumer = threading.RLock()  # the control ring's consumer: the DSP thread, or (stopped) the caller
        self._threads: list[threading.Thread] = []
        c = self.config
        self._size_buffers()
        self.timing = Ring(8192, cb.TIME_WIDTH, np.int64)
        self.stats_arr = np.zeros(cb.ST_SIZE, np.int64)
        self._clock = np.zeros(2 + cb.TIME_WIDTH, np.int64)
        self._wake_byte = np.ones(1, np.uint8)
        self._ctl = np.zeros(cb.CTL_SIZE, np.int64)
        self._last_out = np.zeros(max(1, self.config.channels), np.float32)  # the callback's (cb.CTL_LAST_OUT)
        self._block = np.zeros((c.blocksize, c.channels), np.float32)
        # for UIs, per block (linear): input peak L/R, output peak L/R, input mean square L/R,
        # output mean square L/R; every block's also goes to rings.meter, for a UI that must not
        # miss peaks between its redraws (nobody reading just means pushes are dropped)
        self.meters = np.zeros(8, np.float32)
        # the audio tap (rings.audio): each block's input and output, left and right (a mono stream's
        # one channel in both), for a spectrum analyser: a mono mix would cancel anti-phase channels
        self._tap_block = np.zeros((c.blocksize, 4), np.float32)
        self._switches = SwitchCounter()
        self.dsp_overflows = 0
        self.tap_dropped_frames = 0  # recorded output the tap ring had no room for (the recorder behind)
        self._stream_info = (0.0, 0.0)
        self._dsp_tid = 0  # the DSP thread's kernel id, for its page-fault counters
        self.prefill_raised_from: int | None = None  # the configured pre-fill, when the host's period raised it
        self._period_watch = None  # the JACK server's period while a JACK stream runs (jackio.PeriodWatch)
        # held to read the watch and to take it for closing: a monitor that outlived stop()'s join must
        # never read a client closed under it, and the client is closed once, by whoever takes it
        self._watch_lock = threading.Lock()
        self._host_period: int | None = None  # the period the pre-fill was fitted to
        self._prefill_target = 0  # output frames the DSP thread keeps queued; the monitor raises it
        # lines for the user that the monitor says while streaming (the server's period changed); a
        # caller takes them with pop(0)
        self.notices: list[str] = []
        self._stall_error: str | None = None  # the error while the device pauses (not gone: it may come back)
        # a live swap (swap_chain): the chain handed to the DSP thread, taken between two blocks
        self._swap_to = None
        self._swap_faded = True  # whether the output was faded out for it (not for a seamless swap)
        self._swap_lock = threading.Lock()  # taken only while a swap is handed over or called off
        self._swapped = threading.Event()

    def _size_buffers(self) -> None:
        """The audio rings and the diagnostics for the config's block size and pre-fill."""
        c = self.config
        # The input ring holds the pre-fill on top of its blocks: after a stall, the callback's credit
        # for input it dropped must never exceed what the output side skips to catch up, or the
        # latency shrinks for good and later underruns go uncompensated.
        self.in_ring = Ring.for_frames(_in_ring_frames(c, c.prefill_blocks), c.channels)
        # The output ring holds a full input ring plus the pre-fill: after a stall the DSP thread
        # flushes everything queued at once, and a drop here would shift latency behind the
        # callback's skip accounting.
        self.out_ring = Ring.for_frames(_out_ring_frames(c, c.prefill_blocks, self.in_ring.capacity), c.channels)
        self.diagnostics = Diagnostics(c.samplerate, c.blocksize, c.prefill_blocks)

    def _fit_prefill_to_host_period(self) -> None:
        """JACK runs the callback period / blocksize times back to back in each of its cycles, and the
        DSP thread cannot refill the output in between: each burst needs that many blocks ready, plus
        the one being made. A pre-fill under that is raised to it (a larger server period costs that
        latency anyway; without it, at 1024/128, 3 of 4 blocks were silence). The period is the
        server's own (PortAudio's latency figure depends on the server's sync mode and port latencies),
        watched while the stream runs (``_host_period_changed``)."""
        c = self.config
        if c.mode == "input" or not _is_jack_stream(self._stream):
            return
        from realtime.io.jackio import PeriodWatch

        self._period_watch = PeriodWatch.open()
        self._host_period = self._read_host_period()
        need = prefill_at_start(c, self._host_period)
        if need != c.prefill_blocks:
            self.config = dataclasses.replace(c, prefill_blocks=need)
            self.prefill_raised_from = c.prefill_blocks
            self._size_buffers()
        self.diagnostics.host_period = self._host_period or 0  # (after _size_buffers: a new one)

    def _read_host_period(self) -> int | None:
        """The JACK server's period now, through the watch (None: no watch, or closed)."""
        with self._watch_lock:
            return self._period_watch.period() if self._period_watch is not None else None

    def _host_period_changed(self, period: int) -> None:
        """The JACK server's period changed while streaming (``jack_bufsize``; monitor thread). A
        longer one gets the pre-fill start-up would have given it: the DSP thread queues the extra
        blocks (silence once, in a duplex stream; an output-only one renders further ahead), so
        the bursts play instead of 3 of 4 blocks going silent at 1024/128 until a restart. The
        rings cannot grow while the callback uses them: a pre-fill they cannot hold is said, not
        applied. A shorter period leaves the pre-fill as it is (lowering it would drop audio).
        One line for the user goes to ``notices``."""
        c, old = self.config, self._host_period
        self._host_period = self.diagnostics.host_period = period
        self._scale_device_latency(old, period)
        need = _blocks_for_period(period, c.blocksize) if period > c.blocksize else c.prefill_blocks
        said = f"the JACK server's period changed from {old} to {period} frames"
        limit = _prefill_limit(c, (self.in_ring, self.out_ring))
        if need > limit:
            self.notices.append(f"{said}: its bursts need a pre-fill of {need} blocks, more than this stream "
                                f"holds ({limit}); blocks will be late: start again to run at it")
            return
        if need > c.prefill_blocks:
            if self.prefill_raised_from is None:
                self.prefill_raised_from = c.prefill_blocks
            self.config = dataclasses.replace(c, prefill_blocks=need)
            self.diagnostics.set_prefill(need)
            self._prefill_target = need * c.blocksize  # the DSP thread adds the difference
            said += f": pre-fill raised to {need} blocks to cover its bursts"
        elif need < c.prefill_blocks and self.prefill_raised_from is not None:
            said += f": the pre-fill stays {c.prefill_blocks} blocks (start again for the lower latency)"
        self.notices.append(f"{said}; latency now {self.latency()['round_trip_ms']:.1f} ms")

    def _scale_device_latency(self, old: int | None, new: int) -> None:
        """PortAudio's output figure, computed when the stream opened, is the block plus the server's
        playback latency, which a JACK driver counts in periods: that part follows the period."""
        in_lat, out_lat = self._stream_info
        block_s = self.config.blocksize / self.config.samplerate
        if old and out_lat > block_s:
            self._stream_info = (in_lat, block_s + (out_lat - block_s) * new / old)

    # ---------------------------------------------------------------- life cycle
    def start(self) -> None:
        """Prepare and warm up the chain, open the stream and start the DSP and monitor threads.

        An engine runs once: after ``stop`` make a new one (its counters are per run). Does
        nothing if already running.

        Raises
        ------
        AudioDeviceError
            PortAudio refused the device, rate or format (the engine stays stopped).
        """
        with self._consumer:
            if self._running:
                return
            c = self.config
            _wait_for_stuck_threads(self.chain)
            with _interrupts_not_swallowed():  # Numba compiles here (seconds, with a cold cache)
                self.chain.prepare(c.samplerate, c.blocksize, c.channels, live=True)
                self._warm_up()
                # A full garbage collection walks every object (tens of milliseconds with the neural
                # processors loaded) and can start in any thread, the DSP thread included. Collect
                # once now and freeze the survivors, so later collections only see new objects.
                gc.collect()
            gc.freeze()
            self._open_stream()
            try:
                self._fit_prefill_to_host_period()
            except BaseException:
                _close_stream(self._stream)
                self._stream = None
                self._close_period_watch()
                raise
            c = self.config
            self._prefill_target = c.blocksize * c.prefill_blocks
            self._wire_control_block()
            # pre-fill: the DSP thread gets prefill_blocks periods to deliver each block
            if c.mode != "input":
                self.out_ring.push(np.zeros((c.blocksize * c.prefill_blocks, c.channels), np.float32))
            # the fade-in begins with the first frame the chain made of the stream's audio
            self._ctl[cb.CTL_FADE_FROM] = self.out_ring.idx[WRITE] + int(self.chain.latency)
            self._running = True
            self._old_switch = sys.getswitchinterval()
            sys.setswitchinterval(c.switch_interval_s)
            self._threads = [threading.Thread(target=self._dsp_loop, name="dsp", daemon=True),
                             threading.Thread(target=self._monitor_loop, name="engine-monitor", daemon=True)]
            for t in self._threads:
                t.start()
            s = sd()
            try:
                check(s._lib.Pa_StartStream(self._stream), "start stream")
            except BaseException:  # stopped as it was: no threads, no open stream, no "running"
                self._teardown(abandon=False)
                raise

    def _close_period_watch(self, wait: bool = True) -> None:
        """Close the period watch, once, whichever thread still runs; ``wait`` False: a server that is
        gone or paused, not waited for (closing after the server went is safe: libjack says "Server
        is not running" and returns)."""
        with self._watch_lock:  # taken out under the lock: a monitor reading it has finished its read
            watch, self._period_watch = self._period_watch, None
        if watch is not None:
            watch.close(wait_s=None if wait else 0.0)

    def _close_wake_pipe(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)

    def stop(self) -> None:
        """Stop and close the stream, end the threads, and apply control still queued.

        Always stop before any JACK server is torn down. Does nothing if not running.
        """
        if not self._running:
            return
        abandon = False
        if self._stream is not None and not self._device_lost:  # a stalled or dead stream plays nothing to fade
            self._fade_out()
        if self._stream is not None:
            # first the stream, while the DSP thread still feeds it: stopping the thread first
            # would make the stream's last callbacks (PortAudio plays out its buffers) late blocks
            abandon = not self._stop_stream(STOP_LOST_WAIT_S if self._device_lost else STOP_WAIT_S)
        with self._consumer:
            self._teardown(abandon=abandon)
            if self._threads and self._threads[0].is_alive():  # inside a processor for over 2 s
                _STUCK.append((self._threads[0], _processor_ids(self.chain)))
            self._drain_timing()
            if not any(t.is_alive() for t in self._threads):  # a stuck DSP thread may still consume
                self._apply_queued(np.zeros((1, 4), np.float64))
        if abandon:
            self._torn_down.set()

    def _fade_out(self) -> bool:
        """Ask the callback to fade the output out and wait until it has played it (``cb.CTL_FADED``),
        for at most the fade, three periods and ``FADE_SLACK_S``: a stream whose callbacks stopped
        meanwhile is stopped as it is. Returns whether the fade was played (an input-only stream: True)."""
        c, ctl = self.config, self._ctl
        if c.mode == "input":
            return True
        ctl[cb.CTL_FADED] = 0  # (a swap's fade-out before may have set it)
        publish(ctl, cb.CTL_FADE_TARGET, 0)  # after it: the callback reads the target first (acquire)
        deadline = self._deadline_after(int(ctl[cb.CTL_FADE_LEN]))
        while ctl[cb.CTL_FADED] == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        return bool(ctl[cb.CTL_FADED])

    def _deadline_after(self, frames: int) -> float:
        """When ``frames`` of output, three periods (the server's, when it runs longer ones than the
        block) and ``FADE_SLACK_S`` have passed from now: how long a fade may take to be played."""
        c = self.config
        period = max(c.blocksize, self._host_period or 0)
        return time.monotonic() + (frames + 3 * period) / c.samplerate + FADE_SLACK_S

    def _stop_stream(self, wait_s: float) -> bool:
        """Pa_StopStream, waited for ``wait_s``; True when it returned. On a server that is gone it
        never returns, on a paused one not before it resumes (and the monitor only calls a device
        lost after a second without callbacks): then the stream is abandoned (``_abandon``), and the
        thread left waiting closes it if the server ever answers, so a stopped engine's stream does
        not run on (and keep its ports) once a paused server resumes. A healthy stream that was
        merely slow to stop is closed by the same thread a moment later."""
        stream, lib = self._stream, sd()._lib
        lock = threading.Lock()
        state = {"returned": False, "abandoned": None}
        self._torn_down = torn_down = threading.Event()  # set by stop() once it is done with the pipe

        def stop() -> None:
            lib.Pa_StopStream(stream)
            with lock:
                state["returned"] = True
                entry = state["abandoned"]
            if entry is not None:
                torn_down.wait()
                _release_abandoned(entry)

        t = threading.Thread(target=stop, name="stream-stop", daemon=True)
        t.start()
        t.join(wait_s)
        with lock:
            if not state["returned"]:
                state["abandoned"] = _abandon(self)
            return state["returned"]

    def _teardown(self, abandon: bool) -> None:
        """Not running any more: close the stream (``abandon``: ``_stop_stream`` left it to the thread
        waiting on it), wake and join the threads, close the wake pipe, restore the switch interval.
        Shared by ``stop`` and a ``start`` whose stream would not start."""
        self._running = False
        if self._stream is not None:
            if not abandon:
                _close_stream(self._stream)
            self._stream = None
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # full: the DSP thread is awake already (or dead, its pipe filled by the callback)
            pass
        for t in self._threads:
            t.join(2)
        # also under a monitor that outlived its join (it left the client open for good): it reads
        # the watch under the lock this takes it out with, and finds none from then on
        self._close_period_watch(wait=not abandon)
        if not abandon:  # an abandoned callback may still write its wake byte: its pipe stays open
            self._close_wake_pipe()  # (closed, the number would go to the next file opened)
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
        cache load, in the DSP or monitor thread holds the GIL for a long while.)"""
        for _ in range(3):
            self._block[:] = 0
            self.chain.process(self._block)
        self.chain.reset()
        self._block[:] = 0
        _peak(self._block, self.meters, 0)
        _tap_into(self._block, self._tap_block, 0)
        rec = np.zeros((1, 4), np.float64)
        r = self.rings
        for ring in (r.control, r.midi):
            ring_pop(ring.buf, ring.idx, rec, 0)
            ring_discard(ring.buf, ring.idx, 0)  # a chain without MIDI input discards the MIDI ring
        stamp_applied(r.applied, r.control.idx[READ], 0, time.perf_counter_ns())
        ring_pop(self.timing.buf, self.timing.idx, np.zeros((1, cb.TIME_WIDTH), np.int64), 0)  # the monitor's
        self._switches.store(0, self.diagnostics.dsp_switches)
        ControlRings.compile()  # the producers' side too (set_param, send_midi)
        scratch = np.zeros(1, np.int64)  # the fades' release store (on an array nobody reads)
        publish(scratch, 0, observe(scratch, 0))
        # the DSP thread's drop of stale input, on copies (the stream's counters stay as they are)
        cb.drop_stale_input(self.in_ring.buf.copy(), self.in_ring.idx.copy(), self.out_ring.idx.copy(),
                            np.zeros_like(self.stats_arr), np.zeros_like(self._ctl), self.config.blocksize)
        for ring in (self.in_ring, self.out_ring, r.meter, r.readout, r.audio) + ((self.tap,) if self.tap is not None else ()):
            ring_push(ring.buf, ring.idx, self._block, 0)
            # the pop's signature too, on a ring of the same type: the read index belongs to the consumer
            # (the panel process reads the meter, readout and audio rings, maybe at this very moment)
            scratch = Ring(2, ring.width, ring.buf.dtype)
            ring_pop(scratch.buf, scratch.idx, self._block, 0)
            ring_readable(ring.idx)
        ring_push_silence(self.out_ring.buf, self.out_ring.idx, 0)  # the DSP thread's, when the period grows

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
        os.set_blocking(self._wake_r, False)  # a poll that times out (no callbacks: a stalled device) must not block in read
        ctl[cb.CTL_WAKE_FD] = self._wake_w
        ctl[cb.CTL_WAKE_BYTE] = self._wake_byte.ctypes.data
        ctl[cb.CTL_CLOCK] = self._clock.ctypes.data
        # MIDI's time base (cb.block_end_ns): JACK's cycles place each block by PortAudio's time info
        ctl[cb.CTL_RATE] = c.samplerate
        ctl[cb.CTL_HOST_CYCLES] = int(self._stream is not None and _is_jack_stream(self._stream))
        ctl[cb.CTL_STAMP_BASE] = ctl[cb.CTL_CYCLES] = 0
        ctl[cb.CTL_CYCLE_TIME] = ctl[cb.CTL_POS_MAX] = ctl[cb.CTL_POS_MAX_OLD] = cb.NO_POSITION
        # silent until the fade-in (start: CTL_FADE_FROM), which heads for unity
        ctl[cb.CTL_FADE_LEN] = ctl[cb.CTL_FADE_TARGET] = max(1, round(FADE_S * c.samplerate))
        ctl[cb.CTL_FADE_POS] = ctl[cb.CTL_FADED] = 0
        ctl[cb.CTL_DSP_DROPPED] = self.stats_arr[cb.ST_DSP_DROPPED_SEEN] = 0  # (drop_stale_input's, per stream)
        self._last_out[:] = 0
        ctl[cb.CTL_LAST_OUT] = self._last_out.ctypes.data

    def check_devices(self) -> dict[str, int]:
        """The device of each direction the stream uses ({"input": index, "output": index}, as its
        mode asks), or the one-line ``AudioDeviceError`` for one it does not find: what ``start``
        opens, and what a caller checks before slow set-up of its own (a MIDI port)."""
        c = self.config
        kinds = {"input": c.mode != "output", "output": c.mode != "input"}
        return {kind: resolve_device(c.input_device if kind == "input" else c.output_device, kind, c.channels)
                for kind, used in kinds.items() if used}

    def _open_stream(self) -> None:
        c = self.config
        s = sd()
        ffi, lib = s._ffi, s._lib
        devices = self.check_devices()

        def params(kind):
            if kind not in devices:
                return ffi.NULL
            dev = devices[kind]
            p = ffi.new("PaStreamParameters *")
            p.device = dev
            p.channelCount = c.channels
            p.sampleFormat = PA_FLOAT32
            info = lib.Pa_GetDeviceInfo(dev)
            p.suggestedLatency = info.defaultLowInputLatency if kind == "input" else info.defaultLowOutputLatency
            p.hostApiSpecificStreamInfo = ffi.NULL
            return p

        in_p, out_p = params("input"), params("output")
        # compiled once per process (a second or so): a Ctrl-C inside Numba's compiler was swallowed
        # with a traceback ("Exception ignored on calling ctypes callback function"); it is taken after
        with signals_deferred():
            callback = cb.callback_pointer(ffi)
        with _PA_LOCK:  # a stream abandoned earlier may be closed by its own thread meanwhile
            err = lib.Pa_IsFormatSupported(in_p, out_p, float(c.samplerate))
            if err == PA_INVALID_SAMPLE_RATE:  # say what it runs (a JACK server: its own rate only)
                runs = [r for r in COMMON_RATES if lib.Pa_IsFormatSupported(in_p, out_p, float(r)) == 0]
                raise AudioDeviceError(f"the device does not run at {c.samplerate} Hz; "
                                       + (f"it runs {', '.join(map(str, runs))} Hz (-r {runs[0]})" if runs
                                          else f"nor at any of {', '.join(map(str, COMMON_RATES))} Hz"))
            check(err, f"{c.samplerate} Hz, {c.channels} ch {c.mode} stream")
            stream = ffi.new("PaStream **")
            self._callback_ptr = callback  # keep alive while the stream exists
            check(lib.Pa_OpenStream(stream, in_p, out_p, float(c.samplerate), c.blocksize, PA_CLIP_OFF,
                                    self._callback_ptr, ffi.cast("void *", self._ctl.ctypes.data)), "open stream")
        self._stream = stream[0]
        info = lib.Pa_GetStreamInfo(self._stream)
        self._stream_info = (info.inputLatency, info.outputLatency)

    # ---------------------------------------------------------------- control (other threads)
    def set_param(self, slot_id: str, param_id: str, value) -> None:
        """Change a parameter: validated now, applied by the DSP thread before its next block
        (at once while stopped).

        Parameters
        ----------
        slot_id, param_id : str
            The slot and the parameter descriptor's id.
        value : float or str
            A number within the descriptor's range, or one of its choices.

        Raises
        ------
        EngineError
            Unknown slot, or the control queue is full.
        ParamError
            Unknown parameter or a value out of range.
        """
        self.writer.set_param(slot_id, param_id, value)
        self._apply_if_stopped()

    def set_bypass(self, slot_id: str, bypass: bool) -> None:
        """Bypass a slot (it keeps running; its dry path stays latency-aligned) or bring it back.

        Raises
        ------
        EngineError
            Unknown slot, the final safety stage, or the control queue is full.
        """
        self.writer.set_bypass(slot_id, bypass)
        self._apply_if_stopped()

    def set_mix(self, slot_id: str, mix: float) -> None:
        """Set a slot's wet/dry mix (0 dry .. 1 wet).

        Raises
        ------
        EngineError
            A mix outside [0, 1], unknown slot, the final safety stage, or a full control queue.
        """
        self.writer.set_mix(slot_id, mix)
        self._apply_if_stopped()

    def send_midi(self, status: int, data1: int = 0, data2: int = 0, at_ns: int | None = None) -> bool:
        """Queue a MIDI message for the chain.

        Parameters
        ----------
        status, data1, data2 : int
            The message bytes.
        at_ns : int, optional
            When it happened, on ``time.monotonic_ns()``'s clock (default: now). A later time
            schedules it, up to ``MIDI_MAX_AHEAD_NS`` ahead; 0 means "next block, at its start".

        Returns
        -------
        bool
            False when the MIDI queue was full (the message is dropped).
        """
        t = time.monotonic_ns() if at_ns is None else at_ns
        with self.rings.lock:
            return self.rings.midi.push_record(float(status), float(data1), float(data2), float(t))

    def swap_chain(self, chain, timeout_s: float = STOP_WAIT_S) -> bool:
        """Replace the running chain without stopping the stream, so its ports, their connections and
        the server's view of the client stay (a restart gave the engine new ports). The processors
        new to ``chain`` are prepared while the old chain plays on (``Chain.prepare_beside``: the
        processors both share keep their state). A change that keeps the latency and the order of
        what stays (``Chain.follows_seamlessly``: a zero-latency slot added or removed) is seamless:
        the slots that leave crossfade to their dry paths, the DSP thread takes the new chain between
        two blocks and the new slots crossfade in from theirs. Any other change fades the output out,
        and in again with the new chain's first sound. What was queued for the old chain is applied
        to it first; the caller keeps producers waiting (the rings' lock) until this returns, then
        control resolves against the new chain.

        Returns
        -------
        bool
            False when no callback played the fade-out (a stalling device) or the DSP thread did not
            take the chain within ``timeout_s`` (stuck in a processor): the swap is called off, the old
            chain sounds again, and the caller restarts instead. ``chain`` must be a ``Chain``.

        Raises
        ------
        ModelError, PluginError
            A new processor could not be prepared: the old chain plays on (it was not faded yet).
        """
        if not self._running:
            raise EngineError("swap_chain needs a running engine (a stopped one takes a new chain at start)")
        taken = faded = False
        leaving = []  # a seamless swap's slots that leave, crossfaded to dry first
        self._swapped.clear()
        try:
            chain.prepare_beside(self.chain)  # (every kind's code is loaded ahead in the panel's process)
            seamless = chain.follows_seamlessly(self.chain)
            if seamless:
                leaving = chain.leaving(self.chain)
                seamless = self._play_dry(leaving)
            if seamless:
                chain.enter_from_dry(self.chain)
                gc.collect(0)  # it plays on: the youngest generation only (~0.1 ms; an LV2 build's cycles)
            else:
                faded = True
                if not self._fade_out():  # no callback played the fade (a stall not yet called one): restart
                    return False
                # as at start: collect the build's garbage now (silent), so no full collection walks
                # the new processors later on the DSP thread's time
                gc.collect()
            gc.freeze()
            self._swap_faded = faded
            self._swap_to = chain
            with contextlib.suppress(OSError):  # the pipe full: the DSP thread is awake already
                os.write(self._wake_w, b"x")
            self._swapped.wait(timeout_s)
        finally:
            with self._swap_lock:  # not taken by now (or interrupted): called off, the old chain sounds again
                taken = self._swapped.is_set() and self._swap_to is None
                if not taken:
                    self._swap_to = None
                    for s in leaving:  # the old chain sounds as its slots say (a record applied meanwhile too)
                        s._update_target()
                    if faded:
                        self._fade_in()
            if taken:
                self.writer.chain = chain
        return taken

    def _play_dry(self, slots) -> bool:
        """Crossfade ``slots`` of the running chain to their dry paths (the slots' 10 ms crossfade) and
        wait until the DSP thread has run them dry; False when it has not within the crossfade, three
        periods and ``FADE_SLACK_S`` (a stall, or a queued bypass record that brought one back)."""
        for s in slots:
            s._wst[1] = 0.0  # (one float64 store, read by the DSP thread at its next block)
        deadline = self._deadline_after(self.chain._fade_len)  # (the DSP thread runs once a server period)
        while any(s._wst[0] != 0.0 for s in slots):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def _fade_in(self) -> None:
        """Fade the output in again from the next block the DSP thread delivers (a swap called off)."""
        ctl = self._ctl
        ctl[cb.CTL_FADE_FROM] = self.out_ring.idx[WRITE]
        publish(ctl, cb.CTL_FADE_TARGET, ctl[cb.CTL_FADE_LEN])  # after FADE_FROM, which the callback reads after it

    def apply_pending_control(self) -> int:
        """Apply the control records queued so far, now, if the engine is stopped (while it
        runs the DSP thread applies them: then this does nothing).

        Returns
        -------
        int
            How many records were applied.
        """
        with self._consumer:
            if self._running:
                return 0
            return self._apply_queued(np.zeros((1, 4), np.float64))

    def _apply_if_stopped(self) -> None:
        if not self._running:
            self.apply_pending_control()

    def _apply_queued(self, rec: np.ndarray) -> int:
        """Pop and apply the control records queued when it begins, and stamp when (the consumer only).
        Those pushed meanwhile wait for the next call: a producer that keeps pushing (another process
        needs no GIL for it) must not keep the DSP thread from its block."""
        ctrl, chain = self.rings.control, self.chain
        n = 0
        for _ in range(ring_readable(ctrl.idx)):
            if not ring_pop(ctrl.buf, ctrl.idx, rec, 1):
                break
            if not apply_record(chain, int(rec[0, 0]), int(rec[0, 1]), rec[0, 2], int(rec[0, 3])):
                self.stale_control_records += 1  # addressed to a chain this engine no longer runs: left out
            n += 1
        if n:
            stamp_applied(self.rings.applied, ctrl.idx[READ] - n, n, time.perf_counter_ns())
        return n

    # ---------------------------------------------------------------- DSP thread
    def _dsp_loop(self) -> None:
        """The DSP thread. A processor that raises is handled by the chain (its slot goes dry);
        anything else that ends this loop is reported as the engine's error, never silently."""
        try:
            self._dsp_blocks()
        except Exception as e:  # noqa: BLE001 - the stream goes on with silence; say why
            self.error = f"the DSP thread stopped: {type(e).__name__}: {e}"

    def _dsp_blocks(self) -> None:
        c = self.config
        self._dsp_tid = threading.get_native_id()
        set_realtime_priority(c.realtime_priority)
        B = c.blocksize
        block = self._block
        in_buf, in_idx = self.in_ring.buf, self.in_ring.idx
        out_buf, out_idx = self.out_ring.buf, self.out_ring.idx
        has_in, has_out = c.mode != "output", c.mode != "input"
        target_fill = B * c.prefill_blocks
        ctrl_rec = np.zeros((1, 4), np.float64)
        midi_rec = np.zeros((1, 4), np.float64)
        midi = self.rings.midi
        midi_sink = getattr(self.chain, "handle_midi", None)
        midi_held = False  # midi_rec holds a popped message that is not due yet
        stats, ctl = self.stats_arr, self._ctl
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        process = self.chain.process
        tap = self.tap
        meters = self.meters
        meter_rec = meters.reshape(1, -1)
        meter_buf, meter_idx = self.rings.meter.buf, self.rings.meter.idx
        # per-slot process times and readouts: the chain writes them into this record as it runs
        readout_rec = getattr(self.chain, "readout_record", np.zeros((1, self.rings.readout.buf.shape[1]), np.float32))
        readout_buf, readout_idx = self.rings.readout.buf, self.rings.readout.idx
        tap_block = self._tap_block
        audio_buf, audio_idx = self.rings.audio.buf, self.rings.audio.idx
        perf = time.perf_counter_ns
        diag = self.diagnostics
        dsp_us, dsp_t0, dsp_cpu_us, dsp_switches = diag.dsp_us, diag.dsp_t0, diag.dsp_cpu_us, diag.dsp_switches
        switches = self._switches
        cpu = time.thread_time_ns
        mask = HISTORY - 1
        while self._running:
            poller.poll(100)
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
            self._apply_queued(ctrl_rec)
            if self._swap_to is not None:
                if self._take_swap(ctrl_rec):
                    process, midi_sink = self.chain.process, getattr(self.chain, "handle_midi", None)
                    readout_rec = self.chain.readout_record
                    midi_held = midi_held and midi_sink is not None
            if midi_sink is None:
                midi.discard(midi.readable())
            if self._prefill_target > target_fill:  # the server's period grew (_host_period_changed)
                if has_in and has_out:  # duplex: the extra pre-fill, once (output-only renders up to it)
                    ring_push_silence(out_buf, out_idx, self._prefill_target - target_fill)
                target_fill = self._prefill_target
            # after a stall (one in a block too: a slow process(), a page fault, a GIL wait), the input whose
            # output the callback would discard is dropped before each block; not while a take records
            # what the chain makes (a stall's backlog is processed for it, gapless, as before)
            drop_stale = has_in and has_out and tap is None
            while self._running:
                if has_in:
                    if drop_stale:
                        cb.drop_stale_input(in_buf, in_idx, out_idx, stats, ctl, B)
                    if ring_readable(in_idx) < B:
                        break
                    ring_pop(in_buf, in_idx, block, B)
                else:
                    if ring_readable(out_idx) >= target_fill:
                        break
                    block.fill(0.0)
                if midi_sink is not None:
                    # by the ring index after the block's last frame: the input ring's block just popped (a
                    # DSP thread catching up pops older ones first), or the output ring's about to be pushed,
                    # heard once the pre-fill queued ahead of it has played (a burst renders several)
                    last = in_idx[READ] if has_in else out_idx[WRITE] + B - target_fill
                    midi_held = self._deliver_midi(midi_sink, midi_rec, midi_held, self._block_end(last))
                _peak(block, meters, 0)
                _tap_into(block, tap_block, 0)
                t0, c0 = perf(), cpu()
                switches.before()
                process(block)
                switches.after()
                i = diag.dsp_n & mask
                dsp_us[i] = (perf() - t0) * 1e-3
                dsp_cpu_us[i] = (cpu() - c0) * 1e-3
                switches.store(i, dsp_switches)
                dsp_t0[i] = t0  # perf_counter_ns is CLOCK_MONOTONIC on Linux, like the callback's stamps
                diag.dsp_n += 1
                _peak(block, meters, 2)
                ring_push(meter_buf, meter_idx, meter_rec, 1)
                ring_push(readout_buf, readout_idx, readout_rec, 1)
                _tap_into(block, tap_block, 2)
                ring_push(audio_buf, audio_idx, tap_block, B)
                if has_out and ring_push(out_buf, out_idx, block, B) < B:
                    self.dsp_overflows += 1
                if tap is not None:
                    pushed = ring_push(tap.buf, tap.idx, block, B)
                    if pushed < B:  # the recorder behind: where, and how much, for it to put silence there
                        self.tap_dropped_frames += B - pushed
                        if tap.gaps is not None:
                            tap.gaps.add(int(tap.idx[WRITE]), B - pushed)

    def _take_swap(self, ctrl_rec) -> bool:
        """The DSP thread takes the chain ``swap_to`` handed it (between two blocks): the control
        queued for the old chain is applied first (producers wait meanwhile: the host holds the
        rings' lock), and, when the output was faded out for it, the fade-in begins with the new
        chain's first sound. False when the swap was called off meanwhile."""
        with self._swap_lock:
            new = self._swap_to
            if new is None:
                return False
            self._apply_queued(ctrl_rec)
            new.take_over(self.chain)
            self.chain = new
            if self._swap_faded:
                ctl = self._ctl
                ctl[cb.CTL_FADE_FROM] = self.out_ring.idx[WRITE] + int(new.latency)
                publish(ctl, cb.CTL_FADE_TARGET, ctl[cb.CTL_FADE_LEN])  # after FADE_FROM (the callback's acquire)
            self._swap_to = None
            self._swapped.set()
            return True

    def _block_end(self, ring_index: int) -> float:
        """When the frames before ``ring_index`` end, CLOCK_MONOTONIC ns: an input ring's index in a
        stream with input, else the output ring's (``cb.publish_stamp``, from the latest callback).
        Before any callback stamped: the latest callback's start, for the ring as it is now."""
        ns = 1e9 / self.config.samplerate
        base = int(self._ctl[cb.CTL_STAMP_BASE])
        if base == 0:
            ring = self.in_ring.idx[WRITE] if self.config.mode != "output" else self.out_ring.idx[READ]
            base = int(self._ctl[cb.CTL_LAST_START]) - ring * ns
        return base + ring_index * ns

    def _deliver_midi(self, sink, rec, held: bool, end: float) -> bool:
        """Hand the chain the messages due in this block: those stamped before ``end`` (when its
        frames end: ``_block_end``), at their offset in [end - period, end). Returns
        whether ``rec`` holds a message kept for a later block."""
        B = self.config.blocksize
        per_ns = self.config.samplerate * 1e-9
        start = end - B / per_ns
        midi = self.rings.midi
        while held or ring_pop(midi.buf, midi.idx, rec, 1):
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
        last_callbacks, last_change, lost_msg = -1, time.monotonic(), None
        next_period_look = time.monotonic() + PERIOD_LOOK_S
        while self._running:
            time.sleep(0.05)
            self._drain_timing()
            self.diagnostics.explain_pending()
            n = int(self.stats_arr[cb.ST_CALLBACKS])
            now = time.monotonic()
            if n != last_callbacks:
                if self._device_lost and last_callbacks >= 0:  # it came back (a suspend, a paused server):
                    self._device_lost = False  # stop() may stop and close the stream as usual again
                    if self.error == lost_msg:
                        self.error = None
                last_callbacks, last_change = n, now
            elif now - last_change > max(1.0, 50 * period) and not self._device_lost:
                self._device_lost = True
                gone = self._stream_ended()
                lost_msg = _lost_message(now - last_change, gone)
                if not gone:
                    self._stall_error = lost_msg  # first: whoever sees the error sees it is a stall
                self.error = lost_msg
            elif self.stalled and self._stream_ended():  # it will not come back after all
                self.error = lost_msg = _lost_message(now - last_change, gone=True)
            if self._period_watch is not None and now >= next_period_look and not self._device_lost:
                next_period_look = now + PERIOD_LOOK_S
                host = self._read_host_period()
                if host is not None and self._host_period is None:  # not known at start: from now on
                    self._host_period = self.diagnostics.host_period = host
                elif host is not None and host != self._host_period:
                    self._host_period_changed(host)

    @property
    def stalled(self) -> bool:
        """The device stopped delivering callbacks but its stream still runs (a paused server, a
        suspend): ``error`` says so, and clears if it comes back; a caller streams on meanwhile.
        False once it is gone for good (the server shut down: ``error`` says to start again)."""
        err = self.error
        return err is not None and err == self._stall_error

    @property
    def fatal_error(self) -> str | None:
        """``error`` unless it is a stall (``stalled``): the device or server gone, the DSP thread
        dead. (``_stall_error`` is set before ``error`` and never cleared, so no reader that sees a
        stall's error can take it for a fatal one.)"""
        err = self.error
        return None if err is None or err == self._stall_error else err

    def _stream_ended(self) -> bool:
        """PortAudio says the stream no longer runs (the JACK server shut down, the device's stream
        ended): unlike a paused server's, its callbacks will not come back. Asked only while the
        callbacks are missing; under the lock that closing a stream takes (a closed one is freed)."""
        if not _PA_LOCK.acquire(timeout=0.05):  # another engine opening or closing one: ask next tick
            return False
        try:
            return self._running and self._stream is not None and sd()._lib.Pa_IsStreamActive(self._stream) != 1
        finally:
            _PA_LOCK.release()

    def _drain_timing(self) -> None:
        """Move the callback's timing records into the diagnostics (monitor thread, or stopped)."""
        n = int(ring_readable(self.timing.idx))
        if n == 0:
            return
        recs = np.empty((n, cb.TIME_WIDTH), np.int64)
        ring_pop(self.timing.buf, self.timing.idx, recs, n)
        self.diagnostics.add_callbacks(recs)

    # ---------------------------------------------------------------- reports
    def latency(self) -> dict:
        """The latency this engine adds and the device's.

        Returns
        -------
        dict
            ``samplerate``, ``blocksize``, ``prefill_frames`` (output pre-fill; 0 input-only),
            ``chain_latency_frames``, ``added_frames`` / ``added_ms`` (their sum),
            ``device_input_ms`` / ``device_output_ms`` (PortAudio's figures once the stream is
            open) and ``round_trip_ms`` (all of it).
        """
        c = self.config
        # the output ring's pre-fill: what is rendered is heard that much later (duplex and output)
        prefill = c.blocksize * c.prefill_blocks if c.mode != "input" else 0
        chain_lat = int(self.chain.latency)
        added = prefill + chain_lat
        in_lat, out_lat = self._stream_info
        return {"samplerate": c.samplerate, "blocksize": c.blocksize, "prefill_frames": prefill,
                "chain_latency_frames": chain_lat, "added_frames": added,
                "added_ms": 1000.0 * added / c.samplerate,
                "device_input_ms": 1000.0 * in_lat, "device_output_ms": 1000.0 * out_lat,
                "round_trip_ms": 1000.0 * (in_lat + out_lat + added / c.samplerate)}

    def stats(self, percentiles: bool = True) -> dict:
        """Counters and timing of this run (without ``percentiles``: no p50/p99 and no ``dsp_load``,
        which cost the interpreter a few milliseconds, for a caller polling while the stream runs).

        Returns
        -------
        dict
            The callback's counters (``callbacks``, ``late_blocks``, ``late_frames``,
            ``late_blocks_muted``: late blocks played wholly at fade gain 0, a swap's or a stop's fade-out
            or a start's pre-fill, which nobody hears and ``late_blocks`` leaves out, ``server_xruns``,
            ``input_dropped_frames``, ``nonfinite_scrubbed``, ``clipped``),
            the late-block attribution (``delayed_callbacks``, ``callback_gap_ms_max``,
            ``late_blocks_ours``, ``late_blocks_stolen``, ``late_context``), callback and DSP
            block times (``callback_us_p50/p99/max``, ``dsp_us_p50/p99/max/mean``, ``dsp_load``: the
            median block's share of the period, ``dsp_load_mean``: the mean's, ``blocks_processed``),
            the DSP thread's page faults, ``dropped_midi_events`` (MIDI messages the chain's full
            per-block queues dropped, controllers first, since its processors were made) and
            ``error`` (None, or why the stream died or pauses: ``stalled``), ``stale_control_records``
            (changes left out: addressed by a writer whose view of the chain was out of date),
            ``stale_input_dropped_frames`` (input dropped unprocessed after a stall, its output due to be
            discarded: ``callback.drop_stale_input``; never while a tap records).
        """
        d = self.diagnostics
        if not self._running:
            self._drain_timing()
            d.explain_pending(force=True)
        st = self.stats_arr
        summary = d.summary(percentiles)
        counters = {k: summary.pop(k) for k in d.counters()}
        return {"callbacks": int(st[cb.ST_CALLBACKS]), "late_blocks": int(st[cb.ST_LATE_BLOCKS]),
                "late_frames": int(st[cb.ST_LATE_FRAMES]), "late_blocks_muted": int(st[cb.ST_LATE_MUTED]),
                "server_xruns": int(st[cb.ST_SERVER_XRUNS]),
                "input_dropped_frames": int(st[cb.ST_IN_DROPPED]), **counters,
                "nonfinite_scrubbed": int(st[cb.ST_NONFINITE]), "clipped": int(st[cb.ST_CLIPPED]),
                **summary, **self.dsp_page_faults(), "dropped_midi_events": dropped_midi_events(self.chain),
                "error": self.error, "stale_control_records": self.stale_control_records,
                "stale_input_dropped_frames": int(self._ctl[cb.CTL_DSP_DROPPED]),
                "processor_errors": dict(getattr(self.chain, "failures", {}))}

    def dsp_page_faults(self) -> dict:
        """The DSP thread's page faults so far (Linux; zeros elsewhere). A fault in the audio path
        is a stall: minor ones mean first-touched or newly allocated memory, major ones a read
        from disk (code or data the kernel had evicted)."""
        minor, major = thread_page_faults(self._dsp_tid) if self._dsp_tid else (0, 0)
        return {"dsp_minor_faults": minor, "dsp_major_faults": major}


# (DSP thread, ids of the processors it runs) of stopped engines whose DSP thread was still inside a
# block when stop() gave up on it: no engine prepares or runs those processors while it lives
_STUCK: list = []
STUCK_WAIT_S = 10.0


def _processor_ids(chain) -> set:
    return {id(s.processor) for s in getattr(chain, "slots", ())} or {id(chain)}


def _wait_for_stuck_threads(chain) -> None:
    """Before a chain is prepared: wait for an old DSP thread still inside one of its processors
    (preparing or running a processor under it would free or reuse its state mid-block)."""
    _STUCK[:] = [(t, ids) for t, ids in _STUCK if t.is_alive()]
    mine = _processor_ids(chain)
    for t, ids in _STUCK:
        if ids & mine:
            t.join(STUCK_WAIT_S)
            if t.is_alive():
                raise EngineError(f"a processor of this chain has been busy in a stopped engine's DSP thread "
                                  f"for over {STUCK_WAIT_S:g} s; not starting it again under that thread")


_ABANDONED: list = []
_ABANDONED_LOCK = threading.Lock()
# PortAudio keeps its open streams in a list without a lock: a stream-stop thread closing an abandoned
# stream must not overlap another engine opening or closing one
_PA_LOCK = threading.Lock()


def _close_stream(stream) -> None:
    with _PA_LOCK:
        sd()._lib.Pa_CloseStream(stream)


def _blocks_for_period(period: int, blocksize: int) -> int:
    """The pre-fill, in blocks, that a host period of ``period`` frames needs: its burst of
    callbacks, plus the block being made."""
    return -(-period // blocksize) + 1


def _in_ring_frames(config: EngineConfig, prefill: int) -> int:
    """What the input ring holds at a pre-fill of ``prefill`` blocks: its blocks and the pre-fill (its
    credit for input dropped in a stall must not exceed what the output side skips)."""
    return config.blocksize * (config.ring_blocks + prefill)


def _out_ring_frames(config: EngineConfig, prefill: int, in_capacity: int) -> int:
    """What the output ring holds at a pre-fill of ``prefill`` blocks beside an input ring of
    ``in_capacity`` frames: all of it, the pre-fill and one block."""
    return in_capacity + config.blocksize * (prefill + 1)


def _prefill_limit(config: EngineConfig, rings: tuple[Ring, Ring] | None = None) -> int:
    """The most pre-fill, in blocks, an engine with ``config`` can run: ``max_prefill_blocks``, and
    with ``rings`` (its input and output rings, in use by a stream: they cannot grow under the
    callback) what they hold (``_in_ring_frames``, ``_out_ring_frames``; power-of-two sizes leave
    room). Without them (a start: ``_size_buffers`` sizes the rings to the pre-fill) the first only."""
    limit = config.max_prefill_blocks
    if rings is not None:
        in_cap, out_cap = rings[0].capacity, rings[1].capacity
        while limit > 0 and (_in_ring_frames(config, limit) > in_cap
                             or _out_ring_frames(config, limit, in_cap) > out_cap):
            limit -= 1
    return limit


def prefill_at_start(config: EngineConfig, period: int | None) -> int:
    """The pre-fill, in blocks, an engine with ``config`` starts with on a JACK server whose period is
    ``period`` frames (None: no JACK server, or an engine on another device): the configured one,
    raised to what the period's bursts of callbacks need (``_blocks_for_period``) where that is
    more and within ``_prefill_limit``. An input-only stream has no pre-fill to raise."""
    if config.mode == "input" or period is None or period <= config.blocksize:
        return config.prefill_blocks
    need = _blocks_for_period(period, config.blocksize)
    return need if config.prefill_blocks < need <= _prefill_limit(config) else config.prefill_blocks


@contextlib.contextmanager
def _interrupts_not_swallowed():
    """Meanwhile an interrupt that lands where Python cannot raise it is raised all the same, once.

    A signal's handler runs in the main thread wherever it is, also inside an object's ``__del__``
    or a ctypes callback (llvmlite's, all through a Numba compile: seconds of a cold cache's
    ``prepare`` and warm-up). Their exception Python prints ("Exception ignored … KeyboardInterrupt")
    and drops, and the start-up went on. Here the signal is sent again instead, from a thread of
    its own (sent from the main thread it would be handled at once, inside the hook), so its handler
    raises once the main thread is back where an exception can leave. Leaving waits for every signal
    sent so: handled there at the latest, its interrupt is what leaves (not an error the interrupted
    compile raised meanwhile, with the interrupt arriving a moment later: said twice). Main thread
    only, as handlers."""
    main = threading.main_thread().ident
    if threading.get_ident() != main:
        yield
        return
    old = sys.unraisablehook
    sending: list = []  # a lock per signal sent again, released once it is sent

    def hook(unraisable) -> None:
        sig = _interrupt_signal(unraisable.exc_value) if threading.get_ident() == main else None
        if sig is None:
            old(unraisable)
            return
        sent = _thread.allocate_lock()  # (_thread: threading takes locks this __del__ may have interrupted)
        sent.acquire()
        sending.append(sent)
        _thread.start_new_thread(_send_signal, (main, sig, sent))

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = old
        for sent in sending:  # its handler runs once it is sent: here at the latest
            with sent:
                pass
        _signals_checked()


def _send_signal(thread: int, sig: int, sent) -> None:
    try:
        signal.pthread_kill(thread, sig)
    finally:
        sent.release()


def _signals_checked() -> None:
    """A call: where Python runs the handler of a signal that came meanwhile."""


def _interrupt_signal(e: BaseException | None) -> int | None:
    """The signal whose Python handler raised the interrupt ``e`` (Ctrl-C's; ``Interrupted`` names
    its own); None for anything else, or a signal no Python handler takes now (sent again, it would
    kill the process)."""
    if not isinstance(e, KeyboardInterrupt):
        return None
    sig = getattr(signal, str(e), None) if isinstance(e, Interrupted) else signal.SIGINT
    return sig if sig is not None and callable(signal.getsignal(sig)) else None


def _lost_message(silent_s: float, gone: bool) -> str:
    """``Engine.error`` once no callback came for ``silent_s``: the device ``gone`` (its stream
    ended), or paused (its stream still runs: it may come back, and the error then clears)."""
    head = f"audio device stopped delivering callbacks (no callback for {silent_s:.1f} s): "
    if gone:
        return head + "server or device lost; this engine does not reconnect: start it again once the device is back"
    return head + "server or device paused or lost; playing on if it comes back"


def _is_jack_stream(stream) -> bool:
    lib = sd()._lib
    return lib.Pa_GetStreamHostApiType(stream) == lib.paJACK


def _abandon(engine: "Engine") -> tuple:
    """The device/server vanished: PortAudio's stop, abort and close (and Pa_Terminate at exit)
    block forever waiting for a server that is gone (seen with JACK killed mid-stream). Leave the
    dead stream alone, keep everything its callback could touch alive, and skip sounddevice's
    exit handler so the process can still exit cleanly. Returns the entry kept, for
    ``_release_abandoned``."""
    import atexit

    entry = (engine._stream, engine._ctl, engine.stats_arr, engine.in_ring, engine.out_ring,
             engine.timing, engine._clock, engine._wake_byte, engine._callback_ptr, engine._last_out,
             engine._wake_r, engine._wake_w)  # the pipe's numbers stay taken (stop() leaves it open)
    with _ABANDONED_LOCK:
        _ABANDONED.append(entry)
        atexit.unregister(sd()._exit_handler)
    return entry


def streams_abandoned() -> bool:
    """Whether a stream was left to a server that is gone (``_abandon``): PortAudio's terminate
    would wait for it forever, so the process must end without one."""
    with _ABANDONED_LOCK:
        return bool(_ABANDONED)


def _release_abandoned(entry: tuple) -> None:
    """An abandoned stream's server answered after all (it was paused) and its stop returned:
    close the stream, then the wake pipe its callback wrote to, and let the rest go."""
    import atexit

    _close_stream(entry[0])
    for fd in entry[-2:]:
        os.close(fd)
    with _ABANDONED_LOCK:
        _ABANDONED.remove(entry)
        if not _ABANDONED:  # no stream left that Pa_Terminate would wait on
            atexit.register(sd()._exit_handler)


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


@njit(nogil=True, cache=True)
def _tap_into(block, tap, col):
    """tap[:, col], tap[:, col + 1] = the block's left and right channels (a mono block's one channel
    in both): the audio tap's input (col 0) or output (col 2) pair."""
    last = block.shape[1] - 1
    for k in range(block.shape[0]):
        tap[k, col] = block[k, 0]
        tap[k, col + 1] = block[k, min(1, last)]
