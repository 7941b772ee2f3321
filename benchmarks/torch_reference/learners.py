"""PyTorch reference of the switcher learners (benchmark/test only; never imported by londi_jax).

Same maths as ``londi_jax.switcher.dqn`` / ``pqn``: the MLP ``[Linear -> (LayerNorm) -> ReLU]*
-> Linear(2)``, Adam behind optax-style global-norm clipping, 0.5 * mean squared TD error,
Double-DQN targets with the LONDI-B admissibility mask, hard target copies every
``target_period`` updates; PQN's backward Peng lambda-returns, epochs x shuffled minibatches.
One configuration per object: a sweep is the usual Python loop over objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

NEG_INF = -1e30


class TorchQNet(nn.Module):
    """The switch Q-network, layer for layer like ``londi_jax.switcher.network.QNetwork``."""

    def __init__(self, in_dim: int, hidden: Sequence[int], layer_norm: bool):
        super().__init__()
        dims = (in_dim, *hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        # flax's LayerNorm default epsilon is 1e-6 (torch's is 1e-5)
        self.norms = nn.ModuleList(nn.LayerNorm(b, eps=1e-6) for b in hidden) if layer_norm else None
        self.head = nn.Linear(dims[-1], 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = torch.relu(x)
        return self.head(x)

    @torch.no_grad()
    def load_flax(self, pure: Mapping) -> None:
        """Copy weights from ``nnx.to_pure_dict(params)`` (kernel (in, out) -> weight (out, in))."""
        for i, layer in enumerate(self.layers):
            layer.weight.copy_(torch.from_numpy(np.asarray(pure["layers"][i]["kernel"]).T.copy()))
            layer.bias.copy_(torch.from_numpy(np.asarray(pure["layers"][i]["bias"])))
            if self.norms is not None:
                self.norms[i].weight.copy_(torch.from_numpy(np.asarray(pure["norms"][i]["scale"])))
                self.norms[i].bias.copy_(torch.from_numpy(np.asarray(pure["norms"][i]["bias"])))
        self.head.weight.copy_(torch.from_numpy(np.asarray(pure["head"]["kernel"]).T.copy()))
        self.head.bias.copy_(torch.from_numpy(np.asarray(pure["head"]["bias"])))


def masked_q(q: torch.Tensor, can: torch.Tensor) -> torch.Tensor:
    """Q with g = 1 set to -inf where DEEPTHINK is not admissible."""
    mask = torch.stack([torch.ones_like(can, dtype=torch.bool), can.bool()], dim=-1)
    return torch.where(mask, q, torch.full_like(q, NEG_INF))



@torch.no_grad()
def epsilon_greedy(q: torch.nn.Module, obs: torch.Tensor, can: torch.Tensor, eps: float,
                   gen: torch.Generator) -> torch.Tensor:
    """Greedy admissible switch, or with probability ``eps`` a coin flip (g=1 only where allowed)."""
    greedy = masked_q(q(obs), can).argmax(-1)
    rand = (torch.rand(obs.shape[0], generator=gen) < 0.5) & can.bool()
    explore = torch.rand(obs.shape[0], generator=gen) < eps
    return torch.where(explore, rand.long(), greedy)

class _Clipped:
    """optax.chain(clip_by_global_norm(m), adam(lr)) on a module's parameters."""

    def __init__(self, params, lr: float, max_grad_norm: float):
        self.params = list(params)
        self.max_norm = max_grad_norm
        self.opt = torch.optim.Adam(self.params, lr=lr, eps=1e-8)

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.params]
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        # optax: g * max_norm / norm where norm >= max_norm (no epsilon); branch-free like optax
        scale = torch.where(norm < self.max_norm, torch.ones_like(norm), self.max_norm / norm)
        for g in grads:
            g.mul_(scale)
        self.opt.step()


@dataclass
class LearnerSpec:
    """The numbers both sides share (mirrors SwitcherConfig + HParams scalars)."""

    in_dim: int
    hidden: tuple[int, ...] = (64, 64)
    layer_norm: bool = False
    buffer_size: int = 10_000
    batch_size: int = 128
    num_envs: int = 16
    rollout_len: int = 8
    num_epochs: int = 2
    num_minibatches: int = 2
    lr: float = 1e-3
    gamma: float = 0.95
    lam: float = 0.7
    c: float = 0.1
    target_period: int = 100
    max_grad_norm: float = 10.0


class TorchDQN:
    """Double DQN with a uniform replay ring buffer (tensors preallocated, like the JAX side)."""

    def __init__(self, spec: LearnerSpec, seed: int = 0):
        torch.manual_seed(seed)
        self.spec = spec
        self.q = TorchQNet(spec.in_dim, spec.hidden, spec.layer_norm)
        self.target = TorchQNet(spec.in_dim, spec.hidden, spec.layer_norm)
        self.target.load_state_dict(self.q.state_dict())
        self.opt = _Clipped(self.q.parameters(), spec.lr, spec.max_grad_norm)
        n, d = spec.buffer_size, spec.in_dim
        self.buf = {
            "obs": torch.zeros(n, d), "g": torch.zeros(n, dtype=torch.long),
            "reward": torch.zeros(n), "next_obs": torch.zeros(n, d),
            "terminated": torch.zeros(n), "next_can_call": torch.zeros(n, dtype=torch.bool),
        }
        self.ptr = 0
        self.size = 0
        self.steps = 0
        self.gen = torch.Generator().manual_seed(seed)

    def add(self, batch: Mapping[str, torch.Tensor]) -> None:
        """Append a batch of transitions (ring buffer)."""
        k = batch["obs"].shape[0]
        idx = (self.ptr + torch.arange(k)) % self.spec.buffer_size
        for name, store in self.buf.items():
            store[idx] = batch[name].to(store.dtype)
        self.ptr = (self.ptr + k) % self.spec.buffer_size
        self.size = min(self.size + k, self.spec.buffer_size)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, can: torch.Tensor, eps: float) -> torch.Tensor:
        """Epsilon-greedy admissible switch."""
        return epsilon_greedy(self.q, obs, can, eps, self.gen)

    def loss(self, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """0.5 * mean squared Double-DQN TD error of batch ``b``."""
        s = self.spec
        q = self.q(b["obs"])
        q_taken = q.gather(-1, b["g"].long()[:, None])[:, 0]
        with torch.no_grad():
            g_star = masked_q(self.q(b["next_obs"]), b["next_can_call"]).argmax(-1)
            q_star = self.target(b["next_obs"]).gather(-1, g_star[:, None])[:, 0]
            y = b["reward"] - s.c * b["g"].float() + s.gamma * (1.0 - b["terminated"].float()) * q_star
        return 0.5 * ((y - q_taken) ** 2).mean()

    def update_on(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One gradient step on ``batch`` then the hard target copy (every target_period)."""
        loss = self.loss(batch)
        self.opt.step(loss)
        self.steps += 1
        if self.steps % max(self.spec.target_period, 1) == 0:
            self.target.load_state_dict(self.q.state_dict())
        return loss.detach()

    def update(self) -> torch.Tensor:
        """Sample a uniform minibatch (with replacement) from the buffer and learn from it."""
        idx = torch.randint(0, max(self.size, 1), (self.spec.batch_size,), generator=self.gen)
        return self.update_on({k: v[idx] for k, v in self.buf.items()})


class TorchPQN:
    """Buffer-free Peng Q(lambda) learner (PQN-style)."""

    def __init__(self, spec: LearnerSpec, seed: int = 0):
        torch.manual_seed(seed)
        self.spec = spec
        self.q = TorchQNet(spec.in_dim, spec.hidden, spec.layer_norm)
        self.opt = _Clipped(self.q.parameters(), spec.lr, spec.max_grad_norm)
        self.gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, can: torch.Tensor, eps: float) -> torch.Tensor:
        """Epsilon-greedy admissible switch."""
        return epsilon_greedy(self.q, obs, can, eps, self.gen)

    @torch.no_grad()
    def targets(self, r: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Lambda-returns ``[T, N]`` for a rollout with leaves ``[T, N, ...]``."""
        s = self.spec
        v_next = masked_q(self.q(r["next_obs"]), r["next_can_call"]).max(-1).values
        term = r["terminated"].float()
        done = torch.maximum(term, r["truncated"].float())
        disc = s.gamma * (1.0 - term)
        lam = s.lam * (1.0 - done)
        rew = r["reward"] - s.c * r["g"].float()
        out = torch.empty_like(rew)
        g_next = v_next[-1]
        for t in range(rew.shape[0] - 1, -1, -1):
            g_next = rew[t] + disc[t] * ((1.0 - lam[t]) * v_next[t] + lam[t] * g_next)
            out[t] = g_next
        return out

    def update(self, rollout: Mapping[str, torch.Tensor],
               perms: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Targets, then ``num_epochs`` x ``num_minibatches`` gradient steps (``perms`` optional)."""
        s = self.spec
        tgt = self.targets(rollout).reshape(-1)
        obs = rollout["obs"].reshape(-1, rollout["obs"].shape[-1])
        g = rollout["g"].reshape(-1).long()
        n = obs.shape[0]
        mb = n // s.num_minibatches
        losses = []
        for e in range(s.num_epochs):
            perm = perms[e] if perms is not None else torch.randperm(n, generator=self.gen)
            for m in range(s.num_minibatches):
                idx = perm[m * mb:(m + 1) * mb]
                q = self.q(obs[idx]).gather(-1, g[idx][:, None])[:, 0]
                loss = 0.5 * ((q - tgt[idx]) ** 2).mean()
                self.opt.step(loss)
                losses.append(loss.detach())
        return torch.stack(losses).mean()
