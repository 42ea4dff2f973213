#!/usr/bin/env bash
# install_example.sh BUILD_DIR SOURCE_DIR [SANITIZE_FLAGS]
#
# Installs the build into a throwaway prefix (cmake --install --prefix)
# and uses that copy the way a project outside the tree would:
#   - the prefix holds the libraries, the public headers and nothing
#     else of the tree's, embedflow.pc, the CMake package and the binary;
#   - every public header compiles on its own (-std=c11 -Werror);
#   - libembedflow.so exports exactly the ef_ functions the headers
#     declare (nm -D);
#   - examples/embed builds with find_package(embedflow) against the
#     shared and the static library, and with pkg-config (shared, and
#     static from Libs.private/Requires.private); each build runs its
#     pipeline and must report the right sum of squares and exit 0;
#   - a bad key on its command line exits 2 naming the key;
#   - what a host running the binary needs is there: the systemd unit
#     (ExecStart naming PREFIX/bin/embedflow and PREFIX/etc's config,
#     accepted by systemd-analyze), its sysusers.d and tmpfiles.d
#     snippets, the config (data_dir absolute, under /var/lib/embedflow;
#     an edited one survives a second install), the bash completion
#     script (the binary's own, loadable) and embedflow(1) (found by man,
#     no groff warnings, the binary's version and exactly its commands).
# SANITIZE_FLAGS (the build's -fsanitize=...) are passed to the example
# builds so that they link against a sanitized library.
set -euo pipefail

build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
san=${3:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail() { echo "install_example: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" \
    || { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }

# --- what is installed -----------------------------------------------------
libdir=$(find "$prefix" -name libembedflow.so -printf '%h\n' | head -1)
[ -n "$libdir" ] || fail "no libembedflow.so under $prefix"
for f in libembedflow.a libembedflow.so.0 pkgconfig/embedflow.pc \
         cmake/embedflow/embedflowConfig.cmake \
         cmake/embedflow/embedflowConfigVersion.cmake \
         cmake/embedflow/embedflowTargets.cmake; do
    [ -e "$libdir/$f" ] || fail "$libdir/$f is not installed"
done
[ -x "$prefix/bin/embedflow" ] || fail "bin/embedflow is not installed"
soname=$(objdump -p "$libdir/libembedflow.so" | awk '/SONAME/ {print $2}')
[ "$soname" = libembedflow.so.0 ] || fail "SONAME is '$soname'"

want=$(cd "$src/include/embedflow" && ls ./*.h | sort)
have=$(cd "$prefix/include/embedflow" && ls ./*.h | sort)
[ "$want" = "$have" ] \
    || fail "installed headers differ from include/embedflow: $have"
extra=$(find "$prefix/include" -type f ! -path "*/include/embedflow/*.h")
[ -z "$extra" ] || fail "headers of the tree's other parts installed: $extra"

export PKG_CONFIG_PATH=$libdir/pkgconfig
cflags=$(pkg-config --cflags embedflow) || fail "pkg-config --cflags failed"
for h in "$prefix"/include/embedflow/*.h; do
    printf '#include <embedflow/%s>\n' "${h##*/}" \
        | cc -std=c11 -Wall -Wextra -Werror -fsyntax-only $cflags -x c - \
        || fail "embedflow/${h##*/} does not compile on its own"
done

# --- what the shared library exports ----------------------------------------
nm -D --defined-only "$libdir/libembedflow.so" | awk '{print $3}' | sort -u \
    >"$tmp/exported"
grep -v '^ef_' "$tmp/exported" | grep -v '^_' >"$tmp/foreign" || true
[ ! -s "$tmp/foreign" ] || fail "exports symbols without ef_: $(cat "$tmp/foreign")"
grep -hoE '^[A-Za-z][^#(]*\bef_[a-z0-9_]+ \(' "$prefix"/include/embedflow/*.h \
    | grep -v typedef | grep -oE 'ef_[a-z0-9_]+ \($' | tr -d ' (' | sort -u \
    >"$tmp/declared"
[ -s "$tmp/declared" ] || fail "found no declarations in the headers"
diff -u "$tmp/declared" "$tmp/exported" | grep -v '^_' >"$tmp/diff" \
    || true
grep -q '^[-+]ef_' "$tmp/diff" \
    && fail "exports differ from the headers' declarations:
$(grep '^[-+]ef_' "$tmp/diff")"

# --- the example, built against the installed copy --------------------------
# Runs one build of the example and checks what its pipeline did.
run_embed() {
    local bin=$1 label=$2 out
    out=$("$bin" "$src/examples/embed/embed.yaml" count=3000 2>"$tmp/stderr") \
        || { cat "$tmp/stderr" >&2; fail "$bin exited $?"; }
    case $out in
        *"3000 numbers through 3 squares, sum of squares 9004500500 (expected 9004500500)"*) ;;
        *) cat "$tmp/stderr" >&2; fail "$bin printed: $out" ;;
    esac
    echo "ok: $label: $out"
}

for kind in shared static; do
    static=OFF
    [ $kind = static ] && static=ON
    cmake -S "$src/examples/embed" -B "$tmp/cmake-$kind" \
        -DCMAKE_PREFIX_PATH="$prefix" -DEMBED_STATIC=$static \
        -DCMAKE_C_FLAGS="-Werror $san" -DCMAKE_EXE_LINKER_FLAGS="$san" \
        >"$tmp/cmake-$kind.log" 2>&1 \
        || { cat "$tmp/cmake-$kind.log" >&2; fail "find_package(embedflow) failed ($kind)"; }
    cmake --build "$tmp/cmake-$kind" >>"$tmp/cmake-$kind.log" 2>&1 \
        || { cat "$tmp/cmake-$kind.log" >&2; fail "the example does not build ($kind)"; }
    run_embed "$tmp/cmake-$kind/embed" "find_package, $kind"
done
if [ -z "$san" ]; then
    # The static build needs none of the shared library.
    ! ldd "$tmp/cmake-static/embed" | grep -q libembedflow \
        || fail "the static build links libembedflow.so"
fi

# pkg-config, as examples/embed/README.md shows it.
cc -std=c11 -Wall -Wextra -Werror $san $cflags "$src/examples/embed/embed.c" \
    -o "$tmp/embed-pc" $(pkg-config --libs embedflow) \
    -Wl,-rpath,"$(pkg-config --variable=libdir embedflow)" \
    || fail "the example does not build with pkg-config"
run_embed "$tmp/embed-pc" "pkg-config, shared"
# libembedflow.a with what embedflow.pc says it needs (Requires,
# Requires.private, Libs.private), each dependency linked shared: Debian's
# own .pc files do not link fully static (libzmq's names libprotokit.a).
pkg-config --static --exists embedflow \
    || fail "pkg-config --static: a module of Requires.private is missing"
deps=$(pkg-config --print-requires embedflow; pkg-config --print-requires-private embedflow)
deps=$(echo "$deps" | awk '{print $1}')
private=$(sed -n 's/^Libs.private: *//p' "$libdir/pkgconfig/embedflow.pc")
cc -std=c11 -Wall -Wextra -Werror $san $cflags "$src/examples/embed/embed.c" \
    -o "$tmp/embed-pcs" "$libdir/libembedflow.a" $(pkg-config --libs $deps) \
    $private || fail "libembedflow.a does not link with what embedflow.pc names"
run_embed "$tmp/embed-pcs" "pkg-config, static"

# Bad input: a value that is no number, named with its key.
rc=0
"$tmp/embed-pc" count=many >"$tmp/out" 2>&1 || rc=$?
[ $rc -eq 2 ] || fail "count=many exited $rc, not 2"
grep -q count "$tmp/out" || fail "count=many: the error does not name the key: $(cat "$tmp/out")"
echo "ok: count=many exits 2: $(cat "$tmp/out")"

# --- what a host running the binary needs ------------------------------------
unit=$prefix/lib/systemd/system/embedflow.service
[ -f "$unit" ] || fail "lib/systemd/system/embedflow.service is not installed"
grep -qx "ExecStart=$prefix/bin/embedflow run --config $prefix/etc/embedflow/embedflow.yaml" \
    "$unit" || fail "the unit's ExecStart: $(grep ExecStart "$unit")"
! grep -n '@' "$unit" || fail "the unit has unreplaced @VARIABLES@"
if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify "$unit" 2>&1) \
        || fail "systemd-analyze verify: $out"
fi
for d in sysusers.d tmpfiles.d; do
    grep -q '^[ud] .*embedflow' "$prefix/lib/$d/embedflow.conf" \
        || fail "lib/$d/embedflow.conf is not installed"
done
config=$prefix/etc/embedflow/embedflow.yaml
[ -f "$config" ] || fail "etc/embedflow/embedflow.yaml is not installed"
data_dir=$("$prefix/bin/embedflow" config --config "$config" \
    | sed -n 's/^data_dir: *//p' | tr -d '"')
case $data_dir in
    /var/lib/embedflow/*) echo "ok: config: data_dir $data_dir" ;;
    *) fail "the installed config's data_dir is '$data_dir', not under /var/lib/embedflow" ;;
esac
echo "# edited" >>"$config"
cmake --install "$build" --prefix "$prefix" >"$tmp/install2.log" \
    || { cat "$tmp/install2.log" >&2; fail "a second cmake --install failed"; }
grep -qx "# edited" "$config" || fail "a second install replaced an edited config"
grep -q "Keeping: $config" "$tmp/install2.log" \
    || fail "a second install did not say it kept the config"

completion=$prefix/share/bash-completion/completions/embedflow
[ -f "$completion" ] || fail "the bash completion script is not installed"
"$prefix/bin/embedflow" completion bash | cmp -s - "$completion" \
    || fail "the installed completion differs from embedflow completion bash"
bash -c "source '$completion' && complete -p embedflow" >/dev/null \
    || fail "the completion script does not register a completion"

page=$(MANPATH=$prefix/share/man man -w embedflow 2>&1) \
    || fail "man -w embedflow (MANPATH=$prefix/share/man): $page"
[ "$page" = "$prefix/share/man/man1/embedflow.1.gz" ] || fail "man -w: $page"
zcat "$page" >"$tmp/embedflow.1"
warnings=$(groff -man -ww -z -Tutf8 "$tmp/embedflow.1" 2>&1)
[ -z "$warnings" ] || fail "groff warns about embedflow.1: $warnings"
version=$("$prefix/bin/embedflow" --version)
grep -q "^\.TH EMBEDFLOW 1 .*\"$version\"" "$tmp/embedflow.1" \
    || fail "embedflow.1 is not of '$version': $(grep '^\.TH' "$tmp/embedflow.1")"
# The commands of `embedflow help` and the entries under COMMANDS.
"$prefix/bin/embedflow" help | awk '/^commands:/ {on=1; next} /^$/ {on=0}
    on && /^  [a-z]/ {print $1}' | sort >"$tmp/commands"
awk '/^\.SH/ {on = ($2 == "COMMANDS"); next}
    on && prev == ".TP" && /^\.B / {print $2} {prev=$0}' "$tmp/embedflow.1" \
    | sort >"$tmp/documented"
[ -s "$tmp/commands" ] || fail "found no commands in embedflow help"
diff -u "$tmp/commands" "$tmp/documented" >"$tmp/diff" \
    || fail "embedflow.1's COMMANDS differ from embedflow help (- help, + page):
$(cat "$tmp/diff")"
echo "ok: unit, snippets, config, completion and embedflow.1 ($(wc -l <"$tmp/commands") commands) installed"
