"""Behaviour cloning of LM action-scoring policies on expert demos (GLAM prompt -> action).

The policy is GLAM's: an LM scores each of the K action strings by the summed log-probability
of its tokens after the prompt, and acts by softmax/argmax over the K scores. The BC losses:

* ``"choice"``: cross-entropy of the expert action among the K candidate scores;
* ``"tokens"``: the token-level negative log-likelihood of the expert action string;
* ``"both"``: their sum.

All K candidates share one prefill of the prompt (``lm.engine.score_candidates``, the same
function the scoring program runs), so a step costs about one forward/backward of the prompt.
Full fine-tuning or LoRA (``lm.lora``); one jitted step over ``(trainable, opt_state)`` with the
frozen part passed as an argument; length-bucketed batches in a seeded order that is a pure
function of (seed, epoch), so a run resumed from an orbax checkpoint replays exactly the batches
an uninterrupted run would.

The step program depends on the model's structure alone (``_train_step``, one per graphdef): the
loss, learning rate, weight decay and clipping norm are traced values, so trainers of equal
structure and batch shapes (the stages of an FSLM stack, a sweep over learning rates) share one
compiled program instead of compiling a minute each for a real model on a CPU.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from tqdm.auto import tqdm

from londi_jax.envs.babyai_text.prompt import ACTIONS
from londi_jax.lm.engine import score_candidates
from londi_jax.lm.layers import CausalLM
from londi_jax.lm.lora import LoRAConfig, add_lora, merge_lora, merge_trainable, split_trainable
from londi_jax.lm.sharding import shard_state
from londi_jax.utils.checkpoint import CheckpointStore
from londi_jax.utils.errors import LondiError
from londi_jax.utils.fields import above, at_least, check_fields, one_of, within
from londi_jax.utils.mesh import MEMBER_AXIS, member_sharding, place, replicated
from londi_jax.utils.programs import program_cache

__all__ = ["BCConfig", "BCData", "BCError", "BCResult", "BCTrainer", "LOSSES", "FINETUNE_MODES",
           "bc_data_from_episodes", "bc_data_from_steps", "encode_candidates", "bc_loss", "epoch_batches", "pad_prompts"]

LOSSES = ("choice", "tokens", "both")
# each loss as weights of (choice cross-entropy, token NLL): traced, so one program serves all three
LOSS_WEIGHTS = {"choice": (1.0, 0.0), "tokens": (0.0, 1.0), "both": (1.0, 1.0)}
FINETUNE_MODES = ("full", "lora")


class BCError(LondiError):
    """Bad behaviour-cloning input or configuration."""


@dataclasses.dataclass(frozen=True)
class BCConfig:
    """Static behaviour-cloning settings (one compile per config)."""

    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    loss: str = "choice"
    finetune: str = "full"
    lora: LoRAConfig = LoRAConfig()
    length_multiple: int = 32  # prompt lengths are padded to a multiple of this (few programs)
    candidate_length_multiple: int = 8  # per-row candidate lengths likewise (distillation sets one per stage)
    pool_batches: int = 16  # batches drawn together and sorted by length (less padding)
    checkpoint_every: int = 200  # optimizer steps between checkpoints (and at every epoch end)
    seed: int = 0
    candidates: int = 16  # per-example candidate sets (ScienceWorld): the expert's + this many - 1 sampled others
    # share of those others drawn first from the actions that begin like the expert's (same first
    # token: "focus on bowl" against other "focus on ..." actions): hard negatives, the choices a
    # policy over hundreds of valid actions must tell apart; the rest uniformly from the others
    hard_negatives: float = 0.0

    def __post_init__(self) -> None:  # every field typed and in range when built (overrides too)
        check_fields(self, {
            **{name: [at_least(1)] for name in ("epochs", "batch_size", "length_multiple", "candidate_length_multiple",
                                                "pool_batches", "checkpoint_every")},
            "candidates": [at_least(2)], "hard_negatives": [within(0, 1)],
            "learning_rate": [above(0)], "warmup_steps": [at_least(0)], "weight_decay": [at_least(0)],
            "max_grad_norm": [above(0)], "seed": [at_least(0)],
            "loss": [one_of(LOSSES, "BC loss")], "finetune": [one_of(FINETUNE_MODES, "fine-tuning mode")]})


@dataclasses.dataclass
class BCData:
    """Tokenized demos: one prompt and the index of the expert's action per example.

    ``candidate_ids``: per-example candidate sets (example i's candidates as token-id lists,
    ``labels[i]`` indexing into them), for environments whose actions depend on the state
    (ScienceWorld's valid actions); ``None`` when every example shares the trainer's fixed
    action list (BabyAI-Text's six actions)."""

    prompt_ids: list[np.ndarray]
    labels: np.ndarray  # int32 [N]
    kinds: list[str]
    candidate_ids: list[list[list[int]]] | None = None

    def __len__(self) -> int:
        return len(self.prompt_ids)


def bc_data_from_steps(prompts: Sequence[str], candidates: Sequence[Sequence[str]], actions: Sequence[str],
                       kinds: Sequence[str], tokenizer: Any) -> BCData:
    """Examples with their own candidate sets: ``prompts[i]``, the expert's ``actions[i]`` among
    ``candidates[i]`` (added when missing: the expert's action is always a candidate). Each
    distinct action string is tokenized once. Raises ``BCError`` for no examples or an action
    that tokenizes to nothing."""
    if not prompts:
        raise BCError("no demo steps to clone (no successful episodes?); write more demos first")
    if not (len(prompts) == len(candidates) == len(actions) == len(kinds)):
        raise BCError(f"prompts, candidates, actions and kinds differ in length: {len(prompts)}, "
                      f"{len(candidates)}, {len(actions)}, {len(kinds)}")
    rows = [list(dict.fromkeys(c)) for c in candidates]
    labels = []
    for row, a in zip(rows, actions):
        if a not in row:
            row.append(a)
        labels.append(row.index(a))
    vocab = sorted({c for row in rows for c in row})
    ids = dict(zip(vocab, tokenizer(vocab, add_special_tokens=False)["input_ids"]))
    for a, i in ids.items():
        if not i:
            raise BCError(f"action {a!r} tokenizes to zero tokens")
    p_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    return BCData([np.asarray(i, np.int32) for i in p_ids], np.asarray(labels, np.int32), [str(k) for k in kinds],
                  [[list(ids[c]) for c in row] for row in rows])


def bc_data_from_episodes(episodes: Iterable[Mapping[str, Any]], tokenizer: Any,
                          actions: Sequence[str] = ACTIONS, successful_only: bool = True) -> BCData:
    """Examples from demo episodes (``envs.babyai_text.demos`` rows: ``steps[*].prompt/action``)."""
    index = {a: i for i, a in enumerate(actions)}
    prompts: list[str] = []
    labels: list[int] = []
    kinds: list[str] = []
    for ep in episodes:
        if successful_only and not ep.get("success", True):
            continue
        for step in ep["steps"]:
            if step["action"] not in index:
                raise BCError(f"demo action {step['action']!r} is not one of the candidates {list(actions)}")
            prompts.append(step["prompt"])
            labels.append(index[step["action"]])
            kinds.append(str(ep.get("task_kind", "")))
    if not prompts:
        raise BCError("no demo steps to clone (no successful episodes?); write more demos first")
    ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    return BCData([np.asarray(i, np.int32) for i in ids], np.asarray(labels, np.int32), kinds)


def encode_candidates(tokenizer: Any, actions: Sequence[str] = ACTIONS) -> tuple[np.ndarray, np.ndarray]:
    """The K action strings as right-padded token ids ``(K, L)`` and validity mask."""
    rows = [list(tokenizer.encode(a, add_special_tokens=False)) for a in actions]
    for a, r in zip(actions, rows):
        if not r:
            raise BCError(f"action {a!r} tokenizes to zero tokens")
    L = max(map(len, rows))
    tok = np.zeros((len(rows), L), np.int32)
    valid = np.zeros((len(rows), L), bool)
    for k, r in enumerate(rows):
        tok[k, :len(r)] = r
        valid[k, :len(r)] = True
    return tok, valid


def pad_prompts(rows: Sequence[np.ndarray], batch: int, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad ``rows`` to a length that is a multiple of ``multiple``; extra batch rows get
    one valid dummy token (so no row is all padding)."""
    length = multiple * math.ceil(max(len(r) for r in rows) / multiple)
    tok = np.zeros((batch, length), np.int32)
    valid = np.zeros((batch, length), bool)
    for i, r in enumerate(rows):
        tok[i, length - len(r):] = r
        valid[i, length - len(r):] = True
    valid[len(rows):, -1] = True
    return tok, valid


def epoch_batches(lengths: np.ndarray, batch_size: int, pool_batches: int, seed: int,
                  epoch: int) -> list[np.ndarray]:
    """Full batches of example indices for one epoch: shuffled, then sorted by length within
    pools of ``pool_batches`` batches, then the batches shuffled. A pure function of its inputs."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for s in range(0, len(order), pool):
        chunk = order[s:s + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk) - batch_size + 1, batch_size)]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def bc_loss(model: CausalLM, p_tok: jax.Array, p_valid: jax.Array, labels: jax.Array,
            row_valid: jax.Array, c_tok: jax.Array, c_valid: jax.Array, loss: str | jax.Array
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """BC loss of a batch (mean over ``row_valid`` rows) and metrics (choice CE, token NLL, accuracy).

    ``c_tok/c_valid``: the candidates, shared ``(K, L)`` or per row ``(B, K, L)`` (a candidate
    with no valid token is padding and is never chosen). ``loss``: a name of ``LOSSES`` or its
    weights ``(2,)`` on (choice CE, token NLL) as in ``LOSS_WEIGHTS``."""
    B = p_tok.shape[0]
    ct = c_tok if c_tok.ndim == 3 else jnp.broadcast_to(c_tok, (B, *c_tok.shape))
    cv = c_valid if c_valid.ndim == 3 else jnp.broadcast_to(c_valid, (B, *c_valid.shape))
    lp, _, _ = score_candidates(model, p_tok, p_valid, ct, cv)
    # GLAM's action scores; padding candidates (no valid token) of per-row sets are not candidates
    scores = jnp.where(cv.any(-1), lp.sum(-1), -jnp.inf)  # (B, K)
    picked = jnp.take_along_axis(scores, labels[:, None], axis=-1)[:, 0]
    choice = jax.nn.logsumexp(scores, axis=-1) - picked
    tokens = -picked
    w_choice, w_tokens = jnp.asarray(LOSS_WEIGHTS[loss] if isinstance(loss, str) else loss, jnp.float32)
    per_row = w_choice * choice + w_tokens * tokens
    w = row_valid.astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    acc = (jnp.argmax(scores, -1) == labels).astype(jnp.float32)
    metrics = {"choice_ce": (choice * w).sum() / n, "token_nll": (tokens * w).sum() / n,
               "accuracy": (acc * w).sum() / n}
    return (per_row * w).sum() / n, metrics


@dataclasses.dataclass
class BCResult:
    """A trained policy model plus its training history (one dict per epoch)."""

    model: CausalLM  # LoRA folded in (plain model), ready for ``LanguageModel``
    adapted: CausalLM | None  # the LoRA-adapted model (for ``save_lora``), None for full fine-tuning
    history: list[dict[str, float]]
    steps: int
    resumed_from: int


def _host_metrics(metrics: Sequence[Mapping[str, jax.Array]]) -> list[dict[str, float]]:
    """Per-step metrics read back to the host as float32 values (one transfer for the list)."""
    if not metrics:
        return []
    stacked = jax.device_get(jax.tree.map(lambda *x: jnp.stack(x), *metrics))
    return [{k: float(np.float32(v[i])) for k, v in stacked.items()} for i in range(len(metrics))]


def _optimizer() -> optax.GradientTransformation:
    """Clipping then AdamW, with the learning rate, weight decay and clipping norm held in the
    optimizer state (``optax.inject_hyperparams``): values of the run, not of the program."""
    return optax.inject_hyperparams(lambda learning_rate, weight_decay, max_grad_norm: optax.chain(
        optax.clip_by_global_norm(max_grad_norm), optax.adamw(learning_rate, weight_decay=weight_decay)))(
        learning_rate=0.0, weight_decay=0.0, max_grad_norm=1.0)


@program_cache()
def _train_step(graphdef: Any) -> Callable[..., Any]:
    """The jitted BC step for models of structure ``graphdef``:
    ``(trainable, opt_state, frozen, lr, loss_weights, p_tok, p_valid, labels, row_valid, c_tok, c_valid)
    -> (trainable, opt_state, metrics)``; ``lr`` is this step's learning rate (the schedule is
    evaluated on the host). Shared by every trainer of that structure."""
    tx = _optimizer()

    def step(trainable, opt_state, frozen, lr, loss_weights, p_tok, p_valid, labels, row_valid, c_tok, c_valid):
        def loss_fn(tr):
            model = merge_trainable(graphdef, tr, frozen)
            return bc_loss(model, p_tok, p_valid, labels, row_valid, c_tok, c_valid, loss_weights)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, {"loss": loss, **metrics}

    return jax.jit(step, donate_argnums=(0, 1))


class BCTrainer:
    """Behaviour cloning of one ``CausalLM`` on :class:`BCData`.

    ``eval_fn(model) -> dict`` (optional) runs after every epoch, e.g. success rate of rollouts;
    its numbers go into the history and the progress bar.
    """

    KIND = "bc-train"

    def __init__(self, model: CausalLM, tokenizer: Any, data: BCData, config: BCConfig = BCConfig(),
                 actions: Sequence[str] = ACTIONS, mesh: Mesh | None = None):
        if len(data) < config.batch_size:
            raise BCError(f"{len(data)} examples are fewer than one batch ({config.batch_size}); "
                          f"write more demos or lower batch_size")
        self.config = config
        self.data = data
        self.lengths = np.asarray([len(p) for p in data.prompt_ids])
        limit = model.config.context_window
        if self.lengths.max() + 8 > limit:
            raise BCError(f"the longest demo prompt has {self.lengths.max()} tokens, beyond the model's "
                          f"context window ({limit}); raise max_position_embeddings")
        if config.finetune == "lora":
            model = add_lora(model, config.lora, seed=config.seed)
        self.model_config = model.config
        self.graphdef, trainable, frozen = split_trainable(model, config.finetune)
        self.mesh = mesh
        if mesh is not None:  # parameters (and so their optimizer state) on fsdp / model, batches on data
            rows = mesh.shape.get(MEMBER_AXIS, 1)
            if config.batch_size % rows:
                raise BCError(f"batch_size {config.batch_size} does not split over the mesh's data axis ({rows} "
                              f"devices); use a multiple of {rows}")
            trainable, frozen = shard_state(trainable, mesh), shard_state(frozen, mesh)
        self.frozen = frozen
        self._init_trainable = trainable
        self.c_tok, self.c_valid = encode_candidates(tokenizer, actions) if data.candidate_ids is None else (None, None)
        self.steps_per_epoch = len(epoch_batches(self.lengths, config.batch_size, config.pool_batches,
                                                 config.seed, 0))
        self.total_steps = self.steps_per_epoch * config.epochs
        # warm-up at most a quarter of the run; the cosine part always has >= 1 step (tiny runs)
        warmup = min(config.warmup_steps, self.total_steps // 4)
        schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup,
                                                      max(self.total_steps, warmup + 1))
        # every step's learning rate, float32 as optax computes it; fed to the shared program per step
        self.learning_rates = np.asarray(jax.vmap(schedule)(jnp.arange(max(self.total_steps, 1))), np.float32)
        self.loss_weights = np.asarray(LOSS_WEIGHTS[config.loss], np.float32)
        self.tx = _optimizer()
        self._step = _train_step(self.graphdef)

    def init_state(self) -> dict[str, Any]:
        """Fresh ``{"trainable", "opt"}`` state (the optimizer's weight decay and clipping norm set
        from the config)."""
        tr = jax.tree.map(jnp.copy, self._init_trainable)  # the step donates its inputs
        opt = self.tx.init(tr)
        hp = {**opt.hyperparams, "weight_decay": jnp.asarray(self.config.weight_decay, jnp.float32),
              "max_grad_norm": jnp.asarray(self.config.max_grad_norm, jnp.float32)}
        return {"trainable": tr, "opt": opt._replace(hyperparams=hp)}

    def model_from(self, trainable: Any) -> CausalLM:
        """The (possibly LoRA-adapted) model holding ``trainable``."""
        return merge_trainable(self.graphdef, trainable, self.frozen)

    def _batch(self, idx: np.ndarray, epoch: int = 0) -> tuple[np.ndarray, ...]:
        B = self.config.batch_size
        p_tok, p_valid = pad_prompts([self.data.prompt_ids[i] for i in idx], B, self.config.length_multiple)
        labels = np.zeros((B,), np.int32)
        labels[:len(idx)] = self.data.labels[idx]
        row_valid = np.arange(B) < len(idx)
        if self.data.candidate_ids is None:
            return p_tok, p_valid, labels, row_valid, self.c_tok, self.c_valid
        c_tok, c_valid = self._candidate_batch(idx, epoch, labels)  # sets labels to the expert's slot
        return p_tok, p_valid, labels, row_valid, c_tok, c_valid

    def _placed(self, batch: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
        """A batch's rows split over the mesh's ``data`` axis (as is without a mesh): each device
        computes its rows' gradients and the compiler reduces them. A candidate list shared by
        every row ``(K, L)`` is replicated (K need not split over ``data``)."""
        if self.mesh is None:
            return batch
        *rows, c_tok, c_valid = batch
        cands = (c_tok, c_valid) if c_tok.ndim == 3 else place((c_tok, c_valid), replicated(self.mesh))
        return (*place(tuple(rows), member_sharding(self.mesh)), *cands)

    def _scalars(self, step: int) -> tuple[Any, Any]:
        """This step's learning rate and the loss weights, replicated on the mesh if any (a mesh
        that spans processes takes global arrays only)."""
        values = (self.learning_rates[step], self.loss_weights)
        return values if self.mesh is None else place(values, replicated(self.mesh))

    def _candidate_batch(self, idx: np.ndarray, epoch: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row candidates ``(B, K, L)``: the expert's action first, then up to K - 1 others of
        the example's set drawn without replacement (``hard_negatives`` of them, where there are
        enough, among those sharing the expert's first token); a pure function of (seed, epoch,
        examples), so a resumed run draws the same. Sets labels to 0 (the expert's slot). L is
        padded to a multiple of ``candidate_length_multiple`` (few programs)."""
        K, B = self.config.candidates, self.config.batch_size
        chosen = []
        for r, i in enumerate(idx):
            row, lab = self.data.candidate_ids[i], int(self.data.labels[i])
            others = [k for k in range(len(row)) if k != lab]
            rng = np.random.default_rng([self.config.seed, epoch, int(i)])
            n = min(K - 1, len(others))
            hard = [k for k in others if row[k][0] == row[lab][0]]
            n_hard = min(round(self.config.hard_negatives * n), len(hard))
            pick = [hard[j] for j in rng.choice(len(hard), size=n_hard, replace=False)] if n_hard else []
            rest = sorted(set(others) - set(pick))
            pick += [rest[j] for j in rng.choice(len(rest), size=n - n_hard, replace=False)] if n > n_hard else []
            chosen.append([row[lab]] + [row[k] for k in pick])
            labels[r] = 0
        m = self.config.candidate_length_multiple
        L = m * math.ceil(max(len(c) for cs in chosen for c in cs) / m)
        tok = np.zeros((B, K, L), np.int32)
        valid = np.zeros((B, K, L), bool)
        for r, cs in enumerate(chosen):
            for k, c in enumerate(cs):
                tok[r, k, :len(c)] = c
                valid[r, k, :len(c)] = True
        valid[len(chosen):, 0, 0] = True  # padding rows: one valid candidate token (masked by row_valid)
        return tok, valid

    # ------------------------------------------------------------------ loop
    def train(self, checkpoint_dir: str | os.PathLike | None = None,
              eval_fn: Callable[[CausalLM], Mapping[str, float]] | None = None,
              progress: bool = True, log: Callable[[dict[str, Any]], None] | None = None,
              desc: str = "bc", eval_every: int = 1) -> BCResult:
        """Run ``config.epochs`` epochs; with ``checkpoint_dir`` resume from / save to it.

        ``eval_fn`` runs after every ``eval_every``-th epoch and after the last one. A resumed
        run's history equals an uninterrupted one's: a mid-epoch checkpoint stores the metrics
        of the epoch's steps so far (float32 values, exact in JSON), so the resumed epoch's means
        are computed from the same numbers in the same order. The progress bar counts finished
        steps: it advances once a step's metrics are ready, keeping one step in flight.
        """
        cfg = self.config
        state = self.init_state()
        store = CheckpointStore(checkpoint_dir, keep=2) if checkpoint_dir is not None else None
        start = 0
        history: list[dict[str, float]] = []
        done_metrics: list[dict[str, float]] = []  # this epoch's steps before a mid-epoch checkpoint
        meta_config = {"bc": dataclasses.asdict(cfg), "examples": len(self.data),
                       "model": dataclasses.asdict(self.model_config)}
        try:
            if store is not None and store.latest_step() is not None:
                like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
                state, meta = store.restore(like, kind=self.KIND, config=meta_config)
                start = int(meta["step"])
                extra = meta.get("extra", {})
                history = list(extra.get("history", []))
                if start % self.steps_per_epoch:
                    done_metrics = list(extra.get("epoch_metrics", []))
                    if len(done_metrics) != start % self.steps_per_epoch:
                        warnings.warn(f"checkpoint {checkpoint_dir}/{start} has no per-step metrics of its epoch "
                                      f"(written by an older version): the resumed epoch's means cover only the "
                                      f"steps after it", stacklevel=2)
                        done_metrics = []
            step = start
            with tqdm(total=self.total_steps, initial=start, desc=desc, unit="step", disable=not progress) as bar:
                for epoch in range(start // self.steps_per_epoch, cfg.epochs):
                    batches = epoch_batches(self.lengths, cfg.batch_size, cfg.pool_batches, cfg.seed, epoch)
                    epoch_metrics: list[dict[str, jax.Array]] = []  # read back once per epoch, not per step
                    for b_idx in range(step - epoch * self.steps_per_epoch, len(batches)):
                        tr, opt, metrics = self._step(state["trainable"], state["opt"], self.frozen,
                                                      *self._scalars(step),
                                                      *self._placed(self._batch(batches[b_idx], epoch)))
                        state = {"trainable": tr, "opt": opt}
                        step += 1
                        if epoch_metrics:  # the previous step is finished once its metrics are ready
                            jax.block_until_ready(epoch_metrics[-1])
                            bar.update(1)
                        epoch_metrics.append(metrics)
                        if b_idx % 10 == 0:
                            bar.set_postfix(loss=f"{float(metrics['loss']):.3f}", acc=f"{float(metrics['accuracy']):.2f}")
                        if store is not None and step % cfg.checkpoint_every == 0 and b_idx + 1 < len(batches):
                            store.save(step, state, kind=self.KIND, config=meta_config,
                                       extra={"history": history,
                                              "epoch_metrics": done_metrics + _host_metrics(epoch_metrics)})
                    jax.block_until_ready(epoch_metrics[-1])  # the epoch's last step
                    bar.update(1)
                    rows = done_metrics + _host_metrics(epoch_metrics)
                    done_metrics = []
                    means = {k: float(np.mean(np.asarray([r[k] for r in rows], np.float32))) for k in rows[0]}
                    row: dict[str, Any] = {"epoch": epoch + 1, "step": step,
                                           **{f"train_{k}": v for k, v in means.items()}}
                    if eval_fn is not None and ((epoch + 1) % max(eval_every, 1) == 0 or epoch + 1 == cfg.epochs):
                        row.update({f"eval_{k}": float(v) for k, v in eval_fn(self.model_from(state["trainable"])).items()})
                    history.append(row)
                    if log is not None:
                        log(row)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if isinstance(v, float)})
                    if store is not None:
                        store.save(step, state, kind=self.KIND, config=meta_config, extra={"history": history})
        finally:
            if store is not None:
                store.wait()
                store.close()
        adapted = self.model_from(state["trainable"])
        if cfg.finetune == "lora":
            return BCResult(merge_lora(adapted), adapted, history, step, start)
        return BCResult(adapted, None, history, step, start)
