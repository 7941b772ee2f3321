"""Text-environment throughput: BabyAI-Text and ScienceWorld, single env and batched.

Side by side in one run:

* BabyAI-Text (``BabyAI-MixedTrainLocal-v0``, kinds round-robin, random actions, text
  observations): one ``TextEnv`` in a plain loop, then ``BatchedEnv`` with N = 1, 8, 32 envs,
  in-process vs worker processes (``num_workers = min(N, cpu_count)``).
* ScienceWorld (task 4-1 find-living-thing, ``easy``, random commands from a fixed list without
  ``focus on``, so no episode ends inside a timed run; reset cost is reported separately): the
  package's own ``ScienceWorldEnv.step`` (always lists valid actions) vs our wrapper without and
  with valid-action lists; then ``BatchedEnv`` with 1, 2, 4 worker processes (one JVM each);
  then the rollout loop (``run_episodes``, valid actions, no model) with 1, 2, 4 slots stepped
  one after another vs from one thread each (its ``parallel``; each slot's JVM computes at once).

Timing: wall clock (``time.perf_counter``) because worker processes and JVMs run outside this
process; every configuration gets a warm-up (construction, reset and some steps: the JVM's JIT
warms up) that is timed separately and reported as ``startup_s``. Steps are env-steps (a batched
step of N envs counts N). Auto-reset is included. The machine's load average is recorded: on a
shared machine the absolute numbers move with the neighbours, the ratios within one run less so.

Run: ``python benchmarks/env_throughput.py [--quick] [--json]``; writes
``benchmarks/results/env_throughput.json`` (``--quick``: ``env_throughput_quick.json``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from londi_jax.envs.runner import BatchedEnv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info as common_machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SW_TASK = "4-1"
SW_COMMANDS = ["look around", "inventory", "go to kitchen", "go to outside", "teleport to kitchen",
               "teleport to greenhouse", "open door to kitchen", "pick up orange", "wait1", "look at chair",
               "move orange to orange box"]  # no "focus on": steps are timed without episode resets
SW_STEP_LIMIT = 10_000


def machine_info() -> dict[str, Any]:
    """The shared machine record plus what matters for text envs (ScienceWorld and Java versions)."""
    import subprocess

    import scienceworld

    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    except (OSError, IndexError):
        java = None
    return {**common_machine_info(), "scienceworld": scienceworld.__version__, "java": java,
            "timer": "time.perf_counter (wall clock), after a separately timed warm-up"}


def _babyai_factories(n: int) -> list:
    from londi_jax.envs.babyai_text import MIXED_KINDS, make_babyai_text

    return [functools.partial(make_babyai_text, "BabyAI-MixedTrainLocal-v0", kind=MIXED_KINDS[i % len(MIXED_KINDS)])
            for i in range(n)]


def bench_babyai_single(steps: int) -> dict[str, float]:
    from londi_jax.envs.babyai_text import ACTIONS

    env = _babyai_factories(1)[0]()
    acts = np.random.default_rng(0).integers(0, len(ACTIONS), size=steps + 200).tolist()
    env.reset(0)
    for a in acts[:200]:  # warm-up
        if env.step(ACTIONS[a]).done:
            env.reset()
    t = time.perf_counter()
    for a in acts[200:]:
        if env.step(ACTIONS[a]).done:
            env.reset()
    dt = time.perf_counter() - t
    env.close()
    return {"steps_per_s": steps / dt, "steps": steps}


def _run_batched(benv: BatchedEnv, actions_fn, batch_steps: int, warm_steps: int, with_valid: bool) -> float:
    """Env-steps per second of ``batch_steps`` batched steps after ``warm_steps`` of warm-up."""
    benv.reset()
    for t in range(warm_steps):
        benv.step(actions_fn(t), with_valid=with_valid)
    t0 = time.perf_counter()
    for t in range(batch_steps):
        benv.step(actions_fn(warm_steps + t), with_valid=with_valid)
    return benv.num_envs * batch_steps / (time.perf_counter() - t0)


def bench_babyai_batched(ns: list[int], env_steps: int) -> list[dict[str, Any]]:
    from londi_jax.envs.babyai_text import ACTIONS

    rows = []
    for n in ns:
        rng = np.random.default_rng(n)
        acts = [[ACTIONS[a] for a in row] for row in rng.integers(0, len(ACTIONS), size=(4096, n))]
        batch_steps = max(env_steps // n, 20)
        for backend in ("inprocess", "subprocess"):
            workers = min(n, os.cpu_count() or 1) if backend == "subprocess" else None
            t = time.perf_counter()
            benv = BatchedEnv(_babyai_factories(n), seeds=0, backend=backend, num_workers=workers)
            startup = time.perf_counter() - t
            try:
                rate = _run_batched(benv, lambda k: acts[k % len(acts)], batch_steps, warm_steps=10, with_valid=False)
            finally:
                benv.close()
            rows.append({"num_envs": n, "backend": backend, "num_workers": workers or 0, "env_steps_per_s": rate,
                         "env_steps": n * batch_steps, "startup_s": startup})
            print(f"  babyai N={n:>2} {backend:<10} workers={workers or 0}: {rate:9.0f} env-steps/s "
                  f"(startup {startup:.2f} s)", file=sys.stderr)
    return rows


def bench_scienceworld_single(steps: int, warm: int) -> dict[str, Any]:
    """Package step (valid list always) vs wrapper step without / with valid actions."""
    from scienceworld import ScienceWorldEnv

    from londi_jax.envs.scienceworld import ScienceWorldTextEnv

    rng = np.random.default_rng(0)
    cmds = [SW_COMMANDS[k] for k in rng.integers(len(SW_COMMANDS), size=steps + warm)]
    out: dict[str, Any] = {"task": SW_TASK, "simplifications": "easy", "steps": steps, "warmup_steps": warm}

    t = time.perf_counter()
    pkg = ScienceWorldEnv("", envStepLimit=SW_STEP_LIMIT)
    pkg.load(SW_TASK, 0, "easy")
    pkg.reset()
    out["package_startup_s"] = time.perf_counter() - t

    def pkg_run(actions: list[str]) -> float:
        t0 = time.perf_counter()
        for a in actions:
            if pkg.step(a)[2]:
                pkg.reset()
        return len(actions) / (time.perf_counter() - t0)

    t = time.perf_counter()
    env = ScienceWorldTextEnv(SW_TASK, variation=0, simplifications="easy", step_limit=SW_STEP_LIMIT)
    env.reset(with_valid=False)
    out["wrapper_startup_s"] = time.perf_counter() - t

    def ours(actions: list[str], with_valid: bool) -> float:
        env.reset(with_valid=with_valid)
        t0 = time.perf_counter()
        for a in actions:
            if env.step(a, with_valid=with_valid).done:
                env.reset(with_valid=with_valid)
        return len(actions) / (time.perf_counter() - t0)

    try:
        # warm-up of both JVMs (their JIT needs a few hundred steps), then the three variants
        # interleaved twice; best of two
        pkg_run(cmds[:warm]), ours(cmds[:warm], False), ours(cmds[: warm // 3], True)
        rates: dict[str, list[float]] = {"package_step (valid always)": [], "wrapper_step (no valid)": [],
                                         "wrapper_step (with valid)": []}
        for _ in range(2):
            rates["package_step (valid always)"].append(pkg_run(cmds[warm:]))
            rates["wrapper_step (no valid)"].append(ours(cmds[warm:], False))
            rates["wrapper_step (with valid)"].append(ours(cmds[warm:], True))
        t0 = time.perf_counter()
        for _ in range(5):
            env.reset(with_valid=False)
        out["wrapper_reset_s"] = (time.perf_counter() - t0) / 5
        t0 = time.perf_counter()
        for _ in range(5):
            env.valid_actions()
        out["valid_actions_call_s"] = (time.perf_counter() - t0) / 5
    finally:
        env.close()
        pkg.close()
    out["steps_per_s"] = {k: max(v) for k, v in rates.items()}
    r = out["steps_per_s"]
    out["ratio_no_valid_vs_package"] = r["wrapper_step (no valid)"] / r["package_step (valid always)"]
    out["ratio_with_valid_vs_package"] = r["wrapper_step (with valid)"] / r["package_step (valid always)"]
    for k, v in r.items():
        print(f"  scienceworld single {k:<28}: {v:7.1f} steps/s", file=sys.stderr)
    return out


def bench_scienceworld_batched(workers: list[int], batch_steps: int, warm: int) -> list[dict[str, Any]]:
    from londi_jax.envs.scienceworld import ScienceWorldTextEnv

    fn = functools.partial(ScienceWorldTextEnv, SW_TASK, simplifications="easy", step_limit=SW_STEP_LIMIT)
    rows = []
    for w in workers:
        rng = np.random.default_rng(w)
        acts = [[SW_COMMANDS[k] for k in row] for row in rng.integers(len(SW_COMMANDS), size=(1024, w))]
        t = time.perf_counter()
        benv = BatchedEnv(fn, w, seeds=0, backend="subprocess")
        startup = time.perf_counter() - t
        try:
            for with_valid in (False, True):
                rate = _run_batched(benv, lambda k: acts[k % len(acts)], batch_steps, warm_steps=warm, with_valid=with_valid)
                rows.append({"num_envs": w, "num_workers": w, "with_valid": with_valid, "env_steps_per_s": rate,
                             "warmup_batch_steps": warm,
                             "env_steps": w * batch_steps, "startup_s": startup})
                print(f"  scienceworld workers={w} valid={with_valid!s:<5}: {rate:7.1f} env-steps/s "
                      f"(startup {startup:.1f} s)", file=sys.stderr)
        finally:
            benv.close()
    return rows


def bench_scienceworld_rollout(slots: list[int], episodes_per_slot: int, steps: int) -> list[dict[str, Any]]:
    """The rollout loop (``agents.rollout.run_episodes``) over ScienceWorld with valid actions, a
    controller without models (a fixed command cycle), N slots stepped one after another vs from one
    thread each (``parallel``: the JVMs compute at once). Each configuration first plays one
    episode per slot to start and warm its JVMs (an ``EnvPool`` keeps them for the timed run)."""
    from londi_jax.agents.rollout import Decision, EnvPool, run_episodes
    from londi_jax.envs.scienceworld.episodes import ScienceWorldEpisode
    from londi_jax.envs.scienceworld.tasks import resolve_task

    class Cycle:  # no model: the loop and the simulators alone
        def start(self, num_slots: int) -> None:
            pass

        def act(self, batch: Any) -> Decision:
            cmds = [SW_COMMANDS[(s.step + int(k)) % len(SW_COMMANDS)] for s, k in zip(batch.states, batch.owners)]
            return Decision(cmds, [], np.zeros(batch.n, bool))

        def observe(self, *args: Any) -> None:
            pass

    task = resolve_task(SW_TASK).id
    rows = []
    for n in slots:
        for parallel in (False, True):
            def specs(count: int, offset: int) -> list[Any]:
                return [ScienceWorldEpisode(task, v, "train", step_limit=steps) for v in range(offset, offset + count)]

            with EnvPool() as pool:
                t = time.perf_counter()
                run_episodes(specs(n, 0), Cycle(), n, progress=False, pool=pool, parallel=parallel)
                startup = time.perf_counter() - t
                res = run_episodes(specs(n * episodes_per_slot, n), Cycle(), n, progress=False, pool=pool,
                                   parallel=parallel)
            rate = res.env_steps / res.wall_seconds
            rows.append({"slots": n, "parallel": parallel, "env_steps": res.env_steps, "env_steps_per_s": rate,
                         "episodes": len(res.episodes), "startup_s": startup})
            print(f"  scienceworld rollout slots={n} parallel={parallel!s:<5}: {rate:7.1f} env-steps/s "
                  f"(resets included)", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and configurations (about a minute)")
    p.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    p.add_argument("--only", choices=("babyai", "scienceworld", "rollout"), default=None,
                   help="one part: BabyAI-Text, ScienceWorld single/batched, or the rollout loop's threads "
                        "(result file env_throughput[_quick]_<part>.json)")
    p.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/env_throughput[_quick].json)")
    args = p.parse_args(argv)
    q = args.quick
    res: dict[str, Any] = {"benchmark": "env_throughput", "quick": q, "machine": machine_info(),
                           "loadavg_start": list(os.getloadavg())}
    t = time.perf_counter()
    part = args.only
    if part in (None, "babyai"):
        print("BabyAI-Text ...", file=sys.stderr)
        res["babyai_single"] = bench_babyai_single(2000 if q else 20000)
        print(f"  babyai single TextEnv: {res['babyai_single']['steps_per_s']:.0f} steps/s", file=sys.stderr)
        res["babyai_batched"] = bench_babyai_batched([1, 8] if q else [1, 8, 32], 2000 if q else 12000)
    if part in (None, "scienceworld"):
        print("ScienceWorld ...", file=sys.stderr)
        res["scienceworld_single"] = bench_scienceworld_single(60 if q else 300, warm=90 if q else 300)
        res["scienceworld_batched"] = bench_scienceworld_batched([1, 2] if q else [1, 2, 4], 20 if q else 60,
                                                                 warm=30 if q else 100)
    if part in (None, "rollout"):
        print("ScienceWorld through the rollout loop ...", file=sys.stderr)
        res["scienceworld_rollout"] = bench_scienceworld_rollout([1, 2] if q else [1, 2, 4], 1 if q else 3,
                                                                 10 if q else 30)
    res["loadavg_end"] = list(os.getloadavg())
    res["total_s"] = time.perf_counter() - t
    name = "env_throughput" + ("_quick" if q else "") + (f"_{part}" if part else "")
    out = args.out or RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"wrote {out} ({res['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
