"""Ingest: raw file content -> one canonical row per input record, or a quarantined line.

Pure: the caller reads the bytes; nothing here touches the disk. ``parse_input`` decides the
format; every record keeps its 1-based line number and its raw text so that a quarantined
row can be traced back to the exact line of the exact file.

Formats (``parse_input``'s ``suffix``, case-insensitive; a trailing ``.gz`` is ignored):
- ``.jsonl`` / ``.ndjson``: one JSON object a line.
- ``.json``: a JSON array of objects when the content starts with ``[`` (a record's ``line``
  is the line its element starts on, its ``raw`` the element's own text); anything else is
  read as JSON Lines.
- ``.csv``: a header row, then records; quoted fields may span lines.
- ``.parquet``: typed columns; ``line`` is the 1-based row number.
Gzip is detected from the content (its magic bytes), whatever the suffix. A UTF-8 byte order
mark is dropped.

Accounting: every line of a JSON Lines file (``bytes.splitlines``: ``\\n``, ``\\r\\n`` or
``\\r``), and every record of a CSV file, becomes exactly one ingested or quarantined row, so
input rows == lines (== records + blank lines for CSV). A blank or whitespace-only line is
quarantined with reason ``blank_line``: it holds no record, but counting it keeps "input rows"
equal to what ``wc -l`` shows; a report that wants a rate of *bad records* can leave
``blank_line`` out.

Quarantine reasons given here (see ``schemas.records.INGEST_REASONS``): ``blank_line``,
``invalid_utf8`` (bytes that are not UTF-8, or a ``\\ud800``-style lone surrogate escape that
no UTF-8 text can hold), ``invalid_json`` (including ``NaN``/``Infinity``, which Python's json
accepts but JSON does not, and integers too long to convert), ``too_deep`` (nested deeper than
``MAX_JSON_DEPTH``), ``duplicate_key`` (an object that repeats a key, which JSON parsers
resolve differently; checked for the canonical keys, see ``_check_value``),
``not_a_json_object``, ``wrong_field_count`` and ``malformed_csv``.
Typed problems of a field (missing, null, wrong type: ``text_wrong_type`` ...) are decided
later by validation from the ``*_type`` columns set here.

Values that are not JSON (Parquet columns) keep a faithful text form, in ``extra`` too:
date/time values as ISO 8601 text, durations as ISO 8601 ``P<d>DT<s>.<us>S``, Decimals as their
exact decimal string, binary as base64, NaN/Infinity floats as the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"``. Their ``*_type`` is ``binary``, ``datetime``, ``date``,
``time`` or ``duration`` (a Decimal is a ``number``), so a binary or date *text* column is a
``text_wrong_type`` quarantine.

Whole-file problems raise ``InputFileError("{source}: reason")``: unknown suffix, corrupt
gzip, unreadable Parquet, an empty file or one with no records, a CSV header without the text
column or with repeated names, a JSON Lines file where no line is an object or no object has
the text column, a JSON array that does not parse.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as dt
import gzip
import io
import itertools
import json
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import polars as pl
import polars_hash  # noqa: F401  # registers the .nchash namespace: sha1 in Rust (text_hash)

from schemas.params import ColumnMap, DataParams
from schemas.records import CHAT_REASONS, INGESTED_SCHEMA, QUARANTINE_SCHEMA

# *_type value of an absent field; validation turns it into missing_<field>
MISSING = "missing"

# Deeper JSON is quarantined (too_deep). Far deeper than any real record, and far below
# Python's recursion limit (~1000), so this limit and not the caller's stack depth decides:
# the same line is treated the same way wherever parse_input runs.
MAX_JSON_DEPTH = 64

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
FORMATS = {"jsonl": "jsonl", "ndjson": "jsonl", "json": "json", "csv": "csv", "parquet": "parquet"}


class InputFileError(ValueError):
    """A whole-file problem: unknown format, unreadable file, missing text column."""


class _NonStandardJSON(ValueError):
    """NaN, Infinity or -Infinity: accepted by Python's json module, not valid JSON."""


class _DuplicateKey(ValueError):
    """An object names one key twice: JSON parsers disagree on which value counts."""


def _reject_constant(name: str) -> Any:
    raise _NonStandardJSON(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _DuplicateKey(f"key {repeated!r} appears more than once; parsers disagree on its value")
    return record


# one decoder, built once: json.loads(..., parse_constant=...) would build one a line
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# ~35% slower (a Python call per object): used only on lines that may repeat a key
_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
# a JSON string escape for a UTF-16 surrogate; only lines holding one need the Unicode check
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace
_WHITESPACE_BYTES = re.compile(rb"[ \t\n\r]*")


def _skip_ws(text: str, pos: int) -> int:
    """Offset of the first character at or after ``pos`` that is not JSON whitespace."""
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def parse_input(
    content: bytes, *, suffix: str, split: str, source: str, data: DataParams
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse one raw input file's bytes, in the format its suffix names.

    Args:
        content: the file's bytes (gzip-compressed or not).
        suffix: the file's suffix(es), e.g. ``".jsonl"``, ``".jsonl.gz"`` or
            ``"".join(path.suffixes)``; only the last one that is not ``.gz`` counts.
        split: ``train`` or ``test``.
        source: the file's name, used in every message and in the ``source`` column.
        data: the ``data`` section of the params.

    Returns:
        (ingested, quarantine): canonical rows with ids, and records that could not become one.

    Raises:
        InputFileError: a whole-file problem, the message starts with ``"{source}: "``.
    """
    fmt = _format_of(suffix, source)
    data = _resolved(data, content, suffix, source)
    if content.startswith(GZIP_MAGIC):
        content = _gunzip(content, source)
    if fmt == "csv":
        return parse_csv(content, split=split, source=source, data=data)
    if fmt == "parquet":
        try:
            frame = pl.read_parquet(io.BytesIO(content))
        except Exception as exc:  # polars raises several types for a corrupt file
            raise InputFileError(f"{source}: unreadable Parquet ({exc})") from exc
        return parse_frame(frame, split=split, source=source, data=data)
    if fmt == "json":
        match = _WHITESPACE_BYTES.match(content, len(UTF8_BOM) if content.startswith(UTF8_BOM) else 0)
        if match and content[match.end() : match.end() + 1] == b"[":
            return parse_json_array(content, split=split, source=source, data=data)
    return parse_jsonl(content, split=split, source=source, data=data)


# `data.task: auto` looks at this many records at the start of the train file
DETECT_RECORDS = 100


def detect_task(content: bytes, *, suffix: str, source: str, data: DataParams) -> str:
    """The task of a file's records, for ``data.task: auto``: ``chat`` when the first records
    carry a messages field, ``instruction`` when they carry prompt/response or
    instruction/output, else ``classification`` (each record votes; ties go in that order).

    A file this cannot read is left to ``parse_input`` to refuse with its reason.
    """
    fmt = _format_of(suffix, source)
    if content.startswith(GZIP_MAGIC):
        content = _gunzip(content, source)
    if content.startswith(UTF8_BOM):
        content = content[len(UTF8_BOM) :]
    keys: list[set[str]] = []
    if fmt == "csv":
        first = content.split(b"\n", 1)[0].decode("utf-8", errors="replace")
        keys = [set(next(csv.reader([first]), []))]
    elif fmt == "parquet":
        try:
            keys = [set(pl.read_parquet_schema(io.BytesIO(content)))]
        except Exception:  # polars raises several types for a corrupt file; parse_input says why
            keys = []
    else:
        text = content.decode("utf-8", errors="replace")
        start = _skip_ws(text, 0)
        if text.startswith("[", start):  # a JSON array: its first elements
            pos = start + 1
            while len(keys) < DETECT_RECORDS:
                try:
                    value, end = _DECODER.raw_decode(text, _skip_ws(text, pos))
                except (ValueError, RecursionError):
                    break
                if isinstance(value, dict):
                    keys.append(set(value))
                pos = _skip_ws(text, end) + 1
        else:
            for line in itertools.islice(text.splitlines(), DETECT_RECORDS):
                try:
                    value = _DECODER.decode(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(value, dict):
                    keys.append(set(value))
    return _task_of_keys(keys, data)


def _task_of_keys(keys: list[set[str]], data: DataParams) -> str:
    cols = data.columns
    votes = {"chat": 0, "instruction": 0, "classification": 0}
    for record in keys:
        if cols.messages in record:
            votes["chat"] += 1
        elif {cols.prompt, cols.response} <= record or {cols.instruction, cols.output} <= record:
            votes["instruction"] += 1
        else:
            votes["classification"] += 1
    return max(votes, key=lambda task: votes[task])  # dicts keep order: ties go to chat first


def _resolved(data: DataParams, content: bytes, suffix: str, source: str) -> DataParams:
    """``data`` with ``task: auto`` decided from this file (read_inputs decides once, from train)."""
    if data.task != "auto":
        return data
    return dataclasses.replace(data, task=detect_task(content, suffix=suffix, source=source, data=data))


def _format_of(suffix: str, source: str) -> str:
    parts = [p for p in suffix.lower().split(".") if p]
    if parts and parts[-1] == "gz":
        parts.pop()
    if not parts or parts[-1] not in FORMATS:
        raise InputFileError(
            f"{source}: unknown format '{suffix}' (expected .jsonl, .ndjson, .json, .csv or "
            ".parquet, optionally gzip-compressed)"
        )
    return FORMATS[parts[-1]]


def _gunzip(content: bytes, source: str) -> bytes:
    try:
        return gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise InputFileError(f"{source}: corrupt gzip data ({exc})") from exc


def json_type(value: Any) -> str:
    """Name the JSON type of a parsed value ("string", "number", "null", ...).

    Values that JSON has no type for (from Parquet) are named by kind: "binary", "datetime",
    "date", "time", "duration"; a Decimal is a "number".
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "binary"
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, dt.time):
        return "time"
    if isinstance(value, dt.timedelta):
        return "duration"
    return type(value).__name__


def _scalar_text(value: Any) -> Any:
    """The text form of a value JSON cannot hold (see the module docstring); others unchanged."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        seconds = value.seconds + value.microseconds / 1e6
        return f"P{value.days}DT{seconds:.6f}S"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _json_safe(value: Any) -> Any:
    """A copy of ``value`` with every non-JSON value replaced by its text form."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return _scalar_text(value)


def _dumps(value: Any) -> str:
    """Canonical JSON text (sorted keys, UTF-8), for JSON values and Parquet values alike."""
    try:
        # fast path: JSON values need no conversion; default= catches bytes, dates, Decimals
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=_scalar_text, allow_nan=False)
    except ValueError:  # a NaN/Infinity float (only Parquet has them: JSON lines reject them)
        return json.dumps(_json_safe(value), ensure_ascii=False, sort_keys=True)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    # non-strings keep a faithful representation; validation rejects them by their type column
    text = _scalar_text(value)
    return text if isinstance(text, str) else _dumps(value)


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
    elif data.task == "chat":
        used.add(cols.messages)
        turns, reason, detail = check_messages(record[cols.messages] if cols.messages in record else _ABSENT)
        if reason is not None:
            row["_problem"] = (reason, detail)
            turns = []
        row.update(text=render_chat_context(turns), text_type="string", response_type="string")
        row["response"] = turns[-1]["content"] if turns else None
        row["label"], row["label_type"] = None, "null"
        extra = {k: v for k, v in record.items() if k not in used}
        # the whole conversation, for training with the chat template (a JSON text column)
        extra["messages"] = json.dumps(turns, ensure_ascii=False, sort_keys=True)
        row["extra"] = _dumps(extra)
        return row
    else:
        if cols.prompt in record or cols.instruction not in record:
            text, text_type = _field(record, cols.prompt)
            resp, resp_type = _field(record, cols.response)
            used |= {cols.prompt, cols.response}
        else:
            text, text_type = _field(record, cols.instruction)
            extra_input, extra_type = _field(record, cols.input)
            if text_type == "string" and extra_type == "string" and extra_input and extra_input.strip():
                text = f"{text}\n\n{extra_input}"
            resp, resp_type = _field(record, cols.output)
            used |= {cols.instruction, cols.input, cols.output}
        row.update(text=text, text_type=text_type, response=resp, response_type=resp_type)
        row["label"], row["label_type"] = None, "null"
    extra = {k: v for k, v in record.items() if k not in used}
    row["extra"] = _dumps(extra) if extra else None
    return row


# ── chat records: a `messages` list of {role, content} turns ─────────────────────────────
CHAT_ROLES = ("system", "user", "assistant")
_ABSENT = object()  # a record without the messages field


def check_messages(value: Any) -> tuple[list[dict[str, Any]], str | None, str]:
    """Check one record's ``messages`` value: (turns, reason, detail); reason None when valid.

    A valid conversation is a list of objects with a ``role`` (system, user or assistant) and
    a non-blank string ``content``: an optional system turn first, then user and assistant
    turns alternating, starting with the user and ending with the assistant's answer. A JSON
    text (a CSV or Parquet string column) is parsed first. Reasons, in the order checked:
    ``missing_messages``, ``null_messages``, ``messages_not_a_list``, ``turn_not_an_object``,
    ``content_not_a_string``, ``unknown_role``, ``empty_turn``, ``system_not_first``,
    ``roles_not_alternating``, ``no_assistant_turn``.
    """
    if value is _ABSENT:
        return [], "missing_messages", "field 'messages' is missing"
    if value is None:
        return [], "null_messages", "field 'messages' is null"
    if isinstance(value, str):
        try:
            value = _DECODER.decode(value)
        except ValueError as exc:  # JSONDecodeError, NaN/Infinity
            return [], "messages_not_a_list", f"messages is text that is not JSON ({exc})"
        except RecursionError:
            return [], "messages_not_a_list", f"messages nested deeper than {MAX_JSON_DEPTH} levels"
    if not isinstance(value, (list, tuple)):
        return [], "messages_not_a_list", f"messages is a JSON {json_type(value)}, not a list of turns"
    turns = list(value)
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return [], "turn_not_an_object", f"turn {k} is a JSON {json_type(turn)}, not an object"
        if not isinstance(turn.get("content"), str):
            what = json_type(turn["content"]) if "content" in turn else "missing"
            return [], "content_not_a_string", f"turn {k}: content is {what}, not a string"
        if turn.get("role") not in CHAT_ROLES:
            return [], "unknown_role", f"turn {k}: role {turn.get('role')!r} is not one of {list(CHAT_ROLES)}"
    for k, turn in enumerate(turns):
        if not turn["content"].strip():
            return [], "empty_turn", f"turn {k} ({turn['role']}) is empty or whitespace only"
    roles = [t["role"] for t in turns]
    if "system" in roles[1:]:
        return [], "system_not_first", f"turn {roles.index('system', 1)} is a system turn; only turn 0 may be"
    dialogue = roles[1:] if roles[:1] == ["system"] else roles
    for k, role in enumerate(dialogue):
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            at = k + len(roles) - len(dialogue)
            return [], "roles_not_alternating", f"turn {at} is {role!r}, expected {expected!r}"
    if not dialogue or dialogue[-1] != "assistant":
        last = f"the last turn is {roles[-1]!r}" if roles else "there are no turns"
        return [], "no_assistant_turn", f"no final assistant turn to learn from ({last})"
    return turns, None, ""


def render_chat_context(turns: list[dict[str, Any]]) -> str:
    """The conversation before the final assistant turn as one text (curagate's ``text``):
    one ``<role>: <content>`` line per turn, joined by newlines."""
    return "\n".join(f"{t['role']}: {t['content']}" for t in turns[:-1])


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level + 1)
            stack.extend((v, level + 1) for v in item)
    return deepest


def _quoted_fields(data: DataParams) -> tuple[str, ...]:
    """The canonical input keys as they appear in JSON text (quoted)."""
    cols = data.columns
    names: tuple[str, ...]
    if data.task == "classification":
        names = (cols.id, cols.text, cols.label)
    elif data.task == "chat":
        names = (cols.id, cols.messages)
    else:
        names = (cols.id, cols.prompt, cols.response, cols.instruction, cols.input, cols.output)
    return tuple(json.dumps(n, ensure_ascii=False) for n in names)


def _decode_record(raw: str, fields: tuple[str, ...]) -> tuple[Any, str | None, str]:
    """(value, reason, detail) for one JSON text; reason is None when it parsed cleanly."""
    try:
        value = _DECODER.decode(raw)
    except json.JSONDecodeError as exc:
        return None, "invalid_json", f"{exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, "too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError as exc:  # NaN/Infinity, or an integer too long to convert
        return None, "invalid_json", str(exc)
    if len(raw) > 2 * MAX_JSON_DEPTH or "\\u" in raw or _may_repeat(raw, fields):
        reason, detail = _check_value(raw, value, fields)
        return value, reason, detail
    return value, None, ""


def _may_repeat(raw: str, fields: tuple[str, ...]) -> bool:
    for quoted in fields:
        if raw.count(quoted) > 1:
            return True
    return False


def _check_value(raw: str, value: Any, fields: tuple[str, ...]) -> tuple[str | None, str]:
    """(reason, detail) for a parsed JSON value that is too deep, repeats a key or holds a
    lone surrogate.

    The checks are skipped, at the cost of a few substring searches, on the usual line: a
    text of fewer than 2 * MAX_JSON_DEPTH characters or brackets cannot nest deeper than the
    limit; a repeated key is looked for only when a canonical key's quoted name occurs twice
    or an escape could spell one; only a ``\\u`` escape can make a lone surrogate. So a
    repeated key that is not a canonical one keeps its last value, as Python's json does.
    """
    if (
        len(raw) > 2 * MAX_JSON_DEPTH
        and raw.count("[") + raw.count("{") > MAX_JSON_DEPTH
        and _depth(value) > MAX_JSON_DEPTH
    ):
        return "too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels"
    if "\\u" in raw or _may_repeat(raw, fields):
        try:
            _STRICT_DECODER.decode(raw)
        except _DuplicateKey as exc:
            return "duplicate_key", str(exc)
    if "\\u" in raw and _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode("ascii")
            return "invalid_utf8", f"escape {bad} is a lone UTF-16 surrogate, not text"
    return None, ""


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
        self.problems: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        if "_problem" in row:  # a chat record that fails its checks (see check_messages)
            reason, detail = row["_problem"]
            bad = _quarantine_row(self.split, self.source, row["line"], row["raw"], reason, detail)
            self.problems.append(bad)
            return
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
        if self.problems:
            bad = sorted([*bad, *self.problems], key=lambda b: b["line"])
        ingested = pl.concat(self.frames, rechunk=True)
        return assign_ids(ingested), pl.DataFrame(bad, schema=QUARANTINE_SCHEMA)


def _check_records(
    ingested: pl.DataFrame, bad: list[dict[str, Any]], *, source: str, data: DataParams
) -> None:
    """Whole-file problems of a JSON file: nothing in it, no object, or no text column."""
    if ingested.height == 0 and not any(b["reason"] in CHAT_REASONS for b in bad):
        if all(b["reason"] == "blank_line" for b in bad):
            raise InputFileError(f"{source}: empty file (no records)")
        first = next(b for b in bad if b["reason"] != "blank_line")
        raise InputFileError(
            f"{source}: no line holds a JSON object (line {first['line']}: {first['reason']}, "
            f"{first['detail']})"
        )
    if ingested.height and (ingested["text_type"] == MISSING).all():
        # the first record's keys name what the file holds instead
        _require_text_column(list(_DECODER.decode(ingested["raw"][0])), source, data)


# ── the fast path: the clean majority of a JSON Lines file, parsed by polars ─────────────
# A line takes it only when a regex proves it is a flat JSON object whose keys are canonical
# column names, each at most once, and whose values are JSON strings with no lone-surrogate
# escape and no raw control character: every check of the line-by-line path then passes, and
# polars' JSON reader and Python's json give the same strings. Every other line (blank, not
# UTF-8, numbers, nulls, nesting, extra keys, repeated names...) takes the line-by-line path,
# so quarantine reasons, details and line numbers are exactly what that path gives.
_JSON_STRING = (
    r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]'
    r"|\\u(?:[0-9a-cA-CeEfF][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))*\""
)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+")


def _fast_pattern(names: Sequence[str]) -> str:
    pair = '"(?:' + "|".join(names) + r')"[ \t]*:[ \t]*' + _JSON_STRING
    return r"^[ \t]*\{[ \t]*(?:" + pair + r"(?:[ \t]*,[ \t]*" + pair + r")*)?[ \t]*\}[ \t]*$"


def _fast_names(data: DataParams) -> tuple[str, ...] | None:
    """The keys a fast line may hold, or None when this task or column map has no fast path."""
    cols = data.columns
    if data.task == "classification":
        names: tuple[str, ...] = (cols.id, cols.text, cols.label)
    elif data.task == "instruction":
        names = (cols.id, cols.prompt, cols.response, cols.instruction, cols.input, cols.output)
    else:
        return None
    if len(set(names)) != len(names) or not all(_PLAIN_NAME.fullmatch(n) for n in names):
        return None  # names that need JSON or regex escaping: the line-by-line path only
    return names


def _as_strings(lines: list[bytes]) -> pl.Series | None:
    """The lines as a polars String series; a line that is not UTF-8 becomes empty (slow path).
    None if polars still refuses some line Python's decoder accepts (then no fast path)."""
    try:
        return pl.Series(lines, dtype=pl.Binary).cast(pl.String)
    except pl.exceptions.ComputeError:  # some line is not UTF-8
        pass
    try:
        return pl.Series([b if not _undecodable(b) else b"" for b in lines], dtype=pl.Binary).cast(pl.String)
    except pl.exceptions.ComputeError:
        return None


def _fast_records(
    lines: list[bytes], *, split: str, source: str, data: DataParams, content: bytes | None = None
) -> pl.DataFrame | None:
    """Canonical rows (INGESTED_SCHEMA, without ids) of the lines that can skip the
    line-by-line path, or None when none can. ``content``: the bytes ``lines`` were split
    from, read as is when every line is fast and newlines are only ``\n``."""
    names = _fast_names(data)
    if names is None or not lines:
        return None
    text = _as_strings(lines)
    if text is None:
        return None
    fast = text.str.contains(_fast_pattern(names))
    for name in names:  # a repeated key, or a name inside a value: let the slow path decide
        fast = fast & (text.str.count_matches(f'"{name}"', literal=True) <= 1)
    frame = pl.DataFrame({"line": pl.int_range(1, len(lines) + 1, eager=True), "raw": text}).filter(fast)
    if frame.height == 0:
        return None
    schema = {n: pl.String for n in names}
    # the fast lines as one NDJSON document (they hold no newline) for polars' reader: the
    # same parser and values as str.json_decode, at ~60% of its CPU and a fifth of its memory
    # (json_decode parses each row into buffers of its own)
    if content is not None and frame.height == len(lines) and b"\r" not in content:
        joined = content  # the lines and their "\n"s: no copy of the file
    else:
        joined = b"\n".join(itertools.compress(lines, fast.to_list()))
    decoded = pl.read_ndjson(io.BytesIO(joined), schema=schema)
    if decoded.height != frame.height:  # never seen; json_decode is the reference
        decoded = frame["raw"].str.json_decode(pl.Struct(schema)).struct.unnest()
    frame = pl.concat([frame, decoded], how="horizontal")
    return (
        _fast_canonical(frame, data)
        .select(pl.lit(split).alias("split"), pl.lit(source).alias("source"), pl.all())
        .cast(INGESTED_SCHEMA)
        .select(list(INGESTED_SCHEMA))
    )


def _typed(name: str) -> pl.Expr:
    """The *_type of a fast field: a string, or missing (a fast line holds no null)."""
    return pl.when(pl.col(name).is_null()).then(pl.lit(MISSING)).otherwise(pl.lit("string"))


def _fast_canonical(frame: pl.DataFrame, data: DataParams) -> pl.DataFrame:
    """``_canonical`` over decoded fast lines; rows it cannot map exactly are dropped (slow path)."""
    cols = data.columns
    none = pl.lit(None, dtype=pl.String)
    base = [pl.col("line"), pl.col("raw"), pl.col(cols.id).alias("source_id")]
    if data.task == "classification":
        return frame.select(
            *base,
            pl.col(cols.text).alias("text"),
            _typed(cols.text).alias("text_type"),
            pl.col(cols.label).alias("label"),
            _typed(cols.label).alias("label_type"),
            none.alias("response"),
            pl.lit("null").alias("response_type"),
            none.alias("extra"),
        )
    present = {n: pl.col(n).is_not_null() for n in (cols.prompt, cols.instruction, cols.input, cols.output)}
    prompt_form = present[cols.prompt] | ~present[cols.instruction]
    # a key the record's form does not use would go to `extra`: such rows take the slow path
    mapped = (
        pl.when(prompt_form)
        .then(~(present[cols.instruction] | present[cols.input] | present[cols.output]))
        .otherwise(pl.col(cols.response).is_null())
    )
    frame = frame.filter(mapped)
    # str.strip() (Python's notion of whitespace) decides whether `input` adds to the prompt
    has_input = frame[cols.input].map_elements(lambda s: bool(s.strip()), return_dtype=pl.Boolean)
    frame = frame.with_columns(_input=has_input.fill_null(False))
    instruction = (
        pl.when(pl.col("_input"))
        .then(pl.col(cols.instruction) + "\n\n" + pl.col(cols.input))
        .otherwise(pl.col(cols.instruction))
    )
    return frame.select(
        *base,
        pl.when(prompt_form).then(pl.col(cols.prompt)).otherwise(instruction).alias("text"),
        pl.when(prompt_form).then(_typed(cols.prompt)).otherwise(_typed(cols.instruction)).alias("text_type"),
        none.alias("label"),
        pl.lit("null").alias("label_type"),
        pl.when(prompt_form).then(pl.col(cols.response)).otherwise(pl.col(cols.output)).alias("response"),
        pl.when(prompt_form)
        .then(_typed(cols.response))
        .otherwise(_typed(cols.output))
        .alias("response_type"),
        none.alias("extra"),
    )


def parse_jsonl(content: bytes, *, split: str, source: str, data: DataParams, fast: bool = True):
    """Parse JSON Lines content; every line becomes one ingested or quarantined row.

    The clean majority of lines is parsed by polars (see ``_fast_records``); the others, and
    every line when ``fast`` is false, one by one in Python. Both give the same rows.

    Returns:
        (ingested, quarantine): canonical rows, and lines that could not become a record
        (blank_line, invalid_utf8, invalid_json, too_deep, not_a_json_object) with the raw line.

    Raises:
        InputFileError: no line holds a record, or no record has the text column.
    """
    data = _resolved(data, content, ".jsonl", source)
    if content.startswith(UTF8_BOM):
        content = content[len(UTF8_BOM) :]
    rows = _Rows(split, source)
    add = rows.add
    fields = _quoted_fields(data)
    bad: list[dict[str, Any]] = []
    lines = content.splitlines()
    numbered: Iterable[tuple[int, bytes]] = enumerate(lines, start=1)
    quick = _fast_records(lines, split=split, source=source, data=data, content=content) if fast else None
    if quick is not None:
        rows.frames.append(quick)
        # the lines polars did not take, found in polars (a Python set of 10M line numbers
        # and a loop over all of them cost ~1 GB and seconds)
        every = pl.int_range(1, len(lines) + 1, eager=True)
        numbered = ((n, lines[n - 1]) for n in every.filter(~every.is_in(quick["line"])).to_list())
    for lineno, raw_bytes in numbered:
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raw = raw_bytes.decode("utf-8", errors="replace")
            bad.append(_quarantine_row(split, source, lineno, raw, "invalid_utf8", str(exc)))
            continue
        if not raw.strip():
            bad.append(_quarantine_row(split, source, lineno, raw, "blank_line", "line holds no record"))
            continue
        record, reason, detail = _decode_record(raw, fields)
        if reason is None and type(record) is not dict:
            reason, detail = "not_a_json_object", f"line is a JSON {json_type(record)}, not an object"
        if reason is not None:
            bad.append(_quarantine_row(split, source, lineno, raw, reason, detail))
            continue
        add({"line": lineno, "raw": raw, **_canonical(record, data)})
    ingested, quarantine = rows.result(bad)
    _check_records(ingested, bad, source=source, data=data)
    return ingested, quarantine


def parse_json_array(content: bytes, *, split: str, source: str, data: DataParams):
    """Parse a JSON array of objects (e.g. a pretty-printed ``.json`` file).

    Each element is one record: ``line`` is the line it starts on, ``raw`` its own text.
    A non-object element is quarantined (``not_a_json_object``); an element that does not
    parse leaves no way to find the next one, so it stops the file.

    Raises:
        InputFileError: not UTF-8, not an array, an element that does not parse, or no
        element holds the text column.
    """
    data = _resolved(data, content, ".json", source)
    if content.startswith(UTF8_BOM):
        content = content[len(UTF8_BOM) :]
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        raise InputFileError(f"{source}: line {line}: not UTF-8 ({exc.reason})") from exc
    rows = _Rows(split, source)
    bad: list[dict[str, Any]] = []
    pos = _skip_ws(text, 0)
    if text[pos : pos + 1] != "[":
        raise InputFileError(f"{source}: not a JSON array")
    pos, line, counted = pos + 1, 1, 0  # `line` is the line of offset `counted`
    empty = text.startswith("]", _skip_ws(text, pos))
    fields = _quoted_fields(data)
    while not empty:
        pos = _skip_ws(text, pos)
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{source}: line {exc.lineno}: invalid JSON array ({exc.msg})") from exc
        except RecursionError as exc:
            raise InputFileError(
                f"{source}: line {line}: element nested deeper than {MAX_JSON_DEPTH} levels"
            ) from exc
        except ValueError as exc:  # NaN/Infinity or an integer too long to convert
            raise InputFileError(f"{source}: line {line}: invalid JSON ({exc})") from exc
        raw = text[pos:end]
        reason, detail = _check_value(raw, value, fields)  # the checks of a JSON line
        if reason is None and not isinstance(value, dict):
            reason, detail = "not_a_json_object", f"element is a JSON {json_type(value)}, not an object"
        if reason is not None:
            bad.append(_quarantine_row(split, source, line, raw, reason, detail))
        else:
            rows.add({"line": line, "raw": raw, **_canonical(value, data)})
        pos = _skip_ws(text, end)
        if text.startswith(",", pos):
            pos += 1
            continue
        if text.startswith("]", pos):
            break
        at = text.count("\n", 0, pos) + 1
        raise InputFileError(f"{source}: line {at}: expected ',' or ']' in the JSON array")
    if empty:
        pos = _skip_ws(text, pos)
    if _skip_ws(text, pos + 1) < len(text):
        at = text.count("\n", 0, pos) + 1
        raise InputFileError(f"{source}: line {at}: text after the end of the JSON array")
    ingested, quarantine = rows.result(bad)
    _check_records(ingested, bad, source=source, data=data)
    return ingested, quarantine


def _drop_line_end(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith(("\n", "\r")):
        return line[:-1]
    return line


def parse_csv(content: bytes, *, split: str, source: str, data: DataParams, fast: bool = True):
    """Parse CSV content with a header row; quoted fields may span lines.

    A record's ``raw`` is exactly its own text (its physical lines, as the csv reader split
    them, without the final line end); a blank line is quarantined as ``blank_line``.
    Lines that hold no quote, backslash or control character are single-line records whose
    fields are the text between commas: polars splits them (``fast``); the csv reader reads
    the others, and every line when ``fast`` is false. Both give the same rows.

    Raises:
        InputFileError: no header, a header without the text column or with a repeated
        name, or no record after the header.
    """
    data = _resolved(data, content, ".csv", source)
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
    # lines split where the csv reader splits them (\n, \r, \r\n), unlike str.splitlines,
    # which also splits at U+2028, NEL, form feeds...: the reader reads these very lines
    physical = io.StringIO(text, newline="").readlines()
    lines = iter(physical)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration as exc:
        raise InputFileError(f"{source}: empty CSV file (no header row)") from exc
    except csv.Error as exc:
        raise InputFileError(f"{source}: unreadable CSV header ({exc})") from exc
    _require_text_column(header, source, data)
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise InputFileError(f"{source}: repeated column name(s) {repeated} in the header")
    rows = _Rows(split, source)
    bad: list[dict[str, Any]] = []

    def read_record(start: int) -> int:
        """Read the record starting on line ``start`` with the csv reader; its last line."""
        before = reader.line_num
        try:
            fields = next(reader)
        except csv.Error as exc:
            end = start + reader.line_num - before - 1
            raw = _drop_line_end("".join(physical[start - 1 : end]))
            bad.append(_quarantine_row(split, source, start, raw, "malformed_csv", str(exc)))
            return end
        end = start + reader.line_num - before - 1
        raw = _drop_line_end(physical[start - 1] if end == start else "".join(physical[start - 1 : end]))
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            bad.append(_quarantine_row(split, source, start, raw, "blank_line", "line holds no record"))
            return end
        if bad_utf8 and any(n in bad_utf8 for n in range(start, end + 1)):
            bad.append(_quarantine_row(split, source, start, raw, "invalid_utf8", "bytes are not UTF-8"))
            return end
        if len(fields) != len(header):
            detail = f"{len(fields)} fields, header has {len(header)}"
            bad.append(_quarantine_row(split, source, start, raw, "wrong_field_count", detail))
            return end
        # CSV has no types and no null: an empty field is read as null
        record = {h: (v if v != "" else None) for h, v in zip(header, fields, strict=True)}
        rows.add({"line": start, "raw": raw, **_canonical(record, data)})
        return end

    pos = reader.line_num  # lines read so far (0-based index of the next one)
    fast = fast and data.task != "chat"  # chat records are checked one by one
    needs_reader = _csv_reader_lines(physical, pos, bad_utf8) if fast else range(pos, len(physical))
    simple: list[int] = []  # 0-based indices of the lines polars splits
    for first in needs_reader:
        if first < pos:  # inside a record that started on an earlier line
            continue
        if first > pos:  # the lines before it: one record each, read by polars below
            simple.extend(range(pos, first))
            next(itertools.islice(lines, first - pos, first - pos), None)
        pos = read_record(first + 1)
    if fast:
        simple.extend(range(pos, len(physical)))
        quick = _csv_simple_records(physical, simple, header, split=split, source=source, data=data, bad=bad)
        if quick is not None:
            rows.frames.append(quick)
        bad.sort(key=lambda b: b["line"])
    if not bad and not rows.pending and not rows.frames:
        raise InputFileError(f"{source}: no records after the CSV header")
    return rows.result(bad)


# a quote may open a field that spans lines; backslashes and control characters need JSON
# escapes in `extra` and NUL trips the reader: lines holding any of them go to the csv reader
_CSV_READER_CHARS = r'["\\\x00-\x09\x0b\x0c\x0e-\x1f]'


def _csv_reader_lines(physical: list[str], start: int, bad_utf8: set[int]) -> list[int]:
    """0-based indices (from ``start``) of the lines the csv reader must read."""
    lines = pl.Series(physical[start:], dtype=pl.String).str.strip_suffix("\n").str.strip_suffix("\r")
    hard = lines.str.contains(_CSV_READER_CHARS) | (lines.str.len_bytes() > csv.field_size_limit())
    found = (hard.arg_true() + start).to_list()
    return sorted({*found, *(n - 1 for n in bad_utf8 if n - 1 >= start)})


def _csv_simple_records(
    physical: list[str],
    simple: list[int],
    header: list[str],
    *,
    split: str,
    source: str,
    data: DataParams,
    bad: list[dict[str, Any]],
) -> pl.DataFrame | None:
    """Canonical rows of single-line records with plain fields (commas split them); blank
    lines and wrong field counts are added to ``bad``."""
    if not simple:
        return None
    raw = pl.Series("raw", [physical[i] for i in simple], dtype=pl.String)
    frame = pl.DataFrame(
        {
            "line": pl.Series(simple, dtype=pl.Int64) + 1,
            "raw": raw.str.strip_suffix("\n").str.strip_suffix("\r"),
        }
    ).with_columns(_fields=pl.col("raw").str.count_matches(",", literal=True) + 1)
    blank = (pl.col("_fields") == 1) & (pl.col("raw").str.strip_chars() == "")
    for row in frame.filter(blank).iter_rows(named=True):
        bad.append(
            _quarantine_row(split, source, row["line"], row["raw"], "blank_line", "line holds no record")
        )
    frame = frame.filter(~blank)
    for row in frame.filter(pl.col("_fields") != len(header)).iter_rows(named=True):
        detail = f"{row['_fields']} fields, header has {len(header)}"
        bad.append(_quarantine_row(split, source, row["line"], row["raw"], "wrong_field_count", detail))
    frame = frame.filter(pl.col("_fields") == len(header))
    if frame.height == 0:
        return None
    parts = frame["raw"].str.split_exact(",", len(header) - 1).struct.rename_fields(header).struct.unnest()
    values = parts.select(pl.when(pl.col(h) != "").then(pl.col(h)).alias(h) for h in header)
    canonical = _csv_canonical(
        pl.concat([frame.select("line", "raw"), values], how="horizontal"), header, data
    )
    return (
        canonical.select(pl.lit(split).alias("split"), pl.lit(source).alias("source"), pl.all())
        .cast(INGESTED_SCHEMA)
        .select(list(INGESTED_SCHEMA))
    )


def _csv_field(name: str, header: list[str]) -> tuple[pl.Expr, pl.Expr]:
    """(value, *_type) of a CSV column: ``_field`` over a record of the header's keys."""
    if name not in header:
        return pl.lit(None, dtype=pl.String), pl.lit(MISSING)
    value = pl.col(name)
    return value, pl.when(value.is_null()).then(pl.lit("null")).otherwise(pl.lit("string"))


def _csv_canonical(frame: pl.DataFrame, header: list[str], data: DataParams) -> pl.DataFrame:
    """``_canonical`` over plain CSV records, column by column."""
    cols = data.columns
    none = pl.lit(None, dtype=pl.String)
    rid, rid_type = _csv_field(cols.id, header)
    out = [pl.col("line"), pl.col("raw"), pl.when(rid_type == "string").then(rid).alias("source_id")]
    if data.task == "classification":
        used = {cols.id, cols.text, cols.label}
        (text, text_type), (label, label_type) = _csv_field(cols.text, header), _csv_field(cols.label, header)
        out += [text.alias("text"), text_type.alias("text_type"), label.alias("label")]
        out += [label_type.alias("label_type"), none.alias("response"), pl.lit("null").alias("response_type")]
    elif cols.prompt in header or cols.instruction not in header:
        used = {cols.id, cols.prompt, cols.response}
        (text, text_type), (resp, resp_type) = (
            _csv_field(cols.prompt, header),
            _csv_field(cols.response, header),
        )
        out += [text.alias("text"), text_type.alias("text_type"), none.alias("label")]
        out += [pl.lit("null").alias("label_type"), resp.alias("response"), resp_type.alias("response_type")]
    else:
        used = {cols.id, cols.instruction, cols.input, cols.output}
        (text, text_type), (resp, resp_type) = (
            _csv_field(cols.instruction, header),
            _csv_field(cols.output, header),
        )
        if cols.input in header:  # str.strip(): Python's whitespace decides, as in _canonical
            has_input = pl.col(cols.input).map_elements(lambda s: bool(s.strip()), return_dtype=pl.Boolean)
            text = (
                pl.when(text.is_not_null() & has_input.fill_null(False))
                .then(text + "\n\n" + pl.col(cols.input))
                .otherwise(text)
            )
        out += [text.alias("text"), text_type.alias("text_type"), none.alias("label")]
        out += [pl.lit("null").alias("label_type"), resp.alias("response"), resp_type.alias("response_type")]
    extra = sorted(h for h in header if h not in used)
    if extra:  # _dumps of the other fields: plain values need no JSON escape (see _CSV_READER_CHARS)
        pieces: list[pl.Expr] = []
        for k, name in enumerate(extra):
            quoted = pl.when(pl.col(name).is_null()).then(pl.lit("null")).otherwise('"' + pl.col(name) + '"')
            prefix = ("{" if k == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": "
            pieces += [pl.lit(prefix), quoted]
        out.append(pl.concat_str([*pieces, pl.lit("}")]).alias("extra"))
    else:
        out.append(none.alias("extra"))
    return frame.select(out)


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
    elif data.task == "chat":
        needed = [cols.messages]
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
    """Canonicalise an already-typed frame (Parquet). Line numbers are 1-based row numbers.

    Raises:
        InputFileError: the frame lacks the text column, or has no rows.
    """
    if data.task == "auto":
        data = dataclasses.replace(data, task=_task_of_keys([set(frame.columns)], data))
    _require_text_column(frame.columns, source, data)
    if frame.height == 0:
        raise InputFileError(f"{source}: no rows")
    rows = _Rows(split, source)
    for lineno, record in enumerate(frame.iter_rows(named=True), start=1):
        rows.add({"line": lineno, "raw": _dumps(record), **_canonical(record, data)})
    return rows.result([])


def text_hash(texts: pl.Expr) -> pl.Expr:
    """Stable content hash of a text column (sha1 hex of the UTF-8, 16 chars; null stays
    null), identical across processes."""
    # polars-hash: the same digest as hashlib's, without a Python loop (a third of its CPU)
    # (the cast: a frame with no rows may type the column Null, which the plugin refuses)
    return texts.cast(pl.String).nchash.sha1().str.slice(0, 16)  # type: ignore[attr-defined]


def assign_ids(frame: pl.DataFrame) -> pl.DataFrame:
    """Give every row an id: the input id as a string, or one derived from its content.

    A derived id is ``<split>-<sha1(text, label, response)[:12]>``, stable when lines move;
    repeated identical records get ``-2``, ``-3``... in line order.
    """
    frame = frame.sort("line")
    if frame["source_id"].null_count() == 0:  # every row has its own id: nothing to derive
        return frame.with_columns(id=pl.col("source_id"), text_hash=text_hash(pl.col("text").fill_null("")))
    key = pl.concat_str(
        [pl.col("text").fill_null(""), pl.col("label").fill_null(""), pl.col("response").fill_null("")],
        separator="\x1f",
    )
    derived = pl.col("split") + "-" + text_hash(key).str.slice(0, 12)
    frame = frame.with_columns(_derived=derived)
    repeated = frame["_derived"].is_duplicated()
    if repeated.any():  # repeats get -2, -3, ... in line order (counted among repeats only: faster)
        again = (
            frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), "_derived")
            .filter(repeated)
            .with_columns(_n=pl.col("_derived").cum_count().over("_derived"))
            .filter(pl.col("_n") > 1)
        )
        renamed = again["_derived"] + "-" + again["_n"].cast(pl.String)
        frame = frame.with_columns(frame["_derived"].scatter(again["_row"], renamed))
    return frame.with_columns(
        id=pl.coalesce(pl.col("source_id"), pl.col("_derived")),
        text_hash=text_hash(pl.col("text").fill_null("")),
    ).drop("_derived")
