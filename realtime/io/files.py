"""One atomic writer for every file the program writes (renders, recordings, presets, demos).

A file is written under a hidden temporary name in its destination folder and renamed over the
destination only when complete, so an interrupted write never leaves a half-written file where the
user looks, and never destroys the file it would replace.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


class AtomicFile:
    """A temporary file beside ``path``; ``commit()`` renames it over ``path``, ``discard()`` removes it.

    The finished file gets the mode the user expects: that of the file it replaces, else the
    usual mode under the process's umask (``mkstemp`` alone would leave it owner-only).
    """

    def __init__(self, path, suffix: str = ".part"):
        self.path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=suffix, dir=str(self.path.parent or "."))
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self, fsync: bool = True) -> Path:
        if fsync:
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
        try:
            mode = self.path.stat().st_mode & 0o7777
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(self.tmp, mode)
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


@contextmanager
def atomic_write(path, suffix: str = ".part"):
    """Yield a temporary path to write ``path`` through; committed on success, removed on any error.

    Parameters
    ----------
    path : str or Path
        The destination; its folder must exist.
    suffix : str
        Suffix of the hidden temporary file.
    """
    f = AtomicFile(path, suffix)
    try:
        yield f.tmp
        f.commit()
    except BaseException:
        f.discard()
        raise
