#!/usr/bin/env bash
# Install into .venv (idempotent), check style and types, and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check src tests benchmarks training
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
