#!/usr/bin/env bash
# The test command: installs everything the suite needs (Python env, PostgreSQL from Debian's
# packages; the Kafka broker's jars come from Maven Central inside the suite) and runs it all,
# on SQLite and PostgreSQL. Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  echo "installing Java 17 and Maven from Debian's packages (for the Kafka broker)..." >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven; fi
fi
INFERSENTRY_TEST_PG_URL=$(bash scripts/pg-up.sh)
export INFERSENTRY_TEST_PG_URL
echo "PostgreSQL: $INFERSENTRY_TEST_PG_URL" >&2
.venv/bin/ruff check .
.venv/bin/mypy pipeline detectors dashboards
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
