"""Candidate scoring: shared prompt KV cache vs re-running the prompt for every candidate.

LONDI's agents score a fixed action list (BabyAI-Text: six actions) at every step. Side by side in
one run, on the same model, prompts and candidates:

* ``shared``: ``LanguageModel.score_tokens``: each prompt prefilled once, its KV cache shared by
  all K candidates (one jitted program);
* ``naive``: one forward per prompt+candidate sequence (B*K left-padded rows in one jitted batch,
  logits only at candidate positions, log-probs on device): scoring without the shared cache;
* ``shared+embedding``: the same scoring also returning prompt embeddings (same forward pass);
* ``matmul``: plain XLA matmuls of the model's projection shapes at the prompts' token count
  (``lm_throughput.plain_matmuls``), the reference for the scoring call's FLOP/s (useful FLOPs,
  the engine's count), reported as ``shared_fraction_of_matmul``.

The naive method packs its sequences' real tokens like the engine's prefill does, so the two
differ only in the shared cache.

Both methods must agree (max |difference| of the summed log-probs is reported). Timing: the first
call (trace + compile + run) is reported as ``compile_s``; then ``--repeats`` rounds of warm calls,
the methods interleaved, each ending with ``block_until_ready``; min and median reported (min is
the steadier estimate on a loaded machine). Load average is recorded:
on a shared machine absolute numbers move with the neighbours, ratios within one run less so.

Run: ``python benchmarks/lm_scoring.py [--model smollm2-135m-instruct] [--quick] [--json]``;
writes ``benchmarks/results/lm_scoring.json`` (``--quick``: ``lm_scoring_quick.json``).
"""

from __future__ import annotations

import argparse
import functools
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info as common_machine_info  # noqa: E402
from lm_throughput import plain_matmuls  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ACTIONS = [" turn left", " turn right", " go forward", " pick up", " drop", " toggle"]
PROMPT = (
    "You are an agent in a grid world. Your goal: go to the red ball. "
    "You see a wall 3 steps forward, a wall 2 steps left, a purple key 1 step right and 2 steps forward, "
    "a yellow box 1 step left and 1 step forward, a red ball 2 steps right and 1 step forward. "
    "Previous actions: go forward, turn right, go forward. Possible actions: turn left, turn right, "
    "go forward, pick up, drop, toggle. Next action:"
)


def machine_info() -> dict[str, Any]:
    return {**common_machine_info(), "load_average_start": os.getloadavg(),
            "timer": "time.perf_counter around block_until_ready'd calls"}


def interleaved(fns: dict[str, Any], repeats: int) -> dict[str, dict[str, Any]]:
    """First call of each (compile + run), then ``repeats`` rounds calling them in turn, so load
    changes on a shared machine hit all methods alike. Reports min and median of the warm calls."""
    out: dict[str, dict[str, Any]] = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        result = fn()
        out[name] = {"compile_s": time.perf_counter() - t0, "times": [], "result": result}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name]["times"].append(time.perf_counter() - t0)
    for r in out.values():
        r["min_s"], r["median_s"] = min(r["times"]), statistics.median(r["times"])
    return out


def make_naive(lm):
    """Scoring without a shared cache: every prompt+candidate sequence is its own left-padded row of
    one batched, jitted forward; logits only at the candidate positions (the least a naive scorer
    must compute), log-probs gathered on device."""
    from flax import nnx

    from londi_jax.lm.engine import PROMPT_BUCKET, bucket, packed_slots, prefill, token_logprobs

    @functools.partial(jax.jit, static_argnames="packed")
    def run(state, tok, valid, tmask, packed):
        model = nnx.merge(lm.graphdef, state)
        hidden, _, _ = prefill(model, tok, valid, tok.shape[1], packed)
        L = tmask.shape[1]
        lp = token_logprobs(model.logits(hidden[:, -L - 1:-1]), tok[:, -L:])
        return jnp.where(tmask, lp, 0.0).sum(-1)

    def score(prompt_ids, cand_ids) -> list[np.ndarray]:
        seqs = [(p + c, len(c)) for p, cs in zip(prompt_ids, cand_ids) for c in cs]
        T = bucket(max(len(q) for q, _ in seqs), *PROMPT_BUCKET)
        L = max(m for _, m in seqs)
        tok = np.zeros((bucket(len(seqs)), T), np.int32)
        valid = np.zeros(tok.shape, bool)
        tmask = np.zeros((tok.shape[0], L), bool)
        for i, (q, m) in enumerate(seqs):
            tok[i, T - len(q):], valid[i, T - len(q):], tmask[i, L - m:] = q, True, True
        sums = np.asarray(jax.block_until_ready(run(lm.state, tok, valid, tmask, packed_slots(int(valid.sum()), tok.size))))
        out, j = [], 0
        for cs in cand_ids:
            out.append(sums[j:j + len(cs)].astype(np.float64))
            j += len(cs)
        return out

    return score


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batches", default="1,8,16", help="comma-separated numbers of prompts per call")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="batches 1,4 and 3 repeats")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--results-dir", default=None, help="where to write the JSON (default benchmarks/results)")
    args = ap.parse_args(argv)
    if args.quick:
        args.batches, args.repeats = "1,4", 4
    from londi_jax.lm.registry import load_lm

    machine = machine_info()  # load average at the start
    t0 = time.perf_counter()
    lm = load_lm(args.model, dtype=args.dtype, progress=False)
    load_s = time.perf_counter() - t0
    tok = lm.tokenizer
    cands = [tok.encode(a, add_special_tokens=False) for a in ACTIONS]
    naive = make_naive(lm)
    rows = []
    for b in (int(x) for x in args.batches.split(",")):
        # distinct prompts (different step counters) so nothing is trivially shared across rows
        prompt_ids = [tok.encode(PROMPT.replace("3 steps", f"{3 + i % 5} steps"), add_special_tokens=True)
                      for i in range(b)]
        cand_ids = [cands] * b
        lm.batch_size = max(b, 1)
        matmuls, mm_flops = plain_matmuls(lm, sum(map(len, prompt_ids)))
        m = interleaved({
            "shared": lambda: lm.score_tokens(prompt_ids, cand_ids),
            "shared_with_embedding": lambda: lm.score_tokens(prompt_ids, cand_ids, with_embedding=True),
            "naive": lambda: naive(prompt_ids, cand_ids),
            "matmul": matmuls,
        }, args.repeats)
        lm.score_tokens(prompt_ids, cand_ids)
        score_flops = lm.cost().last_call.flops
        res, ref = m["shared"]["result"], m["naive"]["result"]
        diff = max(float(np.abs(a - r).max()) for a, r in zip(res.logprobs, ref))
        t_shared, t_naive = m["shared"]["min_s"], m["naive"]["min_s"]
        row = {
            "prompts": b, "candidates": len(ACTIONS), "prompt_tokens": len(prompt_ids[0]),
            "candidate_tokens": [len(c) for c in cands],
            **{f"{k}_{stat}": v[stat] for k, v in m.items() for stat in ("min_s", "median_s", "compile_s")},
            "speedup_shared_vs_naive_min": t_naive / t_shared,
            "speedup_shared_vs_naive_median": m["naive"]["median_s"] / m["shared"]["median_s"],
            "embedding_overhead_min": m["shared_with_embedding"]["min_s"] / t_shared,
            "prompts_per_s_shared": b / t_shared, "prompts_per_s_naive": b / t_naive,
            "max_abs_logprob_diff": diff,
            "shared_flops": score_flops, "shared_flops_per_s": score_flops / t_shared,
            "matmul_flops_per_s": mm_flops / m["matmul"]["min_s"],
            "shared_fraction_of_matmul": score_flops / t_shared / (mm_flops / m["matmul"]["min_s"]),
        }
        print(f"B={b:3d}: shared {t_shared * 1e3:8.1f} ms (compile {m['shared']['compile_s']:5.1f} s) | naive "
              f"{t_naive * 1e3:8.1f} ms (compile {m['naive']['compile_s']:5.1f} s) | min x{t_naive / t_shared:.2f} "
              f"median x{row['speedup_shared_vs_naive_median']:.2f} | +embedding x{row['embedding_overhead_min']:.2f}"
              f" | max|diff| {diff:.2e} | {row['shared_fraction_of_matmul']:.0%} of plain-matmul FLOP/s", file=sys.stderr)
        rows.append(row)
    cost = lm.cost()
    result = {
        "benchmark": "lm_scoring", "model": args.model, "dtype": args.dtype, "load_s": load_s,
        "num_params": cost.num_params, "machine": {**machine, "load_average_end": os.getloadavg()},
        "repeats": args.repeats, "rows": rows,
    }
    out_dir = Path(args.results_dir) if args.results_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / ("lm_scoring_quick.json" if args.quick else "lm_scoring.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.model} ({args.dtype}, {cost.num_params / 1e6:.1f}M params) on {result['machine']['device']}; "
              f"results in {out}")
        for r in rows:
            print(f"  {r['prompts']:3d} prompts x {r['candidates']} candidates: shared-cache {r['shared_min_s'] * 1e3:.1f} ms, "
                  f"per-candidate forward {r['naive_min_s'] * 1e3:.1f} ms (min of {args.repeats}) -> "
                  f"{r['speedup_shared_vs_naive_min']:.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
