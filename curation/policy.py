"""Policy: turn detectors' flags and reviewers' decisions into keep / drop / hold.

Detectors only flag. This one module decides: a flagged row stays out of training until a
reviewer decides (reason ``pending_review``); a decision - keyed by row id *and* text hash, so
it is ignored once the text changes - keeps, relabels or drops (``reviewer_drop``) the row.
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from curation.ingest import text_hash
from schemas.instruction_params import INSTRUCTION_CHECKS, InstructionParams
from schemas.records import FLAGS_SCHEMA, HELD_SCHEMA, HOLD_REASON, REMOVED_SCHEMA
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


def apply_instruction_policy(detected: pl.DataFrame, *, cfg: InstructionParams) -> InstructionOutcome:
    """Turn the instruction checks' columns into kept, removed and held-for-review rows.

    A row failing a check whose policy is ``remove`` is removed (stage ``instruction``, reason =
    the first such check); otherwise one failing a ``flag`` check is held for review (reason
    ``pending_review``, one flag with the first such check as its issue). The detail names every
    check it failed. A flag's ``text_hash`` hashes the prompt and the response together (what a
    reviewer decides on), so a decision lapses when either changes.

    Args:
        detected: the output of ``curation.instruction.detect_instruction_issues``.
        cfg: the ``instruction`` section (its ``policy``).

    Returns:
        kept (the input columns only), removed (REMOVED_SCHEMA), flags (FLAGS_SCHEMA), and
        ``primary``: id -> the check each removed or held row went under.
    """
    by_action = {
        action: [c for c in INSTRUCTION_CHECKS if cfg.policy.action(c) == action]
        for action in ("remove", "flag")
    }

    def first(checks: list[str]) -> pl.Expr:
        if not checks:
            return pl.lit(None, pl.String)
        return pl.coalesce([pl.when(pl.col(c)).then(pl.lit(c)) for c in checks])

    whys = [
        pl.when(pl.col(c)).then(pl.format("{}: {}", pl.lit(c), pl.col(f"{c}_why")))
        for c in INSTRUCTION_CHECKS
    ]
    frame = detected.with_columns(
        _remove=first(by_action["remove"]),
        _flag=first(by_action["flag"]),
        _detail=pl.concat_list(whys).list.drop_nulls().list.join("; "),
    ).with_columns(primary=pl.coalesce("_remove", "_flag"))
    primary_score = pl.coalesce(
        [pl.when(pl.col("primary") == c).then(pl.col(f"{c}_score")) for c in INSTRUCTION_CHECKS]
    )
    original = [c for c in detected.columns if c not in _instruction_columns(INSTRUCTION_CHECKS)]
    kept = frame.filter(pl.col("primary").is_null()).select(original)
    out = frame.filter(pl.col("primary").is_not_null())
    label = pl.col("label") if "label" in out.columns else pl.lit(None, pl.String)
    removed = out.select(
        "id",
        "split",
        "line",
        pl.lit("instruction").alias("stage"),
        pl.when(pl.col("_remove").is_not_null())
        .then(pl.col("_remove"))
        .otherwise(pl.lit(HOLD_REASON))
        .alias("reason"),
        pl.lit(None, pl.String).alias("duplicate_of"),
        pl.col("_detail").alias("detail"),
        "text",
        label.alias("label"),
    )
    # the reviewer judges the prompt *and* the response: a decision must not outlive an edit of
    # either, so the flag's key hashes both (the row's own text_hash is of the prompt only)
    pair = pl.concat_str([pl.col("text").fill_null(""), pl.col("response").fill_null("")], separator="\x1f")
    flags = out.filter(pl.col("_remove").is_null()).select(
        "id",
        text_hash(pair).alias("text_hash"),
        "text",
        pl.col("primary").alias("issue"),
        primary_score.alias("score"),
        label.alias("given_label"),
        pl.lit(None, pl.String).alias("suggested_label"),
        pl.lit(None, pl.String).alias("duplicate_of"),
    )
    return InstructionOutcome(
        kept=kept,
        removed=removed.cast(REMOVED_SCHEMA).sort("line"),
        flags=flags.cast(FLAGS_SCHEMA).sort("id"),
        primary=frame.select("id", "primary"),
    )


def _instruction_columns(checks: tuple[str, ...]) -> set[str]:
    return {"instruction_issues", *checks, *(f"{c}_score" for c in checks), *(f"{c}_why" for c in checks)}


class InstructionOutcome(NamedTuple):
    kept: pl.DataFrame
    removed: pl.DataFrame
    flags: pl.DataFrame
    primary: pl.DataFrame  # id, primary: the check a removed or held row went under (null: kept)
