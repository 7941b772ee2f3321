"""Checkpoint loading: every error is a clear CheckpointError / UnsupportedArchitectureError."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from lm_core_helpers import save_tiny
from safetensors.numpy import load_file, save_file

from londi_jax.lm.config import ModelConfig, UnsupportedArchitectureError
from londi_jax.lm.hf_loader import CheckpointError, build_model, load_hf_directory
from londi_jax.utils.errors import LondiError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    llama, _ = save_tiny(root, "llama")
    neox, _ = save_tiny(root, "neox_parallel")
    return {"root": root, "llama": llama, "neox": neox}


def _copy(saved, kind, tmp_path):
    dst = tmp_path / kind
    shutil.copytree(saved[kind], dst)
    return dst


def _cfg(path):
    return ModelConfig.from_hf_dict(json.loads((path / "config.json").read_text()))


def test_errors_are_londi_errors():
    assert issubclass(CheckpointError, LondiError) and issubclass(UnsupportedArchitectureError, LondiError)


def test_missing_directory_config_and_weights(saved, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_hf_directory(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_hf_directory(tmp_path)
    d = _copy(saved, "llama", tmp_path)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"no weights.*found \['pytorch_model.bin'\]"):
        load_hf_directory(d)


def test_truncated_safetensors(saved, tmp_path):
    d = _copy(saved, "llama", tmp_path)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_hf_directory(d)


def test_sharded_index_with_missing_shard(saved, tmp_path):
    d = _copy(saved, "llama", tmp_path)
    (d / "model.safetensors").unlink()
    idx = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                                          "model.norm.weight": "model-00002-of-00002.safetensors"}}
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    with pytest.raises(CheckpointError, match="missing shard files"):
        load_hf_directory(d)


def test_unsupported_architecture(saved, tmp_path):
    d = _copy(saved, "llama", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "gpt2", ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError, match=r"model_type='gpt2'.*GPT2LMHeadModel.*llama, mistral, "
                                                           r"qwen2, qwen3, gemma3_text, gpt_neox"):
        load_hf_directory(d)
    with pytest.raises(UnsupportedArchitectureError, match="rope scaling type 'yarn'"):
        ModelConfig.from_hf_dict({**json.loads((saved["llama"] / "config.json").read_text()),
                                  "rope_parameters": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}})


def test_shape_mismatch_names_config_field_and_collects_all(saved, tmp_path):
    d = _copy(saved, "llama", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        load_hf_directory(d)
    msg = str(err.value)
    # 3 MLP matrices x 2 layers, each reported with the expected shape and the field responsible
    assert "6 problems" in msg
    assert ("shape mismatch for 'model.layers.1.mlp.down_proj.weight': checkpoint has (32, 64), config expects "
            "(32, 48) = (hidden_size=32, intermediate_size=48) (dim 1 is 64 but intermediate_size=48)") in msg
    assert "model.layers.0.mlp.gate_proj.weight" in msg and "model.layers.0.mlp.up_proj.weight" in msg


def test_missing_and_unexpected_tensors_reported_together(saved):
    tensors = load_file(str(saved["llama"] / "model.safetensors"))
    cfg = _cfg(saved["llama"])
    del tensors["model.layers.1.mlp.up_proj.weight"], tensors["lm_head.weight"]
    tensors["model.layers.0.self_attn.extra.weight"] = np.zeros((2, 2), np.float32)
    tensors["model.layers.7.mlp.up_proj.weight"] = np.zeros((64, 32), np.float32)
    with pytest.raises(CheckpointError) as err:
        build_model(cfg, tensors)
    msg = str(err.value)
    assert "4 problems" in msg
    assert "unexpected tensor 'model.layers.0.self_attn.extra.weight'" in msg
    assert "unexpected tensor 'model.layers.7.mlp.up_proj.weight': layer 7 but the config has fewer layers " \
           "(num_layers 2)" in msg
    assert ("missing tensor for parameter layers.1.mlp.up_proj.kernel (expected HF tensor "
            "model.layers.1.mlp.up_proj.weight)") in msg
    assert "lm_head.weight (config has tie_word_embeddings=false)" in msg


def test_neox_fused_qkv_shape_error_and_ignored_buffers(saved):
    tensors = load_file(str(saved["neox"] / "model.safetensors"))
    cfg = _cfg(saved["neox"])
    # old Pythia exports carry attention buffers: ignored, not "unexpected"
    tensors["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = np.zeros(2, np.float32)
    tensors["gpt_neox.layers.0.attention.masked_bias"] = np.zeros((), np.float32)
    model = build_model(cfg, tensors)
    q = np.asarray(model.layers[0].attn.q_proj.kernel[...])
    fused = tensors["gpt_neox.layers.0.attention.query_key_value.weight"]
    d = cfg.head_dim
    for h in range(cfg.num_heads):  # head h's q rows are rows [3*h*d, 3*h*d + d) of the fused matrix
        np.testing.assert_array_equal(q[:, h * d:(h + 1) * d], fused[3 * h * d: 3 * h * d + d].T)
    tensors["gpt_neox.layers.1.attention.query_key_value.weight"] = np.zeros((32, 32), np.float32)
    with pytest.raises(CheckpointError, match=r"query_key_value.weight.*dim 0 is 32 but 3\*num_attention_heads\*head_dim=96"):
        build_model(cfg, tensors)


def test_tied_checkpoint_may_carry_head_and_tokenizer_is_required(saved, tmp_path):
    root = tmp_path / "tied"
    path, _ = save_tiny(root, "llama3_tied")
    tensors = load_file(str(path / "model.safetensors"))
    assert "lm_head.weight" not in tensors
    cfg = _cfg(path)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    build_model(cfg, tensors)  # accepted and ignored
    for f in path.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        load_hf_directory(path)
    save_file(tensors, str(path / "model.safetensors"))
