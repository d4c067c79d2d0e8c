"""Validate: ingested records against the raw-record contract; failures go to quarantine."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import polars as pl

from schemas.pandera_polars import errors as pa_errors  # pandera without loading pandas
from schemas.params import DataParams
from schemas.records import QUARANTINE_SCHEMA, raw_record_schema

log = logging.getLogger(__name__)
JSON_TYPES = ("string", "number", "bool", "null", "array", "object")


def _order_of_checks(schema) -> list[str]:
    """Reason priority = the order the checks are declared in the schema."""
    return [check.name for column in schema.columns.values() for check in column.checks]


def validate_records(
    ingested: pl.DataFrame, *, data: DataParams, labels: Sequence[str] | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ingested rows into valid records and quarantined lines.

    Every failing row is quarantined once, with the first failed check (in declared order) as
    ``reason`` and all of its failures in ``detail``.

    Returns:
        (valid, quarantine) with ``len(valid) + len(quarantine) == len(ingested)``.
    """
    task = data.task
    if task == "auto":  # the pipeline resolves it at ingest; alone, the rows tell: a class label
        task = "classification" if (ingested["response_type"] == "null").all() else "instruction"
    schema = raw_record_schema(task=task, max_text_chars=data.max_text_chars, labels=labels)
    frame = ingested.with_row_index("_row")
    try:
        schema.validate(frame, lazy=True)
        return ingested, pl.DataFrame(schema=QUARANTINE_SCHEMA)
    except pa_errors.SchemaErrors as exc:
        cases = exc.failure_cases
    unknown = cases.filter(pl.col("index").is_null())
    if unknown.height:
        # a failure without a row index is a whole-frame problem (e.g. a missing column)
        raise ValueError(f"schema failure not tied to a row: {unknown.to_dicts()}")
    priority = {name: i for i, name in enumerate(_order_of_checks(schema))}
    failures = (
        cases.select(
            pl.col("index").cast(pl.UInt32).alias("_row"),
            pl.col("check").alias("reason"),
            pl.col("column"),
            pl.col("failure_case").alias("value"),
        )
        .with_columns(_prio=pl.col("reason").replace_strict(priority, default=len(priority)))
        .join(frame.select("_row", "text", "label"), on="_row", how="left")
        .with_columns(detail=_describe(data))
        .sort("_row", "_prio")
        .group_by("_row", maintain_order=True)
        .agg(pl.col("reason").first(), pl.col("detail").str.join("; "))
    )
    bad_rows = frame.join(failures, on="_row", how="inner")
    quarantine = bad_rows.select(
        "split", "source", "line", "id", pl.lit("validate").alias("stage"), "reason", "detail", "raw"
    )
    valid = frame.join(failures, on="_row", how="anti").drop("_row")
    log.info("validate: %d valid, %d quarantined", valid.height, quarantine.height)
    return valid, quarantine.cast(QUARANTINE_SCHEMA)


def _describe(data: DataParams) -> pl.Expr:
    """A human sentence per failure: what is wrong with which value."""
    reason = pl.col("reason")
    short = pl.col("value").str.slice(0, 60)
    return (
        pl.when(reason == "text_too_long")
        .then(
            pl.format(
                "text has {} characters, limit {}",
                pl.col("text").str.len_chars(),
                pl.lit(data.max_text_chars),
            )
        )
        .when(reason == "label_not_in_label_set")
        .then(pl.format("label '{}' is not in the label set", short))
        .when(reason == "duplicate_id")
        .then(pl.format("id '{}' already used by an earlier line", short))
        .when(reason.str.ends_with("_wrong_type"))
        .then(
            pl.format(
                "{} is a {}{}",
                reason.str.replace("_wrong_type", ""),
                # Parquet values JSON has no type for (binary, datetime, ...) are not "JSON"
                pl.when(short.is_in(JSON_TYPES)).then(pl.lit("JSON ")).otherwise(pl.lit("")),
                short,
            )
        )
        .when(reason.str.starts_with("missing_"))
        .then(pl.format("field '{}' is missing", reason.str.replace("missing_", "")))
        .when(reason.str.starts_with("null_"))
        .then(pl.format("field '{}' is null or empty", reason.str.replace("null_", "")))
        .when(reason.str.starts_with("empty_"))
        .then(pl.lit("text is empty or whitespace only"))
        .otherwise(pl.format("{} failed on '{}'", reason, short))
    )
