#!/bin/bash
# A londi_jax sweep on a Cloud TPU pod slice: the same command on every worker (host); JAX finds
# the other workers from the TPU metadata (TPU_WORKER_HOSTNAMES), so no flags are needed.
#
#   TPU=my-v5e-32 ZONE=us-west4-a bash experiments/launch/tpu_pod.sh
set -euo pipefail
: "${TPU:?name of the TPU VM (pod slice)}" "${ZONE:?its zone}"
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  'cd londi_jax && make install && .venv/bin/pip install -U "jax[tpu]" && \
   .venv/bin/londi-jax toy-sweep --c 0.01 0.02 0.05 0.1 0.2 0.5 --budget 1 2 3 4 --seeds 8 \
     --mesh data=-1 --no-progress --json > sweep.json'
# only worker 0 writes a result: gcloud compute tpus tpu-vm scp "$TPU":londi_jax/sweep.json . --zone "$ZONE" --worker=0
