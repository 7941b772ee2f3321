"""Shared helpers for the scripts in benchmarks/: machine info, careful timing, JSON results, tables.

Usage from a benchmark script (run as ``python benchmarks/<name>.py``)::

    from _common import machine_info, time_call, write_result, render_table
    t = time_call(fn, *args, repeats=5)         # first call (compile) timed apart, then warm repeats
    print(t.median_s, t.first_call_s)
    write_result("my_bench", {"results": [...]})   # -> benchmarks/results/my_bench.json (+ machine info)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """Where the numbers come from: CPU, cores, memory, load, accelerator, library versions, commit."""
    info: dict[str, Any] = {
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "mem_gib": _mem_gib(),
        "git_commit": _git_commit(),
    }
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other jobs on a shared machine skew timings
    except OSError:
        pass
    try:
        import jax

        devs = jax.devices()
        info.update(jax=jax.__version__, backend=jax.default_backend(), device_count=len(devs),
                    device_kind=devs[0].device_kind, device=str(devs[0]))
    except Exception as err:  # benchmarks without jax still get the rest
        info["jax_error"] = repr(err)
    for mod in ("flax", "numpy", "torch", "transformers"):
        if mod in sys.modules:
            info[mod] = getattr(sys.modules[mod], "__version__", "?")
    return info


def device_tag() -> str:
    """Short file-name-safe name of the default jax device kind, e.g. ``cpu`` or ``nvidia_h100_80gb_hbm3``."""
    import jax

    d = jax.devices()[0]
    kind = "cpu" if d.platform == "cpu" else d.device_kind
    return re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_")


def block(x: Any) -> Any:
    """``jax.block_until_ready`` on any pytree (a no-op for plain Python / numpy values)."""
    try:
        import jax

        return jax.block_until_ready(x)
    except ImportError:
        return x


@dataclasses.dataclass
class Timing:
    """Seconds of one benchmarked call: ``first_call_s`` (includes tracing/compilation) apart from the
    warm ``times`` (after ``warmup`` extra calls)."""

    first_call_s: float
    times: list[float]
    warmup: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    @property
    def min_s(self) -> float:
        return min(self.times)

    @property
    def compile_s(self) -> float:
        """First call minus a warm call: an estimate of trace + compile time."""
        return max(self.first_call_s - self.median_s, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "min_s": self.min_s, "first_call_s": self.first_call_s,
                "compile_s_est": self.compile_s, "repeats": len(self.times), "warmup": self.warmup,
                "times_s": self.times}


def time_call(fn: Callable[..., Any], *args: Any, repeats: int = 5, warmup: int = 1,
              min_total_s: float = 0.0, max_repeats: int = 100, **kwargs: Any) -> Timing:
    """Time ``fn(*args, **kwargs)`` with ``block_until_ready`` on its output.

    The first call is timed on its own (compilation), then ``warmup`` untimed calls, then at least
    ``repeats`` timed calls (more, up to ``max_repeats``, until ``min_total_s`` seconds are covered).
    """
    t0 = time.perf_counter()
    block(fn(*args, **kwargs))
    first = time.perf_counter() - t0
    for _ in range(warmup):
        block(fn(*args, **kwargs))
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_total_s and len(times) < max_repeats):
        t0 = time.perf_counter()
        block(fn(*args, **kwargs))
        times.append(time.perf_counter() - t0)
    return Timing(first_call_s=first, times=times, warmup=warmup)


def time_compile(jitted: Any, *args: Any, **kwargs: Any) -> tuple[float, float, Any]:
    """``(lower_s, compile_s, compiled)`` for a ``jax.jit`` function on these arguments."""
    t0 = time.perf_counter()
    lowered = jitted.lower(*args, **kwargs)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return t1 - t0, time.perf_counter() - t1, compiled


def write_result(name: str, result: dict[str, Any], results_dir: Path | str | None = None) -> Path:
    """Write ``result`` plus ``machine`` info as ``<results_dir>/<name>.json``; return the path."""
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine_info(), **result}
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], floatfmt: str = ".4g") -> str:
    """A plain-text table of ``rows`` (dicts) restricted to ``columns``."""
    def fmt(v: Any) -> str:
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
