#!/usr/bin/env bash
# Autobahn|Testsuite (wstest fuzzingclient) against `parley serve --echo`.
#   tests/autobahn/run.sh                  build, install wstest (cached), run, summarize
#   tests/autobahn/run.sh --install-only   only warm the wstest cache
#   AUTOBAHN_CASES='1.*,2.*'               narrow the cases (regexes, anchored at the start only)
# Report: tests/autobahn/reports/servers/index.html (plus spec.json, parley.log, wstest.log).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

CACHE="${PARLEY_CACHE:-$HOME/.cache/parley}/autobahn"
WSTEST="$CACHE/ab27/bin/wstest"
OUT="$HERE/reports/servers"
LOG="$OUT/parley.log"

die() { echo "autobahn: ERROR: $*" >&2; exit 1; }

wstest_ok() { [[ -f $CACHE/ab27/.complete ]] && "$WSTEST" --autobahnversion >/dev/null 2>&1; }

install_wstest() {
  # autobahntestsuite is Python 2 code: under Python 3 pip "succeeds" but installs nothing usable.
  local py2
  py2="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")/versions/2.7.18/bin/python2.7"
  [[ -x $py2 ]] || die "Python 2.7.18 not found at $py2 (wstest needs it: pyenv install 2.7.18)"
  mkdir -p "$CACHE"
  (
    flock 9 # two runs at once must not build into the same venv
    wstest_ok && exit 0
    # Anything short of a working, completed venv (e.g. an interrupted install) is rebuilt from scratch.
    rm -rf "$CACHE/venvtool" "$CACHE/ab27"
    python3 -m venv "$CACHE/venvtool"
    "$CACHE/venvtool/bin/pip" install -q --disable-pip-version-check 'virtualenv<20.22' # 20.22+ cannot make py2 envs
    "$CACHE/venvtool/bin/virtualenv" -q -p "$py2" "$CACHE/ab27"
    "$CACHE/ab27/bin/pip" install -q --disable-pip-version-check --no-python-version-warning autobahntestsuite==25.10.1 # builds wsaccel with gcc
    touch "$CACHE/ab27/.complete"
    wstest_ok || die "wstest installed but does not run: $WSTEST"
  ) 9>"$CACHE/.lock"
}

if ! wstest_ok; then
  echo "autobahn: installing wstest into $CACHE (once, ~1 min)"
  install_wstest
fi
[[ ${1:-} == --install-only ]] && exit 0

cargo build --release -p parley-server --bin parley

rm -rf "$OUT" && mkdir -p "$OUT"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

RUST_LOG=warn target/release/parley serve --http "127.0.0.1:$PORT" --stomp-tcp off --data "$OUT/data" --echo >"$LOG" 2>&1 &
SERVER_PID=$! WSTEST_PID=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local rc=$?
  kill "$SERVER_PID" ${WSTEST_PID:+"$WSTEST_PID"} 2>/dev/null || true
  # A server stuck in graceful shutdown must not hang the run.
  for _ in {1..50}; do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  if ((rc != 0)); then
    echo "--- last lines of $LOG" >&2
    tail -n 40 "$LOG" >&2 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

deadline=$((SECONDS + 30))
while code=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/healthz"); [[ $code != 200 ]]; do
  kill -0 "$SERVER_PID" 2>/dev/null || die "parley exited during startup"
  ((SECONDS < deadline)) || die "GET http://127.0.0.1:$PORT/healthz still not 200 after 30 s (last status: $code)"
  sleep 0.2
done

python3 - "$PORT" "${AUTOBAHN_CASES:-*}" "$OUT" >"$OUT/spec.json" <<'EOF'
import json, sys
port, cases, outdir = sys.argv[1:]
json.dump({"options": {"failByDrop": False}, "outdir": outdir,
           "servers": [{"agent": "parley", "url": "ws://127.0.0.1:%s/echo" % port}],
           "cases": [c.strip() for c in cases.split(",") if c.strip()],
           "exclude-cases": [], "exclude-agent-cases": {}}, sys.stdout, indent=2)
EOF

echo "autobahn: running cases ${AUTOBAHN_CASES:-*} against ws://127.0.0.1:$PORT/echo (12.*/13.* alone take ~10 min)"
# In the background so that Ctrl-C/TERM act at once (bash runs traps only after a foreground job ends).
(cd "$OUT" && exec timeout -k 30 2400 "$WSTEST" -m fuzzingclient -s spec.json) >"$OUT/wstest.log" 2>&1 &
WSTEST_PID=$!
wstest_rc=0 && wait "$WSTEST_PID" || wstest_rc=$?
WSTEST_PID=

# Every check runs, so one run reports all that went wrong.
failed=0
python3 "$HERE/summarize.py" "$OUT/index.json" || failed=1
if ((wstest_rc != 0)); then
  failed=1
  echo "autobahn: ERROR: wstest exited with $wstest_rc (124 = timed out after 2400 s); last lines of $OUT/wstest.log:" >&2
  tail -n 20 "$OUT/wstest.log" >&2
fi
# bash reaps its background jobs, so a crashed server does not linger as a zombie that kill -0 would still find.
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  status=0 && wait "$SERVER_PID" || status=$?
  failed=1 && echo "autobahn: ERROR: parley died during the suite (exit status $status)" >&2
fi
echo "autobahn: report in $OUT/index.html"
exit "$failed"
