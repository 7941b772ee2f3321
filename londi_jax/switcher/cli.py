"""Subcommands of this area for the ``londi-jax`` command: ``toy`` and ``toy-sweep``."""

from __future__ import annotations

import argparse
from typing import Any

from londi_jax.utils import cli_args as A
from londi_jax.utils.cli_args import check_writable_file
from londi_jax.utils.output import add_json_flag, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to ``londi-jax``."""
    p = subparsers.add_parser(
        "toy", help="train switchers on the toy benchmark and compare with the exact optimum",
        description="Train --seeds switchers (vmapped, one compiled program) on the toy chain "
                    "benchmark at per-call cost --c (and optional LONDI-B --budget), then compare "
                    "the greedy switch with the exact optimum from value iteration.")
    p.add_argument("--c", type=A.nonneg_float, default=0.1,
                   help="cost per DEEPTHINK call (finite, >= 0)")
    p.add_argument("--budget", type=A.nonneg_int, default=None,
                   help="LONDI-B: at most this many DEEPTHINK calls per episode; 0 = never call "
                        "(default: none, plain LONDI)")
    p.add_argument("--seeds", type=A.count(), default=4, help="switchers trained in parallel")
    p.add_argument("--learner", default="dqn", help="dqn (Double DQN + replay) or pqn (Q(lambda))")
    p.add_argument("--updates", type=A.count(), default=None,
                   help="training updates (default: the learner's tuned setting, 3000)")
    p.add_argument("--eval-episodes", type=A.count(), default=10_000,
                   help="greedy evaluation episodes per seed")
    p.add_argument("--seed", type=A.seed, default=0, help="base random seed")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_json_flag(p)
    p.set_defaults(func=_toy)
    register_sweep(subparsers)


def _toy(args: argparse.Namespace) -> int:
    from londi_jax.switcher.toy_bench import run_toy

    result = run_toy(c=args.c, budget=args.budget, seeds=args.seeds, learner=args.learner,
                     num_updates=args.updates, eval_episodes=args.eval_episodes, seed=args.seed,
                     progress=not args.no_progress)
    emit(result, args.json, _render)
    return 0


def _bits(policy: list[list[int]]) -> str:
    return " ".join("".join(str(g) for g in row) for row in policy)


def _render(r: dict[str, Any]) -> str:
    budget = "none (plain LONDI)" if r["budget"] is None else str(r["budget"])
    lines = [
        f"toy switching benchmark: learner={r['learner']}  c={r['c']}  budget={budget}  "
        f"seeds={r['seeds']}  updates={r['num_updates']}",
        "switch per cell (0 QUICK, 1 DEEPTHINK)" + ("" if r["budget"] is None else
                                                     ", one group per remaining budget b=0..n"),
        f"  exact optimum : {_bits(r['exact_policy'])}",
        "",
        f"{'seed':>4}  {'agree':>6}  {'learned switch':<{max(14, len(_bits(r['exact_policy'])))}}  "
        f"{'value':>7}  {'MC return':>9}  {'calls/ep':>8}  {'max':>3}  {'viol':>4}",
    ]
    for s in r["per_seed"]:
        lines.append(f"{s['seed']:>4}  {s['agreement']:>6.1%}  "
                     f"{_bits(s['policy']):<{max(14, len(_bits(r['exact_policy'])))}}  "
                     f"{s['learned_value']:>7.4f}  {s['mc_return']:>9.4f}  {s['mc_calls']:>8.3f}  "
                     f"{s['max_calls']:>3}  {s['violations']:>4}")
    gap = (r["learned_value"] - r["exact_value"]) / abs(r["exact_value"]) if r["exact_value"] else 0.0
    wrong = [f"seed {s['seed']}: cell {d['cell']}" + ("" if d["b"] is None else f" b={d['b']}")
             + f" (exact Q1-Q0 = {d['exact_gap']:+.3f})"
             for s in r["per_seed"] for d in s["disagreements"]]
    lines += [
        "",
        f"activation agreement (reachable states): {r['agreement']:.1%} (mean over seeds); "
        + ("no exact decision to make (budget 0: DEEPTHINK is never admissible)"
           if r["exact_margin"] is None else f"closest exact decision: |Q1-Q0| = {r['exact_margin']:.3f}"),
        *(["disagreements: " + "; ".join(wrong)] if wrong else []),
        f"return: learned {r['learned_value']:.4f} (exact policy evaluation), "
        f"{r['mc_return']:.4f} (Monte Carlo, {r['eval_episodes']} episodes/seed) "
        f"vs exact optimum {r['exact_value']:.4f} ({gap:+.2%})",
        f"DEEPTHINK calls per episode: learned {r['mc_calls']:.3f} vs optimal {r['exact_calls']:.3f}",
        f"budget violations: {r['violations']}"
        + ("" if r["budget"] is None else f" over {r['seeds'] * r['eval_episodes']} episodes"),
    ]
    return "\n".join(lines)


def register_sweep(subparsers: argparse._SubParsersAction) -> None:
    """``toy-sweep``: a grid over c / budget / lr on the toy benchmark, one compiled program."""
    p = subparsers.add_parser(
        "toy-sweep", help="grid sweep on the toy benchmark (one vmapped program), results table",
        description="Train every (c, budget, lr, seed) member of a grid in ONE compiled, vmapped "
                    "program on the toy benchmark; print one row per member with the exact optimum "
                    "next to the learned switch.")
    p.add_argument("--c", type=A.nonneg_float, nargs="+", default=[0.05, 0.12, 0.25, 0.5, 1.0],
                   help="costs per DEEPTHINK call (finite, >= 0)")
    p.add_argument("--budget", type=A.nonneg_int, nargs="+", default=None,
                   help="LONDI-B budgets; 0 = never call (default: none, plain LONDI)")
    p.add_argument("--lr", type=A.pos_float, nargs="+", default=None,
                   help="learning rates (default: the learner's tuned one, not swept)")
    p.add_argument("--seeds", type=A.count(), default=2, help="seeds per grid point")
    p.add_argument("--learner", default="dqn", help="dqn or pqn")
    p.add_argument("--updates", type=A.count(), default=None,
                   help="training updates per member (default: the learner's tuned setting, 3000)")
    p.add_argument("--eval-episodes", type=A.count(), default=2000, help="greedy episodes per member")
    p.add_argument("--csv", default=None, metavar="PATH",
                   help="also write the table as CSV (default: not written)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    A.add_mesh_flag(p)
    add_json_flag(p)
    p.set_defaults(func=_toy_sweep)


def _where(result: dict[str, Any]) -> str:
    d, lay = result["devices"], result["layout"]
    if d["devices"] == 1:
        return f"one {d['platform']} device"
    pad = f", {lay['padded']} padding member{'s' if lay['padded'] != 1 else ''} dropped" if lay["padded"] else ""
    return f"{d['devices']} {d['platform']} devices (mesh {d['mesh']}{pad})"


_SWEEP_COLUMNS = ["c", "budget", "lr", "seed", "agreement", "learned_value", "exact_value",
                  "disc_return", "calls", "exact_calls", "max_calls", "violations"]


def _toy_sweep(args: argparse.Namespace) -> int:
    if args.csv:  # before training: a bad path must not cost the sweep
        check_writable_file(args.csv, "--csv")
    from londi_jax.switcher.sweep import ResultsTable
    from londi_jax.switcher.toy_bench import sweep_toy
    from londi_jax.utils.mesh import default_mesh, mesh_info

    mesh = default_mesh(args.mesh)  # before training: a mesh the devices cannot hold fails at once

    params: dict[str, list] = {"c": args.c}
    if args.budget is not None:
        params["budget"] = args.budget
    if args.lr is not None:
        params["lr"] = args.lr
    table = sweep_toy(params, learner=args.learner, use_budget=args.budget is not None,
                      seeds=args.seeds, num_updates=args.updates, eval_episodes=args.eval_episodes,
                      progress=not args.no_progress, mesh=mesh)
    hidden = set() if args.budget is not None else {"budget", "violations"}
    if "lr" not in params:
        hidden.add("lr")
    cols = [c for c in _SWEEP_COLUMNS if c in table.columns and c not in hidden]
    shown = ResultsTable(columns=cols, rows=table.rows)
    if args.csv:
        with open(args.csv, "w", encoding="utf-8") as f:
            f.write(ResultsTable(columns=[c for c in table.columns if "policy" not in c],
                                 rows=table.rows).to_csv())
    result = {"learner": args.learner, "members": len(table.rows), "devices": mesh_info(mesh),
              "layout": table.layout, "rows": shown.to_records()}
    emit(result, args.json, lambda r: f"toy sweep: learner={r['learner']}, {r['members']} member{'s' * (r['members'] != 1)} "
                                      f"trained in one program on {_where(r)}\n" + shown.render())
    return 0
