"""The calibrated failure classifier: labels from the logged branches, Platt scaling fitted
exactly, calibration that does not hurt the held-out Brier score, and the router over it."""

from __future__ import annotations

import numpy as np
import pytest

from londi_jax.agents.routers import ClassifierRouter, RouteInput, calibrate_threshold
from londi_jax.switcher.classifier import _platt, brier_score, failure_labels, fit_failure_classifier
from londi_jax.switcher.offline import OfflineDataset
from londi_jax.utils.errors import LondiError


def synthetic(n=600, d=5, seed=0):
    """States whose first feature decides (noisily) whether QUICK's action goes wrong."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, d)).astype(np.float32)
    fail = rng.random(n) < 1 / (1 + np.exp(-3 * obs[:, 0]))
    nxt = np.repeat(obs[:, None], 2, axis=1).copy()
    nxt[fail, 1] += 1.0  # the models' next states differ where QUICK fails
    reward = np.zeros((n, 2), np.float32)
    reward[fail, 1] = rng.choice([0.0, 1.0], size=fail.sum())
    worse = ~fail & (rng.random(n) < 0.1)  # outcomes differ but DEEPTHINK does worse: not a failure
    nxt[worse, 1] += 1.0
    reward[worse, 0] = 1.0
    return OfflineDataset(obs, reward, nxt, np.zeros((n, 2), bool)), fail


def test_labels_come_from_the_branches():
    ds, fail = synthetic()
    assert (failure_labels(ds) == fail).all()


def test_platt_scaling_recovers_known_parameters():
    rng = np.random.default_rng(1)
    z = rng.normal(size=20000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-(2.0 * z - 0.5)))).astype(float)
    a, b = _platt(z, y)
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(-0.5, abs=0.1)


def test_classifier_learns_and_is_calibrated():
    ds, fail = synthetic()
    clf = fit_failure_classifier(ds, seed=0)
    m = clf.metrics
    assert m["brier"] < m["brier_base_rate"] - 0.05  # it predicts better than the base rate
    assert m["brier"] <= m["brier_raw"] + 1e-3  # calibration does not hurt on its own split
    p = clf.predict(np.asarray(ds.obs))
    assert p[np.asarray(ds.obs)[:, 0] > 1].mean() > 0.8 and p[np.asarray(ds.obs)[:, 0] < -1].mean() < 0.2
    assert brier_score(p, fail) == pytest.approx(np.mean((p - fail) ** 2))
    again = type(clf).from_arrays(clf.to_arrays())
    assert np.allclose(again.predict(np.asarray(ds.obs)), p) and again.metrics == clf.metrics
    # the router at a target call rate calls about that share of the logged states
    t = 1.0 - calibrate_threshold(1.0 - p, 0.3, "max_prob")
    router = ClassifierRouter(clf, t)
    n = p.size
    inp = RouteInput(slots=np.arange(n), quick_logprobs=np.zeros((n, 2)), features=np.asarray(ds.obs),
                     step=np.zeros(n), max_steps=np.full(n, 10), budget_left=np.full(n, 9), budget=np.full(n, 9),
                     new_episode=np.zeros(n, bool))
    assert router.decide(inp).mean() == pytest.approx(0.3, abs=0.01)


def test_one_class_is_refused():
    ds, _ = synthetic()
    same = OfflineDataset(ds.obs, np.zeros_like(ds.reward), np.repeat(np.asarray(ds.obs)[:, None], 2, 1), ds.terminated)
    with pytest.raises(LondiError, match="same failure label"):
        fit_failure_classifier(same)
