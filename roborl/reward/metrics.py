"""Binary classification metrics computed by hand (numpy only; no scikit-learn dependency)."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["binary_metrics", "roc_auc"]


def roc_auc(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties
    counting one half (the Mann-Whitney U statistic / (n_pos * n_neg)). None without both classes.

    probs: float [N]; labels: bool [N]. Ranks with ties averaged: U = sum(ranks of positives) - P(P+1)/2.
    """
    y = np.asarray(labels, dtype=bool).reshape(-1)
    s = np.asarray(probs, dtype=np.float64).reshape(-1)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # Average rank (1-based) over each run of equal scores.
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def binary_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Metrics of ``probs > threshold`` against ``labels`` (both [N]).

    Returns accuracy, precision, recall (true positive rate), false_positive_rate, roc_auc and the
    counts (n, positives, negatives, tp, fp, tn, fn). A ratio whose denominator is 0 is None.
    """
    y = np.asarray(labels, dtype=bool).reshape(-1)
    pred = np.asarray(probs, dtype=np.float64).reshape(-1) > threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    tn = int(np.sum(~pred & ~y))
    fn = int(np.sum(~pred & y))

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    return {
        "n": int(y.size), "positives": int(y.sum()), "negatives": int((~y).sum()), "threshold": float(threshold),
        "accuracy": ratio(tp + tn, y.size), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
        "false_positive_rate": ratio(fp, fp + tn), "roc_auc": roc_auc(probs, y),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }
