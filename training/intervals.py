"""Percentile-bootstrap intervals over row indices (pure: numpy and scipy only).

Shared by the evaluation (training/evaluate.py) and the champion/challenger rule
(training/promotion.py), which must not pay for torch's import to compare two columns of
per-row correctness. A paired difference resamples the same rows on both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import bootstrap

IndexStatistic = Callable[[np.ndarray], np.ndarray]  # row indices (..., n) -> value (...)


def bootstrap_interval(
    statistic: IndexStatistic, n: int, *, samples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` over ``n`` rows (scipy.stats.bootstrap).

    The rows themselves are resampled as indices and ``statistic`` reads whatever arrays it
    needs through them, so a statistic comparing two sides (a paired difference) sees the
    same resampled rows on both sides, and every call with the same ``seed`` and ``n`` draws
    the same resamples.
    """
    if n < 1:
        raise ValueError("no rows to resample")
    result = bootstrap(
        (np.arange(n),),
        lambda idx, axis=-1: statistic(idx),
        vectorized=True,
        n_resamples=samples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def accuracy_statistic(correct: np.ndarray) -> IndexStatistic:
    """Accuracy of a resample, from the per-row 0/1 correctness vector."""
    correct = np.asarray(correct, dtype=float)
    return lambda idx: correct[idx].mean(axis=-1)


def macro_f1_statistic(gold: np.ndarray, pred: np.ndarray, num_classes: int) -> IndexStatistic:
    """Macro-F1 of a resample over the classes present in its gold labels (as
    :func:`classification_metrics`); ``pred`` is -1 where the answer named no label."""
    gold, pred = np.asarray(gold), np.asarray(pred)

    def stat(idx: np.ndarray) -> np.ndarray:
        g, p = gold[idx], pred[idx]
        total = np.zeros(idx.shape[:-1])
        present = np.zeros(idx.shape[:-1])
        for c in range(num_classes):
            is_true, is_pred = g == c, p == c
            support = is_true.sum(axis=-1)
            denom = support + is_pred.sum(axis=-1)
            tp = (is_true & is_pred).sum(axis=-1)
            f1 = np.divide(2.0 * tp, denom, out=np.zeros(denom.shape), where=denom > 0)
            total += np.where(support > 0, f1, 0.0)
            present += support > 0
        return total / np.maximum(present, 1)

    return stat


def difference(a: IndexStatistic, b: IndexStatistic) -> IndexStatistic:
    """``a - b`` on the same resampled rows: the paired difference."""
    return lambda idx: a(idx) - b(idx)


def encode_labels(values: Sequence[str | None], label_set: Sequence[str]) -> np.ndarray:
    """Labels as class indices into ``label_set``; -1 for None or unknown labels."""
    index = {label: i for i, label in enumerate(label_set)}
    return np.array([index.get(v, -1) if v is not None else -1 for v in values], dtype=np.int64)


def interval_dict(value: float, low: float, high: float) -> dict[str, float]:
    """``{"value", "low", "high"}`` rounded for the JSON outputs."""
    return {"value": round(value, 6), "low": round(low, 6), "high": round(high, 6)}


def side_statistics(
    gold: Sequence[str], pred: Sequence[str | None], label_set: Sequence[str]
) -> dict[str, IndexStatistic]:
    """The resampling statistics of one side: accuracy and macro-F1."""
    g, p = encode_labels(gold, label_set), encode_labels(pred, label_set)
    return {"accuracy": accuracy_statistic(g == p), "macro_f1": macro_f1_statistic(g, p, len(label_set))}
