"""The review policy: flagged rows are held until a reviewer decides; decisions survive re-runs."""

from __future__ import annotations

import polars as pl
import pytest

from curation.policy import DECISIONS_SCHEMA, apply_review_policy
from schemas.records import FLAGS_SCHEMA, REMOVED_SCHEMA


def _rows(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "split": "train",
            "line": list(range(1, n + 1)),
            "text": [f"text {i}" for i in range(n)],
            "label": ["a"] * n,
            "text_hash": [f"h{i}" for i in range(n)],
        }
    )


def _setup():
    validated = _rows(5)
    kept = validated.filter(pl.col("id") != "r4")  # r4 is a conflicting duplicate of r0
    removed = pl.DataFrame(
        [
            {
                "id": "r4",
                "split": "train",
                "line": 5,
                "stage": "dedup",
                "reason": "pending_review",
                "duplicate_of": "r0",
                "detail": "conflicting_duplicate",
                "text": "text 4",
                "label": "a",
            }
        ],
        schema=REMOVED_SCHEMA,
    )
    flags = pl.DataFrame(
        [
            {
                "id": "r1",
                "text_hash": "h1",
                "text": "text 1",
                "issue": "label_issue",
                "score": 0.9,
                "given_label": "a",
                "suggested_label": "b",
                "duplicate_of": None,
            },
            {
                "id": "r2",
                "text_hash": "h2",
                "text": "text 2",
                "issue": "label_issue",
                "score": 0.8,
                "given_label": "a",
                "suggested_label": "b",
                "duplicate_of": None,
            },
            {
                "id": "r3",
                "text_hash": "h3",
                "text": "text 3",
                "issue": "label_issue",
                "score": 0.7,
                "given_label": "a",
                "suggested_label": "b",
                "duplicate_of": None,
            },
            {
                "id": "r4",
                "text_hash": "h4",
                "text": "text 4",
                "issue": "conflicting_duplicate",
                "score": 1.0,
                "given_label": "a",
                "suggested_label": "c",
                "duplicate_of": "r0",
            },
        ],
        schema=FLAGS_SCHEMA,
    )
    return kept, removed, flags, validated


def test_without_decisions_every_flagged_row_is_held() -> None:
    kept, removed, flags, validated = _setup()
    result = apply_review_policy(kept=kept, removed=removed, flags=flags, validated=validated, decisions=None)
    assert result.train["id"].to_list() == ["r0"]
    assert result.removed.height == 0  # held rows are not removed: held.parquet is their own state
    assert dict(zip(result.held["id"], result.held["reason"], strict=True)) == {
        "r1": "pending_review",
        "r2": "pending_review",
        "r3": "pending_review",
        "r4": "pending_review",
    }
    assert set(result.flags["status"]) == {"pending"}
    assert set(result.held["status"]) == {"pending"}
    assert set(result.held["issue"]) == {"label_issue", "conflicting_duplicate"}
    assert result.train.height + result.removed.height + result.held.height == validated.height


def test_decisions_relabel_keep_drop_and_are_keyed_by_text_hash() -> None:
    kept, removed, flags, validated = _setup()
    decisions = pl.DataFrame(
        [
            {"id": "r1", "text_hash": "h1", "decision": "relabel", "label": "b"},
            {"id": "r2", "text_hash": "h2", "decision": "drop", "label": None},
            {"id": "r3", "text_hash": "CHANGED", "decision": "keep", "label": None},  # text changed since
            {"id": "r4", "text_hash": "h4", "decision": "keep", "label": None},
        ],
        schema=DECISIONS_SCHEMA,
    )
    result = apply_review_policy(
        kept=kept, removed=removed, flags=flags, validated=validated, decisions=decisions
    )
    labels = dict(zip(result.train["id"], result.train["label"], strict=True))
    assert labels == {"r0": "a", "r1": "b", "r4": "a"}
    reasons = dict(zip(result.removed["id"], result.removed["reason"], strict=True))
    assert reasons == {"r2": "reviewer_drop"}
    assert dict(zip(result.held["id"], result.held["reason"], strict=True)) == {"r3": "pending_review"}
    assert result.train.height + result.removed.height + result.held.height == validated.height
    status = dict(zip(result.flags["id"], result.flags["status"], strict=True))
    assert status == {"r1": "relabel", "r2": "drop", "r3": "pending", "r4": "keep"}


def test_unknown_decision_is_rejected() -> None:
    kept, removed, flags, validated = _setup()
    bad = pl.DataFrame(
        [{"id": "r1", "text_hash": "h1", "decision": "approve", "label": None}], schema=DECISIONS_SCHEMA
    )
    with pytest.raises(ValueError, match="unknown review decision"):
        apply_review_policy(kept=kept, removed=removed, flags=flags, validated=validated, decisions=bad)
