#!/usr/bin/env bash
# Browser end-to-end tests: the web client (web-client/, embedded in the binary) in headless
# Chromium, driven by playwright-core, against real `parley` servers the tests start themselves.
#   tests/e2e/run.sh                 install Chromium (Debian's) and node_modules if missing, build
#                                    parley (release), run every *.test.mjs
#   tests/e2e/run.sh chat.test.mjs   only these test files (names relative to tests/e2e)
#   E2E_SKIP_BUILD=1                 use an existing binary (PARLEY_BIN, default target/release/parley)
# Never downloads a browser: playwright-core drives /usr/bin/chromium. Screenshots go to
# tests/e2e/screenshots/.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CHROMIUM=/usr/bin/chromium

die() { echo "e2e: ERROR: $*" >&2; exit 1; }
log() { echo "e2e: $*" >&2; }

command -v node >/dev/null || die "node not found (Node >= 20 needed)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
  die "Node >= 20 needed, found $(node --version)"

# ---- Chromium (Debian's package) -----------------------------------------------------------------
if [[ ! -x $CHROMIUM ]]; then
  [[ $(id -u) == 0 ]] || die "$CHROMIUM is missing and installing it needs root: apt-get install -y chromium"
  log "installing Debian's chromium"
  t0=$SECONDS
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  [[ -x $CHROMIUM ]] || die "apt-get installed chromium but $CHROMIUM is still missing"
  log "chromium installed in $((SECONDS - t0)) s"
fi

# ---- node_modules (playwright-core, pinned) from the committed package-lock.json -----------------
lock_hash() { sha256sum "$HERE/package-lock.json" | cut -d' ' -f1; }
node_ok() { [[ -f $HERE/node_modules/.e2e-complete && $(cat "$HERE/node_modules/.e2e-complete") == "$(lock_hash)" ]]; }
if ! node_ok; then
  log "npm ci in $HERE"
  t0=$SECONDS
  # playwright-core never downloads a browser; the variable makes sure of it.
  (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  lock_hash >"$HERE/node_modules/.e2e-complete"
  log "node_modules ready in $((SECONDS - t0)) s"
fi

# ---- the test OpenID Connect providers (tests/oidc: oidc-provider, jose), pinned by their own lock
# shellcheck source=../oidc/install.sh
source "$ROOT/tests/oidc/install.sh"

# ---- the server under test -----------------------------------------------------------------------
export PARLEY_BIN="${PARLEY_BIN:-$ROOT/target/release/parley}"
if [[ -z ${E2E_SKIP_BUILD:-} ]]; then
  (cd "$ROOT" && cargo build --release -p parley-server --bin parley)
fi
[[ -x $PARLEY_BIN ]] || die "no parley binary at $PARLEY_BIN"

# ---- run -----------------------------------------------------------------------------------------
cd "$HERE"
rm -rf screenshots
if (($#)); then files=("$@"); else files=(*.test.mjs); fi
log "node --test ${files[*]}"
t0=$SECONDS
# One file at a time: each starts its own server and Chromium, and the machine has two cores.
if node --test --test-concurrency=1 --test-timeout=120000 "${files[@]}"; then
  log "passed in $((SECONDS - t0)) s; screenshots in $HERE/screenshots"
else
  rc=$?
  die "node --test failed (exit $rc) after $((SECONDS - t0)) s; screenshots in $HERE/screenshots"
fi
