#!/usr/bin/env bash
# Fan-out across 1, 2 and 3 Parley nodes sharing Redis and PostgreSQL, and what the Redis hop
# costs: prints a Markdown table (and writes it to bench/results/cluster-<date>.md).
#
#   bench/cluster.sh [RATE] [SUBSCRIBERS]        (defaults: 200 msg/s, 1000 subscribers)
#
# One publisher sends RATE messages a second (64 B) to one room whose SUBSCRIBERS are spread
# evenly over the nodes, each node's share run by its own parley-bots process. Rows: one node
# alone (SQLite, no cluster: the baseline), then 1, 2 and 3 nodes with --cluster and
# --database. Server CPU is the sum over the nodes (user + system from /proc/PID/stat over the
# measured window), Redis and PostgreSQL CPU likewise over their processes. The nodes, Redis
# and PostgreSQL share CPU 0 (`taskset`; Redis and PostgreSQL are moved there for the run and
# back afterwards), the bots CPU 1: on two cores that is how far "a core each" goes.
# Loopback only; a fresh Redis on a free port and a scratch database, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RATE=${1:-200}
SUBS=${2:-1000}
MEASURE=${MEASURE:-6s}
SRV_CPU=${SRV_CPU:-0}
BOT_CPU=${BOT_CPU:-1}
PG=postgres://postgres@127.0.0.1:5432
OUT=$ROOT/bench/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release -q -p parley-server -p parley-bots
PARLEY=$ROOT/target/release/parley
BOTS=$ROOT/target/release/parley-bots

PIDS=()
REDIS_PID=
cleanup() {
  for p in "${PIDS[@]}" $REDIS_PID; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}" $REDIS_PID; do kill -KILL "$p" 2>/dev/null || true; done
  # PostgreSQL's processes go back to every CPU.
  for p in $(pgrep -x postgres || true); do taskset -p -c "0-$(( $(nproc) - 1 ))" "$p" >/dev/null 2>&1 || true; done
  psql "$PG/test" -qc "DROP DATABASE IF EXISTS parley_bench_cluster WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

cpu_ticks() { # summed utime+stime of the given pids, in clock ticks
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$t"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

for p in $(pgrep -x postgres || true); do taskset -p -c "$SRV_CPU" "$p" >/dev/null 2>&1 || true; done
HZ=$(getconf CLK_TCK)

# scenario NAME COUNT PUBLISHER(0|1)
scenario() {
  local f=$OUT/$1.toml
  cat > "$f" <<EOF
name = "$1"
ramp_up = "2s"
warmup = "2s"
duration = "$MEASURE"
drain = "2s"
connect_concurrency = 128

[[group]]
name = "listener"
count = $2
protocol = "stomp-ws"
room = "cluster-bench"
EOF
  if [ "$3" = 1 ]; then
    cat >> "$f" <<EOF

[[group]]
name = "publisher"
count = 1
protocol = "stomp-ws"
room = "cluster-bench"
rate = $RATE
size = 64
in_flight = 64
EOF
  fi
  echo "$f"
}

# run_case LABEL NODES CLUSTER(0|1)
ROWS=()
run_case() {
  local label=$1 nodes=$2 cluster=$3 i port ports=() redis_port
  PIDS=()
  REDIS_PID=
  local args=(--allow-guests --guests-create-rooms --rate-limit 0 --stomp-tcp off)
  if [ "$cluster" = 1 ]; then
    redis_port=$(free_port)
    taskset -c "$SRV_CPU" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
      > "$OUT/redis.log" 2>&1 &
    REDIS_PID=$!
    wait_port "$redis_port"
    psql "$PG/test" -qc "DROP DATABASE IF EXISTS parley_bench_cluster WITH (FORCE)" >/dev/null
    psql "$PG/test" -qc "CREATE DATABASE parley_bench_cluster" >/dev/null
    args+=(--cluster "redis://127.0.0.1:$redis_port" --database "$PG/parley_bench_cluster")
  fi
  for i in $(seq 1 "$nodes"); do
    port=$(free_port)
    rm -rf "$OUT/data-$i"
    taskset -c "$SRV_CPU" "$PARLEY" serve --data "$OUT/data-$i" --http "127.0.0.1:$port" --max-connections-per-ip 0 "${args[@]}" \
      > "$OUT/node-$label-$i.log" 2>&1 &
    PIDS+=($!)
    ports+=("$port")
    wait_port "$port"
  done
  sleep 0.5
  local pg_pids redis_pids=() t0_srv t0_pg t0_redis start end
  pg_pids=$(pgrep -x postgres | tr '\n' ' ')
  [ -n "$REDIS_PID" ] && redis_pids=("$REDIS_PID")
  local bots_pids=() per=$(( SUBS / nodes ))
  for i in $(seq 1 "$nodes"); do
    local f
    f=$(scenario "$label-$i" "$per" "$([ "$i" = 1 ] && echo 1 || echo 0)")
    timeout 120 taskset -c "$BOT_CPU" "$BOTS" run "$f" --json --http "127.0.0.1:${ports[$((i - 1))]}" \
      > "$OUT/$label-$i.json" 2> "$OUT/$label-$i.err" &
    bots_pids+=($!)
  done
  # The measured window: after ramp-up and warm-up, for MEASURE.
  sleep 4
  start=$(date +%s.%N)
  t0_srv=$(cpu_ticks "${PIDS[@]}"); t0_pg=$(cpu_ticks $pg_pids); t0_redis=$(cpu_ticks "${redis_pids[@]}")
  sleep "${MEASURE%s}"
  end=$(date +%s.%N)
  local d_srv d_pg d_redis
  d_srv=$(( $(cpu_ticks "${PIDS[@]}") - t0_srv ))
  d_pg=$(( $(cpu_ticks $pg_pids) - t0_pg ))
  d_redis=$(( $(cpu_ticks "${redis_pids[@]}") - t0_redis ))
  for p in "${bots_pids[@]}"; do wait "$p" || true; done
  ROWS+=("$(python3 - "$OUT" "$label" "$nodes" "$RATE" "$HZ" "$d_srv" "$d_pg" "$d_redis" "$start" "$end" <<'EOF'
import json, sys, glob
out, label, nodes, rate, hz, d_srv, d_pg, d_redis, start, end = sys.argv[1:]
nodes, hz = int(nodes), int(hz)
secs = float(end) - float(start)
delivered = sent = 0.0
p99 = []
errors = 0
for i in range(1, nodes + 1):
    r = json.load(open(f"{out}/{label}-{i}.json"))
    delivered += r["messages"]["delivered_per_s"]
    sent += r["messages"]["sent_per_s"]
    p99.append(r["latency_us"]["p99"])
    errors += r["errors"]["gaps"] + r["errors"]["duplicates"] + r["errors"]["out_of_order"]
srv = int(d_srv) / hz / secs
pg = int(d_pg) / hz / secs
redis = int(d_redis) / hz / secs
per_delivery = srv * 1e6 / delivered if delivered else float("nan")
per_msg_redis = redis * 1e6 / sent if sent else float("nan")
per_msg_pg = pg * 1e6 / sent if sent else float("nan")
print(f"| {label} | {nodes} | {sent:,.0f} | {delivered:,.0f} | {srv:.2f} | {per_delivery:.2f} | "
      f"{per_msg_redis:.0f} | {per_msg_pg:.0f} | {max(p99)/1000:.1f} ms | {errors} |")
EOF
)")
  echo "${ROWS[-1]}"
  for p in "${PIDS[@]}" $REDIS_PID; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}" $REDIS_PID; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  REDIS_PID=
}

run_case single 1 0
run_case cluster-1 1 1
run_case cluster-2 2 1
run_case cluster-3 3 1

{
  echo "Fan-out of $RATE msg/s (64 B) to $SUBS subscribers of one room over the nodes; $(nproc) cores, nodes + Redis + PostgreSQL on CPU $SRV_CPU, bots on CPU $BOT_CPU; $(date -u +%Y-%m-%dT%H:%M:%SZ)."
  echo
  echo "| case | nodes | sent/s | deliveries/s | server cores (all nodes) | server CPU µs / delivery | Redis CPU µs / message | PostgreSQL CPU µs / message | worst p99 | gaps + duplicates + out of order |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/cluster.md"
