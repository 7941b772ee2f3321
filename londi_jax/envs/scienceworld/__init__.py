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

Modules: ``tasks`` (task table, splits, simplifications, errors), ``jvm`` (simulator JVMs),
``env`` (``ScienceWorldTextEnv``), ``demos`` (gold-path demonstrations, ``show``).
"""

from __future__ import annotations

from scienceworld import __version__ as SCIENCEWORLD_VERSION

from londi_jax.envs.scienceworld.demos import DEMO_FORMAT, read_demos, show, write_demos
from londi_jax.envs.scienceworld.env import ScienceWorldTextEnv, make_scienceworld
from londi_jax.envs.scienceworld.jvm import JVM_MARK, JVM_TAG_ENV, live_jvm_pids
from londi_jax.envs.scienceworld.tasks import (
    SIMPLIFICATIONS,
    SPLITS,
    JavaNotFoundError,
    ScienceWorldError,
    SimulatorDiedError,
    TaskInfo,
    list_tasks,
    resolve_task,
)

__all__ = [
    "DEMO_FORMAT", "JVM_MARK", "JVM_TAG_ENV", "SCIENCEWORLD_VERSION", "SIMPLIFICATIONS", "SPLITS",
    "JavaNotFoundError", "ScienceWorldError", "ScienceWorldTextEnv", "SimulatorDiedError", "TaskInfo",
    "list_tasks", "live_jvm_pids", "make_scienceworld", "read_demos", "resolve_task", "show", "write_demos",
]
