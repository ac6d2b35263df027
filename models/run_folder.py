"""What the trainers share about their run folders: a fresh run never replaces an earlier one
unasked, and a checkpoint is written whole or not at all, with one line when the disk says no."""
from __future__ import annotations

import os
import sys
from pathlib import Path

_held: dict = {}  # folder -> the lock this process holds on it, for its whole life (the system lets go at exit)


def check_run_folder(ckpt: Path, resume: bool, force: bool = False) -> None:
    """Refuse to start a fresh run over ``ckpt/last.pt`` (an earlier run's, which ``--resume``
    continues and ``--force`` replaces), a ``--resume`` that finds nothing to resume, and any run in
    a folder another run is training in (``claim_run_folder``)."""
    if Path(ckpt).is_dir():
        claim_run_folder(ckpt, keep=False)
    last = Path(ckpt) / "last.pt"
    if resume and not last.is_file():
        raise SystemExit(f"--resume: no last.pt in {ckpt} (a fresh run needs no --resume)")
    if not resume and not force and last.is_file():
        raise SystemExit(f"{ckpt} holds an earlier run (last.pt): --resume continues it, --force replaces it, "
                         "or name another --ckpt")


def claim_run_folder(ckpt: Path, keep: bool = True) -> None:
    """Make ``ckpt`` and hold a lock on it (the folder itself: no file is left in it) for this
    process's life (``keep``; else only see that no other run holds it). Two runs in one folder (a
    second started before the first's first checkpoint, a --resume of a run still going) both
    wrote last.pt, best.pt and the export.

    Raises
    ------
    SystemExit
        Another process holds the folder."""
    import fcntl

    ckpt = Path(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    if ckpt.resolve() in _held:  # this process's own run
        return
    fd = os.open(ckpt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"{ckpt}: another training run is using this folder; wait for it to end, "
                         "or name another --ckpt") from None
    except OSError as e:  # a file system without such locks (NFS may refuse one on a folder): run unguarded
        os.close(fd)
        print(f"warning: {ckpt}: cannot lock it ({e.strerror or e}); a second run there would not be stopped",
              file=sys.stderr)
        return
    if keep:
        _held[ckpt.resolve()] = fd
    else:
        os.close(fd)


def save_torch(obj, path: Path, suffix: str = ".pt.part") -> None:
    """``torch.save`` through a temporary file renamed into place: a full disk or a Ctrl-C keeps
    the previous file, and torch's bare write errors become the OS's reason for ``path``."""
    import torch

    from realtime.io.files import atomic_write, write_failure_reason

    path = Path(path)
    try:
        with atomic_write(path, suffix=suffix) as tmp:
            torch.save(obj, str(tmp))
    except RuntimeError as e:  # torch's zip writer: "[enforce fail at inline_container.cc] unexpected pos"
        raise SystemExit(f"{path}: {write_failure_reason(path.parent, e)}") from None


def check_writable(path: Path) -> None:
    """Refuse, before any work, a file that cannot be written: a folder in its place, or a nearest
    existing folder (the trainer makes the rest) that is a file, read-only or not ours. Found at the
    first export, the error named a temporary file, after minutes of training."""
    path = Path(path)
    if path.is_dir():
        raise SystemExit(f"{path}: is a folder; give a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise SystemExit(f"{folder}: is a file, not a folder (needed for {path})")
    if not os.access(folder, os.W_OK | os.X_OK):
        try:
            ro = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except OSError:
            ro = False
        raise SystemExit(f"{path}: cannot write there ({'read-only file system' if ro else 'permission denied'})")
