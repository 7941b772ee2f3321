"""Cost calibration: hand-computed interpolation on synthetic curves, and end to end on the toy
switching benchmark, where the exact optimal call rate for any c comes from value iteration."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from londi_jax.agents.calibration import (
    CalibrationError,
    calibrate_cost,
    calibrate_cost_for_budget,
    interpolate_cost,
    monotone_rates,
    offline_call_rates,
)
from londi_jax.switcher import exact, toy
from londi_jax.switcher.config import SwitcherConfig
from londi_jax.switcher.offline import collect_toy

# ----------------------------------------------------------------------------- interpolation


def test_interpolate_monotone_curve_by_hand():
    c, r = [0.0, 1.0, 2.0, 3.0], [0.8, 0.6, 0.2, 0.0]
    assert interpolate_cost(c, r, 0.4) == pytest.approx(1.5)   # halfway from 0.6 to 0.2
    assert interpolate_cost(c, r, 0.7) == pytest.approx(0.5)
    assert interpolate_cost(c, r, 0.05) == pytest.approx(2.75)  # 0.15 / 0.2 of the way from c=2 to 3
    assert interpolate_cost(c, r, 0.6) == 1.0                  # on a grid point
    assert interpolate_cost(c, r, 0.8) == 0.0 and interpolate_cost(c, r, 0.0) == 3.0  # the ends


def test_monotone_fit_by_hand():
    # one violation: (0.5, 0.7) pooled to their mean
    np.testing.assert_allclose(monotone_rates([0.9, 0.5, 0.7, 0.3, 0.1]), [0.9, 0.6, 0.6, 0.3, 0.1])
    # a chain: 0.3 < 0.4 pools to 0.35, then 0.6 joins: (0.3 + 0.4 + 0.6) / 3
    np.testing.assert_allclose(monotone_rates([0.5, 0.3, 0.4, 0.6, 0.1]),
                               [0.5, 1.3 / 3, 1.3 / 3, 1.3 / 3, 0.1])
    np.testing.assert_allclose(monotone_rates([0.2, 0.4, 0.6]), [0.4, 0.4, 0.4])
    already = np.array([0.9, 0.9, 0.4, 0.0])
    np.testing.assert_array_equal(monotone_rates(already), already)


def test_interpolate_non_monotone_curve_by_hand():
    c, r = [0.0, 1.0, 2.0, 3.0, 4.0], [0.9, 0.5, 0.7, 0.3, 0.1]  # fit: 0.9 0.6 0.6 0.3 0.1
    # (0.6 - 0.45) / 0.3 of the way from c=2 to 3 (a running minimum would give 2.25)
    assert interpolate_cost(c, r, 0.45) == pytest.approx(2.5)
    assert interpolate_cost(c, r, 0.75) == pytest.approx(0.5)
    assert interpolate_cost(c, r, 0.6) == 1.0                  # flat at the target: the smallest c
    assert interpolate_cost(c, r, 0.2) == pytest.approx(3.5)
    # the measured 0.5 at c=1 is pooled away: 0.5 is read off the fit, 1/3 of the way from c=2 to 3
    assert interpolate_cost(c, r, 0.5) == pytest.approx(2.0 + 1.0 / 3.0)


def test_interpolate_errors():
    c, r = [0.0, 1.0, 2.0, 3.0], [0.8, 0.6, 0.2, 0.0]
    with pytest.raises(CalibrationError, match=r"outside the achievable range \[0, 0.8\].*widen c_grid"):
        interpolate_cost(c, r, 0.9)
    assert interpolate_cost([0.0, 1.0, 2.0], [0.2, 0.4, 0.6], 0.4) == 0.0  # all pooled flat: the smallest c
    with pytest.raises(CalibrationError, match=r"achievable range \[0.2, 0.4\]"):
        interpolate_cost([0.0, 1.0, 2.0], [0.3, 0.5, 0.2], 0.45)  # the fit pools 0.3, 0.5 to 0.4
    with pytest.raises(CalibrationError, match="outside the achievable range"):
        interpolate_cost(c, r, float("nan"))
    with pytest.raises(CalibrationError, match="strictly increasing"):
        interpolate_cost([0.0, 2.0, 1.0, 3.0], r, 0.4)
    with pytest.raises(CalibrationError, match="strictly increasing"):
        interpolate_cost([0.0, 1.0, 1.0, 3.0], r, 0.4)
    with pytest.raises(CalibrationError, match="at least 2 grid values"):
        interpolate_cost([0.1], [0.5], 0.5)
    with pytest.raises(CalibrationError, match="got 3 rates for 4 values of c"):
        interpolate_cost(c, r[:3], 0.5)
    with pytest.raises(CalibrationError, match="finite"):
        interpolate_cost(c, [0.8, np.nan, 0.2, 0.0], 0.5)


def test_budget_and_grid_errors_before_any_training():
    cfg = SwitcherConfig(obs_dim=8)
    ds = None  # never reached: arguments are checked first
    with pytest.raises(CalibrationError, match="exceeds the mean episode length 4"):
        calibrate_cost_for_budget(cfg, ds, budget=5, mean_episode_length=4, c_grid=[0.1, 0.2])
    with pytest.raises(CalibrationError, match="budget must be >= 0"):
        calibrate_cost_for_budget(cfg, ds, budget=-1, mean_episode_length=4, c_grid=[0.1, 0.2])
    with pytest.raises(CalibrationError, match="mean_episode_length must be > 0"):
        calibrate_cost_for_budget(cfg, ds, budget=1, mean_episode_length=0, c_grid=[0.1, 0.2])
    with pytest.raises(CalibrationError, match=r"target call rate must be in \[0, 1\]"):
        calibrate_cost(cfg, ds, 1.2, [0.1, 0.2])
    with pytest.raises(CalibrationError, match="at least 2 strictly increasing"):
        calibrate_cost(cfg, ds, 0.5, [0.2, 0.1])
    with pytest.raises(CalibrationError, match="do not pass c="):
        offline_call_rates(cfg, ds, [0.1, 0.2], c=0.3)


# ----------------------------------------------------------------------------- toy, end to end

ENV = toy.ToyEnv()
ENV_PARAMS = ENV.default_params(max_steps=32)
GAMMA = 0.95
# one c inside each plateau of the exact policy (its switch changes near c = 0.10, 0.16, 0.35, 0.9),
# each with a clear Q-gap in every cell, so a short offline training gets every switch right
GRID = [0.05, 0.13, 0.25, 0.6, 1.2]
CONFIG = SwitcherConfig(obs_dim=ENV.obs_dim, hidden=(32, 32), batch_size=64, num_updates=800)
TRAIN = dict(seeds=(0, 1), lr=3e-3, gamma=GAMMA, target_period=50)


@pytest.fixture(scope="module")
def toy_data():
    ds = collect_toy(ENV, ENV_PARAMS, jax.random.key(0), num_envs=16, num_steps=64)
    P, R, _ = toy.tabular_model(ENV_PARAMS)
    cells = np.asarray(ds.obs).argmax(-1)

    def exact_rate(c):
        """Share of the dataset's states where the exact optimal switch calls DEEPTHINK."""
        return float(np.mean(exact.solve(P, R, float(c), GAMMA).policy[cells, 0]))

    return ds, exact_rate


def test_exact_call_rate_falls_monotonically_with_c(toy_data):
    _, exact_rate = toy_data
    cs = np.linspace(0.0, 1.2, 97)
    rates = np.array([exact_rate(c) for c in cs])
    assert np.all(np.diff(rates) <= 0), rates
    assert rates[0] > 0.5 and rates[-1] == 0.0
    assert len(np.unique(rates)) == 5  # four switch points: each grid c sits on its own plateau
    assert sorted({exact_rate(c) for c in GRID}, reverse=True) == [exact_rate(c) for c in GRID]


def test_calibrated_cost_gives_the_target_call_rate(toy_data):
    ds, exact_rate = toy_data
    exact_grid = np.array([exact_rate(c) for c in GRID])
    r13, r25 = exact_grid[1], exact_grid[2]
    target = r13 - (r13 - r25) / 3  # between the rates of the grid points c = 0.13 and c = 0.25
    res = calibrate_cost(CONFIG, ds, target, GRID, **TRAIN)
    # the offline switchers recover the exact optimal call rate at every grid point
    np.testing.assert_allclose(res.rates, exact_grid, atol=1e-6)
    assert res.target == target and list(res.c_grid) == GRID
    assert 0.13 < res.c < 0.25
    assert res.c == pytest.approx(0.13 + 0.12 / 3)
    # the exact rate is a step function of c: at the calibrated c it is one of the two
    # bracketing plateaus, i.e. within the grid's resolution of the target
    got = exact_rate(res.c)
    assert got in (r13, r25) and abs(got - target) <= (r13 - r25)
    # every bracket of the grid, from the same measured curve
    for i in range(len(GRID) - 1):
        hi, lo = exact_grid[i], exact_grid[i + 1]
        for frac in (0.25, 0.75):
            c = interpolate_cost(res.c_grid, res.rates, hi - frac * (hi - lo))
            assert GRID[i] < c < GRID[i + 1]
            assert lo <= exact_rate(c) <= hi and abs(exact_rate(c) - (hi - frac * (hi - lo))) <= hi - lo
        # a target equal to a grid point's rate returns that c, where the rate is exact
        c = interpolate_cost(res.c_grid, res.rates, lo)
        assert c == GRID[i + 1] and exact_rate(c) == pytest.approx(lo)
    # a rate above the smallest c's is out of reach of this grid
    with pytest.raises(CalibrationError, match="outside the achievable range"):
        interpolate_cost(res.c_grid, res.rates, min(1.0, exact_grid[0] + 0.05))
    # a budget of n calls per episode of mean length L targets the rate n / L (same program, no recompile)
    length = 2 / target
    res_b = calibrate_cost_for_budget(CONFIG, ds, budget=2, mean_episode_length=length, c_grid=GRID, **TRAIN)
    assert res_b.target == pytest.approx(target)
    assert res_b.c == pytest.approx(res.c)
    np.testing.assert_array_equal(res_b.rates, res.rates)


# ----------------------------------------------------------------------------- input checked up front


def test_check_target_ranges():
    from londi_jax.agents.calibration import check_target

    for rate in (0, 0.0, 0.25, 1.0, np.float32(0.5)):
        check_target(target_rate=rate)
    for rate in (1.5, -0.1, float("nan"), float("inf"), "0.5", True):
        with pytest.raises(CalibrationError, match=r"target call rate must be in \[0, 1\]"):
            check_target(target_rate=rate)
    check_target(budget=0)
    for budget in (-1, 2.5, True):
        with pytest.raises(CalibrationError, match="budget must be >= 0"):
            check_target(budget=budget)


def test_calibrate_script_bad_rate_is_one_line_error(tmp_path):
    # target 1.5 used to end in a traceback (after loading the run); now refused first, in one line
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "experiments" / "calibrate.py"
    proc = subprocess.run([sys.executable, str(script), "--run", str(tmp_path), "--target-rate", "1.5"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "calibrate.py: error: target call rate must be in [0, 1] (a fraction of steps, e.g. 0.1 for 10%), got 1.5")
