"""Sweep members sharded over devices: switcher updates per second against the device count.

Each device count runs in its own process (the count is fixed when JAX starts), with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` on a CPU: virtual devices that share the
same cores. So on a CPU this measures the *overhead* of sharding (the same work split N ways:
1.0 = none), not a speed-up; on a machine with N real accelerators the same script measures the
scaling. Members: a toy-benchmark Double-DQN sweep (``switcher.toy_bench``: 16 envs, 128-sample
minibatches, MLP 64-64) over ``--members`` values of c, sharded over ``data`` (padded to a
multiple of N; the padding's work is counted as waste, not throughput). Per point: lowering +
compilation timed apart, one warm-up call, then ``--repeats`` timed calls of ``--updates``
updates ending in ``block_until_ready``; member-updates/s = real members x updates / median s.

``--members 1,8,64,256,1024 --devices 1`` on a GPU gives the single-device curve the issue asks
for.

LM tokens/s (``--lm``, default SmolLM2-135M): the model is loaded straight into its shards
(``lm.sharding``) on ``model=N`` (tensor parallel) and on ``fsdp=N``, then scores ``--lm-batch``
GLAM prompts with the six BabyAI actions each (``LanguageModel.score``: prefill, then the
candidates on the shared cache); tokens/s = (prompt + candidate tokens) / median seconds of a
whole call, host work included. ``--lm none`` skips it.

Run: ``python benchmarks/scaling.py [--devices 1,2,4,8] [--members 64] [--quick]``; writes
``benchmarks/results/scaling_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def worker(devices: int, members: list[int], updates: int, repeats: int) -> list[dict[str, Any]]:
    import jax
    import numpy as np
    from _common import time_compile

    from londi_jax.switcher.sweep import _chunk_fn, stack_hparams
    from londi_jax.switcher.toy_bench import TOY_HPARAMS, toy_trainer
    from londi_jax.utils.mesh import make_mesh, members_sharding_of, shard_members

    assert len(jax.devices()) == devices, (len(jax.devices()), devices)
    trainer = toy_trainer("dqn", num_updates=100_000)  # a long epsilon horizon: every timed update alike
    mesh = make_mesh(f"data={devices}") if devices > 1 else None
    rows = []
    for m in members:
        hp = stack_hparams([{"c": c} for c in np.linspace(0.05, 1.0, m)], TOY_HPARAMS["dqn"])
        keys = jax.random.split(jax.random.key(0), m)
        (keys, hp), _ = shard_members((keys, hp), mesh)
        init = jax.jit(jax.vmap(trainer.init_train_state))
        ts = init(keys, hp)
        if mesh is not None:  # as train_many places a fresh state
            ts = jax.device_put(ts, members_sharding_of(hp))
        fn = _chunk_fn(trainer, updates)
        lower_s, compile_s, compiled = time_compile(fn, ts, hp)
        ts, _ = compiled(ts, hp)  # warm-up (also fills the replay past learning_starts)
        jax.block_until_ready(ts)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ts, out = compiled(ts, hp)
            jax.block_until_ready((ts, out))
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        padded = int(jax.tree.leaves(hp)[0].shape[0])
        rows.append({"devices": devices, "members": m, "padded_to": padded, "updates_per_call": updates,
                     "lower_s": lower_s, "compile_s": compile_s, "median_s": med,
                     "member_updates_per_s": m * updates / med,
                     "rows_per_device": int(jax.tree.leaves(ts)[0].addressable_shards[0].data.shape[0])})
    return rows


def lm_worker(devices: int, model: str, batch: int, repeats: int) -> list[dict[str, Any]]:
    import jax

    from londi_jax.lm.demo import BABYAI_ACTIONS, GLAM_PROMPT
    from londi_jax.lm.registry import load_lm
    from londi_jax.lm.sharding import plan
    from londi_jax.utils.mesh import make_mesh

    prompts = [GLAM_PROMPT.replace("Goal of the agent:", f"Step {i}. Goal of the agent:") for i in range(batch)]
    cands = [list(BABYAI_ACTIONS)] * batch
    layouts = [None] if devices == 1 else [f"model={devices}", f"fsdp={devices}"]
    rows = []
    for layout in layouts:
        mesh = make_mesh(layout) if layout else None
        t0 = time.perf_counter()
        lm = load_lm(model, progress=False, mesh=mesh)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = lm.score(prompts, cands)  # compiles
        first_s = time.perf_counter() - t0
        tokens = sum(len(lm.tokenizer(p)["input_ids"]) for p in prompts) + int(sum(n.sum() for n in res.num_tokens))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            lm.score(prompts, cands)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        p = plan(lm.state, mesh) if mesh is not None else None
        rows.append({"devices": devices, "layout": layout or "one device", "batch": batch, "tokens_per_call": tokens,
                     "load_s": load_s, "first_call_s": first_s, "median_s": med, "tokens_per_s": tokens / med,
                     "param_mb_per_device": (p["bytes_per_device"] if p else lm.num_params * 4) / 2 ** 20})
        del lm
        jax.clear_caches()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="1,2,4,8", help="device counts, each in its own process")
    ap.add_argument("--members", default="64", help="sweep sizes (comma-separated)")
    ap.add_argument("--updates", type=int, default=200, help="updates per timed call")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per point")
    ap.add_argument("--lm", default="smollm2-135m-instruct", help="LM for the tokens/s rows ('none' skips them)")
    ap.add_argument("--lm-batch", type=int, default=8, help="prompts per scoring call")
    ap.add_argument("--quick", action="store_true", help="--devices 1,8 --updates 50 --repeats 3")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    members = [int(m) for m in args.members.split(",")]
    if args.quick:
        args.devices, args.updates, args.repeats = "1,8", 50, 3
    if args.worker is not None:
        lm_rows = [] if args.lm == "none" else lm_worker(args.worker, args.lm, args.lm_batch, args.repeats)
        print("ROWS " + json.dumps({"sweep": worker(args.worker, members, args.updates, args.repeats), "lm": lm_rows}))
        return

    from _common import device_tag, render_table, write_result

    rows: list[dict[str, Any]] = []
    lm_rows: list[dict[str, Any]] = []
    for n in (int(d) for d in args.devices.split(",")):
        env = dict(os.environ)
        if n > 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
        cmd = [sys.executable, __file__, "--worker", str(n), "--members", args.members,
               "--updates", str(args.updates), "--repeats", str(args.repeats), "--lm", args.lm,
               "--lm-batch", str(args.lm_batch)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode:
            sys.exit(f"worker with {n} devices failed:\n{r.stderr[-3000:]}")
        got = json.loads(r.stdout.split("ROWS ", 1)[1])
        rows += got["sweep"]
        lm_rows += got["lm"]
        print(f"{n} devices done", file=sys.stderr, flush=True)
    base = {r["members"]: r["member_updates_per_s"] for r in rows if r["devices"] == 1}
    for r in rows:
        r["vs_one_device"] = r["member_updates_per_s"] / base[r["members"]] if r["members"] in base else None
    cols = ["devices", "members", "padded_to", "compile_s", "median_s", "member_updates_per_s", "vs_one_device",
            "rows_per_device"]
    print(render_table(rows, cols))
    if lm_rows:
        one = next(r["tokens_per_s"] for r in lm_rows if r["devices"] == 1)
        for r in lm_rows:
            r["vs_one_device"] = r["tokens_per_s"] / one
        print(render_table(lm_rows, ["devices", "layout", "tokens_per_call", "first_call_s", "median_s", "tokens_per_s",
                                     "vs_one_device", "param_mb_per_device"]))
    tag = device_tag()
    path = write_result(f"scaling_{tag}" + ("_quick" if args.quick else ""), {
        "what": "toy DQN sweep members sharded over the data axis; CPU virtual devices share the cores "
                "(vs_one_device = sharding overhead, 1.0 = none)",
        "updates_per_call": args.updates, "repeats": args.repeats, "rows": rows,
        "lm": {"what": f"{args.lm} scoring {args.lm_batch} GLAM prompts x 6 actions per call, parameters sharded "
                       "on model=N or fsdp=N (vs_one_device on CPU virtual devices = overhead)",
               "rows": lm_rows}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
