"""The engine's timing record and late-block forensics.

Two histories: the callback's (start, duration, flags per callback, drained from its timing
ring by the monitor thread) and the DSP thread's (start, wall time, CPU time and context
switches per block, written by the DSP thread). From them:

- server timing anomalies: a callback delayed (gap > 1.5 periods), bunched right after one
  (catching up, gap < 0.5 periods), or carrying PortAudio's xrun flags; where the server's period
  is longer than the callback's (JACK at 1024 frames runs a 128-frame callback 8 times back to back),
  a gap is judged against the server's period, and a burst is no bunching;
- late blocks (callbacks whose output was not ready) with no anomaly among the callbacks that
  could have affected them (this one and the prefill + 1 before) are either the hypervisor's
  ("stolen": it took at least a block period of CPU from the DSP thread in their window) or
  ours. The first few are explained in detail (``late_context``).
"""
from __future__ import annotations

import time

import numpy as np

from realtime.engine import callback as cb

LATE_CONTEXT_MAX = 16  # late blocks not the server's explained in detail (the first ones; they are rare)
HISTORY = 1 << 16  # entries per rolling history (power of two)
# blocks looked at when explaining a late one: it is explained within about a second
EXPLAIN_LOOKBACK_BLOCKS = 4096


class Diagnostics:
    """Rolling timing histories, server-anomaly detection and late-block attribution.

    Parameters
    ----------
    samplerate, blocksize, prefill_blocks : int
        The engine's configuration (the attribution window is ``prefill_blocks + 2`` callbacks).

    Notes
    -----
    The DSP thread writes ``dsp_t0`` (start, CLOCK_MONOTONIC ns), ``dsp_us`` (wall µs),
    ``dsp_cpu_us`` (thread CPU µs) and ``dsp_switches`` (context switches, -1 unknown) at
    ``dsp_n & (HISTORY - 1)`` and then increments ``dsp_n``; the monitor thread calls
    ``add_callbacks`` and ``explain_pending``.
    """

    def __init__(self, samplerate: int, blocksize: int, prefill_blocks: int):
        self.samplerate, self.blocksize = samplerate, blocksize
        self.cb_us = np.zeros(HISTORY, np.float32)
        self.cb_n = 0
        self.dsp_us = np.zeros(HISTORY, np.float32)
        self.dsp_t0 = np.zeros(HISTORY, np.int64)
        self.dsp_cpu_us = np.zeros(HISTORY, np.float32)
        self.dsp_switches = np.zeros(HISTORY, np.int64)
        self.dsp_n = 0
        self.late_context: list[dict] = []
        self.late_pending: list[int] = []  # late callbacks' start times, until explained
        self.delayed_callbacks = 0
        self.max_callback_gap_ms = 0.0  # longest interval between callback starts (set 0 to time a window)
        self.late_blocks_ours = 0
        self.late_blocks_stolen = 0
        self._window = prefill_blocks + 2
        self._odd_tail = np.zeros(self._window - 1, bool)
        self._last_start_ns = 0
        self.host_period = 0  # the server's period in frames (0: not known; the engine's monitor sets it)

    def set_prefill(self, prefill_blocks: int) -> None:
        """The pre-fill was raised while streaming (the server's period grew): the attribution window
        follows it (monitor thread, like ``add_callbacks``)."""
        window = prefill_blocks + 2
        if window > self._window:
            self._odd_tail = np.concatenate((np.zeros(window - self._window, bool), self._odd_tail))
            self._window = window

    @property
    def period_ns(self) -> float:
        return 1e9 * self.blocksize / self.samplerate

    def add_callbacks(self, recs: np.ndarray) -> None:
        """Take the callback's timing records ((n, TIME_WIDTH) int64: start ns, duration ns,
        frames, flags) in order: histories, delayed callbacks, late blocks to explain."""
        n = recs.shape[0]
        if n == 0:
            return
        pos = (self.cb_n + np.arange(n)) & (HISTORY - 1)
        self.cb_us[pos] = recs[:, 1] * 1e-3
        self.cb_n += n
        starts = recs[:, 0]
        prev = np.concatenate(([self._last_start_ns or starts[0]], starts[:-1]))
        period_ns = recs[:, 2] * 1e9 / self.samplerate
        cycle_ns = np.maximum(period_ns, self.host_period * 1e9 / self.samplerate)  # a server cycle
        bursts = cycle_ns > 1.01 * period_ns  # several callbacks per cycle: back to back by design
        gaps = starts - prev
        delayed = gaps > 1.5 * cycle_ns
        self.max_callback_gap_ms = max(self.max_callback_gap_ms, float(gaps.max()) * 1e-6)
        self.delayed_callbacks += int(np.count_nonzero(delayed))
        odd = delayed | ((gaps < 0.5 * period_ns) & ~bursts) | ((recs[:, 3] & (cb.LATE_FLAG - 1)) != 0)
        if not self._last_start_ns:
            odd[0] = False  # the very first callback has no predecessor
        self._last_start_ns = int(starts[-1])
        W = self._window
        hist = np.concatenate((self._odd_tail, odd))
        for i in np.flatnonzero(recs[:, 3] & cb.LATE_FLAG):  # rare: a Python loop is fine
            if not hist[i: i + W].any():  # no anomaly in this callback or the W - 1 before it
                self.late_pending.append(int(starts[i]))  # ours or stolen: see explain_pending
        self._odd_tail = hist[len(hist) - (W - 1):]

    def explain_pending(self, force: bool = False) -> None:
        """Explain and attribute late blocks once the DSP thread has started a block after them (a
        block is recorded when it ends: a stalled one shows up late), after a second, or now
        (``force``)."""
        if not self.late_pending:
            return
        latest = int(self.dsp_t0[(self.dsp_n - 1) & (HISTORY - 1)]) if self.dsp_n else 0
        now = time.monotonic_ns()
        keep = []
        for start_ns in self.late_pending:
            if not (force or latest > start_ns or now - start_ns > 1e9):
                keep.append(start_ns)
                continue
            ctx = self.explain(start_ns)
            if ctx["cause"] == "stolen":
                self.late_blocks_stolen += 1
            else:
                self.late_blocks_ours += 1
            if len(self.late_context) < LATE_CONTEXT_MAX:
                self.late_context.append(ctx)
        self.late_pending = keep

    def explain(self, start_ns: int) -> dict:
        """What the DSP thread did in the attribution window before a late callback at
        ``start_ns``: blocks started, the longest gap between block starts (up to the callback),
        the slowest block's wall and CPU time, and the time the hypervisor took from the thread.

        Stolen time is a block's wall time minus its CPU time when the thread was not switched
        out during it (no GIL wait, no preemption): the virtual CPU itself was taken away (a
        paravirtual Linux keeps steal out of thread CPU time). Counted for the blocks overlapping
        the window, and only as much as must have fallen inside it. A late block is the
        hypervisor's ("stolen") when that is at least one block period, otherwise "ours"."""
        period_ns = self.period_ns
        n = self.dsp_n
        idx = np.arange(n - min(n, HISTORY, EXPLAIN_LOOKBACK_BLOCKS), n) & (HISTORY - 1)
        t0 = self.dsp_t0[idx]
        wall_ns = self.dsp_us[idx].astype(np.float64) * 1e3
        lo = start_ns - (self._window + 1) * period_ns
        started = (t0 >= lo) & (t0 <= start_ns)
        inside = idx[started]
        before = t0[t0 < lo]
        edges = np.concatenate(([before.max()] if before.size else [], t0[started], [start_ns]))
        worst = inside[np.argmax(self.dsp_us[inside])] if inside.size else None
        # off-CPU time without a switch, at least this much of it inside the window
        ov = (t0 <= start_ns) & (t0 + wall_ns >= lo) & (self.dsp_switches[idx] == 0)
        outside_ns = wall_ns[ov] - (np.minimum(t0[ov] + wall_ns[ov], start_ns) - np.maximum(t0[ov], lo))
        off_cpu_ns = wall_ns[ov] - self.dsp_cpu_us[idx[ov]].astype(np.float64) * 1e3
        stolen_ms = float(np.clip(off_cpu_ns - outside_ns, 0, None).sum() * 1e-6)
        return {"callback_ns": start_ns, "blocks_in_window": int(inside.size),
                "max_gap_ms": float(np.diff(edges).max() * 1e-6) if edges.size > 1 else None,
                "slowest_block_ms": float(self.dsp_us[worst] * 1e-3) if worst is not None else None,
                "slowest_block_cpu_ms": float(self.dsp_cpu_us[worst] * 1e-3) if worst is not None else None,
                "slowest_block_switches": int(self.dsp_switches[worst]) if worst is not None else None,
                "stolen_ms": stolen_ms, "cause": "stolen" if stolen_ms >= period_ns * 1e-6 else "ours"}

    def counters(self) -> dict:
        """The attribution counters (cheap: no percentiles)."""
        return {"delayed_callbacks": self.delayed_callbacks, "callback_gap_ms_max": self.max_callback_gap_ms,
                "late_blocks_ours": self.late_blocks_ours, "late_blocks_stolen": self.late_blocks_stolen,
                "late_context": list(self.late_context)}

    def summary(self, percentiles: bool = True) -> dict:
        """Counters plus callback and DSP-block time percentiles (µs) and the DSP load: ``dsp_load``
        the median block's share of the period, ``dsp_load_mean`` the mean's (what the thread is
        busy: a chain whose blocks differ, every few blocks an expensive one, shows it), over the
        last ``HISTORY`` blocks. Without ``percentiles``, the p50/p99 and ``dsp_load`` are left out:
        each is a millisecond's sort holding the interpreter, which the DSP thread needs (four of
        them on every status-line tick)."""
        period_us = 1e6 * self.blocksize / self.samplerate
        cbs = self.cb_us[: min(self.cb_n, HISTORY)]
        dsp = self.dsp_us[: min(self.dsp_n, HISTORY)]

        def pct(a, q):
            return float(np.percentile(a, q)) if a.size else 0.0

        mean = float(dsp.mean()) if dsp.size else 0.0
        ranks = {}
        if percentiles:
            median = pct(dsp, 50)
            ranks = {"callback_us_p50": pct(cbs, 50), "callback_us_p99": pct(cbs, 99), "dsp_us_p50": median,
                     "dsp_us_p99": pct(dsp, 99), "dsp_load": median / period_us}
        return {**self.counters(), **ranks,
                "callback_us_max": float(cbs.max()) if cbs.size else 0.0,
                "dsp_us_max": float(dsp.max()) if dsp.size else 0.0, "dsp_us_mean": mean,
                "dsp_load_mean": mean / period_us, "blocks_processed": self.dsp_n}
