"""Window actions that wait for the engine, without freezing the window.

A structural command (start, a slot added, a preset, new audio settings) takes the engine process
up to seconds: it loads models, warms up kernels, opens the stream. Waiting for its answer on the
GUI thread froze the window (meters, knobs, the keyboard) all that time.

An action is written as a generator: it yields each blocking host call as a tuple
``(function, *args)`` and gets its result back there (or its exception raised there), so its
try / except / finally read as plain code. ``ActionRunner.run`` drives it either here and now
(tests, scripts, a host in this process) or in the background: each host call on a worker
thread, the code between them on the GUI thread when the call's answer came (a queued signal),
and the event loop running meanwhile. One action at a time: one asked for meanwhile waits its turn.
"""
from __future__ import annotations

import threading

from PyQt6.QtCore import QObject, pyqtSignal


class Action:
    """An action under way: its steps, and the worker running its host call now (None: none runs)."""

    def __init__(self, text: str, steps, structural: bool):
        self.text, self.steps, self.structural = text, steps, structural
        self.thread: threading.Thread | None = None
        self.outcome: tuple = (None, None)  # that call's (result, exception)


def _call(call: tuple) -> tuple:
    try:
        return call[0](*call[1:]), None
    except Exception as e:  # handed to the action, at its yield
        return None, e


class ActionRunner(QObject):
    """Runs the window's actions. ``on_busy(action or None)``: the action that now runs (the window
    shows it, and disables what must wait); ``on_error(exception)``: a background action failed."""

    _callDone = pyqtSignal(object, object)  # (action, the worker thread that finished its call)

    def __init__(self, parent, on_busy, on_error):
        super().__init__(parent)
        self._on_busy, self._on_error = on_busy, on_error
        self.current: Action | None = None
        self._waiting: list[Action] = []
        self._callDone.connect(self._call_done)

    @property
    def calling(self) -> bool:
        """Whether a host call is under way on a worker (the engine's pipe is taken meanwhile)."""
        return self.current is not None and self.current.thread is not None

    def run(self, text: str, steps, background: bool = False, structural: bool = True):
        """Run the action ``steps``. Here and now (after the actions under way): return its result,
        raise its error. In the background: return None at once; an error goes to ``on_error``.
        ``structural``: it replaces the chain (or the engine), so nothing may be queued for it meanwhile."""
        if not background:
            self.settle()
            value, error = None, None
            while True:
                try:
                    call = steps.throw(error) if error is not None else steps.send(value)
                except StopIteration as e:
                    return e.value
                value, error = _call(call)
        self._waiting.append(Action(text, steps, structural))
        if self.current is None:
            self._next()
        return None

    def settle(self) -> None:
        """Finish the actions under way and waiting here and now (waiting for their workers)."""
        while self.calling:
            self.current.thread.join()
            self._call_done(self.current, self.current.thread)

    def drop_waiting(self) -> None:
        self._waiting.clear()

    def _next(self) -> None:
        self.current = self._waiting.pop(0) if self._waiting else None
        self._on_busy(self.current)
        if self.current is not None:
            self._advance(self.current, None, None)

    def _advance(self, action: Action, value, error) -> None:
        """Run the action up to its next host call, and start a worker on that; or end it."""
        try:
            call = action.steps.throw(error) if error is not None else action.steps.send(value)
        except StopIteration:
            return self._next()
        except Exception as e:
            self._on_error(e)
            return self._next()
        action.thread = threading.Thread(target=self._work, args=(action, call), name="engine-call", daemon=True)
        action.thread.start()

    def _work(self, action: Action, call: tuple) -> None:
        action.outcome = _call(call)
        try:
            self._callDone.emit(action, threading.current_thread())
        except RuntimeError:  # the window is gone
            pass

    def _call_done(self, action: Action, thread) -> None:
        if action is not self.current or thread is not action.thread:  # settled here meanwhile
            return
        action.thread = None
        self._advance(action, *action.outcome)
