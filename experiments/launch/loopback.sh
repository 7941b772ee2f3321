#!/bin/bash
# Two processes on this machine, 4 virtual CPU devices each, as one 8-device run (gloo collectives):
# how the multi-process path is tested (tests/test_utils_mesh.py). Any command takes the same flags.
#
#   bash experiments/launch/loopback.sh
set -euo pipefail
PORT=${PORT:-12355}
for i in 0 1; do
  JAX_PLATFORMS=cpu .venv/bin/londi-jax --coordinator "127.0.0.1:${PORT}" --num-processes 2 --process-id "$i" \
    --local-devices 4 toy-sweep --c 0.1 0.3 0.5 --seeds 1 --updates 300 --mesh data=8 --no-progress &
done
wait
