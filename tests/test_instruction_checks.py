"""Instruction/chat data quality checks: reason codes on inline rows, the policy, planted defects
(recall and precision per check), and `run_curation` end to end on a small instruction JSONL."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from curation.instruction import detect_instruction_issues, language_inputs
from curation.instruction_corrupt import TRICKY_KINDS, check_scores, instruction_dataset
from curation.policy import apply_instruction_policy
from flows.language import detect_languages
from schemas.instruction_params import INSTRUCTION_CHECKS, InstructionParams, InstructionPolicy
from schemas.params import ParamsError, params_from_dict
from schemas.records import FLAG_ISSUES

CFG = InstructionParams()
ANSWER = "You can freeze your card in the app under Cards, then tap Freeze."
PROMPT = "How do I freeze my card?"


def _frame(pairs: list[tuple[str, str]]) -> pl.DataFrame:
    n = len(pairs)
    return pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "split": ["train"] * n,
            "line": list(range(1, n + 1)),
            "text": [p for p, _ in pairs],
            "response": [r for _, r in pairs],
            "label": pl.Series([None] * n, dtype=pl.String),
            "text_hash": [f"h{i}" for i in range(n)],
        }
    )


def _issues(response: str, prompt: str = PROMPT, cfg: InstructionParams = CFG) -> list[str]:
    detected = detect_instruction_issues(_frame([(prompt, response)]), cfg=cfg)
    return detected["instruction_issues"].to_list()[0]


@pytest.mark.parametrize(
    ("response", "check"),
    [
        ("...", "empty_response"),
        ("N/A", "empty_response"),
        ("<p></p>", "empty_response"),
        ("Ok", "short_response"),
        (PROMPT, "prompt_echo"),
        (PROMPT.upper(), "prompt_echo"),
        ("Open the app. Open the app. Open the app.", "repetitive_response"),
        ("the card the card the card the card the card", "repetitive_response"),
        (f"<|im_start|>assistant\n{ANSWER}<|im_end|>", "template_tokens"),
        (f"[INST] {PROMPT} [/INST] {ANSWER}", "template_tokens"),
        (f"### Response:\n{ANSWER}", "template_tokens"),
        (f"{ANSWER} Regards, {{{{agent_name}}}}", "template_tokens"),
        (f"<p>{ANSWER}</p>", "markup"),
        (f"{ANSWER}&nbsp;", "markup"),
        ("As an AI language model, I cannot help with that.", "refusal"),
        ("I'm sorry, but I can't assist with that request.", "refusal"),
        ("To freeze your card, open the app and go to the Cards section and", "truncated_response"),
        ("To freeze your card (in the app, open Cards and tap Freeze.", "truncated_response"),
        (f"{ANSWER} Run:\n```bash\ncurl https://api.example.com/cards", "truncated_response"),
        (f"{ANSWER} Or e-mail anna.kowalski@gmail.com.", "pii_in_response"),
        (f"{ANSWER} Your card 4111 1111 1111 1111 is active.", "pii_in_response"),
    ],
)
def test_each_planted_kind_gets_its_reason_code(response: str, check: str) -> None:
    assert _issues(response)[0] == check


@pytest.mark.parametrize(
    "response",
    [
        ANSWER,
        "Yes, within 24 hours.",  # short but valid
        'You asked: "how do I freeze". Open the app, go to Cards and tap Freeze.',  # quotes the prompt
        f'{ANSWER}\n```html\n<div class="x">{{{{ balance }}}}</div>\n'
        '<div class="x">{{ balance }}</div>\n```',  # HTML, a placeholder and a repeated line, in code
        f"I'm sorry to hear that. {ANSWER}",  # an apology that helps is no refusal
        "To freeze it:\n1. Open the app\n2. Go to Cards\n3. Tap Freeze",  # a list ends without a full stop
        f"{ANSWER} References look like 2024-0115-1234.",
        "We cannot reverse a settled payment, but you can raise a dispute from Payments in the app.",
    ],
)
def test_tricky_clean_rows_pass_every_check(response: str) -> None:
    assert _issues(response) == []


def test_a_chat_history_in_the_prompt_is_not_a_template_leftover() -> None:
    history = "User: my card is lost\nAssistant: I can help with that.\nUser: how do I freeze it?"
    assert _issues(ANSWER, prompt=history) == []
    assert _issues(ANSWER, prompt=f"<|im_start|>user\n{PROMPT}") == ["template_tokens"]


def test_language_check_uses_the_detector_output_and_its_confidence() -> None:
    frame = _frame(
        [(PROMPT, ANSWER), (PROMPT, "Vous pouvez geler votre carte dans l'application."), (PROMPT, "Yes.")]
    )
    inputs = language_inputs(frame, cfg=CFG)
    assert inputs[2] is None  # too short to judge: never sent to the detector
    languages = pl.DataFrame({"language": ["en", "fr", None], "language_score": [0.9, 0.55, None]})
    unsure = detect_instruction_issues(frame, cfg=CFG, languages=languages)
    assert unsure["non_target_language"].to_list() == [False, False, False]  # 0.55 < 0.6
    real = detect_instruction_issues(frame, cfg=CFG, languages=detect_languages(inputs))
    assert real["non_target_language"].to_list() == [False, True, False]
    assert "language 'fr'" in real["non_target_language_why"][1]
    with pytest.raises(ValueError, match="languages has 1 rows"):
        detect_instruction_issues(frame, cfg=CFG, languages=languages.head(1))


def test_policy_removes_or_holds_each_row_once_remove_before_flag() -> None:
    frame = _frame(
        [
            (PROMPT, ANSWER),
            (PROMPT, f"<p>{ANSWER}</p>"),  # markup: flag
            (PROMPT, f"<p>[INST] {ANSWER}</p>"),  # markup (flag) and template tokens (remove): removed
            (PROMPT, "..."),
        ]
    )
    out = apply_instruction_policy(detect_instruction_issues(frame, cfg=CFG), cfg=CFG)
    assert out.kept["id"].to_list() == ["r0"] and out.kept.columns == frame.columns
    assert out.kept.height + out.removed.height == frame.height
    reasons = dict(zip(out.removed["id"], out.removed["reason"], strict=True))
    assert reasons == {"r1": "pending_review", "r2": "template_tokens", "r3": "empty_response"}
    assert set(out.removed["stage"]) == {"instruction"}
    assert "markup:" in out.removed.filter(pl.col("id") == "r2")["detail"][0]  # every failed check named
    assert out.flags.select("id", "issue").to_dicts() == [{"id": "r1", "issue": "markup"}]
    assert set(INSTRUCTION_CHECKS) <= set(FLAG_ISSUES)

    relaxed = InstructionParams(policy=InstructionPolicy(template_tokens="off", markup="remove"))
    again = apply_instruction_policy(detect_instruction_issues(frame, cfg=relaxed), cfg=relaxed)
    assert dict(zip(again.removed["id"], again.removed["reason"], strict=True)) == {
        "r1": "markup",
        "r2": "markup",
        "r3": "empty_response",
    }


def test_params_refuse_unknown_policy_and_bad_regex_with_their_key() -> None:
    with pytest.raises(ParamsError, match="instruction.policy.refusal: expected 'remove' | 'flag' | 'off'"):
        params_from_dict({"instruction": {"policy": {"refusal": "drop"}}}, where="params.yaml")
    with pytest.raises(ParamsError, match="refusal_phrases"):
        params_from_dict({"instruction": {"refusal_phrases": ["(unclosed"]}}, where="params.yaml")
    with pytest.raises(ParamsError, match="max_prompt_overlap"):
        params_from_dict({"instruction": {"max_prompt_overlap": 1.5}}, where="params.yaml")


def test_planted_defects_found_with_recall_and_precision_floors(banking_train) -> None:
    truth = instruction_dataset(banking_train.head(1200), seed=11, defects_per_kind=20, tricky_per_kind=15)
    frame = truth.select("id", pl.col("prompt").alias("text"), "response").with_columns(
        split=pl.lit("train"),
        line=pl.int_range(1, pl.len() + 1),
        label=pl.lit(None, pl.String),
        text_hash=pl.lit("h"),
    )
    detected = detect_instruction_issues(
        frame, cfg=CFG, languages=detect_languages(language_inputs(frame, cfg=CFG))
    )
    outcome = apply_instruction_policy(detected, cfg=CFG)
    scores = check_scores(detected, truth, primary=outcome.primary)
    assert scores["check"].to_list() == list(INSTRUCTION_CHECKS) and set(scores["planted"]) == {20}
    for row in scores.iter_rows(named=True):
        assert row["recall"] >= 0.9, row
        assert row["precision"] >= 0.9, row
        assert row["primary_precision"] >= 0.9, row
    tricky = detected.join(truth, on="id").filter(pl.col("tricky").is_not_null())
    assert set(tricky["tricky"]) == set(TRICKY_KINDS)
    assert tricky.filter(pl.col("instruction_issues").list.len() > 0).height <= 0.02 * tricky.height


def _write_instruction_files(root: Path, banking_train, banking_test) -> tuple[Path, Path]:
    truth = instruction_dataset(banking_train.head(300), seed=2, defects_per_kind=4, tricky_per_kind=3)
    train = root / "train.jsonl"
    train.write_text(
        "".join(
            json.dumps({"id": r["id"], "prompt": r["prompt"], "response": r["response"]}) + "\n"
            for r in truth.iter_rows(named=True)
        )  # fmt: skip
    )
    test = root / "test.jsonl"
    test.write_text(
        "".join(
            json.dumps({"prompt": t, "response": "See the Help tab in the app."}) + "\n"
            for t in banking_test["text"].head(40)
        )  # fmt: skip
    )
    return train, test


def test_run_curation_on_instruction_jsonl_puts_every_row_in_one_place(
    tmp_path: Path, banking_train, banking_test
) -> None:
    from flows.pipeline import run_curation, write_run

    train, test = _write_instruction_files(tmp_path, banking_train, banking_test)
    params = params_from_dict({"data": {"task": "instruction"}})
    digests = []
    for name in ("a", "b"):  # up to the review policy: the curated files, without the report's plots
        run = run_curation(train, test, params=params, until="review", show_progress=False)
        write_run(run, tmp_path / name)
        files = ("train.parquet", "removed.parquet", "held.parquet", "flags.parquet")
        digests.append({f: hashlib.md5((tmp_path / name / f).read_bytes()).hexdigest() for f in files})
    assert digests[0] == digests[1]  # byte-identical for the same inputs
    out = tmp_path / "a"
    kept, removed, held = (pl.read_parquet(out / f"{f}.parquet") for f in ("train", "removed", "held"))
    ids = [*kept["id"], *removed["id"], *held["id"]]
    assert sorted(ids) == sorted(f"q{i}" for i in range(300))  # each row in exactly one place
    mine = removed.filter(pl.col("stage") == "instruction")
    assert mine.group_by("reason").len().sort("reason").to_dicts() == [
        {"reason": c, "len": 4}
        for c in sorted(
            ["empty_response", "template_tokens", "refusal", "prompt_echo", "repetitive_response"]
        )
    ]
    assert held.group_by("issue").len().sort("issue").to_dicts() == [
        {"issue": c, "len": 4}
        for c in sorted(
            ["non_target_language", "pii_in_response", "markup", "truncated_response", "short_response"]
        )
    ]
    flags = pl.read_parquet(out / "flags.parquet")
    assert set(flags["id"]) == set(held["id"]) and set(flags["status"]) == {"pending"}
    # labels.json is written (a DVC out) and empty: instruction data has no label set
    from training.train import read_label_set

    assert json.loads((out / "labels.json").read_text()) == [] and read_label_set(out) is None


@pytest.mark.slow
def test_curate_publishes_per_check_counts_report_tables_and_gate(
    tmp_path: Path, banking_train, banking_test
) -> None:
    from flows.pipeline import run_curation, write_run
    from schemas.gate import evaluate_gate

    train, test = _write_instruction_files(tmp_path, banking_train, banking_test)
    params = params_from_dict({"data": {"task": "instruction"}})
    run = run_curation(train, test, params=params, show_progress=False)
    write_run(run, tmp_path / "out")
    q = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert q["accounting_ok"] == 1 and q["instruction_checked_rows"] == 300
    assert all(q[f"instruction_{c}"] >= 4 for c in INSTRUCTION_CHECKS)
    assert q["instruction_issue_rows"] == 40 and q["instruction_issue_rate"] == pytest.approx(
        40 / 300, abs=1e-6
    )
    assert q["removed_refusal"] == 4 and q["flags_markup"] == 4
    html = (tmp_path / "out" / "report.html").read_text()
    assert (
        "Instruction and chat checks" in html
        and "<td>refusal</td><td>remove</td><td>4</td><td>4</td>" in html
    )
    assert (
        "max_instruction_issue_rate" not in evaluate_gate(q, thresholds=params.gate)["failed"]
    )  # 0.13 <= 0.2
    strict = evaluate_gate(q, thresholds=params_from_dict({"gate": {"max_instruction_issue_rate": 0.1}}).gate)
    assert "max_instruction_issue_rate" in strict["failed"]


def test_classification_data_skips_the_checks() -> None:
    from flows.steps import instruction_step
    from schemas.records import FLAGS_SCHEMA, REMOVED_SCHEMA

    train = _frame([(PROMPT, "...")]).with_columns(response=pl.lit(None, pl.String), label=pl.lit("card"))
    removed, flags = pl.DataFrame(schema=REMOVED_SCHEMA), pl.DataFrame(schema=FLAGS_SCHEMA)
    out = instruction_step(
        train=train, removed=removed, flags=flags, data=params_from_dict({}).data, instruction=CFG
    )
    assert out.train.equals(train) and out.removed.height == 0 and out.instruction_checks is None
