"""Unit tests of the pure review functions: PII masks, label config, tasks, reviews, decisions."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import polars as pl
import pytest
import typer

from curation.review import (
    annotations_to_reviews,
    build_label_config,
    build_tasks,
    iban_valid,
    luhn_valid,
    mask_pii,
    resolve_decisions,
    select_new_flags,
    task_keys,
)
from schemas.params import ParamsError, params_from_dict
from schemas.review_params import (
    REVIEWS_SCHEMA,
    LabelStudioParams,
    PiiParams,
    Review,
)

PII = PiiParams()
CFG = LabelStudioParams()
LABELS = ["card_arrival", "lost_or_stolen_card", "top_up_failed"]


def _mask(text: str, cfg: PiiParams = PII) -> tuple[str, dict[str, int]]:
    masked, counts = mask_pii(pl.Series("text", [text]), cfg=cfg)
    return masked[0], counts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to john.doe+bank@example.co.uk please", "write to [EMAIL] please"),
        ("UPPER.Case@Mail.ORG", "[EMAIL]"),
        ("call +44 20 7946 0958 now", "call [PHONE] now"),
        ("call +1-202-555-0173", "call [PHONE]"),
        ("ring 0044 20 7946 0958", "ring [PHONE]"),
        ("us (555) 123-4567", "us [PHONE]"),
        ("us 555-123-4567", "us [PHONE]"),
        ("us 555.123.4567", "us [PHONE]"),
        ("uk 07700 900123", "uk [PHONE]"),
        ("uk 020 7946 0958", "uk [PHONE]"),
        ("card 4111 1111 1111 1111 expired", "card [CARD] expired"),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("card 4111111111111111", "card [CARD]"),
        ("amex 378282246310005", "amex [CARD]"),
        ("iban GB82 WEST 1234 5698 7654 32 ok", "iban [IBAN] ok"),
        ("iban DE89370400440532013000", "iban [IBAN]"),
        ("iban FR14 2004 1010 0505 0001 3M02 606", "iban [IBAN]"),
    ],
)
def test_mask_pii_masks_varied_formats(text: str, expected: str) -> None:
    masked, counts = _mask(text)
    assert masked == expected
    assert sum(counts.values()) == 1


@pytest.mark.parametrize(
    "text",
    [
        "my order number is 12345678",
        "order #A-1029384 has not arrived",
        "reference 1234567890123",  # 13 digits, fails Luhn
        "card 4111 1111 1111 1112",  # Luhn fails: a typo, not a card
        "tracking 1Z999AA10123456784",
        "iban GB82 WEST 1234 5698 7654 33",  # mod-97 fails
        "I was charged 1,250.00 EUR on 2024-03-15",
        "my pin 1234 and cvv 123",
        "transfer 500 to account 12345",
        "version 1.23.2 is out",
        "not an email: user@localhost",
    ],
)
def test_mask_pii_leaves_look_alikes(text: str) -> None:
    masked, counts = _mask(text)
    assert masked == text
    assert sum(counts.values()) == 0


def test_mask_pii_counts_nulls_and_config() -> None:
    texts = pl.Series("text", ["a@b.com and c@d.org", None, "+44 20 7946 0958", "plain"])
    masked, counts = mask_pii(texts, cfg=PII)
    assert masked.to_list() == ["[EMAIL] and [EMAIL]", None, "[PHONE]", "plain"]
    assert counts == {"email": 2, "phone": 1, "card": 0, "iban": 0}
    assert masked.name == "text"
    # only some kinds, a custom placeholder, or off
    only_email = PiiParams(kinds=("email",), placeholder="<{kind}>")
    masked, counts = mask_pii(texts, cfg=only_email)
    assert masked[0] == "<EMAIL> and <EMAIL>"
    assert masked[2] == "+44 20 7946 0958"
    assert counts == {"email": 2}
    masked, counts = mask_pii(texts, cfg=PiiParams(enabled=False))
    assert masked.to_list() == texts.to_list()
    assert sum(counts.values()) == 0


def test_mask_pii_is_idempotent() -> None:
    once, _ = _mask("mail a@b.com card 4111111111111111 tel +44 20 7946 0958")
    twice, counts = _mask(once)
    assert twice == once
    assert sum(counts.values()) == 0


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82WEST12345698765433")


def test_label_config_is_valid_xml_with_all_labels() -> None:
    labels = [*LABELS, 'a "quoted" & <odd> label']
    root = ET.fromstring(build_label_config(labels, CFG))
    choices = {c.get("name"): c for c in root.iter("Choices")}
    assert set(choices) == {"decision", "label"}
    assert [c.get("value") for c in choices["label"]] == labels
    assert [c.get("value") for c in choices["decision"]] == ["keep", "relabel", "drop", "unsure"]
    assert choices["decision"].get("required") == "true"
    assert choices["label"].get("layout") == "select"
    texts = {t.get("name"): t.get("value") for t in root.iter("Text")}
    assert texts == {
        "text": "$text",
        "given_label": "$given_label",
        "suggested_label": "$suggested_label",
    }


def test_label_config_rejects_bad_label_sets() -> None:
    with pytest.raises(ValueError, match="empty"):
        build_label_config([], CFG)
    with pytest.raises(ValueError, match="duplicates"):
        build_label_config(["a", "a"], CFG)


def _flags() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": ["r1", "r2", "r3"],
            "text_hash": ["h1", "h2", "h3"],
            "text": ["card lost, mail me a@b.com", "where is my card", "top up failed"],
            "issue": ["label_issue", "conflicting_duplicate", "label_issue"],
            "score": [0.12, 0.5, 0.3],
            "given_label": ["card_arrival", "card_arrival", "top_up_failed"],
            "suggested_label": ["lost_or_stolen_card", None, "not_a_label"],
            "duplicate_of": [None, "r9", None],
        }
    )


def test_build_tasks_masks_and_prefills_suggestion() -> None:
    tasks = build_tasks(_flags(), LABELS, cfg=CFG)
    assert len(tasks) == 3
    first = tasks[0]
    assert first["data"]["text"] == "card lost, mail me [EMAIL]"
    assert first["data"]["flag_id"] == "r1" and first["data"]["text_hash"] == "h1"
    assert first["data"]["issue"] == "label_issue" and first["data"]["score"] == 0.12
    (prediction,) = first["predictions"]
    assert prediction["model_version"] == CFG.model_version
    assert prediction["score"] == 0.12
    assert prediction["result"] == [
        {
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["lost_or_stolen_card"]},
        }
    ]
    # no suggestion -> no prediction, empty strings for template variables
    assert "predictions" not in tasks[1]
    assert tasks[1]["data"]["suggested_label"] == "" and tasks[1]["data"]["duplicate_of"] == "r9"
    # a suggestion outside the label set is shown but not pre-filled
    assert "predictions" not in tasks[2]


def test_build_tasks_can_prefill_decision() -> None:
    cfg = LabelStudioParams(prefill_decision=True)
    tasks = build_tasks(_flags().head(1), LABELS, cfg=cfg)
    tags = {r["from_name"]: r["value"]["choices"] for r in tasks[0]["predictions"][0]["result"]}
    assert tags == {"label": ["lost_or_stolen_card"], "decision": ["relabel"]}


def test_build_tasks_requires_columns() -> None:
    with pytest.raises(ValueError, match="text_hash"):
        build_tasks(_flags().drop("text_hash"), LABELS, cfg=CFG)


def test_select_new_flags_by_id_and_text_hash() -> None:
    flags = pl.concat([_flags(), _flags().head(1)])  # a repeated row is pushed once
    existing = task_keys([{"data": {"flag_id": "r1", "text_hash": "h1"}}, {"data": {"x": 1}}])
    assert existing == {("r1", "h1")}
    new = select_new_flags(flags, existing)
    assert new["id"].to_list() == ["r2", "r3"]
    # same id, changed text -> a new key, a new task
    changed = _flags().with_columns(pl.lit("h1b").alias("text_hash")).head(1)
    assert select_new_flags(changed, existing).height == 1
    assert select_new_flags(flags, set()).height == 3


def _ann(decision: str | None, label: str | None, when: str, **extra: object) -> dict:
    result = []
    if decision:
        result.append(
            {"from_name": "decision", "to_name": "text", "type": "choices",
             "value": {"choices": [decision]}}
        )  # fmt: skip
    if label:
        result.append(
            {"from_name": "label", "to_name": "text", "type": "choices",
             "value": {"choices": [label]}}
        )  # fmt: skip
    return {
        "result": result,
        "created_username": " ann@example.com, 3",
        "completed_by": 3,
        "was_cancelled": False,
        "created_at": when,
        "updated_at": when,
        **extra,
    }


def _task(task_id: int, flag_id: str, annotations: list[dict]) -> dict:
    data = {"flag_id": flag_id, "text_hash": f"h-{flag_id}", "given_label": "card_arrival"}
    return {"id": task_id, "data": data, "annotations": annotations}


def test_annotations_to_reviews() -> None:
    tasks = [
        _task(1, "a", [_ann("relabel", "lost_or_stolen_card", "2026-01-01T10:00:00Z")]),
        _task(2, "b", [_ann("drop", "top_up_failed", "2026-01-01T11:00:00.5Z")]),
        _task(3, "c", [_ann("keep", None, "2026-01-01T12:00:00+01:00")]),
        _task(4, "d", [_ann("relabel", None, "2026-01-01T12:00:00Z")]),  # no label -> unsure
        _task(5, "e", [_ann("relabel", "card_arrival", "2026-01-01T12:00:00Z")]),  # = given
        _task(6, "f", [_ann(None, "top_up_failed", "2026-01-01T12:00:00Z")]),  # no decision
        _task(7, "g", [_ann("drop", None, "2026-01-01T12:00:00Z", was_cancelled=True)]),
        _task(8, "h", []),
        {"id": 9, "data": {"text": "not ours"}, "annotations": [_ann("drop", None, "2026")]},
    ]
    reviews = annotations_to_reviews(tasks)
    assert reviews.schema == pl.Schema(REVIEWS_SCHEMA)
    Review.validate(reviews)
    got = {r["id"]: (r["decision"], r["label"]) for r in reviews.iter_rows(named=True)}
    assert got == {
        "a": ("relabel", "lost_or_stolen_card"),
        "b": ("drop", None),
        "c": ("keep", None),
        "d": ("unsure", None),
        "e": ("keep", None),
        "f": ("unsure", None),
    }
    row_c = reviews.filter(pl.col("id") == "c").row(0, named=True)
    assert row_c["time"] == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    assert row_c["annotator"] == "ann@example.com" and row_c["task_id"] == 3
    assert row_c["text_hash"] == "h-c"
    assert annotations_to_reviews([]).schema == pl.Schema(REVIEWS_SCHEMA)


def _reviews(rows: list[tuple[str, str, str | None, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "id": i,
                "text_hash": "h",
                "decision": d,
                "label": lab,
                "annotator": "x",
                "time": t,
                "task_id": 1,
            }
            for i, d, lab, t in rows
        ]  # fmt: skip
    )


def test_resolve_decisions_latest_vs_majority() -> None:
    reviews = _reviews(
        [
            ("a", "relabel", "lost_or_stolen_card", "2026-01-01T10:00:00Z"),
            ("a", "relabel", "lost_or_stolen_card", "2026-01-01T11:00:00Z"),
            ("a", "drop", None, "2026-01-01T12:00:00Z"),  # latest, but outvoted
            ("b", "keep", None, "2026-01-02T09:00:00Z"),
        ]
    )
    latest = resolve_decisions(reviews, policy="latest")
    majority = resolve_decisions(reviews, policy="majority")
    assert latest.columns == ["id", "text_hash", "decision", "label", "n_reviews", "disagreement"]
    assert latest.rows() == [
        ("a", "h", "drop", None, 3, True),
        ("b", "h", "keep", None, 1, False),
    ]
    assert majority.rows() == [
        ("a", "h", "relabel", "lost_or_stolen_card", 3, True),
        ("b", "h", "keep", None, 1, False),
    ]


def test_resolve_decisions_majority_tie_goes_to_latest_and_input_order_free() -> None:
    reviews = _reviews(
        [
            ("a", "drop", None, "2026-01-01T12:00:00Z"),
            ("a", "keep", None, "2026-01-01T10:00:00Z"),
            ("a", "relabel", "top_up_failed", "2026-01-01T11:00:00Z"),
            ("a", "keep", None, "2026-01-01T13:00:00Z"),
            ("a", "drop", None, "2026-01-01T09:00:00Z"),
        ]
    )
    # keep and drop tie 2-2; keep's latest vote (13:00) is the most recent
    assert resolve_decisions(reviews, policy="majority")["decision"].to_list() == ["keep"]
    shuffled = reviews.sample(fraction=1.0, shuffle=True, seed=3)
    for policy in ("latest", "majority"):
        assert resolve_decisions(shuffled, policy=policy).equals(resolve_decisions(reviews, policy=policy))


def test_resolve_decisions_keys_on_text_hash_and_checks_input() -> None:
    reviews = _reviews([("a", "drop", None, "2026-01-01T12:00:00Z")])
    changed = reviews.with_columns(text_hash=pl.lit("h2"), decision=pl.lit("keep"))
    out = resolve_decisions(pl.concat([reviews, changed]), policy="latest")
    assert out.select("text_hash", "decision").rows() == [("h", "drop"), ("h2", "keep")]
    empty = resolve_decisions(reviews.clear(), policy="majority")
    assert empty.is_empty() and "disagreement" in empty.columns
    with pytest.raises(ValueError, match="policy"):
        resolve_decisions(reviews, policy="oldest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decision"):
        resolve_decisions(reviews.drop("decision"), policy="latest")


def test_labelstudio_params_typed_and_strict() -> None:
    cfg = params_from_dict({"labelstudio": {"project_title": "p", "pii": {"kinds": ["email"]}}}).labelstudio
    assert cfg.project_title == "p" and cfg.pii.kinds == ("email",)
    with pytest.raises(ParamsError, match="colour"):
        params_from_dict({"labelstudio": {"colour": "red"}})
    with pytest.raises(ParamsError, match="kinds"):
        params_from_dict({"labelstudio": {"pii": {"kinds": ["ssn"]}}})
    with pytest.raises(ParamsError, match="port"):
        params_from_dict({"labelstudio": {"server": {"port": 0}}})


def test_params_yaml_section_loads() -> None:
    from pathlib import Path

    from schemas.params import load_params

    root = Path(__file__).resolve().parents[1]
    cfg = load_params(root / "params.yaml").labelstudio
    assert cfg.server.venv == ".venv-labelstudio"
    assert set(cfg.pii.kinds) == {"email", "phone", "card", "iban"}


def test_register_adds_sub_apps() -> None:
    from typer.testing import CliRunner

    from flows.review_commands import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    for args, words in [
        (["labelstudio", "--help"], ("start", "stop")),
        (["review", "--help"], ("push", "pull")),
        (["review", "push", "--help"], ("--out",)),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert all(w in result.output for w in words)
