#!/bin/bash
# bench/exec.sh - an exec kind against the plain spawn loop, as ratios in one run.
#
# The ceiling is bench/spawnloop -m posix: one thread per CPU starting /bin/true with posix_spawn
# (own process group, stdio on /dev/null) and waiting for it, in a loop, with nothing else on the
# machine's CPUs but that. Against it, in the same run:
#   engine   bench/spawnloop -m engine: the same loop through spindle's exec engine (pipes, pidfd,
#            eventfd and a cancel watch, vfork with its own process group, reaping) without HTTP
#   spindle  POST /v1/jobs/true of a spindle serving `[kind.true] exec = /bin/true` (workers =
#            CPUs, [log] level = warn, access = false) under `wrk -t1 -cCONNS -dDURATION`; wrk and
#            the loop thread share the CPUs with the programs, as in real use
# Target: spindle >= 80 % of the spawn loop. The loop runs before and after (the mean is the
# ceiling; both shown: when they differ much, other load moved and the ratios are noisy).
# The rates are a fair comparison only on an otherwise idle machine: under other load, the
# scheduler shares the CPUs among processes and threads, and spindle (loop, workers, wrk, the
# programs) takes a larger share than the loop's two threads, so its ratio can pass 100 %. The
# CPU time per run does not depend on that: the loop's own (getrusage of it and its children)
# against the server's (utime + stime + cutime + cstime of /proc/PID/stat, the programs
# included, wrk not) per answered request. Its ratio (loop CPU / spindle CPU) is the rate
# spindle would reach against the loop with the machine to itself.
# Printed and appended to bench/results/exec.txt.
#
# Needs build/release/spindle and build/release/bench/spawnloop:
#   make release && make VARIANT=release bench-bins
# Environment: BUILD_DIR (default build), SPINDLE_BIN, SPAWNLOOP_BIN, BENCH_DURATION (wrk -d,
# default 10s), BENCH_CONNS (wrk -c, default 2 x CPUs), LOOP_SECONDS (default 5), RESULTS.
set -eu

cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
SPAWNLOOP_BIN=${SPAWNLOOP_BIN:-$BUILD_DIR/release/bench/spawnloop}
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-$((2 * $(nproc)))}
LOOP_SECONDS=${LOOP_SECONDS:-5}
RESULTS=${RESULTS:-bench/results/exec.txt}

. bench/lib.sh

need_tool wrk
need_tool curl
need_file "$SPINDLE_BIN" "run make release"
need_file "$SPAWNLOOP_BIN" "run make VARIANT=release bench-bins"
[ -f bench/post.lua ] || die "bench/post.lua is missing"

bench_tmp exec

# loop MODE: runs per second of spawnloop in MODE.
loop() {
    "$SPAWNLOOP_BIN" -d "$LOOP_SECONDS" -m "$1" /bin/true >"$TMP/loop.txt" ||
        die "spawnloop -m $1 failed: $(cat "$TMP/loop.txt")"
    sed -n 's/.* per_s=\([0-9.]*\) .*/\1/p' "$TMP/loop.txt"
    sed -n 's/.* cpu_us_per_run=\([0-9.]*\).*/\1/p' "$TMP/loop.txt" >"$TMP/loop_cpu.txt"
}

# cpu_ticks PID: utime + stime + cutime + cstime of PID, in clock ticks.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$1/stat"; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { r = (b > 0) ? 100 * a / b : 0; printf "%.1f", r }'; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print ((v + 0 >= t + 0) ? "met" : "MISSED") }'; }

echo "== spawn loop (before): $SPAWNLOOP_BIN -m posix -d $LOOP_SECONDS, $(nproc) threads"
POSIX1=$(loop posix)
CPU_POSIX1=$(cat "$TMP/loop_cpu.txt")
echo "   $POSIX1 /s, $CPU_POSIX1 us of CPU per run"
echo "== exec engine without HTTP: -m engine"
ENGINE=$(loop engine)
CPU_ENGINE=$(cat "$TMP/loop_cpu.txt")
echo "   $ENGINE /s, $CPU_ENGINE us of CPU per run"

echo "== spindle: [kind.true] exec = /bin/true, wrk -t1 -c$CONNS -d$DURATION"
spindle_start exec <<CONF
backlog = 4096
[log]
level = warn
access = false
file = $TMP/exec/spindle.log
[kind.true]
exec = /bin/true
CONF
URL="http://127.0.0.1:$SPINDLE_PORT/v1/jobs/true"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL")" = 200 ] ||
    die "POST /v1/jobs/true did not answer 200: $(curl -s -X POST "$URL")"
TICKS0=$(cpu_ticks "$SPINDLE_PID")
wrk -t1 -c"$CONNS" -d"$DURATION" -s bench/post.lua "$URL" >"$TMP/wrk.txt" 2>&1 ||
    die "wrk failed: $(cat "$TMP/wrk.txt")"
TICKS1=$(cpu_ticks "$SPINDLE_PID")
REQS=$(awk '/requests in/ { print $1 }' "$TMP/wrk.txt")
CPU_SPINDLE=$(awk -v t="$((TICKS1 - TICKS0))" -v hz="$(getconf CLK_TCK)" -v n="$REQS" \
    'BEGIN { printf "%.1f", (n > 0) ? t * 1e6 / hz / n : 0 }')
if grep -q 'Non-2xx\|Socket errors' "$TMP/wrk.txt"; then
    echo "bench: warning: $(grep 'Non-2xx\|Socket errors' "$TMP/wrk.txt" | tr -s ' ')" >&2
fi
SPINDLE=$(awk '/Requests\/sec:/ { print $2 }' "$TMP/wrk.txt")
spindle_stop "$SPINDLE_PID"
echo "   $SPINDLE /s, $CPU_SPINDLE us of CPU per job"

echo "== spawn loop (after)"
POSIX2=$(loop posix)
CPU_POSIX2=$(cat "$TMP/loop_cpu.txt")
echo "   $POSIX2 /s, $CPU_POSIX2 us of CPU per run"
CEIL=$(awk -v a="$POSIX1" -v b="$POSIX2" 'BEGIN { printf "%.1f", (a + b) / 2 }')
R_SPINDLE=$(ratio "$SPINDLE" "$CEIL")
R_ENGINE=$(ratio "$ENGINE" "$CEIL")
CPU_CEIL=$(awk -v a="$CPU_POSIX1" -v b="$CPU_POSIX2" 'BEGIN { printf "%.1f", (a + b) / 2 }')
C_SPINDLE=$(ratio "$CPU_CEIL" "$CPU_SPINDLE")
C_ENGINE=$(ratio "$CPU_CEIL" "$CPU_ENGINE")

REPORT=$(
    cat <<REP
# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, $(uname -r)
# ceiling: spawnloop -m posix (posix_spawn + waitpid of /bin/true, one thread per CPU), the mean
# of a run before and one after spindle's
spawnloop posix    runs/s $CEIL ($POSIX1 / $POSIX2)
spawnloop engine   runs/s $ENGINE   ${R_ENGINE}% of the loop
spindle  exec true jobs/s $SPINDLE   ${R_SPINDLE}% of the loop (target >= 80%: $(verdict "$R_SPINDLE" 80))
cpu per run: loop ${CPU_CEIL} us ($CPU_POSIX1 / $CPU_POSIX2), engine ${CPU_ENGINE} us (${C_ENGINE}%), spindle ${CPU_SPINDLE} us per job (${C_SPINDLE}%: loop CPU / spindle CPU)
# other load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min load average at the end)
REP
)
echo "$REPORT"
mkdir -p "$(dirname "$RESULTS")"
echo "$REPORT" >>"$RESULTS"
