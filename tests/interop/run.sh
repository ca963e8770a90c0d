#!/usr/bin/env bash
# Interop suites against the real `parley`: stomp.py (pytest); @stomp/stompjs, SockJS, the Socket.IO
# suites, socket.io-client behind nginx and haproxy in front of a 3-node cluster, and OAuth 2.0 / OpenID
# Connect against the test providers of tests/oidc (node --test).
#   tests/interop/run.sh                       build parley (release), install tools (cached), run both suites
#   tests/interop/run.sh --install-only        only install the venv and node_modules
#   INTEROP_TARGET=rabbitmq tests/interop/run.sh
#                                              no build; run the suites against the local RabbitMQ STOMP
#                                              plugins (127.0.0.1:61613, ws://127.0.0.1:15674/ws, guest/guest)
#                                              to check the suites' expectations. Parley-only tests skip.
#   INTEROP_SKIP_BUILD=1                       use an existing binary (PARLEY_BIN, default target/release/parley)
#   PYTEST_ADDOPTS='-k queue -x'              extra pytest arguments (pytest reads this itself, shell-quoted)
#   INTEROP_SUITES='python js'                 which suites to run (default both)
# Tools go to ${PARLEY_CACHE:-$HOME/.cache/parley}/interop (venv) and tests/interop/js/node_modules.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE="${PARLEY_CACHE:-$HOME/.cache/parley}/interop"
VENV="$CACHE/venv"
TARGET="${INTEROP_TARGET:-parley}"
SUITES="${INTEROP_SUITES:-python js}"

die() { echo "interop: ERROR: $*" >&2; exit 1; }
log() { echo "interop: $*" >&2; }

case $TARGET in parley | rabbitmq) ;; *) die "INTEROP_TARGET must be parley or rabbitmq, not '$TARGET'" ;; esac
command -v python3 >/dev/null || die "python3 not found"
command -v node >/dev/null || die "node not found (Node >= 20 needed)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
  die "Node >= 20 needed, found $(node --version)"

# ---- Python venv (stomp.py, websocket-client, pytest, pytest-timeout), exact pins ----------------
req_hash() { sha256sum "$HERE/requirements.txt" | cut -d' ' -f1; }
venv_ok() { [[ -f $VENV/.complete && $(cat "$VENV/.complete") == "$(req_hash)" ]] && "$VENV/bin/python" -c 'import stomp, websocket, pytest, pytest_timeout' 2>/dev/null; }

install_venv() {
  mkdir -p "$CACHE"
  (
    flock 9 # two runs at once must not build into the same venv
    venv_ok && exit 0
    rm -rf "$VENV" # anything short of a completed venv (interrupted install, other pins) is rebuilt
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-input -r "$HERE/requirements.txt"
    req_hash >"$VENV/.complete"
  ) 9>"$CACHE/.lock"
  venv_ok || die "venv at $VENV installed but does not import stomp/websocket/pytest"
}

if ! venv_ok; then
  log "installing the Python venv into $VENV"
  t0=$SECONDS
  install_venv
  log "venv ready in $((SECONDS - t0)) s"
fi

# ---- node_modules (@stomp/stompjs 7, ws 8, sockjs 0.3.24, socket.io/engine.io/socket.io-client) from the lock
JS="$HERE/js"
lock_hash() { sha256sum "$JS/package-lock.json" | cut -d' ' -f1; }
node_ok() { [[ -f $JS/node_modules/.interop-complete && $(cat "$JS/node_modules/.interop-complete") == "$(lock_hash)" ]]; }
if ! node_ok; then
  log "npm ci in $JS"
  t0=$SECONDS
  (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error)
  lock_hash >"$JS/node_modules/.interop-complete"
  log "node_modules ready in $((SECONDS - t0)) s"
fi

# ---- the test OpenID Connect providers (tests/oidc: oidc-provider, jose), pinned by their own lock
# shellcheck source=../oidc/install.sh
source "$ROOT/tests/oidc/install.sh"

[[ ${1:-} == --install-only ]] && exit 0

# ---- the server under test -----------------------------------------------------------------------
if [[ $TARGET == parley ]]; then
  export PARLEY_BIN="${PARLEY_BIN:-$ROOT/target/release/parley}"
  if [[ -z ${INTEROP_SKIP_BUILD:-} ]]; then
    (cd "$ROOT" && cargo build --release -p parley-server --bin parley)
  fi
  [[ -x $PARLEY_BIN ]] || die "no parley binary at $PARLEY_BIN"
  if [[ " $SUITES " == *" js "* ]]; then
    # socketio-cluster.test.mjs: its own redis-server, nginx (with the stream module: the shipped
    # deploy/nginx.conf has a stream block) and haproxy, and a database on the PostgreSQL that
    # PARLEY_TEST_DATABASE names (tests/run.sh installs and prepares all of these).
    missing=()
    for tool in redis-server haproxy psql; do command -v $tool >/dev/null || missing+=("$tool"); done
    [[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || missing+=(nginx)
    [[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || missing+=(libnginx-mod-stream)
    ((${#missing[@]} == 0)) || die "the Socket.IO cluster test needs ${missing[*]} (tests/run.sh installs them)"
  fi
else
  unset PARLEY_BIN
  for port in "${RABBITMQ_STOMP_PORT:-61613}" "${RABBITMQ_WEB_STOMP_PORT:-15674}"; do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null ||
      die "nothing listens on 127.0.0.1:$port (rabbitmq-plugins enable rabbitmq_stomp rabbitmq_web_stomp)"
  done
fi
export INTEROP_TARGET="$TARGET"

# ---- run -----------------------------------------------------------------------------------------
export PYTHONDONTWRITEBYTECODE=1
failed=()
if [[ " $SUITES " == *" python "* ]]; then
  log "pytest (stomp.py, websocket-client) against $TARGET"
  t0=$SECONDS
  if (cd "$HERE/python" && "$VENV/bin/python" -m pytest -q); then :; else
    rc=$?
    # 5 = no tests collected (e.g. a -k that matched nothing): that is a failure here too.
    failed+=("pytest (exit $rc)")
  fi
  log "pytest took $((SECONDS - t0)) s"
fi
if [[ " $SUITES " == *" js "* ]]; then
  log "node --test (@stomp/stompjs, also over wss://; SockJS against sockjs-node; Socket.IO suites against socket.io and socket.io-client; socket.io-client behind nginx and haproxy) against $TARGET"
  t0=$SECONDS
  if (cd "$JS" && node --test --test-concurrency=1 --test-timeout=120000 stompjs.test.mjs sockjs.test.mjs \
    socketio-protocol.test.mjs socketio-chat.test.mjs socketio-cluster.test.mjs \
    tls.test.mjs deflate.test.mjs "$OIDC/selfcheck.mjs" oauth.test.mjs oauth-cluster.test.mjs); then :; else
    failed+=("node --test (exit $?)")
  fi
  log "node --test took $((SECONDS - t0)) s"
fi

if ((${#failed[@]})); then
  die "failed: ${failed[*]}"
fi
log "all interop suites passed against $TARGET"
