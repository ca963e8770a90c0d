#!/usr/bin/env bash
# What a fallback client costs: the same fan-out (one STOMP-over-WebSocket publisher at a fixed
# rate → N listeners in one room) with the listeners on each transport in turn — WebSocket,
# SockJS xhr-streaming, SockJS xhr-polling (STOMP), the SSE room feed — reporting server CPU per
# delivery and latency. Server on CPU 0, bots on CPU 1 (taskset), loopback only, every run
# bounded; prints a Markdown table (docs/performance.md, "Fallback transports").
#
#   bench/fallback.sh [LISTENERS (default 500)] [RATE msg/s (default 50)] [REPS (default 3)]
# TRANSPORTS="stomp-ws sse" picks the listeners' transports (default: all four).
# PARLEY_BIN and BOTS_BIN run given binaries instead of building this checkout's (release).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-500}
RATE=${2:-50}
REPS=${3:-3}
OUT=$(mktemp -d -t parley-fallback.XXXXXX)
SPID=
cleanup() {
  if [ -n "$SPID" ]; then kill -KILL "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
  rm -rf "$OUT"
}
trap cleanup EXIT
if [ -z "${PARLEY_BIN:-}" ] || [ -z "${BOTS_BIN:-}" ]; then
  cargo build --release -p parley-server -p parley-bots 2>&1 | tail -1
fi
PARLEY=${PARLEY_BIN:-$ROOT/target/release/parley}
BOTS=${BOTS_BIN:-$ROOT/target/release/parley-bots}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

scenario() { # TRANSPORT → scenario file (listeners are guests: an SSE guest reads, posts none)
  cat > "$OUT/$1.toml" <<TOML
name = "fallback-$1"
ramp_up = "3s"
warmup = "2s"
duration = "6s"
drain = "2s"
connect_concurrency = 64
connect_timeout = "20s"

[[group]]
name = "publisher"
count = 1
protocol = "stomp-ws"
room = "fallback"
rate = $RATE
size = 64

[[group]]
name = "listener"
count = $N
protocol = "$1"
auth = "guest"
room = "fallback"
TOML
  echo "$OUT/$1.toml"
}

echo "| listeners on | server CPU µs / delivery (median of $REPS) | deliveries/s | p50 | p99 | errors |"
echo "| --- | --- | --- | --- | --- | --- |"
for t in ${TRANSPORTS:-stomp-ws stomp-xhr-streaming stomp-xhr-polling sse}; do
  file=$(scenario "$t")
  rows=()
  for _ in $(seq "$REPS"); do
    data=$(mktemp -d -p "$OUT")
    taskset -c 0 "$PARLEY" serve --allow-guests --guests-create-rooms --rate-limit 0 \
      --max-connections-per-ip 0 --data "$data" --http 127.0.0.1:18090 --stomp-tcp off \
      > "$OUT/server.log" 2>&1 &
    SPID=$!
    for _ in $(seq 50); do curl -sf http://127.0.0.1:18090/healthz >/dev/null && break; sleep 0.1; done
    json=$(timeout 120 taskset -c 1 "$BOTS" run "$file" --http 127.0.0.1:18090 --server-pid "$SPID" --json 2>/dev/null || true)
    kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=
    rows+=("$(python3 bench/row.py "$json")")
  done
  printf '%s\n' "${rows[@]}" | sort -n | awk -v t="$t" -v n="$REPS" '
    { a[NR] = $0 }
    END { split(a[int((n + 1) / 2)], f, " "); if (f[1] == "9e9") f[1] = "-";
          printf "| %s | %s | %s | %s ms | %s ms | %s |\n", t, f[1], f[2], f[3], f[4], f[5] }'
done
