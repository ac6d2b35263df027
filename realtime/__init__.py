"""Real-time core: GIL-free PortAudio callback, SPSC rings, processor chain, offline runner.

Never imports gui/ or torch. This file runs before any part of the runtime, so it is where Numba's
on-disk cache is pointed at a folder named by the runtime's source (below).
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

# Numba's cache checks only the source file a kernel is written in: constants and kernels it takes
# from another module are baked into the cached machine code unchecked. After an update that changes
# such a module and not its users, the old code ran (the synth played with stale row numbers). A
# cache folder keyed by the hash of every runtime source file is never stale; an update compiles once.
_NUMBA_BASE_ENV = "REALTIME_NUMBA_BASE"  # the folder the keyed ones live in, passed on to child processes
_STALE_AFTER_S = 30 * 86400  # keyed folders unused this long (older versions) are removed
_KEY = re.compile(r"[0-9a-f]{16}")  # a keyed folder's name (source_key)


def cache_dir() -> Path:
    """This program's cache folder: ``$REALTIME_CACHE_DIR``, else ``~/.cache/realtime-host`` (a user
    without a home, as a container's numeric one: ``realtime-host-UID`` in the temporary folder)."""
    base = os.environ.get("REALTIME_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # a relative one is to be ignored (XDG spec): it made a folder wherever we ran
        return Path(xdg) / "realtime-host"
    try:
        return Path.home() / ".cache" / "realtime-host"
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return Path(tempfile.gettempdir()) / f"realtime-host-{os.getuid()}"


def source_key(package: Path) -> str:
    """A hash of every ``.py`` file under ``package`` (names and contents)."""
    h = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        h.update(str(f.relative_to(package)).encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError:  # unreadable: counted by name only
            pass
        h.update(b"\0")
    return h.hexdigest()[:16]


def use_keyed_numba_cache(package: Path) -> Path:
    """Point Numba's cache at ``<base>/<source_key(package)>`` and return that folder.

    The base is the one a parent process chose, else ``$NUMBA_CACHE_DIR`` as the user set it, else
    ``cache_dir()/numba``. Call before the package defines its kernels.
    """
    base = Path(os.environ.get(_NUMBA_BASE_ENV) or os.environ.get("NUMBA_CACHE_DIR") or cache_dir() / "numba")
    keyed = base / source_key(package)
    os.environ[_NUMBA_BASE_ENV] = str(base)
    os.environ["NUMBA_CACHE_DIR"] = str(keyed)
    numba = sys.modules.get("numba")
    if numba is not None:  # already imported: its config read the environment then
        numba.config.CACHE_DIR = str(keyed)
    try:
        fresh = not keyed.exists()
        keyed.mkdir(parents=True, exist_ok=True)
        os.utime(keyed)  # marks it used
        if fresh:
            _remove_unused(base, keep=keyed)
    except OSError:  # no writable cache: Numba falls back to __pycache__ beside the sources
        pass
    return keyed


def _remove_unused(base: Path, keep: Path) -> None:
    import shutil

    cutoff = time.time() - _STALE_AFTER_S
    for d in base.iterdir():
        try:  # keyed folders only: a user's NUMBA_CACHE_DIR holds other programs' caches beside them
            if d != keep and _KEY.fullmatch(d.name) and d.is_dir() and d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


use_keyed_numba_cache(Path(__file__).resolve().parent)
