"""A toy step added through the table only: drop rows shorter than N characters.

It is the README's "Add a step" example, and tests install it to show that one table entry
reaches the CLI (a subcommand and the files), `dvc repro` and the Prefect flow.
"""

from __future__ import annotations

import polars as pl

from curation.dedup import StepResult
from schemas.records import FLAGS_SCHEMA

MIN_CHARS = 25  # ~3.5% of Banking77 queries are shorter: a few rows go, most stay


def drop_short_rows(train: pl.DataFrame) -> StepResult:
    """Rows whose text has fewer than MIN_CHARS characters leave with reason too_short."""
    short = pl.col("text").str.len_chars() < MIN_CHARS
    removed = train.filter(short).select(
        "id", "split", "line", stage=pl.lit("too_short"), reason=pl.lit("too_short"),
        duplicate_of=pl.lit(None, pl.String), detail=pl.format("{} chars", pl.col("text").str.len_chars()),
        text="text", label="label",
    )  # fmt: skip
    return StepResult(kept=train.filter(~short), removed=removed, flags=pl.DataFrame(schema=FLAGS_SCHEMA))


def install() -> None:
    """Insert the step before dedup: the only change a new step needs besides its function."""
    from flows.steps import STEPS, Step

    if any(step.name == "too_short" for step in STEPS):
        return
    at = next(i for i, step in enumerate(STEPS) if step.name == "dedup")
    STEPS.insert(at, Step("too_short", "... then drop rows shorter than 25 characters.", drop_short_rows,
                          reads=("train",), reasons=("too_short",)))  # fmt: skip


# `python -c` launcher used by the subprocess tests (CLI and DVC): install, then run the CLI
LAUNCH = "import tests.toy_step as t; t.install(); from flows.cli import main; main()"
