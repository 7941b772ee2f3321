"""Static switcher configuration vs traced hyper-parameters.

``SwitcherConfig`` holds everything that fixes shapes or program structure (network sizes,
buffer size, number of envs, learner kind, budget on/off); changing it recompiles.
``HParams`` holds only numbers that are *traced*: they can be vmapped over in a sweep and
changed between calls without recompiling.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import struct

from londi_jax.utils.errors import LondiError, UnknownNameError
from londi_jax.utils.fields import ConfigFieldError, Rule, above, at_least, check_fields, conform, each, within

LEARNERS = ("dqn", "pqn")
TARGET_UPDATES = ("hard", "polyak")
OPTIMIZERS = ("adam", "sgd", "rmsprop")


class ConfigError(LondiError):
    """An invalid switcher configuration or hyper-parameter value."""


@dataclasses.dataclass(frozen=True)
class SwitcherConfig:
    """Static (hashable) switcher configuration; safe as a ``jax.jit`` static argument.

    obs_dim: size of the caller's feature vector (without the budget feature).
    hidden: widths of the MLP hidden layers.
    layer_norm: LayerNorm after each hidden Dense; ``None`` (default) = on for PQN, off for DQN.
    learner: ``"dqn"`` (Double DQN + replay + target net) or ``"pqn"`` (buffer-free Q(lambda)).
    use_budget: LONDI-B; appends b/n to the features and masks g=1 when b=0.
    num_envs: environments stepping in lockstep.
    num_updates: updates of one full ``train`` call (also the epsilon-schedule horizon).
    buffer_size / batch_size / learning_starts / updates_per_step: DQN replay settings
        (``learning_starts`` counts transitions in the buffer).
    target_update: ``"hard"`` (copy every ``HParams.target_period`` updates) or ``"polyak"``.
    rollout_len / num_epochs / num_minibatches: PQN rollout T and passes over it.
    optimizer: optax optimizer name, wrapped by ``optax.inject_hyperparams``.
    """

    obs_dim: int
    hidden: tuple[int, ...] = (64, 64)
    layer_norm: bool | None = None
    learner: Literal["dqn", "pqn"] = "dqn"
    use_budget: bool = False
    num_envs: int = 16
    num_updates: int = 2000
    # DQN
    buffer_size: int = 10_000
    batch_size: int = 128
    learning_starts: int = 256
    updates_per_step: int = 1
    target_update: Literal["hard", "polyak"] = "hard"
    # PQN
    rollout_len: int = 8
    num_epochs: int = 2
    num_minibatches: int = 2
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"

    def __post_init__(self) -> None:
        if self.learner not in LEARNERS:
            raise UnknownNameError("learner", self.learner, LEARNERS)
        if self.target_update not in TARGET_UPDATES:
            raise UnknownNameError("target update", self.target_update, TARGET_UPDATES)
        if self.optimizer not in OPTIMIZERS:
            raise UnknownNameError("optimizer", self.optimizer, OPTIMIZERS)
        try:  # types (int, bool, tuple of ints) and ranges, named by field
            check_fields(self, _CONFIG_RULES)
        except ConfigFieldError as err:
            raise ConfigError(f"SwitcherConfig.{err.field} must be {err.expected}, got {err.value!r}") from None
        if self.learner == "dqn" and self.batch_size > self.buffer_size:
            raise ConfigError(
                f"batch_size {self.batch_size} exceeds buffer_size {self.buffer_size}; "
                "raise buffer_size or lower batch_size")
        if self.learner == "dqn" and self.learning_starts > self.buffer_size:
            raise ConfigError(
                f"learning_starts {self.learning_starts} exceeds buffer_size {self.buffer_size}: the "
                "buffer never holds that many transitions, so training would never start")
        if self.learner == "pqn" and (self.rollout_len * self.num_envs) % self.num_minibatches:
            raise ConfigError(
                f"rollout_len*num_envs = {self.rollout_len * self.num_envs} is not divisible by "
                f"num_minibatches = {self.num_minibatches}; pick a divisor")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.layer_norm is None:  # PQN relies on LayerNorm for stability without a target net
            object.__setattr__(self, "layer_norm", self.learner == "pqn")

    @property
    def input_dim(self) -> int:
        """Width of the Q-network input: features plus b/n under LONDI-B."""
        return self.obs_dim + (1 if self.use_budget else 0)


_CONFIG_RULES = {
    **{name: [at_least(1)] for name in ("obs_dim", "num_envs", "num_updates", "buffer_size", "batch_size",
                                        "updates_per_step", "rollout_len", "num_epochs", "num_minibatches")},
    "hidden": [each(at_least(1))],
    "learning_starts": [at_least(0)],
}


class HParams(struct.PyTreeNode):
    """Traced hyper-parameters (every leaf is a jnp scalar; vmap over any of them).

    c: cost per DEEPTHINK call (switch reward r - c*g).
    budget: LONDI-B per-episode cap n on DEEPTHINK calls (ignored unless ``use_budget``).
    lr: learning rate (lives in optimizer state via ``optax.inject_hyperparams``).
    gamma, lam: discount and PQN lambda.
    eps_start, eps_end, eps_decay_frac: linear epsilon schedule over
        ``eps_decay_frac * config.num_updates`` updates.
    target_period: DQN hard target copy every this many updates; tau: Polyak rate.
    max_grad_norm: global-norm gradient clipping.
    """

    c: jax.Array
    budget: jax.Array
    lr: jax.Array
    gamma: jax.Array
    lam: jax.Array
    eps_start: jax.Array
    eps_end: jax.Array
    eps_decay_frac: jax.Array
    target_period: jax.Array
    tau: jax.Array
    max_grad_norm: jax.Array

    @classmethod
    def create(cls, **overrides: float) -> "HParams":
        """Defaults overridden by keyword; unknown names raise with the known list.

        Concrete values are checked (``ConfigError`` naming the field and its range, see
        ``HPARAM_RULES``): finite numbers, whole numbers for ``budget`` / ``target_period``,
        ``c >= 0``, ``budget >= 0`` (0 = never call DEEPTHINK), ``lr > 0``, ``gamma``, ``lam``,
        ``eps_*`` and ``tau`` in [0, 1], ``target_period >= 1``, ``max_grad_norm > 0``. Traced
        values (inside ``jit`` / ``vmap``) pass unchecked.
        """
        values = dict(DEFAULT_HPARAMS)
        for k, v in overrides.items():
            if k not in values:
                raise UnknownNameError("hyper-parameter", k, values)
            values[k] = check_hparam(k, v)
        return cls(**{k: jnp.asarray(v, dtype=_HPARAM_DTYPES.get(k, jnp.float32))
                      for k, v in values.items()})

    def to_dict(self) -> dict[str, float]:
        """Plain-Python view (scalars only; for stacked HParams use ``jax.tree.map``)."""
        return {f.name: getattr(self, f.name).item() for f in dataclasses.fields(self)}


DEFAULT_HPARAMS: dict[str, float] = {
    "c": 0.1,
    "budget": 3,
    "lr": 1e-3,
    "gamma": 0.95,
    "lam": 0.7,
    "eps_start": 1.0,
    "eps_end": 0.05,
    "eps_decay_frac": 0.5,
    "target_period": 100,
    "tau": 0.01,
    "max_grad_norm": 10.0,
}
_HPARAM_DTYPES = {"budget": jnp.int32, "target_period": jnp.int32}
HPARAM_NAMES: tuple[str, ...] = tuple(DEFAULT_HPARAMS)

_UNIT = within(0.0, 1.0)
# (type, rules) per field: what ``HParams.create`` accepts
HPARAM_RULES: dict[str, tuple[type, tuple[Rule, ...]]] = {
    "c": (float, (at_least(0),)),
    "budget": (int, (at_least(0),)),
    "lr": (float, (above(0),)),
    "gamma": (float, (_UNIT,)),
    "lam": (float, (_UNIT,)),
    "eps_start": (float, (_UNIT,)),
    "eps_end": (float, (_UNIT,)),
    "eps_decay_frac": (float, (at_least(0),)),
    "target_period": (int, (at_least(1),)),
    "tau": (float, (_UNIT,)),
    "max_grad_norm": (float, (above(0),)),
}


def check_hparam(name: str, value: Any) -> Any:
    """``value`` checked against ``HPARAM_RULES[name]`` (``ConfigError`` if out of range).

    Concrete scalars only: Python / numpy numbers and concrete 0-d arrays are checked (and
    returned as given); arrays with a shape and JAX tracers are returned unchecked."""
    if isinstance(value, jax.core.Tracer):
        return value
    if hasattr(value, "shape"):
        if getattr(value, "shape", ()) != ():
            return value
        value_py = value.item()
    else:
        value_py = value
    tp, rules = HPARAM_RULES[name]
    if tp is int and isinstance(value_py, float) and value_py.is_integer():
        value_py = int(value_py)  # 3.0 is a fine budget; 2.5 is not
    hint = "; 0 means: never call DEEPTHINK" if name == "budget" else ""
    check_value(f"hyper-parameter {name}", value_py, tp, *rules, hint=hint)
    return value


def check_value(name: str, value: Any, tp: type, *rules: Rule, optional: bool = False,
                hint: str = "") -> None:
    """Raise ``ConfigError`` ("``name`` must be an int >= 1, got 0") unless ``value`` has type
    ``tp`` (``float``: finite) and passes ``rules``; ``optional`` lets ``None`` through."""
    if value is None and optional:
        return
    try:
        conform(value, tp, name)
        for rule in rules:
            rule.check(value, name, tp)
    except ConfigFieldError as err:
        raise ConfigError(f"{name} must be {err.expected}, got {value!r}{hint}") from None


def epsilon(hparams: HParams, step: jax.Array, num_updates: int) -> jax.Array:
    """Linear epsilon schedule from ``eps_start`` to ``eps_end`` (traced step)."""
    horizon = jnp.maximum(hparams.eps_decay_frac * num_updates, 1.0)
    frac = jnp.clip(step / horizon, 0.0, 1.0)
    return hparams.eps_start + frac * (hparams.eps_end - hparams.eps_start)
