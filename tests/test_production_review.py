"""People check the model's answers: the sampler, the weighted estimate, verdicts, and reviewed
rows fed back into curate as extra train input (fast: inline frames, a fake Label Studio client).

The real Label Studio round trip is in tests/test_labelstudio_integration.py (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation.production import allocate_sample, estimate_accuracy, reviewed_train_rows, sample_predictions
from curation.review import annotations_to_verdicts, build_prediction_tasks, resolve_decisions
from schemas.params import ColumnMap, params_from_dict
from schemas.review_params import LabelStudioParams
from tests.test_review import _FakeLS

CFG = LabelStudioParams()
LOW = 0.5


def _choice(tag: str, value: str) -> dict:
    return {"from_name": tag, "to_name": "text", "type": "choices", "value": {"choices": [value]}}


def _ann(verdict: str | None, label: str | None, when: str) -> dict:
    result = [_choice("verdict", verdict)] if verdict else []
    if label:
        result.append(_choice("label", label))
    return {"result": result, "created_at": when, "completed_by": {"email": "a@example.com"}}


def _population(n: int, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    """n predictions over three labels; low-confidence answers are right far less often."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(["card_arrival", "exchange_rate", "top_up_failed"], n, p=[0.6, 0.3, 0.1])
    confidence = rng.uniform(0.0, 1.0, n)
    correct = rng.uniform(size=n) < np.where(confidence < LOW, 0.3, 0.95)
    frame = pl.DataFrame(
        {
            "id": [f"p{i}" for i in range(n)],
            "text": [f"query number {i}" for i in range(n)],
            "label": labels,
            "confidence": confidence,
            "model_version": ["v1"] * n,
            "predicted_at": ["2026-12-02T10:00:00Z"] * n,
        }
    )
    return frame, correct


def _sample(frame: pl.DataFrame, size: int) -> pl.DataFrame:
    return sample_predictions(frame, size=size, low_confidence=LOW, oversample=4.0, minimum=1, seed=0)


def _alloc(sizes: list[int], factors: list[float], total: int) -> list[int]:
    return allocate_sample(np.array(sizes), np.array(factors), total=total, minimum=1).tolist()


def test_allocation_gives_each_stratum_its_minimum_then_shares_by_size_times_factor() -> None:
    # 1 each, then 48 left split 100:400 -> 9.6 and 38.4: floors 9 + 38, the last row to the
    # larger remainder (0.6): 1 + 9 + 1 = 11 and 1 + 38 = 39
    assert _alloc([100, 100], [1.0, 4.0], total=50) == [11, 39]
    # capped at a stratum's size, the excess goes to the others; an empty stratum gets nothing
    assert _alloc([2, 0, 100], [4.0, 1.0, 1.0], total=10) == [2, 0, 8]
    # too small for every minimum: the strata of largest size x factor first
    assert _alloc([5, 3, 10], [1.0, 4.0, 1.0], total=2) == [0, 1, 1]
    # a census when the sample is at least the population
    assert _alloc([3, 4], [1.0, 4.0], total=9) == [3, 4]


def test_sample_is_stratified_oversamples_low_confidence_and_its_weights_undo_it() -> None:
    frame, _ = _population(2000, seed=1)
    sample = _sample(frame, 200)
    assert sample.height == 200 and sample["id"].n_unique() == 200
    assert sample["weight"].sum() == pytest.approx(frame.height)  # every prediction stood for once
    strata = sample.group_by("stratum").agg(
        pl.len().alias("n"), pl.col("stratum_size").first(), pl.col("weight").first(), pl.col("band").first()
    )
    band = pl.when(pl.col("confidence") < LOW).then(pl.lit("low")).otherwise(pl.lit("high"))
    sizes = frame.with_columns(stratum=pl.col("label") + "|" + band).group_by("stratum").len()
    assert strata.height == sizes.height == 6  # every (label, band) stratum is in the sample
    checked = strata.join(sizes, on="stratum")
    assert (checked["stratum_size"] == checked["len"]).all()
    assert (checked["weight"] - checked["stratum_size"] / checked["n"]).abs().max() < 1e-12
    prob = strata.with_columns(p=pl.col("n") / pl.col("stratum_size"))
    low_p = prob.filter(pl.col("band") == "low")["p"].mean()
    high_p = prob.filter(pl.col("band") == "high")["p"].mean()
    assert 3.0 < low_p / high_p < 5.0  # ~4x: the over-sampling factor, up to rounding
    # the same predictions in another order give the same sample: a re-push adds nothing
    assert _sample(frame.reverse(), 200).equals(sample)


def test_weighted_estimate_recovers_a_known_populations_accuracy() -> None:
    frame, correct = _population(4000, seed=2)
    truth = frame.with_columns(correct=pl.Series(correct))
    true_accuracy = float(correct.mean())
    sample = _sample(frame, 400).join(truth.select("id", "correct"), on="id")
    est = estimate_accuracy(sample, bootstrap_samples=2000, confidence=0.95, seed=0)
    assert est.accuracy_low < true_accuracy < est.accuracy_high
    assert est.reviewed == 400 and est.population == 4000 and est.population_covered == pytest.approx(1.0)
    # the plain share of correct answers is pulled down by the over-sampled low band
    assert est.accuracy_unweighted < est.accuracy_low
    # a census: every row reviewed, the estimate is the population's accuracy exactly
    census = _sample(frame, 4000).join(truth.select("id", "correct"), on="id")
    assert estimate_accuracy(census, bootstrap_samples=10, confidence=0.95, seed=0).accuracy == pytest.approx(
        true_accuracy
    )
    empty = estimate_accuracy(sample.head(0), bootstrap_samples=10, confidence=0.95, seed=0)
    assert empty.accuracy is None and empty.reviewed == 0


LABELS = ["card_arrival", "exchange_rate", "top_up_failed"]


def _tasks_with_ids(sample: pl.DataFrame) -> list[dict]:
    tasks, _ = build_prediction_tasks(sample, LABELS, cfg=CFG, model_version="curagate-production")
    for task_id, task in enumerate(tasks, start=1):
        task["id"] = task_id
    return tasks


def test_tasks_mask_pii_prefill_the_answer_and_verdicts_follow_the_rules() -> None:
    frame = pl.DataFrame(
        {
            "id": ["a", "b", "c", "d", "jane.doe@example.com"],
            "text": ["card late, mail jane@example.com", "rate?", "top up failed", "where is it", "hi"],
            "label": ["card_arrival", "exchange_rate", "top_up_failed", "card_arrival", "exchange_rate"],
            "confidence": [0.9, 0.2, 0.8, 0.4, 0.7],
        }
    )
    sample = _sample(frame, 10)
    tasks = _tasks_with_ids(sample)
    sent = json.dumps(tasks)
    assert "jane@example.com" not in sent and "jane.doe@example.com" not in sent
    by_text = {t["data"]["text"]: t for t in tasks}
    first = by_text["card late, mail [EMAIL]"]
    assert first["predictions"][0]["result"][0]["value"]["choices"] == ["card_arrival"]
    assert first["data"]["weight"] == 1.0 and first["data"]["model_label"] == "card_arrival"
    answers = {
        "card late, mail [EMAIL]": _ann("correct", "card_arrival", "2026-12-02T11:00:00Z"),
        "rate?": _ann("wrong", "card_arrival", "2026-12-02T11:00:00Z"),
        "top up failed": _ann("wrong", None, "2026-12-02T11:00:00Z"),  # wrong, but no right label
        "where is it": _ann("correct", "exchange_rate", "2026-12-02T11:00:00Z"),  # contradiction
    }
    for text, ann in answers.items():
        by_text[text]["annotations"] = [ann]
    verdicts = annotations_to_verdicts(tasks)
    got = {r["id"]: (r["decision"], r["label"]) for r in verdicts.iter_rows(named=True)}
    assert got == {
        "a": ("correct", "card_arrival"),
        "b": ("wrong", "card_arrival"),
        "c": ("unsure", None),
        "d": ("unsure", None),
    }
    resolved = resolve_decisions(verdicts, policy="latest")
    assert resolved.height == 4


def test_reviewed_rows_use_the_train_files_columns_and_unique_ids() -> None:
    decisions = pl.DataFrame(
        {
            "id": ["p1", "p1", "p2", "p3"],
            "text_hash": ["h1", "h9", "h2", "h3"],
            "text": ["one", "one again", "two", "three"],
            "verdict": ["correct", "wrong", "unsure", "wrong"],
            "right_label": ["a", "b", None, "c"],
            "model_label": ["a", "a", "b", "a"],
            "model_version": ["v1"] * 4,
            "reviewed_at": pl.Series(["2026-12-02T11:00:00"] * 4).str.to_datetime(time_zone="UTC"),
        }
    )
    rows = reviewed_train_rows(decisions, columns=ColumnMap(label="category"))
    assert rows.columns == ["id", "text", "category", "origin", "reviewed_at", "model_label", "model_version"]
    assert rows["id"].to_list() == ["production-p1", "production-p1-2", "production-p3"]
    assert rows["category"].to_list() == ["a", "b", "c"]
    assert rows["reviewed_at"][0] == "2026-12-02T11:00:00.000000Z"


def _params(tmp_path: Path, **data: object) -> object:
    feedback = tmp_path / "feedback"
    return params_from_dict(
        {
            "data": {"columns": {"label": "category"}, "labels": LABELS, **data},
            "noise": {"enabled": False},
            "prediction_review": {
                "sample_size": 6,
                "bootstrap_samples": 200,
                "sample_file": str(feedback / "sample.parquet"),
                "decisions_file": str(feedback / "decisions.parquet"),
                "reviewed_file": str(feedback / "reviewed.jsonl"),
                "metrics_file": str(tmp_path / "reports" / "production.json"),
            },
        }
    )


def test_push_pull_then_curate_reads_reviewed_rows_as_extra_train(tmp_path: Path) -> None:
    from curation.ingest import InputFileError
    from flows.labelstudio import pull_prediction_reviews, push_prediction_sample
    from flows.pipeline import run_curation, write_run

    train_texts = {
        "card_arrival": ["my card has not arrived", "when will my card come", "card still not here"],
        "exchange_rate": ["what is the exchange rate", "euro to dollar rate please", "rate for yen"],
        "top_up_failed": ["top up did not work", "my top-up failed", "cannot top up my account"],
    }
    train = tmp_path / "train.csv"
    pl.DataFrame(
        [(t, lab) for lab, texts in train_texts.items() for t in texts],
        schema=["text", "category"],
        orient="row",
    ).write_csv(train)
    test = tmp_path / "test.csv"
    test_rows = [
        ("how long does a new card take to arrive", "card_arrival"),
        ("top up declined", "top_up_failed"),
    ]
    pl.DataFrame(test_rows, schema=["text", "category"], orient="row").write_csv(test)
    predictions = pl.DataFrame(
        {
            "id": ["t1", "t2", "t3", "t4", "t5", "t6"],
            "text": [
                "new card arrives when?",  # reviewed correct: a new train row
                "how long does a new card take to arrive",  # copies a test row: test_leak
                "my top-up failed",  # copies a train row: exact_duplicate
                "is the yen rate good today",  # reviewed wrong -> exchange_rate
                "top up blocked again",  # unsure: no train row
                "rate for pounds",  # not reviewed yet
            ],
            "label": [
                "card_arrival",
                "card_arrival",
                "top_up_failed",
                "card_arrival",
                "top_up_failed",
                "exchange_rate",
            ],
            "confidence": [0.9, 0.8, 0.3, 0.2, 0.6, 0.95],
            "model_version": ["v1"] * 6,
            "predicted_at": ["2026-12-02T10:00:00Z"] * 6,
        }
    )
    params = _params(tmp_path)
    ls = _FakeLS()
    pushed = push_prediction_sample(predictions, params, ls=ls)
    assert (pushed.sampled, pushed.imported, pushed.skipped) == (6, 6, 0)
    assert push_prediction_sample(predictions, params, ls=ls).imported == 0  # idempotent
    verdict = {
        "t1": ("correct", "card_arrival"),
        "t2": ("correct", "card_arrival"),
        "t3": ("correct", "top_up_failed"),
        "t4": ("wrong", "exchange_rate"),
        "t5": ("unsure", None),
    }
    for task in ls.imported:
        if task["data"]["flag_id"] in verdict:
            task["annotations"] = [_ann(*verdict[task["data"]["flag_id"]], "2026-12-02T11:00:00Z")]
    pulled = pull_prediction_reviews(params, ls=ls)
    assert (pulled.reviewed, pulled.unsure, pulled.train_rows) == (5, 1, 4)
    metrics = json.loads(Path(pulled.metrics_file).read_text())
    assert metrics["reviewed"] == 4 and metrics["correct"] == 3
    assert metrics["accuracy_low"] <= metrics["accuracy"] <= metrics["accuracy_high"]
    reviewed_file = Path(pulled.reviewed_file)
    first_bytes = reviewed_file.read_bytes()
    pull_prediction_reviews(params, ls=ls)
    assert reviewed_file.read_bytes() == first_bytes  # the same reviews, the same file

    # a bad line in the feedback file is quarantined with that file's name and line
    reviewed_file.write_bytes(first_bytes + b'{"id": "x", "text": "?", "category": "not_a_label"}\n')
    curate_params = _params(tmp_path, extra_train=[str(reviewed_file)])
    run = run_curation(train, test, params=curate_params, until="review", show_progress=False)
    input_rows = run.values["input_rows"]["train"]
    quarantined = run.frame("quarantine").filter(pl.col("split") == "train").height
    outcome = run.frame("train").height + run.frame("removed").height + run.frame("held").height + quarantined
    assert input_rows == 9 + 5 == outcome  # the accounting quality.json checks, extra rows included
    removed = {r["id"]: r["reason"] for r in run.frame("removed").iter_rows(named=True)}
    assert removed["production-t2"] == "test_leak"
    # the train row and the reviewed copy: one stays, the other goes as its exact duplicate
    copies = run.frame("removed").filter(pl.col("text") == "my top-up failed")
    assert copies["reason"].to_list() == ["exact_duplicate"]
    curated = {r["id"]: r["label"] for r in run.frame("train").iter_rows(named=True)}
    assert curated["production-t1"] == "card_arrival" and curated["production-t4"] == "exchange_rate"
    written = pl.read_parquet(write_run(run, tmp_path / "curated")[0].parent / "train.parquet")
    assert written.filter(pl.col("id") == "production-t1")["origin"].to_list() == ["production"]
    from_train = written.filter(~pl.col("id").str.starts_with("production-"))
    assert from_train.height and from_train["origin"].null_count() == from_train.height
    bad = run.frame("quarantine").row(0, named=True)
    assert (bad["source"], bad["line"], bad["reason"]) == (str(reviewed_file), 5, "label_not_in_label_set")
    # an empty feedback file adds nothing; a missing one is an error naming it
    reviewed_file.write_bytes(b"")
    empty = run_curation(train, test, params=curate_params, until="ingest", show_progress=False)
    assert empty.values["input_rows"]["train"] == 9
    with pytest.raises(InputFileError, match="nowhere.jsonl: file not found"):
        missing = _params(tmp_path, extra_train=["nowhere.jsonl"])
        run_curation(train, test, params=missing, until="ingest", show_progress=False)


def test_push_predictions_names_a_missing_or_malformed_file_and_exits_2(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from flows.review_commands import register

    app = typer.Typer()
    register(app)
    missing = CliRunner().invoke(
        app, ["review", "push-predictions", "--predictions", str(tmp_path / "p.parquet")]
    )
    said = " ".join(missing.output.split())  # rich wraps long lines
    assert missing.exit_code == 2 and "p.parquet: predictions file not found" in said
    pl.DataFrame({"id": ["a"], "text": ["hi"]}).write_parquet(tmp_path / "bad.parquet")
    bad = CliRunner().invoke(
        app, ["review", "push-predictions", "--predictions", str(tmp_path / "bad.parquet")]
    )
    assert bad.exit_code == 2 and "bad.parquet: column 'label' missing" in " ".join(bad.output.split())
    assert "Traceback" not in missing.output + bad.output


def test_comparison_rows_take_the_right_label_and_leave_out_what_the_challenger_trained_on() -> None:
    from curation.production import production_comparison_rows

    decisions = pl.DataFrame(
        {
            "id": ["p1", "p2", "p3", "p4", "p1"],
            "text_hash": ["h1", "h2", "h3", "h4", "h5"],
            "text": ["Where is my card?", "rate?", None, "top up failed", "card again"],
            "verdict": ["correct", "wrong", "wrong", "unsure", "wrong"],
            "right_label": ["card_arrival", "exchange_rate", "top_up_failed", None, "card_arrival"],
            "model_label": [
                "card_arrival",
                "card_arrival",
                "exchange_rate",
                "exchange_rate",
                "exchange_rate",
            ],
            "model_version": ["v1"] * 5,
            "weight": [2.0, 1.0, 1.0, 1.0, 3.0],
        }
    )
    rows, counts = production_comparison_rows(decisions)
    # unsure gives nothing, a row without its text neither; a repeated id stays unique
    assert rows["id"].to_list() == ["p1", "p1-2", "p2"]
    assert rows["label"].to_list() == ["card_arrival", "card_arrival", "exchange_rate"]
    assert rows["weight"].to_list() == [2.0, 3.0, 1.0]
    assert counts == {"judged": 4, "without_text": 1, "trained_on": 0, "rows": 3}
    # the challenger's train rows (curate may have re-spaced or re-cased them) are left out
    trained = pl.Series(["  where is   my card? ", "something else"])
    rows, counts = production_comparison_rows(decisions, trained_texts=trained)
    assert rows["id"].to_list() == ["p1-2", "p2"] and counts["trained_on"] == 1
    with pytest.raises(ValueError, match="right_label"):
        production_comparison_rows(decisions.drop("right_label"))
