"""GGUF tensor types through our loader vs the gguf package's own dequantizer.

Each type is written into a GGUF file with ``gguf.GGUFWriter``: with ``gguf.quants.quantize`` where
gguf implements it, otherwise as random valid blocks (random bytes, finite float16 scales) with the
raw dtype. The file is read back with ``read_gguf`` and every tensor compared with
``gguf.quants.dequantize`` applied to the bytes that were written (not the bytes read back).
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from londi_jax.lm import gguf_loader
from londi_jax.lm.gguf_loader import GGUFError, read_gguf

QUANTIZABLE = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
# Byte offsets of the float16 fields (d, dmin) in one block of each k-quant (ggml-common.h's
# block_q2_K .. block_q6_K); every other byte of a block is a valid quant/scale value.
K_QUANT_F16_OFFSETS = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
ALL_TYPES = QUANTIZABLE + list(K_QUANT_F16_OFFSETS)
# Types the real Qwen2.5 files use; each must be covered above.
REAL_FILE_TYPES = {"F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K"}

ROWS, COLS = 37, 512  # rows not a multiple of anything; COLS a multiple of the 256-value k-quant block


def random_blocks(rng: np.random.Generator, qtype, rows: int, cols: int) -> np.ndarray:
    """Random valid k-quant data, shape (rows, bytes per row) as GGUFWriter takes quantized tensors."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    offsets = K_QUANT_F16_OFFSETS[qtype.name]
    assert max(offsets) + 2 <= size
    blocks = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    for off in offsets:  # finite scales of a realistic size (random bytes would include NaN/inf)
        scale = (rng.uniform(0.001, 0.05, size=blocks.shape[0]) * rng.choice([-1, 1], blocks.shape[0])).astype(np.float16)
        blocks[:, off:off + 2] = scale.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, cols // block * size)


def encode(rng: np.random.Generator, type_name: str, shape: tuple[int, ...]):
    """(array to write, raw dtype or None, float values it was made from or None)."""
    import gguf
    from gguf.quants import quantize

    qtype = getattr(gguf.GGMLQuantizationType, type_name)
    if type_name in K_QUANT_F16_OFFSETS:
        return random_blocks(rng, qtype, int(np.prod(shape[:-1])), shape[-1]).reshape(*shape[:-1], -1), qtype, None
    x = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    data = quantize(x, qtype)
    return data, (qtype if data.dtype == np.uint8 else None), x


def write_file(path, tensors: dict[str, tuple[np.ndarray, object]], hidden: int = COLS) -> None:
    """A minimal qwen2 GGUF holding ``tensors`` (GGUF name -> (data, raw dtype))."""
    import gguf

    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(1)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    for name, (data, raw) in tensors.items():
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference(data: np.ndarray, raw, type_name: str) -> np.ndarray:
    import gguf
    from gguf.quants import dequantize

    return np.asarray(dequantize(data, raw if raw is not None else getattr(gguf.GGMLQuantizationType, type_name)),
                      dtype=np.float32)


def test_every_type_of_the_real_files_is_covered():
    assert REAL_FILE_TYPES <= set(ALL_TYPES)


@pytest.mark.parametrize("type_name", ALL_TYPES)
def test_type_matches_gguf_dequantizer(tmp_path, monkeypatch, type_name):
    rng = np.random.default_rng(abs(hash(type_name)) % 2**32)
    emb, emb_raw, emb_x = encode(rng, type_name, (ROWS, COLS))
    down, down_raw, _ = encode(rng, type_name, (COLS // 2 if type_name not in K_QUANT_F16_OFFSETS else 3, COLS))
    norm = (1 + 0.1 * rng.standard_normal(COLS)).astype(np.float32)
    write_file(tmp_path / "m.gguf", {"token_embd.weight": (emb, emb_raw), "blk.0.ffn_down.weight": (down, down_raw),
                                     "output_norm.weight": (norm, None)})
    # several row blocks per tensor (and a ragged last one): the blocked path is what runs on big tensors
    monkeypatch.setattr(gguf_loader, "_DEQUANT_BLOCK_BYTES", 5 * 4 * COLS, raising=False)
    ck = read_gguf(tmp_path / "m.gguf")
    assert ck.tensors.quant_types()["model.embed_tokens.weight"] == type_name
    got = ck.tensors["model.embed_tokens.weight"]
    want = reference(emb, emb_raw, type_name).reshape(ROWS, COLS)
    assert got.dtype == np.float32 and got.shape == (ROWS, COLS) == ck.tensors.get_shape("model.embed_tokens.weight")
    assert np.all(np.isfinite(want)) and np.abs(want).max() > 0
    np.testing.assert_array_equal(got, want)
    got_down = ck.tensors["model.layers.0.mlp.down_proj.weight"]
    np.testing.assert_array_equal(got_down, reference(down, down_raw, type_name).reshape(got_down.shape))
    np.testing.assert_array_equal(ck.tensors["model.norm.weight"], norm)
    if emb_x is not None:  # the values quantized come back within the type's rounding error
        step = np.abs(emb_x).max() * {"F32": 0, "F16": 1e-3, "BF16": 8e-3, "Q8_0": 1e-2}.get(type_name, 0.15)
        np.testing.assert_allclose(got, emb_x, atol=step + 1e-7, rtol=0)


def test_unsupported_type_is_a_clear_error(tmp_path, monkeypatch):
    import gguf

    rng = np.random.default_rng(0)
    emb, raw, _ = encode(rng, "Q8_0", (4, 256))
    write_file(tmp_path / "m.gguf", {"token_embd.weight": (emb, raw)}, hidden=256)
    ck = read_gguf(tmp_path / "m.gguf")

    def refuse(data, qtype):
        raise NotImplementedError(f"Dequantization for {qtype.name} is not yet implemented")

    monkeypatch.setattr(gguf.quants, "dequantize", refuse)
    with pytest.raises(GGUFError, match=r"token_embd\.weight: Dequantization for Q8_0 .*re-export"):
        ck.tensors["model.embed_tokens.weight"]


def test_dequantizing_a_tensor_holds_about_one_float32_copy(tmp_path, monkeypatch):
    """gguf's dequantizer alone holds a tensor twice (its per-group pieces and their concatenation)
    plus temporaries; the loader feeds it row blocks (1 MiB of output here) into one preallocated array."""
    import gguf

    rows, cols = 2048, 2048  # 16 MiB of float32
    rng = np.random.default_rng(1)
    q = random_blocks(rng, gguf.GGMLQuantizationType.Q4_K, rows, cols)
    write_file(tmp_path / "m.gguf", {"token_embd.weight": (q, gguf.GGMLQuantizationType.Q4_K)}, hidden=cols)
    ck = read_gguf(tmp_path / "m.gguf")
    monkeypatch.setattr(gguf_loader, "_DEQUANT_BLOCK_BYTES", 1 << 20, raising=False)
    gc.collect()
    tracemalloc.start()
    try:
        w = ck.tensors["model.embed_tokens.weight"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert w.nbytes == rows * cols * 4
    assert peak < 1.3 * w.nbytes, f"peak {peak / 2**20:.1f} MiB for a {w.nbytes / 2**20:.0f} MiB tensor"


def _mapped_rss(path) -> int:
    """Resident bytes of this process's mappings of ``path`` (/proc/self/smaps walks the page tables)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as fh:
        for ln in fh:
            head = ln.split()
            if "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line: range perms ... path
                inside = len(head) >= 6 and head[5] == str(path)
            elif inside and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="needs madvise and /proc (Linux)")
def test_file_pages_and_metadata_are_released(tmp_path):
    """After a tensor is read, neither its mapped GGUF bytes nor the reader's parsed metadata stay
    resident (loading the real 0.5B otherwise holds the whole 0.47 GiB file on top of the weights)."""
    import gguf

    rows, cols = 4096, 4096  # 16M values: 17 MiB of Q8_0 bytes
    rng = np.random.default_rng(2)
    d = rng.uniform(0.001, 0.01, size=(rows * cols // 32, 1)).astype(np.float16).view(np.uint8)
    q = np.concatenate([d, rng.integers(0, 256, size=(rows * cols // 32, 32), dtype=np.uint8)], axis=1)
    path = tmp_path / "m.gguf"
    write_file(path, {"token_embd.weight": (q.reshape(rows, -1), gguf.GGMLQuantizationType.Q8_0)}, hidden=cols)
    ck = read_gguf(path)
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, gguf.GGUFReader)]  # only its tensors are kept
    w = ck.tensors["model.embed_tokens.weight"]
    assert w.shape == (rows, cols) and np.isfinite(w).all()
    resident = _mapped_rss(path)
    assert resident < q.nbytes // 4, f"{resident / 2**20:.1f} MiB of the {q.nbytes / 2**20:.1f} MiB file stayed resident"


def test_reading_the_config_dequantizes_nothing(tmp_path, monkeypatch):
    """``name in tensors`` (read_gguf asks it for the embedding, the LM head and the q bias) must not
    dequantize the tensor, as Mapping's default ``__contains__`` (``self[name]``) does."""
    import gguf

    rng = np.random.default_rng(3)
    emb, raw, _ = encode(rng, "Q8_0", (8, 256))
    write_file(tmp_path / "m.gguf", {"token_embd.weight": (emb, raw), "output.weight": (emb, raw)}, hidden=256)
    calls = []
    real = gguf.quants.dequantize
    monkeypatch.setattr(gguf.quants, "dequantize", lambda *a: calls.append(1) or real(*a))
    ck = read_gguf(tmp_path / "m.gguf")
    assert "lm_head.weight" in ck.tensors and "model.layers.0.self_attn.q_proj.bias" not in ck.tensors
    assert not ck.config["tie_word_embeddings"] and calls == []
