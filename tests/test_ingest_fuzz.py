"""Fuzz: thousands of random and mutated lines through parse_input and validate_records.

Seeded (random.Random), so a failure reproduces. Nothing but InputFileError may escape, and
the accounting holds: every line of a JSON Lines file, and every physical line of a CSV file,
belongs to exactly one ingested or quarantined row whose raw text is exactly its own.
"""

from __future__ import annotations

import io
import json
import random

import polars as pl
import pytest

from curation.ingest import InputFileError, parse_input
from curation.validate import validate_records
from schemas.params import DataParams
from schemas.records import INGEST_REASONS, raw_record_schema

LABELS = ["card_arrival", "lost_or_stolen_card", "pin_blocked"]
DATA = DataParams()
FILES, LINES_PER_FILE = 6, 500  # 3,000 lines a format

# what a hostile or broken writer puts into a line
INSERTS = [
    b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"\\u", b"\\ud800", b"\\udc00", b"\x00",
    b"\xff", b"\xc3", b"\xe2\x80", "é".encode(), "\u2028".encode(), "\x85".encode(), b"\x0c",
    b"\r", b"\n", b"\r\n", b"NaN", b"Infinity", b"1e999", b"9" * 5000, b"\xef\xbb\xbf", b'"text":',
    b'"label": "x",', b" ", b"\t", b"[" * 80, b"null", b"true",
]  # fmt: skip
TEXTS = ["where is my card", "my card was stolen", "pin is blocked", "caf\u00e9 \U0001f600", "a\u2028b", ""]


def _valid_record(rng: random.Random) -> dict:
    record = {"text": rng.choice(TEXTS), "label": rng.choice([*LABELS, "pizza", 3])}
    if rng.random() < 0.3:
        record["id"] = rng.choice([rng.randrange(50), f"r{rng.randrange(50)}"])
    if rng.random() < 0.3:
        record["meta"] = {"k": [1, 2.5, None, True], "s": rng.choice(TEXTS)}
    if rng.random() < 0.1:
        del record[rng.choice(["text", "label"])]
    return record


def _mutate(line: bytes, rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        pos = rng.randint(0, len(line))
        if kind < 0.25:  # byte flip
            if line:
                i = rng.randrange(len(line))
                line = line[:i] + bytes([rng.randrange(256)]) + line[i + 1 :]
        elif kind < 0.45:  # truncation
            line = line[:pos]
        elif kind < 0.55:  # deletion
            line = line[:pos] + line[pos + rng.randint(1, 5) :]
        else:  # insertion
            line = line[:pos] + rng.choice(INSERTS) + line[pos:]
    return line


def _jsonl_file(rng: random.Random) -> bytes:
    lines = [json.dumps({"text": "where is my card", "label": "card_arrival"}).encode()]
    for _ in range(LINES_PER_FILE - 1):
        r = rng.random()
        line = json.dumps(_valid_record(rng), ensure_ascii=rng.random() < 0.5).encode()
        if r < 0.5:
            line = _mutate(line, rng)
        elif r < 0.55:
            line = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))  # noise
        elif r < 0.6:
            line = rng.choice([b"", b"  ", b"[]", b"42", b'"s"', b"{}", b"[" * 2000])
        lines.append(line)
    return rng.choice([b"\n", b"\r\n"]).join(lines) + rng.choice([b"", b"\n"])


def _csv_field(rng: random.Random) -> str:
    text = rng.choice(TEXTS)
    if rng.random() < 0.4 or any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _csv_file(rng: random.Random) -> bytes:
    lines = [b"id,text,label", b"0,where is my card,card_arrival"]
    for i in range(1, LINES_PER_FILE - 1):
        line = f"{i},{_csv_field(rng)},{rng.choice([*LABELS, 'pizza', ''])}".encode()
        if rng.random() < 0.5:
            line = _mutate(line, rng)
        lines.append(line)
    return rng.choice([b"\n", b"\r\n"]).join(lines) + rng.choice([b"", b"\n"])


def _validate(ingested: pl.DataFrame) -> None:
    valid, invalid = validate_records(ingested, data=DATA, labels=LABELS)
    assert valid.height + invalid.height == ingested.height
    checks = {
        c.name
        for col in raw_record_schema(task="classification", max_text_chars=1, labels=[]).columns.values()
        for c in col.checks
    }
    assert set(invalid["reason"]) <= checks


@pytest.mark.parametrize("seed", range(FILES))
def test_fuzzed_jsonl_never_escapes_and_every_line_is_accounted_for(seed: int) -> None:
    content = _jsonl_file(random.Random(seed))
    ingested, quarantine = parse_input(content, suffix=".jsonl", split="train", source="f.jsonl", data=DATA)
    lines = content.splitlines()
    rows = pl.concat([ingested.select("line", "raw"), quarantine.select("line", "raw")]).sort("line")
    assert rows["line"].to_list() == list(range(1, len(lines) + 1))  # each line exactly once
    assert rows["raw"].to_list() == [b.decode("utf-8", errors="replace") for b in lines]
    assert set(quarantine["reason"]) <= set(INGEST_REASONS)
    assert quarantine.height > 0 and ingested.height > 0  # the fuzzer reaches both sides
    _validate(ingested)


def _drop_line_end(line: str) -> str:
    for end in ("\r\n", "\n", "\r"):
        if line.endswith(end):
            return line[: -len(end)]
    return line


@pytest.mark.parametrize("seed", range(FILES))
def test_fuzzed_csv_never_escapes_and_records_tile_the_file(seed: int) -> None:
    content = _csv_file(random.Random(seed))
    ingested, quarantine = parse_input(content, suffix=".csv", split="train", source="f.csv", data=DATA)
    physical = io.StringIO(content.decode("utf-8", errors="replace"), newline="").readlines()
    rows = pl.concat([ingested.select("line", "raw"), quarantine.select("line", "raw")]).sort("line")
    starts = rows["line"].to_list()
    assert starts[0] == 2 and len(set(starts)) == len(starts)
    # record k spans the physical lines from its own line to the next record's: no line lost,
    # none shared, and raw is exactly that text
    for start, end, raw in zip(starts, [*starts[1:], len(physical) + 1], rows["raw"], strict=True):
        assert raw == _drop_line_end("".join(physical[start - 1 : end - 1]))
    assert set(quarantine["reason"]) <= set(INGEST_REASONS)
    assert quarantine.height > 0 and ingested.height > 0
    _validate(ingested)


@pytest.mark.parametrize("seed", range(FILES))
def test_fuzzed_json_arrays_either_parse_or_raise_input_file_error(seed: int) -> None:
    rng = random.Random(seed)
    records = [_valid_record(rng) for _ in range(40)]
    text = json.dumps(records, indent=rng.choice([None, 2])).encode()
    for _ in range(20):
        content = _mutate(text, rng) if rng.random() < 0.8 else text
        try:
            ingested, quarantine = parse_input(
                content, suffix=".json", split="train", source="f.json", data=DATA
            )
        except InputFileError as exc:
            assert str(exc).startswith("f.json: ")
            continue
        assert set(quarantine["reason"]) <= set(INGEST_REASONS)
        _validate(ingested)
