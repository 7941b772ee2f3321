"""save_hf_directory: exact inverse of the loader, and transformers' own PyTorch model agrees."""

from __future__ import annotations

import json

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from lm_core_helpers import VOCAB, save_tiny, torch_logits
from safetensors.numpy import load_file

from londi_jax.lm.config import ModelConfig
from londi_jax.lm.engine import LanguageModel
from londi_jax.lm.hf_loader import init_model, load_hf_directory
from londi_jax.lm.hf_writer import HFWriteError, hf_config_dict, hf_tensors, save_hf_directory, save_language_model
from londi_jax.lm.lora import LoRAConfig, add_lora, merge_lora
from londi_jax.utils.errors import LondiError

ROWS = [[1, 5, 9, 33, 70, 101, 4], [1, 250, 3], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]]
# what transformers stores but carries no information our models use
IGNORED_CONFIG_KEYS = {"transformers_version", "initializer_range", "attention_dropout", "hidden_dropout",
                       "classifier_dropout", "is_decoder", "pretraining_tp", "layer_types", "max_window_layers",
                       "_sliding_window_pattern"}  # layer_types: compared through ModelConfig below


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_writer")


def torch_model(path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


@pytest.mark.parametrize("kind", ["llama", "llama3_tied", "qwen2", "qwen3", "gemma3", "mistral_window", "neox_parallel",
                                  "neox_sequential"])
def test_transformers_checkpoint_roundtrip(root, kind):
    src, ref = save_tiny(root / "src", kind)
    lm = load_hf_directory(src, progress=False)
    out = save_language_model(lm, root / "out" / kind)
    # the very tensors transformers wrote (names, layouts, values), nothing more
    ours, theirs = load_file(str(out / "model.safetensors")), load_file(str(src / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for k in theirs:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    # the config says the same as transformers' own
    mine, orig = json.loads((out / "config.json").read_text()), json.loads((src / "config.json").read_text())
    for k, v in orig.items():
        if k not in IGNORED_CONFIG_KEYS and v is not None:
            assert mine.get(k) == v, (k, mine.get(k), v)
    # loads back here with identical logits, and in transformers with the same logits
    back = load_hf_directory(out, progress=False)
    assert back.config.layer_types == lm.config.layer_types  # which layers slide, if any
    for a, b in zip(back.logits(ROWS), lm.logits(ROWS)):
        np.testing.assert_array_equal(a, b)
    assert back.tokenizer.encode("open the door") == lm.tokenizer.encode("open the door")
    for a, b in zip(lm.logits(ROWS), torch_logits(torch_model(out), ROWS)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    del ref


LLAMA_BIASED = ModelConfig(family="llama", vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4,
                           num_kv_heads=2, head_dim=8, intermediate_size=64, qkv_bias=True, o_bias=True,
                           mlp_bias=True, rope_theta=500.0, max_position_embeddings=128, bos_token_id=1,
                           eos_token_id=(2, 3), model_type="llama")
NEOX_TIED = ModelConfig(family="gpt_neox", vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4,
                        num_kv_heads=4, head_dim=8, intermediate_size=64, rotary_dim=2, qkv_bias=True, o_bias=True,
                        mlp_bias=True, parallel_residual=True, hidden_act="gelu", tie_embeddings=True,
                        max_position_embeddings=128)
QWEN_LIKE = LLAMA_BIASED.replace(o_bias=False, mlp_bias=False, tie_embeddings=True, model_type="")


@pytest.mark.parametrize("config", [LLAMA_BIASED, NEOX_TIED, QWEN_LIKE], ids=["llama_biases", "neox_tied", "qwen2"])
def test_models_built_here_load_in_transformers(tmp_path, config):
    """Models that never came from transformers (random init, all bias options) match its forward."""
    model = init_model(config, seed=1)
    lm = LanguageModel(config, model)
    out = save_hf_directory(model, tmp_path / "m")
    assert ModelConfig.from_hf_dict(json.loads((out / "config.json").read_text())) == config.replace(
        model_type=json.loads((out / "config.json").read_text())["model_type"])
    ref = torch_model(out)
    for a, b in zip(lm.logits(ROWS), torch_logits(ref, ROWS)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_lora_model_is_saved_merged_and_bfloat16(tmp_path):
    model = add_lora(init_model(LLAMA_BIASED, seed=0), LoRAConfig(rank=2, targets=("q_proj", "down_proj")))
    state = nnx.state(model, nnx.LoRAParam)
    state = jax.tree.map(lambda x: x + 0.1, state)  # non-zero B
    nnx.update(model, state)
    merged = merge_lora(model)
    out = save_hf_directory(model, tmp_path / "m")
    assert not any("lora" in k for k in load_file(str(out / "model.safetensors")))
    want = LanguageModel(LLAMA_BIASED, merged).logits(ROWS)
    for a, b in zip(LanguageModel(LLAMA_BIASED, _load_model(out)).logits(ROWS), want):
        np.testing.assert_array_equal(a, b)
    out16 = save_hf_directory(merged, tmp_path / "m16", dtype="bfloat16")
    assert json.loads((out16 / "config.json").read_text())["dtype"] == "bfloat16"
    stored, full = load_file(str(out16 / "model.safetensors")), hf_tensors(merged)
    assert stored.keys() == full.keys()
    for k, v in full.items():  # each tensor is the float32 one rounded to bfloat16
        assert str(stored[k].dtype) == "bfloat16"
        np.testing.assert_array_equal(stored[k], v.astype(ml_dtypes.bfloat16), err_msg=k)


def _load_model(path):
    from londi_jax.lm.hf_loader import build_model, open_safetensors_dir, read_config

    return build_model(read_config(path), open_safetensors_dir(path))


def test_errors_and_overwrite(tmp_path):
    model = init_model(LLAMA_BIASED, seed=0)
    with pytest.raises(HFWriteError, match="dtype 'int8' unsupported"):
        save_hf_directory(model, tmp_path / "a", dtype="int8")
    with pytest.raises(HFWriteError, match="needs a londi_jax CausalLM"):
        save_hf_directory(object(), tmp_path / "a")
    with pytest.raises(LondiError, match="o_bias=True"):
        hf_config_dict(LLAMA_BIASED.replace(qkv_bias=False))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(HFWriteError, match=r"refusing to replace .*notes\.txt"):
        save_hf_directory(model, tmp_path / "busy")
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]
    first = save_hf_directory(model, tmp_path / "m")
    other = init_model(LLAMA_BIASED, seed=5)
    save_hf_directory(other, first)  # an earlier save is replaced as a whole
    np.testing.assert_array_equal(LanguageModel(LLAMA_BIASED, _load_model(first)).logits(ROWS)[0],
                                  LanguageModel(LLAMA_BIASED, other).logits(ROWS)[0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
