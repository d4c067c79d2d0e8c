"""The curation stages wired together: read, validate, call the pure functions, write.

One implementation, used by the CLI (and so by dvc.yaml) and by the Prefect flows: each
stage function here is what a Prefect task wraps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from curation.decontam import remove_test_leaks
from curation.dedup import drop_duplicates, dedup_key
from curation.ingest import InputFileError, parse_csv, parse_frame, parse_jsonl
from curation.noise import flag_label_issues
from curation.policy import apply_review_policy
from curation.report import quality_metrics, render_report
from curation.review import resolve_decisions
from curation.validate import validate_records
from schemas.params import Params, load_label_set
from schemas.records import (
    FLAGS_SCHEMA,
    QUARANTINE_SCHEMA,
    REMOVED_SCHEMA,
    CuratedExample,
    Flag,
    QuarantinedLine,
    RemovedRow,
)

log = logging.getLogger(__name__)

STAGES = ("ingest", "validate", "dedup", "decontam", "noise", "curate", "report")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
INTERNAL_COLUMNS = ("split", "source", "line", "raw", "source_id", "text_type", "label_type", "response_type", "extra")


def read_input(path: Path, *, split: str, params: Params) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read one raw file into (ingested, quarantine); whole-file problems raise InputFileError."""
    suffix = path.suffix.lower()
    source = str(path)
    if not path.exists():
        raise InputFileError(f"{path}: file not found")
    if suffix in JSONL_SUFFIXES:
        return parse_jsonl(_read_bytes(path), split=split, source=source, data=params.data)
    if suffix == ".csv":
        return parse_csv(_read_bytes(path), split=split, source=source, data=params.data)
    if suffix == ".parquet":
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for a corrupt file
            raise InputFileError(f"{path}: unreadable Parquet ({exc})") from exc
        return parse_frame(frame, split=split, source=source, data=params.data)
    raise InputFileError(f"{path}: unknown format '{suffix}' (expected .jsonl, .csv or .parquet)")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read ({exc.strerror})") from exc


def infer_label_set(params: Params, params_dir: Path, test_ingested: pl.DataFrame) -> list[str] | None:
    """The label set from params.yaml, or (when absent) the labels seen in the test split."""
    if params.data.task != "classification":
        return None
    explicit = load_label_set(params.data.labels, params_dir)
    if explicit is not None:
        return explicit
    seen = test_ingested.filter(pl.col("label_type").is_in(["string", "number"]))["label"]
    labels = sorted(seen.drop_nulls().unique().to_list())
    if not labels:
        raise InputFileError("no label set: data.labels is null and the test split has no labels")
    return labels


@dataclass
class CurationRun:
    """Everything a curation run produced; stages fill it in order."""

    params: Params
    input_rows: dict[str, int] = field(default_factory=dict)
    label_set: list[str] | None = None
    ingested: dict[str, pl.DataFrame] = field(default_factory=dict)
    validated: dict[str, pl.DataFrame] = field(default_factory=dict)
    train: pl.DataFrame | None = None  # train rows still in play after the latest stage
    removed: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=REMOVED_SCHEMA))
    quarantine: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=QUARANTINE_SCHEMA))
    flags: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=FLAGS_SCHEMA))
    decisions: pl.DataFrame | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    report_html: str | None = None
    stages_run: list[str] = field(default_factory=list)


@contextmanager
def stage_progress(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[note]}"), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        yield progress


def run_curation(
    train_path: Path,
    test_path: Path,
    *,
    params: Params,
    params_dir: Path = Path("."),
    until: str = "report",
    reviews_path: Path | None = None,
    show_progress: bool = True,
) -> CurationRun:
    """Run the curation stages in order up to and including ``until``.

    Raises:
        InputFileError: a whole-file problem (the message names the file and the reason).
    """
    if until not in STAGES:
        raise ValueError(f"unknown stage {until!r}; stages: {STAGES}")
    last = STAGES.index(until)
    run = CurationRun(params=params)
    with stage_progress(show_progress) as progress:
        task = progress.add_task("curate", total=last + 1, note="") if progress else None

        def step(name: str, note: str = "") -> None:
            run.stages_run.append(name)
            log.info("stage %s done %s", name, note)
            if progress is not None and task is not None:
                progress.update(task, advance=1, description=f"curate: {name}", note=note)

        def note(text: str) -> None:
            if progress is not None and task is not None:
                progress.update(task, note=text)

        for split, path in (("train", train_path), ("test", test_path)):
            ingested, quarantined = read_input(path, split=split, params=params)
            run.ingested[split] = ingested
            run.input_rows[split] = ingested.height + quarantined.height
            run.quarantine = pl.concat([run.quarantine, quarantined])
        run.label_set = infer_label_set(params, params_dir, run.ingested["test"])
        step("ingest", f"{run.input_rows['train']} train, {run.input_rows['test']} test records")
        if last < 1:
            run.train = run.ingested["train"]
            return run

        for split in ("train", "test"):
            valid, bad = validate_records(run.ingested[split], data=params.data, labels=run.label_set)
            run.validated[split] = valid
            run.quarantine = pl.concat([run.quarantine, bad])
        run.train = run.validated["train"]
        step("validate", f"{run.quarantine.height} quarantined")
        if last < 2:
            return run

        deduped = drop_duplicates(run.train, cfg=params.dedup)
        run.train, run.removed = deduped.kept, pl.concat([run.removed, deduped.removed])
        run.flags = pl.concat([run.flags, deduped.flags])
        step("dedup", f"{deduped.removed.height} removed, {deduped.flags.height} conflicts")
        if last < 3:
            return run

        leaks = remove_test_leaks(run.train, run.validated["test"], cfg=params.decontam, minhash=params.dedup)
        run.train, run.removed = leaks.kept, pl.concat([run.removed, leaks.removed])
        step("decontam", f"{leaks.removed.height} test leaks")
        if last < 4:
            return run

        if params.data.task == "classification" and params.noise.enabled:
            embeddings = None
            if "embedding" in params.noise.features:
                from flows.embed import embed_texts  # loads a model: only when asked for

                embeddings = embed_texts(run.train["text"].to_list())
            noise_flags, _ = flag_label_issues(
                run.train, label_set=run.label_set or [], cfg=params.noise, embeddings=embeddings, progress=note
            )
            run.flags = pl.concat([run.flags, noise_flags])
        step("noise", f"{int((run.flags['issue'] == 'label_issue').sum())} label issues")
        if last < 5:
            return run

        reviews = reviews_path or (Path(params.review.decisions) if params.review.decisions else None)
        if reviews is not None:
            if not reviews.exists():
                raise InputFileError(f"{reviews}: reviews file not found")
            run.decisions = resolve_decisions(pl.read_parquet(reviews), policy=params.review.conflict_policy)
        applied = apply_review_policy(run.train, run.removed, run.flags, run.validated["train"], run.decisions)
        run.train, run.removed, run.flags = applied.kept, applied.removed, applied.flags
        step("curate", f"{run.train.height} curated train rows")
        if last < 6:
            return run

        run.metrics = quality_metrics(
            input_rows=run.input_rows,
            curated_train=run.train,
            curated_test=run.validated["test"],
            removed=run.removed,
            quarantine=run.quarantine,
            flags=run.flags,
            validated_train_rows=run.validated["train"].height,
            label_set=run.label_set,
            test_leaks_remaining=count_test_leaks(run.train, run.validated["test"]),
        )
        if run.decisions is not None:
            run.metrics["reviews_applied"] = int(run.decisions.height)
            run.metrics["reviews_disagreements"] = int(run.decisions["disagreement"].sum())
        run.report_html = render_report(
            metrics=run.metrics,
            validated_train=run.validated["train"],
            curated_train=run.train,
            removed=run.removed,
            quarantine=run.quarantine,
            flags=run.flags,
            top_flags=params.report.top_flags,
        )
        step("report", "quality.json, report.html")
    return run


def count_test_leaks(train: pl.DataFrame, test: pl.DataFrame) -> int:
    """Exact (normalised) test texts still present in curated train: must be 0."""
    keys = test.select(dedup_key(pl.col("text")).alias("k"))["k"].implode()
    return int(train.select(dedup_key(pl.col("text")).is_in(keys).sum()).item())


def _public(frame: pl.DataFrame) -> pl.DataFrame:
    """Curated rows as users see them: internal columns dropped, extra input columns restored."""
    out = frame.sort("line")
    if "extra" in out.columns and out["extra"].drop_nulls().len():
        try:
            extras = out.select(pl.col("extra").str.json_decode()).unnest("extra")
            clash = [c for c in extras.columns if c in out.columns]
            out = pl.concat([out, extras.drop(clash)], how="horizontal")
        except pl.exceptions.PolarsError as exc:  # mixed types across rows: keep the JSON text
            log.warning("extra columns kept as JSON text (%s)", exc)
            out = out.with_columns(pl.col("extra").alias("extra_json"))
    drop = [c for c in INTERNAL_COLUMNS if c in out.columns]
    if "response" in out.columns and out["response"].null_count() == out.height:
        drop.append("response")
    return out.drop(drop)


def write_outputs(run: CurationRun, out_dir: Path) -> list[Path]:
    """Write the files of the stages that ran; every file passes its pandera contract."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def put(name: str, frame: pl.DataFrame) -> None:
        path = out_dir / name
        frame.write_parquet(path, statistics=False)
        written.append(path)

    quarantine = QuarantinedLine.validate(run.quarantine.sort("split", "source", "line"))
    put("quarantine.parquet", quarantine)
    last = run.stages_run[-1]
    if last in ("ingest", "validate", "dedup", "decontam", "noise") and run.train is not None:
        put(f"{last}_train.parquet", run.train.sort("line"))
    if "dedup" in run.stages_run:
        put("removed.parquet", RemovedRow.validate(run.removed.sort("line", "id")).drop("split"))
        put("flags.parquet", Flag.validate(run.flags.sort("issue", "id")))
    if "curate" in run.stages_run:
        put("train.parquet", CuratedExample.validate(_public(run.train)))
        put("test.parquet", CuratedExample.validate(_public(run.validated["test"])))
    if run.label_set is not None:
        path = out_dir / "labels.json"
        path.write_text(json.dumps(run.label_set, indent=1) + "\n")
        written.append(path)
    if run.metrics:
        path = out_dir / "quality.json"
        path.write_text(json.dumps(run.metrics, indent=2, sort_keys=True) + "\n")
        written.append(path)
    if run.report_html is not None:
        path = out_dir / "report.html"
        path.write_text(run.report_html, encoding="utf-8")
        written.append(path)
    return written


__all__ = ["STAGES", "CurationRun", "read_input", "run_curation", "write_outputs"]
