"""A curation run's files: reading the raw inputs, and writing the outputs all or nothing.

Outputs are written into a fresh directory beside ``--out``, sealed with manifest.json, and
swapped in by rename under a lock, the way DVC's cache and SQLite's journal make a write
atomic: a reader sees the previous run or the new one, never a mix, and gate and train
verify the manifest before they trust a file.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
from filelock import FileLock, Timeout

from curation.ingest import InputFileError, assign_ids, detect_task, parse_input
from schemas.manifest import MANIFEST_FILE, describe_files, write_manifest
from schemas.params import DataParams, ReportParams, load_label_set
from schemas.records import (
    HELD_SCHEMA,
    HOLD_REASON,
    INGESTED_SCHEMA,
    QUARANTINE_SCHEMA,
    CuratedExample,
    Flag,
    HeldRow,
    QuarantinedLine,
    RemovedRow,
)

log = logging.getLogger(__name__)

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
# names a curate run writes (besides `<step>_train.parquet`); anything else in --out is kept
CURATE_FILES = (
    "train.parquet",
    "test.parquet",
    "removed.parquet",
    "held.parquet",
    "flags.parquet",
    "quarantine.parquet",
    "labels.json",
    "quality.json",
    "report.html",
    MANIFEST_FILE,
)


class OutputError(RuntimeError):
    """The output directory cannot be written (not a directory, locked by another run)."""


# ── inputs ───────────────────────────────────────────────────────────────────────────


def read_input(
    path: Path, *, split: str, data: DataParams, content: bytes | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read one raw file into (ingested, quarantine); whole-file problems raise InputFileError."""
    content = _read_bytes(path) if content is None else content
    suffix = "".join(path.suffixes).lower()  # "train.jsonl.gz": the format and the gzip
    if suffix.endswith((".jsonl", ".json", ".csv", ".tsv")):
        _refuse_wide_encodings(path, content)
    return parse_input(content, suffix=suffix, split=split, source=str(path), data=data)


# byte order marks of the encodings that are not ASCII-compatible (UTF-32 before UTF-16:
# the UTF-32-LE mark starts with the UTF-16-LE one)
WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32-LE"),
    (b"\x00\x00\xfe\xff", "UTF-32-BE"),
    (b"\xff\xfe", "UTF-16-LE"),
    (b"\xfe\xff", "UTF-16-BE"),
)
NUL_SHARE_WIDE = 0.2  # ASCII text saved as UTF-16 without a mark: every other byte is NUL


def _refuse_wide_encodings(path: Path, content: bytes) -> None:
    """A UTF-16/32 text file is one whole-file problem, not every line quarantined as
    invalid_utf8: say so, with the fix (Windows tools save "Unicode" text as UTF-16)."""
    fix = f"save it as UTF-8, e.g. iconv -f {{}} -t UTF-8 {path} > {path.stem}.utf8{path.suffix}"
    for bom, name in WIDE_BOMS:
        if content.startswith(bom):
            raise InputFileError(f"{path}: {name} text (byte order mark {bom.hex(' ')}); {fix.format(name)}")
    head = content[:4096]
    if head and head.count(0) / len(head) >= NUL_SHARE_WIDE:
        raise InputFileError(
            f"{path}: {head.count(0)} NUL bytes in the first {len(head)}: UTF-16/32 text without a "
            f"byte order mark?; {fix.format('UTF-16')}"
        )


def resolve_task(path: Path, content: bytes, data: DataParams) -> DataParams:
    """``data.task: auto`` decided once, from the first records of the train file (logged)."""
    if data.task != "auto":
        return data
    suffix = "".join(path.suffixes).lower()
    task = detect_task(content, suffix=suffix, source=str(path), data=data)
    log.info("data.task: auto -> %s (from the first records of %s)", task, path)
    return dataclasses.replace(data, task=task)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise InputFileError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read ({exc.strerror})") from exc


class Ingested(NamedTuple):
    train: pl.DataFrame
    test: pl.DataFrame
    quarantine: pl.DataFrame
    input_rows: dict[str, int]
    label_set: list[str] | None
    data: DataParams  # the data section with `task: auto` resolved: what later steps read


def read_inputs(*, train_path: Path, test_path: Path | None, data: DataParams, params_dir: Path) -> Ingested:
    """Read the raw train (and test) file, then ``data.extra_train``; lines that are not records
    go to quarantine."""
    frames: dict[str, pl.DataFrame] = {}
    quarantine = [pl.DataFrame(schema=QUARANTINE_SCHEMA)]
    input_rows = {}
    train_content = _read_bytes(train_path)
    data = resolve_task(train_path, train_content, data)
    for split, path in (("train", train_path), ("test", test_path)):
        if path is None:  # no test split: an empty one (decontam refuses to run without one)
            frames[split], input_rows[split] = assign_ids(pl.DataFrame(schema=INGESTED_SCHEMA)), 0
            continue
        content = train_content if split == "train" else None
        ingested, quarantined = read_input(path, split=split, data=data, content=content)
        frames[split] = ingested
        input_rows[split] = ingested.height + quarantined.height
        quarantine.append(quarantined)
    for extra in read_extra_train(data):  # e.g. reviewed production answers; each keeps its source and lines
        frames["train"] = pl.concat([frames["train"], extra.ingested])
        input_rows["train"] += extra.ingested.height + extra.quarantine.height
        quarantine.append(extra.quarantine)
    label_set = infer_label_set(data, params_dir, frames["test"] if test_path else frames["train"])
    return Ingested(frames["train"], frames["test"], pl.concat(quarantine), input_rows, label_set, data)


class ExtraInput(NamedTuple):
    ingested: pl.DataFrame
    quarantine: pl.DataFrame


# what a directory in data.extra_train contributes: the line formats review pull-predictions
# writes and people export (the Parquet files beside reviewed.jsonl are local review records)
EXTRA_TRAIN_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.csv")


def extra_train_files(data: DataParams) -> list[Path]:
    """The files ``data.extra_train`` names: each file as given, each directory's
    :data:`EXTRA_TRAIN_PATTERNS` files (not recursive, sorted by name, hidden ones skipped).

    Raises:
        InputFileError: a listed file that does not exist (a missing directory adds nothing).
    """
    files: list[Path] = []
    for name in data.extra_train:
        path = Path(name)
        if path.is_dir():
            found = {p for pattern in EXTRA_TRAIN_PATTERNS for p in path.glob(pattern) if p.is_file()}
            files.extend(sorted((p for p in found if not p.name.startswith(".")), key=lambda p: p.name))
        elif not path.exists():
            if not path.suffix:  # a drop-box directory not made yet (a copied params.yaml): no rows
                log.info("%s: no such directory (data.extra_train): no extra train rows", path)
                continue
            raise InputFileError(f"{path}: file not found (data.extra_train)")
        else:
            files.append(path)
    return files


def read_extra_train(data: DataParams) -> list[ExtraInput]:
    """The ``data.extra_train`` files (:func:`extra_train_files`), read like the train file
    (split ``train``).

    A directory (the default ``data/feedback``, where `curagate review pull-predictions` writes
    reviewed.jsonl) adds whatever it holds, so the DVC curate stage can depend on the directory
    and new reviewed rows re-curate without an edit. An empty file (a feedback file with no
    reviewed rows yet) adds nothing; a missing file is an error like a missing train file. Ids
    must be unique across all train files: a repeated id is quarantined as ``duplicate_id`` by
    validation.
    """
    out = []
    for path in extra_train_files(data):
        if path.is_file() and path.stat().st_size == 0:
            log.info("%s: empty extra train file, no rows", path)
            continue
        out.append(ExtraInput(*read_input(path, split="train", data=data)))
    return out


def infer_label_set(data: DataParams, params_dir: Path, seen_in: pl.DataFrame) -> list[str] | None:
    """The label set from params.yaml, or (when absent) the labels seen in the test split."""
    if data.task != "classification":
        return None
    explicit = load_label_set(data.labels, params_dir)
    if explicit is not None:
        return explicit
    seen = seen_in.filter(pl.col("label_type").is_in(["string", "number"]))["label"]
    labels = sorted(seen.drop_nulls().unique().to_list())
    if not labels:
        raise InputFileError("no label set: data.labels is null and the input has no labels")
    return labels


def read_reviews(path: Path | None) -> pl.DataFrame | None:
    """reviews.parquet from `curagate review pull`, or None."""
    if path is None:
        return None
    if not path.is_file():
        raise InputFileError(f"{path}: reviews file not found")
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a corrupt file
        raise InputFileError(f"{path}: unreadable reviews Parquet ({exc})") from exc


# ── outputs ──────────────────────────────────────────────────────────────────────────


def public_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Curated rows as users see them: internal columns dropped, extra input columns restored."""
    out = frame.sort("line")
    if "extra" in out.columns and out["extra"].drop_nulls().len():
        try:
            # the Series method infers the struct from every row (polars 2's Expr one needs a dtype)
            extras = out["extra"].str.json_decode(infer_schema_length=None).struct.unnest()
            clash = [c for c in extras.columns if c in out.columns]
            out = pl.concat([out, extras.drop(clash)], how="horizontal")
        except pl.exceptions.PolarsError as exc:  # mixed types across rows: keep the JSON text
            log.warning("extra columns kept as JSON text (%s)", exc)
            out = out.with_columns(pl.col("extra").alias("extra_json"))
    drop = [c for c in INTERNAL_COLUMNS if c in out.columns]
    if "response" in out.columns and out["response"].null_count() == out.height:
        drop.append("response")
    return out.drop(drop)


def output_frames(values: dict[str, Any], stages_run: list[str]) -> dict[str, pl.DataFrame | str]:
    """The files of the steps that ran: name -> frame (parquet) or text (json, html)."""
    files: dict[str, pl.DataFrame | str] = {}
    files["quarantine.parquet"] = QuarantinedLine.validate(
        values["quarantine"].sort("split", "source", "line")
    )
    removed, held = values["removed"], values.get("held")
    validated = values.get("validated_train")
    if held is not None:  # the review policy ran: the curated split exists
        files["train.parquet"] = CuratedExample.validate(public_rows(values["train"]))
        files["test.parquet"] = CuratedExample.validate(public_rows(values["test"]))
    elif values.get("train") is not None:
        files[f"{stages_run[-1]}_train.parquet"] = values["train"].sort("line")
    if "dedup" in stages_run:
        if held is None:  # stopped before the policy: rows a detector holds are held, not removed
            held = pending_rows(removed, values["flags"])
            removed = removed.filter(pl.col("reason") != HOLD_REASON)
        removed = with_origin(removed, validated)
        files["removed.parquet"] = RemovedRow.validate(removed.sort("line", "id")).drop("split")
        files["flags.parquet"] = Flag.validate(values["flags"].sort("issue", "id"))
    if held is not None:
        held = with_origin(held, validated)
        files["held.parquet"] = HeldRow.validate(held.sort("line", "id")).drop("split")
    if "label_set" in values:  # [] for instruction/chat data: no label set, but the file is there
        files["labels.json"] = json.dumps(values["label_set"] or [], indent=1) + "\n"
    if values.get("metrics"):
        files["quality.json"] = json.dumps(values["metrics"], indent=2, sort_keys=True) + "\n"
    if values.get("report_html") is not None:
        files["report.html"] = values["report_html"]
    return files


def with_origin(frame: pl.DataFrame, validated: pl.DataFrame | None) -> pl.DataFrame:
    """Removed or held rows with ``source`` (the input file each came from) and, for
    instruction/chat data, the ``response`` (what a reviewer of a held row needs to see).

    Both come from the validated train rows by id (unique there: validation quarantines a
    repeated id). ``response`` goes right after ``text``, ``source`` last; a column the frame
    already has is left as it is.
    """
    if validated is None:
        return frame
    wanted = ["source"]
    if "response" in validated.columns and validated["response"].drop_nulls().len():
        wanted.append("response")
    add = [c for c in wanted if c in validated.columns and c not in frame.columns]
    if not add:
        return frame
    out = frame.join(validated.select("id", *add), on="id", how="left", maintain_order="left")
    order = [c for c in frame.columns if c != "source"]
    if "response" in add and "text" in order:
        order.insert(order.index("text") + 1, "response")
    elif "response" in out.columns and "response" not in order:
        order.append("response")
    return out.select(*order, "source")


def pending_rows(removed: pl.DataFrame, flags: pl.DataFrame) -> pl.DataFrame:
    """Rows a detector holds for review (before the review policy ran), as held rows."""
    issues = flags.select("id", "issue").unique("id", keep="first", maintain_order=True)
    return (
        removed.filter(pl.col("reason") == HOLD_REASON)
        .join(issues, on="id", how="left")
        .with_columns(pl.lit("pending").alias("status"))
        .select(list(HELD_SCHEMA))
        .cast(HELD_SCHEMA)
    )


def write_outputs(files: dict[str, pl.DataFrame | str], out_dir: Path) -> list[Path]:
    """Write ``files`` into ``out_dir`` all or nothing, sealed with manifest.json.

    Files already in ``out_dir`` that a curate run does not write (gate.json, reviews.parquet,
    your own) are kept; a previous run's curate files are replaced as a whole.

    Raises:
        OutputError: ``out_dir`` is a file, or another run holds its lock.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory; choose another --out")
    shown, out_dir = out_dir, out_dir.resolve()  # a symlinked --out: its target is swapped
    cwd = Path.cwd().resolve()
    if out_dir == cwd or out_dir in cwd.parents:
        raise OutputError(f"{shown}: --out must be a directory of its own, not this one or a parent of it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir):
        recover(out_dir)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700; others read curated data
        try:
            for name, content in files.items():
                path = staging / name
                if isinstance(content, pl.DataFrame):
                    content.write_parquet(path, statistics=False)
                else:
                    path.write_text(content, encoding="utf-8")
                _fsync_file(path)
            write_manifest(staging, describe_files(staging, list(files)))
            _carry_over(out_dir, staging)
            _fsync_dir(staging)
            _swap_in(staging, out_dir)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise OutputError(f"{shown}: cannot write the outputs ({exc})") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return [out_dir / name for name in [*files, MANIFEST_FILE]]


def _is_curate_file(name: str) -> bool:
    return name in CURATE_FILES or name.endswith("_train.parquet")


def _carry_over(out_dir: Path, staging: Path) -> None:
    """Keep what others put in ``out_dir`` (gate.json, reviews.parquet): hard links, no copies."""
    if not out_dir.is_dir():
        return
    for entry in out_dir.iterdir():
        if _is_curate_file(entry.name):
            continue
        target = staging / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, symlinks=True)
            continue
        try:
            os.link(entry, target)
        except OSError:
            shutil.copy2(entry, target)


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``staging`` with two renames (recover() mends a crash between them)."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    _fsync_dir(out_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover(out_dir: Path) -> None:
    """Mend what a killed run left beside ``out_dir``: put the previous run back if the swap
    was cut between its two renames, and remove half-written staging directories."""
    parent, name = out_dir.parent, glob.escape(out_dir.name)
    olds = sorted(parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not out_dir.exists() and olds:
        log.warning("%s: restoring the previous complete run from %s (a run was killed)", out_dir, olds[-1])
        os.rename(olds.pop(), out_dir)
    for leftover in [*olds, *parent.glob(f".{name}.new-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """One writer per output directory; a second one fails at once and says why."""
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise OutputError(
            f"{out_dir}: another curagate run is writing here (lock {lock_path}); wait for it to finish"
        ) from exc
    try:
        yield
    finally:
        lock.release()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    """Make the directory's entries durable (a rename is only as safe as its directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_planted(report: ReportParams, row_ids: pl.Series) -> pl.DataFrame | None:
    """The demo's planted faults (``report.planted``), or None: not set, the file is absent,
    or its planted rows are not among ``row_ids`` (the truth of the demo's dirty split says
    nothing about another train file; both skips are logged).

    Raises:
        InputFileError: the file is there but unreadable or not a planted file.
    """
    if report.planted is None:
        return None
    path = Path(report.planted)
    if not path.exists():  # the bundled params name the demo's truth file; other inputs have none
        log.warning("%s: no planted file (report.planted; `curagate demo-data` writes it): skipped", path)
        return None
    try:
        planted = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InputFileError(
            f"{path}: cannot read the planted file (report.planted): {exc}; "
            "run `curagate demo-data` first, or set report.planted: null"
        ) from exc
    missing = sorted({"id", "line", "kind", "edit", "source"} - set(planted.columns))
    if missing:
        raise InputFileError(f"{path}: not a planted file (report.planted): missing columns {missing}")
    foreign = set(planted.filter(pl.col("kind") != "malformed")["id"].to_list()) - set(row_ids.to_list())
    if foreign:
        log.warning("%s: %d planted rows are not rows of this train input: skipped", path, len(foreign))
        return None
    return planted
