"""A call that may wait on a JACK server, waited for a bounded time.

Closing a JACK client (ours, rtmidi's) asks its server, and a paused one (a suspend, SIGSTOP) or a
hung one answers only once it resumes: the process, Ctrl-C and SIGTERM included, stayed held there.
"""
from __future__ import annotations

import threading
from typing import Callable


def done_within(fn: Callable[[], object], seconds: float, name: str) -> bool:
    """Run ``fn`` on a (daemon) thread of its own; whether it returned within ``seconds``. Past the
    wait it is left to that thread, which holds what ``fn`` refers to for as long as it runs."""
    t = threading.Thread(target=fn, name=name, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()
