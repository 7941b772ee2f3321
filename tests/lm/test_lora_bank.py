"""Adapter banks: rows of one call on different LoRA adapters (one forward, one program) give what
each adapter gives alone; names, views, saved directories, FLOPs and errors."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx
from lm_core_helpers import make_tokenizer
from test_lora import LLAMA, randomize_b

from londi_jax.lm.engine import LanguageModel
from londi_jax.lm.hf_loader import init_model
from londi_jax.lm.interface import LMInputError
from londi_jax.lm.lora import (
    LoRAConfig,
    LoRAError,
    add_lora,
    add_lora_bank,
    merge_lora,
    save_lora,
    set_adapter_rows,
)

# different ranks, scales and targets: the bank pads ranks and fills untargeted layers with zeros
SPECS = {"facts": LoRAConfig(rank=4, alpha=16.0, targets=("q_proj", "v_proj")),
         "plan": LoRAConfig(rank=2, alpha=4.0, targets=("o_proj", "gate_proj", "down_proj")),
         "answer": LoRAConfig(rank=4, alpha=8.0, targets=("q_proj", "k_proj", "up_proj"))}
PROMPTS = ["you see a red ball", "open the", "a wall 2 steps forward and a key", "go to", "pick up the blue box",
           "turn"]
CANDS = [[" go forward", " turn left"], [" door", " box", " key"], [" pick up"], [" the red ball", " it"],
         [" drop", " toggle", " go forward", " turn right"], [" left", " right"]]
MIXED = ["facts", "answer", "plan", "plan", "facts", "answer"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(str(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def base():
    return init_model(LLAMA, seed=0)


@pytest.fixture(scope="module")
def adapted(base):
    return {name: randomize_b(add_lora(base, cfg, seed=k), seed=10 + k) for k, (name, cfg) in enumerate(SPECS.items())}


@pytest.fixture(scope="module")
def alone(adapted, tok):
    # candidate_block=2: a prompt with 3-4 candidates takes two blocks (a block uses its prompt's adapter)
    return {n: LanguageModel(LLAMA, m, tok, name=n, candidate_block=2) for n, m in adapted.items()}


@pytest.fixture(scope="module")
def bank(base, adapted, tok):
    return LanguageModel(LLAMA, base, tok, name="base", candidate_block=2).with_adapters(adapted, name="bank")


def test_mixed_rows_score_as_each_adapter_alone(bank, alone):
    assert bank.num_adapters == 3 and bank.adapter_names == ("facts", "plan", "answer")
    got = bank.score(PROMPTS, CANDS, with_embedding=True, adapters=MIXED)
    for i, name in enumerate(MIXED):
        want = alone[name].score([PROMPTS[i]], [CANDS[i]], with_embedding=True)
        np.testing.assert_allclose(got.logprobs[i], want.logprobs[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got.greedy[i], want.greedy[0])
        np.testing.assert_allclose(got.embeddings[i], want.embeddings[0], rtol=1e-5, atol=1e-5)
    # the adapters really differ from each other on these rows (else the test could not fail)
    other = bank.score(PROMPTS, CANDS, adapters=["plan"] * len(PROMPTS))
    assert max(np.abs(a - b).max() for a, b in zip(got.logprobs, other.logprobs)) > 1e-2


def test_mixed_rows_generate_embed_and_logits_as_each_alone(bank, alone):
    gen = bank.generate(PROMPTS, 6, adapters=MIXED)
    emb = bank.embed(PROMPTS, adapters=MIXED)
    ids = [bank.tokenizer(p)["input_ids"] for p in PROMPTS]
    logits = bank.logits(ids, adapters=[bank.adapter_names.index(n) for n in MIXED])  # indices work too
    for i, name in enumerate(MIXED):
        assert gen.token_ids[i] == alone[name].generate([PROMPTS[i]], 6).token_ids[0]
        np.testing.assert_allclose(emb[i], alone[name].embed([PROMPTS[i]])[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(logits[i], alone[name].logits([ids[i]])[0], rtol=1e-5, atol=1e-4)


def test_views_share_the_banks_programs(bank, alone):
    view = bank.adapter("answer")
    assert view.name == "bank[answer]" and view.tokenizer is bank.tokenizer
    np.testing.assert_allclose(np.concatenate(view.score(PROMPTS[:2], CANDS[:2]).logprobs),
                               np.concatenate(alone["answer"].score(PROMPTS[:2], CANDS[:2]).logprobs), atol=1e-5)
    traces = dict(bank.trace_counts)
    bank.adapter("facts").score(PROMPTS[:2], CANDS[:2])  # same shapes, another adapter: no new compile
    bank.adapter(1).generate(PROMPTS, 6)
    bank.generate(PROMPTS, 6, adapters=MIXED[::-1])
    assert bank.trace_counts["prefill"] == traces["prefill"] and bank.trace_counts["score"] == traces["score"]
    assert bank.trace_counts["generate"] <= traces.get("generate", 0) + 1


def test_bank_from_saved_directories(tmp_path, base, adapted, tok, alone):
    dirs = {n: save_lora(m, tmp_path / n) for n, m in adapted.items()}
    lm = LanguageModel(LLAMA, base, tok).with_adapters([dirs["plan"], dirs["facts"]])
    assert lm.adapter_names == ("plan", "facts")  # named after the directories
    got = lm.score(PROMPTS[:3], CANDS[:3], adapters=["facts", "plan", "facts"]).logprobs
    for i, name in enumerate(["facts", "plan", "facts"]):
        np.testing.assert_allclose(got[i], alone[name].score([PROMPTS[i]], [CANDS[i]]).logprobs[0], atol=1e-5)
    twin = save_lora(adapted["plan"], tmp_path / "again" / "facts")
    with pytest.raises(LMInputError, match="adapter names must differ"):
        LanguageModel(LLAMA, base, tok).with_adapters([dirs["facts"], twin])


def test_flops_count_one_adapter_per_token(base, bank):
    lm_base = LanguageModel(LLAMA, base)
    rank = max(c.rank for c in SPECS.values())
    sizes = {(m.in_features, m.out_features) for _, m in nnx.iter_modules(base) if isinstance(m, nnx.Linear)}
    assert sizes  # one padded adapter per targeted Linear, counted once however many the bank holds
    extra = 0
    for layer in base.layers:
        for name in {t for c in SPECS.values() for t in c.targets}:
            lin = getattr(layer.attn, name, None) or getattr(layer.mlp, name)
            extra += rank * (lin.in_features + lin.out_features)
    assert bank.num_nonembedding_params == lm_base.num_nonembedding_params + extra


def test_bank_errors(base, adapted, bank, tok):
    with pytest.raises(LMInputError, match="holds 3 adapters.*facts, plan, answer"):
        bank.score(PROMPTS[:1], CANDS[:1])
    with pytest.raises(LMInputError, match="unknown adapter 'nope' for prompt 1; known adapters: facts, plan"):
        bank.score(PROMPTS[:2], CANDS[:2], adapters=["facts", "nope"])
    with pytest.raises(LMInputError, match="unknown adapter 3"):
        bank.adapter(3)
    with pytest.raises(LMInputError, match="one name or index per prompt"):
        bank.embed(PROMPTS[:2], adapters=["facts"])
    with pytest.raises(LMInputError, match="has no adapter bank"):
        LanguageModel(LLAMA, base, tok).score(PROMPTS[:1], CANDS[:1], adapters=[0])
    with pytest.raises(LMInputError, match="already holds an adapter bank"):
        bank.with_adapters(adapted)
    other = add_lora(init_model(LLAMA, seed=5), SPECS["facts"])
    with pytest.raises(LoRAError, match="base weight .* differs from the base model's"):
        add_lora_bank(base, [adapted["facts"], other])
    with pytest.raises(LoRAError, match="needs the plain base model"):
        add_lora_bank(adapted["facts"], [adapted["plan"]])
    with pytest.raises(LoRAError, match="at least one"):
        add_lora_bank(base, [])
    with pytest.raises(LoRAError, match="adapter 0 has no LoRA layers"):
        add_lora_bank(base, [base])
    model = bank.model
    for fn in (merge_lora, lambda m: add_lora(m, LoRAConfig()), lambda m: save_lora(m, "/tmp/never")):
        with pytest.raises(LoRAError, match="holds an adapter bank"):
            fn(model)
    with pytest.raises(LoRAError, match=r"integers in \[0, 3\)"):
        set_adapter_rows(model, np.array([0, 3]))
    set_adapter_rows(model, np.array([0, 1, 2]))
    with pytest.raises(LoRAError, match="one adapter per row of the input's leading axis"):
        model.layers[0].attn.q_proj(np.ones((2, 5, LLAMA.hidden_size), np.float32))
