#!/usr/bin/env bash
# Train the enhancer on a lent GPU (the `device` tool's machine: torch, numpy, numba, scipy and
# onnx are there; no package mirror; at most 64 MiB of files per call, the working tree included).
#
#   scripts/device_enhancer.sh prepare [PARTS]   here: wheels to carry (.whl/) and the Opus pack
#                                                (pack/enhancer/partN, ~44 MiB each; data/enhancer first)
#   scripts/device_enhancer.sh train [MINUTES [FLAGS...]]  there: unpack what was carried, fine-tune
#                                                the committed weights on CUDA (FLAGS go to the trainer
#                                                last, so they override: --hidden 256 --lr 5e-4), to $OUT,
#                                                all within MINUTES (default 8; the unpack counts: give
#                                                the call a timeout_s a minute above it)
#
# One call per part: `run` with carry [".whl", "pack/enhancer/part1"] and command `true`, then
# part2, ... (a warm machine keeps what earlier calls carried for 30 s after each), and the last
# with command `scripts/device_enhancer.sh train 8`. $OUT brings back step*.pt; select here on the
# real select/ set: `python -m models.enhancer.train --export-only --init stepN.pt --export N.onnx`,
# then `python main.py bench enhancer --json --val data/enhancer/select --skip 0 --no-rnnoise
# --no-dfn --clean-clips 0 --model N.onnx` (stage 14 scored 4.152 there), and
# `python -m models.enhancer.start_probe --model N.onnx`: a stream cut mid-word (stage 17, shipped:
# -1.9 dB over its first 300 ms) and the sustained vowel's regime (stage 17, seconds 3-8, comb 0 / 0.5 / 1:
# 23.00 / 24.10 / 24.43 dB; a candidate 1.5 dB below stage 15's failed test_pitch_filter's comb check).
# The committed checkpoint has a trained start state: --init from it trains it on (--learn-start).
# The mean of several brought-back weights is a candidate too: `--export-only --average stepA.pt
# stepB.pt ... --export soup.onnx` (checkpoints of one run from one start average well).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device_lib.sh
mode="${1:-}"

if [ "$mode" = prepare ]; then
    parts="${2:-4}"
    download_wheels soundfile==0.14.0 soxr==1.1.0 cffi==2.1.1 pycparser==3.12  # soundfile brings libsndfile with Opus
    .venv/bin/python -m models.enhancer.pack --out pack/enhancer --parts "$parts" --mib 44
    du -sh .whl pack/enhancer/part*
elif [ "$mode" = train ]; then
    minutes="${2:-8}"
    check_minutes "$minutes"
    shift $(( $# < 2 ? $# : 2 ))
    out="${OUT:-checkpoints/enhancer-gpu-out}" run="${RUN_DIR:-/tmp/enhancer-gpu}"
    data="${DATA:-data/enhancer-pack}" device="${DEVICE:-cuda}" workers="${WORKERS:-14}"  # overridable for a dry run (PACK, RUN_DIR too)
    device_setup enhancer "soundfile, soxr"
    # 14 workers only mix (the pitch features are the trainer's, on the GPU: --features-on auto);
    # validation on the trainer's synthetic set only (select/ stays here). A quarter of the segments
    # start mid-word (--p-midword: a file cut mid-word lost its first 200 ms; model card, stage 16)
    fresh_run_dir "$run" "$@"
    python3 -m models.enhancer.train --data "$data" --device "$device" --init models/enhancer/checkpoint.pt \
        --ckpt "$run" --export "$out/enhancer.onnx" --workers "$workers" --threads 2 --batch 64 \
        --snr-max 20 --p-clean 0.1 --p-midword 0.25 --lr 3e-4 --seconds 1.5 --select-by sisdr --val-every 250 \
        --keep-every 500 --steps 20000 --max-minutes "$(minutes_left "$minutes")" --seed 100 "$@" || true
    cp "$run/train.log" "$out/" 2>/dev/null || true
    copy_newest 5 "$run"/step*.pt
    ls -la "$out"
else
    sed -n "/^set -euo/q;2,\$p" "$0"
    exit 2
fi
