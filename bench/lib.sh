# bench/lib.sh - what the bench/*.sh scripts share; sourced (`. bench/lib.sh`) from the repository
# root, never run. It gives:
#   die MSG                  print "bench: MSG" on stderr and exit 1
#   need_tool TOOL [PKG]     die unless TOOL is in PATH, naming the Debian package to install
#   need_file PATH HINT      die unless PATH is an executable, saying how to build it
#   find_nginx               print nginx's path (PATH or /usr/sbin), or nothing
#   bench_tmp NAME           make $TMP (/tmp/spindle-NAME-XXXXXX); removed on exit
#   bench_track PID / bench_untrack PID
#                            processes SIGTERMed and waited for on exit (servers, generators)
#   free_port                a loopback port nothing listens on
#   wait_http URL [PID NAME] wait (bounded, 10 s) until URL answers 200; die early if PID exits
#   spindle_start NAME       start $SPINDLE_BIN on a free loopback port; the config is
#                            "[server]\nlisten = 127.0.0.1:PORT\n" followed by the function's
#                            stdin (a heredoc or `< <(...)`: not a pipe, whose subshell would
#                            keep the variables set here) (more [server] keys, then other sections); sets SPINDLE_PID,
#                            SPINDLE_PORT and SPINDLE_DIR ($TMP/NAME, holding spindle.conf,
#                            stdout, stderr; put the log there too)
#   spindle_stop PID [DIR]   SIGTERM, wait, and die (with DIR/stderr, default $SPINDLE_DIR)
#                            unless it exited 0
#   bench_stop PID           SIGTERM and wait, whatever the exit code (nginx, generators)
# A script may define bench_cleanup_hook (run first on exit) for anything else it must undo.
# Defaults: BUILD_DIR=build, SPINDLE_BIN=$BUILD_DIR/release/spindle.

BUILD_DIR=${BUILD_DIR:-build}
SPINDLE_BIN=${SPINDLE_BIN:-$BUILD_DIR/release/spindle}
BENCH_PIDS=()
TMP=

die() {
    echo "bench: $*" >&2
    exit 1
}

need_tool() {
    command -v "$1" >/dev/null || die "$1 is missing: sudo apt-get install -y ${2:-$1}"
}

need_file() {
    [ -x "$1" ] || die "$1 is missing: $2"
}

find_nginx() {
    local n
    n=$(command -v nginx || true)
    [ -z "$n" ] && [ -x /usr/sbin/nginx ] && n=/usr/sbin/nginx
    echo "$n"
}

bench_track() { BENCH_PIDS+=("$1"); }

bench_untrack() {
    local bench_keep=() bench_pid
    for bench_pid in "${BENCH_PIDS[@]}"; do
        [ "$bench_pid" = "$1" ] || bench_keep+=("$bench_pid")
    done
    BENCH_PIDS=("${bench_keep[@]}")
}

# (The hook runs before any local is declared here: bash's dynamic scoping would hide a script
# variable of the same name from it.)
bench_cleanup() {
    if declare -F bench_cleanup_hook >/dev/null; then bench_cleanup_hook || true; fi
    local bench_pid
    for bench_pid in "${BENCH_PIDS[@]}"; do
        kill -TERM "$bench_pid" 2>/dev/null || true
    done
    for bench_pid in "${BENCH_PIDS[@]}"; do
        wait "$bench_pid" 2>/dev/null || true
    done
    [ -n "$TMP" ] && rm -rf "$TMP"
    return 0
}

bench_tmp() {
    TMP=$(mktemp -d "/tmp/spindle-$1-XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# Below the ephemeral range (32768-60999), where client sockets of earlier runs may sit. (A fixed
# port rather than port 0: at level warn the "listening" line that names the port is not logged.)
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free loopback port found"
}

wait_http() {
    local url=$1 pid=${2:-} name=${3:-server}
    for _ in $(seq 1 500); do
        curl -sf -o /dev/null --max-time 1 "$url" && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 2
        fi
        sleep 0.02
    done
    die "$name did not answer $url within 10 s"
}

spindle_start() {
    local name=$1 rc=0
    SPINDLE_DIR="$TMP/$name"
    mkdir -p "$SPINDLE_DIR"
    SPINDLE_PORT=$(free_port)
    {
        echo "[server]"
        echo "listen = 127.0.0.1:$SPINDLE_PORT"
        cat
    } >"$SPINDLE_DIR/spindle.conf"
    "$SPINDLE_BIN" serve -c "$SPINDLE_DIR/spindle.conf" </dev/null >"$SPINDLE_DIR/stdout" \
        2>"$SPINDLE_DIR/stderr" &
    SPINDLE_PID=$!
    bench_track "$SPINDLE_PID"
    wait_http "http://127.0.0.1:$SPINDLE_PORT/healthz" "$SPINDLE_PID" "spindle ($name)" || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$SPINDLE_DIR/stderr" "$SPINDLE_DIR"/*.log >&2 2>/dev/null || true
        die "spindle ($name) exited"
    fi
}

spindle_stop() {
    local rc=0 dir=${2:-$SPINDLE_DIR}
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || rc=$?
    bench_untrack "$1"
    if [ "$rc" -ne 0 ]; then
        cat "$dir/stderr" >&2 2>/dev/null || true
        die "spindle exited with code $rc"
    fi
}

bench_stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    bench_untrack "$1"
}

# bullmq_peer SECONDS: run the BullMQ peer ($BULLMQ_PEER/bench.sh, Redis with appendfsync always)
# into $TMP/peer.txt; sets PEER (ran, or why not), PEER_ENQ (enqueues/s), PEER_P99 and PEER_DRAIN
# (tasks/s). Needs redis-server and npm: without them the peer is skipped and PEER says why.
bullmq_peer() {
    PEER=skipped
    PEER_ENQ=0
    PEER_P99=
    PEER_DRAIN=0
    if [ ! -f "$BULLMQ_PEER/bench.sh" ]; then
        PEER="skipped: no $BULLMQ_PEER/bench.sh (set BULLMQ_PEER)"
    elif ! command -v redis-server >/dev/null; then
        PEER="skipped: redis-server is not installed (apt-get install redis-server)"
    elif ! command -v npm >/dev/null; then
        PEER="skipped: npm is not installed (apt-get install npm)"
    else
        echo "== peer: BullMQ on Redis (appendfsync always), $BULLMQ_PEER/bench.sh"
        if FSYNC=always DUR="$1" bash "$BULLMQ_PEER/bench.sh" >"$TMP/peer.txt" 2>&1; then
            cat "$TMP/peer.txt"
            PEER=ran
            PEER_ENQ=$(awk '/^enqueue:/ { print $2 }' "$TMP/peer.txt")
            PEER_P99=$(awk '/^enqueue:/ { sub(/.*p99 /, ""); sub(/\).*/, ""); print }' "$TMP/peer.txt")
            PEER_DRAIN=$(awk '/^drain:/ { for (i = 1; i <= NF; i++) if ($i == "tasks/s") print $(i - 1) }' \
                "$TMP/peer.txt")
        else
            cat "$TMP/peer.txt" >&2
            PEER="failed (its output is above)"
        fi
    fi
}
