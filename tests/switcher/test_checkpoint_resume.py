"""Resumable switcher training: a run interrupted part-way (exception in a callback, or a real
subprocess killed with SIGKILL) and resumed from its last checkpoint ends bit-for-bit equal to an
uninterrupted run; resuming into a different config / sweep size / learner is refused clearly.

Run as a script (``python test_checkpoint_resume.py worker DIR KILL_AT``) it is the worker that
the SIGKILL test starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from londi_jax.switcher.checkpoint import CheckpointMismatchError, CheckpointStore, train_resumable
from londi_jax.switcher.config import HParams, SwitcherConfig
from londi_jax.switcher.offline import grid_hparams
from londi_jax.switcher.toy import ToyEnv
from londi_jax.switcher.train import make_train

ENV = ToyEnv()
ENV_PARAMS = ENV.default_params(max_steps=16)
TOTAL, EVERY = 24, 8


def _config(**kw) -> SwitcherConfig:
    base = dict(obs_dim=ENV.obs_dim, hidden=(16,), num_envs=4, num_updates=TOTAL, buffer_size=128,
                batch_size=16, learning_starts=16, use_budget=True, rollout_len=4,
                num_minibatches=2, num_epochs=1)
    base.update(kw)
    return SwitcherConfig(**base)


_TRAINERS: dict = {}


def _trainer(config: SwitcherConfig | None = None, env_params=None):
    """One trainer per config, so its jitted functions compile once per test module."""
    config = config or _config()
    if env_params is not None:
        return make_train(config, ENV, env_params)
    if config not in _TRAINERS:
        _TRAINERS[config] = make_train(config, ENV, ENV_PARAMS)
    return _TRAINERS[config]


HP_BASE = dict(target_period=5)
HP = HParams.create(c=0.05, budget=2, **HP_BASE)


def _leaves_equal(a, b) -> None:
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.atleast_1d(np.asarray(x)), np.atleast_1d(np.asarray(y))
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))


class _Stop(Exception):
    pass


def _stop_at(step_to_stop: int):
    def cb(step, _state):
        if step == step_to_stop:
            raise _Stop

    return cb


def _run(ckpt, config=None, hparams=HP, rng=None, **kw):
    return train_resumable(_trainer(config), hparams,
                           jax.random.key(7) if rng is None else rng, ckpt,
                           every_updates=EVERY, total_updates=TOTAL, progress=False, **kw)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    out = _run(d / "ck")
    assert out.resumed_from == 0
    return out


def test_interrupted_dqn_run_resumes_bitwise(tmp_path, uninterrupted):
    with pytest.raises(_Stop):
        _run(tmp_path / "ck", on_checkpoint=_stop_at(2 * EVERY))
    with CheckpointStore(tmp_path / "ck") as store:
        assert store.all_steps() == [EVERY, 2 * EVERY]
    resumed = _run(tmp_path / "ck")
    assert resumed.resumed_from == 2 * EVERY
    assert int(resumed.train_state.update) == TOTAL
    assert resumed.metrics["loss"].shape == (TOTAL - 2 * EVERY,)
    # learning happened (not a trivially equal zero state)
    assert float(np.abs(np.asarray(uninterrupted.metrics["loss"])).sum()) > 0
    _leaves_equal(uninterrupted.train_state, resumed.train_state)
    # the metadata travelled with the checkpoint
    with CheckpointStore(tmp_path / "ck") as store:
        meta = store.read_metadata()
    assert meta["kind"] == "switcher-train/dqn"
    assert meta["config"]["switcher"]["hidden"] == [16]
    assert meta["hparams"]["budget"] == 2


def test_interrupted_pqn_sweep_resumes_bitwise(tmp_path):
    config = _config(learner="pqn", layer_norm=True)
    hp, _ = grid_hparams([0.0, 0.2], [1, 3], **HP_BASE)
    rng = jax.random.split(jax.random.key(3), 4)
    full = _run(tmp_path / "full", config, hp, rng)
    with pytest.raises(_Stop):
        _run(tmp_path / "cut", config, hp, rng, on_checkpoint=_stop_at(EVERY))
    resumed = _run(tmp_path / "cut", config, hp, rng)
    assert resumed.resumed_from == EVERY
    assert resumed.metrics["loss"].shape == (4, TOTAL - EVERY)
    _leaves_equal(full.train_state, resumed.train_state)
    # members really differ (the sweep is not 4 copies of one run)
    p = jax.tree.leaves(full.train_state.learner.params)[0]
    assert not np.array_equal(np.asarray(p[0]), np.asarray(p[1]))


def test_sigkilled_subprocess_resumes_bitwise(tmp_path, uninterrupted):
    ckpt = tmp_path / "ck"
    proc = subprocess.run([sys.executable, __file__, "worker", str(ckpt), str(2 * EVERY)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with CheckpointStore(ckpt) as store:
        assert store.latest_step() == 2 * EVERY
    resumed = _run(ckpt)
    assert resumed.resumed_from == 2 * EVERY
    _leaves_equal(uninterrupted.train_state, resumed.train_state)


def test_resume_into_mismatched_run_names_the_difference(tmp_path, uninterrupted):
    with pytest.raises(_Stop):
        _run(tmp_path / "ck", on_checkpoint=_stop_at(EVERY))
    with pytest.raises(CheckpointMismatchError, match=r"config\.switcher\.hidden: checkpoint has \[16\], requested \[32\]"):
        _run(tmp_path / "ck", _config(hidden=(32,)))
    with pytest.raises(CheckpointMismatchError, match=r"kind \(learner\).*'switcher-train/dqn'.*'switcher-train/pqn'"):
        _run(tmp_path / "ck", _config(learner="pqn"))
    hp, _ = grid_hparams([0.05, 0.1], [2], **HP_BASE)
    with pytest.raises(CheckpointMismatchError, match=r"hparams\.c: checkpoint has shape \[\] \(sweep of 1\), requested shape \[2\] \(sweep of 2\)"):
        _run(tmp_path / "ck", hparams=hp, rng=jax.random.split(jax.random.key(7), 2))
    with pytest.raises(CheckpointMismatchError, match=r"config\.env_params\.max_steps"):
        train_resumable(_trainer(env_params=ENV.default_params(max_steps=20)), HP, jax.random.key(7),
                        tmp_path / "ck", every_updates=EVERY, total_updates=TOTAL, progress=False)


def _worker(ckpt: str, kill_at: int) -> None:
    def die(step, _state):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    _run(ckpt, on_checkpoint=die)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "worker":
    _worker(sys.argv[2], int(sys.argv[3]))
