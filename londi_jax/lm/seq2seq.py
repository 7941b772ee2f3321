"""Encoder-decoder LMs (T5, Flan-T5) behind the same ``LM`` interface as the decoder-only engine.

* ``score_tokens``: the encoder runs once per prompt; every candidate is scored by the decoder
  (teacher-forced from ``decoder_start_token_id``) against its prompt's shared encoder output, all
  (prompt, candidate) pairs of a call in one program (rows gather their prompt's encoder states).
  ``logprobs[i][k]`` is the summed log-probability of candidate k's tokens as the decoder's output.
* ``generate``: the encoder once, then a jitted ``lax.while_loop`` over decoder steps with a
  self-attention KV cache per layer and the encoder's keys/values computed once
  (``T5ForConditionalGeneration.generate``); stop strings are cut on the host.
* ``embed``: the prompt's encoder states, mean-pooled over its real tokens.

Shapes are bucketed (``engine.bucket``) so ragged calls meet a few compiled programs. Every result
carries its measured cost; FLOPs count real tokens: ``2 * params`` of the stack a token passes
(encoder for prompt tokens, decoder plus the LM head for decoder tokens) plus attention
(``4 * layers * context * heads * d_kv`` per token, cross-attention's context being the prompt).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from londi_jax.lm.engine import (
    CANDIDATE_BUCKET,
    PROMPT_BUCKET,
    MeshPlacement,
    bucket,
    sample_token,
    token_logprobs,
)
from londi_jax.lm.interface import CallCost, ContextLengthError, CostReport, GenerateResult, LMInputError, ScoreResult
from londi_jax.lm.t5 import T5Config, T5ForConditionalGeneration

__all__ = ["Seq2SeqLanguageModel"]


def _right_pad(rows: Sequence[Sequence[int]], n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    tok = np.zeros((n, length), np.int32)
    valid = np.zeros((n, length), bool)
    for i, r in enumerate(rows):
        tok[i, :len(r)] = r
        valid[i, :len(r)] = True
    return tok, valid


class Seq2SeqLanguageModel(MeshPlacement):
    """A T5-family model (``T5ForConditionalGeneration``) as an ``LM`` (see the module docstring)."""

    is_encoder_decoder = True

    def __init__(self, config: T5Config, model: T5ForConditionalGeneration, tokenizer: Any = None, name: str = "t5",
                 mesh: Any = None):
        self.config, self.tokenizer, self.name = config, tokenizer, name
        self.graphdef, self.state = nnx.split(model)
        if mesh is not None:
            self.shard(mesh)
        leaves = jax.tree.leaves(self.state)
        self.num_params = int(sum(x.size for x in leaves))
        emb = config.vocab_size * config.hidden_size
        self.num_nonembedding_params = self.num_params - emb * (1 if config.tie_embeddings else 2)
        self.trace_counts: Counter[str] = Counter()
        self._score_jit = self._program(self._score_impl)
        self._generate_jit = self._program(self._generate_impl, static_argnames=("new_cap", "sample"))
        self._embed_jit = self._program(self._embed_impl)
        self._totals = {"seconds": 0.0, "flops": 0.0, "calls": 0}
        self._last_call: CallCost | None = None
        self._last_context = config.context_window / 2

    # ------------------------------------------------------------------ properties
    @property
    def model(self) -> T5ForConditionalGeneration:
        return nnx.merge(self.graphdef, self.state)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def eog_token_ids(self) -> tuple[int, ...]:
        eos = set(self.config.eos_token_ids)
        if self.tokenizer is not None and getattr(self.tokenizer, "eos_token_id", None) is not None:
            eos.add(int(self.tokenizer.eos_token_id))
        return tuple(sorted(eos))

    # ------------------------------------------------------------------ programs
    def _score_impl(self, state, p_tok, p_valid, c_in, c_tgt, c_valid, c_row):
        self.trace_counts["score"] += 1
        p_tok, p_valid = self._rows(p_tok, p_valid)
        c_in, c_tgt, c_valid = self._rows(c_in, c_tgt, c_valid)
        model = nnx.merge(self.graphdef, state)
        enc = model.encode(p_tok, p_valid)
        hidden = model.decode(c_in, c_valid, enc[c_row], p_valid[c_row])
        tok_lp, is_max = token_logprobs(model.logits(hidden), c_tgt, with_greedy=True)
        tok_lp, greedy = tok_lp * c_valid, (is_max | ~c_valid).all(-1)
        w = p_valid.astype(jnp.float32)[..., None]
        pooled = (enc.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
        last = jnp.take_along_axis(enc, jnp.maximum(p_valid.sum(1) - 1, 0)[:, None, None], axis=1)[:, 0]
        return self._gathered((tok_lp, greedy, pooled, last.astype(jnp.float32)))

    def _embed_impl(self, state, p_tok, p_valid):
        self.trace_counts["embed"] += 1
        p_tok, p_valid = self._rows(p_tok, p_valid)
        enc = nnx.merge(self.graphdef, state).encode(p_tok, p_valid)
        w = p_valid.astype(jnp.float32)[..., None]
        return self._gathered((enc.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1.0))

    def _generate_impl(self, state, p_tok, p_valid, max_new, temperature, top_k, top_p, key, stop_mask, *,
                       new_cap: int, sample: bool):
        self.trace_counts["generate"] += 1
        p_tok, p_valid = self._rows(p_tok, p_valid)
        model = nnx.merge(self.graphdef, state)

        def pick(logits, k):
            return sample_token(logits, k, temperature, top_k, top_p) if sample else \
                jnp.argmax(logits, axis=-1).astype(jnp.int32)

        out, n_gen, _ = model.generate(p_tok, p_valid, max_new, key, pick, stop_mask, new_cap)
        return self._gathered((out, n_gen))

    # ------------------------------------------------------------------ cost
    def _flops(self, enc_tokens: int, dec_tokens: int, enc_ctx: float, dec_ctx: float) -> float:
        c = self.config
        per_layer = 4 * c.hidden_size * c.num_heads * c.head_dim + (3 if c.feed_forward.startswith("gated") else 2) \
            * c.hidden_size * c.intermediate_size
        attn = 4.0 * c.num_heads * c.head_dim
        enc = enc_tokens * (2.0 * c.num_layers * per_layer + attn * c.num_layers * enc_ctx)
        dec_params = c.num_decoder_layers * (per_layer + 4 * c.hidden_size * c.num_heads * c.head_dim)
        dec = dec_tokens * (2.0 * dec_params + attn * c.num_decoder_layers * (dec_ctx + enc_ctx)
                            + 2.0 * c.vocab_size * c.hidden_size)
        return float(enc + dec)

    def _record(self, kind: str, t0: float, traces_before: int, enc_tokens: int, scored: int, generated: int,
                flops: float, context: float) -> CallCost:
        cost = CallCost(kind=kind, seconds=time.perf_counter() - t0,
                        compiled=sum(self.trace_counts.values()) > traces_before, prompt_tokens=enc_tokens,
                        scored_tokens=scored, generated_tokens=generated, flops=flops)
        self._totals["seconds"] += cost.seconds
        self._totals["flops"] += flops
        self._totals["calls"] += 1
        self._last_call, self._last_context = cost, context
        return cost

    def cost(self) -> CostReport:
        """Parameter counts, FLOPs per token at the last call's prompt length, measured totals."""
        ctx = self._last_context
        return CostReport(name=self.name, num_params=self.num_params,
                          num_nonembedding_params=self.num_nonembedding_params, context=float(ctx),
                          flops_per_prompt_token=self._flops(1, 0, ctx, 0),
                          flops_per_generated_token=self._flops(0, 1, ctx, ctx / 2), last_call=self._last_call,
                          total_seconds=float(self._totals["seconds"]), total_flops=float(self._totals["flops"]),
                          num_calls=int(self._totals["calls"]))

    # ------------------------------------------------------------------ inputs
    def _tok(self) -> Any:
        if self.tokenizer is None:
            raise LMInputError(f"model {self.name!r} has no tokenizer; use the *_tokens methods with token ids")
        return self.tokenizer

    def _encode(self, texts: Sequence[str], special: bool) -> list[list[int]]:
        if isinstance(texts, str):
            raise LMInputError("prompts must be a sequence of strings, not one string; wrap it in a list")
        tok = self._tok()
        return [list(ids) for ids in tok(list(texts), add_special_tokens=special)["input_ids"]] if texts else []

    def _ids(self, ids: Any, what: str) -> list[int]:
        """``ids`` as a list of in-vocabulary ints, else ``LMInputError`` naming ``what``."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence | np.ndarray):
            raise LMInputError(f"{what} must be a list of token ids, got {type(ids).__name__}")
        out = list(ids)
        if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in out):
            raise LMInputError(f"{what} must hold int token ids, got {sorted({type(t).__name__ for t in out})}")
        if out and (min(out) < 0 or max(out) >= self.config.vocab_size):
            raise LMInputError(f"{what} has token ids outside the vocabulary [0, {self.config.vocab_size})")
        return [int(t) for t in out]

    def _check(self, prompt_ids: Sequence[Sequence[int]], extra: int = 0) -> list[list[int]]:
        """The prompts as checked lists of token ids (non-empty, in the vocabulary, within the context
        window with ``extra`` decoder tokens)."""
        if prompt_ids is None or isinstance(prompt_ids, str) or len(prompt_ids) == 0:
            raise LMInputError("no prompts given (a list of token-id lists)")
        limit = self.config.context_window
        out = [self._ids(p, f"prompt {i}") for i, p in enumerate(prompt_ids)]
        for i, p in enumerate(out):
            if len(p) == 0:
                raise LMInputError(f"prompt {i} is empty")
            if len(p) > limit or extra > limit:
                raise ContextLengthError(f"prompt {i} has {len(p)} tokens (+ {extra} decoder tokens) > the context "
                                         f"window of {limit} tokens of model {self.name!r}; shorten it")
        return out

    # ------------------------------------------------------------------ LM interface
    def score_tokens(self, prompt_ids: Sequence[Sequence[int]], candidate_ids: Sequence[Sequence[Sequence[int]]], *,
                     with_embedding: bool = False) -> ScoreResult:
        """Summed log-probabilities of each candidate (token ids) as the decoder's output after its
        prompt (the encoder's input). See the module docstring; raises ``LMInputError``."""
        if prompt_ids is None or candidate_ids is None or len(candidate_ids) != len(prompt_ids):
            raise LMInputError(f"give one candidate list per prompt: {None if prompt_ids is None else len(prompt_ids)} "
                               f"prompts, {None if candidate_ids is None else len(candidate_ids)} candidate lists")
        pairs = []
        for i, cs in enumerate(candidate_ids):
            if isinstance(cs, str) or not isinstance(cs, Sequence) or len(cs) == 0:
                raise LMInputError(f"prompt {i} needs a non-empty list of candidates (each a list of token ids)")
            for k, c in enumerate(cs):
                c = self._ids(c, f"candidate {k} of prompt {i}")
                if len(c) == 0:
                    raise LMInputError(f"candidate {k} of prompt {i} is empty")
                pairs.append((i, c))
        longest = max(len(c) for _, c in pairs)
        prompt_ids = self._check(prompt_ids, longest)
        t0, traces = time.perf_counter(), sum(self.trace_counts.values())
        B = bucket(len(prompt_ids))
        p_tok, p_valid = _right_pad(prompt_ids, B, bucket(max(map(len, prompt_ids)), *PROMPT_BUCKET))
        N, L = bucket(len(pairs), *CANDIDATE_BUCKET), bucket(longest, *CANDIDATE_BUCKET)
        start = self.config.decoder_start_token_id
        c_tgt, c_valid = _right_pad([c for _, c in pairs], N, L)
        c_in, _ = _right_pad([[start] + c[:-1] for _, c in pairs], N, L)
        c_row = np.zeros((N,), np.int32)
        c_row[:len(pairs)] = [i for i, _ in pairs]
        tok_lp, greedy, pooled, last = jax.block_until_ready(self._score_jit(self.state, p_tok, p_valid, c_in, c_tgt,
                                                                     c_valid, c_row))
        tok_lp = np.asarray(tok_lp, np.float64)
        greedy = np.asarray(greedy)
        logprobs, num, per_tok, greedy_out, j = [], [], [], [], 0
        for cs in candidate_ids:
            rows = [tok_lp[j + k, :len(c)] for k, c in enumerate(cs)]
            greedy_out.append(greedy[j:j + len(cs)])
            logprobs.append(np.array([r.sum() for r in rows]))
            num.append(np.array([len(c) for c in cs]))
            per_tok.append(rows)
            j += len(cs)
        n_enc = sum(map(len, prompt_ids))
        n_dec = sum(len(c) for _, c in pairs)
        ctx = n_enc / len(prompt_ids)
        cost = self._record("score", t0, traces, n_enc, n_dec, 0, self._flops(n_enc, n_dec, ctx, longest / 2), ctx)
        n = len(prompt_ids)
        return ScoreResult(logprobs, num, per_tok, np.asarray(pooled)[:n] if with_embedding else None,
                           np.asarray(last)[:n] if with_embedding else None, cost, greedy_out)

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], *,
              with_embedding: bool = False) -> ScoreResult:
        """``score_tokens`` on texts: prompts tokenized with special tokens (T5 appends ``</s>``),
        candidates without."""
        for i, cs in enumerate(candidates):
            if isinstance(cs, str):
                raise LMInputError(f"candidates for prompt {i} must be a list of strings, not a string")
        cands = [self._encode(list(cs), special=False) for cs in candidates]
        return self.score_tokens(self._encode(prompts, special=True), cands, with_embedding=with_embedding)

    def embed_tokens(self, prompt_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Mean-pooled encoder states ``(B, hidden_size)`` float32."""
        prompt_ids = self._check(prompt_ids)
        t0, traces = time.perf_counter(), sum(self.trace_counts.values())
        p_tok, p_valid = _right_pad(prompt_ids, bucket(len(prompt_ids)),
                                    bucket(max(map(len, prompt_ids)), *PROMPT_BUCKET))
        pooled = np.asarray(jax.block_until_ready(self._embed_jit(self.state, p_tok, p_valid)))
        n_enc = sum(map(len, prompt_ids))
        self._record("embed", t0, traces, n_enc, 0, 0, self._flops(n_enc, 0, n_enc / len(prompt_ids), 0),
                     n_enc / len(prompt_ids))
        return pooled[:len(prompt_ids)]

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        return self.embed_tokens(self._encode(prompts, special=True))

    def generate_tokens(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, *, temperature: float = 0.0,
                        top_k: int | None = None, top_p: float | None = None, seed: int = 0
                        ) -> tuple[list[list[int]], list[str]]:
        """Decoder tokens after each prompt (up to and including an end-of-generation token) and the
        reasons ('eos' | 'length'); greedy unless ``temperature > 0``."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise LMInputError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        max_new_tokens = int(max_new_tokens)
        try:
            temperature = float(temperature)
            ok = temperature >= 0 and np.isfinite(temperature) and (top_p is None or 0 < float(top_p) <= 1) \
                and (top_k is None or int(top_k) >= 1) and isinstance(seed, (int, np.integer))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise LMInputError(f"invalid sampling settings temperature={temperature!r}, top_k={top_k!r}, "
                               f"top_p={top_p!r}, seed={seed!r}: need a finite temperature >= 0, top_k >= 1, "
                               f"0 < top_p <= 1 and an int seed")
        prompt_ids = self._check(prompt_ids, max_new_tokens)
        t0, traces = time.perf_counter(), sum(self.trace_counts.values())
        p_tok, p_valid = _right_pad(prompt_ids, bucket(len(prompt_ids)),
                                    bucket(max(map(len, prompt_ids)), *PROMPT_BUCKET))
        stop = np.zeros((self.config.vocab_size,), bool)
        stop[list(self.eog_token_ids)] = True
        sample = temperature > 0
        out, n_gen = jax.block_until_ready(self._generate_jit(
            self.state, p_tok, p_valid, jnp.int32(max_new_tokens), jnp.float32(temperature),
            jnp.int32(top_k or self.config.vocab_size), jnp.float32(1.0 if top_p is None else top_p),
            jax.random.key(seed), stop, new_cap=bucket(max_new_tokens), sample=sample))
        out, n_gen = np.asarray(out), np.asarray(n_gen)
        rows = [out[i, :n_gen[i]].tolist() for i in range(len(prompt_ids))]
        reasons = ["eos" if r and stop[r[-1]] else "length" for r in rows]
        n_enc, n_dec = sum(map(len, prompt_ids)), sum(map(len, rows))
        ctx = n_enc / len(prompt_ids)
        self._record("generate", t0, traces, n_enc, 0, n_dec, self._flops(n_enc, n_dec, ctx, max_new_tokens / 2), ctx)
        return rows, reasons

    def generate(self, prompts: Sequence[str], max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, stop: Sequence[str] = (),
                 seed: int = 0) -> GenerateResult:
        """Continue each prompt (the decoder's output); texts skip special tokens and end before the
        first stop string (reason 'stop': cut on the host after decoding)."""
        if stop is None or isinstance(stop, str):
            raise LMInputError(f"stop must be a list of strings, got {stop!r}")
        rows, reasons = self.generate_tokens(self._encode(prompts, special=True), max_new_tokens,
                                             temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        tok = self._tok()
        texts = []
        for j, r in enumerate(rows):
            text = tok.decode(r, skip_special_tokens=True)
            cut = [text.index(s) for s in stop if s and s in text]
            if cut:
                text, reasons[j] = text[:min(cut)], "stop"
            texts.append(text)
        return GenerateResult(texts, rows, reasons, self._last_call)

    def chat_prompt(self, conversation: Sequence[Any], add_generation_prompt: bool = True) -> tuple[str, list[int]]:
        """The conversation under the tokenizer's chat template (T5 tokenizers ship none: then
        ``tokenizer.ChatTemplateError`` says so)."""
        from londi_jax.lm.tokenizer import chat_prompt

        return chat_prompt(self._tok(), conversation, add_generation_prompt=add_generation_prompt,
                           model_name=repr(self.name))

    def generate_chat(self, conversations: Sequence[Sequence[Any]], max_new_tokens: int, **kw: Any) -> GenerateResult:
        """``generate`` on each conversation rendered by the chat template (see ``chat_prompt``)."""
        ids = [self.chat_prompt(c)[1] for c in conversations]
        rows, reasons = self.generate_tokens(ids, max_new_tokens, **kw)
        tok = self._tok()
        return GenerateResult([tok.decode(r, skip_special_tokens=True) for r in rows], rows, reasons, self._last_call)
