#!/bin/bash
# bench/module.sh - a job kind from a module against the same kind built in: the module ABI's
# cost on the shortest job there is.
#
# One spindle (release build, [log] level = warn, access = false, as bench/jobs.sh) serves the
# built-in noop and [kind.modnoop], the noop written as a module (tests/modules/mod_noop.c, built
# as a shared object and loaded with dlopen). Both answer {"ok":true} through the pool; the only
# difference is where the kind's code lives. wrk (`-t2 -c64 --latency`, POST via bench/post.lua)
# runs them in turns, ROUNDS times each (noop, modnoop, noop, modnoop, ...), so that drift in the
# machine's other load falls on both alike; the rates are the means of the rounds. Printed and
# appended to bench/results/module.txt:
#   noop      jobs/s, p50, p99 (built in)
#   modnoop   jobs/s, p50, p99 (module)   ratio to noop, target >= 95 %
# wrk shares the CPUs with the server: compare the ratio, not the absolute figures.
#
# Needs build/release/spindle and build/release/tests/modules/mod_noop.so:
#   make release && make VARIANT=release bench-bins      (or: make bench)
# Environment: BUILD_DIR (default build), SPINDLE_BIN, MODULE_SO, BENCH_DURATION (wrk -d per
# round, default 5s), BENCH_CONNS (64), BENCH_THREADS (2), ROUNDS (3), RESULTS (default
# bench/results/module.txt).
set -eu

cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
MODULE_SO=${MODULE_SO:-$BUILD_DIR/release/tests/modules/mod_noop.so}
DURATION=${BENCH_DURATION:-5s}
CONNS=${BENCH_CONNS:-64}
THREADS=${BENCH_THREADS:-2}
ROUNDS=${ROUNDS:-3}
RESULTS=${RESULTS:-bench/results/module.txt}

. bench/lib.sh

need_tool wrk
need_tool curl
need_file "$SPINDLE_BIN" "run make release"
[ -f "$MODULE_SO" ] || die "$MODULE_SO is missing: run make VARIANT=release bench-bins"
[ -f bench/post.lua ] || die "bench/post.lua is missing"
MODULE_SO=$(realpath "$MODULE_SO")

bench_tmp module

# run_wrk NAME URL: prints "RATE P50_MS P99_MS BAD" and keeps wrk's output in $TMP/wrk-NAME.txt.
run_wrk() {
    local out="$TMP/wrk-$1.txt"
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s bench/post.lua "$2" >"$out" 2>&1 || {
        cat "$out" >&2
        die "wrk failed on $2"
    }
    if grep -q 'Non-2xx\|Socket errors' "$out"; then
        echo "bench: warning ($1): $(grep 'Non-2xx\|Socket errors' "$out" | tr -s ' ')" >&2
    fi
    awk '
        function ms(v,   unit) {
            unit = v; sub(/^[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
            if (unit == "us") return v / 1000
            if (unit == "s") return v * 1000
            return v
        }
        /Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        /Socket errors:/ { bad = bad "+sock" }
        END { printf "%.1f %.3f %.3f %s\n", rps, p50, p99, (bad == "") ? 0 : bad }' "$out"
}

spindle_start module <<CONF
backlog = 4096
[log]
level = warn
access = false
file = $TMP/module/spindle.log
[kind.modnoop]
module = $MODULE_SO
CONF
BASE="http://127.0.0.1:$SPINDLE_PORT"
curl -sf -X POST "$BASE/v1/jobs/modnoop" | grep -q '"ok":true' || die "modnoop does not answer"

echo "== noop (built in) and modnoop (module), $ROUNDS rounds of wrk -t$THREADS -c$CONNS" \
    "-d$DURATION each, in turns"
for r in $(seq 1 "$ROUNDS"); do
    for k in noop modnoop; do
        read -r rate p50 p99 bad < <(run_wrk "$k-$r" "$BASE/v1/jobs/$k")
        echo "$k $rate $p50 $p99 $bad" | tee -a "$TMP/rounds.txt"
    done
done
spindle_stop "$SPINDLE_PID"

# mean KIND FIELD: the mean of FIELD (2 rate, 3 p50, 4 p99) over the kind's rounds.
mean() { awk -v k="$1" -v f="$2" '$1 == k { s += $f; n++ } END { printf "%.1f", s / n }' \
    "$TMP/rounds.txt"; }
meanms() { awk -v k="$1" -v f="$2" '$1 == k { s += $f; n++ } END { printf "%.3f", s / n }' \
    "$TMP/rounds.txt"; }
NOOP=$(mean noop 2)
MOD=$(mean modnoop 2)
RATIO=$(awk -v a="$MOD" -v b="$NOOP" 'BEGIN { printf "%.1f", (b > 0) ? 100 * a / b : 0 }')
VERDICT=$(awk -v v="$RATIO" 'BEGIN { print (v + 0 >= 95 ? "met" : "MISSED") }')

REPORT=$(
    cat <<REP
# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, $(uname -r)
# spindle: workers = CPUs, [log] level = warn, access = false; modnoop = tests/modules/mod_noop.c
# wrk -t$THREADS -c$CONNS -d$DURATION --latency over 127.0.0.1 (POST), $ROUNDS rounds each, in turns
noop      jobs/s $NOOP   p50 $(meanms noop 3) ms   p99 $(meanms noop 4) ms   (built in)
modnoop   jobs/s $MOD   p50 $(meanms modnoop 3) ms   p99 $(meanms modnoop 4) ms   (module)
          ${RATIO}% of noop (target >= 95%: $VERDICT)
# rounds (kind jobs/s p50 p99 non-2xx): $(tr '\n' ';' <"$TMP/rounds.txt")
# other load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min load average at the end)
REP
)
echo "$REPORT"
mkdir -p "$(dirname "$RESULTS")"
printf '%s\n\n' "$REPORT" >>"$RESULTS"
echo "(appended to $RESULTS)"
