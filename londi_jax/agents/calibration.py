"""Cost calibration: from a target DEEPTHINK call rate (or a per-episode budget) to the cost c.

LONDI prices every DEEPTHINK call at c; users think in call rates ("at most 20% of the steps")
or budgets ("3 calls per episode"). The map c -> call rate is measured on an offline dataset
(:mod:`londi_jax.switcher.offline`): one switcher per (c, seed) is trained in ONE vmapped
program, the greedy call rate over the dataset's states is averaged over seeds, and the c for a
target rate is read off that curve by monotone, piecewise-linear interpolation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from londi_jax.switcher.config import SwitcherConfig
from londi_jax.switcher.core import greedy
from londi_jax.switcher.network import graphdef
from londi_jax.switcher.offline import OfflineDataset, grid_hparams, make_offline_train, validate
from londi_jax.utils.errors import LondiError
from londi_jax.utils.mesh import member_sharding, replicate, shard_members, unpad
from londi_jax.utils.programs import program_cache

__all__ = ["CalibrationError", "CalibrationResult", "monotone_rates", "interpolate_cost", "greedy_call_rate",
           "offline_call_rates", "calibrate_cost", "calibrate_cost_for_budget"]


class CalibrationError(LondiError):
    """A calibration request that cannot be answered from the given grid or data."""


@dataclasses.dataclass
class CalibrationResult:
    """The chosen cost ``c`` for ``target`` (a call rate), and the measured curve it came from."""

    c: float
    c_grid: np.ndarray
    rates: np.ndarray   # mean greedy call rate per grid c, as measured (not yet made monotone)
    target: float


def monotone_rates(rates: np.ndarray) -> np.ndarray:
    """Least-squares non-increasing fit of ``rates`` (isotonic regression, pool-adjacent-violators).

    A higher c should never give more calls; measured rates can break this through training
    noise. Each run of values that violates the order is replaced by its mean (equal weights),
    which, unlike a running minimum, does not let one low outlier drag every later point down.
    """
    blocks: list[list[float]] = []  # [sum, count] per pooled block
    for r in np.asarray(rates, np.float64):
        blocks.append([r, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            s, k = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += k
    return np.concatenate([np.full(int(k), s / k) for s, k in blocks])


def interpolate_cost(c_grid: Sequence[float], rates: Sequence[float], target_rate: float) -> float:
    """The c at which the (monotone-fitted) call rate equals ``target_rate``.

    ``rates[i]`` is the call rate measured at ``c_grid[i]`` (strictly increasing). The rates are
    made non-increasing with :func:`monotone_rates`, then c is interpolated linearly between the
    two grid points around the target. Where the fitted curve is flat at the target, the
    smallest such c is returned. Targets outside the fitted range are refused (extrapolating a
    call-rate curve is unreliable): extend the grid instead.
    """
    c = np.asarray(c_grid, np.float64).reshape(-1)
    r = np.asarray(rates, np.float64).reshape(-1)
    if c.size < 2:
        raise CalibrationError(f"need at least 2 grid values of c to interpolate, got {c.size}")
    if r.shape != c.shape:
        raise CalibrationError(f"got {r.size} rates for {c.size} values of c; give one rate per c")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(r))):
        raise CalibrationError("c_grid and rates must be finite numbers")
    if np.any(np.diff(c) <= 0):
        raise CalibrationError(f"c_grid must be strictly increasing, got {c.tolist()}; sort it (and its rates)")
    target = float(target_rate)
    fit = monotone_rates(r)
    lo, hi = fit[-1], fit[0]
    if not lo - 1e-12 <= target <= hi + 1e-12:  # slack for the rounding of pooled means; rejects NaN
        raise CalibrationError(
            f"target call rate {target_rate} is outside the achievable range [{lo:.4g}, {hi:.4g}] "
            f"(monotone fit of the rates measured for c in [{c[0]:g}, {c[-1]:g}]); "
            f"widen c_grid (smaller c for more calls, larger c for fewer)")
    target = min(max(target, lo), hi)
    if target >= fit[0]:
        return float(c[0])
    i = int(np.flatnonzero(fit <= target)[0])  # first grid point at or below the target; fit[i-1] > target
    frac = (fit[i - 1] - target) / (fit[i - 1] - fit[i])
    return float(c[i - 1] + frac * (c[i] - c[i - 1]))


def check_target(target_rate: float | None = None, budget: int | None = None) -> None:
    """Raise ``CalibrationError`` unless ``target_rate`` (when given) is a finite number in
    [0, 1] (a fraction of steps; 0 asks for the smallest c that never calls) and ``budget``
    (when given) an int >= 0. Cheap: call it before loading any data."""
    if target_rate is not None:
        ok = isinstance(target_rate, (int, float, np.integer, np.floating)) and not isinstance(target_rate, bool)
        if not ok or not 0.0 <= float(target_rate) <= 1.0:  # also refuses nan
            raise CalibrationError(f"target call rate must be in [0, 1] (a fraction of steps, e.g. 0.1 for "
                                   f"10%), got {target_rate!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0):
        raise CalibrationError(f"budget must be >= 0 (a whole number of DEEPTHINK calls per episode), "
                               f"got {budget!r}")


def _check_grid(c_grid: Sequence[float]) -> np.ndarray:
    c = np.asarray(c_grid, np.float64).reshape(-1)
    if c.size < 2 or not np.all(np.isfinite(c)) or np.any(np.diff(c) <= 0):
        raise CalibrationError(f"c_grid must hold at least 2 strictly increasing finite values, got {c.tolist()}")
    return c


def greedy_call_rate(gdef, params, obs: jax.Array) -> jax.Array:
    """Fraction of the states ``obs`` where a switcher's greedy choice is DEEPTHINK (ties -> QUICK)."""
    g = greedy(gdef, params, obs, jnp.ones(obs.shape[:-1], bool))
    return jnp.mean(g.astype(jnp.float32))


@program_cache(maxsize=16)
def _rates_program(cfg: SwitcherConfig, mesh: jax.sharding.Mesh | None = None):
    """``jit(vmap(train -> greedy call rate))`` over members, dataset shared (cached per config,
    so repeated calibrations with the same shapes do not recompile)."""
    train, gdef = make_offline_train(cfg), graphdef(cfg)

    def call_rate(key, h, ds):
        state, _ = train(key, h, ds)
        return greedy_call_rate(gdef, state.params, ds.obs)

    return jax.jit(jax.vmap(call_rate, in_axes=(0, 0, None)),
                   out_shardings=None if mesh is None else member_sharding(mesh))


def offline_call_rates(config: SwitcherConfig, dataset: OfflineDataset, c_grid: Sequence[float], *,
                       seeds: Sequence[int] = (0, 1, 2), mesh: jax.sharding.Mesh | None = None,
                       **hparams: float) -> np.ndarray:
    """Mean greedy DEEPTHINK call rate over the dataset's states, per c in ``c_grid``.

    One offline Double-DQN switcher per (c, seed), all trained in one ``jit(vmap(...))`` program
    (``make_offline_train`` over ``grid_hparams``); ``hparams`` override the other traced
    hyper-parameters (lr, gamma, ...). Every c shares a seed's key (common random numbers, which
    keeps the measured curve smooth in c). Rates are budget-free: a LONDI-B ``config`` is
    trained without its budget feature (``use_budget=False``). Ties go to QUICK. ``mesh``: the
    members are sharded over its ``data`` axis (``utils.mesh``), with the same rates.
    """
    c = _check_grid(c_grid)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise CalibrationError("give at least one training seed")
    if "c" in hparams or "budget" in hparams:
        raise CalibrationError("c comes from c_grid and rates are budget-free; do not pass c= or budget=")
    cfg = dataclasses.replace(config, use_budget=False)
    ds = validate(dataset, cfg.obs_dim)
    hp, _ = grid_hparams(c.tolist(), [0], **hparams)  # members ordered by c
    n_c, n_s = c.size, len(seeds)
    hp = jax.tree.map(lambda x: jnp.repeat(x, n_s, axis=0), hp)  # member (i, j) = (c_i, seeds_j)
    keys = jnp.tile(jnp.stack([jax.random.key(s) for s in seeds]), n_c)
    (keys, hp), m = shard_members((keys, hp), mesh)
    rates = unpad(_rates_program(cfg, mesh)(keys, hp, replicate(ds, mesh)), m)
    return np.asarray(rates, np.float64).reshape(n_c, n_s).mean(axis=1)


def calibrate_cost(config: SwitcherConfig, dataset: OfflineDataset, target_rate: float,
                   c_grid: Sequence[float], *, seeds: Sequence[int] = (0, 1, 2),
                   mesh: jax.sharding.Mesh | None = None, **hparams: float) -> CalibrationResult:
    """The cost c whose offline-trained switcher calls DEEPTHINK at ``target_rate`` of the states.

    Measures :func:`offline_call_rates` on ``c_grid`` and interpolates with
    :func:`interpolate_cost`. Target outside the measured range: a :class:`CalibrationError`
    naming it.
    """
    check_target(target_rate=target_rate)
    target = float(target_rate)
    c = _check_grid(c_grid)
    rates = offline_call_rates(config, dataset, c, seeds=seeds, mesh=mesh, **hparams)
    return CalibrationResult(c=interpolate_cost(c, rates, target), c_grid=c, rates=rates, target=target)


def calibrate_cost_for_budget(config: SwitcherConfig, dataset: OfflineDataset, budget: int,
                              mean_episode_length: float, c_grid: Sequence[float], *,
                              seeds: Sequence[int] = (0, 1, 2), **hparams: float) -> CalibrationResult:
    """The cost c whose switcher spends about ``budget`` calls per episode.

    Approximation: the target call rate is ``budget / mean_episode_length``, i.e. the expected
    calls per episode (rate x length) match the budget. It ignores that episode lengths vary
    (the budget binds on long episodes), that the rate is measured over the dataset's state
    distribution rather than the states the new switch will visit, and that switching changes
    episode lengths; use it to pick c for LONDI-B, whose hard cap then enforces the budget.
    """
    check_target(budget=budget)
    if not float(mean_episode_length) > 0:
        raise CalibrationError(f"mean_episode_length must be > 0, got {mean_episode_length}")
    target = int(budget) / float(mean_episode_length)
    if target > 1.0:
        raise CalibrationError(
            f"a budget of {budget} calls exceeds the mean episode length {mean_episode_length}: it "
            "never binds on average, so any c works; calibrate a call rate in [0, 1] instead")
    return calibrate_cost(config, dataset, target, c_grid, seeds=seeds, **hparams)
