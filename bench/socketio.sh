#!/usr/bin/env bash
# Socket.IO side by side: the same fan-out (one Socket.IO-over-WebSocket publisher at a fixed
# rate → N listeners in one room) against Parley's `/socket.io/` and the reference Node server
# (bench/node/socketio-rooms.js, which stores nothing), with the listeners on each Engine.IO
# transport in turn — WebSocket, then HTTP long-polling — all in one run. Prints server CPU per
# delivery, deliveries per second and latency percentiles, Parley next to Node, as Markdown.
# Server on CPU 0, bots on CPU 1 (taskset); 127.0.0.1 only; every step bounded in time, and the
# whole run stops starting new measurements after DEADLINE seconds (default 900).
#
#   bench/socketio.sh [LISTENERS (default 500)] [RATE msg/s (default 50)] [REPS (default 3)]
# TRANSPORTS="socketio" picks the listeners' transports (default: socketio socketio-polling);
# SERVERS="node" picks the servers (default: parley node).
# PARLEY_BIN and BOTS_BIN run given binaries instead of building this checkout's (release).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-500}
RATE=${2:-50}
REPS=${3:-3}
DEADLINE=${DEADLINE:-900}
TRANSPORTS=${TRANSPORTS:-socketio socketio-polling}
SERVERS=${SERVERS:-parley node}
PARLEY_PORT=18093
NODE_PORT=18094
OUT=$(mktemp -d -t parley-socketio.XXXXXX)
SPID=
cleanup() {
  if [ -n "$SPID" ]; then kill -KILL "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
  rm -rf "$OUT"
}
trap cleanup EXIT
case " $SERVERS " in
  *" node "*)
    if [ ! -d bench/node/node_modules/socket.io ]; then
      echo "socketio.sh: bench/node/node_modules is missing: run bench/setup.sh (npm ci)" >&2
      exit 2
    fi ;;
esac
if [ -z "${PARLEY_BIN:-}" ] || [ -z "${BOTS_BIN:-}" ]; then
  timeout 1800 cargo build --release -p parley-server -p parley-bots 2>&1 | tail -1
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PARLEY=${PARLEY_BIN:-$TARGET/release/parley}
BOTS=${BOTS_BIN:-$TARGET/release/parley-bots}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

scenario() { # TRANSPORT → scenario file (everyone a guest; the publisher on a WebSocket)
  cat > "$OUT/$1.toml" <<TOML
name = "socketio-$1"
ramp_up = "3s"
warmup = "2s"
duration = "6s"
drain = "2s"
connect_concurrency = 64
connect_timeout = "20s"

[[group]]
name = "publisher"
count = 1
protocol = "socketio"
room = "socketio"
rate = $RATE
size = 64

[[group]]
name = "listener"
count = $N
protocol = "$1"
auth = "guest"
room = "socketio"
TOML
  echo "$OUT/$1.toml"
}

start() { # SERVER → starts it on CPU 0, sets SPID and PORT, waits until it answers
  case $1 in
    parley)
      PORT=$PARLEY_PORT
      taskset -c 0 "$PARLEY" serve --allow-guests --guests-create-rooms --rate-limit 0 \
        --max-connections-per-ip 0 --data "$(mktemp -d -p "$OUT")" \
        --http "127.0.0.1:$PORT" --stomp-tcp off > "$OUT/parley.log" 2>&1 &
      SPID=$! ;;
    node)
      PORT=$NODE_PORT
      taskset -c 0 node bench/node/socketio-rooms.js "$PORT" > "$OUT/node.log" 2>&1 &
      SPID=$! ;;
  esac
  for _ in $(seq 50); do
    curl -sf -m 1 "http://127.0.0.1:$PORT/socket.io/?EIO=4&transport=polling" >/dev/null && return
    sleep 0.1
  done
  echo "socketio.sh: $1 did not answer on 127.0.0.1:$PORT" >&2
}

measure() { # SERVER TRANSPORT → "cpu_us rate p50 p99 errors", the median of REPS runs by CPU
  local file rows=() json
  file=$(scenario "$2")
  for _ in $(seq "$REPS"); do
    if [ "$SECONDS" -ge "$DEADLINE" ]; then echo "socketio.sh: past DEADLINE, $1 $2 cut short" >&2; break; fi
    start "$1"
    json=$(timeout 90 taskset -c 1 "$BOTS" run "$file" --http "127.0.0.1:$PORT" --server-pid "$SPID" --json 2>/dev/null || true)
    kill -TERM "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; SPID=
    rows+=("$(python3 bench/row.py "$json")")
  done
  if [ "${#rows[@]}" -eq 0 ]; then echo "- - - - skipped"; return; fi
  printf '%s\n' "${rows[@]}" | sort -n | awk -v n="${#rows[@]}" '
    { a[NR] = $0 } END { s = a[int((n + 1) / 2)]; if (s ~ /^9e9/) sub(/^9e9/, "-", s); print s }'
}

declare -A RESULT
for t in $TRANSPORTS; do
  for s in $SERVERS; do
    RESULT[$s,$t]=$(measure "$s" "$t")
  done
done

cell() { # SERVER TRANSPORT FIELD(1-5) → the value, or "-"
  local v
  v=$(echo "${RESULT[$1,$2]:-- - - - -}" | awk -v f="$3" '{ print $f }')
  echo "${v:--}"
}
echo "One Socket.IO publisher at $RATE msg/s → $N listeners, median of $REPS by server CPU:"
echo
header="| listeners on |"; rule="| --- |"
for s in $SERVERS; do
  header="$header $s µs CPU / delivery | $s deliveries/s | $s p50 / p99 (ms) | $s errors |"
  rule="$rule --- | --- | --- | --- |"
done
echo "$header"; echo "$rule"
for t in $TRANSPORTS; do
  line="| $t |"
  for s in $SERVERS; do
    line="$line $(cell "$s" "$t" 1) | $(cell "$s" "$t" 2) | $(cell "$s" "$t" 3) / $(cell "$s" "$t" 4) | $(cell "$s" "$t" 5) |"
  done
  echo "$line"
done
