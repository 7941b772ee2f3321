"""JAX BabyAI-Text vs the Python BabyAI-Text env: env steps per second, with the text as token ids.

    python benchmarks/babyai_jax_env.py [--quick] [--envs 256 1024 4096] [--steps 64]

Side by side in one run, on GLAM's MixedTrainLocal (all five kinds, 8x8 rooms, 8 distractors),
random actions, auto-reset:

* Python: ``BabyAITextEnv.step`` (minigrid step + the sentences), then GLAM's prompt string from
  the history and its token ids from the tokenizer (what a host rollout does per env step). One
  process, one env at a time.
* JAX: ``env.step_batch`` over N envs inside one ``lax.scan`` (sentences as piece ids in every
  observation), (a) env only, (b) plus GLAM's prompt as token ids built in jit for every env at
  every step (``prompt_ids``). Auto-reset draws ``N // 16`` fresh levels per step (episodes last
  ~30-130 steps, so fewer than N/16 end per step on average; ``reset_shortfall`` is recorded) and
  also ``N`` (every ended env always gets its own fresh level).

Tokenizer: the word-level tokenizer of the BabyAI-Text phrase set (``babyai-words``); the prompt
buffer holds up to 16 sentences per observation. Compile time is reported apart; timings are the
median of repeats after a warm-up, with ``block_until_ready``. Results:
``benchmarks/results/babyai_jax_env_<device>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_tag, render_table, time_call, write_result  # noqa: E402

from londi_jax.envs.babyai_jax import env as jenv  # noqa: E402
from londi_jax.envs.babyai_jax import levels, phrases, prompt_ids  # noqa: E402
from londi_jax.envs.babyai_text import ACTIONS, build_glam_prompt, make_babyai_text  # noqa: E402
from londi_jax.lm.tokenizer import train_word_tokenizer  # noqa: E402

XLAND_CPU_STEPS_S = 0.7e6  # xminigrid on this 2-core CPU without text (shared/reference, issue 14)


def python_rate(tok, steps: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    env = make_babyai_text("BabyAI-MixedTrainLocal-v0", seed=seed)
    r = env.reset(seed=seed)
    mission, obs, acts = r.mission, [r.info["descriptions"]], []
    n_tokens = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        a = ACTIONS[int(rng.integers(6))]
        ts = env.step(a)
        if ts.terminated or ts.truncated:
            r = env.reset()
            mission, obs, acts = r.mission, [r.info["descriptions"]], []
        else:
            obs, acts = (obs + [ts.info["descriptions"]])[-3:], (acts + [a])[-2:]
        n_tokens += len(tok.encode(build_glam_prompt(mission, obs, acts)))
    dt = time.perf_counter() - t0
    return {"steps_per_s": steps / dt, "tokens_per_prompt": n_tokens / steps}


def make_run(n: int, steps: int, resets: int, tables, max_len: int | None):
    params = levels.make_params(phrase_filter="train")

    def run(key):
        obs, st = jenv.reset_batch(key, params, n)
        hist = jax.vmap(prompt_ids.history_start)(obs.slots)

        def body(c, k):
            st, hist, acc = c
            ka, ks = jax.random.split(k)
            a = jax.random.randint(ka, (n,), 0, 6)
            obs, st, rew, te, tr, info = jenv.step_batch(ks, st, a, params, resets=resets)
            acc = acc + rew.sum() + obs.slots[:, 7].sum() * 1e-9
            short = info["reset_shortfall"]
            if max_len is not None:
                pushed = jax.vmap(prompt_ids.history_push)(hist, a, obs.slots)
                fresh = jax.vmap(prompt_ids.history_start)(obs.slots)
                d = info["done"]
                hist = jax.tree.map(lambda f, p: jnp.where(d.reshape((-1,) + (1,) * (f.ndim - 1)), f, p), fresh, pushed)
                ids, length = jax.vmap(lambda m, h: tables.build(m, h, max_len))(obs.mission, hist)
                acc = acc + ids[:, 3].sum() * 1e-9 + length.sum() * 1e-9
            return (st, hist, acc), (short, te.sum())

        (_, _, acc), (short, succ) = jax.lax.scan(body, (st, hist, jnp.float32(0)), jax.random.split(key, steps))
        return acc, short.sum(), short.max(), succ.sum()

    return jax.jit(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--envs", type=int, nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--python-steps", type=int, default=3000)
    args = ap.parse_args()
    sizes = args.envs or ([64] if args.quick else [256, 1024, 4096])
    steps = 16 if args.quick else args.steps
    tok = train_word_tokenizer(phrases.PIECES[1:], vocab_size=400)
    tables = prompt_ids.PromptTables.from_tokenizer(tok)
    max_len = tables.max_prompt_tokens(n_sentences=16)

    py = python_rate(tok, 300 if args.quick else args.python_steps)
    print(f"python: {py['steps_per_s']:.0f} env steps/s with prompt ids ({py['tokens_per_prompt']:.0f} tokens/prompt)")
    rows = []
    for n in sizes:
        for text in (False, True):
            # exact resets (a fresh level for every env that ended) only at the smallest size: each
            # step where any episode ends then generates n levels
            for resets in ((max(1, n // 16), n) if n == sizes[0] else (max(1, n // 16),)):
                fn = make_run(n, steps, resets, tables, max_len if text else None)
                t = time_call(fn, jax.random.key(0), repeats=3, warmup=1)
                out = jax.device_get(fn(jax.random.key(1)))
                rate = n * steps / t.median_s
                rows.append({"envs": n, "prompt_ids": text, "resets_per_step": resets,
                             "steps_per_s": rate, "vs_python": rate / py["steps_per_s"],
                             "compile_s": t.compile_s, "median_s": t.median_s,
                             "reset_shortfall_total": int(out[1]), "reset_shortfall_max": int(out[2]),
                             "successes": int(out[3])})
                print(render_table(rows[-1:], list(rows[-1])))
    result = {"python": py, "jax": rows, "steps": steps, "max_prompt_tokens": max_len,
              "xland_minigrid_cpu_steps_s_no_text": XLAND_CPU_STEPS_S,
              "note": "xland-minigrid's rate is the reference notes' figure on this 2-core CPU (no text, see issue 14), "
                      "not measured in this run"}
    path = write_result(f"babyai_jax_env_{device_tag()}" + ("_quick" if args.quick else ""), result)
    print(render_table(rows, ["envs", "prompt_ids", "resets_per_step", "steps_per_s", "vs_python", "compile_s",
                              "reset_shortfall_total"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
