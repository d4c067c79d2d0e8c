"""Typed ``labelstudio:`` section of params.yaml, and the row contract of reviews.parquet.

The section belongs to the review loop only (server, project, task payload, PII masking), so it
is typed here, next to its reader; `schemas.params.load_params` builds it with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import polars as pl

PII_KINDS = ("email", "phone", "card", "iban")
DECISIONS = ("keep", "relabel", "drop", "unsure")
# instruction/chat rows have no label to correct: a reviewer keeps, drops or is unsure
INSTRUCTION_DECISIONS = ("keep", "drop", "unsure")
LabelLayout = Literal["select", "inline", "vertical"]


@dataclass(frozen=True)
class PiiParams:
    """What is masked before any text leaves for Label Studio (curation/pii.py decides how)."""

    enabled: bool = True
    kinds: tuple[str, ...] = PII_KINDS
    placeholder: str = "[{kind}]"
    phone_min_digits: int = 8
    phone_max_digits: int = 15
    phone_regions: tuple[str, ...] = ("GB", "US")
    card_min_digits: int = 13
    card_max_digits: int = 19
    context_chars: int = 32
    card_keywords: tuple[str, ...] = (
        "card", "visa", "mastercard", "amex", "maestro", "debit", "credit", "cc", "pan",
    )  # fmt: skip
    phone_keywords: tuple[str, ...] = (
        "call", "phone", "tel", "mobile", "cell", "ring", "text", "sms", "whatsapp", "fax", "dial",
        "contact", "reach",
    )  # fmt: skip
    reference_keywords: tuple[str, ...] = (
        "order", "ref", "reference", "invoice", "tracking", "transaction", "txn", "booking",
        "confirmation", "ticket", "case", "parcel", "receipt",
    )  # fmt: skip

    def __post_init__(self) -> None:
        bad = sorted(set(self.kinds) - set(PII_KINDS))
        if bad:
            raise ValueError(f"pii.kinds {bad} not in {list(PII_KINDS)}")
        if "{kind}" not in self.placeholder:
            raise ValueError("pii.placeholder must contain '{kind}'")
        if any(c.isdigit() or c == "@" for c in self.placeholder):
            raise ValueError("pii.placeholder must hold no digit and no '@' (masking must be idempotent)")
        if not 0 < self.phone_min_digits <= self.phone_max_digits:
            raise ValueError("need 0 < phone_min_digits <= phone_max_digits")
        if not 0 < self.card_min_digits <= self.card_max_digits:
            raise ValueError("need 0 < card_min_digits <= card_max_digits")
        import phonenumbers  # ~0.15 s: loaded when params are, not by `curagate --help`

        unknown = [r for r in self.phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if not self.phone_regions or unknown:
            raise ValueError(f"pii.phone_regions {unknown or []}: need ISO 3166 codes like GB, US")
        if self.context_chars < 0:
            raise ValueError("pii.context_chars must be >= 0")


@dataclass(frozen=True)
class ServerParams:
    """The local Label Studio server that `curagate labelstudio start` runs."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = ".cache/labelstudio"
    venv: str = ".venv-labelstudio"
    package: str = "label-studio==1.23.*"
    username: str = "admin@example.com"
    start_timeout_s: float = 300.0
    poll_interval_s: float = 1.0
    stop_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port={self.port} out of range")
        if self.start_timeout_s <= 0 or self.poll_interval_s <= 0 or self.stop_timeout_s <= 0:
            raise ValueError("timeouts and poll interval must be positive")
        if "@" not in self.username:
            raise ValueError("username must be an e-mail address (Label Studio logs in by e-mail)")


@dataclass(frozen=True)
class LabelStudioParams:
    """Project, interface and transfer options of the review loop."""

    project_title: str = "curagate review"
    description: str = "Flags from curagate: suspected label errors and conflicting duplicates"
    # instruction/chat flags have their own interface (prompt, response, the checks' reasons),
    # so their own project: a Label Studio project has one labelling config
    instruction_project_title: str = "curagate instruction review"
    instruction_description: str = "Held instruction/chat rows: keep or drop each response"
    model_version: str = "curagate-noise"
    label_layout: LabelLayout = "select"
    prefill_decision: bool = False
    import_batch: int = 500
    page_size: int = 500
    pii: PiiParams = field(default_factory=PiiParams)
    server: ServerParams = field(default_factory=ServerParams)

    def __post_init__(self) -> None:
        if self.label_layout not in ("select", "inline", "vertical"):
            raise ValueError(f"label_layout={self.label_layout!r} not select|inline|vertical")
        if self.import_batch < 1 or self.page_size < 1:
            raise ValueError("import_batch and page_size must be >= 1")
        if self.instruction_project_title == self.project_title:
            raise ValueError("instruction_project_title must differ from project_title (another interface)")


VERDICTS = ("correct", "wrong", "unsure")  # a reviewer's answer to "is the model's label right?"


@dataclass(frozen=True)
class PredictionReviewParams:
    """``prediction_review:``: people check a sample of the model's production answers.

    The sample is stratified by predicted label and confidence band (below / at or above
    ``low_confidence``); low-confidence strata get ``low_confidence_oversample`` times their
    share of ``sample_size``. Every sampled row records its inclusion probability, so the pull
    undoes the over-sampling when it estimates production accuracy.
    """

    project_title: str = "curagate production review"
    description: str = "Is the model's answer right? If not, pick the right label"
    model_version: str = "curagate-production"
    sample_size: int = 200
    low_confidence: float = 0.5
    low_confidence_oversample: float = 4.0
    min_per_stratum: int = 1
    seed: int = 0
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    sample_file: str = "data/feedback/prediction_sample.parquet"
    decisions_file: str = "data/feedback/prediction_reviews.parquet"
    reviewed_file: str = "data/feedback/reviewed.jsonl"
    metrics_file: str = "reports/production.json"

    def __post_init__(self) -> None:
        if self.sample_size < 1:
            raise ValueError("sample_size must be >= 1")
        if not 0.0 <= self.low_confidence <= 1.0:
            raise ValueError("low_confidence must be in [0, 1]")
        if self.low_confidence_oversample < 1.0:
            raise ValueError("low_confidence_oversample must be >= 1 (1 = no over-sampling)")
        if self.min_per_stratum < 0:
            raise ValueError("min_per_stratum must be >= 0")
        if self.bootstrap_samples < 1:
            raise ValueError("bootstrap_samples must be >= 1")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError("confidence must be in (0, 1)")
        if not self.reviewed_file.endswith(".jsonl"):
            raise ValueError("reviewed_file must be a .jsonl file (curate reads it as data.extra_train)")


REVIEWS_SCHEMA: dict[str, pl.DataType | type[pl.DataType]]  # built on first use (__getattr__)


def _reviews_schema() -> dict[str, pl.DataType | type[pl.DataType]]:
    import polars as pl

    return {
        "id": pl.String,
        "text_hash": pl.String,
        "decision": pl.String,
        "label": pl.String,
        "annotator": pl.String,
        "time": pl.Datetime("us", "UTC"),
        "task_id": pl.Int64,
    }


def __getattr__(name: str) -> Any:
    # REVIEWS_SCHEMA needs polars: built on first use, so importing the params costs no polars
    if name == "REVIEWS_SCHEMA":
        value = globals()[name] = _reviews_schema()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DECISIONS",
    "INSTRUCTION_DECISIONS",
    "PII_KINDS",
    "REVIEWS_SCHEMA",
    "LabelStudioParams",
    "PiiParams",
    "PredictionReviewParams",
    "ServerParams",
    "VERDICTS",
]
