#!/usr/bin/env bash
# Sets up the environment if needed, then runs every check CI runs: lint, layer contracts, tests.
source "$(dirname "$0")/env.sh"
# The browser test drives Debian's Chromium (test tools may not download browsers here).
if [ ! -x /usr/bin/chromium ]; then
    echo "== installing chromium (Debian package) for the browser test"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "== ruff"
ruff check .
ruff format --check .
echo "== import-linter (layer contracts)"
lint-imports
echo "== pytest"
python -m pytest "$@"
