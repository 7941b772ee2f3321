"""LONDI rollout throughput: N = 32 BabyAI-Text envs in lockstep vs one env at a time.

Same models (QUICK and DEEPTHINK with the ``cpu-small`` preset's shapes; a finished run's
trained models with ``--run DIR``), same router (QUICK-confidence threshold calibrated to about
30% DEEPTHINK calls, a stand-in for a learned switch with the same call pattern: QUICK on every
env, DEEPTHINK on the switched ones), same episodes. The batched agent makes one QUICK call and
at most one DEEPTHINK call per lockstep step; the one-env loop makes them per env.

Timing: every shape both loops will meet is compiled first in an untimed warm-up over the same
episodes (compile time reported separately); then each loop plays the episodes again, timed
with ``time.perf_counter`` (model outputs are ready when a call returns: ``score_tokens``
blocks). Throughput = env-steps / s. Target: batched >= 10x the one-env loop.

The same loops with zero-cost stand-in models (uniform scores, returned at once) measure what
no batching can remove: env stepping, prompt building, routing. The one-env loop's time per
step divided by that floor is the ceiling on the batched/one-env ratio on this machine
(Amdahl): when the ceiling is under 10x, the target cannot be met here with any model speed.

Run: ``python benchmarks/londi_rollout.py [--episodes 64] [--run runs/cpu-small] [--json]``;
writes ``benchmarks/results/londi_rollout_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from londi_jax.agents.londi import LondiAgent, episode_specs
from londi_jax.agents.prompts import GlamFormat
from londi_jax.agents.rollout import first_state
import numpy as np

from londi_jax.agents.policy import LMPolicy, PolicyOutput
from londi_jax.agents.routers import ConfidenceRouter, calibrate_threshold, confidence
from londi_jax.envs.babyai_text.prompt import ACTIONS
from londi_jax.experiments.config import preset
from londi_jax.lm.config import ModelConfig
from londi_jax.lm.engine import LanguageModel
from londi_jax.lm.hf_loader import init_model, load_hf_directory
from londi_jax.lm.tokenizer import train_word_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_tag, render_table, write_result  # noqa: E402


def build_models(run: str | None, batch: int) -> tuple[LanguageModel, LanguageModel, str]:
    if run:
        q = load_hf_directory(Path(run) / "models" / "quick", progress=False)
        d = load_hf_directory(Path(run) / "models" / "deepthink", progress=False)
        source = f"trained models of {run}"
    else:  # the cpu-small shapes with random weights: throughput does not depend on the weights
        cfg = preset("cpu-small")
        e = cfg.env
        specs = episode_specs(e.level, 64, 0, e.kinds, **e.level_kwargs())
        texts = [GlamFormat().prompt(first_state(s.make()[1])) for s in specs]
        tok = train_word_tokenizer(texts + list(ACTIONS), vocab_size=cfg.quick.vocab_size)
        lms = []
        for name, spec in (("quick", cfg.quick), ("deepthink", cfg.deep)):
            mc = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=spec.hidden_size,
                             num_layers=spec.num_layers, num_heads=spec.num_heads, num_kv_heads=spec.num_heads,
                             head_dim=spec.head_dim, intermediate_size=spec.intermediate_size, tie_embeddings=True,
                             max_position_embeddings=spec.max_position_embeddings)
            lms.append(LanguageModel(mc, init_model(mc, 0), tok, name=name))
        q, d = lms
        source = "cpu-small shapes, random weights"
    for lm in (q, d):
        lm.batch_size = batch
    return q, d, source


class ZeroCostPolicy:
    """Stands in for an LM at no cost: uniform action scores, returned at once."""

    def __init__(self, name: str):
        self.name, self.calls, self.prompts, self.seconds, self.flops = name, 0, 0, 0.0, 0.0

    fmt = GlamFormat()

    def __call__(self, states: list[Any]) -> PolicyOutput:
        self.calls += 1
        self.prompts += len(states)
        n = len(states)
        return PolicyOutput(np.zeros((n, len(ACTIONS))), np.zeros((n, 2), np.float32), 0.0, 0.0, [ACTIONS] * n)


def threshold_for(q_lm: LanguageModel, specs: list[Any], rate: float = 0.3) -> float:
    """A QUICK-margin threshold calling DEEPTHINK at about ``rate`` of the first states of ``specs``."""
    probe = LMPolicy(q_lm)([first_state(s.make()[1]) for s in specs[:32]])
    return calibrate_threshold(confidence(probe.logprobs, "margin"), rate, "margin")


def host_play(q_lm: LanguageModel, d_lm: LanguageModel, specs: list[Any], num_envs: int, thr: float,
              free: bool = False) -> tuple[float, Any]:
    """The host rollout loop (``LondiAgent``, ``num_envs`` in lockstep) over ``specs`` with the
    threshold router: ``(seconds, RolloutResult)``; ``free``: zero-cost stand-in models."""
    if free:
        quick, deep = ZeroCostPolicy("quick"), ZeroCostPolicy("deepthink")
    else:
        quick, deep = LMPolicy(q_lm, name="quick"), LMPolicy(d_lm, name="deepthink")
    agent = LondiAgent(quick, deep, ConfidenceRouter(thr, "margin"), sample_actions=True, seed=0)
    t0 = time.perf_counter()
    res = agent.run(specs, num_envs, progress=False)
    return time.perf_counter() - t0, res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--num-envs", type=int, default=32)
    ap.add_argument("--run", default=None, help="a finished pipeline run: use its trained models")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = preset("cpu-small")
    e = cfg.env
    specs = episode_specs(e.eval_level, args.episodes, 555_000, e.kinds, **e.level_kwargs())
    q_lm, d_lm, source = build_models(args.run, args.num_envs)

    thr = threshold_for(q_lm, specs)  # a threshold router at ~30% calls

    def play(num_envs: int, free: bool = False) -> tuple[float, Any]:
        return host_play(q_lm, d_lm, specs, num_envs, thr, free)

    t0 = time.perf_counter()
    play(args.num_envs)  # compiles every batch/length bucket the timed runs meet
    play(1)
    warm_s = time.perf_counter() - t0
    rows = []
    out: dict[str, Any] = {"models": source,
                           "episodes": args.episodes, "router": f"confidence threshold {thr:.4f} (margin)",
                           "warmup_and_compile_s": warm_s, "results": {}}
    loops = (("one env at a time", 1, False), (f"batched N={args.num_envs}", args.num_envs, False),
             ("zero-cost models, one env", 1, True), (f"zero-cost models, N={args.num_envs}", args.num_envs, True))
    for name, n, free in loops:
        secs, res = play(n, free)
        summ = res.summary()
        r = {"num_envs": n, "seconds": secs, "env_steps": res.env_steps, "env_steps_per_s": res.env_steps / secs,
             "quick_calls": res.model_calls["quick"], "deep_calls": res.model_calls["deep"],
             "call_rate": summ["call_rate"], "success_rate": summ["success_rate"]}
        out["results"][name] = r
        rows.append({"loop": name, "env-steps/s": r["env_steps_per_s"], "env steps": r["env_steps"],
                     "QUICK calls": r["quick_calls"], "DEEPTHINK calls": r["deep_calls"],
                     "call rate": r["call_rate"], "s": secs})
    one, bat = out["results"]["one env at a time"], out["results"][f"batched N={args.num_envs}"]
    out["speedup"] = bat["env_steps_per_s"] / one["env_steps_per_s"]
    floor = out["results"][f"zero-cost models, N={args.num_envs}"]
    out["speedup_ceiling"] = floor["env_steps_per_s"] / one["env_steps_per_s"]
    out["target"] = {"speedup_at_least": 10.0, "met": out["speedup"] >= 10.0,
                     "reachable_here": out["speedup_ceiling"] >= 10.0}
    path = write_result(f"londi_rollout_{device_tag()}", out)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(render_table(rows, ["loop", "env-steps/s", "env steps", "QUICK calls", "DEEPTHINK calls", "call rate", "s"]))
        print(f"\nbatched / one-env: {out['speedup']:.1f}x (target >= 10x); ceiling here (zero-cost models, "
              f"N={args.num_envs}, vs the one-env loop): {out['speedup_ceiling']:.1f}x; warm-up+compile {warm_s:.1f} s; "
              f"models: {source}\nsaved to {path}")
    return out


if __name__ == "__main__":
    main()
