#!/bin/sh
# flood.sh - one client floods memsvcd; another client's acquire latency and the daemon's RSS
#
#   sh tools/bench/flood.sh BIN_DIR        (SECS=3 per condition)
#
# Starts memsvcd (tiny node, 2 NPUs of 256 MiB HBM, backed memory, --session-inflight 64MiB,
# --max-sessions 64, --handshake-timeout 1, --no-fast-pin) on a free loopback port. Without pin
# tables the victim's every acquire and release is a message the daemon serves: what a flood
# can delay (with them, an acquire of a resident tensor never reaches the daemon, and the
# victim would measure its own memory). The victim, bench_flood
# victim (job 2 on device 1, a local client), acquires and releases a resident tensor for SECS:
# first with nobody else (the reference, same run), then while one client of job 1 on device 0
# floods, started half a second into the victim's window, with each of:
#   reads   48 READs of 32 MiB posted on a raw UCX (tcp) endpoint that never takes them
#   writes  WRITEs of 8 MiB streamed over a raw UCX (tcp) endpoint, up to 64 in flight
#   conns   300 UCX connections that never say HELLO, closed and opened again every second
# A row "cpu" shows the victim next to a busy neighbour process instead (a shell spinning, no
# flood): what CPU contention alone costs it on the machine (no target).
# Prints the victim's acquire p50/p99 against its idle figures (target: p99 within 10x of the
# idle p99) and the daemon's largest RSS against its bound: its RSS before the flood plus the
# flooding session's --session-inflight, the daemon's pool of kept transfer buffers (64 MiB,
# MSD_POOL_BYTES) and 64 MiB for UCX's own buffers. Exits non-zero with a message when a
# component fails.
set -eu

BIN=${1:?usage: flood.sh BIN_DIR}
SECS=${SECS:-3}
INFLIGHT_MIB=64
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}

die() {
    echo "flood.sh: FAILED: $*" >&2
    exit 1
}
[ -x "$BIN/memsvcd" ] && [ -x "$BIN/bench_flood" ] || die "no memsvcd or bench_flood in $BIN"

RUN=$(mktemp -d /tmp/memsvc-flood.XXXXXX)
export MEMSVC_RUN_DIR="$RUN"
DPID=""
FPID=""
SPID=""
cleanup() {
    [ -z "$FPID" ] || kill "$FPID" 2>/dev/null || true
    [ -z "$SPID" ] || kill "$SPID" 2>/dev/null || true
    [ -z "$DPID" ] || { kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; }
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

. "$(dirname "$0")/lib.sh" # free_port

ADDR=127.0.0.1:$(free_port)
"$BIN/memsvcd" --listen "$ADDR" --node tiny npus=2 hbm=256MiB host=512MiB --memory backed \
    --session-inflight ${INFLIGHT_MIB}MiB --max-sessions 64 --handshake-timeout 1 --no-fast-pin \
    2>"$RUN/memsvcd.log" &
DPID=$!
i=0
until "$BIN/memsvc-ctl" --address "$ADDR" --timeout 1000 ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -ge 100 ] || ! kill -0 "$DPID" 2>/dev/null; then
        cat "$RUN/memsvcd.log" >&2
        die "memsvcd did not start"
    fi
    sleep 0.1
done

# victim NAME: the victim's figures go to $RUN/NAME ("key value" lines)
victim() {
    "$BIN/bench_flood" "$ADDR" victim "$SECS" "$DPID" >"$RUN/$1" 2>"$RUN/err" ||
        { cat "$RUN/err" >&2; die "bench_flood victim ($1)"; }
}
get() { awk -v k="$2" '$1 == k {print $2}' "$RUN/$1"; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$DPID/status"; }

victim idle
echo "## one client floods, another acquires (tiny node, 2 NPUs, backed; --session-inflight ${INFLIGHT_MIB}MiB; --no-fast-pin; $SECS s each; load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '  %-8s %12s %12s %12s %10s %9s  %-7s %12s %12s  %s\n' flood "p50 us" "p99 us" "max us" ops \
    "p99/idle" target "RSS max MiB" "bound MiB" result
printf '  %-8s %12.1f %12.1f %12.1f %10d %9s  %-7s %12.0f %12s\n' none "$(get idle acquire_p50_us)" \
    "$(get idle acquire_p99_us)" "$(get idle acquire_max_us)" "$(get idle ops)" "1.00x" "" \
    "$(echo "$(get idle rss_max_kb)" | awk '{print $1 / 1024}')" ""
# No flood but a busy neighbour (a shell spinning): what CPU contention alone does to the
# victim on this machine, printed for comparison (no target)
sh -c 'while :; do :; done' &
SPID=$!
victim cpu
kill "$SPID"
wait "$SPID" 2>/dev/null || true
SPID=""
printf '  %-8s %12.1f %12.1f %12.1f %10d %8.2fx  %-7s %12.0f %12s  %s\n' cpu "$(get cpu acquire_p50_us)" \
    "$(get cpu acquire_p99_us)" "$(get cpu acquire_max_us)" "$(get cpu ops)" \
    "$(echo "$(get cpu acquire_p99_us) $(get idle acquire_p99_us)" | awk '{print ($2 > 0) ? $1 / $2 : 0}')" \
    "" "$(echo "$(get cpu rss_max_kb)" | awk '{print $1 / 1024}')" "" "(a busy neighbour, no flood)"
for mode in reads writes conns; do
    base=$(rss)
    # the victim first, so that its window holds the flood's start (the first replies' copies)
    victim "$mode" &
    VPID=$!
    sleep 0.5
    "$BIN/bench_flood" "$ADDR" "$mode" "$SECS" 2>"$RUN/flood-$mode.err" &
    FPID=$!
    wait "$VPID" || die "the victim failed in the $mode flood"
    wait "$FPID" || { cat "$RUN/flood-$mode.err" >&2; die "the $mode flood failed"; }
    FPID=""
    kill -0 "$DPID" 2>/dev/null || { cat "$RUN/memsvcd.log" >&2; die "memsvcd died in the $mode flood"; }
    awk -v m="$mode" -v p50="$(get "$mode" acquire_p50_us)" -v p99="$(get "$mode" acquire_p99_us)" \
        -v mx="$(get "$mode" acquire_max_us)" -v ops="$(get "$mode" ops)" \
        -v i99="$(get idle acquire_p99_us)" -v rss="$(get "$mode" rss_max_kb)" -v base="$base" \
        -v inflight="$INFLIGHT_MIB" 'BEGIN {
            q = (i99 > 0) ? p99 / i99 : 0
            bound = base / 1024 + inflight + 64 + 64
            ok = (q <= 10) && (rss / 1024 <= bound)
            printf "  %-8s %12.1f %12.1f %12.1f %10d %8.2fx  %-7s %12.0f %12.0f  %s\n", m, p50, p99,
                mx, ops, q, "<= 10x", rss / 1024, bound, ok ? "met" : "MISSED"
        }'
    sleep 1.5 # the handshake timeout clears what the flood left
done
"$BIN/memsvc-ctl" --address "$ADDR" stats | grep '^limits:' | sed 's/^/  daemon /'
kill "$DPID"
wait "$DPID" || die "memsvcd did not exit cleanly"
DPID=""
