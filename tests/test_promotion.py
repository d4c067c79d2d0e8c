"""The champion/challenger rule (training/promotion.py) on planted cases: pure, no registry."""

from __future__ import annotations

import numpy as np
import pytest

from training.promotion import (
    HeldOutAnswers,
    ProductionAnswers,
    champion_verdict,
    pair_test_rows,
    weighted_accuracy_statistic,
)

LABELS = ("a", "b", "c")
PROMOTE = {"verdict": "promote", "promote": True}
REJECT = {"verdict": "reject", "promote": False}
RULE = {"margin": 0.01, "production_margin": 0.05, "samples": 500, "confidence": 0.95, "seed": 0}


def _gold(n: int) -> list[str]:
    return [LABELS[i % len(LABELS)] for i in range(n)]


def _answers(gold: list[str], right: np.ndarray) -> list[str]:
    """Right where ``right`` is True, otherwise the next label (a wrong but valid answer)."""
    return [
        g if ok else LABELS[(LABELS.index(g) + 1) % len(LABELS)] for g, ok in zip(gold, right, strict=True)
    ]


def _test(gold: list[str], right: np.ndarray) -> HeldOutAnswers:
    return HeldOutAnswers([f"t{i}" for i in range(len(gold))], gold, _answers(gold, right))


def _right(n: int, first: int) -> np.ndarray:
    return np.arange(n) < first


def test_first_adapter_becomes_champion_only_with_evaluates_promote_verdict() -> None:
    gold = _gold(30)
    challenger = _test(gold, _right(30, 20))
    first = champion_verdict(challenger, None, evaluate_verdict=PROMOTE, **RULE)
    assert first["promote"] and first["first_champion"] and first["test"] is None
    refused = champion_verdict(challenger, None, evaluate_verdict=REJECT, **RULE)
    assert not refused["promote"] and refused["reasons"][0].startswith("fail: evaluate's verdict")


def test_a_clearly_better_challenger_is_promoted_with_both_scores() -> None:
    n = 300
    gold = _gold(n)
    verdict = champion_verdict(
        _test(gold, _right(n, 270)), _test(gold, _right(n, 210)), evaluate_verdict=PROMOTE, **RULE
    )
    test = verdict["test"]
    assert verdict["verdict"] == "promote" and test["rows"] == n
    assert test["challenger"] == pytest.approx(270 / n, abs=1e-6) and test["champion"] == pytest.approx(
        210 / n, abs=1e-6
    )
    assert test["difference"]["value"] == pytest.approx(60 / n, abs=1e-6)
    assert 0 < test["difference"]["low"] < test["difference"]["value"] < test["difference"]["high"]


def test_equal_or_failing_challengers_are_rejected() -> None:
    n = 300
    gold = _gold(n)
    champion = _test(gold, _right(n, 210))
    same = champion_verdict(_test(gold, _right(n, 210)), champion, evaluate_verdict=PROMOTE, **RULE)
    assert not same["promote"] and same["test"]["difference"]["value"] == 0
    # better on test, but evaluate's own verdict (vs the base model) failed
    failed = champion_verdict(_test(gold, _right(n, 280)), champion, evaluate_verdict=REJECT, **RULE)
    assert not failed["promote"] and failed["test"]["passed"]


def test_a_gain_above_the_margin_whose_interval_crosses_zero_is_rejected() -> None:
    n = 300
    gold = _gold(n)
    champion_right = _right(n, 200)
    challenger_right = champion_right.copy()
    challenger_right[200:210] = True  # 10 rows better ...
    challenger_right[:6] = False  # ... 6 rows worse: +4 rows, noisy
    verdict = champion_verdict(
        _test(gold, challenger_right), _test(gold, champion_right), evaluate_verdict=PROMOTE, **RULE
    )
    diff = verdict["test"]["difference"]
    assert diff["value"] == pytest.approx(4 / n, abs=1e-6) and diff["value"] >= RULE["margin"]
    assert diff["low"] <= 0 and not verdict["promote"]
    assert any(r.startswith("fail: challenger - champion test accuracy") for r in verdict["reasons"])


def test_worse_on_the_reviewed_production_sample_blocks_a_test_winner() -> None:
    n = 300
    gold = _gold(n)
    challenger, champion = _test(gold, _right(n, 270)), _test(gold, _right(n, 210))
    m = 200
    reviewed = _gold(m)
    worse = ProductionAnswers(
        reviewed, _answers(reviewed, _right(m, 180)), _answers(reviewed, _right(m, 140))
    )
    rejected = champion_verdict(challenger, champion, evaluate_verdict=PROMOTE, production=worse, **RULE)
    assert rejected["test"]["passed"] and not rejected["production"]["passed"] and not rejected["promote"]
    assert rejected["production"]["difference"]["value"] == pytest.approx(-40 / m, abs=1e-6)
    level = ProductionAnswers(
        reviewed, _answers(reviewed, _right(m, 180)), _answers(reviewed, _right(m, 180))
    )
    kept = champion_verdict(challenger, champion, evaluate_verdict=PROMOTE, production=level, **RULE)
    assert kept["production"]["passed"] and kept["promote"]


def test_production_weights_undo_the_review_samples_stratification() -> None:
    correct = np.array([1, 1, 0, 0], dtype=float)
    weights = np.array([1.0, 1.0, 3.0, 3.0])  # the wrong rows stand for three times as much traffic
    stat = weighted_accuracy_statistic(correct, weights)
    assert stat(np.arange(4)) == pytest.approx((1 + 1) / weights.sum())
    reviewed = ["a", "a", "b", "b"]
    # the challenger wins only the light rows, loses the heavy ones: unweighted a tie, weighted worse
    production = ProductionAnswers(
        reviewed, ["b", "b", "b", "b"], ["a", "a", "a", "a"], weights=list(weights)
    )
    gold = _gold(60)
    verdict = champion_verdict(
        _test(gold, _right(60, 60)), _test(gold, _right(60, 30)), evaluate_verdict=PROMOTE,
        production=production, **RULE,
    )  # fmt: skip
    entry = verdict["production"]
    assert (
        entry["weighted"]
        and entry["challenger"] == pytest.approx(2 / 8, abs=1e-6)
        and entry["champion"] == 0.75
    )


def test_rows_pair_by_id_and_gold_label_only() -> None:
    challenger = HeldOutAnswers(["x", "y", "z", "w"], ["a", "b", "c", "a"], ["a", "b", "a", "a"])
    champion = HeldOutAnswers(["y", "x", "z", "v"], ["b", "a", "b", "c"], ["a", "a", "b", "c"])
    gold, ours, theirs, counts = pair_test_rows(challenger, champion)
    assert gold == ["a", "b"] and ours == ["a", "b"] and theirs == ["a", "a"]  # challenger's order
    assert counts == {"paired": 2, "only_challenger": 1, "only_champion": 1, "label_changed": 1}
    disjoint = HeldOutAnswers(["q"], ["a"], ["a"])
    verdict = champion_verdict(disjoint, champion, evaluate_verdict=PROMOTE, **RULE)
    assert not verdict["promote"] and verdict["test"]["rows"] == 0


def test_macro_f1_can_decide_and_bad_options_raise() -> None:
    n = 300
    gold = _gold(n)
    verdict = champion_verdict(
        _test(gold, _right(n, 290)), _test(gold, _right(n, 150)), evaluate_verdict=PROMOTE,
        metric="macro_f1", **RULE,
    )  # fmt: skip
    assert verdict["metric"] == "macro_f1" and verdict["promote"]
    assert verdict["test"]["challenger"] > verdict["test"]["champion"]
    with pytest.raises(ValueError, match="metric"):
        champion_verdict(_test(gold, _right(n, 1)), None, evaluate_verdict=PROMOTE, metric="loss", **RULE)
    bad = ProductionAnswers(["a"], ["a"], ["a"], weights=[0.0])
    with pytest.raises(ValueError, match="weights"):
        champion_verdict(
            _test(gold, _right(n, 290)), _test(gold, _right(n, 150)), evaluate_verdict=PROMOTE,
            production=bad, **RULE,
        )  # fmt: skip
