#!/usr/bin/env bash
# package.sh BUILD_DIR SOURCE_DIR — the Debian packages, built, installed
# on this machine, used and removed again.
#
#   - cpack -G DEB makes embedflow, libembedflow0 and libembedflow-dev of
#     the project's version, with their dependencies declared and
#     /etc/embedflow/embedflow.yaml a conffile of embedflow;
#   - apt-get installs embedflow (pulling in what it depends on); its
#     postinst makes the embedflow user and /var/lib/embedflow;
#   - the installed /usr/bin/embedflow: --version, `check` of the installed
#     config against the test database (EF_TEST_DATABASE: exit 0) and
#     against a database that is not there (exit 1); the unit names it;
#     man finds embedflow(1); the completion script is in place;
#   - an edited config survives a reinstall;
#   - purge removes every file of the package.
# The machine is left as found: the package is purged, and the user and
# state directory are removed again when this run made them. Needs root
# and dpkg: without them it says why and exits 77 (ctest: skipped). Runs
# of it on this machine take turns (flock), and it will not touch an
# embedflow package installed by someone else.
set -euo pipefail

build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
skip() { echo "package: skipped: $*"; exit 77; }
fail() { echo "package: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || skip "installing a package needs root"
for tool in dpkg dpkg-deb dpkg-shlibdeps apt-get cpack flock; do
    command -v $tool >/dev/null || skip "$tool is not installed (scripts/setup.sh)"
done
[ -n "${EF_TEST_DATABASE:-}" ] || fail "EF_TEST_DATABASE is not set"

# One run at a time on this machine: two would install and purge the
# same package under each other.
exec 9>/run/lock/embedflow-package-test.lock
flock -w 600 9 || fail "another package test held the lock for 10 minutes"

state=$(dpkg-query -W -f='${db:Status-Status}' embedflow 2>/dev/null || true)
case $state in
    ""|not-installed) ;;
    *) fail "package embedflow is already on this machine ($state); this test installs and purges it, so it leaves that copy alone: remove it first (dpkg --purge embedflow)" ;;
esac
had_user=0
getent passwd embedflow >/dev/null && had_user=1
had_dir=0
[ -e /var/lib/embedflow ] && had_dir=1

tmp=$(mktemp -d)
installed=0
cleanup() {
    if [ $installed = 1 ]; then
        apt-get purge -y -qq -o DPkg::Lock::Timeout=300 embedflow \
            >"$tmp/purge.log" 2>&1 || { cat "$tmp/purge.log" >&2; }
    fi
    # Only what this run made: the package leaves both behind on purge.
    if [ $had_user = 0 ] && getent passwd embedflow >/dev/null; then
        userdel embedflow || true
        getent group embedflow >/dev/null && groupdel embedflow || true
    fi
    if [ $had_dir = 0 ] && [ -d /var/lib/embedflow ]; then
        rm -rf /var/lib/embedflow
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

version=$(sed -n 's/^project(embedflow VERSION \([0-9.]*\).*/\1/p' \
    "$src/CMakeLists.txt")
[ -n "$version" ] || fail "no project version in CMakeLists.txt"

# --- the packages ------------------------------------------------------------
cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/pkg" \
    >"$tmp/cpack.log" 2>&1 || { cat "$tmp/cpack.log" >&2; fail "cpack -G DEB failed"; }
arch=$(dpkg --print-architecture)
deb=$tmp/pkg/embedflow_${version}-1_$arch.deb
for p in embedflow libembedflow0 libembedflow-dev; do
    f=$tmp/pkg/${p}_${version}-1_$arch.deb
    [ -f "$f" ] || fail "cpack made no $(basename "$f"): $(ls "$tmp/pkg")"
    [ "$(dpkg-deb -f "$f" Package)" = $p ] || fail "$f is not package $p"
    [ "$(dpkg-deb -f "$f" Version)" = "$version-1" ] \
        || fail "$f has version $(dpkg-deb -f "$f" Version)"
    [ -n "$(dpkg-deb -f "$f" Maintainer)" ] || fail "$f has no Maintainer"
done
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libpq5 libgrpc libczmq4 libzmq5 libprotobuf-c1 libc6; do
    [[ $depends == *"$lib"* ]] || fail "embedflow does not depend on $lib: $depends"
done
dpkg-deb -c "$tmp/pkg/libembedflow0_${version}-1_$arch.deb" >"$tmp/lib.list"
grep -q 'libembedflow\.so\.0\.' "$tmp/lib.list" \
    || fail "libembedflow0 holds no libembedflow.so.0"
dpkg-deb -c "$tmp/pkg/libembedflow-dev_${version}-1_$arch.deb" >"$tmp/dev.list"
for f in include/embedflow/actor.h include/embedflow/v1/pipeline.pb-c.h libembedflow.a pkgconfig/embedflow.pc \
         cmake/embedflow/embedflowConfig.cmake; do
    grep -q "$f" "$tmp/dev.list" || fail "libembedflow-dev holds no $f"
done
dpkg-deb -e "$deb" "$tmp/control"
grep -qx /etc/embedflow/embedflow.yaml "$tmp/control/conffiles" \
    || fail "/etc/embedflow/embedflow.yaml is not a conffile"
echo "ok: cpack made embedflow, libembedflow0, libembedflow-dev $version-1; embedflow depends on: $depends"

# --- installed ---------------------------------------------------------------
installed=1
apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
    "$deb" >"$tmp/install.log" 2>&1 \
    || { cat "$tmp/install.log" >&2; fail "apt-get install $deb failed"; }
[ "$(dpkg-query -W -f='${db:Status-Status}' embedflow)" = installed ] \
    || fail "embedflow is not installed after apt-get install"

out=$(/usr/bin/embedflow --version)
[ "$out" = "embedflow $version" ] || fail "embedflow --version: $out"

page=$(man -w embedflow) || fail "man -w embedflow found no page"
[ "$page" = /usr/share/man/man1/embedflow.1.gz ] || fail "man -w embedflow: $page"
[ -f /usr/share/bash-completion/completions/embedflow ] \
    || fail "no /usr/share/bash-completion/completions/embedflow"
unit=/usr/lib/systemd/system/embedflow.service
grep -qx 'ExecStart=/usr/bin/embedflow run --config /etc/embedflow/embedflow.yaml' \
    "$unit" || fail "the unit's ExecStart: $(grep ExecStart "$unit")"
for f in /usr/lib/sysusers.d/embedflow.conf /usr/lib/tmpfiles.d/embedflow.conf; do
    [ -f "$f" ] || fail "$f is not installed"
done

# postinst: the user the unit runs as and its state directory.
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd embedflow) \
    || fail "postinst made no user embedflow"
[ "$home" = /var/lib/embedflow ] || fail "user embedflow's home is $home"
[ "$shell" = /usr/sbin/nologin ] || fail "user embedflow's shell is $shell"
[ "$(stat -c '%u %a' /var/lib/embedflow)" = "$uid 750" ] \
    || fail "/var/lib/embedflow: $(stat -c '%U %a' /var/lib/embedflow)"
echo "ok: installed: $out, $page, the unit, user embedflow ($uid) and /var/lib/embedflow"

# The installed config, reached from the installed binary. The schema is
# this run's own and check creates nothing; the gRPC port is any free one.
schema=ef_package_$$
rc=0
/usr/bin/embedflow check --config /etc/embedflow/embedflow.yaml \
    --database "$EF_TEST_DATABASE" --schema "$schema" \
    --listen 127.0.0.1:0 >"$tmp/check.out" 2>&1 || rc=$?
[ $rc = 0 ] || { cat "$tmp/check.out" >&2; fail "embedflow check exited $rc, not 0"; }
grep -qE '^OK +database: ' "$tmp/check.out" \
    || { cat "$tmp/check.out" >&2; fail "embedflow check printed no OK for the database"; }
grep -q 'all checks passed' "$tmp/check.out" \
    || { cat "$tmp/check.out" >&2; fail "embedflow check did not pass every check"; }
echo "ok: embedflow check exits 0:"
sed 's/^/    /' "$tmp/check.out"
rc=0
/usr/bin/embedflow check --config /etc/embedflow/embedflow.yaml \
    --database "host=$tmp/no-such-dir port=5432 user=postgres" \
    --schema "$schema" --listen 127.0.0.1:0 --timeout 2s \
    >"$tmp/check.out" 2>&1 || rc=$?
[ $rc = 1 ] || { cat "$tmp/check.out" >&2; fail "check of an absent database exited $rc, not 1"; }
grep -qE '^FAIL +database: ' "$tmp/check.out" \
    || { cat "$tmp/check.out" >&2; fail "check of an absent database printed no FAIL for it"; }
echo "ok: embedflow check of an absent database exits 1"

# The config is the operator's: a reinstall keeps an edit.
echo "# edited by package.sh" >>/etc/embedflow/embedflow.yaml
apt-get install -y -qq --reinstall --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "$deb" >"$tmp/install.log" 2>&1 \
    || { cat "$tmp/install.log" >&2; fail "apt-get install --reinstall failed"; }
grep -qx "# edited by package.sh" /etc/embedflow/embedflow.yaml \
    || fail "a reinstall replaced the edited /etc/embedflow/embedflow.yaml"
echo "ok: a reinstall keeps an edited /etc/embedflow/embedflow.yaml"

# --- removed -----------------------------------------------------------------
dpkg-query -L embedflow | sort >"$tmp/files"
apt-get purge -y -qq -o DPkg::Lock::Timeout=300 embedflow >"$tmp/purge.log" 2>&1 \
    || { cat "$tmp/purge.log" >&2; fail "apt-get purge embedflow failed"; }
installed=0
state=$(dpkg-query -W -f='${db:Status-Status}' embedflow 2>/dev/null || true)
[ -z "$state" ] || [ "$state" = not-installed ] || fail "after purge: $state"
left=$(while read -r f; do [ -f "$f" ] && echo "$f"; done <"$tmp/files" || true)
[ -z "$left" ] || fail "purge left files of the package: $left"
echo "ok: purged, no file of the package left"
