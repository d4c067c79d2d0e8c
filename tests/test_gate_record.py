"""The gate record and its check: training runs only behind a gate that passed for exactly
these files. Forged, corrupt, stale and mixed-up records and directories are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from schemas.gate import GateError, check_gate, load_gate_record, make_gate_record, write_gate_record
from schemas.manifest import MANIFEST_FILE, describe_files, file_md5, verify_manifest, write_manifest
from schemas.training_params import GateParams
from tests.tiny_project import curate_tiny

THRESHOLDS = GateParams(min_examples=50, min_per_class=5, max_unresolved_conflicts=25)


@pytest.fixture(scope="module")
def curated_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return curate_tiny(tmp_path_factory.mktemp("gate"))


@pytest.fixture()
def curated(curated_once: Path, tmp_path: Path) -> Path:
    """A fresh copy per test, so a test may tamper with it."""
    return Path(shutil.copytree(curated_once, tmp_path / "curated"))


def _gate(curated: Path, thresholds: GateParams = THRESHOLDS, override: bool = False) -> Path:
    path = curated / "gate.json"
    write_gate_record(path, make_gate_record(curated, thresholds=thresholds, override=override))
    return path


def _edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _reseal(curated: Path) -> None:
    """What a careful forger does after editing a file: write a matching manifest."""
    names = [n for n in json.loads((curated / MANIFEST_FILE).read_text())["files"]]
    write_manifest(curated, describe_files(curated, names))


def test_a_passing_gate_allows_training_for_exactly_these_files(curated: Path) -> None:
    record = check_gate(_gate(curated), curated, thresholds=THRESHOLDS)
    assert record.passed and record.allowed and not record.override
    assert record.data_md5 == file_md5(curated / "train.parquet")
    assert record.quality_md5 == file_md5(curated / "quality.json")
    assert {c.name for c in record.checks} >= {"min_examples", "quality_matches_data", "quality_values_valid"}


def test_missing_corrupt_and_failed_gates_are_refused(curated: Path) -> None:
    gate = curated / "gate.json"
    with pytest.raises(GateError, match="no gate record"):
        check_gate(gate, curated, thresholds=THRESHOLDS)
    gate.write_text('{"passed": tru')
    with pytest.raises(GateError, match="not valid JSON"):
        check_gate(gate, curated, thresholds=THRESHOLDS)
    gate.write_text("[1, 2]")
    with pytest.raises(GateError, match="must be a JSON object"):
        check_gate(gate, curated, thresholds=THRESHOLDS)
    strict = GateParams(min_examples=100_000)
    _gate(curated, strict)
    with pytest.raises(GateError, match="gate failed .*min_examples"):
        check_gate(gate, curated, thresholds=strict)


def test_an_override_is_recorded_and_honoured(curated: Path) -> None:
    strict = GateParams(min_examples=100_000)
    record = check_gate(_gate(curated, strict, override=True), curated, thresholds=strict)
    assert record.override and record.allowed and not record.passed


FORGERIES = {
    "hand_written": lambda real: {"allowed": True, "quality_md5": real["quality_md5"]},
    "string_bools": lambda real: {**real, "passed": "true", "allowed": "true"},
    "truthy_false": lambda real: {**real, "allowed": "false"},
    "int_bools": lambda real: {**real, "passed": 1, "allowed": 1},
    "no_data_md5": lambda real: {k: v for k, v in real.items() if k != "data_md5"},
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_hand_written_or_mistyped_records_are_refused(curated: Path, forgery: str) -> None:
    gate = _gate(curated)
    gate.write_text(json.dumps(FORGERIES[forgery](json.loads(gate.read_text()))))
    with pytest.raises(GateError, match="not a valid gate record"):
        check_gate(gate, curated, thresholds=THRESHOLDS)


def test_a_record_claiming_a_pass_that_quality_json_does_not_support_is_refused(curated: Path) -> None:
    strict = GateParams(min_examples=100_000)
    gate = _gate(curated, strict)
    _edit_json(gate, passed=True, allowed=True, failed=[])
    with pytest.raises(GateError, match="gate failed"):
        check_gate(gate, curated, thresholds=strict)


def test_editing_quality_json_is_caught_by_the_manifest_and_by_the_row_counts(curated: Path) -> None:
    gate = _gate(curated)
    quality = curated / "quality.json"
    _edit_json(quality, curated_train_rows=5000)
    with pytest.raises(GateError, match="changed since curate wrote it"):
        check_gate(gate, curated, thresholds=THRESHOLDS)
    _reseal(curated)  # a forger who also rewrites the manifest
    record = make_gate_record(curated, thresholds=THRESHOLDS, override=False)
    assert "quality_matches_data" in record.failed
    assert not record.allowed
    with pytest.raises(GateError):
        check_gate(gate, curated, thresholds=THRESHOLDS)


def test_negative_or_impossible_rates_fail_the_gate(curated: Path) -> None:
    _edit_json(curated / "quality.json", duplicate_rate=-0.5, quarantine_rate=1.7)
    _reseal(curated)
    record = make_gate_record(curated, thresholds=THRESHOLDS, override=False)
    assert "quality_values_valid" in record.failed
    reason = next(c.reason for c in record.checks if c.name == "quality_values_valid")
    assert "duplicate_rate=-0.5" in reason and "quarantine_rate=1.7" in reason


def test_a_directory_mixing_two_runs_is_refused(curated: Path, tmp_path: Path) -> None:
    gate = _gate(curated)
    other = curate_tiny(tmp_path / "other", dedup={"threshold": 0.5})
    shutil.copy(other / "train.parquet", curated / "train.parquet")
    with pytest.raises(GateError, match="train.parquet changed"):
        check_gate(gate, curated, thresholds=THRESHOLDS)
    (curated / MANIFEST_FILE).unlink()
    with pytest.raises(GateError, match="no manifest"):
        make_gate_record(curated, thresholds=THRESHOLDS, override=False)


def test_a_record_from_an_earlier_run_is_stale(curated: Path, tmp_path: Path) -> None:
    gate = _gate(curated)
    stale = tmp_path / "stale.json"
    shutil.copy(gate, stale)
    _edit_json(stale, quality_md5="0" * 32)
    with pytest.raises(GateError, match="re-run `curagate gate`"):
        check_gate(stale, curated, thresholds=THRESHOLDS)
    changed = GateParams(min_examples=51, min_per_class=5, max_unresolved_conflicts=25)
    record = check_gate(gate, curated, thresholds=changed)  # thresholds changed but still pass
    assert record.allowed


def test_written_record_round_trips_strictly(curated: Path) -> None:
    gate = _gate(curated)
    record = load_gate_record(gate)
    assert record.thresholds["min_examples"] == 50
    assert verify_manifest(curated).rows("train.parquet") is not None


def test_an_override_covers_only_the_failures_it_was_given_for(curated: Path) -> None:
    strict = GateParams(min_examples=100_000, min_per_class=5, max_unresolved_conflicts=25)
    gate = _gate(curated, strict, override=True)  # a person approved the min_examples failure
    assert check_gate(gate, curated, thresholds=strict).override
    stricter = GateParams(min_examples=100_000, min_per_class=100_000, max_unresolved_conflicts=25)
    with pytest.raises(GateError, match="overridden for .*min_examples.* but now"):
        check_gate(gate, curated, thresholds=stricter)  # a new failure nobody approved
