#!/usr/bin/env bash
# citus.sh start|stop|restart-worker DIR CACHE [N] — a throwaway Citus
# cluster for the tests that need one: a coordinator and two workers,
# each a tests/pg.sh server of its own (DIR/coord, DIR/w1, DIR/w2, unix
# sockets only, port 5432), Citus preloaded, CREATE EXTENSION citus and
# vector on every node, the workers added to the coordinator by their
# socket directories.
#
#   start  finds Citus, in this order:
#            1. EF_TEST_CITUS: the conninfo of a cluster's coordinator
#               that the user names (nothing is started or stopped; its
#               workers must be added already);
#            2. ../shared/tools/pg-with-citus next to the repository:
#               builds Citus and pgvector into a private copy of Debian's
#               PostgreSQL 15 under CACHE once (about 50 s on 2 cores),
#               reused by later runs;
#          then writes the coordinator's conninfo to DIR/conninfo. When
#          there is neither, it writes the reason to DIR/skip and
#          succeeds: the tests that need Citus then skip with it.
#   stop   stops the three servers (nothing for a named cluster).
#   restart-worker N  stops worker N (1 or 2) and starts it again on
#          the same data (the tests of a worker lost mid-upload).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
cache=${3:-}
if [[ -z $dir || -z $cache ]] ||
    [[ $cmd != start && $cmd != stop && $cmd != restart-worker ]]; then
    echo "usage: $0 start|stop|restart-worker DIR CACHE [N]" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)

as_owner() {
    if [[ $(id -u) == 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

if [[ $cmd == stop ]]; then
    if [[ -f $dir/bindir ]]; then
        for node in w2 w1 coord; do
            PATH="$(cat "$dir/bindir"):$PATH" "$here/pg.sh" stop "$dir/$node"
        done
    fi
    exit 0
fi

if [[ $cmd == restart-worker ]]; then
    n=${4:?restart-worker needs the worker number}
    bindir=$(cat "$dir/bindir")
    data=$dir/w$n/pgdata
    [[ -f $dir/w$n/realdir ]] && data=$(cat "$dir/w$n/realdir")/pgdata
    log=$(dirname "$(readlink -f "$data")")/postgres.log
    as_owner "$bindir/pg_ctl" -D "$data" -w -t 60 stop -m fast >/dev/null
    as_owner "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null
    echo "citus.sh: restarted worker $n"
    exit 0
fi

rm -f "$dir/skip" "$dir/bindir" "$dir/conninfo"
skip() {
    echo "$*" >"$dir/skip"
    echo "citus.sh: $*"
    exit 0
}

if [[ -n ${EF_TEST_CITUS:-} ]]; then
    echo "$EF_TEST_CITUS" >"$dir/conninfo"
    echo "citus.sh: using the cluster EF_TEST_CITUS names"
    exit 0
fi
tool=$root/../shared/tools/pg-with-citus
if [[ ! -x $tool ]]; then
    skip "Citus is not available: no ../shared/tools/pg-with-citus next to" \
        "the repository and no EF_TEST_CITUS (the conninfo of a Citus" \
        "coordinator with its workers added; Citus: https://docs.citusdata.com)"
fi
# The servers run as user postgres when we are root: their binaries must
# be reachable by that user, else they are built under /tmp.
if [[ $(id -u) == 0 ]] && ! runuser -u postgres -- test -x "$(dirname "$cache")"; then
    cache=/tmp/ef-citus-$(echo "$cache" | md5sum | cut -c1-12)
fi
started=$(date +%s)
if ! bindir=$("$tool" "$cache" | tail -n 1); then
    echo "citus.sh: $tool failed; its logs: $cache/build.log, $cache/citus-build.log" >&2
    exit 1
fi
echo "citus.sh: PostgreSQL with Citus in $cache ($(($(date +%s) - started)) s)"

conf="shared_preload_libraries = 'citus'
max_connections = 100
max_prepared_transactions = 100"
for node in coord w1 w2; do
    PATH="$bindir:$PATH" EF_PG_CONF="$conf" "$here/pg.sh" start "$dir/$node" >/dev/null
done
echo "$bindir" >"$dir/bindir"
psql() {
    "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$1" -p 5432 -U postgres \
        -d postgres -c "$2" >/dev/null
}
for node in coord w1 w2; do
    psql "$dir/$node/sock" "CREATE EXTENSION citus; CREATE EXTENSION vector"
done
# The nodes reach each other by their socket directories (the real ones:
# pg.sh may have put a node under /tmp).
sock() { readlink -f "$dir/$1/sock"; }
psql "$dir/coord/sock" "SELECT citus_set_coordinator_host ('$(sock coord)', 5432)"
for node in w1 w2; do
    psql "$dir/coord/sock" "SELECT citus_add_node ('$(sock $node)', 5432)"
done
echo "host=$dir/coord/sock port=5432 user=postgres dbname=postgres" >"$dir/conninfo"
echo "citus.sh: Citus ready: coordinator $(cat "$dir/conninfo"), workers $(sock w1), $(sock w2)"
