#!/usr/bin/env bash
# The Rust test suites: `cargo test --workspace`, after making sure the services the cluster and
# failover suites use are there — PostgreSQL (running on 127.0.0.1:5432, trust auth, database
# `test`), redis-server, nginx with its stream module and haproxy — installing (apt) or starting what is
# missing. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v psql >/dev/null || missing+=(postgresql-client)
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "tests/run.sh: starting PostgreSQL"
  service postgresql start || pg_ctlcluster --skip-systemctl-redirect 15 main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
exec cargo test --workspace "$@"
