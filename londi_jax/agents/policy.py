"""An LM as an action-scoring policy (GLAM style) and the switcher's features of its output.

One QUICK forward gives everything the agent needs at a state: the action scores (its action
and its confidence) and the prompt embedding (the switcher's state encoding), because
``LM.score_tokens(..., with_embedding=True)`` pools the same prefill. The policy renders its
prompts and candidate actions from structured episode states with a prompt format
(``agents.prompts``): GLAM's for BabyAI-Text, SwiftSage's for ScienceWorld.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from londi_jax.agents.prompts import EpisodeState, GlamFormat, PromptFormat
from londi_jax.lm.interface import LM
from londi_jax.utils.errors import LondiError, UnknownNameError
from londi_jax.utils.text import nearest_action

__all__ = ["PolicyOutput", "LMPolicy", "POLICY_MODES", "nearest_action", "action_probs", "confidence_features", "NUM_CONFIDENCE_FEATURES",
           "switch_features", "state_features", "feature_dim", "SwitchEncoder", "ENCODERS", "match_ngram_features", "encode"]


@dataclasses.dataclass
class PolicyOutput:
    """Scores of each state's candidate actions, plus the call's measured cost.

    ``logprobs (n, K)``: summed token log-probs of candidate k of row i, ``-inf`` past a row's
    own candidates (K = the most candidates of any row); ``candidates[i]``: row i's action strings
    (None when the caller scored its own fixed set)."""

    logprobs: np.ndarray  # float64 (n, K)
    embedding: np.ndarray  # float32 (n, 2H): the prompt's mean-pooled and last-token final hidden states
    seconds: float  # measured wall time of the call (outputs ready)
    flops: float  # useful forward FLOPs of the call (real tokens only)
    candidates: list[tuple[str, ...]] | None = None

    def actions(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Chosen candidate indices: greedy, or sampled from softmax(scores) when ``rng`` is given."""
        if rng is None:
            return np.argmax(self.logprobs, axis=-1)
        p = action_probs(self.logprobs)
        u = rng.random((p.shape[0], 1))
        last = np.isfinite(self.logprobs).sum(-1) - 1  # a row's own last candidate (rows may be ragged)
        return np.minimum((np.cumsum(p, axis=-1) < u).sum(-1), last)

    def action_strings(self, idx: np.ndarray) -> list[str]:
        """The candidate strings of ``idx[i]`` in row i."""
        if self.candidates is None:
            raise LondiError("this PolicyOutput carries no candidate strings")
        return [self.candidates[i][int(k)] for i, k in enumerate(np.asarray(idx).reshape(-1))]

    @staticmethod
    def concat(parts: Sequence[PolicyOutput]) -> PolicyOutput:
        """The rows of ``parts`` one after another (``logprobs`` padded with ``-inf`` to the widest
        part; seconds and FLOPs summed)."""
        width = max((p.logprobs.shape[1] for p in parts), default=0)
        lp = np.concatenate([np.pad(p.logprobs, ((0, 0), (0, width - p.logprobs.shape[1])), constant_values=-np.inf)
                             for p in parts]) if parts else np.zeros((0, 0))
        emb = np.concatenate([p.embedding for p in parts]) if parts else np.zeros((0, 0), np.float32)
        cands = None if any(p.candidates is None for p in parts) else [c for p in parts for c in p.candidates]
        return PolicyOutput(lp, emb, sum(p.seconds for p in parts), sum(p.flops for p in parts), cands)

    def rows(self, idx: Sequence[int]) -> PolicyOutput:
        """The output restricted to rows ``idx`` (cost not split: 0 seconds and FLOPs)."""
        idx = np.asarray(idx, np.int64)
        cands = None if self.candidates is None else [self.candidates[i] for i in idx]
        return PolicyOutput(self.logprobs[idx], self.embedding[idx], 0.0, 0.0, cands)


def action_probs(logprobs: np.ndarray, xp: Any = np) -> np.ndarray:
    """GLAM's policy: softmax over the K action scores (``-inf`` entries get probability 0).
    ``xp``: the array module (``numpy``, or ``jax.numpy`` inside a jitted program)."""
    z = logprobs - logprobs.max(axis=-1, keepdims=True)
    e = xp.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


POLICY_MODES = ("score", "generate")


class LMPolicy:
    """Choose each state's action with an LM, one batched LM call per batch.

    ``fmt``: the prompt format (default GLAM's BabyAI-Text prompt and six actions).
    ``mode``:

    * ``"score"`` (GLAM's way): every candidate action is scored after the prompt (summed token
      log-probs). Candidate token ids are cached per distinct action string, so a ScienceWorld
      state's hundreds of valid actions are tokenized once each and scored against one shared
      prompt prefill. Gives the switcher's features (confidence, prompt embedding).
    * ``"generate"`` (SwiftSage's way): the model generates an action greedily (at most as many
      tokens as the longest candidate) and the candidate nearest to the text is taken
      (:func:`nearest_action`). Cost grows with the action's length, not the number of
      candidates, but the output has no scores to be confident about: its ``logprobs`` row is 0 at
      the chosen action and ``-inf`` elsewhere, and its embedding is zeros, so a generating policy
      can act (e.g. DEEPTHINK) but cannot be the QUICK whose outputs the switch reads.
    """

    def __init__(self, lm: LM, fmt: PromptFormat | None = None, name: str | None = None, mode: str = "score"):
        if lm.tokenizer is None:
            raise LondiError(f"model {lm.name!r} has no tokenizer; an action-scoring policy needs one")
        if mode not in POLICY_MODES:
            raise UnknownNameError("policy mode", mode, POLICY_MODES)
        self.mode = mode
        self.lm = lm
        self.fmt = fmt if fmt is not None else GlamFormat()
        self.name = name or lm.name
        self.generated: list[tuple[str, str, float]] = []  # generate mode: (text, action, similarity) of the last call
        self._ids: dict[str, list[int]] = {}
        self.calls = 0
        self.prompts = 0
        self.seconds = 0.0
        self.flops = 0.0

    def _candidate_ids(self, cands: Sequence[str]) -> list[list[int]]:
        new = [c for c in dict.fromkeys(cands) if c not in self._ids]
        if new:
            for c, ids in zip(new, self.lm.tokenizer(new, add_special_tokens=False)["input_ids"]):
                if not ids:
                    raise LondiError(f"action {c!r} tokenizes to zero tokens with {self.lm.name!r}'s tokenizer")
                self._ids[c] = list(ids)
        return [self._ids[c] for c in cands]

    def __call__(self, states: Sequence[EpisodeState]) -> PolicyOutput:
        """Choose among the candidates of each state (``fmt.candidates``) after its prompt
        (``fmt.prompt``), by ``mode``."""
        prompts, cands = [self.fmt.prompt(s) for s in states], [tuple(self.fmt.candidates(s)) for s in states]
        return self.score(prompts, cands) if self.mode == "score" else self.generate(prompts, cands)

    def generate(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> PolicyOutput:
        """Generate an action after each prompt and map it to the nearest of ``candidates[i]``
        (one generation call for the batch; see the class doc for the output's form)."""
        cands = [tuple(c) for c in candidates]
        if len(prompts) == 0:
            return PolicyOutput(np.zeros((0, 0)), np.zeros((0, self.embedding_dim), np.float32), 0.0, 0.0, [])
        longest = max(len(ids) for c in cands for ids in self._candidate_ids(c))
        res = self.lm.generate(list(prompts), longest)
        width = max(len(c) for c in cands)
        lp = np.full((len(cands), width), -np.inf)
        self.generated = []
        for i, (text, row) in enumerate(zip(res.texts, cands)):
            k, sim = nearest_action(text, row)
            lp[i, k] = 0.0
            self.generated.append((text, row[k], sim))
        out = PolicyOutput(lp, np.zeros((len(cands), self.embedding_dim), np.float32), float(res.cost.seconds),
                           float(res.cost.flops), cands)
        self._count(out, len(prompts))
        return out

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> PolicyOutput:
        """Score ``candidates[i]`` after ``prompts[i]`` (one model call for the whole batch)."""
        if len(prompts) == 0:
            return PolicyOutput(np.zeros((0, 0)), np.zeros((0, self.embedding_dim), np.float32), 0.0, 0.0, [])
        cands = [tuple(c) for c in candidates]
        ids = self.lm.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        res = self.lm.score_tokens(ids, [self._candidate_ids(c) for c in cands], with_embedding=True)
        width = max(len(c) for c in cands)
        lp = np.full((len(cands), width), -np.inf)
        for i, row in enumerate(res.logprobs):
            lp[i, :len(row)] = row
        emb = np.concatenate([res.embeddings, res.last_hidden], axis=-1).astype(np.float32)
        out = PolicyOutput(lp, emb, float(res.cost.seconds), float(res.cost.flops), cands)
        self._count(out, len(prompts))
        return out

    def _count(self, out: PolicyOutput, prompts: int) -> None:
        self.calls += 1
        self.prompts += prompts
        self.seconds += out.seconds
        self.flops += out.flops

    @property
    def embedding_dim(self) -> int:
        """Width of ``PolicyOutput.embedding``: mean-pooled and last-token states side by side."""
        return 2 * int(self.lm.hidden_size)


NUM_CONFIDENCE_FEATURES = 4


def confidence_features(logprobs: np.ndarray, xp: Any = np) -> np.ndarray:
    """(n, 4): max probability, top-1 minus top-2 probability, normalised entropy (by the log of
    the row's candidate count; ``-inf`` entries are not candidates), top-1 log-prob. ``xp``: the
    array module (``jax.numpy`` in the on-device loop, ``agents.online``: one definition for both)."""
    p = action_probs(logprobs, xp)
    top = xp.flip(xp.sort(p, axis=-1), axis=-1)
    if top.shape[1] < 2:
        top = xp.pad(top, ((0, 0), (0, 2 - top.shape[1])))
    k = xp.maximum(xp.isfinite(logprobs).sum(-1), 2)
    ent = -(p * xp.log(xp.clip(p, 1e-12, None))).sum(-1) / xp.log(k)
    return xp.stack([top[:, 0], top[:, 0] - top[:, 1], ent, xp.log(xp.clip(top[:, 0], 1e-12, None))],
                    axis=-1).astype(xp.float32)


def state_features(embedding: np.ndarray, logprobs: np.ndarray, step: np.ndarray, max_steps: np.ndarray,
                   xp: Any = np) -> np.ndarray:
    """``switch_features`` from arrays: ``embedding (n, 2H)``, ``logprobs (n, K)``, ``step`` and
    ``max_steps (n,)``; ``xp`` the array module (``jax.numpy`` inside a jitted program)."""
    frac = (xp.asarray(step).astype(xp.float32) / xp.maximum(xp.asarray(max_steps).astype(xp.float32), 1.0))[:, None]
    return xp.concatenate([embedding.astype(xp.float32), confidence_features(logprobs, xp), frac], axis=-1)


def switch_features(quick: PolicyOutput, step: np.ndarray, max_steps: np.ndarray) -> np.ndarray:
    """The switcher's state encoding: QUICK's prompt encoding (mean-pooled and last-token hidden
    states: what the prompt says and what QUICK is about to decide), QUICK's confidence and the
    step fraction, ``(n, 2H + 5)`` float32 (LONDI-B's budget fraction is appended by the switcher)."""
    return state_features(quick.embedding, quick.logprobs, step, max_steps)


def feature_dim(hidden_size: int) -> int:
    """Width of ``switch_features`` for a QUICK with ``hidden_size`` hidden units."""
    return 2 * int(hidden_size) + NUM_CONFIDENCE_FEATURES + 1


ENCODERS = ("quick", "quick+bow", "quick+match")

# Function words are never "matches": "a"/"the" in the goal would otherwise mark every item.
_STOPWORDS = frozenset("a an the to up go pick put open next and then after you of is your on in".split())


def _stable_bucket(text: str, buckets: int) -> int:
    # crc32, not hash(): Python salts str hashes per process, features must not change between runs
    return zlib.crc32(text.encode()) % buckets


MISSION_BUCKETS, OBS_BUCKETS = 128, 512  # hashed feature widths of match_ngram_features
MATCH_FEATURES = MISSION_BUCKETS + OBS_BUCKETS  # its width at the defaults (the quick+match encoder)


def match_ngram_features(mission: str, observation: str, *, mission_buckets: int = MISSION_BUCKETS,
                         obs_buckets: int = OBS_BUCKETS, max_n: int = 4) -> np.ndarray:
    """A cheap text encoding of (goal, newest observation) that keeps their relation.

    Goal: hashed bag of its words and word bigrams. Observation: each comma-separated item has the
    words it shares with the goal replaced by a marker (the "exact match" feature of reading
    comprehension, e.g. DrQA), then a hashed bag of its word n-grams (n <= ``max_n``). So "the
    goal's object 1 step forward" is one n-gram whatever the object is, and a small MLP can read
    where goal objects are without a learned text model. Returns ``(mission_buckets + obs_buckets,)``
    float32 presence features.
    """
    if min(mission_buckets, obs_buckets, max_n) < 1:
        raise LondiError(f"match_ngram_features needs mission_buckets, obs_buckets and max_n >= 1, got "
                         f"{mission_buckets}, {obs_buckets}, {max_n}")
    out = np.zeros(mission_buckets + obs_buckets, np.float32)
    goal = mission.lower().replace(",", " ").split()
    for n in (1, 2):
        for i in range(len(goal) - n + 1):
            out[_stable_bucket(" ".join(goal[i:i + n]), mission_buckets)] = 1.0
    keys = {w for w in goal if w not in _STOPWORDS}
    for item in observation.lower().split(","):
        words = ["<m>" if w in keys else w for w in item.split()]
        for n in range(1, max_n + 1):
            for i in range(len(words) - n + 1):
                out[mission_buckets + _stable_bucket(" ".join(words[i:i + n]), obs_buckets)] = 1.0
    return out


class SwitchEncoder:
    """The switcher's state encoder phi.

    ``"quick"``: :func:`switch_features` (QUICK's own encoding and confidence; free, QUICK runs
    anyway). ``"quick+bow"``: plus two bags of words (presence of each token of QUICK's
    tokenizer) over the mission and over the newest observation: a cheap text
    encoder that lets the switch see what the state says without running another model.
    ``"quick+match"``: plus :func:`match_ngram_features` of the goal and newest observation
    (goal-matched words marked, hashed n-grams): where the goal's objects are, not only which
    words occur.
    """

    def __init__(self, kind: str, hidden_size: int, tokenizer: Any = None):
        if kind not in ENCODERS:
            raise UnknownNameError("switch encoder", kind, ENCODERS)
        if kind == "quick+bow" and tokenizer is None:
            raise LondiError("the 'quick+bow' switch encoder needs QUICK's tokenizer")
        self.kind = kind
        self.hidden_size = int(hidden_size)
        self.tokenizer = tokenizer
        self.vocab = len(tokenizer) if tokenizer is not None else 0

    @property
    def dim(self) -> int:
        extra = {"quick": 0, "quick+bow": 2 * self.vocab, "quick+match": MATCH_FEATURES}[self.kind]
        return feature_dim(self.hidden_size) + extra

    def __call__(self, quick: PolicyOutput, states: Sequence[EpisodeState]) -> np.ndarray:
        """Features ``(n, dim)`` of QUICK's output at ``states`` (the mission and the newest
        observation are read from the states, never parsed out of a prompt)."""
        step = np.array([s.step for s in states], np.int64)
        max_steps = np.array([s.max_steps for s in states], np.int64)
        base = switch_features(quick, step, max_steps)
        if self.kind == "quick":
            return base
        missions, observations = [s.mission for s in states], [s.current.text for s in states]
        if self.kind == "quick+match":
            extra = np.stack([match_ngram_features(m, o) for m, o in zip(missions, observations)]) if states else \
                np.zeros((0, MATCH_FEATURES), np.float32)
            return np.concatenate([base, extra], axis=-1)
        bags = []
        for texts in (missions, observations):
            bag = np.zeros((len(states), self.vocab), np.float32)
            for i, ids in enumerate(self.tokenizer(texts, add_special_tokens=False)["input_ids"]):
                bag[i, ids] = 1.0
            bags.append(bag)
        return np.concatenate([base, *bags], axis=-1)


def encode(encoder: SwitchEncoder | None, quick: PolicyOutput, states: Sequence[EpisodeState]) -> np.ndarray:
    """Switcher features of a QUICK call at ``states`` (``encoder``, by default QUICK's own features)."""
    if encoder is None:
        return switch_features(quick, np.array([s.step for s in states], np.int64),
                               np.array([s.max_steps for s in states], np.int64))
    return encoder(quick, states)
