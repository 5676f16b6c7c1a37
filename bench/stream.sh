#!/bin/bash
# bench/stream.sh - streamed bodies against the command-line tools, as ratios in one run.
#
# One large upload at a time through a release spindle on 127.0.0.1 (curl -T FILE -X POST, the
# answer to /dev/null as the tool's output), each next to the tool that does the same work on the
# same file:
#   compress?codec=zstd&level=1   vs  zstd -1 --single-thread -c FILE >/dev/null
#   compress?codec=gzip&level=1   vs  gzip -1 -c FILE >/dev/null
#   sha256                        vs  sha256sum FILE
# on two files made once and kept in $STREAM_DATA (so later runs reuse them): "mixed", MIXED_MIB
# (512) MiB of compressible data (log-like lines, numbers, base64 and some random blocks; the
# pattern repeats every 64 MiB, far beyond either codec's window), and "random", the same size of
# AES-CTR bytes; and a SHA_MIB (1024) MiB file for sha256 (the mixed data repeated).
# Each figure is the median of ROUNDS (3) alternated runs, with its min and max; throughput is
# MB/s of input (10^6 bytes) over the wall time of the whole transfer or tool run. The tools run
# with one thread (zstd's --single-thread: compression and I/O on one thread, as spindle's job
# has one worker), from the page cache, output to /dev/null; spindle's worker, its loop thread and
# curl share the machine's CPUs. Target: spindle >= 90 % of the tool for each.
# The codec parameters match the tools': zstd level 1 through ZSTD_compressStream2 with its
# checksum (the CLI's default) and no pledged size (the CLI pledges the file size; at 512 MiB
# both select the same parameters); gzip through deflate level 1, window 15, memLevel 8.
# Memory per open stream: OPEN_STREAMS (32) uploads of compress?codec=zstd&level=1 held open
# (head and a first chunk sent, body unfinished) with workers = OPEN_STREAMS, so each has its job
# running; (RSS with them open - RSS before) / OPEN_STREAMS, read from /proc/PID/status once
# spindle_streams_open says they are all open. Printed and appended to bench/results/stream.txt.
#
# Needs build/release/spindle (make release), curl, zstd, gzip, openssl, sha256sum.
# Environment: BUILD_DIR, SPINDLE_BIN, STREAM_DATA (default /tmp/spindle-stream-data), MIXED_MIB,
# SHA_MIB, ROUNDS, OPEN_STREAMS, RESULTS.
set -eu

cd "$(dirname "$0")/.."

STREAM_DATA=${STREAM_DATA:-/tmp/spindle-stream-data}
MIXED_MIB=${MIXED_MIB:-512}
SHA_MIB=${SHA_MIB:-1024}
ROUNDS=${ROUNDS:-3}
OPEN_STREAMS=${OPEN_STREAMS:-32}
RESULTS=${RESULTS:-bench/results/stream.txt}

. bench/lib.sh

for t in curl zstd gzip openssl sha256sum awk base64; do need_tool "$t"; done
need_file "$SPINDLE_BIN" "run make release"

bench_tmp stream

# ---- data, made once --------------------------------------------------------------------------

# 64 MiB of compressible data: 1 MiB pieces of log-like lines, numbers, base64 and random bytes.
make_piece64() {
    local out=$1 i
    openssl enc -aes-128-ctr -pbkdf2 -pass pass:spindle-mixed -nosalt </dev/zero 2>/dev/null |
        head -c $((16 * 1024 * 1024)) >"$TMP/rnd16"
    awk 'BEGIN { srand(7); split("GET POST PUT DELETE", m, " ");
        split("/v1/jobs/compress /v1/jobs/sha256 /healthz /v1/tasks /metrics /v1/batch", p, " ");
        for (i = 0; i < 400000; i++)
            printf "{\"ts\":\"2026-12-06T18:%02d:%02d.%06dZ\",\"level\":\"info\",\"msg\":\"access\",\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"bytes_in\":%d,\"bytes_out\":%d,\"total_ms\":%.3f,\"request_id\":\"%08x%08x\"}\n",
                int(i / 60000) % 60, int(i / 1000) % 60, int(rand() * 1e6), m[1 + int(rand() * 4)],
                p[1 + int(rand() * 6)], (rand() < 0.9) ? 200 : 503, int(rand() * 65536),
                int(rand() * 4096), rand() * 50, int(rand() * 2^31), int(rand() * 2^31) }' \
        >"$TMP/log.txt"
    seq 1 3000000 >"$TMP/seq.txt"
    base64 -w 76 <"$TMP/rnd16" >"$TMP/b64.txt"
    : >"$out"
    for i in $(seq 0 15); do
        { # 4 MiB per round: 1 of log lines, 1 of numbers, 1 of base64, 1/2 random, 1/2 log lines
            tail -c +$((i * 1048576 + 1)) "$TMP/log.txt" | head -c 1048576
            tail -c +$((i * 1048576 + 1)) "$TMP/seq.txt" | head -c 1048576
            tail -c +$((i * 1048576 + 1)) "$TMP/b64.txt" | head -c 1048576
            tail -c +$((i * 524288 + 1)) "$TMP/rnd16" | head -c 524288
            tail -c +$((i * 524288 + 16777217)) "$TMP/log.txt" | head -c 524288
        } >>"$out"
    done
    rm -f "$TMP/rnd16" "$TMP/log.txt" "$TMP/seq.txt" "$TMP/b64.txt"
}

make_data() {
    mkdir -p "$STREAM_DATA"
    if [ ! -s "$STREAM_DATA/piece64" ]; then
        echo "== making 64 MiB of compressible data in $STREAM_DATA (once)"
        make_piece64 "$STREAM_DATA/piece64.tmp"
        mv "$STREAM_DATA/piece64.tmp" "$STREAM_DATA/piece64"
    fi
    local n
    for n in "$MIXED_MIB" "$SHA_MIB"; do
        if [ "$(stat -c %s "$STREAM_DATA/mixed$n" 2>/dev/null || echo 0)" != $((n * 1048576)) ]; then
            echo "== making mixed$n ($n MiB)"
            for _ in $(seq 1 $(((n + 63) / 64))); do cat "$STREAM_DATA/piece64"; done |
                head -c $((n * 1048576)) >"$STREAM_DATA/mixed$n"
        fi
    done
    if [ "$(stat -c %s "$STREAM_DATA/random$MIXED_MIB" 2>/dev/null || echo 0)" != \
        $((MIXED_MIB * 1048576)) ]; then
        echo "== making random$MIXED_MIB ($MIXED_MIB MiB)"
        openssl enc -aes-128-ctr -pbkdf2 -pass pass:spindle-random -nosalt </dev/zero 2>/dev/null |
            head -c $((MIXED_MIB * 1048576)) >"$STREAM_DATA/random$MIXED_MIB"
    fi
}

make_data
MIXED="$STREAM_DATA/mixed$MIXED_MIB"
RANDOM_F="$STREAM_DATA/random$MIXED_MIB"
SHAFILE="$STREAM_DATA/mixed$SHA_MIB"
cat "$MIXED" "$RANDOM_F" "$SHAFILE" >/dev/null # into the page cache

# ---- helpers ----------------------------------------------------------------------------------

now_ns() { date +%s%N; }
mbps() { awk -v b="$1" -v ns="$2" 'BEGIN { printf "%.1f", (ns > 0) ? b * 1000 / ns : 0 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b > 0) ? 100 * a / b : 0 }'; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print ((v + 0 >= t + 0) ? "met" : "MISSED") }'; }
# median [min-max] of the numbers given
stats() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.1f [%.1f-%.1f]", m, v[1], v[NR] }'
}
median() { stats "$@" | cut -d' ' -f1; }

# CPU seconds (user + system) the server process used so far
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$SPINDLE_PID/stat"; }
# CPU seconds per GB (10^9 bytes) of FILE
per_gb() { awk -v c="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? c * 1e9 / b : 0 }'; }

# tool_run FILE CMD...: MB/s of CMD reading FILE, output discarded; its CPU s/GB in TOOL_CPU
tool_run() {
    local f=$1 real user sys TIMEFORMAT='%3R %3U %3S'
    shift
    read -r real user sys < <({ time "$@" <"$f" >/dev/null; } 2>&1)
    TOOL_CPU=$(per_gb "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" "$(stat -c %s "$f")")
    mbps "$(stat -c %s "$f")" "$(awk -v r="$real" 'BEGIN { printf "%.0f", r * 1e9 }')"
}

# spindle_run FILE QUERY: MB/s of one streamed upload; dies unless it answered 200 in full; the
# server's CPU s/GB in SERVER_CPU, the client's (curl sending the body and reading the answer) in
# CLIENT_CPU: both share the machine's CPUs, so a client that needs more CPU per GB than the tool
# takes in wall-clock time per GB bounds the ratio whatever the server does. The answer goes to
# /dev/null, as the tools' output does: written to a file under /tmp (ext4 here), 512 MiB of
# answer throttled curl in the kernel's dirty-page writeback, and through TCP the server, which
# then measured the disk, not spindle (random data moved at ~300 MB/s to a file and ~950 MB/s to
# /dev/null with the same build). Whether the answer is right is checked once, below, before the
# timed runs.
spindle_run() {
    local f=$1 q=$2 t0 t1 code c0 real user sys TIMEFORMAT='%3R %3U %3S'
    c0=$(server_cpu)
    t0=$(now_ns)
    { time curl -sS -X POST -T "$f" -H 'X-Timeout-Ms: 600000' -H 'TE: trailers' -o /dev/null \
        -w '%{http_code}' "http://127.0.0.1:$SPINDLE_PORT/v1/jobs/$q" >"$TMP/code"; } 2>"$TMP/time" \
        || die "curl failed on $q"
    t1=$(now_ns)
    code=$(cat "$TMP/code")
    [ "$code" = 200 ] || die "$q answered $code"
    read -r real user sys <"$TMP/time"
    SERVER_CPU=$(per_gb "$(awk -v a="$c0" -v b="$(server_cpu)" 'BEGIN { print b - a }')" \
        "$(stat -c %s "$f")")
    CLIENT_CPU=$(per_gb "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" "$(stat -c %s "$f")")
    mbps "$(stat -c %s "$f")" $((t1 - t0))
}

# ---- throughput -------------------------------------------------------------------------------

spindle_start stream <<CONF
[pool]
workers = 1
[limits]
max_timeout_ms = 600000
[log]
level = warn
access = false
file = $TMP/stream/spindle.log
[tasks]
store =
CONF

# Answers checked once: the stream's output decodes to the input, the digest matches.
curl -sS -X POST -T "$MIXED" -o "$TMP/check.zst" \
    "http://127.0.0.1:$SPINDLE_PORT/v1/jobs/compress?codec=zstd&level=1"
cmp -s <(zstd -dc "$TMP/check.zst") "$MIXED" || die "zstd stream did not decode to its input"
ZSTD_RATIO=$(awk -v a="$(stat -c %s "$MIXED")" -v b="$(stat -c %s "$TMP/check.zst")" \
    'BEGIN { printf "%.2f", a / b }')
CLI_RATIO=$(awk -v a="$(stat -c %s "$MIXED")" -v b="$(zstd -1 --single-thread -c <"$MIXED" | wc -c)" \
    'BEGIN { printf "%.2f", a / b }')
rm -f "$TMP/check.zst"

# case NAME FILE QUERY TOOL...: ROUNDS alternated runs; sets RES_<NAME>
declare -A RES
bench_case() {
    local name=$1 f=$2 q=$3 s=() t=() sc=() tc=() cc=() i
    shift 3
    echo "== $name: $q vs $* ($(($(stat -c %s "$f") / 1048576)) MiB)"
    for i in $(seq 1 "$ROUNDS"); do
        tool_run "$f" "$@" >"$TMP/mbps" # not in a subshell: TOOL_CPU must stay set
        t+=("$(cat "$TMP/mbps")")
        tc+=("$TOOL_CPU")
        spindle_run "$f" "$q" >"$TMP/mbps"
        s+=("$(cat "$TMP/mbps")")
        sc+=("$SERVER_CPU")
        cc+=("$CLIENT_CPU")
        echo "   round $i: tool ${t[-1]} MB/s (${tc[-1]} CPU s/GB), spindle ${s[-1]} MB/s" \
            "(${sc[-1]} CPU s/GB, all threads; curl ${cc[-1]})"
    done
    local r=() k
    for k in $(seq 0 $((ROUNDS - 1))); do r+=("$(ratio "${s[$k]}" "${t[$k]}")"); done
    RES[$name]="spindle $(stats "${s[@]}") MB/s, tool $(stats "${t[@]}") MB/s: $(stats "${r[@]}") %"
    RES[$name.cpu]="CPU s/GB: spindle $(stats "${sc[@]}") (loop + worker), tool $(stats "${tc[@]}"), client (curl) $(stats "${cc[@]}")"
    RES[$name.ratio]=$(median "${r[@]}")
}

bench_case zstd1_mixed "$MIXED" "compress?codec=zstd&level=1" zstd -1 --single-thread -c
bench_case zstd1_random "$RANDOM_F" "compress?codec=zstd&level=1" zstd -1 --single-thread -c
bench_case gzip1_mixed "$MIXED" "compress?codec=gzip&level=1" gzip -1 -c
bench_case gzip1_random "$RANDOM_F" "compress?codec=gzip&level=1" gzip -1 -c
bench_case sha256 "$SHAFILE" "sha256?rounds=1" sha256sum

spindle_stop "$SPINDLE_PID"

# ---- memory per open stream -------------------------------------------------------------------

echo "== memory: $OPEN_STREAMS open compress?codec=zstd&level=1 streams"
spindle_start mem <<CONF
max_connections = $((OPEN_STREAMS + 64))
[pool]
workers = $OPEN_STREAMS
queue_capacity = $((OPEN_STREAMS * 2))
[limits]
max_timeout_ms = 600000
[log]
level = warn
access = false
file = $TMP/mem/spindle.log
[tasks]
store =
CONF
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$SPINDLE_PID/status"; }
streams_open() {
    curl -s "http://127.0.0.1:$SPINDLE_PORT/metrics" | awk '/^spindle_streams_open / { print $2 }'
}
# one warm-up stream so that what every process pays once (the first worker's stacks touched,
# libzstd's tables) is not counted per stream
spindle_run "$STREAM_DATA/piece64" "compress?codec=zstd&level=1" >/dev/null
RSS0=$(rss_kib)
FDS=()
for _ in $(seq 1 "$OPEN_STREAMS"); do
    exec {fd}<>"/dev/tcp/127.0.0.1/$SPINDLE_PORT"
    FDS+=("$fd")
    {
        printf 'POST /v1/jobs/compress?codec=zstd&level=1 HTTP/1.1\r\nHost: bench\r\n'
        printf 'Transfer-Encoding: chunked\r\nX-Timeout-Ms: 600000\r\n\r\n10000\r\n'
        head -c 65536 "$MIXED"
        printf '\r\n'
    } >&"$fd"
done
OPEN=0
for _ in $(seq 1 500); do
    OPEN=$(streams_open)
    [ "${OPEN:-0}" -ge "$OPEN_STREAMS" ] && break
    sleep 0.02
done
[ "${OPEN:-0}" -ge "$OPEN_STREAMS" ] || die "only ${OPEN:-0} of $OPEN_STREAMS streams opened"
sleep 0.5 # let the jobs take their first chunk and make their codec state
RSS1=$(rss_kib)
for fd in "${FDS[@]}"; do exec {fd}>&-; done
PER_STREAM=$(awk -v a="$RSS0" -v b="$RSS1" -v n="$OPEN_STREAMS" 'BEGIN { printf "%.0f", (b - a) / n }')
spindle_stop "$SPINDLE_PID"
echo "   RSS $RSS0 KiB -> $RSS1 KiB: $PER_STREAM KiB per stream"

REPORT=$(
    cat <<REP
# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, $(uname -r); median [min-max] of $ROUNDS alternated runs
# spindle: release, workers = 1, curl -X POST -T FILE over 127.0.0.1; tools single-threaded, page cache
# data: mixed $MIXED_MIB MiB (zstd -1 ratio: stream $ZSTD_RATIO, CLI $CLI_RATIO), random $MIXED_MIB MiB, sha256 $SHA_MIB MiB
zstd -1 mixed   ${RES[zstd1_mixed]} (target >= 90%: $(verdict "${RES[zstd1_mixed.ratio]}" 90))
                ${RES[zstd1_mixed.cpu]}
zstd -1 random  ${RES[zstd1_random]} (target >= 90%: $(verdict "${RES[zstd1_random.ratio]}" 90))
                ${RES[zstd1_random.cpu]}
gzip -1 mixed   ${RES[gzip1_mixed]} (target >= 90%: $(verdict "${RES[gzip1_mixed.ratio]}" 90))
                ${RES[gzip1_mixed.cpu]}
gzip -1 random  ${RES[gzip1_random]} (target >= 90%: $(verdict "${RES[gzip1_random.ratio]}" 90))
                ${RES[gzip1_random.cpu]}
sha256          ${RES[sha256]} (target >= 90%: $(verdict "${RES[sha256.ratio]}" 90))
                ${RES[sha256.cpu]}
open streams    $OPEN_STREAMS x compress?codec=zstd&level=1: RSS $RSS0 -> $RSS1 KiB, $PER_STREAM KiB per stream
# other load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min load average at the end)
REP
)
echo "$REPORT"
mkdir -p "$(dirname "$RESULTS")"
echo "$REPORT" >>"$RESULTS"
