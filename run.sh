#!/usr/bin/env bash
# Set up what is missing, then start the program (arguments go to main.py; default: the knob panel).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python main.py "$@"
