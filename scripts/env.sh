# Sourced by the other scripts: builds (once) and activates the project's virtual environment.
# The venv lives outside the clone, keyed by a hash of pyproject.toml's [project] tables (the
# dependencies; tool settings do not count), so torch (~5 GB) is installed once per dependency
# set; delete ~/.cache/activestream to rebuild from nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HASH="$(sed -n '/^\[project\]/,/^\[tool\./p' "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
VENV="${ACTIVESTREAM_VENV:-$HOME/.cache/activestream/venv-$HASH}"
PYTHON="${PYTHON:-python3}"
if [ ! -f "$VENV/.complete" ]; then
    echo "== building environment in $VENV (first run only; torch is large)"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test,bench]" --config-settings editable_mode=compat
    touch "$VENV/.complete"
fi
# The editable install points at whichever clone built the venv; make it this one.
if ! "$VENV/bin/python" -c "import pipelines, sys; sys.exit(not pipelines.__file__.startswith('$ROOT/'))" 2>/dev/null; then
    "$VENV/bin/python" -m pip install --quiet --no-deps -e "$ROOT" --config-settings editable_mode=compat
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
cd "$ROOT"
