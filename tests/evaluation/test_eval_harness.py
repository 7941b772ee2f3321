"""The ``londi-jax`` lm-eval model against lm-eval's own ``hf`` model on the same checkpoint.

Same requests to both: lm-eval's ``HFLM`` (PyTorch, transformers) is the reference for every
number, so the adapter's tokenization (trailing spaces, empty contexts, BOS rules), truncation,
rolling windows, greedy flags and stop handling are checked against lm-eval's own rules, not
against our reading of them. Tiny random HF directory here; the real SmolLM2-135M in
tests/lm/test_real_smollm2.py (beside its other parity tests, sharing their loaded models).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lm_core_helpers import CORPUS, save_tiny  # noqa: E402

LL_ATOL = 2e-4  # float32 on both sides; measured max 4e-5 on the tiny model


def _instances(kind, args_list):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args_list)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("eval_tiny"), "llama")[0]


@pytest.fixture(scope="module")
def tiny_pair(tiny_dir):
    """(ours, hf) on one tiny random Llama directory (context window 128 tokens)."""
    from lm_eval.models.huggingface import HFLM

    from londi_jax.evaluation.harness import LondiJaxLM

    return LondiJaxLM(pretrained=str(tiny_dir), batch_size=8), HFLM(pretrained=str(tiny_dir), device="cpu", batch_size=8)


def _ll_requests(hf):
    """Shared contexts, a trailing space, an empty context, a context past max_length (128 tokens),
    and continuations the model would write greedily (so is_greedy is True for some)."""
    ctx = "you see a red ball and a green key. the goal is to"
    long_ctx = " ".join(CORPUS)  # far more than 128 tokens: left-truncated
    reqs = [(ctx, " open the door"), (ctx, " pick up the key"), (ctx, " go forward"),
            (ctx + " ", "turn left"), ("", "go to the purple box"), (long_ctx, " drop the box"),
            ("turn", " right"), ("a wall is two steps", " forward and a door")]
    # greedy continuations from the reference model itself
    for c in ("go to the", "open the blue"):
        ids = hf.tok_encode(c)
        import torch

        out = hf.model.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False,
                                attention_mask=torch.ones((1, len(ids)), dtype=torch.long))
        reqs.append((c, hf.tok_decode(out[0, len(ids):].tolist())))
    return reqs


def test_loglikelihood_equals_lm_eval_hf(tiny_pair):
    ours, hf = tiny_pair
    reqs = _ll_requests(hf)
    a = ours.loglikelihood(_instances("loglikelihood", reqs), disable_tqdm=True)
    b = hf.loglikelihood(_instances("loglikelihood", reqs), disable_tqdm=True)
    np.testing.assert_allclose([x for x, _ in a], [x for x, _ in b], atol=LL_ATOL)
    assert [g for _, g in a] == [g for _, g in b]
    assert any(g for _, g in b[-2:]), "the greedy continuations should be greedy under the reference"


def test_shared_contexts_are_prefilled_once(tiny_pair):
    """Three continuations of one context are one prompt: one prefill, three candidates."""
    ours, _ = tiny_pair
    ctx = "you see a red ball and a green key"
    before = ours.lm.cost()
    ours.loglikelihood(_instances("loglikelihood", [(ctx, " a"), (ctx, " b"), (ctx, " c")]), disable_tqdm=True)
    last = ours.lm.cost().last_call
    assert ours.lm.cost().num_calls == before.num_calls + 1
    assert last.prompt_tokens == len(ours.tok_encode(ctx))  # the context counted once, not three times


def test_loglikelihood_rolling_equals_lm_eval_hf(tiny_pair):
    ours, hf = tiny_pair
    texts = [(" ".join(CORPUS[:3]),), (" ".join(CORPUS),), ("go",)]  # one, several (past 128 tokens) windows
    a = ours.loglikelihood_rolling(_instances("loglikelihood_rolling", texts), disable_tqdm=True)
    b = hf.loglikelihood_rolling(_instances("loglikelihood_rolling", texts), disable_tqdm=True)
    assert len(ours.tok_encode(texts[1][0])) > 2 * ours.max_length  # really several windows
    np.testing.assert_allclose(a, b, atol=5 * LL_ATOL)


def test_generate_until_equals_lm_eval_hf(tiny_pair):
    ours, hf = tiny_pair
    reqs = [("you see a red ball", {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}),
            ("the goal is to open", {"until": ["door", "key"], "max_gen_toks": 12}),
            ("go to the purple", {"until": "box", "max_gen_toks": 5, "temperature": 0.0})]
    a = ours.generate_until(_instances("generate_until", reqs), disable_tqdm=True)
    b = hf.generate_until(_instances("generate_until", reqs), disable_tqdm=True)
    assert a == b
    assert all(isinstance(s, str) for s in a)


def test_bad_model_args_are_refused_clearly(tiny_pair, tmp_path):
    from londi_jax.evaluation.harness import HarnessArgumentError, LondiJaxLM

    ours, _ = tiny_pair
    with pytest.raises(HarnessArgumentError, match=r"unknown --model_args key\(s\) \['temprature'\].*known: pretrained"):
        LondiJaxLM(pretrained=ours.lm, temprature=0.5)
    with pytest.raises(HarnessArgumentError, match="needs pretrained=NAME_OR_PATH"):
        LondiJaxLM()
    with pytest.raises(HarnessArgumentError, match="batch_size='many' is not an integer"):
        LondiJaxLM(pretrained=ours.lm, batch_size="many")
    with pytest.raises(HarnessArgumentError, match="max_length=4096 is over .* context window of 128"):
        LondiJaxLM(pretrained=ours.lm, max_length=4096)
    with pytest.raises(HarnessArgumentError, match="add_bos_token='maybe' is not a boolean"):
        LondiJaxLM(pretrained=ours.lm, add_bos_token="maybe")
    from londi_jax.utils.errors import LondiError

    with pytest.raises(LondiError, match="nothing-here"):
        LondiJaxLM(pretrained=str(tmp_path / "nothing-here"))
    with pytest.raises(HarnessArgumentError, match=r"generation settings \['num_beams'\] are not supported"):
        ours.generate_until(_instances("generate_until", [("go", {"until": ["\n"], "num_beams": 4})]), disable_tqdm=True)
    with pytest.raises(HarnessArgumentError, match="max_gen_toks=200 leaves no room"):
        ours.generate_until(_instances("generate_until", [("go", {"until": ["\n"], "max_gen_toks": 200})]),
                            disable_tqdm=True)


def test_shipped_tasks_through_simple_evaluate_offline_equal_hf(tiny_pair, real_sets, no_network):
    """The shipped tasks end to end (lm-eval builds the requests from the real sets, sockets
    blocked): every request's result from our model equals the hf model's."""
    import lm_eval

    from londi_jax.evaluation.run import task_manager

    ours, hf = tiny_pair
    tasks = ["tinymmlu", "arc_challenge", "hellaswag", "winogrande"]
    runs = [lm_eval.simple_evaluate(model=m, tasks=tasks, task_manager=task_manager(), limit=3, log_samples=True,
                                    bootstrap_iters=0, verbosity="ERROR") for m in (ours, hf)]
    for task in tasks:
        a, b = ([r for s in run["samples"][task] for r in s["resps"]] for run in runs)
        assert len(a) == len(b) >= 6, task
        np.testing.assert_allclose([x[0][0] for x in a], [x[0][0] for x in b], atol=LL_ATOL, err_msg=task)
        assert [x[0][1] for x in a] == [x[0][1] for x in b], task
        assert runs[0]["results"][task]["acc,none"] == runs[1]["results"][task]["acc,none"]


def test_add_bos_token_follows_hf(tiny_pair, tiny_dir):
    """``add_bos_token=true`` on a tokenizer that adds no BOS itself prepends one, as lm-eval's hf
    model does when it loads the tokenizer with that flag (equal tokens and scores)."""
    from lm_eval.models.huggingface import HFLM

    from londi_jax.evaluation.harness import HarnessArgumentError, LondiJaxLM

    ours, _ = tiny_pair
    assert ours.tok_encode("go forward")[:1] != [ours.tokenizer.bos_token_id]  # this tokenizer adds none
    ours_bos = LondiJaxLM(pretrained=ours.lm, add_bos_token=True)
    hf_bos = HFLM(pretrained=str(tiny_dir), device="cpu", batch_size=8, add_bos_token=True)
    assert ours_bos.tok_encode("go forward") == hf_bos.tok_encode("go forward")
    assert ours_bos.tok_encode("go forward")[0] == ours.tokenizer.bos_token_id
    reqs = [("go to the", " purple box"), ("", "open the door")]
    a = ours_bos.loglikelihood(_instances("loglikelihood", reqs), disable_tqdm=True)
    b = hf_bos.loglikelihood(_instances("loglikelihood", reqs), disable_tqdm=True)
    np.testing.assert_allclose([x for x, _ in a], [x for x, _ in b], atol=LL_ATOL)
    with pytest.raises(HarnessArgumentError, match="prefix_token_id=99999 is not a token id"):
        LondiJaxLM(pretrained=ours.lm, prefix_token_id=99999)


def test_model_args_batch_size_wins_over_lm_evals(tiny_dir):
    """lm_eval always passes its own --batch_size: --model_args' value wins instead of clashing."""
    from londi_jax.evaluation.harness import LondiJaxLM

    lm = LondiJaxLM.create_from_arg_string(f"pretrained={tiny_dir},batch_size=4", {"batch_size": 1, "device": None})
    assert lm.batch_size == 4
    lm = LondiJaxLM.create_from_arg_string(f"pretrained={tiny_dir}", {"batch_size": 2})
    assert lm.batch_size == 2
