#!/bin/sh
# install_test.sh - `make test`: stage `make install` into a temporary DESTDIR, check what the
# shared library exports, build a program with `pkg-config --cflags --libs memsvc`, run it and
# the installed Python package against the installed memsvcd, then `make uninstall` and check
# nothing is left.
set -eu
B=${1:-build}
TMP=$(mktemp -d /tmp/memsvc-install-XXXXXX)
DPID=
cleanup() {
    [ -z "$DPID" ] || kill "$DPID" 2>/dev/null || true
    [ -z "$DPID" ] || wait "$DPID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
fail() { echo "install test: FAILED: $*" >&2; exit 1; }

D=$TMP/stage
make --no-print-directory -s NODEPS=1 B="$B" DESTDIR="$D" PREFIX=/usr install >/dev/null
for f in bin/memsvcd bin/memsvc-ctl bin/memtrace lib/libmemsvc.a lib/pkgconfig/memsvc.pc \
         include/memsvc/memsvc.h include/memsvc/memsvc_status.h include/memsvc/memsvc_types.h; do
    [ -e "$D/usr/$f" ] || fail "$f not installed"
done
for f in share/man/man8/memsvcd.8 share/man/man1/memsvc-ctl.1 share/man/man1/memtrace.1 \
         lib/systemd/system/memsvcd.service share/doc/memsvc/operations.md \
         share/doc/memsvc/memsvcd.conf.example; do
    [ -e "$D/usr/$f" ] || fail "$f not installed"
done
[ -e "$D/etc/memsvc/memsvcd.conf" ] || fail "/etc/memsvc/memsvcd.conf not installed"
grep -q '^ExecStart=/usr/bin/memsvcd$' "$D/usr/lib/systemd/system/memsvcd.service" || fail "unit ExecStart"
# an administrator's config file survives a second install
echo "# mine" >> "$D/etc/memsvc/memsvcd.conf"
make --no-print-directory -s NODEPS=1 B="$B" DESTDIR="$D" PREFIX=/usr install >/dev/null
grep -q '^# mine$' "$D/etc/memsvc/memsvcd.conf" || fail "install overwrote the config file"
# the installed example is a valid config (every key known) and the unit passes systemd's checks
"$D/usr/bin/memsvcd" --config "$D/etc/memsvc/memsvcd.conf" --listen 127.0.0.1:99999 2>"$TMP/conf.log" &&
    fail "memsvcd accepted port 99999"
grep -q "is not HOST:PORT" "$TMP/conf.log" || fail "config example: $(cat "$TMP/conf.log")"
if command -v systemd-analyze >/dev/null 2>&1; then
    sed "s|^ExecStart=/usr/bin/|ExecStart=$D/usr/bin/|" "$D/usr/lib/systemd/system/memsvcd.service" \
        > "$TMP/memsvcd.service"
    systemd-analyze verify --man=no "$TMP/memsvcd.service" >"$TMP/verify.log" 2>&1 ||
        fail "systemd-analyze verify: $(cat "$TMP/verify.log")"
fi
sed -i '/^# mine$/d' "$D/etc/memsvc/memsvcd.conf"

SO=$(readlink "$D/usr/lib/libmemsvc.so")
[ "$SO" = libmemsvc.so.0 ] || fail "libmemsvc.so -> $SO"
readelf -d "$D/usr/lib/libmemsvc.so.0" | grep -q 'SONAME.*\[libmemsvc.so.0\]' || fail "soname"
# only the public API is exported
BAD=$(nm -D --defined-only "$D/usr/lib/libmemsvc.so.0" | awk '$2 ~ /^[TDBR]$/ && $3 !~ /^memsvc_/')
[ -z "$BAD" ] || fail "exported beyond memsvc_*: $BAD"
nm -D --defined-only "$D/usr/lib/libmemsvc.so.0" | grep -q ' T memsvc_batch_submit@@MEMSVC_0$' || fail "no API"

export PKG_CONFIG_PATH="$D/usr/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$D"
pkg-config --exists memsvc || fail "pkg-config does not find memsvc"
# shellcheck disable=SC2046
${CC:-cc} -Wall -Werror -o "$TMP/hello" tests/install/hello_memsvc.c \
    $(pkg-config --cflags --libs memsvc) || fail "cannot build against the installed library"
export LD_LIBRARY_PATH="$D/usr/lib"
ldd "$TMP/hello" | grep -q "$D/usr/lib/libmemsvc.so.0" || fail "not linked to the installed .so"
"$TMP/hello" >/dev/null || fail "hello (no daemon)"

# a port nobody uses: another is tried when the daemon cannot listen (at most 5)
try=0
while :; do
    PORT=$((30000 + ($$ + try * 7919) % 20000))
    "$D/usr/bin/memsvcd" --listen "127.0.0.1:$PORT" --node tiny 2>"$TMP/memsvcd.log" &
    DPID=$!
    i=0
    until "$D/usr/bin/memsvc-ctl" --address "127.0.0.1:$PORT" --timeout 1000 ping >/dev/null 2>&1; do
        kill -0 "$DPID" 2>/dev/null || break
        i=$((i + 1)); [ $i -lt 100 ] || fail "the installed memsvcd did not answer"; sleep 0.1
    done
    kill -0 "$DPID" 2>/dev/null && break
    wait "$DPID" 2>/dev/null || true
    DPID=
    try=$((try + 1)); [ $try -lt 5 ] || fail "the installed memsvcd did not start: $(cat "$TMP/memsvcd.log")"
done
"$TMP/hello" "127.0.0.1:$PORT" || fail "hello against memsvcd"
# the Python package, with the installed library found next to it
PY=${PYTHON:-/usr/bin/python3}
if [ -x "$PY" ]; then
    env -u MEMSVC_LIB PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$D/usr/lib/python3/dist-packages" "$PY" -c "
import sys, memsvc
with memsvc.Connection('127.0.0.1:$PORT', job=1) as c:
    c.ping()
    c.alloc(4096, key='installed').free()
    c.flush()
lib = memsvc._lib.lib()._name
assert memsvc.__file__.startswith('$D/') and lib.startswith('$D/'), (memsvc.__file__, lib)
" || fail "import memsvc from the staged install"
fi
kill "$DPID"; wait "$DPID" || fail "memsvcd did not exit cleanly"; DPID=

make --no-print-directory -s NODEPS=1 B="$B" DESTDIR="$D" PREFIX=/usr uninstall >/dev/null
LEFT=$(find "$D" -type f -o -type l)
[ -z "$LEFT" ] || fail "left after uninstall: $LEFT"
echo "install test: passed (staged install, pkg-config build, run against memsvcd, uninstall)"
