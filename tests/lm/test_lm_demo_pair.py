"""``londi-jax lm demo`` with a QUICK and a DEEPTHINK model side by side (``--quick/--deep``).

Tiny GGUF files with two different tokenizers (a SmolLM2-style one, and a Llama-3-style one whose
BOS is added by llama.cpp's rule) stand in for the real pair; every number the demo prints is
checked against the Python API or computed independently from the token counts. One slow test runs
the real SmolLM2-135M + Qwen2.5-Coder-0.5B pair when the 0.5B is installed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from londi_jax.cli import main
from londi_jax.lm import load_gguf
from londi_jax.lm.demo import (BABYAI_ACTIONS, CHAT_QUESTION, GLAM_PROMPT, default_deep, render_pair_demo,
                               run_pair_demo)


def _cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def tiny_pair(tiny_gguf, llama3_gguf):
    """Two tiny GGUFs with different tokenizers and vocabularies (long enough contexts for GLAM)."""
    quick, _ = tiny_gguf("quick.gguf", context=2048, seed=1)
    deep, info = llama3_gguf("deep.gguf", context=2048, seed=2)
    return quick, deep


def _scoring_flops(cfg, n_nonemb: int, prompt_len: int, cand_lens: list[int]) -> float:
    """Forward FLOPs of one GLAM scoring call, written out from CostReport's formula: the prompt
    (logits at its last position only), then each candidate after the prompt (logits at all but
    its last token); token j of a span attends every earlier token and itself."""
    attn = 4.0 * cfg.num_layers * cfg.num_heads * cfg.head_dim
    head = 2.0 * cfg.vocab_size * cfg.hidden_size
    total = 0.0
    for j in range(prompt_len):
        total += 2.0 * n_nonemb + attn * (j + 1)
    total += head
    for m in cand_lens:
        for j in range(m):
            total += 2.0 * n_nonemb + attn * (prompt_len + j + 1)
        total += head * (m - 1)
    return total


def test_pair_demo_json_matches_the_python_api(capsys, tiny_pair):
    quick_path, deep_path = tiny_pair
    rc, out, _ = _cli(capsys, "lm", "demo", "--quick", str(quick_path), "--deep", str(deep_path),
                      "--max-new-tokens", "4", "--repeats", "2", "--json")
    assert rc == 0
    r = json.loads(out)
    assert r["glam_prompt"] == GLAM_PROMPT and r["chat_question"] == CHAT_QUESTION and r["note"] is None
    assert [m["role"] for m in r["models"]] == ["quick", "deep"]
    lms = [load_gguf(quick_path, progress=False), load_gguf(deep_path, progress=False)]
    assert lms[0].config.vocab_size != lms[1].config.vocab_size  # two vocabularies, each its own tokenizer
    flops = []
    for m, lm in zip(r["models"], lms):
        assert m["model"] == lm.name
        api = lm.score([GLAM_PROMPT], [list(BABYAI_ACTIONS)])
        lps = np.array([a["logprob"] for a in m["actions"]])
        np.testing.assert_allclose(lps, api.logprobs[0], rtol=1e-5, atol=1e-5)
        among = np.array([a["prob_among_candidates"] for a in m["actions"]])
        np.testing.assert_allclose(among, np.exp(lps) / np.exp(lps).sum(), rtol=1e-9)
        np.testing.assert_allclose([a["prob"] for a in m["actions"]], np.exp(lps), rtol=1e-9)
        assert m["best_action"] == BABYAI_ACTIONS[int(np.argmax(lps))]

        # real token counts of THIS model's tokenizer, and the FLOPs they cost
        p_ids = lm.tokenizer(GLAM_PROMPT, add_special_tokens=True)["input_ids"]
        c_lens = [len(lm.tokenizer.encode(a, add_special_tokens=False)) for a in BABYAI_ACTIONS]
        sc = m["scoring"]
        assert sc["prompt_tokens"] == len(p_ids) and sc["candidate_tokens"] == sum(c_lens)
        assert [a["num_tokens"] for a in m["actions"]] == c_lens
        want = _scoring_flops(lm.config, lm.num_nonembedding_params, len(p_ids), c_lens)
        assert sc["flops"] == pytest.approx(want, rel=1e-9)
        flops.append(sc["flops"])
        # compile timed apart: the first call compiled, the warm median of 2 calls, their difference
        assert sc["first_call_compiled"] and sc["warm_calls"] == 2 and sc["warm_seconds"] > 0
        assert sc["compile_seconds"] == pytest.approx(max(sc["first_call_seconds"] - sc["warm_seconds"], 0.0))
        assert m["cost"]["score_seconds"] == sc["warm_seconds"] and not m["cost"]["score_compiled"]
        assert m["cost"]["num_params"] == lm.num_params

        gen = lm.generate_chat([[{"role": "user", "content": CHAT_QUESTION}]], 4)
        assert m["chat_answer"] == gen.texts[0].strip() and m["finish_reason"] == gen.finish_reasons[0]
        assert m["cost"]["chat_prompt_tokens"] == len(lm.chat_prompt([{"role": "user", "content": CHAT_QUESTION}])[1])
    # Llama-3-style: llama.cpp's rule adds BOS, so DEEPTHINK's prompt is one token longer
    assert r["models"][1]["scoring"]["prompt_tokens"] == r["models"][0]["scoring"]["prompt_tokens"] + 1
    assert r["ratios"]["score_flops"] == pytest.approx(flops[1] / flops[0])
    assert r["ratios"]["num_params"] == pytest.approx(lms[1].num_params / lms[0].num_params)
    assert len(r["load_average"]["start"]) == 3

    text = render_pair_demo(r)  # what the command prints without --json
    assert "QUICK: quick" in text and "DEEP: deep" in text and "p(among actions)" in text
    assert "renormalised over these candidates only" in text and "DEEPTHINK / QUICK per scoring call" in text
    assert text.count("<- best") == 2 and "median of 2" in text
    for action in BABYAI_ACTIONS:  # one row per action holds both models' columns
        rows = [line for line in text.splitlines() if line.strip().startswith(action)]
        assert len(rows) == 1 and rows[0].count(".") == 4


def test_default_deep_is_the_largest_installed_model(tmp_path, monkeypatch, tiny_gguf):
    import londi_jax.lm.registry as registry

    monkeypatch.setenv("LONDI_JAX_CACHE", str(tmp_path / "empty-cache"))  # no fetched model installed
    small, _ = tiny_gguf("small.gguf")
    big, _ = tiny_gguf("big.gguf", tie=False)  # an untied LM head: a larger file
    assert big.stat().st_size > small.stat().st_size
    fetchable = {k: registry._REGISTRY[k] for k in registry._installable_names()}  # the fetch-installed ones only
    monkeypatch.setattr(registry, "_REGISTRY", {**fetchable, "q": small})
    name, note = default_deep("q")
    assert name is None  # only QUICK is installed: QUICK alone, with how to install a DEEPTHINK model
    assert "only QUICK runs" in note and "londi-jax lm fetch qwen2.5-coder-1.5b-instruct" in note
    assert note.index("1.5b") < note.index("0.5b")  # the larger first

    monkeypatch.setattr(registry, "_REGISTRY", {**fetchable, "q": small, "a-small": small, "b-big": big})
    name, note = default_deep("q")
    assert name == "b-big" and "londi-jax lm fetch qwen2.5-coder-0.5b-instruct" in note
    assert default_deep("b-big")[0] == "a-small"  # never QUICK itself


def test_pair_demo_quick_alone_when_no_deep_is_installed(tmp_path, monkeypatch, tiny_gguf):
    import londi_jax.lm.registry as registry

    monkeypatch.setenv("LONDI_JAX_CACHE", str(tmp_path / "empty-cache"))
    path, _ = tiny_gguf(context=2048)
    fetchable = {k: registry._REGISTRY[k] for k in registry._installable_names()}  # the fetch-installed ones only
    monkeypatch.setattr(registry, "_REGISTRY", {**fetchable, "q": path})
    r = run_pair_demo("q", max_new_tokens=2, repeats=0, progress=False)
    assert [m["role"] for m in r["models"]] == ["quick"] and r["ratios"] is None
    assert "only QUICK runs" in r["note"] and "lm fetch" in r["note"]
    text = render_pair_demo(r)
    assert "note: no DEEPTHINK model is installed" in text
    assert "incl. compile" in text and "warm" not in text  # no warm call: the one timing includes compile


def test_pair_demo_errors_before_loading(capsys, tmp_path, monkeypatch, tiny_gguf):
    import londi_jax.lm.registry as registry

    path, _ = tiny_gguf(context=2048)
    rc, _, err = _cli(capsys, "lm", "demo", "--model", str(path), "--deep", str(path))
    assert rc == 2 and "either --model NAME or --quick/--deep" in err

    loaded = []
    real = registry.load_lm
    monkeypatch.setattr(registry, "load_lm", lambda *a, **k: loaded.append(a) or real(*a, **k))
    rc, _, err = _cli(capsys, "lm", "demo", "--quick", str(path), "--deep", "no-such-model")
    assert rc == 2 and "unknown model 'no-such-model'" in err and "smollm2-135m-instruct" in err
    monkeypatch.setenv("LONDI_JAX_CACHE", str(tmp_path / "empty-cache"))
    rc, _, err = _cli(capsys, "lm", "demo", "--quick", str(path), "--deep", "qwen2.5-coder-0.5b-instruct")
    assert rc == 2 and "not installed" in err and "londi-jax lm fetch qwen2.5-coder-0.5b-instruct" in err
    assert loaded == []  # QUICK was not loaded (nor run) before the bad DEEPTHINK name was found
    with pytest.raises(SystemExit) as e:  # argparse's own check, when the command line is read
        main(["lm", "demo", "--quick", str(path), "--repeats", "-1"])
    assert e.value.code == 2 and "argument --repeats: expected an int >= 0" in capsys.readouterr().err


@pytest.mark.slow
def test_real_pair_smollm2_and_qwen_05b(capsys, monkeypatch, smollm2_lm):
    """The real pair: SmolLM2-135M-Instruct (QUICK) and Qwen2.5-Coder-0.5B-Instruct (DEEPTHINK)."""
    import londi_jax.lm.registry as registry
    from londi_jax.lm.fetch import installed_path
    from londi_jax.lm.gguf_loader import read_gguf

    deep = "qwen2.5-coder-0.5b-instruct"
    path = installed_path(deep)
    if path is None:
        pytest.skip(f"{deep} is not installed (londi-jax lm fetch {deep})")
    real = registry.load_lm  # QUICK: reuse the session's SmolLM2
    monkeypatch.setattr(registry, "load_lm", lambda name, dtype="float32", progress=True:
                        smollm2_lm if name == "smollm2-135m-instruct" else real(name, dtype, progress))
    rc, out, _ = _cli(capsys, "lm", "demo", "--quick", "smollm2-135m-instruct", "--deep", deep,
                      "--max-new-tokens", "8", "--repeats", "0", "--json")  # load + one call each: enough
    assert rc == 0
    r = json.loads(out)
    q, d = r["models"]
    assert (q["model"], d["model"]) == ("smollm2-135m-instruct", deep)
    api = smollm2_lm.score([GLAM_PROMPT], [list(BABYAI_ACTIONS)])
    np.testing.assert_allclose([a["logprob"] for a in q["actions"]], api.logprobs[0], rtol=1e-6)
    qwen_tok = read_gguf(path).tokenizer()  # Qwen's own tokenizer (GGUF metadata; weights not read)
    assert d["scoring"]["prompt_tokens"] == len(qwen_tok(GLAM_PROMPT, add_special_tokens=True)["input_ids"])
    for m in (q, d):
        lps = np.array([a["logprob"] for a in m["actions"]])
        assert np.all(np.isfinite(lps)) and np.all(lps < 0)
        assert m["best_action"] == BABYAI_ACTIONS[int(np.argmax(lps))]
        assert m["chat_answer"] and m["finish_reason"] in ("eos", "length")
    assert d["cost"]["num_nonembedding_params"] > 3 * q["cost"]["num_nonembedding_params"]
    assert r["ratios"]["score_flops"] == pytest.approx(d["scoring"]["flops"] / q["scoring"]["flops"])
    assert r["ratios"]["score_flops"] > 3


def test_a_base_model_without_chat_template_completes_the_question(capsys, tiny_gguf):
    """A base model (no chat template, like Gemma-3-270M) still runs the demo: the question is asked
    as a plain completion, which is said in the output, and the answer is the model's own greedy text."""
    from londi_jax.lm.demo import PLAIN_TEMPLATE, run_demo

    path, _ = tiny_gguf("base.gguf", context=2048, chat_template=None)
    r = run_demo(str(path), max_new_tokens=3, repeats=0, progress=False)
    assert r["chat_mode"] == "plain"
    want = load_gguf(path, progress=False).generate([PLAIN_TEMPLATE.format(question=CHAT_QUESTION)], 3,
                                                    stop=("\n\n", "Question:"))
    assert r["chat_answer"] == want.texts[0].strip() and r["finish_reason"] == want.finish_reasons[0]
    rc, out, _ = _cli(capsys, "lm", "demo", "--model", str(path), "--max-new-tokens", "3")
    assert rc == 0 and "no chat template: plain completion" in out
    rc, out, _ = _cli(capsys, "lm", "demo", "--quick", str(path), "--deep", str(path), "--max-new-tokens", "3")
    assert rc == 0 and "completes it as a plain prompt" in out
