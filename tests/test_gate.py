"""The quality gate: each threshold's verdict and reason, override, and the CLI contract."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from flows.train_commands import register
from schemas.gate import evaluate_gate, format_failures
from schemas.manifest import describe_files, write_manifest
from schemas.params import ParamsError, params_from_dict
from schemas.training_params import GateParams

GOOD_QUALITY = {
    "input_train_rows": 1100,
    "input_test_rows": 300,
    "quarantined_train": 5,
    "quarantined_test": 0,
    "removed_total": 60,
    "removed_exact_duplicate": 30,
    "removed_near_duplicate": 20,
    "removed_test_leak": 5,
    "removed_pending_review": 5,
    "removed_reviewer_drop": 0,
    "curated_train_rows": 1035,
    "curated_test_rows": 300,
    "flags_label_issue": 12,
    "flags_conflicting_duplicate": 2,
    "unresolved_conflicts": 0,
    "pending_review": 5,
    "duplicate_rate": 50 / 1100,
    "quarantine_rate": 5 / 1400,
    "label_issue_rate": 12 / 1035,
    "test_leaks_remaining": 0,
    "num_classes": 10,
    "min_class_count": 80,
    "max_class_count": 130,
    "imbalance_ratio": 130 / 80,
    "accounting_ok": 1,
    "instruction_issue_rate": 0.0,
}

THRESHOLDS = GateParams(
    min_examples=1000,
    min_per_class=20,
    min_num_classes=2,
    max_duplicate_rate=0.2,
    max_quarantine_rate=0.05,
    max_label_issue_rate=0.1,
    max_unresolved_conflicts=0,
    max_test_leaks=0,
    max_imbalance_ratio=10.0,
)


def _by_name(report: dict) -> dict:
    return {c["name"]: c for c in report["checks"]}


def test_clean_quality_passes_every_check() -> None:
    report = evaluate_gate(GOOD_QUALITY, thresholds=THRESHOLDS)
    assert report["passed"] and report["allowed"]
    assert report["failed"] == []
    names = set(_by_name(report))
    assert {
        "min_examples",
        "min_per_class",
        "min_num_classes",
        "max_duplicate_rate",
        "max_quarantine_rate",
        "max_label_issue_rate",
        "max_unresolved_conflicts",
        "max_test_leaks",
        "max_imbalance_ratio",
        "accounting_ok",
    } <= names
    # max_pending_review is null by default: switched off, so not reported as a check
    assert "max_pending_review" not in names


@pytest.mark.parametrize(
    ("key", "value", "failed"),
    [
        ("curated_train_rows", 999, "min_examples"),
        ("min_class_count", 3, "min_per_class"),
        ("num_classes", 1, "min_num_classes"),
        ("duplicate_rate", 0.35, "max_duplicate_rate"),
        ("quarantine_rate", 0.2, "max_quarantine_rate"),
        ("label_issue_rate", 0.11, "max_label_issue_rate"),
        ("unresolved_conflicts", 1, "max_unresolved_conflicts"),
        ("test_leaks_remaining", 1, "max_test_leaks"),
        ("imbalance_ratio", 12.5, "max_imbalance_ratio"),
        ("accounting_ok", 0, "accounting_ok"),
        ("instruction_issue_rate", 0.25, "max_instruction_issue_rate"),
    ],
)
def test_each_threshold_fails_alone_with_its_value_and_limit(key: str, value: float, failed: str) -> None:
    report = evaluate_gate({**GOOD_QUALITY, key: value}, thresholds=THRESHOLDS)
    assert not report["passed"] and not report["allowed"]
    assert report["failed"] == [failed]
    check = _by_name(report)[failed]
    assert check["value"] == value and check["metric"] == key
    (line,) = format_failures(report)
    assert line.startswith(f"{failed}: {value} vs limit")


def test_instruction_data_is_not_held_to_class_counts() -> None:
    """labelled_task 0 (instruction/chat): one "class" is no failure; every other check stays."""
    unlabelled = {"labelled_task": 0, "num_classes": 1, "min_class_count": 0, "imbalance_ratio": 0}
    quality = {**GOOD_QUALITY, **unlabelled}
    report = evaluate_gate(quality, thresholds=THRESHOLDS)
    assert report["passed"], report["failed"]
    names = set(_by_name(report))
    assert not names & {"min_num_classes", "min_per_class", "max_imbalance_ratio"}
    assert {"min_examples", "max_duplicate_rate", "max_test_leaks", "max_instruction_issue_rate"} <= names
    bad = evaluate_gate({**quality, "test_leaks_remaining": 2}, thresholds=THRESHOLDS)
    assert bad["failed"] == ["max_test_leaks"]
    labelled = evaluate_gate({**quality, "labelled_task": 1}, thresholds=THRESHOLDS)
    assert "min_num_classes" in labelled["failed"]


def test_missing_or_non_numeric_metric_fails_instead_of_passing_by_omission() -> None:
    quality = {k: v for k, v in GOOD_QUALITY.items() if k != "test_leaks_remaining"}
    quality["duplicate_rate"] = "n/a"
    report = evaluate_gate(quality, thresholds=THRESHOLDS)
    assert sorted(report["failed"]) == ["max_duplicate_rate", "max_test_leaks"]
    assert "missing" in _by_name(report)["max_test_leaks"]["reason"]


def test_override_is_recorded_and_allows_but_does_not_pass() -> None:
    report = evaluate_gate({**GOOD_QUALITY, "test_leaks_remaining": 4}, thresholds=THRESHOLDS,
                           override=True)  # fmt: skip
    assert report["override"] is True
    assert report["passed"] is False and report["allowed"] is True


def test_optional_threshold_and_accounting_switch() -> None:
    thresholds = GateParams(max_pending_review=2, require_accounting=False)
    report = evaluate_gate({**GOOD_QUALITY, "accounting_ok": 0}, thresholds=thresholds)
    assert "accounting_ok" not in _by_name(report)
    assert "max_pending_review" in report["failed"]  # 5 pending > 2


def test_gate_params_reject_bad_values_and_unknown_keys() -> None:
    with pytest.raises(ParamsError, match="max_duplicate_rate"):
        params_from_dict({"gate": {"max_duplicate_rate": 1.5}})
    with pytest.raises(ParamsError, match="unknown key"):
        params_from_dict({"gate": {"max_dupes": 0.1}})


def _cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keeps sub-command names when only a few are registered
        pass

    register(app)
    return app


def _write_curated(tmp_path: Path, quality: dict) -> tuple[Path, Path]:
    curated = tmp_path / "curated"
    curated.mkdir()
    (curated / "quality.json").write_text(json.dumps(quality), encoding="utf-8")
    pl.DataFrame({"id": [f"r{i}" for i in range(quality["curated_train_rows"])]}).write_parquet(
        curated / "train.parquet"
    )
    write_manifest(curated, describe_files(curated, ["quality.json", "train.parquet"]))
    params = tmp_path / "params.yaml"
    params.write_text("gate:\n  min_examples: 1000\n  max_test_leaks: 0\n", encoding="utf-8")
    return curated, params


def test_cli_gate_failure_exits_1_lists_reasons_and_writes_gate_json(tmp_path: Path) -> None:
    curated, params = _write_curated(tmp_path, {**GOOD_QUALITY, "test_leaks_remaining": 3})
    out = tmp_path / "gate.json"
    args = ["gate", "--curated", str(curated), "--params", str(params), "--out", str(out)]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 1
    assert "max_test_leaks: 3 vs limit <= 0" in result.output
    written = json.loads(out.read_text())
    assert written["passed"] is False and written["failed"] == ["max_test_leaks"]
    assert len(written["quality_md5"]) == 32

    result = CliRunner().invoke(_cli(), [*args, "--override"])
    assert result.exit_code == 0
    assert json.loads(out.read_text())["override"] is True


def test_cli_gate_pass_exits_0(tmp_path: Path) -> None:
    curated, params = _write_curated(tmp_path, GOOD_QUALITY)
    out = tmp_path / "gate.json"
    args = ["gate", "--curated", str(curated), "--params", str(params), "--out", str(out)]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["passed"] is True
