"""Review of held instruction/chat rows: the decision-only interface, the task payload (PII
masked), annotations -> decisions, and push -> annotate -> pull -> curate against a small fake
of the Label Studio SDK (the real server: tests/test_labelstudio_integration.py)."""

from __future__ import annotations

import json
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import polars as pl
import pytest

from curation.review import (
    INSTRUCTION_KIND,
    annotations_to_reviews,
    build_instruction_label_config,
    build_instruction_tasks,
    instruction_review_queue,
    task_keys,
)
from schemas.params import params_from_dict
from schemas.review_params import INSTRUCTION_DECISIONS, LabelStudioParams

CFG = LabelStudioParams()
ANSWER = "You can freeze your card in the app under Cards, then tap Freeze."


def _queue() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": ["r1", "r2", "jane.doe@example.com-3"],
            "text_hash": ["h1", "h2", "h3"],
            "text": [
                "How do I freeze my card?",
                "user: my card is lost\nassistant: Sorry to hear that.\nuser: what now?",
                "Email me at jane.doe@example.com please",
            ],
            "response": [
                "<p>" + ANSWER + "</p>",
                "Call us on +44 20 7946 0958 and we will block the card and",
                "Done.",
            ],
            "issue": ["markup", "truncated_response", "short_response"],
            "score": [1.0, 1.0, 1.0],
            "reasons": [
                "markup: 2 HTML tag(s)/entities, e.g. '<p>'",
                "pii_in_response: 1 PII span(s): phone; truncated_response: ends on 'ard and'",
                "short_response: 1 word(s), fewer than 3: 'Done.'",
            ],
        }
    )


def test_the_interface_is_decision_only_keep_drop_unsure() -> None:
    xml = build_instruction_label_config(CFG)
    root = ET.fromstring(xml)  # well-formed
    texts = {t.get("name"): t.get("value") for t in root.iter("Text")}
    assert texts == {"text": "$text", "response": "$response", "reasons": "$reasons"}
    choices = list(root.iter("Choices"))
    assert [c.get("name") for c in choices] == ["decision"]  # no label choices: the rows have none
    assert [c.get("value") for c in choices[0].iter("Choice")] == list(INSTRUCTION_DECISIONS)
    assert choices[0].get("required") == "true" and "$issue" in xml


def test_tasks_mask_prompt_response_and_the_excerpts_of_rows_holding_pii() -> None:
    tasks, counts = build_instruction_tasks(_queue(), cfg=CFG)
    data = [t["data"] for t in tasks]
    assert all("predictions" not in t for t in tasks)  # nothing to pre-fill
    assert {d["kind"] for d in data} == {INSTRUCTION_KIND}
    assert [d["issue"] for d in data] == ["markup", "truncated_response", "short_response"]
    sent = json.dumps(data)
    assert "jane.doe" not in sent and "7946" not in sent
    assert data[1]["response"].startswith("Call us on [PHONE]")
    # a row whose response held PII: the reasons keep their codes, not their quoted excerpts
    assert data[1]["reasons"] == "pii_in_response: 1 PII span(s): phone; truncated_response: ends on '…'"
    assert data[0]["reasons"] == "markup: 2 HTML tag(s)/entities, e.g. '<p>'"  # no PII: unchanged
    assert data[0]["text"] == "How do I freeze my card?" and data[0]["response"].startswith("<p>You can")
    assert data[2]["flag_id"].startswith("pii-")  # an id holding PII travels as a pseudonym
    assert counts == {"email": 2, "phone": 1, "card": 0, "iban": 0}  # prompt + id, response


def _ann(decision: str, when: str, label: str | None = None) -> dict:
    result = [
        {"from_name": "decision", "to_name": "text", "type": "choices", "value": {"choices": [decision]}}
    ]
    if label:
        result.append(
            {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
        )
    return {
        "result": result,
        "was_cancelled": False,
        "created_username": "ann@example.com, 1",
        "created_at": when,
    }


def test_annotations_become_decisions_and_relabel_is_not_one_of_them() -> None:
    tasks, _ = build_instruction_tasks(_queue().head(2), cfg=CFG)
    for i, task in enumerate(tasks, start=1):
        task["id"] = i
    tasks[0]["annotations"] = [_ann("keep", "2026-01-01T10:00:00Z")]
    tasks[1]["annotations"] = [
        _ann("drop", "2026-01-01T10:00:00Z"),
        _ann("relabel", "2026-01-01T11:00:00Z", label="card_arrival"),  # not offered: -> unsure
    ]
    reviews = annotations_to_reviews(tasks)
    got = [(r["id"], r["decision"], r["label"]) for r in reviews.iter_rows(named=True)]
    assert got == [("r1", "keep", None), ("r2", "drop", None), ("r2", "unsure", None)]


def test_the_queue_needs_the_held_rows_responses() -> None:
    flags = _queue().select("id", "text_hash", "text", "issue", "score")
    held = _queue().select("id", "response", pl.col("reasons").alias("detail"))
    queue = instruction_review_queue(flags, held)
    assert queue.columns == ["id", "text_hash", "text", "response", "issue", "score", "reasons"]
    decided = flags.with_columns(status=pl.Series(["keep", "pending", "unsure"]))
    assert instruction_review_queue(decided, held.tail(2))["id"].to_list() == ["jane.doe@example.com-3", "r2"]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['response'\]: re-run curate"):
        instruction_review_queue(flags, held.drop("response"))
    with pytest.raises(ValueError, match="1 flag\\(s\\) have no held row"):
        instruction_review_queue(flags, held.head(2))


# --- push -> annotate -> pull -> curate, against a fake of the SDK ---------------------------


class _FakeLS:
    """Projects by title, their configs and tasks; the SDK calls push and pull make."""

    def __init__(self) -> None:
        self.by_title: dict[str, int] = {}
        self.configs: dict[int, str] = {}
        self.tasks_of: dict[int, list[dict]] = {}
        self.projects = self
        self.tasks = types.SimpleNamespace(list=self._list_tasks)

    def list(self, title: str) -> list:  # projects.list
        return [types.SimpleNamespace(id=self.by_title[title], title=title)] if title in self.by_title else []

    def create(self, *, title: str, label_config: str, **kwargs: object) -> types.SimpleNamespace:
        pid = len(self.by_title) + 1
        self.by_title[title], self.configs[pid], self.tasks_of[pid] = pid, label_config, []
        return types.SimpleNamespace(id=pid)

    def get(self, id: int) -> types.SimpleNamespace:  # noqa: A002 (the SDK's name)
        return types.SimpleNamespace(label_config=self.configs[id])

    def import_tasks(self, id: int, request: list[dict]) -> None:  # noqa: A002
        start = sum(len(t) for t in self.tasks_of.values())
        self.tasks_of[id].extend({"id": start + k, **t} for k, t in enumerate(request, start=1))

    def _list_tasks(self, *, project: int, **kwargs: object) -> list[dict]:
        return self.tasks_of[project]


def _instruction_files(
    root: Path, banking_train: pl.DataFrame, banking_test: pl.DataFrame
) -> tuple[Path, Path]:
    from curation.instruction_corrupt import instruction_dataset

    truth = instruction_dataset(banking_train.head(300), seed=2, defects_per_kind=4, tricky_per_kind=3)
    train, test = root / "train.jsonl", root / "test.jsonl"
    train.write_text(
        "".join(
            json.dumps({"id": r["id"], "prompt": r["prompt"], "response": r["response"]}) + "\n"
            for r in truth.iter_rows(named=True)
        )  # fmt: skip
    )
    test.write_text(
        "".join(
            json.dumps({"prompt": t, "response": "See the Help tab in the app."}) + "\n"
            for t in banking_test["text"].head(40)
        )  # fmt: skip
    )
    return train, test


def test_push_annotate_pull_curate_keeps_drops_and_holds(tmp_path: Path, banking_train, banking_test) -> None:
    from flows.labelstudio import pull_reviews, push_flags
    from flows.pipeline import run_curation, write_run

    train, test = _instruction_files(tmp_path, banking_train, banking_test)
    params = params_from_dict({"data": {"task": "instruction"}})
    cfg = params.labelstudio
    out = tmp_path / "out"
    write_run(run_curation(train, test, params=params, until="review", show_progress=False), out)
    held = pl.read_parquet(out / "held.parquet")
    assert held.height == 20 and held["response"].null_count() == 0 and set(held["source"]) == {str(train)}

    ls = _FakeLS()
    pushed = push_flags(ls, out, cfg)
    assert (pushed.imported, pushed.skipped) == (20, 0)
    assert list(ls.by_title) == [cfg.instruction_project_title]  # not the label-review project
    assert ls.configs[pushed.project_id] == build_instruction_label_config(cfg)
    tasks = {t["data"]["flag_id"]: t for t in ls.tasks_of[pushed.project_id]}
    assert set(tasks) == set(held["id"])
    assert "@" not in json.dumps([t["data"]["response"] for t in tasks.values()])  # PII masked
    assert push_flags(ls, out, cfg).imported == 0  # idempotent on (id, text_hash)

    by_issue = {r["issue"]: r["id"] for r in held.sort("id").iter_rows(named=True)}
    keep, drop, unsure = by_issue["markup"], by_issue["truncated_response"], by_issue["short_response"]
    for rid, decision in ((keep, "keep"), (drop, "drop"), (unsure, "unsure")):
        tasks[rid]["annotations"] = [_ann(decision, "2026-01-01T10:00:00Z")]
    reviews_path = tmp_path / "reviews.parquet"
    pulled = pull_reviews(ls, reviews_path, cfg, flags_dir=out)
    assert pulled.reviews == 3

    from flows.files import read_reviews

    again = tmp_path / "again"
    run = run_curation(
        train, test, params=params, until="review", reviews=read_reviews(reviews_path), show_progress=False
    )
    write_run(run, again)
    curated, removed, held2 = (pl.read_parquet(again / f"{f}.parquet") for f in ("train", "removed", "held"))
    assert keep in curated["id"].to_list()
    kept_response = curated.filter(pl.col("id") == keep)["response"].item()
    assert kept_response == held.filter(pl.col("id") == keep)["response"].item()  # as it was, unmasked
    dropped = removed.filter(pl.col("id") == drop).to_dicts()
    assert [(d["stage"], d["reason"]) for d in dropped] == [("review", "reviewer_drop")]
    assert dropped[0]["response"] is not None and dropped[0]["source"] == str(train)
    assert held2.filter(pl.col("id") == unsure)["status"].to_list() == ["unsure"]
    assert held2.height == 18 and keep not in held2["id"].to_list()
    ids = [*curated["id"], *removed["id"], *held2["id"]]
    assert sorted(ids) == sorted(f"q{i}" for i in range(300))  # each row still in exactly one place
    # the next push from the new output: the kept and dropped rows are no longer held, the rest
    # are already there
    after = push_flags(ls, again, cfg)
    assert (after.imported, after.skipped) == (0, 20)


def test_a_decision_lapses_when_the_response_changes() -> None:
    from curation.instruction import detect_instruction_issues
    from curation.policy import apply_instruction_policy
    from schemas.instruction_params import InstructionParams

    def flag_key(response: str) -> tuple[str, str]:
        frame = pl.DataFrame(
            {"id": ["r1"], "split": ["train"], "line": [1], "text": ["How do I freeze my card?"],
             "response": [response], "label": pl.Series([None], dtype=pl.String), "text_hash": ["h"]}
        )  # fmt: skip
        out = apply_instruction_policy(
            detect_instruction_issues(frame, cfg=InstructionParams()), cfg=InstructionParams()
        )
        return out.flags.select("id", "text_hash").row(0)

    first, edited = flag_key(f"<p>{ANSWER}</p>"), flag_key(f"<b>{ANSWER}</b>")
    assert first[0] == edited[0] and first[1] != edited[1]  # same row, same prompt, another key
    tasks = [{"data": {"flag_id": first[0], "text_hash": first[1]}}]
    assert task_keys(tasks) == {first}


def test_the_step_log_counts_each_steps_own_flags(tmp_path: Path, banking_train, banking_test) -> None:
    """On instruction data `noise` adds no flag: its line must not repeat the checks' 20."""
    from flows.pipeline import run_curation

    train, test = _instruction_files(tmp_path, banking_train, banking_test)
    lines: list[str] = []
    params = params_from_dict({"data": {"task": "instruction"}})
    run_curation(train, test, params=params, until="noise", show_progress=False, note=lines.append)
    by_step = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in lines}
    assert "20 flags added (20 in all)" in by_step["instruction"]
    assert "0 flags added (20 in all)" in by_step["noise"]


def test_chat_rows_are_reviewed_with_their_turns(tmp_path: Path) -> None:
    """Chat data: the task shows the conversation before the final answer, one turn a line."""
    from flows.labelstudio import push_flags
    from flows.pipeline import run_curation, write_run

    def chat(i: int, question: str, answer: str) -> dict:
        turns = [
            {"role": "system", "content": "You are a bank assistant."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "Could you tell me a little more about it?"},
            {"role": "user", "content": f"It is about case {i}."},
            {"role": "assistant", "content": answer},
        ]
        return {"id": f"c{i}", "messages": turns}

    answers = [
        "Your new card arrives within three working days of the order.",
        "Please call us on +44 20 7946 0958 so we can check the transfer.",  # pii_in_response: flag
        "You can freeze the card in the app under Cards, then tap Freeze and",  # truncated: flag
        "Top-ups from a new card can take up to an hour to show.",
    ]
    questions = ["where is my card?", "my transfer is missing", "how do I freeze it?", "top up pending"]
    train, test = tmp_path / "chat.jsonl", tmp_path / "chat_test.jsonl"
    train.write_text(
        "".join(
            json.dumps(chat(i, q, a)) + "\n" for i, (q, a) in enumerate(zip(questions, answers, strict=True))
        )
    )
    test.write_text(
        json.dumps(chat(9, "what is the exchange rate?", "It is shown before you confirm.")) + "\n"
    )
    out = tmp_path / "out"
    params = params_from_dict({"instruction": {"policy": {"non_target_language": "off"}}})  # data.task: auto
    write_run(run_curation(train, test, params=params, until="review", show_progress=False), out)
    assert json.loads((out / "labels.json").read_text()) == []
    ls = _FakeLS()
    pushed = push_flags(ls, out, params.labelstudio)
    data = {t["data"]["flag_id"]: t["data"] for t in ls.tasks_of[pushed.project_id]}
    assert {k: v["issue"] for k, v in data.items()} == {"c1": "pii_in_response", "c2": "truncated_response"}
    assert data["c2"]["text"].splitlines() == [
        "system: You are a bank assistant.",
        "user: how do I freeze it?",
        "assistant: Could you tell me a little more about it?",
        "user: It is about case 2.",
    ]
    assert data["c1"]["response"] == "Please call us on [PHONE] so we can check the transfer."
    assert "7946" not in json.dumps(data)


def test_a_corrupt_or_old_held_file_is_named(tmp_path: Path) -> None:
    """push raises ValueError naming the file (the CLI prints it, without a traceback)."""
    from flows.labelstudio import push_flags

    out = tmp_path / "out"
    out.mkdir()
    _queue().select("id", "text_hash", "text", "issue", "score").write_parquet(out / "flags.parquet")
    (out / "labels.json").write_text("[]\n")
    (out / "held.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="held.parquet: unreadable Parquet"):
        push_flags(_FakeLS(), out, CFG)
    _queue().select("id", "text").write_parquet(out / "held.parquet")  # from before responses
    with pytest.raises(ValueError, match=r"held.parquet: held lacks column\(s\) \['response', 'detail'\]"):
        push_flags(_FakeLS(), out, CFG)
