"""Exact progressive-validation metrics over (score, label) pairs collected before learning."""

from __future__ import annotations

import math
from collections.abc import Sequence


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Exact ROC AUC (ties count half): the probability a random positive outscores a random negative."""
    positives = sum(labels)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    index = 0
    while index < len(order):
        tie_end = index
        while tie_end + 1 < len(order) and scores[order[tie_end + 1]] == scores[order[index]]:
            tie_end += 1
        average_rank = (index + tie_end) / 2 + 1
        rank_sum += average_rank * sum(labels[order[k]] for k in range(index, tie_end + 1))
        index = tie_end + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def log_loss(scores: Sequence[float], labels: Sequence[bool]) -> float:
    eps = 1e-7
    total = sum(-math.log(max(eps, s if y else 1 - s)) for s, y in zip(scores, labels, strict=True))
    return total / max(1, len(scores))
