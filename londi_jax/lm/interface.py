"""What every language model offers the rest of londi_jax (QUICK and DEEPTHINK alike).

Results are plain numpy / Python containers so callers never touch jax arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from londi_jax.utils.errors import LondiError


class LMInputError(LondiError):
    """Bad arguments to score / generate / embed (empty candidate list, ...)."""


class ContextLengthError(LMInputError):
    """A prompt (+ continuation) does not fit in the model's context window."""


@runtime_checkable
class TokenizerLike(Protocol):
    """The tokenizer surface the engine uses (a transformers tokenizer satisfies it)."""

    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...


@dataclasses.dataclass(frozen=True)
class CallCost:
    """Measured cost of one call."""

    kind: str  # 'score' | 'generate' | 'embed' | 'logits'
    seconds: float  # wall time incl. host work, outputs block_until_ready'd
    compiled: bool  # True if this call traced/compiled a new program (then seconds include compile)
    prompt_tokens: int
    scored_tokens: int
    generated_tokens: int
    flops: float  # useful FLOPs (real tokens only, padding not counted), formula in CostReport


@dataclasses.dataclass(frozen=True)
class ScoreResult:
    """Per prompt i: ``logprobs[i][k]`` = summed log-probability of candidate k's tokens given the
    prompt, ``num_tokens[i][k]`` its token count, ``token_logprobs[i][k]`` the per-token values.
    ``embeddings (B, D)``: prompt embeddings from the same forward pass (``with_embedding``);
    ``last_hidden (B, D)``: the final-normed hidden state of each prompt's last token (the state
    the next-token prediction reads), also from that pass (``with_embedding``). ``cost``: the
    measured cost of the call that produced this result (seconds, FLOPs, tokens). ``greedy[i][k]``:
    every token of candidate k is the argmax at its position, i.e. greedy decoding would write it
    (lm-eval's ``is_greedy``); None from a model that does not compute it. ``handoffs``: from an
    FSLM stack, each row's input, every stage's hand-off text and the final prompt."""

    logprobs: list[np.ndarray]
    num_tokens: list[np.ndarray]
    token_logprobs: list[list[np.ndarray]]
    embeddings: np.ndarray | None = None
    last_hidden: np.ndarray | None = None
    cost: CallCost | None = None
    greedy: list[np.ndarray] | None = None
    handoffs: list[dict[str, str]] | None = None  # an FSLM stack's texts per row (londi_jax.fslm)

    def mean_logprobs(self) -> list[np.ndarray]:
        """Length-normalised scores (sum / token count) per prompt."""
        return [lp / n for lp, n in zip(self.logprobs, self.num_tokens)]

    def best(self, normalize: bool = False) -> list[int]:
        """Index of the highest-scoring candidate per prompt."""
        scores = self.mean_logprobs() if normalize else self.logprobs
        return [int(np.argmax(s)) for s in scores]


@dataclasses.dataclass(frozen=True)
class GenerateResult:
    """Generated continuations: decoded ``texts`` (stop string / EOS excluded), the generated
    ``token_ids`` (up to and including a stopping token), ``finish_reasons`` in
    {'eos', 'stop', 'length'} and ``cost``, the measured cost of the call. ``handoffs``: as in
    ``ScoreResult``."""

    texts: list[str]
    token_ids: list[list[int]]
    finish_reasons: list[str]
    cost: CallCost | None = None
    handoffs: list[dict[str, str]] | None = None


@dataclasses.dataclass(frozen=True)
class CostReport:
    """Model size and measured compute.

    FLOPs per token at attention context ``ctx`` (Kaplan et al. 2020 style, forward only):
    ``2 * num_nonembedding_params + 4 * num_layers * ctx * num_heads * head_dim``
    (+ ``2 * vocab * hidden`` for tokens whose logits are computed). ``flops_per_prompt_token`` and
    ``flops_per_generated_token`` are evaluated at ``context`` (the mean context of the last call, or
    the model's context window / 2 before any call); prompt tokens need no logits, generated and
    scored tokens do.
    """

    name: str
    num_params: int
    num_nonembedding_params: int
    context: float
    flops_per_prompt_token: float
    flops_per_generated_token: float
    last_call: CallCost | None
    total_seconds: float
    total_flops: float
    num_calls: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@runtime_checkable
class LM(Protocol):
    """A language model as the rest of londi_jax uses it (QUICK, DEEPTHINK, an FSLM stack).

    Policies score fixed action strings after prompts they tokenize themselves
    (``tokenizer`` + ``score_tokens(..., with_embedding=True)``: the action scores and the
    prompt's pooled / last-token states, ``hidden_size`` wide, from one forward); every result
    carries the measured cost of its call (``ScoreResult.cost``, ``GenerateResult.cost``);
    ``cost()`` reports the model's size and running totals.
    """

    name: str
    tokenizer: Any  # TokenizerLike, callable on a batch of texts (transformers' fast tokenizer)

    @property
    def hidden_size(self) -> int: ...

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], *,
              with_embedding: bool = False) -> ScoreResult: ...

    def score_tokens(self, prompt_ids: Sequence[Sequence[int]], candidate_ids: Sequence[Sequence[Sequence[int]]], *,
                     with_embedding: bool = False) -> ScoreResult: ...

    def generate(self, prompts: Sequence[str], max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, stop: Sequence[str] = (),
                 seed: int = 0) -> GenerateResult: ...

    def embed(self, prompts: Sequence[str]) -> np.ndarray: ...

    def cost(self) -> CostReport: ...
