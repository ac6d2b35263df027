"""What C libraries write to file descriptor 2 (libjack's connection noise, lilv's Turtle errors), and
to descriptor 1 (a plugin's printf, kept off stdout)."""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager


@contextmanager
def capture_stderr():
    """Collect what C code writes to file descriptor 2 inside the block; yields a list of lines
    (filled on exit). Not for real-time code: it swaps a process-wide descriptor."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(ln for ln in tmp.read().decode("utf-8", "replace").splitlines() if ln.strip())


_libc = None


def _flush_c_stdio() -> None:
    """fflush(NULL): what C code printed into its stdio buffers goes to the descriptors now."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None)
    _libc.fflush(None)


@contextmanager
def stdout_to_stderr():
    """Point file descriptor 1 at descriptor 2 inside the block: what C code prints there (a
    plugin's printf: Calf Fluidsynth loading a soundfont) goes to stderr, never into a command's
    JSON on stdout. C's buffers are flushed before the descriptor is put back (stdout into a pipe
    is buffered: its text would reach stdout later). Not for real-time code: it swaps a
    process-wide descriptor."""
    if sys.stdout is not None:
        sys.stdout.flush()
    _flush_c_stdio()  # what was printed before the block stays on stdout
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1 (a daemon): nothing to keep apart
        saved = -1
    if saved >= 0:
        try:
            os.dup2(2, 1)
        except OSError:  # no descriptor 2
            os.close(saved)
            saved = -1
    try:
        yield
    finally:
        if saved >= 0:
            _flush_c_stdio()
            os.dup2(saved, 1)
            os.close(saved)


_quieted: set[str] = set()


def quiet_libjack_beside(module) -> list[str]:
    """Silence the copies of libjack loaded from ``module``'s installation (python-rtmidi's wheel
    bundles its own libjack, apart from the system's that PortAudio uses and quiets itself): their
    error and info lines ("Cannot read socket fd…", "JackSocketClientChannel read fail", "Server is
    not running" when the server goes away) went straight to the terminal under the command's own
    one line. They come from libjack's own threads, at any time, so no window of
    ``capture_stderr`` holds them: the library's message functions are pointed at a C function of
    one string that does nothing (libc's ``strlen``; no Python runs there: it may be a real-time
    thread, or the interpreter shutting down). Returns the libraries silenced now (Linux only)."""
    import ctypes
    from pathlib import Path

    root = Path(getattr(module, "__file__", "") or ".").resolve().parents[1]  # site-packages
    if str(root) in _quieted:  # once: its libraries are loaded with the module
        return []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split(None, 5)[-1].strip() for line in f if "libjack" in line}
    except OSError:
        return []
    done = []
    for path in sorted(p for p in paths if p.startswith(str(root) + os.sep) and p not in _quieted):
        try:
            lib = ctypes.CDLL(path)
            nothing = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p)
            for name in ("jack_set_error_function", "jack_set_info_function"):
                setter = getattr(lib, name)
                setter.argtypes, setter.restype = (ctypes.c_void_p,), None
                setter(nothing)
        except (OSError, AttributeError):
            continue
        _quieted.add(path)
        done.append(path)
    _quieted.add(str(root))
    return done


_crash_stream = None


def crash_stacks_to_stderr() -> None:
    """Python's stacks on a fatal signal (a hosted plugin's segfault) to the standard error this
    process has now, through a descriptor of its own: ``capture_stderr`` points descriptor 2 at a
    temporary file while a plugin is made, where faulthandler's report of a crash in it was lost
    with the process (a command died with status 139 and not one line)."""
    global _crash_stream
    import faulthandler

    if _crash_stream is None:
        try:
            _crash_stream = os.fdopen(os.dup(2), "w")
        except OSError:  # no descriptor 2 (a daemon): nowhere to say it
            return
    faulthandler.enable(_crash_stream)
