#!/usr/bin/env bash
# pgvector.sh start|stop DIR CACHE — a throwaway PostgreSQL with the
# pgvector extension, for the tests that need it (tests/pg.sh does the
# rest: same layout, socket in DIR/sock, port 5432, user postgres).
#
#   start  finds a PostgreSQL with pgvector, in this order:
#            1. ../shared/tools/pg-with-pgvector next to the repository
#               (CI, and the machines of the project): builds pgvector
#               into a private copy of Debian's PostgreSQL 15 under CACHE
#               once (about 6 s on 2 cores), reused by later runs;
#            2. a server installation whose extension directory has
#               vector.control (pgvector from apt.postgresql.org);
#          then starts it with pg.sh. When there is none, it writes the
#          reason and how to get pgvector to DIR/skip and succeeds: the
#          tests that need pgvector then skip with that message.
#   stop   stops the server (nothing when start skipped).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
cache=${3:-}
if [[ -z $dir || -z $cache || ( $cmd != start && $cmd != stop ) ]]; then
    echo "usage: $0 start|stop DIR CACHE" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

if [[ $cmd == stop ]]; then
    if [[ -f $dir/bindir ]]; then
        PATH="$(cat "$dir/bindir"):$PATH" "$here/pg.sh" stop "$dir"
    fi
    exit 0
fi

mkdir -p "$dir"
rm -f "$dir/skip" "$dir/bindir"
skip() {
    echo "$*" >"$dir/skip"
    echo "pgvector.sh: $*"
    exit 0
}

# The bin directory of a PostgreSQL whose extension directory has pgvector.
system_bindir() {
    local d share
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
        share=$("$d/pg_config" --sharedir 2>/dev/null ||
            echo "/usr/share/postgresql/$(basename "$(dirname "$d")")")
        if [[ -x $d/postgres && -f $share/extension/vector.control ]]; then
            echo "$d"
            return
        fi
    done
}

bindir=
tool=$root/../shared/tools/pg-with-pgvector
if [[ -x $tool ]]; then
    # The server runs as user postgres when we are root: its binaries
    # must be reachable by that user, else they are built under /tmp.
    if [[ $(id -u) == 0 ]] && ! runuser -u postgres -- test -x "$(dirname "$cache")"; then
        cache=/tmp/ef-pgvector-$(echo "$cache" | md5sum | cut -c1-12)
    fi
    started=$(date +%s)
    if ! bindir=$("$tool" "$cache" | tail -n 1); then
        echo "pgvector.sh: $tool failed; its log: $cache/build.log" >&2
        exit 1
    fi
    echo "pgvector.sh: PostgreSQL with pgvector in $cache ($(($(date +%s) - started)) s)"
else
    bindir=$(system_bindir)
fi
if [[ -z $bindir ]]; then
    skip "pgvector is not available: no ../shared/tools/pg-with-pgvector" \
        "next to the repository and no PostgreSQL with the vector extension" \
        "installed (Debian: apt-get install postgresql-15-pgvector from" \
        "apt.postgresql.org, or build https://github.com/pgvector/pgvector)"
fi
PATH="$bindir:$PATH" "$here/pg.sh" start "$dir"
echo "$bindir" >"$dir/bindir"
