"""llama.cpp's special-token rules on GGUF metadata: when BOS/EOS are added, which ids end generation,
and chat prompts tokenized exactly once (as transformers' ``apply_chat_template(tokenize=True)``).

Expected values are read off llama.cpp's ``src/llama-vocab.cpp`` (``llama_vocab::impl::load``) case by
case, not computed with the code under test.
"""

from __future__ import annotations

import json

import pytest
from gguf_files import LLAMA3_SPECIALS, LLAMA3_TEMPLATE

from londi_jax.cli import main
from londi_jax.lm import load_gguf
from londi_jax.lm.gguf_loader import read_gguf
from londi_jax.lm.tokenizer import ChatTemplateError, add_special_flags, end_of_generation_ids


# ------------------------------------------------------------------------------------------- BOS / EOS
def _meta(model="gpt2", pre=None, **keys):
    m = {"tokenizer.ggml.model": model, "tokenizer.ggml.tokens": [f"t{i}" for i in range(200)]}
    if pre is not None:
        m["tokenizer.ggml.pre"] = pre
    m.update({f"tokenizer.ggml.{k}": v for k, v in keys.items()})
    return m


@pytest.mark.parametrize("model,pre,keys,want", [
    # byte-level BPE: BOS only for the Llama-3 family, tekken and chameleon pre-tokenizers
    ("gpt2", "llama-bpe", {}, (True, False)),
    ("gpt2", "llama3", {}, (True, False)),
    ("gpt2", "falcon3", {}, (True, False)),
    ("gpt2", "pixtral", {}, (True, False)),
    ("gpt2", "tekken", {}, (True, False)),
    ("gpt2", "chameleon", {}, (True, False)),
    ("gpt2", "smollm", {}, (False, False)),
    ("gpt2", "qwen2", {}, (False, False)),
    ("gpt2", "gpt-2", {}, (False, False)),
    ("gpt2", None, {}, (False, False)),
    # the metadata keys override the defaults
    ("gpt2", "llama-bpe", {"add_bos_token": False}, (False, False)),
    ("gpt2", "qwen2", {"add_bos_token": True, "add_eos_token": True}, (True, True)),
    # Gemma 4: BOS forced even against the key
    ("gpt2", "gemma4", {"add_bos_token": False}, (True, False)),
    ("gemma4", None, {"add_bos_token": False}, (True, False)),
    # other vocabulary types
    ("llama", None, {}, (True, False)),
    ("llama", None, {"add_bos_token": False}, (False, False)),
    ("bert", None, {}, (True, False)),
    ("t5", None, {}, (False, True)),
    ("t5", None, {"add_eos_token": False}, (False, False)),
    ("rwkv", None, {}, (False, False)),
])
def test_add_bos_eos_follow_llama_cpp(model, pre, keys, want):
    assert add_special_flags(_meta(model, pre, **keys)) == want


def test_llama3_gguf_adds_bos_without_the_key(tiny_gguf, llama3_gguf):
    path, _ = llama3_gguf()  # no tokenizer.ggml.add_bos_token key
    tok = read_gguf(path).tokenizer()
    plain = tok.encode("the cat", add_special_tokens=False)
    assert tok.encode("the cat") == [0] + plain and plain[0] != 0
    path, _ = llama3_gguf("no_bos.gguf", add_bos=False)
    assert read_gguf(path).tokenizer().encode("the cat") == plain
    path, _ = tiny_gguf("smol.gguf", add_bos=None)  # 'smollm' pre-tokenizer: no BOS by default
    tok = read_gguf(path).tokenizer()
    assert tok.encode("the cat") == tok.encode("the cat", add_special_tokens=False)


# ------------------------------------------------------------------------------- end of generation
def _vocab(*specials, n=40):
    return list(specials) + [f"w{i}" for i in range(n - len(specials))]


@pytest.mark.parametrize("tokens,keys,want", [
    # Llama 3: EOS <|end_of_text|> and, by its text, <|eot_id|> (with or without the eot key)
    (_vocab(*LLAMA3_SPECIALS), {"bos_token_id": 0, "eos_token_id": 1}, {1, 2}),
    (_vocab(*LLAMA3_SPECIALS), {"bos_token_id": 0, "eos_token_id": 1, "eot_token_id": 2}, {1, 2}),
    # Llama 3.1: <|eom_id|> too
    (_vocab("<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"), {"eos_token_id": 3}, {1, 2, 3}),
    # SmolLM2 / StarCoder vocabulary: <|endoftext|>, <|im_end|> and the FIM repo token <reponame>
    (_vocab("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>"),
     {"eos_token_id": 2}, {0, 2, 4}),
    # Qwen2.5: <|endoftext|>, <|im_end|>, and the FIM pad / repo / file-separator tokens
    (_vocab("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_pad|>", "<|repo_name|>",
            "<|file_sep|>"), {"eos_token_id": 2}, {0, 2, 4, 5, 6}),
    # Gemma: <end_of_turn>, <eos>
    (_vocab("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"), {"eos_token_id": 1}, {1, 4}),
    # keys name ids whatever their text; a FIM key replaces detection by text
    (_vocab("<s>", "<my_end>", "<|fim_pad|>", "w_pad"), {"eos_token_id": 1, "fim_pad_token_id": 3}, {1, 3}),
    (_vocab("<s>", "</x>", "<custom_turn_end>"), {"eos_token_id": 1, "eot_token_id": 2}, {1, 2}),
    # a key outside the vocabulary is ignored; byte-level BPE's default EOS is id 11
    (_vocab("<s>", "</x>"), {"eos_token_id": 999}, {11}),
    # gpt-oss (harmony): <|end|> is dropped when <|return|> and <|call|> exist
    (_vocab("<|start|>", "<|end|>", "<|return|>", "<|call|>"), {"eos_token_id": 2}, {2, 3}),
    # Gemma 4: </s> is dropped when <|tool_response> exists
    (_vocab("</s>", "<|tool_response>", "<turn|>"), {"eos_token_id": 2}, {1, 2}),
])
def test_end_of_generation_ids_follow_llama_cpp(tokens, keys, want):
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens}
    meta.update({f"tokenizer.ggml.{k}": v for k, v in keys.items()})
    assert end_of_generation_ids(meta) == tuple(sorted(want))


@pytest.mark.slow
def test_real_smollm2_end_of_generation_ids(smollm2_lm, smollm2_gguf):
    tokens = read_gguf(smollm2_gguf).metadata["tokenizer.ggml.tokens"]
    want = tuple(sorted(tokens.index(t) for t in ("<|endoftext|>", "<|im_end|>", "<reponame>")))
    assert smollm2_lm.eog_token_ids == want == (0, 2, 4)


# ------------------------------------------------------------------------------------- chat prompts
def _reference_chat_ids(path, msgs):
    """transformers' own tokenizer built from the GGUF, its apply_chat_template(tokenize=True)."""
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ref.chat_template = LLAMA3_TEMPLATE
    return ref.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=False)


def test_chat_prompt_has_one_bos_like_transformers(llama3_gguf):
    path, _ = llama3_gguf(add_bos=True)
    lm = load_gguf(path, progress=False)
    msgs = [{"role": "user", "content": "hi the cat"}]
    text, ids = lm.chat_prompt(msgs)
    assert text.startswith("<|begin_of_text|><|start_header_id|>user")
    assert ids == _reference_chat_ids(path, msgs)
    assert ids[0] == 0 and ids.count(0) == 1
    res = lm.generate_chat([msgs], 3)
    assert lm.cost().last_call.prompt_tokens == len(ids) and len(res.token_ids[0]) <= 3


def test_cli_chat_and_demo_tokenize_once(capsys, llama3_gguf):
    path, _ = llama3_gguf(add_bos=True, context=2048)
    ids = _reference_chat_ids(path, [{"role": "user", "content": "hi"}])
    assert main(["lm", "generate", "--model", str(path), "--prompt", "hi", "--chat", "--max-new-tokens", "3",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["cost"]["prompt_tokens"] == len(ids) and r["prompt"].count("<|begin_of_text|>") == 1

    from londi_jax.lm.demo import CHAT_QUESTION

    ids = _reference_chat_ids(path, [{"role": "user", "content": CHAT_QUESTION}])
    assert main(["lm", "demo", "--model", str(path), "--max-new-tokens", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cost"]["chat_prompt_tokens"] == len(ids)


def test_no_chat_template_is_a_clear_error(capsys, tiny_gguf):
    path, _ = tiny_gguf(chat_template=None)
    for argv in (["lm", "generate", "--chat", "--prompt", "hi"],):  # (lm demo completes a plain prompt instead)
        assert main([*argv, "--model", str(path)]) == 2
        err = capsys.readouterr().err.split("\r")[-1]  # after the loading progress bar
        assert err.count("\n") == 1 and "has no chat template" in err and err.startswith("londi-jax: error:")
    with pytest.raises(ChatTemplateError, match="no chat template"):
        load_gguf(path, progress=False).generate_chat([[{"role": "user", "content": "hi"}]], 2)


def test_missing_jinja2_is_a_clear_error(capsys, tiny_gguf, monkeypatch):
    import transformers.utils.chat_template_utils as ctu

    monkeypatch.setattr(ctu, "is_jinja_available", lambda: False)
    ctu._compile_jinja_template.cache_clear()
    path, _ = tiny_gguf()
    try:
        assert main(["lm", "generate", "--chat", "--prompt", "hi", "--model", str(path)]) == 2
    finally:
        ctu._compile_jinja_template.cache_clear()
    err = capsys.readouterr().err.split("\r")[-1]
    assert err.count("\n") == 1 and "jinja2" in err and "pip install" in err and err.startswith("londi-jax: error:")


def test_jinja2_is_a_runtime_dependency():
    """Chat templates (lm generate --chat, lm demo) need jinja2 at run time, not only in the test extra."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in project["dependencies"]]
    assert "jinja2" in names
