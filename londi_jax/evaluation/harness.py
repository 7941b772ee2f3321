"""Any londi_jax model (registered name, HF directory, GGUF file, a saved FSLM stack file, or an
``LM`` object such as a ``Stack``) as an lm-evaluation-harness model, registered as ``londi-jax``.

    lm_eval --model londi-jax --model_args pretrained=smollm2-135m-instruct,dtype=float32 \\
        --tasks tinymmlu --include_path $(londi-jax eval tasks-dir)
    lm_eval.simple_evaluate(model="londi-jax", model_args="pretrained=PATH", tasks=[...], task_manager=...)

The three request kinds follow lm-eval's own ``hf`` model (``lm_eval.models.huggingface.HFLM``,
0.4.13) step for step, so the numbers are the same on the same checkpoint (tested on a tiny random
HF directory and on SmolLM2-135M):

- ``loglikelihood``: lm-eval's ``TemplateLM`` encodes each (context, continuation) pair (trailing
  spaces of the context move to the continuation; an empty context becomes the prefix token).
  Requests that share a context are scored as one prompt with several candidates, so the prompt is
  prefilled once (the engine's shared prompt cache; a 4-way multiple-choice item costs one
  prefill). Context + continuation longer than ``max_length + 1`` tokens keep their last
  ``max_length + 1`` (HF's left truncation). ``is_greedy``: every continuation token is the argmax.
- ``loglikelihood_rolling``: lm-eval's ``get_rolling_token_windows`` / ``make_disjoint_window``
  with ``max_length`` and one token of context; the windows' log-likelihoods are summed.
- ``generate_until``: lm-eval's ``normalize_gen_kwargs`` / ``handle_stop_sequences`` (the EOS
  text is a stop string too), the context left-truncated to ``max_length - max_gen_toks`` tokens,
  greedy unless ``do_sample``; the new tokens are decoded without special tokens and cut at the
  first stop string (``postprocess_generated_text``). Sampling draws from JAX's generator, so
  sampled text differs from PyTorch's; greedy text is the same.

Tokenization is HF's: ``add_bos_token`` (None: the tokenizer's own default) and a context that
already starts with the BOS text is not given a second one. The model's measured cost (seconds,
FLOPs, calls) accumulates in ``self.lm.cost()``.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs, postprocess_generated_text
from tqdm.auto import tqdm

from londi_jax.lm.interface import LM, ContextLengthError, LMInputError
from londi_jax.utils.errors import LondiError

log = logging.getLogger(__name__)

MODEL_NAME = "londi-jax"
DEFAULT_BATCH = 32  # prompts per engine call (the engine pads each call to a few shape buckets)
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's own default
# sampling settings generate_until understands; others are refused with this list
GEN_KEYS = ("do_sample", "temperature", "top_k", "top_p", "seed")


class HarnessArgumentError(LondiError, ValueError):
    """A ``--model_args`` value the londi-jax model does not accept."""


def _as_bool(name: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise HarnessArgumentError(f"{name}={value!r} is not a boolean; use true or false")


def _as_int(name: str, value: Any, minimum: int = 1) -> int | None:
    if value is None:
        return None
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise HarnessArgumentError(f"{name}={value!r} is not an integer") from None
    if out < minimum:
        raise HarnessArgumentError(f"{name}={out} must be >= {minimum}")
    return out


@register_model(MODEL_NAME)
class LondiJaxLM(TemplateLM):
    """lm-eval's view of one londi_jax model.

    Arguments (``--model_args`` keys): ``pretrained`` (a registered name, an HF directory, a .gguf
    file, a stack file (``londi_jax.fslm.save_stack_spec``), or an ``LM`` object from Python),
    ``dtype`` (float32 / bfloat16), ``batch_size`` (prompts per engine call; ``auto`` = 32; else
    lm_eval's ``--batch_size``, default 1), ``max_length`` (tokens; default the model's context
    window), ``max_gen_toks`` (default 256), ``add_bos_token`` (default: the tokenizer's own; true
    prepends BOS where the tokenizer would not, as HF's flag does), ``prefix_token_id`` (the
    context of an empty-context request; default BOS, else EOS), ``progress`` (the engine's own
    progress bars). ``device``: JAX places the arrays on its default backend; a ``device`` naming
    a platform JAX lacks (``lm_eval``'s default ``cuda:0`` on a CPU
    machine) is logged and ignored. Raises ``HarnessArgumentError`` for an unknown key or a bad value.
    """

    def __init__(self, pretrained: str | LM | None = None, dtype: str = "float32", batch_size: Any = None,
                 max_batch_size: Any = None, device: str | None = None, max_length: Any = None,
                 max_gen_toks: Any = DEFAULT_MAX_GEN_TOKS, add_bos_token: Any = None, prefix_token_id: Any = None,
                 progress: Any = False, **unknown: Any):
        super().__init__()
        if unknown:
            raise HarnessArgumentError(
                f"unknown --model_args key(s) {sorted(unknown)} for --model {MODEL_NAME}; known: pretrained, dtype, "
                f"batch_size, max_length, max_gen_toks, add_bos_token, prefix_token_id, progress, device")
        if pretrained is None or pretrained == "":
            raise HarnessArgumentError(f"--model {MODEL_NAME} needs pretrained=NAME_OR_PATH (a registered model, an "
                                       f"HF directory or a .gguf file; `londi-jax lm list` shows the names)")
        _check_device(device)
        if isinstance(pretrained, str):
            from londi_jax.fslm import load_stack, looks_like_stack_file
            from londi_jax.lm.registry import load_lm

            show = bool(_as_bool("progress", progress))
            self.lm = load_stack(pretrained, dtype=str(dtype), progress=show) if looks_like_stack_file(pretrained) \
                else load_lm(pretrained, dtype=str(dtype), progress=show)
        elif isinstance(pretrained, LM):
            self.lm = pretrained
        else:
            raise HarnessArgumentError(f"pretrained must be a name, a path or a londi_jax LM, not {type(pretrained).__name__}")
        if not hasattr(self.lm, "generate_tokens") or getattr(self.lm, "is_encoder_decoder", False):
            raise HarnessArgumentError(f"model {self.lm.name!r} ({type(self.lm).__name__}) is not a decoder-only "
                                       f"londi_jax model; --model {MODEL_NAME} serves causal LMs (and stacks of them)")
        self.tokenizer = self.lm.tokenizer
        if self.tokenizer is None:
            raise HarnessArgumentError(f"model {self.lm.name!r} has no tokenizer; lm-eval sends text")
        self.batch_size = DEFAULT_BATCH if batch_size in (None, "auto") or str(batch_size).startswith("auto") \
            else _as_int("batch_size", batch_size)
        window = getattr(self.lm, "context_window", None)
        if window is None:
            raise HarnessArgumentError(f"model {self.lm.name!r} does not say its context window (context_window)")
        window = int(window)
        self._max_length = _as_int("max_length", max_length) or window
        if self._max_length > window:
            raise HarnessArgumentError(f"max_length={self._max_length} is over model {self.lm.name!r}'s context window "
                                       f"of {window} tokens")
        self.max_gen_toks = _as_int("max_gen_toks", max_gen_toks)
        self.add_bos_token = _as_bool("add_bos_token", add_bos_token)
        self._prefix = _as_int("prefix_token_id", prefix_token_id, minimum=0)
        if self.prefix_token_id is None:
            raise HarnessArgumentError(f"model {self.lm.name!r}'s tokenizer has neither a BOS nor an EOS token; give "
                                       f"prefix_token_id=ID for empty contexts")
        vocab = len(self.tokenizer)
        if not 0 <= self.prefix_token_id < vocab:
            raise HarnessArgumentError(f"prefix_token_id={self.prefix_token_id} is not a token id of model "
                                       f"{self.lm.name!r} (its tokenizer has {vocab} tokens)")
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if self.add_bos_token and bos is None:
            raise HarnessArgumentError(f"add_bos_token=true, but model {self.lm.name!r}'s tokenizer has no BOS token")

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> LondiJaxLM:
        """``--model_args`` plus lm_eval's own ``--batch_size`` / ``--device``; a key given in
        ``--model_args`` wins (lm_eval always passes its ``--batch_size``, default 1)."""
        args = lm_eval_utils.simple_parse_args_string(arg_string)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    # ------------------------------------------------------------------ tokens
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int | None:
        if self._prefix is not None:
            return self._prefix
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        flag = add_special_tokens if add_special_tokens is not None else self.add_bos_token
        special = {} if flag is None else {"add_special_tokens": flag}
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode([self.prefix_token_id])):
            special["add_special_tokens"] = False  # the text already starts with BOS
        ids = list(self.tokenizer.encode(string, **special))
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if special.get("add_special_tokens") and self.add_bos_token and bos is not None and ids[:1] != [bos]:
            ids = [bos, *ids]  # HF's add_bos_token=True: a tokenizer that adds no BOS itself gets one
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ scoring
    def _truncate(self, context: list[int], continuation: list[int]) -> list[int]:
        keep = self.max_length + 1  # HF: (context + continuation)[-(max_length + 1):], the last one never input
        if len(continuation) >= keep:
            raise ContextLengthError(f"a continuation of {len(continuation)} tokens leaves no context within "
                                     f"max_length={self.max_length}; raise max_length or shorten the task's targets")
        over = len(context) + len(continuation) - keep
        return context[over:] if over > 0 else context

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), is_greedy) per request; requests with the same context
        tokens share one prompt (one prefill for all their continuations)."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for j, (_, ctx, cont) in enumerate(requests):
            if not cont:
                raise LMInputError(f"request {j} has an empty continuation; lm-eval scores at least one token")
            groups[tuple(self._truncate(list(ctx), list(cont)))].append(j)
        prompts = sorted(groups, key=len, reverse=True)  # similar lengths per call: less padding
        out: list[Any] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc=f"{self.lm.name}: loglikelihood", disable=disable_tqdm)
        for b in range(0, len(prompts), self.batch_size):
            batch = prompts[b:b + self.batch_size]
            try:
                res = self.lm.score_tokens([list(p) for p in batch],
                                           [[list(requests[j][2]) for j in groups[p]] for p in batch])
            except ContextLengthError as err:  # a stack's templates and hand-offs lengthen the context
                raise ContextLengthError(f"{err}. Give a smaller max_length (--max-length for londi-jax eval, "
                                         f"max_length= in --model_args) so contexts leave room; it is "
                                         f"{self.max_length} now") from None
            if res.greedy is None:
                raise LMInputError(f"model {self.lm.name!r} does not report greedy flags (ScoreResult.greedy); "
                                   f"lm-eval's loglikelihood needs them")
            for p, lps, greedy in zip(batch, res.logprobs, res.greedy):
                for j, lp, g in zip(groups[p], lps, greedy):
                    out[j] = (float(lp), bool(g))
                    if requests[j][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[j][0], out[j])
                bar.update(len(groups[p]))
        bar.close()
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Summed log-likelihood of each whole text: disjoint windows of ``max_length`` predicted
        tokens, each with one token of context (lm-eval's own window functions)."""
        windows, owner = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            for ctx, cont in map(lm_eval_utils.make_disjoint_window, lm_eval_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, list(ctx), list(cont)))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (lp, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[i] += lp
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Text generated after each context, up to the first stop string (lm-eval's rules)."""
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        groups: dict[str, list[int]] = defaultdict(list)
        for j, req in enumerate(requests):
            groups[json.dumps(req.args[1], sort_keys=True, default=str)].append(j)
        out: list[Any] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc=f"{self.lm.name}: generate_until", disable=disable_tqdm)
        for members in groups.values():
            gen_kwargs = dict(requests[members[0]].args[1])
            kw = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(kw.pop("until", None), eos=eos)
            max_gen = int(kw.pop("max_gen_toks"))
            extra = sorted(set(kw) - set(GEN_KEYS))
            if extra:
                raise HarnessArgumentError(f"generation settings {extra} are not supported by --model {MODEL_NAME}; "
                                           f"supported: until, max_gen_toks, {', '.join(GEN_KEYS)}")
            room = self.max_length - max_gen
            if room < 1:
                raise HarnessArgumentError(f"max_gen_toks={max_gen} leaves no room for the context within "
                                           f"max_length={self.max_length}")
            temperature = float(kw.get("temperature") or 0.0) if kw.get("do_sample") else 0.0
            for b in range(0, len(members), self.batch_size):
                batch = members[b:b + self.batch_size]
                ctx = [self.tok_encode(requests[j].args[0], left_truncate_len=room) for j in batch]
                ids, _ = self.lm.generate_tokens(ctx, max_gen, temperature=temperature, top_k=kw.get("top_k"),
                                                 top_p=kw.get("top_p"), stop=tuple(u for u in until if u),
                                                 seed=int(kw.get("seed") or 0))
                for j, row in zip(batch, ids):
                    out[j] = postprocess_generated_text(self.tok_decode(row), until, None)
                    self.cache_hook.add_partial("generate_until", requests[j].args, out[j])
                bar.update(len(batch))
        bar.close()
        return out


def _check_device(device: str | None) -> None:
    if device is None or str(device).lower() in ("", "none"):
        return
    import jax

    wanted = str(device).lower().split(":")[0]
    wanted = {"cuda": "gpu", "rocm": "gpu", "mps": "metal"}.get(wanted, wanted)
    have = sorted({d.platform for d in jax.devices()})
    if wanted not in have:  # lm_eval's command line passes cuda:0 by default: say so, do not fail
        log.warning("device=%s: JAX has no %s devices here; the model runs on JAX's default (%s)", device, wanted,
                    jax.default_backend())
