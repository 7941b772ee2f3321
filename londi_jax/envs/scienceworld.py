"""ScienceWorld (allenai, PyPI ``scienceworld==1.2.3``) as a ``TextEnv``.

Public API
----------
* ``ScienceWorldTextEnv(task, variation=None, split="train", simplifications="easy", step_limit=100)``
  (alias ``make_scienceworld``): one simulator JVM per env, started in the constructor.
* ``list_tasks()`` / ``resolve_task(task)``: the 30 tasks by id ("1-1"), name ("boil", old
  "task-1-boil") or alphabetical index (0..29, the ``task_num`` of SwiftSage); no JVM needed.
* ``show(task, variation, split)``: the first observation of a variation, as a dict.
* ``write_demos(out_dir, tasks, split, max_variations, overwrite)``: gold-path demonstrations
  (JSONL per task + ``index.json``; format in ``write_demos``' docstring), resumable;
  ``read_demos(out_dir)`` reads them back.
* ``live_jvm_pids(tag=None)``: simulator JVMs started by this package that are still alive.

Episode semantics (differences from the package's own ``ScienceWorldEnv`` are deliberate):

* ``reset(seed)``: with a fixed ``variation`` the seed is ignored. Otherwise the seed picks
  ``split_variations[seed % len(split_variations)]`` (so seeds 0..K-1 are the first K variations
  of the split), and ``reset()`` without a seed moves on to the next variation of the split.
* ``step(action)``: score 0..100 (or -100 once the task has failed, after a wrong ``focus on``);
  ``reward`` is the change of score. ``terminated`` when the task is completed
  (``info['success']``) or failed; ``truncated`` after ``step_limit`` calls to ``step`` in the
  episode (every call counts, also unrecognised text; the package instead compares its move
  counter, which ignores unrecognised text, with ``>``). Stepping a finished episode raises.
* Free text is passed to the simulator as is (unknown text reads "No known action matches that
  input."). "Ambiguous request" prompts are answered with ``0`` automatically (as SwiftSage does).
* Valid actions are computed only on request (``valid_actions()``, ``reset(with_valid=True)`` or
  ``step(..., with_valid=True)``): listing them costs more than the simulator step itself.
  They come sorted; in 1.2.3 an object's alias inside them can differ between runs (object UUID
  order), while observations and scores for the same actions were reproducible in our tests.
* A JVM that dies or stops answering (``call_timeout``) costs the current episode: ``step``
  returns ``truncated=True`` with ``info['episode_lost']`` and ``info['jvm_restarted']``, a fresh
  JVM is started and the next ``reset`` works. ``close()``, garbage collection and interpreter
  exit (atexit) stop every JVM; if the Python process is killed the JVM exits on its own
  (py4j ``--die-on-broken-pipe``).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import numbers
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
from py4j.protocol import Py4JError, Py4JJavaError
from scienceworld import ScienceWorldEnv
from scienceworld import __version__ as SCIENCEWORLD_VERSION
from scienceworld.constants import BASEPATH, JAR_PATH, TASKS
from scienceworld.utils import infer_task
from tqdm.auto import tqdm

from londi_jax.envs.base import TextReset, TextStep
from londi_jax.utils.errors import LondiError, UnknownNameError
from londi_jax.utils.io import atomic_write_json, atomic_write_text, read_jsonl

SPLITS = ("train", "dev", "test")
SIMPLIFICATIONS = ("easy", "noElectricalAction", "openContainers", "openDoors", "selfWateringFlowerPots", "teleportAction")
DEMO_FORMAT = "londi_jax.scienceworld.demos/1"
# Every simulator JVM carries this system property, so leftovers can be found in /proc.
JVM_MARK = "-Dlondi_jax.scienceworld=1"
# Optional extra tag (tests set it to find only their own JVMs on a shared machine).
JVM_TAG_ENV = "LONDI_JAX_JVM_TAG"
_AMBIGUOUS = "Ambiguous request"


class ScienceWorldError(LondiError):
    """A ScienceWorld problem the user can fix (bad variation, split, simplification, ...)."""


class JavaNotFoundError(ScienceWorldError):
    """``java`` is not on PATH."""


class SimulatorDiedError(ScienceWorldError):
    """The simulator JVM died or stopped answering twice in a row."""


# --------------------------------------------------------------------------------------------
# Tasks (from the package's tasks.json, no JVM)


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


# --------------------------------------------------------------------------------------------
# JVM bookkeeping

_LIVE: dict[int, subprocess.Popen] = {}
_LIVE_LOCK = threading.Lock()


class _DropPy4JRootErrors(logging.Filter):
    """py4j logs broken connections through the *root* logger (``logging.exception``); a dead
    JVM is handled here, so those tracebacks are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "py4j" not in record.pathname.replace("\\", "/").split("/")


logging.getLogger().addFilter(_DropPy4JRootErrors())
logging.getLogger("py4j").setLevel(logging.CRITICAL)


def _kill_proc(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """Ask the JVM to exit (stdin EOF), then kill it; always reap it."""
    try:
        if proc.poll() is None and proc.stdin is not None:
            try:
                proc.stdin.close()  # --die-on-broken-pipe: the JVM exits on EOF
            except OSError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pass
    with _LIVE_LOCK:
        _LIVE.pop(proc.pid, None)


@atexit.register
def _kill_all_jvms() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        _kill_proc(proc, grace=0.5)


def live_jvm_pids(tag: str | None = None) -> list[int]:
    """PIDs of running simulator JVMs started by londi_jax (any process), optionally only those
    started with ``LONDI_JAX_JVM_TAG=tag`` in the environment. Scans /proc (Linux)."""
    needle = JVM_MARK.encode() if tag is None else f"-Dlondi_jax.tag={tag}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmd.split(b"\0") and state not in (b"Z", b"X"):  # zombies hold no resources
            pids.append(int(entry))
    return sorted(pids)


class _Simulator(ScienceWorldEnv):
    """The package's ``ScienceWorldEnv`` on a JVM we launch ourselves: every call has a read
    timeout (a hung JVM raises instead of blocking forever), the JVM is registered for atexit
    clean-up and marked on its command line, and no unused callback server is started."""

    def __init__(self, call_timeout: float, java_opts: Sequence[str] = (), slow_timeout: float = 300.0):  # noqa: D107
        if shutil.which("java") is None:
            raise JavaNotFoundError("ScienceWorld needs Java 8+ on PATH ('java' not found): install e.g. openjdk-17-jre-headless")
        opts = [JVM_MARK, *java_opts]
        if os.environ.get(JVM_TAG_ENV):
            opts.append(f"-Dlondi_jax.tag={os.environ[JVM_TAG_ENV]}")
        self._closed = False
        self._gateway = None
        self.java_process = None
        self.call_timeout, self.slow_timeout = float(call_timeout), max(float(slow_timeout), float(call_timeout))
        port, proc = launch_gateway(classpath=JAR_PATH, die_on_exit=True, cwd=BASEPATH, return_proc=True, javaopts=opts)
        self.java_process = proc
        with _LIVE_LOCK:
            _LIVE[proc.pid] = proc
        try:
            self._gateway = JavaGateway(
                gateway_parameters=GatewayParameters(auto_field=True, port=port, read_timeout=self.slow_timeout),
                java_process=proc,
            )
            self.server = self._gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()  # loads classes: slow
            self.set_timeout(self.call_timeout)
        except BaseException:
            self.close()
            raise
        # attributes the base class' methods use
        self.taskName, self.variationIdx, self.simplificationStr = "", 0, ""
        self.lastStepScore, self.envStepLimit, self.goldPathGenerated = 0, 10**9, False
        self.runHistories = {}

    @property
    def pid(self) -> int:
        return self.java_process.pid

    def set_timeout(self, seconds: float) -> None:
        """Read timeout of every later call (py4j applies it per pooled connection)."""
        self._gateway.gateway_parameters.read_timeout = seconds
        for conn in list(self._gateway._gateway_client.deque):
            try:
                conn.socket.settimeout(seconds)
            except OSError:  # a connection that broke with a dead JVM
                pass

    @contextlib.contextmanager
    def slow_calls(self) -> Iterator[None]:
        """Allow ``slow_timeout`` for calls known to be slow (the first load, gold-path generation)."""
        self.set_timeout(self.slow_timeout)
        try:
            yield
        finally:
            if not self._closed:
                self.set_timeout(self.call_timeout)

    def close(self) -> None:
        """Stop the JVM (idempotent, never raises)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        if self._gateway is not None:
            try:
                self._gateway.close()  # sockets only: a dead JVM cannot answer shutdown()
            except Exception:  # noqa: BLE001 - closing must not fail
                pass
        if self.java_process is not None:
            _kill_proc(self.java_process)

    def __del__(self) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# The environment


class ScienceWorldTextEnv:
    """One ScienceWorld task as a ``TextEnv`` (see the module docstring for the semantics).

    task: id ("1-1"), name ("boil") or alphabetical index. variation: fixed variation index
    (must lie in ``split``), or None to let ``reset(seed)`` choose within ``split``.
    simplifications: comma-separated (``SIMPLIFICATIONS``); "easy" is SwiftSage's setting.
    step_limit: ``step`` calls per episode before truncation. call_timeout: seconds any single
    simulator call may take before the JVM counts as hung. gold_path: let the simulator also
    compute the gold action sequence on reset (``gold_actions()``).
    with_look_inventory: add ``info['look']`` and ``info['inventory']`` to every step (< 1 ms).
    """

    def __init__(
        self,
        task: str | int,
        variation: int | None = None,
        split: str = "train",
        simplifications: str | Sequence[str] = "easy",
        step_limit: int = 100,
        call_timeout: float = 60.0,
        gold_path: bool = False,
        with_look_inventory: bool = False,
        java_opts: Sequence[str] = (),
    ):
        self.task = resolve_task(task)
        if split not in SPLITS:
            raise UnknownNameError("split", str(split), SPLITS)
        self.split = split
        self.simplifications = _check_simplifications(simplifications, self.task)
        if isinstance(step_limit, bool) or not isinstance(step_limit, int) or step_limit < 1:
            raise ScienceWorldError(f"step_limit must be a positive int, got {step_limit!r}")
        self.step_limit = step_limit
        self.call_timeout = float(call_timeout)
        self.gold_path = bool(gold_path)
        self.with_look_inventory = bool(with_look_inventory)
        self._java_opts = tuple(java_opts)
        self._sim: _Simulator | None = None
        self._sim = _Simulator(self.call_timeout, self._java_opts)
        self.jvm_starts = 1
        self.variation: int | None = None  # of the current episode
        try:
            self.variations = self._split_variations()
            self.fixed_variation = None if variation is None else self.check_variation(variation)
        except BaseException:
            self.close()  # do not leave the JVM to the garbage collector
            raise
        self._cursor = -1  # position in self.variations for reset() without a seed
        self._done = True
        self._score = 0
        self._steps = 0

    def set_task(self, task: str | int) -> None:
        """Switch this env (and its JVM) to another task; the split, simplifications and step
        limit stay, a fixed variation is dropped. Call ``reset`` next."""
        info = resolve_task(task)
        _check_simplifications(self.simplifications, info)
        if info == self.task:
            return
        self.task, self.fixed_variation, self.variation, self._cursor, self._done = info, None, None, -1, True
        self.variations = self._split_variations()

    # -- helpers -------------------------------------------------------------------------------
    def _split_variations(self) -> list[int]:
        sim = self._sim
        with sim.slow_calls():
            sim.load(self.task.name, 0, "", False)
        self.max_variations = int(sim.get_max_variations(self.task.name))  # all splits together
        getter = {"train": sim.get_variations_train, "dev": sim.get_variations_dev, "test": sim.get_variations_test}
        return sorted(int(v) for v in getter[self.split]())

    def split_range(self) -> tuple[int, int]:
        """First and last variation index of this env's split (splits are contiguous)."""
        return self.variations[0], self.variations[-1]

    def check_variation(self, variation: int) -> int:
        """``variation`` if it lies in this env's split, else a ScienceWorldError naming the range."""
        if isinstance(variation, bool) or not isinstance(variation, numbers.Integral) or variation not in self.variations:
            lo, hi = self.split_range()
            raise ScienceWorldError(
                f"variation {variation!r} is not in the {self.split} split of task {self.task.id} ({self.task.name}): "
                f"use {lo}..{hi}, or the split that holds it (the task has {self.max_variations} variations, "
                f"0..{self.max_variations - 1}, split into train/dev/test)"
            )
        return int(variation)

    @property
    def jvm_pid(self) -> int | None:
        """PID of the simulator JVM (None after close)."""
        return None if self._sim is None else self._sim.pid

    def _restart(self) -> None:
        if self._sim is not None:
            self._sim.close()
        self._sim = None
        self._sim = _Simulator(self.call_timeout, self._java_opts)
        self.jvm_starts += 1

    def _valid(self) -> list[str]:
        # The plain list is about 3x cheaper than the JSON-with-templates call once the JIT is warm.
        # Sorted and de-duplicated: the simulator's order follows hash sets.
        return sorted(set(self._sim.get_valid_action_object_combinations()))

    def _extras(self, info: dict[str, Any]) -> dict[str, Any]:
        if self.with_look_inventory:
            info["look"] = self._sim.look()
            info["inventory"] = self._sim.inventory()
        return info

    def _base_info(self) -> dict[str, Any]:
        return {"task": self.task.id, "task_name": self.task.name, "variation": self.variation, "split": self.split,
                "simplifications": self.simplifications}

    # -- TextEnv ---------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, *, with_valid: bool = True, variation: int | None = None,
              gold_path: bool | None = None) -> TextReset:
        """Start an episode (variation choice: see the module docstring; ``variation=`` overrides).

        ``with_valid=False`` skips listing the valid actions (``valid_actions`` is then empty and
        ``info['valid_actions_skipped']`` is True). ``gold_path`` overrides the constructor's
        choice for this episode (generating it takes seconds)."""
        if self._sim is None:
            raise ScienceWorldError("this ScienceWorld env is closed; create a new one")
        if variation is not None:
            var = self.check_variation(variation)
        elif self.fixed_variation is not None:
            var = self.fixed_variation
        else:
            if seed is not None:
                if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
                    raise ScienceWorldError(f"seed must be a non-negative int, got {seed!r}")
                self._cursor = int(seed) % len(self.variations)
            else:
                self._cursor = (self._cursor + 1) % len(self.variations)
            var = self.variations[self._cursor]
        for attempt in range(2):
            try:
                return self._reset(var, with_valid, self.gold_path if gold_path is None else bool(gold_path))
            except Py4JJavaError as err:
                raise ScienceWorldError(f"ScienceWorld could not load task {self.task.id} variation {var}: {err.java_exception}") from err
            except Py4JError as err:  # JVM died or hung: one fresh JVM, then give up
                if attempt == 1:
                    raise SimulatorDiedError(f"the ScienceWorld JVM failed twice while resetting: {err}") from err
                self._restart()
        raise AssertionError("unreachable")

    def _reset(self, var: int, with_valid: bool, gold: bool) -> TextReset:
        sim = self._sim
        # task and simplifications were validated in __init__: skip the package's per-load checks
        with sim.slow_calls():
            sim.server.load(self.task.name, var, self.simplifications, gold)
        sim.goldPathGenerated = gold
        sim.server.reset()
        self.variation = var
        obs = sim.server.step("look around")  # what the package's reset does; not a move
        self._score = int(round(100 * sim.server.getScore()))
        self._steps = 0
        self._done = False
        info = self._base_info() | {"score": self._score, "moves": int(sim.server.getNumMoves()), "success": False,
                                    "task_description": sim.get_task_description()}
        if not with_valid:
            info["valid_actions_skipped"] = True
        valid = self._valid() if with_valid else []
        return TextReset(observation=obs, mission=info["task_description"], valid_actions=valid, info=self._extras(info))

    def step(self, action: str, *, with_valid: bool = False) -> TextStep:
        """Send one action string; ``with_valid`` adds ``info['valid_actions']`` (costly)."""
        if not isinstance(action, str):
            raise ScienceWorldError(f"a ScienceWorld action is a string such as 'look around', got {type(action).__name__} {action!r}")
        if self._sim is None:
            raise ScienceWorldError("this ScienceWorld env is closed; create a new one")
        if self._done:
            raise ScienceWorldError("the ScienceWorld episode is over (or never started): call reset() before step()")
        info = self._base_info()
        try:
            server = self._sim.server
            try:
                obs = server.step(action)
                if obs.startswith(_AMBIGUOUS):
                    info["disambiguated"] = obs
                    obs = server.step("0")
            except Py4JJavaError as err:  # a simulator exception (e.g. issue #25): the JVM is fine
                obs = f"(ScienceWorld error: {str(err.java_exception).splitlines()[0]})"
                info["java_error"] = str(err.java_exception)
            score = int(round(100 * server.getScore()))
            completed = bool(server.getCompleted())
            info["moves"] = int(server.getNumMoves())
            if with_valid:
                info["valid_actions"] = self._valid()
            self._extras(info)
        except Py4JError as err:  # the JVM died or hung: this episode is lost
            return self._lost(info, err)
        self._steps += 1
        reward = float(score - self._score)
        self._score = score
        terminated = completed or score < 0
        truncated = not terminated and self._steps >= self.step_limit
        self._done = terminated or truncated
        info.update(score=score, success=completed and score >= 0, steps=self._steps, failed=score < 0)
        return TextStep(observation=obs, reward=reward, terminated=terminated, truncated=truncated, info=info)

    def _lost(self, info: dict[str, Any], err: BaseException) -> TextStep:
        self._done = True
        self._restart()
        info.update(success=False, episode_lost=True, jvm_restarted=True, error=f"{type(err).__name__}: {err}",
                    score=self._score, steps=self._steps)
        return TextStep(observation="", reward=0.0, terminated=False, truncated=True, info=info)

    def valid_actions(self) -> list[str]:
        """Valid action strings now (about 30-60 ms: the simulator enumerates all combinations)."""
        if self._sim is None or self.variation is None:
            raise ScienceWorldError("call reset() before valid_actions()")
        try:
            return self._valid()
        except Py4JError as err:
            self._done = True
            self._restart()
            raise SimulatorDiedError(f"the ScienceWorld JVM died; the episode is lost, call reset(): {err}") from err

    def gold_actions(self) -> list[str]:
        """The simulator's gold action sequence for the current episode (needs a gold path)."""
        if self.variation is None:
            raise ScienceWorldError("call reset() before gold_actions()")
        if not self._sim.goldPathGenerated:
            raise ScienceWorldError("no gold path for this episode: reset(..., gold_path=True) or create the env with gold_path=True")
        return [str(a) for a in self._sim.server.getGoldActionSequence()]

    def look(self) -> str:
        """The room description (free: takes no time in the simulator)."""
        return self._sim.look()

    def inventory(self) -> str:
        """The inventory text (free)."""
        return self._sim.inventory()

    def goal_progress(self) -> str:
        """The simulator's sub-goal checklist (for debugging)."""
        return self._sim.get_goal_progress()

    @property
    def score(self) -> int:
        """Score of the current episode so far (0..100, or -100 after failure)."""
        return self._score

    def close(self) -> None:
        """Stop the JVM (idempotent)."""
        sim, self._sim = getattr(self, "_sim", None), None
        if sim is not None:
            sim.close()

    def __enter__(self) -> ScienceWorldTextEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


make_scienceworld = ScienceWorldTextEnv


# --------------------------------------------------------------------------------------------
# show / demos


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


def _demo_episode(env: ScienceWorldTextEnv, variation: int) -> dict[str, Any]:
    first = env.reset(variation=variation, with_valid=False)
    gold = env.gold_actions()
    record: dict[str, Any] = {
        "task": env.task.id, "task_name": env.task.name, "variation": variation, "split": env.split,
        "simplifications": env.simplifications, "task_description": first.mission,
        "initial_observation": first.observation, "initial_look": env.look(), "initial_inventory": env.inventory(),
        "initial_score": first.info["score"], "gold_actions": gold, "steps": [],
    }
    step = None
    for action in gold:
        step = env.step(action)
        record["steps"].append({
            "action": action, "observation": step.observation, "score": step.info["score"], "reward": step.reward,
            "moves": step.info.get("moves"), "look": env.look(), "inventory": env.inventory(),
            "terminated": step.terminated, "truncated": step.truncated,
        })
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
) -> dict[str, Any]:
    """Write the gold action sequence of each variation of ``tasks`` (None or "all": all 30) in
    ``split`` (the first ``max_variations`` of it) with per-step observations and scores.

    Files in ``out_dir``:
      * ``<task id>.jsonl``: one JSON object per variation: task, task_name, variation, split,
        simplifications, task_description, initial_observation / _look / _inventory / _score,
        gold_actions, steps (list of {action, observation, score, reward, moves, look,
        inventory, terminated, truncated}), num_steps, final_score, success, complete.
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
                "simplifications": simplifications}
    index: dict[str, Any] = {}
    if index_path.exists() and not overwrite:
        index = json.loads(index_path.read_text())
        old = {k: index.get(k) for k in settings}
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
            if r.get("split") != split or r.get("simplifications") != simplifications:
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
                    rec = _demo_episode(env, v)
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
