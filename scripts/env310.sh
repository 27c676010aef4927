# Sourced by test.sh: builds (once) a second, small virtual environment on CPython 3.10, the oldest
# version pyproject.toml admits, and sets PY310 to its python. PATH is left alone: the main venv
# stays the one in use.
#
# No package registry reachable here offers CPython 3.10 (Debian: 3.9, 3.11, 3.13 and up; PyPI and
# npm only have installers that download from elsewhere), but this kind of machine comes with
# pyenv's 3.10 beside its 3.11 (~/.pyenv/versions/3.10.*); PYTHON310=/path/to/python3.10 names
# another. No CPython 3.10 found is an error, never a skip: CI must run the 3.10 tests.
#
# torch has only CUDA builds (several GB) on PyPI for Linux x86_64, so this venv has no torch:
# it holds Ray, Serve's FastAPI and the data libraries, enough for everything that runs without
# a model (samplers, config, id index, label log, ledger, query queue, and the HTTP API as a
# plain class, where Python versions differ most: asyncio). Its key is this file and the
# interpreter's version; delete the venv (or ~/.cache/activestream) to rebuild it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

find_python310() {  # prints the first CPython 3.10 found; the places tried go to stderr on failure
    local tried=() candidate candidates=()
    if [ -n "${PYTHON310:-}" ]; then
        candidates=("$PYTHON310")  # named: that one or none
    else
        candidates=("$(command -v python3.10 || true)")  # pyenv's shim fails unless 3.10 is selected
        for candidate in "${PYENV_ROOT:-}" "$HOME/.pyenv" "$(pyenv root 2>/dev/null || true)"; do
            [ -n "$candidate" ] || continue
            # shellcheck disable=SC2207 # version folders have no spaces
            candidates+=($(ls -d "$candidate"/versions/3.10*/bin/python3.10 2>/dev/null | sort -V -r))
        done
        candidates+=(/usr/local/bin/python3.10 /usr/bin/python3.10)
    fi
    for candidate in "${candidates[@]}"; do
        [ -n "$candidate" ] || continue
        tried+=("$candidate")
        if "$candidate" -c 'import platform, sys
sys.exit(not (sys.version_info[:2] == (3, 10) and platform.python_implementation() == "CPython"))' \
            2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "no CPython 3.10 found; tried: ${tried[*]:-nothing}" >&2
    return 1
}

if ! PYTHON310_EXE="$(find_python310)"; then
    echo "== FAILED: the Python 3.10 tests need a CPython 3.10 interpreter" >&2
    echo "   set PYTHON310=/path/to/python3.10 (pyenv's ~/.pyenv/versions/3.10.*/bin/python3.10 is found by itself)" >&2
    exit 1
fi
PY310_VERSION="$("$PYTHON310_EXE" -c 'import platform; print(platform.python_version())')"
HASH310="$({ cat "$ROOT/scripts/env310.sh"; echo "$PY310_VERSION"; } | sha256sum | cut -c1-16)"
VENV310="${ACTIVESTREAM_VENV310:-$HOME/.cache/activestream/venv310-$HASH310}"
LOG310="$VENV310.log"
PY310="$VENV310/bin/python"

source "$(dirname "${BASH_SOURCE[0]}")/step.sh"
step310() { step_in "$LOG310" "3.10" "$@"; }  # step310 "what the user sees" command...

if [ ! -f "$VENV310/.complete" ]; then
    mkdir -p "$(dirname "$VENV310")"
    : >"$LOG310"
    echo "== building the Python $PY310_VERSION environment in $VENV310 (first run only; no torch)"
    rm -rf "$VENV310"
    step310 "creating the venv with $PYTHON310_EXE" "$PYTHON310_EXE" -m venv "$VENV310"
    step310 "upgrading pip" "$PY310" -m pip install --upgrade pip
    # The floors are pyproject.toml's; keep them in step with it.
    step310 "installing the torch-free dependencies" "$PY310" -m pip install \
        "ray[serve]==2.60.0" "numpy>=1.26" "pyarrow>=15" "s3fs>=2024.6" "scikit-learn>=1.4" \
        "pydantic>=2.6" "pyyaml>=6" "requests>=2.31" "pillow>=10" \
        "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100"
    step310 "installing activestream (no dependencies)" \
        "$PY310" -m pip install --no-deps -e "$ROOT"
    touch "$VENV310/.complete"
fi
# The editable install points at whichever clone built the venv; make it this one.
if ! "$PY310" -c "import activestream, sys; sys.exit(not activestream.__file__.startswith('$ROOT/'))" 2>/dev/null; then
    step310 "pointing the environment at $ROOT" "$PY310" -m pip install --no-deps -e "$ROOT"
fi
