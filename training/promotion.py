"""Champion / challenger: is a newly trained adapter better than the one in production? (pure)

A challenger replaces the champion only if all of these hold:

1. evaluate's own verdict on it is ``promote`` (it beats the base model: training/evaluate.py);
2. on the held-out test rows both were scored on (paired by row id, gold labels equal), the
   challenger's metric minus the champion's reaches ``margin`` and the paired bootstrap
   interval's lower bound is above zero;
3. on the reviewed production sample, when there is one, it is not worse: the paired
   interval of challenger - champion accuracy (reviewers' labels as the truth, the review
   sample's weights undone) has its lower bound above ``-production_margin`` (a
   non-inferiority test: a small sample cannot hide a large loss).

With no champion yet, rule 1 alone decides (the first adapter that passes evaluate becomes
champion). Every rule applied is reported as a reason, pass or fail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from training.intervals import bootstrap_interval, difference, encode_labels, interval_dict, side_statistics


class HeldOutAnswers(NamedTuple):
    """One adapter's answers on the held-out test rows (eval_detail.json: row_ids, row_labels,
    sides.adapter.predicted), aligned by position."""

    ids: Sequence[str]
    labels: Sequence[str]
    predicted: Sequence[str | None]


class ProductionAnswers(NamedTuple):
    """Reviewed production rows: the reviewer's label and both models' answers, aligned;
    ``weights`` undo the review sample's stratification (None = every row counts once)."""

    labels: Sequence[str]
    champion: Sequence[str | None]
    challenger: Sequence[str | None]
    weights: Sequence[float] | None = None


def pair_test_rows(
    challenger: HeldOutAnswers, champion: HeldOutAnswers
) -> tuple[list[str], list[str | None], list[str | None], dict[str, int]]:
    """The rows both adapters answered, in the challenger's order.

    A row pairs when its id is in both and its gold label is the same on both sides (a
    relabelled test row says nothing about which model is right).

    Returns:
        (gold labels, challenger answers, champion answers, counts: paired, only_challenger,
        only_champion, label_changed).
    """
    for name, side in (("challenger", challenger), ("champion", champion)):
        if not len(side.ids) == len(side.labels) == len(side.predicted):
            raise ValueError(f"{name}: ids, labels and predictions differ in length")
    theirs = {i: (g, p) for i, g, p in zip(champion.ids, champion.labels, champion.predicted, strict=True)}
    gold: list[str] = []
    ours: list[str | None] = []
    other: list[str | None] = []
    changed = 0
    for i, g, p in zip(challenger.ids, challenger.labels, challenger.predicted, strict=True):
        if i not in theirs:
            continue
        g2, p2 = theirs[i]
        if g2 != g:
            changed += 1
            continue
        gold.append(g)
        ours.append(p)
        other.append(p2)
    shared = set(challenger.ids) & set(champion.ids)
    counts = {
        "paired": len(gold),
        "only_challenger": len(set(challenger.ids) - shared),
        "only_champion": len(set(champion.ids) - shared),
        "label_changed": changed,
    }
    return gold, ours, other, counts


def weighted_accuracy_statistic(correct: np.ndarray, weights: np.ndarray):
    """Weighted accuracy of a resample (sum of weights of correct rows / sum of weights)."""
    correct, weights = np.asarray(correct, dtype=float), np.asarray(weights, dtype=float)
    return lambda idx: (correct[idx] * weights[idx]).sum(axis=-1) / weights[idx].sum(axis=-1)


def _test_comparison(
    challenger: HeldOutAnswers,
    champion: HeldOutAnswers,
    *,
    metric: str,
    margin: float,
    level: str,
    interval: dict[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    gold, ours, other, counts = pair_test_rows(challenger, champion)
    reasons = []
    if counts["only_challenger"] or counts["only_champion"] or counts["label_changed"]:
        reasons.append(
            f"info: {counts['paired']} test rows in common; {counts['only_challenger']} only in the "
            f"challenger's sample, {counts['only_champion']} only in the champion's, "
            f"{counts['label_changed']} with a changed gold label (left out)"
        )
    if not gold:
        reasons.append("fail: no test rows in common with the champion's evaluation; re-evaluate both")
        return {"rows": 0, **counts, "passed": False}, reasons
    label_set = sorted(set(gold))
    stats = {
        "challenger": side_statistics(gold, ours, label_set)[metric],
        "champion": side_statistics(gold, other, label_set)[metric],
    }
    n = len(gold)
    everything = np.arange(n)
    diff = difference(stats["challenger"], stats["champion"])
    low, high = bootstrap_interval(diff, n, **interval)
    value = float(diff(everything))
    passed = value >= margin and low > 0
    reasons.append(
        f"{'pass' if passed else 'fail'}: challenger - champion test {metric} {value:+.3f} "
        f"({level} paired interval [{low:+.3f}, {high:+.3f}], {n} rows); needs >= {margin:+.3f} "
        "with the lower bound > 0"
    )
    entry = {
        "rows": n,
        **counts,
        "challenger": round(float(stats["challenger"](everything)), 6),
        "champion": round(float(stats["champion"](everything)), 6),
        "difference": interval_dict(value, low, high),
        "passed": passed,
    }
    return entry, reasons


def _production_comparison(
    production: ProductionAnswers, *, production_margin: float, level: str, interval: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    n = len(production.labels)
    if not n == len(production.champion) == len(production.challenger):
        raise ValueError("production sample: labels and both models' answers differ in length")
    if n == 0:
        return {"rows": 0, "passed": False}, [
            "fail: the reviewed production sample has no rows; remove it or review some predictions"
        ]
    label_set = sorted(set(production.labels))
    gold = encode_labels(production.labels, label_set)
    weights = np.ones(n) if production.weights is None else np.asarray(production.weights, dtype=float)
    if weights.shape != (n,) or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError("production sample: weights must be finite and > 0, one a row")
    stats = {
        side: weighted_accuracy_statistic(gold == encode_labels(answers, label_set), weights)
        for side, answers in (("challenger", production.challenger), ("champion", production.champion))
    }
    everything = np.arange(n)
    diff = difference(stats["challenger"], stats["champion"])
    low, high = bootstrap_interval(diff, n, **interval)
    value = float(diff(everything))
    passed = low > -production_margin
    weighted = "weighted " if production.weights is not None else ""
    reason = (
        f"{'pass' if passed else 'fail'}: challenger - champion {weighted}accuracy on {n} reviewed "
        f"production rows {value:+.3f} ({level} paired interval [{low:+.3f}, {high:+.3f}]); the lower "
        f"bound must stay above {-production_margin:+.3f}"
    )
    entry = {
        "rows": n,
        "weighted": production.weights is not None,
        "challenger": round(float(stats["challenger"](everything)), 6),
        "champion": round(float(stats["champion"](everything)), 6),
        "difference": interval_dict(value, low, high),
        "passed": passed,
    }
    return entry, [reason]


def champion_verdict(
    challenger: HeldOutAnswers,
    champion: HeldOutAnswers | None,
    *,
    evaluate_verdict: Mapping[str, Any],
    production: ProductionAnswers | None = None,
    metric: str = "accuracy",
    margin: float,
    production_margin: float,
    samples: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """Decide whether ``challenger`` replaces ``champion`` (the module docstring's rules).

    Args:
        challenger: the new adapter's answers on the test rows.
        champion: the current champion's answers, or None when there is no champion yet.
        evaluate_verdict: eval_detail.json's ``verdict`` for the challenger (``promote`` bool).
        production: reviewed production rows with both models' answers, if any.
        metric: ``accuracy`` or ``macro_f1`` for the test comparison (production: accuracy).
        margin: the test difference the challenger must reach.
        production_margin: how far below zero the production interval's lower bound may go.
        samples, confidence, seed: the bootstrap (the same as evaluate's intervals).

    Returns:
        ``{"verdict": "promote" | "reject", "promote", "first_champion", "metric", "test",
        "production", "reasons"}``; ``test``/``production`` hold rows, both scores and the
        paired difference with its interval (None where not compared).

    Raises:
        ValueError: unknown metric, or misaligned inputs.
    """
    if metric not in ("accuracy", "macro_f1"):
        raise ValueError(f"metric={metric!r} must be 'accuracy' or 'macro_f1'")
    level = f"{round(confidence * 100)}%"
    interval = {"samples": samples, "confidence": confidence, "seed": seed}
    passed_evaluate = bool(evaluate_verdict.get("promote"))
    reasons = [
        f"{'pass' if passed_evaluate else 'fail'}: evaluate's verdict on the challenger is "
        f"{evaluate_verdict.get('verdict', 'missing')!r} (it must beat the base model)"
    ]
    result: dict[str, Any] = {"metric": metric, "first_champion": champion is None, "test": None}
    result["production"] = None
    ok = passed_evaluate
    if champion is None:
        reasons.append("info: no champion yet: evaluate's verdict alone decides")
        if production is not None:
            reasons.append("info: no champion to compare with on the production sample")
    else:
        result["test"], more = _test_comparison(
            challenger, champion, metric=metric, margin=margin, level=level, interval=interval
        )
        reasons += more
        ok &= result["test"]["passed"]
        if production is None:
            reasons.append("info: no reviewed production sample: test rows alone decide")
        else:
            result["production"], more = _production_comparison(
                production, production_margin=production_margin, level=level, interval=interval
            )
            reasons += more
            ok &= result["production"]["passed"]
    return {"verdict": "promote" if ok else "reject", "promote": bool(ok), **result, "reasons": reasons}
