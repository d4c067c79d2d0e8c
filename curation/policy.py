"""Policy: turn detectors' flags and reviewers' decisions into keep / drop / hold.

Detectors only flag. This one module decides: a flagged row stays out of training until a
reviewer decides (reason ``pending_review``); a decision - keyed by row id *and* text hash, so
it is ignored once the text changes - keeps, relabels or drops (``reviewer_drop``) the row.
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from schemas.records import FLAGS_SCHEMA, HELD_SCHEMA, REMOVED_SCHEMA
from schemas.review_params import DECISIONS

DECISIONS_SCHEMA = {"id": pl.String, "text_hash": pl.String, "decision": pl.String, "label": pl.String}


class ReviewOutcome(NamedTuple):
    """Where every flagged row went: curated, removed, or held for a reviewer."""

    train: pl.DataFrame
    removed: pl.DataFrame
    held: pl.DataFrame
    flags: pl.DataFrame


def apply_review_policy(
    *,
    kept: pl.DataFrame,
    removed: pl.DataFrame,
    flags: pl.DataFrame,
    validated: pl.DataFrame,
    decisions: pl.DataFrame | None = None,
) -> ReviewOutcome:
    """Hold every flagged row out of training unless a reviewer decided otherwise.

    Args:
        kept: train rows that survived dedup and decontam.
        removed: rows removed so far; conflicting duplicates are there as ``pending_review``.
        flags: this run's flags (``label_issue`` on kept rows, ``conflicting_duplicate``).
        validated: all valid train rows (to restore a released row with all its columns).
        decisions: resolved decisions (id, text_hash, decision, label), or None.

    Returns:
        train: curated train rows (kept/relabelled reviewed rows included);
        removed: every removed row, reviewed ones now ``reviewer_drop``;
        held: rows waiting for a reviewer (reason ``pending_review``, their ``issue`` and
        ``status``): out of training, not removed;
        flags: the flags with ``status`` (pending or the decision).
    """
    if decisions is None:
        decisions = pl.DataFrame(schema=DECISIONS_SCHEMA)
    bad = set(decisions["decision"].drop_nulls().unique().to_list()) - set(DECISIONS)
    if bad:
        raise ValueError(f"unknown review decision(s) {sorted(bad)}; expected one of {DECISIONS}")
    status = (
        flags.join(
            decisions.select(
                "id", "text_hash", pl.col("decision").alias("status"), pl.col("label").alias("_new")
            ),
            on=["id", "text_hash"],
            how="left",
        )
        .with_columns(pl.col("status").fill_null("pending"))
        # a row can carry two flags (both issues); one decision settles the row
        .unique("id", keep="first", maintain_order=True)
    )
    released = status.filter(pl.col("status").is_in(["keep", "relabel"]))
    dropped = status.filter(pl.col("status") == "drop")
    waiting = status.filter(pl.col("status").is_in(["pending", "unsure"]))
    decided_ids = pl.concat([released["id"], dropped["id"]])

    back = (
        validated.join(released.select("id", "status", "_new"), on="id", how="inner")
        .with_columns(
            label=pl.when(pl.col("status") == "relabel").then(pl.col("_new")).otherwise(pl.col("label"))
        )
        .select(kept.columns)
    )
    curated = pl.concat(
        [kept.filter(~pl.col("id").is_in(status["id"].implode())), back], how="vertical_relaxed"
    ).sort("line")

    def as_removed(ids: pl.DataFrame, stage: str, reason: str, detail: pl.Expr) -> pl.DataFrame:
        rows = validated.join(ids, on="id", how="inner")
        return rows.select(
            "id",
            "split",
            "line",
            pl.lit(stage).alias("stage"),
            pl.lit(reason).alias("reason"),
            "duplicate_of",
            detail.alias("detail"),
            "text",
            "label",
        )

    new_pending = as_removed(
        waiting.filter(pl.col("issue") == "label_issue").select(
            "id", "duplicate_of", "suggested_label", "score", "status"
        ),
        "noise",
        "pending_review",
        pl.format(
            "label_issue: suggested '{}' (score {}){}",
            "suggested_label",
            pl.col("score").round(3),
            pl.when(pl.col("status") == "unsure").then(pl.lit(", reviewer unsure")).otherwise(pl.lit("")),
        ),
    )
    reviewer_drops = as_removed(
        dropped.select("id", "duplicate_of", "issue"),
        "review",
        "reviewer_drop",
        pl.format("{}: dropped by a reviewer", "issue"),
    )
    previous = removed.filter(~pl.col("id").is_in(decided_ids.implode()))
    all_removed = pl.concat(
        [previous, new_pending.cast(REMOVED_SCHEMA), reviewer_drops.cast(REMOVED_SCHEMA)]
    ).sort("line")
    is_held = pl.col("reason") == "pending_review"
    held = (
        all_removed.filter(is_held)
        .join(waiting.select("id", "issue", "status"), on="id", how="left")
        .select(list(HELD_SCHEMA))
        .cast(HELD_SCHEMA)
    )
    flags_out = flags.join(status.select("id", "status"), on="id", how="left").select(*FLAGS_SCHEMA, "status")
    return ReviewOutcome(train=curated, removed=all_removed.filter(~is_held), held=held, flags=flags_out)
