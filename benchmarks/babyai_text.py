"""BabyAI-Text speed: text generation, env steps, level generation, bot demos (CPU, one process).

Side by side in one run, on the same recorded observations / action sequences:

* ``describe`` per observation (the table-driven sentence generator),
* raw minigrid step vs BabyAI-Text step (minigrid step + sentences + GLAM prompt) vs a
  fork-style step that re-renders the view for the text (the original ``gen_graph`` called
  ``gen_obs_grid`` a second time; here the text reuses ``obs["image"]``),
* resets per second per Mixed task kind (rejection sampling included),
* expert (bot) episodes per second.

Run: ``python benchmarks/babyai_text.py [--steps 10000]``; prints a table and writes
``benchmarks/results/babyai_text.json`` with the machine recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import minigrid
import numpy as np

from londi_jax.envs.babyai_text import ACTIONS, MIXED_KINDS, describe, make_babyai_text
from londi_jax.envs.babyai_text.bot import expert_episode
from londi_jax.envs.babyai_text.env import _quiet
from londi_jax.envs.babyai_text.levels import make_level

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info as common_machine_info  # noqa: E402


def _best_rate(fn, n_items: int, repeats: int = 3) -> float:
    """Items per CPU-second, best of ``repeats`` timed runs after one warm-up run.

    Everything here is single-threaded Python, so process CPU time is the honest measure on a
    machine shared with other jobs (wall time would mostly measure the neighbours)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return n_items / best


def bench_steps(n_steps: int) -> dict[str, float]:
    acts = np.random.default_rng(0).integers(0, len(ACTIONS), size=n_steps).tolist()

    def raw(text: str):
        def run():
            env = make_level("BabyAI-MixedTrainLocal-v0", kind="putnext")
            with _quiet():
                env.reset(seed=0)
                for a in acts:
                    obs, _, term, trunc, _ = env.step(a)
                    if text == "reuse":
                        describe(obs["image"])
                    elif text == "rerender":  # what the fork did: render the view again
                        describe(env.gen_obs()["image"])
                    if term or trunc:
                        env.reset()

        return run

    def text_env():
        env = make_babyai_text("BabyAI-MixedTrainLocal-v0", seed=0, kind="putnext")
        env.reset(seed=0)
        for a in acts:
            if env.step(ACTIONS[a]).done:
                env.reset()

    return {
        "minigrid_step": _best_rate(raw("none"), n_steps),
        "minigrid_step+describe(obs image)": _best_rate(raw("reuse"), n_steps),
        "minigrid_step+describe(re-rendered view, fork-style)": _best_rate(raw("rerender"), n_steps),
        "BabyAITextEnv.step (text + GLAM prompt)": _best_rate(text_env, n_steps),
    }


def bench_describe(n_obs: int) -> float:
    env = make_babyai_text("BabyAI-MixedTrainLocal-v0", seed=0, kind="putnext")
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    images = []
    while len(images) < n_obs:
        images.append(env.unwrapped.gen_obs()["image"])
        if env.step(ACTIONS[int(rng.integers(6))]).done:
            env.reset()
    return _best_rate(lambda: [describe(im) for im in images], n_obs)


def bench_resets(n: int) -> dict[str, float]:
    out = {}
    for level in ("BabyAI-MixedTrainLocal-v0", "BabyAI-MixedTestLocal-v0"):
        for kind in MIXED_KINDS:
            env = make_level(level, kind=kind)

            def run(env=env):
                with _quiet():
                    for s in range(n):
                        env.reset(seed=s)

            out[f"{level} {kind}"] = _best_rate(run, n, repeats=1)
    return out


def bench_bot(n: int) -> dict[str, float]:
    out = {}
    for level in ("BabyAI-GoToLocal-v0", "BabyAI-PutNextLocal-v0", "BabyAI-MixedTrainLocal-v0"):
        steps = []

        def run(level=level):
            steps.clear()
            for s in range(n):
                steps.append(len(expert_episode(level, s).steps))

        eps = _best_rate(run, n, repeats=1)
        out[level] = {"episodes_per_s": eps, "steps_per_s": eps * float(np.mean(steps))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "babyai_text.json"))
    args = parser.parse_args()

    describe_rate = bench_describe(5000)
    steps = bench_steps(args.steps)
    resets = bench_resets(50)
    bot = bench_bot(50)

    print(f"describe(): {describe_rate:,.0f} observations/s ({1e6 / describe_rate:.1f} us each)")
    base = steps["minigrid_step"]
    for name, rate in steps.items():
        print(f"{name:55s} {rate:9,.0f} steps/s  ({rate / base:.2f}x raw minigrid)")
    reuse, rerender = steps["minigrid_step+describe(obs image)"], steps["minigrid_step+describe(re-rendered view, fork-style)"]
    print(f"reusing obs['image'] instead of re-rendering: {reuse / rerender:.2f}x faster")
    for name, rate in resets.items():
        print(f"reset {name:45s} {rate:8,.0f} resets/s")
    for name, r in bot.items():
        print(f"bot {name:30s} {r['episodes_per_s']:7,.1f} episodes/s  {r['steps_per_s']:8,.0f} steps/s")

    result = {
        "benchmark": "babyai_text",
        "machine": {
            **common_machine_info(),
            "minigrid": getattr(minigrid, "__version__", "3.2.0"),
            "device": "cpu (single process)",
            "timer": "time.process_time (CPU seconds, best of 3 after warm-up)",
        },
        "describe_obs_per_s": describe_rate,
        "steps_per_s": steps,
        "ratio_reuse_vs_rerender": reuse / rerender,
        "resets_per_s": resets,
        "bot": bot,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
