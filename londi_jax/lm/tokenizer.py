"""Build a Hugging Face fast tokenizer from the tokenizer a GGUF file stores in its metadata.

A GGUF file carries no ``tokenizer.json``; llama.cpp writes the vocabulary, merges, token types,
special-token ids, add-BOS flag and chat template as metadata keys. For byte-level BPE vocabularies
(``tokenizer.ggml.model == "gpt2"``: SmolLM2, Llama-3, Qwen2, GPT-2, ...) this module rebuilds the
same tokenizer with the ``tokenizers`` library and wraps it as ``transformers.PreTrainedTokenizerFast``.

The split of text into words before BPE (the "pre-tokenizer") is not stored in the file, only its
name (``tokenizer.ggml.pre``); the regular expressions below follow llama.cpp's meaning of each name.

``train_word_tokenizer`` trains a small word-level BPE for models trained from scratch.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from londi_jax.utils.errors import LondiError

# llama.cpp token types (``tokenizer.ggml.token_type``).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizer regexes, by llama.cpp ``tokenizer.ggml.pre`` name.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# name -> (split each digit off first?, word regex, ignore_merges)
_PRE_TOKENIZERS: dict[str, tuple[bool, str, bool]] = {
    **{n: (False, _GPT2_SPLIT, False) for n in ("default", "gpt-2", "gpt2", "phi-2", "olmo", "jina-es", "jina-de")},
    # StarCoder-family vocabularies (SmolLM, SmolLM2 included) isolate every digit, then split like GPT-2.
    **{n: (True, _GPT2_SPLIT, False) for n in ("smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva-7b")},
    **{n: (False, _LLAMA3_SPLIT, True) for n in ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "smaug-bpe")},
    **{n: (False, _QWEN2_SPLIT, False) for n in ("qwen2", "deepseek-r1-qwen")},
}


class GGUFTokenizerError(LondiError):
    """The GGUF file's tokenizer metadata is missing or of an unsupported kind."""


class TokenizerTrainingError(LondiError):
    """Invalid input to ``train_word_tokenizer``."""


@functools.lru_cache(maxsize=1)
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (the alphabet byte-level vocabularies use)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:  # unprintable bytes are moved past 255 so every byte gets a visible character
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _pre_tokenizer(pre_name: str) -> tuple[pre_tokenizers.PreTokenizer, bool]:
    if pre_name not in _PRE_TOKENIZERS:
        warnings.warn(
            f"GGUF pre-tokenizer {pre_name!r} is not known to londi_jax; splitting words like GPT-2. "
            f"Known: {', '.join(sorted(_PRE_TOKENIZERS))}.",
            stacklevel=3,
        )
        pre_name = "default"
    digits, regex, ignore_merges = _PRE_TOKENIZERS[pre_name]
    steps: list[pre_tokenizers.PreTokenizer] = []
    if digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    steps.append(pre_tokenizers.Split(Regex(regex), behavior="isolated"))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    return pre_tokenizers.Sequence(steps), ignore_merges


def build_tokenizer(metadata: Mapping[str, Any]) -> PreTrainedTokenizerFast:
    """A fast tokenizer from GGUF metadata (``tokenizer.ggml.*`` keys, plain Python values).

    Control tokens (type 3) become special added tokens, user-defined ones (type 4) plain added
    tokens; bos/eos/unk/pad come from their ids; the chat template and add-BOS/EOS flags are kept.
    """
    kind = metadata.get("tokenizer.ggml.model")
    if kind is None or "tokenizer.ggml.tokens" not in metadata:
        raise GGUFTokenizerError("the GGUF file has no tokenizer (no tokenizer.ggml.model / tokenizer.ggml.tokens keys)")
    if kind != "gpt2":
        raise GGUFTokenizerError(
            f"GGUF tokenizer model {kind!r} is not supported; only byte-level BPE ('gpt2': SmolLM2, Llama-3, "
            "Qwen2, GPT-2) is. Load the model from a Hugging Face directory instead."
        )
    tokens: Sequence[str] = metadata["tokenizer.ggml.tokens"]
    types: Sequence[int] = metadata.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens)
    merges_raw: Sequence[str] = metadata.get("tokenizer.ggml.merges") or []
    if len(types) != len(tokens):
        raise GGUFTokenizerError(f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")

    alphabet = _byte_alphabet()
    alphabet_chars = set(alphabet.values())
    vocab: dict[str, int] = {}
    for i, (tok, ty) in enumerate(zip(tokens, types)):
        if ty == TOKEN_NORMAL and not set(tok) <= alphabet_chars:
            # A few converters store plain text; respell it in the byte alphabet so merges match.
            tok = "".join(alphabet[b] for b in tok.encode("utf-8"))
        vocab.setdefault(tok, i)
    merges = []
    for m in merges_raw:
        left, sep, right = m.partition(" ")
        if not sep:
            raise GGUFTokenizerError(f"malformed merge {m!r} in tokenizer.ggml.merges (expected 'left right')")
        merges.append((left, right))

    pre, ignore_merges = _pre_tokenizer(str(metadata.get("tokenizer.ggml.pre", "default")))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False, ignore_merges=ignore_merges))
    backend.pre_tokenizer = pre
    backend.decoder = decoders.ByteLevel()
    # Added tokens are matched whole before BPE; llama.cpp does the same for control/user-defined types.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == TOKEN_CONTROL])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == TOKEN_USER_DEFINED])

    def special(key: str) -> str | None:
        idx = metadata.get(f"tokenizer.ggml.{key}")
        if idx is None:
            return None
        if not 0 <= int(idx) < len(tokens):
            raise GGUFTokenizerError(f"tokenizer.ggml.{key} = {idx} is outside the vocabulary of {len(tokens)} tokens")
        return tokens[int(idx)]

    kwargs: dict[str, Any] = dict(
        tokenizer_object=backend,
        bos_token=special("bos_token_id"),
        eos_token=special("eos_token_id"),
        unk_token=special("unknown_token_id"),
        pad_token=special("padding_token_id"),
        add_bos_token=bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        add_eos_token=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        clean_up_tokenization_spaces=False,
    )
    if metadata.get("tokenizer.chat_template"):
        kwargs["chat_template"] = metadata["tokenizer.chat_template"]
    return PreTrainedTokenizerFast(**{k: v for k, v in kwargs.items() if v is not None})


# ---------------------------------------------------------------------------------------- training
WORD_SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")  # ids 0..3: pad, unk, bos, eos
_METASPACE = "\u2581"  # "▁" marks a word start, as in SentencePiece vocabularies


def train_word_tokenizer(texts: Iterable[str], vocab_size: int = 256, min_frequency: int = 1, *,
                         add_bos: bool = False) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer on ``texts`` whose merges never cross words (for from-scratch models).

    Words are split on spaces by a Metaspace pre-tokenizer (each word starts with "▁"), so e.g. a
    colour and a noun stay separate tokens; ``decode(encode(x)) == x`` for text made of the training
    characters (without a leading space, which encodes like none). Special tokens ``<pad>``, ``<unk>``,
    ``<s>``, ``</s>`` get ids 0-3 and are set as pad/unk/bos/eos; characters not kept in the
    alphabet encode as ``<unk>``. BOS is prepended on encode only when ``add_bos``. The vocabulary
    has at most ``vocab_size`` tokens (the alphabet is capped to fit); training is deterministic.
    """
    if isinstance(texts, str):
        raise TokenizerTrainingError("texts must be an iterable of strings, not one string; wrap it in a list")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TokenizerTrainingError(f"texts must all be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    if not any(t.strip() for t in texts):
        raise TokenizerTrainingError("no training text: give at least one non-empty string")
    n_special = len(WORD_SPECIALS)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < n_special + 2:
        raise TokenizerTrainingError(f"vocab_size must be an integer >= {n_special + 2} (4 special tokens + "
                                     f"an alphabet), got {vocab_size!r}")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise TokenizerTrainingError(f"min_frequency must be an integer >= 1, got {min_frequency!r}")

    backend = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(WORD_SPECIALS), limit_alphabet=vocab_size - n_special,
                                  show_progress=False)
    backend.train_from_iterator(texts, trainer)
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", backend.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", clean_up_tokenization_spaces=False)
