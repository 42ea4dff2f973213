#!/usr/bin/env bash
# pg.sh start|stop DIR — a throwaway PostgreSQL for one test run.
#
#   start  wipes DIR (stopping a server left there by an earlier run),
#          creates a cluster in DIR/pgdata and starts it with its unix
#          socket in DIR/sock, port 5432, superuser postgres, trust auth,
#          no TCP (listen_addresses=''), fsync off; returns once it
#          accepts connections. Tests connect with
#            host=DIR/sock port=5432 user=postgres dbname=postgres
#   stop   fast shutdown; the log stays in DIR/postgres.log.
#
# EF_PG_CONF, when set, is appended to postgresql.conf before the start
# (settings of a special server: tests/citus.sh preloads Citus).
#
# PostgreSQL refuses to run as root: as root the server runs as user
# postgres (runuser). When that user cannot reach DIR (a parent directory
# without o+x), the cluster lives in a private directory under /tmp and
# DIR/sock and DIR/pgdata are symlinks to it.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [[ -z $dir || ( $cmd != start && $cmd != stop ) ]]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)

# The directory holding initdb, pg_ctl and postgres: PATH first, then the
# newest Debian server package.
find_bindir() {
    local d
    local IFS=:
    for d in $PATH; do
        if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then
            echo "$d"
            return
        fi
    done
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
        if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then
            echo "$d"
            return
        fi
    done
    echo "pg.sh: no PostgreSQL server binaries (apt-get install postgresql)" >&2
    exit 1
}
bindir=$(find_bindir)

# Runs a command as the cluster owner, from / so that an unreadable
# working directory does not bother it.
as_owner() {
    if [[ $(id -u) == 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Where the cluster really is (DIR itself, or the /tmp directory a root
# run had to use).
real_dir() {
    if [[ -f $dir/realdir ]]; then
        cat "$dir/realdir"
    else
        echo "$dir"
    fi
}

stop_server() {
    local data
    data=$(real_dir)/pgdata
    if [[ -f $data/postmaster.pid ]]; then
        as_owner "$bindir/pg_ctl" -D "$data" -w -t 60 stop -m fast >/dev/null ||
            as_owner "$bindir/pg_ctl" -D "$data" -w -t 30 stop -m immediate >/dev/null ||
            true
    fi
}

if [[ $cmd == stop ]]; then
    stop_server
    real=$(real_dir)
    if [[ $real != "$dir" ]]; then
        cp "$real/postgres.log" "$dir/postgres.log" 2>/dev/null || true
        rm -rf "$real"
        rm -f "$dir/realdir" "$dir/sock" "$dir/pgdata"
    fi
    echo "pg.sh: stopped the test PostgreSQL in $dir"
    exit 0
fi

# --- start ---------------------------------------------------------------
stop_server
real=$(real_dir)
if [[ $real != "$dir" ]]; then
    rm -rf "$real"
fi
rm -rf "$dir"
mkdir -p "$dir"
real=$dir
if [[ $(id -u) == 0 ]]; then
    chmod 755 "$dir"
    if ! runuser -u postgres -- test -x "$dir"; then
        real=$(mktemp -d /tmp/ef-test-pg.XXXXXX)
        chmod 755 "$real"
        echo "$real" >"$dir/realdir"
    fi
fi
mkdir -p "$real/sock" "$real/pgdata"
: >"$real/postgres.log"
if [[ $(id -u) == 0 ]]; then
    chown postgres: "$real/sock" "$real/pgdata" "$real/postgres.log"
fi
if [[ $real != "$dir" ]]; then
    ln -s "$real/sock" "$dir/sock"
    ln -s "$real/pgdata" "$dir/pgdata"
fi

sock_path="$dir/sock/.s.PGSQL.5432"
if (( ${#sock_path} > 107 )); then
    echo "pg.sh: socket path $sock_path is longer than 107 bytes; use a shorter build directory" >&2
    exit 1
fi

if ! as_owner "$bindir/initdb" -D "$real/pgdata" -U postgres -A trust \
        -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    exit 1
fi

# Settings go into the config file rather than pg_ctl -o, which pg_ctl
# would hand to /bin/sh. A quote in a path is doubled for the config.
quoted_sock=${real}/sock
quoted_sock=${quoted_sock//\'/\'\'}
cat >>"$real/pgdata/postgresql.conf" <<EOF

# Throwaway test cluster (tests/pg.sh): speed over durability.
listen_addresses = ''
port = 5432
unix_socket_directories = '$quoted_sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
max_wal_size = 1GB
EOF
if [[ -n ${EF_PG_CONF:-} ]]; then
    printf '%s\n' "$EF_PG_CONF" >>"$real/pgdata/postgresql.conf"
fi

if ! as_owner "$bindir/pg_ctl" -D "$real/pgdata" -l "$real/postgres.log" \
        -w -t 60 start >/dev/null; then
    echo "pg.sh: PostgreSQL did not start; its log:" >&2
    tail -n 30 "$real/postgres.log" >&2
    exit 1
fi
isready=$bindir/pg_isready
[[ -x $isready ]] || isready=pg_isready
"$isready" -q -h "$dir/sock" -p 5432 -t 30
echo "pg.sh: test PostgreSQL ready: host=$dir/sock port=5432 user=postgres dbname=postgres"
