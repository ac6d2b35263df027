"""What the enhancer's and the de-limiter's packs share: their part folders (``partN``), in order."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def pack_parts(src: Path) -> list[Path]:
    """The ``partN`` folders in ``src``, by number: part10 after part9 (a name sort put it after
    part1). Unpacked are those carried, whichever they are (a GPU machine gets one per call)."""
    found = [p for p in Path(src).glob("part*") if p.is_dir() and p.name[4:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[4:]))


def drop_stale_parts(out: Path, parts: int) -> None:
    """Remove the ``partN`` folders past ``parts`` that an earlier, larger pack into ``out`` left:
    unpacked with the new ones, their clips came twice or from another data build. Only a folder
    that holds a pack's files alone (``.opus``, ``.json``) is removed; another is refused."""
    for folder in pack_parts(out):
        if int(folder.name[4:]) <= parts:
            continue
        if any(f.suffix not in (".opus", ".json") or f.is_dir() for f in folder.iterdir()):
            raise SystemExit(f"{folder}: left by another pack and holds other files; move it away, or pack elsewhere")
        shutil.rmtree(folder)
        print(f"removed {folder}: an earlier pack's part, past the {parts} written now", file=sys.stderr)
