# Sourced by the other scripts: builds (once) and activates the project's virtual environment.
# The venv lives outside the clone, keyed by a hash of pyproject.toml's [project] tables (the
# dependencies; tool settings do not count), so torch (~5 GB) is installed once per dependency
# set; delete ~/.cache/activestream to rebuild from nothing. Installer output goes to a log next
# to the venv: one line per step here, and the log's tail only when a step fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HASH="$(sed -n '/^\[project\]/,/^\[tool\./p' "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
VENV="${ACTIVESTREAM_VENV:-$HOME/.cache/activestream/venv-$HASH}"
PYTHON="${PYTHON:-python3}"
LOG="$VENV.log"

source "$(dirname "${BASH_SOURCE[0]}")/step.sh"
step() { step_in "$LOG" "" "$@"; }  # step "what the user sees" command...

if [ ! -f "$VENV/.complete" ]; then
    mkdir -p "$(dirname "$VENV")"
    : >"$LOG"
    echo "== building the environment in $VENV (first run only; torch is large)"
    rm -rf "$VENV"
    step "creating the venv" "$PYTHON" -m venv "$VENV"
    step "upgrading pip" "$VENV/bin/python" -m pip install --upgrade pip
    step "installing activestream and its dependencies (a few minutes)" \
        "$VENV/bin/python" -m pip install -e "$ROOT[test,bench,pretrained,detection]"
    touch "$VENV/.complete"
fi
# The editable install points at whichever clone built the venv; make it this one.
if ! "$VENV/bin/python" -c "import activestream, sys; sys.exit(not activestream.__file__.startswith('$ROOT/'))" 2>/dev/null; then
    step "pointing the environment at $ROOT" \
        "$VENV/bin/python" -m pip install --no-deps -e "$ROOT"
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
cd "$ROOT"
