#!/usr/bin/env bash
# Idempotent set-up on Debian/Ubuntu: system packages (--no-install-recommends), a virtual
# environment at .venv with the project installed editable. Quick when everything is there.
#   scripts/setup.sh          runtime (ONNX Runtime: gpu extra when an NVIDIA GPU is present, else cpu; GUI)
#   scripts/setup.sh --dev    + test and training tools
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(libportaudio2 jackd2 libsndfile1
          libegl1 libgl1 libfontconfig1 libxkbcommon0 libdbus-1-3
          xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libxcb-shape0
          libxcb-randr0 libxcb-render-util0 libxcb-image0 libxcb-xinerama0 libxcb-xkb1)
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
[ $DEV = 1 ] && APT_PKGS+=(espeak-ng)  # real (synthetic-voice) speech for tests/test_enhancer.py

python3 -c 'import ensurepip, venv' 2>/dev/null || APT_PKGS+=(python3-venv)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv

# never both onnxruntime and onnxruntime-gpu: they write the same package folder
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then ORT=gpu; else ORT=cpu; fi
EXTRAS="$ORT,gui"
[ $DEV = 1 ] && EXTRAS="$EXTRAS,dev,train"
stamp=".venv/.setup-$(cat pyproject.toml | sha1sum | cut -c1-12)-${EXTRAS//,/_}"
if [ ! -f "$stamp" ]; then
    echo "setup: installing Python packages (.[$EXTRAS]) into .venv"
    other=onnxruntime-gpu; [ $ORT = gpu ] && other=onnxruntime
    .venv/bin/pip uninstall -q -y "$other" >/dev/null 2>&1 || true
    .venv/bin/pip install -q --disable-pip-version-check -e ".[$EXTRAS]" 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import numba, sounddevice, onnxruntime, soxr" >/dev/null
    rm -f .venv/.setup-*
    touch "$stamp"
fi
