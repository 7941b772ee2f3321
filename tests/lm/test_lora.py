"""LoRA adapters: exact no-op at init, merge == unmerged, gradients only for A/B, save/load, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, traverse_util
from lm_core_helpers import VOCAB, make_tokenizer

from londi_jax.lm.config import ModelConfig
from londi_jax.lm.engine import LanguageModel, prefill
from londi_jax.lm.hf_loader import init_model
from londi_jax.lm.lora import (
    LoRAConfig,
    LoRAError,
    LoRALinear,
    add_lora,
    load_lora,
    merge_lora,
    merge_trainable,
    save_lora,
    split_trainable,
)
from londi_jax.utils.errors import LondiError

LLAMA = ModelConfig(family="llama", vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, intermediate_size=64, qkv_bias=True, max_position_embeddings=128)
NEOX = ModelConfig(family="gpt_neox", vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=4,
                   head_dim=8, intermediate_size=64, rotary_dim=4, qkv_bias=True, o_bias=True, mlp_bias=True,
                   parallel_residual=True, hidden_act="gelu", max_position_embeddings=128)
CONFIGS = {"llama": LLAMA, "gpt_neox": NEOX}
TARGETS = {"llama": ("q_proj", "v_proj", "gate_proj", "down_proj"), "gpt_neox": ("q_proj", "o_proj", "up_proj")}
TOKENS = np.array([[1, 5, 9, 33, 70, 101, 4, 250], [1, 250, 3, 17, 17, 2, 8, 9]], np.int32)


def logits_of(model, tokens=TOKENS) -> np.ndarray:
    """Full-sequence float32 logits (no padding)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, tok):
        m = nnx.merge(graphdef, state)
        hidden, _, _ = prefill(m, tok, jnp.ones(tok.shape, bool), tok.shape[1])
        return m.logits(hidden)

    return np.asarray(run(state, tokens))


def flat(state) -> dict[tuple, np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(nnx.to_pure_dict(state)).items()}


def randomize_b(model, seed: int = 1, scale: float = 0.2):
    """Give every LoRA B a random non-zero value (in place)."""
    state = nnx.state(model, nnx.LoRAParam)
    values = flat(state)
    rng = np.random.default_rng(seed)
    new = {k: (rng.standard_normal(v.shape).astype(np.float32) * scale if k[-1] == "lora_b" else v)
           for k, v in values.items()}
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in new.items()}))
    nnx.update(model, state)
    return model


@pytest.fixture(scope="module", params=["llama", "gpt_neox"])
def family(request):
    return request.param


@pytest.fixture(scope="module")
def base(family):
    return init_model(CONFIGS[family], seed=0)


@pytest.fixture(scope="module")
def adapted(base, family):
    """An adapted model with random non-zero B (so it differs from the base)."""
    return randomize_b(add_lora(base, LoRAConfig(rank=4, alpha=8.0, targets=TARGETS[family]), seed=3))


def test_zero_b_is_exactly_the_base_model(base, family):
    cfg = LoRAConfig(rank=4, alpha=8.0, targets=TARGETS[family])
    fresh = add_lora(base, cfg, seed=3)
    layers = [m for _, m in nnx.iter_modules(fresh) if isinstance(m, LoRALinear)]
    assert len(layers) == len(cfg.targets) * base.config.num_layers
    for m in layers:
        assert np.all(np.asarray(m.lora.lora_b[...]) == 0) and np.any(np.asarray(m.lora.lora_a[...]) != 0)
        assert isinstance(m.lora.lora_a, nnx.LoRAParam) and m.lora_scale == 2.0
    # B = 0 adds exact zeros; what is left is float rounding between two different compiled programs
    np.testing.assert_allclose(logits_of(fresh), logits_of(base), rtol=0, atol=1e-5)
    # the input model is not mutated
    assert not any(isinstance(m, LoRALinear) for _, m in nnx.iter_modules(base))


def test_merge_matches_unmerged_and_differs_from_base(base, adapted):
    merged = merge_lora(adapted)
    assert type(merged) is type(base)
    assert not any(isinstance(m, LoRALinear) for _, m in nnx.iter_modules(merged))
    assert any(isinstance(m, LoRALinear) for _, m in nnx.iter_modules(adapted))  # input untouched
    la, lm, lb = logits_of(adapted), logits_of(merged), logits_of(base)
    np.testing.assert_allclose(lm, la, rtol=1e-5, atol=1e-5)
    assert np.abs(la - lb).max() > 1e-2  # the adapter really changes the model
    # the merged kernel is W + (alpha/rank) A @ B, computed independently here
    q = adapted.layers[0].attn.q_proj
    want = np.asarray(q.kernel[...]) + 2.0 * np.asarray(q.lora.lora_a[...]) @ np.asarray(q.lora.lora_b[...])
    np.testing.assert_allclose(np.asarray(merged.layers[0].attn.q_proj.kernel[...]), want, rtol=1e-6, atol=1e-6)


def next_token_loss(model, tokens):
    hidden, _, _ = prefill(model, tokens, jnp.ones(tokens.shape, bool), tokens.shape[1])
    logits = model.logits(hidden[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def test_lora_gradients_and_optax_step_touch_only_adapters(base, family):
    model = add_lora(base, LoRAConfig(rank=4, alpha=8.0, targets=TARGETS[family]), seed=3)
    graphdef, trainable, frozen = split_trainable(model, "lora")
    tx = optax.adam(1e-2)
    opt_state = tx.init(trainable)

    @jax.jit
    def step(trainable, opt_state, frozen, tokens):
        loss, grads = jax.value_and_grad(lambda t: next_token_loss(merge_trainable(graphdef, t, frozen), tokens))(
            trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, grads, loss

    t0 = flat(trainable)
    t1, opt_state, grads, loss0 = step(trainable, opt_state, frozen, TOKENS)
    grads = flat(grads)
    assert grads and all(k[-1] in ("lora_a", "lora_b") for k in grads)
    assert len(grads) == 2 * len(TARGETS[family]) * base.config.num_layers
    # with B = 0, d loss / dA = (...) B^T = 0 exactly, while B gets a real gradient
    assert all(np.all(g == 0) for k, g in grads.items() if k[-1] == "lora_a")
    assert any(np.abs(g).max() > 0 for k, g in grads.items() if k[-1] == "lora_b")

    t2, opt_state, _, _ = step(t1, opt_state, frozen, TOKENS)
    f1, f2 = flat(t1), flat(t2)
    assert all(not np.array_equal(f1[k], t0[k]) for k in t0 if k[-1] == "lora_b")
    assert all(not np.array_equal(f2[k], t0[k]) for k in t0 if k[-1] == "lora_a")  # A moves once B != 0
    trained = merge_trainable(graphdef, t2, frozen)
    base_only = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))
    before, after = flat(nnx.state(base, nnx.Param)), flat(nnx.state(trained, base_only))
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert float(next_token_loss(trained, TOKENS)) < float(loss0)


def test_full_mode_trains_every_param(base):
    graphdef, trainable, frozen = split_trainable(base, "full")
    assert not flat(frozen)
    grads = flat(jax.jit(jax.grad(lambda t: next_token_loss(merge_trainable(graphdef, t, frozen), TOKENS)))(
        trainable))
    assert grads.keys() == flat(nnx.state(base, nnx.Param)).keys()
    assert np.abs(grads[("embed", "embedding")]).max() > 0


def test_save_load_roundtrip(tmp_path, base, adapted):
    out = save_lora(adapted, tmp_path / "adapter", base="tiny-base")
    assert {p.name for p in out.iterdir()} == {"adapter_model.safetensors", "adapter_config.json"}
    loaded = load_lora(base, out)
    np.testing.assert_array_equal(logits_of(loaded), logits_of(adapted))
    assert not any(isinstance(m, LoRALinear) for _, m in nnx.iter_modules(base))
    save_lora(loaded, out)  # replacing an earlier save of an adapter is fine
    np.testing.assert_array_equal(logits_of(load_lora(base, out)), logits_of(adapted))


def test_load_errors(tmp_path, base, adapted, family):
    out = save_lora(adapted, tmp_path / "adapter")
    wider = init_model(CONFIGS[family].replace(hidden_size=64, head_dim=16), seed=0)
    with pytest.raises(LoRAError, match=r"hidden_size: adapter 32 vs model 64"):
        load_lora(wider, out)
    other = "gpt_neox" if family == "llama" else "llama"
    with pytest.raises(LoRAError, match=rf"family: adapter '{family}' vs model '{other}'"):
        load_lora(init_model(CONFIGS[other], seed=0), out)
    # an adapter whose config disagrees with its tensors: the message names the tensor and both shapes
    import json

    meta = json.loads((out / "adapter_config.json").read_text())
    meta["lora"]["rank"] = 2
    (out / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(LoRAError, match=r"tensor 'layers\.0\.attn\.q_proj\.lora\.lora_a' has shape \(32, 4\) "
                                        r"but the model expects \(32, 2\)"):
        load_lora(base, out)
    with pytest.raises(LoRAError, match="holds no LoRA adapter"):
        load_lora(base, tmp_path)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(LondiError, match="refusing to replace"):
        save_lora(adapted, tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"


def test_config_and_mode_errors(base, family):
    with pytest.raises(LoRAError, match="rank must be a positive integer"):
        LoRAConfig(rank=0)
    with pytest.raises(LoRAError, match="alpha must be > 0"):
        LoRAConfig(alpha=0.0)
    bad = "gate_proj" if family == "gpt_neox" else "dense"
    with pytest.raises(LoRAError, match=rf"\['{bad}'\] match no Linear.*known targets: .*down_proj.*q_proj"):
        add_lora(base, LoRAConfig(targets=("q_proj", bad)))
    with pytest.raises(LoRAError, match="needs a model with LoRA adapters"):
        split_trainable(base, "lora")
    with pytest.raises(LoRAError, match="known modes: full, lora"):
        split_trainable(base, "adapters")
    with pytest.raises(LoRAError, match="no LoRA adapters to merge"):
        merge_lora(base)
    with pytest.raises(LoRAError, match="already has LoRA adapters"):
        add_lora(add_lora(base, LoRAConfig()), LoRAConfig())


def test_bfloat16_base_keeps_its_dtype():
    model = init_model(LLAMA.replace(dtype="bfloat16"), seed=0)
    adapted = add_lora(model, LoRAConfig(targets=("q_proj", "lm_head")))
    q = adapted.layers[0].attn.q_proj
    assert q.kernel[...].dtype == jnp.bfloat16 and q.lora.lora_a[...].dtype == jnp.float32
    assert q(jnp.ones((2, 32), jnp.bfloat16)).dtype == jnp.bfloat16
    assert merge_lora(adapted).layers[0].attn.q_proj.kernel[...].dtype == jnp.bfloat16


def test_language_model_on_adapted_model(tmp_path):
    adapted = randomize_b(add_lora(init_model(LLAMA, seed=0), LoRAConfig(rank=4, targets=TARGETS["llama"])))
    tok = make_tokenizer(str(tmp_path))
    cfg = adapted.config
    lm_a = LanguageModel(cfg, adapted, tok, name="adapted")
    lm_m = LanguageModel(cfg, merge_lora(adapted), tok, name="merged")
    prompts, cands = ["you see a red ball", "open the"], [[" go forward", " turn left"], [" door", " box", " key"]]
    ra, rm = lm_a.score(prompts, cands, with_embedding=True), lm_m.score(prompts, cands, with_embedding=True)
    for a, m in zip(ra.logprobs, rm.logprobs):
        np.testing.assert_allclose(a, m, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ra.embeddings, rm.embeddings, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lm_a.embed(prompts), lm_m.embed(prompts), rtol=1e-5, atol=1e-5)
    ga, gm = lm_a.generate(prompts, 6), lm_m.generate(prompts, 6)
    assert ga.token_ids == gm.token_ids
