#!/usr/bin/env bash
# Installs what bench/run.sh compares Parley against. Idempotent: a second run checks and
# returns quickly. Pinned versions; everything lands under bench/ or ~/.cache/parley/bench.
#   (a) Node `ws` 8 broadcast server and (b) Socket.IO 4 room server: bench/node (npm ci from
#       the committed package-lock.json)
#   (c) the tokio-tungstenite + broadcast reference server: bench/tungstenite-ref (cargo,
#       its own committed Cargo.lock; not a workspace member)
#   (d) RabbitMQ Web-STOMP: only checked here; run.sh enables the plugin for its run and
#       disables it again at the end
#   charts: matplotlib in a venv under ~/.cache/parley/bench (run.sh writes the table without
#       charts if this is missing)
set -euo pipefail
cd "$(dirname "$0")"
BENCH=$PWD
CACHE=${PARLEY_BENCH_CACHE:-$HOME/.cache/parley/bench}
MATPLOTLIB_VERSION=3.10.8
mkdir -p "$CACHE"

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

for tool in node npm cargo taskset python3; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is required" >&2; exit 1; }
done

# (a), (b)
if [ ! -f node/node_modules/.package-lock.json ] || ! cmp -s node/package-lock.json node/.installed-lock 2>/dev/null; then
  say "npm ci (ws, socket.io)"
  (cd node && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json .installed-lock)
else
  say "node modules up to date"
fi
node -e "require('$BENCH/node/node_modules/ws'); require('$BENCH/node/node_modules/socket.io')"

# (c)
say "building bench/tungstenite-ref"
cargo build --release --locked --quiet --manifest-path tungstenite-ref/Cargo.toml

# (d)
if command -v rabbitmq-plugins >/dev/null && rabbitmqctl -q status >/dev/null 2>&1; then
  say "RabbitMQ $(rabbitmqctl -q version 2>/dev/null) is running: run.sh enables rabbitmq_web_stomp for its run"
else
  say "RabbitMQ is not running here: run.sh will skip it"
fi

# charts
VENV=$CACHE/venv
if ! "$VENV/bin/python" -c "import matplotlib, sys; sys.exit(matplotlib.__version__ != '$MATPLOTLIB_VERSION')" 2>/dev/null; then
  say "matplotlib $MATPLOTLIB_VERSION into $VENV"
  python3 -m venv "$VENV"
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check "matplotlib==$MATPLOTLIB_VERSION"; then
    echo "setup: matplotlib could not be installed; run.sh will write docs/performance.md without charts" >&2
  fi
else
  say "matplotlib $MATPLOTLIB_VERSION present"
fi
say "done"
