"""The quality gate's whole contract: the verdict rule, the gate.json record, and its check.

`curagate gate` calls :func:`evaluate_gate` and :func:`write_gate_record`; `curagate train`
calls :func:`check_gate`, which trusts nothing in gate.json it can re-derive: it verifies
the curated directory against its manifest, re-computes the verdict from quality.json and
params.yaml, and compares the md5s the record was made for. Pure except for the two file
helpers at the end (small JSON files, read and written whole).
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.manifest import MANIFEST_FILE, Manifest, ManifestError, file_md5, verify_manifest
from schemas.training_params import GateParams

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}

# (check name, quality.json key, GateParams field, comparison)
_CHECKS: tuple[tuple[str, str, str, str], ...] = (
    ("min_examples", "curated_train_rows", "min_examples", ">="),
    ("min_num_classes", "num_classes", "min_num_classes", ">="),
    ("min_per_class", "min_class_count", "min_per_class", ">="),
    ("max_imbalance_ratio", "imbalance_ratio", "max_imbalance_ratio", "<="),
    ("max_duplicate_rate", "duplicate_rate", "max_duplicate_rate", "<="),
    ("max_quarantine_rate", "quarantine_rate", "max_quarantine_rate", "<="),
    ("max_label_issue_rate", "label_issue_rate", "max_label_issue_rate", "<="),
    ("max_unresolved_conflicts", "unresolved_conflicts", "max_unresolved_conflicts", "<="),
    ("max_pending_review", "pending_review", "max_pending_review", "<="),
    ("max_test_leaks", "test_leaks_remaining", "max_test_leaks", "<="),
    ("max_instruction_issue_rate", "instruction_issue_rate", "max_instruction_issue_rate", "<="),
    ("max_outlier_rate", "outlier_rate", "max_outlier_rate", "<="),
    ("min_class_spread", "min_class_spread", "min_class_spread", ">="),
    ("min_clusters_per_class", "min_clusters_per_class", "min_clusters_per_class", ">="),
)
# checks about classes: not applicable to instruction/chat data (quality.json labelled_task 0)
_CLASS_CHECKS = frozenset({"min_num_classes", "min_per_class", "max_imbalance_ratio", "min_class_spread"})
# quality.json count -> the curated file whose rows it counts (the manifest knows the rows)
_COUNTED_FILES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("curated_train_rows",), "train.parquet"),
    (("curated_test_rows",), "test.parquet"),
    (("removed_total",), "removed.parquet"),
    (("held_for_review",), "held.parquet"),
    (("quarantined_train", "quarantined_test"), "quarantine.parquet"),
)


class GateError(RuntimeError):
    """Training refused: no or corrupt gate record, a failed gate, or a record for other data."""


class GateCheck(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    name: str
    metric: str
    value: float | int | None
    limit: float | int | None
    comparison: str
    passed: bool
    reason: str


class GateRecord(BaseModel):
    """gate.json: the verdict, every check, the thresholds, and the files it was made for."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    passed: bool
    override: bool
    allowed: bool
    failed: list[str]
    checks: list[GateCheck]
    thresholds: dict[str, float | int | bool | None]
    quality_file: str
    quality_md5: str
    data_md5: str
    manifest_md5: str


def _as_number(value: Any) -> float | None:
    """A finite number from quality.json, else None (missing, null, text, NaN, a bool)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _check(name: str, metric: str, value: Any, limit: float, comparison: str) -> GateCheck:
    measured = _as_number(value)
    # A metric the report did not produce fails its check: a gate must not pass by omission.
    passed = measured is not None and _COMPARE[comparison](measured, limit)
    return GateCheck(
        name=name,
        metric=metric,
        value=value if measured is not None else None,
        limit=limit,
        comparison=comparison,
        passed=bool(passed),
        reason="" if measured is not None else f"{metric} missing or not a number",
    )


def _sanity_problems(quality: dict[str, Any]) -> list[str]:
    """Values no curate run can produce: negative counts, rates outside [0, 1]."""
    problems = []
    for key, value in sorted(quality.items()):
        number = _as_number(value)
        if number is None:
            continue
        if key.endswith("_rate") and not 0.0 <= number <= 1.0:
            problems.append(f"{key}={value} is not a rate in [0, 1]")
        elif not key.endswith("_rate") and number < 0:
            problems.append(f"{key}={value} is negative")
    return problems


def _consistency_problems(quality: dict[str, Any], manifest: Manifest) -> list[str]:
    """quality.json's counts against the rows of the files they count."""
    problems = []
    for keys, name in _COUNTED_FILES:
        rows = manifest.rows(name)
        claimed = [quality.get(k) for k in keys]
        if rows is None or any(_as_number(c) is None for c in claimed):
            continue  # a file this run did not write, or a metric missing (its own check fails)
        total = sum(int(c) for c in claimed)
        if total != rows:
            problems.append(f"{'+'.join(keys)}={total} but {name} has {rows} rows")
    return problems


def evaluate_gate(
    quality: dict[str, Any],
    *,
    thresholds: GateParams,
    override: bool = False,
    manifest: Manifest | None = None,
) -> dict[str, Any]:
    """Compare quality metrics with the gate thresholds (and, given a manifest, with the data).

    Args:
        quality: the flat metrics from quality.json.
        thresholds: the `gate:` section of params.yaml.
        override: a human decided to train despite failures; recorded, never silent.
        manifest: the curated directory's manifest; quality.json's counts must match its rows.

    Returns:
        ``checks`` (one :class:`GateCheck` as a dict per threshold), ``failed`` (names), ``passed``,
        ``override`` and ``allowed`` (passed or overridden: what `train` looks at).
    """
    checks = []
    unlabelled = quality.get("labelled_task") == 0  # instruction/chat rows: no classes to count
    for name, metric, field_name, comparison in _CHECKS:
        limit = getattr(thresholds, field_name)
        if limit is None:  # an optional threshold switched off in params.yaml
            continue
        if unlabelled and name in _CLASS_CHECKS:
            continue
        checks.append(_check(name, metric, quality.get(metric), limit, comparison))
    if thresholds.require_accounting:
        checks.append(_check("accounting_ok", "accounting_ok", quality.get("accounting_ok"), 1, "=="))
    if thresholds.require_noise_check:
        skipped = quality.get("noise_skip_reason")
        # switched off on purpose (noise.enabled: false, instruction data) is a decision, not a gap
        problems = [f"noise detection skipped: {skipped}"] if skipped not in (None, "disabled") else []
        checks.append(_rule("noise_checked", problems))
    sanity = _sanity_problems(quality)
    checks.append(_rule("quality_values_valid", sanity))
    if manifest is not None:
        checks.append(_rule("quality_matches_data", _consistency_problems(quality, manifest)))
    failed = [c.name for c in checks if not c.passed]
    passed = not failed
    return {
        "passed": passed,
        "override": bool(override),
        "allowed": passed or bool(override),
        "failed": failed,
        "checks": [c.model_dump() for c in checks],
    }


def _rule(name: str, problems: list[str]) -> GateCheck:
    return GateCheck(
        name=name,
        metric=name,
        value=len(problems),
        limit=0,
        comparison="==",
        passed=not problems,
        reason="; ".join(problems),
    )


def format_failures(report: dict[str, Any] | GateRecord) -> list[str]:
    """One line per failed check: ``name: value vs limit`` (the CLI prints these)."""
    checks = report.checks if isinstance(report, GateRecord) else report["checks"]
    lines = []
    for check in checks:
        c = check if isinstance(check, GateCheck) else GateCheck.model_validate(check)
        if c.passed:
            continue
        if c.name in ("quality_values_valid", "quality_matches_data", "noise_checked"):
            lines.append(f"{c.name}: {c.reason}")
            continue
        value = c.value if c.value is not None else c.reason
        lines.append(f"{c.name}: {value} vs limit {c.comparison} {c.limit} ({c.metric})")
    return lines


# ── the record on disk ───────────────────────────────────────────────────────────────


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, unreadable or non-object file raises GateError."""
    if not path.is_file():
        raise GateError(f"{path}: {what} not found")
    try:
        value = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GateError(f"{path}: {what} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise GateError(f"{path}: {what} must be a JSON object, got {type(value).__name__}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def make_gate_record(curated: Path, *, thresholds: GateParams, override: bool) -> GateRecord:
    """Judge the curated directory: its manifest, quality.json and the thresholds.

    Raises:
        GateError: no or corrupt quality.json or manifest, or files that do not match it.
    """
    try:
        manifest = verify_manifest(curated)
    except ManifestError as exc:
        raise GateError(str(exc)) from exc
    quality_path = curated / "quality.json"
    if "quality.json" not in manifest.files or "train.parquet" not in manifest.files:
        raise GateError(
            f"{curated}: the manifest lists no quality.json/train.parquet (run `curagate curate`)"
        )
    verdict = evaluate_gate(
        read_json_object(quality_path, "quality.json"),
        thresholds=thresholds,
        override=override,
        manifest=manifest,
    )
    return GateRecord.model_validate(
        {
            **verdict,
            "thresholds": dataclasses.asdict(thresholds),
            "quality_file": str(quality_path),
            "quality_md5": manifest.files["quality.json"].md5,
            "data_md5": manifest.files["train.parquet"].md5,
            "manifest_md5": file_md5(curated / MANIFEST_FILE),
        }
    )


def write_gate_record(path: Path, record: GateRecord) -> None:
    """gate.json, written whole (temp file + rename) so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record.model_dump(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def load_gate_record(path: Path) -> GateRecord:
    """gate.json, strictly typed (``"allowed": "false"`` is refused, not read as true).

    Raises:
        GateError: missing, not JSON, or not a gate record.
    """
    if not path.is_file():
        raise GateError(f"{path}: no gate record; run `curagate gate` first")
    raw = read_json_object(path, "gate record")
    try:
        return GateRecord.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise GateError(
            f"{path}: not a valid gate record ({where}: {err.get('msg')}); re-run `curagate gate`"
        ) from exc


def check_gate(gate_path: Path, curated: Path, *, thresholds: GateParams) -> GateRecord:
    """Refuse to train unless the gate allows it for exactly the data in ``curated``.

    Re-derives everything it can: the manifest must match the files, the verdict computed now
    from quality.json and ``thresholds`` must agree with the record, and the record's md5s must
    be those of the current quality.json, train.parquet and manifest.

    Returns:
        The record (its ``override`` is copied into training.json).

    Raises:
        GateError: with the reason.
    """
    record = load_gate_record(gate_path)
    current = make_gate_record(curated, thresholds=thresholds, override=record.override)
    for name, made_for, now in (
        ("quality.json", record.quality_md5, current.quality_md5),
        ("train.parquet", record.data_md5, current.data_md5),
        ("manifest.json", record.manifest_md5, current.manifest_md5),
    ):
        if made_for != now:
            raise GateError(
                f"{gate_path} was made for {name} md5 {made_for}, but {curated / name} is now {now}: "
                "re-run `curagate gate`"
            )
    if not record.allowed:
        failed = "; ".join(format_failures(record)) or "unknown"
        raise GateError(f"{gate_path}: gate failed ({failed}); fix the data or `curagate gate --override`")
    if not current.allowed:
        failed = "; ".join(format_failures(current)) or "unknown"
        raise GateError(
            f"{gate_path}: gate failed ({failed}); fix the data or pass --override to `curagate gate`"
        )
    if record.override and (record.failed != current.failed or record.thresholds != current.thresholds):
        # an override approves the failures a person saw, under the thresholds they saw
        raise GateError(
            f"{gate_path}: overridden for {record.failed}, but now {current.failed} fail under the current "
            "thresholds: re-run `curagate gate` (and decide on --override again)"
        )
    if record.passed != current.passed or record.allowed != current.allowed:
        raise GateError(
            f"{gate_path}: its verdict does not follow from quality.json and params: re-run `curagate gate`"
        )
    return current
