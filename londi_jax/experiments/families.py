"""The environment families the LONDI pipeline runs on: what differs between BabyAI-Text and
ScienceWorld, behind one small interface, so the pipeline's stages are written once.

A family supplies: its prompt format (GLAM's, SwiftSage's), the expert demos (the BabyAI bot;
ScienceWorld's gold paths with each state's valid actions), behaviour-cloning examples from them
(a fixed action list, or per-state candidate sets), the texts a from-scratch tokenizer is trained
on, the episode specs each stage plays (BC evaluation, switch data, evaluation) and a check run
before any work. Which family a run uses is ``env.name`` (:data:`FAMILIES`).

Episode sources by purpose:

========== ============================================= ==============================================
purpose    BabyAI-Text                                    ScienceWorld
========== ============================================= ==============================================
demos      ``env.level``, seeds ``env.seed + k``          gold paths of the first ``env.demo_episodes``
                                                          *train* variations of each task
bc_eval    ``env.level``, seeds ``env.seed + 2,000,000``  *dev* variations
switch     ``env.level``, seeds ``env.seed + 1,000,000``  *dev* variations (after the bc_eval ones)
eval       ``env.eval_level``, seeds ``eval.seed +        *test* variations; seed s starts s blocks on
           10,000 s``                                     (episodes spread round-robin over the tasks)
========== ============================================= ==============================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from londi_jax.agents.bc import BCData, bc_data_from_episodes, bc_data_from_steps
from londi_jax.agents.londi import episode_specs
from londi_jax.agents.prompts import EpisodeState, GlamFormat, Observation, PromptFormat, SwiftSageFormat
from londi_jax.utils.errors import LondiError, UnknownNameError

__all__ = ["EnvFamily", "BabyAIFamily", "ScienceWorldFamily", "FAMILIES", "family", "PURPOSES",
           "scienceworld_demo_states"]

PURPOSES = ("bc_eval", "switch", "eval")


class EnvFamily(Protocol):
    """What the pipeline needs from an environment family (see the module doc)."""

    name: str
    quality: str  # the report's quality measure: "success" (rate) or "score" (mean 0-100)
    expert: str  # the expert the oracle switch asks, in words
    targets: dict[str, Any]  # keyword arguments of report.targets (thresholds of this family)

    def prompt_format(self) -> PromptFormat: ...

    def check(self) -> None: ...

    def write_demos(self, out: Path, progress: bool) -> dict[str, Any]: ...

    def read_demos(self, out: Path) -> list[dict[str, Any]]: ...

    def tokenizer_texts(self, episodes: Sequence[dict[str, Any]]) -> list[str]: ...

    def bc_data(self, episodes: Sequence[dict[str, Any]], tokenizer: Any) -> BCData: ...

    def specs(self, purpose: str, n: int, seed_index: int = 0, expert: bool = False) -> list[Any]:
        """``n`` episode specs for ``purpose``; ``expert``: episodes whose envs can give the
        expert's action (``expert_action()``) for the oracle switch."""
        ...


def _check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise UnknownNameError("episode purpose", purpose, PURPOSES)


class BabyAIFamily:
    """BabyAI-Text (GLAM's prompt, the six actions, the bot's demos)."""

    name = "babyai-text"
    quality = "success"
    expert = "BabyAI bot (advising)"  # who the oracle switch asks
    targets: dict[str, Any] = {}  # the report's defaults (report.targets)

    def __init__(self, config: Any):
        self.config = config  # PipelineConfig
        self.env = config.env

    def prompt_format(self) -> PromptFormat:
        return GlamFormat()

    def check(self) -> None:
        e = self.env
        for level in dict.fromkeys((e.level, e.eval_level)):
            for spec in episode_specs(level, len(e.kinds), e.seed, e.kinds, **e.level_kwargs()):
                try:
                    env, _ = spec.make()
                    getattr(env, "close", lambda: None)()
                except Exception as err:  # noqa: BLE001 - any failure here means bad env settings
                    raise LondiError(
                        f"env settings do not make a valid episode (level {level!r}, kind {spec.kind!r}, "
                        f"room_size={e.room_size}, num_dists={e.num_dists}): {type(err).__name__}: {err}; "
                        f"fix --set env.*") from None

    def write_demos(self, out: Path, progress: bool) -> dict[str, Any]:
        from londi_jax.envs.babyai_text.demos import write_demos

        e = self.env
        meta = write_demos(out, e.level, e.demo_episodes, seed=e.seed, progress=progress, kinds=e.kinds,
                           **e.level_kwargs())
        return {"episodes": meta["episodes_written"], "success_rate": meta["success_rate"]}

    def read_demos(self, out: Path) -> list[dict[str, Any]]:
        from londi_jax.envs.babyai_text.demos import read_demos

        return read_demos(out)[1]

    def tokenizer_texts(self, episodes: Sequence[dict[str, Any]]) -> list[str]:
        from londi_jax.envs.babyai_text.prompt import ACTIONS

        return [s["prompt"] for ep in episodes for s in ep["steps"]] + list(ACTIONS)

    def bc_data(self, episodes: Sequence[dict[str, Any]], tokenizer: Any) -> BCData:
        return bc_data_from_episodes(episodes, tokenizer)

    def jax_env_params(self) -> Any:
        """The JAX env's parameters for the training level (``env.level``: GLAM's Mixed levels, their
        phrase filter), for online switch training (``agents.online``)."""
        from londi_jax.envs.babyai_jax import levels
        from londi_jax.envs.babyai_text.levels import MIXED_LEVELS, resolve_level

        e = self.env
        name = resolve_level(e.level)
        if name not in MIXED_LEVELS:
            raise LondiError(f"online switch training draws GLAM's Mixed levels in JAX ({', '.join(MIXED_LEVELS)}); "
                             f"env.level is {name}")
        return levels.make_params(kinds=tuple(e.kinds), room_size=e.room_size, num_dists=e.num_dists,
                                  phrase_filter="test" if name == "BabyAI-MixedTestLocal-v0" else "train",
                                  max_steps=e.max_steps or 0)

    def specs(self, purpose: str, n: int, seed_index: int = 0, expert: bool = False) -> list[Any]:
        _check_purpose(purpose)  # every BabyAI-Text env has its expert (the bot): ``expert`` changes nothing
        e = self.env
        if purpose == "eval":
            return episode_specs(e.eval_level, n, self.config.eval.seed + 10_000 * seed_index, e.kinds,
                                 **e.level_kwargs())
        base = e.seed + (2_000_000 if purpose == "bc_eval" else 1_000_000)
        return episode_specs(e.level, n, base, e.kinds, **e.level_kwargs())


def scienceworld_demo_states(record: dict[str, Any]) -> list[tuple[EpisodeState, str]]:
    """The (state, gold action) pairs of one ScienceWorld gold-path demo record, with the states
    built as the rollout loop builds them (observation text; look, inventory and score as the
    observation's extras; rewards; each state's valid actions), so a policy sees the same prompts
    in cloning and in rollouts."""
    first = Observation(record["initial_observation"], {"look": record["initial_look"],
                                                          "inventory": record["initial_inventory"],
                                                          "score": record["initial_score"]})
    steps = record["steps"]
    if steps and "valid_actions" not in steps[0]:
        raise LondiError("these ScienceWorld demos were written without each state's valid actions; write them "
                         "again with with_valid=True (the pipeline does)")
    state = EpisodeState(record["task_description"], (first,), valid_actions=tuple(steps[0]["valid_actions"])
                         if steps else (), task_kind=record["task"])
    out = []
    for k, st in enumerate(steps):
        out.append((state, st["action"]))
        nxt = steps[k + 1]["valid_actions"] if k + 1 < len(steps) else ()
        obs = Observation(st["observation"], {"look": st["look"], "inventory": st["inventory"], "score": st["score"]},
                          float(st["reward"]))
        state = state.then(st["action"], obs, nxt)
    return out


class ScienceWorldFamily:
    """ScienceWorld (SwiftSage's prompt, the valid actions as candidates, gold-path demos).

    ``env.kinds`` are task ids or names, ``env.demo_episodes`` the train variations cloned per
    task, ``env.max_steps`` the step limit of rollouts (default 100), ``env.simplifications`` the
    simulator's simplifications (SwiftSage's ``easy``)."""

    name = "scienceworld"
    quality = "score"
    expert = "gold path (while followed)"
    # the ScienceWorld bars: DEEPTHINK >= 15 points above QUICK, >= 50% compute saved,
    # LONDI above Random and SwiftSage outside their intervals
    targets: dict[str, Any] = {"gap": 15.0, "min_saved": 0.5, "outside_ci": True, "swiftsage": True}
    DEFAULT_STEP_LIMIT = 100

    def __init__(self, config: Any):
        self.config = config
        self.env = config.env
        self._variations: dict[tuple[str, str], list[int]] = {}

    @property
    def step_limit(self) -> int:
        return self.env.max_steps or self.DEFAULT_STEP_LIMIT

    def prompt_format(self) -> PromptFormat:
        return SwiftSageFormat(history=self.env.history)

    def tasks(self) -> list[str]:
        from londi_jax.envs.scienceworld.tasks import resolve_task

        return list(dict.fromkeys(resolve_task(k).id for k in self.env.kinds))

    def check(self) -> None:
        from londi_jax.envs.scienceworld.tasks import _check_simplifications, resolve_task

        try:
            for k in self.env.kinds:
                _check_simplifications(self.env.simplifications, resolve_task(k))
            for split in ("dev", "test"):
                self.variations(self.tasks()[0], split)  # starts one JVM: java is there and works
        except LondiError as err:
            raise LondiError(f"env settings: {err}; fix --set env.kinds / env.simplifications") from None

    def variations(self, task: str, split: str) -> list[int]:
        """The variation indices of ``task`` in ``split`` (one JVM for all lookups, cached)."""
        if not self._variations:
            from londi_jax.envs.scienceworld.env import ScienceWorldTextEnv

            tasks = self.tasks()
            with ScienceWorldTextEnv(tasks[0], simplifications=self.env.simplifications) as env:
                self._variations = {(t, sp): env.variations_of(t, sp) for t in tasks for sp in ("train", "dev", "test")}
        return self._variations[(task, split)]

    def write_demos(self, out: Path, progress: bool) -> dict[str, Any]:
        from londi_jax.envs.scienceworld.demos import write_demos

        index = write_demos(out, self.tasks(), split="train", max_variations=self.env.demo_episodes,
                            simplifications=self.env.simplifications, progress=progress, with_valid=True)
        return {"episodes": index["num_episodes"], "success_rate": index["num_success"] / max(index["num_episodes"], 1),
                "steps": sum(t["mean_num_steps"] * t["num_episodes"] for t in index["tasks"].values())}

    def read_demos(self, out: Path) -> list[dict[str, Any]]:
        from londi_jax.envs.scienceworld.demos import read_demos

        return [dict(r, task_kind=r["task"]) for r in read_demos(out)[1]]

    def tokenizer_texts(self, episodes: Sequence[dict[str, Any]]) -> list[str]:
        fmt = self.prompt_format()
        texts: list[str] = []
        actions: set[str] = set()
        for ep in episodes:
            for state, action in scienceworld_demo_states(ep):
                texts.append(fmt.prompt(state))
                actions.update(state.valid_actions)
                actions.add(action)
        return texts + sorted(actions)

    def bc_data(self, episodes: Sequence[dict[str, Any]], tokenizer: Any) -> BCData:
        fmt = self.prompt_format()
        prompts, cands, actions, kinds = [], [], [], []
        for ep in episodes:
            if not ep.get("success", True):
                continue
            for state, action in scienceworld_demo_states(ep):
                prompts.append(fmt.prompt(state))
                cands.append(state.valid_actions)
                actions.append(action)
                kinds.append(ep["task"])
        return bc_data_from_steps(prompts, cands, actions, kinds, tokenizer)

    def specs(self, purpose: str, n: int, seed_index: int = 0, expert: bool = False) -> list[Any]:
        from londi_jax.envs.scienceworld.episodes import ScienceWorldEpisode

        _check_purpose(purpose)
        tasks = self.tasks()
        per_task = math.ceil(n / len(tasks))
        split = "test" if purpose == "eval" else "dev"
        # dev: BC evaluation on the first variations, switch data on the ones after them
        offset = per_task * seed_index if purpose == "eval" else (0 if purpose == "bc_eval" else
                                                                   self._bc_eval_block())
        out = []
        for k in range(n):
            t = tasks[k % len(tasks)]
            vs = self.variations(t, split)
            out.append(ScienceWorldEpisode(t, vs[(offset + k // len(tasks)) % len(vs)], split,
                                           simplifications=self.env.simplifications, step_limit=self.step_limit,
                                           gold_path=expert))
        return out

    def _bc_eval_block(self) -> int:
        n = max(self.config.quick.eval_episodes, self.config.deep.eval_episodes)
        return math.ceil(n / len(self.tasks()))


FAMILIES = {"babyai-text": BabyAIFamily, "scienceworld": ScienceWorldFamily}


def family(config: Any) -> EnvFamily:
    """The family of ``config.env.name``."""
    name = config.env.name
    if name not in FAMILIES:
        raise UnknownNameError("environment", name, tuple(FAMILIES))
    return FAMILIES[name](config)
