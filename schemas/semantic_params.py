"""The ``semantic`` section of params.yaml: embeddings, semantic near-duplicates, outliers, coverage.

Embeddings come from a static model distilled from the offline MiniLM (flows/embed_static.py;
the default: ~100x faster, and no worse on benchmarks/semantic.py) or from MiniLM itself
(flows/embed.py), through a cache keyed by text hash
(flows/embed_cache.py); curation/semantic.py only sees the matrix. Decontamination's semantic
rule (``decontam.semantic_threshold``) uses the same embeddings, and runs only when this section
is enabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.typed import check_fraction

DuplicatePolicy = Literal["flag", "remove", "off"]
EmbeddingModel = Literal["minilm", "static"]
SearchIndex = Literal["flat", "ivf"]


@dataclass(frozen=True)
class SemanticParams:
    enabled: bool = False
    model: EmbeddingModel = "static"
    static_dims: int = 256  # PCA dimensions of the static model distilled from MiniLM
    model_cache_dir: str = ".cache/models"  # where the distilled static model is kept
    batch_size: int = 32
    threads: int = 1
    cache_dir: str | None = ".cache/embeddings"
    duplicate_policy: DuplicatePolicy = "flag"
    duplicate_threshold: float = 0.98
    one_word_min_words: int | None = 10  # rows one word apart also join a cluster; null = off
    one_word_same_label: bool = True
    neighbours: int = 10
    block_rows: int = 2048
    index_min_rows: int = 20_000  # from this many rows: a faiss index instead of numpy blocks
    index: SearchIndex = "flat"  # flat: exact (IndexFlatIP); ivf: IndexIVFFlat, approximate
    ivf_min_rows: int = 200_000  # with index flat: IVF from this many rows anyway (exact is O(n^2))
    ivf_lists: int | None = None  # IVF cells; null = 4 * sqrt(rows)
    ivf_probe: int = 16  # cells searched per query
    ivf_seed: int = 0  # k-means seed of the IVF cells
    search_threads: int = 1  # faiss threads (fixed: the same IVF cells every run)
    outlier_k: int = 10
    outlier_quantile: float | None = 0.995
    outlier_min_score: float = 0.45

    def __post_init__(self) -> None:
        if self.model not in ("minilm", "static"):
            raise ValueError(f"model={self.model!r} must be 'minilm' or 'static'")
        if self.index not in ("flat", "ivf"):
            raise ValueError(f"index={self.index!r} must be 'flat' or 'ivf'")
        if self.static_dims < 2 or self.index_min_rows < 1 or self.ivf_min_rows < 1 or self.ivf_probe < 1:
            raise ValueError("static_dims must be >= 2; index_min_rows, ivf_min_rows and ivf_probe >= 1")
        if self.ivf_lists is not None and self.ivf_lists < 1:
            raise ValueError("ivf_lists must be >= 1 or null")
        if self.duplicate_policy not in ("flag", "remove", "off"):
            raise ValueError(f"duplicate_policy={self.duplicate_policy!r} must be 'flag', 'remove' or 'off'")
        if self.batch_size < 1 or self.threads < 1 or self.block_rows < 1 or self.search_threads < 1:
            raise ValueError("batch_size, threads, search_threads and block_rows must be >= 1")
        if self.one_word_min_words is not None and self.one_word_min_words < 1:
            raise ValueError("one_word_min_words must be >= 1 or null")
        if self.neighbours < 1 or self.outlier_k < 1:
            raise ValueError("neighbours and outlier_k must be >= 1")
        check_fraction("semantic", duplicate_threshold=self.duplicate_threshold)
        check_fraction("semantic", outlier_min_score=self.outlier_min_score)
        if self.outlier_quantile is not None:
            check_fraction("semantic", outlier_quantile=self.outlier_quantile)
