"""Loops the bundled demo into the engine's JACK inputs, from a process of its own.

For machines without a sound card (the panel's demo mode) and for `bench gui`. The player's
JACK callback is compiled (``realtime.io.jackio``) and needs no GIL; it still runs in a process
of its own so the panel can restart or kill it without touching its own JACK state.

The player starts once and stays. The engine's ports are new after every start and after new
audio settings (its stream reopens PortAudio's JACK client; a change of the chain's structure
keeps them), and each ``connect`` only wires the running player to them: milliseconds (ports
wired already are left as they are). A new player for each (as before) took seconds
(a Python process, Numba compiling its JACK callback, the demo decoded), the engine's input silent
all that time.

    python -m gui.demo_source   # plays, unwired; each "connect [CLIENT]" line on stdin wires it to the
                                # engine's inputs (JACK client CLIENT's, where given) and answers "ready"
                                # or "error: …"; stops when stdin closes
"""
from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_TIMEOUT_S = 30.0
NOT_ENGINE = ("system", "rt-player", "rt-recorder", "rt-demo")  # JACK clients whose inputs are not the engine's


class DemoSource:
    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()  # ``proc`` taken or replaced (``connect`` may run on a thread of its own)

    def connect(self, engine: str | None = None) -> None:
        """Wire the player to the engine's current input ports, starting it first when none runs:
        those of JACK client ``engine`` (the engine's PortAudio, ``EngineHost.status()["jack_client"]``),
        or, when unknown or gone, the first inputs of a client that is not ours (another program's
        may come first). Blocks until it answers (READY_TIMEOUT_S at most); a player that fails is
        stopped, and the next call starts a new one.

        Raises
        ------
        RuntimeError
            One line, "demo input: …".
        """
        proc = self._running_player()
        try:
            proc.stdin.write(f"connect {engine or ''}".strip().encode() + b"\n")
            proc.stdin.flush()
        except (OSError, ValueError):  # it died (its stderr says why below), or was closed meanwhile
            pass
        line = _answer(proc, time.monotonic() + READY_TIMEOUT_S)
        if line != "ready":
            err = _tail(proc.err_file) if line is not None and proc.poll() is not None else ""
            self._drop(proc)
            _close_files(proc)  # (here: this thread is the one reading them)
            why = ((line or "").removeprefix("error: ") or err or
                   ("player did not start" if line is not None else f"player not ready within {READY_TIMEOUT_S:g} s"))
            raise RuntimeError(f"demo input: {why}")

    def _running_player(self) -> subprocess.Popen:
        with self._lock:
            if self.proc is not None and self.proc.poll() is not None:  # it died since: its files go
                self._stop(self.proc)
                _close_files(self.proc)
                self.proc = None
            if self.proc is None:
                # stderr to a file, not a pipe: a player that lives for hours must never block on a
                # full pipe nobody reads
                err = tempfile.TemporaryFile()
                self.proc = subprocess.Popen([sys.executable, "-m", "gui.demo_source"], cwd=ROOT,
                                             env=os.environ.copy(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=err)
                self.proc.err_file, self.proc.pending = err, b""
            return self.proc

    def _drop(self, proc: subprocess.Popen) -> None:
        """Stop ``proc`` and forget it, unless another player replaced it meanwhile."""
        with self._lock:
            if self.proc is proc:
                self.proc = None
        self._stop(proc)

    def close(self) -> None:
        with self._lock:
            proc, self.proc = self.proc, None
        if proc is not None:
            self._stop(proc)

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        """End the player. Its output files stay open: a ``connect`` on another thread may be reading
        them (closed under it, their numbers could go to the next file opened); that one sees the end."""
        try:
            proc.stdin.close()  # the player's signal to stop
            proc.wait(5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()


def _close_files(proc: subprocess.Popen) -> None:
    for f in (proc.stdout, proc.err_file):
        try:
            f.close()
        except (OSError, ValueError):
            pass


def _answer(proc: subprocess.Popen, deadline: float) -> str | None:
    """The player's next answer: "ready" or "error: …" ("" when it exited first, None when
    ``deadline`` passed). Other lines (a library printing) are skipped; read straight from the pipe,
    so no line waits in a buffer that ``select`` does not see."""
    fd = proc.stdout.fileno()
    while True:
        line, nl, rest = proc.pending.partition(b"\n")
        if nl:
            proc.pending = rest
            text = line.decode(errors="replace").strip()
            if text == "ready" or text.startswith("error: "):
                return text
            continue
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return ""
        proc.pending += chunk


def _tail(f, size: int = 500) -> str:
    """The last ``size`` characters a player wrote to its stderr file."""
    try:
        f.seek(max(0, f.seek(0, os.SEEK_END) - size))
        return f.read().decode(errors="replace").strip()
    except (OSError, ValueError):
        return ""


def wire(client, outs: list[str], engine: str | None = None) -> str:
    """Connect the player's ports ``outs`` to the engine's inputs (each to one; a mono engine gets
    the left channel) through ``client``: JACK client ``engine``'s, else (not given, or no such
    client now: its PortAudio restarted under another name) those of the clients not ours; the
    answer for the parent: "ready" or "error: …"."""
    import jack

    from realtime.io.jackio import engine_ports

    ins = engine_ports(NOT_ENGINE, client=engine, via=client)[0] if engine else []
    if not ins:
        ins = engine_ports(NOT_ENGINE, via=client)[0]
    if not ins:
        return "error: no engine input ports on the JACK server"
    try:
        for src, dst in zip(outs, ins):
            try:
                client.connect(src, dst)
            except jack.JackErrorCode as e:
                if e.code != errno.EEXIST:  # (wired already: the engine did not restart)
                    raise
    except jack.JackError as e:
        return f"error: {e}"
    return "ready"


def main() -> int:
    import jack

    from realtime.io.jackio import JackPlayer
    from realtime.run.live import load_demo_signal

    wiring = jack.Client("rt-demo-wire", no_start_server=True)  # never activated: it only connects ports
    try:
        player = JackPlayer(load_demo_signal(wiring.samplerate, 2), name="rt-demo", loop=True)
        try:
            player.start([])
            player.play()
            outs = player.port_names()
            for line in sys.stdin:  # until the parent closes our stdin (or dies)
                word, _, engine = line.strip().partition(" ")
                if word == "connect":
                    print(wire(wiring, outs, engine.strip() or None), flush=True)
        finally:
            player.close()
    finally:
        wiring.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
