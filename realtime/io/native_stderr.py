"""What C libraries write to file descriptor 2 (libjack's connection noise, lilv's Turtle errors)."""
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
