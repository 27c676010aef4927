#!/usr/bin/env bash
# Builds (once) a separate virtual environment holding Label Studio, the annotation UI the
# integration tests drive as a real client of the service, and exports LABEL_STUDIO_BIN, its
# `label-studio` executable. Sourced (test.sh) it exports; run (`bash scripts/label_studio.sh`,
# as the pytest fixture does when LABEL_STUDIO_BIN is unset) it prints that path on stdout.
#
# Label Studio pins its own Django stack (~160 packages, ~1 GB), which must not meet the project's
# dependencies, so it gets its own venv outside the clone, keyed by its version only:
# ~/.cache/activestream/label-studio-<version> (ACTIVESTREAM_LS_VENV names another). It comes from
# PyPI alone; about 70 s to build. Progress goes to stderr, one line per step; installer output
# goes to a log next to the venv, whose tail is shown when a step fails.
set -euo pipefail
LS_VERSION="1.23.2"
LS_VENV="${ACTIVESTREAM_LS_VENV:-$HOME/.cache/activestream/label-studio-$LS_VERSION}"
LS_LOG="$LS_VENV.log"

source "$(dirname "${BASH_SOURCE[0]}")/step.sh"
ls_step() { step_in "$LS_LOG" "label-studio" "$@"; }  # ls_step "what the user sees" command...

if [ ! -f "$LS_VENV/.complete" ]; then
    mkdir -p "$(dirname "$LS_VENV")"
    : >"$LS_LOG"
    echo "== building Label Studio $LS_VERSION in $LS_VENV (first run only; about a minute)" >&2
    rm -rf "$LS_VENV"
    ls_step "creating the venv" "${PYTHON:-python3}" -m venv "$LS_VENV"
    ls_step "upgrading pip" "$LS_VENV/bin/python" -m pip install --upgrade pip
    ls_step "installing label-studio==$LS_VERSION" \
        "$LS_VENV/bin/python" -m pip install "label-studio==$LS_VERSION"
    # A broken or conflicting install fails here, not as a server that never answers in a test.
    # (`label-studio --version` cannot check it: it runs the database migrations first.)
    ls_step "checking the install" "$LS_VENV/bin/python" -m pip check
    ls_step "checking the version" "$LS_VENV/bin/python" -c \
        "import importlib.metadata as m; assert m.version('label-studio') == '$LS_VERSION'"
    touch "$LS_VENV/.complete"
fi
export LABEL_STUDIO_BIN="$LS_VENV/bin/label-studio"
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "$LABEL_STUDIO_BIN"
fi
