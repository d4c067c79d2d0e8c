"""Ingest: raw file content -> one canonical row per input record, or a quarantined line.

Pure: the caller reads the bytes (or the Parquet frame); nothing here touches the disk.
Every record keeps its 1-based line number and its raw text so that a quarantined row can be
traced back to the exact line of the exact file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any

import polars as pl

from schemas.params import ColumnMap, DataParams
from schemas.records import INGESTED_SCHEMA, QUARANTINE_SCHEMA

# Canonical fields and the JSON type each one had in the input, so that validation can say
# "text_not_string" instead of silently casting a number or a list to text.
MISSING = "missing"


class InputFileError(ValueError):
    """A whole-file problem: unknown format, unreadable file, missing text column."""


def json_type(value: Any) -> str:
    """Name the JSON type of a parsed value ("string", "number", "null", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    # non-strings keep a faithful representation; validation rejects them by their type column
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _field(record: dict[str, Any], name: str) -> tuple[str | None, str]:
    if name not in record:
        return None, MISSING
    value = record[name]
    return _as_text(value), json_type(value)


def _canonical(record: dict[str, Any], data: DataParams) -> dict[str, Any]:
    """Map one parsed record onto the canonical fields (id, text, label/response, extra)."""
    cols: ColumnMap = data.columns
    used: set[str] = set()
    row: dict[str, Any] = {}
    rid, rid_type = _field(record, cols.id)
    used.add(cols.id)
    # ids are kept as strings: 17 and "17" are the same row id
    row["source_id"] = rid if rid_type in ("string", "number") else None
    if data.task == "classification":
        row["text"], row["text_type"] = _field(record, cols.text)
        row["label"], row["label_type"] = _field(record, cols.label)
        row["response"], row["response_type"] = None, "null"
        used |= {cols.text, cols.label}
    else:
        if cols.prompt in record or cols.instruction not in record:
            text, text_type = _field(record, cols.prompt)
            resp, resp_type = _field(record, cols.response)
            used |= {cols.prompt, cols.response}
        else:
            text, text_type = _field(record, cols.instruction)
            extra_input, extra_type = _field(record, cols.input)
            if text_type == "string" and extra_type == "string" and extra_input.strip():
                text = f"{text}\n\n{extra_input}"
            resp, resp_type = _field(record, cols.output)
            used |= {cols.instruction, cols.input, cols.output}
        row.update(text=text, text_type=text_type, response=resp, response_type=resp_type)
        row["label"], row["label_type"] = None, "null"
    extra = {k: v for k, v in record.items() if k not in used}
    row["extra"] = json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None
    return row


def _quarantine_row(split: str, source: str, line: int, raw: str, reason: str, detail: str):
    return {
        "split": split,
        "source": source,
        "line": line,
        "id": None,
        "stage": "ingest",
        "reason": reason,
        "detail": detail,
        "raw": raw,
    }


# Records become a polars frame this many at a time: a Python dict per record costs far more
# memory than its row in a frame, so a million-line file never holds a million dicts at once.
ROWS_PER_FRAME = 50_000


class _Rows:
    """Canonical records of one file, turned into compact polars frames as they come."""

    def __init__(self, split: str, source: str) -> None:
        self.split, self.source = split, source
        self.pending: list[dict[str, Any]] = []
        self.frames: list[pl.DataFrame] = []

    def add(self, row: dict[str, Any]) -> None:
        row["split"], row["source"] = self.split, self.source
        self.pending.append(row)
        if len(self.pending) >= ROWS_PER_FRAME:
            self._flush()

    def _flush(self) -> None:
        self.frames.append(pl.DataFrame(self.pending, schema=INGESTED_SCHEMA))
        self.pending = []

    def result(self, bad: list[dict[str, Any]]) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(ingested rows with ids, quarantined lines)."""
        self._flush()
        ingested = pl.concat(self.frames, rechunk=True)
        return assign_ids(ingested), pl.DataFrame(bad, schema=QUARANTINE_SCHEMA)


def parse_jsonl(content: bytes, *, split: str, source: str, data: DataParams):
    """Parse JSON Lines content. Blank lines are skipped (they hold no record).

    Returns:
        (ingested, quarantine): canonical rows, and lines that could not become a record
        (invalid_utf8, invalid_json, not_a_json_object) with the raw line.
    """
    rows = _Rows(split, source)
    bad: list[dict[str, Any]] = []
    for lineno, raw_bytes in enumerate(content.splitlines(), start=1):
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raw = raw_bytes.decode("utf-8", errors="replace")
            bad.append(_quarantine_row(split, source, lineno, raw, "invalid_utf8", str(exc)))
            continue
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            bad.append(_quarantine_row(split, source, lineno, raw, "invalid_json", exc.msg))
            continue
        if not isinstance(record, dict):
            detail = f"line is a JSON {json_type(record)}, not an object"
            bad.append(_quarantine_row(split, source, lineno, raw, "not_a_json_object", detail))
            continue
        rows.add({"line": lineno, "raw": raw, **_canonical(record, data)})
    return rows.result(bad)


def parse_csv(content: bytes, *, split: str, source: str, data: DataParams):
    """Parse CSV content with a header row; quoted fields may span lines.

    Raises:
        InputFileError: no header, or the header lacks the text column.
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # decode line by line so one bad line is quarantined rather than the whole file lost
        text = content.decode("utf-8-sig", errors="replace")
        bad_utf8 = {n for n, b in enumerate(content.splitlines(), start=1) if _undecodable(b)}
        if not bad_utf8:
            raise InputFileError(f"{source}: not UTF-8 ({exc})") from exc
    else:
        bad_utf8 = set()
    physical = text.splitlines()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration as exc:
        raise InputFileError(f"{source}: empty CSV file (no header row)") from exc
    except csv.Error as exc:
        raise InputFileError(f"{source}: unreadable CSV header ({exc})") from exc
    _require_text_column(header, source, data)
    rows = _Rows(split, source)
    bad: list[dict[str, Any]] = []
    start = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            end = reader.line_num
            raw = "\n".join(physical[start - 1 : end])
            bad.append(_quarantine_row(split, source, start, raw, "malformed_csv", str(exc)))
            start = end + 1
            continue
        end = reader.line_num
        raw = "\n".join(physical[start - 1 : end])
        lineno, start = start, end + 1
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        if any(n in bad_utf8 for n in range(lineno, end + 1)):
            bad.append(_quarantine_row(split, source, lineno, raw, "invalid_utf8", "bytes are not UTF-8"))
            continue
        if len(fields) != len(header):
            detail = f"{len(fields)} fields, header has {len(header)}"
            bad.append(_quarantine_row(split, source, lineno, raw, "wrong_field_count", detail))
            continue
        # CSV has no types and no null: an empty field is read as null
        record = {h: (v if v != "" else None) for h, v in zip(header, fields, strict=True)}
        rows.add({"line": lineno, "raw": raw, **_canonical(record, data)})
    return rows.result(bad)


def _undecodable(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _require_text_column(columns: list[str], source: str, data: DataParams) -> None:
    cols = data.columns
    if data.task == "classification":
        needed = [cols.text]
    elif cols.prompt in columns:
        needed = [cols.prompt]
    else:
        needed = [cols.instruction]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise InputFileError(
            f"{source}: missing text column {missing[0]!r} (columns: {columns}); "
            "map it under data.columns in params.yaml"
        )


def parse_frame(frame: pl.DataFrame, *, split: str, source: str, data: DataParams):
    """Canonicalise an already-typed frame (Parquet). Line numbers are 1-based row numbers."""
    _require_text_column(frame.columns, source, data)
    rows = _Rows(split, source)
    for lineno, record in enumerate(frame.iter_rows(named=True), start=1):
        raw = json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)
        rows.add({"line": lineno, "raw": raw, **_canonical(record, data)})
    return rows.result([])


def text_hash(texts: pl.Expr) -> pl.Expr:
    """Stable content hash of a text column (sha1 hex, 16 chars), identical across processes."""
    return texts.map_elements(
        lambda t: hashlib.sha1(t.encode("utf-8")).hexdigest()[:16], return_dtype=pl.String
    )


def assign_ids(frame: pl.DataFrame) -> pl.DataFrame:
    """Give every row an id: the input id as a string, or one derived from its content.

    A derived id is ``<split>-<sha1(text, label, response)[:12]>``, stable when lines move;
    repeated identical records get ``-2``, ``-3``... in line order.
    """
    key = pl.concat_str(
        [pl.col("text").fill_null(""), pl.col("label").fill_null(""), pl.col("response").fill_null("")],
        separator="\x1f",
    )
    derived = pl.col("split") + "-" + text_hash(key).str.slice(0, 12)
    frame = frame.sort("line").with_columns(_derived=derived)
    occurrence = pl.col("_derived").cum_count().over("_derived")
    frame = frame.with_columns(
        _derived=pl.when(occurrence > 1)
        .then(pl.col("_derived") + "-" + occurrence.cast(pl.String))
        .otherwise(pl.col("_derived"))
    )
    return frame.with_columns(
        id=pl.coalesce(pl.col("source_id"), pl.col("_derived")),
        text_hash=text_hash(pl.col("text").fill_null("")),
    ).drop("_derived")
