"""Run logging: every scalar goes to ``log.jsonl`` and to TensorBoard (``tb/``, via tensorboardX).

``log.jsonl`` is append-only; a line torn by a kill is cut off when the log is reopened
(``utils.io.open_jsonl_append``), so later rows never get glued to it. Read it with
``utils.io.read_jsonl``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from londi_jax.utils.io import open_jsonl_append

__all__ = ["RunLogger"]


class RunLogger:
    """Append-only JSONL log plus TensorBoard event files under ``out_dir``.

    ``tensorboard=False`` (or tensorboardX missing) keeps only the JSONL log.
    """

    def __init__(self, out_dir: str | os.PathLike, tensorboard: bool = True):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._jsonl = open_jsonl_append(self.out / "log.jsonl")
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # optional: JSONL is always written
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.out / "tb"))

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar at ``step``."""
        self.scalars(tag.rsplit("/", 1)[0] if "/" in tag else "", {tag.rsplit("/", 1)[-1]: value}, step)

    def scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        """Numeric entries of ``values`` as ``prefix/name`` at ``step`` (others are skipped)."""
        row = {"time": time.time(), "step": int(step), "prefix": prefix}
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[k] = float(v)
                if self._tb is not None:
                    self._tb.add_scalar(f"{prefix}/{k}" if prefix else k, float(v), int(step))
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
