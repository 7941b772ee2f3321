"""The experiment report: per-episode records -> summary rows, a markdown table, a cost-quality plot.

A leaf module (numpy, matplotlib with the Agg canvas, json; nothing else from londi_jax but the
errors), so a finished ``results.json`` can be re-reported anywhere. The input schema::

    {"meta": {...}, "runs": [{"method", "label", "params", "seed",
                              "episodes": [{"kind", "success", "return", "length", "quick_calls",
                                            "deep_calls", "quick_flops", "deep_flops",
                                            "quick_seconds", "deep_seconds", "budget", "violated",
                                            optional "score"}]}]}

``meta["quality"]`` names the quality measure the targets, plot and headline use: ``"success"``
(success rate; BabyAI-Text) or ``"score"`` (mean final score 0-100, failures as 0; ScienceWorld,
whose episodes carry ``score``).

Statistics: every per-row number is first computed per seed (one run) and then averaged over the
seeds. Confidence intervals (95%) are given as bounds ``[lo, hi]``, not as a half-width, because
they need not be symmetric around the estimate:

* success, >= 2 seeds: Student-t over the per-seed success rates, clipped to [0, 1]. Chosen over a
  percentile bootstrap because runs have few seeds (3 in the presets): a bootstrap of the mean of
  n = 3 values has only 10 distinct resampled means and its 95% interval is about
  t_{0.975,2} / (1.96 sqrt(2/3)) = 2.7 times narrower than the t interval, so it would claim far
  more certainty than three seeds give. When every seed has the same rate the t interval has zero
  width; the Wilson interval over all the label's episodes (pooled) is given instead.
* success, 1 seed: the Wilson score interval over the episodes (Wilson 1927; asymmetric, always
  inside [0, 1], not degenerate at 0 or 1 successes).
* mean score (environments with a score, ScienceWorld; failures count 0): Student-t over the
  per-seed means (>= 2 seeds, else over the episodes), clipped to [0, 100].
* compute / model-seconds saved: Student-t over the per-seed savings (>= 2 seeds) or over the
  per-episode savings of the single seed (reference held fixed), with the upper bound clipped to 1
  (nothing saves more than all of the cost; savings below 0 are real: costlier than the reference).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from londi_jax.utils.errors import LondiError
from londi_jax.utils.io import atomic_write
from londi_jax.utils.output import to_jsonable

__all__ = [
    "ReportError",
    "ReportWarning",
    "Row",
    "t_critical",
    "wilson_interval",
    "t_interval",
    "summarize",
    "sort_rows",
    "markdown_table",
    "plot_cost_quality",
    "targets",
    "oracle_comparison",
    "write_report",
]


class ReportError(LondiError, ValueError):
    """The results given to the report are malformed; the message names the run, field and fix."""


class ReportWarning(UserWarning):
    """Suspicious but usable results (e.g. seeds of one label with different episode counts)."""


# Two-sided 95% Student-t critical values t_{0.975, df}, df = 1..30 (6 decimals).
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
    2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
    2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
    2.048407, 2.045230, 2.042272,
)
_Z975 = 1.959963984540054  # standard normal 0.975 quantile

EPISODE_FIELDS = (
    "kind", "success", "return", "length", "quick_calls", "deep_calls", "quick_flops",
    "deep_flops", "quick_seconds", "deep_seconds", "violated",
)
_NUMERIC_FIELDS = (
    "return", "length", "quick_calls", "deep_calls", "quick_flops", "deep_flops",
    "quick_seconds", "deep_seconds",
)

# Display order of method families, and the parameter that orders configurations inside a family.
FAMILY_ORDER = ("QUICK-only", "DEEPTHINK-only", "Random", "Threshold", "Classifier", "SwiftSage", "LONDI", "LONDI-B",
                "LONDI online", "LONDI-B online", "Oracle")
_PRIMARY_PARAM = {
    "Random": ("p",),
    "Threshold": ("threshold", "target_rate"),
    "Classifier": ("threshold", "target_rate"),
    "LONDI": ("c",),
    "LONDI-B": ("budget", "c"),
    "LONDI online": ("c",),
    "LONDI-B online": ("budget", "c"),
}
_ANNOTATE = {"LONDI": ("c", "c"), "LONDI-B": ("budget", "b"), "LONDI online": ("c", "c"),
             "LONDI-B online": ("budget", "b")}  # family -> (param, short name)
QUALITY_MEASURES = ("success", "score")


def t_critical(df: int) -> float:
    """Two-sided 95% Student-t critical value t_{0.975, df}.

    A table for df <= 30; above it the Cornish-Fisher expansion around the normal quantile
    (error < 1e-7 for df > 30).
    """
    if df < 1:
        raise ReportError(f"t_critical needs df >= 1, got {df}; a CI needs at least 2 samples")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4)
    )


def wilson_interval(successes: int, n: int, z: float = _Z975) -> tuple[float, float]:
    """95% Wilson score interval ``(lo, hi)`` for ``successes`` out of ``n`` trials (fractions).

    Centre ``(p + z^2 / 2n) / (1 + z^2 / n)``, half-width ``z / (1 + z^2 / n) * sqrt(p (1 - p) / n
    + z^2 / 4n^2)`` (Wilson 1927): asymmetric around ``p``, ``lo = 0`` at 0 successes and
    ``hi = 1`` at n. Raises ``ReportError`` for ``n < 1`` or successes outside [0, n].
    """
    if n < 1:
        raise ReportError("a Wilson interval needs at least one episode")
    if not 0 <= successes <= n:
        raise ReportError(f"a Wilson interval needs 0 <= successes <= n, got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # exact at the ends (rounding would leave 1e-17 outside [0, 1])
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def t_interval(values: Sequence[float], lo: float = -math.inf, hi: float = math.inf) -> tuple[float, float]:
    """95% Student-t interval ``(lo, hi)`` of the mean of ``values``, clipped to ``[lo, hi]``
    (the range the quantity can take); ``(nan, nan)`` with fewer than 2 values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return math.nan, math.nan
    mean = float(v.mean())
    half = t_critical(v.size - 1) * float(np.std(v, ddof=1)) / math.sqrt(v.size)
    return max(lo, mean - half), min(hi, mean + half)


@dataclass
class Row:
    """One table row: a method configuration (label) summarised over its seeds.

    Rates and savings are fractions in [0, 1] (the table and plot show percentages).
    """

    label: str
    method: str
    params: dict[str, Any]
    n_seeds: int
    n_episodes: int  # over all seeds
    success: float  # mean over seeds of the per-seed success rate
    success_lo: float  # 95% CI lower bound (see the module doc)
    success_hi: float  # 95% CI upper bound
    ci_kind: str  # "t over N seeds", "Wilson over N episodes (pooled, ...)" or "Wilson over N episodes"
    mean_return: float
    call_rate: float  # DEEPTHINK calls / environment steps
    calls_per_episode: float  # DEEPTHINK calls per episode
    flops_per_episode: float  # QUICK + DEEPTHINK FLOPs
    seconds_per_episode: float  # QUICK + DEEPTHINK model seconds
    compute_saved: float  # 1 - flops / reference flops (nan for no reference)
    compute_saved_lo: float  # 95% CI bounds (nan when not computable)
    compute_saved_hi: float
    seconds_saved: float  # 1 - seconds / reference seconds (nan when the reference has none)
    seconds_saved_lo: float
    seconds_saved_hi: float
    saved_ci_kind: str  # "t over N seeds" or "t over N episodes"
    violations: int  # episodes with violated=true
    per_kind_success: dict[str, float]
    seeds: list[Any] = field(default_factory=list)
    episode_counts: list[int] = field(default_factory=list)  # per seed, in ``seeds`` order
    per_seed_success: list[float] = field(default_factory=list)
    score: float = math.nan  # mean final score as a fraction (failures 0); nan when episodes carry none
    score_lo: float = math.nan
    score_hi: float = math.nan
    per_kind_score: dict[str, float] = field(default_factory=dict)

    def quality(self, measure: str = "success") -> tuple[float, float, float]:
        """``(value, lo, hi)`` of ``measure`` (``"success"`` or ``"score"``), as fractions."""
        if measure not in QUALITY_MEASURES:
            raise ReportError(f"unknown quality measure {measure!r}; known: {', '.join(QUALITY_MEASURES)}")
        if measure == "score":
            return self.score, self.score_lo, self.score_hi
        return self.success, self.success_lo, self.success_hi


# --------------------------------------------------------------------------- validation


def _check_number(value: Any, label: str, seed: Any, index: int, name: str) -> float:
    where = f"run {label!r} (seed {seed}) episode {index}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ReportError(f"{where}: field {name!r} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ReportError(f"{where}: field {name!r} is {x}; record a finite value")
    if name not in ("return", "score") and x < 0:  # returns and scores (ScienceWorld: -100) may be negative
        raise ReportError(f"{where}: field {name!r} is negative ({x}); counts/costs must be >= 0")
    return x


def _check_flag(value: Any, label: str, seed: Any, index: int, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return bool(value)
    raise ReportError(
        f"run {label!r} (seed {seed}) episode {index}: field {name!r} must be true/false, got {value!r}"
    )


def _episode_arrays(run: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validated per-episode columns of one run."""
    label, seed = run["label"], run["seed"]
    episodes = run["episodes"]
    if not isinstance(episodes, Sequence) or isinstance(episodes, (str, bytes)):
        raise ReportError(f"run {label!r} (seed {seed}): 'episodes' must be a list of episode dicts")
    if not episodes:
        raise ReportError(f"run {label!r} (seed {seed}) has no episodes; evaluate at least one")
    cols: dict[str, list[Any]] = {k: [] for k in EPISODE_FIELDS}
    has_score = any(isinstance(ep, Mapping) and ep.get("score") is not None for ep in episodes)
    if has_score:
        cols["score"] = []
    for i, ep in enumerate(episodes):
        if not isinstance(ep, Mapping):
            raise ReportError(f"run {label!r} (seed {seed}) episode {i} is not a dict: {ep!r}")
        for name in EPISODE_FIELDS:
            if name not in ep:
                raise ReportError(
                    f"run {label!r} (seed {seed}) episode {i} is missing field {name!r}; "
                    f"every episode needs {', '.join(EPISODE_FIELDS)}"
                )
        cols["kind"].append(str(ep["kind"]))
        if has_score:
            if ep.get("score") is None:
                raise ReportError(f"run {label!r} (seed {seed}) episode {i} has no 'score' while others have one")
            cols["score"].append(max(_check_number(ep["score"], label, seed, i, "score"), 0.0) / 100.0)
        cols["success"].append(_check_flag(ep["success"], label, seed, i, "success"))
        cols["violated"].append(_check_flag(ep["violated"], label, seed, i, "violated"))
        for name in _NUMERIC_FIELDS:
            cols[name].append(_check_number(ep[name], label, seed, i, name))
    out = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items() if k != "kind"}
    out["kind"] = np.asarray(cols["kind"], dtype=object)
    return out


def _group_runs(results: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    """Runs grouped by label (first-seen order), with run-level fields checked."""
    if not isinstance(results, Mapping) or "runs" not in results:
        raise ReportError("results must be a dict with a 'runs' list (the pipeline's results.json)")
    runs = results["runs"]
    if not isinstance(runs, Sequence) or isinstance(runs, (str, bytes)) or not runs:
        raise ReportError("results['runs'] is empty; run at least one method before reporting")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping):
            raise ReportError(f"results['runs'][{i}] is not a dict: {run!r}")
        name = run.get("label", f"runs[{i}]")
        for key in ("method", "label", "seed", "episodes"):
            if key not in run:
                raise ReportError(f"run {name!r} is missing field {key!r}")
        params = run.get("params", {})
        if params is not None and not isinstance(params, Mapping):
            raise ReportError(f"run {name!r}: 'params' must be a dict, got {params!r}")
        group = groups.setdefault(str(run["label"]), [])
        if group and group[0]["method"] != run["method"]:
            raise ReportError(
                f"label {name!r} is used by methods {group[0]['method']!r} and {run['method']!r}; "
                "labels must be unique per configuration"
            )
        if any(r["seed"] == run["seed"] for r in group):
            raise ReportError(f"run {name!r} has seed {run['seed']!r} twice; keep one run per (label, seed)")
        group.append(run)
    return groups


# --------------------------------------------------------------------------- summary


def _per_seed(cols: dict[str, np.ndarray]) -> dict[str, Any]:
    steps = cols["length"].sum()
    score = {}
    if "score" in cols:
        score = {"score": float(cols["score"].mean()), "scores": cols["score"],
                 "kinds_score": {str(k): float(cols["score"][cols["kind"] == k].mean())
                                 for k in dict.fromkeys(cols["kind"])}}
    return {**score,
        "n": int(cols["success"].size),
        "successes": int(cols["success"].sum()),
        "success": float(cols["success"].mean()),
        "return": float(cols["return"].mean()),
        "call_rate": float(cols["deep_calls"].sum() / steps) if steps > 0 else 0.0,
        "calls": float(cols["deep_calls"].mean()),
        "flops_ep": cols["quick_flops"] + cols["deep_flops"],
        "seconds_ep": cols["quick_seconds"] + cols["deep_seconds"],
        "violations": int(cols["violated"].sum()),
        "kinds": {
            str(k): float(cols["success"][cols["kind"] == k].mean()) for k in dict.fromkeys(cols["kind"])
        },
    }


def _saving(
    per_seed: list[dict[str, Any]], seeds: list[Any], key: str, ref_by_seed: dict[Any, float], ref_mean: float
) -> tuple[float, tuple[float, float], str]:
    """Mean over seeds of 1 - cost / reference cost (paired by seed where the reference has it),
    its 95% interval (upper bound clipped to 1) and how the interval was computed."""
    if ref_mean <= 0:
        return math.nan, (math.nan, math.nan), "n/a"
    if len(per_seed) >= 2:
        vals = [1.0 - float(s[key].mean()) / ref_by_seed.get(seed, ref_mean) for s, seed in zip(per_seed, seeds)]
        return float(np.mean(vals)), t_interval(vals, hi=1.0), f"t over {len(vals)} seeds"
    ref = ref_by_seed.get(seeds[0], ref_mean)
    vals = 1.0 - per_seed[0][key] / ref  # per-episode savings; their mean is the seed's saving
    return float(vals.mean()), t_interval(vals, hi=1.0), f"t over {vals.size} episodes"


def _success_interval(per_seed: list[dict[str, Any]]) -> tuple[tuple[float, float], str]:
    """95% interval of the mean per-seed success rate and its kind (see the module doc)."""
    rates = [s["success"] for s in per_seed]
    if len(per_seed) >= 2 and len(set(rates)) > 1:
        return t_interval(rates, 0.0, 1.0), f"t over {len(rates)} seeds"
    successes, n = sum(s["successes"] for s in per_seed), sum(s["n"] for s in per_seed)
    if len(per_seed) >= 2:  # identical rates: the t interval would have zero width
        return wilson_interval(successes, n), f"Wilson over {n} episodes (pooled: all {len(rates)} seeds equal)"
    return wilson_interval(successes, n), f"Wilson over {n} episodes"


def _score_interval(per_seed: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Mean score over seeds and its 95% interval (t over seeds, or over one seed's episodes)."""
    if not all("score" in s for s in per_seed):
        return math.nan, math.nan, math.nan
    means = [s["score"] for s in per_seed]
    vals = means if len(means) >= 2 else list(per_seed[0]["scores"])
    lo, hi = t_interval(vals, 0.0, 1.0) if len(vals) >= 2 else (math.nan, math.nan)
    return float(np.mean(means)), lo, hi


def summarize(results: Mapping[str, Any], reference: str = "DEEPTHINK-only") -> list[Row]:
    """One ``Row`` per label, in display order (see ``markdown_table``).

    ``reference`` is the method whose (single) label is the 100%-compute baseline for
    ``compute_saved`` / ``seconds_saved``. Seeds of one label with different episode counts are
    allowed (a ``ReportWarning``; the counts are kept in ``Row.episode_counts``).
    """
    groups = _group_runs(results)
    stats: dict[str, tuple[list[Any], list[dict[str, Any]]]] = {}
    for label, runs in groups.items():
        per_seed = [_per_seed(_episode_arrays(r)) for r in runs]
        counts = [s["n"] for s in per_seed]
        if len(set(counts)) > 1:
            warnings.warn(
                f"label {label!r}: seeds have different episode counts {counts}; "
                "per-seed rates are still averaged with equal weight",
                ReportWarning,
                stacklevel=2,
            )
        stats[label] = ([r["seed"] for r in runs], per_seed)

    ref_labels = [lab for lab, runs in groups.items() if runs[0]["method"] == reference]
    if len(ref_labels) != 1:
        what = "no label has" if not ref_labels else f"{len(ref_labels)} labels ({', '.join(ref_labels)}) have"
        raise ReportError(
            f"{what} method {reference!r}, so compute saved has no single reference; labels: "
            + ", ".join(f"{lab} ({runs[0]['method']})" for lab, runs in groups.items())
            + f". Include exactly one {reference!r} configuration or pass reference=<method>"
        )
    ref_seeds, ref_stats = stats[ref_labels[0]]
    ref_flops = {sd: float(s["flops_ep"].mean()) for sd, s in zip(ref_seeds, ref_stats)}
    ref_secs = {sd: float(s["seconds_ep"].mean()) for sd, s in zip(ref_seeds, ref_stats)}
    ref_flops_mean = float(np.mean(list(ref_flops.values())))
    if ref_flops_mean <= 0 or min(ref_flops.values()) <= 0:
        raise ReportError(
            f"reference {ref_labels[0]!r} records zero FLOPs per episode; fill quick_flops/deep_flops "
            "so compute saved can be measured"
        )
    ref_secs_mean = float(np.mean(list(ref_secs.values())))
    if min(ref_secs.values()) <= 0:
        ref_secs_mean = 0.0  # seconds not measured: seconds_saved is reported as n/a

    rows = []
    for label, (seeds, per_seed) in stats.items():
        run0 = groups[label][0]
        n_seeds = len(per_seed)
        success = [s["success"] for s in per_seed]
        (succ_lo, succ_hi), ci_kind = _success_interval(per_seed)
        saved, saved_ci, saved_kind = _saving(per_seed, seeds, "flops_ep", ref_flops, ref_flops_mean)
        secs, secs_ci, _ = _saving(per_seed, seeds, "seconds_ep", ref_secs, ref_secs_mean)
        kinds: dict[str, list[float]] = {}
        kinds_score: dict[str, list[float]] = {}
        for s in per_seed:
            for k, v in s["kinds"].items():
                kinds.setdefault(k, []).append(v)
            for k, v in s.get("kinds_score", {}).items():
                kinds_score.setdefault(k, []).append(v)
        score, score_lo, score_hi = _score_interval(per_seed)
        rows.append(
            Row(
                label=label,
                method=str(run0["method"]),
                params=dict(run0.get("params") or {}),
                n_seeds=n_seeds,
                n_episodes=sum(s["n"] for s in per_seed),
                success=float(np.mean(success)),
                success_lo=succ_lo,
                success_hi=succ_hi,
                ci_kind=ci_kind,
                mean_return=float(np.mean([s["return"] for s in per_seed])),
                call_rate=float(np.mean([s["call_rate"] for s in per_seed])),
                calls_per_episode=float(np.mean([s["calls"] for s in per_seed])),
                flops_per_episode=float(np.mean([s["flops_ep"].mean() for s in per_seed])),
                seconds_per_episode=float(np.mean([s["seconds_ep"].mean() for s in per_seed])),
                compute_saved=saved,
                compute_saved_lo=saved_ci[0],
                compute_saved_hi=saved_ci[1],
                seconds_saved=secs,
                seconds_saved_lo=secs_ci[0],
                seconds_saved_hi=secs_ci[1],
                saved_ci_kind=saved_kind,
                violations=sum(s["violations"] for s in per_seed),
                per_kind_success={k: float(np.mean(v)) for k, v in sorted(kinds.items())},
                seeds=list(seeds),
                episode_counts=[s["n"] for s in per_seed],
                per_seed_success=success,
                score=score,
                score_lo=score_lo,
                score_hi=score_hi,
                per_kind_score={k: float(np.mean(v)) for k, v in sorted(kinds_score.items())},
            )
        )
    return sort_rows(rows)


def _value_key(v: Any) -> tuple[int, float, str]:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def _row_key(row: Row) -> tuple[Any, ...]:
    fam = FAMILY_ORDER.index(row.method) if row.method in FAMILY_ORDER else len(FAMILY_ORDER)
    primary = next((row.params[p] for p in _PRIMARY_PARAM.get(row.method, ()) if p in row.params), None)
    prim_key = _value_key(primary) if primary is not None else (2, 0.0, "")
    rest = tuple((k, _value_key(v)) for k, v in sorted(row.params.items()))
    # "others" are grouped by method name before their parameters
    return (fam, row.method if fam == len(FAMILY_ORDER) else "", prim_key, rest, row.label)


def sort_rows(rows: Sequence[Row]) -> list[Row]:
    """Display order: QUICK-only, DEEPTHINK-only, Random (by p), Threshold, SwiftSage,
    LONDI (by c), LONDI-B (by budget), then other methods (by name)."""
    return sorted(rows, key=_row_key)


# --------------------------------------------------------------------------- table


def _pct(x: float, ci: tuple[float, float] | None = None, suffix: str = "%") -> str:
    """``62.8%``, or with an interval ``62.8 [55.0, 70.7]%`` (bounds in the same unit)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    s = f"{100 * x:.1f}"
    if ci is not None and all(math.isfinite(b) for b in ci):
        s += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return s + suffix


def _fmt_param(v: Any, digits: int | None = None) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}g}" if digits else f"{v:g}"
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Row], per_kind: bool = True, quality: str = "success") -> str:
    """The results table (GitHub markdown), rows in display order, percentages with 1 decimal.
    With ``quality="score"`` a mean-score column (0-100) comes first and the per-kind columns
    give mean scores."""
    rows = sort_rows(rows)
    by_score = quality == "score"
    per_kind_of = (lambda r: r.per_kind_score) if by_score else (lambda r: r.per_kind_success)
    kinds = sorted({k for r in rows for k in per_kind_of(r)}) if per_kind else []
    header = [
        "Method", "params", *(["mean score [95% CI]"] if by_score else []), "success [95% CI]", "return",
        "DEEPTHINK call rate", "compute saved (FLOPs) [95% CI]", "model-seconds saved [95% CI]", "violations",
    ] + [f"{k} {'score' if by_score else 'success'}" for k in kinds]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    for r in rows:
        params = ", ".join(f"{k}={_fmt_param(v)}" for k, v in r.params.items()) or "–"
        cells = [
            r.label,
            params,
            *([_pct(r.score, (r.score_lo, r.score_hi), "")] if by_score else []),
            _pct(r.success, (r.success_lo, r.success_hi)),
            f"{r.mean_return:.3f}",
            _pct(r.call_rate),
            _pct(r.compute_saved, (r.compute_saved_lo, r.compute_saved_hi)),
            _pct(r.seconds_saved, (r.seconds_saved_lo, r.seconds_saved_hi)),
            str(r.violations),
        ] + [_pct(per_kind_of(r)[k], suffix="" if by_score else "%") if k in per_kind_of(r) else "–" for k in kinds]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plot


def _atomic_write(path: Path, write) -> None:
    """Write via a temporary file in the same directory and ``os.replace`` it into place, with
    normal permissions (``utils.io.atomic_write``; ``mkstemp`` would leave the file owner-only)."""
    atomic_write(path, write)


def _error_bars(centre: np.ndarray, bounds: Sequence[tuple[float, float]]) -> np.ndarray:
    """matplotlib's asymmetric ``[2, N]`` error lengths (below, above) in percent from interval
    bounds in fractions; an interval that could not be computed (nan) draws no bar."""
    b = 100 * np.asarray(bounds, dtype=np.float64).reshape(-1, 2).T
    return np.nan_to_num(np.clip(np.stack([centre - b[0], b[1] - centre]), 0.0, None))


def plot_cost_quality(rows: Sequence[Row], path: str | os.PathLike, title: str = "LONDI on BabyAI-Text: cost vs quality",
                      quality: str = "success") -> Path:
    """Success rate (%), or mean score with ``quality="score"``, against compute saved (% of
    DEEPTHINK-only FLOPs), one series per family.

    Error bars are the 95% CIs, asymmetric (from ``lo`` to ``hi``: a success bar never leaves
    [0, 100]); families with several configurations are joined by a line in
    order of compute saved; LONDI points are annotated with c, LONDI-B points with the budget.
    Uses a bare ``Figure`` on the Agg canvas (no pyplot state). Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        raise ReportError("plot_cost_quality got no rows; call summarize(results) first")
    path = Path(path)
    fig = Figure(figsize=(7.5, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^vP*Xh<>p"
    families = list(dict.fromkeys(r.method for r in sort_rows(rows)))
    for i, fam in enumerate(families):
        pts = sorted((r for r in rows if r.method == fam), key=lambda r: (r.compute_saved, r.quality(quality)[0]))
        x = np.array([100 * r.compute_saved for r in pts])
        y = np.array([100 * r.quality(quality)[0] for r in pts])
        xerr = _error_bars(x, [(r.compute_saved_lo, r.compute_saved_hi) for r in pts])
        yerr = _error_bars(y, [r.quality(quality)[1:] for r in pts])
        ax.errorbar(
            x, y, xerr=xerr, yerr=yerr, color=f"C{i % 10}", marker=markers[i % len(markers)],
            linestyle="-" if len(pts) > 1 else "none", capsize=3, markersize=6, label=fam,
        )
        if fam in _ANNOTATE:
            key, short = _ANNOTATE[fam]
            for r, xi, yi in zip(pts, x, y):
                if key in r.params:
                    ax.annotate(
                        f"{short}={_fmt_param(r.params[key], 3)}", (xi, yi), textcoords="offset points",
                        xytext=(5, 5), fontsize=8, color=f"C{i % 10}",
                    )
    ax.set_xlabel("compute saved (% of DEEPTHINK-only FLOPs)")
    ax.set_ylabel("mean score (0-100, failures 0)" if quality == "score" else "success rate (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
    return path


# --------------------------------------------------------------------------- targets


def _target(name: str, value: Any, threshold: Any, passed: bool | None, detail: str) -> dict[str, Any]:
    return {"name": name, "value": value, "threshold": threshold, "passed": passed, "detail": detail}


def _one(rows: Sequence[Row], method: str) -> Row | None:
    found = [r for r in rows if r.method == method]
    if len(found) > 1:
        raise ReportError(
            f"{len(found)} rows have method {method!r} ({', '.join(r.label for r in found)}); "
            "targets need exactly one"
        )
    return found[0] if found else None


def _pick_londi(rows: Sequence[Row], deep: Row | None, londi_label: str | None, q: Any = None) -> Row | None:
    q = q or (lambda r: r.success)
    if londi_label is not None:
        for r in rows:
            if r.label == londi_label:
                return r
        raise ReportError(f"londi_label {londi_label!r} is not a row; labels: {', '.join(r.label for r in rows)}")
    londi = [r for r in rows if r.method == "LONDI"]
    if not londi:
        return None
    if deep is not None:
        good = [r for r in londi if q(r) >= 0.95 * q(deep)]
        if good:
            return max(good, key=lambda r: (r.compute_saved, q(r)))
    return max(londi, key=lambda r: (q(r), r.compute_saved))


def _value_at(rate: float, family: Sequence[Row], anchors: Sequence[Row], name: str, q: Any = None
              ) -> tuple[float | None, str]:
    """A method family's quality at call rate ``rate``: its nearest row when one is within 0.05,
    else linear interpolation between the bracketing points of its rows together with QUICK-only
    (rate 0) and DEEPTHINK-only (rate 1), the end points of every switch."""
    q = q or (lambda r: r.success)
    near = min(family, key=lambda r: abs(r.call_rate - rate))
    if abs(near.call_rate - rate) <= 0.05:
        return q(near), f"nearest {name} row {near.label!r} (call rate {_pct(near.call_rate)})"
    pts = sorted({(r.call_rate, q(r), r.label) for r in list(family) + list(anchors)})
    lo = [p for p in pts if p[0] <= rate]
    hi = [p for p in pts if p[0] >= rate]
    if not lo or not hi:
        return None, (
            f"no {name} row within 0.05 of call rate {_pct(rate)} and it lies outside the measured "
            f"range [{_pct(pts[0][0])}, {_pct(pts[-1][0])}]; cannot interpolate"
        )
    (x0, y0, l0), (x1, y1, l1) = lo[-1], hi[0]
    y = y0 if x1 == x0 else y0 + (y1 - y0) * (rate - x0) / (x1 - x0)
    return y, (
        f"no {name} row within 0.05 call rate (nearest {near.label!r} at {_pct(near.call_rate)}); "
        f"{name} linearly interpolated between {l0!r} ({_pct(x0)}, {_pct(y0)}) and "
        f"{l1!r} ({_pct(x1)}, {_pct(y1)})"
    )


def _random_success_at(rate: float, randoms: Sequence[Row], anchors: Sequence[Row]) -> tuple[float | None, str]:
    """Random switching's success at call rate ``rate`` (:func:`_value_at` over the Random rows)."""
    return _value_at(rate, randoms, anchors, "Random")


def targets(
    rows: Sequence[Row], *, quick: str = "QUICK-only", deep: str = "DEEPTHINK-only", londi_label: str | None = None,
    quality: str = "success", gap: float = 20.0, min_saved: float = 0.30, outside_ci: bool = False,
    swiftsage: bool = False,
) -> list[dict[str, Any]]:
    """The experiment's targets as ``{name, value, threshold, passed, detail}`` dicts.

    ``quality``: the measure compared (``"success"`` rate or mean ``"score"``, see ``Row.quality``).

    1. ``deep_beats_quick``: DEEPTHINK-only - QUICK-only >= ``gap`` points (20 on BabyAI-Text,
       15 on ScienceWorld).
    2a. ``londi_quality``: LONDI / DEEPTHINK-only >= 0.95.
    2b. ``londi_compute_saved``: LONDI compute saved >= ``min_saved`` (30% / 50%).
    3. ``londi_beats_random``: LONDI above Random switching at LONDI's call rate; with
       ``outside_ci`` LONDI's lower 95% bound must be above it.
    3b. (``swiftsage``) ``londi_beats_swiftsage``: LONDI at SwiftSage's call rate (its rows
       interpolated as Random's are) above SwiftSage's upper 95% bound (``outside_ci``) or estimate.
    4. ``londi_b_no_violations``: zero budget violations over all LONDI-B rows.

    Values are fractions (target 1 in points). The LONDI row is ``londi_label`` or, by default,
    the LONDI row with the most compute saved among those meeting 2a (else the best one).
    ``passed`` is None when a target cannot be evaluated (its rows are missing).
    """
    q = (lambda r: r.quality(quality)[0])
    word = "success" if quality == "success" else "mean score"
    q_row, d = _one(rows, quick), _one(rows, deep)
    out = []
    if q_row is None or d is None:
        missing = " and ".join(m for m, r in ((quick, q_row), (deep, d)) if r is None)
        out.append(_target("deep_beats_quick", None, gap, None, f"not evaluated: no {missing} row"))
    else:
        diff = 100 * (q(d) - q(q_row))
        out.append(_target(
            "deep_beats_quick", diff, gap, diff >= gap - 1e-9,
            f"{deep} {_pct(q(d))} vs {quick} {_pct(q(q_row))}: {diff:+.1f} points (need >= +{gap:g})",
        ))
    lon = _pick_londi(rows, d, londi_label, q)
    if lon is None:
        names = [("londi_quality", 0.95), ("londi_compute_saved", min_saved), ("londi_beats_random", None)]
        names += [("londi_beats_swiftsage", None)] if swiftsage else []
        for name, thr in names:
            out.append(_target(name, None, thr, None, "not evaluated: no LONDI row"))
    else:
        if d is None or q(d) <= 0:
            out.append(_target("londi_quality", None, 0.95, None, f"not evaluated: no {deep} row with {word} > 0"))
        else:
            ratio = q(lon) / q(d)
            out.append(_target(
                "londi_quality", ratio, 0.95, ratio >= 0.95 - 1e-12,
                f"{lon.label!r} {word} {_pct(q(lon))} = {100 * ratio:.1f}% of {deep}'s {_pct(q(d))} (need >= 95%)",
            ))
        out.append(_target(
            "londi_compute_saved", lon.compute_saved, min_saved, bool(lon.compute_saved >= min_saved - 1e-12),
            f"{lon.label!r} saves {_pct(lon.compute_saved)} of {deep}'s FLOPs (need >= {100 * min_saved:g}%)",
        ))
        anchors = [r for r in (q_row, d) if r is not None]
        randoms = [r for r in rows if r.method == "Random"]
        lon_lo = lon.quality(quality)[1]
        if not randoms:
            out.append(_target("londi_beats_random", None, None, None, "not evaluated: no Random rows"))
        else:
            rs, how = _value_at(lon.call_rate, randoms, anchors, "Random", q)
            head = f"{lon.label!r} call rate {_pct(lon.call_rate)}, {word} {_pct(q(lon))}"
            head += f" (95% CI from {_pct(lon_lo)}); " if outside_ci else "; "
            if rs is None:
                out.append(_target("londi_beats_random", q(lon), None, None, head + how))
            else:
                passed = bool(lon_lo > rs) if outside_ci else bool(q(lon) > rs)
                out.append(_target(
                    "londi_beats_random", q(lon), rs, passed,
                    head + f"Random {word} {_pct(rs)} at that rate: {how}"
                    + (" (need LONDI's lower bound above it)" if outside_ci else ""),
                ))
        if swiftsage:
            ss = [r for r in rows if r.method == "SwiftSage"]
            londis = [r for r in rows if r.method == "LONDI"]
            if not ss:
                out.append(_target("londi_beats_swiftsage", None, None, None, "not evaluated: no SwiftSage row"))
            else:
                s0 = ss[0]
                s_v, s_lo, s_hi = s0.quality(quality)
                lv, how = _value_at(s0.call_rate, londis, anchors, "LONDI", q)
                bar = s_hi if outside_ci else s_v
                out.append(_target(
                    "londi_beats_swiftsage", lv, bar, None if lv is None or not math.isfinite(bar) else bool(lv > bar),
                    f"SwiftSage call rate {_pct(s0.call_rate)}, {word} {_pct(s_v, (s_lo, s_hi))}; LONDI at that "
                    f"rate {_pct(lv) if lv is not None else 'n/a'}: {how}"
                    + (" (need it above SwiftSage's upper bound)" if outside_ci else ""),
                ))
    lb = [r for r in rows if r.method in ("LONDI-B", "LONDI-B online")]
    if not lb:
        out.append(_target("londi_b_no_violations", None, 0, None, "not evaluated: no LONDI-B rows"))
    else:
        total = sum(r.violations for r in lb)
        out.append(_target(
            "londi_b_no_violations", total, 0, total == 0,
            "; ".join(f"{r.label!r}: {r.violations} violations in {r.n_episodes} episodes" for r in lb),
        ))
    return out


def oracle_comparison(rows: Sequence[Row], *, quick: str = "QUICK-only", quality: str = "success"
                      ) -> list[dict[str, Any]]:
    """Every switch measured against the oracle switch (the ``Oracle`` row: DEEPTHINK exactly
    where the expert says QUICK is wrong and DEEPTHINK right).

    For each row other than QUICK-only, DEEPTHINK-only and the oracle: ``gain_share`` = (row -
    QUICK-only) / (oracle - QUICK-only) in ``quality`` (1 = all of the oracle's gain over QUICK,
    above 1 possible where DEEPTHINK's other actions also help), and ``call_ratio`` = the row's
    DEEPTHINK call rate / the oracle's. Empty without an oracle or QUICK-only row; ``gain_share``
    is None where the oracle gains nothing over QUICK.
    """
    o, q_row = _one(rows, "Oracle"), _one(rows, quick)
    if o is None or q_row is None:
        return []
    gain = o.quality(quality)[0] - q_row.quality(quality)[0]
    out = []
    for r in sort_rows(rows):
        if r.method in ("Oracle", quick, "DEEPTHINK-only"):
            continue
        share = (r.quality(quality)[0] - q_row.quality(quality)[0]) / gain if gain > 1e-12 else None
        out.append({"label": r.label, "method": r.method, "gain_share": share,
                    "call_ratio": r.call_rate / o.call_rate if o.call_rate > 0 else None})
    return out


def _oracle_markdown(rows: Sequence[Row], cmp: Sequence[Mapping[str, Any]], quality: str) -> str:
    o, q_row = _one(rows, "Oracle"), _one(rows, "QUICK-only")
    if not cmp:
        return ""
    word, unit = ("success", "%") if quality == "success" else ("mean score", "")
    text = (f"\n## Against the oracle switch\n\nOracle ({', '.join(f'{k}: {v}' for k, v in o.params.items())}): "
            f"{word} {_pct(o.quality(quality)[0], suffix=unit)} at DEEPTHINK call rate {_pct(o.call_rate)}, "
            f"{_pct(o.compute_saved)} of FLOPs saved; QUICK-only {_pct(q_row.quality(quality)[0], suffix=unit)}. "
            "Share of the "
            "oracle's gain over QUICK-only, and call rate relative to the oracle's:\n\n")
    for c in cmp:
        share = "n/a" if c["gain_share"] is None else f"{100 * c['gain_share']:.0f}%"
        ratio = "n/a" if c["call_ratio"] is None else f"{c['call_ratio']:.2f}x"
        text += f"- {c['label']}: {share} of the gain, {ratio} the calls\n"
    return text


# --------------------------------------------------------------------------- files


def _targets_markdown(tg: Sequence[Mapping[str, Any]]) -> str:
    mark = {True: "PASS", False: "FAIL", None: "n/a"}
    return "".join(f"- **{mark[t['passed']]}** `{t['name']}`: {t['detail']}\n" for t in tg)


def write_report(results: Mapping[str, Any] | str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``results_table.md`` (table + targets), ``cost_quality.png`` and ``summary.json``
    (rows + targets + meta) into ``out_dir``; ``results`` is the dict or a results.json path.
    Returns ``{"table", "plot", "summary"}`` paths."""
    if isinstance(results, (str, os.PathLike)):
        try:
            results = json.loads(Path(results).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ReportError(f"cannot read results file {results}: {e}") from e
    out = Path(out_dir)
    rows = summarize(results)
    meta = dict(results.get("meta") or {})
    quality = meta.get("quality", "success")
    tg = targets(rows, quality=quality, **dict(meta.get("targets") or {}))
    oracle = oracle_comparison(rows, quality=quality)
    head = "# LONDI experiment results\n\n"
    if meta:
        head += ", ".join(f"{k}: {v}" for k, v in meta.items() if not isinstance(v, (dict, list))) + "\n\n"
    text = (
        head + markdown_table(rows, quality=quality)
        + ("\nmean score: final score 0-100 with failures (-100) counted as 0, [95% CI] Student-t over seeds. "
           if quality == "score" else "\n")
        + "success [95% CI]: Student-t over seeds clipped to [0, 100] (Wilson over the pooled episodes "
        "when every seed has the same rate; Wilson over episodes for a single seed); "
        "compute saved relative to DEEPTHINK-only FLOPs per episode, [95% CI] Student-t.\n\n## Targets\n\n"
        + _targets_markdown(tg)
        + _oracle_markdown(rows, oracle, quality)
    )
    paths = {"table": out / "results_table.md", "plot": out / "cost_quality.png", "summary": out / "summary.json"}
    _atomic_write(paths["table"], lambda fh: fh.write(text.encode()))
    plot_cost_quality(rows, paths["plot"], title=f"LONDI cost vs quality ({meta.get('preset', 'results')})",
                      quality=quality)
    summary = {"meta": meta, "rows": [asdict(r) for r in rows], "targets": tg, "oracle": oracle}
    _atomic_write(paths["summary"], lambda fh: fh.write(json.dumps(to_jsonable(summary, finite=True), indent=2, allow_nan=False).encode()))
    return paths
