# Shared by scripts/device_*.sh (sourced): what a run on the lent GPU machine needs whatever the model.
# That machine has torch, numpy, numba, scipy and onnx, no package mirror, and takes at most 64 MiB
# of files per call.

download_wheels() {  # NAME==VERSION ...: wheels the machine lacks, for its Python 3.12, into .whl/
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$@"
}

device_setup() {  # MODEL IMPORTS: the carried wheels installed unless IMPORTS work, pack/MODEL unpacked
    # into $data (its summary in $out/unpack.json)
    mkdir -p "$out"
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1  # first: a warm machine's earlier install counts
    python3 -c "import $2" 2>/dev/null ||
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    python3 -m "models.$1.pack" --unpack "${PACK:-pack/$1}" --out "$data" > "$out/unpack.json"
    nvidia-smi -L || true
}

check_minutes() {  # MINUTES: a number, said before any set-up (else the trainer refused it after the unpack)
    case "$1" in
        '' | *[!0-9.]* | *.*.* | .) echo "train MINUTES: a number of minutes, not '$1'" >&2; exit 2 ;;
    esac
    python3 -c 'import sys; sys.exit(float(sys.argv[1]) <= 0)' "$1" ||
        { echo "train MINUTES: more than 0 minutes, not '$1'" >&2; exit 2; }
}

minutes_left() {  # MINUTES: what is left of the call's MINUTES for training, counted from the script's
    # start (the wheels' install and the unpack took their share), less half a minute for the last
    # validation, the export and the copy back. The kept weights reach $OUT only at the end: a call
    # cut off at its limit brought back none of them
    python3 -c 'import sys; print(f"{max(float(sys.argv[1]) - int(sys.argv[2]) / 60 - 0.5, 0.2):.2f}")' "$1" "$SECONDS"
}

copy_newest() {  # N FILE...: the N newest of the kept weights (version order, step500 before step1000) into $out
    local n="$1"
    shift
    ls -v "$@" 2>/dev/null | tail -"$n" | xargs -r -I{} cp {} "$out/"
}

fresh_run_dir() {  # DIR ARGS...: DIR emptied unless ARGS hold --resume. A warm machine keeps an earlier
    # call's run there: its best.pt would be exported, its higher-numbered steps copied back as new
    local dir="$1"
    shift
    case " $* " in *" --resume "*) ;; *) rm -rf "$dir" ;; esac
}
