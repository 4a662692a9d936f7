#!/usr/bin/env bash
# Create .venv with Python 3.12 and the pinned dependencies (requirements.txt), then install
# r1jax in editable mode. Safe to re-run: an existing .venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python312() {
  local c
  for c in python3.12 "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.12*/bin/python3.12 \
           /usr/local/bin/python3.12 /usr/bin/python3.12; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  PY=$(find_python312) || { echo "Python 3.12 not found: install it (JAX >= 0.11 needs it)" >&2; exit 1; }
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -e .
.venv/bin/python -c 'import jax, flax, transformers; print("jax", jax.__version__, "flax", flax.__version__, "transformers", transformers.__version__)'
