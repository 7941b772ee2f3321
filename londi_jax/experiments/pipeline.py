"""LONDI end to end on BabyAI-Text: demos -> BC of QUICK and DEEPTHINK -> switch data ->
offline switchers (a c x budget x seed grid in one program per learner) -> evaluation of every
method on the same episodes -> table + plot.

Each stage writes its outputs under ``out_dir`` and a ``<stage>.done.json`` marker; a rerun
skips finished stages (and BC resumes from its orbax checkpoints, evaluation from the runs
already in ``eval/runs.jsonl``), so an interrupted pipeline loses no finished work.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from londi_jax.agents.bc import BCTrainer, bc_data_from_episodes
from londi_jax.agents.calibration import greedy_call_rate, interpolate_cost
from londi_jax.agents.londi import EpisodeSpec, LondiAgent, collect_switch_data, episode_specs
from londi_jax.agents.policy import LMPolicy, SwitchEncoder
from londi_jax.agents.routers import (ConfidenceRouter, DeepthinkOnly, QuickOnly, RandomRouter, SwiftSageRouter,
                                      SwitcherRouter, calibrate_threshold)
from londi_jax.envs.babyai_text.demos import read_demos, write_demos
from londi_jax.experiments.config import ModelSpec, PipelineConfig, config_to_dict
from londi_jax.experiments.logging import RunLogger
from londi_jax.lm.config import ModelConfig
from londi_jax.lm.engine import LanguageModel
from londi_jax.lm.hf_loader import init_model, load_hf_directory
from londi_jax.lm.hf_writer import save_hf_directory
from londi_jax.lm.lora import save_lora
from londi_jax.lm.tokenizer import train_word_tokenizer
from londi_jax.switcher.checkpoint import CheckpointStore
from londi_jax.switcher.config import SwitcherConfig
from londi_jax.switcher.network import graphdef
from londi_jax.switcher.offline import OfflineDataset, load_dataset, make_offline_train, save_dataset
from londi_jax.switcher.sweep import stack_hparams
from londi_jax.utils.errors import LondiError

__all__ = ["Pipeline", "run_pipeline", "PipelineError"]

MODEL_NAMES = ("quick", "deepthink")
MIN_BATCH = 8  # LM calls pad to >= 8 rows: 4 batch shapes (8..64) to compile instead of 7


class PipelineError(LondiError):
    """A pipeline stage cannot run (missing or mismatched outputs of an earlier stage)."""


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def device_description() -> str:
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    return f"{d.platform}:{kind} x{jax.device_count()} ({os.cpu_count()} host cores, {platform.processor() or platform.machine()})"


class Pipeline:
    """The staged pipeline over one output directory."""

    STAGES = ("demos", "models", "switch_data", "switchers", "evaluate", "report")

    def __init__(self, config: PipelineConfig, out_dir: str | os.PathLike):
        self.config = config
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_config()
        self.log = RunLogger(self.out)
        self.timings: dict[str, float] = {}
        self._models: dict[str, LanguageModel] = {}

    @classmethod
    def from_run_dir(cls, out_dir: str | os.PathLike) -> Pipeline:
        """Reopen an existing run with the configuration it was started with."""
        from londi_jax.experiments.config import config_from_dict

        path = Path(out_dir) / "config.json"
        if not path.exists():
            raise PipelineError(f"{out_dir} is not a pipeline run directory (no config.json)")
        return cls(config_from_dict(json.loads(path.read_text())), out_dir)

    # ------------------------------------------------------------------ bookkeeping
    def _check_config(self) -> None:
        path = self.out / "config.json"
        mine = config_to_dict(self.config)
        mine_cmp = {k: v for k, v in mine.items() if k != "progress"}
        if path.exists():
            old = json.loads(path.read_text())
            old_cmp = {k: v for k, v in old.items() if k != "progress"}
            if old_cmp != mine_cmp:
                diff = sorted(k for k in set(old_cmp) | set(mine_cmp) if old_cmp.get(k) != mine_cmp.get(k))
                raise PipelineError(f"{self.out} holds a run with a different configuration (sections differing: "
                                    f"{', '.join(diff)}); use another --out directory or delete it")
        else:
            _write_json(path, mine)

    def _done(self, stage: str) -> bool:
        return (self.out / f"{stage}.done.json").exists()

    def _mark(self, stage: str, info: dict[str, Any]) -> None:
        _write_json(self.out / f"{stage}.done.json", info)

    def _say(self, msg: str) -> None:
        if self.config.progress:
            print(f"[londi] {msg}", flush=True)

    def run(self, stages: Sequence[str] | None = None) -> dict[str, Any]:
        """Run (or resume) the stages in order; returns where the outputs are and the summary."""
        wanted = list(stages or self.STAGES)
        for s in wanted:
            if s not in self.STAGES:
                raise PipelineError(f"unknown stage {s!r}; stages: {', '.join(self.STAGES)}")
        t_all = time.perf_counter()
        for stage in self.STAGES:
            if stage not in wanted:
                continue
            if self._done(stage):
                self._say(f"{stage}: already done (skipped)")
                continue
            t0 = time.perf_counter()
            self._say(f"{stage}: running")
            info = getattr(self, f"stage_{stage}")() or {}
            self.timings[stage] = time.perf_counter() - t0
            info["seconds"] = self.timings[stage]
            self._mark(stage, info)
            self.log.scalar(f"time/{stage}", self.timings[stage], 0)
            self._say(f"{stage}: done in {self.timings[stage]:.1f} s")
        self.log.close()
        total = time.perf_counter() - t_all
        return {"out_dir": str(self.out), "seconds": total, "timings": self.timings,
                "report": str(self.out / "report"), "results": str(self.out / "eval" / "results.json")}

    # ------------------------------------------------------------------ stage 1: demos
    def stage_demos(self) -> dict[str, Any]:
        e = self.config.env
        meta = write_demos(self.out / "demos", e.level, e.demo_episodes, seed=e.seed, progress=self.config.progress,
                           kinds=e.kinds, **e.level_kwargs())
        return {"episodes": meta["episodes_written"], "success_rate": meta["success_rate"]}

    def _demo_episodes(self) -> list[dict[str, Any]]:
        _, episodes = read_demos(self.out / "demos")
        return episodes

    # ------------------------------------------------------------------ stage 2: models
    def _spec(self, name: str) -> ModelSpec:
        return self.config.quick if name == "quick" else self.config.deep

    def _fresh_model(self, name: str, episodes: list[dict[str, Any]]) -> tuple[Any, Any]:
        spec = self._spec(name)
        if spec.source != "scratch":
            from londi_jax.lm.registry import load_lm

            lm = load_lm(spec.source, dtype=spec.dtype, progress=self.config.progress)
            return lm.model, lm.tokenizer
        texts = [s["prompt"] for ep in episodes for s in ep["steps"]]
        from londi_jax.envs.babyai_text.prompt import ACTIONS

        tok = train_word_tokenizer(texts + list(ACTIONS), vocab_size=spec.vocab_size)
        cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=spec.hidden_size,
                          num_layers=spec.num_layers, num_heads=spec.num_heads, num_kv_heads=spec.num_heads,
                          head_dim=spec.head_dim, intermediate_size=spec.intermediate_size, tie_embeddings=True,
                          max_position_embeddings=spec.max_position_embeddings, dtype=spec.dtype,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, model_type="llama")
        return init_model(cfg, seed=self.config.env.seed + (0 if name == "quick" else 1)), tok

    def _policy_eval_fn(self, name: str, tokenizer: Any) -> Callable[[Any], dict[str, float]] | None:
        spec = self._spec(name)
        if spec.eval_episodes <= 0:
            return None
        e = self.config.env
        specs = episode_specs(e.level, spec.eval_episodes, e.seed + 2_000_000, e.kinds, **e.level_kwargs())

        holder: dict[str, LanguageModel] = {}

        def eval_fn(model) -> dict[str, float]:
            # one LanguageModel across epochs, its weights swapped: its programs compile once
            if "lm" not in holder:
                holder["lm"] = LanguageModel(model.config, model, tokenizer, name=name,
                                             batch_size=self.config.eval.num_envs, min_batch=MIN_BATCH)
            else:
                holder["lm"].state = nnx.state(model)
            pol = LMPolicy(holder["lm"], name=name)
            res = LondiAgent(pol, pol, QuickOnly(), sample_actions=self.config.eval.sample_actions,
                             seed=0).run(specs, self.config.eval.num_envs, progress=False)
            out = {"success": res.summary()["success_rate"]}
            for kind in e.kinds:
                eps = [r for r in res.episodes if r.kind == kind]
                if eps:
                    out[f"success_{kind}"] = float(np.mean([r.success for r in eps]))
            return out

        return eval_fn

    def stage_models(self) -> dict[str, Any]:
        episodes = self._demo_episodes()
        info = {}
        for name in MODEL_NAMES:
            target = self.out / "models" / name
            if (target / "config.json").exists():
                continue
            spec = self._spec(name)
            kinds = spec.demo_kinds or self.config.env.kinds
            mine = [ep for ep in episodes if ep["task_kind"] in kinds]
            model, tok = self._fresh_model(name, episodes)
            data = bc_data_from_episodes(mine, tok)
            trainer = BCTrainer(model, tok, data, spec.bc)
            self._say(f"behaviour cloning {name}: {len(data)} examples of kinds {list(kinds)}, "
                      f"{trainer.total_steps} steps")

            def log(row: dict[str, Any], name: str = name) -> None:
                self.log.scalars(f"bc/{name}", row, int(row["step"]))

            result = trainer.train(self.out / "checkpoints" / f"bc_{name}", eval_fn=self._policy_eval_fn(name, tok),
                                   progress=self.config.progress, log=log, desc=f"bc {name}",
                                   eval_every=spec.eval_every)
            save_hf_directory(result.model, target, tok)
            if result.adapted is not None:
                save_lora(result.adapted, self.out / "models" / f"{name}_lora", base=spec.source)
            _write_json(self.out / "models" / f"{name}_history.json", result.history)
            info[name] = {"examples": len(data), "steps": result.steps, "history": result.history[-1:]}
        return info

    def model(self, name: str) -> LanguageModel:
        if name not in self._models:
            path = self.out / "models" / name
            if not (path / "config.json").exists():
                raise PipelineError(f"no trained {name} model in {path}; run the 'models' stage first")
            lm = load_hf_directory(path, progress=False)
            lm.batch_size = max(self.config.eval.num_envs, 16)
            lm.min_batch = MIN_BATCH
            lm.name = name
            self._models[name] = lm
        return self._models[name]

    def policies(self) -> tuple[LMPolicy, LMPolicy]:
        """Fresh QUICK and DEEPTHINK policies (fresh call counters)."""
        return LMPolicy(self.model("quick"), name="quick"), LMPolicy(self.model("deepthink"), name="deepthink")

    # ------------------------------------------------------------------ stage 3: switch data
    def stage_switch_data(self) -> dict[str, Any]:
        e, s = self.config.env, self.config.switch
        specs = episode_specs(e.level, s.collect_episodes, e.seed + 1_000_000, e.kinds, **e.level_kwargs())
        quick, deep = self.policies()
        ds, stats = collect_switch_data(quick, deep, specs, num_envs=self.config.eval.num_envs,
                                        deep_probs=s.deep_probs, seed=e.seed,
                                        sample_actions=self.config.eval.sample_actions,
                                        progress=self.config.progress, encoder=self.encoder())
        save_dataset(self.out / "switch_data.npz", ds)
        stats["quick_seconds"], stats["deep_seconds"] = quick.seconds, deep.seconds
        return stats

    def encoder(self) -> SwitchEncoder:
        """The switcher's state encoder over QUICK's outputs (``switch.encoder``)."""
        q = self.model("quick")
        return SwitchEncoder(self.config.switch.encoder, q.config.hidden_size, q.tokenizer)

    # ------------------------------------------------------------------ stage 4: switchers
    def switcher_config(self, use_budget: bool) -> SwitcherConfig:
        s = self.config.switch
        obs_dim = self.encoder().dim
        return SwitcherConfig(obs_dim=obs_dim, hidden=s.hidden, learner="dqn", use_budget=use_budget,
                              num_updates=s.num_updates, batch_size=s.batch_size, buffer_size=max(s.batch_size, 1),
                              learning_starts=1)

    def _grid(self, cfg: SwitcherConfig, members: list[dict[str, float]], seeds: list[int], ds: OfflineDataset):
        s = self.config.switch
        base = {"lr": s.lr, "gamma": s.gamma, "target_period": s.target_period}
        hp = stack_hparams(members, base)
        keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
        train = jax.jit(jax.vmap(make_offline_train(cfg), in_axes=(0, 0, None)))
        state, metrics = train(keys, hp, ds)
        return state.params, np.asarray(metrics["loss"])

    def stage_switchers(self) -> dict[str, Any]:
        s = self.config.switch
        ds = jax.tree.map(jnp.asarray, load_dataset(self.out / "switch_data.npz"))
        seeds = list(range(s.seeds))
        # LONDI: c grid x seeds (one program)
        cfg = self.switcher_config(False)
        members = [{"c": c} for c in s.c_grid for _ in seeds]
        params, loss = self._grid(cfg, members, [k for _ in s.c_grid for k in seeds], ds)
        rates = self._offline_rates(cfg, params, ds).reshape(len(s.c_grid), len(seeds)).mean(-1)
        try:
            c_star = float(interpolate_cost(list(s.c_grid), list(rates), s.target_call_rate))
        except LondiError as err:  # target outside the grid's range: keep the closest grid point
            c_star = float(s.c_grid[int(np.argmin(np.abs(rates - s.target_call_rate)))])
            self._say(f"calibration: {err}; using c = {c_star}")
        cal_params, _ = self._grid(cfg, [{"c": c_star} for _ in seeds], seeds, ds)
        # LONDI-B: budgets x seeds
        cfg_b = self.switcher_config(True)
        members_b = [{"c": s.budget_c, "budget": n} for n in s.budgets for _ in seeds]
        params_b, loss_b = self._grid(cfg_b, members_b, [k for _ in s.budgets for k in seeds], ds)
        store = CheckpointStore(self.out / "switchers", keep=1)
        tree = {"londi": params, "calibrated": cal_params, "londi_b": params_b}
        store.save(1, tree, kind="londi-switcher-grid", config={"switch": config_to_dict(s)},
                   extra={"c_star": c_star, "offline_rates": rates.tolist()})
        store.wait()
        store.close()
        for i, c in enumerate(s.c_grid):
            self.log.scalar("switcher/offline_call_rate", float(rates[i]), i)
        return {"c_grid": list(s.c_grid), "offline_call_rates": rates.tolist(), "c_star": c_star,
                "target_call_rate": s.target_call_rate, "final_loss": float(loss[:, -100:].mean()),
                "final_loss_budget": float(loss_b[:, -100:].mean())}

    @staticmethod
    def _offline_rates(cfg: SwitcherConfig, params: Any, ds: OfflineDataset) -> np.ndarray:
        gdef = graphdef(cfg)
        return np.asarray(jax.vmap(lambda p: greedy_call_rate(gdef, p, ds.obs))(params))

    def _switchers(self) -> tuple[dict[str, Any], dict[str, Any]]:
        s = self.config.switch
        store = CheckpointStore(self.out / "switchers", keep=1)
        meta = store.read_metadata()
        cfg, cfg_b = self.switcher_config(False), self.switcher_config(True)
        n = s.seeds

        def like(c, m):
            hp = stack_hparams([{"c": 0.0}] * m, {})
            keys = jax.vmap(jax.random.key)(jnp.arange(m, dtype=jnp.uint32))
            from londi_jax.switcher import dqn

            return jax.eval_shape(jax.vmap(lambda k, h: dqn.init(c, h, k).params), keys, hp)

        tree_like = {"londi": like(cfg, len(s.c_grid) * n), "calibrated": like(cfg, n),
                     "londi_b": like(cfg_b, len(s.budgets) * n)}
        tree, _ = store.restore(tree_like, kind="londi-switcher-grid")
        store.close()
        return tree, meta["extra"]

    # ------------------------------------------------------------------ stage 5: evaluation
    def eval_specs(self, seed_index: int) -> list[EpisodeSpec]:
        e, v = self.config.env, self.config.eval
        return episode_specs(e.eval_level, v.episodes, v.seed + 10_000 * seed_index, e.kinds, **e.level_kwargs())

    def stage_evaluate(self) -> dict[str, Any]:
        s, v = self.config.switch, self.config.eval
        tree, extra = self._switchers()
        encoder = self.encoder()
        c_star = float(extra["c_star"])
        cfg, cfg_b = self.switcher_config(False), self.switcher_config(True)
        ds = load_dataset(self.out / "switch_data.npz")
        conf = {m: _confidence_from_features(ds.obs, m, self.model("quick").config.hidden_size)
                for m in ("margin",)}
        runs_path = self.out / "eval" / "runs.jsonl"
        runs_path.parent.mkdir(parents=True, exist_ok=True)
        done = {}
        if runs_path.exists():
            for line in runs_path.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    done[(r["label"], r["seed"])] = r

        def member(params: Any, i: int) -> Any:
            return jax.tree.map(lambda x: x[i], params)

        def run(method: str, label: str, params: dict[str, Any], seed: int, router: Any,
                budget: int | None = None) -> dict[str, Any]:
            if (label, seed) in done:
                return done[(label, seed)]
            quick, deep = self.policies()
            agent = LondiAgent(quick, deep, router, budget=budget, sample_actions=v.sample_actions, seed=seed,
                               encoder=encoder)
            res = agent.run(self.eval_specs(seed), v.num_envs, progress=self.config.progress, desc=f"{label} s{seed}")
            row = {"method": method, "label": label, "params": params, "seed": seed,
                   "episodes": [e.to_json() for e in res.episodes],
                   "env_steps_per_second": res.env_steps / max(res.wall_seconds, 1e-9)}
            with runs_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[(label, seed)] = row
            summ = res.summary()
            self.log.scalars(f"eval/{label}", {k: summ[k] for k in ("success_rate", "call_rate")}, seed)
            self._say(f"  {label:<28} seed {seed}: success {summ['success_rate']:.3f}  "
                      f"DEEPTHINK call rate {summ['call_rate']:.3f}")
            return row

        def rate(row: dict[str, Any]) -> float:
            eps = row["episodes"]
            return sum(e["deep_calls"] for e in eps) / max(sum(e["length"] for e in eps), 1)

        for seed in range(v.seeds):
            run("QUICK-only", "QUICK-only", {}, seed, QuickOnly())
            run("DEEPTHINK-only", "DEEPTHINK-only", {}, seed, DeepthinkOnly())
            for i, c in enumerate(s.c_grid):
                run("LONDI", f"LONDI c={c:g}", {"c": c}, seed,
                    SwitcherRouter(cfg, member(tree["londi"], i * s.seeds + seed % s.seeds), name=f"londi c={c:g}"))
            main = run("LONDI", "LONDI (calibrated)", {"c": c_star, "target_call_rate": s.target_call_rate}, seed,
                       SwitcherRouter(cfg, member(tree["calibrated"], seed % s.seeds), name="londi calibrated"))
            for i, n in enumerate(s.budgets):
                run("LONDI-B", f"LONDI-B n={n}", {"budget": n, "c": s.budget_c}, seed,
                    SwitcherRouter(cfg_b, member(tree["londi_b"], i * s.seeds + seed % s.seeds), budget=n,
                                   name=f"londi-b n={n}"), budget=n)
            matched = rate(main)
            run("Random", "Random (LONDI's rate)", {"p": matched}, seed, RandomRouter(matched))
            for p in v.random_rates:
                run("Random", f"Random p={p:g}", {"p": p}, seed, RandomRouter(p))
            thr = calibrate_threshold(conf["margin"], matched, "margin")
            run("Threshold", "Threshold (LONDI's rate)", {"target_rate": matched, "threshold": thr}, seed,
                ConfidenceRouter(thr, "margin"))
            for r in v.threshold_rates:
                t = calibrate_threshold(conf["margin"], r, "margin")
                run("Threshold", f"Threshold rate={r:g}", {"target_rate": r, "threshold": t}, seed,
                    ConfidenceRouter(t, "margin"))
            run("SwiftSage", "SwiftSage", {}, seed, SwiftSageRouter())
        runs = list(done.values())
        results = {"meta": {"preset": self.config.preset, "device": device_description(),
                            "eval_level": self.config.env.eval_level, "kinds": list(self.config.env.kinds),
                            "episodes_per_seed": v.episodes, "seeds": v.seeds, "c_star": c_star,
                            "sample_actions": v.sample_actions,
                            "compute": "forward FLOPs of real tokens and measured model seconds, per episode"},
                   "runs": runs}
        _write_json(self.out / "eval" / "results.json", results)
        return {"runs": len(runs)}

    # ------------------------------------------------------------------ stage 6: report
    def stage_report(self) -> dict[str, Any]:
        from londi_jax.experiments.report import write_report

        results = json.loads((self.out / "eval" / "results.json").read_text())
        paths = write_report(results, self.out / "report")
        return {"paths": {k: str(v) for k, v in paths.items()}}


def _confidence_from_features(obs: np.ndarray, measure: str, hidden_size: int) -> np.ndarray:
    """QUICK's confidence in logged states, read back from the switcher features
    (``policy.switch_features`` layout: 2H embedding, [max prob, margin, entropy, top-1 log-prob],
    step fraction, then any encoder extras)."""
    obs = np.asarray(obs)
    conf = obs[:, 2 * hidden_size:2 * hidden_size + 4]
    if measure == "margin":
        return conf[:, 1]
    if measure == "max_prob":
        return conf[:, 0]
    raise PipelineError(f"unknown confidence measure {measure!r}")


def run_pipeline(config: PipelineConfig, out_dir: str | os.PathLike, stages: Sequence[str] | None = None
                 ) -> dict[str, Any]:
    """Run the pipeline (resuming whatever ``out_dir`` already holds)."""
    return Pipeline(config, out_dir).run(stages)

