"""ScienceWorld's 30 tasks (from the package's tasks.json, no JVM), splits, simplifications, errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from scienceworld.constants import TASKS
from scienceworld.utils import infer_task

from londi_jax.utils.errors import LondiError, UnknownNameError

SPLITS = ("train", "dev", "test")
SIMPLIFICATIONS = ("easy", "noElectricalAction", "openContainers", "openDoors", "selfWateringFlowerPots", "teleportAction")


class ScienceWorldError(LondiError):
    """A ScienceWorld problem the user can fix (bad variation, split, simplification, ...)."""


class JavaNotFoundError(ScienceWorldError):
    """``java`` is not on PATH."""


class SimulatorDiedError(ScienceWorldError):
    """The simulator JVM died or stopped answering twice in a row."""


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """One ScienceWorld task: paper id ("1-1"), name ("boil"), alphabetical index (0..29)."""

    id: str
    name: str
    index: int
    topic: str
    title: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build_tasks() -> tuple[TaskInfo, ...]:
    names = sorted(t["task_name"] for t in TASKS)  # the simulator lists names alphabetically
    return tuple(
        TaskInfo(t["task_id"], t["task_name"], names.index(t["task_name"]), t["topic"], t["task"]) for t in TASKS
    )


_TASKS = _build_tasks()


def list_tasks() -> list[TaskInfo]:
    """The 30 tasks in paper order (1-1 .. 10-2)."""
    return list(_TASKS)


def resolve_task(task: str | int) -> TaskInfo:
    """Find a task by id ("1-1"), name ("boil", "task-1-boil") or alphabetical index (0 or "0")."""
    if isinstance(task, bool) or not isinstance(task, (str, int)):
        raise ScienceWorldError(f"a ScienceWorld task is an id like '1-1', a name like 'boil' or an index 0..29, got {task!r}")
    key = str(task).strip()
    if key.isdigit():
        idx = int(key)
        for t in _TASKS:
            if t.index == idx:
                return t
    else:
        name = infer_task(key)
        for t in _TASKS:
            if name in (t.name, t.id):
                return t
    raise UnknownNameError(
        "ScienceWorld task", str(task), [f"{t.id} ({t.name})" for t in _TASKS],
        hint="Give the id, the name, or the alphabetical index 0..29",
    )


def _check_simplifications(simplifications: str | Sequence[str], task: TaskInfo) -> str:
    items = [simplifications] if isinstance(simplifications, str) else list(simplifications)
    parts = [p.strip() for item in items for p in item.split(",") if p.strip()]
    for p in parts:
        if p not in SIMPLIFICATIONS:
            raise UnknownNameError("simplification", p, SIMPLIFICATIONS, hint="Combine them with commas, e.g. 'teleportAction,openDoors'")
    electrical = "power-component" in task.name or "conductivity" in task.name
    if electrical and "noElectricalAction" in parts:
        raise ScienceWorldError(f"task {task.id} ({task.name}) needs electrical actions: drop 'noElectricalAction'")
    return ",".join(parts)
