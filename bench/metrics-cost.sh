#!/usr/bin/env bash
# What recording metrics costs on the hot path: the fan-out under load (1 → 1000 listeners,
# 64 B, 64 in flight; STOMP and raw) with a build from before the metrics (`before`), this
# build without `--metrics` (`off`: connection log spans, no recorder) and this build serving
# them (`on`: `--metrics`, scraped every second during the run), alternating in one sitting.
# Prints server CPU µs per delivery for each run and the medians.
#
#   BEFORE_BIN=path/to/old/parley bench/metrics-cost.sh [REPS]
#
# The server runs pinned to CPU 0 (taskset), the bots to CPU 1; loopback only; every run is
# bounded by a timeout and every server started here is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REPS=${1:-3}
BEFORE=${BEFORE_BIN:?BEFORE_BIN: the parley binary to compare with}
AFTER=${AFTER_BIN:-$ROOT/target/release/parley}
BOTS=${BOTS_BIN:-$ROOT/target/release/parley-bots}
[ -n "${AFTER_BIN:-}" ] || cargo build --release -p parley-server -p parley-bots 2>&1 | tail -1
OUT=$(mktemp -d -t parley-metrics-cost.XXXXXX)
SPID= SCRAPER=
cleanup() {
  [ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null
  [ -n "$SPID" ] && kill -KILL "$SPID" 2>/dev/null
  rm -rf "$OUT"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cat > "$OUT/fanout.toml" <<'TOML'
name = "metrics-cost"
ramp_up = "2s"
warmup = "1s"
duration = "4s"
drain = "1s"
connect_concurrency = 128
connect_timeout = "20s"

[[group]]
name = "listener"
count = 1000
protocol = "stomp-ws"
room = "fanout"

[[group]]
name = "publisher"
count = 1
protocol = "stomp-ws"
room = "fanout"
rate = "max"
size = 64
in_flight = 64
TOML

run() { # BIN PROTO VARIANT → prints µs/delivery, deliveries/s, errors
  local bin=$1 proto=$2 variant=$3 extra=() pid
  [ "$variant" = on ] && extra=(--metrics 127.0.0.1:19090)
  rm -rf "$OUT/data"
  taskset -c 0 "$bin" serve --data "$OUT/data" --http 127.0.0.1:18080 --stomp-tcp off \
    --allow-guests --guests-create-rooms --rate-limit 0 --max-connections-per-ip 0 \
    ${extra[@]+"${extra[@]}"} > "$OUT/server.log" 2>&1 &
  SPID=$!
  for _ in $(seq 1 100); do [ -s "$OUT/data/jwt-secret" ] && grep -q listening "$OUT/server.log" && break; sleep 0.1; done
  if [ "$variant" = on ]; then
    ( while :; do curl -s -o /dev/null http://127.0.0.1:19090/metrics; sleep 1; done ) &
    SCRAPER=$!
  fi
  timeout --kill-after=10 120 taskset -c 1 "$BOTS" run "$OUT/fanout.toml" --json \
    --http 127.0.0.1:18080 --protocol "$proto" --server-pid "$SPID" \
    --jwt-secret-file "$OUT/data/jwt-secret" > "$OUT/r.json" 2> "$OUT/bots.err" || true
  [ -n "$SCRAPER" ] && { kill "$SCRAPER" 2>/dev/null; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=; }
  kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); s=r.get("server") or {}; print(s.get("cpu_us_per_delivery"), r["messages"]["delivered_per_s"], r["errors"]["total"])' "$OUT/r.json"
}

printf '%-6s %-9s %-6s %10s %14s %7s\n' rep proto build 'µs/deliv' 'deliveries/s' errors
for rep in $(seq 1 "$REPS"); do
  for proto in stomp-ws raw; do
    for variant in before off on; do
      bin=$BEFORE; [ "$variant" = before ] || bin=$AFTER
      read -r us rate errors < <(run "$bin" "$proto" "$variant")
      printf '%-6s %-9s %-6s %10s %14.0f %7s\n' "$rep" "$proto" "$variant" "$us" "$rate" "$errors"
      echo "$proto $variant $us" >> "$OUT/all"
    done
  done
done
echo
python3 - "$OUT/all" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for proto in ("stomp-ws", "raw"):
    m = {v: statistics.median(float(r[2]) for r in rows if r[0] == proto and r[1] == v)
         for v in ("before", "off", "on")}
    print(f"{proto:9} median µs/delivery: before {m['before']:.3f}, off {m['off']:.3f} "
          f"({100 * (m['off'] - m['before']) / m['before']:+.1f} %), on (scraped 1/s) {m['on']:.3f} "
          f"({100 * (m['on'] - m['off']) / m['off']:+.1f} % vs off)")
PY
