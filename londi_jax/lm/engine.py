"""``LanguageModel``: the object API (tokenize, bucket, batch) over pure jitted programs.

The model is ``nnx.split`` once into ``(graphdef, state)``; each program is a plain ``jax.jit`` of a
function of ``state`` and arrays (the graphdef is closed over), so there is no per-call NNX graph
walk. Programs:

* ``score``: each prompt is prefilled ONCE; its KV cache is shared by all its candidates, which run
  in blocks of K ``(C, K, L)`` attending to their prompt's cache plus causally to themselves (no K
  copies of the prompt; a prompt with hundreds of candidates takes several blocks, one with few
  takes one, so no prompt pads its candidates to the largest list). The first candidate token is
  scored from the prompt's last logits; logits are computed only at the positions a score reads. Prompt embeddings come from the same prefill.
* ``generate``: prefill + the whole decode loop inside one ``lax.while_loop`` over a preallocated
  cache (left padding, per-row done mask), greedy or sampling (temperature, top-k, top-p).
* ``embed``: prefill only; mean of the final-normed hidden states over real prompt tokens.
* ``logits``: full-sequence logits (token-level access for trainers and tests).

Prefill packs the prompts' real tokens back to back for the projections and MLPs (the bulk of
the FLOPs) and runs attention per left-padded row (``prefill(..., packed=N)``), so padding costs
attention only. Shapes are bucketed by ``bucket`` (its docstring states the waste bound): batch
rows and the new-token cap to powers of two, prompt slots to 4 sizes per octave, candidates per
block (at most ``candidate_block``) and their length exact up to 8, blocks per call to powers of
two (``_block_groups``); packed tokens to eighths of the padded block (``packed_slots``: at most
7 packed programs per block shape, not one per octave step, which multiplied compiles); new
lengths inside a bucket reuse the compiled program; values such as ``max_new_tokens``,
temperature, top-k and top-p are traced arguments and never recompile.

Tokenization: prompts use ``encode(prompt, add_special_tokens=True)`` (BOS if the tokenizer adds
one), a whole batch in one call of the fast tokenizer's batch encoding; each candidate is
tokenized on its own, as given, with ``add_special_tokens=False`` (the distinct candidates of a
call in one batch call), and the scored sequence is ``prompt_ids + candidate_ids``. Pass the candidate with the separator you want
(e.g. ``" go forward"``). This is exactly what a full-sequence forward over the concatenated ids
computes (tests check that).

End of generation: a row ends on device when it generates any id of ``eog_token_ids``: the ids the
checkpoint declares as ending generation (for GGUF llama.cpp's end-of-generation set, e.g.
``<|eot_id|>`` as well as EOS; for a Hugging Face directory generation_config.json's and
config.json's ``eos_token_id``), the config's EOS ids and the tokenizer's EOS. They enter the jitted
loop as a boolean vocabulary mask (a traced argument: new stop sets never recompile).

Stop strings: before decoding, the engine also marks every vocabulary token whose text (special
tokens spelled out) contains a stop string; generating such a token ends the row on device. Stop
strings that only appear across token boundaries are found on the host afterwards. Either way the
stop strings are searched in the text decoded WITH special tokens, so a stop string that is a special
token (``"<|eot_id|>"``) or spans one is found; the returned text (special tokens skipped) ends just
before it and the finish reason is 'stop'.

Chat: ``generate_chat`` tokenizes each conversation once with the tokenizer's chat template
(``tokenizer.chat_prompt``, i.e. transformers' ``apply_chat_template(tokenize=True)``), never
re-encoding the rendered text with special tokens (which would double a template's BOS).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from londi_jax.lm.config import ModelConfig
from londi_jax.lm.interface import (
    CallCost,
    ContextLengthError,
    CostReport,
    GenerateResult,
    LMInputError,
    ScoreResult,
)
from londi_jax.lm.layers import CausalLM, KVCache, init_cache
from londi_jax.lm.lora import adapter_bank_size, set_adapter_rows
from londi_jax.utils.mesh import host_to_global, mesh_spans_processes, replicated_constraint, split_rows


def bucket(n: int, granule: int = 1, steps: int = 1) -> int:
    """The padded size of an axis holding ``n`` items: ``steps`` sizes per octave, at least ``granule``.

    For ``2**e < n <= 2**(e+1)``, ``n`` is rounded up to a multiple of ``max(granule, 2**e // steps)``
    (at most ``granule`` for ``n <= granule``). Waste bound: the padded size is below
    ``n * (1 + 1 / steps)`` (padding under ``1 / (steps + 1)`` of the padded axis), or at most
    ``granule - 1`` items more than ``n`` where the granule sets the step. Compiles: at most ``steps``
    sizes per octave (plus the multiples of ``granule`` below ``granule * steps``). ``steps=1`` gives
    powers of two. E.g. ``bucket(193, 16, 4) == 224``, ``bucket(193, 16, 8) == 208``,
    ``bucket(193, 16) == 256``; ``bucket(6, 1, 4) == 6`` (exact up to ``2 * steps``).
    """
    n = max(int(n), 1)
    if n <= granule:
        return granule
    octave = 1 << ((n - 1).bit_length() - 1)  # 2**e < n <= 2**(e+1)
    step = max(granule, octave // steps, 1)
    return -(-n // step) * step


# Bucket policies (``bucket(n, granule, steps)``), chosen for the CPU prefill of GLAM-style prompts:
# prompt slots (attention and the KV cache only, once prompts are packed): < 25% extra slots;
# candidates per prompt and candidate tokens: exact up to 8, then < 25% extra. Batch rows stay powers
# of two (``_batch_bucket``): an all-padding row costs attention only, since packed prefill skips
# padding tokens. Packed prompt tokens: ``packed_slots``.
PROMPT_BUCKET = (16, 4)
CANDIDATE_BUCKET = (1, 4)
PACKED_FRACTIONS = 8
BLOCK_GROUP_SLOTS = 4096  # candidate slots (blocks x K) of one scoring program call at most
PACKED_GRANULE = 16  # below this many tokens a step saves nothing worth a program


def packed_slots(num_tokens: int, block: int) -> int | None:
    """Packed-token count for ``prefill`` of ``num_tokens`` real tokens in a padded ``block`` of
    ``B * P`` slots: ``num_tokens`` rounded up to a multiple of ``block / PACKED_FRACTIONS`` (at least
    ``PACKED_GRANULE`` tokens), or None (the padded layout) when that is the whole block.

    Why eighths of the block and not an octave bucket of ``num_tokens``: the packed count is a static
    shape *per block shape*, so an octave scheme multiplied the programs (about 10 per block shape, 101
    score programs in one tiny pipeline run); eighths give at most 7 per block shape, and a workload of
    similar prompt lengths hits one or two. Waste: under ``block / 8`` packed tokens, i.e. < 12.5% of
    the block (< 25% of the real tokens when they fill at least half of it). E.g. ``block = 4 * 32``:
    26 tokens -> 32, 100 -> 112, 120 -> None.
    """
    step = max(block // PACKED_FRACTIONS, PACKED_GRANULE)
    packed = -(-max(int(num_tokens), 1) // step) * step
    return packed if packed < block else None


def positions_from_valid(valid: jax.Array) -> jax.Array:
    """Left-padded rows: position of each real token among the real tokens (pads get 0)."""
    return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1, 0)


def prefill(model: CausalLM, tokens: jax.Array, valid: jax.Array, cache_size: int, packed: int | None = None
            ) -> tuple[jax.Array, KVCache, jax.Array]:
    """Run left-padded prompts ``(B, P)`` into a fresh cache of ``cache_size >= P`` slots.

    ``packed`` (static): run the projections and MLPs on the real tokens only, packed back to back
    into ``packed`` slots (``CausalLM.forward_packed``), so padding costs attention only; it must be
    at least the number of real tokens (``valid.sum()``), else tokens are dropped. ``None``: the
    padded ``(B, P)`` layout throughout. Both give the same values. Returns final-normed hidden
    ``(B, P, H)`` (arbitrary at padding), the cache and the slot-validity mask ``(B, cache_size)``.
    """
    B, P = tokens.shape
    key_valid = jnp.zeros((B, cache_size), bool).at[:, :P].set(valid)
    positions = positions_from_valid(valid)
    if packed is None:
        cache = init_cache(model.config, B, cache_size)
        hidden, cache = model.forward_cached(tokens, positions, cache, jnp.int32(0), key_valid)
        return hidden, cache, key_valid
    slot_valid = valid.reshape(-1)
    flat = jnp.nonzero(slot_valid, size=packed, fill_value=0)[0]  # row slot of each packed token
    rows = jnp.where(valid, jnp.cumsum(slot_valid.astype(jnp.int32)).reshape(B, P) - 1, 0)  # packed index per slot
    mask = jnp.tril(jnp.ones((P, P), bool))[None] & valid[:, None, :]
    hidden, cache = model.forward_packed(tokens.reshape(-1)[flat], positions.reshape(-1)[flat], rows, flat, mask)
    if cache_size > P:  # room for decoding after the prompt
        grow = ((0, 0), (0, cache_size - P), (0, 0), (0, 0))
        cache = KVCache(*(tuple(jnp.pad(x, grow) for x in part) for part in cache))
    return hidden[rows], cache, key_valid


def decode_cache(config: ModelConfig, cache: KVCache, key_valid: jax.Array, size: int
                 ) -> tuple[KVCache, jax.Array, jax.Array | None]:
    """A prompt's cache ``(B, P)`` (from :func:`prefill`) made ready to decode up to ``size`` slots.

    Global layers get ``size`` slots (the prompt's, then room for the new tokens). A sliding layer
    needs only its window: where ``sliding_window < size`` it gets a ring buffer of
    ``sliding_window`` slots holding the prompt's last tokens (cache slot ``s`` at ring slot
    ``s % sliding_window``), which each decoded token overwrites in turn (``forward_cached``), so
    its cache never grows past the window and its attention reads ``sliding_window`` keys, not all
    of them. Returns the cache, ``key_valid (B, size)`` and ``ring_valid (B, window)`` (None without
    rings).
    """
    B, P = key_valid.shape
    grow = size - P
    key_valid = jnp.pad(key_valid, ((0, 0), (0, grow)))
    W = config.sliding_window
    use_ring = config.layer_types is not None and W < size

    def ring(x: jax.Array) -> jax.Array:  # slots [P - W, P) (empty before 0), rotated to slot % W
        ext = jnp.concatenate([jnp.zeros((B, W, *x.shape[2:]), x.dtype), x], axis=1)[:, P:P + W]
        return jnp.roll(ext, (P - W) % W, axis=1)

    def full(x: jax.Array) -> jax.Array:
        return jnp.pad(x, ((0, 0), (0, grow)) + ((0, 0),) * (x.ndim - 2))

    parts = tuple(tuple(ring(x) if use_ring and config.is_sliding(i) else full(x) for i, x in enumerate(part))
                  for part in cache)
    return KVCache(*parts), key_valid, (ring(key_valid[:, :P]) if use_ring else None)


def mean_pool(hidden: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean of ``hidden (B, T, H)`` over valid positions, float32 ``(B, H)``."""
    w = valid.astype(jnp.float32)[..., None]
    return (hidden.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1.0)


def token_logprobs(logits: jax.Array, targets: jax.Array, with_greedy: bool = False
                   ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """log softmax(logits)[target] without materialising the full log-softmax; ``with_greedy``:
    also whether each target is the argmax (greedy decoding would pick it; a tie counts)."""
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    lp = picked - jax.nn.logsumexp(logits, axis=-1)
    return (lp, picked >= logits.max(-1)) if with_greedy else lp


def sample_token(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_k: jax.Array,
                 top_p: jax.Array) -> jax.Array:
    """Sample from ``logits (B, V)`` at ``temperature`` restricted to the top-k tokens and then to the
    smallest set whose probability reaches ``top_p`` (top_k=V, top_p=1 disable them)."""
    V = logits.shape[-1]
    scaled = logits / jnp.maximum(temperature, 1e-6)
    desc = -jnp.sort(-scaled, axis=-1)
    k = jnp.clip(top_k, 1, V)
    kth = jnp.take_along_axis(desc, jnp.broadcast_to(k - 1, (logits.shape[0], 1)), axis=-1)
    desc = jnp.where(jnp.arange(V) < k, desc, -jnp.inf)
    probs = jax.nn.softmax(desc, axis=-1)
    keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p  # always keeps the most likely token
    cutoff = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)
    scaled = jnp.where((scaled < kth) | (scaled < cutoff), -jnp.inf, scaled)
    return jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)


def prefill_prompts(model: CausalLM, p_tok: jax.Array, p_valid: jax.Array, packed: int | None = None
                    ) -> tuple[KVCache, jax.Array, jax.Array, jax.Array]:
    """The scoring half that reads prompts only: prefill ``(B, P)`` left-padded prompts. Returns
    the KV cache, the last prompt token's logits ``(B, V)``, the mean-pooled prompt embedding
    ``(B, H)`` and the last prompt token's hidden state ``(B, H)``."""
    hidden, cache, _ = prefill(model, p_tok, p_valid, p_tok.shape[1], packed)
    # left padding: the last slot is the last real token
    return cache, model.logits(hidden[:, -1]), mean_pool(hidden, p_valid), hidden[:, -1]


def score_blocks(model: CausalLM, cache: KVCache, p_valid: jax.Array, last_logits: jax.Array, c_tok: jax.Array,
                 c_valid: jax.Array, c_row: jax.Array | None = None, with_greedy: bool = False
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Per-token log-probs ``(C, K, L)`` (0 at padding) of candidate blocks ``c_tok/c_valid
    (C, K, L)`` continuing prefilled prompts (``prefill_prompts``' cache and last logits, prompt
    mask ``p_valid (B, P)``); block ``j`` continues prompt ``c_row[j]`` (``None``: block j is
    prompt j, C == B). Each block gathers its prompt's cache (``P`` keys per layer, small beside
    the ``K * L`` queries that read it). ``with_greedy``: also ``(C, K)`` bool, every real token of
    the candidate is its position's argmax (lm-eval's ``is_greedy``).

    Only what a score reads is computed: candidate token j is scored from the hidden state of token
    j - 1, so the candidates' last slot never runs through the model (single-token candidates need
    no candidate forward at all), and logits come only from the candidate positions."""
    k_valid = p_valid
    if c_row is not None:
        last_logits, k_valid = last_logits[c_row], p_valid[c_row]
        cache = KVCache(*(tuple(x[c_row] for x in part) for part in cache))
    first, first_g = token_logprobs(last_logits[:, None, :], c_tok[:, :, 0], with_greedy=True)  # (C, K)
    C, K, L = c_tok.shape
    if L > 1:
        plen = k_valid.sum(-1).astype(jnp.int32)
        c_pos = plen[:, None, None] + jnp.arange(L - 1, dtype=jnp.int32)
        c_hidden = model.forward_with_prefix(c_tok[:, :, :-1], c_pos, c_valid[:, :, :-1], cache, k_valid)
        rest, rest_g = token_logprobs(model.logits(c_hidden), c_tok[:, :, 1:], with_greedy=True)  # (C, K, L-1)
    else:
        rest, rest_g = jnp.zeros((C, K, 0), first.dtype), jnp.ones((C, K, 0), bool)
    lp = jnp.where(c_valid, jnp.concatenate([first[..., None], rest], axis=-1), 0.0)
    if not with_greedy:
        return lp  # XLA drops the unused argmax comparisons
    greedy = jnp.concatenate([first_g[..., None], rest_g], axis=-1) | ~c_valid
    return lp, greedy.all(-1)


def score_candidates(model: CausalLM, p_tok: jax.Array, p_valid: jax.Array, c_tok: jax.Array,
                     c_valid: jax.Array, packed: int | None = None, c_row: jax.Array | None = None
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-token log-probs of K continuations per prompt, sharing one prefill of the prompt:
    ``prefill_prompts`` then ``score_blocks``.

    ``p_tok/p_valid (B, P)`` left-padded prompts; ``c_tok/c_valid (B, K, L)`` right-padded
    candidates (or blocks ``(C, K, L)`` of prompts ``c_row (C,)``, see ``score_blocks``);
    ``packed``: see ``prefill``. Returns log-probs ``(B, K, L)`` (0 at padding), the mean-pooled
    prompt embedding ``(B, H)`` and the last prompt token's hidden state ``(B, H)``. Pure and
    differentiable: behaviour cloning (``londi_jax.agents.bc``) trains through it, and the
    engine's scoring programs are its two halves.
    """
    cache, last_logits, pooled, last = prefill_prompts(model, p_tok, p_valid, packed)
    return score_blocks(model, cache, p_valid, last_logits, c_tok, c_valid, c_row), pooled, last


class MeshProgram:
    """``jax.jit(fn)`` for a model's program, called as ``(state, *arrays)``. When the model's mesh
    spans several processes, host inputs (token ids, masks, keys) are first placed replicated on it
    (a multi-process program takes only global arrays); otherwise this is the plain jit."""

    def __init__(self, owner: Any, fn: Any, **jit_kwargs: Any):
        self.owner = owner
        self.jitted = jax.jit(fn, **jit_kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.owner.global_inputs:
            mesh = self.owner.mesh
            args = (args[0], *(host_to_global(a, mesh) for a in args[1:]))
        return self.jitted(*args, **kwargs)


class MeshPlacement:
    """What both engines (decoder-only and seq2seq) share for running over a device mesh: ``mesh``
    (None: one device), ``shard(mesh)`` and their programs as ``MeshProgram``s."""

    mesh: Any = None
    global_inputs = False  # the mesh spans processes: host inputs are placed on it before a call

    def shard(self, mesh: Any) -> Any:
        """Place the parameters over ``mesh`` (a ``Mesh`` or its shape, ``"fsdp=2,model=4"``) by
        ``lm.sharding``'s rules (``fsdp`` / ``model`` axes; LoRA factors and adapter banks follow
        their kernels) and run every program there; returns self. Results equal the one-device ones to float rounding (the compiler inserts the
        collectives). Outputs that come back to the host are gathered (replicated) in the program,
        so this works with the mesh spanning several processes; every process must make the same
        calls."""
        from londi_jax.lm.sharding import shard_state
        from londi_jax.utils.mesh import as_mesh

        mesh = as_mesh(mesh)
        self.state = shard_state(self.state, mesh)
        self.mesh, self.global_inputs = mesh, mesh_spans_processes(mesh)
        return self

    def _gathered(self, tree: Any) -> Any:
        """Host-bound outputs, replicated over the mesh (every process can read them)."""
        return tree if self.mesh is None else replicated_constraint(tree, self.mesh)

    def _rows(self, *xs: jax.Array) -> tuple[jax.Array, ...]:
        """Inside a program: batch inputs with their rows split over the mesh's ``data`` axis (data-
        parallel scoring / generation: each data slice runs its rows on its fsdp x model devices)."""
        return split_rows(self.mesh, *xs)

    def _program(self, fn: Any, **jit_kwargs: Any) -> MeshProgram:
        return MeshProgram(self, fn, **jit_kwargs)


class LanguageModel(MeshPlacement):
    """A loaded LM with ``score`` / ``generate`` / ``embed`` / ``cost`` (see ``interface.LM``).

    ``batch_size`` bounds how many prompts go through one program call (bigger inputs are chunked);
    ``candidate_block``: most candidates scored as one block of a prompt (a prompt with more takes
    several blocks, ``score_blocks``' ``c_row``; bounds the attention scores' memory);
    ``min_batch`` pads smaller calls up to that many rows (fewer shapes to compile in a loop whose
    batch shrinks, at the price of computing padding rows; FLOPs count real tokens only).
    ``trace_counts`` counts how often each program was traced (i.e. compiled). ``eog_token_ids``:
    ids the checkpoint declares as ending generation besides the config's and tokenizer's EOS (the
    loaders pass them; see the module docstring).
    """

    def __init__(self, config: ModelConfig, model: CausalLM, tokenizer: Any = None, name: str = "lm",
                 batch_size: int = 16, min_batch: int = 1, eog_token_ids: Sequence[int] = (),
                 candidate_block: int = 256, mesh: Any = None):
        self.config = config
        self.tokenizer = tokenizer
        self.name = name
        self.declared_eog_ids = tuple(int(i) for i in eog_token_ids)  # the checkpoint's own end-of-generation ids
        self.batch_size = batch_size
        self.min_batch = min_batch
        if candidate_block < 1:
            raise LMInputError(f"candidate_block must be >= 1, got {candidate_block}")
        self.candidate_block = candidate_block
        self.graphdef, self.state = nnx.split(model)
        if mesh is not None:
            self.shard(mesh)
        self.trace_counts: collections.Counter[str] = collections.Counter()
        self._prefill_jit = self._program(self._prefill_impl, static_argnames=("packed",))
        self._blocks_jit = self._program(self._blocks_impl)
        self._generate_jit = self._program(self._generate_impl, static_argnames=("new_cap", "sample", "packed"))
        self._embed_jit = self._program(self._embed_impl, static_argnames=("packed",))
        self._logits_jit = self._program(self._logits_impl)
        self._token_texts: list[str] | None = None
        self._stop_masks: dict[tuple[str, ...], np.ndarray] = {}
        self._last_call: CallCost | None = None  # running totals, not a growing list of calls
        self._totals = {"seconds": 0.0, "flops": 0.0, "calls": 0}
        self._last_context = 0.0
        # parameters only: an adapter bank's row choice and scales are not weights
        self.num_params = int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
        emb = config.vocab_size * config.hidden_size
        self.num_nonembedding_params = self.num_params - emb * (1 if config.tie_embeddings else 2)
        self.num_adapters = adapter_bank_size(model)  # an adapter bank: rows choose one each
        self.adapter_names: tuple[str, ...] = tuple(str(k) for k in range(self.num_adapters))
        if self.num_adapters:  # a token runs through one adapter of the bank, not all of them
            bank = int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam))))
            self.num_nonembedding_params -= bank - bank // self.num_adapters

    @classmethod
    def from_hf_directory(cls, path: str, dtype: str = "float32") -> LanguageModel:
        """Load a local Hugging Face model directory (see ``hf_loader.load_hf_directory``)."""
        from londi_jax.lm.hf_loader import load_hf_directory

        return load_hf_directory(path, dtype=dtype)

    @property
    def model(self) -> CausalLM:
        """The NNX module (merged view of the current state)."""
        return nnx.merge(self.graphdef, self.state)

    # ------------------------------------------------------------------ pure programs
    def _bind(self, state, rows):
        """The module of ``state``, its adapter bank (if any) set to ``rows`` (one id per row of the
        program's leading axis; ``None`` for a model without a bank)."""
        model = nnx.merge(self.graphdef, state)
        if rows is not None:
            set_adapter_rows(model, rows)
        return model

    def _prefill_impl(self, state, p_tok, p_valid, rows, *, packed: int | None):
        self.trace_counts["prefill"] += 1
        p_tok, p_valid = self._rows(p_tok, p_valid)
        cache, last_logits, pooled, last = prefill_prompts(self._bind(state, rows), p_tok, p_valid, packed)
        return cache, last_logits, *self._gathered((pooled, last))

    def _blocks_impl(self, state, cache, p_valid, last_logits, c_tok, c_valid, c_row, rows):
        self.trace_counts["score"] += 1
        c_tok, c_valid = self._rows(c_tok, c_valid)
        return self._gathered(score_blocks(self._bind(state, rows), cache, p_valid, last_logits, c_tok, c_valid,
                                           c_row, with_greedy=True))

    def _embed_impl(self, state, p_tok, p_valid, rows, *, packed: int | None):
        self.trace_counts["embed"] += 1
        p_tok, p_valid = self._rows(p_tok, p_valid)
        model = self._bind(state, rows)
        hidden, _, _ = prefill(model, p_tok, p_valid, p_tok.shape[1], packed)
        return self._gathered(mean_pool(hidden, p_valid))

    def _logits_impl(self, state, tok, valid, rows):
        self.trace_counts["logits"] += 1
        tok, valid = self._rows(tok, valid)
        model = self._bind(state, rows)
        hidden, _, _ = prefill(model, tok, valid, tok.shape[1])
        return self._gathered(model.logits(hidden))

    def _generate_impl(self, state, p_tok, p_valid, rows, max_new, temperature, top_k, top_p, key, stop_mask,
                       *, new_cap: int, sample: bool, packed: int | None = None):
        self.trace_counts["generate"] += 1
        p_tok, p_valid = self._rows(p_tok, p_valid)
        model = self._bind(state, rows)
        B, P = p_tok.shape
        hidden, cache, key_valid = prefill(model, p_tok, p_valid, P, packed)
        cache, key_valid, ring_valid = decode_cache(model.config, cache, key_valid, P + new_cap)
        W = model.config.sliding_window
        logits = model.logits(hidden[:, -1])
        plen = p_valid.sum(-1).astype(jnp.int32)
        out = jnp.zeros((B, new_cap), jnp.int32)
        done = ~p_valid.any(-1)  # batch-padding rows start finished
        n_gen = jnp.zeros((B,), jnp.int32)

        def cond(c):
            step, *_, done, _, _ = c
            return (step < max_new) & ~jnp.all(done)

        def body(c):
            step, cache, key_valid, ring_valid, logits, out, done, n_gen, key = c
            key, sub = jax.random.split(key)
            tok = sample_token(logits, sub, temperature, top_k, top_p) if sample else \
                jnp.argmax(logits, axis=-1).astype(jnp.int32)
            tok = jnp.where(done, 0, tok)
            out = out.at[:, step].set(tok)
            n_gen = jnp.where(done, n_gen, step + 1)
            done = done | stop_mask[tok]
            slot = P + step
            key_valid = key_valid.at[:, slot].set(True)
            if ring_valid is not None:
                ring_valid = ring_valid.at[:, slot % W].set(True)
            h, cache = model.forward_cached(tok[:, None], (plen + step)[:, None], cache, slot, key_valid, ring_valid)
            return step + 1, cache, key_valid, ring_valid, model.logits(h[:, 0]), out, done, n_gen, key

        carry = (jnp.int32(0), cache, key_valid, ring_valid, logits, out, done, n_gen, key)
        _, _, _, _, _, out, _, n_gen, _ = jax.lax.while_loop(cond, body, carry)
        return self._gathered((out, n_gen))

    # ------------------------------------------------------------------ host helpers
    def _tok(self) -> Any:
        if self.tokenizer is None:
            raise LMInputError(f"model {self.name!r} has no tokenizer; use the token-level API "
                               f"(score_tokens / generate_tokens / embed_tokens)")
        return self.tokenizer

    def _encode_batch(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
        """Token ids of ``texts`` in one call of a fast tokenizer's batch encoding (Rust, no Python
        loop per string); tokenizers with ``encode`` only are called once per string. Same ids as
        ``encode(text, add_special_tokens=...)`` for each text."""
        tok = self._tok()
        texts = list(texts)
        if texts and callable(tok) and hasattr(tok, "batch_decode"):  # a transformers tokenizer
            return [list(ids) for ids in tok(texts, add_special_tokens=add_special_tokens)["input_ids"]]
        return [list(tok.encode(t, add_special_tokens=add_special_tokens)) for t in texts]

    def _encode_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        if isinstance(prompts, str):
            raise LMInputError("prompts must be a sequence of strings, not one string; wrap it in a list")
        return self._encode_batch(prompts, add_special_tokens=True)

    def _check_prompts(self, ids: Sequence[Sequence[int]], extra: Sequence[int] | int = 0,
                       extra_label: str = "", hint: str = "shorten the prompt") -> None:
        """Non-empty, in-vocabulary prompts whose length + ``extra`` tokens fit the context window."""
        limit = self.config.context_window
        for i, p in enumerate(ids):
            if len(p) == 0:
                raise LMInputError(f"prompt {i} is empty (0 tokens); give at least one token of context")
            arr = np.asarray(p)
            bad = arr[(arr < 0) | (arr >= self.config.vocab_size)].tolist()
            if bad:
                raise LMInputError(f"prompt {i} has token ids outside [0, {self.config.vocab_size}): {bad[:5]}")
            n = extra if isinstance(extra, int) else extra[i]
            if len(p) + n > limit:
                label = f" + {extra_label.format(n=n)}" if extra_label else ""
                raise ContextLengthError(f"prompt {i} has {len(p)} tokens{label}: {len(p) + n} > the context window "
                                         f"of {limit} tokens of model {self.name!r}; {hint}")

    @staticmethod
    def _left_pad(rows: Sequence[Sequence[int]], batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        tok = np.zeros((batch, length), np.int32)
        valid = np.zeros((batch, length), bool)
        for i, r in enumerate(rows):
            if len(r):
                tok[i, length - len(r):] = r
                valid[i, length - len(r):] = True
        return tok, valid

    def _prompt_block(self, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, int | None]:
        """Left-padded ``(tokens, valid)`` of one chunk of prompts, ``(batch bucket, prompt bucket)``,
        and the packed-token count for ``prefill`` (None where packing would save nothing)."""
        B = self._batch_bucket(len(rows))
        P = bucket(max(len(r) for r in rows), *PROMPT_BUCKET)
        tok, valid = self._left_pad(rows, B, P)
        if self.num_adapters:  # bank layers read one adapter per row: the packed layout has no rows
            return tok, valid, None
        return tok, valid, packed_slots(sum(len(r) for r in rows), B * P)

    def _batch_bucket(self, n: int) -> int:
        """Rows of a program call: ``n`` rounded up to a power of two, at least ``min_batch``
        (capped at the batch size), so a shrinking batch meets few shapes (few compiles)."""
        return max(bucket(n), min(bucket(self.min_batch), bucket(self.batch_size)))

    def _adapter_ids(self, adapters: Sequence[int | str] | None, n: int) -> np.ndarray | None:
        """Per-prompt adapter indices ``(n,)`` of a bank model from indices or names (None without a
        bank). Raises ``LMInputError`` for a missing, extra or unknown choice."""
        if not self.num_adapters:
            if adapters is not None:
                raise LMInputError(f"model {self.name!r} has no adapter bank; drop adapters=, or build one with "
                                   f"LanguageModel.with_adapters(...)")
            return None
        if adapters is None or isinstance(adapters, (str, int)) or len(adapters) != n:
            raise LMInputError(f"model {self.name!r} holds {self.num_adapters} adapters "
                               f"({', '.join(self.adapter_names)}); give adapters=[one name or index per prompt] "
                               f"({n} prompts), or use lm.adapter(name) for one adapter")
        out = np.zeros((n,), np.int32)
        for i, a in enumerate(adapters):
            if isinstance(a, str) and a in self.adapter_names:
                out[i] = self.adapter_names.index(a)
            elif isinstance(a, (int, np.integer)) and not isinstance(a, bool) and 0 <= a < self.num_adapters:
                out[i] = int(a)
            else:
                raise LMInputError(f"unknown adapter {a!r} for prompt {i}; known adapters: "
                                   f"{', '.join(self.adapter_names)} (or indices 0-{self.num_adapters - 1})")
        return out

    @staticmethod
    def _chunk_rows(ids: np.ndarray | None, chunk: Sequence[int], rows: int) -> np.ndarray | None:
        """A chunk's adapter ids padded to the program's ``rows`` (padding rows use adapter 0)."""
        if ids is None:
            return None
        out = np.zeros((rows,), np.int32)
        out[:len(chunk)] = ids[list(chunk)]
        return out

    def with_adapters(self, adapters: Any, name: str | None = None) -> LanguageModel:
        """A model carrying several LoRA adapters of this base as one bank (``lora.add_lora_bank``):
        rows of one call may use different adapters (``adapters=`` on score / generate / embed /
        logits, or ``adapter(name)`` for a view fixed to one), in one forward and one compiled program.

        ``adapters``: a mapping ``name -> adapter`` or a sequence, each a saved adapter directory
        (``save_lora``) or a model adapted from this base (``add_lora`` / ``load_lora``)."""
        from pathlib import Path

        from londi_jax.lm.lora import add_lora_bank, load_lora

        if self.num_adapters:
            raise LMInputError(f"model {self.name!r} already holds an adapter bank; build the bank from the base")
        items = list(adapters.items()) if isinstance(adapters, dict) else \
            [(Path(a).name if isinstance(a, (str, Path)) else str(k), a) for k, a in enumerate(adapters)]
        names = [str(n) for n, _ in items]
        if len(set(names)) != len(names):
            raise LMInputError(f"adapter names must differ, got {names}")
        base = self.model
        models = [load_lora(base, a) if isinstance(a, (str, Path)) else a for _, a in items]
        lm = LanguageModel(self.config, add_lora_bank(base, models), self.tokenizer,
                           name=name or f"{self.name}+{len(models)} adapters", batch_size=self.batch_size,
                           min_batch=self.min_batch, eog_token_ids=self.declared_eog_ids,
                           candidate_block=self.candidate_block, mesh=self.mesh)
        lm.adapter_names = tuple(names)
        return lm

    def adapter(self, which: int | str) -> AdapterView:
        """This bank model fixed to one adapter (name or index): an ``LM`` whose calls run every row
        through that adapter (the bank's programs and weights are shared, not copied)."""
        k = int(self._adapter_ids([which], 1)[0])
        return AdapterView(self, k)

    def _candidate_blocks(self, cands: Sequence[Sequence[Sequence[int]]]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[int]]]:
        """One chunk's candidates as blocks of K (``score_blocks``' ``c_row`` form): returns
        ``c_tok, c_valid (C, K, L)``, ``c_row (C,)`` and each prompt's block indices. K is the
        largest candidate list's length bucketed, at most ``candidate_block``; each list takes
        ``ceil(n / K)`` blocks; C is the total of ``_block_groups`` (padding blocks are all-invalid
        and read prompt 0)."""
        most = max(len(c) for c in cands)
        # one block size for every list that needs splitting (few programs)
        K = min(bucket(most, *CANDIDATE_BUCKET), self.candidate_block)
        L = bucket(max(len(t) for c in cands for t in c), *CANDIDATE_BUCKET)
        blocks, n_blocks = [], 0
        for c in cands:
            nb = -(-len(c) // K)
            blocks.append(list(range(n_blocks, n_blocks + nb)))
            n_blocks += nb
        C = sum(self._block_groups(n_blocks, K))
        c_tok = np.zeros((C, K, L), np.int32)
        c_valid = np.zeros((C, K, L), bool)
        c_row = np.zeros((C,), np.int32)
        for r, c in enumerate(cands):
            c_row[blocks[r]] = r
            for k, t in enumerate(c):
                c_tok[blocks[r][k // K], k % K, :len(t)] = t
                c_valid[blocks[r][k // K], k % K, :len(t)] = True
        return c_tok, c_valid, c_row, blocks

    def _block_groups(self, n_blocks: int, K: int) -> list[int]:
        """Sizes of the program calls that score ``n_blocks`` blocks of K candidates: as many full
        groups of ``BLOCK_GROUP_SLOTS // K`` blocks (a power of two) as fit, then the rest rounded
        up to a power of two. So a state's hundreds of candidates meet a handful of block-count
        shapes (compiles), not one per total, and padding stays under half of the last group."""
        cap = 1 << max((BLOCK_GROUP_SLOTS // max(K, 1)).bit_length() - 1, 0)
        full, rest = divmod(n_blocks, cap)
        return [cap] * full + ([bucket(rest)] if rest or not full else [])

    def _chunks(self, n: int, lengths: Sequence[int], desc: str) -> Any:
        """Index chunks of at most ``batch_size``, similar lengths together (less padding)."""
        order = sorted(range(n), key=lambda i: lengths[i])
        chunks = [order[s:s + self.batch_size] for s in range(0, n, self.batch_size)]
        return tqdm(chunks, desc=desc, disable=len(chunks) < 4, leave=False)

    def _record(self, kind: str, t0: float, traces_before: int, prompt_tokens: int, scored: int,
                generated: int, spans: list[tuple[float, float]]) -> CallCost:
        flops = sum(f for f, _ in spans)
        n_tok = prompt_tokens + scored + generated
        self._last_context = sum(c for _, c in spans) / max(n_tok, 1)
        call = CallCost(kind, time.perf_counter() - t0, sum(self.trace_counts.values()) > traces_before,
                        prompt_tokens, scored, generated, float(flops))
        self._last_call = call
        self._totals["seconds"] += call.seconds
        self._totals["flops"] += call.flops
        self._totals["calls"] += 1
        return call

    # ------------------------------------------------------------------ FLOPs
    def _flops(self, context: float, logits: bool = False) -> float:
        """Forward FLOPs of one token attending ``context`` keys (formula in ``CostReport``)."""
        c = self.config
        per = 2.0 * self.num_nonembedding_params + 4.0 * c.num_layers * context * c.num_heads * c.head_dim
        return per + (2.0 * c.vocab_size * c.hidden_size if logits else 0.0)

    def _span(self, n_prev: int, m: int, n_logits: int) -> tuple[float, float]:
        """(FLOPs, summed attention context) of ``m`` tokens following ``n_prev`` cached ones, with
        logits computed for ``n_logits`` of them. Token j (0-based) attends ``n_prev + j + 1`` keys."""
        ctx = m * n_prev + m * (m + 1) / 2.0
        c = self.config
        flops = (2.0 * self.num_nonembedding_params * m + 4.0 * c.num_layers * ctx * c.num_heads * c.head_dim
                 + 2.0 * c.vocab_size * c.hidden_size * n_logits)
        return flops, ctx

    # ------------------------------------------------------------------ public API
    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], *,
              with_embedding: bool = False, adapters: Sequence[int | str] | None = None) -> ScoreResult:
        """Summed log-probabilities of each prompt's candidate continuations (ragged lists welcome)."""
        p_ids = self._encode_prompts(prompts)
        if isinstance(candidates, str) or len(candidates) != len(prompts):
            raise LMInputError(f"got {len(prompts)} prompts but {len(candidates) if not isinstance(candidates, str) else 'a string of'} "
                               f"candidate lists; give one list of candidate strings per prompt")
        for i, cands in enumerate(candidates):
            if isinstance(cands, str):
                raise LMInputError(f"candidates for prompt {i} must be a list of strings, not a string")
        distinct = list(dict.fromkeys(c for cands in candidates for c in cands))  # e.g. one action set for all
        ids_of = dict(zip(distinct, self._encode_batch(distinct, add_special_tokens=False)))
        c_ids = []
        for i, cands in enumerate(candidates):
            c_ids.append([ids_of[c] for c in cands])
            for k, (c, ids) in enumerate(zip(cands, c_ids[-1])):
                if not ids:
                    raise LMInputError(f"candidate {k} ({c!r}) of prompt {i} tokenizes to zero tokens; "
                                       f"give non-empty candidates")
        return self.score_tokens(p_ids, c_ids, with_embedding=with_embedding, adapters=adapters)

    def score_tokens(self, prompt_ids: Sequence[Sequence[int]], candidate_ids: Sequence[Sequence[Sequence[int]]], *,
                     with_embedding: bool = False, adapters: Sequence[int | str] | None = None) -> ScoreResult:
        """Token-level ``score``: the scored sequence is ``prompt_ids[i] + candidate_ids[i][k]``.
        ``adapters``: for a bank model (``with_adapters``), the adapter each prompt uses."""
        t0, traces = time.perf_counter(), sum(self.trace_counts.values())
        if len(candidate_ids) != len(prompt_ids):
            raise LMInputError(f"got {len(prompt_ids)} prompts but {len(candidate_ids)} candidate lists")
        ids = self._adapter_ids(adapters, len(prompt_ids))
        for i, cands in enumerate(candidate_ids):
            if len(cands) == 0:
                raise LMInputError(f"prompt {i} has an empty candidate list; give at least one candidate")
            for k, c in enumerate(cands):
                if len(c) == 0:
                    raise LMInputError(f"candidate {k} of prompt {i} has zero tokens")
        # the last candidate token is scored, never read: a candidate of L tokens needs L - 1 positions
        self._check_prompts(prompt_ids, [max(len(c) for c in cs) - 1 for cs in candidate_ids],
                            "its longest candidate's inputs ({n} tokens)", "shorten the prompt or the candidates")
        n = len(prompt_ids)
        lp_out: list[Any] = [None] * n
        greedy_out: list[Any] = [None] * n
        emb = np.zeros((n, self.config.hidden_size), np.float32)
        last_h = np.zeros((n, self.config.hidden_size), np.float32)
        spans: list[tuple[float, float]] = []
        for chunk in self._chunks(n, [len(p) for p in prompt_ids], f"{self.name}: scoring"):
            p_tok, p_valid, packed = self._prompt_block([prompt_ids[i] for i in chunk])
            c_tok, c_valid, c_row, blocks = self._candidate_blocks([candidate_ids[i] for i in chunk])
            if c_tok.size > p_tok.size:  # candidates dominate: packing would save little and add programs
                packed = None
            rows = self._chunk_rows(ids, chunk, len(p_tok))
            cache, last_logits, pooled, last = self._prefill_jit(self.state, p_tok, p_valid, rows, packed=packed)
            parts, g0 = [], 0
            for g in self._block_groups(len(c_row), c_tok.shape[1]):  # one program per group size
                b_rows = None if rows is None else rows[c_row[g0:g0 + g]]  # a block uses its prompt's adapter
                parts.append(self._blocks_jit(self.state, cache, p_valid, last_logits, c_tok[g0:g0 + g],
                                              c_valid[g0:g0 + g], c_row[g0:g0 + g], b_rows))
                g0 += g
            parts, pooled, last = jax.block_until_ready((parts, pooled, last))
            # joined on the host: the groups come back anyway (no device concatenate to compile)
            lp = np.concatenate([np.asarray(x) for x, _ in parts])
            gr = np.concatenate([np.asarray(g) for _, g in parts])
            pooled, last = np.asarray(pooled), np.asarray(last)
            for r, i in enumerate(chunk):
                lens = [len(c) for c in candidate_ids[i]]
                flat = lp[blocks[r]].reshape(-1, lp.shape[-1])  # this prompt's blocks, in order
                lp_out[i] = [flat[k, :m].astype(np.float64) for k, m in enumerate(lens)]
                greedy_out[i] = gr[blocks[r]].reshape(-1)[:len(lens)]
                emb[i] = pooled[r]
                last_h[i] = last[r]
                pl = len(prompt_ids[i])
                spans.append(self._span(0, pl, 1))  # the prompt's last logits score candidate token 0
                spans.extend(self._span(pl, m, m - 1) for m in lens)
        n_scored = sum(len(c) for cs in candidate_ids for c in cs)
        call = self._record("score", t0, traces, sum(map(len, prompt_ids)), n_scored, 0, spans)
        return ScoreResult(
            logprobs=[np.array([t.sum() for t in row]) for row in lp_out],
            num_tokens=[np.array([len(c) for c in cs]) for cs in candidate_ids],
            token_logprobs=lp_out,
            embeddings=emb if with_embedding else None,
            last_hidden=last_h if with_embedding else None,
            cost=call,
            greedy=greedy_out,
        )

    def embed(self, prompts: Sequence[str], *, adapters: Sequence[int | str] | None = None) -> np.ndarray:
        """Prompt embeddings ``(B, hidden_size)``: the final-normed last-layer hidden states (the
        LM head's input) averaged over the prompt's real tokens (padding masked out)."""
        return self.embed_tokens(self._encode_prompts(prompts), adapters=adapters)

    def embed_tokens(self, prompt_ids: Sequence[Sequence[int]], *,
                     adapters: Sequence[int | str] | None = None) -> np.ndarray:
        """Token-level ``embed``."""
        t0, traces = time.perf_counter(), sum(self.trace_counts.values())
        self._check_prompts(prompt_ids)
        ids = self._adapter_ids(adapters, len(prompt_ids))
        out = np.zeros((len(prompt_ids), self.config.hidden_size), np.float32)
        for chunk in self._chunks(len(prompt_ids), [len(p) for p in prompt_ids], f"{self.name}: embedding"):
            tok, valid, packed = self._prompt_block([prompt_ids[i] for i in chunk])
            rows = self._chunk_rows(ids, chunk, len(tok))
            pooled = np.asarray(jax.block_until_ready(self._embed_jit(self.state, tok, valid, rows, packed=packed)))
            out[chunk] = pooled[:len(chunk)]
        self._record("embed", t0, traces, sum(map(len, prompt_ids)), 0, 0,
                     [self._span(0, len(p), 0) for p in prompt_ids])
        return out

    def logits(self, token_ids: Sequence[Sequence[int]], *,
               adapters: Sequence[int | str] | None = None) -> list[np.ndarray]:
        """Full-sequence float32 logits ``(T_i, vocab)`` for each token sequence."""
        t0, traces = time.perf_counter(), sum(self.trace_counts.values())
        self._check_prompts(token_ids)
        ids = self._adapter_ids(adapters, len(token_ids))
        out: list[Any] = [None] * len(token_ids)
        for chunk in self._chunks(len(token_ids), [len(p) for p in token_ids], f"{self.name}: logits"):
            T = bucket(max(len(token_ids[i]) for i in chunk), *PROMPT_BUCKET)
            tok, valid = self._left_pad([token_ids[i] for i in chunk], self._batch_bucket(len(chunk)), T)
            lg = np.asarray(jax.block_until_ready(self._logits_jit(self.state, tok, valid,
                                                                   self._chunk_rows(ids, chunk, len(tok)))))
            for r, i in enumerate(chunk):
                out[i] = lg[r, T - len(token_ids[i]):]
        self._record("logits", t0, traces, sum(map(len, token_ids)), 0, 0,
                     [self._span(0, len(p), len(p)) for p in token_ids])
        return out

    is_encoder_decoder = False

    @property
    def context_window(self) -> int:
        """Tokens one sequence may hold (prompt + generated, or prompt + candidate inputs)."""
        return int(self.config.context_window)

    @property
    def hidden_size(self) -> int:
        """Width of the hidden states (``ScoreResult.embeddings`` / ``last_hidden``)."""
        return int(self.config.hidden_size)

    @property
    def eog_token_ids(self) -> tuple[int, ...]:
        """Sorted ids that end a generated row: the checkpoint's declared end-of-generation ids, the
        config's EOS ids and the tokenizer's EOS (those inside the vocabulary)."""
        ids = set(self.declared_eog_ids) | set(self.config.eos_token_ids)
        tok_eos = getattr(self.tokenizer, "eos_token_id", None) if self.tokenizer is not None else None
        if tok_eos is not None:
            ids.add(int(tok_eos))
        return tuple(sorted(i for i in ids if 0 <= i < self.config.vocab_size))

    def _stop_token_mask(self, stop: tuple[str, ...]) -> np.ndarray:
        """Vocabulary mask of tokens that end a row: ``eog_token_ids`` and tokens containing a stop string."""
        if stop not in self._stop_masks:
            mask = np.zeros(self.config.vocab_size, bool)
            mask[list(self.eog_token_ids)] = True
            if stop:
                if self._token_texts is None:  # decoded once per model, reused for every stop set
                    tok = self._tok()
                    n = min(self.config.vocab_size, len(tok)) if hasattr(tok, "__len__") else self.config.vocab_size
                    singles = [[i] for i in range(n)]
                    self._token_texts = (tok.batch_decode(singles) if hasattr(tok, "batch_decode")
                                         else [tok.decode(x) for x in singles])
                for i, text in enumerate(self._token_texts):
                    if any(s in text for s in stop):
                        mask[i] = True
            self._stop_masks[stop] = mask
        return self._stop_masks[stop]

    def generate(self, prompts: Sequence[str], max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, stop: Sequence[str] = (),
                 seed: int = 0, adapters: Sequence[int | str] | None = None) -> GenerateResult:
        """Continue each prompt; greedy unless ``temperature > 0``. A row ends on an end-of-generation
        token (``eog_token_ids``; reason 'eos'), a stop string (reason 'stop'; special tokens count, see
        the module docstring) or ``max_new_tokens`` ('length'). Texts skip special tokens and exclude
        the ending token and everything from the first stop string on; ``token_ids`` keep the tokens up
        to and including the one that completed the stop string (or the end-of-generation token)."""
        return self._generate_result(self._encode_prompts(prompts), max_new_tokens, temperature=temperature,
                                     top_k=top_k, top_p=top_p, stop=stop, seed=seed, adapters=adapters)

    def chat_prompt(self, conversation: Sequence[Any], add_generation_prompt: bool = True) -> tuple[str, list[int]]:
        """``(rendered text, token ids)`` of a conversation (a list of ``{'role', 'content'}`` dicts) under
        the tokenizer's chat template, tokenized once as transformers' ``apply_chat_template(tokenize=True)``.
        Raises ``tokenizer.ChatTemplateError`` if the model has no chat template (or jinja2 is missing)."""
        from londi_jax.lm.tokenizer import chat_prompt

        return chat_prompt(self._tok(), conversation, add_generation_prompt=add_generation_prompt,
                           model_name=repr(self.name))

    def generate_chat(self, conversations: Sequence[Sequence[Any]], max_new_tokens: int, *,
                      temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                      stop: Sequence[str] = (), seed: int = 0, adapters: Sequence[int | str] | None = None
                      ) -> GenerateResult:
        """``generate`` for conversations: each is wrapped in the chat template with the assistant's turn
        opened (``chat_prompt``) and the reply generated; same stops, texts and reasons as ``generate``."""
        if isinstance(conversations, (str, dict)) or (conversations and isinstance(conversations[0], dict)):
            raise LMInputError("conversations must be a list of conversations, each a list of "
                               "{'role': ..., 'content': ...} messages; wrap a single conversation in a list")
        ids = [self.chat_prompt(c)[1] for c in conversations]
        return self._generate_result(ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                     stop=stop, seed=seed, adapters=adapters)

    def _generate_result(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, *, temperature: float,
                         top_k: int | None, top_p: float | None, stop: Sequence[str], seed: int,
                         adapters: Sequence[int | str] | None = None) -> GenerateResult:
        """Generate from token ids, then decode: finish reasons, stop-string truncation (host side)."""
        if isinstance(stop, str):
            stop = (stop,)
        stop = tuple(s for s in stop if s)
        ids, _, call = self._generate_ids(prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                          top_p=top_p, stop=stop, seed=seed, adapters=adapters)
        eog = set(self.eog_token_ids)
        texts, out_ids, out_reasons = [], [], []
        for row in ids:
            end = self._stop_string_end(row, stop)
            if end is not None:
                row, reason = row[:end], "stop"
                text = self._text_before_stop(row, stop)
            else:
                reason = "eos" if row and row[-1] in eog else "length"
                text = self._tok().decode(row[:-1] if reason == "eos" else row, skip_special_tokens=True)
            texts.append(text)
            out_ids.append(row)
            out_reasons.append(reason)
        return GenerateResult(texts, out_ids, out_reasons, call)

    def _stop_string_end(self, row: Sequence[int], stop: tuple[str, ...]) -> int | None:
        """Number of tokens up to the one completing the first stop string in ``row`` decoded with
        special tokens spelled out (so special-token stop strings are found), or None."""
        decode = self._tok().decode
        if not stop or not any(s in decode(row, skip_special_tokens=False) for s in stop):
            return None
        return next(j for j in range(1, len(row) + 1) if any(s in decode(row[:j], skip_special_tokens=False)
                                                             for s in stop))

    def _text_before_stop(self, row: Sequence[int], stop: tuple[str, ...]) -> str:
        """The text of ``row`` (special tokens skipped) before its first stop string.

        The stop string is located in the special-kept decoding; the tokens wholly before it are
        decoded with special tokens skipped and the plain-text head of the token where it starts is
        added (nothing of a special token that only partly precedes it)."""
        decode = self._tok().decode
        full = decode(row, skip_special_tokens=False)
        cut = min(full.find(s) for s in stop if s in full)
        k, head = 0, ""
        for j in range(len(row), -1, -1):  # the longest token prefix that ends at or before the cut
            head = decode(row[:j], skip_special_tokens=False)
            if len(head) <= cut and full.startswith(head):
                k = j
                break
        tail = full[len(head):cut]
        if k < len(row) and decode(row[k:k + 1], skip_special_tokens=True) == "":  # a special token
            tail = ""
        return decode(row[:k], skip_special_tokens=True) + tail

    def generate_tokens(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, *,
                        temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                        stop: tuple[str, ...] = (), seed: int = 0, adapters: Sequence[int | str] | None = None
                        ) -> tuple[list[list[int]], list[str]]:
        """Token-level ``generate``: new token ids per prompt (incl. a final EOS / stop token) and
        on-device finish reasons ('eos' for any stopping token, else 'length')."""
        ids, reasons, _ = self._generate_ids(prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                             top_p=top_p, stop=stop, seed=seed, adapters=adapters)
        return ids, reasons

    def _generate_ids(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, *, temperature: float,
                      top_k: int | None, top_p: float | None, stop: tuple[str, ...],
                      seed: int, adapters: Sequence[int | str] | None = None
                      ) -> tuple[list[list[int]], list[str], CallCost]:
        t0, traces = time.perf_counter(), sum(self.trace_counts.values())
        ids = self._adapter_ids(adapters, len(prompt_ids))
        if int(max_new_tokens) < 1:
            raise LMInputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0 or (top_p is not None and not 0 < top_p <= 1) or (top_k is not None and top_k < 1):
            raise LMInputError(f"invalid sampling settings temperature={temperature}, top_k={top_k}, top_p={top_p}: "
                               f"need temperature >= 0, top_k >= 1, 0 < top_p <= 1")
        self._check_prompts(prompt_ids, int(max_new_tokens), "max_new_tokens={n}",
                            "shorten the prompt or lower max_new_tokens")
        stop_mask = self._stop_token_mask(tuple(stop))
        new_cap = bucket(int(max_new_tokens), 16)
        sample = temperature > 0
        key = jax.random.key(seed)
        out_ids: list[Any] = [None] * len(prompt_ids)
        reasons: list[Any] = [None] * len(prompt_ids)
        spans: list[tuple[float, float]] = []
        for chunk in self._chunks(len(prompt_ids), [len(p) for p in prompt_ids], f"{self.name}: generating"):
            key, sub = jax.random.split(key)
            tok, valid, packed = self._prompt_block([prompt_ids[i] for i in chunk])
            out, n_gen = jax.block_until_ready(self._generate_jit(
                self.state, tok, valid, self._chunk_rows(ids, chunk, len(tok)), jnp.int32(max_new_tokens), jnp.float32(temperature),
                jnp.int32(top_k or self.config.vocab_size), jnp.float32(top_p or 1.0), sub, stop_mask,
                new_cap=new_cap, sample=sample, packed=packed))
            out, n_gen = np.asarray(out), np.asarray(n_gen)
            for r, i in enumerate(chunk):
                row = out[r, :n_gen[r]].tolist()
                out_ids[i] = row
                reasons[i] = "eos" if row and stop_mask[row[-1]] else "length"
                pl, g = len(prompt_ids[i]), len(row)
                # token t is sampled from logits of the previous position; the last one is never fed back
                spans.append(self._span(0, pl, 1))
                spans.append(self._span(pl, max(g - 1, 0), max(g - 1, 0)))
        call = self._record("generate", t0, traces, sum(map(len, prompt_ids)), 0, sum(map(len, out_ids)), spans)
        return out_ids, reasons, call

    def cost(self) -> CostReport:
        """Parameter counts, FLOPs per token (formula in ``CostReport``) and measured seconds."""
        last = self._last_call
        context = self._last_context if last is not None else self.config.context_window / 2
        return CostReport(
            name=self.name,
            num_params=self.num_params,
            num_nonembedding_params=self.num_nonembedding_params,
            context=float(context),
            flops_per_prompt_token=self._flops(context),
            flops_per_generated_token=self._flops(context, logits=True),
            last_call=last,
            total_seconds=float(self._totals["seconds"]),
            total_flops=float(self._totals["flops"]),
            num_calls=int(self._totals["calls"]),
        )


class AdapterView:
    """One adapter of a bank model (``LanguageModel.adapter``) as an ``LM``: ``score`` / ``generate``
    / ``embed`` (text and token level), ``generate_chat`` and ``logits`` run every row through
    adapter ``index``; everything else (tokenizer, config, ``cost()``: the bank's totals) is the bank's."""

    def __init__(self, bank: LanguageModel, index: int):
        self.bank, self.index = bank, int(index)
        self.name = f"{bank.name}[{bank.adapter_names[self.index]}]"

    def __getattr__(self, attr: str) -> Any:  # tokenizer, config, cost, context_window, ...
        return getattr(self.bank, attr)


def _fixed_adapter(method: str) -> Any:
    def call(self: AdapterView, rows: Sequence[Any], *args: Any, **kw: Any) -> Any:
        return getattr(self.bank, method)(rows, *args, adapters=[self.index] * len(rows), **kw)

    call.__name__ = method
    call.__doc__ = f"``LanguageModel.{method}`` with every row on this view's adapter."
    return call


for _method in ("score", "score_tokens", "generate", "generate_tokens", "generate_chat", "embed", "embed_tokens",
                "logits"):
    setattr(AdapterView, _method, _fixed_adapter(_method))
