#!/usr/bin/env bash
# Sets up the environment if needed, then starts the labeling service (Ctrl-C stops it).
source "$(dirname "$0")/env.sh"
exec activestream serve "$@"
