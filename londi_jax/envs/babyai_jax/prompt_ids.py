"""GLAM's BabyAI-Text prompt as token ids, built inside ``jit``.

``History`` holds GLAM's deques as arrays (the last 3 observations as sentence piece slots, the
last 2 actions). ``PromptTables.from_tokenizer(tok)`` encodes every piece of ``phrases.PIECES``
once; ``build_prompt(tables, mission, history)`` then lays the prompt's pieces out in order
(header, goal, mission words, then per observation its header, sentences, action header and
action), gathers their token rows and compacts them into a fixed-length buffer with a cumulative
sum: no strings, no host round trip.

Why concatenating per-piece encodings gives the tokenizer's own encoding: pieces are cut just
before a space that starts a word (``phrases``), which is a pre-tokenizer boundary for byte-level
BPE (GPT-2 / Llama 3 / SmolLM2 regexes) and for Metaspace tokenizers (SentencePiece style,
``prepend_scheme`` "always" or "first"). Two places where that does not hold by itself, found by
comparing with the tokenizer on real prompts, are handled:

* an observation with no sentences puts two headers together, ``": \\n Action"``: still a
  boundary (the ``":"`` is its own pre-token), checked;
* a SentencePiece tokenizer with a dummy prefix (``add_dummy_prefix`` / prepend "first") adds
  "▁" to the *first* piece only: pieces are encoded after a fixed anchor word and the anchor's
  tokens are cut off, so every piece is encoded as it appears mid-prompt, and the header as the
  first.

``PromptTables.check(tok, prompts)`` compares built ids with ``tok`` on given prompts and names the
first difference; the tests run it on thousands of states for each tokenizer the project ships.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from londi_jax.envs.babyai_jax import core
from londi_jax.envs.babyai_jax import phrases as P
from londi_jax.envs.babyai_text.prompt import HISTORY_ACTIONS, HISTORY_OBS
from londi_jax.utils.errors import LondiError


class PromptTokenError(LondiError, ValueError):
    """The tokenizer cannot be used piecewise (its encoding of a prompt differs from the pieces')."""


@struct.dataclass
class History:
    """GLAM's per-episode deques: ``obs[3, 53]`` sentence piece slots (oldest first, ``n_obs``
    used), ``acts[2]`` action indices taken after ``obs[0]`` and ``obs[1]`` (-1: none)."""

    obs: jax.Array
    acts: jax.Array
    n_obs: jax.Array


def history_start(slots: jax.Array) -> History:
    """A new episode's history: its first observation only."""
    obs = jnp.zeros((HISTORY_OBS, slots.shape[-1]), jnp.int32).at[0].set(slots)
    return History(obs=obs, acts=jnp.full(HISTORY_ACTIONS, -1, jnp.int32), n_obs=jnp.int32(1))


def history_push(h: History, action: jax.Array, slots: jax.Array) -> History:
    """Record the action taken and the observation that followed (deques of 3 and 2)."""
    full = h.n_obs >= HISTORY_OBS
    obs = jnp.where(full, jnp.roll(h.obs, -1, axis=0), h.obs)
    obs = obs.at[jnp.minimum(h.n_obs, HISTORY_OBS - 1)].set(slots)
    n_act = h.n_obs - 1  # actions stored before this push
    acts = jnp.where(n_act >= HISTORY_ACTIONS, jnp.roll(h.acts, -1), h.acts)
    acts = acts.at[jnp.minimum(n_act, HISTORY_ACTIONS - 1)].set(jnp.asarray(action, jnp.int32))
    return History(obs=obs, acts=acts, n_obs=jnp.minimum(h.n_obs + 1, HISTORY_OBS))


MAX_SENTENCES = 16
"""Sentences per observation the prompt keeps (static): a GLAM view holds at most 1 carry + 3 walls +
the objects in sight (10 objects and 1 door in its levels), so 16 is not reached there; ``build``
reports a cut prompt if it were (larger converted levels: pass a larger ``max_sentences``)."""


def _layout(mission_len: int, max_sentences: int) -> np.ndarray:
    """The category of each entry of ``prompt_pieces``' layout: 0 mission word, 1 header, 2
    sentence, 3 action (``build`` gathers each with its own width)."""
    per_obs = [1] + [2] * max_sentences + [1, 3]
    return np.array([0] * mission_len + per_obs * HISTORY_OBS, np.int32)


def prompt_pieces(mission: jax.Array, h: History, max_sentences: int = MAX_SENTENCES
                  ) -> tuple[jax.Array, jax.Array]:
    """The prompt after its fixed header and goal line, as a layout of piece ids with a validity
    mask (``[N]`` each): mission words, then per observation its header, its sentences (the used
    slots moved to the front, at most ``max_sentences``), the action header and the action.
    Returns ``(pieces, valid, cut)``; ``cut``: an observation had more sentences than that."""
    pieces, valid = list(mission), [m > 0 for m in mission]
    cut = jnp.asarray(False)
    acts = jnp.asarray([P.piece(a) for a in P.ACTION_PIECES], jnp.int32)
    for k in range(HISTORY_OBS):
        here = k < h.n_obs
        pieces.append(jnp.int32(P.piece(P.OBS_HEADERS[k])))
        valid.append(here)
        sent, count = core.compact(h.obs[k], h.obs[k] > 0, max_sentences)
        pieces += list(sent)
        valid += [here & (s > 0) for s in sent]
        cut = cut | (here & (count > max_sentences))
        pieces.append(jnp.int32(P.piece(P.ACT_HEADERS[k])))
        valid.append(here)
        last = k == h.n_obs - 1
        act = h.acts[min(k, HISTORY_ACTIONS - 1)] if k < HISTORY_ACTIONS else jnp.int32(-1)
        pieces.append(jnp.where(last, P.piece(P.TRAILING_SPACE), acts[jnp.maximum(act, 0)]))
        valid.append(here & (last | (act >= 0)))
    return (jnp.stack([jnp.asarray(p, jnp.int32) for p in pieces]), jnp.stack([jnp.asarray(v) for v in valid]),
            cut)


_CATEGORY_PIECES = (
    np.array([P.piece(w) for w in (*P.VERBS.values(), *P.LINKS.values(), *P.ARTICLES, *P.TYPE_WORDS.values(),
                                   *P.COLOR_WORDS, *P.LOC_WORDS, *(w + "," for w in (*P.TYPE_WORDS.values(),
                                                                                    *P.LOC_WORDS)))] + [0]),
    np.array([P.piece(w) for w in (*P.OBS_HEADERS, *P.ACT_HEADERS)] + [0]),
    np.arange(P.SENTENCE_START, len(P.PIECES)),
    np.array([P.piece(w) for w in (*P.ACTION_PIECES, P.TRAILING_SPACE)] + [0]),
)  # the pieces each layout category can hold (``_layout``)


@dataclasses.dataclass(frozen=True)
class PromptTables:
    """Token rows of every piece for one tokenizer: ``tokens[P, L]`` (right-padded), ``lengths[P]``,
    the special tokens the tokenizer adds around a text (``prefix`` / ``suffix``, e.g. BOS)."""

    tokens: np.ndarray
    lengths: np.ndarray
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tok: Any) -> PromptTables:
        """Encode every piece with ``tok`` (a transformers tokenizer, or anything with
        ``encode(text, add_special_tokens=...)``), each in its mid-prompt context."""
        if not callable(getattr(tok, "encode", None)):
            raise PromptTokenError(f"expected a tokenizer with encode(text, add_special_tokens=...), got "
                                   f"{type(tok).__name__} (load one, e.g. envs.cli.load_prompt_tokenizer(name))")

        def enc(text: str, special: bool = False) -> list[int]:
            return list(tok.encode(text, add_special_tokens=special))

        anchor = "Goal"  # a word; pieces are encoded after it, its tokens cut off
        base = enc(anchor)
        rows = [[]]
        for p in P.PIECES[1:]:
            if p == P.HEADER:
                rows.append(enc(p))
                continue
            ids = enc(anchor + p)
            if ids[:len(base)] != base:
                raise PromptTokenError(f"the tokenizer merges across the word boundary before {p!r}; "
                                       "it cannot build BabyAI-Text prompts piece by piece")
            rows.append(ids[len(base):])
            if not rows[-1] and p.strip():
                raise PromptTokenError(f"the tokenizer encodes {p!r} to no tokens; it cannot encode BabyAI-Text")
        probe = "Goal of the agent"
        plain, full = enc(probe), enc(probe, special=True)
        start = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), None)
        if start is None:
            raise PromptTokenError("the tokenizer's special tokens are not a prefix/suffix of the text's tokens")
        prefix, suffix = tuple(full[:start]), tuple(full[start + len(plain):])
        L = max(len(r) for r in rows)
        tokens = np.zeros((len(rows), L), np.int32)
        for i, r in enumerate(rows):
            tokens[i, :len(r)] = r
        return cls(tokens=tokens, lengths=np.array([len(r) for r in rows], np.int32), prefix=prefix, suffix=suffix)

    def max_prompt_tokens(self, n_sentences: int = 16) -> int:
        """A buffer size that holds every prompt whose observations have at most ``n_sentences``
        sentences each (the longest piece of each kind assumed everywhere)."""
        lens = self.lengths
        longest = lambda texts: max(int(lens[P.piece(t)]) for t in texts)  # noqa: E731
        words = max(int(lens[i]) for i in range(1, P.SENTENCE_START) if P.PIECES[i] not in P.OBS_HEADERS)
        per_obs = (longest(P.OBS_HEADERS) + longest(P.ACT_HEADERS) + longest((*P.ACTION_PIECES, P.TRAILING_SPACE))
                   + min(n_sentences, MAX_SENTENCES) * int(lens[P.SENTENCE_START:].max()))
        return (len(self.prefix) + len(self.suffix) + int(lens[P.piece(P.HEADER)]) + int(lens[P.piece(P.GOAL)])
                + core.StaticConfig.mission_pieces * words + HISTORY_OBS * per_obs)

    def build(self, mission: jax.Array, h: History, max_len: int, max_sentences: int = MAX_SENTENCES
              ) -> tuple[jax.Array, jax.Array]:
        """The prompt's token ids, right-padded with 0: ``(ids[max_len], length)``; ``length >
        max_len`` means the prompt was cut (raise ``max_len``; an observation with more than
        ``max_sentences`` sentences also reports ``max_len + 1``). jit/vmap-able.

        The special prefix, header and goal line are one constant row. Every other piece is
        gathered from the table cut to the longest piece of its kind (mission words, headers,
        sentences, actions: a sentence row is ~14 tokens, a word 1-2) and scattered to its place
        after a cumulative sum of the lengths."""
        pieces, valid, cut = prompt_pieces(mission, h, max_sentences)
        H, G = P.piece(P.HEADER), P.piece(P.GOAL)
        head = np.concatenate([np.asarray(self.prefix, np.int32), self.tokens[H, :self.lengths[H]],
                               self.tokens[G, :self.lengths[G]]]).astype(np.int32)
        lens = jnp.asarray(self.lengths)
        n = jnp.where(valid, lens[pieces], 0)
        start = jnp.cumsum(n) - n + len(head)
        layout = _layout(mission.shape[0], max_sentences)
        dests, toks = [], []
        for cat, members in enumerate(_CATEGORY_PIECES):
            idx = np.nonzero(layout == cat)[0]
            width = max(int(self.lengths[members].max()), 1)
            t = jnp.arange(width)
            p_cat = pieces[idx]
            d = jnp.where(t[None, :] < n[idx][:, None], start[idx][:, None] + t[None, :], max_len)
            dests.append(d.reshape(-1))
            toks.append(jnp.asarray(self.tokens[:, :width])[p_cat].reshape(-1))
        buf = jnp.zeros(max_len, jnp.int32).at[: min(len(head), max_len)].set(jnp.asarray(head[:max_len]))
        buf = buf.at[jnp.concatenate(dests)].set(jnp.concatenate(toks), mode="drop")
        end = len(head) + n.sum()
        if self.suffix:
            buf = buf.at[end + jnp.arange(len(self.suffix))].set(jnp.asarray(self.suffix, jnp.int32), mode="drop")
        length = end + len(self.suffix)
        return buf, jnp.where(cut, jnp.maximum(length, max_len + 1), length)

    def check(self, tok: Any, missions: np.ndarray, histories: History, max_len: int,
              special: bool = True) -> int:
        """Build the prompts of a batch (``missions[B, Lm]``, histories batched) and compare with
        ``tok``'s own encoding of their text (``render_prompt``); returns the count compared.
        Raises ``PromptTokenError`` naming the first prompt that differs."""
        ids, n = jax.jit(jax.vmap(lambda m, h: self.build(m, h, max_len)))(jnp.asarray(missions), histories)
        ids, n = np.asarray(ids), np.asarray(n)
        for b in range(len(n)):
            h = jax.tree.map(lambda x: np.asarray(x)[b], histories)
            text = render_prompt(missions[b], h)
            want = list(tok.encode(text, add_special_tokens=special))
            got = list(ids[b, :n[b]]) if special else list(ids[b, len(self.prefix):n[b] - len(self.suffix)])
            if got != want:
                first = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
                raise PromptTokenError(f"prompt {b} differs from the tokenizer's encoding at token {first}: "
                                       f"built {got[first:first + 6]}, tokenizer {want[first:first + 6]}; "
                                       f"text: {text!r}")
        return len(n)


def render_prompt(mission: Any, h: History) -> str:
    """The prompt's text (host side, plain NumPy: for inspection and checks), laid out as GLAM's
    ``build_glam_prompt`` lays it out; ``build`` must encode exactly this text."""
    mission, obs, acts, n = (np.asarray(mission), np.asarray(h.obs), np.asarray(h.acts), int(h.n_obs))
    parts = [P.HEADER, P.GOAL, P.render_pieces(mission)]
    for k in range(n):
        parts += [P.OBS_HEADERS[k], P.render_pieces(obs[k]), P.ACT_HEADERS[k]]
        parts.append(P.TRAILING_SPACE if k == n - 1 else P.ACTION_PIECES[int(acts[k])])
    return "".join(parts)


def decode(tok: Any, ids: Any, length: Any) -> str:
    """Text of built ids (host side): ``tok.decode`` of the used part, special tokens skipped."""
    return tok.decode([int(i) for i in np.asarray(ids)[: int(length)]], skip_special_tokens=True)


def history_from_lists(observations: Sequence[np.ndarray], actions: Sequence[int]) -> History:
    """A ``History`` from an episode's observation slots (oldest first) and action indices, as
    GLAM's deques keep them (last 3 and last 2)."""
    h = history_start(jnp.asarray(observations[0]))
    for a, o in zip(actions, observations[1:]):
        h = history_push(h, jnp.int32(a), jnp.asarray(o))
    return h


__all__ = ["History", "PromptTables", "PromptTokenError", "decode", "history_from_lists", "history_push",
           "history_start", "prompt_pieces", "render_prompt"]
