"""Row contracts for every artifact curagate writes, as pandera schemas on polars.

The raw-record contract is built at run time (its limits come from params.yaml); every check
is named by the snake_case reason code a failing row is quarantined with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import polars as pl

from schemas.instruction_params import INSTRUCTION_CHECKS
from schemas.pandera_polars import pa  # pandera.polars, without loading pandas
from schemas.review_params import DECISIONS

# Canonical frame after ingest (before validation). *_type hold the JSON type seen in the input.
INGESTED_SCHEMA = pl.Schema(
    {
        "split": pl.String,
        "source": pl.String,
        "line": pl.Int64,
        "raw": pl.String,
        "source_id": pl.String,
        "text": pl.String,
        "text_type": pl.String,
        "label": pl.String,
        "label_type": pl.String,
        "response": pl.String,
        "response_type": pl.String,
        "extra": pl.String,
    }
)

QUARANTINE_SCHEMA = pl.Schema(
    {
        "split": pl.String,
        "source": pl.String,
        "line": pl.Int64,
        "id": pl.String,
        "stage": pl.String,
        "reason": pl.String,
        "detail": pl.String,
        "raw": pl.String,
    }
)

REMOVED_SCHEMA = pl.Schema(
    {
        "id": pl.String,
        "split": pl.String,
        "line": pl.Int64,
        "stage": pl.String,
        "reason": pl.String,
        "duplicate_of": pl.String,
        "detail": pl.String,
        "text": pl.String,
        "label": pl.String,
    }
)

FLAGS_SCHEMA = pl.Schema(
    {
        "id": pl.String,
        "text_hash": pl.String,
        "text": pl.String,
        "issue": pl.String,
        "score": pl.Float64,
        "given_label": pl.String,
        "suggested_label": pl.String,
        "duplicate_of": pl.String,
    }
)

# Rows out of training until a reviewer decides (held.parquet): neither curated nor removed.
# removed.parquet and held.parquet also get ``source`` (the input file) and, for instruction/chat
# data, ``response`` when written (flows/files.with_origin; RemovedRow and HeldRow check them).
HELD_SCHEMA = pl.Schema(
    {
        "id": pl.String,
        "split": pl.String,
        "line": pl.Int64,
        "issue": pl.String,
        "status": pl.String,
        "reason": pl.String,
        "duplicate_of": pl.String,
        "detail": pl.String,
        "text": pl.String,
        "label": pl.String,
    }
)

# The reason a detector gives a row it holds for review (it becomes a held row, not a removed one).
HOLD_REASON = "pending_review"
# instruction/chat checks (curation/instruction.py) flag under their own codes when their policy is flag
FLAG_ISSUES = ("label_issue", "conflicting_duplicate", "paraphrase", "outlier", *INSTRUCTION_CHECKS)
SNAKE_CASE = r"^[a-z][a-z0-9_]*$"
# Reasons the ingest stage quarantines a line with (curation/ingest.py); validation adds the
# names of the raw-record checks below (missing_text, text_wrong_type, ...).
INGEST_REASONS = (
    "blank_line",
    "invalid_utf8",
    "invalid_json",
    "too_deep",
    "duplicate_key",
    "not_a_json_object",
    "wrong_field_count",
    "malformed_csv",
)
# Reasons a chat record (data.task: chat, a `messages` list of {role, content}) is quarantined
# with at ingest (curation/ingest.py: check_messages), in the order they are checked.
CHAT_REASONS = (
    "missing_messages",
    "null_messages",
    "messages_not_a_list",
    "turn_not_an_object",
    "content_not_a_string",
    "unknown_role",
    "empty_turn",
    "system_not_first",
    "roles_not_alternating",
    "no_assistant_turn",
)
INGEST_REASONS += CHAT_REASONS


def _type_check(field: str, allowed: Sequence[str]) -> list[pa.Check]:
    """Checks on a *_type column: missing, null and wrong-typed values, each its own reason."""
    allowed_set = list(allowed)
    return [
        pa.Check(lambda d: d.lazyframe.select(pl.col(d.key) != "missing"), name=f"missing_{field}"),
        pa.Check(lambda d: d.lazyframe.select(pl.col(d.key) != "null"), name=f"null_{field}"),
        pa.Check(
            lambda d: d.lazyframe.select(pl.col(d.key).is_in(["missing", "null", *allowed_set])),
            name=f"{field}_wrong_type",
        ),
    ]


def _non_empty() -> pa.Check:
    return pa.Check(
        lambda d: d.lazyframe.select(pl.col(d.key).str.strip_chars().str.len_chars() > 0),
        name="empty_text",
    )


def raw_record_schema(*, task: str, max_text_chars: int, labels: Sequence[str] | None) -> pa.DataFrameSchema:
    """The contract an ingested record must meet to enter curation.

    Check names are reason codes; validation is lazy so every failure of every row is found.
    """
    columns: dict[str, pa.Column] = {
        "text_type": pa.Column(pl.String, checks=_type_check("text", ["string"])),
        "text": pa.Column(
            pl.String,
            nullable=True,
            checks=[
                _non_empty(),
                pa.Check(
                    lambda d: d.lazyframe.select(pl.col(d.key).str.len_chars() <= max_text_chars),
                    name="text_too_long",
                ),
            ],
        ),
        "id": pa.Column(
            pl.String,
            checks=pa.Check(
                lambda d: d.lazyframe.select(pl.col(d.key).is_first_distinct()),
                name="duplicate_id",
            ),
        ),
    }
    if task == "classification":
        # integer class ids are common in labelled data, so numbers are accepted as labels
        columns["label_type"] = pa.Column(pl.String, checks=_type_check("label", ["string", "number"]))
        label_checks = []
        if labels is not None:
            label_list = list(labels)
            label_checks.append(
                pa.Check(
                    lambda d: d.lazyframe.select(pl.col(d.key).is_in(label_list)),
                    name="label_not_in_label_set",
                )
            )
        columns["label"] = pa.Column(pl.String, nullable=True, checks=label_checks)
    else:
        columns["response_type"] = pa.Column(pl.String, checks=_type_check("response", ["string"]))
        columns["response"] = pa.Column(
            pl.String,
            nullable=True,
            checks=pa.Check(
                lambda d: d.lazyframe.select(pl.col(d.key).str.strip_chars().str.len_chars() > 0),
                name="empty_response",
            ),
        )
    return pa.DataFrameSchema(columns, strict=False, name="RawRecord")


class CuratedExample(pa.DataFrameModel):
    """A row of train.parquet / test.parquet."""

    id: str = pa.Field(unique=True)
    text: str
    text_hash: str
    label: str = pa.Field(nullable=True)

    class Config:
        strict = False


class RemovedRow(pa.DataFrameModel):
    """A row of removed.parquet: why a valid train row is not in train.parquet.

    Stages and reasons come from the pipeline's table of steps (each step declares its
    reasons, and the runner checks them); here they must be snake_case codes.
    """

    id: str
    stage: str = pa.Field(str_matches=SNAKE_CASE)
    reason: str = pa.Field(str_matches=SNAKE_CASE, ne=HOLD_REASON)
    duplicate_of: str = pa.Field(nullable=True)
    detail: str = pa.Field(nullable=True)
    # the input file the row came from (train or a data.extra_train file), as in quarantine.parquet
    source: str

    class Config:
        strict = False


class HeldRow(pa.DataFrameModel):
    """A row of held.parquet: a valid train row out of training until a reviewer decides."""

    id: str = pa.Field(unique=True)
    issue: str = pa.Field(isin=list(FLAG_ISSUES))
    status: str = pa.Field(isin=["pending", "unsure"])
    reason: str = pa.Field(isin=[HOLD_REASON])
    source: str  # the input file the row came from

    class Config:
        strict = False


class QuarantinedLine(pa.DataFrameModel):
    """A row of quarantine.parquet: an input line that could not become a valid record."""

    split: str = pa.Field(isin=["train", "test"])
    line: int = pa.Field(ge=1)
    reason: str
    raw: str

    class Config:
        strict = False


class Flag(pa.DataFrameModel):
    """A row of flags.parquet: a suspect row waiting for a reviewer."""

    id: str
    text_hash: str
    issue: str = pa.Field(isin=list(FLAG_ISSUES))
    score: float
    given_label: str = pa.Field(nullable=True)
    suggested_label: str = pa.Field(nullable=True)

    class Config:
        strict = False


class Review(pa.DataFrameModel):
    """A row of reviews.parquet: one annotator's decision on one flagged row."""

    id: str
    text_hash: str
    decision: str = pa.Field(isin=list(DECISIONS))
    label: str = pa.Field(nullable=True)
    annotator: str
    time: Annotated[pl.Datetime, "us", "UTC"]
    task_id: int

    class Config:
        strict = True
