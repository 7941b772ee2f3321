"""The switcher toy chain (``londi_jax.switcher.toy``) as batched torch tensors, with auto-reset,
and the usual PyTorch training loops (one configuration at a time) for the throughput benchmark."""

from __future__ import annotations

import numpy as np
import torch

from torch_reference.learners import TorchDQN, TorchPQN


class TorchToy:
    """``N`` toy chains stepping in lockstep; same dynamics as the JAX ``ToyEnv``."""

    def __init__(self, probs: np.ndarray, start_probs: np.ndarray, max_steps: int, num_envs: int,
                 seed: int = 0):
        self.probs = torch.as_tensor(np.asarray(probs), dtype=torch.float32)  # [2, S, 3]
        self.cum = torch.cumsum(self.probs, -1)
        self.cells = self.probs.shape[1]
        self.start = torch.as_tensor(np.asarray(start_probs), dtype=torch.float32)
        self.max_steps = int(max_steps)
        self.n = num_envs
        self.gen = torch.Generator().manual_seed(seed)
        self.pos = torch.multinomial(self.start, num_envs, replacement=True, generator=self.gen)
        self.t = torch.zeros(num_envs, dtype=torch.long)
        self.eye = torch.cat([torch.eye(self.cells), torch.zeros(1, self.cells)])  # goal -> zeros

    def obs(self) -> torch.Tensor:
        return self.eye[self.pos]

    def step(self, g: torch.Tensor):
        """Returns ``(next_obs, reward, terminated, truncated)``; finished envs reset in place."""
        cum = self.cum[g, self.pos]
        u = torch.rand(self.n, generator=self.gen)
        outcome = (u[:, None] > cum).sum(-1)
        pos = torch.where(outcome == 0, self.pos + 1, self.pos)
        goal = pos == self.cells
        term = goal | (outcome == 2)
        self.t += 1
        trunc = (self.t >= self.max_steps) & ~term
        next_obs = self.eye[pos]
        done = term | trunc
        fresh = torch.multinomial(self.start, self.n, replacement=True, generator=self.gen)
        self.pos = torch.where(done, fresh, pos)
        self.t = torch.where(done, torch.zeros_like(self.t), self.t)
        return next_obs, goal.float(), term, trunc


def _eps(step: int, total: int, start: float = 1.0, end: float = 0.05, frac: float = 0.5) -> float:
    return start + min(step / max(frac * total, 1.0), 1.0) * (end - start)


def run_dqn(learner: TorchDQN, env: TorchToy, num_updates: int, total_updates: int,
            learning_starts: int, updates_per_step: int = 1, start: int = 0) -> int:
    """``num_updates`` DQN updates (= one lockstep env step + gradient steps once the buffer
    holds ``learning_starts`` transitions), like ``Trainer._dqn_update``. Returns gradient steps."""
    obs = env.obs()
    can = torch.ones(env.n, dtype=torch.bool)
    grads = 0
    for i in range(start, start + num_updates):
        g = learner.act(obs, can, _eps(i, total_updates))
        next_obs, r, term, trunc = env.step(g)
        learner.add({"obs": obs, "g": g, "reward": r, "next_obs": next_obs, "terminated": term,
                     "next_can_call": can})
        if learner.size >= max(learning_starts, learner.spec.batch_size):
            for _ in range(updates_per_step):
                learner.update()
                grads += 1
        obs = env.obs()
    return grads


def run_pqn(learner: TorchPQN, env: TorchToy, num_updates: int, total_updates: int,
            start: int = 0) -> None:
    """``num_updates`` PQN updates (= a ``rollout_len`` x ``N`` rollout + the Q(lambda) update)."""
    s = learner.spec
    T, n, d = s.rollout_len, env.n, env.cells
    obs_buf = torch.zeros(T, n, d)
    nxt_buf = torch.zeros(T, n, d)
    g_buf = torch.zeros(T, n, dtype=torch.long)
    r_buf, term_buf, trunc_buf = torch.zeros(T, n), torch.zeros(T, n), torch.zeros(T, n)
    can = torch.ones(T, n, dtype=torch.bool)
    for i in range(start, start + num_updates):
        eps = _eps(i, total_updates)
        for t in range(T):
            obs = env.obs()
            g = learner.act(obs, can[t], eps)
            next_obs, r, term, trunc = env.step(g)
            obs_buf[t], nxt_buf[t], g_buf[t] = obs, next_obs, g
            r_buf[t], term_buf[t], trunc_buf[t] = r, term.float(), trunc.float()
        learner.update({"obs": obs_buf, "next_obs": nxt_buf, "g": g_buf, "reward": r_buf,
                        "terminated": term_buf, "truncated": trunc_buf, "next_can_call": can})
