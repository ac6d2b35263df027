"""Every error that is the user's to fix: the CLI prints it as one clear line, no traceback.

A leaf module: it imports nothing of the project, so any part can raise these without pulling in
the engine, PortAudio or a model.
"""


class ParamError(ValueError):
    """A parameter value or name was rejected; the message names the parameter."""


class PresetError(ValueError):
    """Invalid preset; the message starts with the field path (e.g. ``chain[1].params.q``)."""


class UnknownProcessorError(ValueError):
    """No processor of that kind is registered or importable."""


class ConfigError(ValueError):
    """A processor cannot run in this configuration (sample rate, channel count)."""


class ModelError(RuntimeError):
    """A model file is missing, unreadable or has the wrong shape."""


class EngineError(RuntimeError):
    """The live engine cannot do what was asked (bad configuration, unknown slot, full queue)."""


class AudioDeviceError(RuntimeError):
    """PortAudio refused a device or stream (missing device, unsupported format)."""


class JackError(RuntimeError):
    """A JACK server could not be started or reached."""


class MidiInputError(RuntimeError):
    """A MIDI port could not be opened."""


class OfflineError(RuntimeError):
    """A file could not be read, converted or written by the offline runner."""


class InputAccessError(OfflineError):
    """An input could not be opened or read for this machine's reason (no file descriptor left, a
    read error), not its content's: a batch's re-run retries it."""


class PluginError(RuntimeError):
    """An external (LV2) plugin cannot be found, scanned, instantiated or hosted."""


class RecordingError(RuntimeError):
    """A live recording could not be written to its end (full disk, lost mount)."""


# the project's own: their message is the whole story
PROJECT_ERRORS: tuple[type[BaseException], ...] = (
    ParamError, PresetError, UnknownProcessorError, ConfigError, OfflineError, EngineError, AudioDeviceError,
    JackError, MidiInputError, ModelError, PluginError, RecordingError)
USER_ERRORS: tuple[type[BaseException], ...] = PROJECT_ERRORS + (FileNotFoundError, PermissionError, IsADirectoryError)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGQUIT, raised like Ctrl-C so every clean-up path runs the same way."""


class _Pending:
    signal: str | None = None
    ended: int | None = None  # the status of the process's command once it has ended (``command_ended``)


def note_interrupt(name: str) -> None:
    """Remember a signal that was raised as an interrupt (the command line's handlers call this). C code
    that clears errors, an import under way for one, can swallow the exception: a Ctrl-C in start-up was
    lost about one time in 25, and the command ran to its end. Long loops ask ``raise_pending_interrupt``."""
    _Pending.signal = name


# the signals that end a command as Ctrl-C does: SIGQUIT (Ctrl-\) too, which by default dumped core
# and left the output's hidden temporary file (a recording's whole take) behind
INTERRUPT_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")


def interrupt_signals() -> tuple:
    """``INTERRUPT_SIGNALS`` as ``signal.Signals`` (those this platform has)."""
    import signal

    return tuple(getattr(signal, name) for name in INTERRUPT_SIGNALS if hasattr(signal, name))


def interrupt_on_signals() -> None:
    """SIGTERM, SIGHUP and SIGQUIT end a command like Ctrl-C: the same clean-up runs (no half-written
    file, a recording kept). Only the main thread may set handlers (``main`` is also called from
    tests' threads)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        if _Pending.ended is not None:  # the command has ended (its take kept, its error said): its status stands
            exit_with(_Pending.ended)
        name = signal.Signals(signum).name
        note_interrupt(name)  # remembered too: an exception raised inside an import can be swallowed
        raise KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(name)

    # a signal the caller ignored stays ignored: nohup's SIGHUP, a shell's `trap '' TERM`, an
    # ignored Ctrl-C in a background job
    for s in interrupt_signals():
        if s == signal.SIGINT:
            continue
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupt)
    _quiet_unraisable_interrupts()


def _quiet_unraisable_interrupts() -> None:
    """An interrupt raised inside a ctypes callback (Numba's compiler calls back into Python) cannot
    propagate: Python printed "Exception ignored on calling ctypes callback function" and its
    traceback before the command's one line. ``note_interrupt`` kept it, and it is raised again
    after (``raise_pending_interrupt``): the print is left out; anything else is printed as before."""
    import sys

    if getattr(sys.unraisablehook, "_drops_interrupts", False):
        return
    before = sys.unraisablehook

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):  # (Interrupted is one)
            before(unraisable)

    hook._drops_interrupts = True
    sys.unraisablehook = hook


def command_ended(status: int) -> None:
    """The command the process runs has ended with ``status`` (its output committed or its error
    said): from now on an interrupt signal ends the process at once with it (``exit_with``), not as
    "interrupted" 130 after the "recorded …" line. For the process's one command only (``cli``):
    tests call ``main`` many times in one process."""
    _Pending.ended = int(status or 0)


def exit_with(status: int) -> None:
    """End the process now with ``status``, what is buffered for stdout and stderr written first."""
    import os
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe, a flush the signal interrupted: the status still stands
            pass
    os._exit(int(status or 0))


def forget_pending_interrupt() -> None:
    """The command that saw the signal has ended (tests call ``main`` many times in one process)."""
    _Pending.signal = None


def raise_pending_interrupt() -> None:
    """Raise the interrupt ``note_interrupt`` saw, if its exception went missing."""
    if _Pending.signal is not None:
        raise KeyboardInterrupt() if _Pending.signal == "SIGINT" else Interrupted(_Pending.signal)


def signals_blocked(signals=None):
    """A context in which the calling thread's mask blocks ``signals`` (default: every interrupt
    signal): one that comes meanwhile waits until it ends. A process started meanwhile inherits the
    mask (the panel's engine process, gui.remote)."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def blocked():
        before = signal.pthread_sigmask(signal.SIG_BLOCK, set(interrupt_signals() if signals is None else signals))
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)

    return blocked()


def signals_deferred(raise_after: bool = True):
    """A context in which SIGINT/SIGTERM/SIGHUP/SIGQUIT are remembered, not acted on, and raised again on
    leaving it (dropped with ``raise_after`` False: the tear-down of a command whose status is
    already in hand): for a tear-down that must run to its end (a recording's close, a server's stop).
    The handlers are swapped, not the signal mask: a process-directed signal goes to any thread
    whose mask lets it in, and Python runs its handler in the main thread all the same. Only the
    main thread can set handlers; elsewhere this does nothing."""
    import contextlib
    import signal
    import threading

    @contextlib.contextmanager
    def deferred():
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        got: list[int] = []
        old = {s: signal.getsignal(s) for s in interrupt_signals()}
        for s, h in old.items():
            if h is not signal.SIG_IGN:
                signal.signal(s, lambda signum, frame: got.append(signum))
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)
            if got and raise_after:
                signal.raise_signal(got[0])  # now handled as it would have been
    return deferred()


# OS errors a user can act on, by errno name (errno itself is looked up lazily: stays a leaf)
_OS_REASONS = {"ENOSPC": "no space left on device", "EDQUOT": "disk quota exceeded",
               "EROFS": "read-only file system", "EACCES": "permission denied", "EPERM": "not permitted",
               "EISDIR": "is a folder", "ENOTDIR": "a part of the path is not a folder",
               "ENAMETOOLONG": "file name too long", "ENOENT": "no such file or folder",
               "EMFILE": "too many open files", "EIO": "input/output error",
               "EFBIG": "file too large (a size limit of its file system, such as FAT32's 4 GiB, or of this process)"}


def os_reason(e: OSError) -> str | None:
    """A short reason for an OSError a user can act on (full disk, read-only, …), else None."""
    import errno

    name = errno.errorcode.get(e.errno or 0, "")
    return _OS_REASONS.get(name)


def user_message(e: BaseException) -> str | None:
    """The one line to show for an error that is the user's to fix, or None for a bug.

    Parameters
    ----------
    e : BaseException
        The exception a command raised.

    Returns
    -------
    str or None
        The project's own errors as they are; OS errors with a reason and the path they concern.
    """
    if isinstance(e, PROJECT_ERRORS):
        return str(e)
    if isinstance(e, OSError):
        reason = os_reason(e) or e.strerror
        if reason is None:
            return None
        return f"{e.filename}: {reason}" if e.filename else reason
    return None


def interrupt_status(e: KeyboardInterrupt) -> int:
    """The exit status of a command an interrupt ended: 128 + the signal's number, as a shell
    reports it (Ctrl-C 130, SIGTERM 143, SIGHUP 129, SIGQUIT 131)."""
    import signal

    name = str(e) if isinstance(e, Interrupted) else "SIGINT"
    return 128 + int(getattr(signal, name, signal.SIGINT))


def _reader_gone() -> int:
    """Status 141 (128 + SIGPIPE, what a shell shows for a tool the signal ended); what is still
    buffered for stdout goes nowhere, so the interpreter's last flush does not fail again."""
    import os
    import signal
    import sys

    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # no stdout of its own (a test's capture)
        pass
    return 128 + int(signal.SIGPIPE)


def run_cli(main, argv=None) -> int:
    """Run a ``python -m`` entry point (a data recipe, a trainer, a benchmark) as ``main.py`` runs
    its commands: a user error is one line ``error: …`` and exit status 2, a ``SystemExit`` with a
    message the same, Ctrl-C / SIGTERM / SIGHUP / SIGQUIT ``interrupted`` and 130 / 143 / 129 / 131 (the
    same clean-up runs for all four); a bug keeps its traceback."""
    import signal
    import threading

    sigs = interrupt_signals()
    before = {s: signal.getsignal(s) for s in sigs} if threading.current_thread() is threading.main_thread() else {}
    interrupt_on_signals()
    try:
        return _run_cli(main, argv)
    finally:  # a caller in the same process (a test) gets its own handlers back
        for s, h in before.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _run_cli(main, argv) -> int:
    try:
        status = main(argv) if argv is not None else main()
        return int(status or 0)
    except BaseException as e:
        said = said_status(e)
        if said is not None:
            return said
        if isinstance(e, SystemExit):
            return e.code or 0
        raise


def said_status(e: BaseException, interrupted: str = "interrupted") -> int | None:
    """Say how a command ended on ``e`` in one line on stderr and return its exit status: an
    interrupt ``interrupted`` (``interrupt_status``: 130, 143 for SIGTERM, 129 for SIGHUP), a user
    error or a ``SystemExit("message")`` ``error: …`` (2). None, saying nothing: not the user's to
    fix (a bug keeps its traceback) or a ``SystemExit`` that carries a status."""
    if isinstance(e, KeyboardInterrupt):
        say_stderr(interrupted)
        return interrupt_status(e)
    if isinstance(e, BrokenPipeError):  # the reader of the output left (`… | head`): nothing to say,
        return _reader_gone()  # as any tool that SIGPIPE ends
    if isinstance(e, SystemExit):
        msg = e.code if isinstance(e.code, str) else None
    else:
        msg = user_message(e) if isinstance(e, Exception) else None
    if msg is None:
        return None
    say_stderr(f"error: {msg}")
    return 2


def say_stderr(text: str, end: str = "\n") -> None:
    """``text`` on stderr, flushed; a terminal that hung up (EIO: SIGHUP, its window closed), a
    reader that left (EPIPE) or a log on a full disk (ENOSPC, EDQUOT) drops it, and the status
    stands (it was 1 with a traceback instead of SIGHUP's 129, the take kept all the same; a full
    log's disk stopped a live run at its first status line)."""
    import errno
    import sys

    try:
        print(text, end=end, file=sys.stderr, flush=True)
    except OSError as e:
        if e.errno not in (errno.EIO, errno.EPIPE, errno.ENOSPC, errno.EDQUOT):
            raise