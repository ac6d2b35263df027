"""Stream settings for the live engine, and the pre-fill defaults; light enough for any command to import."""
from __future__ import annotations

from dataclasses import dataclass

from realtime.errors import EngineError

HEADLESS_PREFILL_BLOCKS = 2  # `run`: output pre-fill, the DSP thread's time budget in blocks
# The panel's engine runs the heavy neural chains in its own process: one block more of budget
# (the README's knob-panel section has the measurements behind it).
PANEL_PREFILL_BLOCKS = 3
COMMON_RATES = (44100, 48000, 88200, 96000)  # the rates the engine runs (a device may run fewer)
BLOCK_RANGE = (32, 2048)  # frames per period the engine runs
MAX_PREFILL_S = 2.0  # a pre-fill is latency: more than 2 s of it is a typo (1e12 blocks asked for 1 PiB)


def device_arg(d):
    """A device as text gives it (command line, settings file, dialog): digits are a PortAudio
    device number (`-d 3`); anything else stays a name (PortAudio searches a string as a name,
    even "3"). Anything not a string is returned as it is."""
    return int(d) if isinstance(d, str) and d.isdigit() else d


@dataclass
class EngineConfig:
    samplerate: int = 48000
    blocksize: int = 128
    channels: int = 2
    mode: str = "duplex"  # "duplex", "input" (capture only) or "output" (playback only, e.g. a synth)
    input_device: int | str | None = None
    output_device: int | str | None = None
    prefill_blocks: int = HEADLESS_PREFILL_BLOCKS  # output ring pre-fill: the DSP thread's time budget, in blocks
    ring_blocks: int = 32  # ring capacity, in blocks
    switch_interval_s: float = 0.0005  # GIL hand-over interval while streaming (Python's default 5 ms > a 128-frame block)
    realtime_priority: int = 5  # SCHED_FIFO priority for the DSP thread when permitted (JACK's own threads run higher)

    def validate(self) -> None:
        if self.samplerate not in COMMON_RATES:
            raise EngineError(f"samplerate {self.samplerate} not supported ({', '.join(map(str, COMMON_RATES))})")
        if not BLOCK_RANGE[0] <= self.blocksize <= BLOCK_RANGE[1]:
            raise EngineError(f"blocksize {self.blocksize} outside {BLOCK_RANGE[0]}..{BLOCK_RANGE[1]} frames")
        if self.channels not in (1, 2):
            raise EngineError(f"channels must be 1 or 2, got {self.channels}")
        if self.mode not in ("duplex", "input", "output"):
            raise EngineError(f"mode must be duplex, input or output, got {self.mode!r}")
        if not 1 <= self.prefill_blocks <= self.max_prefill_blocks:
            raise EngineError(f"prefill_blocks {self.prefill_blocks}: the pre-fill is 1 to {self.max_prefill_blocks} "
                              f"blocks ({MAX_PREFILL_S:g} s) at {self.blocksize} frames")

    @property
    def max_prefill_blocks(self) -> int:
        """The most blocks of pre-fill (``MAX_PREFILL_S``) at this rate and block size."""
        return int(MAX_PREFILL_S * self.samplerate / self.blocksize)
