"""n-step advantages and the advantage indicator I.

A_t = sum_{k<n} gamma^k r_{t+k} + gamma^n v_{t+n} - v_t, with normalised rewards and the world
model's value v; past the episode's end the sum stops and the bootstrap is 0 (terminal).
I = 1[A > eps], where eps is the quantile of A over the eligible steps (policy steps outside
takeover transition windows) that leaves ``positive_share`` of them positive; human takeover
steps are forced to I = 1 (a person's correction is what the policy should imitate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IndicatorResult", "advantage_indicator", "n_step_advantages"]


def n_step_advantages(rewards: np.ndarray, values: np.ndarray, gamma: float,
                      n: int) -> np.ndarray:
    """A_t of one episode, float64 [T]; ``rewards`` and ``values`` [T] in the same units."""
    r = np.asarray(rewards, np.float64)
    v = np.asarray(values, np.float64)
    t_len = len(r)
    if v.shape != r.shape:
        raise ValueError(f"{len(v)} values for {t_len} rewards")
    out = np.empty(t_len)
    powers = gamma ** np.arange(n + 1)
    for t in range(t_len):
        m = min(n, t_len - t)
        boot = powers[n] * v[t + n] if t + n < t_len else 0.0
        out[t] = float(np.dot(powers[:m], r[t : t + m])) + boot - v[t]
    return out


@dataclass(frozen=True)
class IndicatorResult:
    """``indicator``: int8 [N] (1 = advantageous); ``eps``: the threshold; ``positive_share``:
    the share of eligible steps with I = 1 (human steps excluded)."""

    indicator: np.ndarray
    eps: float
    positive_share: float


def advantage_indicator(advantages: np.ndarray, *, human: np.ndarray, eligible: np.ndarray,
                        positive_share: float) -> IndicatorResult:
    """I over all steps. ``eligible`` (bool [N]) marks the steps the quantile is taken over
    (not in a transition window); human steps are left out of it and forced to 1. Ineligible
    non-human steps get 0 (they are dropped from training anyway)."""
    a = np.asarray(advantages, np.float64)
    human = np.asarray(human, bool)
    pool = np.asarray(eligible, bool) & ~human
    if not 0.0 < positive_share < 1.0:
        raise ValueError("positive_share must be in (0, 1)")
    eps = float(np.quantile(a[pool], 1.0 - positive_share)) if pool.any() else 0.0
    ind = ((a > eps) & pool) | human
    share = float(ind[pool].mean()) if pool.any() else float("nan")
    return IndicatorResult(ind.astype(np.int8), eps, share)
