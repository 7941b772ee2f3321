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
                  timeout: float = 600) -> list[str]:
    """Run ``londi-jax ARGS`` as ``processes`` processes of one run; returns each one's stdout.
    Fails the test with the stderr of a process that exits non-zero."""
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-c", "import sys; from londi_jax.cli import main; sys.exit(main(sys.argv[1:]))",
                               "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
                               "--process-id", str(i), "--local-devices", str(local_devices), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
             for i in range(processes)]
    outs = [p.communicate(timeout=timeout) for p in procs]
    for i, (p, (_, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}: {err[-3000:]}"
    return [out for out, _ in outs]


def json_result(stdout: str) -> Any:
    """The ``--json`` document in a process's stdout (gloo's C++ library prints its connection
    lines there first)."""
    return json.loads(stdout if stdout.startswith("{") else stdout[stdout.index("\n{") + 1:])
