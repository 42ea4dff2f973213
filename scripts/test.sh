#!/usr/bin/env bash
# scripts/test.sh [--sanitize] — installs what is needed, builds with
# warnings as errors and runs the whole test suite (unit tests, and the
# integration tests against a throwaway PostgreSQL) through ctest.
#
#   --sanitize   a separate build (build-asan/) with AddressSanitizer
#                and UBSan; every test runs under them.
# EF_BUILD_DIR overrides the build directory, EF_JOBS the build's
# parallelism, EF_TEST_JOBS the tests' (default 1).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
sanitize=0
for arg in "$@"; do
    case $arg in
        --sanitize) sanitize=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "test.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

bash "$root/scripts/setup.sh"

jobs=${EF_JOBS:-$(nproc)}
# Tests run in parallel on one shared PostgreSQL: each uses its own schema
# and kills only its own sessions. EF_TEST_JOBS=N to override.
test_jobs=${EF_TEST_JOBS:-$(nproc)}
cmake_flags=(-DEF_WERROR=ON)
if (( sanitize )); then
    build=${EF_BUILD_DIR:-$root/build-asan}
    cmake_flags+=(-DEF_SANITIZE=ON)
else
    build=${EF_BUILD_DIR:-$root/build}
fi

run() {
    echo "+ $*"
    "$@"
}
run cmake -S "$root" -B "$build" "${cmake_flags[@]}"
run cmake --build "$build" -j "$jobs"
run ctest --test-dir "$build" --output-on-failure -j "$test_jobs"
