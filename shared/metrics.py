"""Evaluation metrics, framework-free. Each function states its formula.

(This module grows with the evaluation issue; for now it holds what the RL stage reports.)
"""

from __future__ import annotations

import numpy as np


def paired_bootstrap(a, b, samples: int = 2000, confidence: float = 0.95, seed: int = 0):
    """Mean of b - a over paired items, with a percentile-bootstrap interval.

    Resample the n pairs with replacement `samples` times; the interval is the
    ((1 - c) / 2, (1 + c) / 2) quantiles of the resampled mean differences. Pairs (the same
    prompt scored under both models) cancel per-prompt difficulty, which independent samples
    would not. Returns (mean difference, low, high).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_bootstrap needs two 1-D arrays of the same, non-zero length")
    diff = b - a
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(diff.mean()), float(low), float(high)
