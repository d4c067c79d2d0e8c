"""The ``semantic`` section of params.yaml: embeddings, semantic near-duplicates, outliers, coverage.

Embeddings come from the offline MiniLM (flows/embed.py) through a cache keyed by text hash
(flows/embed_cache.py); curation/semantic.py only sees the matrix. Decontamination's semantic
rule (``decontam.semantic_threshold``) uses the same embeddings, and runs only when this section
is enabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.typed import check_fraction

DuplicatePolicy = Literal["flag", "remove", "off"]


@dataclass(frozen=True)
class SemanticParams:
    enabled: bool = False
    model: Literal["minilm"] = "minilm"
    batch_size: int = 32
    threads: int = 1
    cache_dir: str | None = ".cache/embeddings"
    duplicate_policy: DuplicatePolicy = "flag"
    duplicate_threshold: float = 0.98
    one_word_min_words: int | None = 10  # rows one word apart also join a cluster; null = off
    one_word_same_label: bool = True
    neighbours: int = 10
    block_rows: int = 2048
    outlier_k: int = 10
    outlier_quantile: float | None = 0.995
    outlier_min_score: float = 0.6

    def __post_init__(self) -> None:
        if self.duplicate_policy not in ("flag", "remove", "off"):
            raise ValueError(f"duplicate_policy={self.duplicate_policy!r} must be 'flag', 'remove' or 'off'")
        if self.batch_size < 1 or self.threads < 1 or self.block_rows < 1:
            raise ValueError("batch_size, threads and block_rows must be >= 1")
        if self.one_word_min_words is not None and self.one_word_min_words < 1:
            raise ValueError("one_word_min_words must be >= 1 or null")
        if self.neighbours < 1 or self.outlier_k < 1:
            raise ValueError("neighbours and outlier_k must be >= 1")
        check_fraction("semantic", duplicate_threshold=self.duplicate_threshold)
        check_fraction("semantic", outlier_min_score=self.outlier_min_score)
        if self.outlier_quantile is not None:
            check_fraction("semantic", outlier_quantile=self.outlier_quantile)
