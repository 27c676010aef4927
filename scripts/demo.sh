#!/usr/bin/env bash
# Sets up the environment if needed, then runs the main job on the bundled default.
source "$(dirname "$0")/env.sh"
activestream simulate "$@"
