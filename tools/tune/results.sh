#!/bin/sh
# results.sh - the policy results of docs/policies.md: generate the worst-stage traces of
# Pangu Ultra MoE and DeepSeek-V3 (each in its published layout) and sweep every policy over
# HBM budgets with memtrace tune.
#
#   sh tools/tune/results.sh [BIN_DIR] [OUT_DIR]
#
# BIN_DIR: where memtrace is (default build/bin); OUT_DIR: default /tmp/memsvc-results.
# JOBS (environment, default 2): replays at once.
# Budgets, per NPU: the ascend-910b device's usable 60.96 GiB first, then down to a budget where
# every policy runs out of memory (1 GiB or 512 MiB). DeepSeek-V3's worst stage peaks at about
# 141 GiB, so its sweep also has budgets above the device (what a larger device would give),
# marked as such in docs/policies.md. Writes OUT_DIR/MODEL/results.{csv,json} and MODEL.svg,
# prints the tables (also in OUT_DIR/MODEL.table), and copies the SVGs to
# docs/img/tune-MODEL.svg when run from the repository root. About 6 minutes on 2 cores.
set -eu
BIN=${1:-build/bin}
OUT=${2:-/tmp/memsvc-results}
JOBS=${JOBS:-2}
USABLE=60.96GiB
LOW=56GiB,52GiB,48GiB,44GiB,40GiB,36GiB,32GiB,28GiB,24GiB,20GiB,16GiB,12GiB,10GiB,8GiB,6GiB,4GiB,2GiB,1GiB,512MiB
budgets() {
    case $1 in
    pangu-ultra-moe-718b) echo "$USABLE,58GiB,$LOW" ;;
    deepseek-v3-671b)     echo "144GiB,128GiB,112GiB,96GiB,80GiB,$USABLE,$LOW" ;;
    esac
}
mkdir -p "$OUT"
# exit status 1 when some replays failed: the outputs are written all the same (ERR cells)
rc=0
for m in pangu-ultra-moe-718b deepseek-v3-671b; do
    "$BIN/memtrace" gen --model "$m" --stage worst --steps 2 -o "$OUT/$m.trace" 2>/dev/null
    rm -f "$OUT/$m/results.csv"
    "$BIN/memtrace" tune "$OUT/$m.trace" --budgets "$(budgets $m)" -j "$JOBS" \
        --out "$OUT/$m" > "$OUT/$m.table" || rc=$?
    cat "$OUT/$m.table"
    [ -f "$OUT/$m/results.csv" ] || exit "$rc"
    if [ -d docs/img ]; then
        cp "$OUT/$m/$m.svg" "docs/img/tune-$m.svg"
    fi
done
exit "$rc"
