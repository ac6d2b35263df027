"""A compact copy of the enhancer's training pools, for a machine the recipe cannot run on.

The device machine (a GPU, lent to some sessions) reaches no package mirror and takes at most
64 MiB of files per call, while ``data/enhancer/`` holds 4+ GB of int16 pools. ``pack`` writes a
random subset of the speech and noise clips as Ogg Opus parts of a given size; each call to the
machine carries one part (files stay on it between calls while it is warm); ``unpack`` there
decodes every part into the recipe's own layout, so the trainer runs on it unchanged:

    python -m models.enhancer.pack --out pack/enhancer --parts 4 --mib 48      # here
    python -m models.enhancer.pack --unpack pack/enhancer --out data/enhancer  # there
    python -m models.enhancer.train --data data/enhancer --device cuda ...

Opus at 64 kbit/s (the default) is close to transparent on speech; the clips are a subset, so a
pack trades variety for size: say which in the model card when weights were trained on one.
The held-out ``select/`` and ``bench/`` sets are not packed: checkpoints are brought back and
selected here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.enhancer.data import SR, Pool
from models.opus import read_opus, write_opus
from models.pack_parts import drop_stale_parts, pack_parts
from realtime.argtypes import OneLineParser

POOLS = ("train_speech", "train_noise")
SPEECH_SHARE = 0.8  # of each part's bytes: the voices are what the network must learn to keep


def _index(stem: Path) -> dict:
    try:
        return json.loads(stem.with_suffix(".json").read_text())
    except ValueError:  # a copy cut short
        raise SystemExit(f"{stem.with_suffix('.json')}: not a readable index; copy it again") from None


def pack(data: Path, out: Path, parts: int = 1, mib: float = 48.0, kbps: float = 64.0, seed: int = 0) -> dict:
    """Write ``parts`` folders ``out/partN`` of about ``mib`` MiB each: a random subset of the
    clips of each pool (no clip twice), Opus-coded, with their groups."""
    from realtime.io.files import atomic_write, atomic_write_text

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    bytes_per_s = kbps * 1000 / 8
    summary = {"kbps": kbps, "parts": []}
    pools, indices, order = {}, {}, {}
    for name in POOLS:
        if not data.joinpath(name + ".npy").is_file():
            raise SystemExit(f"no {name} pool in {data}: run `python -m models.enhancer.data --out {data}` first")
        pools[name], indices[name] = Pool.load(data / name), _index(data / name)
        order[name] = list(rng.permutation(len(pools[name])))
    for k in range(parts):
        folder = out / f"part{k + 1}"
        folder.mkdir(exist_ok=True)
        part = {}
        for name in POOLS:
            pool, idx = pools[name], indices[name]
            share = SPEECH_SHARE if name == "train_speech" else 1.0 - SPEECH_SHARE
            budget = share * mib * 2 ** 20 / bytes_per_s * SR  # samples
            chosen, total = [], 0
            while order[name] and total < budget:
                i = int(order[name].pop())
                chosen.append(i)
                total += len(pool.clips[i])
            if not chosen:
                continue
            audio = np.concatenate([pool.clip(i) for i in chosen])
            offsets = np.concatenate([[0], np.cumsum([len(pool.clips[i]) for i in chosen])]).astype(np.int64)
            with atomic_write(folder / f"{name}.opus", suffix=".opus.part") as tmp:  # a full disk leaves no half part
                write_opus(tmp, audio, SR, kbps)
            atomic_write_text(folder / f"{name}.json", json.dumps({
                "offsets": offsets.tolist(), "group": [int(pool.group[i]) for i in chosen],
                "groups": idx.get("groups", []), "files": [idx["files"][i] for i in chosen] if "files" in idx else [],
                "kbps": kbps}))  # a full disk leaves no half index
            part[name] = {"clips": len(chosen), "hours": round(total / SR / 3600, 3),
                          "mib": round((folder / f"{name}.opus").stat().st_size / 2 ** 20, 2)}
        summary["parts"].append(part)
    atomic_write_text(out / "pack.json", json.dumps(summary, indent=1))
    drop_stale_parts(out, parts)
    return summary


def unpack(src: Path, out: Path) -> dict:
    """Decode every ``src/part*/`` there is into ``out/train_speech.npy`` etc. (the recipe's
    layout: int16 clips, offsets and groups), parts in order; ``out/manifest.json`` last, as the
    recipe marks a finished build."""
    from models.enhancer.data import MANIFEST, save_pool, write_manifest

    parts = pack_parts(src)
    if not parts:
        raise SystemExit(f"no pack parts (part1/, part2/, ...) in {src}")
    files = [f / f"{name}.opus" for name in POOLS for f in parts if (f / f"{name}.opus").is_file()]
    for f in files:  # before minutes of decoding
        if not f.with_suffix(".json").is_file():
            raise SystemExit(f"{f.with_suffix('.json')}: no such file (the index of {f.name}); copy the part again")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # written again last: the trainer takes no half-unpacked folder
    # libsndfile decodes outside the GIL: threads decode the parts side by side (a GPU machine has
    # 16 cores, and the decode counts against its minutes)
    with ThreadPoolExecutor(max_workers=min(len(files), os.cpu_count() or 1) or 1) as ex:
        decoded = dict(zip(files, ex.map(lambda f: read_opus(f, SR), files)))
    summary = {}
    for name in POOLS:
        items = []
        for folder in parts:
            path = folder / f"{name}.opus"
            if path not in decoded:
                continue
            idx = _index(folder / name)
            audio = decoded[path]
            o, groups = idx["offsets"], idx.get("groups", [])
            if len(audio) < o[-1]:  # an Ogg stream cut at a page boundary decodes without complaint
                raise SystemExit(f"{path}: holds {len(audio) / SR:.1f} s, its index "
                                 f"{o[-1] / SR:.1f} s: truncated; copy the part again")
            for j in range(len(o) - 1):
                g = idx["group"][j]
                label = groups[g] if g < len(groups) else str(g)
                items.append((audio[o[j]: o[j + 1]], label, idx["files"][j] if idx.get("files") else "", SR))
        if items:
            summary[name] = save_pool(items, out / name)
    write_manifest(out, {"unpacked_from": str(src), "parts": [p.name for p in parts], **summary})
    return summary


def main(argv=None) -> int:
    from realtime.argtypes import non_negative_int, positive_float, positive_int

    ap = OneLineParser(prog="python -m models.enhancer.pack", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "data" / "enhancer",
                    help="the recipe's output (pack)")
    ap.add_argument("--unpack", type=Path, default=None, metavar="PACK", help="decode this pack into --out")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--parts", type=positive_int, default=1)
    ap.add_argument("--mib", type=positive_float, default=48.0, help="size of each part")
    ap.add_argument("--kbps", type=positive_float, default=64.0, help="Opus bit rate")
    ap.add_argument("--seed", type=non_negative_int, default=0)
    a = ap.parse_args(argv)
    if a.out.exists() and not a.out.is_dir():
        raise SystemExit(f"--out {a.out}: is a file, not a folder")
    if a.unpack is not None:
        summary = unpack(a.unpack, a.out)
    else:
        summary = pack(a.data, a.out, a.parts, a.mib, a.kbps, a.seed)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
