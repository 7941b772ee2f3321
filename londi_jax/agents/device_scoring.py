"""Action scoring on device, from prompt token ids built in jit (``envs.babyai_jax.prompt_ids``).

The pieces the whole-loop LONDI program needs, each pure and ``jit``-able:

* ``left_pad``: the env's right-padded ``(ids, length)`` rows as the engine's left-padded prompts;
* ``score_actions``: the engine's own scoring function (``lm.engine.score_candidates``: one prefill
  per prompt, the six actions scored against its cache) summed per action, GLAM's policy logits;
* ``compact_rows`` / ``score_rows``: DEEPTHINK scores only the rows switched to it. The rows are
  gathered into a fixed-capacity batch, scored, and scattered back, so the work done is
  ``capacity`` prompts, not the whole batch with rows masked out. Rows past the capacity are not
  scored; the caller falls back to QUICK there and counts them (``overflow``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from londi_jax.lm.engine import score_candidates
from londi_jax.utils.errors import LondiError


def left_pad(ids: jax.Array, length: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Right-padded ``ids [B, L]`` with ``length [B]`` -> left-padded ``(tokens, valid)`` ``[B, L]``.
    Lengths past ``L`` (cut prompts) keep the first ``L`` tokens."""
    L = ids.shape[-1]
    n = jnp.minimum(length, L)
    src = jnp.arange(L)[None, :] - (L - n)[:, None]
    valid = src >= 0
    return jnp.where(valid, jnp.take_along_axis(ids, jnp.maximum(src, 0), axis=-1), 0), valid


def candidate_block(tokenizer: Any, actions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The actions' token ids as a right-padded ``(tok [K, Lc], valid [K, Lc])`` block, encoded as
    ``LMPolicy`` encodes them (no special tokens)."""
    if not actions:
        raise LondiError("candidate_block needs at least one action")
    rows = [list(tokenizer.encode(a, add_special_tokens=False)) for a in actions]
    for a, r in zip(actions, rows):
        if not r:
            raise LondiError(f"action {a!r} tokenizes to zero tokens with this tokenizer")
    Lc = max(len(r) for r in rows)
    tok = np.zeros((len(rows), Lc), np.int32)
    valid = np.zeros((len(rows), Lc), bool)
    for i, r in enumerate(rows):
        tok[i, :len(r)], valid[i, :len(r)] = r, True
    return tok, valid


def score_actions(model: Any, ids: jax.Array, length: jax.Array, cand_tok: jax.Array, cand_valid: jax.Array,
                  with_embedding: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Sum of each action's token log-probs given each prompt: ``[B, K]`` (GLAM's action scores).
    ``model``: a ``CausalLM`` (e.g. ``nnx.merge(graphdef, state)`` inside a jitted function).
    ``with_embedding``: also the prompt's mean-pooled and last-token final hidden states side by
    side, ``[B, 2H]`` (what ``LMPolicy`` gives the switcher, from the same prefill)."""
    p_tok, p_valid = left_pad(ids, length)
    B = ids.shape[0]
    c_tok = jnp.broadcast_to(cand_tok, (B, *cand_tok.shape))
    c_valid = jnp.broadcast_to(cand_valid, (B, *cand_valid.shape))
    lp, pooled, last = score_candidates(model, p_tok, p_valid, c_tok, c_valid)
    if with_embedding:
        return lp.sum(-1), jnp.concatenate([pooled, last], axis=-1)
    return lp.sum(-1)


def compact_rows(mask: jax.Array, capacity: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The first ``capacity`` rows where ``mask [B]`` is set (any nonzero value counts as set):
    ``(rows [capacity], used [capacity], overflow)``; ``overflow`` counts the set rows that did not
    fit. ``capacity`` must be an int >= 0 (``LondiError``)."""
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 0:
        raise LondiError(f"capacity must be an int >= 0, got {capacity!r}")
    mask = jnp.asarray(mask) != 0
    rows = jnp.nonzero(mask, size=capacity, fill_value=0)[0].astype(jnp.int32)
    used = jnp.arange(capacity) < mask.sum()
    return rows, used, jnp.maximum(mask.sum() - capacity, 0).astype(jnp.int32)


def score_rows(model: Any, ids: jax.Array, length: jax.Array, mask: jax.Array, capacity: int,
               cand_tok: jax.Array, cand_valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``score_actions`` on only the rows in ``mask``, in a ``capacity``-row batch: ``(scores [B, K]
    (0 where not scored), served [B], overflow)``; ``served`` marks the rows that were scored."""
    rows, used, overflow = compact_rows(mask, capacity)
    s = score_actions(model, ids[rows], length[rows], cand_tok, cand_valid)
    scores, served = scatter_rows(s, rows, used, ids.shape[0])
    return scores, served, overflow


def scatter_rows(values: jax.Array, rows: jax.Array, used: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Back from a compacted batch: ``values [C, ...]`` computed for ``rows [C]`` (``used [C]``
    marks real slots) into ``(out [size, ...] (0 elsewhere), served [size])``."""
    target = jnp.where(used, rows, size)  # unused slots write nowhere
    out = jnp.zeros((size, *values.shape[1:]), values.dtype).at[target].set(values, mode="drop")
    return out, jnp.zeros(size, bool).at[target].set(True, mode="drop")
