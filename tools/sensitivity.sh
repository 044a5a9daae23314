#!/bin/sh
# sensitivity.sh - does the policy ranking survive the node parameters no primary source confirms?
# For each variant of the ascend-910b node (one unconfirmed parameter at its low or high end), the
# worst Pangu Ultra MoE stage is generated on that node (durations follow it) and `memtrace tune`
# replays it under the policies at one HBM budget; prints a Markdown table (docs/tuning.md).
set -eu
BIN=${BIN:-build/bin}
OUT=${OUT:-out/sensitivity}
MODEL=${MODEL:-pangu-ultra-moe-718b}
BUDGET=${BUDGET:-48GiB}
POLICIES=${POLICIES:-lru,vdnn,dtr,selective,full,capuchin,foresight}
JOBS=${JOBS:-2}
VARIANTS=${VARIANTS:-"base flops=256TFLOPS flops=376TFLOPS hbm_bw=1.2TB/s hbm_bw=2.0TB/s \
d2d_bw=28GB/s d2d_bw=112GB/s link_bw=16GB/s link_bw=32GB/s"}
mkdir -p "$OUT"

printf '| node (ascend-910b with) | step, s | MFU |'
echo "$POLICIES" | tr ',' '\n' | while read -r p; do printf ' %s |' "$p"; done
printf ' ranking (best first) |\n|---|---:|---:|'
echo "$POLICIES" | tr ',' '\n' | while read -r p; do printf -- '---:|'; done
printf -- '---|\n'
for v in $VARIANTS; do
    name=$(echo "$v" | tr '=/.' '___')
    set -- --stage worst --steps 2 -o "$OUT/$name.trace"
    [ "$v" = base ] || set -- "$@" --node-set "$v"
    "$BIN/memtrace" gen --model "$MODEL" "$@" 2>/dev/null
    # the replay takes the preset's rates (the trace's header gives the shape): the override
    # goes to both, gen for the operators' durations, tune for the links
    set -- "$OUT/$name.trace" --policies "$POLICIES" --budgets "$BUDGET" -j "$JOBS" --quiet \
        --out "$OUT/$name"
    [ "$v" = base ] || set -- "$@" "$v"
    "$BIN/memtrace" tune "$@" >/dev/null
    hdr=$("$BIN/memtrace" dump --header "$OUT/$name.trace" 2>/dev/null)
    flops=$(echo "$hdr" | sed -n 's/.*"model_flops":"\([^"]*\)".*/\1/p')
    peak=$(echo "$hdr" | sed -n 's/.*"flops":\([0-9.e+]*\).*/\1/p')
    awk -F, -v v="$v" -v pol="$POLICIES" -v flops="${flops:-0}" -v peak="${peak:-1}" '
        NR == 1 { next }
        { gsub(/"/, "", $3); ov[$3] = ($5 == "yes") ? sprintf("%+.1f%%", $9) : "OOM";
          val[$3] = ($5 == "yes") ? $9 : 1e9; base = $8 }
        END {
            n = split(pol, p, ",");
            printf "| %s | %.3f | %.1f%% |", v, base, 100 * flops / (base * peak);
            for (i = 1; i <= n; i++) printf " %s |", ov[p[i]];
            for (i = 1; i <= n; i++) idx[i] = i;
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
                if (val[p[idx[j]]] < val[p[idx[i]]]) { t = idx[i]; idx[i] = idx[j]; idx[j] = t }
            printf " ";
            for (i = 1; i <= n; i++) printf "%s%s", p[idx[i]], (i < n) ? " < " : "";
            printf " |\n" }' "$OUT/$name/results.csv"
done
