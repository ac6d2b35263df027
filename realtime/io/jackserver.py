"""Start a private JACK server with the dummy driver where no sound card exists (servers, CI)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

from realtime.errors import JackError


def server_running(timeout: float = 0.0, name: str | None = None) -> bool:
    """True if a JACK server answers (jack_wait), without auto-starting one."""
    if not shutil.which("jack_wait"):
        return False
    env = dict(os.environ, JACK_NO_START_SERVER="1")
    if name:
        env["JACK_DEFAULT_SERVER"] = name
    args = ["jack_wait", "-w", "-t", str(max(1, int(timeout)))] if timeout else ["jack_wait", "-c"]
    try:
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return False
    lines = out.stdout.strip().splitlines()
    return bool(lines) and lines[-1].strip() in ("running", "server is available")


def ensure_server(samplerate: int = 48000, period: int = 128, log_path: str | None = None,
                  rescan: bool = True) -> "DummyJackServer | None":
    """Start a private dummy JACK server unless one already answers.

    Parameters
    ----------
    samplerate, period : int
        The new server's rate and period (an already running server keeps its own).
    log_path : str, optional
        Where the new server logs.
    rescan : bool
        Re-initialise PortAudio in this process afterwards, so it lists the server's ports.

    Returns
    -------
    DummyJackServer or None
        The server started here (the caller stops it), or None when one was already running.

    Raises
    ------
    JackError
        jackd is missing or did not come up.
    """
    server = None if server_running() else DummyJackServer(samplerate, period, log_path=log_path).start()
    if rescan:
        from realtime.io.portaudio import rescan as pa_rescan

        pa_rescan()  # PortAudio lists JACK only if the server ran when it initialised
    return server


class DummyJackServer:
    """``jackd -d dummy`` as a child process; use as a context manager."""

    def __init__(self, samplerate: int = 48000, period: int = 128, log_path: str | None = None,
                 name: str | None = None):
        # a named server (jackd -n) serves clients with JACK_DEFAULT_SERVER=name; by default the
        # name those clients (PortAudio included) will look for
        self.name = name or os.environ.get("JACK_DEFAULT_SERVER") or None
        self.samplerate = samplerate
        self.period = period
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "DummyJackServer":
        exe = shutil.which("jackd")
        if not exe:
            raise JackError("jackd not found: install the Debian package jackd2 (the set-up script does)")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        # jackd runs in its own session (a Ctrl-C in our terminal must not reach it before our
        # streams are closed), so it would outlive us if we were killed; the kernel's parent-death
        # signal (util-linux setpriv, where present) ends it with us
        reaper = [setpriv, "--pdeathsig", "TERM", "--"] if (setpriv := shutil.which("setpriv")) else []
        self.proc = subprocess.Popen(
            [*reaper, exe, *(["-n", self.name] if self.name else []), "--no-realtime" if os.geteuid() != 0 else "-R", "-d", "dummy",
             "-r", str(self.samplerate), "-p", str(self.period)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise JackError(f"jackd exited with {self.proc.returncode} (is another server running?)")
            if server_running(name=self.name):
                return self
            time.sleep(0.05)
        self.stop()
        raise JackError("jackd did not become ready within 10 s")

    def stop(self) -> None:
        """Stop the server, after PortAudio let go of it (streams must be closed before)."""
        from realtime.io.portaudio import release

        if self.proc and self.proc.poll() is None:
            if self.name == (os.environ.get("JACK_DEFAULT_SERVER") or None):
                release()  # only PortAudio's own server; others leave it untouched
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Simulate the device vanishing: SIGKILL, no goodbye."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
