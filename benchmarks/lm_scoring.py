"""Candidate scoring: shared prompt KV cache vs re-running the prompt for every candidate.

LONDI's agents score a fixed action list (BabyAI-Text: six actions) at every step. Side by side in
one run, on the same model, prompts and candidates:

* ``shared``: ``LanguageModel.score_tokens``: each prompt prefilled once, its KV cache shared by
  all K candidates (one jitted program);
* ``naive``: one forward per prompt+candidate sequence (B*K left-padded rows in one jitted batch,
  logits only at candidate positions, log-probs on device): scoring without the shared cache;
* ``shared+embedding``: the same scoring also returning prompt embeddings (same forward pass).

Both methods must agree (max |difference| of the summed log-probs is reported). Timing: the first
call (trace + compile + run) is reported as ``compile_s``; then ``--repeats`` warm calls, each
ending with ``block_until_ready`` inside the engine, median reported. Load average is recorded:
on a shared machine absolute numbers move with the neighbours, ratios within one run less so.

Run: ``python benchmarks/lm_scoring.py [--model smollm2-135m-instruct] [--quick] [--json]``;
writes ``benchmarks/results/lm_scoring.json`` (``--quick``: ``lm_scoring_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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
    dev = jax.devices()[0]
    return {
        "platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "jax": jax.__version__, "device": f"{dev.platform}:{dev.device_kind}",
        "load_average_start": os.getloadavg(), "timer": "time.perf_counter around block_until_ready'd calls",
    }


def timed(fn, repeats: int) -> tuple[float, float, Any]:
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), out


def make_naive(lm):
    """Scoring without a shared cache: every prompt+candidate sequence is its own left-padded row of
    one batched, jitted forward; logits only at the candidate positions (the least a naive scorer
    must compute), log-probs gathered on device."""
    from flax import nnx

    from londi_jax.lm.engine import bucket, prefill, token_logprobs

    @jax.jit
    def run(state, tok, valid, tmask):
        model = nnx.merge(lm.graphdef, state)
        hidden, _, _ = prefill(model, tok, valid, tok.shape[1])
        L = tmask.shape[1]
        lp = token_logprobs(model.logits(hidden[:, -L - 1:-1]), tok[:, -L:])
        return jnp.where(tmask, lp, 0.0).sum(-1)

    def score(prompt_ids, cand_ids) -> list[np.ndarray]:
        seqs = [(p + c, len(c)) for p, cs in zip(prompt_ids, cand_ids) for c in cs]
        T = bucket(max(len(q) for q, _ in seqs), 16)
        L = max(m for _, m in seqs)
        tok = np.zeros((bucket(len(seqs)), T), np.int32)
        valid = np.zeros(tok.shape, bool)
        tmask = np.zeros((tok.shape[0], L), bool)
        for i, (q, m) in enumerate(seqs):
            tok[i, T - len(q):], valid[i, T - len(q):], tmask[i, L - m:] = q, True, True
        sums = np.asarray(jax.block_until_ready(run(lm.state, tok, valid, tmask)))
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
    args = ap.parse_args(argv)
    if args.quick:
        args.batches, args.repeats = "1,4", 3
    from londi_jax.lm.registry import load_lm

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
        c_shared, t_shared, res = timed(lambda: lm.score_tokens(prompt_ids, cand_ids), args.repeats)
        c_emb, t_emb, _ = timed(lambda: lm.score_tokens(prompt_ids, cand_ids, with_embedding=True), args.repeats)
        c_naive, t_naive, ref = timed(lambda: naive(prompt_ids, cand_ids), args.repeats)
        diff = max(float(np.abs(a - r).max()) for a, r in zip(res.logprobs, ref))
        row = {
            "prompts": b, "candidates": len(ACTIONS), "prompt_tokens": len(prompt_ids[0]),
            "candidate_tokens": [len(c) for c in cands],
            "shared_s": t_shared, "shared_compile_s": c_shared,
            "shared_with_embedding_s": t_emb, "shared_with_embedding_compile_s": c_emb,
            "naive_s": t_naive, "naive_compile_s": c_naive,
            "speedup_shared_vs_naive": t_naive / t_shared,
            "embedding_overhead": t_emb / t_shared,
            "prompts_per_s_shared": b / t_shared, "prompts_per_s_naive": b / t_naive,
            "max_abs_logprob_diff": diff,
        }
        rows.append(row)
        print(f"B={b:3d}: shared {t_shared * 1e3:8.1f} ms (compile {c_shared:5.1f} s) | naive {t_naive * 1e3:8.1f} ms "
              f"(compile {c_naive:5.1f} s) | x{row['speedup_shared_vs_naive']:.2f} | +embedding "
              f"x{row['embedding_overhead']:.2f} | max|diff| {diff:.2e}", file=sys.stderr)
    cost = lm.cost()
    result = {
        "benchmark": "lm_scoring", "model": args.model, "dtype": args.dtype, "load_s": load_s,
        "num_params": cost.num_params, "machine": {**machine_info(), "load_average_end": os.getloadavg()},
        "repeats": args.repeats, "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("lm_scoring_quick.json" if args.quick else "lm_scoring.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.model} ({args.dtype}, {cost.num_params / 1e6:.1f}M params) on {result['machine']['device']}; "
              f"results in {out}")
        for r in rows:
            print(f"  {r['prompts']:3d} prompts x {r['candidates']} candidates: shared-cache {r['shared_s'] * 1e3:.1f} ms, "
                  f"per-candidate forward {r['naive_s'] * 1e3:.1f} ms -> {r['speedup_shared_vs_naive']:.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
