#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Python 3.11:
# installs the project into .venv, the servers the tests need, then runs ruff and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-deps.sh
bash scripts/venv.sh "[test]"
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
.venv/bin/mypy
# One pytest-xdist worker per core, a test file per worker at a time (its module fixtures stay shared).
# Later arguments win: `-n 0` runs serially, `-n 4` with four workers.
exec .venv/bin/pytest -n auto --dist loadfile "$@"
