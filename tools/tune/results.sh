#!/bin/sh
# results.sh - the policy results of docs/policies.md: generate the worst-stage traces of
# Pangu Ultra MoE and DeepSeek-V3 (each in its published layout) and sweep every policy over
# HBM budgets with memtrace tune.
#
#   sh tools/tune/results.sh [BIN_DIR] [OUT_DIR]
#
# BIN_DIR: where memtrace is (default build/bin); OUT_DIR: default /tmp/memsvc-results.
# Writes OUT_DIR/results.csv, results.json and one SVG per trace, prints the tables, and
# copies the SVGs to docs/img/tune-MODEL.svg when run from the repository root.
set -eu
BIN=${1:-build/bin}
OUT=${2:-/tmp/memsvc-results}
mkdir -p "$OUT"
for m in pangu-ultra-moe-718b deepseek-v3-671b; do
    "$BIN/memtrace" gen --model "$m" --stage worst --steps 2 -o "$OUT/$m.trace"
done
# exit status 1 when some replays failed: the outputs are written all the same (ERR cells)
rc=0
rm -f "$OUT/results.csv"
"$BIN/memtrace" tune "$OUT/pangu-ultra-moe-718b.trace" "$OUT/deepseek-v3-671b.trace" \
    --budget-auto 32 --out "$OUT" || rc=$?
[ -f "$OUT/results.csv" ] || exit "$rc"
if [ -d docs/img ]; then
    for m in pangu-ultra-moe-718b deepseek-v3-671b; do
        cp "$OUT/$m.svg" "docs/img/tune-$m.svg"
    done
fi
exit "$rc"
