"""Exact optimal switching by value iteration on the (state, budget) space (numpy, float64).

Model: ``P [2, S, S]`` sub-stochastic transitions under g = 0 / 1 (missing mass = termination),
``R [2, S]`` expected immediate env reward. With per-call cost ``c``, discount ``gamma`` and an
optional per-episode budget ``n`` (b in 0..n, b' = b - g, g = 1 inadmissible at b = 0):

    Q(s, b, g) = R[g, s] - c g + gamma sum_s' P[g, s, s'] V(s', b - g),   V = max_{g in G(b)} Q.

Without a budget the b axis has size 1 and b never changes. ``policy[s, b] = 1{Q1 > Q0}``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from londi_jax.utils.errors import LondiError


class ExactError(LondiError):
    """Bad inputs to the exact solver."""


@dataclasses.dataclass
class ExactSolution:
    """Optimal values ``V [S, B]``, ``Q [S, B, 2]`` (Q1 = -inf where inadmissible), greedy policy."""

    V: np.ndarray
    Q: np.ndarray
    policy: np.ndarray
    iterations: int


def _check(P: np.ndarray, R: np.ndarray, gamma: float) -> None:
    if P.ndim != 3 or P.shape[0] != 2 or P.shape[1] != P.shape[2] or R.shape != P.shape[:2]:
        raise ExactError(f"expected P [2, S, S] and R [2, S], got {P.shape} and {R.shape}")
    if not 0.0 <= gamma <= 1.0:  # also refuses nan
        raise ExactError(f"gamma must be in [0, 1], got {gamma}")


def _shift(V: np.ndarray, budgeted: bool) -> np.ndarray:
    """V(., b - 1) aligned with b (b = 0 column is unused: g = 1 is masked there)."""
    if not budgeted:
        return V
    return np.concatenate([np.zeros_like(V[:, :1]), V[:, :-1]], axis=1)


def q_from_v(P, R, V, c, gamma, budgeted):
    """One Bellman backup: ``Q [S, B, 2]`` from ``V [S, B]`` (inadmissible = -inf)."""
    q0 = R[0][:, None] + gamma * P[0] @ V
    q1 = R[1][:, None] - c + gamma * P[1] @ _shift(V, budgeted)
    if budgeted:
        q1[:, 0] = -np.inf
    return np.stack([q0, q1], axis=-1)


def solve(P: np.ndarray, R: np.ndarray, c: float, gamma: float, budget: int | None = None,
          tol: float = 1e-12, max_iter: int = 100_000) -> ExactSolution:
    """Value iteration to ``tol`` (sup-norm change); ``budget=None`` is plain LONDI, ``budget=0``
    LONDI-B with no call left (the optimum is then QUICK everywhere).

    Raises ``ExactError`` for a non-finite ``c``, ``gamma`` outside [0, 1], a budget that is not
    an int >= 0, ``tol <= 0`` or ``max_iter < 1`` (all before iterating), and when value
    iteration has not converged after ``max_iter`` sweeps.
    """
    P, R = np.asarray(P, np.float64), np.asarray(R, np.float64)
    _check(P, R, gamma)
    if not np.isfinite(c):
        raise ExactError(f"c must be a finite number, got {c}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, np.integer))
                               or budget < 0):
        raise ExactError(f"budget must be an int >= 0 (or None for no budget), got {budget!r}")
    if not tol > 0 or int(max_iter) < 1:
        raise ExactError(f"need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
    budgeted = budget is not None
    B = budget + 1 if budgeted else 1
    V = np.zeros((P.shape[1], B))
    for it in range(1, max_iter + 1):
        Q = q_from_v(P, R, V, c, gamma, budgeted)
        V_new = Q.max(axis=-1)
        if np.max(np.abs(V_new - V)) < tol:
            V = V_new
            break
        V = V_new
    else:
        raise ExactError(f"value iteration did not converge in {max_iter} iterations")
    Q = q_from_v(P, R, V, c, gamma, budgeted)
    return ExactSolution(V=V, Q=Q, policy=(Q[..., 1] > Q[..., 0]).astype(np.int32), iterations=it)


def _augmented(P, policy, budgeted):
    """Transition matrix over (s, b) flattened, under a deterministic switch table."""
    S, B = policy.shape
    M = np.zeros((S * B, S * B))
    for s in range(S):
        for b in range(B):
            g = int(policy[s, b])
            if budgeted and g == 1 and b == 0:
                raise ExactError(f"policy calls DEEPTHINK at state {s} with zero budget")
            nb = b - g if budgeted else b
            M[s * B + b, np.arange(S) * B + nb] += P[g, s]
    return M


def evaluate_policy(P: np.ndarray, R: np.ndarray, policy: np.ndarray, c: float, gamma: float,
                    budgeted: bool) -> dict[str, np.ndarray]:
    """Exact value of a switch table ``policy [S, B]`` by linear solves.

    Returns ``value [S, B]`` (discounted switch return), ``env_value`` (discounted env reward),
    ``disc_calls`` (discounted DEEPTHINK calls) and ``calls`` (expected undiscounted calls per
    episode; needs every episode to end with probability one).
    """
    P, R = np.asarray(P, np.float64), np.asarray(R, np.float64)
    S, B = policy.shape
    M = _augmented(P, policy, budgeted)
    g = policy.reshape(-1).astype(np.float64)
    r = R[policy.reshape(-1), np.repeat(np.arange(S), B)]
    eye = np.eye(S * B)
    A = eye - gamma * M
    env_value = np.linalg.solve(A, r)
    disc_calls = np.linalg.solve(A, g)
    try:
        calls = np.linalg.solve(eye - M, g)
    except np.linalg.LinAlgError as err:
        raise ExactError("the policy can loop forever; undiscounted calls are unbounded") from err
    shape = (S, B)
    return {"value": (env_value - c * disc_calls).reshape(shape), "env_value": env_value.reshape(shape),
            "disc_calls": disc_calls.reshape(shape), "calls": calls.reshape(shape)}


def reachable(P: np.ndarray, start_probs: np.ndarray, budget: int | None) -> np.ndarray:
    """Boolean ``[S, B]``: (s, b) pairs reachable from the start under *some* switch sequence."""
    P = np.asarray(P)
    S = P.shape[1]
    B = budget + 1 if budget is not None else 1
    seen = np.zeros((S, B), bool)
    frontier = [(s, B - 1) for s in np.flatnonzero(np.asarray(start_probs) > 0)]
    for s, b in frontier:
        seen[s, b] = True
    while frontier:
        s, b = frontier.pop()
        for g in (0, 1):
            if budget is not None and g == 1 and b == 0:
                continue
            nb = b - g if budget is not None else b
            for s2 in np.flatnonzero(P[g, s] > 0):
                if not seen[s2, nb]:
                    seen[s2, nb] = True
                    frontier.append((s2, nb))
    return seen


def start_value(table: np.ndarray, start_probs: np.ndarray) -> float:
    """Expected value over the start distribution at full budget (last b column)."""
    return float(np.asarray(start_probs) @ table[:, -1])
