"""Cost of one GLAM scoring call for the real QUICK / DEEPTHINK candidates, side by side.

For each installed DEEPTHINK candidate (Qwen2.5-Coder-0.5B / 1.5B-Instruct), ``lm demo``'s pair run
(:func:`londi_jax.lm.demo.run_pair_demo`) with SmolLM2-135M-Instruct as QUICK: the same GLAM BabyAI
prompt and six actions, each model with its own tokenizer. Per model: parameters, forward FLOPs of
the call from its real token counts (``CallCost.flops``), warm seconds (median of ``--repeats``
calls after the first, compiling one, which is reported apart), load seconds. Models are loaded one
at a time. The load average (start and end of each pair) is recorded: on a shared machine absolute
seconds move with the neighbours.

Run: ``python benchmarks/lm_pair_cost.py [--repeats 3] [--json]`` (about 4 min for the 0.5B pair and
9 min for the 1.5B pair on a busy 2-core CPU); writes ``benchmarks/results/lm_pair_cost_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEEP_CANDIDATES = ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
QUICK = "smollm2-135m-instruct"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="warm scoring calls per model (median reported)")
    p.add_argument("--deep", nargs="*", default=list(DEEP_CANDIDATES),
                   help="DEEPTHINK models to compare (the installed ones of these run)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)

    from _common import device_tag, render_table, write_result

    from londi_jax.lm.demo import run_pair_demo
    from londi_jax.lm.registry import ModelNotInstalledError, resolve_model_path

    pairs, skipped = [], {}
    for deep in args.deep:
        try:
            resolve_model_path(deep)
        except ModelNotInstalledError as err:
            skipped[deep] = str(err)
            continue
        pairs.append(run_pair_demo(QUICK, deep, max_new_tokens=1, repeats=args.repeats, progress=False))
    rows = []
    for pair in pairs:
        for m in pair["models"]:
            sc = m["scoring"]
            rows.append({"model": m["model"], "role": m["role"], "params_M": m["cost"]["num_params"] / 1e6,
                         "prompt_tokens": sc["prompt_tokens"], "action_tokens": sc["candidate_tokens"],
                         "GFLOPs_per_call": sc["flops"] / 1e9, "warm_s": sc["warm_seconds"],
                         "compile_s": sc["compile_seconds"], "load_s": m["load_seconds"],
                         "load_avg_start": pair["load_average"]["start"], "load_avg_end": pair["load_average"]["end"]})
    result = {"quick": QUICK, "repeats": args.repeats, "rows": rows, "skipped": skipped,
              "ratios": {p["models"][1]["model"]: p["ratios"] for p in pairs if p["ratios"]}}
    path = write_result(f"lm_pair_cost_{device_tag()}", result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render_table(rows, ["model", "role", "params_M", "prompt_tokens", "action_tokens", "GFLOPs_per_call",
                                  "warm_s", "compile_s", "load_s"], floatfmt=".3g"))
        for name, why in skipped.items():
            print(f"skipped {name}: {why}")
        print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
