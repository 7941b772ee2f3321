"""T5 / Flan-T5 (encoder-decoder) in NNX vs transformers' PyTorch T5 on tiny random configs saved as
HF directories: v1.0 (ReLU MLP, tied embeddings and the d_model**-0.5 rescale) and v1.1 / Flan
(gated GELU-tanh, untied head, no rescale), with encoder and decoder sequences past the relative-
position buckets' boundaries (exact below 8 or 16, logarithmic to max_distance, clamped beyond)."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from londi_jax.lm.hf_loader import CheckpointError, build_model, load_t5_directory, open_safetensors_dir
from londi_jax.lm.t5 import T5Config, relative_position_bucket, shift_right

VARIANTS = {
    "t5_v1_0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "flan_t5": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def save_tiny_t5(root, kind, seed=0, max_distance=48):
    import torch
    import transformers as T

    torch.manual_seed(seed)
    cfg = T.T5Config(vocab_size=320, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4,
                     relative_attention_num_buckets=16, relative_attention_max_distance=max_distance, dropout_rate=0.0,
                     decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, initializer_factor=1.0,
                     **VARIANTS[kind])
    model = T.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # T5 initialises norms to 1: make them matter
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.normal_(1.0, 0.2)
    out = root / kind
    model.save_pretrained(out)
    return out, model


@pytest.fixture(scope="module", params=list(VARIANTS))
def tiny(request, tmp_path_factory):
    path, ref = save_tiny_t5(tmp_path_factory.mktemp("t5"), request.param)
    model, cfg = load_t5_directory(path, progress=False)
    return cfg, model, ref


@pytest.mark.parametrize("bidirectional,buckets,max_distance", [(True, 32, 128), (False, 32, 128), (True, 16, 48),
                                                                 (False, 16, 48), (True, 8, 20)])
def test_relative_position_buckets_equal_transformers(bidirectional, buckets, max_distance):
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = np.arange(-300, 301)
    want = T5Attention._relative_position_bucket(torch.tensor(rel), bidirectional=bidirectional,
                                                 num_buckets=buckets, max_distance=max_distance).numpy()
    got = np.asarray(relative_position_bucket(jnp.asarray(rel), bidirectional, buckets, max_distance))
    np.testing.assert_array_equal(got, want)
    n = buckets // 2 if bidirectional else buckets
    assert want.max() == buckets - 1 and (want[:300] == n - 1).any()  # the clamp beyond max_distance is exercised


def test_teacher_forced_logits_equal_transformers(tiny):
    import torch

    cfg, ours, ref = tiny
    rng = np.random.default_rng(0)
    enc_len, dec_len = [90, 37], [70, 12]  # past max_distance 48 and the 8-token exact range
    B, S, T = 2, max(enc_len), max(dec_len)
    enc = np.zeros((B, S), np.int64)
    enc_valid = np.zeros((B, S), bool)
    labels = np.zeros((B, T), np.int64)
    dec_valid = np.zeros((B, T), bool)
    for b in range(B):  # right padding, as T5 tokenizers pad
        enc[b, :enc_len[b]] = rng.integers(2, cfg.vocab_size, enc_len[b])
        enc_valid[b, :enc_len[b]] = True
        labels[b, :dec_len[b]] = rng.integers(2, cfg.vocab_size, dec_len[b])
        dec_valid[b, :dec_len[b]] = True
    dec_in = shift_right(labels, cfg.decoder_start_token_id)
    got = np.asarray(ours(jnp.asarray(enc), jnp.asarray(enc_valid), jnp.asarray(dec_in), jnp.asarray(dec_valid)))
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc_valid.astype(np.int64)),
                   decoder_input_ids=torch.tensor(dec_in),
                   decoder_attention_mask=torch.tensor(dec_valid.astype(np.int64))).logits.numpy()
    for b in range(B):
        np.testing.assert_allclose(got[b, :dec_len[b]], want[b, :dec_len[b]], rtol=1e-4, atol=1e-4)
    # the encoder alone, and left padding (only position differences enter the bias)
    with torch.no_grad():
        want_enc = ref.encoder(input_ids=torch.tensor(enc[1:, :37])).last_hidden_state.numpy()
    left = np.concatenate([np.zeros((1, 5), np.int64), enc[1:, :37]], axis=1)
    left_valid = np.concatenate([np.zeros((1, 5), bool), np.ones((1, 37), bool)], axis=1)
    got_enc = np.asarray(ours.encode(jnp.asarray(left), jnp.asarray(left_valid)))[:, 5:]
    np.testing.assert_allclose(got_enc, want_enc, rtol=1e-4, atol=1e-4)


def test_config_and_checkpoint_errors(tmp_path):
    path, _ = save_tiny_t5(tmp_path, "flan_t5")
    d = json.loads((path / "config.json").read_text())
    cfg = T5Config.from_hf_dict(d)
    assert (cfg.feed_forward, cfg.scale_decoder_outputs, cfg.num_decoder_layers, cfg.relative_attention_max_distance) == \
        ("gated-gelu", False, 3, 48)
    # a transformers v4 Flan-T5 config: untied head, no rescale; v4 T5 v1.0: tied and rescaled
    v4 = {k: v for k, v in d.items() if k != "scale_decoder_outputs"}
    flan4 = T5Config.from_hf_dict({**v4, "tie_word_embeddings": False})
    assert not flan4.tie_embeddings and not flan4.scale_decoder_outputs
    t5_4 = T5Config.from_hf_dict({**v4, "tie_word_embeddings": True, "feed_forward_proj": "relu"})
    assert t5_4.tie_embeddings and t5_4.scale_decoder_outputs
    with pytest.raises(Exception, match="feed_forward_proj 'gated-swish'.*supported: relu, gated-gelu"):
        T5Config.from_hf_dict({**d, "feed_forward_proj": "gated-swish"})
    with pytest.raises(CheckpointError, match="decoder.block.2.*layer 2 but the config has fewer layers.*num_decoder_layers 2"):
        build_model(cfg.replace(num_decoder_layers=2), open_safetensors_dir(path))


# ---------------------------------------------------------------------------------- the LM interface
@pytest.fixture(scope="module")
def t5_lm(tmp_path_factory):
    """A tiny Flan-T5-style directory with a tokenizer, loaded through ``load_hf_directory``."""
    from lm_core_helpers import make_tokenizer

    from londi_jax.lm.hf_loader import load_hf_directory

    root = tmp_path_factory.mktemp("t5lm")
    path, ref = save_tiny_t5(root, "flan_t5")
    make_tokenizer(str(root)).save_pretrained(path)
    return load_hf_directory(path, progress=False), ref, path


def _torch_logprobs(ref, prompt, cand, start=0):
    import torch

    with torch.no_grad():
        logits = ref(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([[start] + cand[:-1]])).logits
    lp = torch.log_softmax(logits[0].double(), -1).numpy()
    return float(sum(lp[j, t] for j, t in enumerate(cand)))


def test_scores_share_the_encoder_and_equal_transformers(t5_lm):
    from londi_jax.lm.seq2seq import Seq2SeqLanguageModel

    lm, ref, _ = t5_lm
    assert isinstance(lm, Seq2SeqLanguageModel) and lm.hidden_size == 32
    rng = np.random.default_rng(1)
    prompts = [rng.integers(3, 200, n).tolist() for n in (70, 5, 20)]
    cands = [[[5], [6, 7, 8], rng.integers(3, 200, 66).tolist()], [[9, 10]], [[11, 12, 13], [14]]]
    res = lm.score_tokens(prompts, cands, with_embedding=True)
    for p, cs, got in zip(prompts, cands, res.logprobs):
        np.testing.assert_allclose(got, [_torch_logprobs(ref, p, c) for c in cs], rtol=1e-4, atol=1e-4)
    assert [n.tolist() for n in res.num_tokens] == [[len(c) for c in cs] for cs in cands]
    assert res.embeddings.shape == (3, 32) and res.cost.kind == "score" and res.cost.flops > 0
    import torch

    with torch.no_grad():  # the embedding: the prompt's encoder states, mean-pooled
        enc = ref.encoder(input_ids=torch.tensor([prompts[1]])).last_hidden_state[0].numpy()
    np.testing.assert_allclose(res.embeddings[1], enc.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lm.embed_tokens([prompts[1]])[0], enc.mean(0), rtol=1e-4, atol=1e-5)


def test_greedy_generation_equals_transformers(t5_lm):
    import torch

    lm, ref, _ = t5_lm
    rng = np.random.default_rng(2)
    prompts = [rng.integers(3, 200, n).tolist() for n in (40, 9)]
    rows, reasons = lm.generate_tokens(prompts, 70)  # past the decoder's 8-token exact buckets and max_distance 48
    for p, got, why in zip(prompts, rows, reasons):
        with torch.no_grad():
            # (no cache: transformers sizes its T5 cache by the encoder's layer count, 2 here, not the decoder's 3)
            out = ref.generate(torch.tensor([p]), max_new_tokens=70, do_sample=False, min_new_tokens=0,
                               use_cache=False)[0, 1:].tolist()
        want = out[: out.index(1) + 1] if 1 in out else out
        assert got == want and why == ("eos" if got[-1] == 1 else "length")
    text = lm.generate(["go forward and pick up the key"], 5)
    assert len(text.token_ids[0]) <= 5 and text.cost.generated_tokens == len(text.token_ids[0])
    res = lm.score(["open the door"], [["turn left", "go forward"]])
    assert res.logprobs[0].shape == (2,) and np.all(res.logprobs[0] < 0)


def test_the_pipeline_refuses_a_t5_source_before_any_work(t5_lm, tmp_path, capsys):
    from londi_jax.cli import main

    _, _, src = t5_lm
    out = tmp_path / "run"
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--set", f"quick.source={src}"]) == 2
    err = capsys.readouterr().err
    assert "encoder-decoder model (T5)" in err and "decoder-only" in err
    assert not (out / "demos").exists()  # refused before the demos stage ran


def _write_t5_gguf(path, model, quant=None):
    """The tiny transformers T5 written as llama.cpp writes T5 files (names from the gguf package's
    own map, its metadata keys); returns what each tensor holds after (de)quantization."""
    import gguf
    from gguf.quants import dequantize, quantize

    cfg = model.config
    gated = cfg.feed_forward_proj.startswith("gated")
    w = gguf.GGUFWriter(str(path), "t5")
    w.add_context_length(512)
    w.add_embedding_length(cfg.d_model)
    w.add_feed_forward_length(cfg.d_ff)
    w.add_block_count(cfg.num_layers)
    w.add_uint32("t5.decoder_block_count", cfg.num_decoder_layers)
    w.add_head_count(cfg.num_heads)
    w.add_key_length(cfg.d_kv)
    w.add_value_length(cfg.d_kv)
    w.add_layer_norm_rms_eps(cfg.layer_norm_epsilon)
    w.add_relative_attn_buckets_count(cfg.relative_attention_num_buckets)
    w.add_decoder_start_token_id(0)
    w.add_eos_token_id(1)
    w.add_pad_token_id(0)
    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5, max(cfg.num_layers, cfg.num_decoder_layers))
    qtype = getattr(gguf.GGMLQuantizationType, quant) if quant else None
    held = {}
    for name, t in model.state_dict().items():
        if name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            continue
        if name == "lm_head.weight" and not gated:  # T5 v1.0 ties its head; Flan-T5 files store one (output.weight)
            continue
        a = t.detach().float().numpy()
        if name.endswith("relative_attention_bias.weight") and ".block.0." not in name:
            continue
        gname = table.get_name(name.removesuffix(".weight")) + ".weight"
        if qtype is not None and a.ndim == 2 and a.shape[1] % 32 == 0:
            w.add_tensor(gname, quantize(a, qtype), raw_dtype=qtype)
            held[name] = dequantize(quantize(a, qtype), qtype).reshape(a.shape)
        else:
            w.add_tensor(gname, a)
            held[name] = a
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return held


@pytest.mark.parametrize("kind", list(VARIANTS))
def test_t5_gguf_files_load_and_match_the_directory(tmp_path, kind):
    """A T5 GGUF (llama.cpp's names and keys) loads through load_gguf / load_lm into the seq2seq
    engine with the same weights and scores as the HF directory it was written from."""
    from londi_jax.lm import load_gguf
    from londi_jax.lm.gguf_loader import read_gguf

    # llama.cpp's T5 files do not store max_distance: every T5 uses 128, which the loader assumes
    path, ref = save_tiny_t5(tmp_path, kind, max_distance=128)
    gpath = tmp_path / "tiny-t5.gguf"
    held = _write_t5_gguf(gpath, ref, quant="Q8_0")
    ck = read_gguf(gpath)
    assert ck.config["feed_forward_proj"] == VARIANTS[kind]["feed_forward_proj"] and ck.config["num_decoder_layers"] == 3
    assert ck.config["relative_attention_max_distance"] == 128 and ck.config["relative_attention_num_buckets"] == 16
    assert set(ck.tensors) == {k for k in held}
    for k, want in held.items():
        np.testing.assert_array_equal(ck.tensors[k], want, err_msg=k)
    lm = load_gguf(gpath, progress=False)
    v1_0 = kind == "t5_v1_0"  # tied and rescaled; Flan: its own head, no rescale
    assert lm.config.tie_embeddings == lm.config.scale_decoder_outputs == v1_0 and lm.tokenizer is None
    rng = np.random.default_rng(3)
    prompts = [rng.integers(3, 320, 100).tolist()]  # distances past the 8 exact buckets, into the log range
    cands = [[[5, 6], rng.integers(3, 320, 9).tolist()]]
    got = lm.score_tokens(prompts, cands).logprobs[0]
    want = [_torch_logprobs(ref, prompts[0], c) for c in cands[0]]
    np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05)  # Q8_0 weights vs float32 ones
    import torch

    with torch.no_grad():  # the same quantized weights in transformers' model: float32 tolerance
        sd = ref.state_dict()
        for k, a in held.items():
            sd[k].copy_(torch.from_numpy(a))
    np.testing.assert_allclose(got, [_torch_logprobs(ref, prompts[0], c) for c in cands[0]], rtol=1e-4, atol=1e-4)


def test_bad_inputs_are_named(t5_lm):
    """Wrong types, out-of-vocabulary candidates and bad sampling settings give LMInputError."""
    from londi_jax.lm.interface import LMInputError

    lm, _, _ = t5_lm
    bad = [lambda: lm.score(["go"], ["turn left"]), lambda: lm.score_tokens([[5, 6]], [[[999]]]),
           lambda: lm.score_tokens([[5, 6]], [[[-1]]]), lambda: lm.score_tokens([[5.5, 6]], [[[3]]]),
           lambda: lm.score_tokens([[5]], [[3, 4]]), lambda: lm.score_tokens(None, None),
           lambda: lm.generate(["go"], 4, stop=None), lambda: lm.generate_tokens([[5]], 3, temperature=-1.0),
           lambda: lm.generate_tokens([[5]], 3, temperature=1.0, top_p=0.0),
           lambda: lm.generate_tokens([[5]], 3, temperature=1.0, seed=None)]
    for f in bad:
        with pytest.raises(LMInputError):
            f()
    with pytest.raises(Exception, match="no chat template"):
        lm.generate_chat([[{"role": "user", "content": "hi"}]], 2)
    with pytest.raises(Exception, match="eos_token_id 999 is outside the vocabulary"):
        T5Config(vocab_size=10, hidden_size=4, head_dim=2, num_heads=2, intermediate_size=4, num_layers=1,
                 num_decoder_layers=1, eos_token_id=999)
    with pytest.raises(Exception, match="wrong type"):
        T5Config.from_hf_dict({"model_type": "t5", "vocab_size": 10, "d_model": "abc", "d_kv": 2, "d_ff": 4,
                               "num_layers": 1, "num_heads": 2})
