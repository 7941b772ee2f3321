"""train_word_tokenizer: round trip, specials, word-level merges, determinism, vocab size, unseen text."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from londi_jax.lm.tokenizer import TokenizerTrainingError, train_word_tokenizer

COLOURS = ["red", "green", "blue", "purple", "yellow", "grey"]
NOUNS = ["ball", "key", "box", "door"]
TEXTS = [f"go to the {c} {n}" for c in COLOURS for n in NOUNS] + [
    f"pick up the {c} {n}" for c in COLOURS for n in NOUNS] + ["turn left", "turn right", "go forward",
                                                                "open the door", "toggle"]


@pytest.fixture(scope="module")
def tok():
    return train_word_tokenizer(TEXTS, vocab_size=120)


def test_round_trip_and_word_level_merges(tok):
    for text in TEXTS + ["the red key next to the blue box", "go  forward"]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        pieces = tok.convert_ids_to_tokens(ids)
        # every token lies inside one word: a word-start marker can only open a token
        assert all("\u2581" not in p[1:] for p in pieces), pieces
    # frequent words become single tokens, and a colour never merges with its noun
    assert tok.tokenize("the red ball") == ["\u2581the", "\u2581red", "\u2581ball"]
    assert " " not in "".join(tok.get_vocab())


def test_specials_and_no_automatic_bos(tok):
    assert (tok.pad_token, tok.unk_token, tok.bos_token, tok.eos_token) == ("<pad>", "<unk>", "<s>", "</s>")
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    ids = tok.encode("go forward")
    assert ids == tok.encode("go forward", add_special_tokens=False) and 2 not in ids
    with_bos = train_word_tokenizer(TEXTS, vocab_size=120, add_bos=True)
    assert with_bos.encode("go forward") == [2] + ids
    assert with_bos.decode(with_bos.encode("go forward"), skip_special_tokens=True) == "go forward"
    assert tok.decode(ids + [3], skip_special_tokens=True) == "go forward"


def test_save_pretrained_round_trip(tmp_path, tok):
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert back.get_vocab() == tok.get_vocab()
    assert (back.pad_token_id, back.unk_token_id, back.bos_token_id, back.eos_token_id) == (0, 1, 2, 3)
    for text in ["pick up the grey door", "turn right", "toggle the zebra"]:
        assert back.encode(text) == tok.encode(text)
        assert back.decode(back.encode(text)) == tok.decode(tok.encode(text))


def test_deterministic_and_vocab_size_respected():
    a, b = train_word_tokenizer(TEXTS, vocab_size=90), train_word_tokenizer(list(TEXTS), vocab_size=90)
    assert a.get_vocab() == b.get_vocab() and len(a) == 90
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    small = train_word_tokenizer(TEXTS, vocab_size=12)  # fewer slots than distinct characters
    assert len(small) == 12
    assert small.unk_token_id in small.encode("purple")  # dropped characters become <unk>
    rare = train_word_tokenizer(TEXTS, vocab_size=400, min_frequency=30)
    assert len(rare) < 400 and "\u2581the" in rare.get_vocab() and "\u2581purple" not in rare.get_vocab()


def test_unseen_words_and_characters(tok):
    # an unseen word made of known characters is spelled with smaller pieces and round-trips
    assert "\u2581gory" not in tok.get_vocab()
    ids = tok.encode("the gory door")
    assert tok.unk_token_id not in ids and tok.decode(ids) == "the gory door"
    # an unseen character maps to <unk>, never to a wrong character
    ids = tok.encode("red zebra")
    assert tok.unk_token_id in ids
    assert tok.decode(ids, skip_special_tokens=True) == "red ebra"


def test_bad_input():
    with pytest.raises(TokenizerTrainingError, match="not one string"):
        train_word_tokenizer("go forward")
    with pytest.raises(TokenizerTrainingError, match="no training text"):
        train_word_tokenizer(["", "  "])
    with pytest.raises(TokenizerTrainingError, match="item 1 is int"):
        train_word_tokenizer(["go", 3])
    with pytest.raises(TokenizerTrainingError, match="vocab_size must be an integer >= 6"):
        train_word_tokenizer(TEXTS, vocab_size=5)
    with pytest.raises(TokenizerTrainingError, match="min_frequency must be an integer >= 1"):
        train_word_tokenizer(TEXTS, min_frequency=0)


def test_from_scratch_model_directory_loads(tmp_path, tok):
    """A trained tokenizer + a fresh model saved with save_hf_directory load as one LanguageModel."""
    from londi_jax.lm.config import ModelConfig
    from londi_jax.lm.hf_loader import init_model, load_hf_directory
    from londi_jax.lm.hf_writer import save_hf_directory

    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=16, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=8, intermediate_size=32, bos_token_id=2, eos_token_id=3,
                      pad_token_id=0, max_position_embeddings=64)
    save_hf_directory(init_model(cfg), tmp_path / "m", tok)
    lm = load_hf_directory(tmp_path / "m", progress=False)
    assert lm.tokenizer.get_vocab() == tok.get_vocab()
    res = lm.score(["go to the red"], [[" ball", " key", " zebra"]])
    assert res.num_tokens[0].tolist() == [1, 1, len(tok.encode(" zebra"))]
