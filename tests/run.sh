#!/usr/bin/env bash
# The Rust test suites: `cargo test --workspace`, after making sure what the cluster and
# failover suites use is there — a PostgreSQL server on 127.0.0.1:5432 with a database `test`
# that `postgres` reaches without a password from loopback, redis-server and redis-cli (the
# suites start their own Redis, some a three-shard Redis Cluster), nginx with its stream
# module, haproxy, and Prometheus with promtool (the metrics suite) — installing (apt),
# starting and preparing what is missing, or stopping at once with what to do. The suites' temporary folders go in one folder of this run's, removed
# at the end. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG_PORT=5432
PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/test
die() { echo "tests/run.sh: $*" >&2; exit 1; }
say() { echo "tests/run.sh: $*"; }

missing=()
command -v psql >/dev/null || missing+=(postgresql-client)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; installing needs root: apt-get install -y ${missing[*]}"
  say "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
# The metrics suite starts a Prometheus of its own (a free loopback port, a temporary folder)
# and runs promtool. Nothing uses the system service the package may start (nor the node
# exporter it recommends, left out).
if ! { command -v prometheus && command -v promtool; } >/dev/null; then
  [ "$(id -u)" = 0 ] || die "missing prometheus; installing needs root: apt-get install -y prometheus"
  say "installing prometheus"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends prometheus
fi

# PostgreSQL: running, a `test` database, trust for loopback connections as `postgres`.
if ! pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
  say "starting PostgreSQL"
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  cluster=main
  [ -n "$version" ] || die "PostgreSQL is installed but has no cluster (pg_createcluster)"
  pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start 2>/dev/null ||
    service postgresql start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || die "PostgreSQL did not start on 127.0.0.1:$PG_PORT"
fi
# As the postgres user over the local socket (peer authentication), whatever loopback allows.
as_postgres() { (cd / && su postgres -c "PGPORT=$PG_PORT $*"); }
if ! psql -w "$PG_URL" -Atqc 'SELECT 1' >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "cannot reach $PG_URL; as root this script would prepare it"
  say "preparing PostgreSQL: database test, trust for postgres from loopback"
  hba=$(as_postgres "psql -Atqc 'SHOW hba_file'") || die "cannot run psql as the postgres user"
  if ! grep -q '^host all postgres 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    as_postgres "psql -Atqc 'SELECT pg_reload_conf()'" >/dev/null
  fi
  as_postgres "psql -Atqc \"SELECT 1 FROM pg_database WHERE datname = 'test'\"" | grep -q 1 ||
    as_postgres "createdb test"
  psql -w "$PG_URL" -Atqc 'SELECT 1' >/dev/null || die "still cannot reach $PG_URL"
fi

# Every server data folder, nginx and haproxy config the suites write goes under here.
TMPDIR=$(mktemp -d -t parley-tests.XXXXXX)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
cargo test --workspace "$@"
