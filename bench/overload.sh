#!/bin/bash
# bench/overload.sh - spindle under overload: goodput, deadlines, refusal latency and fairness.
#
# One spindle (release build, [pool] workers = BENCH_WORKERS, default CPUs - 1 (at least 1): the
# loop thread needs a CPU of its own to answer refusals at once while every worker is busy;
# queue_capacity = 1024, [log] level = warn, access = false) serves POST /v1/jobs/primes?n=200000 with X-Timeout-Ms: 2000 over loopback.
# bench/overload (this directory) is the load generator; see its header for what it measures.
#   capacity      closed loop, BENCH_CAP_CONNS (16) connections, no refusals: 2xx per second,
#                 measured first and again last; C = the mean of the two (other load on the
#                 machine moves it during a run; the report says when the two differ by > 10 %)
#   closed loop   wrk -t2 -c512 (bench/overload.lua: every answer, a refusal included, is followed
#                 at once by the next request, like a retry storm): goodput (2xx/s) >= 90 % of C;
#                 then bench/overload -c512 for the same load: goodput >= 90 % of C too, and 2xx
#                 answers that arrived after their deadline: must be 0
#   open loop     bench/overload -r 4C (a fixed arrival rate, latency from when each request was
#                 due): goodput >= 90 % of C; refusals (429/503) answered with p99 < 5 ms
#   fairness      tenant B alone at 0.15 C, then A at 1.5 C (ten times B) together with B:
#                 B's p99 together <= 2 x B's p99 alone, and B completes at least its weighted
#                 share (equal weights: all of its load, which is below half the capacity)
# Printed and appended to bench/results/overload.txt. Each phase lasts BENCH_SECONDS (10).
# BENCH_RUNS=N (default 1) repeats the whole sequence N times, each on a fresh spindle, prints
# every run's report and then, per figure, the median and the spread (min..max) of the N runs and
# in how many runs each target held: one good run proves nothing about the next.
#
# Needs build/release/spindle and build/release/bench/overload (make release && make
# VARIANT=release bench-bins), wrk and curl. Environment: BUILD_DIR (default build), SPINDLE_BIN,
# OVERLOAD_BIN, BENCH_SECONDS, BENCH_CAP_CONNS, BENCH_WORKERS, BENCH_GEN_NICE, BENCH_RUNS,
# RESULTS.
set -eu

cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
OVERLOAD_BIN=${OVERLOAD_BIN:-$BUILD_DIR/release/bench/overload}
SECONDS_RUN=${BENCH_SECONDS:-10}
CAP_CONNS=${BENCH_CAP_CONNS:-16}
RESULTS=${RESULTS:-bench/results/overload.txt}
JOB="/v1/jobs/primes?n=200000"
# BENCH_GEN_NICE=N runs the load generators at nice N: on a machine where they share the CPUs
# with the server, that stands in for clients on other machines (0 = no change).
GEN_NICE=${BENCH_GEN_NICE:-0}
GEN=""
[ "$GEN_NICE" -gt 0 ] && GEN="nice -n $GEN_NICE"
TIMEOUT_MS=2000
WORKERS=${BENCH_WORKERS:-$(($(nproc) > 1 ? $(nproc) - 1 : 1))}
RUNS=${BENCH_RUNS:-1}

. bench/lib.sh

[ "$RUNS" -ge 1 ] 2>/dev/null || die "BENCH_RUNS must be a positive integer"
need_tool wrk
need_tool curl
need_file "$SPINDLE_BIN" "run make release"
need_file "$OVERLOAD_BIN" "run make VARIANT=release bench-bins"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bench_tmp overload

start_spindle() {
    spindle_start overload <<CONF
backlog = 4096
[pool]
workers = $WORKERS
[log]
level = warn
access = false
file = $TMP/overload/spindle.log
CONF
    PORT=$SPINDLE_PORT
}

stop_spindle() { spindle_stop "$SPINDLE_PID"; }

# gen NAME ARGS...: run bench/overload, keep its line in $TMP/NAME.txt and print it.
gen() {
    local name=$1
    shift
    $GEN "$OVERLOAD_BIN" -p "$PORT" -d "$SECONDS_RUN" "$@" "$JOB" >"$TMP/$name.txt" ||
        die "overload failed"
    cat "$TMP/$name.txt"
}

# field NAME KEY: the value of KEY= in $TMP/NAME.txt.
field() {
    tr ' ' '\n' <"$TMP/$1.txt" | awk -F= -v k="$2" '$1 == k { print $2 }'
}

calc() { awk "BEGIN { printf \"%.1f\", $1 }"; }
verdict() { awk "BEGIN { print (($1) ? \"met\" : \"MISSED\") }"; }

cat >"$TMP/overload.lua" <<LUA
wrk.method = "POST"
wrk.headers["X-Timeout-Ms"] = "$TIMEOUT_MS"
LUA

# run_once: one whole sequence on a fresh spindle; prints its report, appends it to $RESULTS and
# its figures (one line, tab-separated, in the order of FIGURES) to $TMP/runs.tsv.
run_once() {
    start_spindle
    echo "== capacity: closed loop, $CAP_CONNS connections, ${SECONDS_RUN}s"
    gen cap -c "$CAP_CONNS" -t "$TIMEOUT_MS"
    CAP_BEFORE=$(field cap ok_per_s)
    CAP=$CAP_BEFORE # the rates below; the ratios use the mean with the capacity measured last

    echo "== closed loop: wrk -t2 -c512 -d${SECONDS_RUN}s, X-Timeout-Ms: $TIMEOUT_MS"
    # --timeout 10s: a 504 at the 2 s deadline is an answer, not a client timeout
    $GEN wrk -t2 -c512 -d"${SECONDS_RUN}s" --timeout 10s -s "$TMP/overload.lua" \
        "http://127.0.0.1:$PORT$JOB" \
        >"$TMP/wrk.txt" 2>&1 || die "wrk failed: $(cat "$TMP/wrk.txt")"
    cat "$TMP/wrk.txt"
    WRK_TOTAL=$(awk '/requests in/ { print $1 }' "$TMP/wrk.txt")
    WRK_BAD=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$TMP/wrk.txt")
    WRK_SECS=$(awk '/requests in/ { v = $4; sub(/s,?$/, "", v); print v }' "$TMP/wrk.txt")
    WRK_GOOD=$(calc "(${WRK_TOTAL:-0} - ${WRK_BAD:-0}) / ${WRK_SECS:-1}")
    echo "== closed loop: bench/overload -c512 (deadline check)"
    gen closed -c 512 -t "$TIMEOUT_MS"

    RATE=$(calc "4 * $CAP")
    echo "== open loop: $RATE requests/s (4 x capacity)"
    gen open -c 3000 -r "$RATE" -t "$TIMEOUT_MS"

    RB=$(calc "0.15 * $CAP")
    RA=$(calc "1.5 * $CAP")
    echo "== fairness: B alone at $RB/s, then A at $RA/s with B at $RB/s"
    gen b_alone -c 256 -r "$RB" -T b -t "$TIMEOUT_MS"
    $GEN "$OVERLOAD_BIN" -p "$PORT" -d "$SECONDS_RUN" -c 2000 -r "$RA" -T a -t "$TIMEOUT_MS" "$JOB" \
        >"$TMP/a_with.txt" &
    A_PID=$!
    gen b_with -c 256 -r "$RB" -T b -t "$TIMEOUT_MS"
    wait "$A_PID" || die "overload (tenant a) failed"
    cat "$TMP/a_with.txt"
    echo "== capacity again: closed loop, $CAP_CONNS connections, ${SECONDS_RUN}s"
    gen cap_after -c "$CAP_CONNS" -t "$TIMEOUT_MS"
    CAP_AFTER=$(field cap_after ok_per_s)
    CAP=$(calc "($CAP_BEFORE + $CAP_AFTER) / 2")
    CAP_NOTE=$(awk "BEGIN { d = $CAP_BEFORE - $CAP_AFTER; if (d < 0) d = -d;
        if (d > 0.1 * $CAP) print \" (differ by > 10 %: other load moved, the ratios are noisy)\" }")
    curl -sf "http://127.0.0.1:$PORT/metrics" >"$TMP/metrics.txt" || true
    stop_spindle

    CLOSED_GOOD=$(field closed ok_per_s)
    OPEN_GOOD=$(field open ok_per_s)
    B_ALONE_P99=$(field b_alone ok_p99_ms)
    B_WITH_P99=$(field b_with ok_p99_ms)
    B_SENT=$(field b_with sent)
    B_OK=$(field b_with ok)
    A_OK=$(field a_with ok)
    # B's weighted share of the completions (equal weights): half of them, or all it asked for.
    B_SHARE=$(calc "($B_SENT < ($A_OK + $B_OK) / 2) ? $B_SENT : ($A_OK + $B_OK) / 2")

    REPORT=$(
        cat <<REP
# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, $(uname -r)
# spindle: workers = $WORKERS, queue_capacity = 1024, [log] level = warn, access = false
# load generators (wrk, bench/overload) on the same machine at nice $GEN_NICE
# job: POST $JOB, X-Timeout-Ms: $TIMEOUT_MS; runs of ${SECONDS_RUN}s over 127.0.0.1
capacity      closed loop -c$CAP_CONNS              2xx/s $CAP_BEFORE first, $CAP_AFTER last: C = $CAP$CAP_NOTE
closed loop   wrk -c512                   2xx/s $WRK_GOOD of $(calc "${WRK_TOTAL:-0} / ${WRK_SECS:-1}") answers/s = $(calc "100 * $WRK_GOOD / $CAP")% of capacity (target >= 90%: $(verdict "$WRK_GOOD >= 0.9 * $CAP"))
              overload -c512              2xx/s $CLOSED_GOOD = $(calc "100 * $CLOSED_GOOD / $CAP")% (target >= 90%: $(verdict "$CLOSED_GOOD >= 0.9 * $CAP")), 2xx p99 $(field closed ok_p99_ms) ms max $(field closed ok_max_ms) ms, refused $(field closed refused), 504 $(field closed r504)
              2xx after the deadline      $(field closed late) (target 0: $(verdict "$(field closed late) == 0"))
open loop     4 x capacity ($RATE/s)      2xx/s $OPEN_GOOD = $(calc "100 * $OPEN_GOOD / $CAP")% of capacity (target >= 90%: $(verdict "$OPEN_GOOD >= 0.9 * $CAP"))
              refusals $(field open refused) (429 $(field open r429), 503 $(field open r503)), 504 $(field open r504), late 2xx $(field open late)
              refusal latency p50 $(field open ref_p50_ms) ms p99 $(field open ref_p99_ms) ms (target < 5 ms: $(verdict "$(field open ref_p99_ms) < 5")); generator send lag p99 $(field open lag_p99_ms) ms
fairness      B alone $RB/s               p99 $B_ALONE_P99 ms, 2xx $(field b_alone ok) of $(field b_alone sent)
              B with A at $RA/s          p99 $B_WITH_P99 ms = $(calc "$B_WITH_P99 / $B_ALONE_P99") x alone (target <= 2: $(verdict "$B_WITH_P99 <= 2 * $B_ALONE_P99"))
              B completions $B_OK of $B_SENT sent, weighted share $B_SHARE (target >= share: $(verdict "$B_OK >= 0.99 * $B_SHARE")); A 2xx $A_OK, refused $(field a_with refused)
REP
    )
    echo "$REPORT"
    mkdir -p "$(dirname "$RESULTS")"
    printf '%s\n\n' "$REPORT" >>"$RESULTS"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$CAP" \
        "$(calc "100 * $WRK_GOOD / $CAP")" "$(calc "100 * $CLOSED_GOOD / $CAP")" \
        "$(field closed late)" "$(calc "100 * $OPEN_GOOD / $CAP")" "$(field open ref_p99_ms)" \
        "$(calc "$B_WITH_P99 / $B_ALONE_P99")" "$(calc "100 * $B_OK / $B_SHARE")" \
        "$(field open lag_p99_ms)" >>"$TMP/runs.tsv"
}

# The figures of runs.tsv, in order: name, unit, and the target as an awk condition on v ("" =
# none).
FIGURES="capacity|2xx/s|
closed loop wrk -c512|% of capacity|v >= 90
closed loop overload -c512|% of capacity|v >= 90
2xx after the deadline|answers|v == 0
open loop 4x capacity|% of capacity|v >= 90
refusal latency p99 (open loop)|ms|v < 5
fairness: B's p99 with A|x alone|v <= 2
fairness: B's completions|% of its share|v >= 99
generator send lag p99 (open loop)|ms|"

# summary: per figure, the median and the spread (min..max) over the runs, and in how many runs
# its target held.
summary() {
    local i=0 name unit cond vals
    echo "== $RUNS runs: median [min..max], target held in how many runs"
    while IFS='|' read -r name unit cond; do
        i=$((i + 1))
        vals=$(cut -f "$i" "$TMP/runs.tsv" | sort -g | tr '\n' ' ')
        echo "$vals" | awk -v name="$name" -v unit="$unit" -v cond="$cond" -v runs="$RUNS" '
            {
                n = split($0, a, " ")
                med = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
                ok = 0
                for (j = 1; j <= n; j++) {
                    v = a[j]
                    if (cond ~ /^v >= /) ok += v >= substr(cond, 6) + 0
                    else if (cond ~ /^v <= /) ok += v <= substr(cond, 6) + 0
                    else if (cond ~ /^v < /) ok += v < substr(cond, 5) + 0
                    else if (cond ~ /^v == /) ok += v == substr(cond, 6) + 0
                }
                t = cond == "" ? "" : sprintf("   target %s: %d of %d", substr(cond, 3), ok, runs)
                printf "%-36s %10.2f [%s..%s] %s%s\n", name, med, a[1], a[n], unit, t
            }'
    done <<<"$FIGURES"
}

: >"$TMP/runs.tsv"
for run in $(seq 1 "$RUNS"); do
    [ "$RUNS" -gt 1 ] && echo "==== run $run of $RUNS"
    run_once
done
if [ "$RUNS" -gt 1 ]; then
    SUMMARY=$(
        echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n): summary of the $RUNS runs above"
        summary
    )
    echo "$SUMMARY"
    printf '%s\n\n' "$SUMMARY" >>"$RESULTS"
fi
echo "(appended to $RESULTS)"
