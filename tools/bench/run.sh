#!/bin/sh
# run.sh - `make bench`: every benchmark, each next to its reference measured in the same run
set -e
BIN=${1:-build/bin}
echo "# memsvc benchmarks on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d)"
"$BIN/bench_engine"
for extra in "$(dirname "$0")"/*.sh; do
    case "$extra" in */run.sh) continue ;; esac
    echo
    sh "$extra" "$BIN"
done
