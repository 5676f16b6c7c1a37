#!/bin/bash
# bench/jobs.sh - the job endpoints against the no-server ceiling of the same work.
#
# bench/limit runs each job kind's parse -> run -> answer -> free in a tight loop on every CPU,
# with no server, no HTTP and no queue: the most jobs per second the machine can do. Then one
# spindle (release build, [log] level = warn, access = false: no per-request log line, the
# like-for-like setting of bench/run.sh) answers the same jobs over loopback under
# `wrk -t2 -c64 -d10s --latency` (bench/post.lua makes every request a POST). Printed and
# appended to bench/results/jobs.txt:
#   primes?n=200000   jobs/s, p50, p99, ratio to limit   target >= 95 %  (long jobs: the pool's
#                                                                           hand-offs are noise)
#   primes?n=20000    jobs/s, p50, p99, ratio to limit   target >= 85 %  (~0.7 ms jobs)
#   noop              jobs/s, p50, p99, ratio to GET /healthz            target >= 60 %  (the
#                                                         whole cost of a job round trip)
#   GET /healthz      req/s, p50, p99 (the HTTP-only yardstick)
# wrk runs on the same machine and competes for the CPUs the server's workers use; limit does
# not share them with anything. Compare ratios, not absolute figures across machines. limit runs
# once before and once after the server and the mean is the ceiling (both are shown: when they
# differ much, other load on the machine moved and the ratios are noisy). For each run the
# server's CPU time per answer (from /proc/PID/stat, all threads) is shown too: other load on
# the machine lowers the rates but hardly moves it. On an otherwise idle machine limit's us/job
# (a thread's wall time per job) is the job's own CPU time, so the difference to the server's
# cpu/job is what the server adds per job (HTTP, queueing, hand-offs, context switches).
#
# Needs build/release/spindle and build/release/bench/limit:
#   make release && make VARIANT=release bench-bins      (or: make bench)
# Environment: BUILD_DIR (as given to make; default build), SPINDLE_BIN, LIMIT_BIN,
# BENCH_DURATION (wrk -d, default 10s), BENCH_CONNS (wrk -c, 64), BENCH_THREADS (wrk -t, 2),
# LIMIT_SECONDS (limit -d, default 3), RESULTS (default bench/results/jobs.txt).
set -eu

cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
LIMIT_BIN=${LIMIT_BIN:-$BUILD_DIR/release/bench/limit}
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-64}
THREADS=${BENCH_THREADS:-2}
LIMIT_SECONDS=${LIMIT_SECONDS:-3}
RESULTS=${RESULTS:-bench/results/jobs.txt}

. bench/lib.sh

need_tool wrk
need_tool curl
need_file "$SPINDLE_BIN" "run make release"
need_file "$LIMIT_BIN" "run make VARIANT=release bench-bins"
[ -f bench/post.lua ] || die "bench/post.lua is missing"

bench_tmp jobs

start_spindle() {
    spindle_start jobs <<CONF
backlog = 4096
[log]
level = warn
access = false
file = $TMP/jobs/spindle.log
CONF
    PORT=$SPINDLE_PORT
}

stop_spindle() { spindle_stop "$SPINDLE_PID"; }

# limit_get FILE KIND PARAMS FIELD: FIELD (jobs_per_s, thread_us_per_job) of limit's workload in
# its output FILE.
limit_get() {
    awk -v k="kind=$2" -v p="params=$3" -v f="$4=" '$2 == k && $3 == p {
        for (i = 1; i <= NF; i++)
            if (index($i, f) == 1) print substr($i, length(f) + 1)
    }' "$1"
}

# limit_mean KIND PARAMS FIELD: the mean of FIELD over the two limit runs (before and after).
limit_mean() {
    awk -v a="$(limit_get "$TMP/limit-1.txt" "$@")" -v b="$(limit_get "$TMP/limit-2.txt" "$@")" \
        'BEGIN { if (a == "" || b == "") exit 1; printf "%.1f", (a + b) / 2 }'
}

run_limit() {
    local h0
    echo "== job ceiling ($1): bench/limit -d $LIMIT_SECONDS (no server), $(nproc) CPUs"
    h0=$(host_ticks)
    "$LIMIT_BIN" -d "$LIMIT_SECONDS" primes noop >"$TMP/limit-$2.txt" || die "limit failed"
    steal_pct "$h0" "$(host_ticks)" >"$TMP/steal-$2.txt"
    cat "$TMP/limit-$2.txt"
}

# cpu_ticks PID: user + system CPU time the process has used, in clock ticks (/proc/PID/stat).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# host_ticks: "ALL STEAL" clock ticks of every CPU since boot (/proc/stat), for steal_pct.
host_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9 }' /proc/stat; }
# steal_pct "ALL0 STEAL0" "ALL1 STEAL1": the share of CPU time the hypervisor gave to others.
steal_pct() {
    echo "$1 $2" | awk '{ d = $3 - $1; printf "%.0f", (d > 0) ? 100 * ($4 - $2) / d : 0 }'
}
CLK_TCK=$(getconf CLK_TCK)

# run_wrk NAME METHOD URL: prints "RATE P50_MS P99_MS CPU_US STEAL BAD". Latencies (wrk's
# "812.00us", "1.23ms", "2.01s") in milliseconds; CPU_US = the server's CPU time (every thread,
# user + system) per answer in microseconds, which other load on the machine inflates far less
# than it deflates the rate; STEAL = % of CPU time the hypervisor gave to other guests meanwhile;
# BAD = non-2xx answers, "+sock" on socket errors, else 0. Warns on stderr when BAD is not 0, and
# keeps wrk's output in $TMP/wrk-NAME.txt.
run_wrk() {
    local out="$TMP/wrk-$1.txt" script=() t0 t1 h0 h1
    [ "$2" = POST ] && script=(-s bench/post.lua)
    t0=$(cpu_ticks "$SPINDLE_PID")
    h0=$(host_ticks)
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${script[@]}" "$3" >"$out" 2>&1 || {
        cat "$out" >&2
        die "wrk failed on $3"
    }
    t1=$(cpu_ticks "$SPINDLE_PID")
    h1=$(host_ticks)
    if grep -q 'Non-2xx\|Socket errors' "$out"; then
        echo "bench: warning ($1): $(grep 'Non-2xx\|Socket errors' "$out" | tr -s ' ')" >&2
    fi
    awk -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" -v steal="$(steal_pct "$h0" "$h1")" '
        function ms(v,   unit) {
            unit = v; sub(/^[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
            if (unit == "us") return v / 1000
            if (unit == "s") return v * 1000
            if (unit == "m") return v * 60000
            return v
        }
        /Requests\/sec:/ { rps = $2 }
        / requests in / { n = $1 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        /Socket errors:/ { bad = bad "+sock" }
        END {
            cpu = (n > 0) ? ticks * 1e6 / hz / n : 0
            printf "%.1f %.3f %.3f %.1f %s %s\n", rps, p50, p99, cpu, steal, (bad == "") ? 0 : bad
        }' "$out"
}

# (Parenthesised: in awk, `printf ..., b > 0 ? ...` would redirect the output to a file "0".)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { r = (b > 0) ? 100 * a / b : 0; printf "%.1f", r }'; }
verdict() {
    awk -v v="$1" -v t="$2" 'BEGIN { ok = (v + 0 >= t + 0); print (ok ? "met" : "MISSED") }'
}

run_limit before 1

echo "== spindle: wrk -t$THREADS -c$CONNS -d$DURATION --latency over 127.0.0.1"
start_spindle
BASE="http://127.0.0.1:$PORT"
read -r P200K P200K_50 P200K_99 P200K_CPU P200K_STEAL _ < <(run_wrk primes200000 POST \
    "$BASE/v1/jobs/primes?n=200000")
read -r P20K P20K_50 P20K_99 P20K_CPU P20K_STEAL _ < <(run_wrk primes20000 POST \
    "$BASE/v1/jobs/primes?n=20000")
read -r NOOP NOOP_50 NOOP_99 NOOP_CPU NOOP_STEAL _ < <(run_wrk noop POST "$BASE/v1/jobs/noop")
read -r HZ HZ_50 HZ_99 HZ_CPU HZ_STEAL _ < <(run_wrk healthz GET "$BASE/healthz")
stop_spindle

# The ceiling again: other load on the machine drifts; the mean of both runs is the reference.
run_limit after 2
LIM_P200K=$(limit_mean primes n=200000 jobs_per_s) || die "unexpected limit output"
LIM_P20K=$(limit_mean primes n=20000 jobs_per_s) || die "unexpected limit output"
LIM_NOOP=$(limit_mean noop - jobs_per_s) || die "unexpected limit output"
LIM_P200K_US=$(limit_mean primes n=200000 thread_us_per_job) || die "unexpected limit output"
LIM_P20K_US=$(limit_mean primes n=20000 thread_us_per_job) || die "unexpected limit output"
spread() {
    echo "$(limit_get "$TMP/limit-1.txt" "$@") / $(limit_get "$TMP/limit-2.txt" "$@")"
}

R200K=$(ratio "$P200K" "$LIM_P200K")
R20K=$(ratio "$P20K" "$LIM_P20K")
RNOOP=$(ratio "$NOOP" "$HZ")

REPORT=$(
    cat <<REP
# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, $(uname -r)
# spindle: workers = CPUs, [log] level = warn, access = false
# wrk -t$THREADS -c$CONNS -d$DURATION --latency over 127.0.0.1 (POST via bench/post.lua)
# limit: bench/limit -d $LIMIT_SECONDS, one thread per CPU, no server (us/job: a thread's wall time)
# spindle cpu/job: the server process's CPU time (all threads, user + system) per answer
# limit figures: the mean of a run before and one after spindle's (before / after in brackets)
# steal: CPU time the hypervisor gave to other guests during a run (limit: before / after)
limit    steal $(cat "$TMP/steal-1.txt")% / $(cat "$TMP/steal-2.txt")%
limit    primes?n=200000   jobs/s $LIM_P200K ($(spread primes n=200000 jobs_per_s))
         us/job $LIM_P200K_US
limit    primes?n=20000    jobs/s $LIM_P20K ($(spread primes n=20000 jobs_per_s))
         us/job $LIM_P20K_US
limit    noop              jobs/s $LIM_NOOP
spindle  primes?n=200000   jobs/s $P200K   p50 ${P200K_50} ms   p99 ${P200K_99} ms
         cpu/job ${P200K_CPU} us   steal ${P200K_STEAL}%
         ${R200K}% of limit (target >= 95%: $(verdict "$R200K" 95))
spindle  primes?n=20000    jobs/s $P20K   p50 ${P20K_50} ms   p99 ${P20K_99} ms
         cpu/job ${P20K_CPU} us   steal ${P20K_STEAL}%
         ${R20K}% of limit (target >= 85%: $(verdict "$R20K" 85))
spindle  noop              jobs/s $NOOP   p50 ${NOOP_50} ms   p99 ${NOOP_99} ms
         cpu/job ${NOOP_CPU} us   steal ${NOOP_STEAL}%
         ${RNOOP}% of GET /healthz (target >= 60%: $(verdict "$RNOOP" 60))
spindle  GET /healthz      req/s  $HZ   p50 ${HZ_50} ms   p99 ${HZ_99} ms
         cpu/req ${HZ_CPU} us   steal ${HZ_STEAL}%
# other load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min load average at the end)
REP
)
echo "$REPORT"
mkdir -p "$(dirname "$RESULTS")"
printf '%s\n\n' "$REPORT" >>"$RESULTS"
echo "(appended to $RESULTS)"
