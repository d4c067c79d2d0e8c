"""The ``predict`` and ``monitor`` sections of params.yaml: serving the adapter on new traffic
(`curagate predict`) and the drift checks over windows of it (`curagate monitor`, the
`monitor` Prefect flow). Frozen dataclasses, checked on construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.typed import check_fraction

WindowBy = Literal["rows", "time"]
LabelReference = Literal["baseline", "train"]


@dataclass(frozen=True)
class PredictParams:
    """How `curagate predict` labels new texts with the adapter."""

    batch_size: int = 16  # rows per label-constrained generate call
    chunk_rows: int = 512  # rows predicted, stamped and written at a time
    threads: int | None = 1  # torch CPU threads; None = torch default
    model_version: str | None = None  # overrides the adapter's content hash (e.g. a registry version)
    # traffic column with each row's own time -> predicted_at; absent from the traffic or None: the clock
    time_column: str | None = "received_at"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.chunk_rows < 1:
            raise ValueError("batch_size and chunk_rows must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1 or null")


@dataclass(frozen=True)
class MonitorParams:
    """Drift checks of a window of predictions against the curated training data."""

    window_by: WindowBy = "rows"
    window_rows: int = 500
    window_every: str = "1d"
    min_window_rows: int = 100
    seed: int = 0
    baseline_rows: int | None = None  # seeded test-split rows the model predicts as the baseline; None = all
    # input drift: classifier two-sample test (reference vs window)
    reference_rows: int = 2000
    folds: int = 5
    bootstrap_samples: int = 300
    confidence: float = 0.95
    auc_warn: float = 0.55
    auc_drift: float = 0.6
    # novel terms
    novel_rate_warn: float = 0.01
    novel_rate_drift: float = 0.02
    top_new_terms: int = 20
    # prediction drift
    label_reference: LabelReference = "baseline"
    chi2_alpha_warn: float = 0.01
    chi2_alpha_drift: float = 0.001
    psi_warn: float = 0.1
    psi_drift: float = 0.25
    # confidence drift
    low_confidence: float = 0.5
    confidence_drop_warn: float = 0.05
    confidence_drop_drift: float = 0.1
    low_share_rise_warn: float = 0.05
    low_share_rise_drift: float = 0.1
    # the flow
    min_production_accuracy: float | None = None
    review: bool = False
    traffic: str | None = None
    schedule: str | None = None

    def __post_init__(self) -> None:
        if self.window_by not in ("rows", "time"):
            raise ValueError(f"window_by={self.window_by!r} must be 'rows' or 'time'")
        if self.label_reference not in ("baseline", "train"):
            raise ValueError(f"label_reference={self.label_reference!r} must be 'baseline' or 'train'")
        if min(self.window_rows, self.min_window_rows, self.reference_rows, self.bootstrap_samples) < 1:
            raise ValueError("window_rows, min_window_rows, reference_rows, bootstrap_samples must be >= 1")
        if self.baseline_rows is not None and self.baseline_rows < 1:
            raise ValueError("baseline_rows must be >= 1 or null")
        if self.folds < 2:
            raise ValueError("folds must be >= 2")
        check_fraction(
            "monitor",
            confidence=self.confidence,
            low_confidence=self.low_confidence,
            chi2_alpha_warn=self.chi2_alpha_warn,
            chi2_alpha_drift=self.chi2_alpha_drift,
            novel_rate_warn=self.novel_rate_warn,
            novel_rate_drift=self.novel_rate_drift,
        )
        pairs = {
            "auc": (self.auc_warn, self.auc_drift),
            "novel_rate": (self.novel_rate_warn, self.novel_rate_drift),
            "psi": (self.psi_warn, self.psi_drift),
            "confidence_drop": (self.confidence_drop_warn, self.confidence_drop_drift),
            "low_share_rise": (self.low_share_rise_warn, self.low_share_rise_drift),
        }
        wrong = sorted(name for name, (warn, drift) in pairs.items() if warn > drift)
        if wrong:
            raise ValueError(f"{wrong}: the warn threshold must not exceed the drift threshold")
        if self.chi2_alpha_drift > self.chi2_alpha_warn:
            raise ValueError("chi2_alpha_drift must be <= chi2_alpha_warn (a smaller p-value is stronger)")
        if self.min_production_accuracy is not None:
            check_fraction("monitor", min_production_accuracy=self.min_production_accuracy)
