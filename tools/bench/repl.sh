#!/bin/sh
# repl.sh - replication of durable tensors between two memsvcd on loopback, and recovery of a
#           node started empty, against ucx_perftest over tcp and an io_uring read of a file
#
#   sh tools/bench/repl.sh BIN_DIR       (REPS=3, N=16 tensors of SIZE=32 MiB: 512 MiB;
#                                         CAP_N=32 tensors of CAP_SIZE=8 MiB at CAP_RATE=100MB/s)
#
# Two daemons in one cluster file (a, b; loopback, tcp only: --no-unix), tiny nodes with 1 NPU
# of 1 GiB HBM and 2 GiB host, backed memory, each with its own --state-dir under /tmp,
# --replicas 1 (a's copies go to b), --repl-rate 0 (unlimited), b's --replica-bytes 1 GiB:
#   1. replication throughput: a writes N durable tensors while b is not running (a owes them
#      all), then b starts; bench_repl drain times, through memsvc_peers every millisecond, the
#      first replica byte a sends (sent_bytes rises) to a owing nothing (owed_bytes 0, every
#      copy acknowledged): N x SIZE bytes over that time. Each further run stops b (SIGTERM)
#      and starts it again: a restarted holder has lost its copies, a owes them all again.
#      Reference: ucx_perftest ucp_am_bw of SIZE messages over UCX_TLS=tcp on loopback (and one
#      ucp_put_bw run). Again with a busy neighbour (a shell spinning in a loop), references
#      under the same load;
#   2. recovery: kill -9 of a, a started again with an empty state dir: from its start to
#      recovery_restored == N (recovery_failed must stay 0; recovery_bytes must be N x SIZE).
#      Reference: bench_repl uring, the same bytes read from a file in the same directory with
#      io_uring (O_DIRECT, or buffered after POSIX_FADV_DONTNEED where refused; it says which),
#      into memory touched before and into memory never touched (page faults paid);
#   3. the rate cap: a with --repl-rate CAP_RATE replicating CAP_N x CAP_SIZE: measured against
#      the cap and against what the token bucket allows (its burst and the last tensor's own
#      transfer included).
# Exits non-zero with a message when a component fails (a daemon, bench_repl, ucx_perftest).
set -eu

BIN=${1:?usage: repl.sh BIN_DIR}
REPS=${REPS:-3}
N=${N:-16}
SIZE=${SIZE:-33554432}
CAP_N=${CAP_N:-32}
CAP_SIZE=${CAP_SIZE:-8388608}
CAP_RATE=${CAP_RATE:-100MB/s}
CAP_BPS=$(echo "$CAP_RATE" | sed -n 's,^\([0-9]*\)MB/s$,\1000000,p')
TIMEOUT=60 # seconds, every wait of bench_repl
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
BYTES=$((N * SIZE))
CAP_BYTES=$((CAP_N * CAP_SIZE))

die() {
    echo "repl.sh: FAILED: $*" >&2
    exit 1
}
command -v ucx_perftest >/dev/null 2>&1 || die "ucx_perftest not found (Debian package ucx-utils)"
[ -x "$BIN/memsvcd" ] && [ -x "$BIN/bench_repl" ] && [ -x "$BIN/memsvc-ctl" ] ||
    die "no memsvcd, memsvc-ctl or bench_repl in $BIN"
[ -n "$CAP_BPS" ] || die "CAP_RATE must be NMB/s"

RUN=$(mktemp -d "${REPL_DIR:-/tmp}/memsvc-repl.XXXXXX") # the state dirs and the file read
RES=$RUN/results # "key value" lines
: >"$RES"
APID=""
BPID=""
SPID=""
WPID=""
cleanup() {
    [ -z "${KEEP:-}" ] || cp "$RES" "$KEEP" 2>/dev/null || true
    for p in $WPID $SPID $APID $BPID; do
        kill "$p" 2>/dev/null || true
    done
    for p in $WPID $SPID $APID $BPID; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

. "$(dirname "$0")/lib.sh" # free_port, median

A_ADDR=127.0.0.1:$(free_port)
B_ADDR=127.0.0.1:$(free_port)
while [ "$B_ADDR" = "$A_ADDR" ]; do B_ADDR=127.0.0.1:$(free_port); done
printf 'a %s\nb %s\n' "$A_ADDR" "$B_ADDR" >"$RUN/cluster"
head -c 32 /dev/urandom | base64 >"$RUN/secret"
chmod 600 "$RUN/secret"

# spawn NAME GEN [memsvcd options]: starts node NAME with the empty state dir state-NAME-GEN
# (the previous generation's is removed); sets APID or BPID. Does not wait for it.
spawn() {
    name=$1 gen=$2
    shift 2
    rm -rf "$RUN/state-$name-"*
    mkdir "$RUN/state-$name-$gen"
    "$BIN/memsvcd" --node tiny npus=1 hbm=1GiB host=2GiB --memory backed --no-unix \
        --cluster "$RUN/cluster" --node-name "$name" --cluster-secret "$RUN/secret" \
        --replicas 1 --replica-bytes 1GiB \
        --state-dir "$RUN/state-$name-$gen" --durable-bytes 1GiB --keep-durable 600 "$@" \
        2>>"$RUN/memsvcd-$name.log" &
    if [ "$name" = a ]; then APID=$!; else BPID=$!; fi
}
logs() {
    for l in "$RUN"/memsvcd-*.log; do
        echo "--- $(basename "$l") (last 30 lines)" >&2
        tail -30 "$l" >&2
    done
}
# ready NAME ADDR PID
ready() {
    i=0
    until "$BIN/memsvc-ctl" --address "$2" --timeout 1000 ping >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -ge 100 ] || ! kill -0 "$3" 2>/dev/null; then
            logs
            die "memsvcd $1 did not start"
        fi
        sleep 0.1
    done
}
alive() { # NAME PID
    kill -0 "$2" 2>/dev/null || { logs; die "memsvcd $1 died during the run"; }
}
stop() { # NAME: SIGTERM, a clean exit
    if [ "$1" = a ]; then p=$APID; else p=$BPID; fi
    alive "$1" "$p"
    kill "$p"
    wait "$p" || { logs; die "memsvcd $1 did not exit cleanly"; }
    if [ "$1" = a ]; then APID=""; else BPID=""; fi
}

# write N SIZE: a's tensors, written while b is away; a must owe them all
write() {
    "$BIN/bench_repl" write "$A_ADDR" "$1" "$2" >"$RUN/out" 2>"$RUN/err" ||
        { cat "$RUN/err" >&2; logs; die "bench_repl write"; }
    owed=$(awk '$1 == "owed_bytes" {print $2}' "$RUN/out")
    [ "$owed" = $(($1 * $2)) ] || { logs; die "a owes ${owed:-?} bytes after writing $(($1 * $2))"; }
}

# drain KEY BYTES [b's memsvcd options]: b (re)started, a's drain timed; figures as KEY.name
drain() {
    key=$1 bytes=$2
    shift 2
    rm -f "$RUN/ready"
    "$BIN/bench_repl" drain "$A_ADDR" "$bytes" "$RUN/ready" "$TIMEOUT" >"$RUN/out" 2>"$RUN/err" &
    WPID=$!
    i=0
    until [ -e "$RUN/ready" ]; do # its baseline taken before b exists
        i=$((i + 1))
        if [ $i -ge 500 ] || ! kill -0 "$WPID" 2>/dev/null; then
            cat "$RUN/err" >&2
            die "bench_repl drain did not start"
        fi
        sleep 0.01
    done
    spawn b "$key" --repl-rate 0 "$@"
    wait "$WPID" || { WPID=""; cat "$RUN/err" >&2; logs; die "bench_repl drain ($key)"; }
    WPID=""
    alive a "$APID"
    alive b "$BPID"
    sed "s/^/$key./" "$RUN/out" >>"$RES"
}

# recover KEY: kill -9 of a, a started empty, timed until it restored all N
recover() {
    kill -9 "$APID"
    wait "$APID" 2>/dev/null || true
    APID=""
    t0=$(date +%s%N)
    spawn a "$1" --repl-rate 0
    "$BIN/bench_repl" recover "$A_ADDR" "$N" "$BYTES" "$t0" "$TIMEOUT" >"$RUN/out" 2>"$RUN/err" ||
        { cat "$RUN/err" >&2; logs; die "bench_repl recover ($1)"; }
    alive a "$APID"
    alive b "$BPID"
    sed "s/^/$1./" "$RUN/out" >>"$RES"
}

# perf KEY TEST SIZE ITERS: ucx_perftest server and client over UCX_TLS=tcp on loopback; the
# Final line's bandwidth (MB/s) goes to $RES as KEY
perf() {
    p=$(free_port)
    UCX_TLS=tcp timeout 120 ucx_perftest -p "$p" >/dev/null 2>&1 &
    ppid=$!
    sleep 0.3
    v=$(UCX_TLS=tcp timeout 120 ucx_perftest 127.0.0.1 -p "$p" -t "$2" -s "$3" -n "$4" 2>&1 |
        awk '/^Final:/ {print $6}')
    kill "$ppid" 2>/dev/null || true
    wait "$ppid" 2>/dev/null || true
    case "$v" in
    '' | *[!0-9.]*) die "ucx_perftest -t $2 over UCX_TLS=tcp gave no figure" ;;
    esac
    echo "$1 $v" >>"$RES"
}
refs() { # COND
    r=0
    while [ $r -lt "$REPS" ]; do
        perf "$1.ref.ambw" ucp_am_bw "$SIZE" "$N"
        r=$((r + 1))
    done
    perf "$1.ref.putbw" ucp_put_bw "$SIZE" 1 # tcp emulates RMA: slow, one message
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
start=$(date +%s)
refs quiet
spawn a 0 --repl-rate 0
ready a "$A_ADDR" "$APID"
write "$N" "$SIZE"
r=1
while [ $r -le "$REPS" ]; do
    [ -z "$BPID" ] || stop b
    drain "quiet$r" "$BYTES"
    r=$((r + 1))
done
r=1
while [ $r -le "$REPS" ]; do
    recover "recover$r"
    r=$((r + 1))
done
"$BIN/bench_repl" uring "$RUN/state-a-uring.bin" "$BYTES" "$REPS" >"$RUN/out" 2>"$RUN/err" ||
    { cat "$RUN/err" >&2; die "bench_repl uring"; }
sed "s/^/uring./" "$RUN/out" >>"$RES"
spinner_start
refs contended
r=1
while [ $r -le "$REPS" ]; do
    stop b
    drain "contended$r" "$BYTES"
    r=$((r + 1))
done
spinner_stop
# the cap: a new pair (b restarted: it holds nothing of the new a's)
stop b
stop a
spawn a cap --repl-rate "$CAP_RATE"
ready a "$A_ADDR" "$APID"
write "$CAP_N" "$CAP_SIZE"
r=1
while [ $r -le "$REPS" ]; do
    [ -z "$BPID" ] || stop b
    drain "cap$r" "$CAP_BYTES"
    r=$((r + 1))
done
stop b
stop a

# ---- report --------------------------------------------------------------------------------
# get KEY NAME: the median of NAME over the runs KEY1..KEYn (KEY.NAME lines when KEY has no
# runs); exits when there is none (use it in an assignment: x=$(get ...) stops the script)
get() {
    v=$(grep -E "^$1[0-9]*\.$2 " "$RES" | awk '{print $2}' | median)
    [ "$v" != nan ] || die "no figure $1.$2"
    echo "$v"
}
row() { # LABEL VALUE UNIT REF_LABEL REF UNIT
    awk -v l="$1" -v v="$2" -v u="$3" -v rl="$4" -v r="$5" -v ru="$6" 'BEGIN {
        printf "  %-46s %8.3f %-4s  %-36s %8.3f %-4s %6.0f %%\n", l, v, u, rl, r, ru,
            (r > 0) ? 100 * v / r : 0
    }'
}

mib=$((BYTES >> 20))
echo "## replication and recovery (2 daemons on loopback over tcp; $N durable tensors of $((SIZE >> 20)) MiB = $mib MiB; medians of $REPS runs; load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "the busy neighbour: one 'sh -c \"while :; do :; done\"' on the $(nproc) cores"
printf '  %-46s %13s  %-36s %13s %8s\n' figure memsvc "reference (same run)" "" ratio
for cond in quiet contended; do
    ambw=$(get "$cond" ref.ambw)
    putbw=$(get "$cond" ref.putbw)
    xfer=$(get "$cond" xfer_gbps)
    setup=$(get "$cond" setup_s)
    label="replication, $cond"
    [ $cond = contended ] && label="replication, busy neighbour"
    row "$label" "$xfer" GB/s "ucp_am_bw $((SIZE >> 20)) MiB x $N, tcp" "$(echo "$ambw" | awk '{print $1 / 1000}')" GB/s
    awk -v p="$putbw" -v s="$setup" -v m="$((SIZE >> 20))" 'BEGIN {
        printf "  %-46s %13s  %-36s %8.3f GB/s  (tcp emulates RMA)\n", "  (b started -> first byte sent: " sprintf("%.2f", s) " s)", "", "ucp_put_bw " m " MiB, tcp", p / 1000
    }'
done
uring_mode=$(sed -n 's/^uring\.mode //p' "$RES")
ug=$(get uring read_gbps)
us=$(get uring read_s)
fg=$(get uring fresh_gbps)
ts=$(get recover total_s)
tg=$(get recover total_gbps)
xs=$(get recover xfer_s)
xg=$(get recover xfer_gbps)
ss=$(get recover serving_s)
am=$(get recover answer_max_s)
awk -v ts="$ts" -v tg="$tg" -v xs="$xs" -v xg="$xg" -v ss="$ss" -v us="$us" -v ug="$ug" \
    -v m="$uring_mode" -v mib="$mib" -v am="$am" -v fg="$fg" 'BEGIN {
    printf "  %-46s %8.3f s     %-36s %8.3f s   %6.2fx time\n", "recovery, a started -> " mib " MiB restored", ts, "io_uring read of " mib " MiB", us, (us > 0) ? ts / us : 0
    printf "  %-46s %8.3f GB/s  %-36s %8.3f GB/s %6.0f %%\n", "  the same as a rate", tg, "  (" m ")", ug, (ug > 0) ? 100 * tg / ug : 0
    printf "  %-46s %8.3f GB/s  %-36s %8.3f GB/s %6.0f %%\n", "  first copy asked -> last restored", xg, "io_uring read", ug, (ug > 0) ? 100 * xg / ug : 0
    printf "  %-46s %13s  %-36s %8.3f GB/s %6.0f %%\n", "", "", "io_uring read into untouched memory", fg, (fg > 0) ? 100 * xg / fg : 0
    printf "  (of the recovery: %.2f s until the empty daemon answered, %.2f s asking and restoring; recovery_failed 0 in every run;\n   its longest answer to memsvc_peers meanwhile: %.2f s)\n", ss, xs, am
}'
cap=$(get cap xfer_gbps)
link=$(get quiet xfer_gbps)
awk -v m="$cap" -v cap="$CAP_BPS" -v n="$CAP_N" -v s="$CAP_SIZE" -v link="$link" \
    -v rate="$CAP_RATE" 'BEGIN {
    burst = (cap / 10 > 4194304) ? cap / 10 : 4194304
    # the first PUT goes at once; each later one when the bucket is back to 0; the last one
    # then takes its own transfer time (at the unlimited rate measured above)
    t = ((n - 1) * s - burst) / cap + s / (link * 1e9)
    printf "  %-46s %8.1f MB/s  %-36s %8.1f MB/s %6.0f %%\n", "--repl-rate " rate ", " n " x " s / 1048576 " MiB", m * 1000, "the cap", cap / 1e6, 100 * m * 1e9 / cap
    printf "  %-46s %13s  %-36s %8.1f MB/s %6.0f %%\n", "", "", "what the token bucket allows", n * s / t / 1e6, 100 * m * 1e9 / (n * s / t)
}'
echo "  ($(($(date +%s) - start)) s)"
