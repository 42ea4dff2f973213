#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [TARGET...] — builds the fuzz targets with
# clang, libFuzzer, AddressSanitizer and UBSan (build-fuzz/) and runs
# each for SECONDS (default 20), starting from its checked-in corpus
# (tests/fuzz/corpus/NAME). Fails on the first crash, leak, sanitizer
# report or broken promise; the input that did it is saved as
# build-fuzz/artifacts/NAME-crash-* and the command to replay it is
# printed. Inputs found on the way go to build-fuzz/corpus/NAME, never
# into the checked-in corpus. Prints executions per target.
#
#   --seeds   rewrite tests/fuzz/corpus with ef-fuzz-seeds and exit.
# EF_BUILD_DIR overrides the build directory, EF_JOBS the build's
# parallelism, EF_FUZZ_MAX_LEN the largest input tried (default 65536).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=20
seeds=false
targets=()
for arg in "$@"; do
    case $arg in
        --seeds) seeds=true ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        ''|*[!0-9]*) targets+=("$arg") ;;
        *) seconds=$arg ;;
    esac
done

bash "$root/scripts/setup.sh"

build=${EF_BUILD_DIR:-$root/build-fuzz}
jobs=${EF_JOBS:-$(nproc)}
run() {
    echo "+ $*"
    "$@"
}
CC=clang run cmake -S "$root" -B "$build" -DEF_FUZZ=ON -DEF_WERROR=ON
run cmake --build "$build" -j "$jobs" --target fuzz

if $seeds; then
    run "$build/tests/fuzz/ef-fuzz-seeds" "$root/tests/fuzz/corpus" \
        "$root/deploy"
    exit 0
fi
if (( ${#targets[@]} == 0 )); then
    for bin in "$build"/tests/fuzz/ef-fuzz-*; do
        name=${bin##*/ef-fuzz-}
        [[ $name == seeds ]] || targets+=("$name")
    done
fi

# The spool fsyncs every append: on tmpfs that costs nothing.
if [[ -z ${TMPDIR:-} && -d /dev/shm && -w /dev/shm ]]; then
    export TMPDIR=/dev/shm
fi
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0
mkdir -p "$build/artifacts"
summary=()
for name in "${targets[@]}"; do
    bin=$build/tests/fuzz/ef-fuzz-$name
    [[ -x $bin ]] || { echo "fuzz.sh: no target $name" >&2; exit 2; }
    found=$build/corpus/$name
    mkdir -p "$found"
    log=$build/artifacts/$name.log
    echo "+ ef-fuzz-$name for ${seconds}s"
    status=0
    "$bin" -max_total_time="$seconds" -max_len="${EF_FUZZ_MAX_LEN:-65536}" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$name-" \
        "$found" "$root/tests/fuzz/corpus/$name" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if (( status != 0 )); then
        tail -n 60 "$log" >&2
        echo "fuzz.sh: ef-fuzz-$name failed (exit $status); log: $log" >&2
        for a in "$build/artifacts/$name"-*; do
            [[ -f $a ]] && echo "  replay: $bin $a" >&2
        done
        exit 1
    fi
    summary+=("$(printf '%-12s %10s executions in %ss' "$name" "${execs:-?}" "$seconds")")
done
printf 'fuzz.sh: no crash\n'
printf '  %s\n' "${summary[@]}"
