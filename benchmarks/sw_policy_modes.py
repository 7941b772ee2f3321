"""Scoring every valid action vs generating an action and mapping it to the nearest valid one,
on a finished ScienceWorld pipeline run's behaviour-cloned QUICK and DEEPTHINK.

    python benchmarks/sw_policy_modes.py --run runs/sw-small [--states 40] [--episodes 8] [--json]

(a) score (GLAM's way): ``LMPolicy(mode="score")`` scores every valid action after one shared
    prompt prefill (candidate blocks) and takes the argmax.
(b) generate (SwiftSage's way): ``LMPolicy(mode="generate")`` generates greedily (at most the
    longest action's tokens) and takes the valid action nearest to the text (``nearest_action``).

Per model and mode: (1) on gold-path states of the run's tasks (the dev split, never cloned):
accuracy against the gold action and seconds per state (first call apart: compiles); (2) whole
episodes with the model acting alone (the run's evaluation episodes of seed 0): mean score,
success rate and seconds per step. Results: benchmarks/results/sw_policy_modes_<device>.json.
Training results differ across machines (floating point), so accuracies are this run's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_tag, machine_info, render_table, write_result  # noqa: E402


def gold_states(tasks: list[str], simplifications: str, num: int) -> list[tuple[Any, str]]:
    """Up to ``num`` (state, gold action) pairs: every step of the dev split's gold paths, the
    tasks taken in turn, one variation each until ``num`` are collected."""
    from londi_jax.agents.prompts import Observation
    from londi_jax.agents.rollout import first_state
    from londi_jax.envs.scienceworld import ScienceWorldTextEnv

    out: list[tuple[Any, str]] = []
    with ScienceWorldTextEnv(tasks[0], split="dev", simplifications=simplifications, step_limit=10**6) as env:
        variations = {t: env.variations_of(t, "dev") for t in tasks}
        v = 0
        while len(out) < num and v < min(len(x) for x in variations.values()):
            for t in tasks:
                env.set_task(t)
                state = first_state(env.reset(variation=variations[t][v], with_valid=True, gold_path=True))
                for action in env.gold_actions():
                    out.append((state, action))
                    step = env.step(action, with_valid=True)
                    if step.done:
                        break
                    state = state.then(action, Observation(step.observation, step.info, step.reward),
                                       step.info["valid_actions"])
            v += 1
    return out[:num]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a ScienceWorld pipeline run whose 'models' stage finished")
    ap.add_argument("--states", type=int, default=40, help="gold-path states scored per model and mode")
    ap.add_argument("--episodes", type=int, default=8, help="episodes per model and mode (0: none)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args(argv)

    from londi_jax.agents.londi import LondiAgent
    from londi_jax.agents.policy import LMPolicy
    from londi_jax.agents.routers import QuickOnly
    from londi_jax.experiments.pipeline import Pipeline

    pipe = Pipeline.from_run_dir(args.run)
    if pipe.config.env.name != "scienceworld":
        raise SystemExit(f"{args.run} is a {pipe.config.env.name} run; this benchmark needs a ScienceWorld one")
    fmt = pipe.family.prompt_format()
    pairs = gold_states(pipe.family.tasks(), pipe.config.env.simplifications, args.states)
    specs = pipe.family.specs("eval", args.episodes) if args.episodes else []
    rows = []
    try:
        for name in ("quick", "deepthink"):
            lm = pipe.model(name)
            for mode in ("score", "generate"):
                pol = LMPolicy(lm, fmt, name=name, mode=mode)
                pol([pairs[0][0]])  # compiles of the first shapes apart
                secs, hits = [], 0
                for state, gold in pairs:
                    t0 = time.perf_counter()
                    out = pol([state])
                    secs.append(time.perf_counter() - t0)
                    hits += out.action_strings(out.actions())[0] == gold
                row: dict[str, Any] = {"model": name, "mode": mode, "states": len(pairs),
                                       "gold_accuracy": hits / len(pairs), "s_per_state": statistics.median(secs),
                                       "s_per_state_mean": statistics.fmean(secs)}
                if specs:
                    res = LondiAgent(pol, pol, QuickOnly()).run(specs, pipe.config.eval.num_envs, progress=False,
                                                                pool=pipe.pool)
                    summ = res.summary()
                    steps = max(sum(e.length for e in res.episodes), 1)
                    row.update({"episodes": len(specs), "mean_score": summ["mean_score"],
                                "success_rate": summ["success_rate"], "s_per_step": res.wall_seconds / steps,
                                "model_s_per_step": sum(e.quick_seconds for e in res.episodes) / steps})
                rows.append(row)
    finally:
        pipe.pool.close()
    result = {"run": str(args.run), "tasks": pipe.family.tasks(), "rows": rows}
    path = write_result(f"sw_policy_modes_{device_tag()}", result, args.results_dir)
    if args.json:
        print(json.dumps({"machine": machine_info(), **result}, indent=2, default=str))
        return 0
    print(f"score vs generate+map on {args.run} (tasks {', '.join(result['tasks'])})")
    print(render_table(rows, [c for c in ("model", "mode", "gold_accuracy", "s_per_state", "episodes", "mean_score",
                                          "success_rate", "s_per_step", "model_s_per_step") if c in rows[0]]))
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
