#!/usr/bin/env bash
# Sets up the environment if needed, then runs every check CI runs: lint, layer contracts, tests.
source "$(dirname "$0")/env.sh"
# The browser test drives Debian's Chromium (test tools may not download browsers here).
if [ ! -x /usr/bin/chromium ]; then
    echo "== installing chromium (Debian package) for the browser test"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
# Fashion-MNIST (the official IDX files, Debian's package) for the real-image tests.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    echo "== installing dataset-fashion-mnist (Debian package) for the real-image tests"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
# PostgreSQL's server binaries (Debian's package) for Label Studio on PostgreSQL, the database
# production runs on; the test starts a throwaway cluster of its own.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    echo "== installing postgresql (Debian package) for the Label Studio on PostgreSQL test"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql >/dev/null
fi
# The Label Studio integration tests run a real Label Studio, from its own venv (see
# label_studio.sh; built once, about a minute). Locally ACTIVESTREAM_SKIP_LABEL_STUDIO=1 skips
# building it and those tests (see the label_studio fixture); CI never does.
if [ "${CI:-}" = "true" ] || [ "${ACTIVESTREAM_SKIP_LABEL_STUDIO:-}" != "1" ]; then
    source "$ROOT/scripts/label_studio.sh"  # exports LABEL_STUDIO_BIN
fi
echo "== ruff"
ruff check .
ruff format --check .
echo "== import-linter (layer contracts)"
lint-imports
# Python 3.10, the oldest version pyproject.toml admits, runs the tests that need no torch first
# (about a minute; its venv takes about a minute to build, once; see env310.sh): the HTTP API's
# asyncio paths, config, queue, label log, samplers, id index. Locally ACTIVESTREAM_SKIP_PY310=1
# skips it; CI never does.
if [ "${CI:-}" = "true" ] || [ "${ACTIVESTREAM_SKIP_PY310:-}" != "1" ]; then
    source "$ROOT/scripts/env310.sh"
    echo "== pytest on Python $PY310_VERSION ($PY310): the tests that need no torch"
    "$PY310" -m pytest -p no:cacheprovider -q -m "not slow" \
        tests/test_app.py tests/test_config.py tests/test_queue.py tests/test_labellog.py \
        tests/test_samplers.py tests/test_selection.py tests/test_topk.py \
        tests/test_diversity.py tests/test_exploration.py tests/test_idindex.py
fi
echo "== pytest on Python $(python -c 'import platform; print(platform.python_version())') ($(command -v python)): every test"
status=0
# Two workers, whole files each (a file's module fixtures, its service, start once); pass
# -n 0 to run in this process, e.g. under a debugger.
python -m pytest -n "${ACTIVESTREAM_TEST_WORKERS:-2}" --dist loadfile "$@" || status=$?
# Every published figure stands for this commit: each generated table matches its JSON, and
# no figure's measured code changed after it was measured (else: which files, so whoever
# changed them knows which benchmark to rerun).
echo "== published figures: tables current, figures fresh (bench report --check)"
python -m activestream.cli bench report --check || status=1
exit "$status"
