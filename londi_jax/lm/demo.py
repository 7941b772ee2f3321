"""``londi-jax lm demo``: real LMs (offline GGUF) score BabyAI actions GLAM-style, chat, and show their cost.

Two modes:

* the pair (default): a QUICK model (``--quick``, default SmolLM2-135M-Instruct) and a DEEPTHINK
  model (``--deep``, default the largest installed registered model, see :func:`default_deep`)
  score the six BabyAI actions for the same GLAM prompt side by side, each with its own tokenizer,
  and each answers the same chat question; :func:`run_pair_demo`.
* one model (``--model``): :func:`run_demo`.

Cost per scoring call: parameters, forward FLOPs of that call computed from its real token counts
(``CallCost.flops``, formula in ``lm.interface.CostReport``), and measured wall seconds. The first
call of a new shape compiles; it is timed apart and the warm seconds are the median of ``repeats``
further identical calls, so ``compile_seconds`` is first-call seconds minus warm seconds.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from typing import Any

import jax
import numpy as np

BABYAI_ACTIONS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle")

# One realistic BabyAI-Text prompt in GLAM's format (3 observations, 2 past actions, open Action 2).
GLAM_PROMPT = (
    "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle"
    " \n Goal of the agent: go to the red ball"
    " \n Observation 0: You see a wall 2 steps forward, You see a red ball 1 step left and 2 steps forward, "
    "You see a closed blue door 3 steps right and 1 step forward, "
    "\n Action 0: turn left"
    " \n Observation 1: You see a wall 3 steps forward, You see a red ball 2 steps forward, "
    "You see a grey key 1 step right and 3 steps forward, "
    "\n Action 1: go forward"
    " \n Observation 2: You see a wall 2 steps forward, You see a red ball 1 step forward, "
    "You see a grey key 1 step right and 2 steps forward, "
    "\n Action 2: "
)

CHAT_QUESTION = "In one sentence: what should a robot do to reach a red ball one step in front of it?"
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"  # for models without a chat template (base models)

DEFAULT_QUICK = "smollm2-135m-instruct"
PROB_NOTE = ("p(among actions) is the softmax of the six log-probs (renormalised over these candidates only); "
             "log-prob is the natural log of P(action text | prompt), summed over its tokens")


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # not on every platform
        return None


def default_deep(quick: str = DEFAULT_QUICK) -> tuple[str | None, str | None]:
    """``(name, note)``: the DEEPTHINK model the pair demo uses when ``--deep`` is not given.

    The largest installed, loadable registered model other than ``quick``, by weight-file size
    (``registry.model_table``: 1.5B before 0.5B for the Qwen2.5 pair). ``name`` is None when none is
    installed; ``note`` then says how to install one (and otherwise names larger models left out)."""
    from londi_jax.lm.registry import model_table

    rows = [m for m in model_table() if m["loadable"] and m["name"] != quick]
    installed = [m for m in rows if m["installed"] and m["size_bytes"]]
    missing = [m for m in rows if not m["installed"] and m["install"]]
    best = max(installed, key=lambda m: m["size_bytes"], default=None)
    bigger = [m for m in missing if best is None or (m["size_bytes"] or 0) > best["size_bytes"]]
    how = "; ".join(f"`{m['install']}`" for m in sorted(bigger, key=lambda m: -(m["size_bytes"] or 0)))
    if best is None:
        note = ("no DEEPTHINK model is installed, so only QUICK runs"
                + (f"; install one with {how}" if how else "") + " (or pass --deep NAME/PATH)")
        return None, note
    return best["name"], (f"larger models not installed: {how}" if how else None)


def _score_timed(lm: Any, repeats: int) -> tuple[Any, dict[str, Any]]:
    """Score the GLAM prompt: the first call (maybe compiling) timed apart from ``repeats`` warm calls."""
    res = lm.score([GLAM_PROMPT], [list(BABYAI_ACTIONS)])
    first = res.cost
    warm = []
    for _ in range(repeats):
        res = lm.score([GLAM_PROMPT], [list(BABYAI_ACTIONS)])
        warm.append(res.cost.seconds)
    warm_s = statistics.median(warm) if warm else None
    return res, {
        "prompt_tokens": first.prompt_tokens,
        "candidate_tokens": first.scored_tokens,
        "flops": first.flops,
        "first_call_seconds": first.seconds,
        "first_call_compiled": bool(first.compiled),
        "warm_seconds": warm_s,
        "warm_calls": len(warm),
        "compile_seconds": (max(first.seconds - warm_s, 0.0) if first.compiled and warm_s is not None else None),
    }


def _model_demo(lm: Any, load_s: float, dtype: str, max_new_tokens: int, repeats: int) -> dict[str, Any]:
    """One model's part of the demo: action scores, a chat answer and its cost (a flat dict)."""
    score, scoring = _score_timed(lm, repeats)
    logprobs = np.asarray(score.logprobs[0], dtype=np.float64)
    among = softmax(logprobs)
    if getattr(lm.tokenizer, "chat_template", None):
        conversation = [{"role": "user", "content": CHAT_QUESTION}]
        gen = lm.generate_chat([conversation], max_new_tokens)  # stops on the model's end-of-turn token
        mode = "chat"
    else:  # a base model (e.g. Gemma-3-270M) has no chat template: the question as a plain completion
        gen = lm.generate([PLAIN_TEMPLATE.format(question=CHAT_QUESTION)], max_new_tokens, stop=("\n\n", "Question:"))
        mode = "plain"
    gen_cost = gen.cost
    report = lm.cost()
    return {
        "model": lm.name,
        "dtype": dtype,
        "device": str(jax.devices()[0]),
        "load_seconds": load_s,
        "glam_prompt": GLAM_PROMPT,
        "actions": [
            {"action": a, "logprob": float(lp), "num_tokens": int(n), "prob": float(np.exp(lp)),
             "prob_among_candidates": float(p)}
            for a, lp, n, p in zip(BABYAI_ACTIONS, logprobs, score.num_tokens[0], among)
        ],
        "best_action": BABYAI_ACTIONS[int(np.argmax(logprobs))],
        "chat_question": CHAT_QUESTION,
        "chat_answer": gen.texts[0].strip(),
        "chat_mode": mode,
        "finish_reason": gen.finish_reasons[0],
        "scoring": scoring,
        "cost": {
            "num_params": report.num_params,
            "num_nonembedding_params": report.num_nonembedding_params,
            "flops_per_prompt_token": report.flops_per_prompt_token,
            "flops_per_generated_token": report.flops_per_generated_token,
            "score_flops": scoring["flops"],
            "score_seconds": scoring["warm_seconds"] if scoring["warm_seconds"] is not None
            else scoring["first_call_seconds"],
            "score_compiled": scoring["first_call_compiled"] and scoring["warm_seconds"] is None,
            "generate_seconds": gen_cost.seconds,
            "generate_compiled": gen_cost.compiled,
            "generate_flops": gen_cost.flops,
            "generated_tokens": gen_cost.generated_tokens,
            "chat_prompt_tokens": gen_cost.prompt_tokens,
            "device_seconds_total": report.total_seconds,
            "flops_total": report.total_flops,
        },
    }


def _load_and_run(model: str, dtype: str, max_new_tokens: int, repeats: int, progress: bool) -> dict[str, Any]:
    from londi_jax.lm.registry import load_lm

    t0 = time.perf_counter()
    lm = load_lm(model, dtype=dtype, progress=progress)
    load_s = time.perf_counter() - t0
    try:
        return _model_demo(lm, load_s, dtype, max_new_tokens, repeats)
    finally:
        del lm
        gc.collect()  # one model in memory at a time (a 1.5B model is 6 GB in float32)


def run_demo(model: str = DEFAULT_QUICK, dtype: str = "float32", max_new_tokens: int = 32, repeats: int = 1,
             progress: bool = True) -> dict[str, Any]:
    """The one-model demo as a JSON-able dict: ``actions`` (``logprob``; ``prob`` = exp(logprob);
    ``prob_among_candidates``, renormalised over the six), ``best_action``, ``chat_answer``,
    ``scoring`` (the cost of one scoring call, compile apart) and ``cost``.

    A model without a chat template (a base model) answers the question as a plain completion
    (``chat_mode`` "plain", ``PLAIN_TEMPLATE``, up to a blank line or the next "Question:") instead of a
    chat turn.
    Raises ``registry.ModelNotInstalledError`` / ``UnknownNameError`` for a model that cannot be loaded."""
    if repeats < 0:
        from londi_jax.utils.errors import LondiError

        raise LondiError(f"repeats must be >= 0, got {repeats}")
    out = _load_and_run(model, dtype, max_new_tokens, repeats, progress)
    out["load_average"] = _load_average()
    return out


_SHARED = ("glam_prompt", "chat_question", "device", "dtype")


def run_pair_demo(quick: str | None = None, deep: str | None = None, dtype: str = "float32",
                  max_new_tokens: int = 32, repeats: int = 1, progress: bool = True) -> dict[str, Any]:
    """QUICK and DEEPTHINK side by side on the same GLAM prompt and chat question.

    ``quick`` defaults to ``DEFAULT_QUICK``; ``deep`` to :func:`default_deep` (when none is installed,
    only QUICK runs and ``note`` says how to install one). Models are loaded one after the other (one
    in memory at a time). Returns the shared ``glam_prompt`` / ``chat_question`` / ``device`` /
    ``dtype``, ``models`` (one :func:`run_demo`-style dict per model, with ``role`` 'quick' or
    'deep'), ``ratios`` (deep / quick: params, scoring FLOPs and warm seconds; None with one model),
    ``note`` and ``load_average`` (1/5/15-minute, at start and end: timings on a shared machine).
    Errors as :func:`run_demo`; the names are checked (resolved) before any model is loaded."""
    from londi_jax.lm.registry import resolve_model_path
    from londi_jax.utils.errors import LondiError

    if repeats < 0:
        raise LondiError(f"repeats must be >= 0, got {repeats}")
    quick = quick or DEFAULT_QUICK
    note = None
    if deep is None:
        deep, note = default_deep(quick)
    for name in (quick, deep):
        if name is not None:
            resolve_model_path(name)  # a typo or an uninstalled model fails now, not after QUICK ran
    load_start = _load_average()
    rows = []
    for role, name in (("quick", quick), ("deep", deep)):
        if name is None:
            continue
        r = _load_and_run(name, dtype, max_new_tokens, repeats, progress)
        rows.append({"role": role, **{k: v for k, v in r.items() if k not in _SHARED}})
    ratios = None
    if len(rows) == 2:
        q, d = rows[0], rows[1]
        ratios = {
            "num_params": d["cost"]["num_params"] / q["cost"]["num_params"],
            "score_flops": d["scoring"]["flops"] / q["scoring"]["flops"],
            "score_warm_seconds": (d["scoring"]["warm_seconds"] / q["scoring"]["warm_seconds"]
                                   if q["scoring"]["warm_seconds"] and d["scoring"]["warm_seconds"] else None),
        }
    return {"glam_prompt": GLAM_PROMPT, "chat_question": CHAT_QUESTION, "device": str(jax.devices()[0]),
            "dtype": dtype, "models": rows, "ratios": ratios, "note": note,
            "load_average": {"start": load_start, "end": _load_average()}}


def _scoring_line(r: dict[str, Any]) -> str:
    sc = r["scoring"]
    warm = (f"{sc['warm_seconds']:.2f} s warm (median of {sc['warm_calls']})" if sc["warm_seconds"] is not None
            else f"{sc['first_call_seconds']:.2f} s{' incl. compile' if sc['first_call_compiled'] else ''}")
    comp = f", compile {sc['compile_seconds']:.1f} s apart" if sc["compile_seconds"] is not None else ""
    return (f"one scoring call: {sc['prompt_tokens']} prompt + {sc['candidate_tokens']} action tokens, "
            f"{sc['flops'] / 1e9:.1f} GFLOPs, {warm}{comp}")


def _ask(r: dict[str, Any]) -> str:
    return "chat>" if r.get("chat_mode", "chat") == "chat" else "prompt (no chat template: plain completion)>"


def render_demo(r: dict[str, Any]) -> str:
    """Human-readable text for :func:`run_demo`'s result."""
    c = r["cost"]
    lines = [
        f"model {r['model']} ({r['dtype']}) on {r['device']}, loaded in {r['load_seconds']:.1f} s",
        "",
        "GLAM-style BabyAI prompt:",
        *("  | " + line for line in r["glam_prompt"].split("\n")),
        "",
        f"  {'action':<12} {'log-prob':>9} {'tokens':>6} {'p(among actions)':>16}",
    ]
    for a in r["actions"]:
        mark = "  <- best" if a["action"] == r["best_action"] else ""
        lines.append(f"  {a['action']:<12} {a['logprob']:9.3f} {a['num_tokens']:6d} "
                     f"{a['prob_among_candidates']:16.3f}{mark}")
    lines += [
        f"  ({PROB_NOTE})",
        "",
        f"{_ask(r)} {r['chat_question']}",
        f"{r['model']}> {r['chat_answer']}  [{r['finish_reason']}]",
        "",
        f"cost: {c['num_params'] / 1e6:.1f}M params ({c['num_nonembedding_params'] / 1e6:.1f}M non-embedding), "
        f"{c['flops_per_generated_token'] / 1e6:.0f} MFLOPs per generated token",
        f"      {_scoring_line(r)}",
        f"      generation {c['generate_seconds']:.2f} s for {c['generated_tokens']} tokens"
        f"{' (incl. compile)' if c['generate_compiled'] else ''}; device total {c['device_seconds_total']:.2f} s, "
        f"{c['flops_total'] / 1e9:.1f} GFLOPs",
    ]
    if r.get("load_average"):
        lines.append(f"      (load average {' / '.join(map(str, r['load_average']))}: timings on a shared machine)")
    return "\n".join(lines)


def render_pair_demo(r: dict[str, Any]) -> str:
    """Human-readable text for :func:`run_pair_demo`'s result: the two models' columns side by side."""
    ms = r["models"]
    names = [f"{m['role'].upper()}: {m['model']}" for m in ms]
    w = max(36, *(len(n) for n in names))  # a cell: log-prob, p(among actions) and the best mark
    lines = [f"{r['dtype']} on {r['device']}", "", "GLAM-style BabyAI prompt:",
             *("  | " + line for line in r["glam_prompt"].split("\n")), ""]
    lines.append(f"  {'':<12}" + "".join(f"  {n:<{w}}" for n in names))
    lines.append(f"  {'action':<12}" + "".join(f"  {'log-prob  p(among actions)':<{w}}" for _ in ms))
    for i, action in enumerate(BABYAI_ACTIONS):
        cells = []
        for m in ms:
            a = m["actions"][i]
            cell = f"{a['logprob']:8.3f}  {a['prob_among_candidates']:16.3f}"
            cells.append(f"  {cell + ('  <- best' if action == m['best_action'] else ''):<{w}}")
        lines.append(f"  {action:<12}" + "".join(cells))
    lines += [f"  ({PROB_NOTE})", "", f"chat> {r['chat_question']}"
              + ("" if all(m.get("chat_mode", "chat") == "chat" for m in ms) else
                 "  (a model without a chat template completes it as a plain prompt)")]
    for m in ms:
        lines.append(f"{m['role'].upper()} {m['model']}> {m['chat_answer']}  [{m['finish_reason']}]")
    lines += ["", "cost per call:"]
    for m in ms:
        c = m["cost"]
        lines += [f"  {m['role'].upper()} {m['model']}: {c['num_params'] / 1e6:.1f}M params "
                  f"({c['num_nonembedding_params'] / 1e6:.1f}M non-embedding), loaded in {m['load_seconds']:.1f} s",
                  f"    {_scoring_line(m)}",
                  f"    chat: {c['chat_prompt_tokens']} prompt + {c['generated_tokens']} generated tokens, "
                  f"{c['generate_flops'] / 1e9:.1f} GFLOPs, {c['generate_seconds']:.2f} s"
                  f"{' incl. compile' if c['generate_compiled'] else ''}"]
    if r["ratios"]:
        x = r["ratios"]
        secs = f", {x['score_warm_seconds']:.1f}x the warm seconds" if x["score_warm_seconds"] else ""
        lines.append(f"  DEEPTHINK / QUICK per scoring call: {x['num_params']:.1f}x the params, "
                     f"{x['score_flops']:.1f}x the FLOPs{secs}")
    la = r["load_average"]
    if la["start"]:
        lines.append(f"  (load average {' / '.join(map(str, la['start']))} at start, "
                     f"{' / '.join(map(str, la['end']))} at end: timings on a shared machine)")
    if r["note"]:
        lines += ["", f"note: {r['note']}"]
    return "\n".join(lines)
