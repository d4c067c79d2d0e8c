"""`source` (the input file a row came from) on removed, held and quarantined rows, the report's
rows-by-file table when `data.extra_train` adds files, and the report taking the coverage section
as an argument."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from schemas.params import params_from_dict

LABELS = ["card_arrival", "top_up_failed", "exchange_rate"]
TRAIN = [
    ("what exchange rate do you use", "exchange_rate"),
    ("my top-up failed again", "top_up_failed"),
    ("my card has not arrived yet", "card_arrival"),
    ("when will my new card arrive", "card_arrival"),
    ("the top up did not go through", "top_up_failed"),
    ("is the euro rate fixed today", "exchange_rate"),
    ("how long does card delivery take", "card_arrival"),
    ("my top-up failed again", "card_arrival"),  # a copy of line 2, another label: held
]
EXTRA = [
    ("why was my top up declined twice", "top_up_failed"),
    ("what exchange rate do you use", "exchange_rate"),  # a copy of train line 1: removed
    ('{"broken', None),  # not JSON: quarantined
]
TEST = [("rate for dollars to pounds", "exchange_rate"), ("card never came", "card_arrival")]


def _jsonl(path: Path, rows: list[tuple[str, str | None]], prefix: str) -> Path:
    lines = [
        text if label is None else json.dumps({"id": f"{prefix}{i}", "text": text, "label": label})
        for i, (text, label) in enumerate(rows, start=1)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return (
        _jsonl(tmp_path / "train.jsonl", TRAIN, "t"),
        _jsonl(tmp_path / "extra.jsonl", EXTRA, "x"),
        _jsonl(tmp_path / "test.jsonl", TEST, "q"),
    )


def _params(**data: object):
    return params_from_dict({"data": {"labels": LABELS, **data}, "noise": {"enabled": False}})


def test_removed_held_and_quarantined_rows_name_their_file_and_the_report_counts_per_file(
    tmp_path: Path,
) -> None:
    from flows.pipeline import run_curation, write_run

    train, extra, test = _files(tmp_path)
    run = run_curation(train, test, params=_params(extra_train=[str(extra)]), show_progress=False)
    out = tmp_path / "out"
    write_run(run, out)
    removed = pl.read_parquet(out / "removed.parquet")
    held = pl.read_parquet(out / "held.parquet")
    quarantine = pl.read_parquet(out / "quarantine.parquet")
    assert removed.columns[-1] == "source" and held.columns[-1] == "source"
    assert removed.select("id", "reason", "source").rows() == [("x2", "exact_duplicate", str(extra))]
    assert held.select("id", "source").rows() == [("t8", str(train))]  # the conflicting copy
    assert quarantine.filter(pl.col("split") == "train").select("source", "line").rows() == [(str(extra), 3)]
    assert "response" not in removed.columns  # classification: no response column
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>Train rows by input file</h2>" in html
    from curation.report import rows_by_source

    table = rows_by_source(
        validated=run.frame("validated_train"),
        curated=run.frame("train"),
        removed=run.frame("removed"),
        held=run.frame("held"),
        quarantine=run.frame("quarantine"),
    )
    assert table.to_dicts() == sorted(
        [
            {"source": str(extra), "input": 3, "quarantined": 1, "removed": 1, "held": 0, "curated": 1},
            {"source": str(train), "input": 8, "quarantined": 0, "removed": 0, "held": 1, "curated": 7},
        ],
        key=lambda r: r["source"],
    )  # each file's lines add up


def test_a_single_file_run_gets_the_column_and_no_per_file_table(tmp_path: Path) -> None:
    from flows.pipeline import run_curation, write_run

    train, _, test = _files(tmp_path)
    run = run_curation(train, test, params=_params(), show_progress=False)
    write_run(run, tmp_path / "out")
    held = pl.read_parquet(tmp_path / "out" / "held.parquet")
    assert held.columns == [
        "id",
        "line",
        "issue",
        "status",
        "reason",
        "duplicate_of",
        "detail",
        "text",
        "label",
        "source",
    ]
    assert set(held["source"]) == {str(train)}
    assert "by input file" not in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


@pytest.mark.xfail(
    strict=True,
    reason="known: dedup keeps the lowest line number across files, so an extra_train row at line 1 "
    "displaces the train file's copy at line 3 (flows/steps.dedup_step sees no file order)",
)
def test_a_train_row_is_not_displaced_by_its_copy_in_an_extra_file(tmp_path: Path) -> None:
    from flows.pipeline import run_curation

    train = _jsonl(tmp_path / "train.jsonl", TRAIN, "t")
    extra = _jsonl(tmp_path / "extra.jsonl", [("my card has not arrived yet", "card_arrival")], "x")
    test = _jsonl(tmp_path / "test.jsonl", TEST, "q")
    run = run_curation(
        train, test, params=_params(extra_train=[str(extra)]), until="dedup", show_progress=False
    )
    removed = run.frame("removed").filter(pl.col("reason") == "exact_duplicate")
    assert removed["id"].to_list() == ["x1"]  # today: ["t3"], kept as the copy of x1


def test_the_report_places_the_coverage_section_it_is_given() -> None:
    from curation.report import render_report

    empty = pl.DataFrame({"id": [], "label": []}, schema={"id": pl.String, "label": pl.String})
    removed = pl.DataFrame(
        schema={"id": pl.String, "stage": pl.String, "reason": pl.String, "duplicate_of": pl.String}
    )
    quarantine = pl.DataFrame(
        schema={k: pl.String for k in ("split", "source", "reason", "detail", "raw")} | {"line": pl.Int64}
    )
    flags = pl.DataFrame(schema={"id": pl.String, "issue": pl.String, "score": pl.Float64})
    html = render_report(
        metrics={"input_train_rows": 0, "quarantined_train": 0, "curated_train_rows": 0, "accounting_ok": 1},
        validated_train=empty,
        curated_train=empty,
        removed=removed,
        held=pl.DataFrame(schema={"id": pl.String, "issue": pl.String}),
        quarantine=quarantine,
        flags=flags,
        top_flags=5,
        stages=["dedup"],
        coverage_section="<h2>Coverage per class</h2>",
    )
    assert html.endswith("<h2>Coverage per class</h2></body></html>")
