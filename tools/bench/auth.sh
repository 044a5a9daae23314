#!/bin/sh
# auth.sh - who owns a tcp peer: memsvcd's sock_diag lookup against the /proc/net/tcp scan
#
#   sh tools/bench/auth.sh BIN_DIR
#
# Runs bench_auth (tools/bench/bench_auth.c) with 0, 500 and 2000 extra loopback connections;
# each line gives both lookups, measured in the same run, and their ratio.
set -eu
BIN=${1:?usage: auth.sh BIN_DIR}
"$BIN/bench_auth" 0 500 2000
