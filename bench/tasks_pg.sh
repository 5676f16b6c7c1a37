#!/bin/bash
# bench/tasks_pg.sh - durable tasks on one PostgreSQL database shared by 1, 2 and 3 spindle
# instances, in one run, side by side with the raw limit and the peer.
#
#   database    a throw-away cluster started here (Debian's initdb and pg_ctl, as the postgres
#               user when run as root) on 127.0.0.1 with fsync = on and synchronous_commit = on:
#               a COMMIT returns once its WAL is flushed to disk, as in production.
#   raw limit   bench/pg_limit: plain libpq inserts (1 and 16 per commit) and the cycle insert,
#               claim (FOR UPDATE SKIP LOCKED), complete, with one connection and with 3: what the
#               server allows with nothing around it.
#   enqueue     N = 1, 2, 3 spindle instances (release build, [log] level = warn, access = false)
#               on a new database: one wrk per instance at once (BENCH_CONNS connections shared
#               out), POST /v1/tasks of noop tasks delayed by a day, so every answer is a 202
#               after a durable commit: the sum of their tasks/s and the worst p99.
#   end to end  N instances on a new database: the same wrk load of noop tasks due at once, then
#               waiting until the database has none queued, retrying or running: tasks that
#               succeeded per second from the first enqueue to the last success.
#   before      when SPINDLE_BEFORE_BIN names another build (e.g. the one before a change), its
#               enqueue figure with 1 instance, measured right before this build's.
#   statements  with PG_STATS=1, pg_stat_statements (track_planning on) is loaded and each end to
#               end figure gets PostgreSQL's planning and execution time per task succeeded
#               (the sums over that phase's database): what the store's statements cost.
#   peer        BullMQ on Redis with appendfsync always ($BULLMQ_PEER/bench.sh, as in
#               bench/tasks.sh): its enqueue rate (wrk -c64) and the drain rate of that backlog.
# Printed and appended to bench/results/tasks_pg.txt with the ratios to the peer (target:
# ahead of BullMQ with fsync always). The database, the instances, wrk and the peer all share
# this machine's CPUs: compare the ratios of one run, not absolute figures across runs.
#
# Needs build/release/spindle and build/release/bench/pg_limit:
#   make release && make VARIANT=release bench-bins
# Environment: BUILD_DIR, SPINDLE_BIN, SPINDLE_BEFORE_BIN, PG_LIMIT_BIN, BENCH_DURATION (wrk -d
# in seconds, default 8), BENCH_CONNS (64), LIMIT_SECONDS (3), INSTANCES ("1 2 3"), PG_STATS, BULLMQ_PEER
# (default ../shared/peers/bullmq), DRAIN_TIMEOUT (seconds, 300), RESULTS.
set -eu

cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
PG_LIMIT_BIN=${PG_LIMIT_BIN:-$BUILD_DIR/release/bench/pg_limit}
DURATION=${BENCH_DURATION:-8}
CONNS=${BENCH_CONNS:-64}
LIMIT_SECONDS=${LIMIT_SECONDS:-3}
INSTANCES=${INSTANCES:-1 2 3}
BULLMQ_PEER=${BULLMQ_PEER:-../shared/peers/bullmq}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
RESULTS=${RESULTS:-bench/results/tasks_pg.txt}
PG_STATS=${PG_STATS:-}
SPINDLE_BEFORE_BIN=${SPINDLE_BEFORE_BIN:-}
WORKERS=${WORKERS:-8}
WORKER_SHARE=${WORKER_SHARE:-100}

. bench/lib.sh

need_tool wrk
need_tool curl
need_tool psql postgresql-client
need_file "$SPINDLE_BIN" "run make release"
need_file "$PG_LIMIT_BIN" "run make VARIANT=release bench-bins"
[ -z "$SPINDLE_BEFORE_BIN" ] || need_file "$SPINDLE_BEFORE_BIN" "build it first"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || die "initdb is missing: sudo apt-get install -y postgresql"

bench_tmp tasks-pg

# ---- the database ---------------------------------------------------------------------------
PGDIR=$(mktemp -d /tmp/spindle-pgbench-XXXXXX)
AS_PG=()
if [ "$(id -u)" = 0 ]; then # initdb refuses root
    chown postgres: "$PGDIR"
    AS_PG=(runuser -u postgres --)
fi
bench_cleanup_hook() {
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PGDIR"
}
"${AS_PG[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U spindle -A trust -E UTF8 --locale=C -N \
    >"$PGDIR/initdb.log" 2>&1 || { cat "$PGDIR/initdb.log" >&2; die "initdb failed"; }
PGPORT=$(free_port)
PG_STATS_OPTS=
[ -z "$PG_STATS" ] ||
    PG_STATS_OPTS=" -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on"
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/pg.log" -w -t 60 -o \
    "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=100$PG_STATS_OPTS" \
    start >/dev/null || { cat "$PGDIR/pg.log" >&2; die "the cluster did not start"; }
ADMIN="postgresql://spindle@127.0.0.1:$PGPORT/postgres"
[ -z "$PG_STATS" ] || psql "$ADMIN" -qc "CREATE EXTENSION pg_stat_statements" >/dev/null
PG_SETTINGS=$(psql "$ADMIN" -Atc "SELECT string_agg(name||'='||setting, ', ' ORDER BY name) FROM
    pg_settings WHERE name IN ('fsync','synchronous_commit','wal_sync_method','server_version')")
DBS=0
# new_db: a new empty database; its URI in DB.
new_db() {
    DBS=$(date +%s%N)
    psql "$ADMIN" -qc "CREATE DATABASE b$DBS" >/dev/null
    DB="postgresql://spindle@127.0.0.1:$PGPORT/b$DBS"
}

# ---- helpers --------------------------------------------------------------------------------
post_lua() {
    cat >"$1" <<LUA
wrk.method = "POST"
wrk.body = '$2'
wrk.headers["Content-Type"] = "application/json"
LUA
}

# start_n N DB BIN: N instances of BIN on DB; their pids in PIDS, ports in PORTS.
start_n() {
    PIDS=()
    PORTS=()
    local i bin_saved=$SPINDLE_BIN
    SPINDLE_BIN=$3
    for i in $(seq 1 "$1"); do
        spindle_start "i$DBS-$i" <<CONF
backlog = 4096
[pool]
workers = $WORKERS
[log]
level = warn
access = false
file = $TMP/i$DBS-$i/spindle.log
[tasks]
store = $2
worker_share = $WORKER_SHARE
CONF
        PIDS+=("$SPINDLE_PID")
        PORTS+=("$SPINDLE_PORT")
    done
    SPINDLE_BIN=$bin_saved
}

stop_n() {
    local i
    for i in "${!PIDS[@]}"; do
        spindle_stop "${PIDS[$i]}" "$TMP/i$DBS-$((i + 1))"
    done
}

# wrk_n NAME LUA: one wrk per instance of PORTS at once; prints "RATE WORST_P99_MS OK_REQUESTS".
wrk_n() {
    local n=${#PORTS[@]} i wpids=()
    local c=$((CONNS / n)) t=1
    [ "$n" = 1 ] && t=2
    for i in "${!PORTS[@]}"; do
        wrk -t"$t" -c"$c" -d"${DURATION}s" --latency -s "$2" \
            "http://127.0.0.1:${PORTS[$i]}/v1/tasks" >"$TMP/wrk-$1-$i.txt" 2>&1 &
        wpids+=($!)
    done
    for i in "${wpids[@]}"; do
        wait "$i" || die "wrk failed ($1)"
    done
    if grep -q 'Non-2xx\|Socket errors' "$TMP"/wrk-"$1"-*.txt; then
        echo "bench: warning ($1): $(grep -h 'Non-2xx\|Socket errors' "$TMP"/wrk-"$1"-*.txt | tr -s ' ')" >&2
    fi
    awk '
        function ms(v,   unit) {
            unit = v; sub(/^[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
            if (unit == "us") return v / 1000
            if (unit == "s") return v * 1000
            if (unit == "m") return v * 60000
            return v
        }
        /Requests\/sec:/ { rps += $2 }
        / requests in / { n += $1 }
        $1 == "99%" { p = ms($2); if (p > p99) p99 = p }
        /Non-2xx or 3xx responses:/ { bad += $NF }
        END { printf "%.1f %.3f %d\n", rps, p99, n - bad }' "$TMP"/wrk-"$1"-*.txt
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }

# enqueue N BIN: prints "RATE P99 STORED" of N instances of BIN enqueuing delayed tasks.
enqueue() {
    new_db
    start_n "$1" "$DB" "$2"
    wrk_n "enq-$DBS" "$TMP/delayed.lua"
    stop_n
}

# e2e N: prints "TASKS_PER_S ENQ_P99 TASKS DRAIN_S FAILED PLAN_MS EXEC_MS" for N instances (the
# last two per task, "-" without PG_STATS).
e2e() {
    new_db
    start_n "$1" "$DB" "$SPINDLE_BIN"
    local t0 t_enq t1 left deadline rate p99 n done_n failed
    t0=$(date +%s.%N)
    read -r rate p99 n < <(wrk_n "e2e-$DBS" "$TMP/now.lua")
    t_enq=$(date +%s.%N)
    deadline=$(($(date +%s) + DRAIN_TIMEOUT))
    while :; do
        left=$(psql "$DB" -Atc "SELECT count(*) FROM spindle_tasks WHERE state IN (0,1,2)")
        [ "$left" = 0 ] && break
        [ "$(date +%s)" -lt "$deadline" ] || die "the backlog was not drained within ${DRAIN_TIMEOUT} s"
        sleep 0.1
    done
    t1=$(date +%s.%N)
    done_n=$(psql "$DB" -Atc "SELECT count(*) FROM spindle_tasks WHERE state=3")
    failed=$(psql "$DB" -Atc "SELECT count(*) FROM spindle_tasks WHERE state<>3")
    stop_n
    local plan=- exec=-
    if [ -n "$PG_STATS" ]; then
        read -r plan exec < <(psql "$ADMIN" -AtF' ' -c "SELECT round((sum(total_plan_time) /
            $done_n)::numeric, 4), round((sum(total_exec_time) / $done_n)::numeric, 4) FROM
            pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'b$DBS'")
        psql "$ADMIN" -c "SELECT calls, round(total_plan_time) AS plan_ms,
            round(total_exec_time) AS exec_ms, left(regexp_replace(query, '\s+', ' ', 'g'), 70)
            AS statement FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE
            d.datname = 'b$DBS' ORDER BY total_plan_time + total_exec_time DESC LIMIT 8" >&2
    fi
    awk -v n="$done_n" -v a="$t0" -v e="$t_enq" -v b="$t1" -v p="$p99" -v f="$failed" \
        -v pl="$plan" -v ex="$exec" \
        'BEGIN { printf "%.1f %s %d %.2f %d %s %s\n", n / (b - a), p, n, b - e, f, pl, ex }'
}

post_lua "$TMP/delayed.lua" '{"kind":"noop","delay_ms":86400000}'
post_lua "$TMP/now.lua" '{"kind":"noop"}'

# ---- the raw limit --------------------------------------------------------------------------
echo "== raw limit: $PG_LIMIT_BIN -d $LIMIT_SECONDS (fsync on, synchronous_commit on)"
new_db
"$PG_LIMIT_BIN" -d "$LIMIT_SECONDS" -c 1 -b 1 -b 16 "$DB" | tee "$TMP/limit.txt"
"$PG_LIMIT_BIN" -d "$LIMIT_SECONDS" -c 3 -b 1 "$DB" | tee -a "$TMP/limit.txt"
lim() { awk -F'tasks_per_s=' -v k="$1" 'index($0, k) { print $2 }' "$TMP/limit.txt"; }
LIM_I1=$(lim "phase=insert conns=1 rows_per_commit=1 ")
LIM_I16=$(lim "phase=insert conns=1 rows_per_commit=16 ")
LIM_C1=$(lim "phase=cycle conns=1 rows_per_commit=1 ")
LIM_C16=$(lim "phase=cycle conns=1 rows_per_commit=16 ")
LIM_I1_3=$(lim "phase=insert conns=3 rows_per_commit=1 ")
LIM_C1_3=$(lim "phase=cycle conns=3 rows_per_commit=1 ")

# ---- spindle --------------------------------------------------------------------------------
BEFORE_LINE=
if [ -n "$SPINDLE_BEFORE_BIN" ]; then
    echo "== before: $SPINDLE_BEFORE_BIN, 1 instance, enqueue"
    read -r B_ENQ B_P99 B_N < <(enqueue 1 "$SPINDLE_BEFORE_BIN")
    BEFORE_LINE="before   1 instance  enqueue tasks/s $B_ENQ   p99 $B_P99 ms   ($SPINDLE_BEFORE_BIN)"
    echo "$BEFORE_LINE"
fi
declare -A ENQ ENQ_P99 E2E E2E_P99 E2E_N DRAIN FAILED PLAN EXEC
for n in $INSTANCES; do
    echo "== $n instance(s): enqueue (delayed noop), wrk -c$CONNS in all for ${DURATION}s"
    read -r ENQ[$n] ENQ_P99[$n] _ < <(enqueue "$n" "$SPINDLE_BIN")
    echo "   ${ENQ[$n]} tasks/s, p99 ${ENQ_P99[$n]} ms"
    echo "== $n instance(s): end to end (noop), then the drain"
    read -r E2E[$n] E2E_P99[$n] E2E_N[$n] DRAIN[$n] FAILED[$n] PLAN[$n] EXEC[$n] < <(e2e "$n")
    echo "   ${E2E[$n]} tasks/s (${E2E_N[$n]} tasks, drained ${DRAIN[$n]} s after the last enqueue)"
    [ "${FAILED[$n]}" = 0 ] || echo "bench: warning: ${FAILED[$n]} tasks did not succeed" >&2
done

# ---- the peer -------------------------------------------------------------------------------
bullmq_peer "$DURATION"

LINES=
for n in $INSTANCES; do
    vs=
    if [ "$PEER" = ran ]; then
        vs="   vs BullMQ: enqueue $(ratio "${ENQ[$n]}" "$PEER_ENQ")x, end to end $(ratio "${E2E[$n]}" "$PEER_DRAIN")x its drain"
    fi
    stats=
    [ -z "$PG_STATS" ] || stats="   PostgreSQL ms/task: plan ${PLAN[$n]}, exec ${EXEC[$n]}"
    LINES+="spindle  $n instance(s)  enqueue tasks/s ${ENQ[$n]} (p99 ${ENQ_P99[$n]} ms)   end to end tasks/s ${E2E[$n]} (${E2E_N[$n]} tasks, drained ${DRAIN[$n]} s after)$vs$stats
"
done
if [ "$PEER" = ran ]; then
    PEER_LINE="peer     BullMQ (appendfsync always) enqueue tasks/s $PEER_ENQ (p99 $PEER_P99)   drain tasks/s $PEER_DRAIN"
else
    PEER_LINE="peer     BullMQ: $PEER"
fi

REPORT=$(
    cat <<REP
# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, $(uname -r); PostgreSQL: $PG_SETTINGS
# spindle: [pool] workers = $WORKERS, [tasks] worker_share = $WORKER_SHARE, [log] level = warn, access = false, a new database per phase;
# wrk -c$CONNS in all (shared out over the instances) -d${DURATION}s --latency over 127.0.0.1
limit    insert, 1 per commit / 16 per commit (1 conn)     tasks/s $LIM_I1 / $LIM_I16
limit    insert+claim+complete, 1 / 16 per commit (1 conn) tasks/s $LIM_C1 / $LIM_C16
limit    3 conns, 1 per commit: insert / cycle             tasks/s $LIM_I1_3 / $LIM_C1_3
${BEFORE_LINE:+$BEFORE_LINE
}${LINES}$PEER_LINE
# other load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min load average at the end)
REP
)
echo "$REPORT"
mkdir -p "$(dirname "$RESULTS")"
echo "$REPORT" >>"$RESULTS"
