"""Offline switcher training from logged counterfactual transitions.

If, in every logged state, *both* models were run (QUICK's and DEEPTHINK's reward, next state
and termination recorded), the outcome of either switch is known in every state, so a switcher
can be trained with no further environment interaction, for any per-call cost ``c`` and any
budget ``n``: the whole ``c x n`` grid is learned from one dataset, vmapped in one program.

Dataset format (:class:`OfflineDataset`, a pytree of arrays; axis 1 of the outcome arrays is
the switch g: 0 = QUICK acted, 1 = DEEPTHINK acted):

    obs         float32 [N, obs_dim]     switcher features of the state (no budget feature)
    reward      float32 [N, 2]           environment reward after each model's action
    next_obs    float32 [N, 2, obs_dim]  features of each model's next state
    terminated  bool    [N, 2]           the episode ended (no bootstrap) after that action
    quick_confidence  float32 [N, C] or None  QUICK's confidence in the state (``policy.confidence_features``:
                                     max prob, margin, normalised entropy, top-1 log-prob), its own field
                                     so confidence baselines never slice it out of ``obs``

Step-limit truncation is not recorded: a one-step target bootstraps through it anyway.
:func:`save_dataset` / :func:`load_dataset` store it as ``.npz`` with a ``format`` tag.

Learning: Double DQN (``londi_jax.switcher.dqn.update``, unchanged) on minibatches holding,
for each sampled state, one row per switch (both outcomes are known, so no exploration is
needed). Under LONDI-B the budget is not in the data: each row draws ``b`` uniformly from the
admissible range (0..n for g = 0, 1..n for g = 1), its features get ``b/n`` appended and the
next state has ``b - g`` (so ``G(b')`` masks the bootstrap), which covers the augmented
(state, budget) space from a budget-free log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from londi_jax.switcher import budget as budget_lib
from londi_jax.switcher import dqn
from londi_jax.switcher.config import ConfigError, HParams, SwitcherConfig
from londi_jax.switcher.core import Transition
from londi_jax.switcher.network import graphdef, q_values
from londi_jax.switcher.sweep import stack_hparams
from londi_jax.utils.errors import LondiError
from londi_jax.utils.mesh import member_sharding, replicate, shard_members, unpad
from londi_jax.utils.programs import program_cache

__all__ = [
    "OfflineDataset",
    "OfflineDataError",
    "FORMAT",
    "validate",
    "save_dataset",
    "load_dataset",
    "collect_toy",
    "OfflineLogger",
    "make_offline_train",
    "train_offline_grid",
    "grid_hparams",
    "q_table",
]

FORMAT = "londi-offline-v1"


class OfflineDataError(LondiError):
    """A logged dataset that does not follow the offline format."""


class OfflineDataset(struct.PyTreeNode):
    """Logged states with both models' outcomes (see the module docstring for shapes)."""

    obs: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    quick_confidence: jax.Array | None = None

    @property
    def size(self) -> int:
        return int(self.obs.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[-1])


def validate(ds: OfflineDataset, obs_dim: int | None = None) -> OfflineDataset:
    """Check shapes / dtypes / finiteness; returns the dataset with canonical dtypes."""
    obs = np.asarray(ds.obs)
    if obs.ndim != 2 or obs.shape[0] < 1:
        raise OfflineDataError(f"obs must be [N, obs_dim] with N >= 1, got shape {list(obs.shape)}")
    n, d = obs.shape
    expect = {"reward": (n, 2), "next_obs": (n, 2, d), "terminated": (n, 2)}
    for name, shape in expect.items():
        got = tuple(np.shape(getattr(ds, name)))
        if got != shape:
            raise OfflineDataError(
                f"{name} must have shape {list(shape)} (axis 1 = g: 0 QUICK, 1 DEEPTHINK), got {list(got)}"
            )
    if obs_dim is not None and d != obs_dim:
        raise OfflineDataError(f"dataset features have width {d} but the switcher config has obs_dim={obs_dim}")
    conf = ds.quick_confidence
    if conf is not None and (np.ndim(conf) != 2 or np.shape(conf)[0] != n):
        raise OfflineDataError(f"quick_confidence must have shape [{n}, C], got {list(np.shape(conf))}")
    for name in ("obs", "reward", "next_obs"):
        if not np.all(np.isfinite(np.asarray(getattr(ds, name)))):
            raise OfflineDataError(f"{name} contains NaN or inf; clean the log before training")
    return OfflineDataset(
        obs=jnp.asarray(ds.obs, jnp.float32),
        reward=jnp.asarray(ds.reward, jnp.float32),
        next_obs=jnp.asarray(ds.next_obs, jnp.float32),
        terminated=jnp.asarray(ds.terminated, bool),
        quick_confidence=None if conf is None else jnp.asarray(conf, jnp.float32),
    )


def save_dataset(path: str | os.PathLike, ds: OfflineDataset) -> None:
    """Write ``ds`` to an ``.npz`` file (with the format tag), atomically (``utils.io``): a kill
    mid-write leaves the old file or none, never a torn one. Like numpy, adds ``.npz`` if missing."""
    from londi_jax.utils.io import atomic_write

    ds = validate(ds)
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    extra = {} if ds.quick_confidence is None else {"quick_confidence": np.asarray(ds.quick_confidence)}
    atomic_write(path, lambda fh: np.savez_compressed(
        fh, format=np.asarray(FORMAT), obs=np.asarray(ds.obs), reward=np.asarray(ds.reward),
        next_obs=np.asarray(ds.next_obs), terminated=np.asarray(ds.terminated), **extra,
    ))


def load_dataset(path: str | os.PathLike) -> OfflineDataset:
    """Read a dataset written by :func:`save_dataset` (validated)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise OfflineDataError(f"no dataset file at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise OfflineDataError(f"{path} is not a readable .npz dataset ({err})") from err
    tag = str(arrays.get("format", ""))
    if tag != FORMAT:
        raise OfflineDataError(f"{path} has format tag {tag!r}, expected {FORMAT!r}")
    missing = [k for k in ("obs", "reward", "next_obs", "terminated") if k not in arrays]
    if missing:
        raise OfflineDataError(f"{path} lacks arrays {missing}")
    return validate(OfflineDataset(obs=arrays["obs"], reward=arrays["reward"],
                                   next_obs=arrays["next_obs"], terminated=arrays["terminated"],
                                   quick_confidence=arrays.get("quick_confidence")))


# ----------------------------------------------------------------------------- collection


class OfflineLogger:
    """Accumulate logged states from a Python env loop into an :class:`OfflineDataset`.

    For envs outside JAX: in each state run both models (e.g. step a copy of the env with
    QUICK's action and another with DEEPTHINK's), then ``record`` the batch::

        log = OfflineLogger(obs_dim)
        log.record(obs, reward=[[r_q, r_d], ...], next_obs=[[z_q, z_d], ...], terminated=[[t_q, t_d], ...])
        save_dataset("log.npz", log.dataset())
    """

    def __init__(self, obs_dim: int):
        self.obs_dim = int(obs_dim)
        self._parts: list[tuple[np.ndarray, ...]] = []

    def record(self, obs, reward, next_obs, terminated, quick_confidence=None) -> None:
        """Add ``k`` states: ``obs [k, D]``, ``reward [k, 2]``, ``next_obs [k, 2, D]``,
        ``terminated [k, 2]`` (axis 1 = g), optionally ``quick_confidence [k, C]`` (give it for
        every record or none); a single state may drop the leading ``k``."""
        obs = np.asarray(obs, np.float32)
        single = obs.ndim == 1
        lift = (lambda x: np.asarray(x)[None]) if single else np.asarray  # noqa: E731
        part = OfflineDataset(obs=lift(obs), reward=lift(reward), next_obs=lift(next_obs),
                              terminated=lift(terminated),
                              quick_confidence=None if quick_confidence is None else lift(quick_confidence))
        part = validate(part, self.obs_dim)  # shape errors name the field and the expected shape
        if self._parts and (len(self._parts[0]) == 5) != (quick_confidence is not None):
            raise OfflineDataError("give quick_confidence with every record or with none")
        fields = ("obs", "reward", "next_obs", "terminated") + (() if quick_confidence is None else ("quick_confidence",))
        self._parts.append(tuple(np.asarray(getattr(part, f)) for f in fields))

    def __len__(self) -> int:
        return sum(p[0].shape[0] for p in self._parts)

    def dataset(self) -> OfflineDataset:
        """Everything recorded so far, as one validated dataset."""
        if not self._parts:
            raise OfflineDataError("no states recorded yet; call record(...) first")
        cols = [np.concatenate(c) for c in zip(*self._parts)]
        return validate(OfflineDataset(*cols))



def collect_toy(env, params, key: jax.Array, num_envs: int, num_steps: int,
                call_prob: float = 0.5) -> OfflineDataset:
    """Log ``num_envs * num_steps`` states of a gymnax-style env with both models' outcomes.

    In every state both switches are stepped (independent keys); the trajectory then follows
    a behaviour switch drawn with probability ``call_prob`` of DEEPTHINK, resetting on
    termination or truncation. ``env`` needs ``reset(key, params)`` and
    ``step(key, state, g, params)`` returning ``(obs, state, reward, terminated, truncated, info)``
    (e.g. :class:`londi_jax.switcher.toy.ToyEnv`).
    """

    def one_env(k):
        k_reset, k_run = jax.random.split(k)
        obs0, state0 = env.reset(k_reset, params)

        def step(carry, k):
            obs, state = carry
            k0, k1, k_pick, k_reset = jax.random.split(k, 4)
            outs = [env.step(kk, state, jnp.int32(g), params) for g, kk in ((0, k0), (1, k1))]
            pick = jax.random.bernoulli(k_pick, call_prob)
            chosen = jax.tree.map(lambda a, b: jnp.where(pick, b, a), outs[0], outs[1])
            nobs, nstate, _, term, trunc, _ = chosen
            robs, rstate = env.reset(k_reset, params)
            done = term | trunc
            carry = jax.tree.map(lambda r, n: jnp.where(done, r, n), (robs, rstate), (nobs, nstate))
            rec = (obs, jnp.stack([outs[0][2], outs[1][2]]),
                   jnp.stack([outs[0][0], outs[1][0]]), jnp.stack([outs[0][3], outs[1][3]]))
            return carry, rec

        _, rec = jax.lax.scan(step, (obs0, state0), jax.random.split(k_run, num_steps))
        return rec

    obs, rew, nobs, term = jax.jit(jax.vmap(one_env))(jax.random.split(key, num_envs))
    flat = lambda x: x.reshape((-1, *x.shape[2:]))  # noqa: E731  [E, T, ...] -> [E*T, ...]
    return validate(OfflineDataset(obs=flat(obs), reward=flat(rew), next_obs=flat(nobs),
                                   terminated=flat(term)))


# ----------------------------------------------------------------------------- learning


def _minibatch(config: SwitcherConfig, hparams: HParams, ds: OfflineDataset,
               key: jax.Array) -> Transition:
    """``2 * batch_size`` rows: each sampled state once with g = 0 and once with g = 1."""
    bs = config.batch_size
    k_idx, k_b0, k_b1 = jax.random.split(key, 3)
    idx = jax.random.randint(k_idx, (bs,), 0, ds.obs.shape[0])
    idx2 = jnp.concatenate([idx, idx])
    g = jnp.concatenate([jnp.zeros((bs,), jnp.int32), jnp.ones((bs,), jnp.int32)])
    obs = ds.obs[idx2]
    reward = ds.reward[idx2, g]
    next_obs = ds.next_obs[idx2, g]
    terminated = ds.terminated[idx2, g]
    if config.use_budget:
        n = jnp.asarray(hparams.budget, jnp.int32)
        b0 = jax.random.randint(k_b0, (bs,), 0, n + 1)
        # g = 1 needs b >= 1; with n = 0 those rows train the masked Q(s, 0, 1), which is unused
        b1 = jax.random.randint(k_b1, (bs,), 1, jnp.maximum(n, 1) + 1)
        b = jnp.concatenate([b0, b1])
        nb = budget_lib.spend(b, g)
        obs = budget_lib.features(obs, b, n, True)
        next_obs = budget_lib.features(next_obs, nb, n, True)
        next_can = budget_lib.can_call(nb, True)
    else:
        next_can = jnp.ones_like(terminated)
    return Transition(obs=obs, g=g, reward=reward, next_obs=next_obs, terminated=terminated,
                      truncated=jnp.zeros_like(terminated), next_can_call=next_can)


def make_offline_train(
    config: SwitcherConfig,
) -> Callable[[jax.Array, HParams, OfflineDataset], tuple[dqn.DQNState, dict[str, jax.Array]]]:
    """``train(key, hparams, dataset) -> (dqn_state, metrics)``: ``config.num_updates`` updates.

    Pure and jit/vmap-able; vmap over ``(key, hparams)`` with the dataset shared
    (``in_axes=(0, 0, None)``) to learn a whole ``c x budget`` grid in one program.
    ``metrics["loss"]`` is the per-update loss ``[num_updates]``.
    """
    if config.learner != "dqn":
        raise ConfigError(
            f"offline training uses the Double-DQN learner (one-step targets from logged outcomes); "
            f"got learner={config.learner!r}: set SwitcherConfig(learner='dqn')"
        )

    def train(key: jax.Array, hparams: HParams, ds: OfflineDataset):
        k_init, k_run = jax.random.split(key)
        state = dqn.init(config, hparams, k_init)

        def body(state, k):
            batch = _minibatch(config, hparams, ds, k)
            state, metrics = dqn.update(config, hparams, state, batch)
            return state, metrics["loss"]

        state, losses = jax.lax.scan(body, state, jax.random.split(k_run, config.num_updates))
        return state, {"loss": losses}

    return train


@program_cache(maxsize=16)
def _grid_program(config: SwitcherConfig, mesh: jax.sharding.Mesh | None) -> Callable:
    # outputs placed member-sharded: params derived from keys need not inherit their sharding
    out = None if mesh is None else member_sharding(mesh)
    return jax.jit(jax.vmap(make_offline_train(config), in_axes=(0, 0, None)), out_shardings=out)


def train_offline_grid(config: SwitcherConfig, keys: jax.Array, hparams: HParams, dataset: OfflineDataset,
                       mesh: jax.sharding.Mesh | None = None) -> tuple[Any, dict[str, jax.Array]]:
    """One offline switcher per member (``keys [M]``, ``hparams`` stacked ``[M]``), in ONE program
    (``jit(vmap(make_offline_train(config)))``, compiled once per config) with the dataset shared.

    ``mesh``: the members are sharded over its ``data`` axis (padded to a multiple of its size;
    the copies are dropped) and the dataset replicated; the results equal the one-device run's.
    Returns ``(params, metrics)`` with a leading member axis ``[M]`` (``metrics["loss"] [M, U]``).
    """
    (keys, hparams), n = shard_members((keys, hparams), mesh)
    state, metrics = _grid_program(config, mesh)(keys, hparams, replicate(dataset, mesh))
    return unpad((state.params, metrics), n)


def grid_hparams(c: Sequence[float], budget: Sequence[int],
                 **base: float) -> tuple[HParams, list[tuple[float, int]]]:
    """Stacked HParams (leaves ``[G]``) over the ``c x budget`` grid (c outer), other fields
    from ``base``; also returns the ``(c, n)`` of each member, in order."""
    if not len(c) or not len(budget):
        raise ConfigError("grid_hparams needs at least one c and one budget value")
    if any(int(n) < 0 for n in budget):
        raise ConfigError(f"budgets must be >= 0, got {list(budget)}")
    pairs = [(float(ci), int(ni)) for ci in c for ni in budget]
    return stack_hparams([{"c": ci, "budget": ni} for ci, ni in pairs], base), pairs


def q_table(config: SwitcherConfig, params, obs: jax.Array, n: int) -> jax.Array:
    """Q-values ``[S, B, 2]`` of states ``obs [S, obs_dim]`` at budgets b = 0..n (B = n + 1).

    Without a budget ``B = 1``. Useful to read the learned switch ``argmax`` (mask b = 0 for g = 1).
    """
    gdef = graphdef(config)
    if not config.use_budget:
        return q_values(gdef, params, obs)[:, None, :]
    b = jnp.arange(n + 1, dtype=jnp.int32)
    feats = jax.vmap(lambda bb: budget_lib.features(
        obs, jnp.full(obs.shape[:1], bb), jnp.asarray(n, jnp.int32), True), out_axes=1)(b)
    return q_values(gdef, params, feats)
