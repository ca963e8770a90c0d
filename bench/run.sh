#!/usr/bin/env bash
# Runs the same parley-bots scenarios against Parley and the reference servers, back to back,
# and writes docs/performance.md (table of medians, ratios, charts).
#
#   bench/run.sh [--quick] [--reps N] [--servers a,b,...] [--no-report]
#
# Servers: parley-stomp (STOMP over WebSocket), parley-raw (raw JSON /ws), node-ws, socketio,
# tungstenite, rabbitmq. The server runs pinned to CPU 0 (taskset), the bots to CPU 1.
# Loopback only; every step is bounded by a timeout; every server this script started is
# stopped at the end, and RabbitMQ's STOMP plugins are disabled again (also on failure).
# A full run takes about 33 minutes, --quick (one repetition, smaller counts) about 5.
# PARLEY_BIN and BOTS_BIN run given binaries instead of building this checkout's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench

QUICK=0
REPS=
SERVERS="parley-stomp,parley-raw,node-ws,socketio,tungstenite,rabbitmq"
REPORT=1
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --reps) REPS=$2; shift ;;
    --servers) SERVERS=$2; shift ;;
    --no-report) REPORT=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

SRV_CPU=${SRV_CPU:-0}
BOT_CPU=${BOT_CPU:-1}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.50}
LISTENERS=${LISTENERS:-1000}
# RabbitMQ as installed here may hold ~830 sockets (its service's `ulimit -n` is 1024).
RABBIT_MAX_CONNS=${RABBIT_MAX_CONNS:-700}
if [ "$QUICK" = 1 ]; then
  REPS=${REPS:-1}
  RAMP=1s; WARMUP=1s; MEASURE=3s; SLOW_MEASURE=5s
  IDLE_COUNTS=${IDLE_COUNTS:-"1000 5000"}
  ROOMS=${ROOMS:-1000}; MR_RAMP=4s; MR_MEASURE=3s; MR_LIGHT=${MR_LIGHT:-1000}; FIXED_MEASURE=4s
else
  REPS=${REPS:-3}
  RAMP=2s; WARMUP=1s; MEASURE=4s; SLOW_MEASURE=10s
  IDLE_COUNTS=${IDLE_COUNTS:-"1000 5000 19000"}
  # 4,750 × 4 = 19,000 connections: the open-file limit here is 20,000 per process (hard), for
  # the bots as for the server.
  ROOMS=${ROOMS:-4750}; MR_RAMP=12s; MR_MEASURE=5s; MR_LIGHT=${MR_LIGHT:-1000}; FIXED_MEASURE=10s
fi
# One publisher rate for every server, low enough that the bots stay well under half a core
# (1,000 subscribers → 10,000 deliveries a second): the latency there is the server's.
FIXED_RATE=${FIXED_RATE:-10}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$BENCH/results/$STAMP}
mkdir -p "$OUT/json" "$OUT/logs" "$OUT/scenarios" "$OUT/tmp"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
T0=$(date +%s)

say() { printf '\033[1m[%4ss] %s\033[0m\n' "$(( $(date +%s) - T0 ))" "$*"; }
warn() { printf '[%4ss] WARNING: %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; echo "$*" >> "$OUT/warnings.txt"; }

# ---------------------------------------------------------------- cleanup (always)
SPID=
SAMPLER=
RABBIT_ENABLED=0
RABBIT_PID=
cleanup() {
  local rc=$?
  set +e
  if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null; fi
  if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
    kill -KILL "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null
  fi
  SPID=
  if [ -n "$RABBIT_PID" ]; then
    taskset -a -p -c "0-$(( $(nproc) - 1 ))" "$RABBIT_PID" >/dev/null 2>&1
    RABBIT_PID=
  fi
  if [ "$RABBIT_ENABLED" = 1 ]; then
    echo "run.sh: disabling rabbitmq_web_stomp and rabbitmq_stomp" >&2
    timeout 60 rabbitmq-plugins -q disable rabbitmq_web_stomp rabbitmq_stomp >/dev/null 2>&1 \
      || echo "run.sh: could not disable the RabbitMQ STOMP plugins: run 'rabbitmq-plugins disable rabbitmq_web_stomp rabbitmq_stomp'" >&2
    RABBIT_ENABLED=0
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- preparation
say "setup and release build"
"$BENCH/setup.sh" > "$OUT/logs/setup.log" 2>&1 || { cat "$OUT/logs/setup.log" >&2; exit 1; }
# PARLEY_BIN / BOTS_BIN: other builds (e.g. one commit against another, in one sitting).
if [ -z "${PARLEY_BIN:-}" ] || [ -z "${BOTS_BIN:-}" ]; then
  cargo build --release -p parley-server -p parley-bots 2>&1 | tail -1
fi
PARLEY=${PARLEY_BIN:-$ROOT/target/release/parley}
BOTS=${BOTS_BIN:-$ROOT/target/release/parley-bots}
TUNG=$BENCH/tungstenite-ref/target/release/tungstenite-ref
# Tens of thousands of sockets on each side; root may raise the hard limit.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
say "open files limit: $(ulimit -n); results in ${OUT#"$ROOT"/}"

# ---------------------------------------------------------------- scenarios
# fanout NAME LISTENERS RATE IN_FLIGHT SIZE MEASURE SLOW(0|1)
gen_fanout() {
  local f=$OUT/scenarios/$1.toml
  cat > "$f" <<EOF
name = "$1"
ramp_up = "$RAMP"
warmup = "$WARMUP"
duration = "$6"
drain = "1s"
connect_concurrency = 128
connect_timeout = "20s"

[[group]]
name = "listener"
count = $2
protocol = "stomp-ws"
room = "fanout"
EOF
  if [ "$7" = 1 ]; then
    cat >> "$f" <<EOF

[[group]]
name = "slow"
count = 1
protocol = "stomp-ws"
room = "fanout"
slow = true
EOF
  fi
  cat >> "$f" <<EOF

[[group]]
name = "publisher"
count = 1
protocol = "stomp-ws"
room = "fanout"
rate = $3
size = $5
in_flight = $4
EOF
  echo "$f"
}

# idle NAME COUNT AUTH
# Held open long enough for every bot to be up on the reference VM (run_bots warns when fewer
# were): joins that announce presence to a room's other members (raw JSON, ~190 per room at
# 19,000) queue the last connections for seconds past the ramp, and memory read earlier is
# divided by the connections already up.
gen_idle() {
  local f=$OUT/scenarios/$1.toml ramp=$(( $2 / 2000 + 1 )) hold=$(( $2 / 1500 + 2 ))
  cat > "$f" <<EOF
name = "$1"
ramp_up = "${ramp}s"
duration = "${hold}s"
drain = "0s"
connect_concurrency = 256
connect_timeout = "30s"

[[group]]
name = "idle"
count = $2
protocol = "stomp-ws"
auth = "$3"
room = "idle-{n % 100}"
EOF
  echo "$f"
}

# many-rooms NAME ROOMS
gen_many_rooms() {
  local f=$OUT/scenarios/$1.toml
  cat > "$f" <<EOF
name = "$1"
ramp_up = "$MR_RAMP"
warmup = "2s"
duration = "$MR_MEASURE"
drain = "1s"
connect_concurrency = 256
connect_timeout = "30s"

[[group]]
name = "m"
count = $(( $2 * 4 ))
protocol = "stomp-ws"
room = "mr-{n / 4}"
rate = 1
jitter = 0.5
size = 64
in_flight = 4
EOF
  echo "$f"
}

# ---------------------------------------------------------------- servers
PORT=
PROTO=
BOT_ARGS=()
SERVER_LOG=

wait_port() {
  local port=$1 i
  for i in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# Sets SPID, PORT, PROTO, BOT_ARGS for server $1.
start_server() {
  SERVER_LOG=$OUT/logs/$1.server.log
  BOT_ARGS=()
  case $1 in
    parley-stomp|parley-raw)
      PORT=18080
      [ "$1" = parley-stomp ] && PROTO=stomp-ws || PROTO=raw
      rm -rf "$OUT/tmp/parley-data"
      taskset -c "$SRV_CPU" "$PARLEY" serve --data "$OUT/tmp/parley-data" --http "127.0.0.1:$PORT" \
        --stomp-tcp off --allow-guests --guests-create-rooms --rate-limit 0 --max-connections-per-ip 0 >> "$SERVER_LOG" 2>&1 &
      SPID=$!
      BOT_ARGS=(--jwt-secret-file "$OUT/tmp/parley-data/jwt-secret")
      ;;
    node-ws)
      PORT=18081; PROTO=ws-broadcast
      taskset -c "$SRV_CPU" node "$BENCH/node/ws-broadcast.js" "$PORT" >> "$SERVER_LOG" 2>&1 &
      SPID=$!
      ;;
    socketio)
      PORT=18082; PROTO=socketio
      taskset -c "$SRV_CPU" node "$BENCH/node/socketio-rooms.js" "$PORT" >> "$SERVER_LOG" 2>&1 &
      SPID=$!
      ;;
    tungstenite)
      PORT=18083; PROTO=ws-broadcast
      taskset -c "$SRV_CPU" "$TUNG" "127.0.0.1:$PORT" >> "$SERVER_LOG" 2>&1 &
      SPID=$!
      ;;
    rabbitmq)
      PORT=15674; PROTO=stomp-ws
      BOT_ARGS=(--ws-path /ws --stomp-login guest --stomp-passcode guest --stomp-host /)
      SPID=
      ;;
  esac
  if ! wait_port "$PORT"; then
    warn "$1 did not start listening on $PORT"
    return 1
  fi
  case $1 in parley-*) sleep 0.3 ;; esac # the JWT secret is written at start
  return 0
}

stop_server() {
  if [ -n "$SPID" ]; then
    kill -TERM "$SPID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    SPID=
  fi
}

server_pid() {
  if [ "$1" = rabbitmq ]; then echo "$RABBIT_PID"; else echo "$SPID"; fi
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# run_bots SERVER SCENARIO REP PARAM SCENARIO_FILE [RSS_BEFORE]
run_bots() {
  local server=$1 scenario=$2 rep=$3 param=$4 file=$5 rss_before=${6:-null}
  local tag=$server.$scenario.$param.r$rep pid rc=0 slab0 slab=null
  pid=$(server_pid "$server")
  if [ "$scenario" = idle ]; then
    # Kernel memory of the sockets: the slab's growth while the connections are open.
    slab0=$(awk '/^Slab:/ {print $2}' /proc/meminfo)
    ( while :; do awk '/^Slab:/ {print $2}' /proc/meminfo; sleep 0.5; done ) > "$OUT/tmp/slab" &
    SAMPLER=$!
  fi
  timeout --kill-after=10 240 taskset -c "$BOT_CPU" "$BOTS" run "$file" --json \
    --http "127.0.0.1:$PORT" --protocol "$PROTO" --server-pid "$pid" --sources "$SOURCES" \
    ${BOT_ARGS[@]+"${BOT_ARGS[@]}"} > "$OUT/json/$tag.json" 2> "$OUT/logs/$tag.err" || rc=$?
  if [ -n "$SAMPLER" ]; then
    kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=
    slab=$(( $(sort -n "$OUT/tmp/slab" | tail -1) - slab0 ))
  fi
  if [ ! -s "$OUT/json/$tag.json" ]; then
    warn "$tag: parley-bots exited $rc without a report (see logs/$tag.err)"
    rm -f "$OUT/json/$tag.json"
    return 1
  fi
  printf '{"server":"%s","scenario":"%s","rep":%s,"param":%s,"rss_before_kib":%s,"slab_growth_kib":%s,"file":"json/%s.json"}\n' \
    "$server" "$scenario" "$rep" "$param" "$rss_before" "$slab" "$tag" >> "$RESULTS"
  python3 - "$OUT/json/$tag.json" "$tag" "$scenario" "$param" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); s = r.get("server") or {}; l = r["latency_us"]; e = r["errors"]
if sys.argv[3] == "idle" and r["connections"]["up"] < int(sys.argv[4]):
    print(f"    WARNING {sys.argv[2]}: only {r['connections']['up']} of {sys.argv[4]} bots up when "
          "memory was read: its figure per connection is not comparable (hold it longer)")
print(f"    {sys.argv[2]}: {r['connections']['up']} up/{r['connections']['failed']} failed, "
      f"{r['messages']['delivered_per_s']:.0f} deliveries/s, server {s.get('cpu_us_per_delivery')} µs/delivery, "
      f"p99 {l['p99']} µs, rss {s.get('rss_kib')} KiB, errors {e['total']}")
EOF
}

json_field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

rabbit_on() {
  command -v rabbitmq-plugins >/dev/null || { warn "no RabbitMQ here: skipped"; return 1; }
  say "rabbitmq: enabling rabbitmq_web_stomp"
  RABBIT_ENABLED=1
  timeout 120 rabbitmq-plugins -q enable rabbitmq_web_stomp > "$OUT/logs/rabbitmq.plugins.log" 2>&1 \
    || { warn "could not enable rabbitmq_web_stomp"; return 1; }
  RABBIT_PID=$(pidof beam.smp | awk '{print $1}')
  [ -n "$RABBIT_PID" ] || { warn "no beam.smp process"; return 1; }
  taskset -a -p -c "$SRV_CPU" "$RABBIT_PID" > /dev/null
  wait_port 15674 || { warn "Web-STOMP is not listening on 15674"; return 1; }
}

rabbit_off() {
  if [ -n "$RABBIT_PID" ]; then
    taskset -a -p -c "0-$(( $(nproc) - 1 ))" "$RABBIT_PID" >/dev/null 2>&1 || true
    RABBIT_PID=
  fi
  if [ "$RABBIT_ENABLED" = 1 ]; then
    say "rabbitmq: disabling rabbitmq_web_stomp and rabbitmq_stomp"
    timeout 60 rabbitmq-plugins -q disable rabbitmq_web_stomp rabbitmq_stomp >> "$OUT/logs/rabbitmq.plugins.log" 2>&1 \
      || warn "could not disable the RabbitMQ STOMP plugins"
    RABBIT_ENABLED=0
  fi
}

# ---------------------------------------------------------------- one server, one repetition
bench_server() {
  local server=$1 rep=$2 listeners=$LISTENERS rooms=$ROOMS idle_counts=$IDLE_COUNTS f max_rate rate
  if [ "$server" = rabbitmq ]; then
    listeners=$(( RABBIT_MAX_CONNS - 2 < LISTENERS ? RABBIT_MAX_CONNS - 2 : LISTENERS ))
    rooms=$(( RABBIT_MAX_CONNS / 4 < ROOMS ? RABBIT_MAX_CONNS / 4 : ROOMS ))
    idle_counts=$(for c in $IDLE_COUNTS; do [ "$c" -le "$RABBIT_MAX_CONNS" ] && echo "$c"; done; echo "$RABBIT_MAX_CONNS")
    idle_counts=$(echo "$idle_counts" | sort -nu | tr '\n' ' ')
  fi
  say "$server, repetition $rep: fan-out under load (1 → $listeners, 64 in flight)"
  start_server "$server" || return 0
  f=$(gen_fanout fanout-$listeners "$listeners" '"max"' 64 64 "$MEASURE" 0)
  run_bots "$server" fanout "$rep" "$listeners" "$f" || true

  say "$server, repetition $rep: sparse fan-out (1 in flight)"
  f=$(gen_fanout sparse-$listeners "$listeners" '"max"' 1 64 "$MEASURE" 0)
  run_bots "$server" sparse "$rep" "$listeners" "$f" || true

  max_rate=0
  if [ -f "$OUT/json/$server.fanout.$listeners.r$rep.json" ]; then
    max_rate=$(json_field "$OUT/json/$server.fanout.$listeners.r$rep.json" 'int(r["messages"]["sent_per_s"])')
  fi
  if [ "$max_rate" -ge 2 ]; then
    rate=$(( max_rate / 2 ))
    say "$server, repetition $rep: latency at half the max rate ($rate msg/s)"
    f=$(gen_fanout latency-$server-$rep "$listeners" "$rate" 64 64 "$MEASURE" 0)
    run_bots "$server" latency "$rep" "$rate" "$f" || true
    # At a tenth of the maximum the bots are far from busy, so the percentiles are the
    # server's and the network's, not the bots' own queueing.
    rate=$(( max_rate / 10 > 1 ? max_rate / 10 : 1 ))
    say "$server, repetition $rep: latency at a tenth of the max rate ($rate msg/s)"
    f=$(gen_fanout light-$server-$rep "$listeners" "$rate" 64 64 "$MEASURE" 0)
    run_bots "$server" light "$rep" "$rate" "$f" || true
  else
    warn "$server: no fan-out rate measured, latency runs skipped"
  fi
  say "$server, repetition $rep: latency at a fixed $FIXED_RATE msg/s"
  f=$(gen_fanout fixed-$listeners "$listeners" "$FIXED_RATE" 64 64 "$FIXED_MEASURE" 0)
  run_bots "$server" fixed "$rep" "$FIXED_RATE" "$f" || true

  if [ "$rep" = 1 ]; then
    say "$server, repetition $rep: slow-consumer baseline (100 msg/s of 1 KiB, no slow one)"
    f=$(gen_fanout slowbase-$listeners "$listeners" 100 64 1024 "$SLOW_MEASURE" 0)
    run_bots "$server" slow-base "$rep" "$listeners" "$f" || true
  fi
  say "$server, repetition $rep: slow consumer (one of $(( listeners + 1 )) stops reading)"
  f=$(gen_fanout slow-$listeners "$listeners" 100 64 1024 "$SLOW_MEASURE" 1)
  run_bots "$server" slow "$rep" "$listeners" "$f" || true

  case $server in
    parley-stomp|parley-raw|socketio|rabbitmq)
      # A lighter load too, to show where one core still keeps p99 within the target.
      for r in $(printf '%s\n' "$MR_LIGHT" "$rooms" | sort -nu); do
        [ "$r" -le "$rooms" ] || continue
        say "$server, repetition $rep: many rooms ($r rooms × 4, 1 msg/s each)"
        [ "$server" = rabbitmq ] || { stop_server; start_server "$server" || return 0; }
        f=$(gen_many_rooms many-rooms-$r "$r")
        run_bots "$server" many-rooms "$rep" "$r" "$f" || true
      done
      ;;
  esac
  stop_server

  # Idle memory: a fresh server for each count (RabbitMQ: the running service).
  local counts=$idle_counts auth=guest before
  [ "$rep" = 1 ] || counts=$(echo "$idle_counts" | tr ' ' '\n' | grep . | tail -1)
  case $server in parley-*) auth=token ;; esac
  for c in $counts; do
    say "$server, repetition $rep: idle memory, $c connections ($auth)"
    start_server "$server" || continue
    sleep 1
    before=$(rss_kib "$(server_pid "$server")")
    f=$(gen_idle idle-$c-$auth "$c" "$auth")
    run_bots "$server" idle "$rep" "$c" "$f" "$before" || true
    stop_server
    if [ "$server" = rabbitmq ]; then sleep 3; fi # let the broker tear the connections down
  done
  return 0
}

# ---------------------------------------------------------------- main
{
  echo "{"
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"quick\": $QUICK, \"reps\": $REPS, \"listeners\": $LISTENERS, \"rooms\": $ROOMS,"
  echo "  \"rabbit_max_conns\": $RABBIT_MAX_CONNS, \"idle_counts\": \"$IDLE_COUNTS\","
  echo "  \"measure\": \"$MEASURE\", \"slow_measure\": \"$SLOW_MEASURE\", \"fixed_rate\": $FIXED_RATE, \"fixed_measure\": \"$FIXED_MEASURE\","
  echo "  \"cpu_model\": \"$(lscpu | sed -n 's/^Model name: *//p' | head -1)\","
  echo "  \"cores\": $(nproc), \"kernel\": \"$(uname -r)\", \"mem_total_kib\": $(awk '/MemTotal/ {print $2}' /proc/meminfo),"
  echo "  \"parley_commit\": \"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo +changes)\","
  echo "  \"node\": \"$(node --version)\", \"rabbitmq\": \"$(rabbitmqctl -q version 2>/dev/null || echo none)\","
  echo "  \"sysctl\": {\"nr_open\": $(cat /proc/sys/fs/nr_open), \"file_max\": $(cat /proc/sys/fs/file-max), \"somaxconn\": $(cat /proc/sys/net/core/somaxconn), \"port_range\": \"$(tr '\t' ' ' < /proc/sys/net/ipv4/ip_local_port_range)\", \"tcp_mem\": \"$(tr '\t' ' ' < /proc/sys/net/ipv4/tcp_mem)\", \"tcp_rmem\": \"$(tr '\t' ' ' < /proc/sys/net/ipv4/tcp_rmem)\", \"tcp_wmem\": \"$(tr '\t' ' ' < /proc/sys/net/ipv4/tcp_wmem)\", \"ulimit_n\": $(ulimit -n)}"
  echo "}"
} > "$OUT/meta.json"

IFS=, read -r -a SERVER_LIST <<< "$SERVERS"
for rep in $(seq 1 "$REPS"); do
  for server in "${SERVER_LIST[@]}"; do
    case $server in
      parley-stomp|parley-raw|node-ws|socketio|tungstenite) bench_server "$server" "$rep" ;;
      rabbitmq)
        if rabbit_on; then bench_server rabbitmq "$rep"; fi
        rabbit_off
        ;;
      *) warn "unknown server $server" ;;
    esac
  done
done

say "all runs done"
if [ "$REPORT" = 1 ]; then
  PY=python3
  [ -x "$HOME/.cache/parley/bench/venv/bin/python" ] && PY=$HOME/.cache/parley/bench/venv/bin/python
  "$PY" "$BENCH/report.py" "$OUT" "$ROOT/docs/performance.md"
  say "wrote docs/performance.md"
fi
