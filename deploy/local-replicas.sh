#!/bin/sh
# Two replicas of every service against PostgreSQL and one NATS, running the examples
# to completion (see deploy/local_replicas.py for what it does and checks).
#   deploy/local-replicas.sh [--postgres URL] [--runs N] [--keep] [--data-dir DIR] [--json FILE]
set -eu
cd "$(dirname "$0")/.."
make --no-print-directory venv >/dev/null
exec .venv/bin/python deploy/local_replicas.py "$@"
