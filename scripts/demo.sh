#!/usr/bin/env bash
# Sets up the environment if needed, then runs the main job on the bundled default: the real
# service (activestream serve) labeled over HTTP by oracle annotators, the sampler vs random.
source "$(dirname "$0")/env.sh"
activestream demo "$@"
