#!/usr/bin/env bash
# The soak: one release server, 5,000 churning bots (bots/scenarios/soak.toml) for SEGMENTS
# back-to-back segments of SEGMENT each (default 4 × 5m = 20 minutes), the server's RSS and open
# files sampled every 10 s. Prints per-segment p99 / delivered / errors and the RSS and
# open-file series' first, last and highest values; exits non-zero if a segment missed its SLOs
# (errors, gaps, p99) or memory or open files grew by more than the stated margins.
#
#   bench/soak.sh [SEGMENTS] [SEGMENT]        e.g. bench/soak.sh 1 1m for a quick look
#
# Loopback only, bounded in time, stops everything it started. PARLEY_BIN / BOTS_BIN run given
# binaries instead of building this checkout's. Not part of CI (it takes 20 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SEGMENTS=${1:-4}
SEGMENT=${2:-5m}
# RSS may end at most this much above where the first segment left it (allocator slack).
RSS_MARGIN_KIB=${RSS_MARGIN_KIB:-65536}
# Open files may end at most this many above the first segment's end (sockets closing late).
FD_MARGIN=${FD_MARGIN:-200}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/bench/results/soak-$STAMP}
mkdir -p "$OUT"
SPID=
SAMPLER=
cleanup() {
  set +e
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
  [ -n "$SPID" ] && kill -KILL "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  rm -rf "$OUT/data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${PARLEY_BIN:-}" ] || [ -z "${BOTS_BIN:-}" ]; then
  cargo build --release -p parley-server -p parley-bots 2>&1 | tail -1
fi
PARLEY=${PARLEY_BIN:-$ROOT/target/release/parley}
BOTS=${BOTS_BIN:-$ROOT/target/release/parley-bots}
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SECRET=$OUT/jwt-secret
head -c 48 /dev/urandom | base64 > "$SECRET"
"$PARLEY" serve --data "$OUT/data" --http 127.0.0.1:0 --stomp-tcp 127.0.0.1:0 \
  --jwt-secret-file "$SECRET" --rate-limit 0 > "$OUT/server.out" 2> "$OUT/server.log" &
SPID=$!
for _ in $(seq 1 100); do grep -q '^parley stomp listening' "$OUT/server.out" 2>/dev/null && break; sleep 0.1; done
HTTP=$(sed -n 's|^parley listening on http://||p' "$OUT/server.out")
[ -n "$HTTP" ] || { cat "$OUT/server.log" >&2; exit 1; }

sample() {
  echo "t_s,rss_kib,open_files" > "$OUT/samples.csv"
  local t0; t0=$(date +%s)
  while kill -0 "$SPID" 2>/dev/null; do
    local rss fds
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SPID/status" 2>/dev/null || echo 0)
    fds=$(ls "/proc/$SPID/fd" 2>/dev/null | wc -l)
    echo "$(( $(date +%s) - t0 )),$rss,$fds" >> "$OUT/samples.csv"
    sleep 10
  done
}
sample &
SAMPLER=$!

failed=0
marks=()
for i in $(seq 1 "$SEGMENTS"); do
  echo "soak: segment $i of $SEGMENTS ($SEGMENT) against $HTTP" >&2
  if ! timeout 1800 "$BOTS" run bots/scenarios/soak.toml --http "$HTTP" --jwt-secret-file "$SECRET" \
      --duration "$SEGMENT" --server-pid "$SPID" --sources 127.0.0.2-127.0.0.50 --json \
      > "$OUT/segment-$i.json" 2> "$OUT/segment-$i.log"; then
    failed=1
  fi
  sleep 5 # sockets closed by the segment's end leave the table
  marks+=("$(awk '/^VmRSS:/ {print $2}' "/proc/$SPID/status"),$(ls "/proc/$SPID/fd" | wc -l)")
done

python3 - "$OUT" "$RSS_MARGIN_KIB" "$FD_MARGIN" "${marks[@]}" <<'PY' || failed=1
import csv, json, pathlib, sys
out, rss_margin, fd_margin, marks = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
print("| segment | connections up | reconnects | sent | delivered | p50 ms | p99 ms | p99.9 ms | errors | gaps | SLOs | RSS after (MiB) | open files after |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for i, mark in enumerate(marks, 1):
    rss, fds = map(int, mark.split(","))
    text = (out / f"segment-{i}.json").read_text()
    r = json.loads(text) if text.strip() else None
    if r is None:
        print(f"| {i} | (no report: see segment-{i}.log) |")
        continue
    c, m, l, e = r["connections"], r["messages"], r["latency_us"], r["errors"]
    print(f"| {i} | {c['up']} | {c['reconnects']} | {m['sent']} | {m['delivered']} | {l['p50']/1000:.1f} | "
          f"{l['p99']/1000:.1f} | {l['p999']/1000:.1f} | {e['total']} | {e['gaps']} | "
          f"{'met' if r['slo']['passed'] else 'MISSED: ' + '; '.join(r['slo']['violations'])} | {rss/1024:.1f} | {fds} |")
rows = list(csv.DictReader(open(out / "samples.csv")))
rss = [int(r["rss_kib"]) for r in rows]
fds = [int(r["open_files"]) for r in rows]
print(f"\nsamples every 10 s: {len(rows)}; RSS MiB first/last/max {rss[0]/1024:.1f}/{rss[-1]/1024:.1f}/{max(rss)/1024:.1f}; "
      f"open files first/last/max {fds[0]}/{fds[-1]}/{max(fds)}")
first_rss, first_fds = map(int, marks[0].split(","))
last_rss, last_fds = map(int, marks[-1].split(","))
ok = last_rss <= first_rss + rss_margin and last_fds <= first_fds + fd_margin
print(f"after the first segment -> after the last: RSS {first_rss/1024:.1f} -> {last_rss/1024:.1f} MiB "
      f"(margin {rss_margin/1024:.0f}), open files {first_fds} -> {last_fds} (margin {fd_margin}): "
      + ("flat" if ok else "GREW"))
sys.exit(0 if ok else 1)
PY
echo "soak: results in ${OUT#"$ROOT"/}" >&2
exit $failed
