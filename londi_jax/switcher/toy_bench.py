"""The toy switching benchmark end to end: train on ``toy.ToyEnv``, compare with ``exact``.

``run_toy`` trains ``seeds`` switchers in one vmapped program, evaluates the greedy switches on
many episodes, and compares with the exact optimum of the (state, budget) MDP: activation-set
agreement, expected calls and value of the learned policy (exact policy evaluation), Monte-Carlo
return, calls per episode and budget violations.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from londi_jax.switcher import exact, toy
from londi_jax.switcher.config import HParams, SwitcherConfig, check_hparam, check_value
from londi_jax.switcher.core import greedy_switch
from londi_jax.switcher.sweep import (ResultsTable, SweepSpec, evaluate_many, run_sweep,
                                      stack_hparams, train_many)
from londi_jax.switcher.train import Trainer, make_train
from londi_jax.utils.fields import at_least

# Settings that learn the toy's exact switch reliably on CPU in seconds (checked on 3-4 sweep
# seeds: 100% agreement on every member). Generous exploration (eps_end) matters: states such as
# "one call already spent early" are only visited by exploring, and their values feed the rest.
TOY_CONFIGS: dict[str, dict[str, Any]] = {
    "dqn": dict(learner="dqn", num_envs=16, hidden=(64, 64), num_updates=3000, buffer_size=10_000,
                batch_size=128, learning_starts=256),
    "pqn": dict(learner="pqn", num_envs=32, hidden=(64, 64), layer_norm=True, num_updates=3000,
                rollout_len=8, num_epochs=2, num_minibatches=4),
}
TOY_HPARAMS: dict[str, dict[str, float]] = {
    "dqn": dict(lr=3e-3, gamma=0.95, target_period=200, eps_end=0.2, eps_decay_frac=0.5),
    "pqn": dict(lr=1e-3, gamma=0.95, lam=0.3, eps_end=0.1, eps_decay_frac=0.5),
}


def toy_trainer(learner: str = "dqn", use_budget: bool = False, max_steps: int = 64,
                **overrides: Any) -> Trainer:
    """A ``Trainer`` on the default toy chain with the tuned settings (``overrides`` win).

    Raises ``ConfigError`` / ``UnknownNameError`` for a bad learner, ``max_steps < 1`` or an
    invalid ``SwitcherConfig`` override."""
    check_value("max_steps", max_steps, int, at_least(1))
    env = toy.ToyEnv()
    kwargs = {**TOY_CONFIGS.get(learner, {"learner": learner}), **overrides}
    config = SwitcherConfig(obs_dim=env.obs_dim, use_budget=use_budget, **kwargs)
    return make_train(config, env, env.default_params(max_steps))


def learned_policy(trainer: Trainer, params: Any, budget: int | None) -> np.ndarray:
    """Greedy switch table ``[S, B]`` of one member (B = budget+1, or 1 without budget)."""
    env = trainer.env
    obs = toy.all_observations(env)
    n = jnp.asarray(budget or 0)
    cols = []
    for b in range(budget + 1 if budget is not None else 1):
        bb = jnp.full((env.num_cells,), b, jnp.int32)
        cols.append(np.asarray(greedy_switch(trainer.gdef, params, obs, bb, n, budget is not None)[1]))
    return np.stack(cols, axis=1)


def compare_to_exact(trainer: Trainer, params: Any, c: float, gamma: float,
                     budget: int | None) -> dict[str, Any]:
    """Learned greedy switch vs the exact optimum (values from exact policy evaluation)."""
    P, R, start = toy.tabular_model(trainer.env_params)
    sol = exact.solve(P, R, c, gamma, budget)
    pol = learned_policy(trainer, params, budget)
    budgeted = budget is not None
    opt = exact.evaluate_policy(P, R, sol.policy, c, gamma, budgeted)
    got = exact.evaluate_policy(P, R, pol, c, gamma, budgeted)
    reach = exact.reachable(P, start, budget)
    gap = sol.Q[..., 1] - sol.Q[..., 0]  # -inf where g = 1 is not admissible (b = 0)
    wrong = np.argwhere((pol != sol.policy) & reach)
    decisions = np.abs(gap[reach & np.isfinite(gap)])
    return {
        # closest call to a tie among reachable states where both switches are admissible:
        # learned Q-values must be at least this accurate to match the exact switch everywhere.
        # None when no reachable state has a choice (budget 0: DEEPTHINK is never admissible).
        "exact_margin": float(decisions.min()) if decisions.size else None,
        "disagreements": [{"cell": int(s), "b": int(b) if budgeted else None,
                           "exact_gap": float(gap[s, b])} for s, b in wrong],
        "agreement": float((pol == sol.policy)[reach].mean()),
        "agreement_all_states": float((pol == sol.policy).mean()),
        "exact_value": exact.start_value(sol.V, start),
        "learned_value": exact.start_value(got["value"], start),
        "exact_calls": exact.start_value(opt["calls"], start),
        "learned_calls": exact.start_value(got["calls"], start),
        "learned_disc_calls": exact.start_value(got["disc_calls"], start),
        "policy": pol, "exact_policy": sol.policy,
    }


def _check_run_args(seed: int, **counts: int | None) -> None:
    """``ConfigError`` unless every count is None or an int >= 1 and ``seed`` is an int."""
    for name, value in counts.items():
        check_value(name, value, int, at_least(1), optional=True)
    check_value("seed", seed, int)


def run_toy(c: float = 0.1, budget: int | None = None, seeds: int = 4, learner: str = "dqn",
            num_updates: int | None = None, eval_episodes: int = 10_000, eval_max_steps: int = 200,
            seed: int = 0, progress: bool = True, hparams: dict[str, float] | None = None,
            chunk: int | None = None) -> dict[str, Any]:
    """Train ``seeds`` switchers at one (c, budget) and report learned vs exact.

    ``budget=None`` is plain LONDI; ``budget=0`` is LONDI-B that may never call DEEPTHINK
    (``exact_margin`` is then None: no state has a choice). Every argument is checked before
    any training (``ConfigError`` naming it): ``c`` finite and >= 0, ``budget`` an int >= 0,
    ``seeds``, ``eval_episodes``, ``eval_max_steps``, ``num_updates`` and ``chunk`` ints >= 1.
    """
    check_hparam("c", c)
    if budget is not None:
        check_hparam("budget", budget)
    _check_run_args(seeds=seeds, eval_episodes=eval_episodes, eval_max_steps=eval_max_steps,
                    num_updates=num_updates, chunk=chunk, seed=seed)
    overrides = {} if num_updates is None else {"num_updates": num_updates}
    trainer = toy_trainer(learner, use_budget=budget is not None, **overrides)
    hp_values = {**TOY_HPARAMS.get(learner, {}), **(hparams or {}), "c": c, "budget": budget or 0}
    hp = stack_hparams([hp_values] * seeds)
    k_train, k_eval = jax.random.split(jax.random.key(seed))
    n_up = trainer.config.num_updates
    ts, _ = train_many(trainer, jax.random.split(k_train, seeds), hp, chunk=chunk or max(1, n_up // 10),
                       progress=progress, desc=f"toy {learner} x{seeds}")
    ev = evaluate_many(trainer, ts.learner.params, hp, k_eval, eval_episodes, eval_max_steps,
                       trainer.env_params.replace(max_steps=jnp.asarray(eval_max_steps, jnp.int32)))
    per_seed = []
    for i in range(seeds):
        params = jax.tree.map(lambda x: x[i], ts.learner.params)
        cmp = compare_to_exact(trainer, params, c, hp_values["gamma"], budget)
        per_seed.append({"seed": i, **{k: v for k, v in cmp.items() if "policy" not in k},
                         "mc_return": float(ev["disc_return"][i]), "mc_calls": float(ev["calls"][i]),
                         "max_calls": int(ev["max_calls"][i]), "success": float(ev["success"][i]),
                         "violations": int(ev["violations"][i]),
                         "policy": cmp["policy"].T.tolist()})
    ex = compare_to_exact(trainer, jax.tree.map(lambda x: x[0], ts.learner.params), c,
                          hp_values["gamma"], budget)
    mean = lambda k: float(np.mean([r[k] for r in per_seed]))  # noqa: E731
    return {
        "learner": learner, "c": c, "budget": budget, "seeds": seeds, "num_updates": n_up,
        "eval_episodes": eval_episodes,
        "exact_policy": ex["exact_policy"].T.tolist(), "exact_value": ex["exact_value"],
        "exact_margin": ex["exact_margin"],
        "exact_calls": ex["exact_calls"],
        "agreement": mean("agreement"), "learned_value": mean("learned_value"),
        "mc_return": mean("mc_return"), "mc_calls": mean("mc_calls"),
        "violations": int(sum(r["violations"] for r in per_seed)),
        "per_seed": per_seed,
    }


def sweep_toy(params: dict[str, Any], learner: str = "dqn", use_budget: bool = False,
              seeds: int = 2, base: dict[str, float] | None = None, num_updates: int | None = None,
              eval_episodes: int = 2000, eval_max_steps: int = 200, seed: int = 0,
              progress: bool = True, mode: str = "grid", num_samples: int = 8,
              mesh: Any = None) -> ResultsTable:
    """A sweep on the toy benchmark (one compiled program) with exact-optimum columns per member.

    ``params`` maps ``HParams`` names to values (grid) or distributions (random); ``base`` fixes
    others (defaults: the tuned ``TOY_HPARAMS``). Rows carry the sweep's metrics plus
    ``agreement``, ``learned_value`` / ``exact_value``, ``learned_calls`` / ``exact_calls``
    and the ``policy`` / ``exact_policy`` tables. Arguments are checked before any training, as
    in ``run_toy`` (the swept values by ``HParams.create``). ``mesh`` shards the members over
    its ``data`` axis (``run_sweep``).
    """
    _check_run_args(seeds=seeds, eval_episodes=eval_episodes, eval_max_steps=eval_max_steps,
                    num_updates=num_updates, num_samples=num_samples, seed=seed)
    overrides = {} if num_updates is None else {"num_updates": num_updates}
    trainer = toy_trainer(learner, use_budget=use_budget, **overrides)
    base = {**TOY_HPARAMS.get(learner, {}), **(base or {})}
    spec = SweepSpec(params=params, seeds=seeds, base=base, mode=mode, num_samples=num_samples)

    def row_fn(row: dict[str, Any], member_params: Any) -> dict[str, Any]:
        get = lambda k: row.get(k, base.get(k, HParams.create().to_dict()[k]))  # noqa: E731
        budget = int(get("budget")) if use_budget else None
        out = compare_to_exact(trainer, member_params, float(get("c")), float(get("gamma")), budget)
        out["policy"], out["exact_policy"] = out["policy"].T.tolist(), out["exact_policy"].T.tolist()
        return out

    eval_params = trainer.env_params.replace(max_steps=jnp.asarray(eval_max_steps, jnp.int32))
    return run_sweep(trainer, spec, seed=seed, eval_episodes=eval_episodes,
                     eval_max_steps=eval_max_steps, progress=progress, row_fn=row_fn,
                     chunk=max(1, trainer.config.num_updates // 10), eval_env_params=eval_params,
                     mesh=mesh)
