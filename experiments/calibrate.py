"""Calibration tool: a target DEEPTHINK call rate (or per-episode budget) -> the cost c.

    python experiments/calibrate.py --run runs/cpu-small --target-rate 0.2
    python experiments/calibrate.py --run runs/cpu-small --budget 3

Uses a finished run's logged both-model switch data (``switch_data.npz``): one offline switcher
per (c, seed) is trained in one vmapped program, the greedy call rate is measured per c and
interpolated (made monotone first) at the target. Budgets use rate = budget / mean episode
length of the logged episodes. Only reads the run: it works on read-only storage.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import tyro

from londi_jax.agents.calibration import calibrate_cost, calibrate_cost_for_budget, check_target
from londi_jax.experiments.pipeline import Pipeline, PipelineError
from londi_jax.switcher.offline import load_dataset
from londi_jax.utils.errors import LondiError
from londi_jax.utils.io import read_json


@dataclasses.dataclass
class Calibrate:
    run: str  # a pipeline output directory (after its switch_data stage)
    target_rate: float | None = None  # fraction of steps that should call DEEPTHINK
    budget: int | None = None  # or: calls per episode
    c_grid: tuple[float, ...] = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
    seeds: int = 3


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Calibrate, args=argv, description=__doc__)
    if (args.target_rate is None) == (args.budget is None):
        raise SystemExit("give exactly one of --target-rate or --budget")
    check_target(args.target_rate, args.budget)  # before reading the run
    run = Path(args.run)
    if not (run / "switch_data.npz").exists():
        raise PipelineError(f"{run} has no switch_data.npz; run the pipeline's switch_data stage first")
    pipe = Pipeline.from_run_dir(run)
    sw_cfg = pipe.switcher_config(False)
    ds = load_dataset(run / "switch_data.npz")
    s = pipe.config.switch
    hp = {"lr": s.lr, "gamma": s.gamma, "target_period": s.target_period}
    seeds = tuple(range(args.seeds))
    if args.budget is not None:
        stats = read_json(run / "switch_data.done.json")
        mean_len = stats["states"] / max(stats["episodes"], 1)
        res = calibrate_cost_for_budget(sw_cfg, ds, args.budget, mean_len, args.c_grid, seeds=seeds, **hp)
    else:
        res = calibrate_cost(sw_cfg, ds, args.target_rate, args.c_grid, seeds=seeds, **hp)
    out = {"c": res.c, "target_rate": res.target, "c_grid": np.asarray(res.c_grid).tolist(),
           "offline_call_rates": np.asarray(res.rates).tolist()}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    try:
        main()
    except LondiError as err:  # bad input: one line, no traceback
        print(f"calibrate.py: error: {err}", file=sys.stderr)
        sys.exit(2)
