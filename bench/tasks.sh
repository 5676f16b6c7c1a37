#!/bin/bash
# bench/tasks.sh - durable tasks, in one run, side by side with the raw limit and the peer.
#
#   raw limit   bench/sqlite_limit: plain SQLite inserts with the task store's durability (WAL,
#               synchronous=FULL), one row per commit and 16 rows per commit, no server: what
#               the disk allows, and what group commit can make of it.
#   enqueue     spindle (release build, [log] level = warn, access = false, a fresh store):
#               `wrk -c64` POST /v1/tasks of noop tasks delayed by a day, so nothing runs and
#               every answer is a 202 after a durable commit: tasks/s and p99. The fsyncs per
#               task over that run come from the store's commit counter in GET /metrics (one
#               fsync of the WAL per commit), or, when the metrics have none, from
#               `strace -c -f -e trace=fsync,fdatasync` attached for the same run.
#   end to end  a fresh spindle and store: `wrk -c64` POST /v1/tasks of noop tasks due at once
#               for the same time, then waiting until every task had its attempt
#               (spindle_task_attempts_total) and none is queued, retrying or running
#               (GET /v1/tasks?state=...): tasks that succeeded per second from the first
#               enqueue to the last success.
#   peer        BullMQ on Redis (appendfsync always: acknowledged = on disk), behind an HTTP API
#               shaped like /v1/tasks ($BULLMQ_PEER/bench.sh): its enqueue rate with wrk -c64
#               (p99) and the drain rate of that backlog. Needs redis-server and npm; when
#               either is missing the peer is skipped and the report says so.
# Printed and appended to bench/results/tasks.txt with the ratios (targets: enqueues/s and end
# to end tasks/s each >= 2x the peer's). Every figure of one run shares the machine with the
# load generator: compare ratios, not absolute figures across runs.
#
# Needs build/release/spindle and build/release/bench/sqlite_limit:
#   make release && make VARIANT=release bench-bins
# Environment: BUILD_DIR, SPINDLE_BIN, SQLITE_LIMIT_BIN, BENCH_DURATION (wrk -d in seconds,
# default 10), BENCH_CONNS (64), BENCH_THREADS (2), LIMIT_SECONDS (3), BULLMQ_PEER (default
# ../shared/peers/bullmq), DRAIN_TIMEOUT (seconds to wait for the backlog, 600), RESULTS.
set -eu

cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
SQLITE_LIMIT_BIN=${SQLITE_LIMIT_BIN:-$BUILD_DIR/release/bench/sqlite_limit}
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNS:-64}
THREADS=${BENCH_THREADS:-2}
LIMIT_SECONDS=${LIMIT_SECONDS:-3}
BULLMQ_PEER=${BULLMQ_PEER:-../shared/peers/bullmq}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
RESULTS=${RESULTS:-bench/results/tasks.txt}

. bench/lib.sh

need_tool wrk
need_tool curl
need_file "$SPINDLE_BIN" "run make release"
need_file "$SQLITE_LIMIT_BIN" "run make VARIANT=release bench-bins"

bench_tmp tasks

# post_lua FILE BODY: a wrk script posting BODY as JSON.
post_lua() {
    cat >"$1" <<LUA
wrk.method = "POST"
wrk.body = '$2'
wrk.headers["Content-Type"] = "application/json"
LUA
}

# start_tasks NAME: spindle with its own store in $TMP/NAME.
start_tasks() {
    spindle_start "$1" <<CONF
backlog = 4096
[log]
level = warn
access = false
file = $TMP/$1/spindle.log
[tasks]
store = $TMP/$1/tasks.db
max_unfinished = 100000000
CONF
    BASE="http://127.0.0.1:$SPINDLE_PORT"
}

# wrk_run NAME URL LUA: prints "RATE P99_MS OK_REQUESTS BAD", keeps wrk's output in
# $TMP/wrk-NAME.txt. RATE counts the 2xx answers only; BAD is the number of other answers and
# socket errors, which make the run invalid (a refused task is not a task).
wrk_run() {
    local out="$TMP/wrk-$1.txt"
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$3" "$2" >"$out" 2>&1 || {
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
            if (unit == "m") return v * 60000
            return v
        }
        /Requests\/sec:/ { rps = $2 }
        / requests in / { n = $1 }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { bad += $NF }
        /Socket errors:/ { for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) bad += $i + 0 }
        END { printf "%.1f %.3f %d %d\n", (n > 0 ? rps * (n - bad) / n : 0), p99, n - bad, bad }' "$out"
}

# store_counter: the task store's commits so far from GET /metrics (the first counter whose name
# says commit or fsync), or nothing when the metrics have none.
store_counter() {
    curl -sf --max-time 5 "$BASE/metrics" |
        awk '/^spindle_task[a-z_]*(fsync|commit)[a-z_]*_total[ {]/ { s += $NF; found = 1 }
             END { if (found) printf "%d\n", s }'
}

# busy STATE: the tasks in STATE, up to 1 (0 when none).
busy() {
    curl -sf --max-time 5 "$BASE/v1/tasks?state=$1&limit=1" |
        awk '/"id"/ { n = 1 } END { print n + 0 }'
}

# attempts: task attempts started so far (spindle_task_attempts_total), 0 when unknown.
attempts() {
    curl -sf --max-time 5 "$BASE/metrics" |
        awk '/^spindle_task_attempts_total / { n = $2 } END { printf "%d\n", n + 0 }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
verdict() {
    awk -v v="$1" -v t="$2" 'BEGIN { print ((v + 0 >= t + 0) ? "met" : "MISSED") }'
}

# ---- the raw limit --------------------------------------------------------------------------
echo "== raw limit: $SQLITE_LIMIT_BIN -d $LIMIT_SECONDS (WAL, synchronous=FULL, no server)"
"$SQLITE_LIMIT_BIN" -d "$LIMIT_SECONDS" -b 1 -b 16 "$TMP" | tee "$TMP/limit.txt"
LIM1=$(awk -F'rows_per_s=' '/rows_per_commit=1 / { print $2 }' "$TMP/limit.txt")
LIM16=$(awk -F'rows_per_s=' '/rows_per_commit=16 / { print $2 }' "$TMP/limit.txt")

# ---- spindle: enqueues ----------------------------------------------------------------------
echo "== spindle enqueue: wrk -t$THREADS -c$CONNS -d${DURATION}s POST /v1/tasks (delayed noop)"
post_lua "$TMP/delayed.lua" '{"kind":"noop","delay_ms":86400000}'
start_tasks enqueue
C0=$(store_counter)
STRACE_PID=
FSYNC_HOW="store commits (GET /metrics)"
if [ -z "$C0" ]; then
    if command -v strace >/dev/null; then
        FSYNC_HOW="strace -c -f -e trace=fsync,fdatasync"
        strace -c -f -e trace=fsync,fdatasync -o "$TMP/strace.txt" -p "$SPINDLE_PID" 2>/dev/null &
        STRACE_PID=$!
        bench_track "$STRACE_PID"
        sleep 0.5
    else
        FSYNC_HOW="not measured (no commit counter in /metrics, no strace)"
    fi
fi
read -r ENQ ENQ_P99 ENQ_N ENQ_BAD < <(wrk_run enqueue "$BASE/v1/tasks" "$TMP/delayed.lua")
FSYNCS=
if [ -n "$C0" ]; then
    C1=$(store_counter)
    FSYNCS=$((C1 - C0))
elif [ -n "$STRACE_PID" ]; then
    kill -INT "$STRACE_PID" 2>/dev/null || true
    wait "$STRACE_PID" 2>/dev/null || true
    bench_untrack "$STRACE_PID"
    FSYNCS=$(awk '$NF == "fsync" || $NF == "fdatasync" { s += $4 } END { print s + 0 }' \
        "$TMP/strace.txt" 2>/dev/null || echo "")
fi
FSYNC_PER_TASK=$(awk -v f="${FSYNCS:-}" -v n="$ENQ_N" \
    'BEGIN { if (f == "" || n <= 0) print "n/a"; else printf "%.3f", f / n }')
spindle_stop "$SPINDLE_PID"

# ---- spindle: end to end --------------------------------------------------------------------
echo "== spindle end to end: wrk -c$CONNS -d${DURATION}s POST /v1/tasks (noop), then the drain"
post_lua "$TMP/now.lua" '{"kind":"noop"}'
start_tasks e2e
T0=$(date +%s.%N)
read -r E2E_ENQ E2E_P99 E2E_N E2E_BAD < <(wrk_run e2e "$BASE/v1/tasks" "$TMP/now.lua")
T_ENQ=$(date +%s.%N)
# The end: every stored task has had its attempt (the runner's counter, no store query), then
# none is queued, retrying or running. (Listing by state scans the store: done only to confirm,
# not on every poll, so that the bench does not slow down the drain it measures.)
DEADLINE=$(($(date +%s) + DRAIN_TIMEOUT))
T1=
while :; do
    [ "$(date +%s)" -lt "$DEADLINE" ] || die "the backlog was not drained within ${DRAIN_TIMEOUT} s"
    if [ "$(attempts)" -ge "$E2E_N" ]; then
        T1=${T1:-$(date +%s.%N)}
        [ "$(busy queued)$(busy retrying)$(busy running)" = 000 ] && break
        T1= # retries: the end is later
    fi
    sleep 0.1
done
FAILED=$(busy failed)
E2E=$(awk -v n="$E2E_N" -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", n / (b - a) }')
DRAIN_S=$(awk -v a="$T_ENQ" -v b="$T1" 'BEGIN { printf "%.2f", b - a }')
spindle_stop "$SPINDLE_PID"
[ "$FAILED" = 0 ] || echo "bench: warning: some tasks failed (GET /v1/tasks?state=failed)" >&2

# ---- the peer -------------------------------------------------------------------------------
bullmq_peer "$DURATION"

if [ "$PEER" = ran ]; then
    R_ENQ="$(ratio "$ENQ" "$PEER_ENQ")x the peer's (target >= 2x: $(verdict "$(ratio "$ENQ" "$PEER_ENQ")" 2))"
    R_E2E="$(ratio "$E2E" "$PEER_DRAIN")x the peer's drain (target >= 2x: $(verdict "$(ratio "$E2E" "$PEER_DRAIN")" 2))"
    PEER_LINE="peer     BullMQ enqueue tasks/s $PEER_ENQ (p99 $PEER_P99)   drain tasks/s $PEER_DRAIN"
else
    R_ENQ="no peer figure"
    R_E2E="no peer figure"
    PEER_LINE="peer     BullMQ: $PEER"
fi

INVALID=
if [ "$ENQ_BAD" != 0 ] || [ "$E2E_BAD" != 0 ]; then
    INVALID="INVALID  non-2xx answers or socket errors: enqueue $ENQ_BAD, end to end $E2E_BAD
"
fi

REPORT=$(
    cat <<REP
# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, $(uname -r)
# spindle: workers = CPUs, [log] level = warn, access = false, a fresh SQLite store per phase
# wrk -t$THREADS -c$CONNS -d${DURATION}s --latency over 127.0.0.1, POST /v1/tasks
limit    sqlite, 1 row per commit     rows/s $LIM1
limit    sqlite, 16 rows per commit   rows/s $LIM16
spindle  enqueue (delayed noop)       tasks/s $ENQ   p99 ${ENQ_P99} ms   (${ENQ_N} stored)
         $(ratio "$ENQ" "$LIM1")x the 1-row limit, $(ratio "$ENQ" "$LIM16")x the 16-row limit
         fsyncs per task $FSYNC_PER_TASK ($FSYNC_HOW)
         $R_ENQ
spindle  end to end (noop)            tasks/s $E2E   (${E2E_N} tasks, enqueue p99 ${E2E_P99} ms,
         backlog drained ${DRAIN_S} s after the last enqueue)
         $R_E2E
$PEER_LINE
$INVALID# other load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min load average at the end)
REP
)
echo "$REPORT"
mkdir -p "$(dirname "$RESULTS")"
echo "$REPORT" >>"$RESULTS"
[ -z "$INVALID" ] || die "invalid run: answers other than 2xx (see above)"
