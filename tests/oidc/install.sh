# Sourced by tests/e2e/run.sh and tests/interop/run.sh (which define `log`): npm ci in tests/oidc
# when its node_modules does not match the lock, one install at a time (both suites share it).
OIDC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
oidc_hash() { sha256sum "$OIDC/package-lock.json" | cut -d' ' -f1; }
oidc_ok() { [[ -f $OIDC/node_modules/.oidc-complete && $(cat "$OIDC/node_modules/.oidc-complete") == "$(oidc_hash)" ]]; }
if ! oidc_ok; then
  log "npm ci in $OIDC"
  oidc_t0=$SECONDS
  mkdir -p "${PARLEY_CACHE:-$HOME/.cache/parley}"
  (
    flock 9
    oidc_ok && exit 0
    (cd "$OIDC" && npm ci --no-audit --no-fund --loglevel=error)
    oidc_hash >"$OIDC/node_modules/.oidc-complete"
  ) 9>"${PARLEY_CACHE:-$HOME/.cache/parley}/oidc-npm.lock"
  log "tests/oidc node_modules ready in $((SECONDS - oidc_t0)) s"
fi
