"""Device meshes (utils/mesh.py) and sweeps sharded over them.

The equality tests run in a subprocess that sees 8 virtual CPU devices (the device count is fixed
when JAX starts): every sharded result is compared with the one-device run of the same members
in that process: discrete results exactly, floats to float32 rounding (XLA may vectorise a batch
of members differently from one member per device).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from processes import json_result, run_processes

from londi_jax.cli import main
from londi_jax.utils.errors import UnknownNameError
from londi_jax.utils.mesh import (AXES, MeshError, format_mesh, make_mesh, pad_members, parse_mesh,
                                  shard_members, unpad)


def test_parse_mesh_reads_axes_and_refuses_bad_ones():
    assert parse_mesh("data=4,model=2") == {"data": 4, "model": 2}
    assert parse_mesh(" fsdp = 2 , data=-1 ") == {"fsdp": 2, "data": -1}
    assert parse_mesh(None) == {} and parse_mesh("") == {}
    with pytest.raises(UnknownNameError, match="unknown mesh axis 'tensor'; known mesh axes: data, fsdp, model"):
        parse_mesh("tensor=2")
    for bad, msg in [("data", "not AXIS=SIZE"), ("data=two", "not an integer"), ("data=0", "positive integer"),
                     ("data=2,data=2", "given twice"), ("data=-1,model=-1", "at most one")]:
        with pytest.raises(MeshError, match=msg):
            parse_mesh(bad)


def test_make_mesh_on_one_device_names_the_count_and_the_fix():
    mesh = make_mesh()
    assert dict(mesh.shape) == {a: 1 for a in AXES}
    assert format_mesh(mesh) == "data=1"
    with pytest.raises(MeshError, match=r"needs 2 devices.*1 visible.*xla_force_host_platform_device_count"):
        make_mesh("data=2")


def test_padding_copies_the_last_member_and_unpad_drops_it():
    keys = jax.random.split(jax.random.key(0), 3)
    tree = {"x": jnp.arange(6.0).reshape(3, 2), "k": keys}
    padded, n = pad_members(tree, 4)
    assert n == 3 and padded["x"].shape == (4, 2)
    np.testing.assert_array_equal(padded["x"][3], tree["x"][2])
    assert np.array_equal(jax.random.key_data(padded["k"][3]), jax.random.key_data(keys[2]))
    back = unpad(padded, n)
    np.testing.assert_array_equal(back["x"], tree["x"])
    assert pad_members(tree, 3)[0] is tree  # already a multiple: untouched
    with pytest.raises(MeshError, match="disagree on the member count"):
        pad_members({"a": jnp.zeros(2), "b": jnp.zeros(3)}, 2)
    assert shard_members(tree, None) == (tree, 3)


def test_a_bad_mesh_is_refused_before_any_work(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["toy-sweep", "--mesh", "tensor=2"])
    assert exc.value.code == 2 and "argument --mesh: unknown mesh axis 'tensor'" in capsys.readouterr().err
    assert main(["toy-sweep", "--mesh", "data=3", "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "needs 3 devices" in err and "Traceback" not in err
    out = tmp_path / "run"
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--mesh", "data=2", "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "needs 2 devices" in err and not out.exists()  # refused before any work: no --out left behind
    from londi_jax.experiments.config import preset, with_overrides
    from londi_jax.utils.fields import ConfigFieldError

    with pytest.raises(ConfigFieldError, match="invalid value for mesh"):
        with_overrides(preset("tiny"), {"mesh": "data=x"})


SCRIPT = textwrap.dedent('''
    import json, tempfile
    import jax, jax.numpy as jnp, numpy as np
    from londi_jax.switcher.checkpoint import train_resumable
    from londi_jax.switcher.offline import grid_hparams, train_offline_grid
    from londi_jax.switcher.sweep import SweepSpec, run_sweep
    from londi_jax.switcher.toy_bench import TOY_HPARAMS, toy_trainer
    from londi_jax.switcher.sweep import stack_hparams
    from londi_jax.switcher.config import SwitcherConfig
    from londi_jax.switcher.offline import OfflineDataset
    from londi_jax.utils.mesh import make_mesh, shard_members

    out = {"devices": len(jax.devices())}
    def diff(a, b):  # largest absolute difference over two pytrees of the same structure
        la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
        assert len(la) == len(lb) and all(np.shape(x) == np.shape(y) for x, y in zip(la, lb))
        return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(la, lb))
    def rows_diff(t, u):  # discrete columns must agree exactly; the largest relative float difference
        worst = 0.0
        for a, b in zip(t.to_records(), u.to_records(), strict=True):
            assert a.keys() == b.keys()
            for k in a:
                if isinstance(a[k], float):
                    worst = max(worst, abs(a[k] - b[k]) / max(abs(a[k]), 1e-6))
                else:
                    assert a[k] == b[k], (k, a[k], b[k])
        return worst

    # 1. a toy sweep: 6 members (3 c x 2 budgets), padded to 8 on data=8
    trainer = toy_trainer("dqn", use_budget=True, num_updates=60)
    spec = SweepSpec(params={"c": [0.1, 0.3, 0.5], "budget": [1, 2]}, seeds=1, base=TOY_HPARAMS["dqn"])
    kw = dict(eval_episodes=32, eval_max_steps=32, progress=False, chunk=60)
    one = run_sweep(trainer, spec, **kw)
    out["sweep"] = {}
    for shape in ("data=8",):
        t = run_sweep(trainer, spec, mesh=make_mesh(shape), **kw)
        out["sweep"][shape] = {"rel_diff": rows_diff(one, t), "layout": t.layout}

    # 2. the members really are spread: a sharded train state lives on all 8 devices
    from londi_jax.switcher.sweep import train_many
    hp = stack_hparams([{"c": c} for c in (0.1, 0.2, 0.3, 0.4, 0.5)], TOY_HPARAMS["dqn"])
    keys = jax.random.split(jax.random.key(1), 5)
    (k8, hp8), n = shard_members((keys, hp), make_mesh("data=8"))
    ts, _ = train_many(trainer, k8, hp8, num_updates=20, progress=False)
    leaf = jax.tree.leaves(ts)[0]  # 5 members padded to 8: one row on each of the 8 devices
    out["state_spec"] = str(leaf.sharding.spec)
    out["state_rows"] = sorted({int(s.data.shape[0]) for s in leaf.addressable_shards})
    out["state_devices"] = len({s.device for s in leaf.addressable_shards})

    # 3. an offline switcher grid (the pipeline's): 5 members on data=8 and on one device
    rng = np.random.default_rng(0)
    N, D = 256, 6
    ds = OfflineDataset(obs=jnp.asarray(rng.normal(size=(N, D)), jnp.float32),
                        reward=jnp.asarray(rng.normal(size=(N, 2)), jnp.float32),
                        next_obs=jnp.asarray(rng.normal(size=(N, 2, D)), jnp.float32),
                        terminated=jnp.asarray(rng.random((N, 2)) < 0.2))
    cfg = SwitcherConfig(obs_dim=D, hidden=(16,), learner="dqn", num_updates=30, batch_size=32,
                         buffer_size=32, learning_starts=1)
    hpo, _ = grid_hparams([0.05, 0.1, 0.2, 0.4, 0.8], [0])
    ko = jax.random.split(jax.random.key(2), 5)
    a = train_offline_grid(cfg, ko, hpo, ds)
    b = train_offline_grid(cfg, ko, hpo, ds, make_mesh("data=8"))
    out["offline_diff"] = diff(a, b)

    # 4. resumable sweep on data=8: stopped after 20 of 60 updates and resumed, it ends bit for bit
    #    where the uninterrupted data=8 run ends; its checkpoint (real members only) restores onto
    #    data=2 x model=2 (another padding, a second axis) bit for bit. (Across layouts runs agree to rounding, which RL
    #    training can amplify over many updates: a near-tie in one member's greedy choice flips.)
    class Stop(Exception):
        pass
    saved = {}
    def stop(step, state):
        saved["state"] = jax.device_get(state)
        raise Stop
    run = lambda d, mesh, **kw: train_resumable(trainer, hp, keys, d, every_updates=20, progress=False,
                                                mesh=make_mesh(mesh), **kw)
    whole = run(tempfile.mkdtemp(), "data=8", total_updates=60)
    d = tempfile.mkdtemp()
    try:
        run(d, "data=8", total_updates=60, on_checkpoint=stop)
    except Stop:
        pass
    moved = run(d, "data=2,model=2", total_updates=20)  # restore only: no update runs
    resumed = run(d, "data=8", total_updates=60)
    ref = train_resumable(trainer, hp, keys, tempfile.mkdtemp(), every_updates=20, total_updates=60, progress=False)
    out["resume"] = {"from": resumed.resumed_from, "same_layout": diff(resumed.train_state.learner.params,
                                                                      whole.train_state.learner.params),
                     "moved": diff(moved.train_state.learner.params, jax.tree.map(lambda x: x[:5], saved["state"].learner.params)),
                     "moved_devices": len(jax.tree.leaves(moved.train_state)[0].sharding.device_set),
                     "one_device": diff(whole.train_state.learner.params, ref.train_state.learner.params),
                     "members": int(jax.tree.leaves(resumed.train_state)[0].shape[0])}
    print("RESULT " + json.dumps(out))
''')


def _eight_devices_env() -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.mark.slow
def test_sharded_sweeps_equal_the_one_device_run_on_8_devices(tmp_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=_eight_devices_env(),
                       cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert out["devices"] == 8
    # a member's arithmetic is the same on every layout, but XLA vectorises a vmapped batch of 6
    # members differently from one of 1 per device: equal to float32 rounding, not always bitwise
    assert out["sweep"]["data=8"]["layout"] == {"members": 6, "padded": 2, "mesh": "data=8", "devices": 8}
    assert out["sweep"]["data=8"]["rel_diff"] < 1e-4, out["sweep"]
    assert out["state_devices"] == 8 and out["state_rows"] == [1] and "data" in out["state_spec"]
    assert out["offline_diff"] < 1e-5
    res = out["resume"]
    assert res["from"] == 20 and res["members"] == 5
    assert res["same_layout"] == 0.0 and res["moved"] == 0.0 and res["moved_devices"] == 4
    assert res["one_device"] < 1e-4


def test_a_bad_multi_process_launch_is_refused(capsys):
    for argv, msg in [(["--num-processes", "2"], "need --coordinator HOST:PORT"),
                      (["--coordinator", "127.0.0.1:1", "--num-processes", "2"], "needs --num-processes and --process-id"),
                      (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
                       r"--process-id must be in \[0, 2\)")]:
        assert main([*argv, "toy-sweep", "--no-progress"]) == 2
        assert re.search(msg, capsys.readouterr().err)


@pytest.mark.slow
def test_two_processes_on_loopback_run_one_sweep_with_the_one_device_rows(capsys, tmp_path):
    """Two processes with 4 virtual CPU devices each (gloo collectives) form one 8-device mesh;
    process 0 prints the sweep, process 1 prints nothing."""
    args = ["toy-sweep", "--c", "0.1", "0.3", "0.5", "--seeds", "1", "--updates", "100", "--eval-episodes", "32",
            "--no-progress", "--json"]
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)
    outs = run_processes([*args, "--mesh", "data=8"], tmp_path)
    two = json_result(outs[0])
    assert "{" not in outs[1]  # only process 0 prints results
    assert two["devices"]["processes"] == 2 and two["devices"]["devices"] == 8
    assert two["layout"] == {"members": 3, "padded": 5, "mesh": "data=8", "devices": 8}
    assert [{k: v for k, v in r.items() if not isinstance(v, float)} for r in two["rows"]] == \
        [{k: v for k, v in r.items() if not isinstance(v, float)} for r in one["rows"]]
    for a, b in zip(one["rows"], two["rows"]):
        for k, v in a.items():
            if isinstance(v, float):
                assert b[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


RESUME_SCRIPT = textwrap.dedent('''
    import json, sys
    from londi_jax.utils.distributed import initialize
    initialize(local_devices=4)
    import jax, numpy as np
    from londi_jax.switcher.checkpoint import train_resumable
    from londi_jax.switcher.sweep import stack_hparams
    from londi_jax.switcher.toy_bench import TOY_HPARAMS, toy_trainer
    from londi_jax.utils.mesh import make_mesh, to_host

    ckpt = sys.argv[1]
    trainer = toy_trainer("dqn", use_budget=True, num_updates=60)
    hp = stack_hparams([{"c": c} for c in (0.1, 0.2, 0.3, 0.4, 0.5)], TOY_HPARAMS["dqn"])
    keys = jax.random.split(jax.random.key(1), 5)
    class Stop(Exception):
        pass
    def stop(step, state):
        raise Stop
    run = lambda **kw: train_resumable(trainer, hp, keys, ckpt, every_updates=20, total_updates=60, progress=False,
                                       mesh=make_mesh("data=8"), **kw)
    try:
        run(on_checkpoint=stop)  # stopped after its first checkpoint (update 20)
    except Stop:
        pass
    res = run()
    params = to_host(res.train_state.learner.params)
    if jax.process_index() == 0:
        print("RESULT " + json.dumps({"resumed_from": res.resumed_from, "devices": len(jax.devices()),
                                      "params": [np.asarray(x, np.float64).tolist() for x in jax.tree.leaves(params)]}))
''')


@pytest.mark.slow
def test_two_processes_checkpoint_their_shards_and_resume(tmp_path):
    """A sharded resumable sweep over 2 processes x 4 devices: both processes write the checkpoint
    (orbax: one shard directory per process), a stopped run resumes from it, and the result is the
    one-device run's (to float32 rounding, as on one process)."""
    from londi_jax.switcher.checkpoint import train_resumable
    from londi_jax.switcher.sweep import stack_hparams
    from londi_jax.switcher.toy_bench import TOY_HPARAMS, toy_trainer

    ckpt = tmp_path / "ckpt"
    outs = run_processes([str(ckpt)], tmp_path, script=RESUME_SCRIPT)
    got = json.loads(outs[0].split("RESULT ", 1)[1])
    assert "RESULT" not in outs[1]
    assert got["resumed_from"] == 20 and got["devices"] == 8
    written = {p.name for p in ckpt.rglob("*") if p.is_dir() and "process_" in p.name}
    assert any(n.endswith("process_0") for n in written) and any(n.endswith("process_1") for n in written), written
    trainer = toy_trainer("dqn", use_budget=True, num_updates=60)
    hp = stack_hparams([{"c": c} for c in (0.1, 0.2, 0.3, 0.4, 0.5)], TOY_HPARAMS["dqn"])
    ref = train_resumable(trainer, hp, jax.random.split(jax.random.key(1), 5), tmp_path / "one", every_updates=20,
                          total_updates=60, progress=False)
    want = [np.asarray(x, np.float64) for x in jax.tree.leaves(jax.device_get(ref.train_state.learner.params))]
    assert len(want) == len(got["params"])
    for a, b in zip(want, got["params"]):
        assert np.asarray(b).shape == a.shape
        np.testing.assert_allclose(np.asarray(b), a, atol=1e-4)
