"""Typed sections of params.yaml read by the gate and the training side: gate, train,
evaluate, sweep. Frozen dataclasses, checked on construction; `schemas.params.load_params`
builds them with the rest of params.yaml (strict types, unknown keys fail with their path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from schemas.typed import check_fraction as _check_fraction

PromptForm = Literal["short", "labels"]
PROMPT_FORMS = ("short", "labels")


@dataclass(frozen=True)
class GateParams:
    """Dataset-quality thresholds; training runs only when every one passes."""

    min_examples: int = 100
    min_per_class: int = 5
    min_num_classes: int = 2
    max_duplicate_rate: float = 0.2
    max_quarantine_rate: float = 0.05
    max_label_issue_rate: float = 0.1
    max_unresolved_conflicts: int = 0
    max_pending_review: int | None = None
    max_test_leaks: int = 0
    max_imbalance_ratio: float = 10.0
    require_accounting: bool = True
    require_noise_check: bool = True
    # instruction/chat data: rows removed or held by the instruction checks / checked rows
    max_instruction_issue_rate: float | None = 0.2
    max_outlier_rate: float | None = None  # outlier flags / validated train rows (semantic.enabled)
    min_class_spread: float | None = None  # smallest class's mean pairwise cosine distance
    min_clusters_per_class: int | None = None  # smallest class's distinct near-duplicate clusters

    def __post_init__(self) -> None:
        for name in ("max_outlier_rate", "min_class_spread"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must be within [0, 1] (gate) or null")
        if self.min_clusters_per_class is not None and self.min_clusters_per_class < 0:
            raise ValueError("min_clusters_per_class must be >= 0 or null")
        _check_fraction(
            "gate",
            max_duplicate_rate=self.max_duplicate_rate,
            max_quarantine_rate=self.max_quarantine_rate,
            max_label_issue_rate=self.max_label_issue_rate,
        )
        if self.max_instruction_issue_rate is not None:
            _check_fraction("gate", max_instruction_issue_rate=self.max_instruction_issue_rate)
        counts = {
            "min_examples": self.min_examples,
            "min_per_class": self.min_per_class,
            "min_num_classes": self.min_num_classes,
            "max_unresolved_conflicts": self.max_unresolved_conflicts,
            "max_test_leaks": self.max_test_leaks,
        }
        if self.max_pending_review is not None:
            counts["max_pending_review"] = self.max_pending_review
        negative = sorted(k for k, v in counts.items() if v < 0)
        if negative:
            raise ValueError(f"{negative} must be >= 0")
        if self.max_imbalance_ratio < 1.0:
            raise ValueError("max_imbalance_ratio must be >= 1 (max/min class count)")


@dataclass(frozen=True)
class LoraParams:
    """LoRA adapter shape."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str = "all-linear"

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValueError("lora r and alpha must be >= 1")
        _check_fraction("train.lora", dropout=self.dropout)


@dataclass(frozen=True)
class TrainParams:
    """The training recipe's knobs."""

    base_model: str = "smollm2"
    prompt: PromptForm = "short"
    lora: LoraParams = field(default_factory=LoraParams)
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 128
    max_grad_norm: float = 1.0
    seed: int = 0
    max_train_examples: int | None = None
    quantize_4bit: bool = True
    gradient_checkpointing: bool = True
    log_every: int = 10
    threads: int | None = None  # None: every usable core
    lm_head_answers_only: bool = True
    group_by_length: bool = True
    max_batch_tokens: int | None = 384  # None: a micro-batch runs in one forward pass

    def __post_init__(self) -> None:
        if self.max_batch_tokens is not None and self.max_batch_tokens < self.max_length:
            raise ValueError(f"max_batch_tokens={self.max_batch_tokens} must be >= max_length or null")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1 or null (every usable core)")
        if self.prompt not in PROMPT_FORMS:
            raise ValueError(f"prompt={self.prompt!r} must be one of {PROMPT_FORMS}")
        if self.learning_rate <= 0 or self.epochs <= 0:
            raise ValueError("learning_rate and epochs must be positive")
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_length < 8:
            raise ValueError("batch_size, grad_accum must be >= 1 and max_length >= 8")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1 or null")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ValueError("max_train_examples must be >= 1 or null")
        if self.log_every < 1:
            raise ValueError("log_every must be >= 1")
        _check_fraction("train", warmup_ratio=self.warmup_ratio)


PromoteMetric = Literal["accuracy", "macro_f1"]
PROMOTE_METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class BaselineParams:
    """The classic baseline: word + character TF-IDF into a linear SVM (scikit-learn)."""

    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    svm_c: float = 0.5

    def __post_init__(self) -> None:
        for name, pair in (("word_ngrams", self.word_ngrams), ("char_ngrams", self.char_ngrams)):
            if len(pair) != 2 or not 1 <= pair[0] <= pair[1]:
                raise ValueError(f"{name}={list(pair)} must be [min, max] with 1 <= min <= max")
        if self.svm_c <= 0:
            raise ValueError("svm_c must be > 0")


@dataclass(frozen=True)
class EvaluateParams:
    """How base, adapter and the classic baseline are compared on the held-out test split."""

    sample_size: int | None = 1000
    seed: int = 0
    base_prompt: PromptForm = "labels"
    max_new_tokens: int | None = None
    batch_size: int = 16
    free_generation_rows: int = 16
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    promote_metric: PromoteMetric = "accuracy"
    promote_margin: float = 0.05
    require_beat_baseline: bool = False
    baseline: BaselineParams = field(default_factory=BaselineParams)
    instruction_generated_rows: int = 8
    instruction_max_new_tokens: int = 64
    top_confused: int = 10
    num_errors: int = 20
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.base_prompt not in PROMPT_FORMS:
            raise ValueError(f"base_prompt={self.base_prompt!r} must be one of {PROMPT_FORMS}")
        if self.promote_metric not in PROMOTE_METRICS:
            raise ValueError(f"promote_metric={self.promote_metric!r} must be one of {PROMOTE_METRICS}")
        if self.sample_size is not None and self.sample_size < 1:
            raise ValueError("sample_size must be >= 1 or null (whole test split)")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1 or null (longest label + 1)")
        if self.batch_size < 1 or self.bootstrap_samples < 1 or self.instruction_max_new_tokens < 1:
            raise ValueError("batch_size, bootstrap_samples, instruction_max_new_tokens must be >= 1")
        if self.free_generation_rows < 0 or self.instruction_generated_rows < 0:
            raise ValueError("free_generation_rows, instruction_generated_rows must be >= 0")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence={self.confidence} must be within (0, 1)")
        _check_fraction("evaluate", promote_margin=self.promote_margin)


@dataclass(frozen=True)
class SweepParams:
    """Learning curve: the same per-example budget on growing fractions of train."""

    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    sample_size: int | None = 100

    def __post_init__(self) -> None:
        if not self.fractions:
            raise ValueError("fractions must not be empty")
        for value in self.fractions:
            if not 0.0 < value <= 1.0:
                raise ValueError(f"fraction {value} must be within (0, 1]")
        if self.sample_size is not None and self.sample_size < 1:
            raise ValueError("sample_size must be >= 1 or null")
