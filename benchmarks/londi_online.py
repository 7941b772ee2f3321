"""The whole LONDI loop in one compiled program vs the host rollout loop, same models.

Device loop (``agents.online``): BabyAI-Text in JAX, prompts built as token ids, QUICK scoring
every env, the switch acting, DEEPTHINK on a compacted batch of ``capacity = N/4`` rows (paid
every step whatever the switch does), actions sampled, envs stepped, and the PQN update, all in
``jit(train_chunk)``. One switcher at N = 32, 128, 256 envs; then ``--members`` switchers (vmapped,
LM weights shared) at 8 envs each, to give switchers trained per second for a training run of the
jax-online preset's length.

Host loop: ``LondiAgent`` with N = 32 envs in lockstep (``benchmarks/londi_rollout.py``'s batched
loop: one QUICK call and at most one DEEPTHINK call per step, a QUICK-confidence threshold router at
about 30% calls), on the Python BabyAI-Text env, measured in the same run.

Models: the cpu-small shapes with random weights (throughput does not depend on the weights), or
a finished run's trained models (``--run DIR``). Prompt buffer ``--max-len`` tokens (cut prompts
are counted and reported). Timing: each program is compiled and run once untimed (compile time
reported apart), then timed with ``block_until_ready``. Target: device >= 10x the host loop.

Work per env step is reported beside the speed: the host loop's model FLOPs (real tokens only,
the engine's count) and the device program's FLOPs as XLA counts them (``cost_analysis``: every
padded position of the fixed prompt buffer and of DEEPTHINK's fixed batch, the env, the learner).
Where both loops are bound by arithmetic (a CPU), the speedup is capped near the ratio of the
FLOP rates they reach over the ratio of their FLOPs per step.

Run: ``python benchmarks/londi_online.py [--run runs/jax-online] [--updates 4] [--json]``; writes
``benchmarks/results/londi_online_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax

from londi_jax.agents.londi import episode_specs
from londi_jax.agents.online import LondiEnv
from londi_jax.envs.babyai_jax import levels
from londi_jax.experiments.config import preset
from londi_jax.switcher.config import SwitcherConfig
from londi_jax.switcher.sweep import stack_hparams
from londi_jax.switcher.train import make_train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_tag, render_table, write_result  # noqa: E402
from londi_rollout import build_models, host_play, threshold_for  # noqa: E402


def step_flops(env: LondiEnv, params: Any, n: int) -> float:
    """FLOPs of one ``step_batch`` of ``n`` envs per env, as XLA counts them (``cost_analysis`` of
    that program alone: XLA counts a loop's body once, so the training chunk, a scan, cannot be
    costed whole). Every padded prompt position and DEEPTHINK's whole fixed batch count."""
    feats, state = jax.eval_shape(lambda k: env.reset_batch(k, params, n), jax.random.key(0))
    g = jax.ShapeDtypeStruct((n,), jax.numpy.int32)
    cost = jax.jit(env.step_batch).lower(jax.random.key(0), state, g, params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) / n if cost else float("nan")


def device_loop(q, d, env_params, num_envs: int, members: int, updates: int, rollout: int, max_len: int
                ) -> dict[str, Any]:
    env = LondiEnv(q, d, capacity=max(num_envs // 4, 1), resets=max(num_envs // 8, 1), max_len=max_len)
    params = env.params(env_params, q, d)
    cfg = SwitcherConfig(obs_dim=env.obs_dim, hidden=(64, 64), learner="pqn", num_envs=num_envs,
                         rollout_len=rollout, num_updates=1000, num_minibatches=4)
    tr = make_train(cfg, env, params)
    hp = stack_hparams([{"c": 0.02 * (i % 5), "eps_start": 0.3} for i in range(members)], {})
    keys = jax.random.split(jax.random.key(0), members)
    init = jax.jit(jax.vmap(tr.init_train_state, in_axes=(0, 0, None)))
    chunk = jax.jit(jax.vmap(tr.train_chunk, in_axes=(0, 0, None, None)), static_argnums=2)
    t0 = time.perf_counter()
    ts = jax.block_until_ready(init(keys, hp, params))
    ts, _ = jax.block_until_ready(chunk(ts, hp, updates, params))  # compile + one untimed run
    compile_s = time.perf_counter() - t0
    flops = step_flops(env, params, num_envs)
    t0 = time.perf_counter()
    ts, m = jax.block_until_ready(chunk(ts, hp, updates, params))
    secs = time.perf_counter() - t0
    steps = members * num_envs * rollout * updates
    return {"num_envs": num_envs, "members": members, "updates": updates, "rollout_len": rollout,
            "capacity": env.capacity, "resets": env.resets, "max_len": max_len, "env_steps": steps, "seconds": secs,
            "env_steps_per_s": steps / secs, "seconds_per_update": secs / updates, "compile_and_first_run_s": compile_s,
            "xla_flops_per_env_step": flops, "gflops_per_s": flops * steps / secs / 1e9,
            "deepthink_rows_per_step": float(m["deep_rows"].sum() / (members * rollout * updates)),
            "overflow": int(m["overflow"].sum()), "reset_shortfall": int(m["reset_shortfall"].sum()),
            "cut_prompts": int(m["cut_prompts"].sum()), "episodes": int(m["episodes"].sum())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="a finished pipeline run: use its trained models")
    ap.add_argument("--num-envs", default="32,128,256", help="envs of the one-switcher device loop (comma list)")
    ap.add_argument("--members", type=int, default=64, help="switchers trained together (8 envs each)")
    ap.add_argument("--updates", type=int, default=4, help="PQN updates timed per program")
    ap.add_argument("--rollout", type=int, default=16, help="env steps per PQN update")
    ap.add_argument("--max-len", type=int, default=320, help="prompt buffer in tokens")
    ap.add_argument("--episodes", type=int, default=64, help="episodes of the host loop")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = preset("jax-online")
    e = cfg.env
    q, d, source = build_models(args.run, 32)
    env_params = levels.make_params(kinds=e.kinds, room_size=e.room_size, num_dists=e.num_dists, phrase_filter="train")
    out: dict[str, Any] = {"models": source, "max_len": args.max_len, "results": {}}
    rows = []

    specs = episode_specs(e.eval_level, args.episodes, 555_000, e.kinds, **e.level_kwargs())
    thr = threshold_for(q, specs)
    host_play(q, d, specs, 32, thr)  # compiles every batch / length bucket the timed run meets
    secs, res = host_play(q, d, specs, 32, thr)
    summ = res.summary()
    flops = summ["flops_per_episode"] * summ["episodes"]  # the models' forward FLOPs of real tokens
    host = {"num_envs": 32, "env_steps": res.env_steps, "seconds": secs, "env_steps_per_s": res.env_steps / secs,
            "call_rate": summ["call_rate"], "model_flops_per_env_step": flops / res.env_steps,
            "gflops_per_s": flops / secs / 1e9}
    out["results"]["host loop N=32"] = host
    rows.append({"loop": "host loop (LondiAgent, Python env)", "N": 32, "env-steps/s": host["env_steps_per_s"],
                 "vs host": 1.0, "MFLOP/step": host["model_flops_per_env_step"] / 1e6, "GFLOP/s": host["gflops_per_s"],
                 "compile s": float("nan")})

    for n in (int(x) for x in args.num_envs.split(",")):
        r = device_loop(q, d, env_params, n, 1, args.updates, args.rollout, args.max_len)
        out["results"][f"device N={n}"] = r
        rows.append({"loop": "device, one switcher", "N": n, "env-steps/s": r["env_steps_per_s"],
                     "vs host": r["env_steps_per_s"] / host["env_steps_per_s"],
                     "MFLOP/step": r["xla_flops_per_env_step"] / 1e6, "GFLOP/s": r["gflops_per_s"],
                     "compile s": r["compile_and_first_run_s"]})
    if args.members:
        r = device_loop(q, d, env_params, 8, args.members, args.updates, args.rollout, args.max_len)
        preset_updates = cfg.online.num_updates * cfg.online.rollout_len * cfg.online.num_envs / (8 * args.rollout)
        r["switchers_per_s_at_preset_length"] = args.members / (r["seconds_per_update"] * preset_updates)
        out["results"][f"device {args.members} switchers x 8 envs"] = r
        rows.append({"loop": f"device, {args.members} switchers x 8 envs", "N": 8 * args.members,
                     "env-steps/s": r["env_steps_per_s"], "vs host": r["env_steps_per_s"] / host["env_steps_per_s"],
                     "MFLOP/step": r["xla_flops_per_env_step"] / 1e6, "GFLOP/s": r["gflops_per_s"],
                     "compile s": r["compile_and_first_run_s"]})
    best = max(v["env_steps_per_s"] for k, v in out["results"].items() if k.startswith("device N="))
    out["speedup"] = best / host["env_steps_per_s"]
    out["target"] = {"speedup_at_least": 10.0, "met": out["speedup"] >= 10.0}
    path = write_result(f"londi_online_{device_tag()}", out)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(render_table(rows, ["loop", "N", "env-steps/s", "vs host", "MFLOP/step", "GFLOP/s", "compile s"]))
        print(f"\nbest one-switcher device loop / host loop: {out['speedup']:.1f}x (target >= 10x); models: {source}; "
              f"saved to {path}")
    return out


if __name__ == "__main__":
    main()
