"""LONDI end to end on BabyAI-Text: demos -> BC of QUICK and DEEPTHINK -> switch data ->
offline switchers (a c x budget x seed grid in one program per learner) -> evaluation of every
method on the same episodes -> table + plot.

Each stage writes its outputs under ``out_dir`` and a ``<stage>.done.json`` marker; a rerun
skips finished stages (and BC resumes from its orbax checkpoints, evaluation from the runs
already in ``eval/runs.jsonl``), so an interrupted pipeline loses no finished work.

A run stores its configuration in ``config.json``; :meth:`Pipeline.from_run_dir` (``londi-jax
demo --out DIR``) resumes it without repeating the flags. Each stage declares the config fields it
reads (:data:`STAGE_DEPENDS`); a stage reruns when one of them changes or when an earlier stage
reruns. A changed configuration is refused with the fields that differ and three ways on: resume
with the stored configuration, fork into a new directory that reuses the unaffected finished
stages (``fork_from``), or force the affected stages to rerun in place (``force``).

Every file a resume reads is written atomically or appended line by line and read tolerantly
(``utils.io``), so a kill at any instant never blocks a resume. Reading a finished run (models,
switchers, the report, calibration) writes nothing: a run on read-only storage can be used.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from londi_jax.agents.bc import BCTrainer
from londi_jax.agents.calibration import greedy_call_rate, interpolate_cost
from londi_jax.agents.londi import LondiAgent, collect_switch_data
from londi_jax.agents.policy import LMPolicy, SwitchEncoder
from londi_jax.agents.rollout import EnvPool
from londi_jax.agents.routers import (ClassifierRouter, ConfidenceRouter, DeepthinkOnly, OracleRouter, QuickOnly,
                                      RandomRouter, SwiftSageRouter, SwitcherRouter, calibrate_threshold)
from londi_jax.experiments.config import ModelSpec, PipelineConfig, config_diff, config_from_dict, config_to_dict
from londi_jax.experiments.families import EnvFamily, family
from londi_jax.experiments.logging import RunLogger
from londi_jax.lm.config import ModelConfig
from londi_jax.lm.engine import LanguageModel
from londi_jax.lm.hf_loader import init_model, load_hf_directory
from londi_jax.lm.hf_writer import save_hf_directory
from londi_jax.lm.lora import save_lora
from londi_jax.lm.tokenizer import train_word_tokenizer
from londi_jax.utils.checkpoint import CheckpointStore
from londi_jax.switcher.classifier import FailureClassifier, fit_failure_classifier
from londi_jax.switcher.config import SwitcherConfig
from londi_jax.switcher.network import graphdef
from londi_jax.switcher.offline import OfflineDataset, load_dataset, save_dataset, train_offline_grid
from londi_jax.switcher.sweep import stack_hparams
from londi_jax.utils.errors import LondiError
from londi_jax.utils.mesh import default_mesh, mesh_info
from londi_jax.utils.io import (DataFileError, append_jsonl, atomic_write, atomic_write_json, check_writable_dir,
                                read_json, read_jsonl)

__all__ = ["Pipeline", "run_pipeline", "PipelineError", "ConfigMismatchError", "STAGES", "STAGE_DEPENDS",
           "read_run_config", "estimate_work", "measured_flops_per_second", "accelerator_warning", "time_estimate"]

STAGES = ("demos", "models", "switch_data", "switchers", "online", "evaluate", "report")
_ENV_EPISODES = ("env.name", "env.level", "env.kinds", "env.room_size", "env.num_dists", "env.seed", "env.max_steps",
                 "env.simplifications", "env.history")
_ROLLOUTS = ("eval.num_envs", "eval.sample_actions")  # batching shares one action RNG across slots
# The config fields (dotted prefixes) each stage reads itself. A stage also reruns whenever an
# earlier stage does (each reads the previous one's outputs), so inherited inputs are not repeated.
STAGE_DEPENDS: dict[str, tuple[str, ...]] = {
    "demos": (*_ENV_EPISODES, "env.demo_episodes"),
    "models": ("quick", "deep", *_ENV_EPISODES, *_ROLLOUTS),  # BC's evaluation rollouts use eval.*
    "switch_data": ("switch.collect_episodes", "switch.deep_probs", "switch.encoder", *_ENV_EPISODES, *_ROLLOUTS),
    "switchers": ("switch",),
    "online": ("online", "switch", *_ENV_EPISODES, "eval.sample_actions"),
    "evaluate": ("eval", "env.eval_level", "env.kinds", "env.room_size", "env.num_dists", "env.max_steps", "switch",
                 "preset", "env.name", "env.simplifications", "env.history"),
    "report": (),
}
# What a stage writes (cleared when it is forced to rerun); _REUSED is what a fork copies.
_OUTPUTS: dict[str, tuple[str, ...]] = {
    "demos": ("demos",), "models": ("models", "checkpoints"), "switch_data": ("switch_data.npz",),
    "switchers": ("switchers",), "online": ("online",), "evaluate": ("eval",), "report": ("report",),
}
_REUSED = {**_OUTPUTS, "models": ("models",)}  # BC checkpoints only serve resuming an unfinished BC

MODEL_NAMES = ("quick", "deepthink")
ACTION_TOKENS_MAX = 8  # positions kept for an action when checking online.max_len against a scratch model's context
MIN_BATCH = 8  # LM calls pad to >= 8 rows: 4 batch shapes (8..64) to compile instead of 7


class PipelineError(LondiError):
    """A pipeline stage cannot run (missing or mismatched outputs of an earlier stage)."""


class ConfigMismatchError(PipelineError):
    """A run directory holds a run whose configuration differs from the requested one.

    ``diff``: ``{dotted field: (stored, requested)}``; ``affected``: the stages that would have
    to rerun (the first stage reading a changed field and every later one)."""

    def __init__(self, message: str, diff: dict[str, tuple[Any, Any]], affected: list[str]):
        super().__init__(message)
        self.diff, self.affected = diff, affected


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, default=str)


def _check_stages(stages: Iterable[str], what: str = "stage") -> list[str]:
    out = list(stages)
    for s in out:
        if s not in STAGES:
            raise PipelineError(f"unknown {what} {s!r}; stages: {', '.join(STAGES)}")
    return out


def _depends(stage: str, field: str) -> bool:
    return any(_depends_on(field, p) for p in STAGE_DEPENDS[stage])


def _depends_on(field: str, prefix: str) -> bool:
    return field == prefix or field.startswith(prefix + ".")


def first_affected(diff: Iterable[str]) -> int:
    """Index in :data:`STAGES` of the first stage reading any of the changed fields ``diff``
    (``len(STAGES)`` when none does)."""
    fields = list(diff)
    return next((i for i, s in enumerate(STAGES) if any(_depends(s, f) for f in fields)), len(STAGES))


def read_run_config(out_dir: str | os.PathLike) -> PipelineConfig | None:
    """The configuration stored in a run directory (``None`` when it holds no run). Read only."""
    path = Path(out_dir) / "config.json"
    if not path.exists():
        return None
    try:
        return config_from_dict(read_json(path))
    except LondiError as err:
        raise PipelineError(f"{path} cannot be used ({err}); restore it, or start the run in a new --out "
                            f"directory") from err


def _show(v: Any) -> str:
    s = repr(tuple(v) if isinstance(v, list) else v)
    return s if len(s) <= 60 else s[:57] + "..."


def device_description() -> str:
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    return f"{d.platform}:{kind} x{jax.device_count()} ({os.cpu_count()} host cores, {platform.processor() or platform.machine()})"


class Pipeline:
    """The staged pipeline over one output directory.

    ``force``: stages to rerun even if finished (with every later stage); with a changed
    configuration they must include the first stage the change affects. ``fork_from``: a
    finished (or partly finished) run whose stages that do not depend on what changed are copied
    into ``out_dir`` instead of being rerun. Building a ``Pipeline`` writes nothing; ``run`` writes
    only when there is work to do.
    """

    STAGES = STAGES

    def __init__(self, config: PipelineConfig, out_dir: str | os.PathLike, *, force: Iterable[str] = (),
                 fork_from: str | os.PathLike | None = None):
        self.config = config
        self.family: EnvFamily = family(config)
        self.out = Path(out_dir)
        self.force = _check_stages(force, "stage in force")
        self.timings: dict[str, float] = {}
        self._models: dict[str, LanguageModel] = {}
        self.pool = EnvPool()  # envs (ScienceWorld JVMs) kept across the stages' rollouts; closed by run()
        self._mesh: Any = False  # built on first use (config.mesh): the switcher grids' members are sharded over it
        self.log: RunLogger | None = None
        self.stored = read_run_config(self.out)
        self.fork_from = Path(fork_from) if fork_from is not None else None
        self._fork_config: PipelineConfig | None = None
        if self.fork_from is not None:
            if self.fork_from.resolve() == self.out.resolve():
                raise PipelineError(f"--fork-from {self.fork_from} is the output directory itself; give a new --out")
            self._fork_config = read_run_config(self.fork_from)
            if self._fork_config is None:
                raise PipelineError(f"cannot fork from {self.fork_from}: it holds no pipeline run (no config.json)")
            if self.stored is None and self.out.is_dir() and any(self.out.iterdir()):
                raise PipelineError(f"cannot fork into {self.out}: it is not empty and holds no run; "
                                    f"give a new or empty --out directory")
        self._change: dict[str, tuple[Any, Any]] = {}
        if self.stored is not None:
            self._change = config_diff(self.stored, config)
            if self._change:
                self._check_change()

    @classmethod
    def from_run_dir(cls, out_dir: str | os.PathLike, **kwargs: Any) -> Pipeline:
        """Reopen an existing run with the configuration stored in it (reading writes nothing)."""
        config = read_run_config(out_dir)
        if config is None:
            raise PipelineError(f"{out_dir} is not a pipeline run directory (no config.json)")
        return cls(config, out_dir, **kwargs)

    # ------------------------------------------------------------------ bookkeeping
    def _check_change(self) -> None:
        """Accept a changed configuration only if no work it invalidates is kept unforced."""
        cut = first_affected(self._change)
        affected = list(STAGES[cut:])
        with_work = [s for s in affected if self._has_outputs(s)]
        forced_from = min((STAGES.index(s) for s in self.force), default=len(STAGES))
        if not with_work or STAGES.index(with_work[0]) >= forced_from:
            return
        kept = [s for s in STAGES[:cut] if self._done(s)]
        lines = [f"{self.out} holds a run with a different configuration (stored -> requested):"]
        lines += [f"  {k}: {_show(a)} -> {_show(b)}" for k, (a, b) in self._change.items()]
        lines.append(f"This changes what stages {', '.join(affected)} compute; finished work there: "
                     f"{', '.join(with_work)}.")
        lines.append(f"  (a) resume with the stored configuration: londi-jax demo --out {self.out} "
                     f"(no --preset/--set; Python: Pipeline.from_run_dir(out).run())")
        reuse = f"reusing {', '.join(kept)}" if kept else "(no finished stage can be reused)"
        lines.append(f"  (b) fork into a new directory {reuse}: londi-jax demo --out NEW_DIR --fork-from {self.out} "
                     f"with the same --preset/--set (Python: Pipeline(config, NEW_DIR, fork_from=out))")
        lines.append(f"  (c) rerun the affected stages here with the new configuration: add --force-stages "
                     f"{with_work[0]} (later stages rerun too; Python: Pipeline(config, out, force=['{with_work[0]}']))")
        raise ConfigMismatchError("\n".join(lines), self._change, affected)

    def _marker(self, stage: str) -> Path:
        return self.out / f"{stage}.done.json"

    def _done(self, stage: str, root: Path | None = None) -> bool:
        path = (root or self.out) / f"{stage}.done.json"
        if not path.exists():
            return False
        try:
            read_json(path)
        except DataFileError as err:  # cannot come from a crash (atomic write): damaged from outside
            warnings.warn(f"{err}; treating stage {stage} as not finished (it resumes or reruns)", stacklevel=2)
            return False
        return True

    def _has_outputs(self, stage: str) -> bool:
        return self._marker(stage).exists() or any((self.out / p).exists() for p in _OUTPUTS[stage])

    def _mark(self, stage: str, info: dict[str, Any]) -> None:
        _write_json(self._marker(stage), info)

    def _say(self, msg: str) -> None:
        if self.config.progress:
            print(f"[londi] {msg}", file=sys.stderr, flush=True)

    def _fork_plan(self, cut: int) -> list[str]:
        """Finished stages of the fork source that the new configuration does not affect (a
        prefix of STAGES, before ``cut``) and that this directory has not finished yet."""
        if self._fork_config is None:
            return []
        src_cut = min(first_affected(config_diff(self._fork_config, self.config)), cut)
        plan = []
        for s in STAGES[:src_cut]:
            if not self._done(s, self.fork_from):
                break
            if not self._done(s):
                plan.append(s)
        return plan

    def plan(self, stages: Sequence[str] | None = None, force: bool = False) -> dict[str, list[str]]:
        """What :meth:`run` would do: ``run`` (stages to run), ``skipped`` (asked for but already
        done), ``invalidated`` (finished or partial stages whose outputs are removed first),
        ``copied`` (stages copied from ``fork_from``). Reads only."""
        wanted = _check_stages(stages or STAGES)
        forced = set(self.force) | (set(wanted) if force else set())
        cut = min([STAGES.index(s) for s in forced] + [first_affected(self._change) if self._change else len(STAGES)])
        invalid = [s for s in STAGES[cut:] if self._has_outputs(s)]
        copied = self._fork_plan(cut)
        done = {s: (self._done(s) and s not in invalid) or s in copied for s in STAGES}
        run = [s for s in STAGES if s in wanted and not done[s]]
        for s in run:
            missing = [p for p in STAGES[:STAGES.index(s)] if not done[p] and p not in run]
            if missing:
                raise PipelineError(f"stage {s} needs the outputs of {', '.join(missing)}, which "
                                    f"{'has' if len(missing) == 1 else 'have'} not run; add "
                                    f"{'it' if len(missing) == 1 else 'them'} to the stages (e.g. --stages "
                                    f"{','.join(missing + [s])})")
        return {"run": run, "skipped": [s for s in wanted if done[s] and s not in copied],
                "invalidated": invalid, "copied": copied}

    def run(self, stages: Sequence[str] | None = None, force: bool = False) -> dict[str, Any]:
        """Run (or resume) the stages in order; returns what ran, what was skipped and the outputs.

        ``stages``: a subset of :data:`STAGES` (default all). Finished stages are skipped (and
        listed under ``skipped``); ``force=True`` reruns ``stages`` even if finished, and with them
        every later stage (a later stage not in ``stages`` is left not done, its outputs removed).
        Nothing is written when there is nothing to do, so a finished run on read-only storage can
        be reopened and reported on. Before any work the output directory is checked to be writable
        and the models and levels the stages need are checked to exist.
        """
        p = self.plan(stages, force)
        t_all = time.perf_counter()
        if p["skipped"]:
            names = ",".join(p["skipped"])
            self._say(f"already done, skipped: {names} (to rerun: --force-stages {names.split(',')[-1]}, "
                      f"or in Python run([...], force=True))")
        if p["run"] or p["invalidated"] or p["copied"] or self._change:
            self._preflight(p["run"])
            self._open(p)
        try:
            for i, stage in enumerate(p["run"], 1):
                t0 = time.perf_counter()
                self._say(f"{stage}: running (stage {STAGES.index(stage) + 1}/{len(STAGES)})")
                info = getattr(self, f"stage_{stage}")() or {}
                self.timings[stage] = time.perf_counter() - t0
                info["seconds"] = self.timings[stage]
                self._mark(stage, info)
                self.log.scalar(f"time/{stage}", self.timings[stage], 0)
                self._say(f"{stage}: done in {self.timings[stage]:.1f} s")
        finally:
            self.pool.close()  # no simulator JVM outlives the run, whatever ended it
            if self.log is not None:
                self.log.close()
                self.log = None
        left = [s for s in p["invalidated"] if s not in p["run"]]
        if left:
            self._say(f"{', '.join(left)}: outputs removed (an earlier stage reran); run "
                      f"{'it' if len(left) == 1 else 'them'} with --stages {','.join(left)} or a full run")
        return {"out_dir": str(self.out), "preset": self.config.preset, "seconds": time.perf_counter() - t_all,
                "timings": self.timings, "ran": p["run"], "skipped": p["skipped"], "invalidated": p["invalidated"],
                "copied": p["copied"], "forked_from": str(self.fork_from) if p["copied"] else None,
                "stages_done": [s for s in STAGES if self._done(s)], "outputs": self.outputs()}

    def outputs(self) -> dict[str, str]:
        """The run's result files that exist now (name -> path)."""
        files = {"table": "report/results_table.md", "plot": "report/cost_quality.png",
                 "summary": "report/summary.json", "results": "eval/results.json", "runs": "eval/runs.jsonl",
                 "models": "models", "switch_data": "switch_data.npz", "switchers": "switchers", "demos": "demos",
                 "log": "log.jsonl", "tensorboard": "tb", "config": "config.json"}
        return {k: str(self.out / v) for k, v in files.items() if (self.out / v).exists()}

    def _preflight(self, to_run: Sequence[str]) -> None:
        """Fail before any work: an unwritable --out, a model source or level that does not exist, a
        mesh the visible devices cannot hold. A refused run leaves no --out directory it created."""
        created = not self.out.exists()
        check_writable_dir(self.out, "output directory (--out)")
        try:
            self._preflight_checks(to_run)
        except BaseException:
            if created:
                with contextlib.suppress(OSError):  # only while still empty: never anyone's files
                    self.out.rmdir()
            raise

    def _preflight_checks(self, to_run: Sequence[str]) -> None:
        if {"switchers", "online"} & set(to_run):
            self.mesh  # noqa: B018 (built now: a bad config.mesh fails here, not stages later)
        if "models" in to_run:
            from londi_jax.lm.registry import resolve_model_path

            for name in ("quick", "deep"):
                spec = getattr(self.config, name)
                if spec.stack:  # its fields now; its models load in the stage
                    from londi_jax.fslm.stack import StackError, read_stack_file

                    try:
                        read_stack_file(Path(spec.stack).expanduser())
                    except StackError as err:
                        raise PipelineError(f"{name}.stack: {err}") from None
                elif spec.source != "scratch":
                    try:
                        path = resolve_model_path(spec.source)
                    except LondiError as err:
                        raise PipelineError(f"{name}.source: {err}") from None
                    if _is_encoder_decoder(path):
                        raise PipelineError(f"{name}.source {spec.source!r} is an encoder-decoder model (T5); the "
                                            "pipeline's behaviour cloning trains decoder-only models only. A T5 "
                                            "scores and generates through the LM interface (londi-jax lm score / "
                                            "generate), but cannot be cloned here yet: use a decoder-only source")
        if "online" in to_run and self.config.online.enabled:
            if not hasattr(self.family, "jax_env_params"):
                raise PipelineError(f"online switch training (online.enabled) runs on BabyAI-Text in JAX; env.name is "
                                    f"{self.family.name!r}: set online.enabled=false")
            try:
                self.family.jax_env_params()
            except LondiError as err:
                raise PipelineError(f"online: {err}") from None
            o = self.config.online
            for name in ("quick", "deep"):  # a scratch model's context is known before it is trained
                spec = getattr(self.config, name)
                if spec.source == "scratch" and o.max_len > spec.max_position_embeddings - ACTION_TOKENS_MAX:
                    raise PipelineError(f"online.max_len={o.max_len} does not fit {name}'s context "
                                        f"({name}.max_position_embeddings={spec.max_position_embeddings}, a few "
                                        f"positions kept for an action): set online.max_len to at most "
                                        f"{spec.max_position_embeddings - ACTION_TOKENS_MAX}, or 0 for the bound")
        if set(to_run) & {"demos", "models", "switch_data", "evaluate"}:
            try:
                self.family.check()
            except LondiError as err:
                raise PipelineError(str(err)) from None

    def _open(self, p: dict[str, list[str]]) -> None:
        """Start writing: the logger, removal of invalidated outputs, the stored config, fork copies."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = RunLogger(self.out)
        for s in p["invalidated"]:  # markers first: a kill mid-removal leaves the stages not done
            self._marker(s).unlink(missing_ok=True)
        for s in p["invalidated"]:
            for rel in _OUTPUTS[s]:
                _remove(self.out / rel)
            self._say(f"{s}: previous outputs removed (it reruns)")
        if self.stored is None or self._change:
            if self._change:
                self._say("configuration updated: " + "; ".join(f"{k}: {_show(a)} -> {_show(b)}"
                                                                for k, (a, b) in self._change.items()))
            _write_json(self.out / "config.json", config_to_dict(self.config))
            self.stored, self._change = self.config, {}
        for s in p["copied"]:
            for rel in _REUSED[s]:
                src, dst = self.fork_from / rel, self.out / rel
                _remove(dst)  # a copy cut short by a kill is redone whole
                if src.exists():
                    _copy(src, dst)
            info = read_json(self.fork_from / f"{s}.done.json")
            self._mark(s, {**info, "copied_from": str(self.fork_from)})
            self._say(f"{s}: reused from {self.fork_from}")

    # ------------------------------------------------------------------ stage 1: demos
    def stage_demos(self) -> dict[str, Any]:
        return self.family.write_demos(self.out / "demos", self.config.progress)

    def _demo_episodes(self) -> list[dict[str, Any]]:
        return self.family.read_demos(self.out / "demos")

    # ------------------------------------------------------------------ stage 2: models
    def _spec(self, name: str) -> ModelSpec:
        return self.config.quick if name == "quick" else self.config.deep

    def _fresh_model(self, name: str, episodes: list[dict[str, Any]]) -> tuple[Any, Any]:
        spec = self._spec(name)
        if spec.source != "scratch":
            from londi_jax.lm.registry import load_lm

            lm = load_lm(spec.source, dtype=spec.dtype, progress=self.config.progress, mesh=self.lm_mesh)
            return lm.model, lm.tokenizer
        tok = train_word_tokenizer(self.family.tokenizer_texts(episodes), vocab_size=spec.vocab_size)
        return scratch_model(spec, tok, seed=self.config.env.seed + (0 if name == "quick" else 1)), tok

    def _policy_eval_fn(self, name: str, tokenizer: Any) -> Callable[[Any], dict[str, float]] | None:
        spec = self._spec(name)
        if spec.eval_episodes <= 0:
            return None
        specs = self.family.specs("bc_eval", spec.eval_episodes)

        holder: dict[str, LanguageModel] = {}

        def eval_fn(model) -> dict[str, float]:
            # one LanguageModel across epochs, its weights swapped: its programs compile once
            if "lm" not in holder:
                holder["lm"] = LanguageModel(model.config, model, tokenizer, name=name,
                                             batch_size=self.config.eval.num_envs, min_batch=MIN_BATCH,
                                             mesh=self.lm_mesh)
            else:
                holder["lm"].state = nnx.state(model)
            pol = LMPolicy(holder["lm"], self.family.prompt_format(), name=name)
            res = LondiAgent(pol, pol, QuickOnly(), sample_actions=self.config.eval.sample_actions,
                             seed=0).run(specs, self.config.eval.num_envs, progress=False, pool=self.pool)
            summ = res.summary()
            out = {"success": summ["success_rate"]}
            if "mean_score" in summ:
                out["score"] = summ["mean_score"]
            for kind in dict.fromkeys(r.kind for r in res.episodes):  # env.kinds' order (round-robin)
                eps = [r for r in res.episodes if r.kind == kind]
                out[f"success_{kind}"] = float(np.mean([r.success for r in eps]))
            return out

        return eval_fn

    def stage_models(self) -> dict[str, Any]:
        episodes = self._demo_episodes()
        info = {}
        for name in MODEL_NAMES:
            target = self.out / "models" / name
            record = self.out / "models" / f"{name}_bc.json"
            if ((target / "config.json").exists() or self._stack_file(name).exists()) and record.exists():
                info[name] = _model_info(read_json(record))  # finished before a kill
                continue
            spec = self._spec(name)
            if spec.stack:
                info[name] = self._use_stack(name, spec.stack, record)
                continue
            if self._reuse_model(name):
                info[name] = {**_model_info(read_json(record)), "copied_from": str(self.fork_from)}
                continue
            kinds = spec.demo_kinds or self.config.env.kinds
            mine = [ep for ep in episodes if ep["task_kind"] in kinds]
            model, tok = self._fresh_model(name, episodes)
            data = self.family.bc_data(mine, tok)
            trainer = BCTrainer(model, tok, data, spec.bc, mesh=self.lm_mesh)
            self._say(f"behaviour cloning {name}: {len(data)} examples of kinds {list(kinds)}, "
                      f"{trainer.total_steps} steps")

            def log(row: dict[str, Any], name: str = name) -> None:
                self.log.scalars(f"bc/{name}", row, int(row["step"]))

            # a model whose weights were saved but not its record resumes from BC's last checkpoint
            # (no steps left), which also gives back its full history
            result = trainer.train(self.out / "checkpoints" / f"bc_{name}", eval_fn=self._policy_eval_fn(name, tok),
                                   progress=self.config.progress, log=log, desc=f"bc {name}",
                                   eval_every=spec.eval_every)
            save_hf_directory(result.model, target, tok)
            if result.adapted is not None:
                save_lora(result.adapted, self.out / "models" / f"{name}_lora", base=spec.source)
            rec = {"examples": len(data), "kinds": list(kinds), "steps": result.steps, "history": result.history}
            _write_json(record, rec)  # after the weights: its presence means the model is complete
            info[name] = _model_info(rec)
        return info

    def _reuse_model(self, name: str) -> bool:
        """In a fork whose change leaves this model's inputs alone (its spec, the demos, the BC
        evaluation rollouts; e.g. only the other model changed), copy the fork source's finished
        model instead of cloning it again: weights, LoRA adapter, then its record (the record's
        presence marks a complete model). Returns whether it did."""
        if self._fork_config is None or not self._done("models", self.fork_from):
            return False
        other = "deep" if name == "quick" else "quick"
        changed = [f for f in config_diff(self._fork_config, self.config)
                   if (_depends("models", f) or _depends("demos", f)) and not _depends_on(f, other)]
        src_dir = self.fork_from / "models"
        if changed or self._spec(name).stack or not (src_dir / f"{name}_bc.json").exists() \
                or not (src_dir / name / "config.json").exists():
            return False
        for rel in (name, f"{name}_lora"):
            _remove(self.out / "models" / rel)
            if (src_dir / rel).exists():
                _copy(src_dir / rel, self.out / "models" / rel)
        _write_json(self.out / "models" / f"{name}_bc.json", read_json(src_dir / f"{name}_bc.json"))  # atomic, last
        self._say(f"{name}: unchanged, reused from {self.fork_from} (no behaviour cloning)")
        return True

    def _stack_file(self, name: str) -> Path:
        return self.out / "models" / f"{name}.stack.json"

    def _use_stack(self, name: str, stack_file: str, record: Path) -> dict[str, Any]:
        """A saved FSLM stack as this model: loaded once to check it (models, adapters, templates),
        then written into the run with absolute paths (``models/<name>.stack.json``), so the run
        reads the same stack wherever it is resumed from."""
        from londi_jax.fslm.stack import StackError, load_stack, read_stack_file, save_stack_spec

        src = Path(stack_file).expanduser()
        try:
            spec, _ = read_stack_file(src)
            stack = load_stack(src, progress=self.config.progress)
        except StackError as err:
            raise PipelineError(f"{'quick' if name == 'quick' else 'deep'}.stack={stack_file!r}: {err}") from None
        stages = []
        for st in spec["stages"]:
            st = dict(st)
            for key in ("model", "adapter"):
                ref = st.get(key)
                if ref and not Path(ref).is_absolute() and (src.parent / ref).exists():
                    st[key] = str((src.parent / ref).resolve())
            stages.append(st)
        save_stack_spec(self._stack_file(name), stages, name=str(spec.get("name") or src.stem))
        self._say(f"{name}: the FSLM stack {src} ({len(stack.stages)} stages: "
                  f"{', '.join(s.name for s in stack.stages)}), used as it is (no behaviour cloning)")
        rec = {"examples": 0, "kinds": [], "steps": 0, "history": [], "stack": str(src.resolve()),
               "stages": [s.name for s in stack.stages]}
        _write_json(record, rec)
        self._models[name] = stack  # loaded once: the later stages use this one
        return {**_model_info(rec), "stack": rec["stack"], "stages": rec["stages"]}

    def model(self, name: str) -> LanguageModel:
        if name not in self._models and self._stack_file(name).exists():
            from londi_jax.fslm.stack import load_stack

            self._models[name] = load_stack(self._stack_file(name), progress=False)
        if name not in self._models:
            path = self.out / "models" / name
            if not (path / "config.json").exists():
                raise PipelineError(f"no trained {name} model in {path}; run the 'models' stage first")
            lm = load_hf_directory(path, progress=False, mesh=self.lm_mesh)
            lm.batch_size = max(self.config.eval.num_envs, 16)
            lm.min_batch = MIN_BATCH
            lm.name = name
            self._models[name] = lm
        return self._models[name]

    def policies(self) -> tuple[LMPolicy, LMPolicy]:
        """Fresh QUICK and DEEPTHINK policies (fresh call counters)."""
        fmt = self.family.prompt_format()
        return (LMPolicy(self.model("quick"), fmt, name="quick"), LMPolicy(self.model("deepthink"), fmt, name="deepthink"))

    # ------------------------------------------------------------------ stage 3: switch data
    def stage_switch_data(self) -> dict[str, Any]:
        e, s = self.config.env, self.config.switch
        specs = self.family.specs("switch", s.collect_episodes)
        quick, deep = self.policies()
        ds, stats = collect_switch_data(quick, deep, specs, num_envs=self.config.eval.num_envs,
                                        deep_probs=s.deep_probs, seed=e.seed,
                                        sample_actions=self.config.eval.sample_actions,
                                        progress=self.config.progress, encoder=self.encoder(), pool=self.pool)
        save_dataset(self.out / "switch_data.npz", ds)
        stats["quick_seconds"], stats["deep_seconds"] = quick.seconds, deep.seconds
        return stats

    def encoder(self) -> SwitchEncoder:
        """The switcher's state encoder over QUICK's outputs (``switch.encoder``)."""
        q = self.model("quick")
        return SwitchEncoder(self.config.switch.encoder, q.hidden_size, q.tokenizer)

    # ------------------------------------------------------------------ stage 4: switchers
    def switcher_config(self, use_budget: bool) -> SwitcherConfig:
        s = self.config.switch
        obs_dim = self.encoder().dim
        return SwitcherConfig(obs_dim=obs_dim, hidden=s.hidden, learner="dqn", use_budget=use_budget,
                              num_updates=s.num_updates, batch_size=s.batch_size, buffer_size=max(s.batch_size, 1),
                              learning_starts=1)

    @property
    def mesh(self) -> Any:
        """The device mesh (``config.mesh``; every visible device on data), None on one device."""
        if self._mesh is False:
            self._mesh = default_mesh(self.config.mesh or None)
        return self._mesh

    @property
    def lm_mesh(self) -> Any:
        """The mesh the LMs run on: ``mesh`` when it splits parameters (``fsdp`` or ``model`` > 1:
        loaded straight into their shards, BC batches on ``data``), else None (each LM whole on one
        device, as without a mesh)."""
        m = self.mesh
        return m if m is not None and (m.shape.get("fsdp", 1) > 1 or m.shape.get("model", 1) > 1) else None

    def _grid(self, cfg: SwitcherConfig, members: list[dict[str, float]], seeds: list[int], ds: OfflineDataset):
        s = self.config.switch
        base = {"lr": s.lr, "gamma": s.gamma, "target_period": s.target_period}
        hp = stack_hparams(members, base)
        keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
        params, metrics = train_offline_grid(cfg, keys, hp, ds, self.mesh)
        return jax.device_put(params, jax.devices()[0]), np.asarray(metrics["loss"])  # gathered: stored on one device

    def stage_switchers(self) -> dict[str, Any]:
        s = self.config.switch
        ds = jax.tree.map(jnp.asarray, load_dataset(self.out / "switch_data.npz"))
        seeds = list(range(s.seeds))
        # three programs; _grid and _offline_rates return host arrays, so the bar counts finished ones
        bar = tqdm(total=3, desc="switchers", unit="grid", disable=not self.config.progress)
        # LONDI: c grid x seeds (one program)
        cfg = self.switcher_config(False)
        members = [{"c": c} for c in s.c_grid for _ in seeds]
        params, loss = self._grid(cfg, members, [k for _ in s.c_grid for k in seeds], ds)
        rates = self._offline_rates(cfg, params, ds).reshape(len(s.c_grid), len(seeds)).mean(-1)
        bar.update(1)
        try:
            c_star = float(interpolate_cost(list(s.c_grid), list(rates), s.target_call_rate))
        except LondiError as err:  # target outside the grid's range: keep the closest grid point
            c_star = float(s.c_grid[int(np.argmin(np.abs(rates - s.target_call_rate)))])
            self._say(f"calibration: {err}; using c = {c_star}")
        cal_params, _ = self._grid(cfg, [{"c": c_star} for _ in seeds], seeds, ds)
        bar.update(1)
        # LONDI-B: budgets x seeds
        cfg_b = self.switcher_config(True)
        members_b = [{"c": s.budget_c, "budget": n} for n in s.budgets for _ in seeds]
        params_b, loss_b = self._grid(cfg_b, members_b, [k for _ in s.budgets for k in seeds], ds)
        bar.update(1)
        bar.close()
        store = CheckpointStore(self.out / "switchers", keep=1)
        tree = {"londi": params, "calibrated": cal_params, "londi_b": params_b}
        store.save(1, tree, kind="londi-switcher-grid", config={"switch": config_to_dict(s)},
                   extra={"c_star": c_star, "offline_rates": rates.tolist()})
        store.wait()
        store.close()
        for i, c in enumerate(s.c_grid):
            self.log.scalar("switcher/offline_call_rate", float(rates[i]), i)
        # the calibrated failure-classifier baseline, fitted on the same logged data
        try:
            clf = fit_failure_classifier(load_dataset(self.out / "switch_data.npz"), seed=0)
            atomic_write(self.out / "switchers" / "classifier.npz", lambda fh: np.savez(fh, **clf.to_arrays()))
            clf_info: dict[str, Any] = clf.metrics
            self._say("failure classifier: " + ", ".join(f"{k} {v:.4g}" for k, v in clf.metrics.items()))
        except LondiError as err:  # e.g. too little switch data (smoke presets): the row is left out
            clf_info = {"skipped": str(err)}
            self._say(f"failure classifier skipped: {err}")
        return {"c_grid": list(s.c_grid), "offline_call_rates": rates.tolist(), "c_star": c_star,
                "classifier": clf_info, "devices": mesh_info(self.mesh),
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

    # ------------------------------------------------------------------ stage 5: online switchers
    def online_switcher_config(self, use_budget: bool) -> SwitcherConfig:
        s, o = self.config.switch, self.config.online
        return SwitcherConfig(obs_dim=self.encoder().dim, hidden=s.hidden, learner="pqn", use_budget=use_budget,
                              num_envs=o.num_envs, num_updates=o.num_updates, rollout_len=o.rollout_len,
                              num_epochs=o.num_epochs, num_minibatches=o.num_minibatches)

    def _online_members(self) -> dict[str, tuple[bool, list[dict[str, float]], list[int]]]:
        s, o = self.config.switch, self.config.online
        base = {"gamma": s.gamma, "lr": o.lr, "lam": o.lam}
        seeds = list(range(s.seeds))
        return {"londi": (False, [{**base, "c": c} for c in s.c_grid for _ in seeds], [k for _ in s.c_grid for k in seeds]),
                "londi_b": (True, [{**base, "c": s.budget_c, "budget": n} for n in s.budgets for _ in seeds],
                            [k for _ in s.budgets for k in seeds])}

    def stage_online(self) -> dict[str, Any]:
        o = self.config.online
        if not o.enabled:
            return {"skipped": "online.enabled is false"}
        from londi_jax.agents.online import LondiEnv, train_online

        q, d = self.model("quick"), self.model("deepthink")
        try:
            env = LondiEnv(q, d, capacity=o.capacity, resets=o.resets, sample_actions=self.config.eval.sample_actions,
                           max_len=o.max_len or None)
        except LondiError as err:
            raise PipelineError(f"online (online.max_len={o.max_len}, online.capacity={o.capacity}, "
                                f"online.resets={o.resets}): {err}") from None
        params = env.params(self.family.jax_env_params(), q, d)
        out, info = {}, {}
        for name, (use_budget, members, seeds) in self._online_members().items():
            self._say(f"online {name}: {len(members)} members x {o.num_envs} envs in one program")
            res = train_online(env, params, self.online_switcher_config(use_budget), stack_hparams(members, {}),
                               seeds, self.out / "online" / name, every_updates=o.checkpoint_every,
                               progress=self.config.progress, mesh=self.mesh)
            out[name] = res.params
            info[name] = {**res.summary, "devices": mesh_info(self.mesh)}
        store = CheckpointStore(self.out / "online" / "switchers", keep=1)
        store.save(1, out, kind="londi-online-grid", config={"online": config_to_dict(o)}, extra=info)
        store.wait()
        store.close()
        return info

    def _online_switchers(self) -> dict[str, Any]:
        members = self._online_members()
        from londi_jax.switcher import pqn

        def like(use_budget: bool, m: int) -> Any:
            cfg = self.online_switcher_config(use_budget)
            hp = stack_hparams([{"c": 0.0}] * m, {})
            keys = jax.vmap(jax.random.key)(jnp.arange(m, dtype=jnp.uint32))
            return jax.eval_shape(jax.vmap(lambda k, h: pqn.init(cfg, h, k).params), keys, hp)

        store = CheckpointStore(self.out / "online" / "switchers", keep=1)
        tree, _ = store.restore({k: like(b, len(ms)) for k, (b, ms, _) in members.items()}, kind="londi-online-grid")
        store.close()
        return tree

    # ------------------------------------------------------------------ stage 6: evaluation
    def eval_specs(self, seed_index: int, expert: bool = False) -> list[Any]:
        return self.family.specs("eval", self.config.eval.episodes, seed_index, expert=expert)

    def stage_evaluate(self) -> dict[str, Any]:
        s, v = self.config.switch, self.config.eval
        tree, extra = self._switchers()
        encoder = self.encoder()
        c_star = float(extra["c_star"])
        cfg, cfg_b = self.switcher_config(False), self.switcher_config(True)
        online = self._online_switchers() if self.config.online.enabled else None
        cfg_o, cfg_ob = self.online_switcher_config(False), self.online_switcher_config(True)
        ds = load_dataset(self.out / "switch_data.npz")
        conf = {m: _logged_confidence(ds, m) for m in ("margin",)}
        runs_path = self.out / "eval" / "runs.jsonl"
        # one line per finished (method, seed); a line torn by a kill is skipped (and cut off
        # before the next append), so that run is simply redone
        done = {(r["label"], r["seed"]): r for r in read_jsonl(runs_path)}
        per_seed = methods_per_seed(self.config) - 1  # the classifier's row only where it was fitted
        clf_path = self.out / "switchers" / "classifier.npz"
        clf = None
        if clf_path.exists():
            with np.load(clf_path) as z:
                clf = FailureClassifier.from_arrays(z)
            clf_conf = 1.0 - clf.predict(np.asarray(ds.obs))  # "confidence" = 1 - failure probability
            per_seed += 1
        elif "classifier" not in read_json(self._marker("switchers")):
            raise PipelineError(f"{clf_path} is missing (the switchers stage ran before the failure classifier "
                                f"existed); rerun it: londi-jax demo --out {self.out} --force-stages switchers")
        counter = {"n": 0, "total": per_seed * v.seeds}

        def member(params: Any, i: int) -> Any:
            return jax.tree.map(lambda x: x[i], params)

        def run(method: str, label: str, params: dict[str, Any], seed: int, router: Any,
                budget: int | None = None) -> dict[str, Any]:
            counter["n"] += 1
            if (label, seed) in done:
                return done[(label, seed)]
            quick, deep = self.policies()
            agent = LondiAgent(quick, deep, router, budget=budget, sample_actions=v.sample_actions, seed=seed,
                               encoder=encoder)
            res = agent.run(self.eval_specs(seed, expert=getattr(router, "reads_expert", False)), v.num_envs, progress=self.config.progress, desc=f"{label} s{seed}",
                            pool=self.pool)
            row = {"method": method, "label": label, "params": params, "seed": seed,
                   "episodes": [e.to_json() for e in res.episodes],
                   "env_steps_per_second": res.env_steps / max(res.wall_seconds, 1e-9)}
            append_jsonl(runs_path, row)
            done[(label, seed)] = row
            summ = res.summary()
            self.log.scalars(f"eval/{label}", {k: summ[k] for k in ("success_rate", "call_rate")}, seed)
            self._say(f"  [{counter['n']}/{counter['total']}] {label:<28} seed {seed}: success "
                      f"{summ['success_rate']:.3f}  DEEPTHINK call rate {summ['call_rate']:.3f}")
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
            if online is not None:  # the switches trained in one program on device, on the same episodes
                for i, c in enumerate(s.c_grid):
                    run("LONDI online", f"LONDI online c={c:g}", {"c": c}, seed,
                        SwitcherRouter(cfg_o, member(online["londi"], i * s.seeds + seed % s.seeds),
                                       name=f"londi online c={c:g}"))
                for i, n in enumerate(s.budgets):
                    run("LONDI-B online", f"LONDI-B online n={n}", {"budget": n, "c": s.budget_c}, seed,
                        SwitcherRouter(cfg_ob, member(online["londi_b"], i * s.seeds + seed % s.seeds), budget=n,
                                       name=f"londi-b online n={n}"), budget=n)
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
            if clf is not None:
                t_c = calibrate_threshold(clf_conf, matched, "max_prob")
                run("Classifier", "Classifier (LONDI's rate)", {"target_rate": matched, "threshold": 1.0 - t_c}, seed,
                    ClassifierRouter(clf, 1.0 - t_c))
            native = self.family.name == "scienceworld"  # rule 6's triggers exist only there
            run("SwiftSage", "SwiftSage", {"native": True} if native else {}, seed, SwiftSageRouter(native=native))
            run("Oracle", "Oracle (expert)", {"expert": self.family.expert}, seed, OracleRouter())
        runs = list(done.values())
        e = self.config.env
        where = ({"eval_level": e.eval_level} if self.family.name == "babyai-text" else
                 {"split": "test", "simplifications": e.simplifications, "step_limit": self.family.step_limit})
        results = {"meta": {"preset": self.config.preset, "device": device_description(), "env": self.family.name,
                            "quality": self.family.quality, "targets": self.family.targets, **where,
                            "kinds": list(e.kinds),
                            "episodes_per_seed": v.episodes, "seeds": v.seeds, "c_star": c_star,
                            "sample_actions": v.sample_actions,
                            "compute": "forward FLOPs of real tokens and measured model seconds, per episode"},
                   "runs": runs}
        _write_json(self.out / "eval" / "results.json", results)
        return {"runs": len(runs)}

    # ------------------------------------------------------------------ stage 7: report
    def stage_report(self) -> dict[str, Any]:
        from londi_jax.experiments.report import write_report

        results = read_json(self.out / "eval" / "results.json")
        paths = write_report(results, self.out / "report")
        return {"paths": {k: str(v) for k, v in paths.items()}}


def scratch_model(spec: ModelSpec, tokenizer: Any, seed: int) -> Any:
    """A randomly initialised Llama-style model of ``spec``'s sizes (``source="scratch"``) over
    ``tokenizer``'s vocabulary, tied embeddings."""
    tok = tokenizer
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=spec.hidden_size,
                      num_layers=spec.num_layers, num_heads=spec.num_heads, num_kv_heads=spec.num_heads,
                      head_dim=spec.head_dim, intermediate_size=spec.intermediate_size, tie_embeddings=True,
                      max_position_embeddings=spec.max_position_embeddings, dtype=spec.dtype,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, model_type="llama")
    return init_model(cfg, seed=seed)


def _model_info(record: dict[str, Any]) -> dict[str, Any]:
    """A model's entry in ``models.done.json`` from its ``models/<name>_bc.json`` record."""
    return {"examples": record["examples"], "steps": record["steps"], "history": record["history"][-1:]}


def _is_encoder_decoder(path: Any) -> bool:
    from londi_jax.lm.hf_loader import model_type_of

    return Path(path).is_dir() and model_type_of(Path(path)) == "t5"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _copy(src: Path, dst: Path) -> None:
    """Copy a file or tree with normal permissions (not the source's modes: a read-only source
    must not give a read-only copy)."""
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True, mode=0o777)
        for child in src.iterdir():
            _copy(child, dst / child.name)
    else:
        shutil.copyfile(src, dst)


def _logged_confidence(ds: OfflineDataset, measure: str) -> np.ndarray:
    """QUICK's confidence in the logged states (the dataset's ``quick_confidence`` field:
    ``policy.confidence_features`` columns max prob, margin, entropy, top-1 log-prob)."""
    if ds.quick_confidence is None:
        raise PipelineError("switch_data.npz was written before QUICK's confidence was logged as its own field; "
                            "rerun that stage and the later ones (londi-jax demo --out RUN --force-stages switch_data)")
    conf = np.asarray(ds.quick_confidence)
    if measure == "margin":
        return conf[:, 1]
    if measure == "max_prob":
        return conf[:, 0]
    raise PipelineError(f"unknown confidence measure {measure!r}")


def run_pipeline(config: PipelineConfig, out_dir: str | os.PathLike, stages: Sequence[str] | None = None
                 ) -> dict[str, Any]:
    """Run the pipeline (resuming whatever ``out_dir`` already holds)."""
    return Pipeline(config, out_dir).run(stages)



# ---------------------------------------------------------------------- how long a preset takes
PROMPT_TOKENS = 170  # GLAM BabyAI-Text prompts: 144-193 tokens with SmolLM2's tokenizer (README, LM benchmark)
DEMO_STEPS = 4.2  # expert steps per demo episode, 6x6 rooms (cpu-small: 4,210 in 1,000 episodes)
ROLLOUT_STEPS = 22.7  # policy steps per episode, 6x6 rooms (cpu-small switch data: 11,605 in 512)


def _params(spec: ModelSpec) -> float | None:
    """Parameter count of a model spec: from its sizes (scratch) or its weight file's header."""
    if spec.source == "scratch":
        h = spec.hidden_size
        layer = 4 * h * spec.num_heads * spec.head_dim + 3 * h * spec.intermediate_size
        return float(spec.vocab_size * h + spec.num_layers * layer)
    try:
        from londi_jax.lm.registry import resolve_model_path

        path = resolve_model_path(spec.source)
        if path is None:
            return None
        if path.suffix == ".gguf":
            import gguf

            return float(sum(int(np.prod(t.shape)) for t in gguf.GGUFReader(str(path)).tensors))
        from safetensors import safe_open

        total = 0
        for f in sorted(path.glob("*.safetensors")):
            with safe_open(str(f), "np") as st:
                total += sum(int(np.prod(st.get_slice(k).get_shape())) for k in st.keys())
        return float(total) or None
    except (LondiError, OSError, ValueError):
        return None


def methods_per_seed(config: PipelineConfig) -> int:
    """Evaluation runs per seed (``stage_evaluate``'s order): QUICK-only, DEEPTHINK-only, LONDI per
    c and calibrated, LONDI-B per budget, the online switches (where trained), Random at LONDI's rate and per rate, Threshold likewise,
    the failure classifier (where fitted), SwiftSage and the oracle switch."""
    s, v = config.switch, config.eval
    online = (len(s.c_grid) + len(s.budgets)) if config.online.enabled else 0
    return (2 + len(s.c_grid) + 1 + len(s.budgets) + online + 1 + len(v.random_rates) + 1 + len(v.threshold_rates)
            + 1 + 1 + 1)


def estimate_work(config: PipelineConfig) -> dict[str, float]:
    """Model FLOPs the pipeline needs, per stage, from the preset's sizes (a rough lower bound).

    A forward pass over a prompt costs ``2 * params * PROMPT_TOKENS`` FLOPs, a BC step on it three
    times that (forward + backward; the six candidates share the prompt's prefill). Episode
    lengths are the ones measured on cpu-small (6x6 rooms), scaled with the room side. Counted:
    BC over every demo step for both models, BC's evaluation rollouts, switch data (both models
    score every state) and evaluation (every method, both models at every step: an upper bound
    for QUICK-only, about right for LONDI). Switcher training (small MLPs) is left out.
    Returns FLOPs per part and ``total``; ``nan`` when a model's size is unknown.
    """
    e, s, v = config.env, config.switch, config.eval
    nq, nd = _params(config.quick), _params(config.deep)
    if nq is None or nd is None:
        return {"total": math.nan}
    scale = e.room_size / 6
    fwd = {"quick": 2 * nq * PROMPT_TOKENS, "deep": 2 * nd * PROMPT_TOKENS}
    demo_steps = e.demo_episodes * DEMO_STEPS * scale
    roll = min(ROLLOUT_STEPS * scale, e.max_steps or math.inf)  # env.max_steps cuts episodes off
    bc = bc_eval = 0.0
    for name, spec in (("quick", config.quick), ("deep", config.deep)):
        share = len(spec.demo_kinds or e.kinds) / len(e.kinds)
        bc += spec.bc.epochs * demo_steps * share * 3 * fwd[name]
        evals = math.ceil(spec.bc.epochs / spec.eval_every) if spec.eval_episodes else 0
        bc_eval += evals * spec.eval_episodes * roll * fwd[name]
    both = fwd["quick"] + fwd["deep"]
    collect = s.collect_episodes * roll * both
    evaluate = v.seeds * methods_per_seed(config) * v.episodes * roll * both
    out = {"bc": bc, "bc_eval": bc_eval, "switch_data": collect, "evaluate": evaluate}
    out["total"] = sum(out.values())
    return out


def measured_flops_per_second() -> float:
    """This machine's float32 matmul rate on JAX's default device (1024 x 1024, jitted, warm)."""
    n = 1024
    x = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    reps, t0 = 4, time.perf_counter()
    for _ in range(reps):
        f(x).block_until_ready()
    return reps * 2 * n ** 3 / (time.perf_counter() - t0)


ACCELERATOR_PRESETS = ("gpu", "real-small", "sw-gpu")  # presets sized for a GPU / TPU (real pretrained models)


def accelerator_warning(config: PipelineConfig) -> str | None:
    """A warning when a preset of ``ACCELERATOR_PRESETS`` is about to run on a machine whose JAX sees
    no accelerator (instant; :func:`time_estimate` says how long it would take); else ``None``."""
    if config.preset not in ACCELERATOR_PRESETS or jax.default_backend() != "cpu":
        return None
    return (f"the {config.preset} preset is starting on a machine without an accelerator (JAX sees only the CPU); "
            "install JAX for your GPU or TPU (see the README) or use --preset cpu-small")


def time_estimate(config: PipelineConfig, flops_per_second: float | None = None) -> str:
    """How long ``config`` would take on this machine, and how that is estimated:
    :func:`estimate_work` at :func:`measured_flops_per_second` (a lower bound)."""
    work = estimate_work(config)["total"]
    if not math.isfinite(work):
        return "no time estimate: the size of a model source could not be read"
    rate = flops_per_second or measured_flops_per_second()
    hours = work / rate / 3600
    return (f"estimated time here: {hours:,.1f} h or more ({work:.1e} FLOPs of model forward/backward passes: "
            f"2 x params per token, ~{PROMPT_TOKENS}-token prompts, over the preset's demo steps x BC epochs, BC "
            f"evaluation, switch-data and evaluation episodes; at this machine's measured {rate / 1e9:.0f} GFLOP/s "
            f"float32 matmul rate; env steps and compiles come on top)")
