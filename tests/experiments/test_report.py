"""The experiment report: exact statistics on hand-built results, table order, plot file, targets, errors."""

from __future__ import annotations

import json
import math
import struct
import warnings

import numpy as np
import pytest

from londi_jax.experiments import report as R
from londi_jax.utils.errors import LondiError

# ----------------------------------------------------------------------------- builders


def ep(kind="goto", success=True, length=4, deep=0, *, ret=None, qflop=1e6, dflop=1e8, qsec=0.01, dsec=0.1,
       violated=False, budget=None):
    """One episode: QUICK runs every step (qflop/qsec per step), DEEPTHINK ``deep`` times."""
    return {
        "kind": kind, "success": success, "return": (0.5 if success else 0.0) if ret is None else ret,
        "length": length, "quick_calls": length, "deep_calls": deep,
        "quick_flops": qflop * length, "deep_flops": dflop * deep,
        "quick_seconds": qsec * length, "deep_seconds": dsec * deep,
        "budget": budget, "violated": violated,
    }


def run(method, label, seed, episodes, **params):
    return {"method": method, "label": label, "params": params, "seed": seed, "episodes": episodes}


def deep_runs(seeds=(0, 1, 2), n=4, **kw):
    """DEEPTHINK-only: every step calls DEEPTHINK; success pattern chosen per seed."""
    pattern = {0: [1, 1, 0, 0], 1: [1, 1, 1, 0], 2: [1, 1, 1, 1]}
    return [
        run("DEEPTHINK-only", "DEEPTHINK-only", s, [ep(success=bool(pattern[s][i % 4]), deep=4, **kw) for i in range(n)])
        for s in seeds
    ]


def mkrow(label, method, success, call_rate=0.0, compute_saved=0.0, violations=0, **params):
    return R.Row(
        label=label, method=method, params=params, n_seeds=3, n_episodes=30, success=success,
        success_lo=success - 0.01, success_hi=success + 0.01,
        ci_kind="t over 3 seeds", mean_return=0.0, call_rate=call_rate, calls_per_episode=0.0,
        flops_per_episode=1.0, seconds_per_episode=1.0, compute_saved=compute_saved,
        compute_saved_lo=compute_saved - 0.01, compute_saved_hi=compute_saved + 0.01,
        seconds_saved=compute_saved, seconds_saved_lo=compute_saved - 0.01, seconds_saved_hi=compute_saved + 0.01,
        saved_ci_kind="t over 3 seeds", violations=violations,
        per_kind_success={},
    )


def by_name(tg):
    return {t["name"]: t for t in tg}


# ----------------------------------------------------------------------------- critical values


def test_t_critical_known_values():
    assert R.t_critical(4) == pytest.approx(2.776, abs=5e-4)
    assert R.t_critical(1) == pytest.approx(12.706, abs=5e-4)
    assert R.t_critical(10) == pytest.approx(2.228, abs=5e-4)
    assert R.t_critical(30) == pytest.approx(2.042, abs=5e-4)
    assert R.t_critical(60) == pytest.approx(2.000, abs=5e-4)
    assert R.t_critical(120) == pytest.approx(1.980, abs=5e-4)
    assert R.t_critical(10**6) == pytest.approx(1.95996, abs=1e-4)
    # monotone decreasing across the table / expansion seam
    vals = [R.t_critical(d) for d in range(1, 200)]
    assert all(a > b for a, b in zip(vals, vals[1:]))
    with pytest.raises(R.ReportError, match="df >= 1"):
        R.t_critical(0)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 15, 29, 30, 31, 45, 100])
def test_t_critical_is_the_0975_quantile(df):
    # independent check: integrate the Student-t density from 0 to t_crit numerically
    t = R.t_critical(df)
    x = np.linspace(0.0, t, 200_001)
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    mass = np.trapezoid(c * (1 + x * x / df) ** (-(df + 1) / 2), x)
    assert 0.5 + mass == pytest.approx(0.975, abs=2e-6)


def test_wilson_interval_known_values():
    # 8/10: the textbook Wilson 95% interval is [0.4902, 0.9433]
    assert R.wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    # 0/20: [0, 0.1611], asymmetric around the observed 0 (never below it)
    assert R.wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)
    with pytest.raises(R.ReportError):
        R.wilson_interval(0, 0)
    with pytest.raises(R.ReportError):
        R.wilson_interval(3, 2)


@pytest.mark.parametrize("n", [1, 2, 7, 10, 15, 96, 288])
def test_wilson_interval_matches_scipy(n):
    # independent reference: scipy's binomial test, Wilson score interval (no continuity correction)
    from scipy.stats import binomtest

    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        if not 0 <= k <= n:
            continue
        want = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = R.wilson_interval(k, n)
        assert (lo, hi) == pytest.approx((want.low, want.high), abs=1e-9)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
    lo, hi = R.wilson_interval(0, n)  # p = 0: the interval starts at 0, it is not centred on it
    assert lo == 0.0 and hi > 0.0


def test_t_interval_clips_to_the_range():
    vals = [0.0, 0.0, 0.1]  # mean 1/30, t half-width 4.303 * 0.0577 / sqrt(3) = 0.1434
    half = 4.302653 * np.std(vals, ddof=1) / math.sqrt(3)
    assert R.t_interval(vals) == pytest.approx((1 / 30 - half, 1 / 30 + half))
    lo, hi = R.t_interval(vals, 0.0, 1.0)
    assert lo == 0.0 and hi == pytest.approx(1 / 30 + half)
    assert all(math.isnan(b) for b in R.t_interval([0.5]))


# ----------------------------------------------------------------------------- summarize


def test_summarize_exact_numbers_multi_seed():
    londi = []
    deep_per_ep = {0: [1, 1, 1, 1], 1: [2, 2, 2, 2], 2: [0, 1, 2, 1]}
    succ = {0: [1, 1, 1, 0], 1: [1, 1, 1, 1], 2: [1, 0, 1, 0]}
    kinds = ["goto", "pickup", "goto", "pickup"]
    for s in range(3):
        londi.append(run("LONDI", "LONDI c=0.1", s, [
            ep(kind=kinds[i], success=bool(succ[s][i]), deep=deep_per_ep[s][i], ret=0.25 * i) for i in range(4)
        ], c=0.1))
    res = {"meta": {}, "runs": deep_runs() + londi}
    rows = {r.label: r for r in R.summarize(res)}
    d, lo = rows["DEEPTHINK-only"], rows["LONDI c=0.1"]

    # DEEPTHINK-only: per-seed success 0.5, 0.75, 1.0
    assert d.success == pytest.approx(0.75)
    half = 4.302653 * 0.25 / math.sqrt(3)  # 0.621: the symmetric interval would exceed 100%
    assert (d.success_lo, d.success_hi) == pytest.approx((0.75 - half, 1.0))
    assert d.ci_kind == "t over 3 seeds"
    assert d.call_rate == pytest.approx(1.0)
    assert d.flops_per_episode == pytest.approx(4e6 + 4e8)
    assert d.compute_saved == pytest.approx(0.0)
    assert (d.compute_saved_lo, d.compute_saved_hi) == pytest.approx((0.0, 0.0))

    # LONDI: per-seed success 0.75, 1.0, 0.5
    assert lo.success == pytest.approx(0.75)
    assert lo.per_seed_success == pytest.approx([0.75, 1.0, 0.5])
    assert lo.n_seeds == 3 and lo.n_episodes == 12 and lo.episode_counts == [4, 4, 4]
    assert lo.call_rate == pytest.approx((4 / 16 + 8 / 16 + 4 / 16) / 3)
    assert lo.calls_per_episode == pytest.approx((1 + 2 + 1) / 3)
    assert lo.mean_return == pytest.approx(np.mean([0, 0.25, 0.5, 0.75]))
    # per-seed FLOPs/episode: 4e6 + deep mean * 1e8 -> 1.04e8, 2.04e8, 1.04e8 (ref 4.04e8)
    saved = [1 - 1.04 / 4.04, 1 - 2.04 / 4.04, 1 - 1.04 / 4.04]
    assert lo.flops_per_episode == pytest.approx(np.mean([1.04e8, 2.04e8, 1.04e8]))
    assert lo.compute_saved == pytest.approx(np.mean(saved))
    half = 4.302653 * np.std(saved, ddof=1) / math.sqrt(3)
    # the upper bound (1.015) is clipped to 1: nothing saves more than all of the cost
    assert (lo.compute_saved_lo, lo.compute_saved_hi) == pytest.approx((np.mean(saved) - half, 1.0))
    assert lo.saved_ci_kind == "t over 3 seeds"
    # seconds: QUICK 0.04 + DEEPTHINK 0.1 per call; ref 0.04 + 0.4 = 0.44
    ssaved = [1 - 0.14 / 0.44, 1 - 0.24 / 0.44, 1 - 0.14 / 0.44]
    assert lo.seconds_per_episode == pytest.approx(np.mean([0.14, 0.24, 0.14]))
    assert lo.seconds_saved == pytest.approx(np.mean(ssaved))
    # per kind: goto episodes are i=0,2; pickup i=1,3
    goto = np.mean([1.0, 1.0, 1.0])  # seeds: (1,1), (1,1), (1,1)
    pickup = np.mean([0.5, 1.0, 0.0])
    assert lo.per_kind_success == pytest.approx({"goto": goto, "pickup": pickup})
    assert lo.violations == 0 and lo.params == {"c": 0.1}


def test_summarize_single_seed_wilson_and_episode_t():
    eps = [ep(success=i < 8, deep=i % 3) for i in range(10)]  # 8/10 successes
    res = {"runs": deep_runs(seeds=(0,)) + [run("QUICK-only", "QUICK-only", 0, eps)]}
    q = {r.label: r for r in R.summarize(res)}["QUICK-only"]
    assert q.success == pytest.approx(0.8)
    assert q.ci_kind == "Wilson over 10 episodes"
    z = 1.959963984540054
    n, p = 10, 0.8
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (q.success_lo, q.success_hi) == pytest.approx((centre - half, centre + half))
    assert q.success_hi - p < p - q.success_lo  # asymmetric: the bound towards 1 is closer
    # per-episode savings 1 - (4e6 + 1e8 * k) / 4.04e8, t over 10 episodes
    per_ep = [1 - (4e6 + 1e8 * (i % 3)) / 4.04e8 for i in range(10)]
    assert q.compute_saved == pytest.approx(np.mean(per_ep))
    half = 2.262157 * np.std(per_ep, ddof=1) / math.sqrt(10)
    assert (q.compute_saved_lo, q.compute_saved_hi) == pytest.approx((np.mean(per_ep) - half, np.mean(per_ep) + half))
    assert q.saved_ci_kind == "t over 10 episodes"


def test_compute_saved_is_paired_by_seed():
    # reference costs 4e8 on seed 0 and 2e8 on seed 1; the method costs 1e8 on both
    ref = [run("DEEPTHINK-only", "D", s, [ep(length=1, deep=1, qflop=0.0, dflop=f)]) for s, f in ((0, 4e8), (1, 2e8))]
    m = [run("Random", "R", s, [ep(length=1, deep=1, qflop=0.0, dflop=1e8)], p=0.5) for s in (0, 1)]
    r = {x.label: x for x in R.summarize({"runs": ref + m})}["R"]
    assert r.compute_saved == pytest.approx((0.75 + 0.5) / 2)  # unpaired (vs mean 3e8) would be 0.667


def test_violations_and_unmeasured_seconds():
    lb = [run("LONDI-B", "LONDI-B b=2", 0, [ep(deep=2, violated=v, budget=2) for v in (False, True, True)], budget=2)]
    res = {"runs": deep_runs(seeds=(0,), qsec=0.0, dsec=0.0) + lb}
    rows = {r.label: r for r in R.summarize(res)}
    assert rows["LONDI-B b=2"].violations == 2
    assert math.isnan(rows["LONDI-B b=2"].seconds_saved)  # reference recorded no seconds
    table = R.markdown_table(list(rows.values()))
    assert "n/a" in table


def test_mismatched_episode_counts_warn_and_are_recorded():
    runs = deep_runs(seeds=(0,)) + [
        run("LONDI", "L", 0, [ep(success=True, deep=1)] * 4, c=0.1),
        run("LONDI", "L", 1, [ep(success=False, deep=1)] * 2, c=0.1),
    ]
    with pytest.warns(R.ReportWarning, match="different episode counts"):
        rows = R.summarize({"runs": runs})
    r = {x.label: x for x in rows}["L"]
    assert r.episode_counts == [4, 2] and r.n_episodes == 6
    assert r.success == pytest.approx(0.5)  # seeds weighted equally


# ----------------------------------------------------------------------------- errors


def test_errors_name_the_problem():
    assert issubclass(R.ReportError, LondiError)
    with pytest.raises(R.ReportError, match="empty"):
        R.summarize({"runs": []})
    with pytest.raises(R.ReportError, match="'runs'"):
        R.summarize({"meta": {}})
    bad = ep()
    del bad["deep_flops"]
    with pytest.raises(R.ReportError, match=r"'LONDI c=1'.*episode 1.*'deep_flops'"):
        R.summarize({"runs": deep_runs() + [run("LONDI", "LONDI c=1", 0, [ep(), bad], c=1)]})
    r = run("LONDI", "X", 0, [ep()])
    del r["seed"]
    with pytest.raises(R.ReportError, match=r"'X'.*'seed'"):
        R.summarize({"runs": deep_runs() + [r]})
    with pytest.raises(R.ReportError, match=r"'length' must be a number"):
        R.summarize({"runs": deep_runs() + [run("LONDI", "Y", 0, [dict(ep(), length="4")])]})
    with pytest.raises(R.ReportError, match=r"'return' is nan"):
        R.summarize({"runs": deep_runs() + [run("LONDI", "Y", 0, [dict(ep(), **{"return": float("nan")})])]})
    with pytest.raises(R.ReportError, match="no episodes"):
        R.summarize({"runs": deep_runs() + [run("LONDI", "Y", 0, [])]})


def test_reference_missing_or_ambiguous_lists_labels():
    only_quick = [run("QUICK-only", "Q", 0, [ep()])]
    with pytest.raises(R.ReportError, match=r"no label has method 'DEEPTHINK-only'.*Q \(QUICK-only\)"):
        R.summarize({"runs": only_quick})
    two = deep_runs(seeds=(0,)) + [run("DEEPTHINK-only", "DEEP-2", 0, [ep(deep=4)])]
    with pytest.raises(R.ReportError, match=r"2 labels \(DEEPTHINK-only, DEEP-2\)"):
        R.summarize({"runs": two})
    # another reference method works
    rows = R.summarize({"runs": only_quick + deep_runs(seeds=(0,))}, reference="QUICK-only")
    assert {r.label: r.compute_saved for r in rows}["Q"] == pytest.approx(0.0)


def test_duplicate_seed_and_relabelled_method_rejected():
    with pytest.raises(R.ReportError, match="seed 0 twice"):
        R.summarize({"runs": deep_runs(seeds=(0,)) + deep_runs(seeds=(0,))})
    runs = deep_runs(seeds=(0,)) + [run("LONDI", "Z", 0, [ep()]), run("Random", "Z", 1, [ep()])]
    with pytest.raises(R.ReportError, match="used by methods 'LONDI' and 'Random'"):
        R.summarize({"runs": runs})


def test_zero_reference_flops_rejected():
    runs = [run("DEEPTHINK-only", "D", 0, [ep(deep=0, qflop=0.0)])]
    with pytest.raises(R.ReportError, match="zero FLOPs"):
        R.summarize({"runs": runs})


# ----------------------------------------------------------------------------- table


def _ordering_results():
    # deliberately shuffled, with labels whose alphabetical order differs from the numeric one
    specs = [
        ("LONDI-B", "B budget 10", {"budget": 10}), ("Other", "zz-other", {}), ("LONDI", "L-a", {"c": 0.1}),
        ("SwiftSage", "SwiftSage", {}), ("Random", "R-a", {"p": 0.7}), ("LONDI-B", "B budget 2", {"budget": 2}),
        ("Threshold", "T", {"target_rate": 0.3}), ("DEEPTHINK-only", "DEEPTHINK-only", {}),
        ("LONDI", "L-b", {"c": 0.02}), ("Random", "R-b", {"p": 0.3}), ("QUICK-only", "QUICK-only", {}),
        ("AnotherOther", "aa-other", {}), ("LONDI", "L-c", {"c": 0.05}),
    ]
    runs = []
    for method, label, params in specs:
        deep = 4 if method == "DEEPTHINK-only" else 1
        runs.append(run(method, label, 0, [ep(kind="goto", deep=deep), ep(kind="open", success=False, deep=deep)], **params))
    return {"runs": runs}


def test_markdown_table_order_and_cells():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = R.summarize(_ordering_results())
    order = [r.label for r in rows]
    assert order == [
        "QUICK-only", "DEEPTHINK-only", "R-b", "R-a", "T", "SwiftSage", "L-b", "L-c", "L-a",
        "B budget 2", "B budget 10", "aa-other", "zz-other",
    ]
    table = R.markdown_table(list(reversed(rows)))
    lines = table.strip().splitlines()
    assert lines[0] == (
        "| Method | params | success [95% CI] | return | DEEPTHINK call rate | compute saved (FLOPs) [95% CI] | "
        "model-seconds saved [95% CI] | violations | goto success | open success |"
    )
    body = [ln.split(" | ")[0].lstrip("| ") for ln in lines[2:]]
    assert body == order
    cells = {ln.split(" | ")[0].lstrip("| "): [c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]}
    lb = cells["L-b"]
    # 1/2 success over 2 episodes with one seed: Wilson bounds
    assert lb[1] == "c=0.02"
    w_lo, w_hi = R.wilson_interval(1, 2)
    assert lb[2] == f"50.0 [{100 * w_lo:.1f}, {100 * w_hi:.1f}]%"
    assert lb[3] == "0.250"
    assert lb[4] == "25.0%"  # 1 DEEPTHINK call per 4 steps
    saved = 1 - (4e6 + 1e8) / (4e6 + 4e8)
    assert lb[5].startswith(f"{100 * saved:.1f} [")
    assert lb[7] == "0" and lb[8] == "100.0%" and lb[9] == "0.0%"
    assert cells["QUICK-only"][1] == "–"
    no_kinds = R.markdown_table(rows, per_kind=False)
    assert "goto success" not in no_kinds.splitlines()[0]


def test_markdown_escapes_pipes():
    rows = [mkrow("a|b", "LONDI", 0.5, c=0.1)]
    assert "a\\|b" in R.markdown_table(rows)


# ----------------------------------------------------------------------------- plot


def test_plot_writes_a_png_atomically(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = R.summarize(_ordering_results())
        out = R.plot_cost_quality(rows, tmp_path / "sub" / "cq.png", title="t")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height) == (900, 600)
    assert sorted(p.name for p in out.parent.iterdir()) == ["cq.png"]  # no temp file left
    # a second call overwrites in place and still leaves one file
    R.plot_cost_quality(rows[:2], out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["cq.png"]
    with pytest.raises(R.ReportError):
        R.plot_cost_quality([], tmp_path / "x.png")


# ----------------------------------------------------------------------------- targets


def _base_rows():
    return [
        mkrow("QUICK-only", "QUICK-only", 0.40, 0.0, 0.9),
        mkrow("DEEPTHINK-only", "DEEPTHINK-only", 0.80, 1.0, 0.0),
        mkrow("R.2", "Random", 0.50, 0.22, 0.7, p=0.2),
        mkrow("R.6", "Random", 0.66, 0.60, 0.35, p=0.6),
        mkrow("LONDI c=0.05", "LONDI", 0.78, 0.25, 0.60, c=0.05),
        mkrow("LONDI-B b=2", "LONDI-B", 0.70, 0.2, 0.7, budget=2),
    ]


def test_targets_all_pass_nearest_random():
    t = by_name(R.targets(_base_rows()))
    assert list(t) == ["deep_beats_quick", "londi_quality", "londi_compute_saved", "londi_beats_random",
                       "londi_b_no_violations"]
    assert t["deep_beats_quick"]["value"] == pytest.approx(40.0) and t["deep_beats_quick"]["passed"] is True
    assert t["londi_quality"]["value"] == pytest.approx(0.78 / 0.80) and t["londi_quality"]["passed"] is True
    assert t["londi_compute_saved"]["value"] == pytest.approx(0.60) and t["londi_compute_saved"]["passed"] is True
    r = t["londi_beats_random"]
    assert r["threshold"] == pytest.approx(0.50)  # R.2 at call rate 0.22 is within 0.05 of 0.25
    assert r["passed"] is True and "'R.2'" in r["detail"] and "22.0%" in r["detail"] and "25.0%" in r["detail"]
    assert t["londi_b_no_violations"]["passed"] is True and t["londi_b_no_violations"]["value"] == 0


def test_targets_failures():
    rows = _base_rows()
    rows[0] = mkrow("QUICK-only", "QUICK-only", 0.601, 0.0, 0.9)  # gap 19.9 points
    rows[4] = mkrow("LONDI c=0.05", "LONDI", 0.75, 0.25, 0.20, c=0.05)  # 93.75% of deep, 20% saved
    rows[5] = mkrow("LONDI-B b=2", "LONDI-B", 0.70, 0.2, 0.7, violations=3, budget=2)
    rows.append(mkrow("LONDI-B b=3", "LONDI-B", 0.70, 0.2, 0.7, violations=1, budget=3))
    t = by_name(R.targets(rows))
    assert t["deep_beats_quick"]["passed"] is False
    assert t["londi_quality"]["passed"] is False and t["londi_compute_saved"]["passed"] is False
    assert t["londi_b_no_violations"]["passed"] is False and t["londi_b_no_violations"]["value"] == 4
    # exactly 20 points (0.9 - 0.7 is not exactly 0.2 in floating point) passes
    rows[0] = mkrow("QUICK-only", "QUICK-only", 0.7, 0.0, 0.9)
    rows[1] = mkrow("DEEPTHINK-only", "DEEPTHINK-only", 0.9, 1.0, 0.0)
    assert by_name(R.targets(rows))["deep_beats_quick"]["passed"] is True


def test_targets_pick_londi_row():
    rows = _base_rows()[:4] + [
        mkrow("A", "LONDI", 0.77, 0.3, 0.50, c=0.01),  # 96.25%
        mkrow("B", "LONDI", 0.76, 0.2, 0.65, c=0.05),  # 95% exactly, most saved among qualifying
        mkrow("C", "LONDI", 0.60, 0.1, 0.90, c=0.2),  # saves most but fails 95%
    ]
    t = by_name(R.targets(rows))
    assert "'B'" in t["londi_quality"]["detail"] and t["londi_quality"]["passed"] is True
    assert t["londi_compute_saved"]["value"] == pytest.approx(0.65)
    # none qualifies -> the best-success LONDI row
    rows2 = _base_rows()[:4] + [mkrow("C", "LONDI", 0.60, 0.1, 0.9, c=0.2), mkrow("D", "LONDI", 0.7, 0.1, 0.4, c=0.1)]
    assert "'D'" in by_name(R.targets(rows2))["londi_quality"]["detail"]
    # explicit label
    assert "'A'" in by_name(R.targets(rows, londi_label="A"))["londi_quality"]["detail"]
    with pytest.raises(R.ReportError, match="'nope' is not a row"):
        R.targets(rows, londi_label="nope")


def test_targets_random_interpolation():
    rows = [
        mkrow("QUICK-only", "QUICK-only", 0.40, 0.0, 0.9),
        mkrow("DEEPTHINK-only", "DEEPTHINK-only", 0.80, 1.0, 0.0),
        mkrow("R.1", "Random", 0.50, 0.10, 0.8, p=0.1),
        mkrow("R.5", "Random", 0.70, 0.50, 0.4, p=0.5),
    ]
    # LONDI at call rate 0.3: nearest Random is 0.2 away -> interpolate 0.5 + 0.2 * (0.2/0.4) = 0.6
    t = by_name(R.targets(rows + [mkrow("L", "LONDI", 0.61, 0.30, 0.6, c=0.1)]))["londi_beats_random"]
    assert t["threshold"] == pytest.approx(0.60) and t["passed"] is True
    assert "interpolated" in t["detail"] and "'R.1'" in t["detail"] and "'R.5'" in t["detail"]
    t = by_name(R.targets(rows + [mkrow("L", "LONDI", 0.59, 0.30, 0.6, c=0.1)]))["londi_beats_random"]
    assert t["passed"] is False
    # call rate 0.03 is 0.07 below every Random row: QUICK-only (call rate 0) is random switching's
    # p=0 end point, so interpolate QUICK-only (0, 0.40) .. R.1 (0.10, 0.50) -> 0.43
    t = by_name(R.targets(rows + [mkrow("L", "LONDI", 0.45, 0.03, 0.6, c=0.1)]))
    assert t["londi_beats_random"]["threshold"] == pytest.approx(0.43)
    assert t["londi_beats_random"]["passed"] is True and "'QUICK-only'" in t["londi_beats_random"]["detail"]
    # no anchors and outside the Random range -> not evaluated
    only_random = rows[2:] + [mkrow("L", "LONDI", 0.9, 0.9, 0.1, c=0.1)]
    t = by_name(R.targets(only_random))
    assert t["londi_beats_random"]["passed"] is None and "cannot interpolate" in t["londi_beats_random"]["detail"]
    assert t["deep_beats_quick"]["passed"] is None and t["londi_quality"]["passed"] is None


def test_targets_missing_families_not_evaluated():
    t = by_name(R.targets([mkrow("DEEPTHINK-only", "DEEPTHINK-only", 0.8, 1.0, 0.0)]))
    assert all(v["passed"] is None for v in t.values())
    assert "no QUICK-only" in t["deep_beats_quick"]["detail"]
    assert "no LONDI-B" in t["londi_b_no_violations"]["detail"]


# ----------------------------------------------------------------------------- write_report


def test_write_report_files(tmp_path):
    res = _ordering_results()
    res["meta"] = {"preset": "tiny", "device": "cpu"}
    src = tmp_path / "results.json"
    src.write_text(json.dumps(res))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = R.write_report(src, tmp_path / "out")
    assert set(paths) == {"table", "plot", "summary"}
    md = paths["table"].read_text()
    assert "preset: tiny" in md and "| QUICK-only |" in md and "## Targets" in md and "`londi_b_no_violations`" in md
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    summary = json.loads(paths["summary"].read_text())  # strict JSON (NaN would be written as null)
    assert [r["label"] for r in summary["rows"]] == [r.label for r in R.summarize(res)]
    assert summary["meta"]["device"] == "cpu"
    assert [t["name"] for t in summary["targets"]][0] == "deep_beats_quick"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cost_quality.png", "results_table.md", "summary.json"]
    with pytest.raises(R.ReportError, match="cannot read"):
        R.write_report(tmp_path / "missing.json", tmp_path / "out2")


def test_write_report_nan_becomes_null(tmp_path):
    # the reference recorded no model seconds -> seconds_saved is NaN in the row, null in strict JSON
    res = {"runs": deep_runs(seeds=(0,), qsec=0.0, dsec=0.0) + [run("LONDI", "L", 0, [ep(deep=1)], c=0.1)]}
    paths = R.write_report(res, tmp_path)
    text = paths["summary"].read_text()
    assert "NaN" not in text
    rows = {r["label"]: r for r in json.loads(text)["rows"]}
    assert rows["L"]["seconds_saved"] is None
    assert rows["L"]["compute_saved"] == pytest.approx(1 - (4e6 + 1e8) / (4e6 + 4e8))


# ----------------------------------------------------------------------------- honest intervals


def _zero_success_results(seeds=(0,)):
    """DEEPTHINK-only plus a QUICK-only row that never succeeds in 10 episodes per seed."""
    quick = [run("QUICK-only", "QUICK-only", s, [ep(success=False, deep=0) for _ in range(10)]) for s in seeds]
    return {"runs": deep_runs(seeds=seeds) + quick}


def test_zero_successes_one_seed_interval_starts_at_zero(tmp_path, monkeypatch):
    # one seed, 0/10: the old report showed "0.0 ± 15.4%" and drew the bar down to -15.4%
    rows = {r.label: r for r in R.summarize(_zero_success_results())}
    q = rows["QUICK-only"]
    lo, hi = R.wilson_interval(0, 10)
    assert (q.success, q.success_lo, q.success_hi) == (0.0, 0.0, hi) and hi == pytest.approx(0.2775, abs=1e-4)
    cell = [c.strip() for c in R.markdown_table(list(rows.values())).splitlines()[2].strip("|").split("|")][2]
    assert cell == f"0.0 [0.0, {100 * hi:.1f}]%"
    # the plot's error bars: recorded from the errorbar calls, they span exactly [lo, hi]
    from matplotlib.axes import Axes

    calls = []
    real = Axes.errorbar

    def spy(self, x, y, *args, **kwargs):
        calls.append((np.asarray(y, float), np.asarray(kwargs["yerr"], float)))
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", spy)
    R.plot_cost_quality(list(rows.values()), tmp_path / "cq.png")
    for y, yerr in calls:
        assert yerr.shape == (2, y.size)
        assert np.all(y - yerr[0] >= -1e-9) and np.all(y + yerr[1] <= 100 + 1e-9)
    y, yerr = next((y, e) for y, e in calls if y.size == 1 and y[0] == 0.0)
    assert yerr[:, 0] == pytest.approx([0.0, 100 * hi])


def test_identical_seeds_use_pooled_wilson_not_a_zero_width_t():
    q = {r.label: r for r in R.summarize(_zero_success_results(seeds=(0, 1, 2)))}["QUICK-only"]
    assert q.ci_kind == "Wilson over 30 episodes (pooled: all 3 seeds equal)"
    assert (q.success_lo, q.success_hi) == pytest.approx(R.wilson_interval(0, 30))
    assert q.success_hi > 0.1  # a zero-width [0, 0] would claim certainty that 30 episodes do not give


def test_summary_json_carries_interval_bounds(tmp_path):
    paths = R.write_report(_zero_success_results(), tmp_path)
    rows = {r["label"]: r for r in json.loads(paths["summary"].read_text())["rows"]}
    q = rows["QUICK-only"]
    assert q["success_lo"] == 0.0 and q["success_hi"] == pytest.approx(R.wilson_interval(0, 10)[1])
    assert "success_ci" not in q and {"compute_saved_lo", "compute_saved_hi"} <= set(q)
    assert "Student-t over seeds clipped to [0, 100]" in paths["table"].read_text()


# ----------------------------------------------------------------------------- mean score (ScienceWorld)


def scored(kind, score, deep=0, length=4):
    e = ep(kind=kind, success=score == 100, length=length, deep=deep, ret=float(score))
    e["score"] = score
    return e


def test_mean_score_rows_table_and_targets():
    """Scores as ScienceWorld reports them: failures (-100) count 0; t interval over the seed
    means (computed here independently); the score drives the targets with ScienceWorld's bars."""
    quick = {0: [0, 50, -100, 20], 1: [10, 50, 0, 20]}
    deep = {0: [100, 80, 60, 100], 1: [100, 70, 60, 90]}
    runs = [run("QUICK-only", "QUICK-only", s, [scored("4-1" if i % 2 else "7-1", v) for i, v in enumerate(quick[s])])
            for s in (0, 1)]
    runs += [run("DEEPTHINK-only", "DEEPTHINK-only", s, [scored("4-1" if i % 2 else "7-1", v, deep=4)
                                                         for i, v in enumerate(deep[s])]) for s in (0, 1)]
    rows = {r.label: r for r in R.summarize({"runs": runs})}
    q = rows["QUICK-only"]
    means = [np.mean([max(v, 0) for v in quick[s]]) / 100 for s in (0, 1)]
    assert q.score == pytest.approx(np.mean(means))
    half = R.t_critical(1) * np.std(means, ddof=1) / np.sqrt(2)
    assert (q.score_lo, q.score_hi) == pytest.approx((max(np.mean(means) - half, 0), np.mean(means) + half))
    assert q.per_kind_score["7-1"] == pytest.approx(np.mean([0, 0, 10, 0]) / 100)
    assert q.quality("score") == (q.score, q.score_lo, q.score_hi) and q.quality("success")[0] == q.success
    table = R.markdown_table(list(rows.values()), quality="score")
    assert "mean score [95% CI]" in table and "7-1 score" in table
    tg = by_name(R.targets(list(rows.values()), quality="score", gap=15.0))
    gap = 100 * (rows["DEEPTHINK-only"].score - q.score)
    assert tg["deep_beats_quick"]["value"] == pytest.approx(gap) and tg["deep_beats_quick"]["passed"] is (gap >= 15)
    with pytest.raises(R.ReportError, match="quality measure"):
        q.quality("reward")


def test_londi_must_beat_swiftsage_outside_its_interval():
    rows = [mkrow("QUICK-only", "QUICK-only", 0.2), mkrow("DEEPTHINK-only", "DEEPTHINK-only", 0.8, 1.0),
            mkrow("LONDI c=0.1", "LONDI", 0.6, 0.2, 0.7, c=0.1), mkrow("LONDI c=0.01", "LONDI", 0.78, 0.5, 0.45, c=0.01),
            mkrow("SwiftSage", "SwiftSage", 0.55, 0.35, 0.6)]
    for r in rows:  # the score carries the same numbers as success here
        r.score, r.score_lo, r.score_hi = r.success, r.success_lo, r.success_hi
    t = by_name(R.targets(rows, quality="score", outside_ci=True, swiftsage=True))["londi_beats_swiftsage"]
    expected = 0.6 + (0.78 - 0.6) * (0.35 - 0.2) / (0.5 - 0.2)  # LONDI interpolated at SwiftSage's rate
    assert t["value"] == pytest.approx(expected) and t["threshold"] == pytest.approx(0.56) and t["passed"]
    rows[-1].score_hi = 0.7  # SwiftSage's interval reaches above LONDI: not outside it
    assert not by_name(R.targets(rows, quality="score", outside_ci=True, swiftsage=True))["londi_beats_swiftsage"]["passed"]


def test_oracle_comparison_shares_of_the_oracles_gain(tmp_path):
    rows = _base_rows() + [mkrow("Oracle (expert)", "Oracle", 0.90, 0.20, 0.75, expert="bot")]
    cmp = {c["label"]: c for c in R.oracle_comparison(rows)}
    # QUICK 0.40, oracle 0.90: a gain of 0.50 to share; QUICK-only, DEEPTHINK-only and the oracle are not listed
    assert set(cmp) == {"R.2", "R.6", "LONDI c=0.05", "LONDI-B b=2"}
    assert cmp["LONDI c=0.05"]["gain_share"] == pytest.approx((0.78 - 0.40) / 0.50)
    assert cmp["LONDI c=0.05"]["call_ratio"] == pytest.approx(0.25 / 0.20)
    assert cmp["R.2"]["gain_share"] == pytest.approx(0.10 / 0.50)
    assert R.oracle_comparison(_base_rows()) == []  # no oracle row: nothing to compare
    flat = _base_rows() + [mkrow("Oracle (expert)", "Oracle", 0.40, 0.0, 0.9)]
    assert all(c["gain_share"] is None and c["call_ratio"] is None for c in R.oracle_comparison(flat))
    # the oracle sorts after every other family, and the report writes the comparison
    assert R.sort_rows(rows)[-1].method == "Oracle"
    res = _ordering_results()
    res["runs"].append(run("Oracle", "Oracle (expert)", 0, [ep(deep=1), ep(kind="open", deep=1)], expert="bot"))
    paths = R.write_report(res, tmp_path)
    assert "## Against the oracle switch" in paths["table"].read_text()
    summary = json.loads(paths["summary"].read_text())
    assert summary["oracle"] and all(c["label"] != "Oracle (expert)" for c in summary["oracle"])
