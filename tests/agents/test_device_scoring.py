"""Action scoring on device from prompt ids built in jit equals the engine's host scoring of the
prompt strings; DEEPTHINK's compacted batch scores exactly the selected rows and counts overflow."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from londi_jax.agents import device_scoring as ds  # noqa: E402
from londi_jax.envs.babyai_jax import phrases, prompt_ids  # noqa: E402
from londi_jax.envs.babyai_jax import env as jenv  # noqa: E402
from londi_jax.envs.babyai_text.prompt import ACTIONS  # noqa: E402
from londi_jax.lm.config import ModelConfig  # noqa: E402
from londi_jax.lm.engine import LanguageModel  # noqa: E402
from londi_jax.lm.hf_loader import init_model  # noqa: E402
from londi_jax.lm.tokenizer import train_word_tokenizer  # noqa: E402

B = 12


@pytest.fixture(scope="module")
def setup():
    tok = train_word_tokenizer(phrases.PIECES[1:], vocab_size=400)
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=16, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=8, intermediate_size=32, tie_embeddings=True,
                      max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    lm = LanguageModel(cfg, init_model(cfg, 5), tok, name="tiny")
    tables = prompt_ids.PromptTables.from_tokenizer(tok)
    # converted minigrid levels (no level-generation program to compile here)
    from londi_jax.envs.babyai_jax import convert, core
    from londi_jax.envs.babyai_text import make_babyai_text

    starts = []
    for s in range(B):
        env = make_babyai_text("BabyAI-MixedTrainLocal-v0", seed=s, kind=("goto", "pickup")[s % 2], room_size=6,
                               num_dists=2)
        env.reset()
        starts.append(convert.from_minigrid(env))
    st = jax.tree.map(lambda *x: jnp.asarray(np.stack(x)), *starts)
    L = 320

    @jax.jit
    def prompts(st):  # two observations per env, GLAM's history, the prompt ids
        obs = jax.vmap(core.observe)(st)
        acts = jnp.arange(B, dtype=jnp.int32) % 3
        hist = jax.vmap(prompt_ids.history_start)(obs.slots)
        hist = jax.vmap(prompt_ids.history_push)(hist, acts, jax.vmap(jenv.step_env)(st, acts)[0].slots)
        return obs, hist, jax.vmap(lambda m, h: tables.build(m, h, L))(obs.mission, hist)

    obs, hist, (ids, n) = prompts(st)
    texts = [prompt_ids.render_prompt(np.asarray(obs.mission[b]), jax.tree.map(lambda x: x[b], hist)) for b in range(B)]
    return lm, tok, ids, n, texts


def test_device_scores_equal_the_engine_on_the_prompt_strings(setup):
    lm, tok, ids, n, texts = setup
    assert int(n.max()) <= ids.shape[1]
    c_tok, c_valid = ds.candidate_block(tok, ACTIONS)
    gdef, state = nnx.split(lm.model)
    f = jax.jit(lambda s, i, l: ds.score_actions(nnx.merge(gdef, s), i, l, c_tok, c_valid))
    got = np.asarray(f(state, ids, n))
    want = np.stack(lm.score(texts, [list(ACTIONS)] * B).logprobs)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_deepthink_scores_only_the_selected_rows_and_counts_overflow(setup):
    lm, tok, ids, n, _ = setup
    c_tok, c_valid = ds.candidate_block(tok, ACTIONS)
    gdef, state = nnx.split(lm.model)
    full = np.asarray(jax.jit(lambda s: ds.score_actions(nnx.merge(gdef, s), ids, n, c_tok, c_valid))(state))
    mask = jnp.asarray(np.array([1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1], bool))
    rows = jax.jit(lambda s, m: ds.score_rows(nnx.merge(gdef, s), ids, n, m, 4, c_tok, c_valid))
    scores, served, overflow = jax.tree.map(np.asarray, rows(state, mask))
    assert served.tolist() == [True, False, False, True, True, False, True] + [False] * 5  # the first 4 selected
    assert int(overflow) == 2
    np.testing.assert_allclose(scores[served], full[served], atol=1e-5)
    assert (scores[~served] == 0).all()
    # the compacted program scores `capacity` prompts, not the batch: its FLOPs are ~capacity / B of the full one
    lowered = jax.jit(lambda s: ds.score_rows(nnx.merge(gdef, s), ids, n, mask, 4, c_tok, c_valid)).lower(state)
    full_low = jax.jit(lambda s: ds.score_actions(nnx.merge(gdef, s), ids, n, c_tok, c_valid)).lower(state)
    f_small = lowered.compile().cost_analysis()
    f_full = full_low.compile().cost_analysis()
    f_small = (f_small[0] if isinstance(f_small, list) else f_small)["flops"]
    f_full = (f_full[0] if isinstance(f_full, list) else f_full)["flops"]
    assert f_small < 0.5 * f_full


def test_compact_rows_counts_any_nonzero_mask_and_checks_capacity():
    from londi_jax.utils.errors import LondiError

    rows, used, overflow = ds.compact_rows(jnp.array([0, 2, 5]), 1)
    assert np.asarray(rows).tolist() == [1] and np.asarray(used).tolist() == [True] and int(overflow) == 1
    with pytest.raises(LondiError, match="capacity must be an int >= 0"):
        ds.compact_rows(jnp.array([True]), -1)
