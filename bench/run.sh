#!/bin/bash
# bench/run.sh - spindle against nginx on GET /healthz over loopback, and the memory cost of an
# idle keep-alive connection. `make bench` builds the release binary and bench/idle_conns, then
# runs this. Figures go to stdout and are appended to bench/results/http.txt.
#
# Environment: BUILD_DIR (as given to make; default build), SPINDLE_BIN (default
# $BUILD_DIR/release/spindle), IDLE_BIN (default $BUILD_DIR/release/bench/idle_conns), BENCH_DURATION (wrk -d, default 10s), BENCH_CONNS (wrk -c,
# default 64), BENCH_THREADS (wrk -t, default 2), IDLE_COUNT (default 10000).
set -eu

cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
IDLE_BIN=${IDLE_BIN:-$BUILD_DIR/release/bench/idle_conns}
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-64}
THREADS=${BENCH_THREADS:-2}
IDLE_COUNT=${IDLE_COUNT:-10000}
RESULTS=${RESULTS:-bench/results/http.txt}

. bench/lib.sh

NGINX=$(find_nginx)
need_tool wrk
[ -n "$NGINX" ] || die "nginx is missing: sudo apt-get install -y nginx-light"
need_tool curl
need_file "$SPINDLE_BIN" "run make release (or make bench)"
need_file "$IDLE_BIN" "run make bench"

bench_tmp bench

# Both servers and idle_conns need many descriptors (20000 or the hard limit).
ulimit -n "$(ulimit -Hn | sed 's/unlimited/20000/')" 2>/dev/null || true
[ "$(ulimit -n)" -gt 20000 ] && ulimit -n 20000

# start_spindle NAME [key=value ...]: start a spindle with these [log] settings (see lib.sh).
start_spindle() {
    local name=$1
    shift
    spindle_start "$name" < <(
        echo "backlog = 4096"
        echo "max_connections = 20000"
        echo "idle_timeout_ms = 600000"
        echo "[log]"
        echo "file = $TMP/$name/spindle.log"
        for kv in "$@"; do
            echo "${kv%%=*} = ${kv#*=}"
        done
    )
}

start_nginx() {
    local dir="$TMP/nginx"
    mkdir -p "$dir"
    NGINX_PORT=$(free_port)
    sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$NGINX_PORT#g" -e "s#@USER@#$(id -un)#g" \
        bench/nginx.conf >"$dir/nginx.conf"
    "$NGINX" -p "$dir" -e "$dir/nginx-error.log" -c "$dir/nginx.conf" >"$dir/stdout" 2>&1 &
    NGINX_PID=$!
    bench_track "$NGINX_PID"
    wait_http "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID" nginx || die "nginx exited"
}

# run_wrk NAME URL: prints "RPS P99_MS" for the run and keeps wrk's output in $TMP/wrk-NAME.txt.
run_wrk() {
    local out="$TMP/wrk-$1.txt"
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$2" >"$out" 2>&1 || {
        cat "$out" >&2
        die "wrk failed on $2"
    }
    if grep -q 'Non-2xx\|Socket errors' "$out"; then
        echo "bench: warning ($1): $(grep 'Non-2xx\|Socket errors' "$out" | tr -s ' ')" >&2
    fi
    awk '
        /Requests\/sec:/ { rps = $2 }
        $1 == "99%" {
            v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
            p99 = (unit == "us") ? v / 1000 : (unit == "s") ? v * 1000 : (unit == "m") ? v * 60000 : v
        }
        END { printf "%.0f %.3f\n", rps, p99 }' "$out"
}

echo "== spindle vs nginx: GET /healthz, wrk -t$THREADS -c$CONNS -d$DURATION, $(nproc) CPUs"

start_nginx
start_spindle quiet "level=warn" "access=false"
QUIET_PID=$SPINDLE_PID
read -r NGINX_RPS NGINX_P99 < <(run_wrk nginx "http://127.0.0.1:$NGINX_PORT/healthz")
read -r SP_RPS SP_P99 < <(run_wrk spindle "http://127.0.0.1:$SPINDLE_PORT/healthz")
spindle_stop "$QUIET_PID" "$TMP/quiet"

# The same with one access line per request (level info), to show what logging costs.
start_spindle access "level=info" "access=true"
ACCESS_PID=$SPINDLE_PID
read -r SPA_RPS SPA_P99 < <(run_wrk spindle-access "http://127.0.0.1:$SPINDLE_PORT/healthz")
spindle_stop "$ACCESS_PID" "$TMP/access"
bench_stop "$NGINX_PID"

RATIO=$(awk -v a="$SP_RPS" -v b="$NGINX_RPS" 'BEGIN { printf("%.1f", (b > 0) ? 100 * a / b : 0) }')
RATIO_A=$(awk -v a="$SPA_RPS" -v b="$NGINX_RPS" 'BEGIN { printf("%.1f", (b > 0) ? 100 * a / b : 0) }')

echo "== idle keep-alive connections: $IDLE_COUNT"
start_spindle idle "level=warn" "access=false"
IDLE_OUT=$("$IDLE_BIN" "$SPINDLE_PORT" "$SPINDLE_PID" "$IDLE_COUNT") || {
    echo "$IDLE_OUT" >&2
    die "idle_conns failed"
}
spindle_stop "$SPINDLE_PID"
PER_CONN=$(echo "$IDLE_OUT" | sed -n 's/^kib_per_conn=//p')
RSS_BEFORE=$(echo "$IDLE_OUT" | sed -n 's/^rss_before_kib=//p')
RSS_AFTER=$(echo "$IDLE_OUT" | sed -n 's/^rss_after_kib=//p')

verdict() { awk -v v="$1" -v t="$2" -v dir="$3" 'BEGIN {
    ok = (dir == "min") ? v >= t : v <= t; print ok ? "met" : "MISSED" }'; }

REPORT=$(
    cat <<EOF
# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, $(uname -r)
# wrk -t$THREADS -c$CONNS -d$DURATION --latency GET /healthz over 127.0.0.1
nginx $("$NGINX" -v 2>&1 | sed 's#.*/##') (1 worker)      requests/s $NGINX_RPS   p99 ${NGINX_P99} ms
spindle (access log off)     requests/s $SP_RPS   p99 ${SP_P99} ms   ratio ${RATIO}% of nginx (target >= 80%: $(verdict "$RATIO" 80 min))
spindle (access log on)      requests/s $SPA_RPS   p99 ${SPA_P99} ms   ratio ${RATIO_A}% of nginx
idle keep-alive connections  $IDLE_COUNT   rss ${RSS_BEFORE} -> ${RSS_AFTER} KiB   ${PER_CONN} KiB/conn (target <= 2: $(verdict "$PER_CONN" 2 max))
EOF
)
echo "$REPORT"
mkdir -p "$(dirname "$RESULTS")"
printf '%s\n\n' "$REPORT" >>"$RESULTS"
echo "(appended to $RESULTS)"
