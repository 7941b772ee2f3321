"""Behaviour cloning: the loss equals GLAM's policy computed independently by the scoring
program; training fits; a killed run resumes to bit-identical parameters; LoRA trains only adapters."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from londi_jax.agents.bc import BCConfig, BCError, BCTrainer, bc_data_from_episodes, bc_loss, encode_candidates, pad_prompts
from londi_jax.envs.babyai_text.bot import expert_episode
from londi_jax.envs.babyai_text.prompt import ACTIONS
from londi_jax.lm.config import ModelConfig
from londi_jax.lm.engine import LanguageModel
from londi_jax.lm.hf_loader import init_model
from londi_jax.lm.tokenizer import train_word_tokenizer


@pytest.fixture(scope="module")
def demos():
    eps = [expert_episode("BabyAI-MixedTrainLocal-v0", i, kind=("goto", "pickup")[i % 2], room_size=5,
                          num_dists=1).to_json() for i in range(16)]
    tok = train_word_tokenizer([s["prompt"] for e in eps for s in e["steps"]] + list(ACTIONS), vocab_size=96)
    return eps, tok


def tiny_model(tok, seed=0):
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=16, num_layers=1, num_heads=1,
                      num_kv_heads=1, head_dim=16, intermediate_size=32, tie_embeddings=True,
                      max_position_embeddings=512)
    return init_model(cfg, seed)


def test_loss_matches_glam_policy_from_the_scoring_program(demos):
    eps, tok = demos
    data = bc_data_from_episodes(eps, tok)
    model = tiny_model(tok)
    idx = np.arange(6)
    p_tok, p_valid = pad_prompts([data.prompt_ids[i] for i in idx], 8, 32)
    labels = np.zeros(8, np.int32)
    labels[:6] = data.labels[idx]
    c_tok, c_valid = encode_candidates(tok)
    loss, metrics = bc_loss(model, p_tok, p_valid, labels, np.arange(8) < 6, c_tok, c_valid, "choice")
    # independent: the engine's score() on the prompt strings, GLAM softmax over summed log-probs
    lm = LanguageModel(model.config, model, tok)
    res = lm.score_tokens([list(data.prompt_ids[i]) for i in idx], [[list(tok.encode(a, add_special_tokens=False))
                                                                     for a in ACTIONS]] * 6)
    scores = np.stack(res.logprobs)
    logp = scores - np.log(np.exp(scores).sum(-1, keepdims=True))
    expected = -np.mean(logp[np.arange(6), data.labels[idx]])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["token_nll"]) == pytest.approx(-np.mean(scores[np.arange(6), data.labels[idx]]), rel=1e-5)
    assert float(metrics["accuracy"]) == pytest.approx(np.mean(scores.argmax(-1) == data.labels[idx]))


def test_training_fits_the_demos(demos):
    eps, tok = demos
    data = bc_data_from_episodes(eps, tok)
    tr = BCTrainer(tiny_model(tok), tok, data, BCConfig(epochs=6, batch_size=8, learning_rate=1e-2, warmup_steps=2, length_multiple=256))
    res = tr.train(progress=False)
    first, last = res.history[0], res.history[-1]
    assert last["train_loss"] < 0.75 * first["train_loss"]
    assert last["train_accuracy"] > first["train_accuracy"]
    assert res.steps == tr.total_steps == 6 * tr.steps_per_epoch


def test_trainers_of_one_structure_share_one_program_and_follow_optax(demos):
    """The step program depends on the model's structure alone: trainers with other learning
    rates, losses, weight decay and clipping reuse it without compiling again (an FSLM stack's
    stages, a learning-rate sweep); each still trains exactly as optax's own clipped AdamW on the
    warmup-cosine schedule does, computed here by a plain reference loop."""
    import optax

    from londi_jax.agents.bc import epoch_batches
    from londi_jax.lm.lora import merge_trainable, split_trainable

    eps, tok = demos
    data = bc_data_from_episodes(eps, tok)
    one = BCConfig(epochs=1, batch_size=8, learning_rate=1e-2, warmup_steps=2, loss="choice", length_multiple=256)
    two = BCConfig(epochs=2, batch_size=8, learning_rate=3e-3, warmup_steps=3, loss="both", weight_decay=0.3,
                   max_grad_norm=0.05, length_multiple=256)
    a, b = BCTrainer(tiny_model(tok), tok, data, one), BCTrainer(tiny_model(tok, seed=1), tok, data, two)
    assert a._step is b._step
    a.train(progress=False)
    compiled = a._step._cache_size()
    res = b.train(progress=False)
    assert b._step._cache_size() == compiled  # the second trainer compiled nothing

    graphdef, trainable, frozen = split_trainable(tiny_model(tok, seed=1), "full")
    schedule = optax.warmup_cosine_decay_schedule(0.0, two.learning_rate, two.warmup_steps, b.total_steps)
    tx = optax.chain(optax.clip_by_global_norm(two.max_grad_norm), optax.adamw(schedule, weight_decay=two.weight_decay))
    c_tok, c_valid = encode_candidates(tok)

    @jax.jit
    def step(tr, opt, p_tok, p_valid, labels, row_valid):
        grads = jax.grad(lambda t: bc_loss(merge_trainable(graphdef, t, frozen), p_tok, p_valid, labels, row_valid,
                                           c_tok, c_valid, "both")[0])(tr)
        updates, opt = tx.update(grads, opt, tr)
        return optax.apply_updates(tr, updates), opt

    opt = tx.init(trainable)
    for epoch in range(two.epochs):
        for idx in epoch_batches(b.lengths, 8, two.pool_batches, two.seed, epoch):
            p_tok, p_valid = pad_prompts([data.prompt_ids[i] for i in idx], 8, 256)
            trainable, opt = step(trainable, opt, p_tok, p_valid, data.labels[idx], np.ones(8, bool))
    ours = jax.tree.leaves(nnx.state(res.model, nnx.Param))
    ref = jax.tree.leaves(nnx.state(merge_trainable(graphdef, trainable, frozen), nnx.Param))
    assert len(ours) == len(ref)
    for x, y in zip(ours, ref):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


class Stop(Exception):
    pass


def test_killed_run_resumes_to_identical_parameters(demos, tmp_path):
    eps, tok = demos
    data = bc_data_from_episodes(eps, tok)
    cfg = BCConfig(epochs=2, batch_size=8, checkpoint_every=3, length_multiple=256)
    full = BCTrainer(tiny_model(tok), tok, data, cfg).train(progress=False)

    def die_after_epoch_one(row):
        if row["epoch"] == 1:
            raise Stop  # killed before the epoch-end checkpoint: resumes from the mid-epoch one
    with pytest.raises(Stop):
        BCTrainer(tiny_model(tok), tok, data, cfg).train(tmp_path, progress=False, log=die_after_epoch_one)
    resumed = BCTrainer(tiny_model(tok), tok, data, cfg).train(tmp_path, progress=False)
    assert resumed.resumed_from > 0 and resumed.resumed_from % BCTrainer(tiny_model(tok), tok, data, cfg).steps_per_epoch
    # the record too: the resumed epoch's means include the steps before the checkpoint (stored
    # with it as float32 values, which JSON holds exactly), so they equal the uninterrupted run's
    assert resumed.history == full.history
    a, b = nnx.state(full.model, nnx.Param), nnx.state(resumed.model, nnx.Param)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_lora_trains_only_the_adapters(demos):
    eps, tok = demos
    data = bc_data_from_episodes(eps, tok)
    base = tiny_model(tok)
    base_params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(base, nnx.Param)))
    res = BCTrainer(base, tok, data, BCConfig(epochs=1, batch_size=8, finetune="lora", length_multiple=256)).train(progress=False)
    adapted = nnx.to_pure_dict(nnx.state(res.adapted, nnx.Param))
    moved = []

    def walk(b, a, path=()):
        for k, v in b.items():
            if isinstance(v, dict):
                walk(v, a[k], path + (k,))
            else:
                np.testing.assert_array_equal(v, np.asarray(a[k]), err_msg=str(path + (k,)))
    walk(base_params, adapted)  # every base weight bit-identical
    lora_b = [np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(adapted) if "lora_b" in str(p)]
    moved = [float(np.abs(x).max()) for x in lora_b]
    assert lora_b and max(moved) > 0  # the zero-initialised B moved
    merged = nnx.to_pure_dict(nnx.state(res.model, nnx.Param))
    assert "lora" not in str(jax.tree_util.tree_structure(merged))


def test_bad_config_and_data(demos):
    eps, tok = demos
    with pytest.raises(Exception, match="known"):
        BCConfig(loss="mse")
    with pytest.raises(Exception, match="fine-tuning mode"):
        BCConfig(finetune="half")
    with pytest.raises(BCError, match="no demo steps"):
        bc_data_from_episodes([], tok)
    data = bc_data_from_episodes(eps[:1], tok)
    with pytest.raises(BCError, match="fewer than one batch"):
        BCTrainer(tiny_model(tok), tok, data, BCConfig(batch_size=64))


def test_a_one_step_run_has_a_valid_schedule(demos):
    eps, tok = demos
    data = bc_data_from_episodes(eps, tok)
    data.prompt_ids, data.labels, data.kinds = data.prompt_ids[:8], data.labels[:8], data.kinds[:8]
    tr = BCTrainer(tiny_model(tok), tok, data, BCConfig(epochs=1, batch_size=8, warmup_steps=100,
                                                        length_multiple=256))
    assert tr.total_steps == 1
    res = tr.train(progress=False)
    assert res.steps == 1 and np.isfinite(res.history[0]["train_loss"])


def test_progress_bar_counts_finished_steps(demos, monkeypatch):
    """The bar advances for a step only once its results were waited for (finished work), not
    when it was dispatched to JAX."""
    import londi_jax.agents.bc as bc

    eps, tok = demos
    tr = BCTrainer(tiny_model(tok), tok, bc_data_from_episodes(eps, tok),
                   BCConfig(epochs=1, batch_size=8, length_multiple=256))
    outputs, blocked, checks = [], set(), []
    real_step, real_block = tr._step, jax.block_until_ready

    def step(*args):
        out = real_step(*args)
        outputs.append(out[2])
        return out

    def block(x):
        blocked.add(id(x))
        return real_block(x)

    class Bar(bc.tqdm):
        def update(self, n=1):
            checks.append((len(checks) + n, all(id(o) in blocked for o in outputs[:len(checks) + n])))
            return super().update(n)

    tr._step = step
    monkeypatch.setattr(bc.jax, "block_until_ready", block)
    monkeypatch.setattr(bc, "tqdm", Bar)
    tr.train(progress=False)
    assert len(checks) == tr.total_steps and all(ok for _, ok in checks)


def test_per_example_candidate_sets(demos):
    """State-dependent candidates (ScienceWorld's valid actions): each row is scored against the
    expert's action plus others drawn from its own set; the loss equals GLAM's policy over those
    candidates computed by the scoring program; padding candidates are never candidates."""
    from londi_jax.agents.bc import bc_data_from_steps

    eps, tok = demos
    steps = [(s["prompt"], s["action"]) for e in eps for s in e["steps"]]
    rng = np.random.default_rng(0)
    cands = [list(rng.choice(ACTIONS, size=int(rng.integers(1, 6)), replace=False)) for _ in steps]
    data = bc_data_from_steps([p for p, _ in steps], cands, [a for _, a in steps], ["k"] * len(steps), tok)
    for row, lab, (_, a), c in zip(data.candidate_ids, data.labels, steps, cands):
        assert row[lab] == tok.encode(a, add_special_tokens=False) and len(row) == len(set(c) | {a})
    model = tiny_model(tok)
    tr = BCTrainer(model, tok, data, BCConfig(batch_size=8, candidates=4, length_multiple=256))
    idx = np.arange(6)
    p_tok, p_valid, labels, row_valid, c_tok, c_valid = tr._batch(idx, epoch=0)
    assert c_tok.shape[:2] == (8, 4) and (labels == 0).all()
    assert (tr._batch(idx, epoch=0)[4] == c_tok).all() and not (tr._batch(idx, epoch=1)[4] == c_tok).all()
    lm = LanguageModel(model.config, model, tok)
    expected = []
    for r, i in enumerate(idx):
        chosen = [list(c_tok[r, k][c_valid[r, k]]) for k in range(4) if c_valid[r, k].any()]
        assert chosen[0] == list(data.candidate_ids[i][data.labels[i]])  # the expert's action first
        assert len(chosen) == min(4, len(data.candidate_ids[i]))
        assert all(c in data.candidate_ids[i] for c in chosen) and len({tuple(c) for c in chosen}) == len(chosen)
        s = np.asarray(lm.score_tokens([list(data.prompt_ids[i])], [chosen]).logprobs[0])
        expected.append(np.log(np.exp(s).sum()) - s[0])
    loss, _ = bc_loss(model, p_tok, p_valid, labels, row_valid, c_tok, c_valid, "choice")
    assert float(loss) == pytest.approx(np.mean(expected), rel=1e-5)
    res = BCTrainer(model, tok, data, BCConfig(epochs=4, batch_size=8, learning_rate=1e-2, warmup_steps=2,
                                                candidates=4, length_multiple=256)).train(progress=False)
    assert res.history[-1]["train_loss"] < 0.8 * res.history[0]["train_loss"]


def test_hard_negatives_come_from_actions_that_begin_like_the_experts():
    """``hard_negatives``: that share of the sampled others begins with the expert's first token
    (as many as exist), the rest are drawn from the remaining actions; 0 draws as before."""
    from londi_jax.agents.bc import bc_data_from_steps

    actions = ["focus on bowl", "focus on cup", "focus on fork", "focus on table", "go to kitchen", "go to hallway",
               "look around", "inventory", "open door", "pick up cup", "pick up fork", "wait"]
    tok = train_word_tokenizer(["you see a bowl"] + actions, vocab_size=64)
    prompts = ["you see a bowl"] * 4
    experts = ["focus on bowl", "go to kitchen", "wait", "look around"]
    data = bc_data_from_steps(prompts, [actions] * 4, experts, ["k"] * 4, tok)
    model = tiny_model(tok)
    first = {a: tok.encode(a, add_special_tokens=False)[0] for a in actions}

    def drawn(hard, epoch=0):
        tr = BCTrainer(model, tok, data, BCConfig(batch_size=4, candidates=5, hard_negatives=hard,
                                                  length_multiple=32))
        c_tok, c_valid = tr._batch(np.arange(3), epoch=epoch)[4:]
        return [[list(c_tok[r, k][c_valid[r, k]]) for k in range(5)] for r in range(3)]

    for epoch in range(3):
        rows = drawn(1.0, epoch)
        # 4 others: "focus on" has 3 others (all taken) + 1 more; "go to" has 1; "wait" has none
        assert sum(c[0] == first["focus on bowl"] for c in rows[0][1:]) == 3
        assert sum(c[0] == first["go to kitchen"] for c in rows[1][1:]) == 1
        assert all(len({tuple(c) for c in r}) == 5 for r in rows)
        half = drawn(0.5, epoch)
        assert sum(c[0] == first["focus on bowl"] for c in half[0][1:]) >= 2
    with pytest.raises(Exception, match="hard_negatives"):
        BCConfig(hard_negatives=1.5)
