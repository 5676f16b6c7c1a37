#!/bin/bash
# bench/stalled_log.sh - does a stalled log sink stall the server?
#
# spindle logs (level info, access lines on, log.buffer_bytes = 64K) into a FIFO. The script
# reads the FIFO only until the "listening" line (to learn the port), then keeps it open without
# reading: the pipe (64 KiB) and the log buffer fill up and the sink is stalled for good.
#   load       wrk -t1 -cLOAD_CONNS on GET /healthz for the whole measurement: every answer logs
#              an access line, so the logger is under pressure while the sink is stuck
#   health     after SETTLE_S seconds, N sequential GET /healthz with curl, each bounded by
#              TIMEOUT_S: p50, p99 and max of the answered ones, and how many timed out
#   stop       SIGTERM once the load ends: seconds until the process exits, bounded by STOP_S
#              (then SIGKILL and "not stopped")
# Printed and appended to bench/results/stalled_log.txt. SPINDLE_BIN selects the binary (an older
# build for a "before" figure). Needs wrk and curl.
#
# Environment: SPINDLE_BIN (default build/release/spindle), N (50), TIMEOUT_S (1), LOAD_CONNS
# (8), SETTLE_S (2), STOP_S (20), RESULTS.
set -eu

cd "$(dirname "$0")/.."

SPINDLE_BIN=${SPINDLE_BIN:-build/release/spindle}
N=${N:-50}
TIMEOUT_S=${TIMEOUT_S:-1}
LOAD_CONNS=${LOAD_CONNS:-8}
SETTLE_S=${SETTLE_S:-2}
STOP_S=${STOP_S:-20}
RESULTS=${RESULTS:-bench/results/stalled_log.txt}

. bench/lib.sh

need_tool wrk
need_tool curl
need_file "$SPINDLE_BIN" "run make release"

bench_tmp stalled
dir=$TMP
pid=""
wrk_pid=""
# The server is killed, not stopped: with its log sink stalled it may not exit on SIGTERM.
bench_cleanup_hook() {
    [ -n "$wrk_pid" ] && kill "$wrk_pid" 2>/dev/null || true
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    exec 3<&- 2>/dev/null || true
}

mkfifo "$dir/log.fifo"
# Read and write ends in this shell: opening never blocks, and the server never sees EPIPE.
exec 3<>"$dir/log.fifo"
cat >"$dir/spindle.conf" <<EOF
[server]
listen = 127.0.0.1:0
[log]
level = info
access = true
file = $dir/log.fifo
buffer_bytes = 64K
EOF
"$SPINDLE_BIN" serve -c "$dir/spindle.conf" 2>"$dir/stderr" &
pid=$!

addr=""
while IFS= read -r -t 10 -u 3 line; do
    case "$line" in
    *'"msg":"listening"'*)
        addr=$(printf '%s\n' "$line" | sed -n 's/.*"addr":"\([^"]*\)".*/\1/p')
        break
        ;;
    esac
done
[ -n "$addr" ] || die "no listening line"
url="http://$addr/healthz"

# From here on nobody reads the FIFO.
wrk -t1 -c"$LOAD_CONNS" -d"$((SETTLE_S + N * TIMEOUT_S + 5))s" "$url" >"$dir/wrk.txt" 2>&1 &
wrk_pid=$!
sleep "$SETTLE_S"

: >"$dir/lat"
timeouts=0
for _ in $(seq "$N"); do
    if t=$(curl -s -o /dev/null -m "$TIMEOUT_S" -w '%{time_total}' "$url"); then
        echo "$t" >>"$dir/lat"
    else
        timeouts=$((timeouts + 1))
    fi
done
kill "$wrk_pid" 2>/dev/null || true
wait "$wrk_pid" 2>/dev/null || true
wrk_pid=""

answered=$(wc -l <"$dir/lat")
pct() { # pct P: the P-th percentile of the answered latencies, in ms (nearest rank)
    if [ "$answered" -eq 0 ]; then echo "-"; return; fi
    local rank=$(((answered * $1 + 99) / 100))
    [ "$rank" -lt 1 ] && rank=1
    sort -g "$dir/lat" | sed -n "${rank}p" | awk '{printf "%.2f", $1 * 1000}'
}
p50=$(pct 50)
p99=$(pct 99)
max=$(pct 100)

start=$(date +%s.%N)
kill -TERM "$pid"
stopped="not stopped within ${STOP_S} s"
while true; do
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" && code=0 || code=$?
        stopped=$(awk -v a="$start" -v b="$(date +%s.%N)" -v c="$code" \
            'BEGIN {printf "stopped in %.2f s (exit %d)", b - a, c}')
        pid=""
        break
    fi
    if awk -v a="$start" -v b="$(date +%s.%N)" -v s="$STOP_S" 'BEGIN {exit !(b - a > s)}'; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
        break
    fi
    sleep 0.05
done

summary="healthz with the log sink stalled: p50 ${p50} ms, p99 ${p99} ms, max ${max} ms, \
timeouts ${timeouts}/${N} (${TIMEOUT_S} s each); SIGTERM: ${stopped}"
echo "$summary"
mkdir -p "$(dirname "$RESULTS")"
{
    echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(hostname) $(nproc) CPUs $(uname -r) bin=$SPINDLE_BIN"
    echo "$summary"
} >>"$RESULTS"
