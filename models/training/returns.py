"""Rewards and returns of recorded episodes, as RAMP defines them.

Per policy step the reward is -1; an episode's last step instead earns 0 on success and
``-c_fail_steps`` on failure. Returns are (discounted) reward-to-go, normalised per task by the
largest return magnitude among that task's episodes, so they lie in [-1, 0] like the world
model's value head. Rewards are normalised with the same scale, which keeps the n-step
advantages (:mod:`models.training.advantages`) in the value's units.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["episode_rewards", "returns_to_go", "task_scales"]


def episode_rewards(n_steps: int, outcome: str, c_fail_steps: float) -> np.ndarray:
    """float64 [n_steps]: -1 per step; the last step 0 (``success``) or ``-c_fail_steps``
    (``failure``). Raises ValueError for another outcome (aborted episodes have no reward)."""
    if outcome not in ("success", "failure"):
        raise ValueError(f"episode outcome {outcome!r} has no reward (success or failure)")
    r = np.full(n_steps, -1.0)
    if n_steps:
        r[-1] = 0.0 if outcome == "success" else -float(c_fail_steps)
    return r


def returns_to_go(rewards: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """G_t = sum_k gamma^k r_{t+k} to the episode's end, float64 [n]."""
    out = np.empty(len(rewards), dtype=np.float64)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = rewards[t] + gamma * acc
        out[t] = acc
    return out


def task_scales(first_returns: Iterable[tuple[str, float]],
                floor: float = 1.0) -> Mapping[str, float]:
    """Per task, the largest |G_0| over its episodes (at least ``floor``): dividing by it maps
    every return of the task into [-1, 0]."""
    scales: dict[str, float] = {}
    for task, g0 in first_returns:
        scales[task] = max(scales.get(task, floor), abs(float(g0)))
    return scales
