#!/bin/sh
# run.sh - `make run`: the main job
set -e
BIN=${1:-build/bin}
"$BIN/engine_demo"
