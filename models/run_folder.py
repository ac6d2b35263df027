"""What the trainers share about their run folders: a fresh run never replaces an earlier one
unasked, and a checkpoint is written whole or not at all, with one line when the disk says no."""
from __future__ import annotations

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
