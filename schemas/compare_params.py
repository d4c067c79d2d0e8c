"""The ``demo`` and ``compare`` sections of params.yaml.

``demo``: how `curagate demo-data` dirties the bundled clean Banking77 train split (seeded,
documented faults with their truth in planted.parquet). ``compare``: the budget of `curagate
compare`, which trains the same recipe on raw (validated only) and curated rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.typed import check_fraction

# Banking77 intents whose queries fit both labels (the easiest flips to miss)
CONFUSABLE_PAIRS: tuple[tuple[str, ...], ...] = (
    ("card_arrival", "card_delivery_estimate"),
    ("pending_transfer", "transfer_not_received_by_recipient"),
    ("top_up_failed", "top_up_reverted"),
    ("why_verify_identity", "verify_my_identity"),
    ("lost_or_stolen_card", "compromised_card"),
    ("declined_card_payment", "card_not_working"),
    ("pending_card_payment", "card_payment_not_recognised"),
    ("exchange_rate", "card_payment_wrong_exchange_rate"),
    ("topping_up_by_card", "top_up_by_card_charge"),
    ("getting_virtual_card", "get_disposable_virtual_card"),
)
LEAK_EDITS = ("exact", "typo", "word_replace")
COPY_EDIT_KINDS = ("exact", "case", "punctuation", "whitespace", "typo", "word_swap", "word_replace")


@dataclass(frozen=True)
class DemoParams:
    """Faults planted into the demo's raw train split; rates are fractions of its rows."""

    source_train: str = "data/raw/train.csv"
    source_test: str = "data/raw/test.csv"
    seed: int = 7
    flip_rate: float = 0.06
    confusable_share: float = 0.5
    confusable_pairs: tuple[tuple[str, ...], ...] = CONFUSABLE_PAIRS
    copy_rate: float = 0.05
    copy_flipped_rows: bool = False
    leak_rate: float = 0.03
    leak_edits: tuple[str, ...] = LEAK_EDITS
    malformed_rate: float = 0.004

    def __post_init__(self) -> None:
        check_fraction(
            "demo",
            flip_rate=self.flip_rate,
            confusable_share=self.confusable_share,
            copy_rate=self.copy_rate,
            leak_rate=self.leak_rate,
            malformed_rate=self.malformed_rate,
        )
        bad_pairs = [list(p) for p in self.confusable_pairs if len(p) != 2 or p[0] == p[1]]
        if bad_pairs:
            raise ValueError(f"confusable_pairs must be pairs of two different labels: {bad_pairs}")
        bad_edits = sorted(set(self.leak_edits) - set(COPY_EDIT_KINDS))
        if bad_edits or not self.leak_edits:
            raise ValueError(f"leak_edits {bad_edits or '[]'} not in {list(COPY_EDIT_KINDS)}")


@dataclass(frozen=True)
class CompareParams:
    """Raw vs curated: one recipe (train:), one budget, the same seeds and test rows."""

    max_train_examples: int | None = 300
    sample_size: int | None = 400
    leak_rows: bool = True
    parallel: bool = True
    baseline_full: bool = True

    def __post_init__(self) -> None:
        for name in ("max_train_examples", "sample_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null")
