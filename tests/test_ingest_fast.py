"""The polars fast path of ingest gives exactly the rows of the line-by-line path: same
frames (DataFrame.equals), same quarantine reasons, details and line numbers, on the fuzzer's
hostile files and on lines built to sit on the edge of what the fast path may take."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest

from curation.ingest import parse_csv, parse_jsonl
from schemas.params import ColumnMap, DataParams
from tests.conftest import RAW
from tests.test_ingest_fuzz import _csv_file, _jsonl_file

CLASSIFICATION = DataParams(task="classification")
INSTRUCTION = DataParams(task="instruction")


def _same(parse, content: bytes, data: DataParams) -> tuple[pl.DataFrame, pl.DataFrame]:
    slow = parse(content, split="train", source="f", data=data, fast=False)
    fast = parse(content, split="train", source="f", data=data)
    assert fast[0].schema == slow[0].schema
    assert fast[0].equals(slow[0]) and fast[1].equals(slow[1])
    return fast


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_files_parse_the_same_on_both_paths(seed: int) -> None:
    _same(parse_jsonl, _jsonl_file(random.Random(seed)), CLASSIFICATION)
    _same(parse_csv, _csv_file(random.Random(seed)), CLASSIFICATION)


EDGE_JSONL = [
    {"id": "a", "text": "plain", "label": "x"},
    {"text": "no id", "label": "x"},
    {"text": "no id", "label": "x"},  # a repeat: derived id -2
    {"text": 'quote " and \\ backslash\tand tab', "label": "x"},
    {"text": "caf\u00e9 \U0001f600 \u2028 ok", "label": "x"},
    {"text": "number id", "label": "x", "id": 7},
    {"text": "extra key", "label": "x", "meta": "m"},
    {"text": "null label", "label": None},
    {"label": "x"},
    {},
]


@pytest.mark.parametrize("ensure_ascii", [True, False])  # \u escapes, or raw UTF-8
def test_edge_lines_parse_the_same_on_both_paths(ensure_ascii: bool) -> None:
    lines = [json.dumps(r, ensure_ascii=ensure_ascii).encode() for r in EDGE_JSONL]
    lines += [b'{"text": "a", "text": "b", "label": "x"}', b'{"text": "\\ud800", "label": "x"}']
    lines += [b'  {"text" :"spaced" , "label":"x"}  ', b'{"text": "x\\u0000y", "label": "x"}', b"", b"\xff"]
    ingested, quarantine = _same(parse_jsonl, b"\n".join(lines), CLASSIFICATION)
    assert ingested.height + quarantine.height == len(lines)
    assert {"duplicate_key", "invalid_utf8", "blank_line"} <= set(quarantine["reason"])


def test_instruction_lines_parse_the_same_on_both_paths() -> None:
    records = [
        {"prompt": "p", "response": "r"},
        {"instruction": "i", "input": "ctx", "output": "o"},
        {"instruction": "i", "input": " \u00a0", "output": "o"},  # whitespace-only input
        {"instruction": "i", "output": "o", "response": "r"},  # response is an extra here
        {"prompt": "p", "response": "r", "input": "x"},
        {"prompt": "p"},
    ]
    _same(parse_jsonl, b"\n".join(json.dumps(r).encode() for r in records), INSTRUCTION)
    csv = b'instruction,input,output,k\nsay hi, ,hello,1\nsay,\xc2\xa0world,out,\nx,,y,z\n"q,1",a\\b,o,\n'
    _same(parse_csv, csv, INSTRUCTION)


def test_csv_edge_records_parse_the_same_on_both_paths() -> None:
    content = (
        b'id,text,label,meta,zz\n1,hello,x,m1,\n2,,y,,z\n"3",a\\b,x,q,\n\n  \n4,x,y\n'
        b'5,"multi\nline",x,a,b\n6,t,l,m,n\r\n7,\x1c,l,,\n8,tab\there,l,,\n'
    )
    ingested, quarantine = _same(parse_csv, content, CLASSIFICATION)
    assert set(quarantine["reason"]) == {"blank_line", "wrong_field_count"}


def test_the_bundled_banking77_csv_parses_the_same_on_both_paths() -> None:
    data = DataParams(task="classification", columns=ColumnMap(label="category"))
    ingested, _ = _same(parse_csv, (RAW / "test.csv").read_bytes(), data)
    assert ingested.height == 3080


@pytest.mark.parametrize("end", [b"", b"\n"])
def test_a_file_of_fast_lines_only_parses_the_same_on_both_paths(end: bytes) -> None:
    """Every line fast and only \\n newlines: the file's bytes go to polars' reader as they are."""
    lines = [json.dumps(r).encode() for r in EDGE_JSONL[:5]] + [b'  {"text" :"spaced" , "label":"x"}  ']
    ingested, quarantine = _same(parse_jsonl, b"\n".join(lines) + end, CLASSIFICATION)
    assert ingested.height == len(lines) and quarantine.height == 0
