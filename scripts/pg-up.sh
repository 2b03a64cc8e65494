#!/usr/bin/env bash
# Install (if missing) and start PostgreSQL from Debian's packages; create the test role and
# database. Prints the SQLAlchemy URL on stdout. Idempotent; needs root (or sudo) for apt-get.
set -euo pipefail
PGUSER_NAME=${INFERSENTRY_PG_USER:-infersentry}
PGPASS=${INFERSENTRY_PG_PASSWORD:-infersentry}
PGDB=${INFERSENTRY_PG_DB:-infersentry_test}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing PostgreSQL from Debian's packages..." >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >&2
  as_root apt-get install -y -qq postgresql >&2
fi

read -r version cluster port status <<<"$(pg_lsclusters --no-header | awk 'NR==1{print $1, $2, $3, $4}')"
if [ -z "${version:-}" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -1)
  as_root pg_createcluster "$version" main >&2
  read -r version cluster port status <<<"$(pg_lsclusters --no-header | awk 'NR==1{print $1, $2, $3, $4}')"
fi
if [ "$status" != "online" ]; then
  as_root pg_ctlcluster "$version" "$cluster" start >&2
fi
for _ in $(seq 1 60); do
  if as_root runuser -u postgres -- psql -p "$port" -qtAc "select 1" >/dev/null 2>&1; then break; fi
  sleep 0.5
done

psql_admin() { as_root runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_admin -c "select 1 from pg_roles where rolname='$PGUSER_NAME'")" != "1" ]; then
  psql_admin -c "create role $PGUSER_NAME login password '$PGPASS' createdb createrole" >&2
fi
# createrole: the tests create and drop read-only reader roles (infersentry db create-reader)
if [ "$(psql_admin -c "select rolcreaterole from pg_roles where rolname='$PGUSER_NAME'")" != "t" ]; then
  psql_admin -c "alter role $PGUSER_NAME createrole" >&2
fi
if [ "$(psql_admin -c "select 1 from pg_database where datname='$PGDB'")" != "1" ]; then
  psql_admin -c "create database $PGDB owner $PGUSER_NAME" >&2
fi
echo "postgresql://$PGUSER_NAME:$PGPASS@127.0.0.1:$port/$PGDB"
