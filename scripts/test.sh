#!/usr/bin/env bash
# The test command: set up (idempotent), check the layering, run the suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export MUJOCO_GL="${MUJOCO_GL:-egl}"
echo "test: checking the layering (import-linter contracts in .importlinter)"
lint-imports
echo "test: checking style (ruff.toml)"
ruff check .
ruff format --check .
echo "test: running the suite"
python -m pytest "$@"
