#!/bin/sh
# run.sh - `make bench`: every benchmark, each next to its reference measured in the same run
#
# Runs bench_engine, then every tools/bench/*.sh (replay, live, service). Stops at the first
# that fails, with a message, and exits non-zero: a failed component never prints figures.
set -eu
BIN=${1:-build/bin}
fail() {
    echo "make bench: FAILED: $1 (exit status $2); the figures above are incomplete" >&2
    exit 1
}
echo "# memsvc benchmarks on $(uname -m), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
UCX=$(ucx_info -v 2>/dev/null | sed -n 's/^# Version //p' | head -1)
echo "# UCX ${UCX:-unknown}; $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
start=$(date +%s)
"$BIN/bench_engine" || fail bench_engine $?
for extra in "$(dirname "$0")"/*.sh; do
    case "$extra" in */run.sh | */lib.sh) continue ;; esac
    echo
    sh "$extra" "$BIN" || fail "$(basename "$extra")" $?
done
echo
echo "# make bench: done in $(($(date +%s) - start)) s"
