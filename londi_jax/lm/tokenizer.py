"""Build a Hugging Face fast tokenizer from the tokenizer a GGUF file stores in its metadata.

A GGUF file carries no ``tokenizer.json``; llama.cpp writes the vocabulary, merges, token types,
special-token ids, add-BOS flag and chat template as metadata keys. For byte-level BPE vocabularies
(``tokenizer.ggml.model == "gpt2"``: SmolLM2, Llama-3, Qwen2, GPT-2, ...) this module rebuilds the
same tokenizer with the ``tokenizers`` library and wraps it as ``transformers.PreTrainedTokenizerFast``.

The split of text into words before BPE (the "pre-tokenizer") is not stored in the file, only its
name (``tokenizer.ggml.pre``); the regular expressions below follow llama.cpp's meaning of each name.

Which special tokens a GGUF tokenizer adds (BOS/EOS) and which ids end generation are not spelled
out in every file either: :func:`add_special_flags`, :func:`special_token_id` and
:func:`end_of_generation_ids` apply llama.cpp's rules (``src/llama-vocab.cpp``) to the metadata.
:func:`chat_prompt` tokenizes a conversation exactly once, as transformers'
``apply_chat_template(tokenize=True)`` does.

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


class ChatTemplateError(LondiError):
    """A chat prompt cannot be built: the tokenizer has no chat template, or jinja2 is missing."""


# ------------------------------------------------------------------ llama.cpp's special-token rules
# All from llama.cpp ``src/llama-vocab.cpp`` (``llama_vocab::impl::load``), re-stated as data.
# tokenizer.ggml.model -> llama.cpp vocabulary type
_VOCAB_TYPES = {"llama": "spm", "bert": "wpm", "gpt2": "bpe", "hybriddna": "bpe", "whitespace": "bpe",
                "gemma4": "bpe", "t5": "ugm", "rwkv": "rwkv", "plamo2": "plamo2", "no_vocab": "none", "none": "none"}
# special-token ids llama.cpp assumes when the file has no ``tokenizer.ggml.<name>_token_id`` key
_DEFAULT_SPECIAL_IDS: dict[str, dict[str, int]] = {
    "llama": {"bos": 1, "eos": 2, "unknown": 0},
    "bert": {"bos": 101, "unknown": 100, "seperator": 102, "padding": 0},
    "gpt2": {"bos": 11, "eos": 11}, "hybriddna": {"bos": 11, "eos": 11}, "whitespace": {"bos": 11, "eos": 11},
    "t5": {"eos": 1, "unknown": 2, "padding": 0},
    "plamo2": {"bos": 1, "eos": 2, "unknown": 0, "padding": 3},
}
# BPE pre-tokenizers for which llama.cpp prepends BOS by default (the Llama-3 family, tekken, chameleon)
BOS_BY_DEFAULT_PRE = frozenset({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
                                "lfm2", "jina-v5-nano", "tekken", "chameleon"})
# pre-tokenizers for which llama.cpp forces BOS even against the metadata key (its Gemma 4 workaround)
_BOS_FORCED_PRE = frozenset({"gemma4", "granite-embed-multi-311m"})
# token texts llama.cpp treats as ending generation, whatever their declared type
EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~[",
})
# fill-in-the-middle pad / repo / file-separator tokens (also end generation), found by text when no key names them
_FIM_EOG_TEXTS = {
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}


def _vocab_type(metadata: Mapping[str, Any]) -> str:
    model = str(metadata.get("tokenizer.ggml.model", ""))
    if model not in _VOCAB_TYPES:
        raise GGUFTokenizerError(f"unknown GGUF tokenizer model {model!r}; llama.cpp knows "
                                 f"{', '.join(sorted(_VOCAB_TYPES))}")
    return _VOCAB_TYPES[model]


def special_token_id(metadata: Mapping[str, Any], name: str) -> int | None:
    """The id of special token ``name`` ('bos', 'eos', 'eot', 'eom', 'unknown', 'padding', 'fim_pad', ...)
    as llama.cpp resolves it: the ``tokenizer.ggml.<name>_token_id`` key if it lies inside the vocabulary,
    else llama.cpp's default for the tokenizer model (e.g. BOS 1 / EOS 2 for SentencePiece 'llama'),
    else None. Source: llama.cpp ``llama-vocab.cpp``."""
    n = len(metadata.get("tokenizer.ggml.tokens") or ())
    default = _DEFAULT_SPECIAL_IDS.get(str(metadata.get("tokenizer.ggml.model", "")), {}).get(name)
    if name == "bos" and metadata.get("tokenizer.ggml.pre") in ("glm4", "chatglm-bpe"):
        default = None  # GLM-4 vocabularies have no default BOS in llama.cpp
    if default is not None and default >= n:
        default = None  # llama.cpp disables an out-of-vocabulary default
    key = metadata.get(f"tokenizer.ggml.{name}_token_id")
    if key is not None and 0 <= int(key) < n:
        return int(key)
    return default  # a key outside the vocabulary is ignored, like llama.cpp does (with a warning)


def add_special_flags(metadata: Mapping[str, Any]) -> tuple[bool, bool]:
    """``(add_bos, add_eos)``: whether encoding prepends BOS / appends EOS, by llama.cpp's rule.

    Defaults by vocabulary type: SentencePiece ('llama') and WordPiece ('bert') add BOS; T5's
    Unigram adds EOS; byte-level BPE ('gpt2') adds BOS only for the pre-tokenizers in
    :data:`BOS_BY_DEFAULT_PRE` (Llama-3 'llama-bpe' etc.). The ``tokenizer.ggml.add_bos_token`` /
    ``add_eos_token`` keys override the defaults; Gemma 4 pre-tokenizers always add BOS.
    Source: llama.cpp ``llama-vocab.cpp`` (``llama_vocab::impl::load``).
    """
    vtype = _vocab_type(metadata)
    pre = str(metadata.get("tokenizer.ggml.pre") or "default")
    if str(metadata.get("tokenizer.ggml.model")) == "gemma4":
        pre = "gemma4"  # llama.cpp sets this pre-tokenizer for the gemma4 tokenizer model
    add_bos = vtype in ("spm", "wpm") or (vtype == "bpe" and pre in BOS_BY_DEFAULT_PRE)
    add_eos = vtype == "ugm"
    if metadata.get("tokenizer.ggml.add_bos_token") is not None:
        add_bos = bool(metadata["tokenizer.ggml.add_bos_token"])
    if metadata.get("tokenizer.ggml.add_eos_token") is not None:
        add_eos = bool(metadata["tokenizer.ggml.add_eos_token"])
    if vtype == "bpe" and pre in _BOS_FORCED_PRE:
        add_bos = True
    return add_bos, add_eos


def end_of_generation_ids(metadata: Mapping[str, Any]) -> tuple[int, ...]:
    """Sorted ids that end generation, llama.cpp's ``special_eog_ids`` for this GGUF metadata.

    The set holds: the FIM pad / repo / file-separator tokens (by key, else found by text); every
    token whose text is in :data:`EOG_TEXTS` (``<|eot_id|>``, ``<|im_end|>``, ``<|endoftext|>``,
    ``<end_of_turn>``, ...); the EOS, EOT and EOM ids (by key or llama.cpp's defaults; EOT/EOM found
    by text when no key names them). Then llama.cpp's two exceptions: ``<|end|>`` is dropped when the
    vocabulary also has ``<|return|>`` + ``<|call|>`` (or ``<|calls|>`` + ``<|flush|>``), and ``</s>``
    when it has ``<|tool_response>``. Where several tokens match one auto-detected role, the lowest id
    is taken (llama.cpp's pick depends on hash-map order). Source: llama.cpp ``llama-vocab.cpp``.
    """
    tokens: Sequence[str] = metadata.get("tokenizer.ggml.tokens") or ()
    first_id: dict[str, int] = {}
    for i, t in enumerate(tokens):
        first_id.setdefault(t, i)

    def by_key_or_text(name: str, texts: Iterable[str]) -> int | None:
        found = special_token_id(metadata, name)
        return found if found is not None else min((first_id[t] for t in texts if t in first_id), default=None)

    eog = {i for name, texts in _FIM_EOG_TEXTS.items() if (i := by_key_or_text(name, texts)) is not None}
    eog |= {i for i, t in enumerate(tokens) if t in EOG_TEXTS}
    # EOT / EOM found by text are EOG_TEXTS members already; only their keys can add other ids
    eog |= {i for name in ("eos", "eot", "eom") if (i := special_token_id(metadata, name)) is not None}
    texts_in = {tokens[i]: i for i in eog}
    if "<|end|>" in texts_in and (("<|return|>" in texts_in and "<|call|>" in texts_in)
                                  or (("<|call|>" in texts_in or "<|calls|>" in texts_in) and "<|flush|>" in texts_in)):
        eog.discard(texts_in["<|end|>"])
    if "<|tool_response>" in texts_in and "</s>" in texts_in:
        eog.discard(texts_in["</s>"])
    return tuple(sorted(eog))


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

    Byte-level BPE vocabularies (``gpt2``) are rebuilt here; others (SentencePiece ``llama``:
    Gemma 3, ...) come from transformers' GGUF converter (``_transformers_backend``).

    Control tokens (type 3) become special added tokens, user-defined ones (type 4) plain added
    tokens; bos/eos/unk/pad ids and whether encoding adds BOS/EOS follow llama.cpp's rules
    (:func:`special_token_id`, :func:`add_special_flags`: e.g. a Llama-3 'llama-bpe' file without
    ``tokenizer.ggml.add_bos_token`` adds BOS); the chat template is kept.
    Raises ``GGUFTokenizerError`` for missing or unsupported tokenizer metadata.
    """
    kind = metadata.get("tokenizer.ggml.model")
    if kind is None or "tokenizer.ggml.tokens" not in metadata:
        raise GGUFTokenizerError("the GGUF file has no tokenizer (no tokenizer.ggml.model / tokenizer.ggml.tokens keys)")
    if kind != "gpt2":
        return _wrap(_transformers_backend(metadata), metadata)
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
    return _wrap(backend, metadata)


def _transformers_backend(metadata: Mapping[str, Any]) -> Tokenizer:
    """The backend of a non-BPE GGUF vocabulary (SentencePiece 'llama': Gemma, Llama 2, Mistral; T5's
    Unigram) from transformers' own GGUF converter, which knows each family's normalizer,
    pre-tokenizer and decoder (e.g. Gemma's runs of spaces)."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer
    except ImportError as err:
        raise GGUFTokenizerError(f"this transformers has no GGUF tokenizer converter ({err}); install the version "
                                 "pyproject.toml pins") from err
    kind = str(metadata.get("tokenizer.ggml.model"))
    _vocab_type(metadata)  # an unknown tokenizer model is named, with the ones llama.cpp knows
    if kind == "llama" and "tokenizer.ggml.scores" not in metadata:
        raise GGUFTokenizerError("this GGUF's SentencePiece ('llama') vocabulary has no tokenizer.ggml.scores, which "
                                 "its merges are rebuilt from; the file is incomplete (convert it again)")
    arch = str(metadata.get("general.architecture", "llama"))
    tok_dict = {name: metadata[f"tokenizer.{key}"] for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
                if f"tokenizer.{key}" in metadata}
    try:
        backend, _ = convert_gguf_tokenizer(arch, tok_dict)
    except Exception as err:  # noqa: BLE001 - transformers raises plain errors for vocabularies it cannot build
        raise GGUFTokenizerError(f"transformers cannot build the {metadata.get('tokenizer.ggml.model')!r} tokenizer of "
                                 f"this {arch} GGUF ({type(err).__name__}: {err})") from err
    backend.post_processor = None  # BOS / EOS are added by the wrapper, by llama.cpp's rules
    return backend


def _wrap(backend: Tokenizer, metadata: Mapping[str, Any]) -> PreTrainedTokenizerFast:
    """``backend`` as a transformers tokenizer with llama.cpp's special tokens and BOS/EOS rules."""
    tokens: Sequence[str] = metadata["tokenizer.ggml.tokens"]

    def special(name: str) -> str | None:
        idx = special_token_id(metadata, name)
        return None if idx is None else tokens[idx]

    add_bos, add_eos = add_special_flags(metadata)
    for flag, name in ((add_bos, "bos"), (add_eos, "eos")):
        if flag and special(name) is None:  # llama.cpp refuses such files too
            raise GGUFTokenizerError(f"the GGUF tokenizer adds a {name.upper()} token but tokenizer.ggml.{name}_token_id "
                                     f"is not set (or outside the vocabulary); fix the file's metadata")
    kwargs: dict[str, Any] = dict(
        tokenizer_object=backend,
        bos_token=special("bos"),
        eos_token=special("eos"),
        unk_token=special("unknown"),
        pad_token=special("padding"),
        add_bos_token=add_bos,
        add_eos_token=add_eos,
        clean_up_tokenization_spaces=False,
    )
    if metadata.get("tokenizer.chat_template"):
        kwargs["chat_template"] = metadata["tokenizer.chat_template"]
    return PreTrainedTokenizerFast(**{k: v for k, v in kwargs.items() if v is not None})


# ---------------------------------------------------------------------------------------- chat prompts
def chat_prompt(tokenizer: Any, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                model_name: str = "this model") -> tuple[str, list[int]]:
    """A conversation rendered by the tokenizer's chat template: ``(text, token ids)``.

    The ids are exactly transformers' ``apply_chat_template(messages, tokenize=True)``: the rendered
    text encoded once WITHOUT adding special tokens, so a template that writes ``{{ bos_token }}``
    yields one BOS even when the tokenizer adds BOS to plain prompts. The text is for display; never
    encode it again with special tokens. Raises ``ChatTemplateError`` (no chat template; jinja2 not
    installed) naming the fix.
    """
    check_chat_template(tokenizer, model_name)
    if isinstance(messages, Mapping) or isinstance(messages, str):
        raise ChatTemplateError("a conversation is a list of {'role': ..., 'content': ...} messages")
    try:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
        ids = tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=add_generation_prompt,
                                            return_dict=False)
    except ImportError as err:  # transformers renders templates with jinja2
        raise ChatTemplateError(f"chat templates need jinja2 ({err}); install it with `pip install 'jinja2>=3.1'`") from err
    return text, [int(i) for i in ids]


def check_chat_template(tokenizer: Any, model_name: str = "this model") -> None:
    """Raise ``ChatTemplateError`` unless ``tokenizer`` has a chat template (call before slow work)."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(f"model {model_name} has no chat template, so it cannot chat; give a plain prompt "
                                f"(in the CLI: drop --chat) or use an instruction-tuned model that ships a template")


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
