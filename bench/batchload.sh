#!/bin/bash
# bench/batchload.sh - /healthz latency while 1 MiB POST /v1/batch bodies arrive at 50 per second.
#
# One spindle ([pool] workers = BENCH_WORKERS, default the number of CPUs; [log] level = warn,
# access = false; limits.max_body_bytes = 2 MiB) on loopback; bench/batchload (this directory)
# sends BENCH_RATE (50) batches per second, each one JSON array of one sha256 item (rounds=1)
# whose body string fills the request body to BENCH_BODY bytes (1048576), and probes GET /healthz
# every 5 ms on a connection of its own. Each run lasts BENCH_SECONDS (10); BENCH_RUNS (5) runs,
# each against a fresh server, then the medians of the runs' /healthz p50, p99 and max.
#
# SPINDLE_BIN=path runs another binary (e.g. an older build, to compare before and after).
# Needs build/release/bench/batchload (make VARIANT=release bench-bins) and curl. Printed, and
# appended to bench/results/batchload.txt (RESULTS). Not part of make test or make bench.
set -eu

cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
LOAD_BIN=${BATCHLOAD_BIN:-$BUILD_DIR/release/bench/batchload}
SECONDS_RUN=${BENCH_SECONDS:-10}
RUNS=${BENCH_RUNS:-5}
RATE=${BENCH_RATE:-50}
BODY=${BENCH_BODY:-1048576}
WORKERS=${BENCH_WORKERS:-$(nproc)}
RESULTS=${RESULTS:-bench/results/batchload.txt}

. bench/lib.sh

need_tool curl
need_file "$SPINDLE_BIN" "run make release"
need_file "$LOAD_BIN" "run make VARIANT=release bench-bins"

bench_tmp batchload

start_spindle() {
    spindle_start "batchload-$1" <<CONF
[pool]
workers = $WORKERS
[limits]
max_body_bytes = 2097152
[log]
level = warn
access = false
file = $TMP/batchload-$1/spindle.log
CONF
    PORT=$SPINDLE_PORT
}

stop_spindle() { spindle_stop "$SPINDLE_PID"; }

field() { tr ' ' '\n' <"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for i in $(seq 1 "$RUNS"); do
    start_spindle "$i"
    "$LOAD_BIN" -p "$PORT" -r "$RATE" -d "$SECONDS_RUN" -s "$BODY" >"$TMP/run$i.txt" ||
        die "batchload failed"
    stop_spindle
    cat "$TMP/run$i.txt"
done

p50=$(for i in $(seq 1 "$RUNS"); do field "$TMP/run$i.txt" health_p50_ms; done | median)
p99=$(for i in $(seq 1 "$RUNS"); do field "$TMP/run$i.txt" health_p99_ms; done | median)
max=$(for i in $(seq 1 "$RUNS"); do field "$TMP/run$i.txt" health_max_ms; done | median)
{
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(basename "$SPINDLE_BIN") ($SPINDLE_BIN) $(uname -n)" \
        "$(nproc) CPUs, workers=$WORKERS"
    echo "batchload rate=$RATE/s body=$BODY bytes runs=$RUNS x ${SECONDS_RUN}s:" \
        "healthz median of runs p50=${p50} ms p99=${p99} ms max=${max} ms"
} | tee -a "$RESULTS"
