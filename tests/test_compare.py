"""Raw vs curated: the demo's planted faults and their accounting (planted vs caught), the
compare statistics on known cases, and a tiny real `compare` run with SmolLM2 (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from curation.corrupt import MALFORMED_KINDS, corrupt  # noqa: E402
from curation.report import planted_metrics, planted_vs_caught  # noqa: E402
from flows.compare import leak_map, make_demo_data  # noqa: E402
from schemas.params import ParamsError, params_from_dict  # noqa: E402
from schemas.training_params import EvaluateParams  # noqa: E402
from training.compare import group_comparison, row_groups, scored_rows  # noqa: E402

LABELS = ["card_arrival", "card_delivery_estimate", "top_up_failed", "top_up_reverted"]
WORDS = (
    "when will my new card arrive ship post mail deliver top up failed money reverted back "
    "account balance why did the payment stop work today yesterday please help me check status"
).split()


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add(" ".join(rng.choice(WORDS, size=7)))
    return sorted(out)


def _frame(n_per_label: int, seed: int) -> pl.DataFrame:
    texts = _texts(n_per_label * len(LABELS), seed)
    return pl.DataFrame({"text": texts, "label": [LABELS[i % len(LABELS)] for i in range(len(texts))]})


# ── the planted faults ───────────────────────────────────────────────────────────────


def test_confusable_flips_go_to_the_partner_and_the_truth_lists_every_fault() -> None:
    train, test = _frame(25, 0), _frame(5, 1)
    pairs = [("card_arrival", "card_delivery_estimate"), ("top_up_failed", "top_up_reverted")]
    lines, _, truth = corrupt(
        train, test, labels=LABELS, seed=3, flip_rate=0.2, confusable_share=0.5, confusable_pairs=pairs,
        leak_rate=0.06, leak_edits=("exact", "word_replace"), label_key="category", copy_flipped=False,
    )  # fmt: skip
    partner = dict(pairs) | {b: a for a, b in pairs}
    gold = dict(zip(train["text"], train["label"], strict=True))
    records = [json.loads(line) for line in lines if line.startswith(b'{"id": "r')]
    given = {r["id"]: r.get("category") for r in records if isinstance(r, dict)}
    confusable = [i for i, k in truth.flip_kinds.items() if k == "confusable"]
    assert len(truth.flipped) == 20 and len(confusable) == 10
    for rid in confusable:  # the flip names the confusable partner of the true label
        assert given[rid] == partner[truth.flipped[rid]]
    assert all(given[rid] != truth.flipped[rid] for rid in truth.flipped)
    assert not set(truth.copies.values()) & set(truth.flipped)  # copy_flipped=False
    assert sorted(set(truth.leak_edits.values())) == ["exact", "word_replace"]
    assert {truth.leak_texts[i] for i in truth.leaks} <= set(test["text"])
    assert sorted(truth.malformed.values()) == sorted(MALFORMED_KINDS)  # classified with label_key
    planted = truth.planted()
    counts = dict(planted.group_by("kind").len().iter_rows())
    assert counts == {"label_flip": 10, "confusable_flip": 10, "near_copy": 5, "test_leak": 6,
                      "malformed": len(MALFORMED_KINDS)}  # fmt: skip
    assert gold  # the source frame was used as is
    del records


def test_default_arguments_draw_what_earlier_versions_drew() -> None:
    train, test = _frame(25, 0), _frame(5, 1)
    plain = corrupt(train, test, labels=LABELS, seed=5)
    explicit = corrupt(train, test, labels=LABELS, seed=5, confusable_share=0.0, leak_edits=("exact", "typo"))
    assert plain[0] == explicit[0] and plain[2].flipped == explicit[2].flipped
    assert set(plain[2].flip_kinds.values()) == {"random"}


def test_planted_vs_caught_counts_each_kind_by_the_stage_meant_for_it() -> None:
    planted = pl.DataFrame(
        {
            "id": ["f1", "f2", "c1", "c2", "c3", "l1", "l2", None, None],
            "line": [None, None, None, None, None, None, None, 4, 9],
            "kind": [
                "label_flip",
                "confusable_flip",
                "near_copy",
                "near_copy",
                "near_copy",
                "test_leak",
                "test_leak",
                "malformed",
                "malformed",
            ],  # fmt: skip
            "edit": [
                "a",
                "b",
                "exact",
                "typo",
                "word_replace",
                "exact",
                "word_replace",
                "invalid_json",
                "null_text",
            ],
            "source": [None, None, "s1", "s2", "s3", "leaked text", "other text", None, None],
        },
        schema_overrides={"line": pl.Int64},
    )
    removed = pl.DataFrame(
        {
            "id": ["c1", "s2", "l1", "l2"],
            "reason": ["exact_duplicate", "near_duplicate", "test_leak", "near_duplicate"],
            "duplicate_of": ["s1", "c2", "t1", "x"],
        }  # fmt: skip
    )
    flags = pl.DataFrame({"id": ["f1"], "issue": ["label_issue"]})
    quarantine = pl.DataFrame({"split": ["train", "test"], "line": [4, 9]})
    curated = pl.DataFrame({"id": ["f2", "c2", "c3", "s1", "s3"]})
    table = planted_vs_caught(
        planted, curated_train=curated, removed=removed, flags=flags, quarantine=quarantine
    )
    got = {k: (p, c, o) for k, p, c, _, o in table.iter_rows()}
    # flips: f1 flagged, f2 not; copies: c1 removed, c2's source removed as its duplicate, c3 missed;
    # leaks: l1 removed as test_leak, l2 only as a duplicate (not caught as a leak, but out of train);
    # malformed: line 4 of train quarantined, line 9 only in test
    assert got == {
        "label_flip": (1, 1, 1),
        "confusable_flip": (1, 0, 0),
        "near_copy": (3, 2, 1),
        "test_leak": (2, 1, 2),
        "malformed": (2, 1, 1),
    }
    assert table["kind"].to_list() == ["label_flip", "confusable_flip", "near_copy", "test_leak", "malformed"]
    metrics = planted_metrics(table)
    assert metrics["recall_near_copy"] == pytest.approx(2 / 3, abs=1e-4) and metrics["planted_malformed"] == 2
    by_edit = planted_vs_caught(
        planted, curated_train=curated, removed=removed, flags=flags, quarantine=quarantine, by_edit=True
    )
    leak_rows = by_edit.filter(pl.col("kind") == "test_leak")
    assert dict(zip(leak_rows["edit"], leak_rows["caught"], strict=True)) == {"exact": 1, "word_replace": 0}


def test_demo_data_then_curate_reports_planted_vs_caught(tmp_path: Path) -> None:
    from flows.pipeline import run_curation

    _frame(30, 0).rename({"label": "category"}).write_csv(tmp_path / "train.csv")
    _frame(6, 1).rename({"label": "category"}).write_csv(tmp_path / "test.csv")
    (tmp_path / "labels.json").write_text(json.dumps(LABELS))
    raw = {
        "data": {"train": "demo/train.jsonl", "test": "test.csv", "labels": "labels.json",
                 "columns": {"label": "category"}},
        "demo": {"source_train": "train.csv", "source_test": "test.csv", "seed": 1, "flip_rate": 0.1,
                 "confusable_pairs": [["card_arrival", "card_delivery_estimate"]], "leak_rate": 0.05},
        "report": {"planted": str(tmp_path / "demo" / "planted.parquet")},
        "noise": {"min_fit_rows_per_class": 5, "min_class_rows": 5},
    }  # fmt: skip
    params = params_from_dict(raw, base_dir=tmp_path)
    summary = make_demo_data(params, out_dir=tmp_path / "demo")
    assert summary["planted"]["test_leak"] == 6 and summary["planted"]["malformed"] == len(MALFORMED_KINDS)
    first = (tmp_path / "demo" / "train.jsonl").read_bytes()
    make_demo_data(params, out_dir=tmp_path / "demo")
    assert (tmp_path / "demo" / "train.jsonl").read_bytes() == first  # seeded: byte-identical
    run = run_curation(
        tmp_path / "demo" / "train.jsonl", tmp_path / "test.csv", params=params, show_progress=False
    )
    m = run.metrics
    assert m["accounting_ok"] == 1
    assert m["planted_malformed"] == m["caught_malformed"] == len(MALFORMED_KINDS)
    assert m["caught_test_leak"] >= 4  # the exact and typo leaks (a paraphrase may slip through)
    assert "Planted vs caught" in run.values["report_html"]


def test_demo_and_compare_sections_are_checked() -> None:
    params = params_from_dict({"compare": {"max_train_examples": 50, "sample_size": None}})
    assert params.compare.max_train_examples == 50 and params.demo.seed == 7
    with pytest.raises(ParamsError, match="confusable_pairs"):
        params_from_dict({"demo": {"confusable_pairs": [["a", "a"]]}})
    with pytest.raises(ParamsError, match="leak_edits"):
        params_from_dict({"demo": {"leak_edits": ["rot13"]}})
    with pytest.raises(ParamsError, match="max_train_examples"):
        params_from_dict({"compare": {"max_train_examples": 0}})


# ── compare statistics (pure) ────────────────────────────────────────────────────────


def test_group_comparison_on_a_known_case() -> None:
    gold = ["a", "a", "b", "b", "a", "b"]
    preds = {"raw": ["a", "b", "b", "a", "a", "a"], "curated": ["a", "a", "b", "b", "a", "a"]}
    groups = {
        "clean": np.array([0, 1, 2, 3]),
        "leaked": np.array([4, 5]),
        "empty": np.array([], dtype=np.int64),
    }
    out = group_comparison(
        gold, preds, groups, label_set=["a", "b"], params=EvaluateParams(bootstrap_samples=300)
    )
    clean = out["clean"]
    assert clean["n"] == 4 and clean["raw"]["accuracy"] == 0.5 and clean["curated"]["accuracy"] == 1.0
    d = clean["difference"]["accuracy"]
    assert d["value"] == pytest.approx(0.5) and d["low"] <= 0.5 <= d["high"] and d["high"] <= 1.0
    assert clean["raw"]["accuracy_ci"][0] <= 0.5 <= clean["raw"]["accuracy_ci"][1]
    assert out["leaked"]["raw"]["accuracy"] == out["leaked"]["curated"]["accuracy"] == 0.5
    assert out["leaked"]["difference"]["accuracy"]["value"] == 0.0
    assert out["empty"] == {"n": 0}


def test_scored_rows_add_every_leaked_row_to_the_seeded_sample() -> None:
    test = pl.DataFrame({"id": [f"t{i:02d}" for i in range(20)], "text": [str(i) for i in range(20)],
                         "label": ["a"] * 20})  # fmt: skip
    rows = scored_rows(test, sample_size=5, seed=0, leaked={"t00", "t01", "t02"})
    assert int(rows["in_sample"].sum()) == 5
    assert set(rows.filter(pl.col("leaked"))["id"]) == {"t00", "t01", "t02"}
    groups = row_groups(rows)
    assert set(groups["clean"]) | set(groups["leaked"]) == set(range(rows.height))
    assert not set(groups["clean"]) & set(groups["leaked"])
    assert len(groups["sample"]) == 5


def test_leak_map_adds_planted_paraphrases_decontam_missed() -> None:
    removed = pl.DataFrame({"id": ["r1", "r2"], "reason": ["test_leak", "exact_duplicate"],
                            "duplicate_of": ["t1", "r9"]})  # fmt: skip
    test = pl.DataFrame({"id": ["t1", "t2"], "text": ["one", "two"]})
    planted = pl.DataFrame({"id": ["r1", "r3", "r4"], "kind": ["test_leak", "test_leak", "near_copy"],
                            "source": ["one", "two", "r0"]})  # fmt: skip
    assert leak_map(removed, test, None) == {"r1": "t1"}
    assert leak_map(removed, test, planted) == {"r1": "t1", "r3": "t2"}


# ── a tiny real compare (SmolLM2, both arms, the leak split) ─────────────────────────


@pytest.mark.slow
def test_tiny_real_compare_trains_both_arms_and_splits_leaked_rows(tmp_path: Path) -> None:
    from flows.compare import compare_curation, make_demo_data, render_compare_html
    from flows.pipeline import run_curation, write_run

    _frame(12, 0).rename({"label": "category"}).write_csv(tmp_path / "train.csv")
    _frame(4, 1).rename({"label": "category"}).write_csv(tmp_path / "test.csv")
    (tmp_path / "labels.json").write_text(json.dumps(LABELS))
    raw = yaml.safe_load(
        f"""
data: {{train: demo/train.jsonl, test: test.csv, labels: labels.json, columns: {{label: category}}}}
demo:
  source_train: train.csv
  source_test: test.csv
  seed: 2
  leak_rate: 0.15
  leak_edits: [exact]
  confusable_pairs: [[card_arrival, card_delivery_estimate]]
report: {{planted: {tmp_path / "demo" / "planted.parquet"}}}
noise: {{enabled: false}}
train:
  lora: {{r: 4, alpha: 8, target_modules: [q_proj, v_proj]}}
  batch_size: 8
  max_length: 64
  threads: 1
evaluate: {{bootstrap_samples: 100, batch_size: 8, threads: 1}}
compare: {{max_train_examples: 48, sample_size: 6, parallel: false}}
"""
    )
    params = params_from_dict(raw, base_dir=tmp_path)
    make_demo_data(params, out_dir=tmp_path / "demo")
    run = run_curation(
        tmp_path / "demo" / "train.jsonl", tmp_path / "test.csv", params=params, show_progress=False
    )
    write_run(run, tmp_path / "curated")
    result = compare_curation(
        raw_train=tmp_path / "demo" / "train.jsonl",
        raw_test=tmp_path / "test.csv",
        curated=tmp_path / "curated",
        params=params,
        work_dir=tmp_path / "work",
        show_progress=False,
    )
    assert set(result["arms"]) == {"raw", "curated"}
    assert result["arms"]["raw"]["leaked_train_rows"] > 0 == result["arms"]["curated"]["leaked_train_rows"]
    assert result["arms"]["raw"]["steps"] == result["arms"]["curated"]["steps"] == 6  # same budget
    assert result["rows"]["leaked"] > 0 and result["adapter"]["leaked"]["n"] == result["rows"]["leaked"]
    for group in ("clean", "leaked", "sample"):
        for arm in ("raw", "curated"):
            assert 0.0 <= result["adapter"][group][arm]["accuracy"] <= 1.0
    assert set(result["baseline"]) == {"same_budget", "all_rows"}
    assert (tmp_path / "work" / "raw" / "adapter" / "adapter_config.json").is_file()
    json.dumps(result)  # compare.json is plain JSON
    assert "curated − raw" in render_compare_html(result)
