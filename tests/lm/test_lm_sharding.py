"""LM parameters sharded over fsdp / model axes (lm/sharding.py): the rules, loading straight into
shards, and equality with the one-device model.

The equality test runs in a subprocess with 8 virtual CPU devices (fixed when JAX starts). Each
tiny random family (Llama with GQA, Gemma 3, GPT-NeoX's fused qkv, T5) is loaded once whole and
once on ``fsdp=2,model=4``; scores, logits, embeddings and greedy generations must agree (floats to
float32 rounding: the sharded matmuls sum in another order), a LoRA behaviour-cloning run with its
batches on ``data`` must follow the one-device run, and loading a safetensors directory on a mesh
must never read a whole tensor whose slices can be read alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import Mesh, PartitionSpec

from londi_jax.lm.sharding import logical_axes, partition_spec

HERE = Path(__file__).resolve().parent


class _FakeMesh:
    """Only ``shape`` is read by the rules: a mesh of any size without the devices."""

    def __init__(self, **sizes: int):
        self.shape = {"data": 1, "fsdp": 1, "model": 1, **sizes}


def test_rules_name_every_role_and_refuse_nothing_they_cannot_split():
    mesh = _FakeMesh(fsdp=2, model=4)
    attn = ("layers", 0, "attn")
    assert logical_axes((*attn, "q_proj", "kernel"), 2) == ("embed", "heads")
    assert partition_spec((*attn, "q_proj", "kernel"), (32, 32), mesh) == PartitionSpec("fsdp", "model")
    assert partition_spec((*attn, "o_proj", "kernel"), (32, 32), mesh) == PartitionSpec("model", "fsdp")
    assert partition_spec((*attn, "q_proj", "bias"), (32,), mesh) == PartitionSpec("model")
    assert partition_spec(("embed", "embedding"), (320, 32), mesh) == PartitionSpec("model", "fsdp")
    assert partition_spec(("lm_head", "kernel"), (32, 320), mesh) == PartitionSpec("fsdp", "model")
    # LoRA factors follow their kernel; the rank and the bank axis never split
    assert partition_spec((*attn, "q_proj", "lora", "lora_a"), (32, 4), mesh) == PartitionSpec("fsdp")
    assert partition_spec((*attn, "q_proj", "lora", "lora_b"), (4, 32), mesh) == PartitionSpec(None, "model")
    assert partition_spec((*attn, "v_proj", "bank_b"), (3, 4, 16), mesh) == PartitionSpec(None, None, "model")
    # norms and unknown leaves are replicated; a size the axis does not divide stays whole
    assert partition_spec(("layers", 0, "attn_norm", "scale"), (32,), mesh) == PartitionSpec()
    assert partition_spec((*attn, "k_proj", "kernel"), (32, 6), mesh) == PartitionSpec("fsdp")
    assert partition_spec(("encoder", "layers", 1, "ff", "wo", "kernel"), (64, 32), mesh) == PartitionSpec("model", "fsdp")
    assert partition_spec(("encoder", "rel_bias", "embedding"), (16, 4), mesh) == PartitionSpec()
    # a one-device mesh splits nothing
    assert partition_spec((*attn, "q_proj", "kernel"), (32, 32), _FakeMesh()) == PartitionSpec()


def test_a_one_device_mesh_runs_the_same_programs(tmp_path):
    sys.path.insert(0, str(HERE))
    from lm_core_helpers import save_tiny_without_torch

    from londi_jax.lm.registry import load_lm
    from londi_jax.lm.sharding import plan

    d = save_tiny_without_torch(tmp_path, "llama")
    one = load_lm(d, progress=False)
    mesh = Mesh(jax.devices()[:1], ("model",))
    sh = load_lm(d, progress=False, mesh=mesh)
    a = one.score(["go to the red ball"], [["go forward", "turn left"]]).logprobs[0]
    b = sh.score(["go to the red ball"], [["go forward", "turn left"]]).logprobs[0]
    assert jnp.allclose(a, b, atol=1e-6)
    p = plan(sh.state, mesh)
    assert p["split"] == 0 and p["replicated"] == [] and p["bytes_per_device"] == sh.num_params * 4
    # a model axis that divides nothing: each tensor it names keeps that dimension whole, and says so
    fake = plan(sh.state, _FakeMesh(fsdp=2, model=5))
    assert "layers.0.attn.q_proj.kernel (dim 1: 32 on model=5)" in fake["replicated"]
    assert not any(n.startswith("embed.") for n in fake["replicated"])  # 320 rows split 5 ways
    assert not any("norm" in name for name in fake["replicated"])  # norms are never split
    assert fake["split"] > 0 and sh.num_params * 4 / 10 < fake["bytes_per_device"] < sh.num_params * 4
    from londi_jax.utils.mesh import MeshError

    for bad in (None, 3, ""):
        with pytest.raises(MeshError, match="expected a jax.sharding.Mesh or a mesh shape such as 'fsdp=2,model=4'"):
            sh.shard(bad)
    assert sh.shard("model=1").mesh.shape["model"] == 1  # a shape string builds the mesh


SCRIPT = textwrap.dedent('''
    import json, sys, tempfile
    from pathlib import Path
    sys.path.insert(0, HERE)
    import jax, numpy as np
    from flax import nnx, traverse_util
    from lm_core_helpers import make_tokenizer, save_tiny_without_torch
    from londi_jax.lm.hf_loader import SafetensorsTensors, load_t5_directory
    from londi_jax.lm.registry import load_lm
    from londi_jax.lm.seq2seq import Seq2SeqLanguageModel
    from londi_jax.lm.sharding import plan
    from londi_jax.utils.mesh import make_mesh

    root = Path(tempfile.mkdtemp())
    mesh = make_mesh("fsdp=2,model=4")
    prompts = ["go to the red ball", "pick up the key and open the door", "you see a wall"]
    cands = [["go forward", "turn left"], ["toggle", "drop the box", "turn right"], ["pick up the key"]]
    out = {"devices": len(jax.devices())}

    def biggest(a, b):
        return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b))

    def flat(state):
        return traverse_util.flatten_dict(nnx.to_pure_dict(state))

    def whole_reads(load):  # names read whole from the safetensors files while loading
        reads, orig = [], SafetensorsTensors.__getitem__
        def spy(self, name):
            reads.append(name)
            return orig(self, name)
        SafetensorsTensors.__getitem__ = spy
        try:
            return load(), reads
        finally:
            SafetensorsTensors.__getitem__ = orig

    for kind in ("llama", "gemma3", "neox_parallel"):
        d = save_tiny_without_torch(root, kind)
        one = load_lm(d, progress=False)
        sh, reads = whole_reads(lambda: load_lm(d, progress=False, mesh=mesh))
        q = flat(sh.state)[("layers", 0, "attn", "q_proj", "kernel")]
        r = {"reads": sorted(set(reads)), "q_spec": list(q.sharding.spec),
             "q_shards": sorted({tuple(s.data.shape) for s in q.addressable_shards}),
             "q_devices": len({s.device for s in q.addressable_shards}), "q_shape": list(q.shape), "plan": plan(sh.state, mesh),
             "total_bytes": one.num_params * 4, "params_equal": biggest(list(flat(one.state).values()), list(flat(sh.state).values()))}
        s1, s2 = one.score(prompts, cands), sh.score(prompts, cands)
        r["score"] = biggest([np.concatenate(x.logprobs) for x in (s1,)], [np.concatenate(s2.logprobs)])
        r["greedy_equal"] = all((np.asarray(a) == np.asarray(b)).all() for a, b in zip(s1.greedy, s2.greedy))
        if kind == "llama":  # the other programs (logits, embed) are family-independent
            ids = [one.tokenizer(p)["input_ids"] for p in prompts]
            r["logits"] = biggest(one.logits(ids), sh.logits(ids))
            r["embed"] = biggest([one.embed(prompts)], [sh.embed(prompts)])
        g1, g2 = one.generate(prompts, 12), sh.generate(prompts, 12)
        r["generate_equal"] = g1.token_ids == g2.token_ids
        r["generated"] = sum(map(len, g1.token_ids))
        if kind == "llama":  # data-parallel rows as well: prompts split over data=2, each half on fsdp x model
            dp = load_lm(d, progress=False, mesh=make_mesh("data=2,fsdp=2,model=2"))
            many = prompts * 3  # 6 rows: buckets of 8, split 4 + 4
            r["dp_score"] = biggest([np.concatenate(one.score(many, cands * 3).logprobs)],
                                    [np.concatenate(dp.score(many, cands * 3).logprobs)])
            r["dp_generate_equal"] = one.generate(many, 12).token_ids == dp.generate(many, 12).token_ids
            r["dp_embed"] = biggest([one.embed(many)], [dp.embed(many)])
        out[kind] = r

    # T5: encoder-decoder scoring and generation on the same mesh (its tiny checkpoint is written by
    # transformers' PyTorch T5: skipped, and said so, where PyTorch is not installed)
    import importlib.util
    if importlib.util.find_spec("torch") is not None:
        from test_t5 import save_tiny_t5
        d, _ = save_tiny_t5(root, "flan_t5")
        tok = make_tokenizer(str(root))
        m1, c1 = load_t5_directory(d, progress=False)
        m2, c2 = load_t5_directory(d, progress=False, mesh=mesh)
        t1, t2 = Seq2SeqLanguageModel(c1, m1, tok), Seq2SeqLanguageModel(c2, m2, tok, mesh=mesh)
        wo = flat(t2.state)[("decoder", "layers", 0, "ff", "wo", "kernel")]
        out["t5"] = {"score": biggest([np.concatenate(t1.score(prompts, cands).logprobs)],
                                      [np.concatenate(t2.score(prompts, cands).logprobs)]),
                     "generate_equal": t1.generate(prompts, 8).token_ids == t2.generate(prompts, 8).token_ids,
                     "wo_spec": list(wo.sharding.spec)}

    # LoRA behaviour cloning: batches on data=2, parameters on fsdp=2 x model=2
    from londi_jax.agents.bc import BCConfig, BCTrainer, bc_data_from_steps
    lm = load_lm(root / "llama", progress=False)
    n = 16
    data = bc_data_from_steps([prompts[i % 3] + f" step {i}" for i in range(n)], [cands[i % 3] for i in range(n)],
                              [cands[i % 3][0] for i in range(n)], ["k"] * n, lm.tokenizer)
    cfg = BCConfig(finetune="lora", batch_size=8, epochs=2, learning_rate=1e-2, warmup_steps=0, loss="choice")
    bc_mesh = make_mesh("data=2,fsdp=2,model=2")
    a = BCTrainer(lm.model, lm.tokenizer, data, cfg)
    b = BCTrainer(lm.model, lm.tokenizer, data, cfg, mesh=bc_mesh)
    ra = a.train(progress=False)
    ckpt = tempfile.mkdtemp()
    rb = b.train(checkpoint_dir=ckpt, progress=False)
    st = b.init_state()
    lora_a = flat(st["trainable"])[("layers", 0, "attn", "q_proj", "lora", "lora_a")]
    mu = [x for x in jax.tree.leaves(st["opt"]) if getattr(x, "shape", None) == lora_a.shape]
    out["bc"] = {"loss": [[h["train_loss"] for h in r.history] for r in (ra, rb)],
                 "params": biggest(jax.tree.leaves(nnx.state(ra.adapted, nnx.LoRAParam)),
                                   jax.tree.leaves(nnx.state(rb.adapted, nnx.LoRAParam))),
                 "lora_a_spec": list(lora_a.sharding.spec),
                 "opt_follows": all(m.sharding.spec == lora_a.sharding.spec for m in mu) and len(mu) >= 2,
                 "resumed_from": BCTrainer(lm.model, lm.tokenizer, data, cfg, mesh=make_mesh("data=2,model=4"))
                                 .train(checkpoint_dir=ckpt, progress=False).resumed_from}
    # one action list shared by every row (BabyAI-Text's six): replicated, whatever the data axis
    from londi_jax.agents.bc import BCData
    acts = [c for cs in cands for c in cs]  # 6
    shared = BCData([np.asarray(lm.tokenizer(prompts[i % 3] + f" step {i}")["input_ids"], np.int32) for i in range(n)],
                    np.arange(n, dtype=np.int32) % 6, ["k"] * n)
    out["bc"]["shared_loss"] = [[h["train_loss"] for h in BCTrainer(lm.model, lm.tokenizer, shared, cfg, actions=acts,
                                                                    mesh=m).train(progress=False).history]
                                for m in (None, make_mesh("data=4,model=2"))]
    print("RESULT " + json.dumps(out))
''')


@pytest.mark.slow
def test_sharded_lms_equal_the_one_device_model_on_8_devices(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    r = subprocess.run([sys.executable, "-c", f"HERE = {str(HERE)!r}\n" + SCRIPT], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.split("RESULT ", 1)[1])
    (tmp_path / "out.json").write_text(json.dumps(out, indent=1))
    assert out["devices"] == 8
    for kind in ("llama", "gemma3", "neox_parallel"):
        r = out[kind]
        assert r["params_equal"] == 0.0, kind  # loading in shards changes no value
        assert r["q_spec"] == ["fsdp", "model"] and r["q_devices"] == 8
        rows, cols = r["q_shape"]
        assert r["q_shards"] == [[rows // 2, cols // 4]], r  # (hidden, heads x head_dim) over fsdp=2 x model=4
        # every matrix splits 8 ways or (a dimension the axis does not divide) fewer: well under half per device
        assert r["plan"]["split"] > 0 and r["plan"]["bytes_per_device"] < r["total_bytes"] / 2, r["plan"]
        assert r["score"] < 1e-4 and r.get("logits", 0) < 1e-4 and r.get("embed", 0) < 1e-4, (kind, r)
        assert r["greedy_equal"] and r["generate_equal"] and r["generated"] > 0, kind
    assert "logits" in out["llama"] and "embed" in out["llama"]
    assert out["llama"]["dp_score"] < 1e-4 and out["llama"]["dp_embed"] < 1e-4 and out["llama"]["dp_generate_equal"]
    # every llama / gemma tensor was read slice by slice; NeoX reads only its fused qkv tensors whole
    assert out["llama"]["reads"] == [] and out["gemma3"]["reads"] == []
    assert out["neox_parallel"]["reads"] and all("query_key_value" in n for n in out["neox_parallel"]["reads"])
    if importlib.util.find_spec("torch") is not None:  # the T5 checkpoint needs PyTorch to write
        assert out["t5"]["score"] < 1e-4 and out["t5"]["generate_equal"]
        assert out["t5"]["wo_spec"] == ["model", "fsdp"]
    bc = out["bc"]
    assert len(bc["loss"][0]) == 2 and bc["loss"][0] == pytest.approx(bc["loss"][1], rel=1e-4)
    assert bc["params"] < 5e-4  # Adam steps amplify the rounding of sharded sums a little
    assert bc["lora_a_spec"] == ["fsdp"] and bc["opt_follows"]
    assert bc["resumed_from"] == 4  # restored onto another mesh shape, nothing left to run
    assert bc["shared_loss"][0] == pytest.approx(bc["shared_loss"][1], rel=1e-4)  # 6 actions over data=4


def test_bc_refuses_a_batch_the_data_axis_does_not_split(tmp_path):
    sys.path.insert(0, str(HERE))
    from lm_core_helpers import save_tiny_without_torch

    from londi_jax.agents.bc import BCConfig, BCError, BCTrainer, bc_data_from_steps
    from londi_jax.lm.registry import load_lm

    lm = load_lm(save_tiny_without_torch(tmp_path, "llama"), progress=False)
    data = bc_data_from_steps(["go"] * 8, [["turn left", "go forward"]] * 8, ["go forward"] * 8, ["k"] * 8,
                              lm.tokenizer)
    fake = type("M", (), {"shape": {"data": 3, "fsdp": 1, "model": 1}})()
    with pytest.raises(BCError, match="batch_size 8 does not split over the mesh's data axis \\(3 devices\\); "
                                      "use a multiple of 3"):
        BCTrainer(lm.model, lm.tokenizer, data, BCConfig(batch_size=8), mesh=fake)


@pytest.mark.slow
def test_two_processes_score_and_generate_with_one_model_split_over_both(capsys, tmp_path):
    """Two processes with 4 virtual CPU devices each hold one tiny Llama split fsdp=2 x model=4
    (each process loads only its devices' slices); ``lm score`` and ``lm generate`` print what one
    process prints, and only process 0 prints."""
    sys.path.insert(0, str(HERE))
    from lm_core_helpers import save_tiny_without_torch
    from processes import json_result, run_processes

    from londi_jax.cli import main

    d = save_tiny_without_torch(tmp_path, "llama")
    calls = [["lm", "score", "--model", str(d), "--prompt", "go to the red ball", "--candidate", "go forward",
              "--candidate", "turn left", "--candidate", "pick up the key", "--json"],
             ["lm", "generate", "--model", str(d), "--prompt", "you see a red ball", "--max-new-tokens", "10",
              "--json"]]
    for argv in calls:
        assert main(argv) == 0
        one = json.loads(capsys.readouterr().out)
        outs = run_processes([*argv, "--mesh", "fsdp=2,model=4"], tmp_path)
        two = json_result(outs[0])
        assert "{" not in outs[1]
        assert two["devices"]["processes"] == 2 and two["devices"]["mesh"] == "fsdp=2,model=4"
        if "candidates" in one:
            assert two["best"] == one["best"]
            for a, b in zip(one["candidates"], two["candidates"], strict=True):
                assert (b["text"], b["num_tokens"]) == (a["text"], a["num_tokens"])
                assert b["logprob"] == pytest.approx(a["logprob"], abs=1e-4)
        else:
            assert two["token_ids"] == one["token_ids"] and two["text"] == one["text"] and one["num_tokens"] == 10


PIPELINE_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    from londi_jax.experiments.config import with_overrides
    from londi_jax.experiments.pipeline import Pipeline, read_run_config

    run = sys.argv[1]
    whole = Pipeline.from_run_dir(run).model("deepthink")
    p = Pipeline(with_overrides(read_run_config(run), {"mesh": "data=2,model=4"}), run)
    split = p.model("deepthink")
    prompts = ["go to the red ball", "pick up the key"]
    cands = [["go forward", "turn left", "toggle"], ["pick up", "drop"]]
    a, b = whole.score(prompts, cands), split.score(prompts, cands)
    q = split.state["layers"][0]["attn"]["q_proj"]["kernel"][...]
    print("RESULT " + json.dumps({"grid_mesh": dict(p.mesh.shape), "lm_mesh": dict(split.mesh.shape),
                                  "whole_mesh": whole.mesh is None, "q_spec": list(q.sharding.spec),
                                  "diff": float(max(np.max(np.abs(x - y)) for x, y in zip(a.logprobs, b.logprobs)))}))
''')


@pytest.mark.slow
def test_a_pipeline_with_a_model_axis_loads_its_lms_in_shards(tiny_run, tmp_path):
    """``--mesh data=2,model=4`` on a finished tiny run: its DEEPTHINK loads split over model (the
    switcher grids keep data) and scores as the one-device model does."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    r = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, str(tiny_run.path)], capture_output=True, text=True,
                       env={**env, "JAX_PLATFORMS": "cpu"}, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert out["grid_mesh"] == {"data": 2, "fsdp": 1, "model": 4} == out["lm_mesh"] and out["whole_mesh"]
    assert "model" in out["q_spec"] and out["diff"] < 1e-4
