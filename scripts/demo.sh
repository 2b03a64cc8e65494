#!/usr/bin/env bash
# The demo command: installs infersentry into .venv and runs `infersentry demo` on embedded
# defaults (SQLite in ./infersentry.db, generated files in ./infersentry-demo/, no Kafka needed).
# Afterwards the command is .venv/bin/infersentry (not on PATH unless the venv is activated).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q .   # a regular install: quiet, and all a user needs (scripts/test.sh installs editable)
exec .venv/bin/infersentry demo "$@"
