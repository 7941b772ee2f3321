"""Several processes (hosts) as one JAX program: ``jax.distributed`` set up from flags or the cluster.

``initialize`` is called by ``londi-jax`` before any command runs:

* ``--coordinator HOST:PORT --num-processes N --process-id I`` (or ``LONDI_COORDINATOR``,
  ``LONDI_NUM_PROCESSES``, ``LONDI_PROCESS_ID``): an explicit launch, e.g. N shells on one machine
  or an ``ssh`` loop;
* otherwise, under SLURM with more than one task (``SLURM_NTASKS``), Open MPI
  (``OMPI_COMM_WORLD_SIZE``) or on a Cloud TPU pod slice (``TPU_WORKER_HOSTNAMES``), JAX's own
  cluster detection (``jax.distributed.initialize()`` with no arguments) reads the coordinator,
  process count and id from the environment;
* otherwise nothing happens: one process.

``--local-devices N`` gives each process N virtual CPU devices (``jax_num_cpu_devices``; tests and
trials on one machine; CPU collectives go through gloo). After ``initialize``, ``jax.devices()``
lists every process's devices, a mesh (``utils.mesh.make_mesh``) spans them all, every process
runs the same program on its own devices, and only process 0 prints results
(``is_main_process``; ``utils.output.emit``).
"""

from __future__ import annotations

import os
from typing import Any

from londi_jax.utils.errors import LondiError

ENV = {"coordinator": "LONDI_COORDINATOR", "num_processes": "LONDI_NUM_PROCESSES", "process_id": "LONDI_PROCESS_ID"}
# Variables whose presence means a multi-process launch JAX can detect by itself.
CLUSTER_HINTS = (("SLURM_NTASKS", "SLURM"), ("OMPI_COMM_WORLD_SIZE", "Open MPI"), ("TPU_WORKER_HOSTNAMES", "TPU pod"))


class DistributedError(LondiError):
    """A multi-process launch that cannot start as given."""


def _int_or_none(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DistributedError(f"{name} must be an integer, got {value!r}") from None


def cluster_launch() -> str | None:
    """The cluster JAX will detect (``"SLURM"``, ``"Open MPI"``, ``"TPU pod"``), or None when this
    process was not started as one of several."""
    for var, name in CLUSTER_HINTS:
        value = os.environ.get(var, "")
        if var == "TPU_WORKER_HOSTNAMES":
            if "," in value:
                return name
        elif _int_or_none(var, value) not in (None, 0, 1):
            return name
    return None


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               local_devices: int | None = None) -> dict[str, Any]:
    """Join the processes of a multi-process run (see the module docstring); returns
    ``{"processes", "process_id", "how"}``. Call before JAX touches a device.

    Raises ``DistributedError`` when ``coordinator`` is given without the process count and id,
    when they are out of range, or when JAX cannot connect (its message kept).
    """
    coordinator = coordinator or os.environ.get(ENV["coordinator"]) or None
    num_processes = _int_or_none("--num-processes", num_processes if num_processes is not None
                                 else os.environ.get(ENV["num_processes"]))
    process_id = _int_or_none("--process-id", process_id if process_id is not None
                              else os.environ.get(ENV["process_id"]))
    import jax

    if local_devices is not None:
        if local_devices < 1:
            raise DistributedError(f"--local-devices must be >= 1, got {local_devices}")
        jax.config.update("jax_num_cpu_devices", int(local_devices))
    if coordinator:
        if num_processes is None or process_id is None:
            raise DistributedError("--coordinator needs --num-processes and --process-id (or "
                                   "LONDI_NUM_PROCESSES / LONDI_PROCESS_ID)")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise DistributedError(f"--process-id must be in [0, {num_processes}) for --num-processes "
                                   f"{num_processes}, got {process_id}")
        how = "flags"
        kwargs: dict[str, Any] = dict(coordinator_address=coordinator, num_processes=num_processes,
                                      process_id=process_id)
    elif num_processes not in (None, 1) or process_id not in (None, 0):
        raise DistributedError("--num-processes / --process-id need --coordinator HOST:PORT (process 0's address)")
    else:
        how = cluster_launch()
        kwargs = {}
        if how is None:
            return {"processes": 1, "process_id": 0, "how": "one process"}
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as err:
        raise DistributedError(f"jax.distributed.initialize ({how}) failed: {err}") from err
    return {"processes": jax.process_count(), "process_id": jax.process_index(), "how": how}


def is_main_process() -> bool:
    """True on process 0 (or when JAX has not been imported: nothing distributed can be running)."""
    import sys

    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0
