#!/usr/bin/env bash
# scripts/test.sh [--sanitize|--tsan] — installs what is needed, builds
# with warnings as errors and runs the whole test suite (unit tests, and
# the integration tests against a throwaway PostgreSQL) through ctest.
#
#   --sanitize   a separate build (build-asan/) with AddressSanitizer and
#                UBSan; every test runs under them.
#   --tsan       a separate build (build-tsan/) with ThreadSanitizer; runs
#                the tests labelled tsan (the runtime's own threads).
# EF_BUILD_DIR overrides the build directory, EF_JOBS the build's
# parallelism, EF_TEST_JOBS the tests' (default: the number of cores).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mode=plain
for arg in "$@"; do
    case $arg in
        --sanitize) mode=asan ;;
        --tsan) mode=tsan ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "test.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

bash "$root/scripts/setup.sh"

jobs=${EF_JOBS:-$(nproc)}
# Tests run in parallel on one shared PostgreSQL: each uses its own schema
# and kills only its own sessions.
test_jobs=${EF_TEST_JOBS:-$(nproc)}
cmake_flags=(-DEF_WERROR=ON)
ctest_flags=()
case $mode in
    asan)
        build=${EF_BUILD_DIR:-$root/build-asan}
        cmake_flags+=(-DEF_SANITIZE=ON) ;;
    tsan)
        build=${EF_BUILD_DIR:-$root/build-tsan}
        cmake_flags+=(-DEF_TSAN=ON)
        ctest_flags+=(-L tsan) ;;
    *)
        build=${EF_BUILD_DIR:-$root/build} ;;
esac

run() {
    echo "+ $*"
    "$@"
}
run cmake -S "$root" -B "$build" "${cmake_flags[@]}"
run cmake --build "$build" -j "$jobs"
run ctest --test-dir "$build" --output-on-failure -j "$test_jobs" "${ctest_flags[@]}"
