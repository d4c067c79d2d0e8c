"""Typed ``instruction:`` section of params.yaml: the instruction/chat data quality checks.

Each check (curation/instruction.py) has a threshold here and a policy: ``remove`` (the row goes
to removed.parquet with stage ``instruction`` and the check's code as reason), ``flag`` (held
for review like any other flag) or ``off`` (not computed). The checks run for instruction and
chat data only; classification runs skip them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from schemas.typed import check_fraction

# The checks, in priority order: a row failing several is removed (or held) under the first one
# whose policy is not off; the others are listed in its detail and counted in quality.json.
INSTRUCTION_CHECKS = (
    "empty_response",
    "template_tokens",
    "refusal",
    "prompt_echo",
    "repetitive_response",
    "non_target_language",
    "pii_in_response",
    "markup",
    "truncated_response",
    "short_response",
)
Action = Literal["remove", "flag", "off"]
ACTIONS = ("remove", "flag", "off")
PII_CHECK_KINDS = ("email", "phone", "card", "iban")


@dataclass(frozen=True)
class InstructionPolicy:
    """What happens to a row that fails each check."""

    empty_response: Action = "remove"
    template_tokens: Action = "remove"
    refusal: Action = "remove"
    prompt_echo: Action = "remove"
    repetitive_response: Action = "remove"
    non_target_language: Action = "flag"
    pii_in_response: Action = "flag"
    markup: Action = "flag"
    truncated_response: Action = "flag"
    short_response: Action = "flag"

    def __post_init__(self) -> None:
        for name in INSTRUCTION_CHECKS:
            if getattr(self, name) not in ACTIONS:
                raise ValueError(f"policy.{name}={getattr(self, name)!r} must be one of {ACTIONS}")

    def action(self, check: str) -> str:
        return str(getattr(self, check))


@dataclass(frozen=True)
class InstructionParams:
    """Thresholds of the instruction/chat checks (see curation/instruction.py for each rule)."""

    policy: InstructionPolicy = field(default_factory=InstructionPolicy)
    # empty_response: no letter or digit once markup is stripped, or one of these placeholders
    empty_placeholders: tuple[str, ...] = ("n/a", "na", "none", "null", "nil", "todo", "tbd", "tba", "empty")
    min_response_words: int = 2
    max_prompt_overlap: float = 0.8
    max_duplicate_segment_fraction: float = 0.3
    repetition_ngram: int = 3
    max_ngram_repetition: float = 0.5
    target_languages: tuple[str, ...] = ("en",)
    min_language_confidence: float = 0.6
    language_min_words: int = 4
    language_max_chars: int = 500
    refusal_phrases: tuple[str, ...] = (
        r"\bas an ai\b",
        r"\bas a (?:large )?language model\b",
        r"\bi(?:'m| am) (?:just )?an ai\b",
        r"\bi(?:'m| am) (?:sorry|afraid),? but i (?:can(?:'|no)t|am unable|'m unable|won't|will not)\b",
        r"\bi (?:can(?:'|no)t|am unable to|'m unable to|am not able to|'m not able to) "
        r"(?:help|assist|comply|fulfil+|provide (?:that|this|assistance))\b",
        r"\bi (?:do not|don't) have (?:access to|the ability to) (?:real[- ]time|your|personal|the internet)",
        r"\bmy (?:programming|guidelines|training) (?:does not|doesn't|do not|don't) (?:allow|permit)\b",
    )
    truncation_min_words: int = 8
    max_response_chars: int | None = None
    pii_kinds: tuple[str, ...] = PII_CHECK_KINDS
    report_examples: int = 3

    def __post_init__(self) -> None:
        check_fraction(
            "instruction",
            max_prompt_overlap=self.max_prompt_overlap,
            max_duplicate_segment_fraction=self.max_duplicate_segment_fraction,
            max_ngram_repetition=self.max_ngram_repetition,
            min_language_confidence=self.min_language_confidence,
        )
        counts = {
            "min_response_words": self.min_response_words,
            "repetition_ngram": self.repetition_ngram,
            "language_min_words": self.language_min_words,
            "language_max_chars": self.language_max_chars,
            "truncation_min_words": self.truncation_min_words,
        }
        bad = sorted(k for k, v in counts.items() if v < 1)
        if bad:
            raise ValueError(f"{bad} must be >= 1")
        if self.report_examples < 0:
            raise ValueError("report_examples must be >= 0")
        if self.max_response_chars is not None and self.max_response_chars < 1:
            raise ValueError("max_response_chars must be >= 1 or null (no known generation limit)")
        if not self.target_languages:
            raise ValueError("target_languages must list at least one ISO 639-1 code (e.g. [en])")
        wrong = sorted(set(self.pii_kinds) - set(PII_CHECK_KINDS))
        if wrong:
            raise ValueError(f"pii_kinds {wrong} not in {list(PII_CHECK_KINDS)}")
        import polars as pl  # here, not at import: `curagate --help` loads no polars

        for pattern in self.refusal_phrases:  # polars' (Rust) regex syntax: no look-around
            try:
                pl.Series([""]).str.contains(pattern)
            except pl.exceptions.ComputeError as exc:
                raise ValueError(f"refusal_phrases: {pattern!r} is not a valid regex ({exc})") from exc


__all__ = ["ACTIONS", "INSTRUCTION_CHECKS", "InstructionParams", "InstructionPolicy"]
