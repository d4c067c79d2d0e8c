"""Hostile input files (issue #13): each bad line is quarantined with a reason, each bad file
raises InputFileError naming it; nothing else ever escapes parse_input or validate_records."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import io
import json
from decimal import Decimal

import polars as pl
import pytest

from curation.ingest import MAX_JSON_DEPTH, InputFileError, parse_input
from curation.validate import validate_records
from schemas.params import DataParams
from schemas.records import INGEST_REASONS

LABELS = ["card_arrival", "lost_or_stolen_card"]
DATA = DataParams()  # columns id, text, label
GOOD = b'{"text": "where is my card", "label": "card_arrival"}'
GOOD2 = b'{"text": "my card was stolen", "label": "lost_or_stolen_card"}'


def _parse(content: bytes, suffix: str = ".jsonl", data: DataParams = DATA):
    """parse_input then validate_records; checks that every record is accounted for once."""
    ingested, bad = parse_input(content, suffix=suffix, split="train", source=f"in{suffix}", data=data)
    valid, invalid = validate_records(ingested, data=data, labels=LABELS)
    assert valid.height + invalid.height == ingested.height
    assert set(bad["reason"]) <= set(INGEST_REASONS)
    assert bad["stage"].to_list() == ["ingest"] * bad.height
    return ingested, valid, pl.concat([bad, invalid])


def _reasons(quarantine: pl.DataFrame) -> dict[int, str]:
    return dict(zip(quarantine["line"].to_list(), quarantine["reason"].to_list(), strict=True))


def _raise(content: bytes, suffix: str, data: DataParams = DATA) -> str:
    source = f"data/raw/train{suffix}"
    with pytest.raises(InputFileError) as err:
        parse_input(content, suffix=suffix, split="train", source=source, data=data)
    message = str(err.value)
    assert message.startswith(f"{source}: ")
    return message


# --- one hostile line among good ones -------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"[" * 1000 + b"]" * 1000, "too_deep"),  # RecursionError in json, before the fix
        (b'{"text": "a", "label": "card_arrival", "x": ' + b"[" * 100 + b"]" * 100 + b"}", "too_deep"),
        (b'{"text": "a\x00b", "label": "card_arrival"}', "invalid_json"),  # raw NUL: a control char
        (b'\x00{"text": "a", "label": "card_arrival"}', "invalid_json"),
        (b'{"text": "caf\xc3", "label": "card_arrival"}', "invalid_utf8"),  # truncated sequence
        (b'{"text": "a", "label": "card_arrival", "n": ' + b"9" * 5000 + b"}", "invalid_json"),
        (b'{"text": "a", "label": "card_arrival", "score": NaN}', "invalid_json"),
        (b'{"text": "a", "label": "card_arrival", "score": -Infinity}', "invalid_json"),
        (b'{"text": "benign", "label": "card_arrival", "text": "evil"}', "duplicate_key"),
        (b'{"text": "benign", "label": "card_arrival", "\\u0074ext": "evil"}', "duplicate_key"),
        (b'{"text": "\\ud800 lone", "label": "card_arrival"}', "invalid_utf8"),
        (b'{"text": "a", "label": "card_arrival", "\\udfff": 1}', "invalid_utf8"),
        (b"[1, 2]", "not_a_json_object"),
        (b"42", "not_a_json_object"),
        (b'"just a string"', "not_a_json_object"),
        (b"null", "not_a_json_object"),
        (b"   \t ", "blank_line"),
        (b"", "blank_line"),
        (b'{"text": "' + b"x" * 1_000_000 + b'", "label": "card_arrival"}', "text_too_long"),
        pytest.param(
            b'{"text": "' + b"x" * 50_000_000 + b'", "label": "card_arrival"}',
            "text_too_long",
            marks=pytest.mark.slow,  # ~13 s on 2 cores, most of it in validation
            id="50MB-line",
        ),
        (b'{"text": 1e999, "label": "card_arrival"}', "text_wrong_type"),  # inf is a number
    ],
)
def test_a_hostile_jsonl_line_is_quarantined_with_its_reason(line: bytes, reason: str) -> None:
    ingested, valid, quarantine = _parse(b"\n".join([GOOD, line, GOOD2]))
    assert valid.height == 2
    assert _reasons(quarantine) == {2: reason}
    assert quarantine["detail"][0]
    assert ingested.height + quarantine.filter(pl.col("stage") == "ingest").height == 3


def test_json_lines_that_look_hostile_but_are_fine_are_kept() -> None:
    lines = [
        b'{"text": "caf\\u00e9 \\ud83d\\ude00", "label": "card_arrival"}',  # escapes, a surrogate pair
        b'{"text": "nul \\u0000 escaped", "label": "card_arrival"}',
        b'{"text": "deep ok", "label": "card_arrival", "x": ' + b"[" * 10 + b"]" * 10 + b"}",
        b'{"text": "nested repeat is allowed", "label": "card_arrival", "m": {"k": 1, "k": 2}}',
        b'{"text": "big", "label": "card_arrival", "n": ' + b"9" * 4000 + b"}",
        b'{"text": "the label is \\"text\\"", "label": "card_arrival"}',
    ]
    _, valid, quarantine = _parse(b"\r\n".join(lines) + b"\r\n")  # CRLF line ends
    assert quarantine.height == 0
    assert valid["text"][0] == "café 😀" and "\x00" in valid["text"][1]
    assert not any("\r" in raw for raw in valid["raw"])
    assert json.loads(valid.filter(pl.col("text") == "big")["extra"][0])["n"] == int("9" * 4000)
    assert json.loads(valid.filter(pl.col("line") == 4)["extra"][0]) == {"m": {"k": 2}}  # last wins


def test_depth_limit_is_the_same_wherever_the_parser_runs() -> None:
    """Exactly MAX_JSON_DEPTH levels pass; one more is too_deep (not the stack depth's call)."""
    inner = MAX_JSON_DEPTH - 1  # the record object itself is one level
    ok = b'{"text": "a", "label": "card_arrival", "x": ' + b"[" * inner + b"]" * inner + b"}"
    deep = ok.replace(b"[", b"[[", 1).replace(b"]", b"]]", 1)
    _, valid, quarantine = _parse(b"\n".join([ok, deep]))
    assert valid["line"].to_list() == [1] and _reasons(quarantine) == {2: "too_deep"}


def test_utf8_bom_on_jsonl_is_dropped() -> None:
    ingested, valid, quarantine = _parse(b"\xef\xbb\xbf" + GOOD + b"\n" + GOOD2 + b"\n")
    assert valid["line"].to_list() == [1, 2] and quarantine.height == 0
    assert valid["raw"][0] == GOOD.decode()


def test_blank_lines_are_counted_so_input_rows_equal_the_file_lines() -> None:
    content = b"\n" + GOOD + b"\n\n  \n" + GOOD2 + b"\n\n"
    ingested, valid, quarantine = _parse(content)
    assert ingested.height + quarantine.height == len(content.splitlines()) == 6
    assert _reasons(quarantine) == {1: "blank_line", 3: "blank_line", 4: "blank_line", 6: "blank_line"}


# --- whole-file problems --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "content", "message"),
    [
        (".jsonl", b"", "empty file"),
        (".jsonl", b"\n\n  \n", "empty file"),
        (".jsonl", b"\xef\xbb\xbf", "empty file"),
        (".json", b"[]", "empty file"),
        (".json", b"  [ \n ]\n", "empty file"),
        (".csv", b"", "empty CSV file"),
        (".csv", b"text,label\n", "no records after the CSV header"),
        (".csv", b"text,label,text\na,card_arrival,b\n", "repeated column name(s) ['text']"),
        (
            ".jsonl",
            b'{"query": "hi", "label": "card_arrival"}\n{"query": "yo"}\n',
            "missing text column 'text'",
        ),
        (".jsonl", b"not json\n{broken\n", "no line holds a JSON object (line 1: invalid_json"),
        (".jsonl", b"[1]\n", "no line holds a JSON object (line 1: not_a_json_object"),
        (".json", b'[{"text": "a"},\n {"text": }]', "line 2: invalid JSON array"),
        (".json", b'[{"text": "a"} {"text": "b"}]', "line 1: expected ',' or ']'"),
        (".json", b'[{"text": "a"}] trailing', "text after the end of the JSON array"),
        (".json", b'[{"text": "a"},]', "invalid JSON array"),
        (".json", b"[" * 5000 + b"]" * 5000, "nested deeper than"),
        (".json", b'[{"text": NaN}]', "NaN is not valid JSON"),
        (".json", b'[{"text": "caf\xe9"}]', "line 1: not UTF-8"),
        (".parquet", b"PAR1 not really", "unreadable Parquet"),
        (".jsonl.gz", b"\x1f\x8b\x08\x00garbage", "corrupt gzip data"),
        (".txt", b"hello", "unknown format '.txt'"),
        (".gz", gzip.compress(GOOD), "unknown format '.gz'"),
        ("", GOOD, "unknown format ''"),
    ],
)
def test_whole_file_problems_raise_naming_the_file(suffix: str, content: bytes, message: str) -> None:
    assert message in _raise(content, suffix)


def test_instruction_jsonl_without_its_text_column_names_it() -> None:
    content = b'{"question": "q", "output": "a"}\n'
    assert "missing text column 'instruction'" in _raise(content, ".jsonl", DataParams(task="instruction"))


# --- formats: gzip, JSON arrays, Parquet types ----------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".gz.jsonl", ".JSONL.GZ", ".ndjson"])
def test_gzip_is_detected_from_the_content_whatever_the_suffix(suffix: str) -> None:
    plain = GOOD + b"\n" + GOOD2 + b"\n"
    expected, _, _ = _parse(plain)
    ingested, _, quarantine = _parse(gzip.compress(plain), suffix)
    assert ingested.drop("source").equals(expected.drop("source")) and quarantine.height == 0


def test_gzip_csv_and_parquet_are_read() -> None:
    csv_bytes = b"text,label\nwhere is my card,card_arrival\n"
    ingested, _, _ = _parse(gzip.compress(csv_bytes), ".csv.gz")
    assert ingested["text"].to_list() == ["where is my card"]
    buf = io.BytesIO()
    pl.DataFrame({"text": ["a", "b"], "label": LABELS}).write_parquet(buf)
    ingested, _, _ = _parse(gzip.compress(buf.getvalue()), ".parquet")
    assert ingested["text"].to_list() == ["a", "b"]


def test_pretty_printed_json_array_is_read_with_starting_lines_and_own_raw() -> None:
    records = [
        {"text": "where is my card", "label": "card_arrival"},
        [1, 2],
        {"text": "my card was stolen", "label": "lost_or_stolen_card"},
    ]
    content = b"\xef\xbb\xbf" + json.dumps(records, indent=2).encode()
    ingested, valid, quarantine = _parse(content, ".json")
    lines = content.decode("utf-8-sig").split("\n")
    assert valid["text"].to_list() == ["where is my card", "my card was stolen"]
    for row in valid.iter_rows(named=True):  # line = where the element starts
        assert lines[row["line"] - 1].strip() == "{"
    assert [json.loads(raw) for raw in valid.sort("line")["raw"]] == [records[0], records[2]]
    assert _reasons(quarantine) == {6: "not_a_json_object"}
    assert json.loads(quarantine["raw"][0]) == [1, 2]


def test_a_json_file_of_json_lines_is_still_read_as_lines() -> None:
    _, valid, _ = _parse(GOOD + b"\n" + GOOD2 + b"\n", ".json")
    assert valid["line"].to_list() == [1, 2]


def _parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def test_parquet_extra_columns_of_any_type_round_trip_as_text() -> None:
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
    frame = pl.DataFrame(
        {
            "text": ["where is my card", "my card was stolen"],
            "label": LABELS,
            "at": [when, None],
            "day": [dt.date(2024, 5, 6), dt.date(2023, 1, 2)],
            "clock": [dt.time(7, 8, 9), dt.time(0, 0)],
            "took": [dt.timedelta(days=1, seconds=2, microseconds=3), dt.timedelta(0)],
            "price": pl.Series([Decimal("1.10"), Decimal("-2.50")], dtype=pl.Decimal(10, 2)),
            "blob": [b"\x00\xffbin", b""],
            "score": [float("nan"), float("inf")],
            "tags": [[when], []],
        }
    )
    ingested, valid, quarantine = _parse(_parquet(frame), ".parquet")
    assert valid.height == 2 and quarantine.height == 0
    first, second = (json.loads(e) for e in valid.sort("line")["extra"])
    assert first == {
        "at": "2024-05-06T07:08:09.123456",
        "day": "2024-05-06",
        "clock": "07:08:09",
        "took": "P1DT2.000003S",
        "price": "1.10",
        "blob": base64.b64encode(b"\x00\xffbin").decode(),
        "score": "NaN",
        "tags": ["2024-05-06T07:08:09.123456"],
    }
    assert second["at"] is None and second["score"] == "Infinity" and second["price"] == "-2.50"
    assert json.loads(valid["raw"][0])["text"] == "where is my card"


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([b"where is my card", b"x"], "binary"),
        ([dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)], "datetime"),
        ([dt.date(2024, 1, 1), dt.date(2024, 1, 2)], "date"),
        ([Decimal("1.5"), Decimal("2.5")], "number"),
    ],
)
def test_a_non_text_parquet_text_column_is_a_wrong_type_quarantine(values: list, kind: str) -> None:
    frame = pl.DataFrame({"text": values, "label": LABELS})
    _, valid, quarantine = _parse(_parquet(frame), ".parquet")
    assert valid.height == 0 and quarantine["reason"].to_list() == ["text_wrong_type"] * 2
    expected = f"text is a JSON {kind}" if kind == "number" else f"text is a {kind}"
    assert quarantine["detail"][0].startswith(expected)


def test_decimal_and_integer_parquet_labels_are_labels() -> None:
    frame = pl.DataFrame(
        {"text": ["a", "b"], "label": pl.Series([Decimal("1"), Decimal("2")], dtype=pl.Decimal(5, 0))}
    )
    ingested, _ = parse_input(_parquet(frame), suffix=".parquet", split="train", source="p", data=DATA)
    assert ingested["label"].to_list() == ["1", "2"] and set(ingested["label_type"]) == {"number"}


# --- CSV -------------------------------------------------------------------------------------


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\x1e"])
def test_csv_raw_is_exactly_the_records_own_text(separator: str) -> None:
    """str.splitlines splits at these, the csv reader does not: raw must not shift."""
    records = [
        f"a{separator}b,card_arrival",
        "bad,card_arrival,extra",
        f'"multi\r\nline{separator}",card_arrival',
        "ok,card_arrival",
    ]
    content = ("text,label\r\n" + "\r\n".join(records) + "\r\n").encode()
    ingested, valid, quarantine = _parse(content, ".csv")
    raw_by_line = {
        r["line"]: r["raw"] for r in [*valid.iter_rows(named=True), *quarantine.iter_rows(named=True)]
    }
    assert raw_by_line == {2: records[0], 3: records[1], 4: records[2], 6: records[3]}
    assert _reasons(quarantine) == {3: "wrong_field_count"}
    assert valid.filter(pl.col("line") == 2)["text"][0] == f"a{separator}b"


def test_hostile_csv_records_are_quarantined() -> None:
    content = (
        b"text,label\n"
        b"nul \x00 inside,card_arrival\n"  # csv reads NUL as a character: kept
        b"caf\xe9,card_arrival\n"  # latin-1, not UTF-8
        b"ragged\n"
        b"\n"
        b"too,many,fields,here\n"
        + b"x"
        * 200_000
        + b",card_arrival\n"  # over the csv module's field size limit
        b'"unclosed,card_arrival\n'
    )
    ingested, valid, quarantine = _parse(content, ".csv")
    assert valid["line"].to_list() == [2]
    assert _reasons(quarantine) == {
        3: "invalid_utf8",
        4: "wrong_field_count",
        5: "blank_line",
        6: "wrong_field_count",
        7: "malformed_csv",
        8: "wrong_field_count",  # an unclosed quote runs to the end of the file
    }
    assert ingested.height + quarantine.filter(pl.col("stage") == "ingest").height == 7
