"""The LONDI env on device (``agents.online``) against the host path it replaces.

QUICK's action scores and the switch's features, computed in jit from prompt ids, equal what the
host policy (``LMPolicy`` on the prompt text) and ``switch_features`` give; one ``step_batch``
serves DEEPTHINK exactly at the first ``capacity`` rows switched to it (the rest run QUICK and are
counted), acts greedily on the model that served each row, steps the envs as ``step_env`` does,
and hands fresh levels to the ended episodes (shortfall counted), keeping the real next features
for bootstrapping.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from londi_jax.agents.online import LondiEnv  # noqa: E402
from londi_jax.agents.policy import LMPolicy, switch_features  # noqa: E402
from londi_jax.envs.babyai_jax import env as jenv  # noqa: E402
from londi_jax.envs.babyai_jax import levels, phrases, prompt_ids  # noqa: E402
from londi_jax.envs.babyai_text.prompt import ACTIONS  # noqa: E402
from londi_jax.lm.config import ModelConfig  # noqa: E402
from londi_jax.lm.engine import LanguageModel  # noqa: E402
from londi_jax.lm.hf_loader import init_model  # noqa: E402
from londi_jax.lm.tokenizer import train_word_tokenizer  # noqa: E402
from londi_jax.utils.errors import LondiError  # noqa: E402

N, CAPACITY, RESETS, MAX_LEN = 8, 3, 2, 256


def _lm(tok, hidden: int, seed: int, name: str) -> LanguageModel:
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=hidden, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=8, intermediate_size=2 * hidden, tie_embeddings=True,
                      max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    return LanguageModel(cfg, init_model(cfg, seed), tok, name=name)


@pytest.fixture(scope="module")
def setup():
    # two tokenizers (each model builds its own prompt ids), two widths (features are QUICK's)
    quick = _lm(train_word_tokenizer(phrases.PIECES[1:], vocab_size=400), 16, 0, "quick")
    deep = _lm(train_word_tokenizer(phrases.PIECES[1:], vocab_size=300), 24, 1, "deep")
    env = LondiEnv(quick, deep, capacity=CAPACITY, resets=RESETS, sample_actions=False, max_len=MAX_LEN)
    params = env.params(levels.make_params(kinds=("goto", "pickup"), room_size=6, num_dists=2,
                                           phrase_filter="train"), quick, deep)
    feats, state = jax.jit(env.reset_batch, static_argnums=2)(jax.random.key(3), params, N)
    return env, params, quick, deep, np.asarray(feats), state


def _texts(state, rows) -> list[str]:
    return [prompt_ids.render_prompt(np.asarray(state.env.mission[b]), jax.tree.map(lambda x: np.asarray(x)[b],
                                                                                    state.history)) for b in rows]


def _host(lm, state, rows):
    out = LMPolicy(lm).score(_texts(state, rows), [ACTIONS] * len(rows))
    step, limit = np.asarray(state.env.step_count)[rows], np.asarray(state.env.max_steps)[rows]
    return out, switch_features(out, step, limit)


def test_features_and_scores_equal_the_host_policy(setup):
    env, _, quick, _, feats, state = setup
    assert feats.shape == (N, env.obs_dim) and env.obs_dim == 2 * 16 + 5
    out, want = _host(quick, state, range(N))
    np.testing.assert_allclose(np.asarray(state.quick_scores), out.logprobs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(feats, want, rtol=1e-4, atol=1e-4)


def test_step_serves_deepthink_at_capacity_acts_and_resets(setup):
    env, params, quick, deep, _, state = setup
    # three episodes end at this step (their limit reached), two fresh levels per step: one shortfall
    ending = np.array([0, 2, 5])
    limit = np.asarray(state.env.max_steps)
    count = np.asarray(state.env.step_count).copy()
    count[ending] = limit[ending] - 1
    state = state.replace(env=state.env.replace(step_count=jnp.asarray(count)))
    g = jnp.asarray([1, 0, 1, 1, 0, 1, 1, 0], jnp.int32)  # five DEEPTHINK switches, capacity three
    step = jax.jit(env.step_batch)
    obs, state2, reward, term, trunc, info = jax.device_get(step(jax.random.key(7), state, g, params))

    served = np.array([1, 0, 1, 1, 0, 0, 0, 0])  # the first three rows switched to DEEPTHINK
    assert info["switch"].tolist() == served.tolist()
    assert int(info["overflow"]) == 2 and int(info["deep_rows"]) == 3 and int(info["cut_prompts"]) == 0
    q_out, _ = _host(quick, state, range(N))
    d_out, _ = _host(deep, state, np.nonzero(served)[0])
    logits = q_out.logprobs.copy()
    logits[served == 1] = d_out.logprobs
    action = logits.argmax(-1)  # greedy on the model that served each row

    o_ref, env_ref, r_ref, te_ref, tr_ref = jax.device_get(jax.jit(jax.vmap(jenv.step_env))(
        state.env, jnp.asarray(action, jnp.int32)))
    np.testing.assert_array_equal(reward, r_ref)
    np.testing.assert_array_equal(term, te_ref)
    np.testing.assert_array_equal(trunc, tr_ref)
    done = term | trunc
    assert set(ending) <= set(np.nonzero(done)[0])
    assert int(info["reset_shortfall"]) == max(int(done.sum()) - RESETS, 0)
    live = ~done
    for name in ("agent_pos", "agent_dir", "carry", "step_count", "cell"):
        np.testing.assert_array_equal(np.asarray(getattr(state2.env, name))[live], np.asarray(getattr(env_ref, name))[live])

    # the real next features (bootstrapping) are QUICK's at the real next prompts, history pushed
    hist_ref = jax.vmap(prompt_ids.history_push)(state.history, jnp.asarray(action, jnp.int32), jnp.asarray(o_ref.slots))
    real = state.replace(env=jax.tree.map(jnp.asarray, env_ref), history=hist_ref)
    _, want_final = _host(quick, real, range(N))
    np.testing.assert_allclose(info["final_obs"], want_final, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(obs[live], want_final[live], rtol=1e-4, atol=1e-4)
    # ended episodes start fresh: step 0, one observation in the history, QUICK's features there
    assert np.all(np.asarray(state2.env.step_count)[done] == 0) and np.all(np.asarray(state2.history.n_obs)[done] == 1)
    _, want_fresh = _host(quick, state2, np.nonzero(done)[0])
    np.testing.assert_allclose(obs[done], want_fresh, rtol=1e-4, atol=1e-4)
    assert np.all(obs[done][:, -1] == 0.0)  # step fraction


def test_bad_settings_are_refused(setup):
    _, _, quick, deep, _, _ = setup
    with pytest.raises(LondiError, match="capacity must be an int >= 1"):
        LondiEnv(quick, deep, capacity=0, resets=1)
    with pytest.raises(LondiError, match=r"max_len must be an int in \[1, "):
        LondiEnv(quick, deep, capacity=1, resets=1, max_len=10_000)
    with pytest.raises(LondiError, match="loaded LanguageModel with a tokenizer"):
        LondiEnv(object(), deep, capacity=1, resets=1)
    with pytest.raises(LondiError, match="sample_actions must be True"):
        LondiEnv(quick, deep, capacity=1, resets=1, sample_actions="false")
    short = _lm(quick.tokenizer, 16, 0, "short")
    short.config = dataclasses.replace(short.config, max_position_embeddings=12)
    with pytest.raises(LondiError, match="too few for GLAM's prompt header"):
        LondiEnv(short, deep, capacity=1, resets=1)
    env, params = setup[0], setup[1]
    with pytest.raises(LondiError, match="do not have the shapes of the QUICK"):
        env.params(params.env, deep, quick)  # swapped
    with pytest.raises(LondiError, match="EnvParams"):
        env.params(None, quick, deep)
    with pytest.raises(LondiError, match=r"capacity \(3\) and resets \(2\) must be at most the number of envs \(2\)"):
        jax.eval_shape(lambda k: env.reset_batch(k, params, 2), jax.random.key(0))
    from londi_jax.agents.online import train_online
    from londi_jax.switcher.config import SwitcherConfig
    from londi_jax.switcher.sweep import stack_hparams

    cfg = SwitcherConfig(obs_dim=env.obs_dim, hidden=(8,), learner="pqn", num_envs=4, rollout_len=2, num_updates=2)
    hp = stack_hparams([{"c": 0.1}, {"c": 0.2}], {})
    for kwargs, match in (({"every_updates": 1.5}, "every_updates must be an int >= 1"),
                          ({"seeds": [0.5, 1.7]}, "seeds must be a non-empty list of ints"),
                          ({"hparams": {"c": 0.1}}, "hparams must be HParams stacked"),
                          ({"ckpt_dir": None}, "ckpt_dir must be a directory path")):
        args = {"hparams": hp, "seeds": [0, 1], "ckpt_dir": "/nonexistent/never-written", "every_updates": 1, **kwargs}
        with pytest.raises(LondiError, match=match):
            train_online(env, params, cfg, args["hparams"], args["seeds"], args["ckpt_dir"],
                         every_updates=args["every_updates"], progress=False)


def test_online_training_resumes_exactly_and_keeps_the_budget(setup, tmp_path):
    """LONDI-B members trained online in one program: an interrupted run resumed from its checkpoint
    ends with the same switch parameters as an uninterrupted one, and no episode exceeds its budget."""
    from londi_jax.agents.online import train_online
    from londi_jax.switcher.config import SwitcherConfig
    from londi_jax.switcher.sweep import stack_hparams

    env, params, *_ = setup
    cfg = SwitcherConfig(obs_dim=env.obs_dim, hidden=(8,), learner="pqn", use_budget=True, num_envs=4, rollout_len=3,
                         num_updates=2, num_minibatches=2, num_epochs=1)
    hp = stack_hparams([{"c": 0.05, "budget": 1, "eps_start": 1.0}, {"c": 0.2, "budget": 2, "eps_start": 1.0}], {})
    whole = train_online(env, params, cfg, hp, [0, 1], tmp_path / "a", every_updates=1, progress=False)
    train_online(env, params, cfg, hp, [0, 1], tmp_path / "b", every_updates=1, total_updates=1, progress=False)
    resumed = train_online(env, params, cfg, hp, [0, 1], tmp_path / "b", every_updates=1, progress=False)
    assert resumed.summary["resumed_from"] == 1 and resumed.summary["updates_run"] == 1
    for x, y in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert whole.metrics["loss"].shape == (2, 2) and np.all(np.isfinite(whole.metrics["loss"]))
    assert whole.metrics["violations"].sum() == 0
    # exploring at eps = 1 with budgets 1 and 2 draws DEEPTHINK, within capacity or counted as overflow
    assert whole.metrics["deep_rows"].sum() + whole.metrics["overflow"].sum() > 0
    members = whole.summary["members"]
    assert [m["budget"] for m in members] == [1, 2]
    with pytest.raises(LondiError, match="give one seed per member"):
        train_online(env, params, cfg, hp, [0], tmp_path / "c", every_updates=1, progress=False)


def _one_switch_on_16_envs(mesh=None):
    """One online switch (fewer members than devices) over 16 envs: trained params, DEEPTHINK rows
    served, and the env (for its trainer)."""
    import tempfile

    from londi_jax.agents.online import train_online
    from londi_jax.switcher.config import SwitcherConfig
    from londi_jax.switcher.sweep import stack_hparams

    quick = _lm(train_word_tokenizer(phrases.PIECES[1:], vocab_size=400), 16, 0, "quick")
    deep = _lm(train_word_tokenizer(phrases.PIECES[1:], vocab_size=300), 24, 1, "deep")
    env = LondiEnv(quick, deep, capacity=8, resets=2, sample_actions=False, max_len=MAX_LEN)
    params = env.params(levels.make_params(kinds=("goto", "pickup"), room_size=6, num_dists=2,
                                           phrase_filter="train"), quick, deep)
    cfg = SwitcherConfig(obs_dim=env.obs_dim, hidden=(8,), learner="pqn", num_envs=16, rollout_len=3, num_updates=2,
                         num_minibatches=2, num_epochs=1)
    hp = stack_hparams([{"c": 0.05, "eps_start": 1.0}], {})
    res = train_online(env, params, cfg, hp, [0], tempfile.mkdtemp(), every_updates=1, progress=False, mesh=mesh)
    return res, env, (cfg, hp, params)


ROWS_SCRIPT = """
import json, re, sys
sys.path.insert(0, sys.argv[1])
import jax, numpy as np
from test_online import _one_switch_on_16_envs
from londi_jax.switcher.checkpoint import _jitted
from londi_jax.utils.mesh import make_mesh, replicate
mesh = make_mesh("data=8")
res, env, (cfg, hp, params) = _one_switch_on_16_envs(mesh)
init, step = _jitted(env._trainers[(cfg, env.row_mesh)], True)
k, h, p = replicate((jax.vmap(jax.random.key)(jax.numpy.asarray([0], jax.numpy.uint32)), hp, params), mesh)
hlo = step.lower(init(k, h, p), h, 1, p).as_text()
print("RESULT " + json.dumps({
    "params": [np.asarray(x, np.float64).tolist() for x in jax.tree.leaves(res.params)],
    "deep_rows": int(res.metrics["deep_rows"].sum()), "split": env.row_mesh is not None,
    "devices": len(jax.tree.leaves(res.params)[0].sharding.device_set),
    "row_constraints": len(re.findall(r'sharding_constraint [^<]*<@mesh, \\[\\{\\?\\}, \\{"data"\\}', hlo))}))
"""


@pytest.mark.slow
def test_one_switch_splits_its_envs_over_the_data_axis(tmp_path):
    """With fewer members than data devices (one switch on 8 virtual devices), each member's env rows
    (prompts, QUICK's and DEEPTHINK's batches) are split over data; training gives the one-device
    switch (to float32 rounding) and the same DEEPTHINK calls."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    r = subprocess.run([sys.executable, "-c", ROWS_SCRIPT, str(Path(__file__).parent)], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert got["split"] and got["devices"] == 8 and got["row_constraints"] >= 2  # QUICK's and DEEPTHINK's rows
    one, _, _ = _one_switch_on_16_envs()
    assert got["deep_rows"] == int(one.metrics["deep_rows"].sum())
    for a, b in zip(jax.tree.leaves(one.params), got["params"], strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a, np.float64), atol=1e-5)
