#!/usr/bin/env bash
# Set up what is missing (incl. test and training tools), then run the whole test suite.
# The tests start their own JACK dummy server and Qt offscreen; nothing else is needed.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --dev
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
exec .venv/bin/python -m pytest "$@"
