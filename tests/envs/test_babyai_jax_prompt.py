"""GLAM prompts as token ids built in jit: the text is exactly the Python prompt, and the ids are
exactly the tokenizer's own encoding of it (a word-level Metaspace tokenizer like the cpu-small
models', and SmolLM2's byte-level BPE)."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from londi_jax.envs.babyai_jax import core, phrases, prompt_ids  # noqa: E402
from londi_jax.envs.babyai_jax import env as jenv  # noqa: E402
from londi_jax.envs.babyai_text import build_glam_prompt, describe  # noqa: E402
from londi_jax.envs.babyai_text.prompt import ACTIONS  # noqa: E402

N_ENVS, N_STEPS = 32, 20


@pytest.fixture(scope="module")
def episodes():
    """Prompts of JAX rollouts (random actions) from converted minigrid levels of all five Mixed
    kinds, with everything needed to rebuild each one in Python: mission, images of the history,
    actions. (Converted starts and ``step_env``: no level-generation program to compile here; the
    auto-reset paths are tested in test_babyai_jax.py.)"""
    from londi_jax.envs.babyai_jax import convert
    from londi_jax.envs.babyai_text import make_babyai_text
    from londi_jax.envs.babyai_text.levels import MIXED_KINDS

    starts = []
    for s in range(N_ENVS):
        env = make_babyai_text("BabyAI-MixedTrainLocal-v0", seed=100 + s, kind=MIXED_KINDS[s % 5])
        env.reset()
        starts.append(convert.from_minigrid(env))
    st0 = jax.tree.map(lambda *x: jnp.asarray(np.stack(x)), *starts)

    def run(key, st):
        obs = jax.vmap(core.observe)(st)
        hist = jax.vmap(prompt_ids.history_start)(obs.slots)
        imgs = jnp.zeros((N_ENVS, 3, 7, 7, 3), jnp.int32).at[:, 0].set(obs.image)

        def body(c, k):
            obs, st, hist, imgs = c
            a = jax.random.randint(k, (N_ENVS,), 0, 6)
            out = (obs.mission, hist, imgs)
            nobs, nst, _, _, _ = jax.vmap(jenv.step_env)(st, a)
            full = hist.n_obs >= 3
            hist = jax.vmap(prompt_ids.history_push)(hist, a, nobs.slots)
            rolled = jnp.where(full[:, None, None, None, None], jnp.roll(imgs, -1, axis=1), imgs)
            imgs = rolled.at[jnp.arange(N_ENVS), jnp.minimum(hist.n_obs - 1, 2)].set(nobs.image)
            return (nobs, nst, hist, imgs), out

        return jax.lax.scan(body, (obs, st, hist, imgs), jax.random.split(key, N_STEPS))[1]

    missions, hist, imgs = jax.jit(run)(jax.random.key(5), st0)
    flat = lambda x: np.asarray(x).reshape((-1,) + x.shape[2:])  # noqa: E731
    return flat(missions), jax.tree.map(flat, hist), flat(imgs)


def _python_prompt(mission, h, imgs) -> str:
    n = int(h.n_obs)
    obs = [describe(imgs[k]) for k in range(n)]
    acts = [ACTIONS[int(a)] for a in h.acts[: n - 1]]
    return build_glam_prompt(core.mission_text(mission), obs, acts)


def test_prompt_text_is_glams(episodes):
    missions, hist, imgs = episodes
    lengths = set()
    for b in range(len(missions)):
        h = jax.tree.map(lambda x: x[b], hist)
        want = _python_prompt(missions[b], h, imgs[b])
        assert prompt_ids.render_prompt(missions[b], h) == want
        lengths.add(int(h.n_obs))
    assert lengths == {1, 2, 3}  # first steps and full histories


def _texts(episodes, k=100):
    missions, hist, imgs = episodes
    return [_python_prompt(missions[b], jax.tree.map(lambda x: x[b], hist), imgs[b]) for b in range(k)]


def test_word_tokenizer_ids_equal_its_encoding(episodes):
    from londi_jax.lm.tokenizer import train_word_tokenizer

    missions, hist, _ = episodes
    tok = train_word_tokenizer(_texts(episodes) + [" ".join(phrases.PIECES)], vocab_size=400)
    tables = prompt_ids.PromptTables.from_tokenizer(tok)
    n = tables.check(tok, missions, hist, tables.max_prompt_tokens())
    assert n == N_ENVS * N_STEPS


def test_smollm2_ids_equal_its_encoding_and_decode(episodes, smollm2_hf_tokenizer):
    tok = smollm2_hf_tokenizer
    missions, hist, _ = episodes
    tables = prompt_ids.PromptTables.from_tokenizer(tok)
    L = tables.max_prompt_tokens()
    assert tables.check(tok, missions, hist, L) == N_ENVS * N_STEPS
    ids, n = jax.jit(jax.vmap(lambda m, h: tables.build(m, h, L)))(jnp.asarray(missions), hist)
    for b in range(0, len(missions), 37):
        h = jax.tree.map(lambda x: x[b], hist)
        assert prompt_ids.decode(tok, ids[b], n[b]) == prompt_ids.render_prompt(missions[b], h)
    assert int(np.asarray(n).max()) <= L


def test_cut_prompts_say_so():
    tok = _ToyTokenizer()
    tables = prompt_ids.PromptTables.from_tokenizer(tok)
    slots = jnp.zeros(phrases.N_SLOTS, jnp.int32).at[5].set(phrases.OBJ_SENTENCE[phrases.OBJ_SENTENCE > 0][0])
    h = prompt_ids.history_start(slots)
    mission = jnp.zeros(core.StaticConfig.mission_pieces, jnp.int32).at[0].set(phrases.piece(" go to"))
    ids, n = tables.build(mission, h, 8)
    assert int(n) > 8 and ids.shape == (8,)  # the length reports the cut
    full, m = tables.build(mission, h, 256)
    assert np.array_equal(np.asarray(full[:8]), np.asarray(ids))


class _ToyTokenizer:
    """Characters as ids, with a BOS: enough to check prefix handling and cutting."""

    def encode(self, text, add_special_tokens=False):
        return ([1] if add_special_tokens else []) + [ord(c) + 2 for c in text]


def test_special_tokens_are_laid_around_the_prompt():
    tok = _ToyTokenizer()
    tables = prompt_ids.PromptTables.from_tokenizer(tok)
    assert tables.prefix == (1,) and tables.suffix == ()
    h = prompt_ids.history_start(jnp.zeros(phrases.N_SLOTS, jnp.int32))
    mission = jnp.zeros(core.StaticConfig.mission_pieces, jnp.int32).at[0].set(phrases.piece(" open"))
    ids, n = tables.build(mission, h, 400)
    text = prompt_ids.render_prompt(mission, h)
    assert list(np.asarray(ids[: int(n)])) == tok.encode(text, add_special_tokens=True)


def test_a_tokenizer_that_merges_across_words_is_refused():
    class Glue:
        def encode(self, text, add_special_tokens=False):  # one token per text: merges everything
            return [hash(text) % 1000]

    with pytest.raises(prompt_ids.PromptTokenError, match="merges across the word boundary"):
        prompt_ids.PromptTables.from_tokenizer(Glue())
