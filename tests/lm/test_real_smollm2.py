"""The real SmolLM2-135M-Instruct GGUF in londi_jax vs transformers' PyTorch model from the same file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from londi_jax.lm.demo import BABYAI_ACTIONS, GLAM_PROMPT

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    GLAM_PROMPT,
    "<|im_start|>user\nName three primary colours.<|im_end|>\n<|im_start|>assistant\n",
]


def _reference() -> dict:
    return json.loads((Path(__file__).parents[1] / "data" / "smollm2_reference.json").read_text())


def _torch_logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def test_config_from_gguf(smollm2_lm):
    c = smollm2_lm.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim) == (30, 576, 9, 3, 64)
    assert (c.intermediate_size, c.vocab_size, c.tie_embeddings, c.rope_theta) == (1536, 49152, True, 100000.0)
    assert smollm2_lm.num_params == 134_515_008  # 30 * 3,540,096 per layer + 49152 * 576 embedding + 576 norm


def test_logits_match_transformers(smollm2_lm, smollm2_torch):
    model, tok = smollm2_torch
    seqs = [tok(p)["input_ids"] for p in PROMPTS]
    ours = smollm2_lm.logits(seqs)
    for ids, got in zip(seqs, ours):
        want = _torch_logits(model, ids)
        assert got.shape == want.shape == (len(ids), 49152)
        np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-4)
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


def test_action_scores_match_transformers(smollm2_lm, smollm2_torch):
    """GLAM scoring (sum of candidate token log-probs) equals a per-pair PyTorch forward pass."""
    model, tok = smollm2_torch
    res = smollm2_lm.score([GLAM_PROMPT], [list(BABYAI_ACTIONS)])
    p_ids = tok(GLAM_PROMPT)["input_ids"]
    for k, action in enumerate(BABYAI_ACTIONS):
        c_ids = tok(action, add_special_tokens=False)["input_ids"]
        logits = _torch_logits(model, p_ids + c_ids)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
        want = sum(logp[len(p_ids) - 1 + j, t] for j, t in enumerate(c_ids))
        assert res.num_tokens[0][k] == len(c_ids)
        assert res.logprobs[0][k] == pytest.approx(want, abs=2e-3), action


def test_greedy_generation_matches_transformers(smollm2_lm, smollm2_torch):
    import torch

    model, tok = smollm2_torch
    ref = _reference()
    n_new = ref["max_new_tokens"]
    ours = smollm2_lm.generate(PROMPTS, n_new)  # one batched (left-padded) call
    for prompt, got_ids, stored in zip(PROMPTS, ours.token_ids, ref["greedy_token_ids"], strict=True):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id)
        want = out[0, ids.shape[1]:].tolist()
        assert got_ids == want, (prompt[:40], tok.decode(got_ids), tok.decode(want))
        assert stored == want  # the stored reference the current-JAX step compares with is PyTorch's


def test_smollm2_equals_lm_eval_hf(smollm2_lm, smollm2_torch):
    """The real SmolLM2-135M-Instruct (GGUF): ours vs lm-eval's hf model on transformers' own model
    from the same file: multiple-choice items, a rolling text and a greedy generation."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from londi_jax.evaluation.harness import LondiJaxLM

    def _instances(kind, args_list):
        return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args_list)]

    model, tok = smollm2_torch
    ours, hf = LondiJaxLM(pretrained=smollm2_lm), HFLM(pretrained=model, tokenizer=tok, device="cpu", batch_size=8)
    q = ("The following are multiple choice questions (with answers) about astronomy.\n\nWhat is the closest star "
         "to the Earth?\nA. Proxima Centauri\nB. The Sun\nC. Sirius\nD. Vega\nAnswer:")
    reqs = [(q, f" {c}") for c in "ABCD"] + [("Question: Which gas do plants take in?\nAnswer:", " carbon dioxide"),
                                             ("", "Hello there")]
    a = ours.loglikelihood(_instances("loglikelihood", reqs), disable_tqdm=True)
    b = hf.loglikelihood(_instances("loglikelihood", reqs), disable_tqdm=True)
    np.testing.assert_allclose([x for x, _ in a], [x for x, _ in b], atol=2e-3)
    assert [g for _, g in a] == [g for _, g in b]
    text = [("The Sun is the star at the centre of the Solar System. It is a nearly perfect ball of hot plasma.",)]
    np.testing.assert_allclose(ours.loglikelihood_rolling(_instances("loglikelihood_rolling", text), disable_tqdm=True),
                               hf.loglikelihood_rolling(_instances("loglikelihood_rolling", text), disable_tqdm=True),
                               atol=5e-3)
    gen = [("Question: What is 2 + 2?\nAnswer:", {"until": ["\n"], "max_gen_toks": 10, "do_sample": False})]
    assert ours.generate_until(_instances("generate_until", gen), disable_tqdm=True) == \
        hf.generate_until(_instances("generate_until", gen), disable_tqdm=True)


def test_the_stored_reference_log_probabilities_are_what_pytorch_computes(smollm2_torch):
    """tests/data/smollm2_reference.json (what tests/test_current_jax.py compares londi_jax with on
    the newest JAX, where PyTorch is not installed) holds transformers' own outputs: its greedy
    tokens are checked in test_greedy_generation_matches_transformers, its log-probabilities here."""
    import torch

    model, tok = smollm2_torch
    p_ids = tok(GLAM_PROMPT)["input_ids"]
    for action, want in zip(BABYAI_ACTIONS, _reference()["glam_action_logprobs"], strict=True):
        c_ids = tok(action, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).logits[0].double(), -1).numpy()
        assert sum(logp[len(p_ids) - 1 + j, t] for j, t in enumerate(c_ids)) == pytest.approx(want, abs=1e-6)
