"""Very small or uniform train sets: noise detection skips with a reason instead of crashing."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from curation.ingest import text_hash
from curation.noise import NoiseCheck, flag_label_issues, noise_check, out_of_fold_probabilities
from curation.report import quality_metrics
from schemas.params import NoiseParams
from schemas.records import FLAGS_SCHEMA, HELD_SCHEMA, QUARANTINE_SCHEMA, REMOVED_SCHEMA

CFG = NoiseParams()
LABELS = ["card_arrival", "pin", "top_up"]


def _frame(labels: list[str]) -> pl.DataFrame:
    texts = [f"query {i} about my {label}" for i, label in enumerate(labels)]
    return pl.DataFrame(
        {"id": [f"r{i}" for i in range(len(labels))], "text": texts, "label": labels}
    ).with_columns(text_hash=text_hash(pl.col("text")))


TINY = {
    "no_rows": [],
    "one_row": ["pin"],
    "two_rows_one_class": ["pin", "pin"],
    "two_rows_two_classes": ["pin", "top_up"],
    "single_class": ["pin"] * 12,
    "every_class_one_row": list(LABELS),
    "one_big_class_and_a_singleton": ["pin", "pin", "top_up"],
}
EXPECTED = {
    "no_rows": "no_rows",
    "one_row": "single_class",
    "two_rows_one_class": "single_class",
    "two_rows_two_classes": "one_row_per_class",
    "single_class": "single_class",
    "every_class_one_row": "one_row_per_class",
    "one_big_class_and_a_singleton": "single_class_fold",
}


@pytest.mark.parametrize("case", sorted(TINY))
def test_tiny_train_sets_are_skipped_with_a_reason(case: str) -> None:
    train = _frame(TINY[case])
    assert noise_check(train, label_set=LABELS, cfg=CFG) == NoiseCheck(0, EXPECTED[case])
    flags, probs = flag_label_issues(train, label_set=LABELS, cfg=CFG)
    assert flags.is_empty()
    assert probs.shape == (train.height, len(LABELS))
    np.testing.assert_allclose(probs, 1.0 / len(LABELS))


@pytest.mark.parametrize("case", sorted(set(TINY) - {"no_rows"}))
def test_out_of_fold_probabilities_name_the_reason(case: str) -> None:
    train = _frame(TINY[case])
    ids = np.array([LABELS.index(v) for v in train["label"]])
    with pytest.raises(ValueError, match=EXPECTED[case]):
        out_of_fold_probabilities(train["text"].to_list(), ids, n_classes=len(LABELS), cfg=CFG)


def test_the_smallest_checkable_set_runs() -> None:
    # two classes with two rows each: every fold trains on both classes
    train = _frame(["pin", "pin", "top_up", "top_up"])
    assert noise_check(train, label_set=LABELS, cfg=CFG) == NoiseCheck(4, None)
    flags, probs = flag_label_issues(train, label_set=LABELS, cfg=CFG)
    assert probs.shape == (4, len(LABELS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert set(flags["id"]) <= set(train["id"])


def test_noise_check_validates_like_flag_label_issues() -> None:
    with pytest.raises(ValueError, match="outside the label set"):
        noise_check(_frame(["pin", "fees"]), label_set=LABELS, cfg=CFG)
    with pytest.raises(ValueError, match="label"):
        noise_check(_frame(["pin"]).drop("label"), label_set=LABELS, cfg=CFG)


# quality.json: strict JSON even for a tiny or lopsided train set, and the noise outcome in it


def _strict_loads(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-finite number {constant} in quality.json")

    return json.loads(text, parse_constant=refuse)


def _metrics(train_labels: list[str], *, noise: NoiseCheck | None) -> dict:
    train = _frame(train_labels)
    return quality_metrics(
        input_rows={"train": train.height, "test": 0},
        curated_train=train,
        curated_test=train.head(0),
        removed=pl.DataFrame(schema=REMOVED_SCHEMA),
        held=pl.DataFrame(schema=HELD_SCHEMA),
        quarantine=pl.DataFrame(schema=QUARANTINE_SCHEMA),
        flags=pl.DataFrame(schema=FLAGS_SCHEMA),
        validated_train_rows=train.height,
        label_set=LABELS,
        test_leaks_remaining=0,
        removal_reasons=("exact_duplicate", "near_duplicate", "test_leak", "reviewer_drop"),
        noise=noise,
    )


def test_the_strict_parser_rejects_infinity() -> None:
    with pytest.raises(ValueError, match="Infinity"):
        _strict_loads(json.dumps({"imbalance_ratio": float("inf")}))


@pytest.mark.parametrize("case", sorted(TINY))
def test_quality_metrics_are_strict_json_with_the_noise_outcome(case: str) -> None:
    train = _frame(TINY[case])
    check = noise_check(train, label_set=LABELS, cfg=CFG)
    metrics = _metrics(TINY[case], noise=check)
    parsed = _strict_loads(json.dumps(metrics))
    present = set(TINY[case])
    assert parsed["classes_missing_from_train"] == len(LABELS) - len(present)
    # a class of the label set without rows: no ratio (null), never Infinity
    if present == set(LABELS):
        assert parsed["imbalance_ratio"] == 1.0
    else:
        assert parsed["imbalance_ratio"] is None
    assert parsed["noise_checked"] == 0 and parsed["noise_checked_rows"] == 0
    assert parsed["noise_skip_reason"] == EXPECTED[case]


def test_quality_metrics_of_a_checked_balanced_set() -> None:
    labels = [label for label in LABELS for _ in range(2)] + ["pin"]
    train = _frame(labels)
    metrics = _metrics(labels, noise=noise_check(train, label_set=LABELS, cfg=CFG))
    parsed = _strict_loads(json.dumps(metrics))
    assert parsed["classes_missing_from_train"] == 0
    assert parsed["imbalance_ratio"] == 1.5
    assert (parsed["noise_checked"], parsed["noise_checked_rows"]) == (1, len(labels))
    assert "noise_skip_reason" not in parsed
    # without a noise outcome (noise detection not part of the run) no noise keys appear
    assert not any(k.startswith("noise_") for k in _metrics(labels, noise=None))
