#!/usr/bin/env bash
# permessage-deflate side by side: Parley (raw /ws and STOMP /stomp) and Node `ws` (per
# connection, with context takeover), each with compression off and on, one publisher and
# 1,000 subscribers in one room at a fixed rate of chat-sized messages (150-300 B of JSON).
# Reports bytes on the wire per delivery, server CPU per delivery, server memory per connection,
# latency and (raw) a 50-message history page, as a Markdown table.
#
#   bench/deflate.sh [--subscribers N] [--rate MSG_PER_S] [--seconds S] [--reps R]
#
# The server runs pinned to CPU 0, the client (bench/node/deflate-load.js) to CPU 1; loopback
# only; every server this script starts is stopped at the end. PARLEY_BIN runs a given binary.
# Takes about 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench
SUBS=1000 RATE=20 SECONDS_EACH=10 REPS=2
while [ $# -gt 0 ]; do
  case $1 in
    --subscribers) SUBS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --seconds) SECONDS_EACH=$2; shift ;;
    --reps) REPS=$2; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "deflate.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
SRV_CPU=${SRV_CPU:-0}
BOT_CPU=${BOT_CPU:-1}
OUT=${OUT:-$BENCH/results/deflate-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

SPID=
cleanup() {
  if [ -n "$SPID" ]; then kill -KILL "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BENCH/setup.sh" > "$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log" >&2; exit 1; }
if [ -z "${PARLEY_BIN:-}" ]; then
  cargo build --release -p parley-server 2>&1 | tail -1
fi
PARLEY=${PARLEY_BIN:-$ROOT/target/release/parley}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# run SERVER PROTO DEFLATE REP
run() {
  local server=$1 proto=$2 deflate=$3 rep=$4 port url line
  case $server in
    parley)
      port=18090
      rm -rf "$OUT/data"
      taskset -c "$SRV_CPU" "$PARLEY" serve --data "$OUT/data" --http "127.0.0.1:$port" \
        --stomp-tcp off --allow-guests --guests-create-rooms --rate-limit 0 \
        --max-connections-per-ip 0 > "$OUT/$server.log" 2>&1 &
      ;;
    node-ws)
      port=18091
      taskset -c "$SRV_CPU" node "$BENCH/node/ws-broadcast.js" "$port" \
        $([ "$deflate" = 1 ] && echo --deflate) > "$OUT/$server.log" 2>&1 &
      ;;
  esac
  SPID=$!
  wait_port "$port" || { echo "deflate.sh: $server did not start" >&2; return 1; }
  sleep 0.5
  url=ws://127.0.0.1:$port
  if line=$(timeout 200 taskset -c "$BOT_CPU" node "$BENCH/node/deflate-load.js" --url "$url" \
      --proto "$proto" --deflate "$deflate" --subscribers "$SUBS" --rate "$RATE" \
      --seconds "$SECONDS_EACH" --pid "$SPID" 2>> "$OUT/client.err"); then :; else
    echo "deflate.sh: $server/$proto deflate=$deflate rep $rep: the client failed (see $OUT/client.err)" >&2
  fi
  [ -n "$line" ] && echo "{\"server\":\"$server\",\"rep\":$rep,${line#\{}" >> "$RESULTS"
  echo "  $server $proto deflate=$deflate rep $rep: $line"
  kill -TERM "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=
}

for rep in $(seq 1 "$REPS"); do
  for deflate in 0 1; do
    run parley raw "$deflate" "$rep"
    run parley stomp "$deflate" "$rep"
    run node-ws broadcast "$deflate" "$rep"
  done
done

python3 - "$RESULTS" > "$OUT/table.md" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
groups = {}
for r in rows:
    groups.setdefault((r["server"], r["proto"], r["deflate"]), []).append(r)
def fmt(v, d=1):
    return "–" if v is None else f"{v:,.{d}f}"
out = ["| server | compression | wire B / delivery | vs uncompressed | server CPU µs / delivery | vs uncompressed | server KiB / connection | p50 | p99 | client cores | lost | 50-message history page |",
       "|---|---|---|---|---|---|---|---|---|---|---|---|"]
names = {("parley", "raw"): "Parley raw /ws", ("parley", "stomp"): "Parley STOMP /stomp", ("node-ws", "broadcast"): "Node ws"}
for (server, proto), name in names.items():
    plain = groups.get((server, proto, False), [])
    for deflate in (False, True):
        g = groups.get((server, proto, deflate), [])
        if not g:
            continue
        wire, cpu = med([r["wire_bytes_per_delivery"] for r in g]), med([r["server_cpu_us_per_delivery"] for r in g])
        pw, pc = med([r["wire_bytes_per_delivery"] for r in plain]), med([r["server_cpu_us_per_delivery"] for r in plain])
        hist = [r["history"] for r in g if r.get("history")]
        page = "–"
        if hist:
            h = hist[0]
            plain_h = [r["history"] for r in plain if r.get("history")]
            base = plain_h[0]["wire_bytes"] if plain_h else h["json_bytes"]
            page = f"{h['wire_bytes']:,} B ({h['wire_bytes'] / base * 100:.0f} %)"
        neg = g[0].get("negotiated") or "none"
        out.append(f"| {name} | {'`' + neg + '`' if deflate else 'off'} | {fmt(wire)} | "
                   f"{fmt(wire / pw * 100, 0) + ' %' if wire and pw else '–'} | {fmt(cpu, 2)} | "
                   f"{fmt(cpu / pc, 2) + '×' if cpu and pc else '–'} | {fmt(med([r['server_rss_kib_per_connection'] for r in g]), 2)} | "
                   f"{fmt(med([r['p50_us'] for r in g]) / 1000 if med([r['p50_us'] for r in g]) else None, 2)} ms | "
                   f"{fmt(med([r['p99_us'] for r in g]) / 1000 if med([r['p99_us'] for r in g]) else None, 2)} ms | "
                   f"{fmt(med([r.get('client_cores') for r in g]), 2)} | "
                   f"{sum(r['lost'] for r in g)} | {page} |")
print("\n".join(out))
EOF
cat "$OUT/table.md"
echo "results: ${OUT#"$ROOT"/}"
