#!/usr/bin/env bash
# The demo in one command on a fresh Debian 12 machine: installs what is
# needed, builds, then runs `embedflow demo` (a private PostgreSQL under
# ./embedflow-data unless DATABASE_URL / PG* / --database say otherwise).
# Extra arguments go to `embedflow demo`, e.g. --rows 20000 --writers 4.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup.sh"
cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$here/build" -j"$(nproc)" --target embedflow
exec "$here/build/embedflow" demo "$@"
