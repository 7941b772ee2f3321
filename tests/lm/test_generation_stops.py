"""Where generation ends: every end-of-generation id the checkpoint declares (GGUF: llama.cpp's set;
Hugging Face directory: what transformers' ``generate()`` stops on), stop strings that are special
tokens or span tokens, and cost counted over the tokens really generated.

The GGUF models are "scripted" tiny models (``write_tiny_gguf(script=...)``): greedy decoding emits a
known token sequence, so each test knows exactly where a row must end.
"""

from __future__ import annotations

import json

import pytest
from lm_core_helpers import load_tiny, save_tiny

from londi_jax.lm import load_gguf



def _ids(info, *texts):
    return [info["tokens"].index(t) for t in texts]


@pytest.mark.parametrize("eot_key", [False, True])
def test_gguf_end_of_turn_token_ends_the_row(llama3_gguf, eot_key):
    """EOS is <|end_of_text|> (id 1) but the model ends its turn with <|eot_id|> (id 2)."""
    _, info = llama3_gguf("probe.gguf", tie=False)
    the, and_, a = _ids(info, "Ġthe", "Ġand", "Ġa")
    path, _ = llama3_gguf(tie=False, script=[the, and_, 2, a],
                          metadata={"tokenizer.ggml.eot_token_id": 2} if eot_key else None)
    lm = load_gguf(path, progress=False)
    assert lm.eog_token_ids == (1, 2)
    res = lm.generate(["hi"], 8)
    assert res.token_ids == [[the, and_, 2]] and res.finish_reasons == ["eos"] and res.texts == [" the and"]
    # cost: exactly the three generated tokens (same FLOPs as a 3-token call that is not stopped)
    stopped = lm.cost().last_call
    assert stopped.generated_tokens == 3
    ids, reasons = lm.generate_tokens([lm.tokenizer.encode("hi")], 3)
    assert ids == [[the, and_, 2]] and lm.cost().last_call.flops == pytest.approx(stopped.flops)


def test_saved_model_keeps_its_end_of_generation_ids(llama3_gguf, tmp_path):
    """A GGUF saved as a Hugging Face directory (what BC/LoRA stages write) still stops on <|eot_id|>:
    in our loader and in transformers' generate(), which reads generation_config.json."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from londi_jax.lm.hf_loader import load_hf_directory
    from londi_jax.lm.hf_writer import save_language_model

    _, info = llama3_gguf("probe.gguf", tie=False)
    the, and_, a = _ids(info, "Ġthe", "Ġand", "Ġa")
    path, _ = llama3_gguf(tie=False, script=[the, and_, 2, a])
    saved = save_language_model(load_gguf(path, progress=False), tmp_path / "saved")
    assert GenerationConfig.from_pretrained(str(saved)).eos_token_id == [1, 2]
    lm = load_hf_directory(saved, progress=False)
    assert lm.eog_token_ids == (1, 2)
    res = lm.generate(["hi"], 8)
    assert res.token_ids == [[the, and_, 2]] and res.finish_reasons == ["eos"]
    ref = AutoModelForCausalLM.from_pretrained(str(saved), dtype=torch.float32).eval()
    prompt = torch.tensor([lm.tokenizer.encode("hi")])
    with torch.no_grad():
        out = ref.generate(prompt, max_new_tokens=8, do_sample=False)
    assert out[0, prompt.shape[1]:].tolist() == [the, and_, 2]


def test_stop_strings_that_are_or_span_special_tokens(tiny_gguf):
    _, info = tiny_gguf("probe.gguf", tie=False)
    the, and_, a = _ids(info, "Ġthe", "Ġand", "Ġa")
    start = info["tokens"].index("<|im_start|>")  # a control token that does not end generation
    path, _ = tiny_gguf(tie=False, script=[the, and_, start, a])
    lm = load_gguf(path, progress=False)
    assert start not in lm.eog_token_ids
    assert lm.generate(["hi"], 8).token_ids == [[the, and_, start, a, the, and_, start, a]]

    res = lm.generate(["hi"], 8, stop=["<|im_start|>"])  # ends on device at the special token
    assert (res.texts, res.token_ids, res.finish_reasons) == ([" the and"], [[the, and_, start]], ["stop"])
    assert lm.cost().last_call.generated_tokens == 3

    res = lm.generate(["hi"], 8, stop=["and<|im_start|>"])  # spans a word and the special token
    assert (res.texts, res.token_ids, res.finish_reasons) == ([" the "], [[the, and_, start]], ["stop"])
    res = lm.generate(["hi"], 8, stop=["<|im_start|> a"])  # spans the special token and a word
    assert (res.texts, res.token_ids, res.finish_reasons) == ([" the and"], [[the, and_, start, a]], ["stop"])

    # rows end independently; a prompt ending in <|im_start|> continues the script from " a"
    res = lm.generate(["hi", "x<|im_start|>", "y"], 8, stop=["<|im_start|>"])
    assert res.texts == [" the and", " a the and", " the and"] and res.finish_reasons == ["stop"] * 3
    assert res.token_ids[1] == [a, the, and_, start]


def test_hf_generation_config_eos_ids_stop_like_transformers(tmp_path):
    """generation_config.json may list several EOS ids (Llama 3 lists <|eot_id|> there): transformers'
    generate() stops on each, and so must we."""
    import torch
    from transformers import AutoModelForCausalLM

    from londi_jax.lm.hf_loader import load_hf_directory

    prompts = [[1, 17, 18, 19, 20], [1, 60, 61], [1, 70, 71, 72, 73, 74]]
    free, _ = load_tiny("llama")[0].generate_tokens(prompts, 12)  # the same weights as save_tiny's, EOS 2 only
    path, _ = save_tiny(tmp_path, "llama")
    row = max(free, key=len)
    extra = next(t for t in row[2:] if t != 2)  # a token some row generates mid-way
    gc_file = path / "generation_config.json"
    gc = json.loads(gc_file.read_text()) if gc_file.exists() else {}
    gc["eos_token_id"] = [2, extra]
    gc_file.write_text(json.dumps(gc))

    lm = load_hf_directory(path, progress=False)
    assert extra in lm.eog_token_ids
    ours, reasons = lm.generate_tokens(prompts, 12)
    ref = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    for ids, got, why in zip(prompts, ours, reasons):
        with torch.no_grad():
            out = ref.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=12, do_sample=False)
        assert got == out[0, len(ids):].tolist()
        assert why == ("eos" if got[-1] in (2, extra) else "length")
    assert any(r[-1] == extra for r in ours)
