#!/usr/bin/env bash
# Sets up the environment if needed, then runs every check CI runs: lint, layer contracts, tests.
source "$(dirname "$0")/env.sh"
echo "== ruff"
ruff check .
ruff format --check .
echo "== import-linter (layer contracts)"
lint-imports
echo "== pytest"
python -m pytest "$@"
