"""``londi-jax env ...``: inspect text environments and write expert demonstrations.

* ``env show --env babyai-text --level L --seed S [--kind K] [--actions "turn left,go forward"] [--json]``:
  mission, sentences, GLAM prompt (after the given actions).
* ``env show --env babyai-jax ...`` the same from the JAX env, the prompt decoded from the token ids
  built in jit (``--tokenizer``); ``--from-minigrid`` converts minigrid's layout for the seed, so the
  output equals ``--env babyai-text``'s.
* ``env show --env scienceworld --task 1-1 --variation 0 [--split train] [--json]``.
* ``env levels [--json]``: the BabyAI-Text levels.
* ``env demos --env babyai-text --level L --episodes N --seed S --out DIR [--overwrite]``.
* ``env demos --env scienceworld --tasks ... --split train --max-variations N --out DIR [--overwrite]``.

Environment modules are imported inside the handlers so that ``londi-jax --help`` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from londi_jax.utils import cli_args as A
from londi_jax.utils.cli_args import check_new_dir_parent
from londi_jax.utils.errors import LondiError
from londi_jax.utils.output import add_json_flag, emit

ENVS = ("babyai-text", "babyai-jax", "scienceworld")
WORD_TOKENIZER = "babyai-words"
DEFAULT_LEVEL = "BabyAI-MixedTrainLocal-v0"


def _scienceworld():
    """The ScienceWorld module (owned by the ScienceWorld area), with a clear error if absent."""
    import importlib

    try:
        scienceworld = importlib.import_module("londi_jax.envs.scienceworld")
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("londi_jax.envs.scienceworld"):
            raise LondiError("ScienceWorld support (londi_jax.envs.scienceworld) is not available in this checkout") from err
        raise
    return scienceworld


# -- show ------------------------------------------------------------------------------------
def parse_actions(actions: str | None) -> list[str]:
    """``"turn left,go forward"`` -> the action strings, each checked (``InvalidActionError``)."""
    from londi_jax.envs.babyai_text.env import ACTION_INDEX, InvalidActionError

    if not actions:
        return []
    out = [a.strip() for a in actions.split(",")]
    for a in out:
        if a not in ACTION_INDEX:
            raise InvalidActionError(a)
    return out


def _ended(k: int, actions: list[str]) -> LondiError:
    return LondiError(f"the episode ended after action {k} of {len(actions)} ({actions[k - 1]!r}); "
                      f"drop the remaining actions: {', '.join(actions[k:])}")


def babyai_show(level: str, seed: int = 0, kind: str | None = None, actions: str | None = None) -> dict[str, Any]:
    """A BabyAI-Text episode after ``actions`` (comma-separated action strings; none: its first
    observation) as a JSON-able dict. Raises ``LondiError`` if the episode ends before the last."""
    from londi_jax.envs.babyai_text import make_babyai_text
    from londi_jax.envs.babyai_text.prompt import build_glam_prompt

    acts = parse_actions(actions)
    kwargs = {} if kind is None else {"kind": kind}
    env = make_babyai_text(level, seed=seed, **kwargs)
    try:
        first = env.reset(seed=seed)
        info, observation, history = first.info, first.observation, [first.info["descriptions"]]
        for k, a in enumerate(acts, 1):
            ts = env.step(a)
            if (ts.terminated or ts.truncated) and k < len(acts):
                raise _ended(k, acts)
            info, observation = ts.info, ts.observation
            history.append(info["descriptions"])
    finally:
        env.close()
    return {
        "env": "babyai-text",
        "level": info["level"],
        "seed": seed,
        "task_kind": info["task_kind"],
        "mission": first.mission,
        "actions": acts,
        "descriptions": info["descriptions"],
        "observation": observation,
        "prompt": build_glam_prompt(first.mission, history, acts),
        "valid_actions": first.valid_actions,
        "max_steps": info["max_steps"],
    }


def load_prompt_tokenizer(spec: str) -> Any:
    """The tokenizer named by ``--tokenizer``: ``babyai-words`` (a word-level tokenizer of the
    BabyAI-Text phrase set, built in milliseconds), a registered model name, a GGUF file or a Hugging
    Face directory (only the tokenizer is read). Raises ``UnknownNameError`` otherwise."""
    from pathlib import Path

    from londi_jax.utils.errors import UnknownNameError

    if spec == WORD_TOKENIZER:
        from londi_jax.envs.babyai_jax import phrases
        from londi_jax.lm.tokenizer import train_word_tokenizer

        return train_word_tokenizer(phrases.PIECES[1:], vocab_size=400)
    from londi_jax.lm.registry import registered_models, resolve_model_path

    try:
        path = resolve_model_path(spec)
    except UnknownNameError:
        path = None
    if path is None or not Path(path).exists():
        raise UnknownNameError("tokenizer", spec, [WORD_TOKENIZER, *registered_models()],
                               hint="or give a GGUF file or a Hugging Face directory")
    path = Path(path)
    if path.is_dir():
        from transformers import AutoTokenizer

        if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            raise LondiError(f"{path} has no tokenizer (tokenizer.json / tokenizer_config.json / tokenizer.model); give "
                             f"a Hugging Face model directory, a GGUF file, {WORD_TOKENIZER} or a registered model")
        try:
            return AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as err:
            raise LondiError(f"cannot load a tokenizer from {path}: {str(err).splitlines()[0]}") from None
    from londi_jax.lm.gguf_loader import read_gguf

    return read_gguf(path).tokenizer()


def babyai_jax_show(level: str, seed: int = 0, kind: str | None = None, actions: str | None = None,
                    from_minigrid: bool = False, tokenizer: str = WORD_TOKENIZER) -> dict[str, Any]:
    """``babyai_show`` from the JAX env: the layout drawn in JAX for ``seed`` (GLAM's levels), or
    with ``from_minigrid`` drawn by minigrid and converted; the actions stepped in the JAX env, the
    prompt built as token ids in jit and decoded with ``tokenizer``."""
    import jax
    import numpy as np

    from londi_jax.envs import babyai_jax as bj
    from londi_jax.envs.babyai_jax import convert, levels, phrases, prompt_ids
    from londi_jax.envs.babyai_jax import env as jenv
    from londi_jax.envs.babyai_text import make_babyai_text
    from londi_jax.envs.babyai_text.env import ACTION_INDEX
    from londi_jax.envs.babyai_text.levels import GLAM_LEVELS, MIXED_LEVELS, resolve_level

    acts = parse_actions(actions)
    name = resolve_level(level)
    tok = load_prompt_tokenizer(tokenizer)
    if from_minigrid:
        env = make_babyai_text(name, seed=seed, **({} if kind is None else {"kind": kind}))
        env.reset(seed=seed)
        state = jax.tree.map(jax.numpy.asarray, convert.from_minigrid(env))
        task_kind = env.gym_env._kind
        env.close()
    else:
        if name not in GLAM_LEVELS:
            raise LondiError(f"the JAX env generates GLAM's levels ({', '.join(GLAM_LEVELS)}); for {name} "
                             "use --from-minigrid (minigrid draws the layout, the JAX env steps it)")
        if kind is not None and name not in MIXED_LEVELS:
            raise LondiError(f"--kind only applies to the Mixed levels ({', '.join(MIXED_LEVELS)}), not {name}")
        glam = GLAM_LEVELS[name]
        if kind is not None and kind not in levels.py_levels.MIXED_KINDS:
            from londi_jax.utils.errors import UnknownNameError

            raise UnknownNameError("Mixed task kind", kind, levels.py_levels.MIXED_KINDS)
        kinds = (kind,) if kind else (levels.py_levels.MIXED_KINDS if name in MIXED_LEVELS else (glam().kind,))
        filt = "test" if name == "BabyAI-MixedTestLocal-v0" else "train"
        params = levels.make_params(kinds=kinds, phrase_filter=filt)
        state, _ = jax.jit(levels.generate)(jax.random.key(seed), params)
        task_kind = levels.KINDS[int(state.kind)]
    obs = bj.observe(state)
    hist = prompt_ids.history_start(obs.slots)
    step, push = jax.jit(jenv.step_env), jax.jit(prompt_ids.history_push)
    for k, a in enumerate(acts, 1):
        obs, state, _, te, tr = step(state, jax.numpy.int32(ACTION_INDEX[a]))
        if bool(te | tr) and k < len(acts):
            raise _ended(k, acts)
        hist = push(hist, jax.numpy.int32(ACTION_INDEX[a]), obs.slots)
    tables = prompt_ids.PromptTables.from_tokenizer(tok)
    L = tables.max_prompt_tokens()
    ids, n = jax.jit(tables.build, static_argnums=2)(state.mission, hist, L)
    descriptions = phrases.sentences_of(obs.slots)
    return {
        "env": "babyai-jax",
        "level": name,
        "seed": seed,
        "task_kind": task_kind,
        "mission": bj.mission_text(np.asarray(state.mission)),
        "actions": acts,
        "descriptions": descriptions,
        "observation": ", ".join(descriptions),
        "prompt": prompt_ids.decode(tok, ids, n),
        "valid_actions": list(ACTION_INDEX),
        "max_steps": int(state.max_steps),
        "prompt_tokens": int(n),
        "tokenizer": tokenizer,
        "layout": "minigrid" if from_minigrid else "jax",
    }


def _render_babyai(r: dict[str, Any]) -> str:
    lines = [
        f"{r['level']}  seed {r['seed']}  kind: {r['task_kind']}  max steps: {r['max_steps']}",
        f"Mission: {r['mission']}",
        *([f"After: {', '.join(r['actions'])}"] if r.get("actions") else []),
        "Observation:",
        *(f"  - {s}" for s in r["descriptions"]),
        "Actions: " + ", ".join(r["valid_actions"]),
        "GLAM prompt:",
        r["prompt"],
    ]
    return "\n".join(lines)


def _render_sw(r: dict[str, Any]) -> str:
    task = r.get("task")
    if isinstance(task, dict):  # the ScienceWorld module returns the task as a dict
        task = f"{task.get('id', '?')} ({task.get('name', '')})"
    lines = [f"ScienceWorld task {task}  variation {r.get('variation', '?')}  split {r.get('split', '?')}"]
    lines += [f"Task: {r.get('task_description', '')}", "Observation:", str(r.get("observation", ""))]
    lines.append(f"Valid actions: {r.get('num_valid_actions')}")
    return "\n".join(lines)


def _cmd_show(args: argparse.Namespace) -> int:
    if args.env == "scienceworld":
        if args.level is not None or args.kind is not None or args.actions or args.from_minigrid:
            raise LondiError("--level/--kind/--actions/--from-minigrid are BabyAI options; ScienceWorld takes "
                             "--task/--variation/--split")
        sw_show = _scienceworld().show
        result = sw_show(task=args.task, variation=args.variation, split=args.split)
        emit(result, args.json, _render_sw)
        return 0
    if args.env == "babyai-jax":
        result = babyai_jax_show(args.level or DEFAULT_LEVEL, seed=args.seed, kind=args.kind, actions=args.actions,
                                 from_minigrid=args.from_minigrid, tokenizer=args.tokenizer)
    else:
        if args.from_minigrid:
            raise LondiError("--from-minigrid is a babyai-jax option (babyai-text is minigrid already)")
        result = babyai_show(args.level or DEFAULT_LEVEL, seed=args.seed, kind=args.kind, actions=args.actions)
    emit(result, args.json, _render_babyai)
    return 0


# -- levels ----------------------------------------------------------------------------------
def _cmd_levels(args: argparse.Namespace) -> int:
    from londi_jax.envs.babyai_text.levels import GLAM_LEVELS, LOCAL_LEVELS, MIXED_KINDS, known_levels

    rows = []
    for name in known_levels():
        source = "glam" if name in GLAM_LEVELS else "minigrid"
        rows.append({"name": name, "source": source, "local": source == "glam" or name in LOCAL_LEVELS or "Local" in name})
    result = {"env": "babyai-text", "levels": rows, "mixed_kinds": list(MIXED_KINDS)}

    def render(r: dict[str, Any]) -> str:
        out = ["GLAM levels (Mixed kinds: " + ", ".join(r["mixed_kinds"]) + "):"]
        out += [f"  {x['name']}" for x in r["levels"] if x["source"] == "glam"]
        out.append("minigrid BabyAI levels (* = single room / local):")
        out += [f"  {'*' if x['local'] else ' '} {x['name']}" for x in r["levels"] if x["source"] == "minigrid"]
        return "\n".join(out)

    emit(result, args.json, render)
    return 0


# -- demos -----------------------------------------------------------------------------------
def _cmd_demos(args: argparse.Namespace) -> int:
    check_new_dir_parent(args.out, "--out")
    if args.env == "scienceworld":
        tasks = args.tasks or ([args.task] if args.task else None)
        meta = _scienceworld().write_demos(args.out, tasks, args.split, args.max_variations, args.overwrite)
    else:
        from londi_jax.envs.babyai_text.demos import write_demos

        meta = write_demos(args.out, args.level or DEFAULT_LEVEL, args.episodes, seed=args.seed, overwrite=args.overwrite)
    result = {"out": str(args.out), **(meta if isinstance(meta, dict) else {"result": meta})}
    result.pop("doc", None)

    def render(r: dict[str, Any]) -> str:
        if "n_success" in r:
            total, added = r["episodes_written"], r["episodes_added"]
            head = (f"wrote {added} episodes of {r['level']} to {r['out']}" if added else
                    f"nothing to write: {r['out']} already holds the episodes of {r['level']}")
            kept = f"; {total - added} were already there" if added and total > added else ""
            return f"{head}{kept} ({total} in total, bot success {r['n_success']}/{total})"
        written = r.get("written")
        return f"wrote ScienceWorld demos to {r['out']}" + (f" ({written} written, {r.get('skipped')} skipped)" if written is not None else "")

    emit(result, args.json, render)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``env show``, ``env levels`` and ``env demos`` to ``londi-jax``."""
    env = subparsers.add_parser("env", help="text environments: show, levels, expert demos")
    sub = env.add_subparsers(dest="env_command", required=True, metavar="ENV_COMMAND")

    show = sub.add_parser("show", help="print an environment's first observation (and GLAM prompt)",
                          description="Reset one environment and print its mission, text observation, "
                                      "valid actions and (BabyAI-Text) the GLAM prompt the LMs read.")
    show.add_argument("--env", choices=ENVS, default="babyai-text", help="which environment")
    show.add_argument("--level", default=None,
                      help=f"BabyAI level; short names work, see `env levels` (default: {DEFAULT_LEVEL})")
    show.add_argument("--seed", type=A.seed, default=0, help="BabyAI: episode seed (an int >= 0)")
    show.add_argument("--kind", default=None,
                      help="Mixed levels only: force the task kind (default: drawn from --seed)")
    show.add_argument("--actions", default=None,
                      help='BabyAI: comma-separated actions to take first, e.g. "turn left,go forward"')
    show.add_argument("--from-minigrid", action="store_true",
                      help="babyai-jax: let minigrid draw the layout for --seed and convert it (output then "
                           "equals --env babyai-text's)")
    show.add_argument("--tokenizer", default=WORD_TOKENIZER,
                      help=f"babyai-jax: tokenizer of the prompt ids: {WORD_TOKENIZER} (default), a registered "
                           "model name, a GGUF file or a Hugging Face directory")
    show.add_argument("--task", default="1-1", help="ScienceWorld task id")
    show.add_argument("--variation", type=A.nonneg_int, default=0, help="ScienceWorld variation (an int >= 0)")
    show.add_argument("--split", default="train", help="ScienceWorld split: train, dev or test")
    add_json_flag(show)
    show.set_defaults(func=_cmd_show)

    levels = sub.add_parser("levels", help="list the BabyAI-Text levels")
    add_json_flag(levels)
    levels.set_defaults(func=_cmd_levels)

    demos = sub.add_parser("demos", help="write expert trajectories (JSONL + meta.json)",
                           description="Write expert episodes (the BabyAI bot; ScienceWorld's gold action sequences) to "
                                       "--out. Rerunning the same command resumes; other demos already in "
                                       "--out are kept unless --overwrite.")
    demos.add_argument("--env", choices=ENVS, default="babyai-text", help="which environment")
    demos.add_argument("--out", required=True, help="output directory (created if missing)")
    demos.add_argument("--overwrite", action="store_true", help="replace demos already in --out")
    demos.add_argument("--level", default=None, help=f"BabyAI level (default: {DEFAULT_LEVEL})")
    demos.add_argument("--episodes", type=A.count(), default=100, help="BabyAI: number of episodes")
    demos.add_argument("--seed", type=A.seed, default=0,
                       help="BabyAI: seed of episode 0 (episode k uses seed+k)")
    demos.add_argument("--tasks", nargs="+", default=None,
                       help="ScienceWorld task ids, or all (default: all 30 tasks)")
    demos.add_argument("--task", default=None, help="ScienceWorld: a single task id (default: see --tasks)")
    demos.add_argument("--split", default="train", help="ScienceWorld split: train, dev or test")
    demos.add_argument("--max-variations", type=A.count(), default=None,
                       help="ScienceWorld: variations per task (default: all of the split)")
    add_json_flag(demos)
    demos.set_defaults(func=_cmd_demos)
