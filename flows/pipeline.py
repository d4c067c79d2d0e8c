"""The curation stages wired together: read, validate, call the pure functions, write.

One implementation, used by the CLI (and so by dvc.yaml) and by the Prefect flows: each
stage function here is what a Prefect task wraps.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from curation.decontam import remove_test_leaks
from curation.dedup import CandidateSource, dedup_key, drop_duplicates, local_signer
from curation.ingest import InputFileError, parse_csv, parse_frame, parse_jsonl
from curation.minhash import Signer
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
from schemas.scale_params import ScaleParams, scale_params_from_dict

log = logging.getLogger(__name__)
ProgressNote = Callable[[str], None]

STAGES = ("ingest", "validate", "dedup", "decontam", "noise", "curate", "report")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
INTERNAL_COLUMNS = (
    "split",
    "source",
    "line",
    "raw",
    "source_id",
    "text_type",
    "label_type",
    "response_type",
    "extra",
)


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
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per stage run
    signer: Signer | None = None  # computes MinHash signatures (in process or on Dask: scale.runner)
    candidates: CandidateSource | None = None  # LSH candidates; None = banded in memory by dedup


@contextmanager
def stage_progress(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        yield progress


def ingest_stage(run: CurationRun, train_path: Path, test_path: Path, params_dir: Path) -> str:
    """Read both raw files; lines that are not records go to quarantine."""
    for split, path in (("train", train_path), ("test", test_path)):
        ingested, quarantined = read_input(path, split=split, params=run.params)
        run.ingested[split] = ingested
        run.input_rows[split] = ingested.height + quarantined.height
        run.quarantine = pl.concat([run.quarantine, quarantined])
    run.label_set = infer_label_set(run.params, params_dir, run.ingested["test"])
    run.train = run.ingested["train"]
    return f"{run.input_rows['train']} train, {run.input_rows['test']} test records"


def validate_stage(run: CurationRun) -> str:
    """Check every record against the raw-record contract; failures go to quarantine."""
    for split in ("train", "test"):
        valid, bad = validate_records(run.ingested[split], data=run.params.data, labels=run.label_set)
        run.validated[split] = valid
        run.quarantine = pl.concat([run.quarantine, bad])
    run.train = run.validated["train"]
    return f"{run.quarantine.height} quarantined"


def dedup_stage(run: CurationRun, note: ProgressNote | None = None) -> str:
    """Exact and near duplicates out; conflicting-label duplicates held for review."""
    result = drop_duplicates(
        run.train, cfg=run.params.dedup, signer=run.signer, candidates=run.candidates, progress=note
    )
    run.train, run.removed = result.kept, pl.concat([run.removed, result.removed])
    run.flags = pl.concat([run.flags, result.flags])
    return f"{result.removed.height} removed, {result.flags.height} conflicts"


def decontam_stage(run: CurationRun) -> str:
    """Train rows copying test rows out (the test split is never changed)."""
    result = remove_test_leaks(
        run.train, run.validated["test"], cfg=run.params.decontam, minhash=run.params.dedup, signer=run.signer
    )
    run.train, run.removed = result.kept, pl.concat([run.removed, result.removed])
    return f"{result.removed.height} test leaks"


def noise_stage(run: CurationRun, note: ProgressNote | None = None) -> str:
    """Flag likely label errors from out-of-fold probabilities (train only)."""
    params = run.params
    if params.data.task == "classification" and params.noise.enabled:
        embeddings = None
        if "embedding" in params.noise.features:
            from flows.embed import embed_texts  # loads a model: only when asked for

            embeddings = embed_texts(run.train["text"].to_list())
        flags, _ = flag_label_issues(
            run.train, label_set=run.label_set or [], cfg=params.noise, embeddings=embeddings, progress=note
        )
        run.flags = pl.concat([run.flags, flags])
    return f"{int((run.flags['issue'] == 'label_issue').sum())} label issues"


def curate_stage(run: CurationRun, reviews_path: Path | None) -> str:
    """Apply the review policy: flagged rows held unless a reviewer decided."""
    params = run.params
    reviews = reviews_path or (Path(params.review.decisions) if params.review.decisions else None)
    if reviews is not None:
        if not reviews.exists():
            raise InputFileError(f"{reviews}: reviews file not found")
        run.decisions = resolve_decisions(pl.read_parquet(reviews), policy=params.review.conflict_policy)
    applied = apply_review_policy(run.train, run.removed, run.flags, run.validated["train"], run.decisions)
    run.train, run.removed, run.flags = applied.kept, applied.removed, applied.flags
    return f"{run.train.height} curated train rows"


def report_stage(run: CurationRun) -> str:
    """Quality metrics (with the accounting check) and the HTML report."""
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
        top_flags=run.params.report.top_flags,
    )
    return "quality.json, report.html"


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
    run = CurationRun(params=params)
    scale = scale_params_from_dict(params.section("scale"))
    with (
        stage_progress(show_progress) as progress,
        scale_hooks(scale, params) as (run.signer, run.candidates),
    ):
        todo = STAGES[: STAGES.index(until) + 1]
        task = progress.add_task("curate", total=len(todo), note="") if progress else None

        def note(text: str) -> None:
            if progress is not None and task is not None:
                progress.update(task, note=text)

        stage_calls = {
            "ingest": lambda: ingest_stage(run, train_path, test_path, params_dir),
            "validate": lambda: validate_stage(run),
            "dedup": lambda: dedup_stage(run, note),
            "decontam": lambda: decontam_stage(run),
            "noise": lambda: noise_stage(run, note),
            "curate": lambda: curate_stage(run, reviews_path),
            "report": lambda: report_stage(run),
        }
        for name in todo:
            if progress is not None and task is not None:
                progress.update(task, description=f"curate: {name}", note="")
            started = time.perf_counter()
            summary = stage_calls[name]()
            run.stage_seconds[name] = round(time.perf_counter() - started, 3)
            if name == "decontam" and isinstance(run.signer, RememberedSignatures):
                run.signer.forget()  # nothing signs after decontam: free the signatures
            run.stages_run.append(name)
            log.info("%s: %s", name, summary)
            if progress is not None and task is not None:
                progress.update(task, advance=1, note=summary)
    run.signer = run.candidates = None  # they may hold a closed Dask cluster
    return run


@contextmanager
def scale_hooks(scale: ScaleParams, params: Params) -> Iterator[tuple[Signer, CandidateSource | None]]:
    """How a run computes MinHash signatures and LSH candidates (``params.yaml → scale``).

    Signatures: here, or sharded on Dask (``scale.runner``). Candidates: banded in memory by
    dedup itself (None), or from an index that Prefect tasks build in Redis
    (``scale.redis_host``). Either way they are identical, so the curated files are too; and
    the signatures are remembered, so decontam reuses those dedup computed.
    """
    local = RememberedSignatures(local_signer(params.dedup))
    if scale.runner != "dask" and scale.redis_host is None:
        yield local, None
        return
    # imports prefect, dask and redis: only when asked for
    from flows.distributed import distributed_signatures, on_dask, redis_candidate_pairs

    with on_dask(scale) if scale.runner == "dask" else nullcontext(scale) as scale:
        log.info(
            "scale: signatures %s, LSH index %s", scale.dask_address or "here", scale.redis_host or "here"
        )
        signer = local
        if scale.runner == "dask":
            signer = RememberedSignatures(
                lambda texts: distributed_signatures(texts, cfg=params.dedup, scale=scale)
            )
        candidates = None
        if scale.redis_host is not None:
            cfg = params.dedup

            def candidates(sig: np.ndarray) -> list[np.ndarray]:
                return [redis_candidate_pairs(sig, threshold=cfg.lsh_threshold, seed=cfg.seed, scale=scale)]

        yield signer, candidates


class RememberedSignatures:
    """A signer that keeps what it computed and computes only texts it has not seen.

    Dedup signs the distinct normalised train texts; decontam then signs the normalised texts
    of the rows dedup kept, all of which dedup has signed already.
    """

    def __init__(self, compute: Signer) -> None:
        self.compute = compute
        self.known = pl.DataFrame(schema={"text": pl.String, "_row": pl.Int64})
        self.signatures: np.ndarray | None = None

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        query = pl.DataFrame({"text": list(texts)}, schema={"text": pl.String})
        rows = query.join(self.known, on="text", how="left", maintain_order="left")["_row"]
        missing = query.filter(rows.is_null())["text"].unique(maintain_order=True)
        if len(missing):
            fresh = self.compute(missing.to_list())
            start = 0 if self.signatures is None else len(self.signatures)
            self.signatures = fresh if self.signatures is None else np.concatenate([self.signatures, fresh])
            added = pl.DataFrame({"text": missing, "_row": np.arange(start, start + len(missing))})
            self.known = pl.concat([self.known, added])
            if len(missing) == len(query):  # all new and distinct: already in query order
                return fresh
            rows = query.join(self.known, on="text", how="left", maintain_order="left")["_row"]
        if self.signatures is None:  # no texts at all
            return self.compute([])
        return self.signatures[rows.to_numpy()]

    def forget(self) -> None:
        """Drop what was remembered (the signatures of a million texts are ~0.5 GB)."""
        self.known = self.known.clear()
        self.signatures = None


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
