"""Switcher training throughput: jitted + vmapped JAX sweeps vs the usual PyTorch loop.

What one *update* is (identical on both sides, see ``londi_jax.switcher.train``):

* DQN: one lockstep step of ``num_envs = 16`` toy chains (act epsilon-greedily, step, add the 16
  transitions to a 10,000-slot replay ring), then one Double-DQN gradient step on a 128-sample
  minibatch (MLP 64-64, Adam behind global-norm clipping, hard target copy every 100 updates).
* PQN: a rollout of 8 steps x 16 envs, backward Q(lambda) targets, then 2 epochs x 2 shuffled
  minibatches of 64 (LayerNorm MLP 64-64, no replay, no target net).

JAX: ``jit(vmap(train_chunk))`` trains a sweep of G members (different per-call costs c) in ONE
program, G = 1, 8, 64, 256 (and 1024 on a GPU). Lowering + compilation are timed apart; one
warm-up call (which also fills the DQN buffer past ``learning_starts``), then repeated timed calls
ending in ``block_until_ready``; updates/s = G x updates per call / median seconds.
PyTorch (CPU, same network, batch, buffer, optimizer and env, in
``benchmarks/torch_reference``): a Python loop over configurations, each one learner + env
trained update by update; timed after a warm-up that also fills the buffer. Its throughput does
not depend on G (members run one after another), so it is measured on a few members and quoted
per G. Torch runs with 1 and with 2 intra-op threads, before and after the JAX runs; the best
figure is the reference. Wall-clock and CPU-time (process_time) rates are both reported: on a
shared machine the CPU-time figures are the stable ones.
Before timing, one update on identical weights and data is checked to agree between JAX and torch.

Run: ``python benchmarks/switcher_throughput.py [--quick] [--json]``; writes
``benchmarks/results/switcher_throughput_<device>.json`` (``--quick``: ``..._quick.json``).
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

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_tag, machine_info, render_table, time_compile, write_result  # noqa: E402
from torch_reference.learners import LearnerSpec, TorchDQN, TorchPQN  # noqa: E402
from torch_reference.toy import TorchToy, run_dqn, run_pqn  # noqa: E402

from londi_jax.switcher import dqn, pqn  # noqa: E402
from londi_jax.switcher.config import HParams, SwitcherConfig  # noqa: E402
from londi_jax.switcher.core import Transition  # noqa: E402
from londi_jax.switcher.sweep import stack_hparams  # noqa: E402
from londi_jax.switcher.toy import ToyEnv  # noqa: E402
from londi_jax.switcher.train import make_train  # noqa: E402

ENV = ToyEnv()
ENV_PARAMS = ENV.default_params(max_steps=64)
HORIZON = 100_000  # epsilon-schedule horizon (both sides), far beyond the timed updates
TARGET_CALL_S = 1.0  # aim for about this long per timed JAX call


def make_config(learner: str) -> SwitcherConfig:
    common = dict(obs_dim=ENV.obs_dim, hidden=(64, 64), num_envs=16, num_updates=HORIZON)
    if learner == "dqn":
        return SwitcherConfig(learner="dqn", buffer_size=10_000, batch_size=128,
                              learning_starts=256, updates_per_step=1, **common)
    return SwitcherConfig(learner="pqn", layer_norm=True, rollout_len=8, num_epochs=2,
                          num_minibatches=2, **common)


def spec_of(config: SwitcherConfig, hp: HParams) -> LearnerSpec:
    return LearnerSpec(in_dim=config.input_dim, hidden=config.hidden, layer_norm=config.layer_norm,
                       buffer_size=config.buffer_size, batch_size=config.batch_size,
                       num_envs=config.num_envs, rollout_len=config.rollout_len,
                       num_epochs=config.num_epochs, num_minibatches=config.num_minibatches,
                       lr=float(hp.lr), gamma=float(hp.gamma), lam=float(hp.lam), c=float(hp.c),
                       target_period=int(hp.target_period), max_grad_norm=float(hp.max_grad_norm))


# ----------------------------------------------------------------------------- parity check


def _torch_batch(tr: Transition) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(getattr(tr, k)).copy()) for k in
            ("obs", "g", "reward", "next_obs", "terminated", "truncated", "next_can_call")}


def _random_transition(key: jax.Array, shape: tuple[int, ...], dim: int) -> Transition:
    ks = jax.random.split(key, 6)
    return Transition(obs=jax.random.normal(ks[0], (*shape, dim)),
                      g=jax.random.bernoulli(ks[1], 0.5, shape).astype(jnp.int32),
                      reward=jax.random.uniform(ks[2], shape),
                      next_obs=jax.random.normal(ks[3], (*shape, dim)),
                      terminated=jax.random.bernoulli(ks[4], 0.2, shape),
                      truncated=jnp.zeros(shape, bool),
                      next_can_call=jax.random.bernoulli(ks[5], 0.7, shape))


def _max_param_diff(jax_params: Any, net: torch.nn.Module) -> float:
    probe = type(net)(net.layers[0].in_features, [lin.out_features for lin in net.layers],
                      net.norms is not None)
    probe.load_flax(nnx.to_pure_dict(jax_params))
    return max(float((a - b).abs().max()) for a, b in zip(probe.state_dict().values(),
                                                           net.state_dict().values()))


def parity_check(steps: int = 3) -> dict[str, float]:
    """Run ``steps`` updates of each learner on identical weights/data in JAX and torch."""
    out = {}
    hp = HParams.create(c=0.1, target_period=2)  # target copies happen inside the check
    key = jax.random.key(123)
    # DQN
    cfg = make_config("dqn")
    state = dqn.init(cfg, hp, key)
    ref = TorchDQN(spec_of(cfg, hp))
    ref.q.load_flax(nnx.to_pure_dict(state.params))
    ref.target.load_flax(nnx.to_pure_dict(state.target_params))
    upd = jax.jit(lambda s, b: dqn.update(cfg, hp, s, b))
    for i in range(steps):
        batch = _random_transition(jax.random.fold_in(key, i), (cfg.batch_size,), cfg.input_dim)
        state, _ = upd(state, batch)
        ref.update_on(_torch_batch(batch))
    out["dqn_params_max_abs_diff"] = _max_param_diff(state.params, ref.q)
    out["dqn_target_max_abs_diff"] = _max_param_diff(state.target_params, ref.target)
    # PQN
    cfg = make_config("pqn")
    pstate = pqn.init(cfg, hp, key)
    pref = TorchPQN(spec_of(cfg, hp))
    pref.q.load_flax(nnx.to_pure_dict(pstate.params))
    n = cfg.rollout_len * cfg.num_envs
    pupd = jax.jit(lambda s, r, k: pqn.update(cfg, hp, s, r, k))
    for i in range(steps):
        k_data, k_upd = jax.random.split(jax.random.fold_in(key, 100 + i))
        rollout = _random_transition(k_data, (cfg.rollout_len, cfg.num_envs), cfg.input_dim)
        rollout = rollout.replace(truncated=jax.random.bernoulli(k_data, 0.1, rollout.g.shape))
        # the same shuffles pqn.update draws from its key
        perms = [torch.from_numpy(np.asarray(pqn.shuffle_indices(k, n)).copy())
                 for k in jax.random.split(k_upd, cfg.num_epochs)]
        pstate, _ = pupd(pstate, rollout, k_upd)
        pref.update(_torch_batch(rollout), perms)
    out["pqn_params_max_abs_diff"] = _max_param_diff(pstate.params, pref.q)
    return out


# ----------------------------------------------------------------------------- JAX side


def updates_per_call(learner: str, members: int) -> int:
    """Enough updates per call to dominate dispatch, small enough for big sweeps."""
    base = 400 if learner == "dqn" else 100
    return max(8 if learner == "pqn" else 20, base // max(1, members // 8))


def _load() -> list[float] | None:
    """1/5/15-minute load averages: on a shared machine other jobs skew every timing."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _timed(fn):
    """``(result, wall_s, cpu_s)``; CPU time (all threads of this process) is far less skewed
    than wall time when other jobs share the machine."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def bench_jax(learner: str, members: int, repeats: int) -> dict[str, Any]:
    config = make_config(learner)
    trainer = make_train(config, ENV, ENV_PARAMS)
    k = updates_per_call(learner, members)
    hp = stack_hparams([{"c": c} for c in np.linspace(0.0, 0.3, members)])
    rngs = jax.random.split(jax.random.key(0), members)
    init = jax.jit(jax.vmap(trainer.init_train_state))
    chunk = jax.jit(jax.vmap(lambda ts, h: trainer.train_chunk(ts, h, k)), donate_argnums=0)
    ts = jax.block_until_ready(init(rngs, hp))
    lower_s, compile_s, compiled = time_compile(chunk, ts, hp)
    # warm-up (DQN: fills the buffer past learning_starts)
    (ts, m), warm_s, _ = _timed(lambda: jax.block_until_ready(compiled(ts, hp)))
    walls, cpus = [], []
    for _ in range(repeats):
        (ts, m), wall, cpu = _timed(lambda: jax.block_until_ready(compiled(ts, hp)))
        walls.append(wall)
        cpus.append(cpu)
    if learner == "dqn":  # every timed update made a gradient step
        assert int(jnp.min(jnp.sum(m["grad_norm"] > 0, axis=1))) == k
    n = members * k
    return {"learner": learner, "impl": "jax", "members": members, "updates_per_call": k,
            "lower_s": lower_s, "compile_s": compile_s, "warmup_call_s": warm_s,
            "wall_s": walls, "cpu_s": cpus,
            "updates_per_s": n / statistics.median(walls),
            "updates_per_cpu_s": n / statistics.median(cpus), "load_avg": _load()}


# ----------------------------------------------------------------------------- torch side


def bench_torch(learner: str, threads: int, members: int, updates: int,
                max_seconds: float) -> dict[str, Any]:
    """A Python loop over ``members`` configurations; each trains ``updates`` updates, or fewer
    if the member's share of ``max_seconds`` runs out (blocks of 10 updates)."""
    torch.set_num_threads(threads)
    config = make_config(learner)
    wall = cpu = 0.0
    done = 0
    for i, c in enumerate(np.linspace(0.0, 0.3, members)):
        spec = spec_of(config, HParams.create(c=float(c)))
        env = TorchToy(ENV_PARAMS.probs, ENV_PARAMS.start_probs, int(ENV_PARAMS.max_steps),
                       config.num_envs, seed=i)
        if learner == "dqn":
            ref = TorchDQN(spec, seed=i)
            step = config.learning_starts // config.num_envs + 20
            run_dqn(ref, env, step, HORIZON, config.learning_starts)  # fills the buffer, warms up
        else:
            ref = TorchPQN(spec, seed=i)
            step = 3
            run_pqn(ref, env, step, HORIZON)
        member_wall, n = 0.0, 0
        while n < updates and member_wall < max_seconds / members:
            block = min(10, updates - n)
            if learner == "dqn":
                grads, w, cp = _timed(lambda: run_dqn(ref, env, block, HORIZON,
                                                      config.learning_starts, start=step))
                assert grads == block
            else:
                _, w, cp = _timed(lambda: run_pqn(ref, env, block, HORIZON, start=step))
            step += block
            n += block
            member_wall += w
            cpu += cp
        wall += member_wall
        done += n
    return {"learner": learner, "impl": f"torch ({threads} thread{'s' if threads > 1 else ''})",
            "threads": threads, "members": members, "updates_timed": done,
            "wall_s": wall, "cpu_s": cpu,
            "updates_per_s": done / wall, "updates_per_cpu_s": done / cpu, "load_avg": _load()}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--quick", action="store_true", help="small sweeps, few repeats (smoke run)")
    ap.add_argument("--learners", default="dqn,pqn")
    args = ap.parse_args(argv)
    learners = [x for x in args.learners.split(",") if x]
    on_gpu = jax.default_backend() in ("gpu", "cuda", "rocm")
    sizes = [1, 8] if args.quick else [1, 8, 64, 256] + ([1024] if on_gpu else [])
    repeats = 2 if args.quick else 5
    torch_members = 1 if args.quick else 3
    torch_updates = {"dqn": 60, "pqn": 10} if args.quick else {"dqn": 900, "pqn": 150}
    torch_seconds = 5.0 if args.quick else 30.0  # cap per torch measurement (loaded machines)

    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    load_start = _load()
    parity = parity_check()
    log("parity JAX vs torch (max |param diff| after 3 updates):", parity)
    if max(parity.values()) > 1e-4:
        raise SystemExit(f"JAX and torch learners disagree: {parity}")

    rows: list[dict[str, Any]] = []
    for learner in learners:
        n_upd = torch_updates[learner]

        def torch_round(tag: str) -> list[dict[str, Any]]:
            out = []
            for threads in (1, 2):
                r = bench_torch(learner, threads, torch_members, n_upd, torch_seconds)
                r["round"] = tag
                log(f"{learner} {r['impl']} [{tag}]: {r['updates_per_s']:.1f} updates/s "
                    f"({r['updates_per_cpu_s']:.1f} per CPU-s; load {r['load_avg']})")
                out.append(r)
            return out

        # torch is measured before AND after the JAX sweeps (load on a shared machine drifts);
        # the best torch figure is the reference, which is the conservative choice for JAX
        ref_rows = torch_round("before")
        jax_rows = []
        for g in sizes:
            r = bench_jax(learner, g, repeats)
            log(f"{learner} jax G={g}: {r['updates_per_s']:.1f} updates/s "
                f"({r['updates_per_cpu_s']:.1f} per CPU-s; compile {r['compile_s']:.1f}s; "
                f"load {r['load_avg']})")
            jax_rows.append(r)
        ref_rows += torch_round("after")
        best_wall = max(r["updates_per_s"] for r in ref_rows)
        best_cpu = max(r["updates_per_cpu_s"] for r in ref_rows)
        for r in jax_rows:
            r["ratio_vs_torch"] = r["updates_per_s"] / best_wall
            r["ratio_vs_torch_cpu"] = r["updates_per_cpu_s"] / best_cpu
        rows += ref_rows + jax_rows

    result = {
        "description": "switcher updates/s: jit(vmap(train_chunk)) sweeps vs PyTorch loop over configs",
        "update_definition": {
            "dqn": "1 lockstep step of 16 toy envs + 1 Double-DQN gradient step (batch 128, buffer 10k, MLP 64-64)",
            "pqn": "8x16 rollout + 2 epochs x 2 minibatches of 64 (LayerNorm MLP 64-64)",
        },
        "torch_note": "PyTorch loops over configurations one at a time; its updates/s is measured on "
                      f"{torch_members} member(s) and applies to any sweep size. It is measured before "
                      "and after the JAX runs with 1 and 2 threads; ratios use the best torch figure.",
        "timing_note": "updates_per_s is wall clock (median call); updates_per_cpu_s divides by the "
                       "process's CPU time (all threads), which other jobs on a shared machine skew far "
                       "less. ratio_vs_torch / ratio_vs_torch_cpu compare each.",
        "quick": args.quick, "parity": parity, "rows": rows,
        "load_avg_start": load_start, "load_avg_end": _load(),
        "load_note": "os.getloadavg() (1, 5, 15 min) at the start, after each row and at the end; "
                     "on the 2-core machine a 1-minute load above 2 means other jobs shared the cores",
        "reproduce": "python benchmarks/switcher_throughput.py" + (" --quick" if args.quick else ""),
    }
    name = f"switcher_throughput_{device_tag()}" + ("_quick" if args.quick else "")
    path = write_result(name, result)
    if args.json:
        print(json.dumps({**result, "machine": machine_info(), "path": str(path)}, indent=2, default=str))
    else:
        cols = ["learner", "impl", "members", "updates_per_s", "ratio_vs_torch",
                "updates_per_cpu_s", "ratio_vs_torch_cpu", "compile_s", "load_avg"]
        print(render_table(rows, cols, floatfmt=".4g"))
        print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
