"""``londi-jax demo``: load SmolLM2-135M-Instruct offline, score BabyAI actions GLAM-style, chat, show cost."""

from __future__ import annotations

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


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def run_demo(model: str = "smollm2-135m-instruct", dtype: str = "float32", max_new_tokens: int = 32) -> dict[str, Any]:
    """Run the demo and return its results as a JSON-able dict.

    Raises ``tokenizer.ChatTemplateError`` (before scoring) if the model has no chat template."""
    from londi_jax.lm.registry import load_lm
    from londi_jax.lm.tokenizer import check_chat_template

    t0 = time.perf_counter()
    lm = load_lm(model, dtype=dtype)
    load_s = time.perf_counter() - t0
    check_chat_template(lm.tokenizer, repr(lm.name))  # the chat part needs one: fail before the slow work

    score = lm.score([GLAM_PROMPT], [list(BABYAI_ACTIONS)])
    score_cost = lm.cost().last_call
    logprobs = np.asarray(score.logprobs[0], dtype=np.float64)
    probs = softmax(logprobs)

    conversation = [{"role": "user", "content": CHAT_QUESTION}]
    gen = lm.generate_chat([conversation], max_new_tokens)  # stops on the model's end-of-turn token
    gen_cost = lm.cost().last_call
    report = lm.cost()
    return {
        "model": lm.name,
        "dtype": dtype,
        "device": str(jax.devices()[0]),
        "load_seconds": load_s,
        "glam_prompt": GLAM_PROMPT,
        "actions": [
            {"action": a, "logprob": float(lp), "num_tokens": int(n), "prob": float(p)}
            for a, lp, n, p in zip(BABYAI_ACTIONS, logprobs, score.num_tokens[0], probs)
        ],
        "best_action": BABYAI_ACTIONS[int(np.argmax(logprobs))],
        "chat_question": CHAT_QUESTION,
        "chat_answer": gen.texts[0].strip(),
        "finish_reason": gen.finish_reasons[0],
        "cost": {
            "num_params": report.num_params,
            "num_nonembedding_params": report.num_nonembedding_params,
            "flops_per_prompt_token": report.flops_per_prompt_token,
            "flops_per_generated_token": report.flops_per_generated_token,
            "score_seconds": score_cost.seconds,
            "score_compiled": score_cost.compiled,
            "generate_seconds": gen_cost.seconds,
            "generate_compiled": gen_cost.compiled,
            "generated_tokens": gen_cost.generated_tokens,
            "chat_prompt_tokens": gen_cost.prompt_tokens,
            "device_seconds_total": report.total_seconds,
            "flops_total": report.total_flops,
        },
    }


def render_demo(r: dict[str, Any]) -> str:
    """Human-readable text for :func:`run_demo`'s result."""
    c = r["cost"]
    lines = [
        f"model {r['model']} ({r['dtype']}) on {r['device']}, loaded in {r['load_seconds']:.1f} s",
        "",
        "GLAM-style BabyAI prompt:",
        *("  | " + line for line in r["glam_prompt"].split("\n")),
        "",
        f"  {'action':<12} {'log-prob':>9} {'tokens':>6} {'prob':>6}",
    ]
    for a in r["actions"]:
        mark = "  <- best" if a["action"] == r["best_action"] else ""
        lines.append(f"  {a['action']:<12} {a['logprob']:9.3f} {a['num_tokens']:6d} {a['prob']:6.3f}{mark}")
    lines += [
        "",
        f"chat> {r['chat_question']}",
        f"{r['model']}> {r['chat_answer']}  [{r['finish_reason']}]",
        "",
        f"cost: {c['num_params'] / 1e6:.1f}M params ({c['num_nonembedding_params'] / 1e6:.1f}M non-embedding), "
        f"{c['flops_per_generated_token'] / 1e6:.0f} MFLOPs per generated token",
        f"      scoring {c['score_seconds']:.2f} s{' (incl. compile)' if c['score_compiled'] else ''}, "
        f"generation {c['generate_seconds']:.2f} s for {c['generated_tokens']} tokens"
        f"{' (incl. compile)' if c['generate_compiled'] else ''}; device total {c['device_seconds_total']:.2f} s, "
        f"{c['flops_total'] / 1e9:.1f} GFLOPs",
    ]
    return "\n".join(lines)
