"""Start a private JACK server with the dummy driver where no sound card exists (servers, CI)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

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


SHM = Path("/dev/shm")


def _segments() -> dict[str, int]:
    """JACK's shared-memory segments (``jack-<uid>-<n>``, about 100 MB for a server's engine):
    name -> inode (a name is reused by later servers; the inode tells them apart)."""
    out = {}
    for p in SHM.glob(f"jack-{os.getuid()}-*") if SHM.is_dir() else ():
        try:
            out[p.name] = p.stat().st_ino
        except OSError:
            pass
    return out


def _remember_segments(pid: int, before: dict[str, int]) -> None:
    """Note which segments the server ``pid`` created, so a later start can free them if it was
    killed without cleaning up (SIGKILL: jackd never runs its own clean-up)."""
    inodes = {name: ino for name, ino in _segments().items() if before.get(name) != ino}
    if inodes:
        try:
            _note(pid).write_text(json.dumps(inodes))
        except OSError:
            pass


def _note(pid: int) -> Path:
    return SHM / f"rtaudio-jackd-{pid}.json"


def remove_stale_segments() -> list[str]:
    """Remove the segments of private servers started here whose process is gone; returns them."""
    removed = []
    for note in SHM.glob("rtaudio-jackd-*.json") if SHM.is_dir() else ():
        pid = int(note.stem.rsplit("-", 1)[1])
        if Path(f"/proc/{pid}").exists():
            continue
        try:
            inodes = dict(json.loads(note.read_text()))
        except (OSError, ValueError, TypeError):
            inodes = {}
        for name, inode in inodes.items():
            seg = SHM / str(name)
            try:
                if seg.stat().st_ino == inode:  # still that server's, not a later server's of the same name
                    seg.unlink()
                    removed.append(seg.name)
            except OSError:
                pass
        note.unlink(missing_ok=True)
    return removed


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
        remove_stale_segments()
        before = _segments()
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
                _remember_segments(self.proc.pid, before)
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
        if self.proc is not None:
            if self.proc.returncode is not None and self.proc.returncode >= 0:  # it cleaned up itself
                _note(self.proc.pid).unlink(missing_ok=True)
            remove_stale_segments()  # killed (SIGKILL/timeout): its segments would stay until a start
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
