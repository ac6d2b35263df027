#!/usr/bin/env bash
# Set up what is missing (incl. test and training tools), then run the whole test suite.
# The tests start their own JACK dummy server and Qt offscreen; nothing else is needed.
# It runs in the repository (pytest finds pyproject.toml's testpaths and markers there, and the
# tests are the repository's): paths in the arguments are relative to it, e.g. tests/test_lv2.py.
set -euo pipefail
cd "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")"
scripts/setup.sh --dev
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
exec .venv/bin/python -m pytest "$@"
