"""The quality gate: quality.json metrics + thresholds -> a verdict with every check's reason.

Pure: no file I/O, no clock. The CLI writes the returned report to gate.json whether the
gate passes or not, so a failed gate leaves a record of exactly which threshold failed.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from schemas.training_params import GateParams

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}

# (check name, quality.json key, GateParams field or a fixed limit, comparison)
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
)


def _as_number(value: Any) -> float | None:
    """A finite number from quality.json, else None (missing, null, text, NaN)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _check(name: str, metric: str, value: Any, limit: float, comparison: str) -> dict[str, Any]:
    measured = _as_number(value)
    # A metric the report did not produce fails its check: a gate must not pass by omission.
    passed = measured is not None and _COMPARE[comparison](measured, limit)
    return {
        "name": name,
        "metric": metric,
        "value": value if measured is not None else None,
        "limit": limit,
        "comparison": comparison,
        "passed": bool(passed),
        "reason": "" if measured is not None else f"{metric} missing or not a number",
    }


def evaluate_gate(
    quality: dict[str, Any], *, thresholds: GateParams, override: bool = False
) -> dict[str, Any]:
    """Compare quality metrics with the gate thresholds.

    Args:
        quality: the flat metrics from quality.json.
        thresholds: the `gate:` section of params.yaml.
        override: a human decided to train despite failures; recorded, never silent.

    Returns:
        A report: ``checks`` (name, metric, value, limit, comparison, passed, reason per
        threshold), ``failed`` (names), ``passed`` (every check passed), ``override`` and
        ``allowed`` (passed or overridden: what `train` looks at).
    """
    checks = []
    for name, metric, field_name, comparison in _CHECKS:
        limit = getattr(thresholds, field_name)
        if limit is None:  # an optional threshold switched off in params.yaml
            continue
        checks.append(_check(name, metric, quality.get(metric), limit, comparison))
    if thresholds.require_accounting:
        checks.append(_check("accounting_ok", "accounting_ok", quality.get("accounting_ok"), 1, "=="))
    failed = [c["name"] for c in checks if not c["passed"]]
    passed = not failed
    return {
        "passed": passed,
        "override": bool(override),
        "allowed": passed or bool(override),
        "failed": failed,
        "checks": checks,
    }


def format_failures(report: dict[str, Any]) -> list[str]:
    """One line per failed check: ``name: value vs limit`` (the CLI prints these)."""
    lines = []
    for check in report["checks"]:
        if check["passed"]:
            continue
        value = check["value"] if check["value"] is not None else check["reason"]
        lines.append(
            f"{check['name']}: {value} vs limit {check['comparison']} {check['limit']} ({check['metric']})"
        )
    return lines
