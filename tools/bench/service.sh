#!/bin/sh
# service.sh - memsvcd against raw UCX (ucx_perftest) on the same loopback transport
#
#   sh tools/bench/service.sh BIN_DIR
#
# Starts memsvcd (tiny node, 1 NPU with 256 MiB HBM, backed memory) on a free loopback port
# and measures with bench_service: the acquire round trip on a resident tensor (p50, p99),
# write and read of 64 MiB tensors (GB/s, median of 5), and acquire+release throughput with 1
# and 4 clients. The references run in the same script: ucx_perftest ucp_am_lat (one-way
# latency; round trip = 2x) and ucp_put_bw / ucp_am_bw with 64 MiB messages, over the transport
# memsvc's sessions use (UCX 1.13 with peer error handling selects tcp on loopback).
set -eu

BIN=${1:?usage: service.sh BIN_DIR}
REPS=${REPS:-3}
TLS=${BENCH_TLS:-tcp}
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + $$ % 20000))
}

median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else print v[int((NR + 1) / 2)]}'; }

PORT=$(free_port)
ADDR=127.0.0.1:$PORT
LOG=$(mktemp /tmp/memsvcd-bench.XXXXXX)
"$BIN/memsvcd" --listen "$ADDR" --node tiny npus=1 hbm=256MiB host=512MiB --memory backed \
    2>"$LOG" &
DPID=$!
trap 'kill $DPID 2>/dev/null || true; wait $DPID 2>/dev/null || true; rm -f "$LOG"' EXIT INT TERM
i=0
until "$BIN/memsvc-ctl" --address "$ADDR" --timeout 1000 ping >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "service.sh: memsvcd did not start:" >&2; cat "$LOG" >&2; exit 1; }
    sleep 0.1
done
TRANSPORT=$("$BIN/memsvc-ctl" --address "$ADDR" ping | sed 's/.* over //')

# Our figures: each run prints "name value" lines; keep the median over REPS runs.
OUT=$(mktemp /tmp/memsvc-bench.XXXXXX)
r=0
while [ $r -lt "$REPS" ]; do
    "$BIN/bench_service" "$ADDR" lat 20000 >>"$OUT"
    "$BIN/bench_service" "$ADDR" bw 67108864 5 >>"$OUT"
    "$BIN/bench_service" "$ADDR" ops 1 2 >>"$OUT"
    "$BIN/bench_service" "$ADDR" ops 4 2 >>"$OUT"
    r=$((r + 1))
done
get() { grep "^$1 " "$OUT" | awk '{print $2}' | median; }

# References: ucx_perftest server + client on loopback, same transport.
perf() { # test size iterations -> the "Final:" line
    p=$(free_port)
    UCX_TLS=$TLS ucx_perftest -p "$p" >/dev/null 2>&1 &
    spid=$!
    sleep 0.5
    UCX_TLS=$TLS ucx_perftest 127.0.0.1 -p "$p" -t "$1" -s "$2" -n "$3" 2>/dev/null | grep '^Final:' || true
    wait $spid 2>/dev/null || true
}
AMLAT=""; PUTBW=""; AMBW=""
r=0
while [ $r -lt "$REPS" ]; do
    # Final: iters lat_p50 lat_avg lat_overall bw_avg(MB/s) bw_overall msgrate...
    AMLAT="$AMLAT $(perf ucp_am_lat 8 20000 | awk '{print $3}')"
    PUTBW="$PUTBW $(perf ucp_put_bw 67108864 10 | awk '{print $6}')"
    AMBW="$AMBW $(perf ucp_am_bw 67108864 10 | awk '{print $6}')"
    r=$((r + 1))
done
ref_lat=$(echo "$AMLAT" | tr ' ' '\n' | grep . | median)
ref_put=$(echo "$PUTBW" | tr ' ' '\n' | grep . | median)
ref_ambw=$(echo "$AMBW" | tr ' ' '\n' | grep . | median)

acq50=$(get acquire_rtt_p50_us); acq99=$(get acquire_rtt_p99_us); ping50=$(get ping_rtt_p50_us)
wr=$(get write_gbps); rd=$(get read_gbps); ops1=$(get ops_per_s_1c); ops4=$(get ops_per_s_4c)
rm -f "$OUT"

awk -v t="$TRANSPORT" -v tls="$TLS" -v reps="$REPS" \
    -v a50="$acq50" -v a99="$acq99" -v p50="$ping50" -v rl="$ref_lat" \
    -v wr="$wr" -v rd="$rd" -v rput="$ref_put" -v ramb="$ref_ambw" -v o1="$ops1" -v o4="$ops4" '
function ratio(a, b) { return (b > 0) ? sprintf("%.2fx", a / b) : "n/a" }
BEGIN {
    printf "memsvc service benchmark (medians of %d runs); memsvc sessions over %s, references UCX_TLS=%s\n", reps, t, tls
    rtt = 2 * rl
    printf "  acquire round trip, resident tensor   p50 %8.2f us  p99 %8.2f us  (ping p50 %.2f us)\n", a50, a99, p50
    printf "  ucx_perftest ucp_am_lat (8 B)         one-way %.2f us, round trip %.2f us\n", rl, rtt
    printf "    ratio acquire p50 / raw AM round trip: %s\n", ratio(a50, rtt)
    printf "  write 64 MiB tensor                   %8.3f GB/s\n", wr
    printf "  read 64 MiB tensor                    %8.3f GB/s\n", rd
    printf "  ucx_perftest ucp_put_bw 64 MiB        %8.3f GB/s   ucp_am_bw 64 MiB %8.3f GB/s\n", rput / 1000, ramb / 1000
    printf "    ratio write / put_bw: %s   write / am_bw: %s   read / am_bw: %s\n", ratio(wr, rput / 1000), ratio(wr, ramb / 1000), ratio(rd, ramb / 1000)
    printf "  small ops (acquire+release), 1 client %10.0f ops/s\n", o1
    printf "  small ops, 4 clients                  %10.0f ops/s   (4c / 1c: %s)\n", o4, ratio(o4, o1)
}'
