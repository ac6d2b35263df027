#!/usr/bin/env bash
# Train the de-limiter on a lent GPU (the `device` tool's machine: torch, numpy, numba, scipy and
# onnx are there; none of the recipe's Debian packages, no package mirror; at most 64 MiB of files
# per call, the working tree included).
#
#   scripts/device_delimiter.sh prepare [PARTS]            here: wheels to carry (.whl/, ~41 MiB: PyAV
#                                                          and pedalboard run two of the training
#                                                          limiters) and the music pack
#                                                          (pack/delimiter/partN, ~44 MiB, ~64 min each)
#   scripts/device_delimiter.sh train [MINUTES [FLAGS...]] there: unpack what was carried, train from
#                                                          the shipped weights (checkpoint.pt) on CUDA, kept
#                                                          weights and the log to $OUT, all within MINUTES
#                                                          (default 8; the unpack counts: give the call
#                                                          a timeout_s a minute above it)
#
# One call carrying `.whl` (command `true`), then one per part (carry `pack/delimiter/partN`),
# each into the warm machine (it keeps what earlier calls carried only 30 s after each: have the
# calls ready), the last with `scripts/device_delimiter.sh train 8`. The LV2 limiter of training
# (LSP) is not there: the run uses the other six implementations (`limiters.available`; the log
# names them). Select here on the selection set, never on the benchmark's held-out music and
# limiters; first rebuild it if it predates the sub-sample LV2 alignment (the trainer refuses such a
# set): `python -m models.delimiter.data --selection-only --out data/delimiter`, then
# `python main.py train delimiter --score stepN.pt ...` (states x thresholds), export the pick
# (`--export-only --init stepN.pt --out N.onnx`) and only then `python main.py bench delimiter --json
# --model N.onnx` (models/delimiter/MODEL_CARD.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device_lib.sh
mode="${1:-}"

if [ "$mode" = prepare ]; then
    parts="${2:-8}"
    download_wheels soundfile==0.14.0 soxr==1.1.0 cffi==2.1.1 pycparser==3.12 pedalboard==0.9.26 av==18.1.0 \
        pyloudnorm==0.2.0  # the loader's loudness (data.fast_lufs): pure Python, not on that machine
    .venv/bin/python -m models.delimiter.pack --out pack/delimiter --parts "$parts" --mib 44
    du -sh .whl pack/delimiter/part*
elif [ "$mode" = train ]; then
    minutes="${2:-8}"
    check_minutes "$minutes"
    shift $(( $# < 2 ? $# : 2 ))
    out="${OUT:-checkpoints/delimiter-gpu-out}" run="${RUN_DIR:-/tmp/delimiter-gpu}"
    data="${DATA:-data/delimiter-pack}" device="${DEVICE:-cuda}" workers="${WORKERS:-14}"  # overridable for a dry run (PACK, RUN_DIR too)
    device_setup delimiter "soundfile, soxr, pedalboard, av, pyloudnorm"
    # no selection set there: --keep-all keeps the weights every --val-every steps, selected here
    # from the shipped network (model card, "Training on what the processor restores"), with its
    # loss; the loader de-clips as the processor does (--declip, the default). --wave-threshold
    # (model card, "A loss that hears the threshold") helped for a few thousand steps, then drifted:
    # pass it as an extra flag to try it, and pick states and thresholds here with --score
    fresh_run_dir "$run" "$@"
    python3 -m models.delimiter.train --data "$data" --device "$device" --init models/delimiter/checkpoint.pt \
        --ckpt "$run" --out "$run/delimiter.onnx" --gain-loss shape --keep-all \
        --workers "$workers" --threads 2 --batch 64 --lr 5e-4 --val-every 500 --steps 20000 \
        --minutes "$(minutes_left "$minutes")" --seed 100 "$@" 2>&1 | grep -v "TracerWarning\|UserWarning" > "$out/train.log" || true
    tail -3 "$out/train.log"
    copy_newest 6 "$run"/steps/step*.pt
    ls -la "$out"
else
    sed -n "/^set -euo/q;2,\$p" "$0"
    exit 2
fi
