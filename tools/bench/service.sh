#!/bin/sh
# service.sh - memsvcd against raw UCX (ucx_perftest) over the same transports, quiet and contended
#
#   sh tools/bench/service.sh BIN_DIR        (REPS=3, OPS_SECS=0.5, IDLE_SECS=2)
#
# Starts memsvcd (tiny node, 1 NPU with 256 MiB HBM, backed memory) on a free loopback port,
# first as it runs by default (loops sleep in epoll after 50 us of spinning, local clients acquire
# resident tensors in their pin tables), then with --no-fast-pin (every local acquire and release
# a message: the local latency and 1-2 client throughput again), then with --poll,
# and measures with bench_service, for a co-located client (the Unix socket: its own worker
# over shared memory, sysv, and the device mapped) and for a remote one (tcp,
# MEMSVC_BENCH_TCP=1):
#   - the acquire round trip of a resident tensor (p50, p99 of 20,000 local or 5,000 tcp round
#     trips; median over REPS runs),
#     against ucx_perftest ucp_am_lat over the same transport (UCX_TLS=sysv,self as the local
#     path uses; tcp): round trip = 2 x its one-way p50;
#   - write and read of a 64 MiB tensor (memsvc_write/read, and through memsvc_acquire_map;
#     medians of 9 rounds), against memcpy of 64 MiB in the same process (local, twice per
#     round) or ucp_am_bw of 10 messages of 64 MiB over tcp (remote; median over REPS runs)
#     and ucp_put_bw;
#   - both again while a busy neighbour (a shell spinning in a loop) competes for the cores,
#     references included;
#   - acquires and releases per second from 1, 2, 4, 8 client processes, one pair at a time
#     and in batches of 32 acquires followed by 32 one-way releases;
#   - the daemon's CPU (utime + stime from /proc) while 4 connected clients are idle.
# Prints every figure next to its reference, the ratio and whether the target holds. Exits
# non-zero with a message when a component fails (the daemon, a client, ucx_perftest).
set -eu

BIN=${1:?usage: service.sh BIN_DIR}
REPS=${REPS:-3}
OPS_SECS=${OPS_SECS:-0.5}
IDLE_SECS=${IDLE_SECS:-2}
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
SHM_TLS=sysv,self # the local path's context (docs/daemon.md, "No cma")
SIZE=67108864

die() {
    echo "service.sh: FAILED: $*" >&2
    exit 1
}
command -v ucx_perftest >/dev/null 2>&1 || die "ucx_perftest not found (Debian package ucx-utils)"
[ -x "$BIN/memsvcd" ] && [ -x "$BIN/bench_service" ] || die "no memsvcd or bench_service in $BIN"

RUN=$(mktemp -d /tmp/memsvc-bench.XXXXXX)
export MEMSVC_RUN_DIR="$RUN" # the daemons' Unix sockets
RES=$RUN/results             # "key value" lines
: >"$RES"
DPID=""
SPID=""
cleanup() {
    [ -z "$SPID" ] || kill "$SPID" 2>/dev/null || true
    [ -z "$DPID" ] || { kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; }
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

. "$(dirname "$0")/lib.sh" # free_port, median

# start_daemon NAME [memsvcd options]: sets DPID and ADDR
start_daemon() {
    name=$1
    shift
    ADDR=127.0.0.1:$(free_port)
    "$BIN/memsvcd" --listen "$ADDR" --node tiny npus=1 hbm=256MiB host=512MiB --memory backed \
        --state-dir "$RUN" "$@" 2>"$RUN/memsvcd-$name.log" &
    DPID=$!
    i=0
    until "$BIN/memsvc-ctl" --address "$ADDR" --timeout 1000 ping >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -ge 100 ] || ! kill -0 "$DPID" 2>/dev/null; then
            cat "$RUN/memsvcd-$name.log" >&2
            die "memsvcd ($name) did not start"
        fi
        sleep 0.1
    done
}
stop_daemon() {
    kill -0 "$DPID" 2>/dev/null || { cat "$RUN"/memsvcd-*.log >&2; die "memsvcd died during the run"; }
    kill "$DPID"
    wait "$DPID" || die "memsvcd did not exit cleanly"
    DPID=""
}

# svc PREFIX PATH ARGS...: bench_service over PATH (local|tcp); its lines go to $RES as
# PREFIX.name value. Fails unless the client got the transport asked for.
svc() {
    prefix=$1 path=$2
    shift 2
    if [ "$path" = tcp ]; then tcp=1 want="tcp:"; else tcp=0 want="shm:"; fi
    MEMSVC_BENCH_TCP=$tcp "$BIN/bench_service" "$ADDR" "$@" >"$RUN/out" 2>"$RUN/err" ||
        { cat "$RUN/err" >&2; die "bench_service $* ($path)"; }
    grep -q "bench_service: $want" "$RUN/err" ||
        { cat "$RUN/err" >&2; die "bench_service $* did not get the $path path"; }
    sed -n "s/^bench_service: \(.*\)/\1/p" "$RUN/err" | head -1 >"$RUN/transport-$path"
    sed "s/^/$prefix./" "$RUN/out" >>"$RES"
}

# perf KEY TLS TEST SIZE ITERS FIELD: ucx_perftest server and client on loopback; the Final
# line's field FIELD (3: one-way latency p50 in us; 6: bandwidth in MB/s) goes to $RES as KEY
perf() {
    p=$(free_port)
    UCX_TLS=$2 timeout 120 ucx_perftest -p "$p" >/dev/null 2>&1 &
    ppid=$!
    sleep 0.3
    v=$(UCX_TLS=$2 timeout 120 ucx_perftest 127.0.0.1 -p "$p" -t "$3" -s "$4" -n "$5" 2>&1 |
        awk -v f="$6" '/^Final:/ {print $f}')
    kill "$ppid" 2>/dev/null || true
    wait "$ppid" 2>/dev/null || true
    case "$v" in
    '' | *[!0-9.]*) die "ucx_perftest -t $3 over UCX_TLS=$2 gave no figure" ;;
    esac
    echo "$1 $v" >>"$RES"
}

spinner_start() {
    sh -c 'while :; do :; done' &
    SPID=$!
}
spinner_stop() {
    kill "$SPID"
    wait "$SPID" 2>/dev/null || true
    SPID=""
}

# ---- measurements --------------------------------------------------------------------------
# (in each condition: references first, then memsvc, all under the same load)
measure_refs() { # COND
    r=0
    while [ $r -lt "$REPS" ]; do
        perf "$1.ref.amlat_shm" "$SHM_TLS" ucp_am_lat 8 20000 3
        perf "$1.ref.amlat_tcp" tcp ucp_am_lat 8 5000 3
        perf "$1.ref.ambw_tcp" tcp ucp_am_bw $SIZE 10 6
        r=$((r + 1))
    done
    perf "$1.ref.putbw_tcp" tcp ucp_put_bw $SIZE 1 6 # tcp emulates RMA: seconds per message
}
measure_lat() { # COND MODE
    r=0
    while [ $r -lt "$REPS" ]; do
        svc "$1.$2.local" local lat 20000
        svc "$1.$2.tcp" tcp lat 5000
        r=$((r + 1))
    done
}
measure_lat_local() { # COND MODE
    r=0
    while [ $r -lt "$REPS" ]; do
        svc "$1.$2.local" local lat 20000
        r=$((r + 1))
    done
}
measure_ops() { # PREFIX CLIENTS...: acquires + releases per second, one at a time and batched
    prefix=$1
    shift
    for n in "$@"; do
        for mode in single batch; do
            r=0
            while [ $r -lt "$REPS" ]; do
                svc "$prefix" local ops "$n" "$OPS_SECS" "$mode"
                r=$((r + 1))
            done
        done
    done
}
measure_bw() { # COND MODE
    svc "$1.$2.local" local bw $SIZE 9
    svc "$1.$2.tcp" tcp bw $SIZE 9
}

echo "## memsvcd service (tiny node, backed memory; medians of $REPS runs; $(cat /proc/loadavg | cut -d' ' -f1-3) load)"

start_daemon default
measure_refs quiet
measure_lat quiet default
measure_bw quiet default
measure_ops ops 1 2 4 8
svc idle.default local idle 4 "$IDLE_SECS" "$DPID"
spinner_start
measure_refs contended
measure_lat contended default
measure_bw contended default
spinner_stop
stop_daemon

# every acquire and release a message (no pin tables): the reference for the local figures
start_daemon nofast --no-fast-pin
measure_lat_local quiet nofast
measure_ops opsnf 1 2
spinner_start
measure_lat_local contended nofast
spinner_stop
stop_daemon

start_daemon poll --poll
measure_lat quiet poll
svc idle.poll local idle 4 "$IDLE_SECS" "$DPID"
spinner_start
measure_lat contended poll
spinner_stop
stop_daemon

# ---- report --------------------------------------------------------------------------------
get() {
    v=$(grep "^$1 " "$RES" | awk '{print $2}' | median)
    [ "$v" != nan ] || die "no figure $1"
    echo "$v"
}

echo "local path: $(cat "$RUN/transport-local"); references UCX_TLS=$SHM_TLS"
echo "remote path: $(cat "$RUN/transport-tcp"); references UCX_TLS=tcp"
echo "the busy neighbour: one 'sh -c \"while :; do :; done\"' on the $(nproc) cores"

# row LABEL VALUE UNIT REF_LABEL REF UNIT2 KIND LIMIT
#   KIND le: VALUE / REF <= LIMIT (x);  ge: VALUE / REF >= LIMIT (%);  none: ratio only
row() {
    [ -n "$2" ] && [ -n "$5" ] || die "no figure for $1" # a get that failed in $(...)
    awk -v l="$1" -v v="$2" -v u="$3" -v rl="$4" -v r="$5" -v k="$7" -v t="$8" 'BEGIN {
        q = (r > 0) ? v / r : 0
        if (k == "le") { rs = sprintf("%6.2fx", q); ts = sprintf("<= %gx", t); ok = (q <= t) }
        else if (k == "ge") { rs = sprintf("%5.0f %%", 100 * q); ts = sprintf(">= %g %%", t); ok = (100 * q >= t) }
        else { rs = sprintf("%6.2fx", q); ts = ""; ok = -1 }
        printf "  %-38s %9.2f %-5s %-24s %8.2f %-5s %8s  %-9s %s\n", l, v, u, rl, r, u, rs, ts,
            (ok < 0) ? "" : (ok ? "met" : "MISSED")
    }'
}

for cond in quiet contended; do
    shm=$(get $cond.ref.amlat_shm)
    tcpl=$(get $cond.ref.amlat_tcp)
    shm_rtt=$(echo "$shm" | awk '{print 2 * $1}')
    tcp_rtt=$(echo "$tcpl" | awk '{print 2 * $1}')
    echo
    echo "### $cond$([ $cond = contended ] && echo ': a busy neighbour process, references under the same load')"
    printf '  %-38s %15s %-24s %14s %8s  %-9s %s\n' figure memsvc "reference (same run)" "" ratio target result
    for mode in default poll; do
        ml="default daemon"
        [ $mode = poll ] && ml="--poll daemon"
        row "acquire p50, local, $ml" "$(get $cond.$mode.local.acquire_rtt_p50_us)" us \
            "ucp_am_lat rtt, sysv" "$shm_rtt" us le 2
        row "acquire p99, local, $ml" "$(get $cond.$mode.local.acquire_rtt_p99_us)" us \
            "ucp_am_lat rtt, sysv" "$shm_rtt" us le 10
        row "acquire p50, tcp, $ml" "$(get $cond.$mode.tcp.acquire_rtt_p50_us)" us \
            "ucp_am_lat rtt, tcp" "$tcp_rtt" us le 2
        row "acquire p99, tcp, $ml" "$(get $cond.$mode.tcp.acquire_rtt_p99_us)" us \
            "ucp_am_lat rtt, tcp" "$tcp_rtt" us le 10
    done
    row "acquire p50, local, --no-fast-pin" "$(get $cond.nofast.local.acquire_rtt_p50_us)" us \
        "ucp_am_lat rtt, sysv" "$shm_rtt" us le 2
    row "acquire p99, local, --no-fast-pin" "$(get $cond.nofast.local.acquire_rtt_p99_us)" us \
        "ucp_am_lat rtt, sysv" "$shm_rtt" us le 10
    mc=$(get $cond.default.local.memcpy_gbps)
    row "64 MiB memsvc_write, local (mapped)" "$(get $cond.default.local.write_gbps)" GB/s \
        "memcpy 64 MiB" "$mc" GB/s ge 90
    row "64 MiB memsvc_read, local (mapped)" "$(get $cond.default.local.read_gbps)" GB/s \
        "memcpy 64 MiB" "$mc" GB/s ge 90
    row "64 MiB write via acquire_map pointer" "$(get $cond.default.local.map_write_gbps)" GB/s \
        "memcpy 64 MiB" "$mc" GB/s ge 90
    row "64 MiB read via acquire_map_ro pointer" "$(get $cond.default.local.map_read_gbps)" GB/s \
        "memcpy 64 MiB" "$mc" GB/s ge 90
    ambw=$(get $cond.ref.ambw_tcp | awk '{print $1 / 1000}')
    putbw=$(get $cond.ref.putbw_tcp | awk '{print $1 / 1000}')
    best=$(echo "$ambw $putbw" | awk '{print ($1 > $2) ? $1 : $2}')
    for op in write read; do
        row "64 MiB memsvc_$op, tcp" "$(get $cond.default.tcp.${op}_gbps)" GB/s \
            "ucp_am_bw 64 MiB, tcp" "$ambw" GB/s ge 80
    done
    printf '  %-38s %15s %-24s %8.3f GB/s  (tcp emulates RMA; am_bw is the higher reference)\n' \
        "" "" "ucp_put_bw 64 MiB, tcp" "$putbw"
    [ "$best" = "$ambw" ] || echo "  (note: ucp_put_bw was above ucp_am_bw in this run)"
done

echo
echo "### acquires + releases per second, local clients (separate processes; each acquire and each release counts one)"
printf '  %-8s %14s %14s %16s\n' clients "one at a time" "batches of 32" "batched / 1 client"
b1=$(get ops.ops_per_s_batch_1c)
for n in 1 2 4 8; do
    s=$(get ops.ops_per_s_single_${n}c)
    b=$(get ops.ops_per_s_batch_${n}c)
    printf '  %-8s %14.0f %14.0f %15.2fx\n' $n "$s" "$b" "$(echo "$b $b1" | awk '{print $1 / $2}')"
done
for n in 1 2; do
    s=$(get opsnf.ops_per_s_single_${n}c)
    b=$(get opsnf.ops_per_s_batch_${n}c)
    printf '  %-8s %14.0f %14.0f %15.2fx   (--no-fast-pin: every acquire and release a message)\n' \
        $n "$s" "$b" "$(echo "$b $(get opsnf.ops_per_s_batch_1c)" | awk '{print $1 / $2}')"
done
s1=$(get ops.ops_per_s_single_1c) s2=$(get ops.ops_per_s_single_2c)
b2=$(get ops.ops_per_s_batch_2c)
awk -v s1="$s1" -v s2="$s2" -v b1="$b1" -v b2="$b2" -v c="$(nproc)" 'BEGIN {
    printf "  2 clients >= 1 client (up to the %d cores): one at a time %s, batched %s\n", c,
        (s2 >= s1) ? "met" : "MISSED", (b2 >= b1) ? "met" : "MISSED"
    printf "  batched, 2 clients >= 1,000,000 ops/s: %.0f, %s\n", b2, (b2 >= 1e6) ? "met" : "MISSED"
}'

echo
echo "### memsvcd CPU while 4 connected local clients are idle ($IDLE_SECS s, utime + stime from /proc)"
idle_d=$(get idle.default.idle_cpu_pct_4c)
idle_p=$(get idle.poll.idle_cpu_pct_4c)
awk -v d="$idle_d" -v p="$idle_p" 'BEGIN {
    printf "  default daemon  %6.1f %% of a core   (target ~0: %s)\n", d, (d < 1) ? "met" : "MISSED"
    printf "  --poll daemon   %6.1f %% of a core   (expected: a core per polling loop)\n", p
}'
