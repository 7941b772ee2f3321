"""Several ``londi-jax`` processes on loopback forming one multi-process JAX run (imported by tests
as ``from processes import ...``): each gets ``--local-devices`` virtual CPU devices and the gloo
collectives of ``jax.distributed``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(args: list[str], cwd: Path, processes: int = 2, local_devices: int = 4,
                  timeout: float = 600, script: str | None = None) -> list[str]:
    """Run ``londi-jax ARGS`` (or ``python -c SCRIPT ARGS``) as ``processes`` processes of one run;
    returns each one's stdout. ``londi-jax`` gets the flags; a script joins the run itself, with the
    coordinator, process count and index in its environment (``LONDI_COORDINATOR`` ..., which
    ``utils.distributed.initialize`` reads).
    Fails the test with the stderr of a process that exits non-zero."""
    port = free_port()
    procs = []
    for i in range(processes):
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        env.pop("XLA_FLAGS", None)
        if script is None:  # the command line's own flags
            cmd = [sys.executable, "-c", "import sys; from londi_jax.cli import main; sys.exit(main(sys.argv[1:]))",
                   "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes), "--process-id", str(i),
                   "--local-devices", str(local_devices), *args]
        else:
            env.update(LONDI_COORDINATOR=f"127.0.0.1:{port}", LONDI_NUM_PROCESSES=str(processes),
                       LONDI_PROCESS_ID=str(i))
            cmd = [sys.executable, "-c", script, *args]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd))
    outs = [p.communicate(timeout=timeout) for p in procs]
    for i, (p, (_, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}: {err[-3000:]}"
    return [out for out, _ in outs]


def json_result(stdout: str) -> Any:
    """The ``--json`` document in a process's stdout (gloo's C++ library prints its connection
    lines there first)."""
    return json.loads(stdout if stdout.startswith("{") else stdout[stdout.index("\n{") + 1:])
