"""A calibrated step-level classifier of QUICK's failures: the strongest simple router baseline
of the 2025-26 routing work (R2V-Agent's idea: predict, per step, whether the small model's action
goes wrong, and call the large model there).

Trained on the same logged both-model data as the LONDI switchers (``switcher.offline``): a state
is a *QUICK failure* when the two models' actions lead to different outcomes (their next states
differ) and DEEPTHINK's is at least as good in reward. A logistic-regression head on the
switcher's features is fitted on a training split, then Platt-scaled (Platt 1999: a
two-parameter logistic recalibration of the logits) on a held-out split; the held-out Brier score
is reported before and after calibration. The router calls DEEPTHINK where the calibrated failure
probability is above a threshold chosen for a target call rate (``agents.routers.ClassifierRouter``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from londi_jax.switcher.offline import OfflineDataset
from londi_jax.utils.errors import LondiError

__all__ = ["FailureClassifier", "failure_labels", "fit_failure_classifier", "brier_score"]


def failure_labels(ds: OfflineDataset) -> np.ndarray:
    """``(N,)`` bool: QUICK's action differs in outcome from DEEPTHINK's (different next states or
    rewards) and DEEPTHINK's one-step reward is at least QUICK's."""
    nxt = np.asarray(ds.next_obs)
    rew = np.asarray(ds.reward)
    term = np.asarray(ds.terminated)
    differ = np.any(nxt[:, 0] != nxt[:, 1], axis=-1) | (rew[:, 0] != rew[:, 1]) | (term[:, 0] != term[:, 1])
    return differ & (rew[:, 1] >= rew[:, 0])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))  # no overflow for large |z|


def brier_score(p: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of probabilities ``p`` against 0/1 outcomes ``y`` (Brier 1950)."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


@dataclasses.dataclass(frozen=True)
class FailureClassifier:
    """Logistic regression on standardized features plus Platt scaling ``sigmoid(a * z + b)``."""

    w: np.ndarray  # (D,)
    bias: float
    mean: np.ndarray  # (D,) feature standardization
    scale: np.ndarray  # (D,)
    a: float
    b: float
    metrics: dict[str, float]

    def logits(self, obs: np.ndarray) -> np.ndarray:
        return ((np.asarray(obs, np.float64) - self.mean) / self.scale) @ self.w + self.bias

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Calibrated failure probabilities ``(N,)`` of states ``obs (N, D)``."""
        return _sigmoid(self.a * self.logits(obs) + self.b)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"w": self.w, "bias": np.float64(self.bias), "mean": self.mean, "scale": self.scale,
                "a": np.float64(self.a), "b": np.float64(self.b),
                "metric_names": np.array(list(self.metrics)), "metric_values": np.array(list(self.metrics.values()))}

    @classmethod
    def from_arrays(cls, d: Any) -> FailureClassifier:
        return cls(np.asarray(d["w"]), float(d["bias"]), np.asarray(d["mean"]), np.asarray(d["scale"]),
                   float(d["a"]), float(d["b"]), dict(zip(map(str, d["metric_names"]), map(float, d["metric_values"]))))


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, steps: int, lr: float) -> tuple[np.ndarray, float]:
    """Full-batch Adam on the L2-regularized log loss (deterministic: no seed needed)."""
    xs, ys = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    pos = float(y.mean())
    params = {"w": jnp.zeros(x.shape[1], jnp.float32),
              "b": jnp.asarray(np.log(max(pos, 1e-3) / max(1 - pos, 1e-3)), jnp.float32)}
    tx = optax.adam(lr)

    def loss(p):
        z = xs @ p["w"] + p["b"]
        return optax.sigmoid_binary_cross_entropy(z, ys).mean() + l2 * jnp.sum(p["w"] ** 2)

    @jax.jit
    def run(p):
        def step(carry, _):
            p, o = carry
            g = jax.grad(loss)(p)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
        return p

    p = run(params)
    return np.asarray(p["w"], np.float64), float(p["b"])


def _platt(z: np.ndarray, y: np.ndarray, steps: int = 500) -> tuple[float, float]:
    """Fit ``sigmoid(a z + b)`` to ``y`` by Newton's method on the log loss (2 parameters)."""
    a, b = 1.0, 0.0
    for _ in range(steps):
        p = _sigmoid(a * z + b)
        g = np.array([np.sum((p - y) * z), np.sum(p - y)])
        w = p * (1 - p) + 1e-9
        h = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(a), float(b)


def fit_failure_classifier(ds: OfflineDataset, *, holdout: float = 0.25, l2: float = 1e-3, steps: int = 2000,
                           lr: float = 0.05, seed: int = 0) -> FailureClassifier:
    """Fit the classifier on ``ds`` (see the module doc). ``holdout``: share of states (a seeded
    random split) used for Platt scaling and the reported metrics. Raises ``LondiError`` when the
    data has one class only (nothing to classify) or too few states for a held-out split."""
    x = np.asarray(ds.obs, np.float64)
    y = failure_labels(ds).astype(np.float64)
    n = len(y)
    if n < 8 or not 0 < holdout < 1:
        raise LondiError(f"the failure classifier needs >= 8 logged states and 0 < holdout < 1, got {n} and {holdout}")
    if y.min() == y.max():
        raise LondiError(f"every logged state has the same failure label ({bool(y[0])}); log more varied switch data")
    idx = np.random.default_rng(seed).permutation(n)
    k = max(int(round(holdout * n)), 2)
    test, train = idx[:k], idx[k:]
    mean, scale = x[train].mean(0), x[train].std(0) + 1e-6
    w, bias = _fit_logistic((x[train] - mean) / scale, y[train], l2, steps, lr)
    z = ((x - mean) / scale) @ w + bias
    a, b = _platt(z[test], y[test]) if 0 < y[test].mean() < 1 else (1.0, 0.0)
    raw = _sigmoid(z[test])
    cal = _sigmoid(a * z[test] + b)
    metrics = {"states": float(n), "failure_rate": float(y.mean()), "heldout": float(k),
               "brier_raw": brier_score(raw, y[test]), "brier": brier_score(cal, y[test]),
               "brier_base_rate": brier_score(np.full(k, y[train].mean()), y[test]),
               "heldout_accuracy": float(np.mean((cal > 0.5) == (y[test] > 0.5)))}
    return FailureClassifier(w, bias, mean, scale, a, b, metrics)
