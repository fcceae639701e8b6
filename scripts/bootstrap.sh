#!/usr/bin/env bash
# Creates .venv and installs OpenFlare, the test origin and the dev tools into it.
# Idempotent and quick when nothing changed (a stamp holds the hash of the inputs).
# Debian packages the tests need are installed by scripts/apt-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
if [[ -z "$PYTHON" ]] || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: Python >= 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

inputs_hash=$(cat proxy/pyproject.toml testsite/pyproject.toml requirements-dev.txt | sha256sum | cut -c1-16)
stamp=.venv/.openflare-bootstrap
if [[ -f "$stamp" && "$(cat "$stamp")" == "$inputs_hash" ]]; then
  exit 0
fi

echo "bootstrap: creating .venv with $("$PYTHON" --version)"
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e "./proxy[otel,k8s]" -e ./testsite -r requirements-dev.txt
echo "$inputs_hash" > "$stamp"
echo "bootstrap: done"
