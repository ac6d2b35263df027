"""Loops the bundled demo into the engine's JACK inputs, from a process of its own.

For machines without a sound card (the panel's demo mode) and for `bench gui`. The player's
JACK callback is compiled (``realtime.io.jackio``) and needs no GIL; it still runs in a process
of its own so the panel can restart or kill it without touching its own JACK state.

    python -m gui.demo_source     # prints "ready" once connected, plays until stdin closes
"""
from __future__ import annotations

import os
import select
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_TIMEOUT_S = 30.0


class DemoSource:
    def __init__(self):
        self.proc: subprocess.Popen | None = None

    def connect(self) -> None:
        """(Re)start the player and wire it to the engine's current input ports."""
        self.close()
        self.proc = subprocess.Popen([sys.executable, "-m", "gui.demo_source"], cwd=ROOT, env=os.environ.copy(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # on the GUI thread: a player that hangs must not freeze the window
        ready = select.select([self.proc.stdout], [], [], READY_TIMEOUT_S)[0]
        line = self.proc.stdout.readline().strip() if ready else ""
        if line != "ready":
            err = self.proc.stderr.read()[-500:] if self.proc.poll() is not None else ""
            self.close()
            why = line or err or ("player did not start" if ready else f"player not ready within {READY_TIMEOUT_S:g} s")
            raise RuntimeError(f"demo input: {why}")

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()  # the player's signal to stop
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def main() -> int:
    import jack

    from realtime.io.jackio import JackPlayer, engine_ports
    from realtime.run.live import load_demo_signal

    probe = jack.Client("rt-demo-probe", no_start_server=True)
    rate = probe.samplerate
    probe.close()
    ins, _ = engine_ports(exclude=("system", "rt-player", "rt-recorder", "rt-demo"))
    if not ins:
        print("error: no engine input ports on the JACK server", flush=True)
        return 1
    signal = load_demo_signal(rate, min(2, len(ins)))
    player = JackPlayer(signal, name="rt-demo", loop=True)
    try:
        player.start(ins[: signal.shape[1]])
        player.play()
        print("ready", flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    finally:
        player.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
