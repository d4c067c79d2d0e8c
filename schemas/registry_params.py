"""The ``registry`` section of params.yaml: the MLflow backend runs and adapters are logged to,
and the champion/challenger promotion rule (training/promotion.py, wired by flows/registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.typed import check_fraction

PromotionMetric = Literal["accuracy", "macro_f1"]
PROMOTION_METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class RegistryParams:
    """Where runs go and when a challenger adapter replaces the champion."""

    enabled: bool = True
    dir: str = "mlruns"
    tracking_uri: str | None = None
    experiment: str = "curagate"
    model_name: str = "curagate-adapter"
    champion_alias: str = "champion"
    promote_metric: PromotionMetric = "accuracy"
    promote_margin: float = 0.01
    production_margin: float = 0.05
    production_sample: str | None = None
    production_from_reviews: bool = True

    def __post_init__(self) -> None:
        if self.promote_metric not in PROMOTION_METRICS:
            raise ValueError(f"promote_metric={self.promote_metric!r} must be one of {PROMOTION_METRICS}")
        check_fraction(
            "registry", promote_margin=self.promote_margin, production_margin=self.production_margin
        )
        for name in ("dir", "experiment", "model_name", "champion_alias"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"{name} must not be empty")
        if self.champion_alias.lower().startswith("v") and self.champion_alias[1:].isdigit():
            raise ValueError(f"champion_alias={self.champion_alias!r}: MLflow reserves v<number> aliases")
