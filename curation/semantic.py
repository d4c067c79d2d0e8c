"""Semantic checks on sentence embeddings: near-duplicates by meaning, outliers, class coverage.

Pure functions: the embeddings are passed in (one unit-length float32 row per frame row; the
flow computes them, see flows/embed_cache.py), nothing here loads a model. Nearest neighbours
are exact (blocked matrix products), sorted by similarity then by row, so the output does not
depend on the order in which ties were found.

- :func:`semantic_pairs`: pairs of rows whose cosine is at least a threshold (SemDeDup's epsilon).
- :func:`find_semantic_issues`: clusters of such pairs, one row kept per cluster by dedup's rule
  (the earliest input line); the others flagged ``paraphrase`` (held for review) or removed
  (``semantic_duplicate``), conflicting labels flagged ``conflicting_duplicate``; the rows
  farthest from their neighbours flagged ``outlier`` (as cleanlab Datalab's outlier issue).
- :func:`class_coverage`: rows, distinct near-duplicate clusters and spread per class.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curation.dedup import StepResult
from schemas.records import FLAGS_SCHEMA, HOLD_REASON, REMOVED_SCHEMA
from schemas.semantic_params import SemanticParams

log = logging.getLogger(__name__)

STAGE = "semantic"
SCORE_DECIMALS = 6  # scores written to files: rounded, so float noise never reaches the bytes
MIN_POINTS_PER_CELL = 39  # faiss k-means warns (and trains badly) below this many rows per cell


def _check(frame: pl.DataFrame, embeddings: np.ndarray) -> np.ndarray:
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != frame.height:
        raise ValueError(f"embeddings must have one row per frame row: {emb.shape} for {frame.height} rows")
    return emb


def nearest_neighbours(
    queries: np.ndarray,
    base: np.ndarray,
    *,
    k: int,
    block_rows: int = 2048,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar base rows of each query row (exact inner product).

    Args:
        queries: (n, d) unit vectors.
        base: (m, d) unit vectors; with ``exclude_self`` the same matrix as ``queries``.
        k: neighbours per query (fewer when the base is smaller).
        block_rows: query rows per matrix product (bounds memory at block_rows x m floats).
        exclude_self: a row is not its own neighbour.

    Returns:
        (indices, similarities), each (n, k'), best first, ties by the smaller index.
    """
    if k < 1 or block_rows < 1:
        raise ValueError("k and block_rows must be >= 1")
    n, m = len(queries), len(base)
    kk = min(k, m - (1 if exclude_self else 0))
    if n == 0 or kk <= 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    idx_out = np.empty((n, kk), dtype=np.int64)
    sim_out = np.empty((n, kk), dtype=np.float32)
    for lo in range(0, n, block_rows):
        sims = queries[lo : lo + block_rows] @ base.T
        rows = np.arange(len(sims))
        if exclude_self:
            sims[rows, lo + rows] = -np.inf
        # argpartition is deterministic for the same input; the kept columns are then sorted
        cand = (
            np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            if kk < m
            else np.broadcast_to(np.arange(m), sims.shape)
        )
        cand_sims = np.take_along_axis(sims, cand, axis=1)
        order = np.take_along_axis(cand, np.lexsort((cand, -cand_sims), axis=1), axis=1)
        idx_out[lo : lo + len(sims)] = order
        sim_out[lo : lo + len(sims)] = np.take_along_axis(sims, order, axis=1)
    return idx_out, sim_out


def index_neighbours(
    queries: np.ndarray,
    base: np.ndarray,
    *,
    k: int,
    kind: str = "flat",
    exclude_self: bool = False,
    lists: int | None = None,
    probe: int = 16,
    seed: int = 0,
    threads: int = 1,
    block_rows: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nearest_neighbours` through a faiss index built here from ``base`` (no I/O).

    ``kind="flat"`` is exact (IndexFlatIP); ``"ivf"`` (IndexIVFFlat: ``lists`` k-means cells,
    default 4 x sqrt(rows), ``probe`` of them searched per query) is approximate and far faster
    on large data. Either way the similarities are recomputed row by row from the vectors and
    the neighbours sorted by similarity then index, so the output does not depend on faiss's
    summation order; with fixed ``threads`` and ``seed`` the IVF cells are the same every run.

    Returns:
        (indices, similarities), each (n, k'), best first, ties by the smaller index; an IVF
        query whose probed cells hold fewer than k' rows gets index -1, similarity -inf there.
    """
    import faiss

    if k < 1 or probe < 1 or threads < 1 or block_rows < 1:
        raise ValueError("k, probe, threads and block_rows must be >= 1")
    if kind not in ("flat", "ivf"):
        raise ValueError(f"kind={kind!r} must be 'flat' or 'ivf'")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)
    n, m = len(queries), len(base)
    kk = min(k, m - (1 if exclude_self else 0))
    if n == 0 or kk <= 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)  # fixed: the k-means cells must not depend on the machine
    try:
        dims = base.shape[1]
        index: Any
        if kind == "ivf":
            # faiss's k-means wants >= MIN_POINTS_PER_CELL training rows per cell
            cells = max(1, min(lists or int(4 * np.sqrt(m)), m // MIN_POINTS_PER_CELL))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dims), dims, cells, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            index.train(base)
            index.nprobe = min(probe, cells)
        else:
            index = faiss.IndexFlatIP(dims)
        index.add(base)
        want = kk + (1 if exclude_self else 0)
        idx_out = np.empty((n, kk), dtype=np.int64)
        sim_out = np.empty((n, kk), dtype=np.float32)
        for lo in range(0, n, block_rows):
            q = queries[lo : lo + block_rows]
            _, found = index.search(q, want)
            rows = np.arange(lo, lo + len(q))
            if exclude_self:
                # drop the row itself where found (ties among copies may rank it anywhere), else the last
                is_self = found == rows[:, None]
                drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), want - 1)
                keep = np.ones_like(found, dtype=bool)
                keep[np.arange(len(q)), drop] = False
                found = found[keep].reshape(len(q), kk)
            valid = found >= 0
            sims = np.einsum("ij,ikj->ik", q, base[np.where(valid, found, 0)])
            sims = np.where(valid, sims, -np.inf).astype(np.float32)
            order = np.lexsort((np.where(valid, found, np.iinfo(np.int64).max), -sims), axis=1)
            idx_out[lo : lo + len(q)] = np.take_along_axis(found, order, axis=1)
            sim_out[lo : lo + len(q)] = np.take_along_axis(sims, order, axis=1)
    finally:
        faiss.omp_set_num_threads(previous)
    return idx_out, sim_out


def search_neighbours(
    queries: np.ndarray, base: np.ndarray, *, k: int, cfg: SemanticParams, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest base rows of each query row, by the search ``cfg`` picks for the size:
    numpy blocks below ``index_min_rows`` base rows, else a faiss index (``cfg.index``; IVF
    from ``ivf_min_rows`` rows even when ``flat`` is asked for, as exact search is quadratic)."""
    if len(base) < cfg.index_min_rows:
        return nearest_neighbours(queries, base, k=k, block_rows=cfg.block_rows, exclude_self=exclude_self)
    kind = "ivf" if cfg.index == "ivf" or len(base) >= cfg.ivf_min_rows else "flat"
    return index_neighbours(
        queries,
        base,
        k=k,
        kind=kind,
        exclude_self=exclude_self,
        lists=cfg.ivf_lists,
        probe=cfg.ivf_probe,
        seed=cfg.ivf_seed,
        threads=cfg.search_threads,
    )


def semantic_pairs(
    embeddings: np.ndarray,
    *,
    threshold: float,
    k: int,
    block_rows: int = 2048,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) among each row's ``k`` nearest neighbours with cosine >= ``threshold``.

    ``knn``: :func:`nearest_neighbours` of the rows among themselves, if already computed
    (its first ``k`` columns are used).

    Returns:
        (pairs (p, 2) int64 sorted, cosine (p,) float32).
    """
    if knn is None:
        knn = nearest_neighbours(embeddings, embeddings, k=k, block_rows=block_rows, exclude_self=True)
    idx, sims = knn[0][:, :k], knn[1][:, :k]
    rows = np.repeat(np.arange(len(idx)), idx.shape[1])
    cols, vals = idx.ravel(), sims.ravel()
    keep = (vals >= threshold) & (cols >= 0)  # -1: an IVF query with fewer rows in its cells
    lo, hi = np.minimum(rows, cols)[keep], np.maximum(rows, cols)[keep]
    codes, first = np.unique(lo * max(len(idx), 1) + hi, return_index=True)
    n = max(len(idx), 1)
    return np.stack([codes // n, codes % n], axis=1).reshape(-1, 2), vals[keep][first]


def outlier_scores(
    embeddings: np.ndarray,
    *,
    k: int,
    block_rows: int = 2048,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Mean cosine distance of each row to its ``k`` nearest neighbours (0 = among copies).

    Datalab's outlier issue scores rows the same way (mean distance to the k nearest neighbours);
    here the raw distance is kept, so a threshold has a meaning of its own.
    """
    if knn is None:
        knn = nearest_neighbours(embeddings, embeddings, k=k, block_rows=block_rows, exclude_self=True)
    sims = knn[1][:, :k].astype(np.float64)
    if sims.shape[1] == 0:
        return np.zeros(len(embeddings), dtype=np.float64)
    # a missing IVF neighbour (-inf) counts as the farthest possible, distance 2
    return (1.0 - np.where(np.isfinite(sims), sims, -1.0)).mean(axis=1)


def clusters_of(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components (union-find) of ``n`` rows linked by ``pairs``."""
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def find_semantic_issues(
    train: pl.DataFrame, *, embeddings: np.ndarray, cfg: SemanticParams, extra_pairs: np.ndarray | None = None
) -> StepResult:
    """Semantic near-duplicates (flag or remove, per ``cfg.duplicate_policy``) and outliers.

    Args:
        train: rows with id, split, line, text, label, text_hash.
        embeddings: one unit vector per row of ``train``, in its order.
        cfg: the ``semantic`` section.
        extra_pairs: more (i, j) row pairs that belong in one cluster (e.g. one word apart,
            :func:`curation.decontam.one_word_pairs`).

    Returns:
        kept rows; removed rows (``semantic_duplicate``, or ``pending_review`` for the flagged
        ones, which the review policy holds); flags ``paraphrase``, ``conflicting_duplicate``
        and ``outlier`` (score: cosine to the kept row, or the outlier score).
    """
    emb = _check(train, embeddings)
    frame = train.with_row_index("_i").with_columns(pl.col("_i").cast(pl.Int64))
    # one neighbour search serves both the pairs and the outlier scores
    knn = search_neighbours(emb, emb, k=max(cfg.neighbours, cfg.outlier_k), cfg=cfg, exclude_self=True)
    if cfg.duplicate_policy != "off" and frame.height > 1:
        pairs, _ = semantic_pairs(emb, threshold=cfg.duplicate_threshold, k=cfg.neighbours, knn=knn)
        if extra_pairs is not None and len(extra_pairs):
            pairs = np.concatenate([pairs, np.asarray(extra_pairs, dtype=np.int64).reshape(-1, 2)])
        cluster = clusters_of(frame.height, pairs)
    else:
        cluster = np.arange(frame.height, dtype=np.int64)
    frame = frame.with_columns(_cluster=pl.Series(cluster, dtype=pl.Int64))
    reps = (
        frame.sort("line", "_i")
        .group_by("_cluster", maintain_order=True)
        .agg(
            pl.col("id").first().alias("_rep_id"),
            pl.col("label").first().alias("_rep_label"),
            pl.col("_i").first().alias("_rep_i"),
            pl.len().alias("_size"),
        )
    )
    frame = frame.join(reps, on="_cluster", how="left", maintain_order="left")
    rep_i = frame["_rep_i"].to_numpy()
    cos_to_rep = np.einsum("ij,ij->i", emb, emb[rep_i]).astype(np.float64)
    scores = outlier_scores(emb, k=cfg.outlier_k, knn=knn) if frame.height > 1 else np.zeros(frame.height)
    frame = frame.with_columns(
        _cos=pl.Series(cos_to_rep).round(SCORE_DECIMALS), _outlier=pl.Series(scores).round(SCORE_DECIMALS)
    )
    is_rep = pl.col("_i") == pl.col("_rep_i")
    conflicting = ~is_rep & pl.col("label").ne_missing(pl.col("_rep_label"))
    kept_reps = frame.filter(is_rep)
    cut = outlier_cut(kept_reps["_outlier"].to_numpy(), cfg=cfg)
    outlier = is_rep & (pl.col("_outlier") >= cut)
    members = frame.filter(~is_rep)
    hold = members.filter(conflicting | pl.lit(cfg.duplicate_policy == "flag"))
    drop = members.filter(~conflicting & pl.lit(cfg.duplicate_policy == "remove"))
    outliers = frame.filter(outlier)
    removed = pl.concat(
        [
            drop.select(
                *_removed_cols("semantic_duplicate"),
                pl.col("_rep_id").alias("duplicate_of"),
                pl.format("cosine {} to the kept row (semantic cluster of {})", "_cos", "_size").alias(
                    "detail"
                ),
                "text",
                "label",
            ),
            hold.select(
                *_removed_cols(HOLD_REASON),
                pl.col("_rep_id").alias("duplicate_of"),
                pl.when(conflicting)
                .then(
                    pl.format(
                        "conflicting_duplicate: label '{}' vs '{}' of {} (cosine {})",
                        "label",
                        "_rep_label",
                        "_rep_id",
                        "_cos",
                    )
                )
                .otherwise(
                    pl.format(
                        "paraphrase: cosine {} to {} (semantic cluster of {})", "_cos", "_rep_id", "_size"
                    )
                )
                .alias("detail"),
                "text",
                "label",
            ),
            outliers.select(
                *_removed_cols(HOLD_REASON),
                pl.lit(None, pl.String).alias("duplicate_of"),
                pl.format(
                    "outlier: mean cosine distance {} to its {} nearest rows",
                    "_outlier",
                    pl.lit(cfg.outlier_k),
                ).alias("detail"),
                "text",
                "label",
            ),
        ]
    )
    flags = pl.concat(
        [
            hold.select(
                "id",
                "text_hash",
                "text",
                pl.when(conflicting)
                .then(pl.lit("conflicting_duplicate"))
                .otherwise(pl.lit("paraphrase"))
                .alias("issue"),
                pl.col("_cos").alias("score"),
                pl.col("label").alias("given_label"),
                pl.col("_rep_label").alias("suggested_label"),
                pl.col("_rep_id").alias("duplicate_of"),
            ),
            outliers.select(
                "id",
                "text_hash",
                "text",
                pl.lit("outlier").alias("issue"),
                pl.col("_outlier").alias("score"),
                pl.col("label").alias("given_label"),
                pl.lit(None, pl.String).alias("suggested_label"),
                pl.lit(None, pl.String).alias("duplicate_of"),
            ),
        ]
    )
    kept = frame.filter(is_rep & ~outlier).drop(pl.selectors.starts_with("_"))
    log.info(
        "semantic: %d clusters merged %d rows; %d outliers",
        reps.filter(pl.col("_size") > 1).height,
        members.height,
        outliers.height,
    )
    return StepResult(
        kept=kept.sort("line"),
        removed=removed.cast(REMOVED_SCHEMA).sort("line", "id"),
        flags=flags.cast(FLAGS_SCHEMA).sort("id", "issue"),
    )


def outlier_cut(scores: np.ndarray, *, cfg: SemanticParams) -> float:
    """The score from which a row is an outlier: above ``outlier_min_score`` and, when set, in
    the top ``1 - outlier_quantile`` of the scores (inf when there are too few rows to say)."""
    if len(scores) <= cfg.outlier_k:
        return float("inf")
    cut = cfg.outlier_min_score
    if cfg.outlier_quantile is not None:
        cut = max(cut, float(np.quantile(scores, cfg.outlier_quantile, method="higher")))
    return cut


def _removed_cols(reason: str) -> list[pl.Expr]:
    return [
        pl.col("id"),
        pl.col("split"),
        pl.col("line"),
        pl.lit(STAGE).alias("stage"),
        pl.lit(reason).alias("reason"),
    ]


def class_coverage(
    frame: pl.DataFrame,
    *,
    embeddings: np.ndarray,
    threshold: float,
    k: int,
    block_rows: int = 2048,
    cfg: SemanticParams | None = None,
) -> pl.DataFrame:
    """Per class: rows, distinct near-duplicate clusters (cosine >= ``threshold`` within the
    class) and spread (mean pairwise cosine distance within the class; null below 2 rows).

    ``cfg``: the ``semantic`` section, to search neighbours as it says (a faiss index on large
    data, :func:`search_neighbours`); None = numpy blocks.

    Returns:
        label, rows, clusters, spread (sorted by label).
    """
    emb = _check(frame, embeddings)
    if frame.height == 0:
        return pl.DataFrame(
            schema={"label": pl.String, "rows": pl.Int64, "clusters": pl.Int64, "spread": pl.Float64}
        )
    labels = frame["label"].cast(pl.String).fill_null("").to_numpy()
    pairs, _ = (
        semantic_pairs(
            emb,
            threshold=threshold,
            k=k,
            block_rows=block_rows,
            knn=None if cfg is None else search_neighbours(emb, emb, k=k, cfg=cfg, exclude_self=True),
        )
        if frame.height > 1
        else (np.zeros((0, 2), np.int64), None)
    )
    pairs = pairs[labels[pairs[:, 0]] == labels[pairs[:, 1]]] if len(pairs) else pairs
    cluster = clusters_of(frame.height, pairs)
    out = []
    for label in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == label)
        n = len(rows)
        total = emb[rows].astype(np.float64).sum(axis=0)
        # mean over pairs i != j of 1 - cos(i, j), from the sum of unit vectors: O(n d), not O(n^2 d)
        spread = 1.0 - (float(total @ total) - n) / (n * (n - 1)) if n > 1 else None
        out.append((label, n, len(np.unique(cluster[rows])), None if spread is None else round(spread, 4)))
    return pl.DataFrame(
        out,
        schema={"label": pl.String, "rows": pl.Int64, "clusters": pl.Int64, "spread": pl.Float64},
        orient="row",
    )


__all__ = [
    "class_coverage",
    "clusters_of",
    "find_semantic_issues",
    "index_neighbours",
    "nearest_neighbours",
    "outlier_cut",
    "outlier_scores",
    "search_neighbours",
    "semantic_pairs",
]
