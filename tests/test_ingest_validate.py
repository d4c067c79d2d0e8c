"""Ingest + validate: every kind of bad input is quarantined with its reason; nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curation.ingest import InputFileError, parse_csv, parse_frame, parse_input, parse_jsonl
from curation.validate import validate_records
from flows.files import read_input
from schemas.params import DataParams, params_from_dict

LABELS = ["card_arrival", "lost_or_stolen_card"]
DATA = DataParams()  # columns id, text, label


def _run(lines: list[bytes], data: DataParams = DATA, labels=LABELS):
    ingested, bad = parse_jsonl(b"\n".join(lines), split="train", source="t.jsonl", data=data)
    valid, invalid = validate_records(ingested, data=data, labels=labels)
    quarantine = pl.concat([bad, invalid])
    assert valid.height + quarantine.height == len(lines)  # blank lines are quarantined too
    return valid, quarantine


def _reason_by_line(quarantine: pl.DataFrame) -> dict[int, str]:
    return dict(zip(quarantine["line"].to_list(), quarantine["reason"].to_list(), strict=True))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"text": "my card", "label": "card_arrival"', "invalid_json"),
        (b'["my card", "card_arrival"]', "not_a_json_object"),
        (b'{"label": "card_arrival"}', "missing_text"),
        (b'{"text": null, "label": "card_arrival"}', "null_text"),
        (b'{"text": 42, "label": "card_arrival"}', "text_wrong_type"),
        (b'{"text": ["a", "b"], "label": "card_arrival"}', "text_wrong_type"),
        (b'{"text": "   \\t ", "label": "card_arrival"}', "empty_text"),
        (b'{"text": ""}', "empty_text"),
        (b'{"text": "my card"}', "missing_label"),
        (b'{"text": "my card", "label": null}', "null_label"),
        (b'{"text": "my card", "label": {"x": 1}}', "label_wrong_type"),
        (b'{"text": "my card", "label": "pizza"}', "label_not_in_label_set"),
        (b'{"text": "caf\xe9", "label": "card_arrival"}', "invalid_utf8"),
    ],
)
def test_each_bad_line_is_quarantined_with_its_reason(line: bytes, reason: str) -> None:
    good = b'{"text": "where is my card", "label": "card_arrival"}'
    valid, quarantine = _run([good, line, good.replace(b"where", b"when")])
    assert valid.height == 2
    assert _reason_by_line(quarantine) == {2: reason}
    row = quarantine.row(0, named=True)
    assert row["raw"] and row["source"] == "t.jsonl" and row["detail"]


def test_text_longer_than_the_limit_is_quarantined() -> None:
    data = DataParams(max_text_chars=10)
    valid, quarantine = _run(
        [
            b'{"text": "short", "label": "card_arrival"}',
            b'{"text": "far too long text", "label": "card_arrival"}',
        ],
        data,
    )
    assert valid["text"].to_list() == ["short"]
    assert _reason_by_line(quarantine) == {2: "text_too_long"}
    assert "17 characters, limit 10" in quarantine["detail"][0]


def test_all_failures_of_a_row_are_reported_at_once() -> None:
    _, quarantine = _run([b'{"text": 5, "label": "pizza"}'])
    assert quarantine["reason"][0] == "text_wrong_type"
    assert "label 'pizza' is not in the label set" in quarantine["detail"][0]


def test_duplicate_input_id_is_quarantined_after_its_first_use() -> None:
    valid, quarantine = _run(
        [
            b'{"id": 7, "text": "a", "label": "card_arrival"}',
            b'{"id": "7", "text": "b", "label": "card_arrival"}',
        ]
    )
    assert valid["id"].to_list() == ["7"]  # numeric ids are kept as strings
    assert _reason_by_line(quarantine) == {2: "duplicate_id"}


def test_derived_ids_are_stable_and_unique_for_repeated_records() -> None:
    lines = [b'{"text": "x", "label": "card_arrival"}'] * 2 + [b'{"text": "y", "label": "card_arrival"}']
    first, _ = _run(lines)
    again, _ = _run([b'{"text": "z", "label": "card_arrival"}', *lines])
    assert first["id"].n_unique() == 3
    assert first["id"][1] == first["id"][0] + "-2"
    # inserting a line above does not change the other rows' ids
    assert set(first["id"]) <= set(again["id"])


def test_csv_wrong_field_count_and_multiline_fields(tmp_path: Path) -> None:
    content = (
        b'text,category\n"multi\nline",card_arrival\nbad,card_arrival,extra\n,card_arrival\nok,card_arrival\n'
    )
    data = params_from_dict({"data": {"columns": {"label": "category"}}}).data
    ingested, bad = parse_csv(content, split="train", source="t.csv", data=data)
    valid, invalid = validate_records(ingested, data=data, labels=LABELS)
    assert valid["text"].to_list() == ["multi\nline", "ok"]
    assert valid["line"].to_list() == [2, 6]  # physical line numbers, header is line 1
    assert _reason_by_line(pl.concat([bad, invalid])) == {4: "wrong_field_count", 5: "null_text"}


def test_parquet_input_keeps_extra_columns(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"id": [1, 2], "text": ["a", "b"], "label": ["card_arrival", "x"], "source_url": ["u1", "u2"]}
    )
    ingested, _ = parse_frame(frame, split="train", source="t.parquet", data=DATA)
    valid, quarantine = validate_records(ingested, data=DATA, labels=LABELS)
    assert valid["id"].to_list() == ["1"] and json.loads(valid["extra"][0]) == {"source_url": "u1"}
    assert quarantine["reason"].to_list() == ["label_not_in_label_set"]


def test_instruction_data_maps_instruction_input_output() -> None:
    data = DataParams(task="instruction")
    lines = [
        b'{"instruction": "Summarise", "input": "long text", "output": "short"}',
        b'{"prompt": "Say hi", "response": "hi"}',
        b'{"instruction": "Summarise", "output": ""}',
    ]
    ingested, _ = parse_jsonl(b"\n".join(lines), split="train", source="i.jsonl", data=data)
    valid, quarantine = validate_records(ingested, data=data, labels=None)
    assert valid["text"].to_list() == ["Summarise\n\nlong text", "Say hi"]
    assert valid["response"].to_list() == ["short", "hi"]
    assert quarantine["reason"].to_list() == ["empty_response"]


@pytest.mark.parametrize(
    ("suffix", "content", "message"),
    [
        (".txt", b"hello", "unknown format '.txt'"),
        (".csv", b"query,category\nhi,card_arrival\n", "missing text column 'text'"),
        (".csv", b"", "empty CSV file"),
        (".parquet", b"not parquet at all", "unreadable Parquet"),
    ],
)
def test_whole_file_problems_name_the_file(suffix: str, content: bytes, message: str) -> None:
    source = f"data/raw/train{suffix}"
    with pytest.raises(InputFileError) as err:
        parse_input(content, suffix=suffix, split="train", source=source, data=DATA)
    assert str(err.value).startswith(f"{source}: ") and message in str(err.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "missing.jsonl"
    with pytest.raises(InputFileError, match="file not found") as err:
        read_input(path, split="train", data=params_from_dict({}).data)
    assert str(path) in str(err.value)


def test_records_are_framed_in_chunks_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large files are turned into frames a chunk of records at a time; chunk edges change
    nothing: rows, line numbers, derived ids and quarantined lines are the same."""
    import curation.ingest as ingest

    lines = [json.dumps({"text": f"row {i % 7}", "label": LABELS[i % 2], "x": i}).encode() for i in range(25)]
    lines[5], lines[17] = b"{broken", b""
    content = b"\n".join(lines)
    csv_content = b"text,label\n" + b"\n".join(f"row {i % 5},{LABELS[i % 2]}".encode() for i in range(25))
    whole = parse_jsonl(content, split="train", source="t.jsonl", data=DATA)
    whole_csv = parse_csv(csv_content, split="train", source="t.csv", data=DATA)
    monkeypatch.setattr(ingest, "ROWS_PER_FRAME", 4)
    chunked = parse_jsonl(content, split="train", source="t.jsonl", data=DATA)
    chunked_csv = parse_csv(csv_content, split="train", source="t.csv", data=DATA)
    for a, b in ((whole, chunked), (whole_csv, chunked_csv)):
        assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert whole[0].height == 23 and whole[1]["line"].to_list() == [6, 18]
    assert whole[1]["reason"].to_list() == ["invalid_json", "blank_line"]
    assert whole[0]["id"].n_unique() == 23  # repeated texts get -2, -3... across chunk edges


def test_validation_without_pandas_quarantines_with_the_same_reasons() -> None:
    """A fresh process imports pandera with pandas hidden (schemas/pandera_polars.py): pandas
    stays unloaded, and validation gives the reasons and details of the in-process path."""
    import subprocess
    import sys

    lines = [
        b'{"id": "a", "text": "my card", "label": "card_arrival"}',
        b'{"id": "b", "text": "", "label": "card_arrival"}',
        b'{"id": "a", "text": "lost it", "label": "nope"}',
    ]
    content = b"\n".join(lines)
    code = (
        "import json, sys;"
        "from curation.ingest import parse_jsonl;"
        "from curation.validate import validate_records;"
        "from schemas.params import DataParams;"
        f"ingested, _ = parse_jsonl({content!r}, split='train', source='t.jsonl', data=DataParams());"
        f"valid, bad = validate_records(ingested, data=DataParams(), labels={LABELS!r});"
        "print(json.dumps([valid['id'].to_list(), bad.select('line', 'reason', 'detail').rows(),"
        " 'pandas' in sys.modules]))"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    valid_ids, bad_rows, pandas_loaded = json.loads(proc.stdout)
    _, quarantine = _run(lines)
    assert valid_ids == ["a"]
    assert [list(r) for r in quarantine.select("line", "reason", "detail").rows()] == bad_rows
    assert not pandas_loaded


def test_text_hash_is_the_sha1_of_the_utf8_text() -> None:
    """ids and text_hash are kept in files and reviews: polars-hash must give hashlib's digest."""
    import hashlib

    from curation.ingest import text_hash

    texts = ["my card", "", "caf\u00e9 \U0001f600", "a\u200bb", "x" * 10_000, "\x00\n\t", None]
    got = pl.DataFrame({"t": texts}).select(text_hash(pl.col("t")))["t"].to_list()
    assert got == [None if t is None else hashlib.sha1(t.encode("utf-8")).hexdigest()[:16] for t in texts]
