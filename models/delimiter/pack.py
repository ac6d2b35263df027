"""A compact copy of the de-limiter's training music, for a machine the recipe cannot run on.

The device machine (a GPU, lent to some sessions) has none of the Debian packages the recipe reads
its tracks from, reaches no package mirror and takes at most 64 MiB of files per call. ``pack``
writes whole training tracks (``index.json``'s "train"; never the selection or benchmark music) as
Ogg Opus parts of a given size, in a random order, so the first parts are already a varied subset;
each call to the machine carries one part (files stay on it between calls while it is warm);
``unpack`` there decodes every part into 16-bit WAV files and writes an index in the recipe's
layout, so the trainer runs on it unchanged:

    python -m models.delimiter.pack --out pack/delimiter --parts 8 --mib 44     # here
    python -m models.delimiter.pack --unpack pack/delimiter --out data/delimiter-pack   # there
    python -m models.delimiter.train --data data/delimiter-pack --device cuda --keep-all ...

Limiting happens after decoding, in the training loader, so the coding noise is in the input
and the target alike: the network still sees exact limiter pairs. Opus runs at 48 kHz; the loader
resamples each excerpt to its example rate as it does for any track. No selection set travels:
without one the trainer keeps weights every ``--val-every`` steps (``--keep-all``) to be selected
here on the real one.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.delimiter.data import DEFAULT_OUT, load_index
from models.opus import read_opus, write_opus
from models.pack_parts import drop_stale_parts, pack_parts
from realtime.argtypes import OneLineParser, non_negative_int, positive_float, positive_int

OPUS_SR = 48000


def pack(data: Path, out: Path, parts: int = 1, mib: float = 44.0, kbps: float = 96.0, seed: int = 0) -> dict:
    """Write ``parts`` folders ``out/partN`` of about ``mib`` MiB each, whole training tracks as
    stereo Opus at ``kbps``, no track in two parts; returns what each part holds."""
    import soundfile as sf
    import soxr

    from realtime.io.files import atomic_write

    tracks = load_index(data)["train"]
    order = list(np.random.default_rng(seed).permutation(len(tracks)))
    out.mkdir(parents=True, exist_ok=True)
    budget_s = mib * 2 ** 20 / (kbps * 1000 / 8)
    summary = {"kbps": kbps, "parts": []}
    for k in range(parts):
        folder = out / f"part{k + 1}"
        folder.mkdir(exist_ok=True)
        entries, total = [], 0.0
        while order and total < budget_s:
            t = tracks[int(order[0])]
            seconds = t["frames"] / t["sr"]
            if entries and total + seconds > 1.1 * budget_s:
                break  # the next track would overrun this part; it opens the next one
            order.pop(0)
            try:
                x, sr = sf.read(t["path"], dtype="float32", always_2d=True)
            except Exception as e:  # a damaged or vanished file costs one track
                print(f"skip {t['path']}: {e}", file=sys.stderr)
                continue
            x = np.repeat(x, 2, 1) if x.shape[1] == 1 else x[:, :2]
            if sr != OPUS_SR:
                x = soxr.resample(x, sr, OPUS_SR)
            name = f"{len(entries):04d}.opus"
            with atomic_write(folder / name, suffix=".opus.part") as tmp:  # a full disk leaves no half part
                write_opus(tmp, x, OPUS_SR, kbps)
            entries.append({"file": name, "package": t["package"], "source": t["path"], "frames": len(x)})
            total += len(x) / OPUS_SR
        if not entries:
            folder.rmdir()
            break
        (folder / "tracks.json").write_text(json.dumps(entries, indent=0))
        mb = sum((folder / e["file"]).stat().st_size for e in entries) / 2 ** 20
        summary["parts"].append({"tracks": len(entries), "hours": round(total / 3600, 3), "mib": round(mb, 1),
                                 "packages": sorted({e["package"] for e in entries})})
    (out / "pack.json").write_text(json.dumps(summary, indent=1))
    drop_stale_parts(out, parts)
    return summary


def _decode(job: tuple[Path, Path]) -> int:
    """One packed track into a 16-bit WAV file; its length in frames."""
    import soundfile as sf

    from realtime.io.files import atomic_write

    src, dest = job
    x = read_opus(src, OPUS_SR)
    with atomic_write(dest, suffix=".wav.part") as tmp:
        sf.write(tmp, x, OPUS_SR, subtype="PCM_16", format="WAV")
    return len(x)


def unpack(src: Path, out: Path) -> dict:
    """Decode every ``src/part*/`` into ``out/tracks/`` and write ``out/index.json`` (training
    tracks only, no selection set) and ``out/DONE``; returns the hours per package."""
    parts = pack_parts(src)
    if not parts:
        raise SystemExit(f"no pack parts (part1/, part2/, ...) in {src}")
    (out / "tracks").mkdir(parents=True, exist_ok=True)
    jobs, entries = [], []
    for folder in parts:
        listed = folder / "tracks.json"
        if not listed.is_file():
            raise SystemExit(f"{folder}: no tracks.json; copy the part again")
        for e in json.loads(listed.read_text()):
            jobs.append((folder / e["file"], out / "tracks" / f"{folder.name}-{Path(e['file']).stem}.wav"))
            entries.append(e)
    # libsndfile decodes outside the GIL: threads decode side by side (the decode counts against
    # the device's minutes)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as ex:
        frames = list(ex.map(_decode, jobs))
    train, hours = [], {}
    for (_, dest), e, n in zip(jobs, entries, frames):
        if n < 0.98 * e["frames"]:  # an Ogg stream cut at a page boundary decodes without complaint
            raise SystemExit(f"{dest.name}: {n / OPUS_SR:.1f} s decoded, {e['frames'] / OPUS_SR:.1f} s packed: "
                             "truncated; copy the part again")
        train.append({"path": str(dest.resolve()), "package": e["package"], "sr": OPUS_SR, "frames": n, "channels": 2})
        hours[e["package"]] = hours.get(e["package"], 0.0) + n / OPUS_SR / 3600
    total = sum(hours.values())
    (out / "index.json").write_text(json.dumps({"train": train, "val": [], "hours": {"train": total, "val": 0.0}}))
    (out / "DONE").write_text(json.dumps({"hours": {"train": total}, "packed_from": str(src)}))
    return {"tracks": len(train), "hours": round(total, 3), "packages": {k: round(v, 3) for k, v in sorted(hours.items())}}


def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m models.delimiter.pack", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_OUT, help="the recipe's output (pack)")
    ap.add_argument("--unpack", type=Path, default=None, metavar="PACK", help="decode this pack into --out")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--parts", type=positive_int, default=1)
    ap.add_argument("--mib", type=positive_float, default=44.0, help="size of each part")
    ap.add_argument("--kbps", type=positive_float, default=96.0, help="Opus bit rate (stereo)")
    ap.add_argument("--seed", type=non_negative_int, default=0)
    a = ap.parse_args(argv)
    if a.unpack is not None:
        summary = unpack(a.unpack, a.out)
    else:
        if not (a.data / "index.json").is_file():
            raise SystemExit(f"no index.json in {a.data}: run `python -m models.delimiter.data --out {a.data}` first")
        summary = pack(a.data, a.out, a.parts, a.mib, a.kbps, a.seed)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
