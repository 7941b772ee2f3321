"""LONDI in one compiled program: BabyAI-Text in JAX, QUICK, DEEPTHINK and the switch learning online.

``LondiEnv`` is a *batched* env for the switcher's ``Trainer`` (``switcher.train``) whose action is
the switch ``g`` (0 QUICK, 1 DEEPTHINK) and whose observation is the switch's state features: the
switch learns with the very trainer (PQN Q(lambda), or DQN with its device replay) that trains it
on toy envs, and ``jax.vmap`` over members (c, budget, seed, lr, ...) trains many in one compile.
One call of ``step_batch`` for N envs:

1. DEEPTHINK scores the six actions only at the rows switched to it: they are compacted into a
   fixed ``capacity``-row batch (``device_scoring.compact_rows``), their prompts built as DEEPTHINK's
   token ids, scored, and scattered back. Rows past the capacity run QUICK's action and are
   reported in ``info["switch"]`` as QUICK calls (and counted in ``overflow``), so the compute saved
   is real on the device, not masked-out work.
2. An action is drawn from GLAM's softmax over the chosen model's scores (or taken greedily).
3. The envs step (``envs.babyai_jax``), GLAM's history is pushed, and QUICK scores the next
   prompts (one prefill per prompt, the six actions share its cache), giving the next features:
   QUICK's mean-pooled and last-token hidden states, its confidence and the step fraction, the
   same ``agents.policy.state_features`` the host pipeline computes, so a switch trained here is
   the switch the host rollout (``agents.londi``) deploys.
4. Ended episodes get fresh levels from a pool of ``resets`` levels generated in the same call,
   with QUICK run on the pool (``envs.babyai_jax.env.reset_pool``); ``info["final_obs"]`` keeps
   the real next features the learner bootstraps from at a truncation.

The LM weights are part of ``LondiParams``, which the trainer passes as a shared (unbatched)
argument: every member reads the same weights.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from londi_jax.agents.device_scoring import candidate_block, compact_rows, score_actions, scatter_rows
from londi_jax.agents.policy import feature_dim, state_features
from londi_jax.envs.babyai_jax import env as jenv
from londi_jax.envs.babyai_jax import phrases, prompt_ids
from londi_jax.envs.babyai_jax.core import EnvState
from londi_jax.envs.babyai_jax.levels import EnvParams
from londi_jax.envs.babyai_text.prompt import ACTIONS
from londi_jax.utils.errors import LondiError
from londi_jax.utils.mesh import split_rows

__all__ = ["LondiEnv", "LondiParams", "LondiState", "OnlineResult", "train_online"]


class LondiParams(struct.PyTreeNode):
    """Traced inputs of the LONDI env: level parameters and both models' weights (``nnx.State``)."""

    env: EnvParams
    quick: Any
    deep: Any


class LondiState(struct.PyTreeNode):
    """Per-env state (leading axis N): the BabyAI state, GLAM's history, and QUICK's action scores
    at the current observation (computed with the features the switch acts on)."""

    env: EnvState
    history: prompt_ids.History
    quick_scores: jax.Array  # [N, 6] summed token log-probs


@dataclasses.dataclass(frozen=True)
class _Model:
    graphdef: Any
    tables: prompt_ids.PromptTables
    cand_tok: np.ndarray
    cand_valid: np.ndarray
    max_len: int


def _bind(lm: Any, role: str, max_len: int | None) -> _Model:
    tok = getattr(lm, "tokenizer", None)
    if tok is None or not hasattr(lm, "graphdef"):
        raise LondiError(f"{role} must be a loaded LanguageModel with a tokenizer (lm.registry.load_lm or the "
                         f"pipeline's Pipeline.model(...)), got {type(lm).__name__}")
    tables = prompt_ids.PromptTables.from_tokenizer(tok)
    cand_tok, cand_valid = candidate_block(tok, ACTIONS)
    window = int(getattr(lm.config, "max_position_embeddings", 1 << 30))
    room = window - cand_tok.shape[1]
    head = len(tables.prefix) + sum(int(tables.lengths[phrases.piece(t)]) for t in (phrases.HEADER, phrases.GOAL))
    if room < head + 1:
        raise LondiError(f"{role} ({lm.name}) reads {window} positions: too few for GLAM's prompt header ({head} "
                         f"tokens) and an action ({cand_tok.shape[1]}); give a model with a longer context")
    if max_len is None:  # never cut, within what the model can read
        max_len = min(tables.max_prompt_tokens(), room)
    elif not isinstance(max_len, (int, np.integer)) or isinstance(max_len, bool) or not 1 <= max_len <= room:
        raise LondiError(f"max_len must be an int in [1, {room}] for {role} ({lm.name}: {room + cand_tok.shape[1]} "
                         f"positions, {cand_tok.shape[1]} taken by the longest action), got {max_len!r}")
    return _Model(lm.graphdef, tables, cand_tok, cand_valid, int(max_len))


class LondiEnv:
    """The LONDI switch MDP over BabyAI-Text in JAX, stepping N envs at once (see module doc).

    ``quick`` / ``deep``: loaded ``LanguageModel`` s (``graphdef`` + tokenizer; their weights go in
    ``params(...)``). ``capacity``: most DEEPTHINK rows per step (int in [1, num_envs]; a fixed
    batch, so its cost is paid every step: size it near the call rate you expect; ``overflow``
    counts switches it could not serve). ``resets``: fresh levels per step (ended episodes beyond
    it share layouts: ``reset_shortfall``). ``sample_actions``: draw actions from GLAM's softmax
    (the pipeline's default) or take the greedy one. ``max_len``: prompt buffer in tokens (default:
    each tokenizer's worst-case bound for GLAM's prompt, ``PromptTables.max_prompt_tokens``, or what
    the model can read before an action if less). Real prompts are usually far shorter than the
    bound, and the cost of a step grows with the buffer: a measured bound is faster. Longer
    prompts are cut (their first ``max_len`` tokens) and counted in ``cut_prompts``.
    """

    batched = True
    info_metrics = ("success", "overflow", "reset_shortfall", "cut_prompts", "deep_rows")

    def __init__(self, quick: Any, deep: Any, *, capacity: int, resets: int, sample_actions: bool = True,
                 max_len: int | None = None):
        for name, v in (("capacity", capacity), ("resets", resets)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise LondiError(f"{name} must be an int >= 1 (and at most the number of envs), got {v!r}")
        if not isinstance(sample_actions, (bool, np.bool_)):
            raise LondiError(f"sample_actions must be True (draw from GLAM's softmax) or False (greedy), got "
                             f"{sample_actions!r}")
        self.quick, self.deep = _bind(quick, "QUICK", max_len), _bind(deep, "DEEPTHINK", max_len)
        self.capacity, self.resets = int(capacity), int(resets)
        self.sample_actions = bool(sample_actions)
        self._shapes = tuple(jax.tree.map(np.shape, lm.state) for lm in (quick, deep))
        self._trainers: dict[Any, Any] = {}  # (SwitcherConfig, row mesh) -> Trainer (train_online reuses them)
        # set by train_online when members do not fill the mesh's data axis: the env rows (prompts,
        # QUICK's and DEEPTHINK's batches) are split over data instead, read at trace time
        self.row_mesh: Any = None
        self.hidden_size = int(quick.hidden_size)
        self.obs_dim = feature_dim(self.hidden_size)
        self.names = (quick.name, deep.name)

    def params(self, env_params: EnvParams, quick: Any, deep: Any) -> LondiParams:
        """The traced inputs: level parameters (``levels.make_params``) and the two models' weights
        (``quick`` / ``deep``: the models this env was built with, or others of the same shapes,
        e.g. further-trained ones). Raises ``LondiError`` for anything else."""
        if not isinstance(env_params, EnvParams):
            raise LondiError(f"env_params must be the JAX env's EnvParams (envs.babyai_jax.levels.make_params), got "
                             f"{type(env_params).__name__}")
        for role, lm, want in (("QUICK", quick, self._shapes[0]), ("DEEPTHINK", deep, self._shapes[1])):
            state = getattr(lm, "state", None)
            if state is None or jax.tree.map(np.shape, state) != want:
                raise LondiError(f"the {role} weights given do not have the shapes of the {role} this env was built "
                                 f"with ({self.names[0 if role == 'QUICK' else 1]}); pass the models in the "
                                 "constructor's order (quick, deep)")
        return LondiParams(env=env_params, quick=quick.state, deep=deep.state)

    def describe(self, params: LondiParams) -> dict[str, Any]:
        """What a checkpoint records about this env: the models' names, sizes and a SHA-1 of their
        weights (so resuming with other weights is refused; weights are not stored), the settings
        and the level parameters."""
        import hashlib

        def digest(tree: Any) -> str:
            h = hashlib.sha1()
            for x in jax.tree.leaves(tree):
                h.update(np.ascontiguousarray(jax.device_get(x)).tobytes())
            return h.hexdigest()

        shapes = {k: int(sum(x.size for x in jax.tree.leaves(getattr(params, k)))) for k in ("quick", "deep")}
        return {"quick": self.names[0], "deep": self.names[1], "parameters": shapes,
                "weights_sha1": {k: digest(getattr(params, k)) for k in ("quick", "deep")}, "capacity": self.capacity,
                "resets": self.resets, "sample_actions": self.sample_actions,
                "max_len": [self.quick.max_len, self.deep.max_len], "env_params": params.env}

    # ---- model calls --------------------------------------------------------------------
    @staticmethod
    def _prompts(m: _Model, mission: jax.Array, history: prompt_ids.History) -> tuple[jax.Array, jax.Array]:
        return jax.vmap(lambda mi, h: m.tables.build(mi, h, m.max_len))(mission, history)

    def _quick(self, weights: Any, state: EnvState, history: prompt_ids.History
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """QUICK at the given envs: ``(scores [B, 6], features [B, obs_dim], cut [B])``."""
        m = self.quick
        ids, length = self._rows(*self._prompts(m, state.mission, history))
        scores, emb = score_actions(nnx.merge(m.graphdef, weights), ids, length, m.cand_tok, m.cand_valid,
                                    with_embedding=True)
        feats = state_features(emb, scores, state.step_count, state.max_steps, xp=jnp)
        return scores, feats, length > m.max_len

    def _deep(self, weights: Any, state: LondiState, g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """DEEPTHINK on the rows with ``g = 1``, compacted: ``(scores [N, 6], served [N], overflow, cut)``."""
        m = self.deep
        rows, used, overflow = compact_rows(g, self.capacity)
        pick = lambda x: x[rows]  # noqa: E731
        ids, length = self._rows(*self._prompts(m, state.env.mission[rows], jax.tree.map(pick, state.history)))
        s = score_actions(nnx.merge(m.graphdef, weights), ids, length, m.cand_tok, m.cand_valid)
        scores, served = scatter_rows(s, rows, used, g.shape[0])
        return scores, served, overflow, jnp.sum(used & (length > m.max_len))

    def _rows(self, *xs: jax.Array) -> tuple[jax.Array, ...]:
        """Batches of env rows split over ``row_mesh``'s data axis when set: the LMs' work, which is
        the step's cost, runs data-parallel."""
        return split_rows(self.row_mesh, *xs)

    # ---- the batched env interface (switcher.train.Trainer) -----------------------------
    def _check_batch(self, n: int) -> None:
        if self.capacity > n or self.resets > n:
            raise LondiError(f"capacity ({self.capacity}) and resets ({self.resets}) must be at most the number of envs "
                             f"({n}): DEEPTHINK's batch and the fresh levels are computed every step")

    def reset_batch(self, key: jax.Array, params: LondiParams, n: int) -> tuple[jax.Array, LondiState]:
        """N fresh episodes: ``(features [N, obs_dim], state)``."""
        self._check_batch(n)
        obs, st = jenv.reset_batch(key, params.env, n)
        hist = jax.vmap(prompt_ids.history_start)(obs.slots)
        scores, feats, _ = self._quick(params.quick, st, hist)
        return feats, LondiState(env=st, history=hist, quick_scores=scores)

    def step_batch(self, key: jax.Array, state: LondiState, g: jax.Array, params: LondiParams
                   ) -> tuple[jax.Array, LondiState, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
        """One step of every env under switches ``g [N]`` (see the module doc). ``info``:
        ``final_obs`` (real next features), ``switch`` (the model that acted, int32), ``success``,
        ``overflow``, ``reset_shortfall``, ``cut_prompts``, ``deep_rows`` (DEEPTHINK rows served)."""
        self._check_batch(int(g.shape[0]))
        k_act, k_reset = jax.random.split(key)
        deep_scores, served, overflow, deep_cut = self._deep(params.deep, state, g)
        logits = jnp.where(served[:, None], deep_scores, state.quick_scores)
        action = (jax.random.categorical(k_act, logits) if self.sample_actions
                  else jnp.argmax(logits, axis=-1)).astype(jnp.int32)
        obs, env2, reward, term, trunc = jax.vmap(jenv.step_env)(state.env, action)
        hist2 = jax.vmap(prompt_ids.history_push)(state.history, action, obs.slots)
        scores, feats, cut = self._quick(params.quick, env2, hist2)
        done = term | trunc

        def at_fresh_levels(o, s):
            h = jax.vmap(prompt_ids.history_start)(o.slots)
            return (h, *self._quick(params.quick, s, h))

        _, pool_env, (pool_hist, pool_scores, pool_feats, _) = jenv.reset_pool(
            k_reset, params.env, self.resets, done, (obs, env2), extend=at_fresh_levels)
        (env3, hist3, scores3, feats3), shortfall = jenv.assign_resets(
            done, (pool_env, pool_hist, pool_scores, pool_feats), (env2, hist2, scores, feats))
        info = {"final_obs": feats, "switch": served.astype(jnp.int32), "success": term,
                "overflow": overflow, "reset_shortfall": shortfall, "deep_rows": jnp.sum(served),
                "cut_prompts": jnp.sum(cut) + deep_cut}
        return feats3, LondiState(env=env3, history=hist3, quick_scores=scores3), reward, term, trunc, info


@dataclasses.dataclass
class OnlineResult:
    """What ``train_online`` returns: the members' switch parameters (stacked ``[M, ...]``, the
    ``SwitcherRouter``'s input), the metrics of the updates this call ran (``[M, updates]``) and a
    per-member ``summary`` (JSON-ready)."""

    params: Any
    metrics: dict[str, Any]
    summary: dict[str, Any]


def train_online(env: LondiEnv, params: LondiParams, config: Any, hparams: Any, seeds: list[int],
                 ckpt_dir: Any, *, every_updates: int, total_updates: int | None = None,
                 progress: bool = True, mesh: Any = None) -> OnlineResult:
    """Train ``len(seeds)`` switches (stacked ``hparams``, one seed each) online in ONE compiled
    program: ``jit(vmap(train_chunk))`` over members with the LM weights shared, checkpointed every
    ``every_updates`` updates into ``ckpt_dir`` (a killed run resumes there and ends bit-for-bit
    where an uninterrupted one would: ``switcher.checkpoint.train_resumable``). ``total_updates``:
    stop after that many (default ``config.num_updates``, which also sets the epsilon schedule; a
    later call with a larger total resumes). Programs are compiled once per (env, config).
    ``mesh``: members sharded over its ``data`` axis, the LM weights replicated
    (``switcher.checkpoint.train_resumable``); with fewer members than ``data`` devices the members
    are replicated instead and each member's envs are split over ``data`` (its prompts and both
    LMs' batches: the step's cost), when ``config.num_envs`` divides evenly.

    ``config``: a ``SwitcherConfig`` with ``obs_dim = env.obs_dim``. Summary per member, over the
    updates of this call: episodes ended, success rate, DEEPTHINK call rate (calls per step),
    overflow and reset shortfall counts, cut prompts; plus env steps, wall seconds (compile
    included) and env steps per second over all members."""
    import time

    from londi_jax.switcher.checkpoint import train_resumable
    from londi_jax.switcher.train import make_train

    from londi_jax.switcher.config import HParams

    if not isinstance(env, LondiEnv):
        raise LondiError(f"train_online trains on a LondiEnv, got {type(env).__name__}")
    if not isinstance(hparams, HParams) or np.ndim(hparams.c) != 1:
        raise LondiError("hparams must be HParams stacked along a leading member axis "
                         "(switcher.sweep.stack_hparams([{...}, ...]))")
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 0 <= k < 2**32 for k in seeds)):
        raise LondiError(f"seeds must be a non-empty list of ints in [0, 2**32), one per member, got {seeds!r}")
    if int(np.shape(hparams.c)[0]) != len(seeds):
        raise LondiError(f"{np.shape(hparams.c)[0]} members' hparams but {len(seeds)} seeds; give one seed per member")
    for name, v in (("every_updates", every_updates), ("total_updates", total_updates)):
        if (v is not None or name == "every_updates") and (
                isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise LondiError(f"{name} must be an int >= 1, got {v!r}")
    if not isinstance(ckpt_dir, (str, os.PathLike)):
        raise LondiError(f"ckpt_dir must be a directory path, got {ckpt_dir!r}")
    # fewer members than data devices: the members are replicated and each one's envs split over data
    rows_on_data = mesh is not None and len(seeds) < mesh.shape["data"] and config.num_envs % mesh.shape["data"] == 0
    env.row_mesh = mesh if rows_on_data else None
    key = (config, env.row_mesh)
    trainer = env._trainers.get(key)
    if trainer is None:  # one trainer per config and layout: its compiled programs are reused by later calls
        trainer = env._trainers[key] = make_train(config, env, params)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    t0 = time.perf_counter()
    res = train_resumable(trainer, hparams, keys, ckpt_dir, every_updates=every_updates, total_updates=total_updates,
                          progress=progress, env_params=params, meta={"seeds": [int(k) for k in seeds]},
                          mesh=mesh, shard_members=not rows_on_data)
    jax.block_until_ready(res.train_state)
    seconds = time.perf_counter() - t0
    m = {k: np.asarray(v) for k, v in res.metrics.items()}
    updates = int(m["loss"].shape[1]) if m else 0
    steps = len(seeds) * config.num_envs * config.rollout_len * updates
    tot = {k: m[k].sum(-1) for k in ("episodes", *env.info_metrics)} if m else {}
    per_member = config.num_envs * config.rollout_len * updates

    def member(i: int) -> dict[str, Any]:
        row: dict[str, Any] = {"c": float(f"{float(np.asarray(hparams.c)[i]):.6g}"), "seed": int(seeds[i])}
        if config.use_budget:
            row["budget"] = int(np.asarray(hparams.budget)[i])
        if m:  # training episodes (exploring); DEEPTHINK calls per env step over every step run
            row.update(episodes=int(tot["episodes"][i]), success_rate=float(tot["success"][i] / max(tot["episodes"][i], 1)),
                       call_rate=float(tot["deep_rows"][i] / max(per_member, 1)),
                       **{k: int(tot[k][i]) for k in env.info_metrics})
        return row

    members = [member(i) for i in range(len(seeds))]
    summary = {"members": members, "updates_run": updates, "resumed_from": int(res.resumed_from), "env_steps": steps,
               "seconds": seconds, "env_steps_per_second": steps / max(seconds, 1e-9)}
    return OnlineResult(params=res.train_state.learner.params, metrics=m, summary=summary)
