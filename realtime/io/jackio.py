"""JACK clients that play a signal into the engine and record what it outputs.

Used by the demo (no sound card) and by the tests: real audio through real JACK ports, compared
sample for sample. Player and recorder are separate clients so the JACK graph is a chain
(player → engine → recorder) and adds no period of delay.
"""
from __future__ import annotations

import threading

import numpy as np


def _jack():
    import jack

    return jack


class JackPlayer:
    def __init__(self, signal: np.ndarray, name: str = "rt-player"):
        jack = _jack()
        self.signal = np.ascontiguousarray(signal if signal.ndim == 2 else signal[:, None], np.float32)
        self.pos = 0
        self.playing = False
        self.start_frame = -1  # JACK frame time of the first frame played
        self.done = threading.Event()
        self.client = jack.Client(name, no_start_server=True)
        self.ports = [self.client.outports.register(f"out_{c + 1}") for c in range(self.signal.shape[1])]
        self.client.set_process_callback(self._process)

    def _process(self, frames: int) -> None:
        bufs = [p.get_array() for p in self.ports]
        if not self.playing:
            for b in bufs:
                b.fill(0)
            return
        if self.pos == 0:
            self.start_frame = self.client.last_frame_time
        n = min(frames, self.signal.shape[0] - self.pos)
        for c, b in enumerate(bufs):
            b[:n] = self.signal[self.pos: self.pos + n, c]
            b[n:] = 0
        self.pos += n
        if self.pos >= self.signal.shape[0]:
            self.playing = False
            self.done.set()

    def start(self, targets: list[str]) -> None:
        self.client.activate()
        for port, target in zip(self.ports, targets):
            self.client.connect(port, target)

    def play(self, signal: np.ndarray | None = None) -> None:
        if signal is not None:
            self.signal = np.ascontiguousarray(signal if signal.ndim == 2 else signal[:, None], np.float32)
        self.pos = 0
        self.start_frame = -1
        self.done.clear()
        self.playing = True

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


class JackRecorder:
    def __init__(self, frames: int, channels: int, name: str = "rt-recorder"):
        jack = _jack()
        self.data = np.zeros((frames, channels), np.float32)
        self.pos = 0
        self.recording = False
        self.start_frame = -1  # JACK frame time of the first frame recorded
        self.client = jack.Client(name, no_start_server=True)
        self.ports = [self.client.inports.register(f"in_{c + 1}") for c in range(channels)]
        self.client.set_process_callback(self._process)

    def _process(self, frames: int) -> None:
        if not self.recording:
            return
        if self.pos == 0:
            self.start_frame = self.client.last_frame_time
        n = min(frames, self.data.shape[0] - self.pos)
        for c, p in enumerate(self.ports):
            self.data[self.pos: self.pos + n, c] = p.get_array()[:n]
        self.pos += n

    def rearm(self, frames: int) -> None:
        """Start a fresh recording of ``frames`` frames (call while not recording)."""
        self.data = np.zeros((frames, self.data.shape[1]), np.float32)
        self.pos = 0
        self.start_frame = -1

    def since(self, start_frame: int) -> np.ndarray:
        """What was recorded, re-based to begin at JACK frame ``start_frame`` (a player's first
        frame; same length). Starting a player and a recorder from Python is not sample-synchronous:
        a JACK cycle may pass between the two calls, which would shift a measured lag by a period."""
        data = self.data[: self.pos]
        if start_frame < 0 or self.start_frame < 0:
            return data.copy()
        shift = (int(start_frame) - int(self.start_frame) + 2 ** 31) % 2 ** 32 - 2 ** 31  # frame times wrap at 2^32
        out = np.zeros_like(data)
        if shift >= 0:
            out[: max(0, len(data) - shift)] = data[shift:]
        else:
            out[-shift:] = data[: len(data) + shift]
        return out

    def start(self, sources: list[str]) -> None:
        self.client.activate()
        for port, src in zip(self.ports, sources):
            self.client.connect(src, port)

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def engine_ports(exclude=("system", "rt-player", "rt-recorder")) -> tuple[list[str], list[str]]:
    """(input port names, output port names) of the engine's PortAudio JACK client."""
    jack = _jack()
    c = jack.Client("rt-probe", no_start_server=True)
    try:
        ins = [p.name for p in c.get_ports(is_audio=True, is_input=True) if p.name.split(":")[0] not in exclude]
        outs = [p.name for p in c.get_ports(is_audio=True, is_output=True) if p.name.split(":")[0] not in exclude]
    finally:
        c.close()
    return ins, outs
