"""Chat data (issue #14): a `messages` list of {role, content} turns. Each malformed
conversation is quarantined with its own reason; a valid one becomes text (the turns before
the final assistant turn), response (that turn) and the whole conversation as JSON text;
`data.task: auto` finds the task from the first records of the train file."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import polars as pl
import pytest

from curation.ingest import check_messages, detect_task, parse_input
from curation.validate import validate_records
from flows.files import read_inputs
from schemas.params import ColumnMap, DataParams
from schemas.records import CHAT_REASONS, INGEST_REASONS

CHAT = DataParams(task="chat")
SYSTEM = {"role": "system", "content": "You are a bank assistant."}


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


GOOD = _turns(("user", "where is my card?"), ("assistant", "It arrives in 3 days."))


def _jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _parse(content: bytes, suffix: str = ".jsonl", data: DataParams = CHAT):
    ingested, bad = parse_input(content, suffix=suffix, split="train", source=f"c{suffix}", data=data)
    valid, invalid = validate_records(ingested, data=data, labels=None)
    assert valid.height + invalid.height == ingested.height
    return valid, pl.concat([bad, invalid])


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"text": "no conversation"}, "missing_messages"),
        ({"messages": None}, "null_messages"),
        ({"messages": {"role": "user", "content": "hi"}}, "messages_not_a_list"),
        ({"messages": "not json"}, "messages_not_a_list"),
        ({"messages": ["where is my card?"]}, "turn_not_an_object"),
        ({"messages": [{"role": "user", "content": 42}, GOOD[1]]}, "content_not_a_string"),
        ({"messages": [{"role": "user"}, GOOD[1]]}, "content_not_a_string"),
        ({"messages": _turns(("bot", "hi"), ("assistant", "hello"))}, "unknown_role"),
        ({"messages": [{"content": "hi"}, GOOD[1]]}, "unknown_role"),
        ({"messages": _turns(("user", "hi"), ("assistant", "  \t"))}, "empty_turn"),
        ({"messages": [GOOD[0], SYSTEM, GOOD[1]]}, "system_not_first"),
        ({"messages": _turns(("user", "a"), ("user", "b"), ("assistant", "c"))}, "roles_not_alternating"),
        ({"messages": _turns(("assistant", "a"), ("user", "b"), ("assistant", "c"))}, "roles_not_alternating"),  # noqa: E501
        ({"messages": _turns(("user", "hi"))}, "no_assistant_turn"),
        ({"messages": [*GOOD, {"role": "user", "content": "thanks"}]}, "no_assistant_turn"),
        ({"messages": []}, "no_assistant_turn"),
        ({"messages": [SYSTEM]}, "no_assistant_turn"),
    ],
)  # fmt: skip
def test_each_malformed_conversation_is_quarantined_with_its_reason(record: dict, reason: str) -> None:
    content = _jsonl([{"messages": GOOD}, record, {"messages": [SYSTEM, *GOOD]}])
    valid, quarantine = _parse(content)
    assert valid["line"].to_list() == [1, 3]  # the good neighbours are untouched
    assert quarantine["line"].to_list() == [2] and quarantine["reason"].to_list() == [reason]
    assert quarantine["stage"].to_list() == ["ingest"] and quarantine["detail"][0]
    assert quarantine["raw"][0] == json.dumps(record)
    assert reason in CHAT_REASONS and set(CHAT_REASONS) <= set(INGEST_REASONS)


def test_every_chat_reason_has_a_case() -> None:
    cases = [None, "x", ["x"], [{"role": "user", "content": 1}], [{"role": "bot", "content": "a"}]]
    cases += [_turns(("user", " "))]
    cases += [[GOOD[0], SYSTEM, GOOD[1]], _turns(("user", "a"), ("user", "b")), _turns(("user", "a"))]
    found = {check_messages(c)[1] for c in cases} | {"missing_messages"}
    assert found == set(CHAT_REASONS)


def test_a_valid_conversation_becomes_text_response_and_messages() -> None:
    turns = [SYSTEM, *GOOD, *_turns(("user", "and my pin?"), ("assistant", "By post."))]
    content = _jsonl([{"id": "c1", "messages": turns, "source": "app"}])
    valid, quarantine = _parse(content)
    assert quarantine.height == 0
    row = valid.row(0, named=True)
    assert row["id"] == "c1" and row["response"] == "By post."
    assert row["text"] == (
        "system: You are a bank assistant.\nuser: where is my card?\n"
        "assistant: It arrives in 3 days.\nuser: and my pin?"
    )
    extra = json.loads(row["extra"])
    assert extra["source"] == "app"  # other fields are kept, as for any task
    assert json.loads(extra["messages"]) == turns  # every turn, for the chat template


def test_chat_in_csv_and_parquet_holds_the_messages_as_json_text_or_a_list() -> None:
    frame = pl.DataFrame({"id": ["a", "b"], "messages": [json.dumps(GOOD), "[1"]})
    buffer = io.StringIO()
    frame.write_csv(buffer)
    valid, quarantine = _parse(buffer.getvalue().encode(), ".csv")
    assert valid["response"].to_list() == ["It arrives in 3 days."]
    assert quarantine["reason"].to_list() == ["messages_not_a_list"] and quarantine["line"].to_list() == [3]
    parquet = io.BytesIO()
    pl.DataFrame({"messages": [GOOD, _turns(("user", "hi"))]}).write_parquet(parquet)
    valid, quarantine = _parse(parquet.getvalue(), ".parquet")
    assert valid["text"].to_list() == ["user: where is my card?"]
    assert quarantine["reason"].to_list() == ["no_assistant_turn"]


def test_a_renamed_messages_column_is_mapped() -> None:
    data = DataParams(task="chat", columns=ColumnMap(messages="conversation"))
    valid, _ = _parse(_jsonl([{"conversation": GOOD}]), data=data)
    assert valid["response"].to_list() == ["It arrives in 3 days."]


@pytest.mark.parametrize(
    ("records", "task"),
    [
        ([{"messages": GOOD}, {"messages": []}], "chat"),
        ([{"prompt": "p", "response": "r"}], "instruction"),
        ([{"instruction": "i", "input": "", "output": "o"}], "instruction"),
        ([{"text": "where is my card", "label": "card_arrival"}], "classification"),
        ([{"text": "t", "label": "l"}, {"messages": GOOD}, {"messages": GOOD}], "chat"),  # most records
    ],
)
def test_auto_detection_reads_the_first_records(records: list[dict], task: str) -> None:
    content = b"not json\n\n" + _jsonl(records)  # bad lines do not vote
    assert detect_task(content, suffix=".jsonl", source="t.jsonl", data=DataParams()) == task
    array = json.dumps(records).encode()
    assert detect_task(array, suffix=".json", source="t.json", data=DataParams()) == task


def test_auto_is_decided_once_from_train_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "train.jsonl").write_bytes(_jsonl([{"messages": GOOD}, {"messages": [SYSTEM, *GOOD]}]))
    pl.DataFrame({"messages": [json.dumps(GOOD)]}).write_csv(tmp_path / "test.csv")  # JSON text in CSV
    assert DataParams().task == "auto"
    with caplog.at_level(logging.INFO, logger="flows.files"):
        got = read_inputs(
            train_path=tmp_path / "train.jsonl",
            test_path=tmp_path / "test.csv",
            data=DataParams(),
            params_dir=tmp_path,
        )
    assert got.data.task == "chat" and got.label_set is None
    assert "data.task: auto -> chat" in caplog.text
    assert got.train.height == 2 and got.test["response"].to_list() == ["It arrives in 3 days."]


@pytest.mark.slow  # the whole pipeline, report included (~10 s idle)
def test_curate_works_on_chat_files_without_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`curagate curate --train chat.jsonl --test chat_test.jsonl --out o` in an empty directory."""
    from typer.testing import CliRunner

    from flows.cli import app

    questions = [
        "where is my card", "my card was stolen yesterday", "how do I reset my pin", "can I top up by cheque",
        "why was I charged a fee", "the exchange rate looks wrong", "cancel my last transfer please",
        "is apple pay supported", "my refund has not arrived", "how long does a bank transfer take",
    ]  # fmt: skip
    answers = [
        "Cards usually arrive within five working days of the order.",
        "Freeze the card in the app right away and order a replacement.",
        "You can change your PIN at any cash machine that accepts our cards.",
        "Cheques are not accepted for top ups, but bank transfers are.",
        "That fee applies to cash withdrawals above the monthly free limit.",
        "We use the wholesale exchange rate plus a small weekend markup.",
        "Transfers that are still pending can be cancelled from the activity screen.",
        "Yes, you can add the card to your phone wallet from the card settings.",
        "Refunds take up to ten days to reach your account after the merchant sends them.",
        "Domestic transfers normally arrive the same day, international ones within three days.",
    ]  # realistic answers: the instruction checks (language, repetition, ...) pass them
    pairs = zip(questions, answers, strict=True)
    train = [{"messages": _turns(("user", q), ("assistant", a))} for q, a in pairs]
    train.append({"messages": _turns(("user", "hi"), ("user", "hello?"), ("assistant", "yes"))})
    test = [{"messages": _turns(("user", "what is my balance"), ("assistant", "See the app."))}]
    (tmp_path / "chat.jsonl").write_bytes(_jsonl(train))
    (tmp_path / "chat_test.jsonl").write_bytes(_jsonl(test))
    monkeypatch.chdir(tmp_path)
    args = ["curate", "--train", "chat.jsonl", "--test", "chat_test.jsonl", "--out", "o", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    curated = pl.read_parquet(tmp_path / "o/train.parquet")
    assert curated.height == len(questions)
    assert [json.loads(m)[-1]["content"] for m in curated["messages"]] == curated["response"].to_list()
    quarantine = pl.read_parquet(tmp_path / "o/quarantine.parquet")
    assert quarantine["reason"].to_list() == ["roles_not_alternating"] and quarantine["line"].to_list() == [
        11
    ]
    quality = json.loads((tmp_path / "o/quality.json").read_text())
    assert quality["accounting_ok"] == 1 and quality["input_train_rows"] == len(train)
    assert quality["curated_train_rows"] + quality["quarantined_train"] == len(train)


@pytest.mark.slow  # imports transformers
def test_chat_prompts_hold_every_turn_before_the_answer() -> None:
    from training.prompts import INSTRUCTION_SYSTEM, chat_messages

    turns = [*GOOD, *_turns(("user", "and my pin?"), ("assistant", "By post."))]
    context = chat_messages(json.dumps(turns))
    assert context == [{"role": "system", "content": INSTRUCTION_SYSTEM}, *turns[:-1]]
    assert chat_messages(json.dumps([SYSTEM, *GOOD])) == [SYSTEM, GOOD[0]]  # its own system turn
