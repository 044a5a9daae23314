#!/bin/sh
# live.sh - `make bench`: the live replay of a Pangu Ultra MoE step through memsvcd, wall vs device
#
#   sh tools/bench/live.sh BIN_DIR        (BUDGET=48GiB, SCALE=1)
#
# The live part of `make run` at time scale 1: the worst pipeline stage of Pangu Ultra MoE 718B
# (`memtrace gen --stage worst`, one step, ranks 0 and 1), memsvcd on the ascend-910b node at
# HBM 48 GiB (phantom memory) with the best policy available, and two co-located trainer
# processes (`memtrace replay --daemon`). The reference is the device's own time for the
# slowest trainer: compute + recompute (busy) + the time it sat idle waiting for memory (the
# policy's stalls and any round trip the prefetch did not hide). Target: wall within 5 % of it.
set -eu

BIN=${1:?usage: live.sh BIN_DIR}
BUDGET=${BUDGET:-48GiB}
SCALE=${SCALE:-1}
MODEL=pangu-ultra-moe-718b

die() {
    echo "live.sh: FAILED: $*" >&2
    exit 1
}
RUN=$(mktemp -d /tmp/memsvc-live.XXXXXX)
export MEMSVC_RUN_DIR="$RUN"
DPID=""
cleanup() {
    [ -z "$DPID" ] || { kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; }
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

for r in 0 1; do
    "$BIN/memtrace" gen --model $MODEL --stage worst --steps 1 --rank $r -o "$RUN/rank$r.trace" \
        >/dev/null 2>"$RUN/gen.log" || { cat "$RUN/gen.log" >&2; die "memtrace gen"; }
done
BEST=lru
for p in foresight dtr; do
    if "$BIN/memtrace" replay --help | grep -q "^ *$p "; then BEST=$p; break; fi
done

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + $$ % 20000)))
"$BIN/memsvcd" --listen "127.0.0.1:$PORT" hbm="$BUDGET" --policy "$BEST" 2>"$RUN/memsvcd.log" &
DPID=$!
i=0
until "$BIN/memsvc-ctl" --address "127.0.0.1:$PORT" --timeout 1000 ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -ge 100 ] || ! kill -0 "$DPID" 2>/dev/null; then
        cat "$RUN/memsvcd.log" >&2
        die "memsvcd did not start"
    fi
    sleep 0.1
done
"$BIN/memtrace" replay --daemon "127.0.0.1:$PORT" --time-scale "$SCALE" \
    "$RUN/rank0.trace" "$RUN/rank1.trace" >"$RUN/replay.out" 2>&1 ||
    { cat "$RUN/replay.out" >&2; die "memtrace replay --daemon"; }
kill -0 "$DPID" 2>/dev/null || { cat "$RUN/memsvcd.log" >&2; die "memsvcd died during the replay"; }

echo "## live replay: $MODEL worst stage, 1 step, 2 co-located trainers, memsvcd at HBM $BUDGET,"
echo "## policy $BEST, time scale $SCALE ($(cut -d' ' -f1-3 /proc/loadavg) load)"
awk '
/^daemon / { sub(/^daemon +/, ""); print "  daemon: " $0 }
/^wall time/ { wall = $3; ideal = $7 }
/^device / {
    busy = $3
    for (i = 1; i <= NF; i++) if ($i == "memory" && $(i - 2) == "waiting") wait = $(i + 1)
}
/^  (trainer|npu)/ { print }
END {
    if (wall == "" || busy == "" || wait == "" || ideal == "") { print "live.sh: FAILED: no figures in the report" > "/dev/stderr"; exit 1 }
    ref = busy + wait
    printf "  %-46s %10.1f ms\n", "ideal compute (the operators in the traces)", ideal
    printf "  %-46s %10.1f ms\n", "device busy: compute + recompute", busy
    printf "  %-46s %10.1f ms\n", "device idle waiting for memory", wait
    printf "  %-46s %10.1f ms\n", "reference: busy + waiting for memory", ref
    printf "  %-46s %10.1f ms   %.3fx of the reference, %+.1f %%  (target within 5 %%: %s)\n",
        "wall time", wall, wall / ref, 100 * (wall / ref - 1), (wall <= 1.05 * ref) ? "met" : "MISSED"
    printf "  %-46s %10s      %.3fx of ideal compute\n", "", "", wall / ideal
}' "$RUN/replay.out" || { cat "$RUN/replay.out" >&2; die "unreadable report"; }
