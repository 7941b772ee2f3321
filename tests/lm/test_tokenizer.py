"""The tokenizer rebuilt from GGUF metadata equals the one transformers builds from the same file."""

from __future__ import annotations

import pytest

from londi_jax.lm.gguf_loader import read_gguf
from londi_jax.lm.tokenizer import GGUFTokenizerError, build_tokenizer

TEXTS = [
    "",
    "Hello world",
    "  two leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\n\r\nwindows",
    "unicode: é ünïcödé 日本語 🤖 ß Ωmega",
    "numbers 12345 and 3.14159, dates 2024-05-01",
    "it's they're we've I'm you'll he'd",
    "<|im_start|>user\nhi<|im_end|>\n",
    "special glued<|endoftext|>text<|im_end|>",
    "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle \n"
    "Goal of the agent: go to the red ball \nObservation 0: You see a wall 2 steps forward, ",
    "code: def f(x):\n    return x ** 2  # square\n",
    "punctuation!!! ??? ... ---- ((()))",
]


def _ids(tok, text):
    return tok(text, add_special_tokens=True)["input_ids"]


@pytest.mark.parametrize("add_bos", [False, True])
def test_tiny_tokenizer_equals_transformers(tiny_gguf, add_bos):
    from transformers import AutoTokenizer

    path, info = tiny_gguf(add_bos=add_bos, pre="gpt-2")
    ours = read_gguf(path).tokenizer()
    ref = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in TEXTS + ["the and then  the", " the an and"]:
        assert _ids(ours, text) == _ids(ref, text), text
        assert ours.decode(_ids(ours, text), skip_special_tokens=False).removeprefix("<|im_start|>" if add_bos else "") == text
    if add_bos:
        assert _ids(ours, "the")[0] == 1
    assert ours.tokenize(" the and") == ["Ġthe", "Ġand"]  # merges applied in order
    msgs = [{"role": "user", "content": "hi there"}]
    assert ours.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == \
        "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n"
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (1, 2, 0)


def test_unsupported_tokenizer_kind():
    with pytest.raises(GGUFTokenizerError, match="SentencePiece.*tokenizer.ggml.scores"):
        build_tokenizer({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(GGUFTokenizerError, match="unknown GGUF tokenizer model 'wordpiece-9'"):
        build_tokenizer({"tokenizer.ggml.model": "wordpiece-9", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(GGUFTokenizerError, match="no tokenizer"):
        build_tokenizer({})


@pytest.fixture(scope="module")
def real_tokenizers(smollm2_gguf, smollm2_hf_tokenizer):
    return read_gguf(smollm2_gguf).tokenizer(), smollm2_hf_tokenizer


@pytest.mark.slow
def test_real_tokenizer_equals_transformers(real_tokenizers):
    ours, ref = real_tokenizers
    for text in TEXTS:
        assert _ids(ours, text) == _ids(ref, text), text
        assert ours.decode(_ids(ours, text)) == ref.decode(_ids(ref, text)) == text
    assert len(ours) == len(ref) == 49152
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (1, 2, 2)
    assert sorted(ours.all_special_tokens) == sorted(ref.all_special_tokens)


@pytest.mark.slow
def test_real_chat_template_equals_transformers(real_tokenizers):
    ours, ref = real_tokenizers
    convs = [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
         {"role": "assistant", "content": "Red."}, {"role": "user", "content": "Another  one, ünïcode 日本"}],
    ]
    for msgs in convs:
        for gen in (False, True):
            text = ours.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert text == ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert _ids(ours, text) == _ids(ref, text)
    text = ours.apply_chat_template(convs[0], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_real_tokenizer_isolates_digits_like_smollm2(real_tokenizers):
    """SmolLM2's own tokenizer (and llama.cpp's 'smollm' pre-tokenizer) split off every digit before
    the GPT-2 regex; transformers' GGUF converter omits that step, which changes whitespace runs
    before a digit. Check against that pipeline built independently from the same vocabulary."""
    from tokenizers import Tokenizer, pre_tokenizers

    ours, ref = real_tokenizers
    original = Tokenizer.from_str(ours.backend_tokenizer.to_str())
    original.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    for text in TEXTS + ["a  1", "x\n\n  42 items", "go   3 steps"]:
        assert _ids(ours, text) == original.encode(text).ids, text
    assert ours.tokenize("a  1") == ["a", "ĠĠ", "1"]
    assert ref.tokenize("a  1") == ["a", "Ġ", "Ġ", "1"]  # the transformers divergence, documented
