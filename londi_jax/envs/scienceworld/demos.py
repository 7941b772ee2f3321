"""Gold-path demonstrations of ScienceWorld tasks (``write_demos`` / ``read_demos``) and ``show``."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scienceworld import __version__ as SCIENCEWORLD_VERSION
from tqdm.auto import tqdm

from londi_jax.envs.scienceworld.env import ScienceWorldTextEnv
from londi_jax.envs.scienceworld.tasks import _TASKS, SPLITS, ScienceWorldError, _check_simplifications, resolve_task
from londi_jax.utils.errors import UnknownNameError
from londi_jax.utils.io import atomic_write_json, atomic_write_text, read_jsonl

DEMO_FORMAT = "londi_jax.scienceworld.demos/1"

def show(task: str | int, variation: int | None, split: str = "train", **kw: Any) -> dict[str, Any]:
    """The first observation of ``task`` / ``variation`` (None: the split's first) as a JSON-able
    dict (starts one JVM).

    Keys: task (id, name, index, topic, title), variation, split, split_range, num_variations
    (in the split), num_variations_total, task_description, observation, inventory, score, num_valid_actions,
    valid_actions, simplifications, step_limit, scienceworld_version. ``kw`` goes to
    ``ScienceWorldTextEnv`` (e.g. ``simplifications=""``)."""
    with ScienceWorldTextEnv(task, variation=variation, split=split, **kw) as env:
        first = env.reset(0, with_valid=True)  # seed 0: the split's first variation unless fixed
        return {
            "env": "scienceworld",
            "task": env.task.to_dict(),
            "variation": env.variation,
            "split": env.split,
            "split_range": list(env.split_range()),
            "num_variations": len(env.variations),
            "num_variations_total": env.max_variations,
            "task_description": first.mission,
            "observation": first.observation,
            "inventory": env.inventory(),
            "score": first.info["score"],
            "num_valid_actions": len(first.valid_actions),
            "valid_actions": first.valid_actions,
            "simplifications": env.simplifications,
            "step_limit": env.step_limit,
            "scienceworld_version": SCIENCEWORLD_VERSION,
        }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete records of a demo file; a torn last line (interrupted write) is dropped."""
    return read_jsonl(path)


def _demo_episode(env: ScienceWorldTextEnv, variation: int, with_valid: bool = False) -> dict[str, Any]:
    first = env.reset(variation=variation, with_valid=with_valid)
    valid = first.valid_actions
    gold = env.gold_actions()
    record: dict[str, Any] = {
        "task": env.task.id, "task_name": env.task.name, "variation": variation, "split": env.split,
        "simplifications": env.simplifications, "task_description": first.mission,
        "initial_observation": first.observation, "initial_look": env.look(), "initial_inventory": env.inventory(),
        "initial_score": first.info["score"], "gold_actions": gold, "steps": [],
    }
    step = None
    for action in gold:
        step = env.step(action, with_valid=with_valid)
        record["steps"].append({
            "action": action, "observation": step.observation, "score": step.info["score"], "reward": step.reward,
            "moves": step.info.get("moves"), "look": env.look(), "inventory": env.inventory(),
            "terminated": step.terminated, "truncated": step.truncated,
            **({"valid_actions": valid} if with_valid else {}),
        })
        valid = step.info.get("valid_actions", [])
        if step.done:
            break
    lost = step is not None and step.info.get("episode_lost", False)
    record.update(
        num_steps=len(record["steps"]),
        final_score=step.info["score"] if step is not None else first.info["score"],
        success=bool(step is not None and step.info["success"]),
        complete=not lost,
    )
    return record


def write_demos(
    out_dir: str | os.PathLike,
    tasks: str | int | Iterable[str | int] | None,
    split: str = "train",
    max_variations: int | None = None,
    overwrite: bool = False,
    simplifications: str = "easy",
    progress: bool = True,
    with_valid: bool = False,
) -> dict[str, Any]:
    """Write the gold action sequence of each variation of ``tasks`` (None or "all": all 30) in
    ``split`` (the first ``max_variations`` of it) with per-step observations and scores.

    Files in ``out_dir``:
      * ``<task id>.jsonl``: one JSON object per variation: task, task_name, variation, split,
        simplifications, task_description, initial_observation / _look / _inventory / _score,
        gold_actions, steps (list of {action, observation, score, reward, moves, look,
        inventory, terminated, truncated, and with ``with_valid`` valid_actions: the valid
        actions of the state the action was taken in, the candidates a scoring policy clones
        against}), num_steps, final_score, success, complete.
      * ``index.json``: format, scienceworld_version, split, simplifications, and per task
        {name, file, variations, num_success, mean_final_score} plus totals.

    Resumable: variations already in a task's JSONL are kept and skipped. A directory written
    with another split or simplifications is refused unless ``overwrite=True`` (which deletes
    the demo files of the requested tasks and the index first). The gold path is replayed
    without a step limit. Returns the index as a dict (plus ``written``/``skipped`` counts).
    """
    if tasks is None or tasks == "all":
        infos = list(_TASKS)
    else:
        items = [tasks] if isinstance(tasks, (str, int)) else list(tasks)
        if not items:
            raise ScienceWorldError("no tasks given: pass task ids/names, or 'all'")
        infos = list(dict.fromkeys(resolve_task(t) for t in items))
    if split not in SPLITS:
        raise UnknownNameError("split", str(split), SPLITS)
    if max_variations is not None and (isinstance(max_variations, bool) or not isinstance(max_variations, int) or max_variations < 1):
        raise ScienceWorldError(f"max_variations must be a positive int or None, got {max_variations!r}")
    simplifications = ",".join(dict.fromkeys(_check_simplifications(simplifications, t) for t in infos))
    out = Path(out_dir)
    index_path = out / "index.json"
    settings = {"format": DEMO_FORMAT, "scienceworld_version": SCIENCEWORLD_VERSION, "split": split,
                "simplifications": simplifications, "with_valid": bool(with_valid)}
    index: dict[str, Any] = {}
    if index_path.exists() and not overwrite:
        index = json.loads(index_path.read_text())
        old = {k: index.get(k, False if k == "with_valid" else None) for k in settings}
        if old != settings:
            raise ScienceWorldError(
                f"{out} holds demos written with {old}, not {settings}: pass overwrite=True (CLI --overwrite) or use another directory")
    if overwrite:
        for t in infos:
            (out / f"{t.id}.jsonl").unlink(missing_ok=True)
        index_path.unlink(missing_ok=True)
        index = {}
    for t in infos:
        for r in _read_jsonl(out / f"{t.id}.jsonl"):
            if (r.get("split") != split or r.get("simplifications") != simplifications
                    or with_valid and any("valid_actions" not in st for st in r["steps"])):
                raise ScienceWorldError(
                    f"{out / f'{t.id}.jsonl'} holds demos of another split or simplification: pass overwrite=True")
    index = settings | {"tasks": index.get("tasks", {})}
    out.mkdir(parents=True, exist_ok=True)
    written = skipped = 0
    env = ScienceWorldTextEnv(infos[0].id, split=split, simplifications=simplifications, step_limit=10**6, gold_path=True)
    try:
        plan = []  # (task, variations to have, records already written)
        for t in infos:
            env.set_task(t.id)  # same JVM: loading another task costs milliseconds
            variations = env.variations[:max_variations] if max_variations else list(env.variations)
            plan.append((t, variations, _read_jsonl(out / f"{t.id}.jsonl")))
        total = sum(len(set(v) - {r["variation"] for r in recs}) for _, v, recs in plan)
        bar = tqdm(total=total, desc="ScienceWorld gold demos", unit="var", disable=not progress)
        for t, variations, records in plan:
            env.set_task(t.id)
            path = out / f"{t.id}.jsonl"
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))  # drops a torn last line
            have = {r["variation"] for r in records}
            with path.open("a") as f:
                for v in variations:
                    if v in have:
                        skipped += 1
                        continue
                    bar.set_postfix_str(f"{t.id} var {v}")
                    rec = _demo_episode(env, v, with_valid)
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    records.append(rec)
                    written += 1
                    bar.update(1)
            n = max(len(records), 1)
            index["tasks"][t.id] = {
                "name": t.name, "file": path.name,
                "variations": sorted(r["variation"] for r in records),
                "num_episodes": len(records),
                "num_success": sum(bool(r["success"]) for r in records),
                "mean_final_score": round(sum(max(r["final_score"], 0) for r in records) / n, 3),  # failures count 0
                "mean_num_steps": round(sum(r["num_steps"] for r in records) / n, 2),
            }
            index["num_episodes"] = sum(v["num_episodes"] for v in index["tasks"].values())
            index["num_success"] = sum(v["num_success"] for v in index["tasks"].values())
            index["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            atomic_write_json(index_path, index)
        bar.close()
    finally:
        env.close()
    return index | {"out_dir": str(out), "index_file": str(index_path), "written": written, "skipped": skipped}


def read_demos(out_dir: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The index and all episode records of a directory written by ``write_demos``."""
    out = Path(out_dir)
    index_path = out / "index.json"
    if not index_path.exists():
        raise ScienceWorldError(f"{out} has no index.json: write demos there first (londi-jax env demos --env scienceworld ...)")
    index = json.loads(index_path.read_text())
    records = [r for t in index.get("tasks", {}).values() for r in _read_jsonl(out / t["file"])]
    return index, records
