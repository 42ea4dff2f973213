#!/usr/bin/env bash
# scripts/setup.sh — installs every Debian package embedflow needs to
# build, test and run. Idempotent: when everything is present it changes
# nothing and needs no network; otherwise it runs `apt-get update` once and
# installs what is missing. Non-interactive.
#
# Installing `postgresql` may create and start Debian's own cluster
# (15/main, port 5432). embedflow never uses it and it is left alone: the
# tests and the demo run private servers with unix sockets of their own.
set -euo pipefail

packages=(
    # build
    build-essential cmake pkg-config clang-format
    libgrpc-dev protobuf-compiler protobuf-compiler-grpc
    libprotobuf-c-dev protobuf-c-compiler
    libczmq-dev libzmq3-dev libfyaml-dev libxxhash-dev uuid-dev libpq-dev
    libmicrohttpd-dev
    # --log-format json: runtime/log.c encodes the lines with jansson
    libjansson-dev
    # Type=notify units: READY, STOPPING and the watchdog (runtime/notify.c)
    libsystemd-dev
    # cpack -G DEB: dpkg-shlibdeps declares the packages' library
    # dependencies; man-db: the man page's tests (man -w, groff)
    dpkg-dev man-db
    # run: the private PostgreSQL of `embedflow run` / `demo`
    postgresql
    # run: time zones of cron jobs (/usr/share/zoneinfo, read by jobs/tz.c)
    tzdata
    # tests and the Python example
    python3 python3-grpcio python3-protobuf python3-pytest python3-psycopg2
    # the Python client package (examples/python): pip builds and installs
    # it offline into a venv that sees the system's grpcio and protobuf;
    # numpy for its fast path (optional to the package, tested here)
    python3-venv python3-setuptools python3-wheel python3-numpy
    # tests: `embedflow config` output parsed back as YAML
    python3-yaml
    # tests: a foreign ZeroMQ peer (plain and CURVE) on the tcp links
    python3-zmq
    # build: PostgreSQL's hash_bytes (libpgcommon_shlib.a), which Citus
    # places rows by (postgres/citus_route.c); tests: pgvector built
    # against PostgreSQL 15 for the tests of the vector/halfvec types and
    # ANN indexes (tests/pgvector.sh)
    postgresql-server-dev-15
    # tests: Citus (../shared/tools/pg-with-citus) for the tests of
    # distribution citus on a real cluster (tests/citus.sh); Citus'
    # configure needs these libraries' headers
    liblz4-dev libzstd-dev libkrb5-dev libssl-dev libcurl4-openssl-dev
    # `embedflow graph --png` and `bench --plot` (their tests use them)
    graphviz gnuplot-nox
    # scripts/fuzz.sh: clang with libFuzzer and the sanitizer runtimes
    clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done
if (( ${#missing[@]} == 0 )); then
    echo "setup.sh: all ${#packages[@]} packages are installed"
    exit 0
fi

sudo=()
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || {
        echo "setup.sh: run as root (or install sudo) to install: ${missing[*]}" >&2
        exit 1
    }
    sudo=(sudo)
fi
echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
