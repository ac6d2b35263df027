"""What the trainers share about their run folders: a fresh run never replaces an earlier one
unasked, and a checkpoint is written whole or not at all, with one line when the disk says no."""
from __future__ import annotations

import os
from pathlib import Path


def check_run_folder(ckpt: Path, resume: bool, force: bool = False) -> None:
    """Refuse to start a fresh run over ``ckpt/last.pt`` (an earlier run's, which ``--resume``
    continues and ``--force`` replaces), and a ``--resume`` that finds nothing to resume."""
    last = Path(ckpt) / "last.pt"
    if resume and not last.is_file():
        raise SystemExit(f"--resume: no last.pt in {ckpt} (a fresh run needs no --resume)")
    if not resume and not force and last.is_file():
        raise SystemExit(f"{ckpt} holds an earlier run (last.pt): --resume continues it, --force replaces it, "
                         "or name another --ckpt")


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
