#!/usr/bin/env bash
# Every benchmark beside its baseline: bash scripts/bench.sh --quick --out results/bench
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec activestream bench "$@"
