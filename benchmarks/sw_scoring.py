"""Scoring every valid action of real ScienceWorld states: one shared prompt prefill vs one forward
per candidate.

    python benchmarks/sw_scoring.py [--model smollm2-135m-instruct] [--states 3] [--json]

States: task 1-1 (boil) and 4-1 (find a living thing), ``easy``, variation 0 of the test split,
the first steps of the gold path, each with its valid actions (typically 100-300) and the
SwiftSage-style prompt (``agents.prompts.SwiftSageFormat``, look and inventory included).

(a) shared: ``LMPolicy.score``: the prompt is prefilled once and every valid action is scored
    against its KV cache, all candidates of a state in one call.
(b) per candidate: the same model scores each (prompt, action) pair as its own prompt with one
    candidate (the prompt is re-run for every action, as systems without a shared cache do). Its
    cost is linear in the number of actions by construction, so it is timed on the first
    ``--baseline-candidates`` actions and scaled to all of them (both figures are reported).
Both give the same log-probabilities on the timed actions (checked); the table reports seconds
(median of warm runs, compile apart), useful FLOPs and the ratio. Results: benchmarks/results/sw_scoring_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_tag, machine_info, render_table, write_result  # noqa: E402


def real_states(num: int) -> list[Any]:
    """``num`` states from the gold paths of tasks 1-1 and 4-1 (test split, variation 0)."""
    from londi_jax.agents.prompts import Observation
    from londi_jax.agents.rollout import first_state
    from londi_jax.envs.scienceworld import ScienceWorldTextEnv

    states = []
    with ScienceWorldTextEnv("1-1", split="test", with_look_inventory=True, step_limit=10**6) as env:
        for task in ("1-1", "4-1"):
            env.set_task(task)
            first = env.reset(variation=env.variations[0], with_valid=True, gold_path=True)
            state = first_state(first)
            states.append(state)
            for action in env.gold_actions()[:num]:
                out = env.step(action, with_valid=True)
                if out.done:
                    break
                state = state.then(action, Observation(out.observation, out.info, out.reward),
                                   out.info["valid_actions"])
                states.append(state)
    return states[:num]


def timed(fn, repeats: int) -> dict[str, float]:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"first_call_s": first, "median_s": med, "compile_s_est": max(first - med, 0.0), "times_s": times}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--states", type=int, default=3, help="real states to score (gold-path prefix)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--baseline-candidates", type=int, default=24, help="actions timed in (b), then scaled")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args(argv)

    from londi_jax.agents.policy import LMPolicy
    from londi_jax.agents.prompts import SwiftSageFormat
    from londi_jax.lm import load_lm

    load_start = os.getloadavg()
    states = real_states(args.states)
    lm = load_lm(args.model, progress=not args.json)
    pol = LMPolicy(lm, SwiftSageFormat())
    rows = []
    for k, s in enumerate(states):
        prompt, cands = pol.fmt.prompt(s), list(pol.fmt.candidates(s))
        shared_out: dict[str, Any] = {}

        def shared() -> None:
            shared_out["r"] = pol.score([prompt], [cands])

        sub = cands[:args.baseline_candidates]

        def per_candidate() -> None:
            shared_out["p"] = lm.score([prompt] * len(sub), [[c] for c in sub])

        ts, tp = timed(shared, args.repeats), timed(per_candidate, 1)
        scale = len(cands) / len(sub)
        a = shared_out["r"].logprobs[0][:len(sub)]
        b = np.array([x[0] for x in shared_out["p"].logprobs])
        rows.append({
            "state": k, "task": s.mission[:40], "step": s.step, "candidates": len(cands),
            "prompt_tokens": len(lm.tokenizer.encode(prompt)),
            "shared_s": ts["median_s"], "per_candidate_timed": len(sub), "per_candidate_timed_s": tp["median_s"],
            "per_candidate_s": tp["median_s"] * scale, "speedup": tp["median_s"] * scale / ts["median_s"],
            "shared_flops": shared_out["r"].flops, "per_candidate_flops": shared_out["p"].cost.flops * scale,
            "max_abs_logprob_diff": float(np.max(np.abs(a - b))),
            "shared_compile_s": ts["compile_s_est"], "per_candidate_compile_s": tp["compile_s_est"],
            "timing_shared": ts, "timing_per_candidate": tp,
        })
    result = {"model": lm.name, "states": rows, "load_average": {"start": load_start, "end": os.getloadavg()}}
    path = write_result(f"sw_scoring_{device_tag()}", result, args.results_dir)
    if args.json:
        print(json.dumps({"machine": machine_info(), **result}, indent=2, default=str))
        return 0
    print(f"{lm.name}: every valid action of {len(rows)} real ScienceWorld states, SwiftSage prompt")
    print(render_table(rows, ["state", "step", "candidates", "prompt_tokens", "shared_s", "per_candidate_timed",
                              "per_candidate_timed_s", "per_candidate_s", "speedup", "max_abs_logprob_diff"]))
    print("per_candidate_s: the timed actions' seconds scaled to all candidates (linear by construction)")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
