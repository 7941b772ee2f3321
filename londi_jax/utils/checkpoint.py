"""The one checkpoint store (orbax-checkpoint): pytrees with JSON metadata, checked before restore.

All orbax use in the project lives in this module, so a move from orbax's V0 API
(``CheckpointManager`` + ``args``) to its v1 API touches only this file.

Layout of a checkpoint directory (one sub-directory per saved update count)::

    <dir>/<step>/state/   the train-state pytree (orbax StandardSave; typed PRNG keys included)
    <dir>/<step>/meta/    JSON: {"kind", "config", "hparams", "signature", "step", "extra"}

Saves are atomic: orbax writes into ``<step>.orbax-checkpoint-tmp-*`` and renames it once
complete, so a process killed mid-save leaves only a tmp directory that is ignored on
restore. The manager keeps the newest ``keep`` checkpoints.

Before restoring, the stored metadata (config, hparams, and a signature of every leaf's
path/shape/dtype) is compared with what the caller expects; any difference raises
:class:`CheckpointMismatchError` naming the differing fields, instead of orbax's
tree-structure error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from londi_jax.utils.errors import LondiError
from londi_jax.utils.output import to_jsonable

__all__ = ["CheckpointError", "CheckpointMismatchError", "CheckpointStore", "tree_signature", "to_jsonable"]


class CheckpointError(LondiError):
    """A checkpoint directory that cannot be used (missing, empty, unreadable)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was written for a different config / sweep / learner than requested."""


# ----------------------------------------------------------------------------- metadata helpers


def _leaf_desc(x: Any) -> str:
    dtype = getattr(x, "dtype", None)
    shape = tuple(getattr(x, "shape", ()))
    if dtype is None:
        return f"{type(x).__name__}"
    return f"{dtype}{list(shape)}"


def tree_signature(tree: Any) -> dict[str, str]:
    """``{leaf path: "dtype[shape]"}`` for every leaf of ``tree`` (arrays or ShapeDtypeStructs)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): _leaf_desc(leaf) for path, leaf in flat}


def _flatten_json(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON dict -> ``{"a.b": value}`` (lists stay whole: they are hparam values)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten_json(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
        return out
    return {prefix.rstrip("."): obj}


def _short(v: Any, limit: int = 60) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    if isinstance(v, list):
        arr = np.asarray(v, dtype=object)
        s = f"array of shape {list(np.shape(v))}" if arr.size > 4 else s
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _diff_dicts(name: str, stored: dict, wanted: dict) -> list[str]:
    a, b = _flatten_json(stored), _flatten_json(wanted)
    lines = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            lines.append(f"{name}.{key}: absent in checkpoint, requested {_short(b[key])}")
        elif key not in b:
            lines.append(f"{name}.{key}: checkpoint has {_short(a[key])}, absent in request")
        elif a[key] != b[key]:
            shp_a, shp_b = np.shape(a[key]), np.shape(b[key])
            if shp_a != shp_b:
                lines.append(
                    f"{name}.{key}: checkpoint has shape {list(shp_a)} (sweep of "
                    f"{shp_a[0] if shp_a else 1}), requested shape {list(shp_b)} "
                    f"(sweep of {shp_b[0] if shp_b else 1})"
                )
            else:
                lines.append(f"{name}.{key}: checkpoint has {_short(a[key])}, requested {_short(b[key])}")
    return lines


def _diff_signatures(stored: dict[str, str], wanted: dict[str, str], limit: int = 8) -> list[str]:
    lines = []
    for key in sorted(set(stored) | set(wanted)):
        if key not in stored:
            lines.append(f"state{key}: absent in checkpoint, requested {wanted[key]}")
        elif key not in wanted:
            lines.append(f"state{key}: in checkpoint ({stored[key]}), absent in request")
        elif stored[key] != wanted[key]:
            lines.append(f"state{key}: checkpoint has {stored[key]}, requested {wanted[key]}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more leaves differ"]
    return lines


# ----------------------------------------------------------------------------- the store


class CheckpointStore:
    """Save / restore train-state pytrees with metadata; keeps the newest ``keep`` checkpoints.

    ``kind`` names what is stored (e.g. ``"switcher-train/dqn"``); restoring a checkpoint of
    another kind is a mismatch. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, *, async_save: bool = False):
        if keep < 1:
            raise CheckpointError(f"keep must be >= 1 (got {keep}); it is how many checkpoints to retain")
        self.directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(f"checkpoint path {self.directory} exists and is not a directory")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self._mgr = ocp.CheckpointManager(self.directory, options=options)

    # -- bookkeeping
    def all_steps(self) -> list[int]:
        """Update counts of the complete checkpoints on disk, ascending (tmp dirs excluded)."""
        self._mgr.reload()
        return sorted(int(s) for s in self._mgr.all_steps())

    def latest_step(self) -> int | None:
        """Newest complete checkpoint's step, or ``None`` when the directory holds none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    # -- save
    def save(
        self,
        step: int,
        state: Any,
        *,
        kind: str,
        config: Any = None,
        hparams: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Write ``state`` (any pytree of arrays) as checkpoint ``step`` with JSON metadata."""
        meta = {
            "kind": kind,
            "step": int(step),
            "config": to_jsonable(config),
            "hparams": to_jsonable(hparams),
            "signature": tree_signature(state),
            "extra": to_jsonable(dict(extra or {})),
        }
        self._mgr.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        )

    def wait(self) -> None:
        """Block until an asynchronous save (if any) is on disk."""
        self._mgr.wait_until_finished()

    # -- restore
    def read_metadata(self, step: int | None = None) -> dict[str, Any]:
        """The JSON metadata of checkpoint ``step`` (default: the latest)."""
        step = self._resolve(step)
        out = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out.meta)

    def restore(
        self,
        like: Any,
        step: int | None = None,
        *,
        kind: str | None = None,
        config: Any = None,
        hparams: Any = None,
        check_hparams: bool = True,
    ) -> tuple[Any, dict[str, Any]]:
        """Restore checkpoint ``step`` (default latest) into the structure of ``like``.

        ``like`` is a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g. ``jax.eval_shape`` of
        the initialiser). ``kind`` / ``config`` / ``hparams``, when given, must equal the stored
        ones; otherwise :class:`CheckpointMismatchError` lists every difference.
        Returns ``(state, metadata)``.
        """
        step = self._resolve(step)
        meta = self.read_metadata(step)
        problems: list[str] = []
        if kind is not None and meta.get("kind") != kind:
            problems.append(f"kind (learner): checkpoint has {meta.get('kind')!r}, requested {kind!r}")
        if config is not None:
            problems += _diff_dicts("config", meta.get("config") or {}, to_jsonable(config))
        if hparams is not None and check_hparams:
            problems += _diff_dicts("hparams", meta.get("hparams") or {}, to_jsonable(hparams))
        if not problems:  # config agrees: any remaining difference is in the state layout itself
            problems += _diff_signatures(meta.get("signature") or {}, tree_signature(like))
        if problems:
            raise CheckpointMismatchError(
                f"checkpoint {self.directory}/{step} does not match the requested run:\n  "
                + "\n  ".join(problems)
                + "\nUse the same config/hparams as the run that wrote it, or a fresh checkpoint directory."
            )
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        out = self._mgr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return out.state, dict(out.meta)

    def _resolve(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no complete checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if int(step) not in steps:
            raise CheckpointError(
                f"no checkpoint for step {step} in {self.directory}; available steps: {steps}"
            )
        return int(step)

    def close(self) -> None:
        """Finish pending saves and release orbax's resources."""
        self._mgr.wait_until_finished()
        self._mgr.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
