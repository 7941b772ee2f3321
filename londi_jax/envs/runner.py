"""Batched text environments: N envs of one kind stepped together, with auto-reset.

``BatchedEnv(env_fns, num_envs, seeds, backend)``:

* ``env_fns``: a picklable zero-argument factory returning a ``TextEnv`` (e.g.
  ``functools.partial(make_babyai_text, "BabyAI-MixedTrainLocal-v0", kind="goto")`` or
  ``functools.partial(ScienceWorldTextEnv, "4-1")``), or one factory per env.
* ``backend="inprocess"``: all envs in this process, stepped one after the other (BabyAI-Text).
  ``backend="subprocess"``: ``num_workers`` worker processes (default one per env: ScienceWorld
  needs one JVM per worker), each owning a contiguous slice of the envs and stepping them while
  the other workers do the same.
* Seeds: env ``i``'s first episode is reset with ``seeds[i]`` (``seeds`` may be one int ``s``:
  then ``s + i``); episode ``k >= 1`` uses a seed derived from ``(seeds[i], k)``, so every
  trajectory is a function of the seeds and the actions, whatever the backend and even across a
  worker restart.
* Auto-reset: when an env's episode ends, ``step`` returns the new episode's first observation
  and mission; the finished episode's last observation is ``info['final_observation']`` and its
  summary ``info['episode'] = {return, length, success, seed}``.
* Valid actions only on request (``with_valid=True`` or ``valid_actions()``). Envs whose
  ``reset``/``step`` take a ``with_valid`` keyword (ScienceWorld) are told to skip the listing.
* Failures: a worker that dies or does not answer within ``step_timeout`` seconds is killed
  (with its JVMs: each worker leads its own process group) and restarted; its envs' episodes are
  reported lost (``truncated``, ``info['episode_lost']``, ``info['worker_restarted']``) and they
  continue with their next episode. An env that restarts its own simulator (ScienceWorld's JVM)
  reports ``info['jvm_restarted']`` the same way. Python exceptions raised by an env are bugs or
  bad input: they are re-raised in the caller as ``EnvWorkerError`` / the original LondiError.
"""

from __future__ import annotations

import dataclasses
import inspect
import multiprocessing as mp
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from londi_jax.envs.base import TextEnv, TextReset, TextStep
from londi_jax.utils.errors import LondiError, UnknownNameError

EnvFactory = Callable[[], TextEnv]
BACKENDS = ("inprocess", "subprocess")


class EnvWorkerError(LondiError):
    """An env raised inside the runner, or a worker could not be (re)started."""


def episode_seed(seed: int, episode: int) -> int:
    """Seed of episode ``episode`` of an env whose first-episode seed is ``seed``."""
    if episode == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, episode]).generate_state(1, np.uint32)[0])


@dataclasses.dataclass
class BatchReset:
    """First observations of all envs (``valid_actions`` only when asked for)."""

    observations: list[str]
    missions: list[str]
    infos: list[dict[str, Any]]
    valid_actions: list[list[str]] | None = None


@dataclasses.dataclass
class BatchStep:
    """One step of all envs. After an episode ends the env is already reset: ``observations``
    and ``missions`` are the new episode's (see ``infos[i]['final_observation']``)."""

    observations: list[str]
    rewards: np.ndarray  # float32 [N]
    terminated: np.ndarray  # bool [N]
    truncated: np.ndarray  # bool [N]
    missions: list[str]
    infos: list[dict[str, Any]]
    valid_actions: list[list[str]] | None = None

    @property
    def dones(self) -> np.ndarray:
        return self.terminated | self.truncated

    @property
    def successes(self) -> np.ndarray:
        """Per env: an episode ended this step with success."""
        return np.array([bool(i.get("episode", {}).get("success", False)) for i in self.infos])


class ToyTextEnv:
    """A tiny deterministic ``TextEnv`` (walk along a line to a seed-chosen target) for tests
    and for measuring the runner's own overhead. Actions: "left", "right"; the episode ends at
    the target (success, reward 1) or after ``limit`` steps. Failure injection for tests of the
    runner: "__crash__" exits the process, "__hang__" sleeps 10 minutes, "__raise__" raises
    ValueError, "__bad__" raises a LondiError."""

    ACTIONS = ("left", "right")

    def __init__(self, limit: int = 6):
        self.limit = limit
        self.pos = self.target = self.t = 0

    def reset(self, seed: int | None = None) -> TextReset:
        self.target = int(np.random.default_rng(seed).integers(-3, 4))
        self.pos = self.t = 0
        return TextReset(f"at 0 target {self.target}", f"reach {self.target}", list(self.ACTIONS), {"success": False})

    def step(self, action: str) -> TextStep:
        if action == "__crash__":
            os._exit(3)
        if action == "__hang__":
            time.sleep(600)
        if action == "__raise__":
            raise ValueError("toy env: __raise__ action")
        if action not in self.ACTIONS:
            raise LondiError(f"toy env: unknown action {action!r}; known: left, right")
        self.pos += 1 if action == "right" else -1
        self.t += 1
        success = self.pos == self.target
        return TextStep(f"at {self.pos} target {self.target}", float(success), success,
                        not success and self.t >= self.limit, {"success": success, "pid": os.getpid()})

    def valid_actions(self) -> list[str]:
        return list(self.ACTIONS)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# One env plus its episode bookkeeping; used in this process and inside workers alike.


def _takes_with_valid(method: Callable[..., Any]) -> bool:
    try:
        return "with_valid" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


class _Slot:
    def __init__(self, env_fn: EnvFactory, seed: int, episode: int):
        self.env = env_fn()
        self.seed, self.episode = int(seed), int(episode)
        self._reset_kw = _takes_with_valid(self.env.reset)
        self._step_kw = _takes_with_valid(self.env.step)
        self.ep_return, self.ep_length, self.mission = 0.0, 0, ""

    def reset(self, with_valid: bool) -> dict[str, Any]:
        seed = episode_seed(self.seed, self.episode)
        r = self.env.reset(seed, with_valid=with_valid) if self._reset_kw else self.env.reset(seed)
        self.ep_return, self.ep_length, self.mission = 0.0, 0, r.mission
        valid = None
        if with_valid:  # envs without the keyword fill valid_actions themselves (BabyAI: always)
            valid = list(r.valid_actions) if (self._reset_kw or r.valid_actions) else list(self.env.valid_actions())
        info = dict(r.info)
        info["episode_index"], info["episode_seed"] = self.episode, seed
        return {"observation": r.observation, "mission": r.mission, "info": info, "valid": valid}

    def step(self, action: str, with_valid: bool) -> dict[str, Any]:
        s = self.env.step(action, with_valid=with_valid) if self._step_kw else self.env.step(action)
        info = dict(s.info)
        step_valid = info.pop("valid_actions", None)  # returned as BatchStep.valid_actions instead
        self.ep_return += float(s.reward)
        self.ep_length += 1
        out = {"observation": s.observation, "reward": float(s.reward), "terminated": bool(s.terminated),
               "truncated": bool(s.truncated), "mission": self.mission, "info": info, "valid": None}
        if s.terminated or s.truncated:
            info["final_observation"] = s.observation
            info["episode"] = {"return": self.ep_return, "length": self.ep_length,
                               "success": bool(info.get("success", False)), "seed": episode_seed(self.seed, self.episode),
                               "index": self.episode}
            self.episode += 1
            first = self.reset(with_valid)
            info["reset_info"] = first["info"]
            out.update(observation=first["observation"], mission=first["mission"], valid=first["valid"])
        elif with_valid:
            out["valid"] = list(step_valid) if step_valid is not None else list(self.env.valid_actions())
        return out

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001 - closing must not fail
            pass


def _run(slots: list[_Slot], cmd: tuple) -> list[Any]:
    kind = cmd[0]
    if kind == "reset":  # ("reset", with_valid, seeds or None = keep the current episode)
        if cmd[2] is not None:
            for s, seed in zip(slots, cmd[2], strict=True):
                s.seed, s.episode = int(seed), 0
        return [s.reset(cmd[1]) for s in slots]
    if kind == "step":
        return [s.step(a, cmd[2]) for s, a in zip(slots, cmd[1], strict=True)]
    if kind == "valid":
        return [list(s.env.valid_actions()) for s in slots]
    raise ValueError(f"unknown runner command {kind!r}")


# --------------------------------------------------------------------------------------------
# Worker processes


def _worker_main(conn: Connection, payload: bytes) -> None:
    """Worker: build its envs, then answer commands until 'close' or the parent goes away."""
    try:
        os.setsid()  # own process group: the parent can kill us together with our JVMs
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    slots: list[_Slot] = []
    try:
        env_fns, seeds, episodes = pickle.loads(payload)
        for fn, seed, ep in zip(env_fns, seeds, episodes, strict=True):
            slots.append(_Slot(fn, seed, ep))
        conn.send(("ok", os.getpid()))
        while True:
            try:
                cmd = conn.recv()
            except (EOFError, OSError):
                break
            if cmd[0] == "close":
                break
            try:
                conn.send(("ok", _run(slots, cmd)))
            except BaseException as err:  # noqa: BLE001 - report every env error to the parent
                conn.send(_error_reply(err))
    except BaseException as err:  # noqa: BLE001
        try:
            conn.send(_error_reply(err))
        except (OSError, pickle.PicklingError):
            pass
    finally:
        for s in slots:
            s.close()
        conn.close()


def _error_reply(err: BaseException) -> tuple:
    return ("error", isinstance(err, LondiError), f"{type(err).__name__}: {err}", traceback.format_exc())


class _Worker:
    def __init__(self, ctx: Any, fns: list[EnvFactory], seeds: list[int], episodes: list[int], timeout: float):
        self.parent, child = ctx.Pipe()
        payload = pickle.dumps((fns, seeds, episodes))
        self.proc = ctx.Process(target=_worker_main, args=(child, payload), daemon=True)
        self.proc.start()
        child.close()
        if not self.parent.poll(timeout):
            self.kill()
            raise EnvWorkerError(f"a runner worker did not build its envs within {timeout:.0f} s (start_timeout)")
        try:
            reply = self.parent.recv()
        except (EOFError, OSError) as err:
            self.kill()
            raise EnvWorkerError(f"a runner worker died while building its envs (exit code {self.proc.exitcode})") from err
        if reply[0] == "error":
            self.kill()
            _raise_remote(reply, "building an env")

    def kill(self) -> None:
        """Kill the worker and everything in its process group (its JVMs), and reap it."""
        pid = self.proc.pid
        if pid is not None:
            for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
        self.proc.join(timeout=10)
        self.parent.close()


def _raise_remote(reply: tuple, what: str) -> None:
    _, is_londi, msg, tb = reply
    if is_londi:
        raise EnvWorkerError(f"{msg}")
    raise EnvWorkerError(f"an env raised while {what} in a runner worker: {msg}\n--- worker traceback ---\n{tb}")


# --------------------------------------------------------------------------------------------


def _seed_list(seeds: int | Sequence[int], n: int) -> list[int]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        return [int(seeds) + i for i in range(n)]
    out = [int(s) for s in seeds]
    if len(out) != n:
        raise EnvWorkerError(f"{len(out)} seeds for {n} envs: give one seed per env, or one int")
    return out


class BatchedEnv:
    """N text envs of one kind stepped as a batch (see the module docstring)."""

    def __init__(
        self,
        env_fns: EnvFactory | Sequence[EnvFactory],
        num_envs: int | None = None,
        seeds: int | Sequence[int] = 0,
        backend: str = "inprocess",
        num_workers: int | None = None,
        step_timeout: float = 120.0,
        start_timeout: float = 300.0,
        max_restarts: int = 3,
    ):
        if backend not in BACKENDS:
            raise UnknownNameError("runner backend", str(backend), BACKENDS)
        if callable(env_fns):
            if num_envs is None:
                raise EnvWorkerError("give num_envs with a single env factory (or pass one factory per env)")
            fns = [env_fns] * int(num_envs)
        else:
            fns = list(env_fns)
            if num_envs is not None and num_envs != len(fns):
                raise EnvWorkerError(f"num_envs={num_envs} but {len(fns)} env factories were given")
        if not fns:
            raise EnvWorkerError("a BatchedEnv needs at least one env (num_envs >= 1)")
        for fn in fns:
            if not callable(fn):
                raise EnvWorkerError(f"env factories must be callables returning a TextEnv, got {fn!r}")
        self.num_envs = n = len(fns)
        self.seeds = seed_list = _seed_list(seeds, n)
        self.backend = backend
        self.step_timeout, self.start_timeout, self.max_restarts = float(step_timeout), float(start_timeout), int(max_restarts)
        self._fns = fns
        self._episodes = [0] * n
        self._slots: list[_Slot] = []
        self._workers: list[_Worker | None] = []
        self._closed = False
        self.restarts = 0
        if backend == "inprocess":
            self._slots = [_Slot(fn, s, 0) for fn, s in zip(fns, seed_list)]
            return
        w = n if num_workers is None else int(num_workers)
        if not 1 <= w <= n:
            raise EnvWorkerError(f"num_workers must be in 1..{n} (num_envs), got {num_workers}")
        try:
            pickle.dumps(fns)
        except Exception as err:  # noqa: BLE001
            raise EnvWorkerError(
                f"env factories must be picklable for the subprocess backend (a module-level function or "
                f"functools.partial of one, not a lambda/closure): {err}") from err
        bounds = np.linspace(0, n, w + 1).round().astype(int)
        self._groups = [list(range(bounds[k], bounds[k + 1])) for k in range(w)]
        self._ctx = mp.get_context("spawn")  # fork is unsafe with py4j gateways and JAX threads
        self._fail_streak = [0] * w
        self._workers = [None] * w
        try:
            for k in range(w):
                self._workers[k] = self._start(k)
        except BaseException:
            self.close()
            raise

    # -- workers ---------------------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        return len(self._workers) if self.backend == "subprocess" else 0

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes (subprocess backend)."""
        return [w.proc.pid for w in self._workers if w is not None]

    def _start(self, k: int) -> _Worker:
        g = self._groups[k]
        return _Worker(self._ctx, [self._fns[i] for i in g], [self.seeds[i] for i in g],
                       [self._episodes[i] for i in g], self.start_timeout)

    def _broadcast(self, make_cmd: Callable[[list[int]], tuple]) -> tuple[list[Any], dict[int, str]]:
        """Send a command to every worker, gather replies; returns per-env results and the
        workers that failed (dead or timed out) with the reason."""
        results: list[Any] = [None] * self.num_envs
        failed: dict[int, str] = {}
        pending: dict[Connection, int] = {}
        for k, w in enumerate(self._workers):
            try:
                w.parent.send(make_cmd(self._groups[k]))
                pending[w.parent] = k
            except (OSError, BrokenPipeError):
                failed[k] = "worker process is gone"
        deadline = time.monotonic() + self.step_timeout
        errors: list[tuple] = []
        while pending:
            ready = wait(list(pending), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                for conn, k in pending.items():
                    failed[k] = f"worker did not answer within {self.step_timeout:.0f} s (step_timeout)"
                break
            for conn in ready:
                k = pending.pop(conn)
                try:
                    reply = conn.recv()
                except (EOFError, OSError):
                    failed[k] = f"worker process died (exit code {self._workers[k].proc.exitcode})"
                    continue
                if reply[0] == "error":
                    errors.append(reply)
                    continue
                for i, r in zip(self._groups[k], reply[1]):
                    results[i] = r
        if errors:
            # a real env exception: the batch is inconsistent, so stop here rather than guess
            _raise_remote(errors[0], "stepping")
        return results, failed

    def _restart(self, k: int, reason: str, with_valid: bool, lost: bool = True) -> list[dict[str, Any]]:
        """Replace worker k; its envs start their next episode (``lost``: the current one is
        abandoned and counts as played). Returns their first results."""
        self._fail_streak[k] += 1
        if self._fail_streak[k] > self.max_restarts:
            raise EnvWorkerError(f"runner worker {k} failed {self._fail_streak[k]} times in a row (last: {reason}); giving up")
        self._workers[k].kill()
        self.restarts += 1
        for i in self._groups[k]:
            self._episodes[i] += int(lost)
        self._workers[k] = self._start(k)
        w = self._workers[k]
        w.parent.send(("reset", with_valid, None))
        # a fresh worker's first reset loads its simulators (e.g. a JVM's first task): as slow as a start
        if not w.parent.poll(self.start_timeout):
            raise EnvWorkerError(f"a restarted runner worker did not reset its envs within {self.start_timeout:.0f} s "
                                 "(start_timeout)")
        reply = w.parent.recv()
        if reply[0] == "error":
            _raise_remote(reply, "resetting")
        return reply[1]

    # -- API -----------------------------------------------------------------------------------------
    def reset(self, seeds: int | Sequence[int] | None = None, *, with_valid: bool = False) -> BatchReset:
        """Start all envs over from their first episode, with ``seeds`` (default: the
        constructor's), so the trajectories that follow are reproducible."""
        self._check_open()
        if seeds is not None:
            self.seeds = _seed_list(seeds, self.num_envs)
        self._episodes = [0] * self.num_envs
        cmd = ("reset", with_valid)
        if self.backend == "inprocess":
            res = _run(self._slots, (*cmd, self.seeds))
        else:
            res, failed = self._broadcast(lambda g: (*cmd, [self.seeds[i] for i in g]))
            for k, reason in failed.items():
                for i, r in zip(self._groups[k], self._restart(k, reason, with_valid, lost=False)):
                    r["info"].update(worker_restarted=True, restart_reason=reason)
                    res[i] = r
        for i, r in enumerate(res):
            self._episodes[i] = r["info"]["episode_index"]
        return BatchReset(
            observations=[r["observation"] for r in res], missions=[r["mission"] for r in res],
            infos=[r["info"] for r in res], valid_actions=[r["valid"] for r in res] if with_valid else None,
        )

    def step(self, actions: Sequence[str], *, with_valid: bool = False) -> BatchStep:
        """Apply one action per env; finished episodes auto-reset (see ``BatchStep``)."""
        self._check_open()
        actions = list(actions)
        if len(actions) != self.num_envs:
            raise EnvWorkerError(f"step() needs one action per env: got {len(actions)} for {self.num_envs} envs")
        if self.backend == "inprocess":
            res = [s.step(a, with_valid) for s, a in zip(self._slots, actions)]
        else:
            res, failed = self._broadcast(lambda g: ("step", [actions[i] for i in g], with_valid))
            for k in range(len(self._workers)):
                if k not in failed:
                    self._fail_streak[k] = 0
            for k, reason in failed.items():
                for i, first in zip(self._groups[k], self._restart(k, reason, with_valid)):
                    res[i] = self._lost_result(first, reason)
        for i, r in enumerate(res):
            ep = r["info"].get("episode")
            if ep is not None:
                self._episodes[i] = ep["index"] + 1
        return BatchStep(
            observations=[r["observation"] for r in res],
            rewards=np.array([r["reward"] for r in res], dtype=np.float32),
            terminated=np.array([r["terminated"] for r in res], dtype=bool),
            truncated=np.array([r["truncated"] for r in res], dtype=bool),
            missions=[r["mission"] for r in res],
            infos=[r["info"] for r in res],
            valid_actions=[r["valid"] for r in res] if with_valid else None,
        )

    def _lost_result(self, first: dict[str, Any], reason: str) -> dict[str, Any]:
        info = {"success": False, "episode_lost": True, "worker_restarted": True, "restart_reason": reason,
                "final_observation": "", "reset_info": first["info"],
                "episode": {"return": float("nan"), "length": -1, "success": False, "seed": None,
                            "index": first["info"]["episode_index"] - 1}}
        return {"observation": first["observation"], "reward": 0.0, "terminated": False, "truncated": True,
                "mission": first["mission"], "info": info, "valid": first["valid"]}

    def valid_actions(self) -> list[list[str]]:
        """Valid action strings of every env now."""
        self._check_open()
        if self.backend == "inprocess":
            return _run(self._slots, ("valid",))
        res, failed = self._broadcast(lambda g: ("valid",))
        if failed:
            raise EnvWorkerError(f"runner worker(s) {sorted(failed)} failed while listing valid actions: {failed}; call step() or reset() to recover")
        return res

    def _check_open(self) -> None:
        if self._closed:
            raise EnvWorkerError("this BatchedEnv is closed")

    def close(self) -> None:
        """Close every env and stop the workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for s in self._slots:
            s.close()
        for w in self._workers:
            if w is None:
                continue
            try:
                w.parent.send(("close",))
            except (OSError, BrokenPipeError):
                pass
        for w in self._workers:
            if w is None:
                continue
            w.proc.join(timeout=15)
            w.kill()  # reaps it, and kills leftovers of its process group

    def __enter__(self) -> BatchedEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def make_batched(env_fn: EnvFactory, num_envs: int, seeds: int | Sequence[int] = 0, **kw: Any) -> BatchedEnv:
    """Shorthand for ``BatchedEnv(env_fn, num_envs, seeds, **kw)``."""
    return BatchedEnv(env_fn, num_envs, seeds, **kw)


__all__ = ["BACKENDS", "BatchReset", "BatchStep", "BatchedEnv", "EnvWorkerError", "ToyTextEnv", "episode_seed", "make_batched"]
