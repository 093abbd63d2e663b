"""Value quality as the paper reports it: MAE and Kendall's tau-b of the predicted value
against the normalised returns, on held-out episodes."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kendall_tau_b", "value_quality"]


def _ties(sorted_keys: np.ndarray) -> int:
    """Pairs tied on the key, given the keys in sorted order (rows for 2-D keys)."""
    if len(sorted_keys) < 2:
        return 0
    change = np.any(sorted_keys[1:] != sorted_keys[:-1], axis=-1) if sorted_keys.ndim > 1 \
        else sorted_keys[1:] != sorted_keys[:-1]
    bounds = np.flatnonzero(np.concatenate([[True], change, [True]]))
    runs = np.diff(bounds)
    return int(np.sum(runs * (runs - 1) // 2))


def _discordant(y_ranks: np.ndarray) -> int:
    """Pairs i < j with y_ranks[i] > y_ranks[j] (a Fenwick tree over dense ranks)."""
    size = int(y_ranks.max()) + 1 if len(y_ranks) else 0
    tree = np.zeros(size + 1, np.int64)
    count = 0
    for seen, r in enumerate(y_ranks):
        # elements seen so far with rank <= r
        i, le = int(r) + 1, 0
        while i > 0:
            le += tree[i]
            i -= i & -i
        count += seen - le
        i = int(r) + 1
        while i <= size:
            tree[i] += 1
            i += i & -i
    return count


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of two equal-length 1-D arrays, O(n log n) (Knight's method): ties are
    counted per variable and jointly, so it equals scipy.stats.kendalltau's default. NaN when
    either variable is constant or there are fewer than 2 values."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    n = len(x)
    if n < 2:
        return float("nan")
    order = np.lexsort((y, x))  # by x, then y
    xs, ys = x[order], y[order]
    n0 = n * (n - 1) // 2
    n1 = _ties(xs)
    n3 = _ties(np.stack([xs, ys], 1))
    n2 = _ties(np.sort(y))
    # Sorted by (x, y), a pair is discordant exactly when its y values are inverted; pairs tied
    # in x are ordered by y, so they are never counted.
    swaps = _discordant(np.unique(ys, return_inverse=True)[1].ravel())
    concordant_minus_discordant = n0 - n1 - n2 + n3 - 2 * swaps
    denom = math.sqrt(float(n0 - n1) * float(n0 - n2))
    return float("nan") if denom == 0 else concordant_minus_discordant / denom


def value_quality(predicted: np.ndarray, returns: np.ndarray) -> dict[str, float]:
    """``mae`` and ``kendall_tau`` of ``predicted`` values against ``returns``, and ``n``."""
    p = np.asarray(predicted, np.float64).ravel()
    r = np.asarray(returns, np.float64).ravel()
    return {"mae": float(np.mean(np.abs(p - r))) if len(p) else float("nan"),
            "kendall_tau": kendall_tau_b(p, r), "n": len(p)}
