#!/usr/bin/env bash
# Idempotent set-up on Debian/Ubuntu: system packages (--no-install-recommends), a virtual
# environment at .venv with the project installed editable. Quick when everything is there.
#   scripts/setup.sh          runtime (ONNX Runtime: gpu extra when an NVIDIA GPU is present, else cpu; GUI)
#   scripts/setup.sh --dev    + test and training tools
set -euo pipefail
cd "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/.."  # (through a link too: not the link's folder)
# one set-up at a time per clone: ./run.sh and ./test.sh started together ran two pip installs into one .venv
# (a shared lock's file: this script itself, read-only, so any user of the clone can take it)
exec {setup_lock}<scripts/setup.sh
flock "$setup_lock"

APT_PKGS=(libportaudio2 jackd2 libsndfile1 libmpg123-0
          libegl1 libgl1 libfontconfig1 libxkbcommon0 libdbus-1-3
          xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libxcb-shape0
          libxcb-randr0 libxcb-render-util0 libxcb-image0 libxcb-xinerama0 libxcb-xkb1)
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
APT_PKGS+=(liblilv-0-0 swh-lv2 mda-lv2)  # LV2 hosting (lilv) and the plugins tests/test_lv2.py plays
APT_PKGS+=(lv2-dev)  # the LV2 spec bundles: lilv names plugin classes (Reverb, Compressor…) from them
[ $DEV = 1 ] && APT_PKGS+=(espeak-ng)  # real (synthetic-voice) speech for tests/test_enhancer.py
[ $DEV = 1 ] && APT_PKGS+=(lilv-utils)  # lv2info: tests/test_lv2.py cross-checks the scan with it

# a .venv that runs its own pip on this machine's python3 (major.minor); else it is made again below:
# a first set-up cut short, a venv made before python3-venv was there (no pip), a clone moved (its
# scripts name the old folder; `python -m pip` does not), python3 upgraded (3.11 to 3.13: no packages)
venv_ok() {
    [ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1 &&
        [ "$(.venv/bin/python -c 'import sys; print(sys.version_info[:2])' 2>/dev/null)" = \
          "$(python3 -c 'import sys; print(sys.version_info[:2])')" ]
}
venv_ok || python3 -c 'import ensurepip, venv' 2>/dev/null || APT_PKGS+=(python3-venv)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
        echo "setup: these Debian packages are missing and there is no sudo: ${missing[*]}" >&2
        echo "setup: as root, run: apt-get install --no-install-recommends ${missing[*]}   (then this again)" >&2
        exit 1
    fi
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    # A freshly booted machine often runs apt-daily / unattended upgrades: wait for apt's locks,
    # don't fail. DPkg::Lock::Timeout covers only dpkg's lock, not the lists lock that `update`
    # takes nor the archives lock, and apt's locks are fcntl locks that flock(1) cannot see: so
    # apt-get is retried (every 5 s, 15 min in all) while it fails because one of them is held.
    apt_err="$(mktemp)"; trap 'rm -f "$apt_err"' EXIT
    apt_deadline=$((SECONDS + 900)); apt_waiting=0
    exec {devnull}>/dev/null
    apt_get() {  # apt_get OUTFD ARGS: apt-get ARGS as root, stdout to OUTFD, stderr shown once done
        local out=$1 rc; shift
        # a held lock: "Could not get lock /var/lib/apt/lists/lock. It is held by process …" (found
        # by the lock's path, which translations keep), not "Could not open lock file …" (no retry)
        local held='/(lists|archives|dpkg)/lock(-frontend)?([^[:alnum:]_/-]|$)'
        while :; do
            rc=0
            # env: sudo's env_reset drops an exported DEBIAN_FRONTEND, and jackd2's debconf
            # question would then wait for an answer on a stdout nobody sees
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "$@" 1>&"$out" 2>"$apt_err" || rc=$?
            if [ $rc -ne 0 ] && [ $SECONDS -lt $apt_deadline ] && grep -qE "$held" "$apt_err" \
                    && ! grep -q 'Could not open lock file' "$apt_err"; then
                if [ $apt_waiting = 0 ]; then
                    echo "setup: another package manager holds the apt/dpkg lock; waiting for it (up to 15 min)" >&2
                    grep -m1 -E "$held" "$apt_err" | sed 's/^E: /setup:   /' >&2
                    apt_waiting=1
                fi
                sleep 5
                continue
            fi
            cat "$apt_err" >&2
            return $rc
        done
    }
    apt_get 2 update -qq  # progress on stderr: stdout is the command's (`./run.sh plugins --json > p.json`)
    # confdef/confold: an upgraded dependency's changed config file must not ask either
    apt_get "$devnull" install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
    exec {devnull}>&-
    rm -f "$apt_err"; trap - EXIT
fi

if ! venv_ok; then
    [ -e .venv ] && echo "setup: .venv does not run on this machine's python3 (or has no pip): making it again" >&2
    python3 -m venv --clear .venv
fi

# never both onnxruntime and onnxruntime-gpu: they write the same package folder
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then ORT=gpu; else ORT=cpu; fi
EXTRAS="$ORT,gui"
[ $DEV = 1 ] && EXTRAS="$EXTRAS,dev,train,cluster"
# The stamp names the extras installed for this pyproject.toml: a run needing a subset of them
# (./run.sh after ./test.sh) installs nothing; one needing more installs the union.
stamp=".venv/.setup-$(sha1sum < pyproject.toml | cut -c1-12)"
have=""; [ -f "$stamp" ] && have="$(cat "$stamp")"
need=0
for e in ${EXTRAS//,/ }; do grep -qx "$e" <<<"$have" || need=1; done
# the editable install must be this folder's: a copied or moved clone's .venv still runs, but what
# imports the project from elsewhere (subprocesses, `.venv/bin/rtaudio`) got the old folder's code
installed="$(.venv/bin/python -I -c 'import importlib.util as u, os; s = u.find_spec("main")
print(os.path.realpath(s.origin) if s and s.origin else "")' 2>/dev/null || true)"
if [ "$installed" != "$(pwd -P)/main.py" ]; then
    need=1
    [ -n "$installed" ] && echo "setup: .venv has the project of $(dirname -- "$installed"), not of this folder" >&2
fi
if [ $need = 1 ]; then
    other=onnxruntime-gpu; [ $ORT = gpu ] && other=onnxruntime
    other_extra=gpu; [ $ORT = gpu ] && other_extra=cpu
    want="$(printf '%s\n' ${EXTRAS//,/ } $(grep -vx "$other_extra" <<<"$have" || true) | sort -u | paste -sd, -)"
    echo "setup: installing Python packages (.[$want]) into .venv" >&2
    rm -f .venv/.setup-*  # first: a failure after the uninstall below must not leave a stamp that says done
    .venv/bin/python -m pip uninstall -q -y "$other" >/dev/null 2>&1 || true
    log=.venv/pip-install.log
    if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$want]" >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log" >&2 || true
        echo "setup: pip install failed (log: $log); nothing was marked as set up" >&2
        exit 1
    fi
    .venv/bin/python -c "import numba, sounddevice, onnxruntime, soxr" >/dev/null
    rm -f .venv/.setup-*
    tr , '\n' <<<"$want" > "$stamp"
fi
