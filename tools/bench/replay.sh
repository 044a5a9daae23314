#!/bin/sh
# replay.sh - `make bench`: memtrace replay speed, one generated step, peak RSS vs trace length
BIN=${1:-build/bin}
"$BIN/bench_replay" "$BIN"
