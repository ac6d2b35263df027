#!/usr/bin/env bash
# Set up what is missing, then start the program (arguments go to main.py; default: the knob panel).
# It stays in the caller's folder: relative paths in the arguments (and demo_out.wav) are the caller's.
set -euo pipefail
here="$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")"
"$here/scripts/setup.sh"
exec "$here/.venv/bin/python" "$here/main.py" "$@"
